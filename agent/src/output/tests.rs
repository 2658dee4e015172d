//! Sink, file, rotation and repair tests on real files in a scratch directory; and the
//! scratch directory other modules' tests use too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{chain::ChainHash, verify, FileOptions, Sink, SyslogConfig};

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("egret-unit-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The file `name` holding `lines`, each ended by a newline.
    pub fn write_lines(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.join(name);
        write_lines(&path, lines);
        path
    }

    /// The names of the files in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Every file in the directory whose name starts with `prefix`, sorted by name.
    pub fn files(&self, prefix: &str) -> Vec<PathBuf> {
        self.names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(|n| self.join(&n))
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An event line like the agent's (with a sequence number and an `egret` object).
pub fn event(sequence: u64) -> Value {
    json!({
        "@timestamp": "2026-11-22T06:01:41.920432283Z",
        "event": {"kind": "event", "action": "connect", "sequence": sequence},
        "destination": {"ip": "127.0.0.1", "port": 8080},
        "egret": {"cgroup": {"id": 291, "path": "/test"}, "socket": {"cookie": sequence}}
    })
}

/// Writes `lines` to `path`, each ended by a newline.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn raw_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `count` event lines with sequences `first..` and flushes.
pub fn write_events(path: &Path, options: &FileOptions, first: u64, count: u64) {
    let mut sink = Sink::open(path.to_str().unwrap(), options, None).unwrap();
    for seq in first..first + count {
        sink.write_line(&event(seq)).unwrap();
    }
    sink.flush().unwrap();
}

/// Options that rotate a file at `max_bytes`, keeping `retain` rotated files.
pub fn rotating(max_bytes: u64, retain: usize) -> FileOptions {
    FileOptions {
        max_bytes: Some(max_bytes),
        retain,
        ..FileOptions::default()
    }
}

/// A scratch directory holding `events.jsonl`: `count` events from sequence 1, written with
/// `options`.
pub fn written(name: &str, options: &FileOptions, count: u64) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.join("events.jsonl");
    write_events(&path, options, 1, count);
    (dir, path)
}

fn chain_of(v: &Value) -> &str {
    v["egret"]["chain"].as_str().unwrap()
}

fn sequences(paths: &[PathBuf]) -> Vec<u64> {
    paths
        .iter()
        .flat_map(|p| lines(p))
        .filter_map(|v| v["event"]["sequence"].as_u64())
        .collect()
}

#[test]
fn every_line_is_chained_and_a_restart_continues_the_chain() {
    let (_dir, path) = written("chain", &FileOptions::default(), 3);
    let first = lines(&path);
    assert_eq!(first.len(), 4);
    assert_eq!(first[0]["event"]["dataset"], "egret.output");
    assert_eq!(first[0]["event"]["action"], "start");
    assert_eq!(
        first[0]["egret"]["output"]["previous"]["hash"],
        ChainHash::GENESIS.as_str()
    );
    assert!(first[0]["egret"]["output"]["previous"]
        .get("file")
        .is_none());
    assert!(first[0]["egret"]["output"].get("repaired_bytes").is_none());
    // The agent's own fields are untouched; the chain is the egret object's last member.
    assert_eq!(first[1]["egret"]["cgroup"]["id"], 291);
    let member = format!(
        r#""socket":{{"cookie":1}},"chain":"{}"}}"#,
        chain_of(&first[1])
    );
    assert!(
        raw_lines(&path)[1].contains(&member),
        "{}",
        raw_lines(&path)[1]
    );

    write_events(&path, &FileOptions::default(), 1, 2);
    let all = lines(&path);
    assert_eq!(all.len(), 7);
    assert_eq!(all[4]["event"]["action"], "start");
    assert_eq!(
        all[4]["egret"]["output"]["previous"]["file"],
        "events.jsonl"
    );
    assert_eq!(
        all[4]["egret"]["output"]["previous"]["hash"],
        chain_of(&all[3])
    );
    let report = verify::verify(&[path]).unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!((report.lines, report.starts), (7, 2));
}

#[test]
fn a_torn_last_line_is_cut_and_recorded() {
    let (_dir, path) = written("torn", &FileOptions::default(), 2);
    let intact = std::fs::read(&path).unwrap();
    let torn = b"{\"@timestamp\":\"2026-11-22T06:01:41Z\",\"event\":{\"kin";
    let mut bytes = intact.clone();
    bytes.extend_from_slice(torn);
    std::fs::write(&path, &bytes).unwrap();

    write_events(&path, &FileOptions::default(), 3, 1);
    let text = std::fs::read(&path).unwrap();
    assert!(text.starts_with(&intact));
    let all = lines(&path);
    assert_eq!(all.len(), 5);
    let start = &all[3];
    assert_eq!(start["egret"]["output"]["repaired_bytes"], torn.len());
    assert_eq!(start["egret"]["output"]["repaired_lines"], 0);
    assert_eq!(
        start["egret"]["output"]["previous"]["hash"],
        chain_of(&all[2])
    );
    assert!(start["message"].as_str().unwrap().contains("cutting"));
    let report = verify::verify(&[path]).unwrap();
    assert!(report.intact(), "{report}");
}

#[test]
fn a_power_cut_tail_of_zeros_and_junk_lines_is_cut() {
    let (_dir, path) = written("zeros", &FileOptions::default(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[0u8; 500]);
    bytes.push(b'\n');
    bytes.extend_from_slice(b"{\"half\":[1,\n");
    bytes.extend_from_slice(&[0u8; 4096]);
    let junk = bytes.len() - good;
    std::fs::write(&path, &bytes).unwrap();
    write_events(&path, &FileOptions::default(), 3, 1);
    let all = lines(&path);
    assert_eq!(all[3]["egret"]["output"]["repaired_bytes"], junk);
    assert_eq!(all[3]["egret"]["output"]["repaired_lines"], 2);
    assert!(verify::verify(&[path]).unwrap().intact());
}

#[test]
fn a_file_that_is_all_fragment_starts_a_new_chain() {
    let dir = TempDir::new("fragment");
    let path = dir.join("events.jsonl");
    std::fs::write(&path, "{\"half").unwrap();
    write_events(&path, &FileOptions::default(), 1, 1);
    let all = lines(&path);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["egret"]["output"]["repaired_bytes"], 6);
    assert_eq!(
        all[0]["egret"]["output"]["previous"]["hash"],
        ChainHash::GENESIS.as_str()
    );
    assert!(verify::verify(&[path]).unwrap().intact());
}

#[test]
fn rotates_by_size_with_whole_lines_and_links_the_files() {
    let (dir, path) = written("size", &rotating(2000, 100), 60);
    let files = dir.files("events.jsonl");
    assert!(files.len() > 5, "{:?}", dir.names());
    // Rotated files first (by name), the live file last.
    let mut ordered: Vec<PathBuf> = files.iter().skip(1).cloned().collect();
    ordered.push(files[0].clone());
    for (i, file) in ordered.iter().enumerate() {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(len <= 2000, "{} is {len} bytes", file.display());
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.ends_with('\n'));
        let first = &lines(file)[0];
        assert_eq!(first["event"]["dataset"], "egret.output");
        if i > 0 {
            assert_eq!(first["event"]["action"], "rotate");
            let prev = &ordered[i - 1];
            let prev_name = prev.file_name().unwrap().to_str().unwrap();
            assert_eq!(first["egret"]["output"]["previous"]["file"], prev_name);
            let prev_last = lines(prev).pop().unwrap();
            assert_eq!(
                first["egret"]["output"]["previous"]["hash"],
                chain_of(&prev_last)
            );
        }
    }
    // Every line exactly once, in order.
    assert_eq!(sequences(&ordered), (1..=60).collect::<Vec<_>>());
    // verify sorts a shuffled argument list into rotation order.
    let mut shuffled = files.clone();
    shuffled.reverse();
    shuffled.swap(0, 2);
    let report = verify::verify(&shuffled).unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.files.len(), files.len());
    assert_eq!(
        report.files.last().unwrap().file,
        path.display().to_string()
    );
}

#[test]
fn a_line_larger_than_the_limit_gets_a_file_of_its_own() {
    let dir = TempDir::new("big");
    let path = dir.join("events.jsonl");
    let mut sink = Sink::open(path.to_str().unwrap(), &rotating(1000, 10), None).unwrap();
    sink.write_line(&event(1)).unwrap();
    sink.write_line(&json!({"big": "x".repeat(3000), "event": {"sequence": 2}}))
        .unwrap();
    sink.write_line(&event(3)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    let files = dir.files("events.jsonl");
    assert_eq!(files.len(), 3, "{:?}", dir.names());
    let report = verify::verify(&files).unwrap();
    assert!(report.intact(), "{report}");
    let mut ordered: Vec<PathBuf> = files.iter().skip(1).cloned().collect();
    ordered.push(files[0].clone());
    assert_eq!(sequences(&ordered), [1, 2, 3]);
}

#[test]
fn retention_keeps_the_newest_rotated_files() {
    let options = rotating(1500, 2);
    let (dir, path) = written("retain", &options, 40);
    let files = dir.files("events.jsonl");
    assert_eq!(files.len(), 3, "{:?}", dir.names());
    let report = verify::verify(&files).unwrap();
    assert!(report.intact(), "{report}");
    assert!(
        report.notes.iter().any(|n| n.contains("(not given)")),
        "{report}"
    );
    // retain 0: rotation discards.
    let options = FileOptions {
        retain: 0,
        ..options
    };
    write_events(&path, &options, 41, 20);
    assert_eq!(dir.files("events.jsonl").len(), 1, "{:?}", dir.names());
}

#[test]
fn rotates_by_age() {
    let dir = TempDir::new("age");
    let path = dir.join("events.jsonl");
    let options = FileOptions {
        max_age: Some(Duration::from_secs(1)),
        ..FileOptions::default()
    };
    let mut sink = Sink::open(path.to_str().unwrap(), &options, None).unwrap();
    sink.write_line(&event(1)).unwrap();
    sink.write_line(&event(2)).unwrap();
    assert_eq!(dir.files("events.jsonl").len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    sink.write_line(&event(3)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    let files = dir.files("events.jsonl");
    assert_eq!(files.len(), 2, "{:?}", dir.names());
    assert_eq!(lines(&files[0]).len(), 2);
    assert_eq!(lines(&files[1]).len(), 3);
    assert!(verify::verify(&files).unwrap().intact());
}

#[test]
fn an_age_limit_counts_from_the_first_line_across_restarts() {
    let (dir, path) = written("age-restart", &FileOptions::default(), 1);
    // Make the file's first line an hour old.
    let text = std::fs::read_to_string(&path).unwrap();
    let old = chrono::Utc::now() - chrono::Duration::hours(1);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let ts = first["@timestamp"].as_str().unwrap().to_owned();
    let stale = old.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    // (The edit breaks the chain; this test is about age only.)
    std::fs::write(&path, text.replacen(&ts, &stale, 1)).unwrap();
    let options = FileOptions {
        max_age: Some(Duration::from_secs(1800)),
        ..FileOptions::default()
    };
    write_events(&path, &options, 2, 1);
    assert_eq!(dir.files("events.jsonl").len(), 2, "{:?}", dir.names());
}

#[test]
fn an_empty_live_file_continues_from_the_newest_rotated_one() {
    let options = rotating(1500, 10);
    let (dir, path) = written("after-rotation", &options, 20);
    // A crash right after the rename: the live file is gone.
    std::fs::remove_file(&path).unwrap();
    write_events(&path, &options, 21, 1);
    let all = lines(&path);
    let newest = dir.files("events.jsonl.").pop().unwrap();
    assert_eq!(
        all[0]["egret"]["output"]["previous"]["file"],
        newest.file_name().unwrap().to_str().unwrap()
    );
    let report = verify::verify(&dir.files("events.jsonl")).unwrap();
    // The removed live file's lines are missing from the chain: only its start line linked
    // the set, so the new file continues from the newest rotated file and verify agrees.
    assert!(report.intact(), "{report}");
}

#[test]
fn a_path_that_is_not_a_regular_file_gets_plain_lines() {
    let mut sink = Sink::open(
        "/dev/null",
        &FileOptions {
            max_bytes: Some(10),
            ..FileOptions::default()
        },
        None,
    )
    .unwrap();
    sink.write_line(&event(1)).unwrap();
    sink.flush().unwrap();
}

#[test]
fn a_file_keeps_json_lines_whatever_text_is_offered() {
    let dir = TempDir::new("text-to-file");
    let path = dir.join("events.jsonl");
    let mut sink = Sink::open(path.to_str().unwrap(), &FileOptions::default(), None).unwrap();
    sink.write_header("TIME(UTC) EVENT").unwrap();
    sink.write_text(
        |line| line.extend_from_slice(b"06:00:00.000 connect text"),
        |line| super::chain::serialize(&event(1), line),
    )
    .unwrap();
    sink.flush().unwrap();
    drop(sink);
    let raw = raw_lines(&path);
    assert!(raw.iter().all(|l| l.starts_with('{')), "{raw:?}");
    let lines = lines(&path);
    // The output line, then the event: chained, no header, no text.
    assert_eq!(lines.len(), 2, "{raw:?}");
    assert_eq!(lines[1]["event"]["sequence"], 1);
    assert!(lines[1]["egret"]["chain"].is_string());
}

#[test]
fn names_the_file_it_cannot_open() {
    let err = Sink::open("/nonexistent-dir/x.jsonl", &FileOptions::default(), None)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("/nonexistent-dir/x.jsonl"),
        "{err}"
    );
}

#[test]
fn syslog_gets_the_same_lines_as_the_file() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("syslog");
    let socket = dir.join("log.sock");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let path = dir.join("events.jsonl");
    let config = SyslogConfig {
        socket,
        facility: "local1".parse().unwrap(),
    };
    let mut sink = Sink::open(
        path.to_str().unwrap(),
        &FileOptions::default(),
        Some(&config),
    )
    .unwrap();
    sink.write_line(&event(1)).unwrap();
    sink.write_line(&json!({"event": {"kind": "alert", "sequence": 2}, "egret": {"x": 1}}))
        .unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.syslog_dropped(), 0);
    drop(sink);
    let file_lines = raw_lines(&path);
    let mut buf = vec![0u8; 65536];
    for (i, want) in file_lines.iter().enumerate() {
        let n = receiver.recv(&mut buf).unwrap();
        let frame = std::str::from_utf8(&buf[..n]).unwrap();
        let (pri, msgid) = match i {
            2 => ("<140>1 ", " alert - "),
            _ => ("<142>1 ", " event - "),
        };
        assert!(frame.starts_with(pri), "{frame}");
        assert!(frame.contains(msgid), "{frame}");
        assert!(frame.ends_with(want.as_str()), "{frame}\nwant {want}");
    }
}

/// Lines per second written to a file: the sink as egret uses it (chained, fdatasync every
/// 20,000 lines here) against the pre-chain sink (a 256 KiB `BufWriter`, no chain, no sync),
/// on the README's example connection line. Run with
/// `cargo test -p egret --release output::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run it by hand"]
fn throughput() {
    use std::io::Write as _;
    use std::time::Instant;
    const LINES: u64 = 200_000;
    let doc: Value = serde_json::from_str(include_str!("bench-line.json")).unwrap();
    let line_len = serde_json::to_vec(&doc).unwrap().len();
    let dir = TempDir::new("throughput");

    let mut best = [f64::MAX; 5];
    for round in 0..5 {
        // Serialising alone (what every sink pays).
        let t = Instant::now();
        let mut buf = Vec::new();
        for _ in 0..LINES {
            buf.clear();
            serde_json::to_writer(&mut buf, &doc).unwrap();
        }
        best[0] = best[0].min(t.elapsed().as_secs_f64());

        // Before: serialise into a BufWriter on a file.
        let plain = dir.join(&format!("plain-{round}.jsonl"));
        let t = Instant::now();
        let mut out =
            std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&plain).unwrap());
        for i in 0..LINES {
            serde_json::to_writer(&mut out, &doc).unwrap();
            out.write_all(b"\n").unwrap();
            if i % 20_000 == 0 {
                out.flush().unwrap();
            }
        }
        out.flush().unwrap();
        drop(out);
        best[1] = best[1].min(t.elapsed().as_secs_f64());

        // Now: the chained sink, synced as often as the agent's once-a-second flush would
        // at 20,000 lines/s.
        let chained = dir.join(&format!("chained-{round}.jsonl"));
        let t = Instant::now();
        let mut sink =
            Sink::open(chained.to_str().unwrap(), &FileOptions::default(), None).unwrap();
        for i in 0..LINES {
            sink.write_line(&doc).unwrap();
            if i % 20_000 == 0 {
                sink.flush().unwrap();
            }
        }
        sink.flush().unwrap();
        drop(sink);
        best[2] = best[2].min(t.elapsed().as_secs_f64());
        // The chain alone: serialise (noting the line's shape) and chain into memory.
        let t = Instant::now();
        let mut prev = ChainHash::GENESIS;
        let mut out = Vec::new();
        for _ in 0..LINES {
            buf.clear();
            let shape = super::chain::serialize(&doc, &mut buf).unwrap().unwrap();
            out.clear();
            prev = super::chain::append_serialized(&mut out, &prev, &buf, shape).unwrap();
        }
        best[3] = best[3].min(t.elapsed().as_secs_f64());

        // The chained file without fdatasync (what the chain costs on the write path).
        let nosync = dir.join(&format!("nosync-{round}.jsonl"));
        let t = Instant::now();
        let mut file =
            super::file::ChainedFile::open(&nosync, &FileOptions::default(), "vm").unwrap();
        for _ in 0..LINES {
            buf.clear();
            let shape = super::chain::serialize(&doc, &mut buf).unwrap();
            file.append(&buf, shape).unwrap();
            file.write_out_if_full();
        }
        file.write_out().unwrap();
        best[4] = best[4].min(t.elapsed().as_secs_f64());
        drop(file);
        let _ = std::fs::remove_file(&plain);
        let _ = std::fs::remove_file(&chained);
        let _ = std::fs::remove_file(&nosync);
    }
    let rate = |secs: f64| LINES as f64 / secs;
    let per_line_us = |secs: f64| secs / LINES as f64 * 1e6;
    // The rates line up after the longest label.
    let row = |label: &str, secs: f64| {
        let width = 37_usize.saturating_sub(label.chars().count());
        format!(
            "{label}{:>width$.0} lines/s  {:.2} µs/line",
            rate(secs),
            per_line_us(secs)
        )
    };
    let against_plain = |secs: f64| {
        format!(
            "  ({:+.2} µs/line, ratio {:.3})",
            per_line_us(secs) - per_line_us(best[1]),
            best[1] / secs
        )
    };
    println!("line: {line_len} bytes, {LINES} lines, best of 5 rounds");
    println!("{}", row("serialise only:", best[0]));
    println!("{}", row("plain file (before):", best[1]));
    println!("{}", row("serialise + chain (memory):", best[3]));
    println!(
        "{}{}",
        row("chained file, no sync:", best[4]),
        against_plain(best[4])
    );
    println!(
        "{}{}",
        row("chained file + fdatasync:", best[2]),
        against_plain(best[2])
    );
}

/// A chained file with `count` events appended (sequences from 1) and nothing written yet
/// beyond its first line.
fn full_disk_file(dir: &TempDir, options: &FileOptions, count: u64) -> super::file::ChainedFile {
    let path = dir.join("events.jsonl");
    let mut file = super::file::ChainedFile::open(&path, options, "host").unwrap();
    file.sync().unwrap();
    let mut line = Vec::new();
    for seq in 1..=count {
        line.clear();
        let shape = super::chain::serialize(&event(seq), &mut line).unwrap();
        file.append(&line, shape).unwrap();
    }
    file
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_full_disk_takes_whole_lines_as_far_as_they_fit_and_resumes_when_space_returns() {
    let dir = TempDir::new("fulldisk");
    let path = dir.join("events.jsonl");
    let mut file = full_disk_file(&dir, &FileOptions::default(), 1000);
    let start = file_len(&path);
    let backlog = file.backlog() as u64;
    // Room for less than a tenth of the backlog, ending inside a line.
    file.space = Some(start + backlog / 10 + 37);
    assert!(file.sync().is_err());
    let first = file_len(&path);
    assert!(
        first > start && first <= start + backlog / 10 + 37,
        "{first}"
    );
    let text = std::fs::read(&path).unwrap();
    assert_eq!(text.last(), Some(&b'\n'), "a partial line was left behind");
    let written = sequences(std::slice::from_ref(&path));
    assert_eq!(written, (1..=written.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        first - start + file.backlog() as u64,
        backlog,
        "every byte is in the file or pending"
    );

    // Space returns a little at a time: every step makes progress.
    let mut last = first;
    for step in 1..=3 {
        file.space = Some(last + backlog / 10 + 1);
        assert!(file.sync().is_err());
        let now = file_len(&path);
        assert!(now > last, "step {step}: no progress ({now})");
        last = now;
    }
    file.space = None;
    file.sync().unwrap();
    assert_eq!(file.backlog(), 0);
    drop(file);
    assert_eq!(
        sequences(std::slice::from_ref(&path)),
        (1..=1000).collect::<Vec<_>>()
    );
    assert!(verify::verify(&[path]).unwrap().intact());
}

#[test]
fn a_full_backlog_refuses_lines_and_keeps_what_it_holds() {
    let dir = TempDir::new("backlog");
    let path = dir.join("events.jsonl");
    let mut file = full_disk_file(&dir, &FileOptions::default(), 0);
    file.space = Some(file_len(&path));
    let mut line = Vec::new();
    let (mut accepted, mut refused) = (0u64, 0u64);
    // About 300 bytes each: 24 MB, more than the 16 MiB bound.
    for seq in 1..=80_000 {
        line.clear();
        let shape = super::chain::serialize(&event(seq), &mut line).unwrap();
        match file.append(&line, shape) {
            Ok(_) => accepted += 1,
            Err(super::OutputError::Backlog { bytes, .. }) => {
                assert!(bytes >= 16 << 20);
                refused += 1;
            }
            Err(err) => panic!("{err}"),
        }
        file.write_out_if_full();
    }
    assert!(refused > 0 && accepted > 0, "{accepted} {refused}");
    assert!(file.backlog() < (16 << 20) + 4096);
    file.space = None;
    file.sync().unwrap();
    drop(file);
    // What was accepted is all there, in order, chained.
    assert_eq!(
        sequences(std::slice::from_ref(&path)),
        (1..=accepted).collect::<Vec<_>>()
    );
    assert!(verify::verify(&[path]).unwrap().intact());
}

#[test]
fn a_rotation_on_a_full_disk_keeps_the_current_files_tail() {
    let dir = TempDir::new("fullrotate");
    let path = dir.join("events.jsonl");
    let mut file = full_disk_file(&dir, &rotating(64 << 10, 10), 0);
    file.space = Some(file_len(&path) + 20_000);
    let mut line = Vec::new();
    for seq in 1..=400 {
        line.clear();
        let shape = super::chain::serialize(&event(seq), &mut line).unwrap();
        file.append(&line, shape).unwrap();
        file.write_out_if_full();
    }
    let _ = file.sync();
    // No rotation could happen (its flush failed); nothing was lost.
    assert_eq!(dir.files("events.jsonl.").len(), 0);
    file.space = None;
    file.sync().unwrap();
    drop(file);
    let mut files = dir.files("events.jsonl.");
    files.push(path);
    assert_eq!(sequences(&files), (1..=400).collect::<Vec<_>>());
    assert!(verify::verify(&files).unwrap().intact());
}

//! `egret verify` on sets written by the real sink, then tampered with.

use std::path::{Path, PathBuf};

use fixed::{chained, event, file, output, write, ROTATED};

use super::verify;
use crate::output::{
    chain::ChainHash,
    tests::{raw_lines, rotating, write_events, write_lines, written, TempDir},
    FileOptions,
};

const GENESIS: ChainHash = ChainHash::GENESIS;

/// One file: its output line and `count` events with sequences 1..=count.
fn one_file(name: &str, count: u64) -> (TempDir, PathBuf) {
    written(name, &FileOptions::default(), count)
}

/// A rotated set of several files; returns them in rotation order.
fn rotated_set(name: &str) -> (TempDir, Vec<PathBuf>) {
    let (dir, path) = written(name, &rotating(2500, 100), 40);
    let mut files = dir.files("events.jsonl.");
    files.push(path);
    assert!(files.len() >= 3);
    (dir, files)
}

fn broken(paths: &[PathBuf]) -> super::Problem {
    let report = verify(paths).unwrap();
    let problem = report.problem.clone();
    problem.unwrap_or_else(|| panic!("verify passed:\n{report}"))
}

/// One file of `count` events whose lines `tamper` changed (what it returns is not used):
/// what verify finds wrong.
fn tampered<R>(
    name: &str,
    count: u64,
    tamper: impl FnOnce(&mut Vec<String>) -> R,
) -> (TempDir, PathBuf, super::Problem) {
    let (dir, path) = one_file(name, count);
    let mut lines = raw_lines(&path);
    tamper(&mut lines);
    write_lines(&path, &lines);
    let problem = broken(std::slice::from_ref(&path));
    (dir, path, problem)
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn an_untouched_file_is_intact() {
    let (_dir, path) = one_file("intact", 10);
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.lines, 11);
    let text = report.to_string();
    assert!(text.contains("intact: 1 files, 11 lines"), "{text}");
    assert!(text.contains("a chain starts here"), "{text}");
}

#[test]
fn an_edited_line_is_named() {
    let (_dir, path, p) = tampered("edit", 10, |lines| {
        lines[5] = lines[5].replace("127.0.0.1", "10.0.0.1")
    });
    assert_eq!((p.file.as_str(), p.line), (shown(&path).as_str(), 6));
    assert!(p.what.starts_with("edited"), "{p}");
}

#[test]
fn a_removed_line_is_named() {
    let (_dir, _, p) = tampered("delete", 10, |lines| lines.remove(4));
    assert_eq!(p.line, 5);
    assert!(p.what.starts_with("removed: 1 line(s)"), "{p}");
    assert!(p.what.contains("from 3 to 5"), "{p}");
}

#[test]
fn an_inserted_line_is_named() {
    let (_dir, _, p) = tampered("insert", 10, |lines| {
        let copy = lines[2].clone();
        lines.insert(6, copy);
    });
    assert_eq!(p.line, 7);
    assert!(p.what.starts_with("inserted: this line"), "{p}");
}

#[test]
fn an_inserted_line_hashed_to_fit_is_named() {
    let (_dir, _, p) = tampered("insert-fit", 6, |lines| {
        // A forged line chained onto line 3, inserted after it.
        let (prev, _) = crate::output::chain::content(lines[2].as_bytes()).unwrap();
        let mut forged = Vec::new();
        crate::output::chain::append_chained(
            &mut forged,
            &prev,
            br#"{"event":{"kind":"event","sequence":3},"egret":{"forged":true}}"#,
        )
        .unwrap();
        forged.pop();
        lines.insert(3, String::from_utf8(forged).unwrap());
    });
    assert_eq!(p.line, 5);
    assert!(p.what.contains(":3, so the lines after that one"), "{p}");
}

#[test]
fn reordered_lines_are_named() {
    let (_dir, _, p) = tampered("reorder", 10, |lines| lines.swap(4, 5));
    assert_eq!(p.line, 5);
    assert_eq!(p.what, "reordered: this line belongs right after line 6");
}

#[test]
fn a_damaged_line_is_named_and_nothing_panics() {
    let (_dir, path, p) = tampered("damage", 5, |lines| lines[3] = lines[3][..40].to_owned());
    assert_eq!(p.line, 4);
    assert!(p.what.starts_with("not JSON"), "{p}");
    // Binary junk, an empty file, a file that is not egret's: reports, never panics.
    std::fs::write(&path, [0xffu8, 0, b'\n', 0x80, b'{', b'\n']).unwrap();
    assert!(broken(std::slice::from_ref(&path))
        .what
        .starts_with("not JSON"));
    std::fs::write(&path, "").unwrap();
    assert!(verify(std::slice::from_ref(&path)).unwrap().intact());
    std::fs::write(&path, "{\"a\":1}\n").unwrap();
    assert!(broken(std::slice::from_ref(&path))
        .what
        .contains("no egret.chain"));
    std::fs::write(&path, "[1,2]\n").unwrap();
    assert!(broken(std::slice::from_ref(&path))
        .what
        .contains("not a JSON object"));
    assert!(verify(&[path.with_file_name("missing")]).is_err());
}

#[test]
fn a_removed_first_line_is_named() {
    let (_dir, _, p) = tampered("first", 5, |lines| lines.remove(0));
    assert_eq!(p.line, 1);
    assert!(p.what.contains("starts with its output line"), "{p}");
}

#[test]
fn an_unterminated_last_line_is_a_note() {
    let (_dir, path) = one_file("partial", 3);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"@timestamp\":\"2026");
    std::fs::write(&path, text).unwrap();
    let report = verify(std::slice::from_ref(&path)).unwrap();
    assert!(report.intact(), "{report}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(":5: 19 bytes without a newline")),
        "{report}"
    );
}

#[test]
fn a_rotated_set_is_intact_in_any_argument_order() {
    let (_dir, files) = rotated_set("set");
    let mut args = files.clone();
    args.rotate_left(2);
    let report = verify(&args).unwrap();
    assert!(report.intact(), "{report}");
    let order: Vec<&str> = report.files.iter().map(|f| f.file.as_str()).collect();
    let want: Vec<String> = files.iter().map(|f| shown(f)).collect();
    assert_eq!(order, want);
}

#[test]
fn lines_removed_from_the_end_of_a_rotated_file_are_named() {
    let (_dir, files) = rotated_set("truncate");
    let mut lines = raw_lines(&files[0]);
    lines.pop();
    lines.pop();
    write_lines(&files[0], &lines);
    let p = broken(&files);
    assert_eq!((p.file.as_str(), p.line), (shown(&files[1]).as_str(), 1));
    assert!(
        p.what.contains("2 lines after it were removed") || p.what.contains("removed from the end"),
        "{p}"
    );
}

#[test]
fn a_missing_file_in_a_set_is_named() {
    let (_dir, files) = rotated_set("missing");
    let without: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, f)| f.clone())
        .collect();
    let p = broken(&without);
    assert_eq!((p.file.as_str(), p.line), (shown(&files[2]).as_str(), 1));
    let missing = files[1].file_name().unwrap().to_str().unwrap();
    assert!(
        p.what.contains(missing) && p.what.contains("not among the files given"),
        "{p}"
    );
}

#[test]
fn lines_moved_between_files_are_named() {
    let (_dir, files) = rotated_set("moved");
    let mut a = raw_lines(&files[0]);
    let mut b = raw_lines(&files[1]);
    let moved = a.pop().unwrap();
    b.insert(1, moved);
    write_lines(&files[0], &a);
    write_lines(&files[1], &b);
    let p = broken(&files);
    assert_eq!((p.file.as_str(), p.line), (shown(&files[1]).as_str(), 1));
}

#[test]
fn separate_sets_are_separate_chains() {
    let dir = TempDir::new("two-sets");
    let events = dir.join("events.jsonl");
    let alerts = dir.join("alerts.jsonl");
    write_events(&events, &FileOptions::default(), 1, 3);
    write_events(&alerts, &FileOptions::default(), 1, 2);
    let report = verify(&[events, alerts]).unwrap();
    assert!(report.intact(), "{report}");
    assert_eq!(report.last.len(), 2);
}

#[test]
fn a_line_removed_right_after_a_rotation_is_named_by_its_sequence() {
    let (_dir, files) = rotated_set("after-rotation");
    let mut lines = raw_lines(&files[1]);
    lines.remove(1);
    write_lines(&files[1], &lines);
    let p = broken(&files);
    assert_eq!((p.file.as_str(), p.line), (shown(&files[1]).as_str(), 2));
    assert!(p.what.starts_with("removed: 1 line(s)"), "{p}");
}

#[test]
fn any_changed_byte_is_found_and_nothing_panics() {
    let (_dir, files) = rotated_set("flips");
    let original: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let which = (next() % files.len() as u64) as usize;
        let bytes = &original[which];
        // Any byte but the file's final newline (without it, the last line is one being
        // written: a note, not a break).
        let at = (next() % (bytes.len() as u64 - 1)) as usize;
        let mut changed = bytes.clone();
        let new = match next() % 4 {
            0 => b'\n',
            1 => 0xff,
            2 => changed[at] ^ 0x01,
            _ => b'"',
        };
        if changed[at] == new {
            continue;
        }
        changed[at] = new;
        std::fs::write(&files[which], &changed).unwrap();
        let report = verify(&files).unwrap();
        assert!(
            !report.intact(),
            "byte {at} of {} set to {new:#x} went unnoticed:\n{report}",
            files[which].display()
        );
        std::fs::write(&files[which], bytes).unwrap();
    }
    assert!(verify(&files).unwrap().intact());
}

#[test]
fn renamed_copies_are_checked_in_the_order_given() {
    let (dir, files) = rotated_set("copies");
    // Copied off the host under other names.
    let copies: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let copy = dir.join(&format!("copy-{i}.json"));
            std::fs::copy(f, &copy).unwrap();
            copy
        })
        .collect();
    let report = verify(&copies).unwrap();
    assert!(report.intact(), "{report}");
    assert!(!report.to_string().contains("chain of its own"), "{report}");
    // One missing: the next one starts a chain of its own, and says so.
    let without: Vec<PathBuf> = copies
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, f)| f.clone())
        .collect();
    let report = verify(&without).unwrap();
    assert!(report.intact(), "{report}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&format!("{}:1: does not continue", shown(&copies[2])))),
        "{report}"
    );
    // But within a copy, an edit is still found.
    let mut lines = raw_lines(&copies[1]);
    lines[3] = lines[3].replace("8080", "8081");
    write_lines(&copies[1], &lines);
    let p = broken(&copies);
    assert_eq!((p.file.as_str(), p.line), (shown(&copies[1]).as_str(), 4));
}

/// Hand-made lines for [`every_message_is_pinned`]: the same bytes on every run (the sink's
/// lines carry the time and host), so the whole report can be compared.
mod fixed {
    use std::path::Path;

    use serde_json::json;

    use crate::output::{chain::ChainHash, OUTPUT_DATASET};

    /// A rotated name of the live file `events.jsonl`.
    pub const ROTATED: &str = "events.jsonl.20261122T060141Z";

    /// egret's output line (`action` `start` or `rotate`) of a file continuing from `from`,
    /// the end of `file` if named.
    pub fn output(action: &str, from: &ChainHash, file: Option<&str>) -> String {
        let previous = match file {
            Some(file) => json!({"hash": from.as_str(), "file": file}),
            None => json!({"hash": from.as_str()}),
        };
        json!({
            "event": {"kind": "event", "action": action, "dataset": OUTPUT_DATASET},
            "egret": {"output": {"previous": previous}}
        })
        .to_string()
    }

    /// A connection line with `sequence`.
    pub fn event(sequence: u64) -> String {
        json!({
            "event": {"kind": "event", "action": "connect", "sequence": sequence},
            "destination": {"ip": "127.0.0.1", "port": 8080}
        })
        .to_string()
    }

    /// `docs` as chained lines (without newlines) following `from`, and the last chain value.
    pub fn chained(from: &ChainHash, docs: &[String]) -> (Vec<String>, ChainHash) {
        let mut last = *from;
        let lines = docs
            .iter()
            .map(|doc| {
                let mut line = Vec::new();
                last =
                    crate::output::chain::append_chained(&mut line, &last, doc.as_bytes()).unwrap();
                line.pop();
                String::from_utf8(line).unwrap()
            })
            .collect();
        (lines, last)
    }

    /// Writes `lines`, each ended by a newline, then `tail` (a line being written).
    pub fn write(path: &Path, lines: &[String], tail: &str) {
        let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        text.push_str(tail);
        std::fs::write(path, text).unwrap();
    }

    /// A file continuing from `from`: its output line then events `sequences`; returns the
    /// lines and the last chain value.
    pub fn file(
        from: &ChainHash,
        file: Option<&str>,
        sequences: &[u64],
    ) -> (Vec<String>, ChainHash) {
        let mut docs = vec![output("start", from, file)];
        docs.extend(sequences.iter().map(|&s| event(s)));
        chained(from, &docs)
    }
}

/// The reports of several runs of `egret verify`, for [`every_message_is_pinned`].
struct Pinned {
    dir: TempDir,
    out: String,
}

impl Pinned {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Verifies `names` (files of the directory) and keeps the report under `title`.
    fn run(&mut self, title: &str, names: &[&str]) {
        let paths: Vec<PathBuf> = names.iter().map(|n| self.path(n)).collect();
        let text = verify(&paths).unwrap().to_string();
        self.out.push_str(&format!("== {title}\n{text}\n\n"));
    }
}

/// Every note, problem and summary `egret verify` prints, for damage of each kind, pinned
/// whole against `golden.txt` (directories shown as `DIR`).
#[test]
fn every_message_is_pinned() {
    let mut pinned = Pinned {
        dir: TempDir::new("pinned"),
        out: String::new(),
    };
    lenient_set(&mut pinned);
    rotated_set_boundaries(&mut pinned);
    broken_starts_and_lines(&mut pinned);
    damage_inside_a_file(&mut pinned);
    let shown = pinned
        .out
        .replace(&pinned.dir.0.display().to_string(), "DIR");
    let golden = include_str!("golden.txt");
    if shown != golden {
        let actual = std::env::temp_dir().join("egret-verify-golden.txt");
        std::fs::write(&actual, &shown).unwrap();
        panic!(
            "verify's messages changed: compare {} with agent/src/output/verify/golden.txt",
            actual.display()
        );
    }
}

/// A chain value no file given ends with.
fn elsewhere() -> ChainHash {
    GENESIS.next(b"a file that is not given")
}

/// Files given one after the other: a restart and a rotation inside a file, a line whose
/// fields have the wrong types, a file that starts a chain of its own, an empty file, a line
/// being written; files that continue from files not given.
fn lenient_set(pinned: &mut Pinned) {
    let (mut a, a_end) = chained(
        &GENESIS,
        &[output("start", &GENESIS, None), event(1), event(2)],
    );
    let (rotation, a_end) = chained(
        &a_end,
        &[
            output("rotate", &a_end, Some("a.json")),
            event(3),
            r#"{"destination":{"port":70000}}"#.to_owned(),
        ],
    );
    let (restart, a_end) = chained(&a_end, &[output("start", &a_end, None), event(1)]);
    a.extend(rotation.into_iter().chain(restart));
    write(&pinned.path("a.json"), &a, "");
    let (b, _) = file(&a_end, Some("a.json"), &[2]);
    write(&pinned.path("b.json"), &b, "");
    let (c, c_end) = file(&GENESIS, None, &[1]);
    write(&pinned.path("c.json"), &c, "");
    write(&pinned.path("d.json"), &[], "");
    let (e, _) = file(&c_end, Some("c.json"), &[2]);
    write(&pinned.path("e.json"), &e, "{\"@timestamp\":\"2026");
    pinned.run(
        "lenient set",
        &["a.json", "b.json", "c.json", "d.json", "e.json"],
    );

    for (title, from_file) in [
        ("continues from a file not given", Some("old.json")),
        ("continues from an unnamed file", None),
    ] {
        let (f, _) = file(&elsewhere(), from_file, &[5]);
        write(&pinned.path("f.json"), &f, "");
        pinned.run(title, &["f.json"]);
    }
}

/// A rotated set whose live file continues from the right place, then from wrong ones; an
/// older file of the set that ends without a newline.
fn rotated_set_boundaries(pinned: &mut Pinned) {
    let (rotated, rotated_end) = file(&GENESIS, None, &[1, 2, 3]);
    write(&pinned.path(ROTATED), &rotated, "");
    let second = crate::output::chain::stored(rotated[1].as_bytes()).unwrap();
    let missing = "events.jsonl.20261122T050000Z";
    for (title, from, from_file) in [
        ("rotated set: intact", rotated_end, ROTATED),
        ("rotated set: lines inserted at the end", second, ROTATED),
        (
            "rotated set: lines removed from the end",
            elsewhere(),
            ROTATED,
        ),
        ("rotated set: a file missing", elsewhere(), missing),
        (
            "rotated set: lines removed (or a file renamed)",
            second,
            missing,
        ),
    ] {
        let (live, _) = file(&from, Some(from_file), &[4]);
        write(&pinned.path("events.jsonl"), &live, "");
        pinned.run(title, &[ROTATED, "events.jsonl"]);
    }
    write(&pinned.path(ROTATED), &rotated, "{\"event\":");
    pinned.run(
        "rotated set: an unterminated line in an older file",
        &[ROTATED, "events.jsonl"],
    );
}

/// Files that do not start with egret's output line; lines that cannot be read; an output
/// line that does not continue the line before it.
fn broken_starts_and_lines(pinned: &mut Pinned) {
    let (c, _) = file(&GENESIS, None, &[1]);
    write(&pinned.path("c.json"), &c, "");
    let (g, _) = chained(&GENESIS, &[event(1)]);
    write(&pinned.path("g.json"), &g, "");
    pinned.run("no output line", &["g.json"]);
    pinned.run("no output line after another file", &["c.json", "g.json"]);

    for (title, line) in [
        ("not a JSON object", "[1,2]"),
        ("not JSON", "{\"event\":"),
        ("no chain", "{\"a\":1}"),
    ] {
        let (mut h, _) = file(&GENESIS, None, &[1]);
        h.push(line.to_owned());
        write(&pinned.path("h.json"), &h, "");
        pinned.run(title, &["h.json"]);
    }

    let (h, h_end) = file(&GENESIS, None, &[1]);
    let (rest, _) = chained(&h_end, &[output("start", &GENESIS, None), event(1)]);
    write(&pinned.path("h.json"), &[h, rest].concat(), "");
    pinned.run("an output line continuing from elsewhere", &["h.json"]);
}

/// Lines edited, removed, reordered and inserted inside a file, explained from the lines
/// around them (and from `event.sequence`, which a rotation continues and a restart resets).
fn damage_inside_a_file(pinned: &mut Pinned) {
    let (plain, plain_end) = file(&GENESIS, None, &[1, 2, 3, 4, 5]);
    let then = |action: &str, sequences: [u64; 3]| {
        let mut docs = vec![output(action, &plain_end, None)];
        docs.extend(sequences.map(event));
        let (lines, _) = chained(&plain_end, &docs);
        [plain.clone(), lines].concat()
    };
    let forged = {
        let third = crate::output::chain::stored(plain[2].as_bytes()).unwrap();
        let (lines, _) = chained(&third, &[event(9)]);
        lines[0].clone()
    };
    /// Changes the lines of a file (the forged line at hand).
    type Tamper = fn(&mut Vec<String>, &str);
    let tampers: [(&str, Vec<String>, Tamper); 8] = [
        ("edited", plain.clone(), |l, _| {
            l[3] = l[3].replace("8080", "8081")
        }),
        ("removed", plain.clone(), |l, _| {
            l.remove(2);
        }),
        ("reordered", plain.clone(), |l, _| l.swap(2, 3)),
        ("inserted one", plain.clone(), |l, _| {
            l.insert(3, l[1].clone())
        }),
        ("inserted several", plain.clone(), |l, _| {
            l.insert(3, l[1].clone());
            l.insert(3, l[1].clone());
        }),
        ("inserted, hashed to fit", plain.clone(), |l, forged| {
            l.insert(3, forged.to_owned());
        }),
        (
            "removed after a rotation",
            then("rotate", [6, 7, 8]),
            |l, _| {
                l.remove(7);
            },
        ),
        (
            "removed after a restart",
            then("start", [1, 2, 3]),
            |l, _| {
                l.remove(7);
            },
        ),
    ];
    for (title, mut lines, tamper) in tampers {
        tamper(&mut lines, &forged);
        write(&pinned.path("i.json"), &lines, "");
        pinned.run(title, &["i.json"]);
    }
}

//! Output files and syslog: rotation under real traffic, `egret verify` on the rotated set
//! (and on copies edited, cut and reordered), a SIGKILL and restart with a torn last line,
//! and RFC 5424 frames on a unix datagram socket the test binds.

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::expect::{has_arg, is_flow};
use egret_e2e::json::read_jsonl;
use egret_e2e::{
    egret_verify, expect_intact, field, field_str, field_u64, marker, prerequisite, run_in,
    wait_until, Egret, Harness, TcpServer, TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

/// The output set in egret's scratch directory: rotated files by name, the live file last.
fn output_set(dir: &Path) -> Result<Vec<PathBuf>> {
    let live = dir.join("events.jsonl");
    let mut files: Vec<PathBuf> = egret::output::rotate::list(&live)
        .with_context(|| format!("list {}", dir.display()))?
        .into_iter()
        .map(|r| r.path)
        .collect();
    files.push(live);
    Ok(files)
}

fn read_set(files: &[PathBuf]) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for file in files {
        all.extend(read_jsonl(file)?);
    }
    Ok(all)
}

/// `egret verify` must fail and name `file:line: what…`.
fn expect_broken(files: &[PathBuf], file: &Path, line: usize, what: &str) -> Result<()> {
    let out = egret_verify(files)?;
    let want = format!("{}:{line}: {what}", file.display());
    ensure!(
        out.status.code() == Some(1) && out.stderr.contains(&want),
        "egret verify should fail with {want:?}, got {}:\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(())
}

fn raw_lines(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {}", path.display()))?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn cookies(lines: &[Value], port: u16) -> Vec<u64> {
    lines
        .iter()
        .filter(|v| is_flow(v, "connect", "tcp", port))
        .filter_map(|v| field_u64(v, "egret.socket.cookie"))
        .collect()
}

#[test]
fn rotation_under_traffic_keeps_every_connection_once_and_verify_catches_tampering() -> Result<()> {
    const MAX: u64 = 16 * 1024;
    const CONNECTIONS: usize = 300;
    Harness::with_egret(
        "out-rotate",
        &["--output-max-bytes", "16K", "--output-retain", "1000"],
        |mut h| {
            let server = TcpServer::loopback()?;
            let port = server.port();
            h.connect_loop(CLIENT, port, CONNECTIONS, 1)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seen = cookies(&read_set(&output_set(h.egret.dir())?)?, port).len();
                if seen >= CONNECTIONS {
                    break;
                }
                ensure!(
                    h.egret.running()?,
                    "egret exited\n{}",
                    h.egret.stderr_tail()
                );
                ensure!(
                    Instant::now() < deadline,
                    "only {seen} of {CONNECTIONS} connect lines in the output set"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            h.egret.stop_cleanly()?;

            let files = output_set(h.egret.dir())?;
            ensure!(files.len() >= 5, "only {} files: {files:?}", files.len());
            for (i, file) in files.iter().enumerate() {
                let bytes = std::fs::read(file)?;
                ensure!(
                    bytes.len() as u64 <= MAX,
                    "{} has {} bytes, more than --output-max-bytes",
                    file.display(),
                    bytes.len()
                );
                ensure!(bytes.ends_with(b"\n"), "{} ends mid-line", file.display());
                let lines = read_jsonl(file)?;
                let first = lines.first().context("empty file")?;
                ensure!(
                    field_str(first, "event.dataset") == Some("egret.output"),
                    "{} does not start with egret's output line: {first}",
                    file.display()
                );
                if i > 0 {
                    let prev = files.get(i - 1).context("previous")?;
                    let prev_name = prev.file_name().and_then(|n| n.to_str());
                    ensure!(
                        field_str(first, "egret.output.previous.file") == prev_name,
                        "{}: first line names {:?}, not {prev_name:?}",
                        file.display(),
                        field(first, "egret.output.previous.file")
                    );
                }
                for line in &lines {
                    ensure!(
                        field_str(line, "egret.chain").is_some_and(|c| c.len() == 64),
                        "{}: a line without egret.chain: {line}",
                        file.display()
                    );
                }
            }
            // Every connection exactly once across the rotated files.
            let all = read_set(&files)?;
            let seen = cookies(&all, port);
            let unique: HashSet<u64> = seen.iter().copied().collect();
            ensure!(
                seen.len() == CONNECTIONS && unique.len() == CONNECTIONS,
                "{} connect lines, {} distinct sockets, want {CONNECTIONS} of each",
                seen.len(),
                unique.len()
            );
            let verified = expect_intact(&files)?;
            ensure!(
                verified.stdout.contains(&format!(
                    "intact: {} files, {} lines",
                    files.len(),
                    all.len()
                )),
                "{}",
                verified.stdout
            );
            // Arguments in another order: the same set.
            let mut reversed = files.clone();
            reversed.reverse();
            expect_intact(&reversed)?;

            // Tamper with a file in the middle of the set, restoring it after each case.
            let victim = files.get(files.len() / 2).context("middle file")?.clone();
            let original = raw_lines(&victim)?;
            let values: Vec<Value> = read_jsonl(&victim)?;
            // A connection line with a connection line after it, not the file's first line.
            let k = (1..values.len().saturating_sub(1))
                .find(|&k| {
                    values
                        .get(k)
                        .is_some_and(|v| is_flow(v, "connect", "tcp", port))
                })
                .context("no connection line in the middle file")?;

            let mut edited = original.clone();
            if let Some(line) = edited.get_mut(k) {
                *line = line.replacen("\"127.0.0.1\"", "\"127.0.0.2\"", 1);
            }
            write_lines(&victim, &edited)?;
            expect_broken(&files, &victim, k + 1, "edited")?;

            let mut removed = original.clone();
            removed.remove(k);
            write_lines(&victim, &removed)?;
            expect_broken(&files, &victim, k + 1, "removed: 1 line(s)")?;

            let mut reordered = original.clone();
            reordered.swap(k, k + 1);
            write_lines(&victim, &reordered)?;
            expect_broken(&files, &victim, k + 1, "reordered")?;

            // The tail of a rotated file cut: the next file's first line says so.
            let mut cut = original.clone();
            cut.truncate(cut.len() - 2);
            write_lines(&victim, &cut)?;
            let next = files
                .get(files.len() / 2 + 1)
                .context("file after the middle one")?;
            expect_broken(&files, next, 1, "continues from")?;

            write_lines(&victim, &original)?;
            expect_intact(&files)?;
            h.egret.discard_dir_on_drop();
            Ok(())
        },
    )
}

#[test]
fn sigkill_then_restart_cuts_the_torn_line_and_the_chain_continues() -> Result<()> {
    Harness::with_egret("out-kill9", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        // Traffic while egret is killed.
        let mut load = Command::new(CLIENT);
        load.args([
            "connect-loop",
            "--duration-ms",
            "3000",
            "--interval-ms",
            "1",
            "127.0.0.1",
            &port.to_string(),
        ]);
        h.cgroup.command(&mut load)?;
        let mut load = load
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn connect-loop")?;
        let waited = h.egret.wait_for_flow("connect", "tcp", port);
        std::thread::sleep(Duration::from_millis(700));
        let killed = h.egret.kill9();
        let _ = load.kill();
        let _ = load.wait();
        waited?;
        killed?;

        let events = h.egret.events_path();
        let mut bytes = std::fs::read(&events)?;
        let intact_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let intact = bytes.get(..intact_len).context("prefix")?.to_vec();
        // The start of a line, as a crash in the middle of a write leaves it (on top of
        // whatever the SIGKILL itself cut short).
        let torn =
            br#"{"@timestamp":"2026-11-22T06:01:41.920432283Z","event":{"kind":"event","act"#;
        bytes.extend_from_slice(torn);
        let expected_cut = bytes.len() - intact_len;
        std::fs::write(&events, &bytes)?;
        let before: Vec<Value> = read_jsonl(&events)?;
        let last_chain = before
            .last()
            .and_then(|v| field_str(v, "egret.chain"))
            .context("no chained line before the kill")?
            .to_owned();

        h.egret.restart(h.cgroup.path(), &[])?;
        let m = marker();
        h.run(Command::new(CLIENT).args(["tcp", "127.0.0.1", &port.to_string(), &m]))?;
        h.egret.wait_for(|v| has_arg(v, &m), LINE_TIMEOUT)?;
        h.egret.stop_cleanly()?;

        let after = std::fs::read(&events)?;
        ensure!(
            after.starts_with(&intact),
            "the lines written before the kill changed"
        );
        ensure!(
            !after.windows(torn.len()).any(|w| w == torn),
            "the torn line is still there"
        );
        let lines = read_jsonl(&events)?;
        let start = lines
            .get(before.len())
            .context("no line after the restart")?;
        ensure!(
            field_str(start, "event.dataset") == Some("egret.output")
                && field_str(start, "event.action") == Some("start"),
            "the first line after the restart is not egret's start line: {start}"
        );
        ensure!(
            field_u64(start, "egret.output.repaired_bytes") == Some(expected_cut as u64),
            "repaired_bytes: want {expected_cut}: {start}"
        );
        ensure!(
            field_str(start, "egret.output.previous.hash") == Some(last_chain.as_str()),
            "the chain does not continue from the last intact line {last_chain}: {start}"
        );
        ensure!(
            h.egret.stderr_text()?.contains("cutting"),
            "no warning about the cut in the log"
        );
        expect_intact(&[events])?;
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}

/// An RFC 5424 message, parsed strictly (section 6: HEADER SP STRUCTURED-DATA [SP MSG]).
#[derive(Debug, Clone)]
struct Frame {
    pri: u32,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    msg: String,
}

fn is_printusascii(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// A header field: 1 to `max` PRINTUSASCII characters, then one space.
fn header_field<'a>(rest: &mut &'a [u8], max: usize, what: &str) -> Result<&'a str> {
    let end = rest
        .iter()
        .position(|&b| b == b' ')
        .with_context(|| format!("no space after {what}"))?;
    let (value, tail) = rest.split_at(end);
    ensure!(
        (1..=max).contains(&value.len()) && value.iter().all(|&b| is_printusascii(b)),
        "{what} {value:?} is not 1-{max} printable US-ASCII characters"
    );
    *rest = tail.get(1..).unwrap_or_default();
    Ok(std::str::from_utf8(value)?)
}

fn digits(s: &str, n: usize, what: &str) -> Result<u32> {
    ensure!(
        s.len() == n && s.bytes().all(|b| b.is_ascii_digit()),
        "{what} {s:?} is not {n} digits"
    );
    Ok(s.parse()?)
}

/// TIMESTAMP = FULL-DATE "T" FULL-TIME, at most 6 fractional digits, Z or an offset.
fn check_timestamp(ts: &str) -> Result<()> {
    let (date, time) = ts.split_once('T').context("no T")?;
    let mut d = date.split('-');
    let (y, mo, da) = (d.next(), d.next(), d.next());
    ensure!(d.next().is_none(), "date {date:?}");
    digits(y.unwrap_or(""), 4, "year")?;
    let mo = digits(mo.unwrap_or(""), 2, "month")?;
    let da = digits(da.unwrap_or(""), 2, "day")?;
    ensure!(
        (1..=12).contains(&mo) && (1..=31).contains(&da),
        "date {date:?}"
    );
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, None)
    } else {
        let at = time.rfind(['+', '-']).context("no time zone")?;
        (time.get(..at).unwrap_or(""), time.get(at..))
    };
    if let Some(off) = offset {
        let off = off.get(1..).unwrap_or("");
        let (oh, om) = off.split_once(':').context("offset")?;
        ensure!(digits(oh, 2, "offset hour")? < 24 && digits(om, 2, "offset minute")? < 60);
    }
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let mut t = hms.split(':');
    let (h, m, s) = (t.next(), t.next(), t.next());
    ensure!(t.next().is_none(), "time {hms:?}");
    ensure!(
        digits(h.unwrap_or(""), 2, "hour")? < 24
            && digits(m.unwrap_or(""), 2, "minute")? < 60
            && digits(s.unwrap_or(""), 2, "second")? < 60,
        "time {hms:?}"
    );
    if let Some(frac) = frac {
        ensure!(
            (1..=6).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()),
            "TIME-SECFRAC {frac:?} is not 1-6 digits"
        );
    }
    Ok(())
}

fn parse_frame(bytes: &[u8]) -> Result<Frame> {
    let rest = bytes.strip_prefix(b"<").context("no <PRI>")?;
    let close = rest.iter().position(|&b| b == b'>').context("no >")?;
    let pri = std::str::from_utf8(rest.get(..close).unwrap_or_default())?;
    ensure!(
        (1..=3).contains(&pri.len())
            && pri.bytes().all(|b| b.is_ascii_digit())
            && (pri == "0" || !pri.starts_with('0')),
        "PRI {pri:?}"
    );
    let pri: u32 = pri.parse()?;
    ensure!(pri <= 191, "PRI {pri} > 191");
    let mut rest = rest.get(close + 1..).unwrap_or_default();
    ensure!(rest.starts_with(b"1 "), "VERSION is not 1");
    rest = rest.get(2..).unwrap_or_default();
    let timestamp = header_field(&mut rest, 64, "TIMESTAMP")?.to_owned();
    if timestamp != "-" {
        check_timestamp(&timestamp).with_context(|| format!("TIMESTAMP {timestamp:?}"))?;
    }
    let hostname = header_field(&mut rest, 255, "HOSTNAME")?.to_owned();
    let app_name = header_field(&mut rest, 48, "APP-NAME")?.to_owned();
    let procid = header_field(&mut rest, 128, "PROCID")?.to_owned();
    let msgid = header_field(&mut rest, 32, "MSGID")?.to_owned();
    // STRUCTURED-DATA: egret sends the NILVALUE.
    ensure!(
        rest.starts_with(b"- "),
        "STRUCTURED-DATA is not \"-\" followed by MSG"
    );
    let msg = rest.get(2..).unwrap_or_default();
    let msg = msg.strip_prefix(b"\xef\xbb\xbf").unwrap_or(msg);
    Ok(Frame {
        pri,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        msg: std::str::from_utf8(msg)
            .context("MSG is not UTF-8")?
            .to_owned(),
    })
}

#[test]
fn rfc5424_parser_is_strict() -> Result<()> {
    let good = b"<166>1 2026-11-22T06:01:41.920432Z vm egret 42 event - {\"a\":1}";
    let f = parse_frame(good)?;
    ensure!(f.pri == 166 && f.msgid == "event" && f.msg == "{\"a\":1}");
    for bad in [
        &b"<166>2 2026-11-22T06:01:41Z vm egret 42 event - {}"[..],
        b"<192>1 2026-11-22T06:01:41Z vm egret 42 event - {}",
        b"<016>1 2026-11-22T06:01:41Z vm egret 42 event - {}",
        b"<166>1 2026-11-22T06:01:41.9204321Z vm egret 42 event - {}",
        b"<166>1 2026-11-22 06:01:41Z vm egret 42 event - {}",
        b"<166>1 2026-11-22T06:01:41Z vm egret 42 event {}",
        b"<166>1 2026-11-22T06:01:41Z vm egret 42 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa - {}",
        b"<166>1 2026-11-22T06:01:41Z  egret 42 event - {}",
    ] {
        if parse_frame(bad).is_ok() {
            bail!("accepted {:?}", String::from_utf8_lossy(bad));
        }
    }
    Ok(())
}

/// egret writing to the syslog socket `socket` (facility local4) and one connection from the
/// test cgroup with a marker: the harness, the server (to keep open) and the marker.
fn syslog_egret_and_one_connection(
    cgroup: TestCgroup,
    socket: &Path,
) -> Result<(Harness, TcpServer, String)> {
    let socket_arg = socket.display().to_string();
    let h = Harness::start(
        cgroup,
        &[
            "--syslog",
            "--syslog-socket",
            &socket_arg,
            "--syslog-facility",
            "local4",
        ],
    )?;
    let server = TcpServer::loopback()?;
    let m = marker();
    h.run(Command::new(CLIENT).args(["tcp", "127.0.0.1", &server.port().to_string(), &m]))?;
    Ok((h, server, m))
}

#[test]
fn syslog_gets_an_rfc5424_frame_per_line() -> Result<()> {
    Harness::with_cgroup("out-syslog", |cgroup| {
        let dir =
            std::env::temp_dir().join(format!("egret-e2e-syslog-{}", egret_e2e::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("log.sock");
        let receiver = UnixDatagram::bind(&socket).context("bind the test's syslog socket")?;
        receiver.set_read_timeout(Some(Duration::from_millis(500)))?;
        let (mut h, server, m) = syslog_egret_and_one_connection(cgroup, &socket)?;

        let pid = h.egret.pid().context("pid")?.to_string();
        let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + LINE_TIMEOUT;
        let connect = loop {
            ensure!(
                Instant::now() < deadline,
                "no syslog frame for the connection within {LINE_TIMEOUT:?}; {} frames",
                frames.len()
            );
            let n = match receiver.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("recv"),
            };
            let bytes = buf.get(..n).context("frame")?;
            let frame = parse_frame(bytes)
                .with_context(|| format!("frame {:?}", String::from_utf8_lossy(bytes)))?;
            let line: Value = serde_json::from_str(&frame.msg)
                .with_context(|| format!("MSG is not a JSON line: {}", frame.msg))?;
            let kind = field_str(&line, "event.kind").context("no event.kind")?;
            let severity = if kind == "alert" { 4 } else { 6 };
            ensure!(
                frame.pri == 20 * 8 + severity,
                "PRI {} for a {kind} line",
                frame.pri
            );
            ensure!(
                frame.app_name == "egret" && frame.procid == pid,
                "{frame:?}"
            );
            ensure!(
                frame.msgid == kind,
                "MSGID {} for a {kind} line",
                frame.msgid
            );
            ensure!(
                frame.hostname == host || (host.is_empty() && frame.hostname == "-"),
                "{frame:?}"
            );
            let found = is_flow(&line, "connect", "tcp", server.port()) && has_arg(&line, &m);
            frames.push((frame, line));
            if found {
                break frames.last().cloned();
            }
        };
        let (frame, _) = connect.context("frame")?;
        let sent = egret_e2e::parse_timestamp(&frame.timestamp)?;
        let age = SystemTime::now().duration_since(sent).unwrap_or_default();
        ensure!(
            age < Duration::from_secs(60),
            "TIMESTAMP {} is off",
            frame.timestamp
        );
        // The first frame is the file's start line; every frame's MSG is a line of the file,
        // byte for byte (chain included).
        ensure!(
            frames
                .first()
                .is_some_and(|(_, v)| field_str(v, "event.dataset") == Some("egret.output")),
            "the first frame is not egret's output start line"
        );
        h.egret.stop_cleanly()?;
        let file: HashSet<String> = raw_lines(&h.egret.events_path())?.into_iter().collect();
        for (frame, _) in &frames {
            ensure!(
                file.contains(&frame.msg),
                "a syslog MSG that is not a line of the file: {}",
                frame.msg
            );
        }
        h.egret.discard_dir_on_drop();
        drop(h);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

/// rsyslogd run by the test on its own socket and files; killed on drop.
struct Rsyslogd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Interoperability: Debian's rsyslog parses egret's messages as RFC 5424. rsyslog is
/// installed with apt when missing (no service started); with `CI=true` a failed install fails
/// the test.
#[test]
fn rsyslog_parses_the_messages_as_rfc5424() -> Result<()> {
    let Some(rsyslogd) = prerequisite(egret_e2e::runtime::install::ensure_program(
        "rsyslogd",
        "rsyslog",
        &["/usr/sbin/rsyslogd"],
    ))?
    else {
        return Ok(());
    };
    Harness::with_cgroup("out-rsyslog", |cgroup| {
        let dir =
            std::env::temp_dir().join(format!("egret-e2e-rsyslog-{}", egret_e2e::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("log.sock");
        let received = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" UseSpecialParser="off" ParseHostname="on")
template(name="fields" type="list") {{
  property(name="pri") constant(value="|")
  property(name="protocol-version") constant(value="|")
  property(name="syslogfacility-text") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="procid") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\n")
}}
*.* action(type="omfile" file="{received}" template="fields")
"#,
                dir = dir.display(),
                socket = socket.display(),
                received = received.display()
            ),
        )?;
        let child = Command::new(&rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start rsyslogd")?;
        let daemon = Rsyslogd {
            child,
            dir: dir.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "rsyslogd did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (mut h, _server, m) = syslog_egret_and_one_connection(cgroup, &socket)?;
        h.egret.wait_for(|v| has_arg(v, &m), LINE_TIMEOUT)?;
        let pid = h.egret.pid().context("pid")?.to_string();
        h.egret.stop_cleanly()?;
        let file: HashSet<String> = raw_lines(&h.egret.events_path())?.into_iter().collect();

        let deadline = Instant::now() + LINE_TIMEOUT;
        let text = loop {
            let text = std::fs::read_to_string(&received).unwrap_or_default();
            if text.contains(&m) {
                break text;
            }
            ensure!(
                Instant::now() < deadline,
                "rsyslog did not write the connection's message:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut connects = 0;
        for record in text.lines() {
            let parts: Vec<&str> = record.splitn(9, '|').collect();
            let [pri, version, facility, _host, app, procid, msgid, sd, msg] = parts.as_slice()
            else {
                bail!("rsyslog record {record:?}");
            };
            let line: Value = serde_json::from_str(msg).with_context(|| format!("MSG {msg:?}"))?;
            let kind = field_str(&line, "event.kind").context("event.kind")?;
            let want_pri = if kind == "alert" { "164" } else { "166" };
            ensure!(
                (*pri, *version, *facility, *app, *procid, *msgid, *sd)
                    == (want_pri, "1", "local4", "egret", pid.as_str(), kind, "-"),
                "rsyslog parsed {record:?}"
            );
            ensure!(
                file.contains(*msg),
                "a message that is not a line of the file: {msg}"
            );
            if has_arg(&line, &m) && field_str(&line, "event.action") == Some("connect") {
                connects += 1;
            }
        }
        ensure!(
            connects == 1,
            "{connects} start messages for the connection"
        );
        h.egret.discard_dir_on_drop();
        drop(h);
        drop(daemon);
        Ok(())
    })
}

/// A tmpfs of `size` bytes mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: u64) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("egret-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let options = format!("size={size},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .with_context(|| format!("mount a tmpfs on {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system of `path` (a new file there) until it refuses another byte.
fn fill(path: &Path) -> Result<std::fs::File> {
    use std::io::Write as _;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    for chunk in [64 << 10, 4 << 10, 256, 1] {
        let block = vec![b'x'; chunk];
        while file.write_all(&block).is_ok() {}
    }
    Ok(file)
}

/// The complete lines of `path` (an error when one is not JSON) and whether the file ends
/// with a newline.
fn whole_lines(path: &Path) -> Result<(Vec<Value>, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok((read_jsonl(path)?, bytes.last().is_none_or(|&b| b == b'\n')))
}

/// Proves: on a full file system egret keeps its lines waiting; when space returns a little at
/// a time, less than what waits, each bit is filled with whole lines (the file never ends
/// inside a line, every line parses) and writing resumes; once space is back every connection
/// made while the disk was full is in the files exactly once (the rotations that came due
/// while the disk was full happen then, losing nothing), the chain is intact, no line was
/// refused, and the metric line shows the write errors and an empty backlog.
#[test]
fn a_full_disk_with_less_space_back_than_the_backlog_recovers() -> Result<()> {
    const CONNECTIONS: usize = 1500;
    const FREED: u64 = 256 << 10;
    Harness::with_cgroup("out-full", |cgroup| {
        let fs = Tmpfs::mount("out-full", 8 << 20)?;
        let out = fs.0.join("events.jsonl");
        let mut egret = Egret::start_custom("out-full", |dir| {
            Ok(vec![
                "run".into(),
                "--cgroup".into(),
                cgroup.path().into(),
                "--output".into(),
                out.clone().into(),
                "--ready-file".into(),
                dir.join("ready").into(),
                "--metrics-interval".into(),
                "1".into(),
                // Rotations come due while the disk is full.
                "--output-max-bytes".into(),
                "1M".into(),
            ])
        })?;
        let server = TcpServer::loopback()?;
        let port = server.port();
        let m = marker();
        run_in(
            &cgroup,
            Command::new(CLIENT).args(["tcp", "127.0.0.1", &port.to_string(), &m]),
        )?;
        ensure!(
            wait_until(LINE_TIMEOUT, || Ok(read_jsonl(&out)?
                .iter()
                .any(|v| has_arg(v, &m))))?,
            "no line for the first connection"
        );

        let filler_path = fs.0.join("filler");
        let filler = fill(&filler_path)?;
        let mut load = Command::new(CLIENT);
        load.args([
            "connect-loop",
            "--count",
            &CONNECTIONS.to_string(),
            "--interval-ms",
            "1",
            "127.0.0.1",
            &port.to_string(),
        ]);
        run_in(&cgroup, &mut load)?;
        std::thread::sleep(Duration::from_secs(2));
        let full_len = std::fs::metadata(&out)?.len();
        ensure!(
            egret.stderr_text()?.contains("No space left on device"),
            "egret logged no write error on the full disk"
        );

        // Space back in two small steps, each far less than what waits.
        let mut len = full_len;
        for step in 1..=2u64 {
            let filler_len = filler.metadata()?.len();
            filler.set_len(filler_len.saturating_sub(FREED))?;
            ensure!(
                wait_until(Duration::from_secs(10), || Ok(std::fs::metadata(&out)?
                    .len()
                    > len))?,
                "step {step}: nothing written after {FREED} bytes were freed"
            );
            std::thread::sleep(Duration::from_millis(1500));
            let now = std::fs::metadata(&out)?.len();
            let (lines, whole) = whole_lines(&out)?;
            ensure!(whole, "step {step}: the file ends inside a line");
            ensure!(
                now - len <= FREED + 8192,
                "step {step}: grew by {} bytes with {FREED} freed",
                now - len
            );
            let seen = cookies(&lines, port).len();
            ensure!(
                seen < CONNECTIONS,
                "step {step}: all {seen} connections already written: the backlog was not larger than the space freed"
            );
            len = now;
        }

        drop(filler);
        std::fs::remove_file(&filler_path)?;
        let written =
            || -> Result<usize> { Ok(cookies(&read_set(&output_set(&fs.0)?)?, port).len()) };
        ensure!(
            wait_until(Duration::from_secs(30), || Ok(written()? > CONNECTIONS))?,
            "not every connection was written once space was back: {} of {CONNECTIONS}",
            written()?
        );
        // The rotations put off while the disk was full go ahead with the next lines.
        ensure!(
            wait_until(Duration::from_secs(10), || Ok(output_set(&fs.0)?.len() > 1))?,
            "no rotation once space was back"
        );
        std::thread::sleep(Duration::from_millis(1500));
        egret.stop_cleanly()?;

        let files = output_set(&fs.0)?;
        let lines = read_set(&files)?;
        let all = cookies(&lines, port);
        let unique: HashSet<u64> = all.iter().copied().collect();
        // The loop's connections and the first one.
        let want = CONNECTIONS + 1;
        ensure!(
            all.len() == want && unique.len() == want,
            "connections written {} (unique {}), want {want} once each",
            all.len(),
            unique.len()
        );
        let metric = lines
            .iter()
            .rev()
            .find(|v| field_str(v, "event.kind") == Some("metric"))
            .context("no metric line")?;
        let counter = |name: &str| field_u64(metric, &format!("egret.metrics.{name}"));
        ensure!(
            counter("write_errors").is_some_and(|n| n > 0)
                && counter("output_lines_refused") == Some(0)
                && counter("output_backlog_bytes") == Some(0),
            "the last metric line: {metric}"
        );
        expect_intact(&files)?;
        egret.discard_dir_on_drop();
        Ok(())
    })
}

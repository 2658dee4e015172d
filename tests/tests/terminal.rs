//! For a person at a terminal: `egret run --format text` on a pipe (a real connection's line,
//! no colour), refused with a file output, colour on a real terminal (tmux), and `egret top`
//! following a real egret's output file in a detached tmux session of fixed size, driven with
//! `send-keys` and read with `capture-pane` (printed: the screenshot-equivalent).

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::{
    command, egret_bin, run::ScratchDir, skip, unique_suffix, wait_until, Harness, PolicyDir,
    TcpServer, TestCgroup,
};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

/// `egret run --output - --format text` with stdout a pipe read by a thread; killed on drop.
struct PipedEgret {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    dir: ScratchDir,
}

impl PipedEgret {
    fn start(cgroup: &Path, extra: &[&str]) -> Result<Self> {
        let dir = ScratchDir::create("text")?;
        let ready = dir.path().join("ready");
        let mut child = Command::new(egret_bin())
            .args(["run", "--cgroup"])
            .arg(cgroup)
            .args(["--output", "-", "--ready-file"])
            .arg(&ready)
            .args(["--metrics-interval", "1"])
            .args(extra)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("spawn egret")?;
        let mut stdout = child.stdout.take().context("egret's stdout")?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut out) = sink.lock() {
                    out.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
            }
        });
        let mut me = Self { child, out, dir };
        let started = wait_until(Duration::from_secs(30), || {
            if let Some(status) = me.child.try_wait()? {
                bail!("egret exited ({status}): {}", me.stderr());
            }
            Ok(ready.exists())
        })?;
        ensure!(started, "egret not ready: {}", me.stderr());
        Ok(me)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().map(|o| o.clone()).unwrap_or_default())
            .into_owned()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits for a line for which `want` holds.
    fn wait_line(&self, what: &str, want: impl Fn(&str) -> bool) -> Result<String> {
        let mut found = None;
        wait_until(Duration::from_secs(15), || {
            found = self.text().lines().find(|l| want(l)).map(str::to_owned);
            Ok(found.is_some())
        })?;
        found.with_context(|| {
            format!(
                "no {what} line in egret's text output:\n{}\n--- stderr ---\n{}",
                self.text(),
                self.stderr()
            )
        })
    }

    fn stop(&mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = egret_e2e::run::wait_child(&mut self.child, Duration::from_secs(20))?;
        ensure!(
            status.success(),
            "egret exited with {status}: {}",
            self.stderr()
        );
        Ok(())
    }
}

impl Drop for PipedEgret {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The columns of a text line (whitespace-separated; names here have no spaces).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn text_format_on_a_pipe_shows_a_real_connection_aligned_without_colour() -> Result<()> {
    Harness::with_cgroup("text-pipe", |cg| {
        let server = egret_e2e::ExchangeServer::start("127.0.0.1:0".parse()?, 1000, 300, false)?;
        let port = server.port();
        let (_policy_dir, policy) =
            PolicyDir::with_policy("text", &egret_e2e::policy::audit_policy("text-rule", port))?;
        let policy = policy.display().to_string();
        let mut egret = PipedEgret::start(cg.path(), &["--format", "text", "--policy", &policy])?;
        let out = egret_e2e::run_in(
            &cg,
            &mut command(
                CLIENT,
                &[
                    "tcp-exchange",
                    "127.0.0.1",
                    &port.to_string(),
                    "--send",
                    "1000",
                ],
            ),
        )?;
        let dest = format!("127.0.0.1:{port}/tcp");
        let pid = format!("[{}]", out.pid);
        let connect = egret.wait_line("connect", |l| {
            words(l).get(1) == Some(&"connect") && l.contains(&dest)
        })?;
        let end = egret.wait_line("end", |l| {
            words(l).get(1) == Some(&"end") && l.contains(&dest)
        })?;
        egret.stop()?;
        let text = egret.text();
        eprintln!("--- egret run --format text (stdout a pipe) ---\n{text}");
        ensure!(!text.contains('\x1b'), "ANSI codes on a pipe:\n{text:?}");
        ensure!(
            !text.trim_start().starts_with('{'),
            "JSON, not text:\n{text}"
        );

        // The header names the columns; every line's cells start under their titles.
        let header = text.lines().next().context("no output")?;
        ensure!(header.starts_with("TIME(UTC)"), "header: {header}");
        let at = |title: &str| {
            header
                .find(title)
                .with_context(|| format!("{title} in {header}"))
        };
        for line in [&connect, &end] {
            for title in [
                "EVENT",
                "VERDICT",
                "PROCESS[PID]",
                "USER",
                "UNIT/CONTAINER/POD",
                "DESTINATION",
            ] {
                // In characters (a cut cell ends in a multi-byte `…`).
                let column = at(title)?;
                let chars: Vec<char> = line.chars().collect();
                ensure!(
                    chars.get(column - 1) == Some(&' ')
                        && chars.get(column).is_some_and(|c| *c != ' '),
                    "{title} not aligned at {column}:\n{header}\n{line}"
                );
            }
        }
        let w = words(&connect);
        ensure!(
            w[0].len() == 12 && w[0].as_bytes()[2] == b':' && w[0].as_bytes()[8] == b'.',
            "time: {connect}"
        );
        ensure!(w[2] == "approved", "verdict: {connect}");
        ensure!(
            w[3].starts_with("egret-testclie") && w[3].ends_with(&pid),
            "process[pid] {pid}: {connect}"
        );
        ensure!(w[4] == "root", "user: {connect}");
        ensure!(
            w[6] == dest && w[7] == "rule=text-rule",
            "destination and rule: {connect}"
        );
        ensure!(
            end.ends_with("sent 1000 B recv 300 B") && words(&end).contains(&"success"),
            "end line: outcome, duration, bytes: {end}"
        );
        let stats = egret.wait_line("stats", |l| words(l).get(1) == Some(&"stats"))?;
        ensure!(
            stats.contains("events ") && stats.contains(" lost 0 "),
            "stats: {stats}"
        );
        Ok(())
    })
}

#[test]
fn text_format_with_a_file_output_is_refused() -> Result<()> {
    skip::with_egret_bin(|bin| {
        let out = egret_e2e::run_with_timeout(
            Command::new(bin).args([
                "run",
                "--output",
                "/tmp/egret-e2e-never.jsonl",
                "--format",
                "text",
            ]),
            Duration::from_secs(10),
        )?;
        // A configuration error (not restarted in a loop by systemd).
        ensure!(
            out.status.code() == Some(78),
            "{}: {}",
            out.status,
            out.stderr
        );
        ensure!(
            out.stderr.contains("--format text writes to stdout only"),
            "stderr: {}",
            out.stderr
        );
        ensure!(
            !Path::new("/tmp/egret-e2e-never.jsonl").exists(),
            "file created"
        );
        Ok(())
    })
}

/// A tmux server of this test alone (its own socket), killed on drop.
struct Tmux {
    bin: PathBuf,
    socket: String,
    /// The pane's process (killed on drop: egret takes SIGHUP as "reload the policy").
    pid: Option<i32>,
}

impl Tmux {
    /// A detached session of `width`x`height` running `argv`.
    fn start(width: u16, height: u16, argv: &[String]) -> Result<Self> {
        // Debian's tmux, installed when missing.
        let bin = egret_e2e::runtime::install::ensure_program("tmux", "tmux", &["/usr/bin/tmux"])?;
        let mut me = Self {
            bin,
            socket: format!("egret-e2e-{}", unique_suffix()),
            pid: None,
        };
        let status = me
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                "e2e",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .args(argv)
            .status()?;
        ensure!(status.success(), "tmux new-session: {status}");
        let out = me
            .command()
            .args(["display-message", "-p", "-t", "e2e", "#{pane_pid}"])
            .output()?;
        me.pid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
        ensure!(me.pid.is_some(), "tmux pane pid: {out:?}");
        Ok(me)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    fn send_keys(&self, keys: &[&str]) -> Result<()> {
        let status = self
            .command()
            .args(["send-keys", "-t", "e2e"])
            .args(keys)
            .status()?;
        ensure!(status.success(), "tmux send-keys {keys:?}: {status}");
        Ok(())
    }

    /// The pane's text (with `-e`, its colour codes too).
    fn capture(&self, escapes: bool) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(["capture-pane", "-p", "-t", "e2e"]);
        if escapes {
            cmd.arg("-e");
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "capture-pane: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the pane shows what `want` accepts; the last capture either way.
    fn wait_for(&self, want: impl Fn(&str) -> bool) -> Result<(bool, String)> {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(15), || {
            last = self.capture(false)?;
            Ok(want(&last))
        })?;
        Ok((ok, last))
    }

    /// Whether the session's program still runs.
    fn alive(&self) -> bool {
        self.command()
            .args(["has-session", "-t", "e2e"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.filter(|_| self.alive()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// The table row of `dest` on the pane: its cells split on whitespace.
fn row<'a>(pane: &'a str, dest: &str) -> Option<Vec<&'a str>> {
    pane.lines().find(|l| l.contains(dest)).map(words)
}

/// Prints a capture (the screenshot-equivalent), without the pane's empty rows at the end.
fn show(what: &str, pane: &str) {
    eprintln!(
        "--- {what} (tmux capture-pane -p) ---\n{}\n--- end ---",
        pane.trim_end_matches('\n')
    );
}

fn connect_n(cg: &TestCgroup, port: u16, n: usize) -> Result<()> {
    egret_e2e::run_in(
        cg,
        &mut command(
            CLIENT,
            &[
                "connect-loop",
                "--count",
                &n.to_string(),
                "--interval-ms",
                "5",
                "127.0.0.1",
                &port.to_string(),
            ],
        ),
    )?;
    Ok(())
}

#[test]
fn egret_top_follows_a_real_egret_under_tmux() -> Result<()> {
    Harness::with_cgroup("top", |cg| {
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        // Port a approved, port b not (an alert).
        let (_policy_dir, policy) =
            PolicyDir::with_policy("top", &egret_e2e::policy::audit_policy("port-a", a.port()))?;
        let policy = policy.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy, "--alert-window", "1"])?;
        let events = h.egret.events_path();
        // Lines of an earlier connection are in the file before top starts: the history.
        connect_n(&h.cgroup, a.port(), 1)?;
        h.egret.wait_for(
            |v| egret_e2e::field_u64(v, "destination.port") == Some(u64::from(a.port())),
            egret_e2e::LINE_TIMEOUT,
        )?;
        // After top: its exit status and whether the terminal is back in cooked mode.
        let argv = after_top(&format!(
            "'{}' top --input '{}' --refresh-ms 200",
            egret_bin().display(),
            events.display()
        ));
        let tmux = Tmux::start(120, 30, &argv)?;
        connect_n(&h.cgroup, a.port(), 3)?;
        connect_n(&h.cgroup, b.port(), 1)?;
        // Port c: one connection with payload (1000 bytes out, 300 back).
        let c = egret_e2e::ExchangeServer::start("127.0.0.1:0".parse()?, 1000, 300, false)?;
        egret_e2e::run_in(
            &h.cgroup,
            &mut command(
                CLIENT,
                &[
                    "tcp-exchange",
                    "127.0.0.1",
                    &c.port().to_string(),
                    "--send",
                    "1000",
                ],
            ),
        )?;
        let (dest_a, dest_b, dest_c) = (
            format!("127.0.0.1:{}/tcp", a.port()),
            format!("127.0.0.1:{}/tcp", b.port()),
            format!("127.0.0.1:{}/tcp", c.port()),
        );
        let (ok, pane) = tmux.wait_for(|p| {
            row(p, &dest_a).is_some_and(|r| r.contains(&"4"))
                && row(p, &dest_b).is_some_and(|r| r.contains(&"unapproved"))
                && row(p, &dest_c).is_some_and(|r| r.contains(&"300"))
        })?;
        show("egret top, by process, sorted by connections", &pane);
        ensure!(
            ok,
            "egret top did not show 4 connections to {dest_a} and {dest_b} unapproved"
        );
        ensure!(
            pane.contains("egret top")
                && pane.contains("by process")
                && pane.contains("sort connections"),
            "title"
        );
        ensure!(
            pane.contains("PROCESS") && pane.contains("CONNS*") && pane.contains("VERDICT"),
            "header"
        );
        let ra = row(&pane, &dest_a).context("row a")?;
        let rb = row(&pane, &dest_b).context("row b")?;
        // GROUP DEST CONNS SENT(2) RECV(2) ALERTS LAST VERDICT
        ensure!(
            ra[0].contains("egret-testclient") || ra[0].starts_with('/'),
            "group: {ra:?}"
        );
        ensure!(
            ra[2] == "4" && ra[7] == "0" && ra[9] == "approved",
            "row a: {ra:?}"
        );
        ensure!(
            rb[2] == "1" && rb[7] == "1" && rb[9] == "unapproved",
            "row b: {rb:?}"
        );
        let rc = row(&pane, &dest_c).context("row c")?;
        ensure!(
            rc[2] == "1" && rc[3..7] == ["1000", "B", "300", "B"] && rc[9] == "unapproved",
            "row c (bytes from the end line): {rc:?}"
        );
        // Sorted by connections, most first: a above b.
        let line_of = |d: &str| pane.lines().position(|l| l.contains(d));
        ensure!(line_of(&dest_a) < line_of(&dest_b), "order by connections");
        ensure!(
            pane.contains("lines ") && !pane.contains("unparsed"),
            "status bar"
        );

        // Sort by bytes: c first.
        tmux.send_keys(&["b"])?;
        let (ok, pane) = tmux.wait_for(|p| {
            p.contains("sort bytes") && line_of_in(p, &dest_c) < line_of_in(p, &dest_a)
        })?;
        show("after `b`: sorted by bytes", &pane);
        ensure!(ok && pane.contains("SENT*"), "sort by bytes");

        // Sort by verdict (strictest first): b above a; the header marks the column.
        tmux.send_keys(&["v"])?;
        let (ok, pane) = tmux.wait_for(|p| {
            p.contains("sort verdict") && line_of_in(p, &dest_b) < line_of_in(p, &dest_a)
        })?;
        show("after `v`: sorted by verdict", &pane);
        ensure!(ok && pane.contains("VERDICT*"), "sort by verdict");

        // Filter: `/`, the port of b, Enter: only b's row is left.
        tmux.send_keys(&["/"])?;
        tmux.send_keys(&["-l", &format!(":{}/", b.port())])?;
        tmux.send_keys(&["Enter"])?;
        let filter = format!("filter: :{}/ ", b.port());
        let (ok, pane) = tmux.wait_for(|p| {
            row(p, &dest_b).is_some()
                && row(p, &dest_a).is_none()
                && row(p, &dest_c).is_none()
                && p.contains(&filter)
                && p.contains("q quit")
        })?;
        show(&format!("after `/:{}/` Enter: filtered", b.port()), &pane);
        ensure!(ok, "filter on {}", b.port());

        // Group by unit: the cgroup is no unit here (`-`).
        tmux.send_keys(&["g"])?;
        let (ok, pane) = tmux.wait_for(|p| p.contains("by unit") && p.contains("UNIT"))?;
        show("after `g`: grouped by unit", &pane);
        ensure!(
            ok && row(&pane, &dest_b).is_some_and(|r| r[0] == "-"),
            "by unit"
        );

        // A line that is not JSON is counted in the status bar, never fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&events)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"garbage\n"))?;
        let (ok, pane) = tmux.wait_for(|p| p.contains("unparsed 1"))?;
        show("after a garbage line", &pane);
        ensure!(
            ok && tmux.alive(),
            "the unparsed line is counted and top still runs"
        );

        // `q` quits and the terminal is restored: the alternate screen is left (the shell's
        // lines show) and the tty is in cooked mode again (icanon, echo).
        tmux.send_keys(&["q"])?;
        let (ok, pane) = tmux.wait_for(|p| p.contains("tty:"))?;
        show("after `q`", &pane);
        ensure!(ok, "egret top did not quit on q");
        check_restored(&pane, 0)?;
        drop(tmux);
        h.finish()
    })
}

#[test]
fn egret_top_follows_the_file_across_rotation() -> Result<()> {
    Harness::with_cgroup("top-rotate", |cg| {
        let server = TcpServer::loopback()?;
        // Small files: egret rotates every few seconds of this traffic (a second's lines, one
        // flush, stay under the size, so every file lasts past top's next read).
        let h = Harness::start(cg, &["--output-max-bytes", "48K"])?;
        let events = h.egret.events_path();
        let argv = after_top(&format!(
            "'{}' top --input '{}' --history 0 --refresh-ms 100",
            egret_bin().display(),
            events.display()
        ));
        let tmux = Tmux::start(120, 30, &argv)?;
        std::thread::sleep(Duration::from_millis(500));
        let count = 25;
        egret_e2e::run_in(
            &h.cgroup,
            &mut command(
                CLIENT,
                &[
                    "connect-loop",
                    "--count",
                    &count.to_string(),
                    "--interval-ms",
                    "200",
                    "127.0.0.1",
                    &server.port().to_string(),
                ],
            ),
        )?;
        let dest = format!("127.0.0.1:{}/tcp", server.port());
        let (ok, pane) =
            tmux.wait_for(|p| row(p, &dest).is_some_and(|r| r.get(2) == Some(&"25")))?;
        show("egret top after rotations", &pane);
        let dir = events.parent().context("events dir")?;
        let rotated = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("events.jsonl.") && name != "events.jsonl.lock"
            })
            .count();
        eprintln!("rotated files: {rotated}");
        ensure!(
            rotated >= 2,
            "egret rotated {rotated} time(s): no test of rotation"
        );
        ensure!(
            ok,
            "egret top did not count {count} connections to {dest} across rotation"
        );
        drop(tmux);
        h.finish()
    })
}

/// `sh -c` running `top`, then saying its exit status and the tty's mode, then waiting.
fn after_top(top: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{top}; echo top-exit=$?; echo tty: $(stty -a | grep -o -e '-\\?icanon' -e '-\\?echo ' | tr -d ' '); sleep 60"
        ),
    ]
}

/// The pane after `egret top` ended: the status, and the terminal restored.
fn check_restored(pane: &str, status: i32) -> Result<()> {
    ensure!(
        pane.contains(&format!("top-exit={status}")),
        "exit status {status}:\n{pane}"
    );
    let tty = pane
        .lines()
        .find(|l| l.starts_with("tty:"))
        .context("tty line")?;
    ensure!(tty == "tty: icanon echo", "terminal not restored: {tty}");
    ensure!(!pane.contains("q quit"), "still on top's screen:\n{pane}");
    Ok(())
}

#[test]
fn egret_top_restores_the_terminal_after_an_error() -> Result<()> {
    skip::with_egret_bin(|bin| {
        // A directory cannot be read as lines: top stops with the error, the terminal restored.
        let tmux = Tmux::start(
            120,
            30,
            &after_top(&format!("'{}' top --input /", bin.display())),
        )?;
        let (ok, pane) = tmux.wait_for(|p| p.contains("tty:"))?;
        show("egret top --input / (an error)", &pane);
        ensure!(ok, "egret top did not stop");
        ensure!(
            pane.contains("reading /: Is a directory"),
            "the error:\n{pane}"
        );
        check_restored(&pane, 1)?;
        // Not a terminal at all: refused before touching it.
        let out = egret_e2e::run_with_timeout(
            Command::new(&bin).args(["top", "--input", "/dev/null"]),
            Duration::from_secs(10),
        )?;
        ensure!(
            !out.status.success() && out.stderr.contains("egret top draws on a terminal"),
            "{}: {}",
            out.status,
            out.stderr
        );
        Ok(())
    })
}

fn line_of_in(pane: &str, dest: &str) -> Option<usize> {
    pane.lines().position(|l| l.contains(dest))
}

#[test]
fn text_is_the_default_on_a_terminal_with_colour_unless_no_color() -> Result<()> {
    Harness::with_cgroup("text-tty", |cg| {
        let server = TcpServer::loopback()?;
        let dir = ScratchDir::create("tty")?;
        let ready: PathBuf = dir.path().join("ready");
        let argv = |no_color: bool| -> Vec<String> {
            let mut v = vec!["env".to_owned()];
            if no_color {
                v.push("NO_COLOR=1".into());
            } else {
                v.push("-u".into());
                v.push("NO_COLOR".into());
            }
            v.extend([
                egret_bin().display().to_string(),
                "run".into(),
                "--cgroup".into(),
                cg.path().display().to_string(),
                "--ready-file".into(),
                ready.display().to_string(),
                "--log-level".into(),
                "error".into(),
            ]);
            v
        };
        for no_color in [false, true] {
            let _ = std::fs::remove_file(&ready);
            let tmux = Tmux::start(200, 30, &argv(no_color))?;
            ensure!(
                wait_until(Duration::from_secs(30), || Ok(ready.exists()))?,
                "egret not ready in tmux: {}",
                tmux.capture(false)?
            );
            connect_n(&cg, server.port(), 1)?;
            let dest = format!("127.0.0.1:{}/tcp", server.port());
            let (ok, pane) = tmux.wait_for(|p| p.contains(&dest) && p.contains("TIME(UTC)"))?;
            show(
                &format!(
                    "egret run on a terminal, NO_COLOR {}",
                    if no_color { "=1" } else { "unset" }
                ),
                &pane,
            );
            ensure!(ok, "no text line for {dest} on the terminal");
            let coloured = tmux.capture(true)?;
            // tmux re-renders colours as its own SGR sequences: green is 32.
            let has_colour = coloured.contains("\x1b[32m");
            ensure!(
                has_colour != no_color,
                "colour {has_colour} with NO_COLOR {no_color}:\n{coloured:?}"
            );
            tmux.send_keys(&["C-c"])?;
            ensure!(
                wait_until(Duration::from_secs(20), || Ok(!tmux.alive()))?,
                "egret did not stop on Ctrl-C"
            );
        }
        Ok(())
    })
}

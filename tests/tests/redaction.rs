//! Redaction (docs/events.md, "Secrets in arguments"): secrets in a process's arguments never
//! leave egret. Real egret, real kernel: clients in the test cgroup connect to a local server
//! with secrets in their argv, one exec'd while egret runs, one already running when egret
//! starts (read from `/proc`); egret's lines, its metrics, `egret report` and
//! `--suggest-policy` must not show the secrets, and with `--redact-args off` the lines do (the
//! report still does not).

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{check_args, check_field_absent, has_arg, is_metric};
use egret_e2e::prometheus::{free_port, http_get};
use egret_e2e::{
    argv, command_for_argv, field, field_str, field_u64, marker, prerequisite, run_in,
    run_with_timeout, skip, Harness, ScratchDir, TcpServer, TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const PYTHON: &str = "/usr/bin/python3";
const MARKER: &str = "[REDACTED]";

/// The secrets every client carries (the test client ignores arguments after its marker), and
/// what egret must make of each argument (in this order: `--token`'s value is the argument
/// after it).
const SECRETS: [(&str, &str); 8] = [
    ("--password=Hunter2", "--password=[REDACTED]"),
    ("--token", "--token"),
    ("t0kenValue9", "[REDACTED]"),
    ("Authorization: Bearer abc.def", "Authorization: [REDACTED]"),
    ("Cookie: sid=c00kieVal", "Cookie: [REDACTED]"),
    (
        "https://bob:s3cret@example.com/",
        "https://bob:[REDACTED]@example.com/",
    ),
    ("AKIAIOSFODNN7EXAMPLE", "[REDACTED]"),
    // For the `--redact` pattern below.
    ("custom-4711", "[REDACTED]"),
];
/// What must appear nowhere once redacted.
const SECRET_TEXTS: [&str; 7] = [
    "Hunter2",
    "t0kenValue9",
    "abc.def",
    "c00kieVal",
    "s3cret",
    "AKIAIOSFODNN7EXAMPLE",
    "custom-4711",
];
/// mysql's password, attached to its `-p` (`-pVALUE`: redacted for mysql only, where `-p`
/// takes it; `-p` of other programs is a port or another option).
const MYSQL_SECRET: &str = "My5qlPass";
/// The custom pattern the tests give egret.
const CUSTOM: &str = "custom-[0-9]+";

/// Waits for the flag file, then connects to 127.0.0.1:PORT once: a process that is already
/// running (and so read from `/proc`) when egret starts.
const LATE_CONNECT: &str = "import os, socket, sys, time
flag, port = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while not os.path.exists(flag) and time.time() < deadline:
    time.sleep(0.05)
socket.create_connection(('127.0.0.1', port), timeout=10).close()
";

/// The test client's argv: connect to `port` once, with `marker` and the secrets.
fn client_argv(port: u16, marker: &str) -> Vec<String> {
    let mut args = argv(CLIENT, &["tcp", "127.0.0.1", &port.to_string(), marker]);
    args.extend(SECRETS.iter().map(|(secret, _)| (*secret).to_owned()));
    args
}

/// `argv` as egret must write it.
fn redacted(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            SECRETS
                .iter()
                .find(|(secret, _)| secret == arg)
                .map_or_else(|| arg.clone(), |(_, redacted)| (*redacted).to_owned())
        })
        .collect()
}

/// The process in the test cgroup that connects once `flag` exists.
struct LateClient {
    child: Child,
    argv: Vec<String>,
}

impl LateClient {
    fn start(cgroup: &TestCgroup, flag: &Path, port: u16, marker: &str) -> Result<Self> {
        let mut argv = vec![
            PYTHON.to_owned(),
            "-c".to_owned(),
            LATE_CONNECT.to_owned(),
            flag.display().to_string(),
            port.to_string(),
            marker.to_owned(),
        ];
        argv.extend(SECRETS.iter().map(|(secret, _)| (*secret).to_owned()));
        let mut cmd = command_for_argv(&argv);
        cgroup.command(&mut cmd)?;
        let child = cmd.spawn().with_context(|| format!("spawn {argv:?}"))?;
        Ok(Self { child, argv })
    }

    /// Lets it connect and waits for it.
    fn connect(&mut self, flag: &Path) -> Result<()> {
        std::fs::write(flag, b"go").with_context(|| format!("write {}", flag.display()))?;
        let status = egret_e2e::run::wait_child(&mut self.child, Duration::from_secs(30))?;
        ensure!(status.success(), "{PYTHON} exited with {status}");
        Ok(())
    }
}

impl Drop for LateClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of the connection whose arguments hold `marker`.
fn line_of(h: &mut Harness, marker: &str) -> Result<Value> {
    h.egret
        .wait_for(|v| has_arg(v, marker), LINE_TIMEOUT)
        .with_context(|| format!("no line with the marker {marker}"))
}

/// A line's process part is `want` (the redacted argv), flagged, with no secret left.
fn check_redacted(v: &Value, want: &[String]) -> Result<()> {
    check_args(v, want)?;
    let command_line = field_str(v, "process.command_line").unwrap_or_default();
    ensure!(
        command_line == want.join(" "),
        "process.command_line: want {:?}, got {command_line:?}",
        want.join(" ")
    );
    ensure!(
        field(v, "egret.process.args_redacted") == Some(&Value::Bool(true)),
        "egret.process.args_redacted missing\nline: {v}"
    );
    Ok(())
}

/// No secret anywhere in `text` (`what` names it); the marker must be there when `redacted`.
fn check_no_secret(what: &str, text: &str) -> Result<()> {
    for secret in SECRET_TEXTS.into_iter().chain([MYSQL_SECRET]) {
        ensure!(
            !text.contains(secret),
            "{what} shows the secret {secret:?}:\n{text}"
        );
    }
    Ok(())
}

/// `egret report ARGS`, which must exit 0.
fn egret_report(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(skip::require_egret_bin()?);
    cmd.arg("report").args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60))?;
    ensure!(
        out.status.success(),
        "egret report {args:?}: {}\nstderr: {}",
        out.status,
        out.stderr
    );
    check_no_secret(&format!("egret report {args:?} (stderr)"), &out.stderr)?;
    Ok(out.stdout)
}

/// Every report of `events` (text, JSON, HTML, a suggested policy) names the client and shows
/// no secret.
fn check_reports(events: &Path) -> Result<()> {
    let file = events.display().to_string();
    for format in ["text", "json", "html"] {
        let out = egret_report(&["--format", format, &file])?;
        ensure!(
            out.contains("egret-testclient"),
            "egret report --format {format} does not name the client:\n{out}"
        );
        check_no_secret(&format!("egret report --format {format}"), &out)?;
    }
    let policy = egret_report(&["--suggest-policy", "--loopback", "audit", &file])?;
    ensure!(
        policy.contains("127.0.0.1"),
        "the suggested policy does not approve the server:\n{policy}"
    );
    check_no_secret("egret report --suggest-policy", &policy)
}

/// `egret_args_redacted_total` on the Prometheus endpoint.
fn prometheus_args_redacted(addr: SocketAddr) -> Result<f64> {
    let page = http_get(addr, "/metrics")?;
    page.body
        .lines()
        .find_map(|l| l.strip_prefix("egret_args_redacted_total "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no egret_args_redacted_total in\n{}", page.body))
}

#[test]
fn secrets_in_arguments_never_leave_egret() -> Result<()> {
    let Some(()) = prerequisite(skip::require_program(PYTHON))? else {
        return Ok(());
    };
    Harness::with_cgroup("redact", |cgroup| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        let scratch = ScratchDir::create("redact")?;
        let flag = scratch.path().join("go");
        // Started before egret: egret reads its arguments from /proc.
        let late_marker = marker();
        let mut late = LateClient::start(&cgroup, &flag, port, &late_marker)?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut h = Harness::start(
            cgroup,
            &[
                "--redact",
                CUSTOM,
                "--metrics-addr",
                &metrics_addr.to_string(),
            ],
        )?;

        // Exec'd while egret runs: its arguments come from the kernel's capture.
        let m = marker();
        let args = client_argv(port, &m);
        run_in(&h.cgroup, &mut command_for_argv(&args))?;
        let v = line_of(&mut h, &m)?;
        check_redacted(&v, &redacted(&args))?;

        // The test client run as `mysql` (a symbolic link: argv[0] is what names the program
        // for redaction; the line's executable is the client itself).
        let mysql = scratch.path().join("mysql");
        std::os::unix::fs::symlink(CLIENT, &mysql)?;
        let m = marker();
        let mysql_argv = argv(
            &mysql.display().to_string(),
            &[
                "tcp",
                "127.0.0.1",
                &port.to_string(),
                &m,
                "-uroot",
                &format!("-p{MYSQL_SECRET}"),
                "shop",
            ],
        );
        run_in(&h.cgroup, &mut command_for_argv(&mysql_argv))?;
        let v = line_of(&mut h, &m)?;
        let mut want = mysql_argv.clone();
        if let Some(p) = want.get_mut(6) {
            *p = format!("-p{MARKER}");
        }
        check_redacted(&v, &want).context("the client run as mysql")?;

        late.connect(&flag)?;
        let v = line_of(&mut h, &late_marker)?;
        check_redacted(&v, &redacted(&late.argv))?;

        // Counted: at least these three (other processes on the host may have secrets too).
        let metric = h
            .egret
            .wait_for(
                |v| is_metric(v) && field_u64(v, "egret.metrics.args_redacted") >= Some(3),
                LINE_TIMEOUT,
            )
            .context("the metric line's args_redacted never reached 3")?;
        ensure!(field_u64(&metric, "egret.metrics.args_redacted") >= Some(3));
        let scraped = prometheus_args_redacted(metrics_addr)?;
        ensure!(scraped >= 3.0, "egret_args_redacted_total {scraped}");

        // Nowhere in anything egret wrote: every line, every field.
        let events = h.egret.events_path();
        let written = std::fs::read_to_string(&events)
            .with_context(|| format!("read {}", events.display()))?;
        check_no_secret("events.jsonl", &written)?;
        ensure!(written.contains(MARKER), "no marker in events.jsonl");
        check_no_secret("egret's stderr", &h.egret.stderr_text()?)?;
        check_reports(&events)?;
        h.finish()
    })
}

#[test]
fn with_redaction_off_arguments_are_written_as_captured() -> Result<()> {
    Harness::with_egret(
        "redact-off",
        &["--redact-args", "off", "--redact", CUSTOM],
        |mut h| {
            let server = TcpServer::loopback()?;
            let m = marker();
            let args = client_argv(server.port(), &m);
            run_in(&h.cgroup, &mut command_for_argv(&args))?;
            let v = line_of(&mut h, &m)?;
            check_args(&v, &args)?;
            check_field_absent(&v, "egret.process.args_redacted")?;
            let command_line = field_str(&v, "process.command_line").unwrap_or_default();
            for secret in SECRET_TEXTS {
                ensure!(
                    command_line.contains(secret),
                    "{secret:?} not in {command_line:?}"
                );
            }
            // The counter stays 0 all along.
            let metric = h.egret.wait_for(is_metric, LINE_TIMEOUT)?;
            ensure!(
                field_u64(&metric, "egret.metrics.args_redacted") == Some(0),
                "args_redacted with redaction off\nline: {metric}"
            );
            let stderr = h.egret.stderr_text()?;
            ensure!(
                stderr.contains("--redact-args off")
                    && stderr.contains("--redact patterns are not applied"),
                "no warning about redaction being off:\n{stderr}"
            );
            // The lines hold secrets; reports of them still do not.
            check_reports(&h.egret.events_path())?;
            h.finish()
        },
    )
}

#[test]
fn an_invalid_pattern_stops_egret_naming_the_flag_and_the_pattern() -> Result<()> {
    skip::with_egret_bin(|bin| {
        let out = run_with_timeout(
            Command::new(&bin).args(["run", "--redact", "tok(en"]),
            Duration::from_secs(30),
        )?;
        ensure!(
            !out.status.success(),
            "egret run accepted --redact 'tok(en'"
        );
        ensure!(
            out.stderr.contains("--redact") && out.stderr.contains("tok(en"),
            "the error does not name the flag and the pattern:\n{}",
            out.stderr
        );
        // The same from a config file, located at the key.
        let scratch = ScratchDir::create("redact-config")?;
        let file = scratch.path().join("egret.yaml");
        std::fs::write(&file, "redact-args: on\nredact: ['ok-[0-9]+', 'tok(en']\n")?;
        let out = run_with_timeout(
            Command::new(&bin).args(["config", "check", &file.display().to_string()]),
            Duration::from_secs(30),
        )?;
        ensure!(!out.status.success(), "config check accepted the pattern");
        ensure!(
            out.stderr.contains("egret.yaml:2:")
                && out.stderr.contains("redact: ")
                && out.stderr.contains("tok(en"),
            "config check: {}",
            out.stderr
        );
        Ok(())
    })
}

/// A parent with secrets in its arguments: the child's line names it (`process.parent.args`)
/// by its redacted arguments.
#[test]
fn the_parent_is_named_by_its_redacted_arguments() -> Result<()> {
    Harness::with_egret("redact-parent", &["--redact", CUSTOM], |mut h| {
        let server = TcpServer::loopback()?;
        let m = marker();
        // sh forks the client (the `; true` keeps it from exec'ing it); its own argv ends
        // with the secrets ($0, $1...).
        let script = format!("{CLIENT} tcp 127.0.0.1 {} {m}; true", server.port());
        let mut sh = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            script,
            "sh".to_owned(),
        ];
        sh.extend(SECRETS.iter().map(|(secret, _)| (*secret).to_owned()));
        run_in(&h.cgroup, &mut command_for_argv(&sh))?;
        let v = line_of(&mut h, &m)?;
        let parent: Vec<&str> = field(&v, "process.parent.args")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let want = redacted(&sh);
        ensure!(
            parent == want,
            "process.parent.args: want {want:?}, got {parent:?}\nline: {v}"
        );
        check_no_secret("the child's line", &v.to_string())?;
        h.finish()
    })
}

//! The allowlist policy in block mode: the kernel refuses unapproved connections with EPERM,
//! reloads (SIGHUP, `--watch`, invalid policies) take effect under load without refusing what
//! both policies allow, and `--on-exit keep` keeps enforcing after egret dies.
//!
//! Every policy here sets `loopback: audit`, so loopback destinations need a rule.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{is_flow, is_metric};
use egret_e2e::policy::{check_verdict, expect_alert, read_loop_status, AlertSource, AlertWant};
use egret_e2e::run::wait_child;
use egret_e2e::{
    command, field, field_str, field_u64, marker, prerequisite, run_with_timeout, socket_addr,
    wait_until, Egret, Harness, PinPath, PolicyDir, RunOutput, TcpServer, TestCgroup, UdpServer,
    LINE_TIMEOUT,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const CLIENT_NAME: &str = "egret-testclient";

/// Runs the client in `cg` and returns its output whatever the exit status.
fn try_run(cg: &TestCgroup, args: &[&str]) -> Result<RunOutput> {
    let mut cmd = command(CLIENT, args);
    cg.command(&mut cmd)?;
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// The client must fail with EPERM (`errno=1`).
fn expect_eperm(cg: &TestCgroup, args: &[&str]) -> Result<RunOutput> {
    let out = try_run(cg, args)?;
    ensure!(
        !out.status.success() && out.stdout.lines().any(|l| l.trim() == "errno=1"),
        "{args:?} should fail with EPERM (errno=1), got {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out)
}

/// The client must succeed.
fn expect_ok(cg: &TestCgroup, args: &[&str]) -> Result<RunOutput> {
    let out = try_run(cg, args)?;
    ensure!(
        out.status.success(),
        "{args:?} should succeed, got {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out)
}

/// Connects once from the test cgroup (`tcp`, or `udp-connect`) to `ip` port `port` with
/// `marker` among the client's arguments: approved by `rule` it must work, unapproved (`None`)
/// it must fail with EPERM; the marked line must carry that block-mode verdict. The client's
/// output and the line.
fn judged_connect(
    h: &mut Harness,
    client: &str,
    ip: &str,
    port: u16,
    marker: &str,
    rule: Option<&str>,
) -> Result<(RunOutput, Value)> {
    let args = [client, ip, &port.to_string(), marker];
    let (out, verdict) = match rule {
        Some(_) => (expect_ok(&h.cgroup, &args)?, "approved"),
        None => (expect_eperm(&h.cgroup, &args)?, "blocked"),
    };
    let transport = if client == "tcp" { "tcp" } else { "udp" };
    let ev = h
        .egret
        .wait_for_marked_flow("connect", transport, port, marker)?;
    check_verdict(&ev, verdict, "block", rule)?;
    Ok((out, ev))
}

#[test]
fn block_mode_refuses_unapproved_tcp_and_udp() -> Result<()> {
    Harness::with_cgroup("blk-refuse", |cg| {
        let dir = PolicyDir::create("refuse")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let a6 = TcpServer::start(socket_addr("[::1]:0")?)?;
        let b6 = TcpServer::start(socket_addr("[::1]:0")?)?;
        let ua = UdpServer::loopback()?;
        let ub = UdpServer::loopback()?;
        let ub6 = UdpServer::start(socket_addr("[::1]:0")?)?;
        let policy = format!(
            "mode: block
loopback: audit
rules:
  - name: tcp-a
    to: [\"127.0.0.1/32\", \"::1/128\"]
    ports: [{}, {}]
    protocols: [tcp]
  - name: udp-a
    to: [\"127.0.0.1/32\"]
    ports: [{}]
    protocols: [udp]
",
            a.port(),
            a6.port(),
            ua.port()
        );
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        let source = AlertSource::of(CLIENT_NAME, &h.cgroup)?;

        // Approved TCP, v4 and v6: works, and says which rule.
        for (ip, port) in [("127.0.0.1", a.port()), ("::1", a6.port())] {
            judged_connect(&mut h, "tcp", ip, port, &marker(), Some("tcp-a"))?;
        }

        // Unapproved TCP, v4 and v6: EPERM before any packet; blocked/failure; an alert.
        for (ip, server) in [("127.0.0.1", &b), ("::1", &b6)] {
            let port = server.port();
            let m = marker();
            let (out, ev) = judged_connect(&mut h, "tcp", ip, port, &m, None)?;
            // Its end line: a failure with EPERM, nothing sent, the same connection id.
            let end = h
                .egret
                .wait_for_marked_flow("connection-end", "tcp", port, &m)?;
            ensure!(
                field_str(&end, "event.outcome") == Some("failure")
                    && field_str(&end, "error.code") == Some("EPERM")
                    && field_u64(&end, "source.bytes") == Some(0)
                    && field(&end, "egret.connection.id") == field(&ev, "egret.connection.id"),
                "end line of a blocked connect\nstart: {ev}\nend: {end}"
            );
            let want = AlertWant::tcp_connect(ip, port, "blocked", out.pid, &source);
            expect_alert(&mut h.egret, &want)?;
            ensure!(
                server.accepted() == 0,
                "a refused connect reached the server on {ip} port {port}"
            );
        }

        // Approved UDP works.
        let m = marker();
        expect_ok(
            &h.cgroup,
            &["udp-send", "127.0.0.1", &ua.port().to_string(), &m],
        )?;
        let ev = h.egret.wait_for_flow("send", "udp", ua.port())?;
        check_verdict(&ev, "approved", "block", Some("udp-a"))?;
        ensure!(
            wait_until(LINE_TIMEOUT, || Ok(ua.received() >= 1))?,
            "approved datagram not received"
        );

        // Unapproved UDP sendto, v4 and v6: EPERM, nothing sent; a blocked send line; an alert.
        for (ip, server) in [("127.0.0.1", &ub), ("::1", &ub6)] {
            let port = server.port();
            let m = marker();
            let out = expect_eperm(
                &h.cgroup,
                &["udp-send", ip, &port.to_string(), "--count", "3", &m],
            )?;
            let ev = h.egret.wait_for_flow("send", "udp", port)?;
            check_verdict(&ev, "blocked", "block", None)?;
            let want = AlertWant {
                action: "send",
                transport: "udp",
                ..AlertWant::tcp_connect(ip, port, "blocked", out.pid, &source)
            };
            expect_alert(&mut h.egret, &want)?;
        }
        // IPv4-mapped IPv6 (an AF_INET6 socket to ::ffff:127.0.0.1) is judged as the IPv4 address.
        let mapped = "::ffff:127.0.0.1";
        judged_connect(&mut h, "tcp", mapped, a.port(), &marker(), Some("tcp-a"))?;
        judged_connect(&mut h, "tcp", mapped, b.port(), &marker(), None)?;
        expect_ok(&h.cgroup, &["udp-send", mapped, &ua.port().to_string()])?;
        expect_eperm(&h.cgroup, &["udp-send", mapped, &ub.port().to_string()])?;
        ensure!(
            b.accepted() == 0,
            "a refused IPv4-mapped connect reached the server"
        );

        // Connected UDP to an unapproved port: connect() itself is refused.
        judged_connect(
            &mut h,
            "udp-connect",
            "127.0.0.1",
            ub.port(),
            &marker(),
            None,
        )?;
        std::thread::sleep(Duration::from_millis(300));
        ensure!(
            ub.received() == 0 && ub6.received() == 0,
            "refused datagrams arrived ({} v4, {} v6)",
            ub.received(),
            ub6.received()
        );
        h.finish()
    })
}

#[test]
fn block_mode_non_loopback_destinations_and_default_loopback() -> Result<()> {
    egret_e2e::NetNs::with("blkns", |ns| {
        Harness::with_cgroup("blk-netns", |cg| {
            let dir = PolicyDir::create("netns")?;
            let ip = ns.ns_v4().to_string();
            let listen = |port: u16| -> Result<TcpServer> {
                TcpServer::from_listener(ns.tcp_listener(SocketAddr::new(ns.ns_v4().into(), port))?)
            };
            let allowed = listen(0)?;
            let refused = listen(0)?;
            let usock = ns.udp_socket(SocketAddr::new(ns.ns_v4().into(), 0))?;
            let uport = usock.local_addr()?.port();
            let lo = TcpServer::loopback()?;
            // `loopback` not given: loopback is approved (rule name `loopback`) even in block mode.
            let policy = format!(
                "mode: block\nrules:\n  - name: ns-web\n    to: [\"{ip}/32\"]\n    ports: [{}]\n    protocols: [tcp]\n",
                allowed.port()
            );
            let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
            let mut h = Harness::start(cg, &["--policy", &policy_arg])?;

            let cases: [(&str, u16, Option<&str>); 3] = [
                ("127.0.0.1", lo.port(), Some("loopback")),
                (ip.as_str(), allowed.port(), Some("ns-web")),
                (ip.as_str(), refused.port(), None),
            ];
            for (dest, port, rule) in cases {
                judged_connect(&mut h, "tcp", dest, port, &marker(), rule)?;
            }
            ensure!(
                refused.accepted() == 0,
                "a refused connect reached the namespace"
            );
            expect_eperm(&h.cgroup, &["udp-send", &ip, &uport.to_string()])?;
            if ns.has_v6() {
                let s6 = TcpServer::from_listener(
                    ns.tcp_listener(SocketAddr::new(ns.ns_v6().into(), 0))?,
                )?;
                expect_eperm(
                    &h.cgroup,
                    &["tcp", &ns.ns_v6().to_string(), &s6.port().to_string()],
                )?;
            }
            drop(usock);
            h.finish()
        })
    })
}

/// The kernel programs' diagnostics (aya-log) reach egret's log at `--log-level debug` (the
/// harness's level): a refused connect is logged under `egret::bpf` with the pid and
/// destination the kernel saw, and an approved one is not.
#[test]
fn kernel_diagnostics_name_a_refused_connect() -> Result<()> {
    Harness::with_cgroup("bpf-log", |cg| {
        let dir = PolicyDir::create("bpf-log")?;
        let allowed = TcpServer::loopback()?;
        let refused = TcpServer::loopback()?;
        let policy = format!(
            "mode: block\nloopback: audit\nrules:\n  - name: lo\n    to: [\"127.0.0.1/32\"]\n    ports: [{}]\n",
            allowed.port()
        );
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        let (_, ok) = judged_connect(
            &mut h,
            "tcp",
            "127.0.0.1",
            allowed.port(),
            &marker(),
            Some("lo"),
        )?;
        let (_, no) = judged_connect(&mut h, "tcp", "127.0.0.1", refused.port(), &marker(), None)?;
        let pid = |v: &Value| field_u64(v, "process.pid").context("process.pid");
        let refusal = format!(
            "egret::bpf] connect: refused pid {} to 127.0.0.1:{}",
            pid(&no)?,
            refused.port()
        );
        let logged = wait_until(LINE_TIMEOUT, || {
            Ok(h.egret.stderr_text()?.contains(&refusal))
        })?;
        ensure!(
            logged,
            "no {refusal:?} in egret's log:\n{}",
            h.egret.stderr_tail()
        );
        let log = h.egret.stderr_text()?;
        ensure!(
            !log.contains(&format!("refused pid {} ", pid(&ok)?)),
            "an approved connect was logged as refused:\n{log}"
        );
        h.finish()
    })
}

/// Connects from `cg` to 127.0.0.1:`port` at once, and if that is refused, again until it
/// works (10 s): `Ok(None)` if the first try worked, else how long until one did.
fn first_try_or_delay(cg: &TestCgroup, port: u16) -> Result<Option<Result<Duration, String>>> {
    let start = Instant::now();
    if tcp_allowed(cg, port)? {
        return Ok(None);
    }
    let later = wait_until(LINE_TIMEOUT, || tcp_allowed(cg, port))?;
    Ok(Some(if later {
        Ok(start.elapsed())
    } else {
        Err(format!("still refused after {LINE_TIMEOUT:?}"))
    }))
}

#[test]
fn block_scoped_rules_cover_cgroups_created_later() -> Result<()> {
    Harness::with_cgroup("blk-late", |cg| {
        let dir = PolicyDir::create("late")?;
        let a = TcpServer::loopback()?;
        let unit = format!("egret-e2e-late-{}.service", egret_e2e::unique_suffix());
        let policy = format!(
            "mode: block
loopback: audit
rules:
  - name: by-cgroup
    to: [\"127.0.0.1/32\"]
    ports: [{port}]
    cgroups: [\"{parent}/late-cg\"]
  - name: by-unit
    to: [\"127.0.0.1/32\"]
    ports: [{port}]
    systemd_units: [\"{unit}\"]
",
            port = a.port(),
            parent = cg.relative_path()
        );
        let policy = dir.write("policy.yaml", &policy)?;
        let policy_arg = policy.display().to_string();
        let h = Harness::start(cg, &["--policy", &policy_arg])?;
        ensure!(
            !tcp_allowed(&h.cgroup, a.port())?,
            "the parent cgroup is not in scope, yet A works from it"
        );
        // The scoped cgroups appear only now, like a service (re)started after egret loaded the
        // policy; the service connects right away.
        let mut problems = Vec::new();
        for (name, rule) in [("late-cg", "by-cgroup"), (unit.as_str(), "by-unit")] {
            let late = h.cgroup.child(name)?;
            match first_try_or_delay(&late, a.port())? {
            None => {}
            Some(Ok(after)) => problems.push(format!(
                "{} (rule {rule}): the first connect right after the cgroup was created got EPERM; approved only {after:?} later",
                late.relative_path()
            )),
            Some(Err(e)) => problems.push(format!(
                "{} (rule {rule}): refused, {e}",
                late.relative_path()
            )),
        }
        }
        ensure!(
            problems.is_empty(),
            "scoped block-mode rules do not cover new cgroups at once:\n{}",
            problems.join("\n")
        );
        h.finish()
    })
}

/// A `connect-loop` running in the background inside a test cgroup.
struct Loop {
    child: Child,
    status: PathBuf,
    stop: PathBuf,
}

impl Loop {
    /// Connects to every port of `ports` on `ip`, a round every `interval_ms`.
    fn start(
        cg: &TestCgroup,
        dir: &Path,
        ip: &str,
        ports: &[u16],
        interval_ms: u32,
    ) -> Result<Self> {
        let status = dir.join("loop.status");
        let stop = dir.join("loop.stop");
        let mut cmd = Command::new(CLIENT);
        cmd.args(["connect-loop", "--interval-ms", &interval_ms.to_string()])
            .arg("--status-file")
            .arg(&status)
            .arg("--stop-file")
            .arg(&stop)
            .arg(ip)
            .args(ports.iter().map(u16::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cg.command(&mut cmd)?;
        let child = cmd.spawn().context("spawn connect-loop")?;
        Ok(Self {
            child,
            status,
            stop,
        })
    }

    /// `port`'s counts after `settle`, and again one second later.
    fn one_second_of(
        &self,
        port: u16,
        settle: Duration,
    ) -> Result<(egret_e2e::policy::PortCounts, egret_e2e::policy::PortCounts)> {
        std::thread::sleep(settle);
        let before = self.get(port)?;
        std::thread::sleep(Duration::from_millis(1000));
        Ok((before, self.get(port)?))
    }

    fn counts(&self) -> Result<BTreeMap<u16, egret_e2e::policy::PortCounts>> {
        read_loop_status(&self.status)
    }

    fn get(&self, port: u16) -> Result<egret_e2e::policy::PortCounts> {
        Ok(self.counts()?.get(&port).copied().unwrap_or_default())
    }

    /// Stops the loop; returns its final counts (from its stdout).
    fn finish(mut self) -> Result<BTreeMap<u16, egret_e2e::policy::PortCounts>> {
        std::fs::write(&self.stop, "").context("create stop file")?;
        let status = wait_child(&mut self.child, Duration::from_secs(30))
            .context("connect-loop did not stop")?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if let Some(mut pipe) = self.child.stdout.take() {
            pipe.read_to_string(&mut stdout)?;
        }
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)?;
        }
        ensure!(status.success(), "connect-loop failed: {status}\n{stderr}");
        egret_e2e::policy::parse_loop_counts(&stdout)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        if matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn block_policy(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "mode: block\nloopback: audit\nrules:\n  - name: allowed\n    to: [\"127.0.0.1/32\"]\n    ports: [{}]\n    protocols: [tcp]\n",
        ports.join(", ")
    )
}

/// How a policy change is delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Rename the new file over the old one, then SIGHUP (egret runs without --watch).
    Sighup,
    /// Rename over it, no signal (egret runs with --watch).
    WatchRename,
    /// Truncate and rewrite in place, no signal (egret runs with --watch).
    WatchInPlace,
}

fn deliver(
    egret: &mut Egret,
    dir: &PolicyDir,
    file: &str,
    yaml: &str,
    how: Delivery,
) -> Result<()> {
    match how {
        Delivery::Sighup => {
            dir.write(file, yaml)?;
            egret.sighup()
        }
        Delivery::WatchRename => dir.write(file, yaml).map(|_| ()),
        Delivery::WatchInPlace => dir.write_in_place(file, yaml).map(|_| ()),
    }
}

/// Under a steady connect loop to A and B: P1 (A, B) → P2 (A only) → [invalid] → P3 (A, B,
/// more). A is never refused; B is refused once P2 is in force and until P3 is.
fn reload_under_load(name: &str, watch: bool) -> Result<()> {
    Harness::with_cgroup(name, |cg| {
        let dir = PolicyDir::create(name)?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let other = TcpServer::loopback()?;
        let (pa, pb) = (a.port(), b.port());
        let file = "policy.yaml";
        let policy = dir.write(file, &block_policy(&[pa, pb]))?;
        let policy_arg = policy.display().to_string();
        let mut args = vec!["--policy", policy_arg.as_str()];
        if watch {
            args.push("--watch");
        }
        let mut h = Harness::start(cg, &args)?;
        let lp = Loop::start(&h.cgroup, dir.path(), "127.0.0.1", &[pa, pb], 10)?;
        ensure!(
            wait_until(
                LINE_TIMEOUT,
                || Ok(lp.get(pa)?.ok > 0 && lp.get(pb)?.ok > 0)
            )?,
            "P1 approves A and B, yet the loop did not get through to both: {:?}",
            lp.counts()?
        );

        // P2: only A.
        let (first, second) = if watch {
            (Delivery::WatchRename, Delivery::WatchInPlace)
        } else {
            (Delivery::Sighup, Delivery::Sighup)
        };
        deliver(&mut h.egret, &dir, file, &block_policy(&[pa]), first)?;
        ensure!(
            wait_until(LINE_TIMEOUT, || Ok(lp.get(pb)?.eperm > 0))?,
            "B still not refused {LINE_TIMEOUT:?} after the stricter policy: {:?}\n--- egret stderr ---\n{}",
            lp.counts()?,
            h.egret.stderr_tail()
        );
        let (s1, s2) = lp.one_second_of(pb, Duration::from_millis(500))?;
        ensure!(
            s2.ok == s1.ok && s2.eperm > s1.eperm,
            "with P2 in force B must be refused every time: {s1:?} then {s2:?}"
        );

        if !watch {
            // An invalid policy is refused; the old one stays in force.
            let stderr_before = h.egret.stderr_text()?.len();
            let invalid = format!(
                "mode: block\nloopback: audit\nrules:\n  - name: allowed\n    to: [\"127.0.0.1/32\"]\n    ports: [{pa}, {pb}, 70000]\n"
            );
            deliver(&mut h.egret, &dir, file, &invalid, Delivery::Sighup)?;
            h.egret.wait_for(
                |v| {
                    is_metric(v)
                        && field_u64(v, "egret.metrics.policy_reload_failures")
                            .is_some_and(|n| n >= 1)
                },
                LINE_TIMEOUT,
            )?;
            ensure!(h.egret.running()?, "egret exited after an invalid policy");
            let stderr = h.egret.stderr_text()?;
            let new = stderr.get(stderr_before..).unwrap_or_default();
            ensure!(
                new.contains(file),
                "after the invalid policy egret's stderr should name {file} with the error; new stderr:\n{new}"
            );
            let (s3, s4) = lp.one_second_of(pb, Duration::from_millis(0))?;
            ensure!(
                s4.ok == s3.ok && s4.eperm > s3.eperm,
                "after the refused invalid policy B must still be refused: {s3:?} then {s4:?}"
            );
        }

        // P3: looser again.
        let before = lp.get(pb)?;
        deliver(
            &mut h.egret,
            &dir,
            file,
            &block_policy(&[pa, pb, other.port()]),
            second,
        )?;
        ensure!(
            wait_until(LINE_TIMEOUT, || Ok(lp.get(pb)?.ok > before.ok))?,
            "B still refused {LINE_TIMEOUT:?} after the looser policy: {:?}\n--- egret stderr ---\n{}",
            lp.counts()?,
            h.egret.stderr_tail()
        );
        let (s5, s6) = lp.one_second_of(pb, Duration::from_millis(500))?;
        ensure!(
            s6.eperm == s5.eperm && s6.ok > s5.ok,
            "with P3 in force B must get through every time: {s5:?} then {s6:?}"
        );

        let counts = lp.finish()?;
        let ca = counts.get(&pa).copied().unwrap_or_default();
        let cb = counts.get(&pb).copied().unwrap_or_default();
        ensure!(
            ca.eperm == 0 && ca.other == 0 && ca.ok > 0,
            "every policy approves A, yet: {ca:?}"
        );
        ensure!(cb.other == 0, "B failed other than with EPERM: {cb:?}");

        // What egret wrote agrees: some B lines blocked, no A line blocked; reloads counted.
        let want_reloads = 2;
        let metric = h.egret.wait_for(
            |v| {
                is_metric(v)
                    && field_u64(v, "egret.metrics.policy_reloads")
                        .is_some_and(|n| n >= want_reloads)
            },
            LINE_TIMEOUT,
        )?;
        if !watch {
            ensure!(
                field_u64(&metric, "egret.metrics.policy_reload_failures").is_some_and(|n| n >= 1),
                "policy_reload_failures should be at least 1\nline: {metric}"
            );
        }
        let all = h.egret.events()?;
        let verdict = |v: &Value| field_str(v, "egret.policy.verdict").map(str::to_owned);
        let a_blocked = all
            .iter()
            .filter(|v| {
                is_flow(v, "connect", "tcp", pa) && verdict(v).as_deref() == Some("blocked")
            })
            .count();
        let b_blocked = all
            .iter()
            .filter(|v| {
                is_flow(v, "connect", "tcp", pb) && verdict(v).as_deref() == Some("blocked")
            })
            .count();
        ensure!(a_blocked == 0, "{a_blocked} lines say A was blocked");
        ensure!(b_blocked > 0, "no line says B was blocked");
        h.finish()
    })
}

#[test]
fn reload_on_sighup_under_load_and_invalid_policy_is_refused() -> Result<()> {
    reload_under_load("blk-sighup", false)
}

#[test]
fn reload_on_watch_under_load() -> Result<()> {
    reload_under_load("blk-watch", true)
}

/// Publishes `yaml` the way the kubelet updates a mounted ConfigMap: the file is
/// `policy.yaml -> ..data/policy.yaml`, and `..data` is a symlink to a versioned directory
/// that is swapped by renaming a new symlink over it.
fn configmap_publish(dir: &Path, version: u32, yaml: &str) -> Result<PathBuf> {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir(&versioned)?;
    std::fs::write(versioned.join("policy.yaml"), yaml)?;
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let link = dir.join("policy.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/policy.yaml", &link)?;
    }
    if version > 1 {
        std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1)))?;
    }
    Ok(link)
}

#[test]
fn watch_follows_a_configmap_style_symlink_swap() -> Result<()> {
    Harness::with_cgroup("blk-cm", |cg| {
        let dir = PolicyDir::create("configmap")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let (pa, pb) = (a.port(), b.port());
        let link = configmap_publish(dir.path(), 1, &block_policy(&[pa]))?;
        let policy_arg = link.display().to_string();
        let h = Harness::start(cg, &["--policy", &policy_arg, "--watch"])?;
        ensure!(tcp_allowed(&h.cgroup, pa)?, "A refused while approved");
        ensure!(!tcp_allowed(&h.cgroup, pb)?, "B not refused in block mode");
        configmap_publish(dir.path(), 2, &block_policy(&[pa, pb]))?;
        ensure!(
            eventually(&h.cgroup, pb, true)?,
            "--watch did not pick up the new policy behind the swapped ..data symlink within {LINE_TIMEOUT:?}\n--- stderr ---\n{}",
            h.egret.stderr_tail()
        );
        configmap_publish(dir.path(), 3, &block_policy(&[pa]))?;
        ensure!(
            eventually(&h.cgroup, pb, false)?,
            "--watch did not pick up the second swap within {LINE_TIMEOUT:?}"
        );
        ensure!(tcp_allowed(&h.cgroup, pa)?, "A refused");
        h.finish()
    })
}

#[test]
fn rapid_reloads_never_refuse_what_every_policy_approves() -> Result<()> {
    Harness::with_cgroup("blk-flap", |cg| {
        let dir = PolicyDir::create("flap")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let (pa, pb) = (a.port(), b.port());
        let file = "policy.yaml";
        let policy = dir.write(file, &block_policy(&[pa, pb]))?;
        let policy_arg = policy.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        // A fast loop (a round every millisecond) while the policy flips 20 times, every 150 ms.
        let lp = Loop::start(&h.cgroup, dir.path(), "127.0.0.1", &[pa, pb], 1)?;
        ensure!(
            wait_until(LINE_TIMEOUT, || Ok(lp.get(pa)?.ok > 0))?,
            "the loop never got through to A"
        );
        for i in 0..20 {
            let ports: &[u16] = if i % 2 == 0 { &[pa] } else { &[pa, pb] };
            deliver(
                &mut h.egret,
                &dir,
                file,
                &block_policy(ports),
                Delivery::Sighup,
            )?;
            std::thread::sleep(Duration::from_millis(150));
        }
        let counts = lp.finish()?;
        let ca = counts.get(&pa).copied().unwrap_or_default();
        let cb = counts.get(&pb).copied().unwrap_or_default();
        eprintln!("connect-loop during 20 reloads: A {ca:?}, B {cb:?}");
        ensure!(
            ca.eperm == 0 && ca.other == 0,
            "A is approved by every policy, yet during 20 reloads: {ca:?} (B: {cb:?})"
        );
        ensure!(
            cb.eperm > 0 && cb.ok > 0,
            "B should have been both refused and approved: {cb:?}"
        );
        // Two SIGHUPs that arrive before egret's loop takes the first are one pending signal
        // (the kernel coalesces them): on a loaded machine a few of the 20 merge. Most must
        // have been reloads.
        h.egret.wait_for(
            |v| {
                is_metric(v)
                    && field_u64(v, "egret.metrics.policy_reloads").is_some_and(|n| n >= 10)
            },
            LINE_TIMEOUT,
        )?;
        h.finish()
    })
}

/// Whether a TCP connect from `cg` to 127.0.0.1:`port` gets through (`Ok(true)`), is refused
/// with EPERM (`Ok(false)`), or fails otherwise (error).
fn tcp_allowed(cg: &TestCgroup, port: u16) -> Result<bool> {
    let out = try_run(cg, &["tcp", "127.0.0.1", &port.to_string()])?;
    if out.status.success() {
        return Ok(true);
    }
    ensure!(
        out.stdout.lines().any(|l| l.trim() == "errno=1"),
        "connect to port {port} failed other than with EPERM: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(false)
}

fn eventually(cg: &TestCgroup, port: u16, allowed: bool) -> Result<bool> {
    wait_until(LINE_TIMEOUT, || Ok(tcp_allowed(cg, port)? == allowed))
}

#[test]
fn on_exit_keep_enforces_after_exit_until_taken_over() -> Result<()> {
    Harness::with_cgroup("blk-keep", |cg| {
        let pin = PinPath::new("keep")?;
        let dir = PolicyDir::create("keep")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let c = TcpServer::loopback()?;
        let (pa, pb, pc) = (a.port(), b.port(), c.port());
        let arg = |p: PathBuf| p.display().to_string();
        let only_a = arg(dir.write("a.yaml", &block_policy(&[pa]))?);
        let a_b = arg(dir.write("ab.yaml", &block_policy(&[pa, pb]))?);
        let a_c = arg(dir.write("ac.yaml", &block_policy(&[pa, pc]))?);
        let pin_arg = pin.arg();
        let keep = |policy: &str| -> Result<Egret> {
            Egret::start(
                cg.path(),
                &[
                    "--policy",
                    policy,
                    "--on-exit",
                    "keep",
                    "--pin-path",
                    &pin_arg,
                ],
            )
        };

        // 1. keep + SIGKILL: the strict policy stays in force with nobody running.
        let mut first = keep(&only_a)?;
        ensure!(tcp_allowed(&cg, pa)?, "A refused while approved");
        ensure!(!tcp_allowed(&cg, pb)?, "B not refused in block mode");
        first.kill9()?;
        first.discard_dir_on_drop();
        ensure!(
            !pin.entries().is_empty(),
            "--on-exit keep pinned nothing under {}",
            pin.path().display()
        );
        std::thread::sleep(Duration::from_millis(1000));
        ensure!(
            !tcp_allowed(&cg, pb)?,
            "after SIGKILL with --on-exit keep, B must still be refused"
        );
        ensure!(
            tcp_allowed(&cg, pa)?,
            "after SIGKILL with --on-exit keep, A must still work"
        );

        // 2. The next egret (keep again, approving B) takes over; a clean exit keeps its policy.
        let mut second = keep(&a_b)?;
        ensure!(
            eventually(&cg, pb, true)?,
            "the new egret approves B, but B is still refused (the kept programs were not replaced)\n--- stderr ---\n{}",
            second.stderr_tail()
        );
        ensure!(
            !tcp_allowed(&cg, pc)?,
            "C not refused under the second egret"
        );
        let m = marker();
        let out = try_run(&cg, &["tcp", "127.0.0.1", &pb.to_string(), &m])?;
        ensure!(out.status.success(), "B refused under the second egret");
        let ev = second.wait_for_marked_flow("connect", "tcp", pb, &m)?;
        check_verdict(&ev, "approved", "block", Some("allowed"))?;
        let status = second.stop()?;
        ensure!(
            status.success(),
            "second egret exited with {status}\n{}",
            second.stderr_tail()
        );
        second.discard_dir_on_drop();
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            !tcp_allowed(&cg, pc)?,
            "after a clean exit with --on-exit keep, C must still be refused"
        );
        ensure!(
            tcp_allowed(&cg, pb)? && tcp_allowed(&cg, pa)?,
            "after a clean exit with --on-exit keep, A and B must still work"
        );

        // 3. A default (detach) egret takes over, approving C but not B; when it stops, nothing
        //    is attached any more.
        let mut third = Egret::start(cg.path(), &["--policy", &a_c, "--pin-path", &pin_arg])?;
        ensure!(
            eventually(&cg, pc, true)?,
            "the third egret approves C, but C is still refused\n--- stderr ---\n{}",
            third.stderr_tail()
        );
        ensure!(
            !tcp_allowed(&cg, pb)?,
            "the third egret does not approve B, yet B works (the kept programs were not replaced)"
        );
        let status = third.stop()?;
        ensure!(
            status.success(),
            "third egret exited with {status}\n{}",
            third.stderr_tail()
        );
        third.discard_dir_on_drop();
        ensure!(
            eventually(&cg, pb, true)?,
            "after the detach-mode egret stopped, B is still refused (pins left: {:?})",
            pin.entries()
        );
        ensure!(
            tcp_allowed(&cg, pa)? && tcp_allowed(&cg, pc)?,
            "after egret stopped A or C is refused"
        );
        drop(pin);
        Ok(())
    })
}

#[test]
fn on_exit_detach_fails_open_after_sigkill() -> Result<()> {
    Harness::with_cgroup("blk-detach", |cg| {
        let pin = PinPath::new("detach")?;
        let dir = PolicyDir::create("detach")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let (pa, pb) = (a.port(), b.port());
        let strict = dir.write("strict.yaml", &block_policy(&[pa]))?;
        let (strict, pin_arg) = (strict.display().to_string(), pin.arg());
        let mut egret = Egret::start(cg.path(), &["--policy", &strict, "--pin-path", &pin_arg])?;
        ensure!(tcp_allowed(&cg, pa)?, "A refused while approved");
        ensure!(!tcp_allowed(&cg, pb)?, "B not refused in block mode");
        egret.kill9()?;
        egret.discard_dir_on_drop();
        ensure!(
            eventually(&cg, pb, true)?,
            "default --on-exit detach: after SIGKILL B must work (programs detached); pins left: {:?}",
            pin.entries()
        );
        ensure!(tcp_allowed(&cg, pa)?, "A refused after egret died");
        Ok(())
    })
}

/// Runs `program` (with `argv0` as its `argv[0]` when given, and in `cwd` when given) in `cg`
/// and returns its output whatever the exit status.
fn run_program(
    cg: &TestCgroup,
    program: &Path,
    argv0: Option<&str>,
    cwd: Option<&Path>,
    args: &[&str],
) -> Result<RunOutput> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(argv0) = argv0 {
        cmd.arg0(argv0);
    }
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cg.command(&mut cmd)?;
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Copies the test client to `to` (a new file: a new inode), executable.
fn copy_client(to: &Path) -> Result<()> {
    std::fs::copy(CLIENT, to).with_context(|| format!("copy the client to {}", to.display()))?;
    Ok(())
}

/// A block-mode policy whose one rule `client-only` approves 127.0.0.1 port `port` for the
/// `processes:` patterns `patterns`.
fn processes_policy(port: &str, patterns: &[&str]) -> String {
    let patterns = patterns
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "mode: block
loopback: audit
rules:
  - name: client-only
    to: [\"127.0.0.1/32\"]
    ports: [{port}]
    processes: [{patterns}]
"
    )
}

/// A file system mounted on a directory (a tmpfs by [`Tmpfs::mount`]), unmounted (lazily) on
/// drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Self> {
        std::fs::create_dir_all(at)?;
        let out = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "egret-e2e-tmpfs"])
                .arg(at),
            Duration::from_secs(10),
        )?;
        ensure!(out.status.success(), "mount tmpfs: {}", out.stderr);
        Ok(Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the file system of `path` tells its inode generation (`FS_IOC_GETVERSION`).
fn tells_generation(path: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path)?;
    let mut generation: libc::c_long = 0;
    // SAFETY: the call writes at most one `long` through the pointer; the file is open.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::FS_IOC_GETVERSION,
            std::ptr::addr_of_mut!(generation),
        )
    };
    Ok(rc == 0)
}

/// A `processes:` rule in block mode is enforced by the executable file's identity: the
/// approved binary connects by its path, through a symlink, by a relative path and after a
/// `/proc/self/exe` re-exec; a copy of it elsewhere (same name, same bytes), the same copy
/// claiming the approved path as `argv[0]`, and the original binary get EPERM; a new version
/// renamed over the approved one (a package upgrade) is approved from its first run.
#[test]
fn block_mode_processes_rules_follow_the_file_not_its_name() -> Result<()> {
    Harness::with_cgroup("blk-exe", |cg| {
        let dir = PolicyDir::create("exe")?;
        follow_the_file(cg, &dir, dir.path())
    })
}

/// The same on a tmpfs, whose files have an inode generation userspace cannot read: the
/// kernel approves the binary when it is exec'd under the approved path, and the upgraded one
/// from its first run.
#[test]
fn block_mode_processes_rules_follow_the_file_on_tmpfs() -> Result<()> {
    Harness::with_cgroup("blk-exe-tmpfs", |cg| {
        let dir = PolicyDir::create("exe-tmpfs")?;
        let tmpfs = Tmpfs::mount(&dir.path().join("tmpfs"))?;
        follow_the_file(cg, &dir, &tmpfs.0)
    })
}

/// [`block_mode_processes_rules_follow_the_file_not_its_name`] with the binaries below `base`.
fn follow_the_file(cg: TestCgroup, dir: &PolicyDir, base: &Path) -> Result<()> {
    {
        let bin = base.join("bin");
        let other = base.join("other");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(&other)?;
        let approved = bin.join(CLIENT_NAME);
        let impostor = other.join(CLIENT_NAME);
        let link = base.join("link-to-client");
        copy_client(&approved)?;
        copy_client(&impostor)?;
        std::os::unix::fs::symlink(&approved, &link)?;
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        let policy = processes_policy(&port, &[approved.to_str().unwrap_or_default()]);
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;

        let ok = |out: RunOutput, how: &str| -> Result<()> {
            ensure!(
                out.status.success(),
                "{how}: should connect, got {}\nstdout: {}\nstderr: {}",
                out.status,
                out.stdout,
                out.stderr
            );
            Ok(())
        };
        let eperm = |out: RunOutput, how: &str| -> Result<()> {
            ensure!(
                !out.status.success() && out.stdout.lines().any(|l| l.trim() == "errno=1"),
                "{how}: should fail with EPERM, got {}\nstdout: {}\nstderr: {}",
                out.status,
                out.stdout,
                out.stderr
            );
            Ok(())
        };
        // The client connecting, run as `program` (with `argv0`, in `cwd`), `marker` in argv.
        let connect = |program: &Path,
                       argv0: Option<&str>,
                       cwd: Option<&Path>,
                       reexec: bool,
                       marker: &str|
         -> Result<RunOutput> {
            let mut args = vec!["tcp", "127.0.0.1", &port, marker];
            if reexec {
                args.insert(0, "reexec");
            }
            run_program(&h.cgroup, program, argv0, cwd, &args)
        };
        let relative = PathBuf::from(format!("./{CLIENT_NAME}"));
        let approved_text = approved.to_str().unwrap_or_default();

        let m = marker();
        ok(
            connect(&approved, None, None, false, &m)?,
            "the approved binary",
        )?;
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        check_verdict(&line, "approved", "block", Some("client-only"))?;
        ensure!(
            field_str(&line, "process.executable") == Some(approved_text),
            "process.executable: {line}"
        );
        ok(
            connect(&link, None, None, false, &marker())?,
            "through a symlink",
        )?;
        ok(
            connect(&relative, None, Some(&bin), false, &marker())?,
            "by a relative path",
        )?;
        let m = marker();
        ok(
            connect(&approved, None, None, true, &m)?,
            "re-exec'd through /proc/self/exe",
        )?;
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        ensure!(
            field_str(&line, "process.executable") == Some(approved_text)
                && field_str(&line, "process.name") == Some(CLIENT_NAME),
            "a /proc/self/exe re-exec is named as its file: {line}"
        );

        let m = marker();
        eperm(
            connect(&impostor, None, None, false, &m)?,
            "a copy with the same name elsewhere",
        )?;
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        check_verdict(&line, "blocked", "block", None)?;
        eperm(
            connect(&impostor, Some(approved_text), None, false, &marker())?,
            "a copy claiming the approved path as argv[0]",
        )?;
        eperm(
            connect(Path::new(CLIENT), None, None, false, &marker())?,
            "the original build of the same program",
        )?;

        // A package upgrade: the new version is written next to the old one and renamed over
        // it; its very first run connects.
        let staged = bin.join(format!(".{CLIENT_NAME}.new"));
        copy_client(&staged)?;
        std::fs::rename(&staged, &approved)?;
        ok(
            connect(&approved, None, None, false, &marker())?,
            "the upgraded binary's first run",
        )?;
        h.finish()
    }
}

/// The exec of a file of another mount namespace, whose path there is the approved path, is
/// refused: any user can make a mount namespace (`unshare -Urm`) and mount what it likes over
/// the approved binary's directory there; a process of the host's namespace that runs that
/// file through `/proc/PID/root` (or an fd passed from there) must not get the approval, and
/// its line must not name it by the approved path. The approved binary itself still connects.
#[test]
fn block_mode_processes_rules_refuse_a_path_of_another_mount_namespace() -> Result<()> {
    use std::io::BufRead as _;
    Harness::with_cgroup("blk-exe-ns", |cg| {
        let dir = PolicyDir::create("exe-ns")?;
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        let approved = bin.join(CLIENT_NAME);
        copy_client(&approved)?;
        let approved_text = approved.to_str().unwrap_or_default().to_owned();
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        let policy = processes_policy(&port, &[&approved_text]);
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;

        // The other namespace: a tmpfs over `bin` holding another binary (the client's
        // original build, refused by its own path) at the approved path.
        let script = r#"mount -t tmpfs egret-e2e-foreign "$1" && cp "$2" "$1/$3" && echo ready && exec sleep 600"#;
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&bin)
            .args([CLIENT, CLIENT_NAME])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("unshare --mount")?;
        let stdout = child.stdout.take().context("unshare's stdout")?;
        let mut ns = Killed(child);
        let mut ready = String::new();
        std::io::BufReader::new(stdout).read_line(&mut ready)?;
        if ready.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = ns.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            anyhow::bail!("the other mount namespace was not made: {err}");
        }
        let foreign = PathBuf::from(format!("/proc/{}/root{}", ns.0.id(), approved.display()));
        ensure!(
            std::fs::metadata(&foreign)?.len() != std::fs::metadata(&approved)?.len()
                || std::fs::metadata(&foreign)?.ino() != std::fs::metadata(&approved)?.ino(),
            "{} should be another file than {approved_text}",
            foreign.display()
        );

        let args = |m: &str| {
            vec![
                "tcp".to_owned(),
                "127.0.0.1".to_owned(),
                port.clone(),
                m.to_owned(),
            ]
        };
        for round in 0..2 {
            let m = marker();
            let a = args(&m);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = run_program(&h.cgroup, &foreign, None, None, &a)?;
            ensure!(
                !out.status.success() && out.stdout.lines().any(|l| l.trim() == "errno=1"),
                "run {round}: the other namespace's file at the approved path should get EPERM, got {}\nstdout: {}\nstderr: {}",
                out.status,
                out.stdout,
                out.stderr
            );
            let line = h
                .egret
                .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
            check_verdict(&line, "blocked", "block", None)?;
            ensure!(
                field_str(&line, "process.executable") != Some(approved_text.as_str()),
                "the other namespace's file is named as the approved one: {line}"
            );
        }
        let m = marker();
        let a = args(&m);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run_program(&h.cgroup, &approved, None, None, &a)?;
        ensure!(
            out.status.success(),
            "the approved binary should connect, got {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        check_verdict(&line, "approved", "block", Some("client-only"))?;
        drop(ns);
        h.finish()
    })
}

/// A fresh ext4 file system (a sparse 1 GiB image: room for three copies of the debug-built
/// client) mounted on `at`; unmounted on drop. Needs `mkfs.ext4` and a loop device: a
/// prerequisite.
fn mount_ext4(dir: &Path, at: &Path) -> Result<Tmpfs> {
    let image = dir.join("ext4.img");
    std::fs::File::create(&image)?.set_len(1 << 30)?;
    let out = run_with_timeout(
        Command::new("mkfs.ext4").arg("-q").arg(&image),
        Duration::from_secs(60),
    )?;
    ensure!(out.status.success(), "mkfs.ext4: {}", out.stderr);
    std::fs::create_dir_all(at)?;
    let out = run_with_timeout(
        Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(at),
        Duration::from_secs(30),
    )?;
    ensure!(out.status.success(), "mount -o loop: {}", out.stderr);
    Ok(Tmpfs(at.to_owned()))
}

/// An overlayfs on `at` whose lower layer holds the client as `CLIENT_NAME` (a container
/// image's binary); unmounted on drop.
fn mount_overlay(dir: &Path, at: &Path) -> Result<Tmpfs> {
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::create_dir_all(at)?;
    copy_client(&dir.join("lower").join(CLIENT_NAME))?;
    let options = format!(
        "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
        dir.display()
    );
    let out = run_with_timeout(
        Command::new("mount")
            .args(["-t", "overlay", "egret-e2e-overlay", "-o", &options])
            .arg(at),
        Duration::from_secs(30),
    )?;
    ensure!(out.status.success(), "mount overlay: {}", out.stderr);
    Ok(Tmpfs(at.to_owned()))
}

/// A process that runs an approved binary since before the policy was loaded is approved by
/// the identity userspace installs, when it is the one the kernel reads: on ext4 (device,
/// inode and the generation `FS_IOC_GETVERSION` tells: a wrong one would refuse it) and on
/// overlayfs (which keeps no generation: 0 on both sides). On tmpfs, whose generation
/// userspace cannot read, only an exec after the load approves: such a process is refused.
#[test]
fn block_mode_processes_rules_approve_a_binary_running_before_the_load() -> Result<()> {
    Harness::with_cgroup("blk-exe-before", |cg| {
        let dir = PolicyDir::create("exe-before")?;
        let Some(ext4) = prerequisite(mount_ext4(dir.path(), &dir.path().join("ext4")))? else {
            return Ok(());
        };
        let tmpfs = Tmpfs::mount(&dir.path().join("tmpfs"))?;
        let overlay = mount_overlay(&dir.path().join("layers"), &dir.path().join("overlay"))?;
        let cases = [(&ext4, true), (&overlay, true), (&tmpfs, false)];
        let binaries: Vec<PathBuf> = cases.iter().map(|(fs, _)| fs.0.join(CLIENT_NAME)).collect();
        for binary in &binaries[..2] {
            if !binary.exists() {
                copy_client(binary)?;
            }
        }
        copy_client(&binaries[2])?;
        ensure!(
            tells_generation(&binaries[0])?,
            "ext4 should tell the generation"
        );
        let texts: Vec<&str> = binaries
            .iter()
            .map(|b| b.to_str().unwrap_or_default())
            .collect();
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        let policy_arg = dir
            .write("policy.yaml", &processes_policy(&port, &texts))?
            .display()
            .to_string();
        let go = dir.path().join("go");
        let go_text = go.to_str().unwrap_or_default().to_owned();
        let mut early = Vec::new();
        for binary in &binaries {
            let m = marker();
            let mut cmd = Command::new(binary);
            cmd.args(["file-then-tcp", &go_text, "127.0.0.1", &port, &m])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cg.command(&mut cmd)?;
            early.push((Killed(egret_e2e::run::spawn_busy_retry(&mut cmd)?), m));
        }
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        std::fs::write(&go, b"")?;
        for ((child, m), ((fs, approved), binary)) in
            early.iter_mut().zip(cases.iter().zip(&binaries))
        {
            let status = wait_child(&mut child.0, Duration::from_secs(30))?;
            let mut stdout = String::new();
            if let Some(mut o) = child.0.stdout.take() {
                let _ = o.read_to_string(&mut stdout);
            }
            let line = h
                .egret
                .wait_for_marked_flow("connect", "tcp", server.port(), m)?;
            let what = format!(
                "{} (running since before the load, on {})",
                binary.display(),
                fs.0.display()
            );
            if *approved {
                ensure!(
                    status.success(),
                    "{what} should connect, got {status}\nstdout: {stdout}"
                );
                check_verdict(&line, "approved", "block", Some("client-only"))?;
            } else {
                ensure!(
                    !status.success() && stdout.lines().any(|l| l.trim() == "errno=1"),
                    "{what} should get EPERM, got {status}\nstdout: {stdout}"
                );
                check_verdict(&line, "blocked", "block", None)?;
            }
        }
        // And a new exec of the tmpfs binary, after the load, is approved.
        let out = run_program(
            &h.cgroup,
            &binaries[2],
            None,
            None,
            &["tcp", "127.0.0.1", &port, &marker()],
        )?;
        ensure!(
            out.status.success(),
            "the tmpfs binary exec'd after the load: {}",
            out.stdout
        );
        drop(early);
        let result = h.finish();
        drop((ext4, tmpfs, overlay));
        result
    })
}

/// When the executables map is full, an exec'd file the policy approves by its path cannot
/// get its entry: it is refused (never approved by a neighbour's entry) and counted in
/// `exe_update_failures` (metric line and Prometheus). The last free entry still approves.
#[test]
fn block_mode_processes_rules_count_a_full_executables_map() -> Result<()> {
    Harness::with_cgroup("blk-exe-full", |cg| {
        let dir = PolicyDir::create("exe-full")?;
        let many = dir.path().join("many");
        std::fs::create_dir_all(&many)?;
        // One file short of the map's size: userspace installs all of them.
        let room = agent_common::EXES_MAX as usize;
        for i in 0..room - 1 {
            std::fs::write(many.join(format!("f{i}")), b"")?;
        }
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        let pattern = format!("{}/*", many.display());
        let policy = processes_policy(&port, &[&pattern]);
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let metrics_addr: SocketAddr =
            format!("127.0.0.1:{}", egret_e2e::prometheus::free_port()?).parse()?;
        let metrics = metrics_addr.to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg, "--metrics-addr", &metrics])?;
        let first = many.join(CLIENT_NAME);
        let second = many.join(format!("{CLIENT_NAME}-2"));
        copy_client(&first)?;
        copy_client(&second)?;
        let out = run_program(
            &h.cgroup,
            &first,
            None,
            None,
            &["tcp", "127.0.0.1", &port, &marker()],
        )?;
        ensure!(
            out.status.success(),
            "the file exec'd into the last free entry should connect, got {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        let m = marker();
        let out = run_program(
            &h.cgroup,
            &second,
            None,
            None,
            &["tcp", "127.0.0.1", &port, &m],
        )?;
        ensure!(
            !out.status.success() && out.stdout.lines().any(|l| l.trim() == "errno=1"),
            "a file the full map cannot hold should get EPERM, got {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        check_verdict(&line, "blocked", "block", None)?;
        let path = "egret.metrics.exe_update_failures";
        h.egret.wait_for(
            |v| is_metric(v) && field_u64(v, path).is_some_and(|n| n >= 1),
            Duration::from_secs(10),
        )?;
        let page = egret_e2e::prometheus::http_get(metrics_addr, "/metrics")?;
        let scraped = page.body.lines().find_map(|l| {
            l.strip_prefix("egret_exe_update_failures_total ")?
                .parse::<f64>()
                .ok()
        });
        ensure!(
            scraped.is_some_and(|n| n >= 1.0),
            "Prometheus: egret_exe_update_failures_total {scraped:?}"
        );
        h.finish()
    })
}

/// After a package upgrade frees the old binary's inode, a new file that gets the same inode
/// number (ext4 hands the lowest free one out again) is another file: the inode generation
/// tells them apart, so it is refused. On a fresh ext4 image, where the reuse is certain.
#[test]
fn block_mode_processes_rules_refuse_a_new_file_on_a_reused_inode_number() -> Result<()> {
    Harness::with_cgroup("blk-exe-reuse", |cg| {
        let dir = PolicyDir::create("exe-reuse")?;
        let mnt = dir.path().join("mnt");
        let Some(mounted) = prerequisite(mount_ext4(dir.path(), &mnt))? else {
            return Ok(());
        };
        let bin = mnt.join("bin");
        std::fs::create_dir_all(&bin)?;
        let approved = bin.join(CLIENT_NAME);
        copy_client(&approved)?;
        let approved_text = approved.to_str().unwrap_or_default().to_owned();
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        let policy = processes_policy(&port, &[&approved_text]);
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        let run = |program: &Path, m: &str| {
            run_program(
                &h.cgroup,
                program,
                None,
                None,
                &["tcp", "127.0.0.1", &port, m],
            )
        };

        let out = run(&approved, &marker())?;
        ensure!(out.status.success(), "the approved binary: {}", out.stdout);
        let old = std::fs::metadata(&approved)?.ino();
        let staged = bin.join(format!(".{CLIENT_NAME}.new"));
        copy_client(&staged)?;
        std::fs::rename(&staged, &approved)?;
        let out = run(&approved, &marker())?;
        ensure!(out.status.success(), "the upgraded binary: {}", out.stdout);

        let impostor = bin.join("impostor");
        copy_client(&impostor)?;
        let got = std::fs::metadata(&impostor)?.ino();
        ensure!(
            got == old,
            "the new file should reuse the old binary's inode number {old}, got {got}"
        );
        let m = marker();
        let out = run(&impostor, &m)?;
        ensure!(
            !out.status.success() && out.stdout.lines().any(|l| l.trim() == "errno=1"),
            "a new file on the old binary's inode number should get EPERM, got {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        let line = h
            .egret
            .wait_for_marked_flow("connect", "tcp", server.port(), &m)?;
        check_verdict(&line, "blocked", "block", None)?;
        let result = h.finish();
        drop(mounted);
        result
    })
}

//! The allowlist policy in audit mode: verdicts on connection lines, alerts and their
//! deduplication, rule selectors, the built-in default policy, and `egret policy check`.
//!
//! Every policy here sets `loopback: audit`, so loopback destinations need a rule like any
//! other (by default loopback is approved).

use anyhow::{ensure, Result};
use egret_e2e::expect::{check_network, is_flow};
use egret_e2e::policy::{
    check_alert, check_verdict, expect_alert, is_alert, is_any_alert, read_jsonl, AlertSource,
    AlertWant,
};
use egret_e2e::{
    command, field_str, field_u64, marker, prerequisite, run_in, run_with_timeout, skip,
    socket_addr, Egret, Harness, NetNs, PolicyDir, TcpServer, TestCgroup, UdpServer, LINE_TIMEOUT,
};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const CLIENT_NAME: &str = "egret-testclient";

/// Runs the client in `cg` with a unique marker and returns (its pid, the line egret wrote).
fn flow_line(
    egret: &mut Egret,
    cg: &TestCgroup,
    action: &str,
    transport: &str,
    ip: &str,
    port: u16,
) -> Result<(u32, Value)> {
    let m = marker();
    let sub = match (action, transport) {
        ("connect", "tcp") => "tcp",
        ("connect", _) => "udp-connect",
        _ => "udp-send",
    };
    let out = run_in(cg, &mut command(CLIENT, &[sub, ip, &port.to_string(), &m]))?;
    let ev = egret.wait_for_marked_flow(action, transport, port, &m)?;
    ensure!(
        field_str(&ev, "destination.ip") == Some(ip),
        "destination.ip: want {ip}\nline: {ev}"
    );
    Ok((out.pid, ev))
}

fn one_rule_policy(port: u16) -> String {
    format!(
        "mode: audit\nloopback: audit\nrules:\n  - name: port-a\n    to: [\"127.0.0.1/32\"]\n    ports: [{port}]\n    protocols: [tcp]\n"
    )
}

#[test]
fn audit_verdicts_and_one_alert_per_window() -> Result<()> {
    Harness::with_cgroup("pol-audit", |cg| {
        let dir = PolicyDir::create("audit")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let policy = dir.write("policy.yaml", &one_rule_policy(a.port()))?;
        let alerts = dir.path().join("alerts.jsonl");
        let (policy_arg, alerts_arg) = (policy.display().to_string(), alerts.display().to_string());
        let mut h = Harness::start(
            cg,
            &[
                "--policy",
                &policy_arg,
                "--alerts",
                &alerts_arg,
                "--alert-window",
                "60",
            ],
        )?;
        let source = AlertSource::of(CLIENT_NAME, &h.cgroup)?;

        // Approved: the rule's name, no alert.
        let (_, ev_a) = flow_line(
            &mut h.egret,
            &h.cgroup,
            "connect",
            "tcp",
            "127.0.0.1",
            a.port(),
        )?;
        check_network(&ev_a, "connect", "tcp", "ipv4", "127.0.0.1", a.port())?;
        check_verdict(&ev_a, "approved", "audit", Some("port-a"))?;

        // Unapproved: the line says so, and exactly one alert.
        let m = marker();
        let out = h.run(&mut command(
            CLIENT,
            &["tcp", "127.0.0.1", &b.port().to_string(), &m],
        ))?;
        let ev_b = h
            .egret
            .wait_for_marked_flow("connect", "tcp", b.port(), &m)?;
        check_verdict(&ev_b, "unapproved", "audit", None)?;
        let alert = expect_alert(
            &mut h.egret,
            &AlertWant::tcp_connect("127.0.0.1", b.port(), "unapproved", out.pid, &source),
        )?;
        ensure!(
            field_u64(&alert, "egret.alert.repeats") == Some(0),
            "first alert must have egret.alert.repeats 0\nalert: {alert}"
        );
        ensure!(
            b.accepted() >= 1,
            "audit mode must not refuse the connection"
        );

        // Five more within the 60 s window: still one alert.
        for _ in 0..5 {
            h.run(&mut command(
                CLIENT,
                &["tcp", "127.0.0.1", &b.port().to_string()],
            ))?;
        }
        h.egret
            .wait_for_count(|v| is_flow(v, "connect", "tcp", b.port()), 6, LINE_TIMEOUT)?;
        // Lines are flushed at least every second: a wrong extra alert would be there by now.
        std::thread::sleep(Duration::from_millis(2500));
        let all = h.egret.events()?;
        let alerts_out: Vec<&Value> = all.iter().filter(|v| is_any_alert(v)).collect();
        ensure!(
            alerts_out.len() == 1,
            "want exactly one alert in the output (port {} once, port {} never), got {}:\n{}",
            b.port(),
            a.port(),
            alerts_out.len(),
            alerts_out
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        for v in all
            .iter()
            .filter(|v| is_flow(v, "connect", "tcp", b.port()))
        {
            check_verdict(v, "unapproved", "audit", None)?;
        }

        // --alerts: the same alert lines, and nothing else (but the file's own `egret.output`
        // line where its hash chain starts).
        let file: Vec<Value> = read_jsonl(&alerts)?
            .into_iter()
            .filter(|v| field_str(v, "event.dataset") != Some("egret.output"))
            .collect();
        ensure!(
            file.len() == 1 && file.iter().all(is_any_alert),
            "{} must hold exactly the one alert line, has {} lines:\n{file:?}",
            alerts.display(),
            file.len()
        );
        for key in [
            "destination.port",
            "process.pid",
            "egret.alert.repeats",
            "message",
        ] {
            ensure!(
                egret_e2e::field(&file[0], key) == egret_e2e::field(&alert, key),
                "{key} differs between the output's alert and the --alerts file's\noutput: {alert}\nfile: {}",
                file[0]
            );
        }
        h.finish()
    })
}

#[test]
fn alert_repeats_are_counted_after_the_window() -> Result<()> {
    Harness::with_cgroup("pol-repeat", |cg| {
        let dir = PolicyDir::create("repeat")?;
        let (a, b) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let policy_arg = dir
            .write("policy.yaml", &one_rule_policy(a.port()))?
            .display()
            .to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg, "--alert-window", "1"])?;
        let port = b.port().to_string();

        // Five connects from one process within microseconds: one alert (window 1 s).
        h.connect_loop(CLIENT, b.port(), 5, 0)?;
        h.egret
            .wait_for_count(|v| is_flow(v, "connect", "tcp", b.port()), 5, LINE_TIMEOUT)?;
        let first = h
            .egret
            .wait_for(|v| is_alert(v, "connect", "tcp", b.port()), LINE_TIMEOUT)?;
        ensure!(
            field_u64(&first, "egret.alert.repeats") == Some(0),
            "first alert: egret.alert.repeats want 0\nalert: {first}"
        );

        // Well after the window: another occurrence. Some later alert reports the suppressed ones.
        std::thread::sleep(Duration::from_millis(2500));
        h.run(&mut command(CLIENT, &["tcp", "127.0.0.1", &port]))?;
        let later = h.egret.wait_for(
            |v| {
                is_alert(v, "connect", "tcp", b.port())
                    && field_u64(v, "egret.alert.repeats").is_some_and(|r| r >= 1)
            },
            LINE_TIMEOUT,
        )?;
        let all = h.egret.events()?;
        let alerts: Vec<&Value> = all
            .iter()
            .filter(|v| is_alert(v, "connect", "tcp", b.port()))
            .collect();
        let repeats: u64 = alerts
            .iter()
            .filter_map(|v| field_u64(v, "egret.alert.repeats"))
            .sum();
        ensure!(
            repeats <= 5,
            "6 occurrences, but the alerts claim {repeats} suppressed repeats:\n{alerts:?}"
        );
        ensure!(
            field_u64(&later, "event.sequence") > field_u64(&first, "event.sequence"),
            "the repeats alert must come after the first"
        );
        h.finish()
    })
}

/// Four listeners on `ip`: ports lo-1, lo, hi, hi+1 with hi = lo + 10.
fn port_block(ip: IpAddr) -> Result<(u16, Vec<TcpServer>)> {
    let seed = u16::try_from(std::process::id() % 5000).unwrap_or(0);
    for attempt in 0..200u16 {
        let lo = 21_000 + (seed.wrapping_mul(7).wrapping_add(attempt.wrapping_mul(37))) % 9000;
        let ports = [lo - 1, lo, lo + 10, lo + 11];
        let bound: Vec<_> = ports
            .iter()
            .map_while(|&p| TcpListener::bind(SocketAddr::new(ip, p)).ok())
            .collect();
        if bound.len() == ports.len() {
            let servers = bound
                .into_iter()
                .map(TcpServer::from_listener)
                .collect::<Result<Vec<_>>>()?;
            return Ok((lo, servers));
        }
    }
    anyhow::bail!("no free block of ports on {ip}")
}

/// A TCP server on `ip2` with the same port as a fresh one on `ip1`.
fn same_port_pair(ip1: IpAddr, ip2: IpAddr) -> Result<(TcpServer, TcpServer)> {
    for _ in 0..50 {
        let l1 = TcpListener::bind(SocketAddr::new(ip1, 0))?;
        let port = l1.local_addr()?.port();
        if let Ok(l2) = TcpListener::bind(SocketAddr::new(ip2, port)) {
            return Ok((TcpServer::from_listener(l1)?, TcpServer::from_listener(l2)?));
        }
    }
    anyhow::bail!("cannot bind the same port on {ip1} and {ip2}")
}

#[test]
fn rule_selectors_ranges_prefixes_protocols_cgroups() -> Result<()> {
    Harness::with_cgroup("pol-select", |cg| {
        let child = cg.child("selected")?;
        let dir = PolicyDir::create("select")?;
        let v6: IpAddr = "::1".parse()?;
        let (lo, _v6_servers) = port_block(v6)?;
        let hi = lo + 10;
        let net8 = TcpServer::start(socket_addr("127.0.0.3:0")?)?;
        let (host2, _host3) = same_port_pair("127.0.0.2".parse()?, "127.0.0.3".parse()?)?;
        let y = host2.port();
        let udp = UdpServer::loopback()?;
        let u = udp.port();
        let _tcp_on_u = TcpServer::start(SocketAddr::new("127.0.0.1".parse()?, u))?;
        let sel = TcpServer::loopback()?;
        let c = sel.port();
        let policy = format!(
            "mode: audit
loopback: audit
rules:
  - name: v6-range
    to: [\"::1/128\"]
    ports: [\"{lo}-{hi}\"]
    protocols: [tcp]
  - name: net8
    to: [\"127.0.0.0/8\"]
    ports: [{x}]
  - name: host32
    to: [\"127.0.0.2/32\"]
    ports: [{y}]
  - name: udp-only
    to: [\"127.0.0.1/32\"]
    ports: [{u}]
    protocols: [udp]
  - name: child-only
    to: [\"127.0.0.1/32\"]
    ports: [{c}]
    cgroups: [\"{child}\"]
",
            x = net8.port(),
            child = child.relative_path()
        );
        let policy_arg = dir.write("policy.yaml", &policy)?.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg])?;
        // The harness's cgroup is the parent; `child` is below it (also watched).
        type Case<'a> = (
            &'a TestCgroup,
            &'a str,
            &'a str,
            &'a str,
            u16,
            Option<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            (&child, "connect", "tcp", "::1", lo, Some("v6-range")),
            (&child, "connect", "tcp", "::1", hi, Some("v6-range")),
            (&child, "connect", "tcp", "::1", lo - 1, None),
            (&child, "connect", "tcp", "::1", hi + 1, None),
            (
                &child,
                "connect",
                "tcp",
                "127.0.0.3",
                net8.port(),
                Some("net8"),
            ),
            (&child, "connect", "tcp", "127.0.0.2", y, Some("host32")),
            (&child, "connect", "tcp", "127.0.0.3", y, None),
            (&child, "send", "udp", "127.0.0.1", u, Some("udp-only")),
            (&child, "connect", "tcp", "127.0.0.1", u, None),
            (&child, "connect", "tcp", "127.0.0.1", c, Some("child-only")),
        ];
        let mut failures = Vec::new();
        for (cg, action, transport, ip, port, rule) in cases {
            let (pid, ev) = flow_line(&mut h.egret, cg, action, transport, ip, port)?;
            let verdict = if rule.is_some() {
                "approved"
            } else {
                "unapproved"
            };
            if let Err(e) = check_verdict(&ev, verdict, "audit", rule) {
                failures.push(format!("{ip} port {port}/{transport}: {e:#}"));
                continue;
            }
            if rule.is_none() {
                let source = AlertSource::of(CLIENT_NAME, cg)?;
                let found = h.egret.wait_for(
                    |v| {
                        is_alert(v, action, transport, port)
                            && field_str(v, "destination.ip") == Some(ip)
                            && field_u64(v, "process.pid") == Some(u64::from(pid))
                    },
                    LINE_TIMEOUT,
                );
                match found {
                    Ok(alert) => {
                        if let Err(e) = check_alert(
                            &alert,
                            &AlertWant {
                                action,
                                transport,
                                ip,
                                port,
                                verdict: "unapproved",
                                pid,
                                source: &source,
                            },
                        ) {
                            failures.push(format!("{ip} port {port}/{transport} alert: {e:#}"));
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{ip} port {port}/{transport}: no alert: {e:#}"))
                    }
                }
            }
        }
        // The cgroup selector: the same destination from the parent cgroup is not approved.
        let cg_parent = h.cgroup.relative_path();
        let m = marker();
        run_in(
            &h.cgroup,
            &mut command(CLIENT, &["tcp", "127.0.0.1", &c.to_string(), &m]),
        )?;
        let ev = h.egret.wait_for_marked_flow("connect", "tcp", c, &m)?;
        if let Err(e) = check_verdict(&ev, "unapproved", "audit", None) {
            failures.push(format!(
                "port {c} from {cg_parent} (rule is for {}): {e:#}",
                child.relative_path()
            ));
        }
        ensure!(
            failures.is_empty(),
            "{} of the selector cases failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
        drop(child);
        h.finish()
    })
}

#[test]
fn default_policy_approves_loopback_only() -> Result<()> {
    NetNs::with("poldef", |ns| {
        Harness::with_egret("pol-default", &[], |mut h| {
            let source = AlertSource::of(CLIENT_NAME, &h.cgroup)?;
            let lo4 = TcpServer::loopback()?;
            let lo6 = TcpServer::start(socket_addr("[::1]:0")?)?;
            for (ip, port) in [("127.0.0.1", lo4.port()), ("::1", lo6.port())] {
                let m = marker();
                h.run(&mut command(CLIENT, &["tcp", ip, &port.to_string(), &m]))?;
                let ev = h.egret.wait_for_marked_flow("connect", "tcp", port, &m)?;
                check_verdict(&ev, "approved", "audit", Some("loopback"))?;
            }

            // Into the test's namespace: not loopback, no rule.
            let server =
                TcpServer::from_listener(ns.tcp_listener(SocketAddr::new(ns.ns_v4().into(), 0))?)?;
            let ip = ns.ns_v4().to_string();
            let mut targets = vec![(ip.clone(), server.port(), "connect", "tcp")];
            let s6 = if ns.has_v6() {
                let s6 = TcpServer::from_listener(
                    ns.tcp_listener(SocketAddr::new(ns.ns_v6().into(), 0))?,
                )?;
                targets.push((ns.ns_v6().to_string(), s6.port(), "connect", "tcp"));
                Some(s6)
            } else {
                None
            };
            let usock = ns.udp_socket(SocketAddr::new(ns.ns_v4().into(), 0))?;
            targets.push((ip.clone(), usock.local_addr()?.port(), "send", "udp"));
            for (ip, port, action, transport) in &targets {
                let m = marker();
                let sub = if *action == "send" { "udp-send" } else { "tcp" };
                let out = h.run(&mut command(CLIENT, &[sub, ip, &port.to_string(), &m]))?;
                let ev = h.egret.wait_for_marked_flow(action, transport, *port, &m)?;
                check_verdict(&ev, "unapproved", "audit", None)?;
                expect_alert(
                    &mut h.egret,
                    &AlertWant {
                        action,
                        transport,
                        ip,
                        port: *port,
                        verdict: "unapproved",
                        pid: out.pid,
                        source: &source,
                    },
                )?;
            }
            std::thread::sleep(Duration::from_millis(1500));
            let loopback_alerts: Vec<Value> = h
                .egret
                .events()?
                .into_iter()
                .filter(|v| {
                    is_any_alert(v)
                        && matches!(
                            field_str(v, "destination.ip"),
                            Some("127.0.0.1") | Some("::1")
                        )
                })
                .collect();
            ensure!(
                loopback_alerts.is_empty(),
                "loopback is approved by default, yet alerts: {loopback_alerts:?}"
            );
            drop((usock, s6));
            h.finish()
        })
    })
}

/// `egret policy check FILE`.
fn policy_check(file: &std::path::Path) -> Result<egret_e2e::RunOutput> {
    let bin = skip::require_egret_bin()?;
    let mut cmd = Command::new(bin);
    cmd.arg("policy").arg("check").arg(file);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// `egret policy check FILE` must exit with `code` (`what` names the case in the error).
fn policy_check_exits(
    file: &std::path::Path,
    code: i32,
    what: &str,
) -> Result<egret_e2e::RunOutput> {
    let out = policy_check(file)?;
    ensure!(
        out.status.code() == Some(code),
        "{what}: want exit {code}, got {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out)
}

/// The `FILE:LINE:COLUMN: PATH: MESSAGE` lines of `stderr` for `file`: (line, column, path).
fn located_errors(stderr: &str, file: &str) -> Vec<(usize, usize, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(file)?.strip_prefix(':')?;
            let mut parts = rest.splitn(4, ':');
            let line = parts.next()?.parse().ok()?;
            let col = parts.next()?.parse().ok()?;
            let path = parts.next()?.trim().to_string();
            parts.next()?;
            Some((line, col, path))
        })
        .collect()
}

#[test]
fn policy_check_reports_every_error_with_its_position() -> Result<()> {
    let Some(_) = prerequisite(skip::require_egret_bin())? else {
        return Ok(());
    };
    let dir = PolicyDir::create("check")?;
    let good = dir.write(
        "good.yaml",
        "mode: block
loopback: approve
rules:
  - name: web
    to: [\"10.0.0.0/8\", \"2001:db8::/32\", 192.0.2.7]
    ports: [443, \"8000-8100\"]
    protocols: [tcp]
    cgroups: [/system.slice]
  - name: dns
    to: [192.0.2.53/32]
    ports: [53]
    protocols: [udp, tcp]
",
    )?;
    let out = policy_check_exits(&good, 0, "valid policy")?;
    // One summary line, then the notes about the valid policy, each `note: ...` (docs/policy.md,
    // "`egret policy check PATH`"); without `resolvers:` one of them says whose answers count.
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.first().is_some_and(|l| l.contains(": ok: "))
            && lines.iter().skip(1).all(|l| l.starts_with("note: ")),
        "valid policy: want one summary line containing \": ok: \" and then only `note: ` lines on stdout, got {:?}",
        out.stdout
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("note: DNS answers count only from trusted resolvers: the nameservers in the resolv.conf")),
        "valid policy without `resolvers:`: want the note that answers count only from the resolv.conf nameservers, got {:?}",
        out.stdout
    );

    // Three independent mistakes on lines 5, 6 and 9 (columns are where the value starts).
    let bad_text = "mode: audit
loopback: approve
rules:
  - name: a
    to: [10.0.0.0/33]
    ports: [70000]
  - name: b
    to: [192.168.1.0/24]
    protocols: [sctp]
";
    let bad = dir.write("bad.yaml", bad_text)?;
    let bad_s = bad.display().to_string();
    let out = policy_check_exits(&bad, 1, "invalid policy")?;
    let mut errors = located_errors(&out.stderr, &bad_s);
    errors.sort();
    let want = [
        (5, 10, "rules[0].to[0]"),
        (6, 13, "rules[0].ports[0]"),
        (9, 17, "rules[1].protocols[0]"),
    ];
    ensure!(
        errors.len() == 3,
        "want 3 `{bad_s}:LINE:COLUMN: PATH: MESSAGE` lines on stderr, got {}:\n{}",
        errors.len(),
        out.stderr
    );
    for ((line, col, path), (wl, wc, wp)) in errors.iter().zip(want) {
        ensure!(
            *line == wl && *col == wc && path == wp,
            "want {bad_s}:{wl}:{wc}: {wp}: ..., got {line}:{col}: {path}\nstderr:\n{}",
            out.stderr
        );
    }

    // A file that cannot be read: one error at 0:0.
    let missing = dir.path().join("missing.yaml");
    let missing_s = missing.display().to_string();
    let out = policy_check(&missing)?;
    ensure!(
        out.status.code() == Some(1)
            && out
                .stderr
                .lines()
                .any(|l| l.starts_with(&format!("{missing_s}:0:0: "))),
        "missing file: want exit 1 and `{missing_s}:0:0: ...`, got {}\nstderr: {}",
        out.status,
        out.stderr
    );

    // Block mode refuses a `processes:` glob the kernel cannot match (it enforces exact paths,
    // DIR/* and DIR/**), pointing at it.
    let proc_text = "mode: block
loopback: approve
rules:
  - name: p
    to: [10.0.0.0/8]
    processes: [\"/usr/bin/py*\"]
";
    let procs = dir.write("procs.yaml", proc_text)?;
    let procs_s = procs.display().to_string();
    let out = policy_check_exits(&procs, 1, "block mode with processes")?;
    let errors = located_errors(&out.stderr, &procs_s);
    ensure!(
        errors.len() == 1 && errors[0].0 == 6 && errors[0].2.starts_with("rules[0].processes"),
        "want one error at {procs_s}:6:..: rules[0].processes..., got:\n{}",
        out.stderr
    );
    Ok(())
}

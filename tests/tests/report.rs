//! `egret report` end to end: egret in audit mode watches real traffic from a test cgroup
//! (loopback destinations on a port no rule approves, a name resolved through the test DNS
//! server, a UDP flow, some of it from a cgroup that looks like a systemd unit); the report's
//! counts (text and JSON) must match the lines egret wrote; `--suggest-policy` must pass
//! `egret policy check`, and egret run again with it over the same traffic must write no
//! alert. The HTML report is rendered in headless Chromium (installed when missing).

use anyhow::{ensure, Context, Result};
use egret_e2e::browser::{png_size, Chromium};
use egret_e2e::dns::TRUST_TEST_RESOLVER;
use egret_e2e::expect::is_flow;
use egret_e2e::policy::{is_any_alert, read_jsonl};
use egret_e2e::{
    command, field, field_str, field_u64, prerequisite, run_in, run_with_timeout, skip,
    socket_addr, AcceptServer, DnsServer, Egret, Harness, PolicyDir, RunOutput, TestCgroup,
    UdpServer, LINE_TIMEOUT,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const DNS: &str = env!("CARGO_BIN_EXE_egret-dns");
/// The child cgroup some clients run in: egret reports it as this systemd unit.
const UNIT: &str = "egret-e2e-report.service";
/// The name the test DNS server answers, and its address.
const NAME: &str = "api.report.test";
const NAME_IP: &str = "127.0.0.61";

/// `egret report ARGS` (the binary under test); its output whatever the exit status.
fn egret_report(args: &[&str]) -> Result<RunOutput> {
    let mut cmd = Command::new(skip::require_egret_bin()?);
    cmd.arg("report").args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// `egret report ARGS`, which must exit 0 and print nothing on stderr.
fn egret_report_ok(args: &[&str]) -> Result<String> {
    let out = egret_report(args)?;
    ensure!(
        out.status.success() && out.stderr.is_empty(),
        "egret report {args:?}: {}\nstderr: {}",
        out.status,
        out.stderr
    );
    Ok(out.stdout)
}

/// A connection as `egret report` counts it: a start line (`connect`) or a UDP `send` line.
/// A line that starts a connection: a `connect` line, or a UDP flow's first `send` line.
fn is_connection(v: &Value) -> bool {
    field_str(v, "event.kind") == Some("event")
        && matches!(field_str(v, "event.action"), Some("connect" | "send"))
        && field(v, "event.type")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|x| x.as_str() == Some("start")))
}

fn to_ip(v: &Value, ip: &str) -> bool {
    field_str(v, "destination.ip") == Some(ip)
}

/// The servers every run talks to; the same ports in both egret runs, so the suggested policy
/// describes the second run's traffic too.
struct Servers {
    tcp: AcceptServer,
    udp: UdpServer,
    dns: DnsServer,
}

impl Servers {
    fn start() -> Result<Self> {
        Ok(Self {
            // 0.0.0.0 accepts on every 127.x.y.z.
            tcp: AcceptServer::start(socket_addr("0.0.0.0:0")?)?,
            udp: UdpServer::start(socket_addr("0.0.0.0:0")?)?,
            dns: DnsServer::start(
                Path::new(DNS),
                &["--ttl", "60", "--a", &format!("{NAME}={NAME_IP}")],
            )?,
        })
    }

    /// The traffic, and a wait until egret wrote every connection line it causes:
    /// from the test cgroup 3 × tcp 127.0.0.2, 2 × tcp 127.0.0.3, one UDP flow to 127.0.0.3;
    /// from the unit 1 × tcp 127.0.0.3 and 2 × resolve `NAME` and connect (each resolve is a
    /// UDP query to the DNS server on 127.0.0.1).
    fn traffic(&self, egret: &mut Egret, cg: &TestCgroup, unit: &TestCgroup) -> Result<()> {
        let (tcp, udp) = (self.tcp.port().to_string(), self.udp.port().to_string());
        for _ in 0..3 {
            run_in(cg, &mut command(CLIENT, &["tcp", "127.0.0.2", &tcp]))?;
        }
        for _ in 0..2 {
            run_in(cg, &mut command(CLIENT, &["tcp", "127.0.0.3", &tcp]))?;
        }
        run_in(
            cg,
            &mut command(CLIENT, &["udp-send", "127.0.0.3", &udp, "--count", "4"]),
        )?;
        run_in(unit, &mut command(CLIENT, &["tcp", "127.0.0.3", &tcp]))?;
        for _ in 0..2 {
            let out = run_in(
                unit,
                Command::new(DNS).args([
                    "resolve-connect",
                    "--server",
                    &self.dns.addr(),
                    NAME,
                    "--port",
                    &tcp,
                ]),
            )?;
            ensure!(
                out.stdout.contains("iterations=1 ok=1 "),
                "resolve-connect: {}\n{}",
                out.stdout,
                out.stderr
            );
        }
        let (t, u, d) = (self.tcp.port(), self.udp.port(), self.dns.port());
        type Pred<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
        let port_is =
            |p: u16| move |v: &Value| field_u64(v, "destination.port") == Some(u64::from(p));
        let expected: [(&str, usize, Pred<'_>); 5] = [
            (
                "tcp 127.0.0.2",
                3,
                Box::new(|v| is_flow(v, "connect", "tcp", t) && to_ip(v, "127.0.0.2")),
            ),
            (
                "tcp 127.0.0.3",
                3,
                Box::new(|v| is_flow(v, "connect", "tcp", t) && to_ip(v, "127.0.0.3")),
            ),
            (
                "tcp to the name",
                2,
                Box::new(|v| is_flow(v, "connect", "tcp", t) && to_ip(v, NAME_IP)),
            ),
            (
                "udp 127.0.0.3",
                1,
                Box::new(|v| is_flow(v, "send", "udp", u)),
            ),
            (
                "dns queries",
                2,
                Box::new(move |v| is_connection(v) && port_is(d)(v)),
            ),
        ];
        for (what, count, pred) in expected {
            egret
                .wait_for_count(pred, count, LINE_TIMEOUT)
                .with_context(|| format!("waiting for {count} line(s): {what}"))?;
        }
        Ok(())
    }
}

/// The group named `name` (or whose name ends with `/name`) of `dimension` in a JSON report.
fn group<'a>(report: &'a Value, dimension: &str, name: &str) -> Result<&'a Value> {
    field(report, &format!("groups.{dimension}"))
        .and_then(Value::as_array)
        .and_then(|groups| {
            groups.iter().find(|g| {
                field_str(g, "name").is_some_and(|n| n == name || n.ends_with(&format!("/{name}")))
            })
        })
        .with_context(|| format!("no {dimension} group {name:?} in {report}"))
}

/// The destination row (`destination`, port, transport) of a group.
fn row<'a>(group: &'a Value, dest: &str, port: u16, transport: &str) -> Result<&'a Value> {
    field(group, "destinations")
        .and_then(Value::as_array)
        .and_then(|rows| {
            rows.iter().find(|r| {
                field_str(r, "destination") == Some(dest)
                    && field_u64(r, "port") == Some(u64::from(port))
                    && field_str(r, "transport") == Some(transport)
            })
        })
        .with_context(|| format!("no row {dest}:{port}/{transport} in {group}"))
}

/// Raw counts from egret's own lines: connection lines, alert lines, for lines matching `f`.
fn raw(lines: &[Value], f: impl Fn(&Value) -> bool) -> (u64, u64) {
    let conns = lines.iter().filter(|v| is_connection(v) && f(v)).count();
    let alerts = lines.iter().filter(|v| is_any_alert(v) && f(v)).count();
    (conns as u64, alerts as u64)
}

fn check_row(
    lines: &[Value],
    group: &Value,
    (dest, port, transport): (&str, u16, &str),
    want_connections: u64,
    f: impl Fn(&Value) -> bool,
) -> Result<()> {
    let r = row(group, dest, port, transport)?;
    let (conns, alerts) = raw(lines, f);
    ensure!(
        conns == want_connections,
        "egret wrote {conns} connection lines for {dest}:{port}/{transport}, the test made {want_connections}"
    );
    ensure!(
        field_u64(r, "connections") == Some(want_connections)
            && field_u64(r, "alerts") == Some(alerts),
        "{dest}:{port}/{transport}: want {want_connections} connections and {alerts} alerts (from egret's lines), report says {r}"
    );
    Ok(())
}

#[test]
fn report_and_suggested_policy_over_real_traffic() -> Result<()> {
    Harness::with_cgroup("report", |cg| {
        let unit = cg.child(UNIT)?;
        let servers = Servers::start()?;
        let (tcp, udp, dns) = (servers.tcp.port(), servers.udp.port(), servers.dns.port());
        let dir = PolicyDir::create("report")?;
        // Audit mode, loopback audited: only 127.0.0.2 on the TCP port is approved. The test
        // DNS server is trusted (it is not in /etc/resolv.conf), so its answers name `NAME`.
        let first = dir.write(
            "first.yaml",
            &format!(
                "mode: audit\nloopback: audit\n{TRUST_TEST_RESOLVER}rules:\n  - name: only-two\n    to: [\"127.0.0.2\"]\n    ports: [{tcp}]\n    protocols: [tcp]\n"
            ),
        )?;
        let alerts_file = dir.path().join("alerts.jsonl");
        let (first_arg, alerts_arg, dns_arg) = (
            first.display().to_string(),
            alerts_file.display().to_string(),
            dns.to_string(),
        );
        let mut egret = Egret::start(
            cg.path(),
            &[
                "--policy",
                &first_arg,
                "--alerts",
                &alerts_arg,
                "--dns-port",
                &dns_arg,
            ],
        )?;
        servers.traffic(&mut egret, &cg, &unit)?;
        egret.stop_cleanly()?;
        let events = dir.path().join("events.jsonl");
        std::fs::copy(egret.events_path(), &events)?;
        egret.discard_dir_on_drop();
        drop(egret);
        let lines = read_jsonl(&events)?;
        let events_arg = events.display().to_string();

        // JSON, over the output and the --alerts file (whose alert lines are the same ones).
        let report: Value = serde_json::from_str(&egret_report_ok(&[
            "--format",
            "json",
            &events_arg,
            &alerts_arg,
        ])?)?;
        let (all_conns, all_alerts) = raw(&lines, |_| true);
        ensure!(all_alerts >= 3, "egret wrote only {all_alerts} alert lines");
        ensure!(
            report["totals"]["connections"] == all_conns
                && report["totals"]["alerts"] == all_alerts,
            "totals: want {all_conns} connections and {all_alerts} alerts, got {}",
            report["totals"]
        );
        ensure!(
            report["input"]["duplicate_alert_lines"] == all_alerts,
            "the --alerts file's lines are counted once: {}",
            report["input"]
        );
        ensure!(report["input"]["bad_lines"] == 0, "{}", report["input"]);
        let testclient = group(&report, "process", "egret-testclient")?;
        check_row(&lines, testclient, ("127.0.0.2", tcp, "tcp"), 3, |v| {
            to_ip(v, "127.0.0.2") && field_u64(v, "destination.port") == Some(u64::from(tcp))
        })?;
        check_row(&lines, testclient, ("127.0.0.3", tcp, "tcp"), 3, |v| {
            to_ip(v, "127.0.0.3") && field_u64(v, "destination.port") == Some(u64::from(tcp))
        })?;
        check_row(&lines, testclient, ("127.0.0.3", udp, "udp"), 1, |v| {
            field_u64(v, "destination.port") == Some(u64::from(udp))
        })?;
        let r = row(testclient, "127.0.0.2", tcp, "tcp")?;
        ensure!(r["unapproved"] == 0 && r["alerts"] == 0, "approved: {r}");
        let r = row(testclient, "127.0.0.3", tcp, "tcp")?;
        ensure!(
            r["unapproved"] == 3 && r["alerts"].as_u64() >= Some(2),
            "unapproved, and at least one alert per cgroup: {r}"
        );
        ensure!(row(testclient, "127.0.0.3", udp, "udp")?["datagrams"] == 4);
        let resolver = group(&report, "process", "egret-dns")?;
        check_row(&lines, resolver, (NAME, tcp, "tcp"), 2, |v| {
            to_ip(v, NAME_IP) && field_u64(v, "destination.port") == Some(u64::from(tcp))
        })?;
        let r = row(resolver, NAME, tcp, "tcp")?;
        ensure!(
            r["domain"] == NAME && r["addresses"] == json!([NAME_IP]),
            "the name, with its address: {r}"
        );
        check_row(&lines, resolver, ("127.0.0.1", dns, "udp"), 2, |v| {
            field_u64(v, "destination.port") == Some(u64::from(dns))
        })?;
        let by_unit = group(&report, "systemd_unit", UNIT)?;
        ensure!(
            by_unit["connections"] == 5 && by_unit["destinations_total"] == 3,
            "the unit made 1 + 2 + 2 connections to 3 destinations: {by_unit}"
        );
        row(by_unit, NAME, tcp, "tcp")?;
        ensure!(
            report["groups"]["systemd_unit"].as_array().map(Vec::len) == Some(1),
            "only the unit's lines have a unit: {}",
            report["groups"]["systemd_unit"]
        );

        // Text: the same numbers, as a table.
        let text = egret_report_ok(&[&events_arg])?;
        ensure!(
            text.starts_with(&format!("egret report: {all_conns} connections to ")),
            "{text}"
        );
        ensure!(
            text.contains(&format!("\n{UNIT}: 5 connections, 3 destinations, ")),
            "{text}"
        );
        let name_row = text
            .lines()
            .find(|l| l.trim_start().starts_with(NAME))
            .with_context(|| format!("no {NAME} row in\n{text}"))?;
        let cells: Vec<&str> = name_row.split_whitespace().collect();
        ensure!(
            cells.get(1..4) == Some(&[tcp.to_string().as_str(), "tcp", "2"][..]),
            "{name_row}"
        );

        // --suggest-policy: valid, names over addresses, scoped, loopback audited.
        let policy = dir.path().join("suggested.yaml");
        let policy_arg = policy.display().to_string();
        egret_report_ok(&["--suggest-policy", "--out", &policy_arg, &events_arg])?;
        let yaml = std::fs::read_to_string(&policy)?;
        let mut check = Command::new(skip::require_egret_bin()?);
        check.args(["policy", "check", &policy_arg]);
        let checked = run_with_timeout(&mut check, Duration::from_secs(30))?;
        ensure!(
            checked.status.success()
                && checked
                    .stdout
                    .contains(": ok: mode audit, loopback audited, "),
            "egret policy check: {}\n{}{}\n--- policy ---\n{yaml}",
            checked.status,
            checked.stdout,
            checked.stderr
        );
        for want in [
            "loopback: audit".to_owned(),
            // The unit's TCP destinations, on the same port: one rule, the name first.
            format!("to: [\"{NAME}\", \"127.0.0.3\"]"),
            format!("systemd_units: [\"{UNIT}\"]"),
        ] {
            ensure!(
                yaml.contains(&want),
                "the policy should contain {want:?}:\n{yaml}"
            );
        }
        ensure!(
            !yaml.contains(NAME_IP),
            "the name, not its address:\n{yaml}"
        );

        // The same traffic under the suggested policy: every connection approved, no alert.
        // The suggestion says which destinations are approved, not which resolvers this host
        // trusts (the host's resolv.conf, or a `resolvers:` the operator writes): the test
        // resolver is not in resolv.conf, so it is added, as an operator would on such a host;
        // nothing else of the suggestion is changed.
        if !yaml.lines().any(|l| l.starts_with("resolvers:")) {
            std::fs::write(&policy, format!("{TRUST_TEST_RESOLVER}{yaml}"))?;
        }
        let mut egret = Egret::start(
            cg.path(),
            &["--policy", &policy_arg, "--dns-port", &dns_arg],
        )?;
        servers.traffic(&mut egret, &cg, &unit)?;
        // Lines are flushed at least every second: an alert would be there by now.
        std::thread::sleep(Duration::from_millis(2500));
        egret.stop_cleanly()?;
        let second = egret.events()?;
        let alerts: Vec<&Value> = second.iter().filter(|v| is_any_alert(v)).collect();
        ensure!(
            alerts.is_empty(),
            "the suggested policy must approve the same traffic; alerts:\n{}\n--- policy ---\n{yaml}",
            alerts
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (conns, _) = raw(&second, |_| true);
        ensure!(
            conns == all_conns,
            "the second run wrote {conns} connection lines, the first {all_conns}"
        );
        for v in second.iter().filter(|v| is_connection(v)) {
            let rule = field_str(v, "rule.name");
            ensure!(
                field_str(v, "egret.policy.verdict") == Some("approved")
                    && rule.is_some_and(
                        |r| r != "loopback" && yaml.contains(&format!("name: \"{r}\""))
                    ),
                "approved by a rule of the suggested policy: {v}"
            );
        }
        egret.discard_dir_on_drop();
        Ok(())
    })
}

/// A day of synthetic lines: several processes, units, a container, a pod, a hostile
/// executable name, alerts, a metric line and one bad line.
fn synthetic_lines() -> Vec<String> {
    let start: i64 = 1_795_305_600; // 2026-11-22T00:00:00Z
    let ts = |s: i64| {
        let t = start + s;
        format!(
            "2026-11-22T{:02}:{:02}:{:02}Z",
            (t / 3600) % 24,
            (t / 60) % 60,
            t % 60
        )
    };
    let mut lines = Vec::new();
    let mut seq = 0_u64;
    let mut line = |t: i64,
                    kind: &str,
                    exe: &str,
                    ip: &str,
                    port: u16,
                    transport: &str,
                    extra: Value| {
        seq += 1;
        let mut v = json!({
            "@timestamp": ts(t),
            "event": {"kind": kind, "category": ["network"], "type": ["connection", "start"],
                      "action": if transport == "udp" { "send" } else { "connect" },
                      "module": "egret", "dataset": "egret.network", "sequence": seq},
            "process": {"pid": 100, "executable": exe, "name": exe.rsplit('/').next().unwrap_or(exe)},
            "destination": {"ip": ip, "port": port},
            "network": {"transport": transport, "type": "ipv4"},
            "host": {"name": "vm"},
            "egret": {"cgroup": {"id": 1}, "socket": {"cookie": seq},
                      "policy": {"verdict": if kind == "alert" { "unapproved" } else { "approved" }, "mode": "audit"}}
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                match (obj.get_mut(k).and_then(Value::as_object_mut), x.as_object()) {
                    (Some(inner), Some(x)) => inner.extend(x.clone()),
                    _ => {
                        obj.insert(k.clone(), x.clone());
                    }
                }
            }
        }
        v.to_string()
    };
    let web = json!({"egret": {"systemd": {"unit": "web.service"}}});
    for minute in 0..(6 * 60_i64) {
        let t = minute * 60;
        // A daily-ish curve: busier in the middle of the window.
        let busy = 1 + (6 - ((minute - 180).abs() / 30)).max(0);
        for k in 0..busy {
            lines.push(line(t + k, "event", "/usr/sbin/nginx", "203.0.113.10", 443, "tcp",
                json!({"destination": {"domain": "api.payments.example"}, "egret": {"systemd": {"unit": "web.service"}}})));
        }
        if minute % 3 == 0 {
            lines.push(line(
                t + 5,
                "event",
                "/usr/sbin/nginx",
                "10.0.0.5",
                5432,
                "tcp",
                web.clone(),
            ));
        }
        if minute % 2 == 0 {
            lines.push(line(t + 7, "event", "/usr/lib/systemd/systemd-resolved", "10.0.0.53", 53, "udp",
                json!({"egret": {"systemd": {"unit": "systemd-resolved.service"}, "udp": {"datagrams": 12}}})));
        }
        if minute % 10 == 0 {
            lines.push(line(t + 9, "event", "/app/server", "10.96.0.1", 443, "tcp",
                json!({"container": {"id": "3f4e5d6c", "name": "web", "image": {"name": "shop/web:1.4"}},
                       "orchestrator": {"type": "kubernetes", "namespace": "shop", "resource": {"type": "pod", "name": "web-7d4b9c8f6-x2x9z"}}})));
        }
        if (120..150).contains(&minute) {
            let evil = "/tmp/<script>alert(1)</script>/x";
            lines.push(line(
                t + 11,
                "event",
                evil,
                "198.51.100.66",
                4444,
                "tcp",
                json!({"egret": {"policy": {"verdict": "unapproved", "mode": "audit"}}}),
            ));
            if minute % 10 == 0 {
                lines.push(line(
                    t + 11,
                    "alert",
                    evil,
                    "198.51.100.66",
                    4444,
                    "tcp",
                    json!({}),
                ));
            }
        }
        if minute % 45 == 0 {
            lines.push(line(t + 13, "event", "/usr/bin/apt", "151.101.2.132", 80, "tcp",
                json!({"destination": {"domain": "deb.debian.org"}, "egret": {"systemd": {"unit": "apt-daily.service"}}})));
        }
    }
    lines.push(format!(
        r#"{{"@timestamp":"{}","event":{{"kind":"metric","action":"stats"}},"host":{{"name":"vm"}},"egret":{{"metrics":{{"events_lost_kernel":0}}}}}}"#,
        ts(6 * 3600)
    ));
    lines.push("not json".to_owned());
    lines
}

#[test]
fn html_report_renders_in_chromium() -> Result<()> {
    let Some(chromium) =
        prerequisite(skip::require_egret_bin().and_then(|_| Chromium::find_or_install()))?
    else {
        return Ok(());
    };
    let dir = PolicyDir::create("report-html")?;
    let input = dir.path().join("day.jsonl");
    std::fs::write(&input, synthetic_lines().join("\n") + "\n")?;
    let page = dir.path().join("report.html");
    let (input_arg, page_arg) = (input.display().to_string(), page.display().to_string());
    let out = egret_report(&["--format", "html", "--out", &page_arg, &input_arg])?;
    ensure!(
        out.status.success() && out.stderr.contains(":") && out.stderr.contains("1 bad line"),
        "egret report: {}\n{}",
        out.status,
        out.stderr
    );

    let dom = chromium.dump_dom(&page)?;
    ensure!(dom.contains("<svg id=\"timeline\""), "no chart in the DOM");
    let segments = dom.matches("<rect class=\"seg\"").count();
    ensure!(segments > 100, "the chart has only {segments} bar segments");
    let rows = dom.matches("<tr class=\"dest").count();
    ensure!(rows >= 12, "only {rows} destination rows in the DOM");
    for want in [
        "api.payments.example",
        "deb.debian.org",
        "web.service",
        "shop/web-7d4b9c8f6-x2x9z",
        "/tmp/&lt;script&gt;alert(1)&lt;/script&gt;/x",
    ] {
        ensure!(dom.contains(want), "the DOM should show {want:?}");
    }
    ensure!(
        !dom.contains("<script"),
        "a hostile process name must not become a script element"
    );

    let png = dir.path().join("report.png");
    chromium.screenshot(&page, &png, 1280, 2200)?;
    let data = std::fs::read(&png)?;
    ensure!(
        png_size(&data)? == (1280, 2200),
        "screenshot size {:?}",
        png_size(&data)
    );
    ensure!(
        data.len() > 40_000,
        "a {} byte screenshot is too plain to show tables and a chart",
        data.len()
    );
    if let Some(keep) = std::env::var_os("EGRET_E2E_KEEP_SCREENSHOT") {
        std::fs::copy(&png, &keep)?;
        std::fs::copy(&page, Path::new(&keep).with_extension("html"))?;
    }
    Ok(())
}

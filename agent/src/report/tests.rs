//! [`run`](super::run) on files: formats, the time range, bad lines, hostile strings.

use std::path::PathBuf;

use super::*;
use crate::output::tests::TempDir;

const NOW: i64 = 1_795_330_800_000_000_000; // 2026-11-22T07:00:00Z

/// Adds `patch`'s members to `base`, recursively.
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// A connection line, with `extra` merged in.
fn conn(ts: &str, exe: &str, ip: &str, port: u16, transport: &str, extra: &str) -> String {
    let action = if transport == "udp" {
        "send"
    } else {
        "connect"
    };
    let mut v = serde_json::json!({
        "@timestamp": ts,
        "event": {"kind": "event", "category": ["network"], "type": ["connection", "start"],
                  "action": action, "module": "egret", "dataset": "egret.network", "sequence": 1},
        "process": {"pid": 7, "executable": exe, "name": "x"},
        "destination": {"ip": ip, "port": port},
        "network": {"transport": transport, "type": "ipv4"},
        "host": {"name": "vm"},
        "egret": {"cgroup": {"id": 1}, "socket": {"cookie": 1}}
    });
    if !extra.is_empty() {
        merge(
            &mut v,
            serde_json::from_str(&format!("{{{}}}", extra.trim_start_matches(','))).unwrap(),
        );
    }
    v.to_string()
}

/// A connection line of `curl` to port 443.
fn curl(ts: &str, ip: &str, transport: &str, extra: &str) -> String {
    conn(ts, "/usr/bin/curl", ip, 443, transport, extra)
}

/// An alert line about a connection line made by [`conn`] with the same arguments.
fn alert(ts: &str, exe: &str, ip: &str, port: u16, seq: u64, extra: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&conn(ts, exe, ip, port, "tcp", extra)).unwrap();
    merge(
        &mut v,
        serde_json::json!({
            "event": {"kind": "alert", "severity": 73, "dataset": "egret.alert", "sequence": seq},
            "rule": {"name": "unapproved-destination"},
            "message": "x connected to ..., not approved by policy",
            "egret": {"policy": {"verdict": "unapproved", "mode": "audit"},
                      "alert": {"repeats": 0, "window_seconds": 60}}
        }),
    );
    v.to_string()
}

fn args(files: Vec<PathBuf>) -> ReportArgs {
    ReportArgs {
        files,
        since: None,
        until: None,
        top: 10,
        format: Format::Json,
        suggest_policy: false,
        loopback: LoopbackChoice::Auto,
        include_blocked: false,
        policy_format: PolicyFormat::Egret,
        output_dir: None,
        out: None,
        strict: false,
        max_warnings: 100,
    }
}

fn run_ok(a: &ReportArgs) -> (String, String, Outcome) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(a, NOW, &mut out, &mut err).unwrap_or_else(|e| panic!("{e}"));
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        outcome,
    )
}

fn sample(dir: &TempDir) -> PathBuf {
    dir.write_lines(
        "events.jsonl",
        &[
            curl("2026-11-22T06:00:00Z", "10.0.0.1", "tcp", r#","destination":{"ip":"10.0.0.1","port":443,"domain":"api.example.com"},"egret":{"systemd":{"unit":"app.service"},"policy":{"verdict":"unapproved"}}"#),
            alert("2026-11-22T06:00:00.1Z", "/usr/bin/curl", "10.0.0.1", 443, 2,
                r#","destination":{"ip":"10.0.0.1","port":443,"domain":"api.example.com"},"egret":{"systemd":{"unit":"app.service"}}"#),
            curl("2026-11-22T06:10:00Z", "10.0.0.2", "tcp", r#","destination":{"ip":"10.0.0.2","port":443,"domain":"api.example.com"},"egret":{"systemd":{"unit":"app.service"},"policy":{"verdict":"unapproved"}}"#),
            conn("2026-11-22T06:20:00Z", "/usr/bin/dig", "10.0.0.53", 53, "udp",
                r#","egret":{"udp":{"datagrams":12}}"#),
            r#"{"@timestamp":"2026-11-22T06:20:01Z","event":{"kind":"metric","action":"stats"},"host":{"name":"vm"},"egret":{"metrics":{"events_lost_kernel":0}}}"#.to_owned(),
            r#"{"@timestamp":"2026-11-22T06:20:02Z","event":{"kind":"event","type":["connection","end"],"action":"connect"},"destination":{"ip":"10.0.0.1","port":443},"network":{"transport":"tcp"}}"#.to_owned(),
            r#"{"event":{"kind":"event","type":["protocol","info"],"action":"dns-answer"},"dns":{"question":{"name":"api.example.com"}}}"#.to_owned(),
        ],
    )
}

#[test]
fn json_report_counts_connections_alerts_and_groups() {
    let dir = TempDir::new("json");
    let events = sample(&dir);
    let (out, err, outcome) = run_ok(&args(vec![events]));
    assert_eq!(err, "");
    assert_eq!(outcome.bad_lines, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "egret-report/1");
    assert_eq!(v["totals"]["connections"], 3);
    assert_eq!(v["totals"]["alerts"], 1);
    assert_eq!(v["totals"]["unapproved"], 2);
    assert_eq!(v["totals"]["datagrams"], 12);
    assert_eq!(v["totals"]["destinations"], 2);
    assert_eq!(v["input"]["lines"], 7);
    assert_eq!(v["input"]["connection_lines"], 3);
    assert_eq!(v["input"]["alert_lines"], 1);
    assert_eq!(v["input"]["metric_lines"], 1);
    assert_eq!(v["input"]["ignored_lines"], 2);
    let top = &v["destinations"][0];
    assert_eq!(top["destination"], "api.example.com");
    assert_eq!(top["domain"], "api.example.com");
    assert_eq!(
        top["addresses"],
        serde_json::json!(["10.0.0.1", "10.0.0.2"])
    );
    assert_eq!(top["connections"], 2);
    assert_eq!(top["alerts"], 1);
    assert_eq!(top["first_seen"], "2026-11-22T06:00:00Z");
    assert_eq!(top["last_seen"], "2026-11-22T06:10:00Z");
    let dig = &v["destinations"][1];
    assert_eq!(dig["destination"], "10.0.0.53");
    assert!(dig["domain"].is_null());
    assert_eq!(dig["transport"], "udp");
    let units = v["groups"]["systemd_unit"].as_array().unwrap();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0]["name"], "app.service");
    assert_eq!(units[0]["connections"], 2);
    assert_eq!(units[0]["alerts"], 1);
    let procs = v["groups"]["process"].as_array().unwrap();
    assert_eq!(procs[0]["name"], "/usr/bin/curl");
    assert_eq!(procs[1]["name"], "/usr/bin/dig");
    assert_eq!(v["groups"]["container"], serde_json::json!([]));
    assert_eq!(v["range"]["first_seen"], "2026-11-22T06:00:00Z");
    assert_eq!(v["range"]["last_seen"], "2026-11-22T06:20:00Z");
    let t = &v["timeline"];
    let total: u64 = t["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
        })
        .sum();
    assert_eq!(total, 3);
    assert_eq!(
        t["buckets"].as_u64().unwrap() as usize,
        t["other"].as_array().unwrap().len()
    );
}

#[test]
fn time_range_and_top() {
    let dir = TempDir::new("range");
    let events = sample(&dir);
    let mut a = args(vec![events.clone()]);
    a.since = Some("2026-11-22T06:05:00Z".to_owned());
    a.until = Some("30m".to_owned()); // 06:30
    a.top = 1;
    let (out, _, _) = run_ok(&a);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["connections"], 2);
    assert_eq!(v["totals"]["alerts"], 0, "the alert is before --since");
    assert_eq!(v["input"]["out_of_range"], 2);
    assert_eq!(v["range"]["since"], "2026-11-22T06:05:00Z");
    assert_eq!(v["range"]["until"], "2026-11-22T06:30:00Z");
    assert_eq!(v["destinations"].as_array().unwrap().len(), 1);
    assert_eq!(v["top"], 1);

    a.since = Some("1h".to_owned());
    a.until = Some("2h".to_owned());
    let (mut o, mut e) = (Vec::new(), Vec::new());
    assert!(matches!(
        run(&a, NOW, &mut o, &mut e),
        Err(ReportError::EmptyRange { .. })
    ));
    a.until = Some("last tuesday".to_owned());
    let err = run(&a, NOW, &mut o, &mut e).unwrap_err().to_string();
    assert!(err.starts_with("invalid --until `last tuesday`"), "{err}");
}

#[test]
fn bad_lines_are_reported_with_file_and_line_and_the_rest_is_counted() {
    let dir = TempDir::new("bad");
    let good = curl("2026-11-22T06:00:00Z", "10.0.0.1", "tcp", "");
    let events = dir.write_lines(
        "mixed.jsonl",
        &[
            good.clone(),
            "this is not json".to_owned(),
            String::new(),
            r#"{"event":{"kind":"event","type":["connection","start"],"action":"connect"},"destination":{"port":1},"network":{"transport":"tcp"},"@timestamp":"2026-11-22T06:00:00Z"}"#.to_owned(),
            good[..good.len() / 2].to_owned(),
            good.clone(),
        ],
    );
    let (out, err, outcome) = run_ok(&args(vec![events.clone()]));
    let path = events.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with(&format!("{path}:2: not JSON")),
        "{err}"
    );
    assert_eq!(lines[1], format!("{path}:4: missing field destination.ip"));
    assert!(
        lines[2].starts_with(&format!("{path}:5: not JSON")),
        "{err}"
    );
    assert_eq!(lines[3], "egret report: warning: 3 bad line(s) skipped");
    assert_eq!(outcome.bad_lines, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["connections"], 2);
    assert_eq!(v["input"]["bad_lines"], 3);
    assert_eq!(v["input"]["blank_lines"], 1);
    assert_eq!(v["input"]["files"][0]["bad_lines"], 3);
    assert_eq!(v["input"]["files"][0]["lines"], 6);

    // --max-warnings bounds what is printed, not what is counted.
    let mut a = args(vec![events]);
    a.max_warnings = 1;
    let (_, err, outcome) = run_ok(&a);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("(2 not shown"), "{err}");
    assert_eq!(outcome.bad_lines, 3);
}

#[test]
fn a_missing_file_is_an_error_before_any_output() {
    let dir = TempDir::new("missing");
    let events = sample(&dir);
    let missing = dir.0.join("nope.jsonl");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let e = run(
        &args(vec![events, missing.clone()]),
        NOW,
        &mut out,
        &mut err,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(out.is_empty() && err.is_empty());
    let e = run(&args(vec![dir.0.clone()]), NOW, &mut out, &mut err).unwrap_err();
    assert!(e.to_string().ends_with("is a directory"), "{e}");
}

#[test]
fn text_report() {
    let dir = TempDir::new("text");
    let events = sample(&dir);
    let mut a = args(vec![events]);
    a.format = Format::Text;
    let (out, _, _) = run_ok(&a);
    assert!(
        out.starts_with(
            "egret report: 3 connections to 2 destinations, 1 alert (2 unapproved, 0 blocked)\n"
        ),
        "{out}"
    );
    assert!(out.contains("\nTOP DESTINATIONS\n"), "{out}");
    assert!(
        out.contains("\nBY SYSTEMD UNIT\n\napp.service: 2 connections, 1 destination, 1 alert\n"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("api.example.com"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "api.example.com",
            "443",
            "tcp",
            "2",
            "2",
            "0",
            "1",
            "2026-11-22T06:00:00Z",
            "2026-11-22T06:10:00Z"
        ]
    );
    assert!(out.contains("\nBY CONTAINER\n  (none)\n"), "{out}");
}

#[test]
fn hostile_strings_do_not_inject_html_or_terminal_escapes() {
    let dir = TempDir::new("hostile");
    let evil = "/tmp/<script>alert(1)</script>\u{1b}[2J\"'&";
    let events = dir.write_lines(
        "evil.jsonl",
        &[conn(
            "2026-11-22T06:00:00Z",
            evil,
            "10.0.0.1",
            443,
            "tcp",
            r#","destination":{"ip":"10.0.0.1","port":443,"domain":"<img src=x onerror=alert(1)>"},"container":{"name":"</style><script>x()</script>"}"#,
        )],
    );
    let mut a = args(vec![events.clone()]);
    a.format = Format::Html;
    let (page, _, _) = run_ok(&a);
    assert!(!page.contains("<script"), "no script element at all");
    assert!(!page.contains("<img"));
    assert!(!page.contains("</style><"));
    assert!(page.contains("/tmp/&lt;script&gt;alert(1)&lt;/script&gt;\\u{1b}[2J&quot;&#39;&amp;"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("<svg id=\"timeline\""));
    assert!(page.contains("<rect class=\"seg\""));
    assert!(page.contains("Content-Security-Policy"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched"
    );

    a.format = Format::Text;
    let (text, _, _) = run_ok(&a);
    assert!(
        !text.contains('\u{1b}'),
        "no raw escape in the terminal output"
    );
    assert!(text.contains("\\u{1b}[2J"));
}

#[test]
fn suggest_policy_writes_a_valid_policy() {
    let dir = TempDir::new("suggest");
    let events = sample(&dir);
    let mut a = args(vec![events]);
    a.suggest_policy = true;
    a.out = Some(dir.0.join("policy.yaml"));
    let (out, err, outcome) = run_ok(&a);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    assert_eq!(outcome.connections, 3);
    let yaml = std::fs::read_to_string(dir.0.join("policy.yaml")).unwrap();
    let summary = crate::policy::parse::check(&dir.0.join("policy.yaml")).unwrap();
    assert!(summary.contains("ok: mode audit"), "{summary}");
    assert!(yaml.contains("to: [\"api.example.com\"]"), "{yaml}");
    assert!(yaml.contains("systemd_units: [\"app.service\"]"), "{yaml}");
    assert!(yaml.contains("to: [\"10.0.0.53\"]"), "{yaml}");
}

#[test]
fn stdin_and_empty_input() {
    let dir = TempDir::new("empty");
    let empty = dir.write_lines("empty.jsonl", &[]);
    let mut a = args(vec![empty]);
    a.format = Format::Html;
    let (page, _, _) = run_ok(&a);
    // What only an empty page has, exactly: no times, cards without warnings, no chart, no
    // table, no groups.
    for part in [
        "<p class=\"sub\">Connections seen - to - UTC · generated 2026-11-22 07:00:00Z</p>\n</header>\n",
        "<div class=\"card\"><span class=\"num\">0</span><span class=\"label\">blocked</span></div>\n",
        "<span class=\"label\">executables</span></div>\n</section>\n<section id=\"chart\">\n",
        "<div class=\"panel\">\n<p class=\"empty\">No connections in the range.</p>\n</div>\n",
        "<h2>Top destinations</h2>\n<p class=\"empty\">No connections.</p>\n</section>\n",
        "<span class=\"gmeta\">(0)</span></h2>\n<p class=\"empty\">None in this input.</p>\n</section>\n<footer>\n",
    ] {
        assert!(page.contains(part), "{part} not in {page}");
    }
    a.format = Format::Text;
    let (text, _, _) = run_ok(&a);
    assert!(
        text.starts_with("egret report: 0 connections to 0 destinations"),
        "{text}"
    );
}

#[test]
fn no_input_makes_it_panic() {
    // Every prefix of valid lines, and valid lines with extreme values, through every format.
    let dir = TempDir::new("fuzz");
    let good = curl(
        "2026-11-22T06:00:00.123456789Z",
        "2001:db8::1",
        "udp",
        r#","destination":{"ip":"2001:db8::1","port":443,"domain":"a.example"},"egret":{"udp":{"datagrams":18446744073709551615},"systemd":{"unit":"x.service"}},"container":{"id":"c"},"orchestrator":{"namespace":"n"}"#,
    );
    let mut lines: Vec<String> = (0..good.len())
        .filter(|i| good.is_char_boundary(*i))
        .map(|i| good[..i].to_owned())
        .collect();
    for (from, to) in [
        ("2026-11-22T06:00:00.123456789Z", "0001-01-01T00:00:00Z"),
        (
            "2026-11-22T06:00:00.123456789Z",
            "9999-12-31T23:59:59.999999999Z",
        ),
        (
            "2026-11-22T06:00:00.123456789Z",
            "2262-04-11T23:47:16.854775807Z",
        ),
        (
            "2026-11-22T06:00:00.123456789Z",
            "1677-09-21T00:12:43.145224192Z",
        ),
        ("\"port\":443", "\"port\":0"),
        ("\"port\":443", "\"port\":65535"),
        ("\"port\":443", "\"port\":-1"),
        ("\"port\":443", "\"port\":1e3"),
        ("\"sequence\":1", "\"sequence\":18446744073709551615"),
        ("\"udp\",\"type\"", "\"\",\"type\""),
        ("a.example", ""),
        ("a.example", "*.example"),
        ("[\"connection\",\"start\"]", "\"start\""),
        ("[\"connection\",\"start\"]", "null"),
        ("\"kind\":\"event\"", "\"kind\":\"alert\""),
        ("\"kind\":\"event\"", "\"kind\":7"),
    ] {
        lines.push(good.replace(from, to));
    }
    lines.push("[".repeat(10_000));
    lines.push(format!(
        "{{\"event\":{}}}",
        "{\"a\":".repeat(200) + &"}".repeat(200)
    ));
    let file = dir.write_lines("fuzz.jsonl", &lines);
    for format in [Format::Text, Format::Json, Format::Html] {
        let mut a = args(vec![file.clone()]);
        a.format = format;
        a.max_warnings = 0;
        let (_, _, outcome) = run_ok(&a);
        assert!(outcome.bad_lines > 0);
    }
    let mut a = args(vec![file]);
    a.suggest_policy = true;
    a.loopback = LoopbackChoice::Audit;
    let (yaml, _, _) = run_ok(&a);
    assert!(
        crate::policy::parse::parse_policy(&yaml, "s.yaml").is_ok(),
        "{yaml}"
    );
}

/// A UDP flow written over several lines (start, info, end) is one connection with the sum of
/// their datagrams; a connected socket's flow counts at its `connect` line.
#[test]
fn a_flow_over_several_send_lines_counts_once() {
    let send = |types: &str, n: u64| {
        format!(
            r#"{{"@timestamp":"2026-11-22T06:00:0{n}Z","event":{{"kind":"event","type":{types},"action":"send"}},"destination":{{"ip":"10.0.0.1","port":53}},"network":{{"transport":"udp"}},"process":{{"executable":"/bin/dig","name":"dig"}},"egret":{{"udp":{{"datagrams":{n}}}}}}}"#
        )
    };
    let input = [
        send(r#"["connection","start"]"#, 1),
        send(r#"["connection","info"]"#, 2),
        send(r#"["connection","end"]"#, 3),
        send(r#"["connection","start","end"]"#, 4),
    ]
    .join("\n");
    let dir = TempDir::new("flow-lines");
    let file = dir.write_lines("events.jsonl", &[input]);
    let (out, _, _) = run_ok(&args(vec![file]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["totals"]["connections"], 2, "{report}");
    assert_eq!(report["totals"]["datagrams"], 10, "{report}");
}

/// A busy hour: more destinations than the chart has colours, more processes than start
/// unfolded, a domain with more addresses than are listed, blocked and unapproved
/// connections, an alert, losses, a bad line and one outside the range.
fn busy(dir: &TempDir) -> PathBuf {
    let at = |minute: u64| format!("2026-11-22T06:{minute:02}:{:02}Z", minute % 7);
    let mut lines = Vec::new();
    for d in 0..10_u64 {
        for k in 0..=d {
            let ip = format!("10.0.1.{d}");
            lines.push(conn(
                &at(d * 3 + k * 2),
                &format!("/usr/bin/app{}", d % 5),
                &ip,
                443,
                "tcp",
                "",
            ));
        }
    }
    for i in 0..18_u64 {
        let verdict = if i == 0 { "blocked" } else { "approved" };
        lines.push(curl(
            &at(40 + i),
            &format!("10.0.2.{i}"),
            "tcp",
            &format!(
                r#","destination":{{"ip":"10.0.2.{i}","port":443,"domain":"cdn.example.com"}},"container":{{"name":"web"}},"orchestrator":{{"namespace":"shop","resource":{{"name":"web-0","parent":{{"type":"StatefulSet","name":"web"}}}}}},"egret":{{"systemd":{{"unit":"web.service"}},"policy":{{"verdict":"{verdict}"}}}}"#
            ),
        ));
    }
    lines.push(alert(&at(15), "/usr/bin/app0", "10.0.1.5", 443, 90, ""));
    lines.push(conn(
        &at(30),
        "/usr/bin/dig",
        "10.0.0.53",
        53,
        "udp",
        r#","egret":{"udp":{"datagrams":3}}"#,
    ));
    lines.push(curl("2026-11-22T05:00:00Z", "10.0.9.9", "tcp", ""));
    lines.push(r#"{"@timestamp":"2026-11-22T06:59:00Z","event":{"kind":"metric","action":"stats"},"host":{"name":"vm"},"egret":{"metrics":{"events_lost_kernel":2,"events_dropped_userspace":1}}}"#.to_owned());
    lines.push("not json".to_owned());
    dir.write_lines("busy.jsonl", &lines)
}

/// `page` with the contents of its `<style>` element (a constant of `html.rs`) left out.
fn without_style(page: &str) -> String {
    let (head, rest) = page.split_once("<style>").unwrap();
    let (_, tail) = rest.split_once("</style>").unwrap();
    format!("{head}<style>STYLE</style>{tail}")
}

/// The whole HTML page of [`busy`], pinned against `busy.html.golden` (expected output, not
/// source): every element, number and label (the input directory shown as `DIR`, the style
/// sheet as `STYLE`).
#[test]
fn a_busy_html_page_is_pinned() {
    let dir = TempDir::new("pinned");
    let mut a = args(vec![busy(&dir)]);
    a.format = Format::Html;
    a.since = Some("2026-11-22T05:30:00Z".to_owned());
    a.until = Some("2026-11-22T07:00:00Z".to_owned());
    a.top = 3;
    a.max_warnings = 0;
    let (page, _, _) = run_ok(&a);
    let page = without_style(&page).replace(&dir.0.display().to_string(), "DIR");
    if page != include_str!("busy.html.golden") {
        let actual = std::env::temp_dir().join("egret-busy.html");
        std::fs::write(&actual, &page).unwrap();
        panic!(
            "the HTML page changed: compare {} with agent/src/report/busy.html.golden",
            actual.display()
        );
    }
}

/// A TCP start line with connection id `id`, `extra` merged in.
fn start(ts: &str, ip: &str, port: u16, id: &str, extra: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&conn(ts, "/usr/bin/curl", ip, port, "tcp", extra)).unwrap();
    merge(
        &mut v,
        serde_json::json!({"egret": {"connection": {"id": id}, "systemd": {"unit": "app.service"}}}),
    );
    v.to_string()
}

/// The end line of the connection [`start`] made with the same arguments, `extra` merged in.
fn end(ts: &str, ip: &str, port: u16, id: &str, extra: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&start(ts, ip, port, id, extra)).unwrap();
    merge(
        &mut v,
        serde_json::json!({"event": {"type": ["connection", "end"], "action": "connection-end",
                                     "outcome": "success"},
                           "egret": {"connection": {"start_seen": true}}}),
    );
    v.to_string()
}

/// Connections named by their first bytes: an SNI-only one (with its alert), two HTTP ones to
/// one Host, a DNS-named one without an end line and one whose end made it unapproved, an end
/// line twice, an end line without its start, and a UDP flow.
fn first_bytes(dir: &TempDir) -> PathBuf {
    let unapproved = r#","egret":{"policy":{"verdict":"unapproved","mode":"audit"}}"#;
    let approved = r#","egret":{"policy":{"verdict":"approved","mode":"audit"}}"#;
    let sni = r#","destination":{"ip":"203.0.113.5","port":443,"domain":"api.example.com"},"tls":{"client":{"server_name":"api.example.com"}},"egret":{"destination":{"name_source":"tls"},"tls":{"ja4":"t13d1516h2_8daaf6152771_02713d6af862"},"policy":{"verdict":"unapproved","mode":"audit"}}"#;
    let http = |path: &str, status: u16| {
        format!(
            r#","destination":{{"ip":"203.0.113.9","port":80,"domain":"www.example.com"}},"http":{{"request":{{"method":"GET"}},"response":{{"status_code":{status}}},"version":"1.1"}},"url":{{"domain":"www.example.com","path":"{path}","query":"token=s3cr3t"}},"user_agent":{{"original":"curl/8.5.0"}},"egret":{{"destination":{{"name_source":"http"}},"policy":{{"verdict":"approved","mode":"audit"}}}}"#
        )
    };
    let dns = r#","destination":{"ip":"198.51.100.1","port":443,"domain":"dns.example.com"},"egret":{"destination":{"name_source":"dns"},"policy":{"verdict":"approved","mode":"audit"}}"#;
    let dns_then_mismatch = r#","destination":{"ip":"198.51.100.1","port":443,"domain":"dns.example.com"},"tls":{"client":{"server_name":"evil.example.net"}},"egret":{"destination":{"name_source":"dns","name_mismatch":true},"policy":{"verdict":"unapproved","mode":"audit"}}"#;
    dir.write_lines(
        "first-bytes.jsonl",
        &[
            start("2026-11-22T06:00:00Z", "203.0.113.5", 443, "c1", unapproved),
            alert(
                "2026-11-22T06:00:00.1Z",
                "/usr/bin/curl",
                "203.0.113.5",
                443,
                9,
                r#","egret":{"systemd":{"unit":"app.service"}}"#,
            ),
            start("2026-11-22T06:00:01Z", "203.0.113.9", 80, "c2", approved),
            end(
                "2026-11-22T06:00:02Z",
                "203.0.113.9",
                80,
                "c2",
                &http("/index.html", 200),
            ),
            end("2026-11-22T06:00:03Z", "203.0.113.5", 443, "c1", sni),
            end("2026-11-22T06:00:03Z", "203.0.113.5", 443, "c1", sni),
            start("2026-11-22T06:00:04Z", "203.0.113.9", 80, "c3", approved),
            end(
                "2026-11-22T06:00:05Z",
                "203.0.113.9",
                80,
                "c3",
                &http("/index.html", 404),
            ),
            end("2026-11-22T06:00:06Z", "192.0.2.99", 443, "c9", sni),
            start("2026-11-22T06:00:07Z", "198.51.100.1", 443, "c4", dns),
            start("2026-11-22T06:00:08Z", "198.51.100.1", 443, "c5", dns),
            end(
                "2026-11-22T06:00:09Z",
                "198.51.100.1",
                443,
                "c5",
                dns_then_mismatch,
            ),
            conn(
                "2026-11-22T06:00:10Z",
                "/usr/bin/dig",
                "10.0.0.53",
                53,
                "udp",
                r#","egret":{"udp":{"datagrams":2},"connection":{"id":"u1"}}"#,
            ),
        ],
    )
}

/// `v`'s destination labelled `name` (and `port`).
fn dest<'v>(v: &'v serde_json::Value, name: &str, port: u16) -> &'v serde_json::Value {
    v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == name && d["port"] == port)
        .unwrap_or_else(|| panic!("no {name}:{port} in {v}"))
}

#[test]
fn end_lines_name_connections_and_each_is_counted_once() {
    let dir = TempDir::new("first-bytes");
    let (out, err, outcome) = run_ok(&args(vec![first_bytes(&dir)]));
    assert_eq!((err.as_str(), outcome.bad_lines), ("", 0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // c1..c5 and the UDP flow: the repeated end line and the one without a start add nothing.
    assert_eq!(v["totals"]["connections"], 6, "{v}");
    assert_eq!(
        v["totals"]["unapproved"], 2,
        "c1, and c5 after its end line"
    );
    assert_eq!(v["input"]["connection_lines"], 6);
    assert_eq!(v["input"]["end_lines"], 4);
    assert_eq!(v["input"]["ignored_lines"], 2);
    let sni = dest(&v, "api.example.com", 443);
    assert_eq!(sni["connections"], 1);
    assert_eq!(sni["addresses"], serde_json::json!(["203.0.113.5"]));
    assert_eq!(
        sni["first_seen"], "2026-11-22T06:00:00Z",
        "the start line's time"
    );
    assert!(sni.get("http").is_none(), "{sni}");
    // The alert was written before any byte: it stays with the address.
    let by_address = dest(&v, "203.0.113.5", 443);
    assert_eq!(
        (
            by_address["connections"].as_u64(),
            by_address["alerts"].as_u64()
        ),
        (Some(0), Some(1))
    );
    let web = dest(&v, "www.example.com", 80);
    assert_eq!(web["connections"], 2);
    assert_eq!(
        web["http"],
        serde_json::json!({
            "requests": 2,
            "paths": [{"method": "GET", "path": "/index.html", "connections": 2}],
            "other_paths": 0,
            "responses": 2,
            "status_codes": [{"status_code": 200, "connections": 1},
                             {"status_code": 404, "connections": 1}],
            "other_status_codes": 0
        })
    );
    let named = dest(&v, "dns.example.com", 443);
    assert_eq!(
        (named["connections"].as_u64(), named["unapproved"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        !out.contains("s3cr3t") && !out.contains("token"),
        "no query string"
    );
    let unit = &v["groups"]["systemd_unit"][0];
    assert_eq!(
        (unit["name"].as_str(), unit["connections"].as_u64()),
        (Some("app.service"), Some(5))
    );
    assert!(
        unit["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d.get("http").is_none()),
        "HTTP is listed with the top destinations only"
    );

    // A start line outside the range: its end line joins nothing.
    let mut a = args(vec![first_bytes(&dir)]);
    a.since = Some("2026-11-22T06:00:01Z".to_owned());
    let (out, _, _) = run_ok(&a);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["connections"], 5, "{v}");
    assert_eq!(v["input"]["end_lines"], 3);
    assert!(out.find("api.example.com").is_none(), "{out}");
}

#[test]
fn http_requests_in_text_and_html() {
    let dir = TempDir::new("first-bytes-text");
    let mut a = args(vec![first_bytes(&dir)]);
    a.format = Format::Text;
    let (text, _, _) = run_ok(&a);
    assert!(
        text.contains(
            "\nHTTP REQUESTS (first request of each connection; query strings left out: they may carry secrets)\n\
             \x20 www.example.com:80/tcp: 2 requests, 2 responses\n\
             \x20   2  GET /index.html\n\
             \x20   status codes: 200 (1), 404 (1)\n"
        ),
        "{text}"
    );
    assert!(text.contains("(6 connection, 4 end, 1 alert,"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    a.format = Format::Html;
    let (page, _, _) = run_ok(&a);
    assert!(page.contains("<section id=\"http\">"), "{page}");
    assert!(
        page.contains("<span class=\"gname\">www.example.com:80/tcp</span><span class=\"gmeta\">2 requests, 2 responses · status codes 200 (1), 404 (1)</span>"),
        "{page}"
    );
    assert!(
        page.contains("<tr><td class=\"n\">2</td><td class=\"d\">GET /index.html</td></tr>"),
        "{page}"
    );
    assert!(
        page.contains("6 connection lines (4 joined by their end lines)"),
        "{page}"
    );
    assert!(!page.contains("s3cr3t"));
    // Without HTTP there is no section at all.
    let plain = sample(&dir);
    let (page, _, _) = run_ok(&{
        let mut a = args(vec![plain.clone()]);
        a.format = Format::Html;
        a
    });
    assert!(!page.contains("id=\"http\""));
    let (text, _, _) = run_ok(&{
        let mut a = args(vec![plain]);
        a.format = Format::Text;
        a
    });
    assert!(!text.contains("HTTP REQUESTS"));
}

#[test]
fn suggest_policy_names_connections_by_their_first_bytes() {
    let dir = TempDir::new("first-bytes-suggest");
    let mut a = args(vec![first_bytes(&dir)]);
    a.suggest_policy = true;
    let (yaml, _, outcome) = run_ok(&a);
    assert_eq!(outcome.connections, 6);
    crate::policy::parse::parse_policy(&yaml, "s.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(
        yaml.contains("to: [\"api.example.com\", \"dns.example.com\"]"),
        "{yaml}"
    );
    assert!(yaml.contains("to: [\"www.example.com\"]"), "{yaml}");
    assert!(
        !yaml.contains("203.0.113."),
        "no address where a name was seen\n{yaml}"
    );
    assert!(
        yaml.contains("  # named by their first bytes, not by DNS: \"api.example.com\" (TLS)\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  # named by their first bytes, not by DNS: \"www.example.com\" (HTTP)\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("#   name_gate: {ports: [80, 443]}\n"),
        "{yaml}"
    );
}

/// Lines written without redaction (an egret older than it, `--redact-args off`) carry
/// secrets in `process.args` and `process.command_line`, the parent's too: no report format
/// and no suggested policy shows them, nor does a warning about a bad line.
#[test]
fn secrets_in_arguments_never_reach_a_report() {
    let dir = TempDir::new("secrets");
    let process = r#""process":{"pid":7,"executable":"/usr/bin/mysql","name":"mysql","args":["mysql","-pHunter1","--password=Hunter2","https://bob:Hunter3@db.example/"],"args_count":4,"command_line":"mysql -pHunter1 --password=Hunter2 https://bob:Hunter3@db.example/","parent":{"pid":1,"args":["sh","-c","TOKEN=Hunter4 mysql"],"command_line":"sh -c TOKEN=Hunter4 mysql"}}"#;
    let unapproved =
        r#""egret":{"systemd":{"unit":"app.service"},"policy":{"verdict":"unapproved"}}"#;
    let events = dir.write_lines(
        "events.jsonl",
        &[
            conn(
                "2026-11-22T06:00:00Z",
                "/usr/bin/mysql",
                "10.0.0.9",
                3306,
                "tcp",
                &format!(",{process},{unapproved}"),
            ),
            alert(
                "2026-11-22T06:00:01Z",
                "/usr/bin/mysql",
                "10.0.0.9",
                3306,
                2,
                &format!(",{process}"),
            ),
            // Arguments where an array belongs: a bad line, whose warning must not quote them.
            conn(
                "2026-11-22T06:00:02Z",
                "/usr/bin/mysql",
                "10.0.0.9",
                3306,
                "tcp",
                r#","process":{"pid":8,"args":"mysql -pHunter5"}"#,
            ),
            conn(
                "2026-11-22T06:00:03Z",
                "/usr/bin/mysql",
                "10.0.0.9",
                3306,
                "tcp",
                r#","process":{"pid":"mysql -pHunter6"}"#,
            ),
        ],
    );
    let mut runs = Vec::new();
    for format in [Format::Text, Format::Json, Format::Html] {
        let mut a = args(vec![events.clone()]);
        a.format = format;
        runs.push(a);
    }
    let mut a = args(vec![events]);
    a.suggest_policy = true;
    runs.push(a);
    for a in runs {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(&a, NOW, &mut out, &mut err).unwrap_or_else(|e| panic!("{e}"));
        let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        let shown = if a.suggest_policy {
            "app.service"
        } else {
            "/usr/bin/mysql"
        };
        assert!(out.contains(shown), "{:?}: {out}", a.format);
        assert!(
            err.contains(r#"events.jsonl:3: unexpected field value: invalid type: string "…", expected a sequence"#),
            "the bad line is still located: {err}"
        );
        for secret in ["Hunter", "TOKEN=", "bob:"] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{:?} (suggest: {}) shows {secret:?}:\n{out}\n{err}",
                a.format,
                a.suggest_policy
            );
        }
    }
}

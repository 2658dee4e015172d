use super::*;

/// A line as egret writes it, with what the model reads.
#[expect(
    clippy::too_many_arguments,
    reason = "a line's fields, named at each call"
)]
fn line(
    ts: &str,
    kind: &str,
    action: &str,
    types: &str,
    exe: &str,
    unit: Option<&str>,
    dest: (&str, Option<&str>, u16, &str),
    extra: &str,
) -> Vec<u8> {
    let (ip, domain, port, transport) = dest;
    let domain = domain.map_or(String::new(), |d| format!(r#","domain":"{d}""#));
    let unit = unit.map_or(String::new(), |u| format!(r#""systemd":{{"unit":"{u}"}},"#));
    format!(
        r#"{{"@timestamp":"2026-11-22T{ts}Z","event":{{"kind":"{kind}","action":"{action}","type":[{types}]}},"process":{{"pid":7,"name":"x","executable":"{exe}","args":[]}},"destination":{{"ip":"{ip}","port":{port}{domain}}},"network":{{"transport":"{transport}"}},{extra}"egret":{{{unit}"policy":{{"verdict":"approved","mode":"audit"}}}}}}"#
    )
    .into_bytes()
}

const CURL: &str = "/usr/bin/curl";
const START: &str = r#""connection","start""#;
const END: &str = r#""connection","end""#;

fn connect(
    ts: &str,
    exe: &str,
    unit: Option<&str>,
    dest: (&str, Option<&str>, u16, &str),
) -> Vec<u8> {
    line(ts, "event", "connect", START, exe, unit, dest, "")
}

#[test]
fn counts_connections_per_group_and_destination() {
    let mut m = Model::default();
    let api = ("192.0.2.1", Some("API.example.com"), 443, "tcp");
    m.ingest(&connect("06:00:01.000", CURL, Some("a.service"), api));
    m.ingest(&connect("06:00:03.000", CURL, Some("a.service"), api));
    m.ingest(&connect(
        "06:00:02.000",
        "/usr/bin/wget",
        Some("a.service"),
        api,
    ));
    m.ingest(&connect(
        "06:00:04.000",
        CURL,
        None,
        ("2001:db8::1", None, 53, "tcp"),
    ));

    let rows = m.rows(Grouping::Process, SortBy::Connections, false, "");
    let got: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| (r.group.as_str(), r.destination.as_str(), r.connections))
        .collect();
    assert_eq!(
        got,
        [
            (CURL, "api.example.com:443/tcp", 2),
            (CURL, "[2001:db8::1]:53/tcp", 1),
            ("/usr/bin/wget", "api.example.com:443/tcp", 1),
        ]
    );
    assert_eq!(rows[0].last_seen, "2026-11-22T06:00:03.000Z");
    assert_eq!(rows[0].verdict_name(), "approved");

    let units = m.rows(Grouping::Unit, SortBy::Connections, false, "");
    let got: Vec<(&str, &str, u64)> = units
        .iter()
        .map(|r| (r.group.as_str(), r.destination.as_str(), r.connections))
        .collect();
    assert_eq!(
        got,
        [
            ("a.service", "api.example.com:443/tcp", 3),
            ("-", "[2001:db8::1]:53/tcp", 1)
        ]
    );
    assert_eq!(m.groups(Grouping::Unit), 2);
    assert_eq!(m.counts.read, 4);
    assert_eq!(m.counts.unparsed, 0);
}

#[test]
fn tcp_bytes_grow_by_what_each_line_adds_and_join_the_start_line() {
    let mut m = Model::default();
    let ip = "192.0.2.9";
    let with_id = |action: &str, types: &str, domain: Option<&str>, sent: u64, recv: u64| {
        let domain = domain.map_or(String::new(), |d| format!(r#","domain":"{d}""#));
        format!(
            r#"{{"@timestamp":"2026-11-22T06:00:0{sent}.000Z","event":{{"kind":"event","action":"{action}","type":[{types}]}},"process":{{"pid":7,"name":"curl","args":[]}},"source":{{"bytes":{sent}}},"destination":{{"ip":"{}","port":443,"bytes":{recv}{domain}}},"network":{{"transport":"tcp"}},"egret":{{"connection":{{"id":"c1"}},"policy":{{"verdict":"unapproved","mode":"audit"}}}}}}"#,
            ip
        )
        .into_bytes()
    };
    m.ingest(&with_id("connect", START, None, 0, 0));
    m.ingest(&with_id(
        "connection-progress",
        r#""connection","info""#,
        None,
        3,
        5,
    ));
    // The end line names the destination from its first bytes: the bytes still go to the
    // row of the start line.
    m.ingest(&with_id("connection-end", END, Some("sni.example"), 4, 9));
    let rows = m.rows(Grouping::Process, SortBy::Bytes, false, "");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = rows[0];
    assert_eq!(r.group, "curl");
    assert_eq!(r.destination, "192.0.2.9:443/tcp");
    assert_eq!((r.connections, r.bytes_sent, r.bytes_received), (1, 4, 9));
    assert_eq!(r.verdict_name(), "unapproved");
    assert!(m.open.is_empty());
}

#[test]
fn udp_send_lines_count_the_flow_once_and_add_every_line_bytes() {
    let mut m = Model::default();
    let dns = ("192.0.2.53", None, 53, "udp");
    let send = |types: &str, out: u64| {
        line(
            "06:00:01.000",
            "event",
            "send",
            types,
            CURL,
            None,
            dns,
            &format!(r#""source":{{"bytes":{out}}},"#),
        )
        .into_iter()
        .collect::<Vec<u8>>()
    };
    m.ingest(&send(START, 100));
    m.ingest(&send(r#""connection","info""#, 50));
    m.ingest(&send(END, 25));
    let rows = m.rows(Grouping::Process, SortBy::Connections, false, "");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].connections, rows[0].bytes_sent), (1, 175));
}

#[test]
fn alerts_raise_the_verdict_and_count_without_a_connection() {
    let mut m = Model::default();
    let dest = ("203.0.113.7", None, 4444, "tcp");
    m.ingest(&connect("06:00:01.000", CURL, None, dest));
    let alert = String::from_utf8(line(
        "06:00:01.001",
        "alert",
        "connect",
        START,
        CURL,
        None,
        dest,
        "",
    ))
    .unwrap()
    .replace("approved", "blocked");
    m.ingest(alert.as_bytes());
    let rows = m.rows(Grouping::Process, SortBy::Verdict, false, "");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].connections, rows[0].alerts), (1, 1));
    assert_eq!(rows[0].verdict_name(), "blocked");
    assert_eq!(rows[0].last_seen, "2026-11-22T06:00:01.001Z");
}

#[test]
fn sorting_and_filtering() {
    let mut m = Model::default();
    for (i, name) in ["b.example", "a.example", "c.example"].iter().enumerate() {
        for _ in 0..=i {
            m.ingest(&connect(
                &format!("06:00:0{i}.000"),
                CURL,
                None,
                ("192.0.2.1", Some(name), 443, "tcp"),
            ));
        }
    }
    let dests = |sort, ascending, filter: &str| -> Vec<String> {
        m.rows(Grouping::Process, sort, ascending, filter)
            .iter()
            .map(|r| r.destination.clone())
            .collect()
    };
    let (a, b, c) = (
        "a.example:443/tcp",
        "b.example:443/tcp",
        "c.example:443/tcp",
    );
    assert_eq!(dests(SortBy::Connections, false, ""), [c, a, b]);
    assert_eq!(dests(SortBy::Connections, true, ""), [b, a, c]);
    assert_eq!(dests(SortBy::Destination, false, ""), [a, b, c]);
    assert_eq!(dests(SortBy::Destination, true, ""), [c, b, a]);
    assert_eq!(dests(SortBy::LastSeen, false, ""), [c, a, b]);
    assert_eq!(dests(SortBy::Connections, false, "A.EX"), [a]);
    assert_eq!(dests(SortBy::Connections, false, "curl").len(), 3);
    assert_eq!(dests(SortBy::Connections, false, "approved").len(), 3);
    assert!(dests(SortBy::Connections, false, "nothing").is_empty());
}

#[test]
fn lines_it_cannot_read_are_counted_never_fatal() {
    let mut m = Model::default();
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        b"{\"event\":{\"kind\":7}}",
        b"{\"@timestamp\":\"x\",\"event\":{\"kind\":\"event\",\"action\":\"connect\"},\"destination\":{\"port\":\"secret\"}}",
        b"\xff\xfe{",
        b"{\"event\":",
    ] {
        m.ingest(bad);
    }
    m.ingest(b"");
    m.ingest(b"   ");
    assert_eq!(m.counts.read, 6);
    assert_eq!(m.counts.unparsed, 6);
    let error = m.last_error.clone().unwrap();
    assert!(error.starts_with("line 6: not JSON"), "{error}");
    // A dns line, a kind this version does not know, a connect line without a destination.
    m.ingest(br#"{"event":{"kind":"event","action":"dns-answer"}}"#);
    m.ingest(br#"{"event":{"kind":"event","action":"baseline-new"}}"#);
    m.ingest(br#"{"event":{"kind":"event","action":"connect","type":["connection","start"]}}"#);
    assert_eq!(m.counts.other, 3);
    m.ingest(br#"{"event":{"kind":"metric","action":"stats"},"egret":{"metrics":{"events_lost_kernel":3,"events_dropped_userspace":4}}}"#);
    assert_eq!((m.counts.lost, m.counts.dropped), (3, 4));
    assert!(m
        .rows(Grouping::Process, SortBy::Connections, false, "")
        .is_empty());
}

#[test]
fn groups_of_containers_and_pods() {
    let mut m = Model::default();
    let extra = r#""container":{"id":"0123456789abcdef","name":"web"},"orchestrator":{"type":"kubernetes","namespace":"shop","resource":{"type":"pod","name":"web-7d4b"}},"#;
    m.ingest(&line(
        "06:00:01.000",
        "event",
        "connect",
        START,
        CURL,
        None,
        ("192.0.2.1", None, 443, "tcp"),
        extra,
    ));
    let group = |g| m.rows(g, SortBy::Connections, false, "")[0].group.clone();
    assert_eq!(group(Grouping::Container), "web");
    assert_eq!(group(Grouping::Pod), "shop/web-7d4b");
    assert_eq!(group(Grouping::Unit), "-");
    assert_eq!(Grouping::Pod.next(), Grouping::Process);
}

use std::sync::Arc;

use super::*;
use crate::{
    clock::WallClock,
    conn::{ConnEnd, Outcome},
    ecs::{
        self,
        tests::{record, stamp},
        EndLine,
    },
    metrics::Metrics,
    policy::Mode,
    process::ProcessInfo,
    record::{Action, DnsNames, PolicyOutcome, PolicyVerdict},
    schema,
    udp::{Traffic, UdpSummary},
};

const PLAIN: Style = Style { colour: false };
const COLOUR: Style = Style { colour: true };

fn line(doc: &Document<'_>, style: Style) -> String {
    let mut out = Vec::new();
    render(doc, style, &mut out);
    String::from_utf8(out).unwrap()
}

fn clock() -> WallClock {
    // 2026-11-22T00:00:00Z at boot.
    WallClock::with_offset(1_795_305_600_000_000_000)
}

fn approved(mut rec: crate::record::ConnectionRecord) -> crate::record::ConnectionRecord {
    rec.policy = Some(PolicyOutcome {
        verdict: PolicyVerdict::Approved,
        rule: Some("web".into()),
        mode: Mode::Audit,
    });
    rec.dns = Some(DnsNames {
        domain: Some("api.example.com".into()),
        ..DnsNames::default()
    });
    rec
}

fn end_facts(outcome: Outcome) -> ConnEnd {
    ConnEnd {
        outcome,
        error: (outcome == Outcome::Failure).then_some(111),
        duration_ns: Some(391_000_000),
        connect_latency_us: Some(800),
        bytes_sent: Some(517),
        bytes_received: Some(4300),
        retransmits: Some(0),
        srtt_us: None,
        source: Some(("10.0.0.2".parse().unwrap(), 40_000)),
        reset: false,
        state_lost: false,
        end_ns: 1_391_000_000,
    }
}

/// Where each column starts in the header: every line's cells start there too (when the
/// cells before are no wider than their column).
fn column_starts(header: &str) -> Vec<usize> {
    COLUMNS
        .iter()
        .map(|(title, _)| header.find(title).unwrap())
        .collect()
}

fn assert_aligned(line: &str) {
    let header = header(PLAIN);
    let starts = column_starts(&header);
    let chars: Vec<char> = line.chars().collect();
    for (i, start) in starts.iter().enumerate().skip(1).take(6) {
        // A cell starts after a space at the header's column.
        assert_eq!(chars[start - 1], ' ', "column {i} of {line:?}");
        assert_ne!(chars[*start], ' ', "column {i} of {line:?}");
    }
}

#[test]
fn a_connect_line_has_every_column_aligned_under_the_header() {
    let clock = clock();
    let rec = approved(record(Action::Connect));
    let doc = ecs::connection(&rec, None, stamp(1, &clock, "h"), None);
    let text = line(&doc, PLAIN);
    assert_eq!(
        text,
        "00:00:01.000 connect  approved   curl[4242]               alice    app.service              \
         api.example.com:443/tcp             rule=web"
    );
    assert_aligned(&text);
    assert!(header(PLAIN).starts_with("TIME(UTC)    EVENT    VERDICT    PROCESS[PID]"));
}

#[test]
fn an_end_line_says_outcome_duration_and_bytes() {
    let clock = clock();
    let rec = approved(record(Action::Connect));
    let facts = end_facts(Outcome::Success);
    let doc = ecs::end(
        &rec,
        &facts,
        true,
        EndLine::End,
        stamp(2, &clock, "h"),
        None,
    );
    let text = line(&doc, PLAIN);
    assert!(
        text.starts_with("00:00:01.391 end      approved "),
        "{text}"
    );
    assert!(
        text.ends_with("api.example.com:443/tcp             success 391ms sent 517 B recv 4.2 KiB"),
        "{text}"
    );
    assert_aligned(&text);

    let failed = end_facts(Outcome::Failure);
    let doc = ecs::end(
        &rec,
        &failed,
        true,
        EndLine::End,
        stamp(3, &clock, "h"),
        None,
    );
    let text = line(&doc, PLAIN);
    assert!(text.contains(" failure ECONNREFUSED 391ms "), "{text}");
    // Red on a terminal only.
    assert!(line(&doc, COLOUR).contains("\x1b[31mfailure ECONNREFUSED"));
    assert!(!text.contains('\x1b'));

    let doc = ecs::end(
        &rec,
        &facts,
        true,
        EndLine::Progress,
        stamp(4, &clock, "h"),
        None,
    );
    let text = line(&doc, PLAIN);
    assert!(text.contains(" progress "), "{text}");
    assert!(text.ends_with("391ms sent 517 B recv 4.2 KiB"), "{text}");
    assert_aligned(&text);
}

#[test]
fn a_send_line_shows_the_flow() {
    let clock = clock();
    let mut rec = record(Action::Send);
    rec.transport = crate::record::Transport::Udp;
    rec.ip = "2001:db8::53".parse().unwrap();
    rec.port = 53;
    let udp = UdpSummary {
        datagrams: 3,
        first_ns: 1,
        last_ns: 2,
        traffic: Traffic {
            bytes_out: 120,
            bytes_in: 2048,
            packets_in: 3,
        },
        last: true,
        first: true,
    };
    let doc = ecs::connection(&rec, Some(udp), stamp(1, &clock, "h"), None);
    let text = line(&doc, PLAIN);
    assert!(
        text.contains(" send     -          curl[4242]     "),
        "{text}"
    );
    assert!(
        text.ends_with("[2001:db8::53]:53/udp               3 datagram(s) sent 120 B recv 2.0 KiB"),
        "{text}"
    );
    assert_aligned(&text);
}

#[test]
fn alerts_stand_out_with_a_marker_and_colour_only_on_a_terminal() {
    let clock = clock();
    let mut rec = record(Action::Connect);
    rec.policy = Some(PolicyOutcome {
        verdict: PolicyVerdict::Unapproved,
        rule: None,
        mode: Mode::Audit,
    });
    let doc = ecs::alert(&rec, 2, 60, stamp(5, &clock, "h"));
    let plain = line(&doc, PLAIN);
    assert!(
        plain.starts_with("00:00:01.000 !ALERT   unapproved curl[4242]"),
        "{plain}"
    );
    assert!(
        plain.contains("93.184.216.34:443/tcp               curl (pid 4242, /usr/bin/curl) connected to 93.184.216.34:443/tcp, not approved by policy"),
        "{plain}"
    );
    assert!(!plain.contains('\x1b'), "{plain}");
    assert_aligned(&plain);
    let coloured = line(&doc, COLOUR);
    assert!(
        coloured.contains("\x1b[1;31m!ALERT\x1b[0m   "),
        "{coloured:?}"
    );
    assert!(
        coloured.contains("\x1b[33munapproved\x1b[0m "),
        "{coloured:?}"
    );
    assert!(coloured.ends_with("\x1b[0m"), "{coloured:?}");
    // The colour codes do not move the columns: without them the line is the plain one.
    let stripped = coloured
        .replace("\x1b[1;31m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);

    let doc = ecs::failure_alert(&rec, 5, 60, Some(111), stamp(6, &clock, "h"));
    let text = line(&doc, PLAIN);
    assert!(text.contains(" !FAILING "), "{text}");
    assert!(
        text.contains("5 connects to 93.184.216.34:443/tcp failed"),
        "{text}"
    );
}

#[test]
fn a_metric_line_shows_the_counters_a_person_watches() {
    let clock = clock();
    let metrics = Metrics {
        events_received: 417,
        events_lost_kernel: 2,
        lines_written: 6,
        alerts: 1,
        policy_reloads: 3,
        ..Metrics::default()
    };
    let doc = ecs::metric(&metrics, stamp(6, &clock, "h"));
    let text = line(&doc, PLAIN);
    assert!(
        text.contains(" stats    -          -                        -"),
        "{text}"
    );
    assert!(
        text.ends_with("events 417 lost 2 dropped 0 lines 6 alerts 1 policy reloads 3 (failed 0)"),
        "{text}"
    );
}

#[test]
fn a_dns_line_shows_the_resolver_question_and_answers() {
    let json = br#"{"@timestamp":"2026-11-22T06:46:51.512079187Z",
 "event":{"kind":"event","category":["network"],"type":["protocol","info"],
          "action":"dns-answer","module":"egret","dataset":"egret.dns","sequence":1},
 "dns":{"id":4660,"type":"answer","response_code":"NOERROR",
        "question":{"name":"api.example.com","type":"A","class":"IN"},
        "answers":[{"name":"api.example.com","type":"A","ttl":30,"data":"127.0.0.2"},
                   {"name":"api.example.com","type":"A","ttl":30,"data":"127.0.0.3"}],
        "resolved_ip":["127.0.0.2"],"header_flags":[]},
 "source":{"ip":"127.0.0.1","port":5354},
 "process":{"pid":30316,"name":"python3","args":[]},
 "network":{"transport":"udp","type":"ipv4","protocol":"dns","direction":"ingress"},
 "host":{"name":"vm"},
 "egret":{"socket":{"cookie":12},"dns":{"netns":3,"untrusted":["unsolicited"]}}}"#;
    let json: Vec<u8> = json.iter().copied().filter(|b| *b != b'\n').collect();
    let doc = schema::read(&json).unwrap();
    let text = line(&doc, PLAIN);
    assert!(
        text.starts_with("06:46:51.512 dns      -          python3[30316]           -        -")
    );
    assert!(
        text.ends_with("127.0.0.1:5354/udp                  api.example.com A NOERROR -> 127.0.0.2, 127.0.0.3 UNTRUSTED (unsolicited)"),
        "{text}"
    );
    assert_aligned(&text);
}

#[test]
fn a_kind_this_version_does_not_know_shows_its_action_and_message() {
    let json = br#"{"@timestamp":"2026-11-22T06:46:51.512079187Z","event":{"kind":"event","action":"baseline-new\u001b[2J","module":"egret"},"message":"first seen \u001b]0;x\u0007"}"#;
    let doc = schema::read(json).unwrap();
    let text = line(&doc, PLAIN);
    assert!(text.starts_with("06:46:51.512 baselin… -"), "{text}");
    assert!(text.ends_with("first seen \\u{1b}]0;x\\u{7}"), "{text}");
    assert!(!text.contains('\x1b'));
}

#[test]
fn control_characters_from_a_watched_process_never_reach_the_terminal_raw() {
    let clock = clock();
    let mut rec = approved(record(Action::Connect));
    // A process naming itself with a terminal title escape, and a domain with a screen clear
    // and a right-to-left override.
    rec.process = Arc::new(ProcessInfo {
        name: "\x1b]0;owned\x07".into(),
        executable: Some("/tmp/\x1b[31mx".into()),
        ..ProcessInfo::from_comm(7, "x")
    });
    rec.dns = Some(DnsNames {
        domain: Some("evil\x1b[2J\u{202e}moc.example\u{9b}".into()),
        ..DnsNames::default()
    });
    let doc = ecs::connection(&rec, None, stamp(1, &clock, "h"), None);
    for style in [PLAIN, COLOUR] {
        let text = line(&doc, style);
        let raw: Vec<char> = text
            .chars()
            .filter(|c| unsafe_char(*c) && *c != '\x1b')
            .collect();
        assert!(raw.is_empty(), "{text:?}");
        // The only escapes are egret's own colour codes.
        let without_colour = text.replace("\x1b[32m", "").replace("\x1b[0m", "");
        assert!(!without_colour.contains('\x1b'), "{text:?}");
        assert!(text.contains(" \\u{1b}]0;owned\\u{7}[7] "), "{text:?}");
        assert!(
            text.contains("evil\\u{1b}[2J\\u{202e}moc.example\\u{9b}:443/tcp"),
            "{text:?}"
        );
    }
    // A name longer than its column once escaped is cut, never the pid.
    let mut long = rec.clone();
    long.process = Arc::new(ProcessInfo::from_comm(7, "\x1b\x1b\x1b\x1b\x1b"));
    let doc = ecs::connection(&long, None, stamp(1, &clock, "h"), None);
    let text = line(&doc, PLAIN);
    assert!(
        text.contains(" \\u{1b}\\u{1b}\\u{1b}\\u…[7] alice "),
        "{text:?}"
    );
    assert_aligned(&text);
    let alert = ecs::alert(&rec, 0, 60, stamp(2, &clock, "h"));
    let text = line(&alert, PLAIN);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("/tmp/\\u{1b}[31mx"), "{text:?}");
}

#[test]
fn clean_escapes_what_a_terminal_acts_on_and_keeps_the_rest() {
    assert!(matches!(clean("api.example.com"), Cow::Borrowed(_)));
    assert_eq!(clean("zürich-東京"), "zürich-東京");
    assert_eq!(clean("a\tb\nc\rd\x7fe"), "a\\u{9}b\\u{a}c\\u{d}d\\u{7f}e");
    assert_eq!(clean("C:\\u{1b}"), "C:\\\\u{1b}");
    assert_eq!(
        clean("\u{200b}\u{2066}\u{feff}"),
        "\\u{200b}\\u{2066}\\u{feff}"
    );
}

#[test]
fn long_cells_are_cut_to_their_column() {
    let clock = clock();
    let mut rec = approved(record(Action::Connect));
    rec.cgroup = Arc::new(crate::cgroup::CgroupInfo {
        id: 1,
        path: None,
        systemd_unit: Some("a-very-long-unit-name-that-does-not-fit.service".into()),
    });
    let doc = ecs::connection(&rec, None, stamp(1, &clock, "h"), None);
    let text = line(&doc, PLAIN);
    assert!(
        text.contains(" a-very-long-unit-name-t… api.example.com"),
        "{text}"
    );
    assert_aligned(&text);
}

#[test]
fn durations_and_sizes_read_as_a_person_says_them() {
    assert_eq!(duration(812), "812ns");
    assert_eq!(duration(3_400), "3.4µs");
    assert_eq!(duration(391_000_000), "391ms");
    assert_eq!(duration(12_300_000_000), "12.3s");
    assert_eq!(duration(245_000_000_000), "4m05s");
    assert_eq!(duration(7_380_000_000_000), "2h03m");
    assert_eq!(bytes(517), "517 B");
    assert_eq!(bytes(4300), "4.2 KiB");
    assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
}

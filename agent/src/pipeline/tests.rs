//! The pipeline on synthetic kernel records: in-memory maps, a temporary output file, no
//! kernel. Each test feeds records as the ring buffer would deliver them and reads the lines
//! egret wrote.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use agent_common::{
    EventKind, UdpFlowKey, UdpFlowValue, CONN_FLAG_RESET, CONN_FLAG_SYN_SENT, VERDICT_NONE,
};
use serde_json::Value;

use super::{
    destination::Destination,
    emit::Emitter,
    fake_kernel::{FakeKernel, FakePolicy},
    identity::Identity,
    judgement::Judgement,
    lifecycle::Lifecycle,
    synthetic::*,
    Pipeline,
};
use crate::dns::resolvers::{ResolverSource, TrustedResolvers};
use crate::kernel::GateDecision;
use crate::{
    config::RunConfig,
    container::ContainerResolver,
    metrics::{Metrics, Telemetry},
    output::{Sink, OUTPUT_DATASET},
    policy::active::{load_policy, ActivePolicy},
};
use agent_common::{PAYLOAD_IN, PAYLOAD_OUT, VERDICT_LEARNED, VERDICT_NAME_GATE};

/// A pipeline writing to a temporary file, with in-memory kernel maps.
struct Rig {
    pipeline: Pipeline,
    /// The container fetcher, kept (never run: no runtime answers) so lookups stay pending.
    _fetcher: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    kernel: FakeKernel,
    policy: FakePolicy,
    dir: PathBuf,
    output: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a test may change in the rig.
struct Setup {
    policy: Option<&'static str>,
    dns_events: bool,
    failure_alert_count: u64,
    container_grace: Duration,
    merge_short: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            policy: None,
            dns_events: false,
            failure_alert_count: 5,
            container_grace: Duration::from_millis(500),
            merge_short: false,
        }
    }
}

impl Rig {
    fn new() -> Self {
        Self::with(Setup::default())
    }

    fn with(setup: Setup) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("egret-pipeline-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("out.jsonl");
        let policy_path = setup.policy.map(|yaml| {
            let path = dir.join("policy.yaml");
            std::fs::write(&path, yaml).unwrap();
            path
        });
        let mut config = RunConfig::defaults();
        config.policy.file = policy_path;
        config.dns.events = setup.dns_events;
        config.connections.failure_alert_count = setup.failure_alert_count;
        config.containers.grace = setup.container_grace;
        config.connections.merge_short = setup.merge_short;
        config.containers.containerd_socket = None;
        config.containers.docker_socket = None;
        config.containers.podman_socket = None;
        config.containers.crio_socket = None;
        let (policy, compiled) = load_policy(config.policy.file.as_deref()).unwrap();
        let (containers, fetcher) = ContainerResolver::new(config.containers.runtime_config());
        let sink = Sink::open(output.to_str().unwrap(), &config.output.files(), None).unwrap();
        let telemetry = Telemetry::start(None, 4096, Duration::from_millis(20)).unwrap();
        let pipeline = Pipeline::new(
            Identity::new(&config.processes, dir.clone(), containers),
            Destination::new(
                &config.dns,
                // The kernel's flags say whether an answer is believed; the set is not read.
                TrustedResolvers::new(ResolverSource::Policy(Vec::new())),
            ),
            Judgement::new(
                ActivePolicy::new(policy, compiled),
                &config.policy,
                &config.connections,
            ),
            Lifecycle::new(&config.connections, 0),
            Emitter::new(sink, None, telemetry),
        );
        Self {
            pipeline,
            _fetcher: Box::pin(fetcher),
            kernel: FakeKernel::default(),
            policy: FakePolicy::default(),
            dir,
            output,
        }
    }

    /// One record, as the ring buffer delivers it, then what a drain does after its records.
    fn feed<T: KernelRecord>(&mut self, event: &T) {
        self.pipeline.handle(&bytes(event), &self.kernel);
        self.pipeline.after_drain(&mut self.policy, &self.kernel);
    }

    /// The process `PID` runs `/usr/bin/curl -s x.io` (the kernel's exec records).
    fn exec_curl(&mut self) {
        self.feed(&exec(PID, "/usr/bin/curl", &["curl", "-s", "x.io"]));
    }

    /// Every event line written so far (the output file's own bookkeeping lines left out).
    fn lines(&mut self) -> Vec<Value> {
        self.pipeline.emitter().flush();
        read_lines(&self.output)
    }

    fn metrics(&self) -> Metrics {
        self.pipeline.snapshot(&self.kernel)
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|v| v["event"]["dataset"] != OUTPUT_DATASET)
        .collect()
}

fn field<'a>(line: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(line, |v, key| &v[key])
}

fn actions(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| field(l, "event.action").as_str().unwrap_or_default())
        .collect()
}

#[test]
fn a_tcp_connection_gets_a_start_and_an_end_line_joined_by_its_id() {
    let mut rig = Rig::new();
    rig.exec_curl();
    rig.feed(&connect(EventKind::Connect, 7, "127.0.0.1", 8080, SECOND));
    rig.feed(&conn_end(7, "127.0.0.1", 8080, CLOSED, 0));
    let lines = rig.lines();
    assert_eq!(actions(&lines), ["connect", "connection-end"]);
    let [start, end] = lines.as_slice() else {
        unreachable!()
    };
    assert_eq!(field(start, "process.executable"), "/usr/bin/curl");
    assert_eq!(field(start, "process.command_line"), "curl -s x.io");
    assert_eq!(field(start, "destination.ip"), "127.0.0.1");
    assert_eq!(field(start, "egret.policy.verdict"), "approved");
    assert_eq!(field(start, "rule.name"), "loopback");
    assert_eq!(
        field(end, "egret.connection.id"),
        field(start, "egret.connection.id")
    );
    assert_eq!(field(end, "egret.connection.start_seen"), true);
    assert_eq!(field(end, "event.outcome"), "success");
    assert_eq!(field(end, "source.bytes"), 1000);
    assert_eq!(field(end, "destination.bytes"), 300);
    assert_eq!(field(end, "event.sequence"), 2);
    let Metrics {
        events_received,
        tcp_connection_ends,
        tcp_connections_open,
        lines_written,
        alerts,
        ..
    } = rig.metrics();
    assert_eq!(
        (
            events_received,
            tcp_connection_ends,
            tcp_connections_open,
            lines_written,
            alerts
        ),
        (3, 1, 0, 2, 0),
        "exec, connect, end"
    );
}

#[test]
fn merged_short_connections_get_one_line_and_longer_ones_two() {
    let mut rig = Rig::with(Setup {
        merge_short: true,
        ..Setup::default()
    });
    rig.exec_curl();
    // Connect and end in one drain: one line.
    let short = [
        bytes(&connect(EventKind::Connect, 7, "127.0.0.1", 8080, SECOND)),
        bytes(&conn_end(7, "127.0.0.1", 8080, CLOSED, 0)),
    ];
    for record in &short {
        rig.pipeline.handle(record, &rig.kernel);
    }
    rig.pipeline.after_drain(&mut rig.policy, &rig.kernel);
    // Connect in one drain, end in the next: two lines, as without merging.
    rig.feed(&connect(
        EventKind::Connect,
        8,
        "127.0.0.1",
        8081,
        2 * SECOND,
    ));
    rig.feed(&conn_end(8, "127.0.0.1", 8081, CLOSED, 0));
    // An unapproved one keeps its connect line ahead of its alert.
    let unapproved = [
        bytes(&connect(
            EventKind::Connect,
            9,
            "203.0.113.9",
            443,
            3 * SECOND,
        )),
        bytes(&conn_end(9, "203.0.113.9", 443, CLOSED, 0)),
    ];
    for record in &unapproved {
        rig.pipeline.handle(record, &rig.kernel);
    }
    rig.pipeline.after_drain(&mut rig.policy, &rig.kernel);
    let lines = rig.lines();
    assert_eq!(
        actions(&lines),
        [
            "connection-end",
            "connect",
            "connection-end",
            "connect",
            "connect",
            "connection-end"
        ]
    );
    let merged = &lines[0];
    assert_eq!(
        field(merged, "event.type"),
        &serde_json::json!(["connection", "start", "end"])
    );
    assert_eq!(field(merged, "egret.connection.start_seen"), true);
    assert_eq!(field(merged, "process.executable"), "/usr/bin/curl");
    assert_eq!(field(merged, "destination.port"), 8080);
    assert_eq!(field(merged, "event.outcome"), "success");
    assert!(field(merged, "event.start").is_string(), "{merged}");
    assert_eq!(
        field(&lines[2], "event.type"),
        &serde_json::json!(["connection", "end"])
    );
    assert_eq!(field(&lines[4], "event.kind"), "alert");
    let metrics = rig.metrics();
    assert_eq!((metrics.tcp_connection_ends, metrics.lines_written), (3, 6));
}

#[test]
fn merging_waits_only_for_the_drain() {
    let mut rig = Rig::with(Setup {
        merge_short: true,
        ..Setup::default()
    });
    rig.feed(&connect(EventKind::Connect, 7, "127.0.0.1", 8080, SECOND));
    assert_eq!(
        actions(&rig.lines()),
        ["connect"],
        "written at the drain's end"
    );
    rig.pipeline.handle(
        &bytes(&connect(EventKind::Connect, 8, "127.0.0.1", 8081, SECOND)),
        &rig.kernel,
    );
    rig.pipeline.shutdown(&rig.kernel);
    let lines = rig.lines();
    assert_eq!(
        actions(&lines)[..2],
        ["connect", "connect"],
        "a start still waiting at shutdown is written"
    );
}

#[test]
fn an_unapproved_destination_alerts_once_per_window() {
    let mut rig = Rig::new();
    for cookie in 1..=3 {
        rig.feed(&connect(
            EventKind::Connect,
            cookie,
            "203.0.113.9",
            443,
            SECOND + cookie,
        ));
    }
    let lines = rig.lines();
    // An alert line carries the connection's own action.
    assert_eq!(actions(&lines), ["connect"; 4]);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| field(l, "event.kind").as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["event", "alert", "event", "event"]);
    assert_eq!(field(&lines[0], "egret.policy.verdict"), "unapproved");
    assert_eq!(field(&lines[1], "rule.name"), "unapproved-destination");
    assert_eq!(field(&lines[1], "egret.alert.repeats"), 0);
    let metrics = rig.metrics();
    assert_eq!((metrics.alerts, metrics.alerts_suppressed), (1, 2));
}

#[test]
fn a_udp_flow_is_written_when_its_socket_is_released() {
    let mut rig = Rig::new();
    let send = connect(EventKind::Send, 9, "127.0.0.1", 5353, SECOND);
    rig.feed(&send);
    assert!(rig.lines().is_empty(), "a flow's line waits for its end");
    let key = UdpFlowKey {
        cookie: 9,
        family: send.family,
        port: 5353,
        _pad: 0,
        addr: send.addr,
    };
    rig.kernel.udp_flows.insert(
        key,
        UdpFlowValue {
            datagrams: 4,
            first_ns: SECOND,
            last_ns: 2 * SECOND,
            verdict: VERDICT_NONE,
            connected: 0,
            bytes_out: 400,
            packets_out: 4,
            bytes_in: 40,
            packets_in: 1,
        },
    );
    rig.feed(&sock_release(9, 3 * SECOND));
    let lines = rig.lines();
    assert_eq!(actions(&lines), ["send"]);
    assert_eq!(field(&lines[0], "egret.udp.datagrams"), 4);
    assert_eq!(field(&lines[0], "source.bytes"), 400);
    assert_eq!(field(&lines[0], "destination.bytes"), 40);
    assert_eq!(
        field(&lines[0], "event.type"),
        &serde_json::json!(["connection", "start", "end"])
    );
    assert_eq!(rig.metrics().udp_flows_open, 0);
}

#[test]
fn a_dns_answer_names_the_connection_that_follows_it() {
    let mut rig = Rig::with(Setup {
        dns_events: true,
        ..Setup::default()
    });
    rig.exec_curl();
    // The query (its first datagram) makes the socket's process the asker.
    rig.feed(&connect(EventKind::Send, 5, "10.0.0.53", 53, SECOND));
    rig.feed(&dns_answer(5));
    rig.feed(&connect(
        EventKind::Connect,
        6,
        "93.184.215.14",
        443,
        2 * SECOND,
    ));
    let lines = rig.lines();
    // The query's own line waits for its flow to end; the query and the connect are
    // unapproved, so each has an alert at once (an alert line has its connection's action).
    assert_eq!(
        actions(&lines),
        ["send", "dns-answer", "connect", "connect"]
    );
    let dns = &lines[1];
    assert_eq!(field(dns, "dns.question.name"), "example.com");
    assert_eq!(
        field(dns, "dns.resolved_ip"),
        &serde_json::json!(["93.184.215.14"])
    );
    assert_eq!(field(dns, "source.ip"), "10.0.0.53");
    assert_eq!(field(dns, "process.executable"), "/usr/bin/curl");
    let connect = lines
        .iter()
        .find(|l| field(l, "event.action") == "connect")
        .unwrap();
    assert_eq!(field(connect, "destination.domain"), "example.com");
    assert_eq!(
        field(connect, "egret.dns.names"),
        &serde_json::json!(["example.com"])
    );
    let metrics = rig.metrics();
    assert_eq!((metrics.dns_messages, metrics.dns_mappings), (1, 1));
}

#[test]
fn block_mode_approves_the_answers_of_a_domain_rule_in_the_kernel() {
    let mut rig = Rig::with(Setup {
        policy: Some("mode: block\nrules:\n  - name: web\n    to: [example.com]\n"),
        ..Setup::default()
    });
    rig.feed(&dns_answer(5));
    assert_eq!(rig.policy.learned.len(), 1, "{:?}", rig.policy.learned);
    let (key, expires) = rig.policy.learned[0];
    assert_eq!(
        crate::record::destination_ip(key.family, &key.addr),
        Some("93.184.215.14".parse().unwrap())
    );
    assert!(expires > SECOND);
}

#[test]
fn block_mode_a_refused_connect_to_a_learned_address_is_a_counted_eviction() {
    let mut rig = Rig::with(Setup {
        policy: Some("mode: block\nrules:\n  - name: web\n    to: [example.com]\n"),
        ..Setup::default()
    });
    rig.feed(&dns_answer(5));
    // The kernel's learned-address map evicted it: refused, and counted.
    rig.feed(&connect_with(
        6,
        "93.184.215.14",
        443,
        agent_common::VERDICT_BLOCKED,
    ));
    // A refused address no answer named is no eviction.
    rig.feed(&connect_with(
        7,
        "192.0.2.1",
        443,
        agent_common::VERDICT_BLOCKED,
    ));
    assert_eq!(rig.metrics().learned_addresses_evicted, 1);
    let lines = rig.lines();
    let refused = lines
        .iter()
        .find(|l| field(l, "destination.ip") == "93.184.215.14")
        .unwrap();
    assert_eq!(field(refused, "egret.policy.verdict"), "blocked");
}

#[test]
fn records_that_cannot_be_used_are_counted_as_dropped() {
    let mut rig = Rig::new();
    rig.pipeline.handle(&[1, 2, 3], &rig.kernel);
    let mut bad = connect(EventKind::Connect, 1, "127.0.0.1", 80, SECOND);
    bad.family = 1;
    rig.feed(&bad);
    assert!(rig.lines().is_empty());
    let Metrics {
        decode_errors,
        events_dropped_userspace,
        events_received,
        ..
    } = rig.metrics();
    assert_eq!(
        (decode_errors, events_dropped_userspace, events_received),
        (2, 2, 2)
    );
}

#[test]
fn an_end_without_a_start_is_written_from_what_the_kernel_kept() {
    let mut rig = Rig::new();
    rig.feed(&conn_end(11, "127.0.0.1", 9000, CLOSED, 0));
    let lines = rig.lines();
    assert_eq!(actions(&lines), ["connection-end"]);
    assert_eq!(field(&lines[0], "egret.connection.start_seen"), false);
    assert_eq!(field(&lines[0], "destination.port"), 9000);
    // The connect time the kernel kept, not the close.
    assert_eq!(field(&lines[0], "event.duration"), 2 * SECOND);
    assert_eq!(rig.metrics().tcp_ends_without_start, 1);
}

#[test]
fn connects_that_keep_failing_raise_one_failure_alert() {
    let mut rig = Rig::with(Setup {
        failure_alert_count: 3,
        ..Setup::default()
    });
    for cookie in 1..=4 {
        rig.feed(&connect(
            EventKind::Connect,
            cookie,
            "127.0.0.1",
            5432,
            SECOND,
        ));
        rig.feed(&conn_end(
            cookie,
            "127.0.0.1",
            5432,
            CONN_FLAG_SYN_SENT | CONN_FLAG_RESET,
            111,
        ));
    }
    let lines = rig.lines();
    let alerts: Vec<&Value> = lines
        .iter()
        .filter(|l| field(l, "event.kind") == "alert")
        .collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(field(alerts[0], "rule.name"), "connection-failures");
    assert_eq!(field(alerts[0], "egret.failures.count"), 3);
    assert_eq!(field(alerts[0], "error.code"), "ECONNREFUSED");
    assert_eq!(rig.metrics().failure_alerts, 1);
}

#[test]
fn a_container_connection_waits_for_its_identity_and_its_end_follows_it() {
    let mut rig = Rig::with(Setup {
        container_grace: Duration::ZERO,
        ..Setup::default()
    });
    let path = format!("/system.slice/docker-{}.scope", "a".repeat(64));
    rig.feed(&cgroup_mkdir(1, &path, SECOND));
    // Record and end in one drain: the start waits, the end joins it, both go out after.
    rig.pipeline.handle(
        &bytes(&connect(EventKind::Connect, 3, "127.0.0.1", 80, SECOND)),
        &rig.kernel,
    );
    rig.pipeline.handle(
        &bytes(&conn_end(3, "127.0.0.1", 80, CLOSED, 0)),
        &rig.kernel,
    );
    assert_eq!(rig.metrics().containers_held, 1);
    assert!(rig.lines().is_empty());
    rig.pipeline.after_drain(&mut rig.policy, &rig.kernel);
    let lines = rig.lines();
    assert_eq!(actions(&lines), ["connect", "connection-end"]);
    assert_eq!(
        field(&lines[0], "container.id").as_str(),
        Some("a".repeat(64).as_str())
    );
    assert_eq!(field(&lines[1], "egret.connection.start_seen"), true);
    assert_eq!(rig.metrics().containers_held, 0);
}

#[test]
fn shutdown_writes_what_is_open_and_a_final_metric_line() {
    let mut rig = Rig::new();
    rig.feed(&connect(EventKind::Send, 9, "127.0.0.1", 5353, SECOND));
    rig.pipeline.shutdown(&rig.kernel);
    let lines = read_lines(&rig.output);
    assert_eq!(actions(&lines), ["send", "stats"]);
    let metrics = field(&lines[1], "egret.metrics");
    assert_eq!(metrics["lines_written"], 2);
    assert_eq!(metrics["udp_flows_open"], 0);
    assert_eq!(field(&lines[1], "event.sequence"), 2);
}

/// Chunks of a held or read first flight, the way the kernel copies them.
const GET_OTHER: &[u8] = b"GET /x?k=v HTTP/1.1\r\nHost: other.test\r\nUser-Agent: t/1\r\n\r\n";
const GET_EXAMPLE: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// A connect the kernel let through with `verdict` (block mode's gates).
fn connect_with(cookie: u64, ip: &str, port: u16, verdict: u32) -> agent_common::ConnectEvent {
    agent_common::ConnectEvent {
        verdict,
        ..connect(EventKind::Connect, cookie, ip, port, 2 * SECOND)
    }
}

#[test]
fn an_answer_the_kernel_did_not_believe_names_and_approves_nothing() {
    let mut rig = Rig::with(Setup {
        policy: Some(
            "mode: block\nresolvers: [10.0.0.53]\nrules:\n  - name: web\n    to: [example.com]\n",
        ),
        dns_events: true,
        ..Setup::default()
    });
    rig.exec_curl();
    rig.feed(&agent_common::DnsEvent {
        flags: agent_common::DNS_FLAG_UNSOLICITED,
        ..dns_answer(5)
    });
    assert!(rig.policy.learned.is_empty(), "{:?}", rig.policy.learned);
    rig.feed(&connect(
        EventKind::Connect,
        6,
        "93.184.215.14",
        443,
        2 * SECOND,
    ));
    let lines = rig.lines();
    let dns = lines
        .iter()
        .find(|l| field(l, "event.action") == "dns-answer")
        .unwrap();
    assert_eq!(field(dns, "egret.dns.trusted"), false);
    assert_eq!(
        field(dns, "egret.dns.untrusted"),
        &serde_json::json!(["unsolicited"])
    );
    let connect = lines
        .iter()
        .find(|l| field(l, "event.action") == "connect")
        .unwrap();
    assert!(field(connect, "destination.domain").is_null(), "{connect}");
    let metrics = rig.metrics();
    assert_eq!((metrics.dns_untrusted, metrics.dns_mappings), (1, 0));
}

#[test]
fn the_first_bytes_name_and_describe_the_end_line() {
    let mut rig = Rig::new();
    rig.exec_curl();
    rig.feed(&connect(EventKind::Connect, 7, "127.0.0.1", 8080, SECOND));
    // Out of order, and the first chunk sent twice (a retransmission).
    rig.feed(&payload(7, PAYLOAD_OUT, 20, &GET_OTHER[20..], false));
    rig.feed(&payload(7, PAYLOAD_OUT, 0, &GET_OTHER[..30], false));
    rig.feed(&payload(7, PAYLOAD_OUT, 0, &GET_OTHER[..30], false));
    rig.feed(&payload(
        7,
        PAYLOAD_IN,
        0,
        b"HTTP/1.1 404 Not Found\r\n",
        false,
    ));
    rig.feed(&conn_end(7, "127.0.0.1", 8080, CLOSED, 0));
    let lines = rig.lines();
    assert_eq!(actions(&lines), ["connect", "connection-end"]);
    let end = &lines[1];
    assert_eq!(field(end, "http.request.method"), "GET");
    assert_eq!(field(end, "http.version"), "1.1");
    assert_eq!(field(end, "http.response.status_code"), 404);
    assert_eq!(field(end, "url.domain"), "other.test");
    assert_eq!(field(end, "url.path"), "/x");
    assert_eq!(field(end, "url.query"), "k=v");
    assert_eq!(field(end, "user_agent.original"), "t/1");
    assert_eq!(field(end, "destination.domain"), "other.test");
    assert_eq!(field(end, "egret.destination.name_source"), "http");
    assert_eq!(rig.metrics().first_bytes_read, 1);
}

#[test]
fn audit_mode_an_unapproved_host_on_an_address_approved_by_name_alerts() {
    let mut rig = Rig::with(Setup {
        policy: Some("rules:\n  - name: web\n    to: [example.com]\n"),
        ..Setup::default()
    });
    rig.exec_curl();
    rig.feed(&connect(EventKind::Send, 5, "10.0.0.53", 53, SECOND));
    rig.feed(&dns_answer(5));
    rig.feed(&connect(
        EventKind::Connect,
        6,
        "93.184.215.14",
        80,
        2 * SECOND,
    ));
    rig.feed(&payload(6, PAYLOAD_OUT, 0, GET_OTHER, false));
    rig.feed(&conn_end(6, "93.184.215.14", 80, CLOSED, 0));
    let lines = rig.lines();
    let start = lines
        .iter()
        .find(|l| field(l, "event.action") == "connect" && field(l, "event.kind") == "event")
        .unwrap();
    assert_eq!(field(start, "egret.policy.verdict"), "approved");
    let alert = lines
        .iter()
        .find(|l| field(l, "event.kind") == "alert" && field(l, "destination.port") == 80)
        .expect("an alert for the unapproved Host");
    assert_eq!(field(alert, "url.domain"), "other.test");
    let end = lines
        .iter()
        .find(|l| field(l, "event.action") == "connection-end")
        .unwrap();
    assert_eq!(field(end, "egret.policy.verdict"), "unapproved");
    // The process asked DNS for example.com: that stays the destination's name.
    assert_eq!(field(end, "destination.domain"), "example.com");
    assert_eq!(field(end, "egret.destination.name_mismatch"), true);
}

#[test]
fn block_mode_a_held_first_payload_passes_or_is_refused_by_its_name() {
    let mut rig = Rig::with(Setup {
        policy: Some("mode: block\nrules:\n  - name: web\n    to: [example.com]\n"),
        ..Setup::default()
    });
    rig.exec_curl();
    // Approved through a learned address: its name must be approved if it has one.
    rig.feed(&connect_with(6, "93.184.215.14", 80, VERDICT_LEARNED));
    rig.feed(&payload(6, PAYLOAD_OUT, 0, GET_EXAMPLE, true));
    rig.feed(&connect_with(7, "93.184.215.14", 80, VERDICT_LEARNED));
    rig.feed(&payload(7, PAYLOAD_OUT, 0, GET_OTHER, true));
    // No name at all: passes for a learned address.
    rig.feed(&connect_with(8, "93.184.215.14", 80, VERDICT_LEARNED));
    rig.feed(&payload(8, PAYLOAD_OUT, 0, b"\x00\x01binary", true));
    assert_eq!(rig.policy.gates.get(&6), Some(&GateDecision::Pass));
    assert_eq!(rig.policy.gates.get(&7), Some(&GateDecision::Drop));
    assert_eq!(rig.policy.gates.get(&8), Some(&GateDecision::Pass));
    rig.feed(&conn_end(7, "93.184.215.14", 80, CLOSED, 0));
    assert_eq!(rig.policy.forgotten_gates, [7]);
    let lines = rig.lines();
    let alert = lines
        .iter()
        .find(|l| field(l, "event.kind") == "alert")
        .expect("an alert for the refused name");
    assert_eq!(field(alert, "egret.policy.verdict"), "blocked");
    assert_eq!(field(alert, "url.domain"), "other.test");
    let end = lines
        .iter()
        .find(|l| field(l, "event.action") == "connection-end")
        .unwrap();
    assert_eq!(field(end, "egret.policy.verdict"), "blocked");
    assert_eq!(field(end, "egret.destination.name_check"), "refused");
    let metrics = rig.metrics();
    assert_eq!(
        (metrics.name_checks_passed, metrics.name_checks_refused),
        (2, 1)
    );
}

/// What a learned address's first payload may not hide its name behind (B1, B2): each is
/// refused, while nameless payloads (a whole header block without Host, SSH, a hello without
/// SNI) pass.
#[test]
fn block_mode_a_learned_address_refuses_a_name_it_cannot_read() {
    let mut rig = Rig::with(Setup {
        policy: Some("mode: block\nrules:\n  - name: web\n    to: [example.com]\n"),
        ..Setup::default()
    });
    rig.exec_curl();
    let hello_bad_sni = crate::payload::tests::build_hello(
        &[0x1301],
        &[crate::payload::tests::sni(&[(0, b"bad name!")])],
    );
    let hello_no_sni = crate::payload::tests::build_hello(&[0x1301], &[]);
    let mut broken_hello = hello_no_sni.clone();
    broken_hello[5] = 2; // not a ClientHello
    let cases: [(&[u8], GateDecision); 12] = [
        // The request line alone: a Host may follow in the next packet.
        (b"GET / HTTP/1.1\r\n", GateDecision::Drop),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n", GateDecision::Drop),
        // Empty lines first, an unknown method: still a request for other.test.
        (
            b"\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n",
            GateDecision::Drop,
        ),
        (
            b"FOO / HTTP/1.1\r\nHost: other.test\r\n\r\n",
            GateDecision::Drop,
        ),
        // What a lenient server reads as HTTP, an invalid Host, an unreadable hello.
        (
            b"GET / HTTP/1.2\r\nHost: other.test\r\n\r\n",
            GateDecision::Drop,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: other.test!\r\n\r\n",
            GateDecision::Drop,
        ),
        (&broken_hello, GateDecision::Drop),
        (&hello_bad_sni, GateDecision::Drop),
        // Nameless: a whole header block without Host, an address literal, SSH, no SNI.
        (b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", GateDecision::Pass),
        (
            b"GET / HTTP/1.1\r\nHost: 93.184.215.14\r\n\r\n",
            GateDecision::Pass,
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n", GateDecision::Pass),
        (&hello_no_sni, GateDecision::Pass),
    ];
    for (n, (bytes, _)) in (10_u64..).zip(&cases) {
        rig.feed(&connect_with(n, "93.184.215.14", 80, VERDICT_LEARNED));
        rig.feed(&payload(n, PAYLOAD_OUT, 0, bytes, true));
    }
    for (n, (bytes, want)) in (10_u64..).zip(&cases) {
        assert_eq!(
            rig.policy.gates.get(&n),
            Some(want),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn block_mode_a_name_gate_needs_an_approved_name() {
    let mut rig = Rig::with(Setup {
        policy: Some(
            "mode: block\nname_gate: {ports: [80]}\nrules:\n  - name: web\n    to: [example.com]\n",
        ),
        ..Setup::default()
    });
    rig.exec_curl();
    rig.feed(&connect_with(6, "192.0.2.1", 80, VERDICT_NAME_GATE));
    rig.feed(&payload(6, PAYLOAD_OUT, 0, GET_EXAMPLE, true));
    rig.feed(&connect_with(7, "192.0.2.1", 80, VERDICT_NAME_GATE));
    rig.feed(&payload(7, PAYLOAD_OUT, 0, b"\x00\x01binary", true));
    assert_eq!(rig.policy.gates.get(&6), Some(&GateDecision::Pass));
    assert_eq!(rig.policy.gates.get(&7), Some(&GateDecision::Drop));
    let lines = rig.lines();
    let end_of = |cookie: u64| {
        lines
            .iter()
            .find(|l| {
                field(l, "egret.socket.cookie") == cookie && field(l, "event.kind") == "alert"
            })
            .cloned()
    };
    assert!(end_of(6).is_none(), "the approved name raised an alert");
    assert!(end_of(7).is_some(), "the nameless payload raised no alert");
}

#[test]
fn audit_mode_a_name_approves_only_where_block_mode_would_let_it_decide() {
    let policy = "name_gate: {ports: [443]}\nrules:\n  - name: web\n    to: [example.com]\n";
    let mut rig = Rig::with(Setup {
        policy: Some(policy),
        ..Setup::default()
    });
    rig.exec_curl();
    // No DNS answer: an approved Host on a plain port stays unapproved (the process wrote it),
    // on a name-gate port it approves, as block mode's gate would.
    rig.feed(&connect(EventKind::Connect, 6, "192.0.2.1", 80, 2 * SECOND));
    rig.feed(&payload(6, PAYLOAD_OUT, 0, GET_EXAMPLE, false));
    rig.feed(&conn_end(6, "192.0.2.1", 80, CLOSED, 0));
    rig.feed(&connect(
        EventKind::Connect,
        7,
        "192.0.2.1",
        443,
        2 * SECOND,
    ));
    rig.feed(&payload(7, PAYLOAD_OUT, 0, GET_EXAMPLE, false));
    rig.feed(&conn_end(7, "192.0.2.1", 443, CLOSED, 0));
    let lines = rig.lines();
    let verdict_of = |port: u64| {
        lines
            .iter()
            .find(|l| {
                field(l, "event.action") == "connection-end" && field(l, "destination.port") == port
            })
            .map(|l| field(l, "egret.policy.verdict").clone())
    };
    assert_eq!(verdict_of(80), Some(serde_json::json!("unapproved")));
    assert_eq!(verdict_of(443), Some(serde_json::json!("approved")));
}

#[test]
fn with_a_baseline_a_new_destination_alerts_once_after_its_line_and_the_default_policy_is_quiet() {
    let mut rig = Rig::new();
    let state = rig.dir.join("state");
    let mut config = RunConfig::defaults();
    // Learning over at once: every destination is new.
    config.baseline.learn = Some(Duration::ZERO);
    config.baseline.state_dir = state.clone();
    let stage = super::baseline::BaselineStage::open(&config.baseline).unwrap();
    rig.pipeline.set_baseline(stage);
    rig.exec_curl();
    rig.feed(&connect(EventKind::Connect, 7, "203.0.113.9", 443, SECOND));
    rig.feed(&connect(
        EventKind::Connect,
        8,
        "203.0.113.9",
        443,
        2 * SECOND,
    ));
    rig.feed(&connect(
        EventKind::Connect,
        9,
        "203.0.113.9",
        80,
        3 * SECOND,
    ));
    let lines = rig.lines();
    assert_eq!(
        actions(&lines),
        [
            "connect",
            "new-destination",
            "connect",
            "connect",
            "new-destination"
        ]
    );
    let alert = &lines[1];
    assert_eq!(field(alert, "event.kind"), "alert");
    assert_eq!(field(alert, "egret.baseline.workload"), "/usr/bin/curl");
    assert_eq!(field(alert, "egret.baseline.workload_kind"), "executable");
    assert_eq!(
        field(alert, "egret.baseline.destination"),
        "203.0.113.9:443/tcp"
    );
    assert_eq!(field(alert, "process.command_line"), "curl -s x.io");
    assert_eq!(field(alert, "egret.policy.verdict"), "unapproved");
    let m = rig.metrics();
    assert_eq!((m.alerts, m.new_destination_alerts), (0, 2));
    assert_eq!((m.baseline_workloads, m.baseline_destinations), (1, 2));
    rig.pipeline.shutdown(&rig.kernel);
    let written = crate::baseline::store::read_for_command(&state).unwrap();
    assert_eq!(written.destinations(), 2, "written at shutdown");
}

#[test]
fn with_a_baseline_connects_that_start_failing_raise_one_spike() {
    let mut rig = Rig::with(Setup {
        failure_alert_count: 0,
        ..Setup::default()
    });
    let mut config = RunConfig::defaults();
    config.baseline.learn = Some(Duration::from_secs(3600));
    config.baseline.state_dir = rig.dir.join("state");
    let stage = super::baseline::BaselineStage::open(&config.baseline).unwrap();
    rig.pipeline.set_baseline(stage);
    rig.exec_curl();
    for i in 0..20u64 {
        rig.feed(&connect(
            EventKind::Connect,
            100 + i,
            "127.0.0.1",
            8080,
            (i + 1) * SECOND,
        ));
        rig.feed(&conn_end(100 + i, "127.0.0.1", 8080, CLOSED, 0));
    }
    for i in 0..10u64 {
        let cookie = 200 + i;
        rig.feed(&connect(
            EventKind::Connect,
            cookie,
            "127.0.0.1",
            8080,
            (21 + i) * SECOND,
        ));
        rig.feed(&conn_end(
            cookie,
            "127.0.0.1",
            8080,
            CONN_FLAG_SYN_SENT | CONN_FLAG_RESET,
            111,
        ));
    }
    let lines = rig.lines();
    let spikes: Vec<&Value> = lines
        .iter()
        .filter(|l| field(l, "event.action") == "spike")
        .collect();
    assert_eq!(spikes.len(), 1, "{:?}", actions(&lines));
    assert_eq!(field(spikes[0], "egret.spike.failures"), 5);
    assert_eq!(
        field(spikes[0], "egret.baseline.destination"),
        "127.0.0.1:8080/tcp"
    );
    assert_eq!(rig.metrics().spike_alerts, 1);
}

/// A container's `resolv.conf` is read through a live process: the connecting one while it
/// lives, else the first one still in its cgroup, else (nothing to read through) its own pid.
#[test]
fn a_containers_resolv_conf_is_read_through_a_live_process() {
    let dir = crate::output::tests::TempDir::new("live-pid");
    let root = dir.join("");
    let cgroup = dir.join("ctr");
    std::fs::create_dir_all(&cgroup).expect("cgroup dir");
    std::fs::write(cgroup.join("cgroup.procs"), "4242\n4343\n").expect("cgroup.procs");
    let me = std::process::id();
    const GONE: u32 = u32::MAX - 7;
    assert_eq!(super::live_pid_in(me, &root, Some("/ctr")), me);
    assert_eq!(super::live_pid_in(GONE, &root, Some("/ctr")), 4242);
    assert_eq!(super::live_pid_in(GONE, &root, Some("/none")), GONE);
    assert_eq!(super::live_pid_in(GONE, &root, None), GONE);
    std::fs::write(cgroup.join("cgroup.procs"), "").expect("emptied");
    assert_eq!(super::live_pid_in(GONE, &root, Some("/ctr")), GONE);
}

//! The lines egret writes most (`connect`, a UDP flow's `send`, `connection-end`,
//! `connection-progress`), written straight from the record into the output buffer.
//!
//! They are the same bytes serde writes for the [`crate::schema::Document`] that
//! [`super::connection`] and [`super::end`] build: the schema stays the one definition of
//! every field, and the tests below render each variant both ways and compare the bytes. What
//! this saves is the tree: its allocated strings (times, addresses, the connection id), and
//! escaping keys that are constants. Parts most lines do not have (containers, what the
//! first bytes said, the audit login, ...) are written by serde from their schema types.

use std::{io::Write as _, net::IpAddr};

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    egret_first_bytes, egret_process, errno_error, login, process, EndLine, FirstBytesFields, Stamp,
};
use crate::{
    conn::{ConnEnd, ConnectionIdText, Outcome},
    container::ContainerFields,
    output::chain::Shape,
    record::{ConnectionRecord, Transport},
    schema::EgretDns,
    udp::UdpSummary,
};

/// What a connection line says beyond the connection's identity.
#[derive(Debug, Clone, Copy)]
pub enum Facts<'a> {
    /// A `connect` line; with `Some`, a UDP flow's `send` line and the flow's summary.
    Start { udp: Option<UdpSummary> },
    /// A `connection-end` line (or its kind of end line).
    End {
        end: &'a ConnEnd,
        start_seen: bool,
        kind: EndLine,
    },
}

/// Appends the line (no newline) for `record` to `out`; returns its shape for the chain (its
/// offsets count from where the line starts). On an error (a rare part serde could not
/// write) `out` is left as it was.
pub fn write_line(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    facts: Facts<'_>,
    stamp: Stamp<'_>,
    rendered: Option<&RawValue>,
) -> Result<Shape, serde_json::Error> {
    let from = out.len();
    match write_document(out, record, facts, stamp, rendered) {
        Ok((key, open, close, end)) => Ok(Shape::with_egret(
            key - from,
            open - from,
            close - from,
            end - from,
        )),
        Err(err) => {
            out.truncate(from);
            Err(err)
        }
    }
}

fn write_document(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    facts: Facts<'_>,
    stamp: Stamp<'_>,
    rendered: Option<&RawValue>,
) -> Result<(usize, usize, usize, usize), serde_json::Error> {
    let (udp, end) = match facts {
        Facts::Start { udp } => (udp, None),
        Facts::End {
            end,
            start_seen,
            kind,
        } => (None, Some((end, start_seen, kind))),
    };
    let mut top = Members::open(out);
    top.key(out, "@timestamp");
    let at = end.map_or(record.ktime_ns, |(end, _, _)| end.end_ns);
    out.push(b'"');
    stamp.clock.write_rfc3339(at, out);
    out.push(b'"');
    top.key(out, "event");
    write_event(out, record, udp, end, stamp);
    if let Some(rule) = record.policy.as_ref().and_then(|p| p.rule.as_deref()) {
        top.key(out, "rule");
        let mut name = Members::open(out);
        name.key(out, "name");
        string(out, rule);
        name.close(out);
    }
    if let Some((facts, _, _)) = end {
        if let Some(errno) = facts
            .error
            .filter(|_| facts.outcome == Outcome::Failure || facts.reset)
        {
            top.key(out, "error");
            serde(out, &errno_error(errno))?;
        }
    }
    top.key(out, "process");
    match rendered {
        Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
        None => serde(
            out,
            &process(&record.process, record.tid, &record.users, stamp.clock),
        )?,
    }
    write_endpoints(out, &mut top, record, udp, end.map(|(end, _, _)| end));
    write_ecs_extras(out, &mut top, record, stamp.host_name)?;
    top.key(out, "egret");
    let key = out.len().saturating_sub("\"egret\":".len());
    let open = out.len();
    write_egret(out, record, udp, end)?;
    let close = out.len().saturating_sub(1);
    let end = out.len();
    top.close(out);
    Ok((key, open, close, end))
}

/// `event`.
fn write_event(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    udp: Option<UdpSummary>,
    end: Option<(&ConnEnd, bool, EndLine)>,
    stamp: Stamp<'_>,
) {
    let (outcome, types, action): (Option<&str>, &[&str], &str) = match end {
        None => (
            Some(if record.blocked() {
                "failure"
            } else {
                "success"
            }),
            udp.map_or(&["connection", "start"], UdpSummary::types),
            record.action.name(),
        ),
        Some((_, _, EndLine::Progress)) => {
            (None, EndLine::Progress.types(), EndLine::Progress.action())
        }
        Some((facts, _, kind)) => (Some(facts.outcome.name()), kind.types(), kind.action()),
    };
    let mut event = Members::open(out);
    event.key(out, "kind");
    out.extend_from_slice(b"\"event\"");
    if let Some(outcome) = outcome {
        event.key(out, "outcome");
        string(out, outcome);
    }
    event.key(out, "category");
    out.extend_from_slice(b"[\"network\"]");
    event.key(out, "type");
    strings(out, types);
    event.key(out, "action");
    string(out, action);
    event.key(out, "module");
    out.extend_from_slice(b"\"egret\"");
    event.key(out, "dataset");
    out.extend_from_slice(b"\"egret.network\"");
    event.key(out, "sequence");
    number(out, stamp.sequence);
    let (start, finish, duration) = match (udp, end) {
        (Some(u), _) => (Some(u.first_ns), Some(u.last_ns), None),
        (None, Some((facts, _, kind))) => (
            // Without a duration the start is unknown (a connection older than egret).
            facts.duration_ns.map(|_| record.ktime_ns),
            (kind != EndLine::Progress).then_some(facts.end_ns),
            facts.duration_ns,
        ),
        (None, None) => (None, None, None),
    };
    for (key, at) in [("start", start), ("end", finish)] {
        if let Some(at) = at {
            event.key(out, key);
            out.push(b'"');
            stamp.clock.write_rfc3339(at, out);
            out.push(b'"');
        }
    }
    if let Some(duration) = duration {
        event.key(out, "duration");
        number(out, duration);
    }
    event.close(out);
}

/// `source`, `destination`, `network`.
fn write_endpoints(
    out: &mut Vec<u8>,
    top: &mut Members,
    record: &ConnectionRecord,
    udp: Option<UdpSummary>,
    end: Option<&ConnEnd>,
) {
    if let Some(u) = udp {
        top.key(out, "source");
        let mut source = Members::open(out);
        source.key(out, "bytes");
        number(out, u.traffic.bytes_out);
        source.key(out, "packets");
        number(out, u.datagrams);
        source.close(out);
    }
    if let Some(end) = end {
        top.key(out, "source");
        let mut source = Members::open(out);
        if let Some((ip, port)) = end.source {
            source.key(out, "ip");
            ip_string(out, ip);
            source.key(out, "port");
            number(out, u64::from(port));
        }
        if let Some(bytes) = end.bytes_sent {
            source.key(out, "bytes");
            number(out, bytes);
        }
        source.close(out);
    }
    top.key(out, "destination");
    let mut destination = Members::open(out);
    destination.key(out, "ip");
    ip_string(out, record.ip);
    destination.key(out, "port");
    number(out, u64::from(record.port));
    if let Some((domain, _)) = record.destination_name() {
        destination.key(out, "domain");
        string(out, domain);
    }
    let bytes = match end {
        Some(end) => end.bytes_received,
        None => udp.map(|u| u.traffic.bytes_in),
    };
    if let Some(bytes) = bytes {
        destination.key(out, "bytes");
        number(out, bytes);
    }
    if let Some(u) = udp {
        destination.key(out, "packets");
        number(out, u.traffic.packets_in);
    }
    destination.close(out);
    top.key(out, "network");
    let mut network = Members::open(out);
    network.key(out, "transport");
    string(out, record.transport.name());
    network.key(out, "type");
    string(out, if record.ip.is_ipv4() { "ipv4" } else { "ipv6" });
    network.key(out, "direction");
    out.extend_from_slice(b"\"egress\"");
    network.key(out, "iana_number");
    out.push(b'"');
    number(out, u64::from(record.transport.iana_number()));
    out.push(b'"');
    network.close(out);
}

/// `host`, then the ECS objects a line has only sometimes: `container`, `orchestrator`, and
/// what the first bytes said (`tls`, `http`, `url`, `user_agent`).
fn write_ecs_extras(
    out: &mut Vec<u8>,
    top: &mut Members,
    record: &ConnectionRecord,
    host_name: &str,
) -> Result<(), serde_json::Error> {
    top.key(out, "host");
    let mut host = Members::open(out);
    host.key(out, "name");
    string(out, host_name);
    host.close(out);
    if let Some(fields) = ContainerFields::new(&record.container) {
        top.key(out, "container");
        serde(out, &fields.container)?;
        optional(out, top, "orchestrator", fields.orchestrator.as_ref())?;
    }
    let FirstBytesFields {
        tls,
        http,
        url,
        user_agent,
    } = FirstBytesFields::new(record.first_bytes.as_deref());
    optional(out, top, "tls", tls.as_ref())?;
    optional(out, top, "http", http.as_ref())?;
    optional(out, top, "url", url.as_ref())?;
    optional(out, top, "user_agent", user_agent.as_ref())
}

/// `egret`.
fn write_egret(
    out: &mut Vec<u8>,
    record: &ConnectionRecord,
    udp: Option<UdpSummary>,
    end: Option<(&ConnEnd, bool, EndLine)>,
) -> Result<(), serde_json::Error> {
    let mut egret = Members::open(out);
    egret.key(out, "cgroup");
    let mut cgroup = Members::open(out);
    cgroup.key(out, "id");
    number(out, record.cgroup.id);
    if let Some(path) = record.cgroup.path.as_deref() {
        cgroup.key(out, "path");
        string(out, path);
    }
    cgroup.close(out);
    if let Some(policy) = &record.policy {
        egret.key(out, "policy");
        let mut fields = Members::open(out);
        fields.key(out, "verdict");
        string(out, policy.verdict.name());
        fields.key(out, "mode");
        string(out, policy.mode.name());
        fields.close(out);
    }
    if let Some(dns) = record.dns.as_ref().filter(|d| !d.names.is_empty()) {
        egret.key(out, "dns");
        let names = EgretDns {
            names: Some(std::borrow::Cow::Borrowed(&dns.names)),
            ..EgretDns::default()
        };
        serde(out, &names)?;
    }
    let (destination, tls, http) = egret_first_bytes(record);
    optional(out, &mut egret, "destination", destination.as_ref())?;
    optional(out, &mut egret, "tls", tls.as_ref())?;
    optional(out, &mut egret, "http", http.as_ref())?;
    if let Some(fields) = ContainerFields::new(&record.container) {
        optional(out, &mut egret, "k8s", fields.k8s.as_ref())?;
        optional(out, &mut egret, "container", fields.identity.as_ref())?;
    }
    if let Some(unit) = record.cgroup.systemd_unit.as_deref() {
        egret.key(out, "systemd");
        let mut systemd = Members::open(out);
        systemd.key(out, "unit");
        string(out, unit);
        systemd.close(out);
    }
    egret.key(out, "socket");
    out.extend_from_slice(b"{\"cookie\":");
    number(out, record.cookie);
    out.push(b'}');
    write_connection_id(out, &mut egret, record, end);
    if let Some((facts, _, _)) = end {
        egret.key(out, "tcp");
        let mut tcp = Members::open(out);
        for (key, value) in [
            ("connect_latency_us", facts.connect_latency_us),
            ("retransmits", facts.retransmits.map(u64::from)),
            ("srtt_us", facts.srtt_us.map(u64::from)),
        ] {
            if let Some(value) = value {
                tcp.key(out, key);
                number(out, value);
            }
        }
        if facts.reset {
            tcp.key(out, "reset");
            out.extend_from_slice(b"true");
        }
        tcp.close(out);
    }
    if let Some(u) = udp {
        egret.key(out, "udp");
        out.extend_from_slice(b"{\"datagrams\":");
        number(out, u.datagrams);
        out.push(b'}');
    }
    optional(
        out,
        &mut egret,
        "process",
        egret_process(&record.process).as_ref(),
    )?;
    optional(
        out,
        &mut egret,
        "login",
        login(&record.process, &record.users).as_ref(),
    )?;
    egret.close(out);
    Ok(())
}

/// `egret.connection`: the id (a UDP flow's names its address too), and on end lines whether
/// egret saw the start.
fn write_connection_id(
    out: &mut Vec<u8>,
    egret: &mut Members,
    record: &ConnectionRecord,
    end: Option<(&ConnEnd, bool, EndLine)>,
) {
    egret.key(out, "connection");
    let mut connection = Members::open(out);
    connection.key(out, "id");
    out.push(b'"');
    ConnectionIdText(record.cookie).write_to(out);
    if record.transport != Transport::Tcp {
        out.push(b'-');
        ip_text(out, record.ip);
        out.push(b'-');
        number(out, u64::from(record.port));
    }
    out.push(b'"');
    if let Some((_, start_seen, EndLine::End | EndLine::StartAndEnd)) = end {
        connection.key(out, "start_seen");
        out.extend_from_slice(if start_seen { b"true" } else { b"false" });
    }
    connection.close(out);
}

/// The members of one object being written: puts the commas between them.
struct Members {
    first: bool,
}

impl Members {
    fn open(out: &mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { first: true }
    }

    /// `"key":` (keys are constants that need no escaping), after a comma unless first.
    fn key(&mut self, out: &mut Vec<u8>, key: &str) {
        if !std::mem::replace(&mut self.first, false) {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    }

    fn close(self, out: &mut Vec<u8>) {
        out.push(b'}');
    }
}

/// A member written by serde from its schema type, when there is one.
fn optional<T: Serialize>(
    out: &mut Vec<u8>,
    members: &mut Members,
    key: &str,
    value: Option<&T>,
) -> Result<(), serde_json::Error> {
    match value {
        Some(value) => {
            members.key(out, key);
            serde(out, value)
        }
        None => Ok(()),
    }
}

fn serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)
}

/// An address as a JSON string: its `Display` text (which never needs escaping).
fn ip_string(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    ip_text(out, ip);
    out.push(b'"');
}

/// An address's `Display` text; IPv4, on most lines, without the formatting machinery.
fn ip_text(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn strings(out: &mut Vec<u8>, words: &[&str]) {
    out.push(b'[');
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, word);
    }
    out.push(b']');
}

/// A JSON string, escaped exactly as serde_json escapes it: `"` and `\`, the short escapes
/// for backspace, form feed, newline, carriage return and tab, `\u00XX` (lowercase) for the
/// other control characters; everything else as it is.
fn string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        start = i + 1;
        if short.is_empty() {
            let hex = |nibble: u8| HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn addresses_are_written_as_they_display() {
        for text in [
            "0.0.0.0",
            "10.0.0.2",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.100.9",
            "::",
            "::1",
            "fd00::53",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.1.2.3",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            ip_string(&mut out, ip);
            assert_eq!(out, format!("\"{ip}\"").into_bytes(), "{text}");
        }
    }

    use crate::{
        cgroup::CgroupInfo,
        clock::WallClock,
        container::{ContainerInfo, ContainerRef, Lookup, PodInfo, RuntimeHint},
        ecs::{
            self,
            tests::{record, stamp},
            ProcessJson,
        },
        output::chain,
        payload::{http, tls::ClientHello},
        policy::Mode,
        process::{
            lineage::{Ancestor, EntryLeader, EntryType},
            Login,
        },
        record::{
            Action, DnsNames, FirstBytesSeen, GateOutcome, PolicyOutcome, PolicyVerdict, Transport,
        },
        udp::{Traffic, UdpSummary},
    };

    /// Records covering every optional part of a connection line, with text that needs
    /// escaping wherever a record carries text.
    fn records() -> Vec<ConnectionRecord> {
        let base = record(Action::Connect);
        let mut all = vec![base.clone()];
        let mut named = base.clone();
        named.policy = Some(PolicyOutcome {
            verdict: PolicyVerdict::Approved,
            rule: Some("api \"prod\"\n\u{1}\u{7f}é\\".to_owned()),
            mode: Mode::Block,
        });
        named.dns = Some(DnsNames {
            domain: Some("api.example.com".to_owned()),
            names: vec!["api.example.com".to_owned(), "cdn\t.example".to_owned()],
            questions: Vec::new(),
        });
        named.cgroup = Arc::new(CgroupInfo {
            id: u64::MAX,
            path: Some("/kubepods/\u{8}\u{c}\r/x".into()),
            systemd_unit: None,
        });
        all.push(named.clone());
        let mut blocked = named.clone();
        blocked.policy = Some(PolicyOutcome {
            verdict: PolicyVerdict::Blocked,
            rule: None,
            mode: Mode::Block,
        });
        blocked.ip = "2001:db8::1".parse().unwrap();
        all.push(blocked);
        let mut contained = base.clone();
        contained.container = Lookup::Known(Arc::new(ContainerInfo {
            id: "c0ffee".to_owned(),
            name: Some("web".to_owned()),
            image: Some("nginx:1.25".to_owned()),
            runtime: "containerd",
            labels: [("app".to_owned(), "w\"eb".to_owned())]
                .into_iter()
                .collect(),
            pod: Some(PodInfo {
                name: "web-1".to_owned(),
                namespace: "shop".to_owned(),
                uid: Some("4c8f".to_owned()),
                container_name: Some("web".to_owned()),
                ..Default::default()
            }),
        }));
        all.push(contained.clone());
        contained.container = Lookup::Unknown(ContainerRef {
            pod_uid: Some("4c8f".to_owned()),
            ..crate::container::path::tests::container("c0ffee", RuntimeHint::Containerd)
        });
        all.push(contained);
        let mut spoke = named.clone();
        spoke.first_bytes = Some(Box::new(FirstBytesSeen {
            tls: Some(ClientHello {
                legacy_version: 0x0303,
                versions: vec![0x0304, 0x0303],
                server_name: Some("api.example.com".to_owned()),
                alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
                cipher_suites: vec![0x1301],
                extensions: vec![0],
                signature_algorithms: vec![0x0403],
                ja4: "t13d0101h2_x_y".to_owned(),
            }),
            http: http::parse_request(
                b"GET /a%20b?q=\"1\" HTTP/1.1\r\nHost: x.example\r\nUser-Agent: t\"\r\n\r\n",
            )
            .ok(),
            status_code: Some(403),
            unreadable: false,
            gate: Some(GateOutcome::Passed),
        }));
        all.push(spoke);
        let mut person = base;
        let ancestor = |pid, name: &str| {
            Arc::new(Ancestor {
                pid,
                executable: Some(format!("/usr/bin/{name}")),
                name: name.to_owned(),
                args: vec![name.to_owned(), "-c".to_owned(), "a\"b".to_owned()],
                start_ns: Some(7),
                euid: Some(1000),
            })
        };
        let mut info = (*person.process).clone();
        info.login = Some(Login {
            uid: 1000,
            session: Some(3),
        });
        info.tty = Some((136 << 20) | 2);
        info.args_redacted = true;
        info.parent = Some(ancestor(10, "bash"));
        info.session_leader = Some(ancestor(9, "sshd"));
        info.entry_leader = Some(Arc::new(EntryLeader {
            process: ancestor(8, "bash"),
            kind: EntryType::Sshd,
            source_ip: Some("203.0.113.7".parse().unwrap()),
        }));
        person.process = Arc::new(info);
        person.transport = Transport::Udp;
        person.action = Action::Send;
        all.push(person);
        all
    }

    fn ends() -> Vec<ConnEnd> {
        let end = ConnEnd {
            outcome: Outcome::Success,
            error: None,
            duration_ns: Some(1_500),
            connect_latency_us: Some(40),
            bytes_sent: Some(99),
            bytes_received: Some(1 << 40),
            retransmits: Some(2),
            srtt_us: Some(17),
            source: Some(("127.0.0.1".parse().unwrap(), 40_000)),
            reset: false,
            state_lost: false,
            end_ns: 2_000_000_123,
        };
        let failed = ConnEnd {
            outcome: Outcome::Failure,
            error: Some(111),
            duration_ns: None,
            connect_latency_us: None,
            bytes_sent: None,
            bytes_received: None,
            retransmits: None,
            srtt_us: None,
            source: None,
            ..end
        };
        let reset = ConnEnd {
            reset: true,
            error: Some(104),
            source: Some(("::1".parse().unwrap(), 1)),
            ..end
        };
        vec![end, failed, reset]
    }

    fn assert_same(record: &ConnectionRecord, facts: Facts<'_>, what: &str) {
        let clock = WallClock::with_offset(1_795_305_600_000_000_000);
        let mut cache = ProcessJson::default();
        let rendered = cache.get(record, &clock);
        for raw in [None, rendered] {
            let stamp = stamp(41, &clock, "host \"1\"");
            let doc = match facts {
                Facts::Start { udp } => ecs::connection(record, udp, stamp, raw),
                Facts::End {
                    end,
                    start_seen,
                    kind,
                } => ecs::end(record, end, start_seen, kind, stamp, raw),
            };
            let mut expected = Vec::new();
            chain::serialize(&doc, &mut expected).unwrap();
            let mut out = b"earlier\n".to_vec();
            let shape = write_line(&mut out, record, facts, stamp, raw).unwrap();
            let line = out.get(8..).unwrap();
            assert_eq!(
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&expected),
                "{what}"
            );
            // The shape the writer gives is the one the chain finds in the bytes.
            let prev = chain::ChainHash::GENESIS;
            let (mut by_shape, mut by_scan) = (Vec::new(), Vec::new());
            let hash = chain::append_serialized(&mut by_shape, &prev, line, shape).unwrap();
            let scanned = chain::append_chained(&mut by_scan, &prev, &expected).unwrap();
            assert_eq!((hash, by_shape), (scanned, by_scan), "{what}");
        }
    }

    #[test]
    fn escapes_every_string_as_serde_does() {
        let mut texts: Vec<String> = (0u8..=0x7f)
            .flat_map(|a| [0x00u8, b'a', b'"', 0x1f, 0x7f].map(move |b| [a, b, a]))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect();
        texts.extend(
            ["", "é\u{2028}😀\\\"", "\u{0}\u{1b}[31mred", "tab\tnl\ncr\r"].map(String::from),
        );
        for text in texts {
            let mut out = Vec::new();
            string(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        let udp = UdpSummary {
            datagrams: 1000,
            first_ns: 1,
            last_ns: 2,
            traffic: Traffic {
                bytes_out: 64_000,
                bytes_in: 640,
                packets_in: 10,
            },
            last: true,
            first: false,
        };
        for (i, record) in records().iter().enumerate() {
            assert_same(record, Facts::Start { udp: None }, &format!("connect {i}"));
            assert_same(record, Facts::Start { udp: Some(udp) }, &format!("udp {i}"));
            for (j, end) in ends().iter().enumerate() {
                for (start_seen, kind) in [
                    (true, EndLine::End),
                    (false, EndLine::End),
                    (true, EndLine::StartAndEnd),
                    (true, EndLine::Progress),
                ] {
                    let facts = Facts::End {
                        end,
                        start_seen,
                        kind,
                    };
                    let what = format!("end {i}.{j} {start_seen} {kind:?}");
                    assert_same(record, facts, &what);
                }
            }
        }
    }
}

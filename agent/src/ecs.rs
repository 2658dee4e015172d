//! Rendering records as Elastic Common Schema documents, one JSON object per line.
//!
//! Field names follow ECS where ECS has the field and live under `egret.*` otherwise. The
//! structs borrow from the record so rendering allocates little beyond the output itself.
//! `docs/events.md` documents every field.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    clock::WallClock,
    dns::{
        state::Answer,
        wire::{Message, RData, Record},
        Learned,
    },
    metrics::Metrics,
    process::ProcessInfo,
    record::{ConnectionRecord, PolicyVerdict},
    udp::UdpSummary,
};

#[derive(Serialize)]
pub struct EventFields<'a> {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub category: &'static [&'static str],
    #[serde(rename = "type", skip_serializing_if = "<[_]>::is_empty")]
    pub types: &'static [&'static str],
    pub action: &'a str,
    pub module: &'static str,
    pub dataset: &'static str,
    pub sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Nanoseconds (end lines: from `connect()` to the close).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

#[derive(Serialize)]
pub struct Id {
    pub id: u32,
}

#[derive(Serialize)]
pub struct Pid {
    pub pid: u32,
}

#[derive(Serialize)]
pub struct UserFields<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

#[derive(Serialize)]
pub struct GroupFields {
    pub id: String,
}

#[derive(Serialize)]
pub struct ProcessFields<'a> {
    pub pid: u32,
    pub thread: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Pid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    pub name: &'a str,
    pub args: &'a [String],
    pub args_count: usize,
    pub command_line: String,
    pub user: UserFields<'a>,
    pub group: GroupFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

#[derive(Serialize)]
pub struct Endpoint<'a> {
    pub ip: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<&'a str>,
    /// Payload bytes the destination sent (end, progress and UDP lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// This host's side: its address and port (TCP end lines) and the payload bytes it sent.
#[derive(Serialize, Default)]
pub struct SourceFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

#[derive(Serialize)]
pub struct ErrorFields {
    pub code: String,
    pub message: &'static str,
}

#[derive(Serialize)]
pub struct ConnectionIdFields {
    pub id: String,
    /// End lines: false when egret never saw the start (it predates egret, or was forgotten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_seen: Option<bool>,
}

#[derive(Serialize, Default)]
pub struct TcpFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtt_us: Option<u32>,
    /// Reset (RST) after the handshake.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

#[derive(Serialize)]
pub struct FailureFields {
    pub count: u64,
    pub window_seconds: u64,
}

#[derive(Serialize)]
pub struct DnsNamesFields<'a> {
    pub names: &'a [String],
}

#[derive(Serialize)]
pub struct NetworkFields {
    pub transport: &'static str,
    #[serde(rename = "type")]
    pub network_type: &'static str,
    pub direction: &'static str,
    pub iana_number: String,
}

#[derive(Serialize)]
pub struct HostFields<'a> {
    pub name: &'a str,
}

#[derive(Serialize)]
pub struct CgroupFields<'a> {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
}

#[derive(Serialize)]
pub struct UnitFields<'a> {
    pub unit: &'a str,
}

#[derive(Serialize)]
pub struct CookieFields {
    pub cookie: u64,
}

#[derive(Serialize)]
pub struct UdpFields {
    pub datagrams: u64,
}

#[derive(Serialize)]
pub struct EgretProcessFields {
    pub args_truncated: bool,
}

#[derive(Serialize)]
pub struct PolicyFields {
    pub verdict: &'static str,
    pub mode: &'static str,
}

#[derive(Serialize)]
pub struct AlertFields {
    pub repeats: u64,
    pub window_seconds: u64,
}

#[derive(Serialize)]
pub struct RuleFields<'a> {
    pub name: &'a str,
}

#[derive(Serialize)]
pub struct EgretFields<'a> {
    pub cgroup: CgroupFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsNamesFields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<crate::container::fields::K8s<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd: Option<UnitFields<'a>>,
    pub socket: CookieFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionIdFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<FailureFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<EgretProcessFields>,
}

/// `process` of a line: rendered for this line, or the JSON already rendered for an earlier
/// line of the same process, thread and user.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ProcessOut<'a> {
    Fields(ProcessFields<'a>),
    Rendered(&'a RawValue),
}

impl<'a> ProcessFields<'a> {
    pub fn of(
        process: &'a ProcessInfo,
        tid: u32,
        uid: u32,
        gid: u32,
        user_name: &'a Option<String>,
        clock: &WallClock,
    ) -> Self {
        Self {
            pid: process.pid,
            thread: Id { id: tid },
            parent: process.ppid.map(|pid| Pid { pid }),
            executable: process.executable.as_deref(),
            name: &process.name,
            args: &process.args,
            args_count: process.args.len(),
            command_line: process.command_line(),
            user: UserFields {
                id: uid.to_string(),
                name: user_name.as_deref(),
            },
            group: GroupFields {
                id: gid.to_string(),
            },
            start: process.start_ns.map(|ns| clock.rfc3339(ns)),
        }
    }
}

/// The `process` objects of the last few (process, thread, user) combinations, rendered once:
/// a process that connects thousands of times (and every end line) reuses them instead of
/// escaping its arguments again. Cleared when the wall clock is re-anchored (the start time
/// string may move).
#[derive(Default)]
pub struct ProcessJson {
    entries: Vec<ProcessJsonEntry>,
    next: usize,
}

struct ProcessJsonEntry {
    process: std::sync::Arc<ProcessInfo>,
    tid: u32,
    uid: u32,
    gid: u32,
    json: Box<RawValue>,
}

/// Entries kept (a linear scan: small on purpose).
const PROCESS_JSON_ENTRIES: usize = 32;

impl ProcessJson {
    /// The rendered `process` object of `record`'s process (rendered now if new).
    pub fn get(&mut self, record: &ConnectionRecord, clock: &WallClock) -> Option<&RawValue> {
        let found = self.entries.iter().position(|e| {
            std::sync::Arc::ptr_eq(&e.process, &record.process)
                && e.tid == record.tid
                && e.uid == record.uid
                && e.gid == record.gid
        });
        let index = match found {
            Some(i) => i,
            None => {
                let fields = ProcessFields::of(
                    &record.process,
                    record.tid,
                    record.uid,
                    record.gid,
                    &record.user_name,
                    clock,
                );
                let json = serde_json::value::to_raw_value(&fields).ok()?;
                let entry = ProcessJsonEntry {
                    process: std::sync::Arc::clone(&record.process),
                    tid: record.tid,
                    uid: record.uid,
                    gid: record.gid,
                    json,
                };
                if self.entries.len() < PROCESS_JSON_ENTRIES {
                    self.entries.push(entry);
                    self.entries.len() - 1
                } else {
                    let i = self.next % PROCESS_JSON_ENTRIES;
                    self.next = self.next.wrapping_add(1);
                    if let Some(slot) = self.entries.get_mut(i) {
                        *slot = entry;
                    }
                    i
                }
            }
        };
        self.entries.get(index).map(|e| e.json.as_ref())
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.next = 0;
    }
}

/// A `connect` or `send` line, or an alert about one.
#[derive(Serialize)]
pub struct ConnectionDoc<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleFields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFields>,
    pub process: ProcessOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFields>,
    pub destination: Endpoint<'a>,
    pub network: NetworkFields,
    pub host: HostFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::container::fields::Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<crate::container::fields::Orchestrator<'a>>,
    pub egret: EgretFields<'a>,
}

impl<'a> ConnectionDoc<'a> {
    pub fn new(
        record: &'a ConnectionRecord,
        udp: Option<UdpSummary>,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
    ) -> Self {
        Self::with_process(record, udp, sequence, clock, host_name, None)
    }

    /// [`Self::new`] with the `process` object already rendered (see [`ProcessJson`]).
    pub fn with_process(
        record: &'a ConnectionRecord,
        udp: Option<UdpSummary>,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
        rendered: Option<&'a RawValue>,
    ) -> Self {
        let ConnectionRecord {
            action,
            ktime_ns,
            tid,
            uid,
            gid,
            user_name,
            process,
            cgroup,
            cookie,
            ip,
            port,
            transport,
            kernel_verdict: _,
            policy: _,
            netns: _,
            dns,
            container,
        } = record;
        let (container, orchestrator, k8s) = match crate::container::ContainerFields::new(container)
        {
            Some(crate::container::ContainerFields {
                container,
                orchestrator,
                k8s,
            }) => (Some(container), orchestrator, k8s),
            None => (None, None, None),
        };
        let policy_fields = record.policy.as_ref().map(|p| PolicyFields {
            verdict: p.verdict.name(),
            mode: p.mode.name(),
        });
        Self {
            timestamp: clock.rfc3339(*ktime_ns),
            rule: record
                .policy
                .as_ref()
                .and_then(|p| p.rule.as_deref())
                .map(|name| RuleFields { name }),
            message: None,
            error: None,
            source: udp.map(|u| SourceFields {
                bytes: Some(u.traffic.bytes_out),
                packets: Some(u.datagrams),
                ..SourceFields::default()
            }),
            event: EventFields {
                kind: "event",
                severity: None,
                outcome: Some(if record.blocked() {
                    "failure"
                } else {
                    "success"
                }),
                category: &["network"],
                types: match udp {
                    None => &["connection", "start"],
                    Some(u) => u.types(),
                },
                action: action.name(),
                module: "egret",
                dataset: "egret.network",
                sequence,
                start: udp.map(|u| clock.rfc3339(u.first_ns)),
                end: udp.map(|u| clock.rfc3339(u.last_ns)),
                duration: None,
            },
            process: match rendered {
                Some(raw) => ProcessOut::Rendered(raw),
                None => ProcessOut::Fields(ProcessFields::of(
                    process, *tid, *uid, *gid, user_name, clock,
                )),
            },
            destination: Endpoint {
                ip: ip.to_string(),
                port: *port,
                domain: dns.as_ref().and_then(|d| d.domain.as_deref()),
                bytes: udp.map(|u| u.traffic.bytes_in),
                packets: udp.map(|u| u.traffic.packets_in),
            },
            network: NetworkFields {
                transport: transport.name(),
                network_type: if ip.is_ipv4() { "ipv4" } else { "ipv6" },
                direction: "egress",
                iana_number: transport.iana_number().to_string(),
            },
            host: HostFields { name: host_name },
            container,
            orchestrator,
            egret: EgretFields {
                k8s,
                cgroup: CgroupFields {
                    id: cgroup.id,
                    path: cgroup.path.as_deref(),
                },
                policy: policy_fields,
                alert: None,
                dns: dns
                    .as_ref()
                    .filter(|d| !d.names.is_empty())
                    .map(|d| DnsNamesFields { names: &d.names }),
                systemd: cgroup
                    .systemd_unit
                    .as_deref()
                    .map(|unit| UnitFields { unit }),
                socket: CookieFields { cookie: *cookie },
                connection: Some(ConnectionIdFields {
                    id: match transport {
                        crate::record::Transport::Tcp => crate::conn::connection_id(*cookie),
                        _ => format!("{}-{ip}-{port}", crate::conn::connection_id(*cookie)),
                    },
                    start_seen: None,
                }),
                tcp: None,
                failures: None,
                udp: udp.map(|u| UdpFields {
                    datagrams: u.datagrams,
                }),
                process: process.args_truncated.then_some(EgretProcessFields {
                    args_truncated: true,
                }),
            },
        }
    }
}

impl<'a> ConnectionDoc<'a> {
    /// A TCP connection's end line (or, with `progress`, a line while it is open): the start
    /// line's identity plus outcome, duration, latency, bytes and the error.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per line kind; a struct would only rename the arguments"
    )]
    pub fn end(
        record: &'a ConnectionRecord,
        end: &crate::conn::ConnEnd,
        start_seen: bool,
        progress: bool,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
        rendered: Option<&'a RawValue>,
    ) -> Self {
        let crate::conn::ConnEnd {
            outcome,
            error,
            duration_ns,
            connect_latency_us,
            bytes_sent,
            bytes_received,
            retransmits,
            srtt_us,
            source,
            reset,
            state_lost: _,
            end_ns,
        } = end;
        let mut doc = Self::with_process(record, None, sequence, clock, host_name, rendered);
        doc.timestamp = clock.rfc3339(*end_ns);
        if progress {
            doc.event.types = &["connection", "info"];
            doc.event.action = "connection-progress";
            doc.event.outcome = None;
        } else {
            doc.event.types = &["connection", "end"];
            doc.event.action = "connection-end";
            doc.event.outcome = Some(outcome.name());
            doc.event.end = Some(clock.rfc3339(*end_ns));
        }
        // Without a duration the start is unknown (a connection older than egret).
        doc.event.start = duration_ns.map(|_| clock.rfc3339(record.ktime_ns));
        doc.event.duration = *duration_ns;
        doc.error = error
            .filter(|_| *outcome == crate::conn::Outcome::Failure || *reset)
            .map(|errno| ErrorFields {
                code: crate::conn::errno_name(errno),
                message: crate::conn::errno_message(errno),
            });
        doc.source = Some(SourceFields {
            ip: source.map(|(ip, _)| ip.to_string()),
            port: source.map(|(_, port)| port),
            bytes: *bytes_sent,
            packets: None,
        });
        doc.destination.bytes = *bytes_received;
        doc.egret.tcp = Some(TcpFields {
            connect_latency_us: *connect_latency_us,
            retransmits: *retransmits,
            srtt_us: *srtt_us,
            reset: *reset,
        });
        if let Some(connection) = doc.egret.connection.as_mut() {
            connection.start_seen = (!progress).then_some(start_seen);
        }
        doc
    }

    /// The alert for a process whose connects to one destination keep failing.
    pub fn failure_alert(
        record: &'a ConnectionRecord,
        count: u64,
        window_seconds: u64,
        error: Option<u32>,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
    ) -> Self {
        let mut doc = Self::new(record, None, sequence, clock, host_name);
        doc.event.kind = "alert";
        doc.event.dataset = "egret.alert";
        doc.event.severity = Some(SEVERITY_FAILURES);
        doc.event.types = &["connection", "error"];
        doc.event.action = "connection-failures";
        doc.event.outcome = Some("failure");
        doc.rule = Some(RuleFields {
            name: "connection-failures",
        });
        let process = &record.process;
        let exe = process
            .executable
            .as_deref()
            .unwrap_or("executable unknown");
        let dest = match record.ip {
            std::net::IpAddr::V4(ip) => format!("{ip}:{}", record.port),
            std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", record.port),
        };
        let why = error.map_or("failed", crate::conn::errno_message);
        doc.message = Some(format!(
            "{} (pid {}, {exe}): {count} connects to {dest}/{} failed within {window_seconds}s (last: {why})",
            process.name,
            process.pid,
            record.transport.name()
        ));
        doc.error = error.map(|errno| ErrorFields {
            code: crate::conn::errno_name(errno),
            message: crate::conn::errno_message(errno),
        });
        doc.egret.failures = Some(FailureFields {
            count,
            window_seconds,
        });
        doc
    }
}

/// Severity of an alert about repeated connect failures.
pub const SEVERITY_FAILURES: u8 = 50;

/// Severity of an alert about a connection that went ahead although no rule approved it.
pub const SEVERITY_UNAPPROVED: u8 = 73;
/// Severity of an alert about a connection the kernel refused (block mode).
pub const SEVERITY_BLOCKED: u8 = 47;

impl<'a> ConnectionDoc<'a> {
    /// The alert line for an unapproved or blocked connection: the connection's own fields,
    /// plus `rule.name` = `unapproved-destination`, a sentence, severity and the repeat count.
    pub fn alert(
        record: &'a ConnectionRecord,
        repeats: u64,
        window_seconds: u64,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
    ) -> Self {
        let mut doc = Self::new(record, None, sequence, clock, host_name);
        let blocked = record.policy.as_ref().map(|p| p.verdict) == Some(PolicyVerdict::Blocked);
        doc.event.kind = "alert";
        doc.event.dataset = "egret.alert";
        doc.event.severity = Some(if blocked {
            SEVERITY_BLOCKED
        } else {
            SEVERITY_UNAPPROVED
        });
        doc.event.types = if blocked {
            &["connection", "denied"]
        } else {
            &["connection", "start"]
        };
        doc.rule = Some(RuleFields {
            name: "unapproved-destination",
        });
        doc.message = Some(alert_message(record, blocked, repeats, window_seconds));
        doc.egret.alert = Some(AlertFields {
            repeats,
            window_seconds,
        });
        doc
    }
}

fn alert_message(
    record: &ConnectionRecord,
    blocked: bool,
    repeats: u64,
    window_seconds: u64,
) -> String {
    let process = &record.process;
    let what = match (record.action, blocked) {
        (crate::record::Action::Connect, false) => "connected to",
        (crate::record::Action::Send, false) => "sent datagrams to",
        (crate::record::Action::Connect, true) => "was refused a connection to",
        (crate::record::Action::Send, true) => "was refused sending to",
    };
    let exe = process
        .executable
        .as_deref()
        .unwrap_or("executable unknown");
    let dest = match record.ip {
        std::net::IpAddr::V4(ip) => format!("{ip}:{}", record.port),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", record.port),
    };
    let mut message = format!(
        "{} (pid {}, {exe}) {what} {dest}/{}, not approved by policy",
        process.name,
        process.pid,
        record.transport.name()
    );
    if let Some(unit) = &record.cgroup.systemd_unit {
        message.push_str(&format!(" (unit {unit})"));
    }
    if repeats > 0 {
        message.push_str(&format!(
            "; {repeats} more time(s) within {window_seconds} s"
        ));
    }
    message
}

#[derive(Serialize)]
pub struct DnsQuestionFields<'a> {
    pub name: &'a str,
    #[serde(rename = "type")]
    pub qtype: String,
    pub class: String,
}

#[derive(Serialize)]
pub struct DnsAnswerFields {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

#[derive(Serialize)]
pub struct DnsFields<'a> {
    pub id: u16,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub response_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<DnsQuestionFields<'a>>,
    pub answers: Vec<DnsAnswerFields>,
    pub resolved_ip: Vec<String>,
    pub header_flags: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct EgretDnsFields {
    pub netns: u64,
    /// The message was longer than the kernel copies; its tail was not seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    /// Block mode: the domain rules (by index) whose names the kernel approved the answer for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_rules: Vec<u32>,
}

#[derive(Serialize)]
pub struct EgretDnsLine<'a> {
    pub socket: CookieFields,
    pub dns: EgretDnsFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupFields<'a>>,
}

/// The process that asked (owner of the socket that received the answer).
#[derive(Serialize)]
pub struct AskerFields<'a> {
    pub pid: u32,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    pub args: &'a [String],
}

/// DNS type names for the common record types (`TYPE<n>` otherwise, as in RFC 3597).
pub fn dns_type_name(rtype: u16) -> String {
    match rtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

pub fn dns_class_name(class: u16) -> String {
    match class {
        1 => "IN".into(),
        3 => "CH".into(),
        n => format!("CLASS{n}"),
    }
}

pub fn dns_rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

#[derive(Serialize)]
pub struct DnsNetworkFields {
    pub transport: &'static str,
    #[serde(rename = "type")]
    pub network_type: &'static str,
    pub protocol: &'static str,
    pub direction: &'static str,
}

/// A `dns` line (`--dns-events`): one answer the kernel saw, and who asked.
#[derive(Serialize)]
pub struct DnsDoc<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventFields<'a>,
    pub dns: DnsFields<'a>,
    /// The resolver.
    pub source: Endpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<AskerFields<'a>>,
    pub network: DnsNetworkFields,
    pub host: HostFields<'a>,
    pub egret: EgretDnsLine<'a>,
}

impl<'a> DnsDoc<'a> {
    /// The `dns` line for one answer, and the process that asked, if known.
    pub fn new(
        answer: &'a Answer,
        asker: Option<&'a ProcessInfo>,
        sequence: u64,
        clock: &WallClock,
        host_name: &'a str,
    ) -> Self {
        let Answer {
            learned: Learned { message, resolved },
            asker: _,
            resolver,
            port,
            transport,
            netns,
            cookie,
            cut,
            approved,
            ktime_ns,
        } = answer;
        let Message {
            id,
            response: _,
            opcode: _,
            rcode,
            truncated,
            questions,
            answers,
        } = message;
        let answer = |record: &Record| {
            let Record {
                name,
                rtype,
                class: _,
                ttl,
                data,
            } = record;
            DnsAnswerFields {
                name: name.to_string(),
                rtype: dns_type_name(*rtype),
                ttl: *ttl,
                data: match data {
                    RData::A(ip) => ip.to_string(),
                    RData::Aaaa(ip) => ip.to_string(),
                    RData::Cname(target) => target.to_string(),
                    RData::Other { rtype: _, len } => format!("({len} bytes)"),
                },
            }
        };
        let mut header_flags = Vec::new();
        if *truncated {
            header_flags.push("TC");
        }
        let resolver = resolver.to_canonical();
        Self {
            timestamp: clock.rfc3339(*ktime_ns),
            event: EventFields::dns_answer(sequence),
            dns: DnsFields {
                id: *id,
                kind: "answer",
                response_code: dns_rcode_name(*rcode),
                question: questions.first().map(|q| DnsQuestionFields {
                    name: q.name.as_str(),
                    qtype: dns_type_name(q.qtype),
                    class: dns_class_name(q.qclass),
                }),
                answers: answers.iter().map(answer).collect(),
                resolved_ip: resolved.iter().map(|r| r.address.to_string()).collect(),
                header_flags,
            },
            source: Endpoint {
                ip: resolver.to_string(),
                port: *port,
                domain: None,
                bytes: None,
                packets: None,
            },
            process: asker.map(|p| AskerFields {
                pid: p.pid,
                name: &p.name,
                executable: p.executable.as_deref(),
                args: &p.args,
            }),
            network: DnsNetworkFields {
                transport: if *transport == 6 { "tcp" } else { "udp" },
                network_type: if resolver.is_ipv4() { "ipv4" } else { "ipv6" },
                protocol: "dns",
                direction: "ingress",
            },
            host: HostFields { name: host_name },
            egret: EgretDnsLine {
                socket: CookieFields { cookie: *cookie },
                dns: EgretDnsFields {
                    netns: *netns,
                    cut: *cut,
                    approved_rules: (0..32).filter(|i| approved & (1 << i) != 0).collect(),
                },
                cgroup: None,
            },
        }
    }
}

impl EventFields<'_> {
    /// The `event` object of a `dns` line.
    pub fn dns_answer(sequence: u64) -> Self {
        Self {
            kind: "event",
            severity: None,
            outcome: None,
            category: &["network"],
            types: &["protocol", "info"],
            action: "dns-answer",
            module: "egret",
            dataset: "egret.dns",
            sequence,
            start: None,
            end: None,
            duration: None,
        }
    }
}

#[derive(Serialize)]
pub struct MetricEgret {
    pub metrics: Metrics,
}

#[derive(Serialize)]
pub struct MetricDoc<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventFields<'a>,
    pub host: HostFields<'a>,
    pub egret: MetricEgret,
}

impl<'a> MetricDoc<'a> {
    pub fn new(metrics: Metrics, sequence: u64, timestamp: String, host_name: &'a str) -> Self {
        Self {
            timestamp,
            event: EventFields {
                kind: "metric",
                severity: None,
                outcome: None,
                category: &[],
                types: &[],
                action: "stats",
                module: "egret",
                dataset: "egret.stats",
                sequence,
                start: None,
                end: None,
                duration: None,
            },
            host: HostFields { name: host_name },
            egret: MetricEgret { metrics },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        cgroup::CgroupInfo,
        process::ProcessInfo,
        record::{Action, Transport},
    };

    fn record(action: Action) -> ConnectionRecord {
        ConnectionRecord {
            action,
            ktime_ns: 1_000_000_000,
            tid: 4243,
            uid: 1000,
            gid: 100,
            user_name: Some("alice".into()),
            process: Arc::new(ProcessInfo {
                pid: 4242,
                ppid: Some(1),
                executable: Some("/usr/bin/curl".into()),
                name: "curl".into(),
                args: vec!["curl".into(), "-v".into(), "http://x".into()],
                args_truncated: false,
                start_ns: Some(500_000_000),
            }),
            cgroup: Arc::new(CgroupInfo {
                id: 77,
                path: Some("/system.slice/app.service".into()),
                systemd_unit: Some("app.service".into()),
            }),
            cookie: 9,
            ip: "93.184.216.34".parse().unwrap(),
            port: 443,
            transport: Transport::Tcp,
            kernel_verdict: 0,
            policy: None,
            netns: 0,
            dns: None,
            container: crate::container::Lookup::NotAContainer,
        }
    }

    #[test]
    fn renders_a_connect_line_with_nested_ecs_fields() {
        let clock = WallClock::with_offset(1_795_305_600_000_000_000);
        let rec = record(Action::Connect);
        let doc = ConnectionDoc::new(&rec, None, 3, &clock, "host1");
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["@timestamp"], "2026-11-22T00:00:01.000000000Z");
        assert_eq!(v["event"]["kind"], "event");
        assert_eq!(
            v["event"]["type"],
            serde_json::json!(["connection", "start"])
        );
        assert_eq!(v["event"]["action"], "connect");
        assert_eq!(v["event"]["sequence"], 3);
        assert!(v["event"].get("start").is_none());
        assert_eq!(v["process"]["pid"], 4242);
        assert_eq!(v["process"]["thread"]["id"], 4243);
        assert_eq!(v["process"]["parent"]["pid"], 1);
        assert_eq!(v["process"]["args_count"], 3);
        assert_eq!(v["process"]["command_line"], "curl -v http://x");
        assert_eq!(v["process"]["user"]["id"], "1000");
        assert_eq!(v["process"]["user"]["name"], "alice");
        assert_eq!(v["process"]["group"]["id"], "100");
        assert_eq!(v["process"]["start"], "2026-11-22T00:00:00.500000000Z");
        assert_eq!(v["destination"]["ip"], "93.184.216.34");
        assert_eq!(v["destination"]["port"], 443);
        assert_eq!(v["network"]["transport"], "tcp");
        assert_eq!(v["network"]["type"], "ipv4");
        assert_eq!(v["network"]["iana_number"], "6");
        assert_eq!(v["egret"]["systemd"]["unit"], "app.service");
        assert_eq!(v["egret"]["cgroup"]["path"], "/system.slice/app.service");
        assert!(v["egret"].get("udp").is_none());
    }

    #[test]
    fn renders_a_send_line_with_the_flow() {
        let clock = WallClock::with_offset(0);
        let rec = record(Action::Send);
        let udp = UdpSummary {
            datagrams: 1000,
            first_ns: 1,
            last_ns: 2,
            traffic: crate::udp::Traffic {
                bytes_out: 64_000,
                bytes_in: 640,
                packets_in: 10,
            },
            last: true,
            first: true,
        };
        let v = serde_json::to_value(ConnectionDoc::new(&rec, Some(udp), 4, &clock, "h")).unwrap();
        assert_eq!(v["event"]["action"], "send");
        assert_eq!(
            v["event"]["type"],
            serde_json::json!(["connection", "start", "end"])
        );
        assert_eq!(v["egret"]["udp"]["datagrams"], 1000);
        assert_eq!(v["source"]["bytes"], 64_000);
        assert_eq!(v["source"]["packets"], 1000);
        assert_eq!(v["destination"]["bytes"], 640);
        assert_eq!(v["destination"]["packets"], 10);
        assert_eq!(v["event"]["start"], "1970-01-01T00:00:00.000000001Z");
        assert_eq!(v["event"]["end"], "1970-01-01T00:00:00.000000002Z");
    }

    #[test]
    fn renders_an_end_line_that_joins_its_start() {
        let clock = WallClock::with_offset(0);
        let rec = record(Action::Connect);
        let start = serde_json::to_value(ConnectionDoc::new(&rec, None, 1, &clock, "h")).unwrap();
        let end = crate::conn::ConnEnd {
            outcome: crate::conn::Outcome::Failure,
            error: Some(111),
            duration_ns: Some(1_500),
            connect_latency_us: None,
            bytes_sent: Some(0),
            bytes_received: Some(0),
            retransmits: Some(0),
            srtt_us: None,
            source: Some(("127.0.0.1".parse().unwrap(), 40_000)),
            reset: false,
            state_lost: false,
            end_ns: 2_000,
        };
        let v = serde_json::to_value(ConnectionDoc::end(
            &rec, &end, true, false, 2, &clock, "h", None,
        ))
        .unwrap();
        assert_eq!(v["event"]["type"], serde_json::json!(["connection", "end"]));
        assert_eq!(v["event"]["action"], "connection-end");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["duration"], 1_500);
        assert_eq!(v["error"]["code"], "ECONNREFUSED");
        assert_eq!(v["error"]["message"], "connection refused");
        assert_eq!(v["source"]["ip"], "127.0.0.1");
        assert_eq!(v["source"]["port"], 40_000);
        assert_eq!(v["source"]["bytes"], 0);
        assert_eq!(v["egret"]["connection"]["start_seen"], true);
        assert_eq!(
            v["egret"]["connection"]["id"],
            start["egret"]["connection"]["id"]
        );
        assert_eq!(v["process"], start["process"]);
        assert_eq!(v["destination"]["ip"], start["destination"]["ip"]);
    }

    #[test]
    fn a_rendered_process_is_reused_and_identical() {
        let clock = WallClock::with_offset(0);
        let rec = record(Action::Connect);
        let fresh = serde_json::to_value(ConnectionDoc::new(&rec, None, 1, &clock, "h")).unwrap();
        let mut cache = ProcessJson::default();
        let first = cache.get(&rec, &clock).unwrap().get().to_owned();
        assert_eq!(
            cache.get(&rec, &clock).unwrap().get(),
            first,
            "served from the cache"
        );
        let raw = cache.get(&rec, &clock).unwrap();
        let reused = serde_json::to_value(ConnectionDoc::with_process(
            &rec,
            None,
            1,
            &clock,
            "h",
            Some(raw),
        ))
        .unwrap();
        assert_eq!(fresh, reused);
        let mut other = rec.clone();
        other.tid += 1;
        assert_ne!(cache.get(&other, &clock).unwrap().get(), first);
    }

    #[test]
    fn renders_a_metric_line() {
        let metrics = Metrics {
            events_received: 5,
            ..Metrics::default()
        };
        let v = serde_json::to_value(MetricDoc::new(metrics, 9, "t".into(), "h")).unwrap();
        assert_eq!(v["event"]["kind"], "metric");
        assert!(v["event"].get("category").is_none());
        assert_eq!(v["egret"]["metrics"]["events_received"], 5);
    }
}

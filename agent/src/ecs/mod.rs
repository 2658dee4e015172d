//! Rendering egret's records as the lines it writes: each function builds one kind of
//! [`Document`] (`crate::schema`, the one definition of every field) from a record, borrowing
//! from it, so rendering allocates little beyond the output itself. `docs/events.md` documents
//! every field.

pub mod baseline;
pub mod text;
pub mod writer;

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::{
    clock::{boot_ns_now, WallClock},
    conn::{self, ConnEnd, Outcome},
    container::ContainerFields,
    dns::{
        state::Answer,
        wire::{Message, RData, Record},
        Learned,
    },
    metrics::Metrics,
    process::{
        lineage::{self, Ancestor},
        ProcessInfo,
    },
    record::{Action, ConnectionRecord, FirstBytesSeen, PolicyVerdict, Transport, Users},
    schema::{
        Alert, Cgroup, CharDevice, ConnectionId, Dns, DnsAnswer, DnsQuestion, Document, Egret,
        EgretContainer, EgretDestination, EgretDns, EgretHttp, EgretProcess, EgretTls, Endpoint,
        EntryMeta, EntrySource, Error, Event, Failures, Group, Http, HttpRequest, HttpResponse, Id,
        K8s, Keywords, Login, Name, Network, Policy, Process, ProcessOut, Related, Socket, Tcp,
        Tls, TlsClient, Tty, Udp, Unit, Url, User, UserAgent,
    },
    udp::UdpSummary,
};

/// Severity of an alert about repeated connect failures.
pub const SEVERITY_FAILURES: u8 = 50;
/// Severity of an alert about a connection that went ahead although no rule approved it.
pub const SEVERITY_UNAPPROVED: u8 = 73;
/// Severity of an alert about a connection the kernel refused (block mode).
pub const SEVERITY_BLOCKED: u8 = 47;

/// What every line of a run carries besides its facts: its number (`event.sequence`), the
/// clock that turns kernel times into `@timestamp`s, and the host's name.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub sequence: u64,
    pub clock: &'a WallClock,
    pub host_name: &'a str,
}

impl<'a> Stamp<'a> {
    /// A kernel time (`CLOCK_BOOTTIME` ns) as an RFC 3339 time.
    fn at(&self, boot_ns: u64) -> Cow<'a, str> {
        Cow::Owned(self.clock.rfc3339(boot_ns))
    }

    /// `host`.
    fn host(&self) -> Name<'a> {
        Name::of(self.host_name)
    }

    /// The `event` object every line of egret's own starts from.
    fn event(&self, kind: &'static str, action: &'a str, dataset: &'static str) -> Event<'a> {
        Event {
            kind: Cow::Borrowed(kind),
            severity: None,
            outcome: None,
            category: Keywords::default(),
            types: Keywords::default(),
            action: Cow::Borrowed(action),
            module: Cow::Borrowed("egret"),
            dataset: Cow::Borrowed(dataset),
            sequence: Some(self.sequence),
            start: None,
            end: None,
            duration: None,
        }
    }
}

/// A process's `process` object, as a connection line of thread `tid` by `users` shows it.
pub fn process<'a>(
    process: &'a ProcessInfo,
    tid: u32,
    users: &'a Users,
    clock: &WallClock,
) -> Process<'a> {
    let user = |id: u32| User {
        id: Cow::Owned(id.to_string()),
        name: users.name(id).map(Cow::Borrowed),
    };
    let group = |id: u32| Group {
        id: Cow::Owned(id.to_string()),
        name: None,
    };
    let start = |ns: Option<u64>| ns.map(|ns| Cow::Owned(clock.rfc3339(ns)));
    let related = |a: &'a Ancestor| Related {
        pid: a.pid,
        executable: a.executable.as_deref().map(Cow::Borrowed),
        name: (!a.name.is_empty()).then_some(Cow::Borrowed(a.name.as_str())),
        args: Some(Cow::Borrowed(a.args.as_slice())),
        start: start(a.start_ns),
        user: None,
        entry_meta: None,
    };
    Process {
        pid: process.pid,
        thread: Some(Id { id: tid }),
        parent: match &process.parent {
            Some(parent) => Some(Box::new(related(parent))),
            None => process.ppid.map(|pid| {
                Box::new(Related {
                    pid,
                    ..Related::default()
                })
            }),
        },
        executable: process.executable.as_deref().map(Cow::Borrowed),
        name: Cow::Borrowed(&process.name),
        args: Cow::Borrowed(&process.args),
        args_count: Some(process.args.len()),
        command_line: Some(Cow::Owned(process.command_line())),
        user: Some(user(users.euid)),
        group: Some(group(users.egid)),
        real_user: Some(user(users.uid)),
        real_group: Some(group(users.gid)),
        tty: process.tty.map(|tty| Tty {
            char_device: CharDevice {
                major: tty >> 20,
                minor: tty & 0xf_ffff,
            },
        }),
        session_leader: process
            .session_leader
            .as_deref()
            .map(|leader| Box::new(related(leader))),
        entry_leader: process.entry_leader.as_deref().map(|entry| {
            Box::new(Related {
                user: entry.process.euid.map(user),
                entry_meta: Some(EntryMeta {
                    kind: Cow::Borrowed(entry.kind.name()),
                    source: entry.source_ip.map(|ip| EntrySource {
                        ip: Cow::Owned(ip.to_string()),
                    }),
                }),
                ..related(&entry.process)
            })
        }),
        start: start(process.start_ns),
    }
}

/// `egret.process`, when the process has anything ECS has no field for.
pub fn egret_process(process: &ProcessInfo) -> Option<EgretProcess<'_>> {
    let fields = EgretProcess {
        args_truncated: process.args_truncated,
        args_redacted: process.args_redacted,
        fileless: process.fileless,
        script: process.script.as_deref().map(Cow::Borrowed),
        tty: process.tty.map(|tty| Cow::Owned(lineage::tty_name(tty))),
    };
    (!fields.is_empty()).then_some(fields)
}

/// `egret.login`: the process's audit login, with the login user's name.
pub fn login<'a>(process: &ProcessInfo, users: &'a Users) -> Option<Login<'a>> {
    let login = process.login?;
    Some(Login {
        user: User {
            id: Cow::Owned(login.uid.to_string()),
            name: users.name(login.uid).map(Cow::Borrowed),
        },
        session_id: login.session,
    })
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
    /// Real and effective user and group: the names follow from them.
    ids: [u32; 4],
    json: Box<RawValue>,
}

/// Entries kept (a linear scan: small on purpose).
const PROCESS_JSON_ENTRIES: usize = 32;

impl ProcessJson {
    /// The rendered `process` object of `record`'s process (rendered now if new).
    pub fn get(&mut self, record: &ConnectionRecord, clock: &WallClock) -> Option<&RawValue> {
        let Users {
            uid,
            gid,
            euid,
            egid,
            ..
        } = record.users;
        let ids = [uid, gid, euid, egid];
        let found = self.entries.iter().position(|e| {
            std::sync::Arc::ptr_eq(&e.process, &record.process)
                && e.tid == record.tid
                && e.ids == ids
        });
        let index = match found {
            Some(i) => i,
            None => {
                let fields = process(&record.process, record.tid, &record.users, clock);
                let json = serde_json::value::to_raw_value(&fields).ok()?;
                let entry = ProcessJsonEntry {
                    process: std::sync::Arc::clone(&record.process),
                    tid: record.tid,
                    ids,
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

/// A `connect` line, or a UDP flow's `send` line (`udp`: the flow's summary). `rendered`: the
/// record's `process` object already rendered ([`ProcessJson`]), if at hand.
pub fn connection<'a>(
    record: &'a ConnectionRecord,
    udp: Option<UdpSummary>,
    stamp: Stamp<'a>,
    rendered: Option<&'a RawValue>,
) -> Document<'a> {
    let ConnectionRecord {
        action,
        ktime_ns,
        tid,
        users,
        process: info,
        cgroup: _,
        cookie: _,
        ip,
        port,
        transport,
        kernel_verdict: _,
        policy,
        netns: _,
        dns: _,
        container,
        first_bytes,
    } = record;
    let FirstBytesFields {
        tls,
        http,
        url,
        user_agent,
    } = FirstBytesFields::new(first_bytes.as_deref());
    let (container, orchestrator, k8s, identity) = match ContainerFields::new(container) {
        Some(ContainerFields {
            container,
            orchestrator,
            k8s,
            identity,
        }) => (Some(container), orchestrator, k8s, identity),
        None => (None, None, None, None),
    };
    Document {
        timestamp: stamp.at(*ktime_ns),
        event: Event {
            outcome: Some(Cow::Borrowed(if record.blocked() {
                "failure"
            } else {
                "success"
            })),
            category: Keywords::Static(&["network"]),
            types: Keywords::Static(match udp {
                None => &["connection", "start"],
                Some(u) => u.types(),
            }),
            start: udp.map(|u| stamp.at(u.first_ns)),
            end: udp.map(|u| stamp.at(u.last_ns)),
            ..stamp.event("event", action.name(), "egret.network")
        },
        dns: None,
        rule: policy
            .as_ref()
            .and_then(|p| p.rule.as_deref())
            .map(Name::of),
        message: None,
        error: None,
        process: Some(match rendered {
            Some(raw) => ProcessOut::Rendered(raw),
            None => ProcessOut::Fields(Box::new(process(info, *tid, users, stamp.clock))),
        }),
        source: udp.map(|u| Endpoint {
            bytes: Some(u.traffic.bytes_out),
            packets: Some(u.datagrams),
            ..Endpoint::default()
        }),
        destination: Some(Endpoint {
            ip: Some(Cow::Owned(ip.to_string())),
            port: Some(*port),
            domain: record
                .destination_name()
                .map(|(name, _)| Cow::Borrowed(name)),
            bytes: udp.map(|u| u.traffic.bytes_in),
            packets: udp.map(|u| u.traffic.packets_in),
        }),
        network: Some(Network {
            transport: Cow::Borrowed(transport.name()),
            network_type: Cow::Borrowed(if ip.is_ipv4() { "ipv4" } else { "ipv6" }),
            protocol: None,
            direction: Cow::Borrowed("egress"),
            iana_number: Some(Cow::Owned(transport.iana_number().to_string())),
        }),
        host: stamp.host(),
        container,
        orchestrator,
        tls,
        http,
        url,
        user_agent,
        egret: egret(record, udp, (k8s, identity)),
    }
}

/// The ECS objects of what a connection's first bytes said.
#[derive(Default)]
struct FirstBytesFields<'a> {
    tls: Option<Tls<'a>>,
    http: Option<Box<Http<'a>>>,
    url: Option<Box<Url<'a>>>,
    user_agent: Option<UserAgent<'a>>,
}

impl<'a> FirstBytesFields<'a> {
    fn new(seen: Option<&'a FirstBytesSeen>) -> Self {
        let Some(seen) = seen else {
            return Self::default();
        };
        let FirstBytesSeen {
            tls,
            http,
            status_code,
            unreadable: _,
            gate: _,
        } = seen;
        let response = status_code.map(|status_code| HttpResponse { status_code });
        let request = http.as_ref();
        Self {
            tls: tls.as_ref().map(|hello| Tls {
                client: TlsClient {
                    server_name: hello.server_name.as_deref().map(Cow::Borrowed),
                },
            }),
            http: (request.is_some() || response.is_some()).then(|| {
                Box::new(Http {
                    request: request.map(|r| HttpRequest {
                        method: Cow::Borrowed(r.method.as_str()),
                    }),
                    response,
                    // ECS writes the number alone (`1.1`).
                    version: request
                        .and_then(|r| r.version)
                        .map(|v| Cow::Borrowed(v.as_str().trim_start_matches("HTTP/"))),
                })
            }),
            url: request.map(|r| {
                Box::new(Url {
                    domain: r.host.as_deref().map(Cow::Borrowed),
                    path: Some(Cow::Borrowed(r.path.as_str())),
                    query: r.query.as_deref().map(Cow::Borrowed),
                })
            }),
            user_agent: request
                .and_then(|r| r.user_agent.as_deref())
                .map(|ua| UserAgent {
                    original: Cow::Borrowed(ua),
                }),
        }
    }
}

/// `egret.destination`, `egret.tls`, `egret.http`: what ECS has no field for.
fn egret_first_bytes<'a>(
    record: &'a ConnectionRecord,
) -> (
    Option<EgretDestination<'a>>,
    Option<Box<EgretTls<'a>>>,
    Option<EgretHttp>,
) {
    let seen = record.first_bytes.as_deref();
    let destination = EgretDestination {
        name_source: record
            .destination_name()
            .map(|(_, source)| Cow::Borrowed(source.name())),
        name_mismatch: record.name_mismatch(),
        name_check: seen.and_then(|s| s.gate).map(|g| Cow::Borrowed(g.name())),
    };
    let tls = seen.and_then(|s| s.tls.as_ref()).map(|hello| {
        Box::new(EgretTls {
            ja4: Cow::Borrowed(hello.ja4.as_str()),
            alpn: hello
                .alpn
                .iter()
                .map(|a| Cow::Borrowed(a.as_str()))
                .collect(),
            versions: hello
                .versions
                .iter()
                .map(|v| Cow::Borrowed(tls_version_name(*v)))
                .collect(),
        })
    });
    let http = seen
        .and_then(|s| s.http.as_ref())
        .filter(|r| r.path_truncated || r.query_truncated)
        .map(|r| EgretHttp {
            path_truncated: r.path_truncated,
            query_truncated: r.query_truncated,
        });
    (
        (destination.name_source.is_some() || destination.name_check.is_some())
            .then_some(destination),
        tls,
        http,
    )
}

/// `1.3`, `1.2`, ... for a TLS version number; `unknown` for anything else.
fn tls_version_name(version: u16) -> &'static str {
    match version {
        0x0304 => "1.3",
        0x0303 => "1.2",
        0x0302 => "1.1",
        0x0301 => "1.0",
        0x0300 => "ssl3",
        _ => "unknown",
    }
}

/// The `egret` object of a connection line: cgroup, unit, verdict, names, socket, connection id.
fn egret<'a>(
    record: &'a ConnectionRecord,
    udp: Option<UdpSummary>,
    (k8s, container): (Option<K8s<'a>>, Option<EgretContainer<'a>>),
) -> Egret<'a> {
    // `connection` took the record apart; this takes what the `egret` object shows.
    let (cgroup, cookie, policy, dns) =
        (&record.cgroup, record.cookie, &record.policy, &record.dns);
    let (destination, tls, http) = egret_first_bytes(record);
    let connection_id = match record.transport {
        Transport::Tcp => conn::connection_id(cookie),
        _ => format!(
            "{}-{}-{}",
            conn::connection_id(cookie),
            record.ip,
            record.port
        ),
    };
    Egret {
        cgroup: Some(Cgroup {
            id: cgroup.id,
            path: cgroup.path.as_deref().map(Cow::Borrowed),
        }),
        policy: policy.as_ref().map(|p| Policy {
            verdict: Cow::Borrowed(p.verdict.name()),
            mode: Cow::Borrowed(p.mode.name()),
        }),
        dns: dns
            .as_ref()
            .filter(|d| !d.names.is_empty())
            .map(|d| EgretDns {
                names: Some(Cow::Borrowed(&d.names)),
                ..EgretDns::default()
            }),
        destination,
        tls,
        http,
        k8s,
        container,
        systemd: cgroup.systemd_unit.as_deref().map(|unit| Unit {
            unit: Cow::Borrowed(unit),
        }),
        socket: Some(Socket { cookie }),
        connection: Some(ConnectionId {
            id: Cow::Owned(connection_id),
            start_seen: None,
        }),
        process: egret_process(&record.process),
        login: login(&record.process, &record.users),
        udp: udp.map(|u| Udp {
            datagrams: u.datagrams,
        }),
        ..Egret::default()
    }
}

/// Which line of a TCP connection's end facts: its end, its end and start in one
/// (`--merge-short-connections`), or progress while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndLine {
    /// `connection-end`, `event.type` `[connection, end]`.
    End,
    /// `connection-end` of a connection whose `connect` line was not written:
    /// `event.type` `[connection, start, end]`.
    StartAndEnd,
    /// `connection-progress`, `event.type` `[connection, info]`.
    Progress,
}

impl EndLine {
    /// `event.type`.
    pub fn types(self) -> &'static [&'static str] {
        match self {
            Self::End => &["connection", "end"],
            Self::StartAndEnd => &["connection", "start", "end"],
            Self::Progress => &["connection", "info"],
        }
    }

    /// `event.action`.
    pub fn action(self) -> &'static str {
        match self {
            Self::End | Self::StartAndEnd => "connection-end",
            Self::Progress => "connection-progress",
        }
    }
}

/// A TCP connection's end line (or a line while it is open, or its one line: `kind`): the
/// start line's identity plus outcome, duration, latency, bytes and the error.
pub fn end<'a>(
    record: &'a ConnectionRecord,
    end: &ConnEnd,
    start_seen: bool,
    kind: EndLine,
    stamp: Stamp<'a>,
    rendered: Option<&'a RawValue>,
) -> Document<'a> {
    let ConnEnd {
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
    let progress = kind == EndLine::Progress;
    let mut doc = connection(record, None, stamp, rendered);
    doc.timestamp = stamp.at(*end_ns);
    doc.event.types = Keywords::Static(kind.types());
    doc.event.action = Cow::Borrowed(kind.action());
    if progress {
        doc.event.outcome = None;
    } else {
        doc.event.outcome = Some(Cow::Borrowed(outcome.name()));
        doc.event.end = Some(stamp.at(*end_ns));
    }
    // Without a duration the start is unknown (a connection older than egret).
    doc.event.start = duration_ns.map(|_| stamp.at(record.ktime_ns));
    doc.event.duration = *duration_ns;
    doc.error = error
        .filter(|_| *outcome == Outcome::Failure || *reset)
        .map(errno_error);
    doc.source = Some(Endpoint {
        ip: source.map(|(ip, _)| Cow::Owned(ip.to_string())),
        port: source.map(|(_, port)| port),
        bytes: *bytes_sent,
        ..Endpoint::default()
    });
    if let Some(destination) = doc.destination.as_mut() {
        destination.bytes = *bytes_received;
    }
    doc.egret.tcp = Some(Tcp {
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

/// `error` for an errno.
fn errno_error(errno: u32) -> Error<'static> {
    Error {
        code: Cow::Owned(conn::errno_name(errno)),
        message: Cow::Borrowed(conn::errno_message(errno)),
    }
}

/// `ip:port` (`[ip]:port` for IPv6), as a sentence names a destination.
fn destination_text(record: &ConnectionRecord) -> String {
    let address = std::net::SocketAddr::new(record.ip, record.port).to_string();
    match record.first_bytes.as_ref().and_then(|f| f.name()) {
        Some((name, source)) => format!("{address} ({} {name})", source.name()),
        None => address,
    }
}

/// The alert for a process whose connects to one destination keep failing.
pub fn failure_alert<'a>(
    record: &'a ConnectionRecord,
    count: u64,
    window_seconds: u64,
    error: Option<u32>,
    stamp: Stamp<'a>,
) -> Document<'a> {
    let mut doc = connection(record, None, stamp, None);
    doc.event.kind = Cow::Borrowed("alert");
    doc.event.dataset = Cow::Borrowed("egret.alert");
    doc.event.severity = Some(SEVERITY_FAILURES);
    doc.event.types = Keywords::Static(&["connection", "error"]);
    doc.event.action = Cow::Borrowed("connection-failures");
    doc.event.outcome = Some(Cow::Borrowed("failure"));
    doc.rule = Some(Name::of("connection-failures"));
    let process = &record.process;
    let exe = process
        .executable
        .as_deref()
        .unwrap_or("executable unknown");
    let why = error.map_or("failed", conn::errno_message);
    doc.message = Some(Cow::Owned(format!(
        "{} (pid {}, {exe}): {count} connects to {}/{} failed within {window_seconds}s (last: {why})",
        process.name,
        process.pid,
        destination_text(record),
        record.transport.name()
    )));
    doc.error = error.map(errno_error);
    doc.egret.failures = Some(Failures {
        count,
        window_seconds,
    });
    doc
}

/// The alert line for an unapproved or blocked connection: the connection's own fields,
/// plus `rule.name` = `unapproved-destination`, a sentence, severity and the repeat count.
pub fn alert<'a>(
    record: &'a ConnectionRecord,
    repeats: u64,
    window_seconds: u64,
    stamp: Stamp<'a>,
) -> Document<'a> {
    let mut doc = connection(record, None, stamp, None);
    let blocked = record.policy.as_ref().map(|p| p.verdict) == Some(PolicyVerdict::Blocked);
    doc.event.kind = Cow::Borrowed("alert");
    doc.event.dataset = Cow::Borrowed("egret.alert");
    doc.event.severity = Some(if blocked {
        SEVERITY_BLOCKED
    } else {
        SEVERITY_UNAPPROVED
    });
    doc.event.types = Keywords::Static(if blocked {
        &["connection", "denied"]
    } else {
        &["connection", "start"]
    });
    doc.rule = Some(Name::of("unapproved-destination"));
    doc.message = Some(Cow::Owned(alert_message(
        record,
        blocked,
        repeats,
        window_seconds,
    )));
    doc.egret.alert = Some(Alert {
        repeats,
        window_seconds,
    });
    doc
}

fn alert_message(
    record: &ConnectionRecord,
    blocked: bool,
    repeats: u64,
    window_seconds: u64,
) -> String {
    let process = &record.process;
    let what = match (record.action, blocked) {
        (Action::Connect, false) => "connected to",
        (Action::Send, false) => "sent datagrams to",
        (Action::Connect, true) => "was refused a connection to",
        (Action::Send, true) => "was refused sending to",
    };
    let exe = process
        .executable
        .as_deref()
        .unwrap_or("executable unknown");
    let mut message = format!(
        "{} (pid {}, {exe}) {what} {}/{}, not approved by policy",
        process.name,
        process.pid,
        destination_text(record),
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

/// The `dns` line for one answer, and the process that asked, if known.
pub fn dns<'a>(
    answer: &'a Answer,
    asker: Option<&'a ProcessInfo>,
    stamp: Stamp<'a>,
) -> Document<'a> {
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
        trust,
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
    let answer = |record: &'a Record| {
        let Record {
            name,
            rtype,
            class: _,
            ttl,
            data,
        } = record;
        DnsAnswer {
            name: Cow::Owned(name.to_string()),
            rtype: Cow::Owned(dns_type_name(*rtype)),
            ttl: *ttl,
            data: Cow::Owned(match data {
                RData::A(ip) => ip.to_string(),
                RData::Aaaa(ip) => ip.to_string(),
                RData::Cname(target) => target.to_string(),
                RData::Other { rtype: _, len } => format!("({len} bytes)"),
            }),
        }
    };
    let resolver = resolver.to_canonical();
    Document {
        timestamp: stamp.at(*ktime_ns),
        event: Event {
            category: Keywords::Static(&["network"]),
            types: Keywords::Static(&["protocol", "info"]),
            ..stamp.event("event", "dns-answer", "egret.dns")
        },
        dns: Some(Box::new(Dns {
            id: *id,
            kind: Cow::Borrowed("answer"),
            response_code: Cow::Owned(dns_rcode_name(*rcode)),
            question: questions.first().map(|q| DnsQuestion {
                name: Cow::Borrowed(q.name.as_str()),
                qtype: Cow::Owned(dns_type_name(q.qtype)),
                class: Cow::Owned(dns_class_name(q.qclass)),
            }),
            answers: answers.iter().map(answer).collect(),
            resolved_ip: resolved
                .iter()
                .map(|r| Cow::Owned(r.address.to_string()))
                .collect(),
            header_flags: if *truncated {
                vec![Cow::Borrowed("TC")]
            } else {
                Vec::new()
            },
        })),
        process: asker.map(|p| {
            ProcessOut::Fields(Box::new(Process {
                pid: p.pid,
                name: Cow::Borrowed(&p.name),
                executable: p.executable.as_deref().map(Cow::Borrowed),
                args: Cow::Borrowed(&p.args),
                ..Process::default()
            }))
        }),
        source: Some(Endpoint {
            ip: Some(Cow::Owned(resolver.to_string())),
            port: Some(*port),
            ..Endpoint::default()
        }),
        network: Some(Network {
            transport: Cow::Borrowed(if *transport == 6 { "tcp" } else { "udp" }),
            network_type: Cow::Borrowed(if resolver.is_ipv4() { "ipv4" } else { "ipv6" }),
            protocol: Some(Cow::Borrowed("dns")),
            direction: Cow::Borrowed("ingress"),
            iana_number: None,
        }),
        host: stamp.host(),
        egret: Egret {
            socket: Some(Socket { cookie: *cookie }),
            dns: Some(EgretDns {
                names: None,
                netns: Some(*netns),
                cut: *cut,
                approved_rules: (0..32).filter(|i| approved & (1 << i) != 0).collect(),
                trusted: Some(trust.believed()),
                untrusted: trust.reasons().iter().map(|r| Cow::Borrowed(*r)).collect(),
            }),
            ..Egret::default()
        },
        ..Document::default()
    }
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

/// The `metric` line: every counter, now.
pub fn metric<'a>(metrics: &'a Metrics, stamp: Stamp<'a>) -> Document<'a> {
    Document {
        timestamp: stamp.at(boot_ns_now()),
        event: stamp.event("metric", "stats", "egret.stats"),
        host: stamp.host(),
        egret: Egret {
            metrics: Some(Box::new(*metrics)),
            ..Egret::default()
        },
        ..Document::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    pub(super) fn stamp<'a>(sequence: u64, clock: &'a WallClock, host_name: &'a str) -> Stamp<'a> {
        Stamp {
            sequence,
            clock,
            host_name,
        }
    }
    use crate::{
        cgroup::CgroupInfo,
        process::ProcessInfo,
        record::{sample, Action, Transport},
    };

    pub(super) fn record(action: Action) -> ConnectionRecord {
        ConnectionRecord {
            ktime_ns: 1_000_000_000,
            tid: 4243,
            users: Users {
                names: vec![(1000, "alice".into())],
                ..Users::same(1000, 100)
            },
            process: Arc::new(ProcessInfo {
                ppid: Some(1),
                executable: Some("/usr/bin/curl".into()),
                name: "curl".into(),
                args: vec!["curl".into(), "-v".into(), "http://x".into()],
                start_ns: Some(500_000_000),
                ..ProcessInfo::from_comm(4242, "curl")
            }),
            cgroup: Arc::new(CgroupInfo {
                id: 77,
                path: Some("/system.slice/app.service".into()),
                systemd_unit: Some("app.service".into()),
            }),
            cookie: 9,
            ..sample(action, Transport::Tcp, "93.184.216.34", 443)
        }
    }

    #[test]
    fn renders_a_connect_line_with_nested_ecs_fields() {
        let clock = WallClock::with_offset(1_795_305_600_000_000_000);
        let rec = record(Action::Connect);
        let doc = connection(&rec, None, stamp(3, &clock, "host1"), None);
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
        let v =
            serde_json::to_value(connection(&rec, Some(udp), stamp(4, &clock, "h"), None)).unwrap();
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
        let start =
            serde_json::to_value(connection(&rec, None, stamp(1, &clock, "h"), None)).unwrap();
        let end = ConnEnd {
            outcome: Outcome::Failure,
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
        let v = serde_json::to_value(super::end(
            &rec,
            &end,
            true,
            EndLine::End,
            stamp(2, &clock, "h"),
            None,
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
        let fresh =
            serde_json::to_value(connection(&rec, None, stamp(1, &clock, "h"), None)).unwrap();
        let mut cache = ProcessJson::default();
        let first = cache.get(&rec, &clock).unwrap().get().to_owned();
        assert_eq!(
            cache.get(&rec, &clock).unwrap().get(),
            first,
            "served from the cache"
        );
        let raw = cache.get(&rec, &clock).unwrap();
        let reused =
            serde_json::to_value(connection(&rec, None, stamp(1, &clock, "h"), Some(raw))).unwrap();
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
        let v = serde_json::to_value(metric(&metrics, stamp(9, &WallClock::with_offset(0), "h")))
            .unwrap();
        assert_eq!(v["event"]["kind"], "metric");
        assert!(v["event"].get("category").is_none());
        assert_eq!(v["egret"]["metrics"]["events_received"], 5);
    }
}

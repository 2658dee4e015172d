//! The agent: loads the programs, drains the ring buffer in batches, joins each event with
//! process and cgroup identity, and writes JSON lines until asked to stop.

use std::{future::Future, path::PathBuf, pin::pin, time::Duration};

pub use crate::policy::active::load_policy;

use agent_common::{
    decode, ConnEndEvent, ConnectEvent, Counter, Event, EventHeader, ExecArgsEvent, ExecEvent,
    ExitEvent, ForkEvent, SockReleaseEvent, UdpFlowKey, EXEC_FLAG_ARGS_TRUNCATED,
    EXEC_FLAG_PATH_TRUNCATED, EXEC_FLAG_READ_FAILED,
};
use tokio::{io::unix::AsyncFd, time::MissedTickBehavior};

use crate::{
    alerts::Alerts,
    cgroup::{self, CgroupError, CgroupResolver},
    clock::{boot_ns_now, WallClock},
    conn::{self, ConnEnd, Failures, OpenConns, Outcome},
    container::{ContainerResolver, Lookup, RuntimeConfig},
    dns::{
        parse_cut_message, parse_message, resolution,
        state::{dns_doc, DnsLine, DnsState},
        CacheConfig,
    },
    ecs::{ConnectionDoc, MetricDoc, Metrics, UdpSummary},
    kernel::{self, KernelConfig, KernelError, KernelLookups, KernelMaps, OnExit, PolicyMaps},
    output::{OutputError, Sink},
    policy::{
        active::{ActivePolicy, FileWatch},
        compile,
        matcher::{Connection, Verdict},
        Mode, PolicyErrors,
    },
    process::{split_nul, ExecArgs, ProcessTable},
    record::{comm_str, Action, ConnectionRecord, Transport},
    record::{PolicyOutcome, PolicyVerdict},
    udp::{FlowReport, UdpFlows},
    users::UserNames,
};

/// Everything `egret run` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// cgroup v2 directory to attach to; `None` = the root of the cgroup2 mount.
    pub cgroup: Option<PathBuf>,
    /// `-` for stdout, else a file appended to.
    pub output: String,
    pub ring_buffer_size: u32,
    pub drain_interval: Duration,
    /// `None`: a metric line only at shutdown.
    pub metrics_interval: Option<Duration>,
    pub udp_idle: Duration,
    pub udp_report_interval: Duration,
    pub process_exit_grace: Duration,
    pub max_processes: usize,
    /// Created (with egret's pid) once the programs are attached and the drain loop runs.
    pub ready_file: Option<PathBuf>,
    /// The allowlist; `None` = the built-in default (audit, loopback approved, nothing else).
    pub policy: Option<PathBuf>,
    /// Alert lines also go here.
    pub alerts: Option<String>,
    /// Rotation and retention of the `output` and `alerts` files.
    pub output_files: crate::output::FileOptions,
    /// Every line also goes to syslog.
    pub syslog: Option<crate::output::SyslogConfig>,
    pub alert_window: Duration,
    /// Reload the policy when its file changes.
    pub watch: bool,
    pub on_exit: OnExit,
    pub pin_path: PathBuf,
    /// Resolver port whose responses are captured.
    pub dns_port: u16,
    /// Bounds on how long an answer's addresses stay associated with its names.
    pub dns_ttl_floor: Duration,
    pub dns_ttl_ceiling: Duration,
    /// Write a `dns` line per answer observed.
    pub dns_events: bool,
    /// Container runtimes to ask for container and pod identity.
    pub runtimes: RuntimeConfig,
    /// A `connection-progress` line for every TCP connection open this long, again every
    /// interval; `None` = off.
    pub progress_interval: Option<Duration>,
    /// Alert when a process's connects to one destination fail this many times within
    /// `failure_alert_window`; 0 = off.
    pub failure_alert_count: u64,
    pub failure_alert_window: Duration,
    /// Follow each TCP connection to its end and count UDP bytes (sock_ops and packet-path
    /// programs); off: start lines only, the lowest overhead.
    pub connection_ends: bool,
    /// The Prometheus endpoint (`None`: none).
    pub metrics_listen: Option<crate::metrics::Listen>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroup: None,
            output: "-".to_owned(),
            ring_buffer_size: 16 * 1024 * 1024,
            drain_interval: Duration::from_millis(20),
            metrics_interval: Some(Duration::from_secs(10)),
            udp_idle: Duration::from_secs(5),
            udp_report_interval: Duration::from_secs(60),
            process_exit_grace: Duration::from_secs(30),
            max_processes: 65536,
            ready_file: None,
            policy: None,
            alerts: None,
            output_files: crate::output::FileOptions::default(),
            syslog: None,
            alert_window: Duration::from_secs(60),
            watch: false,
            on_exit: OnExit::Detach,
            pin_path: PathBuf::from("/sys/fs/bpf/egret"),
            dns_port: 53,
            dns_ttl_floor: Duration::from_secs(5),
            dns_ttl_ceiling: Duration::from_secs(3600),
            dns_events: false,
            runtimes: RuntimeConfig::default(),
            progress_interval: None,
            failure_alert_count: 5,
            failure_alert_window: Duration::from_secs(60),
            connection_ends: true,
            metrics_listen: crate::metrics::Listen::from_arg(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{0} is not a cgroup v2 directory (find the cgroup2 mount in /proc/self/mounts)")]
    NotCgroup2(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("watching the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Per-event state: the tables events are joined with, and the output.
struct Pipeline {
    processes: ProcessTable,
    cgroups: CgroupResolver,
    users: UserNames,
    udp: UdpFlows,
    clock: WallClock,
    sink: Sink,
    host_name: String,
    sequence: u64,
    metrics: Metrics,
    udp_idle_ns: u64,
    udp_report_interval_ns: u64,
    policy: ActivePolicy,
    policy_path: Option<PathBuf>,
    alerts: Alerts,
    alert_window_secs: u64,
    alert_sink: Option<Sink>,
    dns: DnsState,
    containers: ContainerResolver,
    /// Connections from a container whose identity is being fetched, held up to the grace
    /// period so their lines carry it.
    held: Vec<Held>,
    /// cgroup id → scope bits earned by identified containers (block mode), to install.
    container_scopes: std::collections::HashMap<u64, u64>,
    /// Block mode: approvals of answer addresses the kernel did not write itself (past its
    /// bound of records per answer, or in the cut tail of a long message), to install after
    /// the drain.
    dns_learned: Vec<(agent_common::DnsAllowKey, u64)>,
    /// New container cgroups being identified ahead of their first connection:
    /// (cgroup path, cgroup id, when seen).
    new_containers: Vec<(String, u64, std::time::Instant)>,
    /// Started TCP connections waiting for their end.
    tcp: OpenConns,
    failures: Failures,
    progress_interval_ns: Option<u64>,
    /// When open connections were last checked for ends that never came.
    lost_check_ns: u64,
    /// `--connection-ends on`.
    track_tcp: bool,
    /// Connections open before egret started, followed to their release (by socket cookie).
    preexisting: std::collections::HashMap<u64, crate::sockdiag::DiagSock>,
    /// Lines by kind and verdict, ring buffer fill, the Prometheus endpoint.
    telemetry: crate::metrics::Telemetry,
    /// `process` objects rendered once for repeated lines of the same process.
    process_json: crate::ecs::ProcessJson,
}

/// A UDP flow a connection line opens: a `send` (its first datagram, `prev_datagrams` of the
/// previous period) or a connected socket's `connect`.
#[derive(Clone, Copy)]
struct FlowOpen {
    key: UdpFlowKey,
    prev_datagrams: u64,
    connected: bool,
}

/// A connection waiting (briefly) for its container's identity.
struct Held {
    since: std::time::Instant,
    record: ConnectionRecord,
    flow: Option<FlowOpen>,
    /// Its end, when it came while the start was held.
    end: Option<ConnEndEvent>,
}

/// Open connections are checked this often for ends that never came (lost records).
const LOST_CHECK_NS: u64 = 30_000_000_000;
/// Most started TCP connections remembered at once (the kernel's map holds as many).
const OPEN_CONNS_MAX: usize = 262_144;

/// Most connections held for container identity at once; beyond, lines go out with the id only.
const HELD_MAX: usize = 4096;

impl Pipeline {
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Handles one ring-buffer record. Never fails: problems are counted.
    fn handle(&mut self, bytes: &[u8], maps: &KernelLookups) {
        self.metrics.events_received += 1;
        let event = match decode(bytes) {
            Ok(event) => event,
            Err(err) => {
                self.metrics.decode_errors += 1;
                self.metrics.events_dropped_userspace += 1;
                log::warn!("dropping an undecodable record: {err}");
                return;
            }
        };
        match event {
            Event::Connect(ev) => self.on_connection(Action::Connect, &ev),
            Event::Send(ev) => self.on_connection(Action::Send, &ev),
            Event::ExecArgs(ev) => self.on_exec_args(&ev),
            Event::Exec(ev) => self.on_exec(&ev),
            Event::Fork(ev) => self.on_fork(&ev),
            Event::Exit(ev) => self.on_exit(&ev),
            Event::SockRelease(ev) => self.on_sock_release(&ev, maps),
            Event::Dns(ev) => self.on_dns(&ev),
            Event::CgroupMkdir(ev) => self.on_cgroup_mkdir(&ev),
            Event::ConnEnd(ev) => self.on_conn_end(&ev),
        }
    }

    fn resolve(&mut self, action: Action, ev: &ConnectEvent) -> Option<ConnectionRecord> {
        let EventHeader {
            tgid,
            uid,
            cgroup_id,
            comm,
            ..
        } = &ev.header;
        let process = self.processes.resolve(*tgid, &comm_str(comm));
        let cgroup = self.cgroups.resolve(*cgroup_id);
        let user_name = self.users.name(*uid).map(str::to_owned);
        ConnectionRecord::new(action, ev, process, cgroup, user_name)
    }

    fn on_connection(&mut self, action: Action, ev: &ConnectEvent) {
        let Some(mut record) = self.resolve(action, ev) else {
            self.metrics.decode_errors += 1;
            self.metrics.events_dropped_userspace += 1;
            return;
        };
        let ConnectEvent {
            header,
            cookie,
            family,
            port,
            addr,
            prev_datagrams,
            ..
        } = *ev;
        if port == self.dns.port {
            self.dns.remember_asker(cookie, header.tgid);
        }
        record.dns = self.dns.names_for(&record);
        let connected_udp =
            action == Action::Connect && record.transport == Transport::Udp && !record.blocked();
        let flow = (action == Action::Send || connected_udp).then_some(FlowOpen {
            key: UdpFlowKey {
                cookie,
                family,
                port,
                _pad: 0,
                addr,
            },
            prev_datagrams,
            connected: connected_udp,
        });
        let now = std::time::Instant::now();
        record.container = match record.cgroup.path.as_deref() {
            Some(path) => self.containers.lookup(path, now),
            None => Lookup::NotAContainer,
        };
        if matches!(record.container, Lookup::Pending(_)) && self.held.len() < HELD_MAX {
            self.held.push(Held {
                since: now,
                record,
                flow,
                end: None,
            });
            return;
        }
        self.finish_connection(record, flow);
    }

    /// Writes a connection (or opens its UDP flow) once its identity is complete.
    fn finish_connection(&mut self, mut record: ConnectionRecord, flow: Option<FlowOpen>) {
        self.learn_container_scope(&record);
        self.apply_policy(&mut record);
        let alert = record
            .policy
            .as_ref()
            .is_some_and(|p| p.verdict != PolicyVerdict::Approved)
            .then(|| self.alerts.occurrence(&record))
            .flatten();
        match flow {
            None => {
                self.write_connection(&record, None);
                if record.transport == Transport::Tcp && record.action == Action::Connect {
                    if record.blocked() {
                        // Refused in the kernel: it ends where it started.
                        let end = conn::blocked(record.ktime_ns);
                        self.write_end(&record, &end, true);
                    } else if self.track_tcp {
                        self.tcp.insert(record);
                    }
                }
            }
            // A connected socket's `connect` line goes out now; its datagrams are summed up
            // in `send` lines like any flow's.
            Some(FlowOpen {
                key,
                prev_datagrams: _,
                connected: true,
            }) => {
                self.write_connection(&record, None);
                record.action = Action::Send;
                if let Some(ended) = self.udp.open(key, record, 0, 0) {
                    self.write_flow(&ended);
                }
            }
            // The flow's own line is written when it ends; its alert goes out now.
            Some(FlowOpen {
                key,
                prev_datagrams,
                connected: false,
            }) => {
                if let Some(ended) = self.udp.open(key, record, prev_datagrams, 1) {
                    self.write_flow(&ended);
                }
            }
        }
        if let Some(alert) = alert {
            self.write_alert(&alert.record, alert.repeats);
        }
    }

    /// A cgroup was created: if it is a container's, start identifying it now, so a
    /// container-scoped rule applies from (nearly) its first connection.
    fn on_cgroup_mkdir(&mut self, ev: &agent_common::CgroupMkdirEvent) {
        let agent_common::CgroupMkdirEvent {
            header: _,
            id,
            path_len,
            _pad: _,
            path,
        } = ev;
        let path = String::from_utf8_lossy(path.get(..*path_len as usize).unwrap_or_default())
            .into_owned();
        if path.starts_with('/') {
            self.cgroups.remember(*id, &path);
        }
        if crate::container::parse(&path).is_none() || self.new_containers.len() >= HELD_MAX {
            return;
        }
        let now = std::time::Instant::now();
        let _ = self.containers.lookup(&path, now);
        self.new_containers.push((path, *id, now));
    }

    /// Held connections whose container is now known (or whose grace ran out) go out; new
    /// containers that got identified earn their scope bits.
    fn release_held(&mut self) {
        if self.held.is_empty() && self.new_containers.is_empty() {
            return;
        }
        self.containers.poll_results();
        let now = std::time::Instant::now();
        let watching = std::mem::take(&mut self.new_containers);
        for (path, id, since) in watching {
            match self.containers.lookup(&path, now) {
                Lookup::Known(info) => self.learn_workload_scope(id, &info),
                Lookup::Pending(_) if now.duration_since(since) < Duration::from_secs(10) => {
                    self.new_containers.push((path, id, since));
                }
                Lookup::Pending(_) | Lookup::Unknown(_) | Lookup::NotAContainer => {}
            }
        }
        let held = std::mem::take(&mut self.held);
        for mut h in held {
            let path = h.record.cgroup.path.clone().unwrap_or_default();
            let lookup = self.containers.settle(&path, h.since, now);
            if matches!(lookup, Lookup::Pending(_)) {
                self.held.push(h);
            } else {
                h.record.container = lookup;
                self.finish_connection(h.record, h.flow);
                if let Some(end) = h.end {
                    self.on_conn_end(&end);
                }
            }
        }
    }

    /// Block mode: an identified container's cgroup earns the scope bits of the `containers`,
    /// `namespaces` and `pods` selectors it matches (installed after the drain).
    fn learn_container_scope(&mut self, record: &ConnectionRecord) {
        if let Lookup::Known(info) = &record.container {
            let info = std::sync::Arc::clone(info);
            self.learn_workload_scope(record.cgroup.id, &info);
        }
    }

    fn learn_workload_scope(&mut self, cgroup_id: u64, info: &crate::container::ContainerInfo) {
        if !self.policy.compiled.has_scopes() {
            return;
        }
        let workload = compile::Workload {
            container_name: info.name.as_deref(),
            container_image: info.image.as_deref(),
            namespace: info.pod.as_ref().map(|p| p.namespace.as_str()),
            pod: info.pod.as_ref().map(|p| p.name.as_str()),
        };
        let bits = compile::workload_bits(&self.policy.compiled.scopes, &workload);
        if bits != 0 {
            self.container_scopes.insert(cgroup_id, bits);
        }
    }

    /// Installs answer addresses the kernel left for userspace.
    fn apply_dns_learned(&mut self, maps: &mut PolicyMaps) {
        if self.dns_learned.is_empty() {
            return;
        }
        let learned = std::mem::take(&mut self.dns_learned);
        if let Err(err) = maps.learn(&learned) {
            log::error!("adding answer addresses to the kernel: {err}");
        }
    }

    /// Installs the scope bits of containers identified since the last call.
    fn apply_container_scopes(&mut self, maps: &mut PolicyMaps) {
        if self.container_scopes.is_empty() {
            return;
        }
        let scopes = std::mem::take(&mut self.container_scopes);
        if let Err(err) = maps.add_scopes(&scopes) {
            log::error!("updating container-scoped rules: {err}");
        }
    }

    /// The policy's verdict: the kernel's refusal, else the userspace matcher's (which also
    /// names the approving rule).
    fn apply_policy(&self, record: &mut ConnectionRecord) {
        let mode = self.policy.policy.mode;
        let outcome = if record.blocked() {
            PolicyOutcome {
                verdict: PolicyVerdict::Blocked,
                rule: None,
                mode,
            }
        } else {
            let container = match &record.container {
                Lookup::Known(info) => Some(info.as_ref()),
                Lookup::Pending(_) | Lookup::Unknown(_) | Lookup::NotAContainer => None,
            };
            let connection = Connection {
                ip: record.ip,
                port: record.port,
                protocol: record.transport.protocol(),
                executable: record.process.executable.as_deref(),
                systemd_unit: record.cgroup.systemd_unit.as_deref(),
                cgroup_path: record.cgroup.path.as_deref(),
                dns_names: record.dns.as_ref().map_or(&[], |d| d.questions.as_slice()),
                container_name: container.and_then(|c| c.name.as_deref()),
                container_image: container.and_then(|c| c.image.as_deref()),
                pod_namespace: container
                    .and_then(|c| c.pod.as_ref())
                    .map(|p| p.namespace.as_str()),
                pod_name: container
                    .and_then(|c| c.pod.as_ref())
                    .map(|p| p.name.as_str()),
            };
            match self.policy.matcher.evaluate(&connection) {
                Verdict::Approved { rule } => PolicyOutcome {
                    verdict: PolicyVerdict::Approved,
                    rule: Some(rule.to_owned()),
                    mode,
                },
                Verdict::Unapproved => PolicyOutcome {
                    verdict: PolicyVerdict::Unapproved,
                    rule: None,
                    mode,
                },
            }
        };
        record.policy = Some(outcome);
    }

    fn write_alert(&mut self, record: &ConnectionRecord, repeats: u64) {
        let sequence = self.next_sequence();
        let doc = ConnectionDoc::alert(
            record,
            repeats,
            self.alert_window_secs,
            sequence,
            &self.clock,
            &self.host_name,
        );
        if Self::write_alert_doc(
            &mut self.sink,
            self.alert_sink.as_mut(),
            &mut self.metrics,
            &mut self.telemetry,
            &doc,
        ) {
            self.metrics.alerts += 1;
        }
    }

    /// Writes an alert line to the output and to `--alerts`; true when the output took it.
    fn write_alert_doc(
        sink: &mut Sink,
        alert_sink: Option<&mut Sink>,
        metrics: &mut Metrics,
        telemetry: &mut crate::metrics::Telemetry,
        doc: &ConnectionDoc<'_>,
    ) -> bool {
        let main = sink.write_line(doc);
        let extra = alert_sink.map(|sink| sink.write_line(doc));
        if let Some(Err(err)) = extra {
            metrics.write_errors += 1;
            if metrics.write_errors.is_power_of_two() {
                log::error!("{err}");
            }
        }
        match main {
            Ok(()) => {
                telemetry.line(&doc.event, doc.egret.policy.as_ref());
                metrics.lines_written += 1;
                true
            }
            Err(err) => {
                write_failed(metrics, &err);
                false
            }
        }
    }

    /// Loads the policy file again; an invalid one is refused and the old one stays.
    fn reload(&mut self, maps: &mut PolicyMaps, why: &str) {
        let Some(path) = self.policy_path.clone() else {
            log::info!("{why}: no --policy file, the built-in policy stays");
            return;
        };
        let (policy, compiled) = match load_policy(Some(&path)) {
            Ok(loaded) => loaded,
            Err(errors) => {
                self.metrics.policy_reload_failures += 1;
                log::error!(
                    "{why}: new policy refused, {} stays in force:\n{errors}",
                    self.policy.summary()
                );
                return;
            }
        };
        let ids = compile::scope_ids(&compiled, self.cgroups.mount());
        let learned = self.dns.learned(&compiled, boot_ns_now());
        if let Err(err) = maps.install(&compiled, &ids, &learned) {
            self.metrics.policy_reload_failures += 1;
            log::error!("{why}: {err}; {} stays in force", self.policy.summary());
            return;
        }
        self.policy = ActivePolicy::new(policy, compiled);
        self.metrics.policy_reloads += 1;
        log::info!("{why}: policy {} in force", self.policy.summary());
    }

    /// Scoped rules: cgroups created since the policy was installed get their bits.
    fn refresh_scopes(&mut self, maps: &mut PolicyMaps) {
        if !self.policy.compiled.has_scopes() {
            return;
        }
        let ids = compile::scope_ids(&self.policy.compiled, self.cgroups.mount());
        match maps.add_scopes(&ids) {
            Ok(0) => {}
            Ok(n) => log::debug!("{n} new cgroups matched scoped rules"),
            Err(err) => log::error!("updating scoped rules: {err}"),
        }
    }

    /// A DNS response the kernel saw: learn its mappings; maybe write a `dns` line.
    fn on_dns(&mut self, ev: &agent_common::DnsEvent) {
        let agent_common::DnsEvent {
            header,
            cookie,
            netns,
            family: _,
            sport,
            transport,
            flags,
            _pad: _,
            msg_len: _,
            captured,
            approved,
            _pad2: _,
            saddr,
            payload,
        } = ev;
        self.dns.stats.messages += 1;
        let cut = flags & agent_common::DNS_FLAG_CUT != 0;
        if cut {
            self.dns.stats.cut += 1;
        }
        let bytes = payload.get(..*captured as usize).unwrap_or_default();
        // A cut message keeps the answers that are whole before the cut.
        let parsed = if cut {
            parse_cut_message(bytes)
        } else {
            parse_message(bytes)
        };
        let message = match parsed {
            Ok(message) => message,
            Err(err) => {
                self.dns.stats.malformed += 1;
                log::debug!("skipping a malformed DNS response: {err}");
                return;
            }
        };
        let pid = self.dns.askers.get(cookie).copied();
        let resolved = resolution(&message);
        for r in &resolved {
            self.dns.cache.insert(
                *netns,
                r.address,
                &r.name,
                &r.chain,
                r.ttl,
                pid,
                header.ktime_ns,
            );
        }
        self.dns.stats.answers += resolved.len() as u64;
        // The kernel approves an approved answer's addresses before delivery, within its
        // parsing bounds (DNS_ANSWERS_MAX records, compressed owner names, the first 1232 bytes).
        // Userspace completes what lies past them right after the drain: not race-free for
        // those addresses (docs/dns.md), but never left out.
        if self.policy.compiled.block && !self.policy.compiled.domain_rules.is_empty() {
            self.dns_learned.extend(self.dns.learned_for(
                &self.policy.compiled,
                *netns,
                &resolved,
                header.ktime_ns,
            ));
        }
        if self.dns.events {
            let resolver = match ev.family {
                agent_common::AF_INET => {
                    std::net::IpAddr::from([saddr[0], saddr[1], saddr[2], saddr[3]])
                }
                _ => std::net::IpAddr::from(*saddr),
            };
            let asker = pid.map(|pid| self.processes.resolve(pid, ""));
            let sequence = self.next_sequence();
            let doc = dns_doc(DnsLine {
                message: &message,
                resolved_ips: resolved.iter().map(|r| r.address.to_string()).collect(),
                resolver,
                port: *sport,
                transport: *transport,
                netns: *netns,
                cookie: *cookie,
                cut,
                approved: *approved,
                asker: asker.as_deref(),
                ktime_ns: header.ktime_ns,
                sequence,
                clock: &self.clock,
                host_name: &self.host_name,
            });
            match self.sink.write_line(&doc) {
                Ok(()) => {
                    self.metrics.lines_written += 1;
                    self.telemetry.line(&doc.event, None);
                }
                Err(err) => self.write_failed(&err),
            }
        }
    }

    fn on_exec_args(&mut self, ev: &ExecArgsEvent) {
        let ExecArgsEvent {
            header,
            flags,
            argc: _,
            args_len,
            path_len,
            path,
            args,
        } = ev;
        let args_bytes = args.get(..*args_len as usize).unwrap_or(args);
        if flags & EXEC_FLAG_READ_FAILED != 0 && args_bytes.is_empty() {
            // The kernel could not read argv (not resident): let the exec fall back to /proc.
            return;
        }
        let path_bytes = path.get(..*path_len as usize).unwrap_or(path);
        self.processes.on_exec_args(
            header.tid,
            ExecArgs {
                path: String::from_utf8_lossy(path_bytes).into_owned(),
                args: split_nul(args_bytes),
                truncated: flags & (EXEC_FLAG_ARGS_TRUNCATED | EXEC_FLAG_PATH_TRUNCATED) != 0,
                ktime_ns: header.ktime_ns,
            },
        );
    }

    fn on_exec(&mut self, ev: &ExecEvent) {
        let ExecEvent {
            header,
            old_tid,
            filename_len,
            filename,
        } = ev;
        let name = filename.get(..*filename_len as usize).unwrap_or(filename);
        let name = String::from_utf8_lossy(name);
        self.processes.on_exec(
            header.tgid,
            *old_tid,
            &name,
            &comm_str(&header.comm),
            header.ktime_ns,
        );
    }

    fn on_fork(&mut self, ev: &ForkEvent) {
        let ForkEvent {
            header,
            child_tgid,
            _pad: _,
            clone_flags: _,
        } = ev;
        self.processes.on_fork(
            header.tgid,
            *child_tgid,
            &comm_str(&header.comm),
            header.ktime_ns,
        );
    }

    fn on_exit(&mut self, ev: &ExitEvent) {
        let ExitEvent { header } = ev;
        self.processes.on_exit(header.tgid, header.ktime_ns);
    }

    fn on_sock_release(&mut self, ev: &SockReleaseEvent, maps: &KernelLookups) {
        let SockReleaseEvent { header: _, cookie } = ev;
        for report in self.udp.release(*cookie, |key| maps.udp_flow(key)) {
            self.write_flow(&report);
        }
    }

    /// A TCP connection ended: its end line (joined to the start by socket cookie), and a
    /// failure alert when its process keeps failing to reach the destination.
    fn on_conn_end(&mut self, ev: &ConnEndEvent) {
        if let Some(held) = self.held.iter_mut().find(|h| {
            h.record.cookie == ev.cookie
                && h.record.transport == Transport::Tcp
                && h.record.action == Action::Connect
        }) {
            held.end = Some(*ev);
            return;
        }
        if ev.flags & agent_common::CONN_FLAG_PREEXISTING != 0 {
            self.on_preexisting_end(ev);
            return;
        }
        let (record, start_seen) = match self.tcp.remove(ev.cookie) {
            Some(open) => (open.record, true),
            None => match self.record_from_end(ev) {
                Some(record) => (record, false),
                None => {
                    self.metrics.events_dropped_userspace += 1;
                    return;
                }
            },
        };
        if !start_seen {
            self.metrics.tcp_ends_without_start += 1;
        }
        let end = conn::summarize(ev, Some(record.ktime_ns));
        self.write_end(&record, &end, start_seen);
        match end.outcome {
            Outcome::Failure => {
                if let Some(alert) = self.failures.record(&record, end.error, end.end_ns) {
                    self.write_failure_alert(&record, alert.count, alert.error);
                }
            }
            Outcome::Success => self.failures.succeeded(&record),
            Outcome::Unknown => {}
        }
    }

    /// A connection open before egret started was released by its application: its end line,
    /// with the addresses sock_diag reported and the releasing process's identity. Its start
    /// (and so its duration) and its bytes are unknown: no state callback ever ran for it.
    fn on_preexisting_end(&mut self, ev: &ConnEndEvent) {
        let Some(existing) = self.preexisting.remove(&ev.cookie) else {
            self.metrics.events_dropped_userspace += 1;
            return;
        };
        let (family, addr) = match existing.remote.ip() {
            std::net::IpAddr::V4(v4) => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&v4.octets());
                (agent_common::AF_INET, a)
            }
            std::net::IpAddr::V6(v6) => (agent_common::AF_INET6, v6.octets()),
        };
        let mut end_ev = *ev;
        end_ev.family = family;
        end_ev.remote_addr = addr;
        end_ev.remote_port = existing.remote.port();
        let Some(record) = self.record_from_end(&end_ev) else {
            self.metrics.events_dropped_userspace += 1;
            return;
        };
        self.metrics.tcp_ends_without_start += 1;
        let mut end = conn::summarize(ev, None);
        end.outcome = Outcome::Success;
        end.source = Some((existing.local.ip(), existing.local.port()));
        end.bytes_sent = None;
        end.bytes_received = None;
        end.retransmits = None;
        end.connect_latency_us = None;
        self.write_end(&record, &end, false);
    }

    /// The identity of a connection whose start egret did not see, from what the kernel kept
    /// (the connecting task) and the socket's addresses. `None` without a destination.
    fn record_from_end(&mut self, ev: &ConnEndEvent) -> Option<ConnectionRecord> {
        let event = ConnectEvent {
            header: ev.header,
            cookie: ev.cookie,
            family: ev.family,
            port: ev.remote_port,
            sock_type: 1,
            protocol: 6,
            addr: ev.remote_addr,
            prev_datagrams: 0,
            verdict: agent_common::VERDICT_NONE,
            _pad: 0,
            netns: ev.netns,
        };
        crate::record::destination_ip(ev.family, &ev.remote_addr)?;
        let mut record = self.resolve(Action::Connect, &event)?;
        record.dns = self.dns.names_for(&record);
        record.container = match record.cgroup.path.as_deref() {
            Some(path) => self.containers.lookup(path, std::time::Instant::now()),
            None => Lookup::NotAContainer,
        };
        if let Lookup::Pending(reference) = record.container {
            record.container = Lookup::Unknown(reference);
        }
        self.apply_policy(&mut record);
        if record.ktime_ns == ev.header.ktime_ns && ev.connect_ns != 0 {
            record.ktime_ns = ev.connect_ns;
        }
        Some(record)
    }

    fn write_end(&mut self, record: &ConnectionRecord, end: &ConnEnd, start_seen: bool) {
        if self.write_life_line(record, end, start_seen, false) {
            self.metrics.tcp_connection_ends += 1;
        }
    }

    fn write_progress(&mut self, record: &ConnectionRecord, progress: &ConnEnd) {
        self.write_life_line(record, progress, true, true);
    }

    /// An end or progress line; true when it was written.
    fn write_life_line(
        &mut self,
        record: &ConnectionRecord,
        facts: &ConnEnd,
        start_seen: bool,
        progress: bool,
    ) -> bool {
        let sequence = self.next_sequence();
        let rendered = self.process_json.get(record, &self.clock);
        let doc = ConnectionDoc::end(
            record,
            facts,
            start_seen,
            progress,
            sequence,
            &self.clock,
            &self.host_name,
            rendered,
        );
        match self.sink.write_line(&doc) {
            Ok(()) => {
                self.metrics.lines_written += 1;
                self.telemetry.line(&doc.event, doc.egret.policy.as_ref());
                true
            }
            Err(err) => {
                self.write_failed(&err);
                false
            }
        }
    }

    fn write_failure_alert(&mut self, record: &ConnectionRecord, count: u64, error: Option<u32>) {
        let sequence = self.next_sequence();
        let doc = ConnectionDoc::failure_alert(
            record,
            count,
            self.failures.window_secs(),
            error,
            sequence,
            &self.clock,
            &self.host_name,
        );
        if Self::write_alert_doc(
            &mut self.sink,
            self.alert_sink.as_mut(),
            &mut self.metrics,
            &mut self.telemetry,
            &doc,
        ) {
            self.metrics.failure_alerts += 1;
        }
    }

    /// Progress lines for connections open longer than the interval; ends for connections
    /// whose end record never came (their kernel entry is gone on two checks in a row).
    fn tick_connections(&mut self, now: u64, lookups: &KernelLookups) {
        let check_lost = now.saturating_sub(self.lost_check_ns) >= LOST_CHECK_NS;
        if check_lost {
            self.lost_check_ns = now;
        }
        if self.progress_interval_ns.is_none() && !check_lost {
            return;
        }
        let mut progress = Vec::new();
        let mut lost = Vec::new();
        for (cookie, open) in self.tcp.iter_mut() {
            // Ticks come once a second: half a tick early is on time.
            let due = self.progress_interval_ns.is_some_and(|every| {
                now.saturating_sub(open.last_progress_ns) >= every.saturating_sub(500_000_000)
            });
            let old = now.saturating_sub(open.record.ktime_ns) >= LOST_CHECK_NS;
            if !(due || (check_lost && old)) {
                continue;
            }
            match lookups.conn(*cookie) {
                Some(state) => {
                    open.misses = 0;
                    if due {
                        open.last_progress_ns = now;
                        progress.push((
                            open.record.clone(),
                            conn::progress(&state, open.record.ktime_ns, now),
                        ));
                    }
                }
                None if check_lost && old => {
                    open.misses += 1;
                    if open.misses >= 2 {
                        lost.push(*cookie);
                    }
                }
                None => {}
            }
        }
        for (record, p) in progress {
            self.write_progress(&record, &p);
        }
        for open in self.tcp.take(&lost) {
            self.metrics.tcp_connections_lost += 1;
            let end = conn::lost(open.record.ktime_ns, now);
            self.write_end(&open.record, &end, true);
        }
    }

    fn write_flow(&mut self, report: &FlowReport) {
        self.write_connection(&report.record, Some(report.summary));
    }

    fn write_connection(&mut self, record: &ConnectionRecord, udp: Option<UdpSummary>) {
        let sequence = self.next_sequence();
        let rendered = self.process_json.get(record, &self.clock);
        let doc = ConnectionDoc::with_process(
            record,
            udp,
            sequence,
            &self.clock,
            &self.host_name,
            rendered,
        );
        match self.sink.write_line(&doc) {
            Ok(()) => {
                self.metrics.lines_written += 1;
                self.telemetry.line(&doc.event, doc.egret.policy.as_ref());
            }
            Err(err) => self.write_failed(&err),
        }
    }

    fn write_failed(&mut self, err: &OutputError) {
        write_failed(&mut self.metrics, err);
    }

    /// Once a second: flows that went idle or are due a report, expiry, flush.
    fn tick(&mut self, maps: &mut KernelMaps) {
        let now = boot_ns_now();
        let lookups = &maps.lookups;
        let reports = self
            .udp
            .tick(now, self.udp_idle_ns, self.udp_report_interval_ns, |key| {
                lookups.udp_flow(key)
            });
        for report in &reports {
            self.write_flow(report);
        }
        for alert in self.alerts.tick(now) {
            self.write_alert(&alert.record, alert.repeats);
        }
        self.tick_connections(now, lookups);
        self.refresh_scopes(&mut maps.policy);
        self.processes.expire(now);
        self.dns.cache.expire(now);
        self.containers.expire(std::time::Instant::now());
        self.release_held();
        self.flush();
    }

    /// Writes out and (files) fdatasyncs. A failed flush loses nothing yet (the sink keeps
    /// the lines and tries again), so it counts as a write error, not as dropped lines.
    fn flush(&mut self) {
        if let Err(err) = self.sink.flush() {
            self.metrics.write_errors += 1;
            if self.metrics.write_errors.is_power_of_two() {
                log::error!("{err} ({} write errors so far)", self.metrics.write_errors);
            }
        }
        if let Some(Err(err)) = self.alert_sink.as_mut().map(Sink::flush) {
            self.metrics.write_errors += 1;
            log::error!("{err}");
        }
    }

    /// The counters now: the pipeline's own, the tables' and the kernel's.
    fn snapshot(&self, maps: &KernelLookups) -> Metrics {
        let stats = self.processes.stats;
        Metrics {
            events_lost_kernel: maps.counter(Counter::RingBufFull),
            udp_datagrams_aggregated: maps.counter(Counter::UdpAggregated),
            udp_flow_update_failures: maps.counter(Counter::UdpFlowUpdateFailed),
            process_table_size: self.processes.len() as u64,
            process_table_misses: stats.misses,
            process_table_evicted: stats.evicted,
            exec_without_args: stats.exec_without_args,
            cgroups_cached: self.cgroups.len() as u64,
            udp_flows_open: self.udp.len() as u64,
            udp_flows_evicted: self.udp.stats.evicted,
            alerts_suppressed: self.alerts.suppressed_total,
            dns_messages: self.dns.stats.messages,
            dns_malformed: self.dns.stats.malformed,
            dns_cut: self.dns.stats.cut,
            dns_mappings: self.dns.stats.answers,
            dns_cache_size: self.dns.cache.len() as u64,
            dns_cache_evicted: self.dns.cache.stats.evicted,
            containers_cached: self.containers.len() as u64,
            container_fetches: self.containers.stats.fetches,
            container_fetch_errors: self.containers.stats.fetch_errors,
            container_malformed: self.containers.stats.malformed,
            container_not_found: self.containers.stats.not_found,
            container_requests_dropped: self.containers.stats.requests_dropped,
            containers_held: self.held.len() as u64,
            tcp_connections_open: self.tcp.len() as u64,
            tcp_connections_evicted: self.tcp.evicted,
            tcp_state_missing: maps.counter(Counter::ConnStateMissing),
            tcp_state_update_failures: maps.counter(Counter::ConnUpdateFailed),
            ..self.metrics
        }
    }

    /// Hands the counters to the Prometheus endpoint.
    fn publish(&mut self, maps: &KernelLookups) {
        let metrics = self.snapshot(maps);
        self.telemetry.publish(metrics, self.policy.policy.mode);
    }

    fn write_metrics(&mut self, maps: &KernelLookups) {
        let metrics = Metrics {
            // The metric line itself is counted once written.
            lines_written: self.metrics.lines_written + 1,
            ..self.snapshot(maps)
        };
        let sequence = self.next_sequence();
        let timestamp = self.clock.rfc3339(boot_ns_now());
        match self.sink.write_line(&MetricDoc::new(
            metrics,
            sequence,
            timestamp,
            &self.host_name,
        )) {
            Ok(()) => self.metrics.lines_written += 1,
            Err(err) => self.write_failed(&err),
        }
        self.clock.refresh();
        self.process_json.clear();
    }
}

/// A line that could not be written: counted as dropped; logged once per power of two, so a
/// full disk does not flood the log.
fn write_failed(metrics: &mut Metrics, err: &OutputError) {
    metrics.write_errors += 1;
    metrics.events_dropped_userspace += 1;
    if metrics.write_errors.is_power_of_two() {
        log::error!("{err} ({} write errors so far)", metrics.write_errors);
    }
}

/// Finds the outbound TCP connections open before egret started (sock_diag, every network
/// namespace) and gives each a kernel entry, so its release is reported.
fn follow_preexisting(
    lookups: &mut KernelLookups,
) -> std::collections::HashMap<u64, crate::sockdiag::DiagSock> {
    let (found, errors) = crate::sockdiag::scan_all();
    for err in &errors {
        log::warn!("looking for connections open before egret started: {err}");
    }
    let state = agent_common::ConnState {
        flags: agent_common::CONN_FLAG_PREEXISTING
            | agent_common::CONN_FLAG_SYN_SENT
            | agent_common::CONN_FLAG_ESTABLISHED,
        ..agent_common::ConnState::default()
    };
    let mut followed = std::collections::HashMap::new();
    for sock in found {
        match lookups.follow_existing(sock.cookie, &state) {
            Ok(true) => {
                followed.insert(sock.cookie, sock);
            }
            Ok(false) => {}
            Err(err) => {
                log::warn!("following a connection open before egret started: {err}");
                break;
            }
        }
    }
    if !followed.is_empty() {
        log::info!(
            "following {} outbound TCP connections that were open before egret started",
            followed.len()
        );
    }
    followed
}

/// Drains every record currently in the ring buffer.
fn drain(maps: &mut KernelMaps, pipeline: &mut Pipeline) {
    let KernelMaps {
        events,
        lookups,
        policy,
    } = maps;
    pipeline.telemetry.before_drain();
    while let Some(item) = events.next() {
        pipeline.handle(&item, lookups);
    }
    // Connections whose container identity arrived go out; identified containers' cgroups
    // get their scope bits.
    pipeline.release_held();
    pipeline.apply_container_scopes(policy);
    pipeline.apply_dns_learned(policy);
    if pipeline.telemetry.wanted() {
        pipeline.publish(lookups);
    }
}

/// Runs egret until `shutdown` completes; then detaches, drains what is left, writes a final
/// metric line and flushes. Returns the final metrics.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Metrics, AgentError> {
    let mount = cgroup::cgroup2_mount()?;
    let cgroup_dir = config.cgroup.clone().unwrap_or_else(|| mount.clone());
    if !cgroup::is_cgroup2_dir(&cgroup_dir) {
        return Err(AgentError::NotCgroup2(cgroup_dir.display().to_string()));
    }
    let (policy, compiled) = load_policy(config.policy.as_deref())?;
    // Listening before the programs load: a taken address stops egret before it attaches.
    let mut telemetry = crate::metrics::Telemetry::start(
        config.metrics_listen,
        config.ring_buffer_size,
        config.drain_interval,
    )?;
    let sink = Sink::open(&config.output, &config.output_files, config.syslog.as_ref())?;
    let alert_sink = config
        .alerts
        .as_deref()
        .map(|path| Sink::open(path, &config.output_files, None))
        .transpose()?;

    let mut processes =
        ProcessTable::new(config.max_processes, duration_ns(config.process_exit_grace));
    let scope_ids = compile::scope_ids(&compiled, &mount);
    let (kernel, mut maps) = kernel::load_and_attach(
        &KernelConfig {
            ring_buffer_size: config.ring_buffer_size,
            udp_idle_ns: duration_ns(config.udp_idle),
            on_exit: config.on_exit,
            pin_path: config.pin_path.clone(),
            dns_port: config.dns_port,
            dns_ttl_floor_ns: duration_ns(config.dns_ttl_floor),
            dns_ttl_ceiling_ns: duration_ns(config.dns_ttl_ceiling),
            tcp_progress: config.progress_interval.is_some() && config.connection_ends,
            connection_ends: config.connection_ends,
        },
        &cgroup_dir,
        &compiled,
        &scope_ids,
    )?;
    if kernel.took_over > 0 {
        log::info!(
            "took over {} pinned programs of an earlier egret",
            kernel.took_over
        );
    }
    telemetry.watch_ring(std::os::fd::AsFd::as_fd(&maps.events));
    let (containers, fetcher) = ContainerResolver::new(config.runtimes.clone());
    tokio::spawn(fetcher);
    for warning in containers.startup_warnings() {
        log::warn!("{warning}");
    }
    let active = ActivePolicy::new(policy, compiled);
    log::info!("policy {} in force", active.summary());
    if active.policy.mode == Mode::Block && config.cgroup.is_none() {
        log::warn!("block mode on the whole host: anything the policy does not approve is refused");
    }
    // Seed after attaching: a process that starts in between is seen by the tracepoints, one
    // that exits in between no longer matters.
    let seeded = processes.seed_from_proc();
    log::info!(
        "attached to cgroup {}; {seeded} processes seeded from /proc",
        cgroup_dir.display()
    );

    let mut pipeline = Pipeline {
        processes,
        cgroups: CgroupResolver::new(mount, 65536),
        users: UserNames::new(4096),
        udp: UdpFlows::default(),
        clock: WallClock::new(),
        sink,
        host_name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sequence: 0,
        metrics: Metrics::default(),
        udp_idle_ns: duration_ns(config.udp_idle),
        udp_report_interval_ns: duration_ns(config.udp_report_interval),
        policy: active,
        policy_path: config.policy.clone(),
        alerts: Alerts::new(duration_ns(config.alert_window), 65536),
        alert_window_secs: config.alert_window.as_secs(),
        alert_sink,
        dns: DnsState::new(
            CacheConfig {
                ttl_floor: config.dns_ttl_floor,
                ttl_ceiling: config.dns_ttl_ceiling,
                ..CacheConfig::default()
            },
            config.dns_events,
            config.dns_port,
        ),
        containers,
        held: Vec::new(),
        container_scopes: std::collections::HashMap::new(),
        new_containers: Vec::new(),
        dns_learned: Vec::new(),
        tcp: OpenConns::new(OPEN_CONNS_MAX),
        failures: Failures::new(
            config.failure_alert_count,
            duration_ns(config.failure_alert_window),
            65536,
        ),
        progress_interval_ns: config.progress_interval.map(duration_ns),
        lost_check_ns: boot_ns_now(),
        track_tcp: config.connection_ends,
        preexisting: std::collections::HashMap::new(),
        telemetry,
        process_json: crate::ecs::ProcessJson::default(),
    };
    if config.connection_ends {
        pipeline.preexisting = follow_preexisting(&mut maps.lookups);
    }

    let result = event_loop(&config, &mut maps, &mut pipeline, shutdown).await;

    // Detach first so nothing new arrives, then drain what the kernel already wrote.
    if let Some(dir) = &kernel.pinned_at {
        log::info!(
            "--on-exit keep: the socket programs stay attached and enforce the last policy (pinned at {}) until the next egret takes over",
            dir.display()
        );
    }
    drop(kernel);
    drain(&mut maps, &mut pipeline);
    // Whatever is still waiting for a container's identity goes out with what is known.
    for h in std::mem::take(&mut pipeline.held) {
        let mut record = h.record;
        if let Lookup::Pending(reference) = record.container {
            record.container = Lookup::Unknown(reference);
        }
        pipeline.finish_connection(record, h.flow);
        if let Some(end) = h.end {
            pipeline.on_conn_end(&end);
        }
    }
    // Connections still open: a last progress line each, with what the kernel knows.
    let now = boot_ns_now();
    for open in pipeline.tcp.drain() {
        if let Some(state) = maps.lookups.conn(open.record.cookie) {
            let p = conn::progress(&state, open.record.ktime_ns, now);
            pipeline.write_progress(&open.record, &p);
        }
    }
    let flows = pipeline.udp.drain(|key| maps.lookups.udp_flow(key));
    for report in &flows {
        pipeline.write_flow(report);
    }
    pipeline.write_metrics(&maps.lookups);
    pipeline.flush();
    if let Some(path) = &config.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(pipeline.metrics)
}

async fn event_loop(
    config: &Config,
    maps: &mut KernelMaps,
    pipeline: &mut Pipeline,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // A duplicate of the ring buffer's fd, owned by the AsyncFd, so readiness can be awaited
    // while the ring buffer itself is borrowed mutably for draining.
    let ring_fd = std::os::fd::AsFd::as_fd(&maps.events)
        .try_clone_to_owned()
        .map_err(AgentError::Poll)?;
    // SAFETY: the AsyncFd owns `ring_fd`, so the descriptor stays open while registered.
    let ring_fd =
        unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
            .map_err(|err| AgentError::Poll(err.into()))?;
    let mut drain_tick = tokio::time::interval(config.drain_interval);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut second_tick = tokio::time::interval(Duration::from_secs(1));
    second_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let metrics_every = config
        .metrics_interval
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let mut metrics_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + metrics_every, metrics_every);
    metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    if let Some(path) = &config.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            AgentError::ReadyFile {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    pipeline.telemetry.set_ready(true);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AgentError::Poll)?;
    let mut watch = config
        .watch
        .then(|| config.policy.clone().map(FileWatch::new))
        .flatten();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => {
                drain(maps, pipeline);
                pipeline.reload(&mut maps.policy, "SIGHUP");
            }
            guard = ring_fd.readable() => {
                let mut guard = guard.map_err(AgentError::Poll)?;
                drain(maps, pipeline);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => drain(maps, pipeline),
            _ = second_tick.tick() => {
                drain(maps, pipeline);
                if watch.as_mut().is_some_and(FileWatch::changed) {
                    pipeline.reload(&mut maps.policy, "policy file changed");
                }
                pipeline.tick(maps);
            }
            _ = metrics_tick.tick() => {
                drain(maps, pipeline);
                pipeline.write_metrics(&maps.lookups);
                pipeline.flush();
            }
        }
    }
    pipeline.telemetry.set_ready(false);
    Ok(())
}

//! The pipeline: every record the kernel writes passes through stages with one job each, and
//! every line leaves through the one [`Emitter`].
//!
//! ```text
//! ring buffer ─▶ decode ─▶ identity ─▶ destination ─▶ judgement ─▶ life cycle ─▶ emit ─▶ sinks
//!                 bytes →   process,     DNS names     verdict,      start, end,    render,
//!                 Event     cgroup,                    alerts        UDP flows      write, count
//!                           container
//! ```
//!
//! - [`decode`]: bytes → [`agent_common::Event`]; counts what does not decode.
//! - [`identity`]: the process table (exec, fork, exit), cgroups, users, containers; turns a
//!   connection event into a [`ConnectionRecord`], holding it while its container is identified.
//! - [`destination`]: DNS answers teach names; each record gets the names of its address.
//! - [`judgement`]: the policy's verdict, alert folding, failure alerts, what block mode must
//!   install in the kernel, policy reloads.
//! - [`baseline`]: each workload's learned destinations (`new-destination` alerts) and its
//!   error spikes; the state file, written off the hot path.
//! - [`lifecycle`]: TCP connections from start to end (progress, lost ends, connections older
//!   than egret) and UDP flows.
//! - [`emit`]: the [`Emitter`] renders, numbers, writes and counts every line.
//!
//! This module only wires them: which stage an event goes to, and in which order. The stages
//! never call each other; what one needs from another passes through here. `docs/architecture.md`
//! shows where to add an event kind or an output field.

pub mod baseline;
pub mod decode;
pub mod destination;
pub mod emit;
pub mod fake_kernel;
pub mod firstbytes;
pub mod identity;
pub mod judgement;
pub mod lifecycle;
pub mod replay;
pub mod synthetic;

use std::time::Instant;

use agent_common::{ConnEndEvent, ConnectEvent, Counter, DnsEvent, Event, PayloadEvent};

use crate::{
    clock::boot_ns_now,
    conn,
    kernel::{GateDecision, KernelView, PolicyKernel},
    metrics::Metrics,
    record::{destination_ip, Action, ConnectionRecord, FirstBytesSeen, GateOutcome, Transport},
    sockdiag,
};
use baseline::{BaselineStage, BaselineStats};
use decode::Decoder;
use destination::{Destination, DestinationStats};
use emit::{EmitStats, Emitter, Line};
use firstbytes::{Change, Flights};
use identity::{Identity, IdentityStats, Released};
use judgement::{Judgement, JudgementStats};

use lifecycle::{Lifecycle, LifecycleStats, Pending, Start};

/// The stages, wired.
pub struct Pipeline {
    decode: Decoder,
    identity: Identity<Pending>,
    destination: Destination,
    first_bytes: Flights,
    judgement: Judgement,
    baseline: BaselineStage,
    lifecycle: Lifecycle,
    emitter: Emitter,
    /// Block mode: held first payloads decided during a drain, for the kernel after it.
    name_checks: Vec<NameCheck>,
    /// Gated connections that ended: their kernel gates go.
    ended_gates: Vec<u64>,
}

/// A held first payload's decision, to write into the kernel (and, refused, its socket to
/// destroy: `pid` names the network namespace it lives in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameCheck {
    cookie: u64,
    decision: GateDecision,
    pid: Option<u32>,
}

impl Pipeline {
    pub fn new(
        identity: Identity<Pending>,
        destination: Destination,
        judgement: Judgement,
        lifecycle: Lifecycle,
        emitter: Emitter,
    ) -> Self {
        Self {
            decode: Decoder::default(),
            identity,
            destination,
            first_bytes: Flights::default(),
            judgement,
            baseline: BaselineStage::off(),
            lifecycle,
            emitter,
            name_checks: Vec::new(),
            ended_gates: Vec::new(),
        }
    }

    /// The learned baseline (`--baseline-learn`): with it, the built-in policy no longer
    /// alerts on every destination (new destinations alert instead).
    pub fn set_baseline(&mut self, baseline: BaselineStage) {
        self.judgement.set_baseline_in_use(baseline.in_use());
        self.baseline = baseline;
    }

    pub fn emitter(&mut self) -> &mut Emitter {
        &mut self.emitter
    }

    /// One ring-buffer record, through every stage it concerns. Never fails: problems are
    /// counted.
    pub fn handle(&mut self, bytes: &[u8], kernel: &impl KernelView) {
        let Some(event) = self.decode.decode(bytes) else {
            return;
        };
        match event {
            Event::Connect(ev) => self.on_connection(Action::Connect, &ev),
            Event::Send(ev) => self.on_connection(Action::Send, &ev),
            Event::Exec(ev) => self.identity.on_exec(&ev),
            Event::Fork(ev) => self.identity.on_fork(&ev),
            Event::Exit(ev) => self.identity.on_exit(&ev),
            Event::CgroupMkdir(ev) => self.identity.on_cgroup_mkdir(&ev),
            Event::Dns(ev) => self.on_dns(&ev),
            Event::SockRelease(ev) => {
                self.lifecycle
                    .on_sock_release(&ev, kernel, &mut self.emitter)
            }
            Event::ConnEnd(ev) => self.on_conn_end(&ev),
            Event::Payload(ev) => self.on_payload(&ev),
        }
    }

    /// A connect or a flow's first datagram: identity, names, and — once its container is
    /// known — verdict and start.
    fn on_connection(&mut self, action: Action, ev: &ConnectEvent) {
        let Some(mut record) = self.identity.connection(action, ev) else {
            self.decode.unusable();
            return;
        };
        self.destination.note_query(&record);
        self.destination.name(&mut record);
        let pending = Pending::new(Start::of(ev, &record));
        if let Some((record, pending)) = self.identity.complete(record, pending, Instant::now()) {
            self.start(record, pending.start);
        }
    }

    /// A connection whose identity is complete: judged, started, and its alert (if any)
    /// written after its own line.
    fn start(&mut self, mut record: ConnectionRecord, start: Start) {
        if let crate::container::Lookup::Known(info) = &record.container {
            // The connecting process may be gone (a one-shot container): another of its
            // cgroup's processes shows the same root. Looked at only for a pid not read yet.
            let pid = record.process.pid;
            if !self.destination.watches_container(&info.id, pid) {
                let pid = live_pid_in(
                    pid,
                    self.identity.cgroup_mount(),
                    record.cgroup.path.as_deref(),
                );
                self.destination.add_container(&info.id, pid);
            }
        }
        let mut alert = self.judgement.judge(&mut record);
        if alert.is_none() && !record.gated() {
            // First bytes read while it waited for its container: their name counts too.
            alert = self.judgement.judge_name(&mut record);
        }
        let new = self.baseline.observe(&record);
        self.lifecycle
            .start(record, start, alert.is_none(), &mut self.emitter);
        if let Some(alert) = alert {
            self.emitter.emit(self.judgement.alert_line(&alert));
        }
        if let Some(new) = new {
            self.emitter.emit(new.line());
        }
    }

    fn on_dns(&mut self, ev: &DnsEvent) {
        let Some(answer) = self.destination.on_dns(ev) else {
            return;
        };
        if answer.trust.believed() {
            self.judgement.learn_answer(&answer, self.destination.dns());
        }
        if self.destination.writes_answers() {
            let asker = answer.asker.map(|pid| self.identity.process(pid));
            self.emitter.emit(Line::Dns {
                answer: &answer,
                asker: asker.as_deref(),
            });
        }
    }

    fn on_conn_end(&mut self, ev: &ConnEndEvent) {
        // Its start is still waiting for the container's identity: the end follows it out.
        let waiting = self.identity.waiting_mut(|r| {
            r.cookie == ev.cookie && r.transport == Transport::Tcp && r.action == Action::Connect
        });
        if let Some(pending) = waiting {
            pending.end = Some(*ev);
            return;
        }
        let Self {
            identity,
            destination,
            judgement,
            baseline,
            lifecycle,
            emitter,
            ..
        } = self;
        let recover = |ev: &ConnEndEvent| recover_start(identity, destination, judgement, ev);
        if let Some((record, end)) = lifecycle.on_conn_end(ev, recover, emitter) {
            if record.gated() {
                self.ended_gates.push(record.cookie);
            }
            judgement.connection_ended(&record, &end, emitter);
            baseline.connection_ended(&record, &end, emitter);
        }
        self.first_bytes.forget(ev.cookie);
    }

    /// First bytes of a TCP connection: what they say goes on its record; a name is judged
    /// the first time one appears; held flights that are now whole get their name check.
    fn on_payload(&mut self, ev: &PayloadEvent) {
        let now = Instant::now();
        if let Change::Seen(seen) = self.first_bytes.on_chunk(ev, now) {
            let Self {
                identity,
                lifecycle,
                judgement,
                ..
            } = self;
            let alert = record_of(identity, lifecycle, ev.cookie).and_then(|record| {
                let old = record.first_bytes.take();
                let had_name = old.as_ref().and_then(|f| f.name()).is_some();
                record.first_bytes = Some(Box::new(FirstBytesSeen {
                    gate: old.and_then(|f| f.gate),
                    ..*seen
                }));
                // Judged once its identity is complete (`start`); a held flight by its check.
                let judge = !had_name && !record.gated() && record.policy.is_some();
                judge.then(|| judgement.judge_name(record)).flatten()
            });
            if let Some(alert) = alert {
                self.emitter.emit(self.judgement.alert_line(&alert));
            }
        }
        self.check_held(now);
    }

    /// Block mode: held first flights that are whole (or late) get their name check.
    fn check_held(&mut self, now: Instant) {
        if !self.first_bytes.holding() {
            return;
        }
        for held in self.first_bytes.held_ready(now) {
            let Self {
                identity,
                lifecycle,
                judgement,
                emitter,
                first_bytes,
                name_checks,
                ..
            } = self;
            let whole = held.seen.is_some();
            let Some(record) = record_of(identity, lifecycle, held.cookie) else {
                // Nothing to judge it by (its start was lost): refused.
                first_bytes.decided(false);
                name_checks.push(NameCheck {
                    cookie: held.cookie,
                    decision: GateDecision::Drop,
                    pid: None,
                });
                continue;
            };
            if let Some(seen) = held.seen {
                // What the held flight said is what it is judged by, even if the record
                // missed the change that carried it.
                let gate = record.first_bytes.as_ref().and_then(|f| f.gate);
                record.first_bytes = Some(Box::new(FirstBytesSeen { gate, ..seen }));
            }
            let (pass, alert) = judgement.check_held(record, whole);
            let outcome = match (pass, whole) {
                (true, _) => GateOutcome::Passed,
                (false, true) => GateOutcome::Refused,
                (false, false) => GateOutcome::TimedOut,
            };
            record.first_bytes.get_or_insert_with(Box::default).gate = Some(outcome);
            first_bytes.decided(pass);
            name_checks.push(NameCheck {
                cookie: held.cookie,
                decision: if pass {
                    GateDecision::Pass
                } else {
                    GateDecision::Drop
                },
                pid: Some(record.process.pid),
            });
            if let Some(alert) = alert {
                emitter.emit(judgement.alert_line(&alert));
            }
        }
    }

    /// Block mode: the drain's name checks into the kernel; a refused connection's socket is
    /// destroyed so its application gets an error now instead of waiting on a held payload.
    fn apply_name_checks(&mut self, policy: &mut impl PolicyKernel) {
        for NameCheck {
            cookie,
            decision,
            pid,
        } in std::mem::take(&mut self.name_checks)
        {
            if let Err(err) = policy.decide_gate(cookie, decision) {
                log::error!("writing a name check into the kernel: {err}");
            }
            if let (GateDecision::Pass, Some(pid)) = (decision, pid) {
                // Sent now rather than at TCP's next probe (200 ms or more).
                match sockdiag::push_pending(pid, cookie) {
                    Ok(true) => {}
                    Ok(false) => log::debug!("socket {cookie} not found in process {pid}"),
                    Err(err) => log::debug!("pushing socket {cookie} of process {pid}: {err}"),
                }
            }
            if decision == GateDecision::Drop {
                match sockdiag::destroy(pid, cookie) {
                    Ok(true) => {}
                    Ok(false) => log::debug!("socket {cookie} to destroy was already gone"),
                    Err(err) => log::warn!("destroying refused socket {cookie}: {err}"),
                }
            }
        }
        for cookie in std::mem::take(&mut self.ended_gates) {
            policy.forget_gate(cookie);
        }
    }

    /// After a drain: connections whose container identity arrived go out, identified
    /// containers earn their scope bits, and block mode's pending kernel updates are installed.
    pub fn after_drain(&mut self, policy: &mut impl PolicyKernel, kernel: &impl KernelView) {
        self.release_waiting();
        self.lifecycle.write_waiting_starts(&mut self.emitter);
        self.check_held(Instant::now());
        self.apply_name_checks(policy);
        self.judgement.install_pending(policy);
        if self.emitter.telemetry().wanted() {
            let metrics = self.snapshot(kernel);
            let mode = self.judgement.mode();
            self.emitter.telemetry().publish(metrics, mode);
        }
    }

    fn release_waiting(&mut self) {
        let Released { identified, ready } = self.identity.release(Instant::now());
        for (cgroup_id, info) in &identified {
            self.judgement.learn_workload_scope(*cgroup_id, info);
        }
        for (record, pending) in ready {
            self.finish_waiting(record, pending);
        }
    }

    fn finish_waiting(&mut self, record: ConnectionRecord, pending: Pending) {
        let Pending { start, end } = pending;
        self.start(record, start);
        if let Some(end) = end {
            self.on_conn_end(&end);
        }
    }

    /// Once a second: flows and alert windows that ended, progress and lost connections, new
    /// cgroups for scoped rules, expiry, then a flush.
    pub fn tick(&mut self, kernel: &impl KernelView, policy: &mut impl PolicyKernel) {
        let now = boot_ns_now();
        self.lifecycle.tick_udp(now, kernel, &mut self.emitter);
        self.judgement.tick_alerts(now, &mut self.emitter);
        self.baseline.tick(now);
        self.lifecycle.tick_tcp(now, kernel, &mut self.emitter);
        self.judgement
            .refresh_scopes(policy, self.identity.cgroup_mount());
        self.identity.expire(now, Instant::now());
        self.destination.expire(now);
        self.install_resolvers(policy);
        self.release_waiting();
        // Held first flights that never became whole are refused.
        self.check_held(Instant::now());
        self.apply_name_checks(policy);
        self.emitter.flush();
    }

    /// Loads the policy file again (SIGHUP, `--watch`).
    pub fn reload(&mut self, policy: &mut impl PolicyKernel, why: &str) {
        self.judgement.reload(
            policy,
            why,
            self.identity.cgroup_mount(),
            self.destination.dns(),
            boot_ns_now(),
        );
        self.destination
            .set_resolver_source(self.judgement.resolvers());
        self.install_resolvers(policy);
    }

    /// The trusted resolvers into the kernel, when they changed.
    fn install_resolvers(&mut self, policy: &mut impl PolicyKernel) {
        if let Some(prefixes) = self.destination.resolvers_changed() {
            if let Err(err) = policy.set_resolvers(&prefixes) {
                log::error!("writing the trusted resolvers into the kernel: {err}");
            }
        }
    }

    /// The programs are detached and the ring buffer drained: everything still open goes
    /// out (waiting connections with what is known, open connections' last progress, UDP
    /// flows), then the final metric line, and a flush.
    pub fn shutdown(&mut self, kernel: &impl KernelView) {
        for (record, pending) in self.identity.release_all() {
            self.finish_waiting(record, pending);
        }
        self.lifecycle
            .shutdown(boot_ns_now(), kernel, &mut self.emitter);
        self.baseline.shutdown();
        self.write_metrics(kernel);
        self.emitter.flush();
    }

    pub fn write_metrics(&mut self, kernel: &impl KernelView) {
        let metrics = self.snapshot(kernel);
        self.emitter.emit(Line::Metric(&metrics));
    }

    /// Every counter now: the stages' own and the kernel's. Each field is named (no
    /// `..Default`), so a counter added to [`Metrics`] does not compile until it is filled.
    pub fn snapshot(&self, kernel: &impl KernelView) -> Metrics {
        let decode = self.decode.stats;
        let IdentityStats {
            processes,
            process_table,
            cgroups,
            container_stats,
            waiting,
        } = self.identity.stats();
        let DestinationStats {
            dns,
            cache_size,
            cache_evicted,
        } = self.destination.stats();
        let first_bytes = self.first_bytes.stats();
        let JudgementStats {
            policy_reloads,
            policy_reload_failures,
            alerts_suppressed,
            learned_addresses_evicted,
        } = self.judgement.stats();
        let LifecycleStats {
            udp_flows_open,
            udp_flows_evicted,
            tcp_connections_open,
            tcp_connections_evicted,
            tcp_ends_without_start,
            tcp_connections_lost,
            dropped,
        } = self.lifecycle.stats();
        let EmitStats {
            lines_written,
            write_errors,
            dropped: refused,
            alerts,
            failure_alerts,
            new_destination_alerts,
            spike_alerts,
            tcp_connection_ends,
        } = self.emitter.stats();
        let BaselineStats {
            workloads: baseline_workloads,
            destinations: baseline_destinations,
            evicted: baseline_evicted,
            state_set_aside: baseline_state_set_aside,
            state_writes: baseline_state_writes,
            state_write_errors: baseline_state_write_errors,
            spike_keys_evicted,
        } = self.baseline.stats();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Metrics {
            events_received: decode.received,
            events_lost_kernel: kernel.counter(Counter::RingBufFull),
            events_dropped_userspace: decode.errors + dropped + refused,
            decode_errors: decode.errors,
            write_errors,
            output_lines_refused: refused,
            output_backlog_bytes: count(self.emitter.backlog()),
            lines_written,
            process_table_size: count(processes),
            process_table_misses: process_table.misses,
            process_table_stale: process_table.stale,
            process_table_evicted: process_table.evicted,
            process_table_exited_evicted: process_table.exited_evicted,
            exec_without_args: process_table.exec_without_args,
            args_redacted: process_table.args_redacted,
            cgroups_cached: count(cgroups),
            udp_flows_open: count(udp_flows_open),
            udp_flows_evicted,
            udp_datagrams_aggregated: kernel.counter(Counter::UdpAggregated),
            udp_flow_update_failures: kernel.counter(Counter::UdpFlowUpdateFailed),
            policy_reloads,
            policy_reload_failures,
            alerts,
            alerts_suppressed,
            dns_messages: dns.messages,
            dns_malformed: dns.malformed,
            dns_cut: dns.cut,
            dns_mappings: dns.answers,
            dns_untrusted: dns.untrusted,
            dns_query_update_failures: kernel.counter(Counter::DnsQueryUpdateFailed),
            learned_addresses_evicted,
            first_bytes_read: first_bytes.read,
            first_bytes_evicted: first_bytes.evicted,
            name_checks_passed: first_bytes.passed,
            name_checks_refused: first_bytes.refused,
            name_gate_update_failures: kernel.counter(Counter::GateUpdateFailed),
            exe_update_failures: kernel.counter(Counter::ExeUpdateFailed),
            dns_cache_size: count(cache_size),
            dns_cache_evicted: cache_evicted,
            // Known containers only: the resolver's entries also hold look-ups in flight and
            // failed ones waiting for their retry.
            containers_cached: container_stats.cached,
            container_fetches: container_stats.fetches,
            container_fetch_errors: container_stats.fetch_errors,
            container_malformed: container_stats.malformed,
            container_fetch_timeouts: container_stats.timeouts,
            container_not_found: container_stats.not_found,
            container_requests_dropped: container_stats.requests_dropped,
            containers_held: count(waiting),
            tcp_connections_open: count(tcp_connections_open),
            tcp_connection_ends,
            tcp_ends_without_start,
            tcp_connections_lost,
            tcp_connections_evicted,
            tcp_state_missing: kernel.counter(Counter::ConnStateMissing),
            tcp_state_update_failures: kernel.counter(Counter::ConnUpdateFailed),
            failure_alerts,
            new_destination_alerts,
            spike_alerts,
            baseline_workloads: count(baseline_workloads),
            baseline_destinations: count(baseline_destinations),
            baseline_evicted,
            baseline_state_set_aside,
            baseline_state_writes,
            baseline_state_write_errors,
            spike_keys_evicted,
        }
    }
}

/// The record of a TCP connection by socket cookie: open, or still waiting for its container.
fn record_of<'a>(
    identity: &'a mut Identity<Pending>,
    lifecycle: &'a mut Lifecycle,
    cookie: u64,
) -> Option<&'a mut ConnectionRecord> {
    match lifecycle.open_mut(cookie) {
        Some(record) => Some(record),
        None => identity.waiting_record_mut(|r| {
            r.cookie == cookie && r.transport == Transport::Tcp && r.action == Action::Connect
        }),
    }
}

/// The identity of a connection whose start egret did not see, from what the kernel kept (the
/// connecting task) and the socket's addresses: named, with the container known now, and
/// judged (no alert: the start is long past). `None` without a destination address.
fn recover_start(
    identity: &mut Identity<Pending>,
    destination: &Destination,
    judgement: &Judgement,
    ev: &ConnEndEvent,
) -> Option<ConnectionRecord> {
    destination_ip(ev.family, &ev.remote_addr)?;
    let mut record = identity.connection(Action::Connect, &conn::start_event(ev))?;
    destination.name(&mut record);
    identity.complete_now(&mut record);
    judgement.verdict(&mut record);
    if record.ktime_ns == ev.header.ktime_ns && ev.connect_ns != 0 {
        record.ktime_ns = ev.connect_ns;
    }
    Some(record)
}

#[cfg(test)]
mod tests;

/// `pid` while it lives, else the first process still in its cgroup (`cgroup.procs` under
/// `mount`), else `pid` (its root cannot be read; the last good read stays).
fn live_pid_in(pid: u32, mount: &std::path::Path, cgroup: Option<&str>) -> u32 {
    if std::path::Path::new(&format!("/proc/{pid}/root")).exists() {
        return pid;
    }
    let Some(rel) = cgroup else { return pid };
    let procs = mount.join(rel.trim_start_matches('/')).join("cgroup.procs");
    // A few bytes are enough for the first pid; the file may list thousands.
    let mut first = [0u8; 32];
    let read = std::fs::File::open(procs).and_then(|mut f| std::io::Read::read(&mut f, &mut first));
    read.ok()
        .and_then(|n| first.get(..n))
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.lines().next())
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(pid)
}

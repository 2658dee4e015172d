//! The life-cycle stage: each connection from its start line to its end.
//!
//! - TCP: a `connect` line at the start, then (with `--connection-ends on`) the connection waits
//!   in [`OpenConns`] for the kernel's end record, which becomes its `connection-end` line;
//!   `--progress-interval` adds `connection-progress` lines while it is open, and a connection
//!   whose end record never came is closed out as `unknown`. Connections open before egret
//!   started are followed to their release too.
//! - UDP: a flow (socket, destination) opens at its first datagram (or a connected socket's
//!   `connect`) and its `send` line is written when it ends ([`UdpFlows`]): socket released,
//!   idle, or egret stopping; a busy flow gets interim lines.
//!
//! Every line goes out through the [`Emitter`]. The kernel's maps are read through
//! [`KernelView`], so the stage is tested without a kernel.

use std::collections::HashMap;

use agent_common::{
    ConnEndEvent, ConnectEvent, SockReleaseEvent, UdpFlowKey, CONN_FLAG_PREEXISTING,
};

use super::emit::{Emitter, Line};
use crate::{
    clock::duration_ns,
    config::ConnectionConfig,
    conn::{self, ConnEnd, OpenConns},
    kernel::KernelView,
    record::{Action, ConnectionRecord, Transport},
    sockdiag::DiagSock,
    udp::{FlowReport, UdpFlows},
};

/// Open connections are checked this often for ends that never came (lost records).
const LOST_CHECK_NS: u64 = 30_000_000_000;
/// Most started TCP connections remembered at once (the kernel's map holds as many).
const OPEN_CONNS_MAX: usize = 262_144;

/// How a connection line starts its life: a UDP flow it opens, if any.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    flow: Option<FlowOpen>,
}

/// A UDP flow a connection line opens: a `send` (its first datagram, `prev_datagrams` of the
/// previous period) or a connected socket's `connect`.
#[derive(Debug, Clone, Copy)]
struct FlowOpen {
    key: UdpFlowKey,
    prev_datagrams: u64,
    connected: bool,
}

impl Start {
    /// What `ev` (already joined into `record`) starts.
    pub fn of(ev: &ConnectEvent, record: &ConnectionRecord) -> Self {
        let ConnectEvent {
            header: _,
            cookie,
            family,
            port,
            sock_type: _,
            protocol: _,
            addr,
            prev_datagrams,
            verdict: _,
            euid: _,
            egid: _,
            _pad: _,
            netns: _,
        } = *ev;
        let connected_udp = record.action == Action::Connect
            && record.transport == Transport::Udp
            && !record.blocked();
        let flow = (record.action == Action::Send || connected_udp).then_some(FlowOpen {
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
        Self { flow }
    }
}

/// A started connection waiting for its container's identity: how it starts, and its end if
/// that came while it waited.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub start: Start,
    pub end: Option<ConnEndEvent>,
}

impl Pending {
    pub fn new(start: Start) -> Self {
        Self { start, end: None }
    }
}

/// The life-cycle stage's numbers for the metric line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleStats {
    pub udp_flows_open: usize,
    pub udp_flows_evicted: u64,
    pub tcp_connections_open: usize,
    pub tcp_connections_evicted: u64,
    /// End lines of connections whose start egret had not seen.
    pub tcp_ends_without_start: u64,
    /// Connections closed out as `unknown` because their end record never came.
    pub tcp_connections_lost: u64,
    /// End records that could not be joined to any connection (dropped).
    pub dropped: u64,
}

pub struct Lifecycle {
    udp: UdpFlows,
    udp_idle_ns: u64,
    udp_report_interval_ns: u64,
    tcp: OpenConns,
    /// `--connection-ends on`: follow TCP connections to their end.
    track_tcp: bool,
    /// `--merge-short-connections on`: a TCP connection's `connect` line waits for the end of
    /// the drain; one that ended by then gets one line.
    merge_short: bool,
    /// Connections whose `connect` line waits for the end of the drain, in order.
    starts_waiting: Vec<u64>,
    progress_interval_ns: Option<u64>,
    /// When open connections were last checked for ends that never came.
    lost_check_ns: u64,
    /// Connections open before egret started, followed to their release (by socket cookie).
    preexisting: HashMap<u64, DiagSock>,
    ends_without_start: u64,
    lost: u64,
    dropped: u64,
}

impl Lifecycle {
    pub fn new(config: &ConnectionConfig, now_ns: u64) -> Self {
        let ConnectionConfig {
            ends,
            first_bytes: _,
            progress_interval,
            udp_idle,
            udp_report_interval,
            failure_alert_count: _,
            failure_alert_window: _,
            merge_short,
        } = config;
        Self {
            udp: UdpFlows::default(),
            udp_idle_ns: duration_ns(*udp_idle),
            udp_report_interval_ns: duration_ns(*udp_report_interval),
            tcp: OpenConns::new(OPEN_CONNS_MAX),
            track_tcp: *ends,
            merge_short: *merge_short && *ends,
            starts_waiting: Vec::new(),
            progress_interval_ns: progress_interval.map(duration_ns),
            lost_check_ns: now_ns,
            preexisting: HashMap::new(),
            ends_without_start: 0,
            lost: 0,
            dropped: 0,
        }
    }

    /// Connections open before egret started that the kernel now follows (by cookie).
    pub fn follow_preexisting(&mut self, followed: HashMap<u64, DiagSock>) {
        self.preexisting = followed;
    }

    pub fn stats(&self) -> LifecycleStats {
        LifecycleStats {
            udp_flows_open: self.udp.len(),
            udp_flows_evicted: self.udp.stats.evicted,
            tcp_connections_open: self.tcp.len(),
            tcp_connections_evicted: self.tcp.evicted,
            tcp_ends_without_start: self.ends_without_start,
            tcp_connections_lost: self.lost,
            dropped: self.dropped,
        }
    }

    /// A judged connection starts: its line now (a UDP flow's line when the flow ends; with
    /// `--merge-short-connections`, a TCP connection's at the end of the drain, unless
    /// `alone` is false: an alert about it follows), and what follows it.
    pub fn start(
        &mut self,
        mut record: ConnectionRecord,
        start: Start,
        alone: bool,
        out: &mut Emitter,
    ) {
        match start.flow {
            None => {
                let tcp = record.transport == Transport::Tcp && record.action == Action::Connect;
                let follow = tcp && self.track_tcp && !record.blocked();
                if follow && self.merge_short && alone {
                    self.starts_waiting.push(record.cookie);
                    let forgotten = self.tcp.insert(record, false);
                    write_forgotten_starts(out, &forgotten);
                    return;
                }
                out.emit(Line::Connection {
                    record: &record,
                    udp: None,
                });
                if follow {
                    let forgotten = self.tcp.insert(record, true);
                    write_forgotten_starts(out, &forgotten);
                } else if tcp && record.blocked() {
                    // Refused in the kernel: it ends where it started.
                    let end = conn::blocked(record.ktime_ns);
                    out.emit(Line::End {
                        record: &record,
                        facts: &end,
                        start_seen: true,
                        with_start: false,
                    });
                }
            }
            // A connected socket's `connect` line goes out now; its datagrams are summed up
            // in `send` lines like any flow's.
            Some(FlowOpen {
                key,
                prev_datagrams: _,
                connected: true,
            }) => {
                out.emit(Line::Connection {
                    record: &record,
                    udp: None,
                });
                record.action = Action::Send;
                if let Some(ended) = self.udp.open(key, record, 0, 0) {
                    write_flow(out, &ended);
                }
            }
            Some(FlowOpen {
                key,
                prev_datagrams,
                connected: false,
            }) => {
                if let Some(ended) = self.udp.open(key, record, prev_datagrams, 1) {
                    write_flow(out, &ended);
                }
            }
        }
    }

    /// The end of a drain (and before anything else is written): the `connect` lines that
    /// waited for it, of connections still open.
    pub fn write_waiting_starts(&mut self, out: &mut Emitter) {
        for cookie in self.starts_waiting.drain(..) {
            if let Some(open) = self.tcp.get_mut(cookie).filter(|o| !o.start_written) {
                open.start_written = true;
                out.emit(Line::Connection {
                    record: &open.record,
                    udp: None,
                });
            }
        }
    }

    /// The record of an open TCP connection (to add what its first bytes said).
    pub fn open_mut(&mut self, cookie: u64) -> Option<&mut ConnectionRecord> {
        self.tcp.get_mut(cookie).map(|open| &mut open.record)
    }

    /// A socket was released: its UDP flows end.
    pub fn on_sock_release(
        &mut self,
        ev: &SockReleaseEvent,
        kernel: &impl KernelView,
        out: &mut Emitter,
    ) {
        let SockReleaseEvent { header: _, cookie } = ev;
        for report in self.udp.release(*cookie, |key| kernel.udp_flow(key)) {
            write_flow(out, &report);
        }
    }

    /// A TCP connection ended: its end line, joined to its start by socket cookie. When egret
    /// did not see the start, `recover` builds the connection's identity from the end record
    /// (`None`: it cannot, and the end is dropped). Returns the connection and its end for the
    /// failure alerts, unless it was open before egret started.
    pub fn on_conn_end(
        &mut self,
        ev: &ConnEndEvent,
        mut recover: impl FnMut(&ConnEndEvent) -> Option<ConnectionRecord>,
        out: &mut Emitter,
    ) -> Option<(ConnectionRecord, ConnEnd)> {
        if ev.flags & CONN_FLAG_PREEXISTING != 0 {
            self.on_preexisting_end(ev, recover, out);
            return None;
        }
        let (record, start_seen, with_start) = match self.tcp.remove(ev.cookie) {
            Some(open) => (open.record, true, !open.start_written),
            None => {
                let Some(record) = recover(ev) else {
                    self.dropped += 1;
                    return None;
                };
                self.ends_without_start += 1;
                (record, false, false)
            }
        };
        let end = conn::summarize(ev, Some(record.ktime_ns));
        out.emit(Line::End {
            record: &record,
            facts: &end,
            start_seen,
            with_start,
        });
        Some((record, end))
    }

    /// A connection open before egret started was released by its application: its end line,
    /// with the addresses sock_diag reported and the releasing process's identity. Its start
    /// (and so its duration) and its bytes are unknown: no state callback ever ran for it.
    fn on_preexisting_end(
        &mut self,
        ev: &ConnEndEvent,
        mut recover: impl FnMut(&ConnEndEvent) -> Option<ConnectionRecord>,
        out: &mut Emitter,
    ) {
        let Some(existing) = self.preexisting.remove(&ev.cookie) else {
            self.dropped += 1;
            return;
        };
        let Some(record) = recover(&conn::with_remote(ev, existing.remote)) else {
            self.dropped += 1;
            return;
        };
        self.ends_without_start += 1;
        let end = conn::preexisting_end(ev, existing.local);
        out.emit(Line::End {
            record: &record,
            facts: &end,
            start_seen: false,
            with_start: false,
        });
    }

    /// Once a second: UDP flows that went idle or are due a report.
    pub fn tick_udp(&mut self, now_ns: u64, kernel: &impl KernelView, out: &mut Emitter) {
        let reports = self.udp.tick(
            now_ns,
            self.udp_idle_ns,
            self.udp_report_interval_ns,
            |key| kernel.udp_flow(key),
        );
        for report in &reports {
            write_flow(out, report);
        }
    }

    /// Once a second: progress lines for connections open longer than the interval; ends for
    /// connections whose end record never came (their kernel entry is gone on two checks in a
    /// row).
    pub fn tick_tcp(&mut self, now_ns: u64, kernel: &impl KernelView, out: &mut Emitter) {
        self.write_waiting_starts(out);
        let check_lost = now_ns.saturating_sub(self.lost_check_ns) >= LOST_CHECK_NS;
        if check_lost {
            self.lost_check_ns = now_ns;
        }
        if self.progress_interval_ns.is_none() && !check_lost {
            return;
        }
        let mut lost = Vec::new();
        for (cookie, open) in self.tcp.iter_mut() {
            // Ticks come once a second: half a tick early is on time.
            let due = self.progress_interval_ns.is_some_and(|every| {
                now_ns.saturating_sub(open.last_progress_ns) >= every.saturating_sub(500_000_000)
            });
            let old = now_ns.saturating_sub(open.record.ktime_ns) >= LOST_CHECK_NS;
            if !(due || (check_lost && old)) {
                continue;
            }
            match kernel.conn(*cookie) {
                Some(state) => {
                    open.misses = 0;
                    if due {
                        open.last_progress_ns = now_ns;
                        let facts = conn::progress(&state, open.record.ktime_ns, now_ns);
                        out.emit(Line::Progress {
                            record: &open.record,
                            facts: &facts,
                        });
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
        for open in self.tcp.take(&lost) {
            self.lost += 1;
            let end = conn::lost(open.record.ktime_ns, now_ns);
            out.emit(Line::End {
                record: &open.record,
                facts: &end,
                start_seen: true,
                with_start: !open.start_written,
            });
        }
    }

    /// egret stops: a last progress line for each open connection (with what the kernel
    /// knows), and every UDP flow's line.
    pub fn shutdown(&mut self, now_ns: u64, kernel: &impl KernelView, out: &mut Emitter) {
        self.write_waiting_starts(out);
        for open in self.tcp.drain() {
            if let Some(state) = kernel.conn(open.record.cookie) {
                let facts = conn::progress(&state, open.record.ktime_ns, now_ns);
                out.emit(Line::Progress {
                    record: &open.record,
                    facts: &facts,
                });
            }
        }
        for report in &self.udp.drain(|key| kernel.udp_flow(key)) {
            write_flow(out, report);
        }
    }
}

/// Connections forgotten to make room whose `connect` line still waited: written now, or
/// never.
fn write_forgotten_starts(out: &mut Emitter, forgotten: &[conn::OpenConn]) {
    for open in forgotten.iter().filter(|o| !o.start_written) {
        out.emit(Line::Connection {
            record: &open.record,
            udp: None,
        });
    }
}

fn write_flow(out: &mut Emitter, report: &FlowReport) {
    out.emit(Line::Connection {
        record: &report.record,
        udp: Some(report.summary),
    });
}

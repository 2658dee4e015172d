//! UDP flows: one `send` line per (socket, destination), with the number of datagrams.
//!
//! The kernel emits a `Send` event for the first datagram of a flow and counts the rest in its
//! `UDP_FLOWS` map. This tracker keeps the resolved identity from that first event and writes
//! the line when the flow ends: its socket is released, it has been idle for `idle_ns`, or egret
//! stops. A flow that stays busy gets an interim line every `report_interval_ns` with the
//! datagrams since the previous line, so nothing waits forever.
//!
//! A connected UDP socket (`connect()`) opens its flow with the `connect` event instead; its
//! datagrams are counted on the egress path. Every flow's payload bytes in both directions are
//! counted on the packet path (cumulative in the kernel; each line carries what is new since the
//! previous line of the flow).

use std::collections::{HashMap, HashSet};

use agent_common::{UdpFlowKey, UdpFlowValue};

use crate::record::ConnectionRecord;

/// For `send` lines: the flow's datagram count and its first and last datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSummary {
    pub datagrams: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Payload bytes and datagrams since the flow's previous line.
    pub traffic: Traffic,
    /// The flow's final line (else a periodic one).
    pub last: bool,
    /// The flow's first line (no `connect` line started it).
    pub first: bool,
}

impl UdpSummary {
    /// `event.type` of a UDP flow line: its first line starts the flow, its last ends it,
    /// lines in between are progress.
    pub fn types(self) -> &'static [&'static str] {
        match (self.first, self.last) {
            (true, true) => &["connection", "start", "end"],
            (true, false) => &["connection", "start"],
            (false, false) => &["connection", "info"],
            (false, true) => &["connection", "end"],
        }
    }
}

#[derive(Debug)]
struct OpenFlow {
    record: ConnectionRecord,
    /// Datagrams already written in earlier lines.
    reported: u64,
    /// Latest kernel count and last datagram seen.
    seen: u64,
    first_ns: u64,
    last_ns: u64,
    last_report_ns: u64,
    /// Latest cumulative byte/packet counts read from the kernel, and what earlier lines took.
    bytes: Traffic,
    bytes_reported: Traffic,
    /// A line of this flow already said `start` (or its `connect` line did).
    started: bool,
}

/// Payload bytes and datagrams in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_in: u64,
}

impl Traffic {
    fn since(self, earlier: Self) -> Self {
        Self {
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            packets_in: self.packets_in.saturating_sub(earlier.packets_in),
        }
    }

    fn is_zero(self) -> bool {
        self == Self::default()
    }
}

/// A line to write.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub record: ConnectionRecord,
    pub summary: UdpSummary,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    /// Flows whose kernel entry disappeared (LRU eviction) before they were reported.
    pub evicted: u64,
}

/// Open flows. `lookup` closures read the kernel's current count for a flow.
#[derive(Debug, Default)]
pub struct UdpFlows {
    open: HashMap<UdpFlowKey, OpenFlow>,
    /// Each socket's open flows: a set, since one socket may send to tens of thousands of
    /// destinations (a scan, a spray) and each new flow is checked against it.
    by_cookie: HashMap<u64, HashSet<UdpFlowKey>>,
    pub stats: UdpStats,
}

impl UdpFlows {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// A `Send` event (or a connected socket's `connect`, with no datagram yet: `first` = 0)
    /// opened a flow. If the same flow was still open here (the kernel saw it idle and restarted
    /// it), the old period ends with the kernel's final count for it.
    pub fn open(
        &mut self,
        key: UdpFlowKey,
        record: ConnectionRecord,
        prev_datagrams: u64,
        first: u64,
    ) -> Option<FlowReport> {
        let mut baseline = Traffic::default();
        let ended = self.open.remove(&key).and_then(|old| {
            // The kernel's byte counts go on across periods: the new one starts from here.
            baseline = old.bytes;
            finish(old, prev_datagrams)
        });
        let now = record.ktime_ns;
        self.by_cookie.entry(key.cookie).or_default().insert(key);
        self.open.insert(
            key,
            OpenFlow {
                record,
                reported: 0,
                seen: first,
                first_ns: now,
                last_ns: now,
                last_report_ns: now,
                bytes: baseline,
                bytes_reported: baseline,
                started: first == 0,
            },
        );
        ended
    }

    /// The socket was released: every flow of it ends.
    pub fn release(
        &mut self,
        cookie: u64,
        lookup: impl Fn(&UdpFlowKey) -> Option<UdpFlowValue>,
    ) -> Vec<FlowReport> {
        let keys = self.by_cookie.remove(&cookie).unwrap_or_default();
        let mut reports: Vec<FlowReport> = keys
            .iter()
            .filter_map(|key| {
                let mut flow = self.open.remove(key)?;
                self.refresh(&mut flow, key, &lookup);
                let seen = flow.seen;
                finish(flow, seen)
            })
            .collect();
        // In the order the flows started (the set has none).
        reports.sort_by_key(|r| r.record.ktime_ns);
        reports
    }

    /// Periodic check: ends idle flows, reports busy ones every `report_interval_ns`.
    pub fn tick(
        &mut self,
        now_ns: u64,
        idle_ns: u64,
        report_interval_ns: u64,
        lookup: impl Fn(&UdpFlowKey) -> Option<UdpFlowValue>,
    ) -> Vec<FlowReport> {
        let mut reports = Vec::new();
        let mut ended = Vec::new();
        let keys: Vec<UdpFlowKey> = self.open.keys().copied().collect();
        for key in keys {
            let Some(mut flow) = self.open.remove(&key) else {
                continue;
            };
            let present = self.refresh(&mut flow, &key, &lookup);
            if !present || now_ns.saturating_sub(flow.last_ns) >= idle_ns {
                ended.push(key);
                let seen = flow.seen;
                reports.extend(finish(flow, seen));
                continue;
            }
            if now_ns.saturating_sub(flow.last_report_ns) >= report_interval_ns
                && (flow.seen > flow.reported || flow.bytes != flow.bytes_reported)
            {
                reports.push(interim(&mut flow, now_ns));
            }
            self.open.insert(key, flow);
        }
        for key in ended {
            self.forget_cookie(&key);
        }
        reports
    }

    /// Ends every flow (shutdown).
    pub fn drain(
        &mut self,
        lookup: impl Fn(&UdpFlowKey) -> Option<UdpFlowValue>,
    ) -> Vec<FlowReport> {
        let flows: Vec<(UdpFlowKey, OpenFlow)> = self.open.drain().collect();
        self.by_cookie.clear();
        flows
            .into_iter()
            .filter_map(|(key, mut flow)| {
                self.refresh(&mut flow, &key, &lookup);
                let seen = flow.seen;
                finish(flow, seen)
            })
            .collect()
    }

    /// Reads the kernel's count. Returns `false` when the kernel entry is gone or belongs to a
    /// newer period (its first datagram is later than ours).
    fn refresh(
        &mut self,
        flow: &mut OpenFlow,
        key: &UdpFlowKey,
        lookup: &impl Fn(&UdpFlowKey) -> Option<UdpFlowValue>,
    ) -> bool {
        match lookup(key) {
            Some(UdpFlowValue {
                datagrams,
                first_ns,
                last_ns,
                verdict: _,
                connected: _,
                bytes_out,
                packets_out: _,
                bytes_in,
                packets_in,
            }) if first_ns <= flow.first_ns => {
                flow.seen = flow.seen.max(datagrams);
                flow.last_ns = flow.last_ns.max(last_ns);
                flow.bytes = Traffic {
                    bytes_out: flow.bytes.bytes_out.max(bytes_out),
                    bytes_in: flow.bytes.bytes_in.max(bytes_in),
                    packets_in: flow.bytes.packets_in.max(packets_in),
                };
                true
            }
            Some(_) => false,
            None => {
                self.stats.evicted += 1;
                false
            }
        }
    }

    fn forget_cookie(&mut self, key: &UdpFlowKey) {
        if let Some(keys) = self.by_cookie.get_mut(&key.cookie) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_cookie.remove(&key.cookie);
            }
        }
    }
}

/// The final line of a flow, unless it has nothing to add: everything was reported already,
/// or it is a connected socket that never sent or received a datagram (a route lookup).
fn finish(flow: OpenFlow, total: u64) -> Option<FlowReport> {
    let datagrams = total.max(flow.seen).saturating_sub(flow.reported);
    let traffic = flow.bytes.since(flow.bytes_reported);
    let summary = UdpSummary {
        datagrams,
        first_ns: flow.first_ns,
        last_ns: flow.last_ns,
        traffic,
        last: true,
        first: !flow.started,
    };
    let never_used = total.max(flow.seen) == 0 && flow.bytes.is_zero();
    let news = datagrams > 0 || !traffic.is_zero();
    (!never_used && (news || flow.reported == 0)).then_some(FlowReport {
        summary,
        record: flow.record,
    })
}

fn interim(flow: &mut OpenFlow, now_ns: u64) -> FlowReport {
    let datagrams = flow.seen - flow.reported;
    let traffic = flow.bytes.since(flow.bytes_reported);
    flow.reported = flow.seen;
    flow.bytes_reported = flow.bytes;
    flow.last_report_ns = now_ns;
    let first = !flow.started;
    flow.started = true;
    FlowReport {
        record: flow.record.clone(),
        summary: UdpSummary {
            datagrams,
            first_ns: flow.first_ns,
            last_ns: flow.last_ns,
            traffic,
            last: false,
            first,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, sync::Arc};

    use super::*;
    use crate::{
        process::ProcessInfo,
        record::{sample, Action, Transport},
    };

    fn key(cookie: u64, port: u16) -> UdpFlowKey {
        UdpFlowKey {
            cookie,
            family: 2,
            port,
            _pad: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    fn record(ktime_ns: u64, cookie: u64, port: u16) -> ConnectionRecord {
        ConnectionRecord {
            ktime_ns,
            cookie,
            process: Arc::new(ProcessInfo::from_comm(1, "dig")),
            ..sample(Action::Send, Transport::Udp, "127.0.0.1", port)
        }
    }

    /// Flows `(cookie, port, first, …)` opened at time 0 (`first`: 1 by a first datagram, 0
    /// by a connected socket's `connect`), whose kernel entries now count `datagrams`, the
    /// latest at `last_ns`.
    fn opened(kernel: &Kernel, flows: &[(u64, u16, u64, u64, u64)]) -> UdpFlows {
        let mut open = UdpFlows::default();
        for &(cookie, port, first, datagrams, last_ns) in flows {
            open.open(key(cookie, port), record(0, cookie, port), 0, first);
            kernel.set(key(cookie, port), datagrams, 0, last_ns);
        }
        open
    }

    /// A fake kernel map.
    struct Kernel(RefCell<HashMap<UdpFlowKey, UdpFlowValue>>);
    impl Kernel {
        fn new() -> Self {
            Self(RefCell::new(HashMap::new()))
        }
        fn set(&self, key: UdpFlowKey, datagrams: u64, first_ns: u64, last_ns: u64) {
            self.0.borrow_mut().insert(
                key,
                UdpFlowValue {
                    datagrams,
                    first_ns,
                    last_ns,
                    verdict: 0,
                    connected: 0,
                    bytes_out: datagrams * 10,
                    packets_out: datagrams,
                    bytes_in: 0,
                    packets_in: 0,
                },
            );
        }
        fn lookup(&self) -> impl Fn(&UdpFlowKey) -> Option<UdpFlowValue> + '_ {
            |k| self.0.borrow().get(k).copied()
        }
    }

    #[test]
    fn one_line_with_the_count_when_the_socket_closes() {
        let kernel = Kernel::new();
        let mut flows = UdpFlows::default();
        assert!(flows.open(key(7, 53), record(100, 7, 53), 0, 1).is_none());
        kernel.set(key(7, 53), 1000, 100, 900);
        assert!(flows.tick(950, 5_000, 60_000, kernel.lookup()).is_empty());
        let lines = flows.release(7, kernel.lookup());
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].summary,
            UdpSummary {
                datagrams: 1000,
                first_ns: 100,
                last_ns: 900,
                traffic: Traffic {
                    bytes_out: 10_000,
                    bytes_in: 0,
                    packets_in: 0
                },
                last: true,
                first: true,
            }
        );
        assert!(flows.is_empty());
        assert!(flows.release(7, kernel.lookup()).is_empty());
    }

    #[test]
    fn idle_flows_end_and_busy_flows_report_periodically() {
        let kernel = Kernel::new();
        let mut flows = opened(&kernel, &[(1, 53, 1, 5, 10), (2, 123, 1, 50, 990)]);
        // At 1000: flow 1 idle for 990 >= 500 → ends; flow 2 busy, interval 1000 reached.
        let lines = flows.tick(1_000, 500, 1_000, kernel.lookup());
        assert_eq!(lines.len(), 2);
        let by_port = |p: u16| {
            lines
                .iter()
                .find(|l| l.record.port == p)
                .map(|l| l.summary.datagrams)
        };
        assert_eq!(by_port(53), Some(5));
        assert_eq!(by_port(123), Some(50));
        assert_eq!(flows.len(), 1);
        kernel.set(key(2, 123), 70, 0, 1_200);
        let lines = flows.release(2, kernel.lookup());
        assert_eq!(
            lines[0].summary.datagrams, 20,
            "only what the interim line did not report"
        );
    }

    #[test]
    fn a_restarted_flow_ends_the_old_period_with_the_kernels_previous_count() {
        let mut flows = UdpFlows::default();
        flows.open(key(3, 53), record(0, 3, 53), 0, 1);
        let ended = flows
            .open(key(3, 53), record(9_000, 3, 53), 42, 1)
            .expect("old period ends");
        assert_eq!(ended.summary.datagrams, 42);
        assert_eq!(flows.len(), 1);
    }

    #[test]
    fn evicted_flows_are_reported_with_what_was_seen_and_counted() {
        let kernel = Kernel::new();
        let mut flows = UdpFlows::default();
        flows.open(key(4, 53), record(0, 4, 53), 0, 1);
        let lines = flows.tick(10, 5_000, 60_000, kernel.lookup());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].summary.datagrams, 1);
        assert_eq!(flows.stats.evicted, 1);
    }

    #[test]
    fn bytes_are_split_between_interim_and_final_lines() {
        let kernel = Kernel::new();
        let mut flows = opened(&kernel, &[(8, 9000, 0, 4, 990)]);
        let lines = flows.tick(1_000, 500, 1_000, kernel.lookup());
        assert_eq!(lines[0].summary.traffic.bytes_out, 40);
        assert!(!lines[0].summary.last);
        kernel.set(key(8, 9000), 6, 0, 1_100);
        let lines = flows.release(8, kernel.lookup());
        assert_eq!(lines[0].summary.datagrams, 2);
        assert_eq!(lines[0].summary.traffic.bytes_out, 20);
        assert!(lines[0].summary.last);
    }

    #[test]
    fn a_connected_socket_that_never_sent_writes_no_summary() {
        let kernel = Kernel::new();
        let mut flows = opened(&kernel, &[(9, 53, 0, 0, 0)]);
        assert!(flows.release(9, kernel.lookup()).is_empty());
    }

    #[test]
    fn drain_ends_everything() {
        let kernel = Kernel::new();
        let mut flows = opened(&kernel, &[(5, 53, 1, 3, 1), (6, 53, 1, 4, 1)]);
        let mut counts: Vec<u64> = flows
            .drain(kernel.lookup())
            .iter()
            .map(|l| l.summary.datagrams)
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, [3, 4]);
        assert!(flows.is_empty());
    }
}

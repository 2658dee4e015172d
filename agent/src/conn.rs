//! The life of each outbound TCP connection after its start line: the end line (outcome,
//! connect latency, duration, payload bytes each way, retransmissions), optional progress lines
//! for long-lived connections, and alerts when a process's connects to a destination keep
//! failing.
//!
//! The kernel reports the end (`ConnEndEvent`, by socket cookie); this module joins it to the
//! start line's record, turns the socket's raw counters into payload bytes, and names the error.
//! Everything here is pure bookkeeping with unit tests; the pipeline's life-cycle stage
//! (`pipeline/lifecycle.rs`) feeds it and writes the lines.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use agent_common::{
    ConnEndEvent, ConnectEvent, CONN_FLAG_ALL_ACKED, CONN_FLAG_ESTABLISHED, CONN_FLAG_FIN_SENT,
    CONN_FLAG_PEER_FIN, CONN_FLAG_RESET, CONN_FLAG_STATE_LOST, CONN_FLAG_SYNC_FAILURE,
};

use crate::record::{destination_ip, kernel_address, ConnectionRecord};

/// How a connection ended, for `event.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handshake completed (whatever happened later).
    Success,
    /// It never got established: refused, timed out, unreachable, abandoned, blocked.
    Failure,
    /// egret lost track of it (its end was never reported).
    Unknown,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Unknown => "unknown",
        }
    }
}

/// What an end line says beyond the start line's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnEnd {
    pub outcome: Outcome,
    /// errno of the failure (or of a reset after the handshake).
    pub error: Option<u32>,
    /// From `connect()` to the close; `None` when the connect time is unknown.
    pub duration_ns: Option<u64>,
    /// From `connect()` to the completed handshake.
    pub connect_latency_us: Option<u64>,
    /// Payload bytes this host sent that the peer acknowledged, and payload bytes received.
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub retransmits: Option<u32>,
    pub srtt_us: Option<u32>,
    /// Local address and port of the socket.
    pub source: Option<(IpAddr, u16)>,
    /// The connection was reset (RST) after it was established.
    pub reset: bool,
    /// The kernel had lost the connection's state entry (evicted, or older than egret).
    pub state_lost: bool,
    /// Close time (`bpf_ktime_get_boot_ns`).
    pub end_ns: u64,
}

/// errno → the sentence for `error.message`.
pub fn errno_message(errno: u32) -> &'static str {
    match errno {
        1 => "operation not permitted (refused by policy or a firewall)",
        13 => "permission denied",
        22 => "invalid argument",
        97 => "address family not supported",
        98 => "address already in use",
        99 => "cannot assign requested address",
        100 => "network is down",
        101 => "network is unreachable",
        103 => {
            "connect abandoned: the application closed the socket before the handshake completed"
        }
        104 => "connection reset by peer",
        110 => "connection timed out",
        111 => "connection refused",
        112 => "host is down",
        113 => "no route to host",
        _ => "connect failed",
    }
}

/// errno → its symbolic name, for `error.code`.
pub fn errno_name(errno: u32) -> String {
    let name = match errno {
        1 => "EPERM",
        13 => "EACCES",
        22 => "EINVAL",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        other => return format!("errno {other}"),
    };
    name.to_owned()
}

/// Turns the kernel's end record into an end line's facts. `start_ns` is the start line's time,
/// used when the kernel's connect time is unknown.
pub fn summarize(ev: &ConnEndEvent, start_ns: Option<u64>) -> ConnEnd {
    let ConnEndEvent {
        header,
        cookie: _,
        connect_ns,
        established_ns,
        bytes_acked,
        bytes_received,
        netns: _,
        flags,
        error,
        total_retrans,
        srtt_us,
        old_state: _,
        family,
        local_port,
        remote_port: _,
        _pad: _,
        local_addr,
        remote_addr: _,
    } = *ev;
    let has = |flag: u32| flags & flag != 0;
    let established = has(CONN_FLAG_ESTABLISHED) || (has(CONN_FLAG_STATE_LOST) && bytes_acked > 0);
    let start = (connect_ns != 0).then_some(connect_ns).or(start_ns);
    let end_ns = header.ktime_ns;
    if has(CONN_FLAG_SYNC_FAILURE) {
        // 0: the failure was seen only at the socket's close (errno unknown).
        return never_sent(
            (error != 0).then_some(error),
            start.map(|s| end_ns.saturating_sub(s)),
            end_ns,
        );
    }
    // `bytes_acked` counts the SYN and an acknowledged FIN; `bytes_received` a received FIN.
    let syn = u64::from(established && bytes_acked > 0);
    let fin_acked = u64::from(has(CONN_FLAG_FIN_SENT) && has(CONN_FLAG_ALL_ACKED));
    let peer_fin = u64::from(has(CONN_FLAG_PEER_FIN));
    let latency = (connect_ns != 0 && established_ns >= connect_ns)
        .then(|| (established_ns - connect_ns) / 1000);
    let source = destination_ip(family, &local_addr).map(|ip| (ip, local_port));
    ConnEnd {
        outcome: if established {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        // Without its entry the kernel guessed an error as if the handshake never completed
        // (`ETIMEDOUT`); the acknowledged SYN says it did.
        error: (error != 0 && !(has(CONN_FLAG_STATE_LOST) && established)).then_some(error),
        duration_ns: start.map(|s| end_ns.saturating_sub(s)),
        connect_latency_us: latency,
        bytes_sent: Some(bytes_acked.saturating_sub(syn + fin_acked)),
        bytes_received: Some(bytes_received.saturating_sub(peer_fin)),
        retransmits: Some(total_retrans),
        srtt_us: established.then_some(srtt_us),
        source,
        reset: established && has(CONN_FLAG_RESET),
        state_lost: has(CONN_FLAG_STATE_LOST),
        end_ns,
    }
}

/// The end of a connect the kernel refused (block mode): it never left the host.
pub fn blocked(start_ns: u64) -> ConnEnd {
    never_sent(Some(1), Some(0), start_ns)
}

/// A connect that failed before its first packet: nothing sent or received.
fn never_sent(error: Option<u32>, duration_ns: Option<u64>, end_ns: u64) -> ConnEnd {
    ConnEnd {
        outcome: Outcome::Failure,
        error,
        duration_ns,
        connect_latency_us: None,
        bytes_sent: Some(0),
        bytes_received: Some(0),
        retransmits: None,
        srtt_us: None,
        source: None,
        reset: false,
        state_lost: false,
        end_ns,
    }
}

/// The end of a connection egret lost track of (its end record was lost).
pub fn lost(start_ns: u64, now_ns: u64) -> ConnEnd {
    ConnEnd {
        outcome: Outcome::Unknown,
        error: None,
        duration_ns: Some(now_ns.saturating_sub(start_ns)),
        connect_latency_us: None,
        bytes_sent: None,
        bytes_received: None,
        retransmits: None,
        srtt_us: None,
        source: None,
        reset: false,
        state_lost: true,
        end_ns: now_ns,
    }
}

/// The end of a connection open before egret started, released by its application: the
/// socket's local address from sock_diag; its start, bytes and latency are unknown (no state
/// callback ever ran for it).
pub fn preexisting_end(ev: &ConnEndEvent, local: SocketAddr) -> ConnEnd {
    ConnEnd {
        outcome: Outcome::Success,
        source: Some((local.ip(), local.port())),
        bytes_sent: None,
        bytes_received: None,
        retransmits: None,
        connect_latency_us: None,
        ..summarize(ev, None)
    }
}

/// `ev` with the remote address sock_diag reported (the kernel's record of a connection older
/// than egret has none).
pub fn with_remote(ev: &ConnEndEvent, remote: SocketAddr) -> ConnEndEvent {
    let (family, addr) = kernel_address(remote.ip());
    ConnEndEvent {
        family,
        remote_addr: addr,
        remote_port: remote.port(),
        ..*ev
    }
}

/// The `connect` event an end record stands for when egret did not see the start: the
/// connecting task (the header) and the socket's remote address.
pub fn start_event(ev: &ConnEndEvent) -> ConnectEvent {
    ConnectEvent {
        header: ev.header,
        cookie: ev.cookie,
        family: ev.family,
        port: ev.remote_port,
        sock_type: 1,
        protocol: 6,
        addr: ev.remote_addr,
        prev_datagrams: 0,
        verdict: agent_common::VERDICT_NONE,
        euid: agent_common::task::UNSET_ID,
        netns: ev.netns,
        egid: agent_common::task::UNSET_ID,
        _pad: 0,
    }
}

/// A progress line's facts: the counters so far (as last copied on the packet path; unknown
/// when progress reporting is off and nothing was copied).
pub fn progress(state: &agent_common::ConnState, start_ns: u64, now_ns: u64) -> ConnEnd {
    let established = state.flags & CONN_FLAG_ESTABLISHED != 0;
    let sampled = state.sampled_ns != 0;
    ConnEnd {
        outcome: Outcome::Success,
        error: None,
        duration_ns: Some(now_ns.saturating_sub(start_ns)),
        connect_latency_us: (established && state.established_ns >= state.connect_ns)
            .then(|| (state.established_ns - state.connect_ns) / 1000),
        bytes_sent: sampled.then(|| state.bytes_acked.saturating_sub(u64::from(established))),
        bytes_received: sampled.then_some(state.bytes_received),
        retransmits: sampled.then_some(state.total_retrans),
        srtt_us: None,
        source: None,
        reset: false,
        state_lost: false,
        end_ns: now_ns,
    }
}

/// `egret.connection.id`: the same on a connection's start, progress and end lines, unique
/// across reboots (boot id + socket cookie, which the kernel never reuses within a boot).
pub fn connection_id(cookie: u64) -> String {
    ConnectionIdText(cookie).to_string()
}

/// [`connection_id`], written where it is needed without a `String` of its own.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionIdText(pub u64);

impl std::fmt::Display for ConnectionIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:x}", boot_prefix(), self.0)
    }
}

impl ConnectionIdText {
    /// The same text as `Display`, appended to `out` without the formatting machinery (it is on
    /// every connection line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(boot_prefix().as_bytes());
        out.push(b'-');
        let digits = (64 - self.0.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            let nibble = (self.0 >> (shift * 4)) & 0xf;
            if let Some(digit) = usize::try_from(nibble)
                .ok()
                .and_then(|i| b"0123456789abcdef".get(i))
            {
                out.push(*digit);
            }
        }
    }
}

fn boot_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().replace('-', "").chars().take(16).collect())
            .unwrap_or_else(|_| "0".repeat(16))
    })
}

/// A started connection waiting for its end.
#[derive(Debug)]
pub struct OpenConn {
    pub record: ConnectionRecord,
    pub last_progress_ns: u64,
    /// Consecutive checks that found no kernel entry (the end record may have been lost).
    pub misses: u8,
    /// Its `connect` line is written (`--merge-short-connections` holds it to the drain's end).
    pub start_written: bool,
    order: u64,
}

/// Started TCP connections by socket cookie, bounded: past `max`, the oldest is forgotten (its
/// end line will then say the start was not seen).
#[derive(Debug)]
pub struct OpenConns {
    open: HashMap<u64, OpenConn>,
    by_age: BTreeMap<u64, u64>,
    next: u64,
    max: usize,
    pub evicted: u64,
}

impl OpenConns {
    pub fn new(max: usize) -> Self {
        Self {
            open: HashMap::new(),
            by_age: BTreeMap::new(),
            next: 0,
            max: max.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Remembers a started connection (`start_written`: its `connect` line is out). Returns
    /// the connections forgotten to make room.
    pub fn insert(&mut self, record: ConnectionRecord, start_written: bool) -> Vec<OpenConn> {
        let cookie = record.cookie;
        self.remove(cookie);
        let mut forgotten = Vec::new();
        while self.open.len() >= self.max {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(open) = self.open.remove(&oldest) {
                self.evicted += 1;
                forgotten.push(open);
            }
        }
        self.next += 1;
        self.by_age.insert(self.next, cookie);
        self.open.insert(
            cookie,
            OpenConn {
                last_progress_ns: record.ktime_ns,
                record,
                misses: 0,
                start_written,
                order: self.next,
            },
        );
        forgotten
    }

    pub fn get_mut(&mut self, cookie: u64) -> Option<&mut OpenConn> {
        self.open.get_mut(&cookie)
    }

    pub fn remove(&mut self, cookie: u64) -> Option<OpenConn> {
        let conn = self.open.remove(&cookie)?;
        self.by_age.remove(&conn.order);
        Some(conn)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut OpenConn)> {
        self.open.iter_mut()
    }

    /// Removes and returns the records of these cookies.
    pub fn take(&mut self, cookies: &[u64]) -> Vec<OpenConn> {
        cookies.iter().filter_map(|c| self.remove(*c)).collect()
    }

    /// Every open connection (shutdown).
    pub fn drain(&mut self) -> Vec<OpenConn> {
        self.by_age.clear();
        self.open.drain().map(|(_, c)| c).collect()
    }
}

/// Key of the failure tracker: who failed to reach what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FailureKey {
    process: String,
    ip: IpAddr,
    port: u16,
}

#[derive(Debug)]
struct FailureCount {
    count: u64,
    window_start_ns: u64,
    alerted: bool,
}

/// A process's connects to one destination that keep failing: alert once per window when the
/// count reaches the threshold.
#[derive(Debug)]
pub struct Failures {
    threshold: u64,
    window_ns: u64,
    counts: HashMap<FailureKey, FailureCount>,
    max: usize,
}

/// An alert to write: the record of the failure that crossed the threshold.
#[derive(Debug)]
pub struct FailureAlert {
    pub count: u64,
    pub error: Option<u32>,
}

impl Failures {
    /// `threshold` 0 turns failure alerts off.
    pub fn new(threshold: u64, window_ns: u64, max: usize) -> Self {
        Self {
            threshold,
            window_ns,
            counts: HashMap::new(),
            max,
        }
    }

    pub fn window_secs(&self) -> u64 {
        self.window_ns / 1_000_000_000
    }

    /// One failed connect. Returns an alert when this failure makes the count reach the
    /// threshold within the window (once per window).
    pub fn record(
        &mut self,
        record: &ConnectionRecord,
        error: Option<u32>,
        now_ns: u64,
    ) -> Option<FailureAlert> {
        if self.threshold == 0 {
            return None;
        }
        let key = FailureKey {
            process: record
                .process
                .executable
                .clone()
                .unwrap_or_else(|| record.process.name.clone()),
            ip: record.ip,
            port: record.port,
        };
        if !self.counts.contains_key(&key) && self.counts.len() >= self.max {
            let window = self.window_ns;
            self.counts
                .retain(|_, c| now_ns.saturating_sub(c.window_start_ns) < window);
            if self.counts.len() >= self.max {
                return None;
            }
        }
        let entry = self.counts.entry(key).or_insert(FailureCount {
            count: 0,
            window_start_ns: now_ns,
            alerted: false,
        });
        if now_ns.saturating_sub(entry.window_start_ns) >= self.window_ns {
            *entry = FailureCount {
                count: 0,
                window_start_ns: now_ns,
                alerted: false,
            };
        }
        entry.count += 1;
        if entry.count >= self.threshold && !entry.alerted {
            entry.alerted = true;
            return Some(FailureAlert {
                count: entry.count,
                error,
            });
        }
        None
    }

    /// A success resets the destination's count: only failures in a row alert.
    pub fn succeeded(&mut self, record: &ConnectionRecord) {
        if self.threshold == 0 || self.counts.is_empty() {
            return;
        }
        let process = record
            .process
            .executable
            .clone()
            .unwrap_or_else(|| record.process.name.clone());
        self.counts.remove(&FailureKey {
            process,
            ip: record.ip,
            port: record.port,
        });
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind, AF_INET, TCP_FIN_WAIT2, TCP_SYN_SENT};

    use super::*;
    use crate::record::{sample, Action, Transport};

    #[test]
    fn connection_id_written_is_its_display_text() {
        for cookie in [0, 1, 0xf, 0x10, 0xdead_beef, 1 << 63, u64::MAX] {
            let mut out = Vec::new();
            ConnectionIdText(cookie).write_to(&mut out);
            assert_eq!(
                out,
                ConnectionIdText(cookie).to_string().into_bytes(),
                "{cookie:#x}"
            );
        }
    }

    fn end(flags: u32, acked: u64, received: u64, error: u32) -> ConnEndEvent {
        ConnEndEvent {
            header: EventHeader {
                kind: EventKind::ConnEnd as u16,
                version: agent_common::EVENT_VERSION,
                size: 168,
                ktime_ns: 5_000_000_000,
                tgid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                cgroup_id: 1,
                comm: [0; 16],
            },
            cookie: 9,
            connect_ns: 1_000_000_000,
            established_ns: if flags & CONN_FLAG_ESTABLISHED != 0 {
                1_000_250_000
            } else {
                0
            },
            bytes_acked: acked,
            bytes_received: received,
            netns: 1,
            flags,
            error,
            total_retrans: 0,
            srtt_us: 30,
            old_state: TCP_FIN_WAIT2,
            family: AF_INET,
            local_port: 40_000,
            remote_port: 80,
            _pad: [0; 6],
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    const CLOSED: u32 = agent_common::CONN_FLAG_SYN_SENT
        | CONN_FLAG_ESTABLISHED
        | CONN_FLAG_FIN_SENT
        | CONN_FLAG_ALL_ACKED;

    #[test]
    fn payload_bytes_leave_out_syn_and_fins() {
        let e = summarize(
            &end(CLOSED | CONN_FLAG_PEER_FIN, 1000 + 2, 300 + 1, 0),
            None,
        );
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.bytes_sent, Some(1000));
        assert_eq!(e.bytes_received, Some(300));
        assert_eq!(e.connect_latency_us, Some(250));
        assert_eq!(e.duration_ns, Some(4_000_000_000));
        assert_eq!(e.source, Some(("127.0.0.1".parse().unwrap(), 40_000)));
        assert_eq!(e.srtt_us, Some(30));
        // Closed before the peer's FIN arrived: nothing to take off what was received.
        let e = summarize(&end(CLOSED, 1000 + 2, 300, 0), None);
        assert_eq!(e.bytes_received, Some(300));
        // Our FIN never acknowledged (reset): only the SYN comes off.
        let e = summarize(
            &end(
                agent_common::CONN_FLAG_SYN_SENT
                    | CONN_FLAG_ESTABLISHED
                    | CONN_FLAG_FIN_SENT
                    | CONN_FLAG_RESET,
                11,
                0,
                104,
            ),
            None,
        );
        assert_eq!(e.bytes_sent, Some(10));
        assert!(e.reset);
        assert_eq!(e.outcome, Outcome::Success);
    }

    #[test]
    fn failures_name_their_error() {
        let mut ev = end(
            agent_common::CONN_FLAG_SYN_SENT | CONN_FLAG_RESET,
            0,
            0,
            111,
        );
        ev.old_state = TCP_SYN_SENT;
        let e = summarize(&ev, None);
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.error, Some(111));
        assert_eq!(e.bytes_sent, Some(0));
        assert_eq!(e.connect_latency_us, None);
        assert_eq!(errno_message(111), "connection refused");
        assert_eq!(errno_name(110), "ETIMEDOUT");
        assert_eq!(errno_name(7), "errno 7");
        let sync = summarize(&end(CONN_FLAG_SYNC_FAILURE, 0, 0, 101), None);
        assert_eq!(sync.outcome, Outcome::Failure);
        assert_eq!(sync.error, Some(101));
        assert_eq!(sync.source, None);
    }

    #[test]
    fn a_lost_state_entry_falls_back_to_the_start_line_time() {
        // The kernel, without the entry, guessed ETIMEDOUT: the acknowledged SYN says better.
        let mut ev = end(CONN_FLAG_STATE_LOST | CONN_FLAG_ALL_ACKED, 51, 7, 110);
        ev.connect_ns = 0;
        ev.established_ns = 0;
        let e = summarize(&ev, Some(2_000_000_000));
        assert!(e.state_lost);
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.error, None);
        assert_eq!(e.duration_ns, Some(3_000_000_000));
        assert_eq!(e.bytes_sent, Some(50));
    }

    fn record(cookie: u64, port: u16) -> ConnectionRecord {
        ConnectionRecord {
            ktime_ns: cookie,
            cookie,
            ..sample(Action::Connect, Transport::Tcp, "10.0.0.1", port)
        }
    }

    #[test]
    fn open_connections_are_bounded_oldest_first() {
        let mut open = OpenConns::new(2);
        open.insert(record(1, 80), true);
        open.insert(record(2, 80), true);
        open.insert(record(3, 80), true);
        assert_eq!(open.len(), 2);
        assert_eq!(open.evicted, 1);
        assert!(open.remove(1).is_none());
        assert!(open.remove(2).is_some());
        assert!(open.remove(3).is_some());
        assert!(open.is_empty());
    }

    #[test]
    fn repeated_failures_alert_once_per_window() {
        let mut failures = Failures::new(3, 10_000, 16);
        let r = record(1, 5432);
        assert!(failures.record(&r, Some(111), 0).is_none());
        assert!(failures.record(&r, Some(111), 1).is_none());
        let alert = failures
            .record(&r, Some(111), 2)
            .expect("third failure alerts");
        assert_eq!(alert.count, 3);
        assert!(
            failures.record(&r, Some(111), 3).is_none(),
            "once per window"
        );
        // A new window starts counting again.
        assert!(failures.record(&r, Some(111), 20_000).is_none());
        assert!(failures.record(&r, Some(111), 20_001).is_none());
        assert!(failures.record(&r, Some(111), 20_002).is_some());
        // A success in between resets the count.
        let r2 = record(2, 6379);
        failures.record(&r2, Some(110), 0);
        failures.record(&r2, Some(110), 1);
        failures.succeeded(&r2);
        assert!(failures.record(&r2, Some(110), 2).is_none());
        assert!(Failures::new(0, 10, 16).record(&r, None, 0).is_none());
    }
}

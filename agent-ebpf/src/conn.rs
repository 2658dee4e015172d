//! The life of each outbound TCP connection, and the byte counts of UDP flows.
//!
//! - `connect4/6` (main.rs) call [`on_tcp_connect`]: a `CONNS` entry (keyed by socket cookie)
//!   with the connect time and the connecting task, and `CONNECTING[tid]` for the syscall's exit.
//! - `sock_ops`: at `TCP_CONNECT_CB` (the SYN) it asks for state callbacks on this socket only;
//!   `ACTIVE_ESTABLISHED_CB` records the handshake; `STATE_CB` notes FINs and, on the move to
//!   `TCP_CLOSE`, emits a [`ConnEndEvent`] with the socket's own counters. While this side's FIN
//!   is out it also parses incoming headers, only to see the peer's FIN (exact byte counts).
//! - `tcp_receive_reset` marks a RST; `inet_sk_error_report` keeps an ICMP error for the close
//!   that follows it on the same CPU; `sys_exit_connect` reports a `connect()` that failed before
//!   any packet (no route, ...), with its errno.
//! - `sock_release` (main.rs) calls [`on_release`]: the application gave up before the handshake.
//! - `conn_egress` (`cgroup_skb`) and [`count_ingress`] (called by the ingress program): UDP
//!   payload bytes per flow in both directions, and, only when progress reporting is on, a copy
//!   of a TCP socket's counters into `CONNS`.
//!
//! Everything is bounded: `CONNS` and `CONNECTING` are LRU maps; an entry lost to eviction only
//! costs the end line its connect time (counted in `Counter::ConnStateMissing`).

use agent_common::{
    ConnEndEvent, ConnState, Counter, EventHeader, EventKind, UdpFlowKey, AF_INET, AF_INET6,
    CONN_FLAG_ALL_ACKED, CONN_FLAG_ESTABLISHED, CONN_FLAG_FIN_SENT, CONN_FLAG_ICMP_ERROR,
    CONN_FLAG_PEER_FIN, CONN_FLAG_PREEXISTING, CONN_FLAG_RELEASED, CONN_FLAG_RESET, CONN_FLAG_STATE_LOST,
    CONN_FLAG_SYNC_FAILURE, CONN_FLAG_SYN_SENT, EVENT_VERSION, TCP_CLOSE, TCP_CLOSE_WAIT,
    TCP_CLOSING, TCP_FIN_WAIT1, TCP_LAST_ACK,
};
use aya_ebpf::{
    bindings::{
        bpf_sock_ops, BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG, BPF_SOCK_OPS_PARSE_HDR_OPT_CB,
        BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
            bpf_sk_fullsock, bpf_sock_ops_cb_flags_set, bpf_tcp_sock,
        },
    },
    macros::{cgroup_skb, map, sock_ops, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockOpsContext, TracePointContext},
    EbpfContext as _,
};
use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::{addr_of, addr_of_mut, read_volatile},
};

use crate::{count, dns::load, now_ns, submit_flags, EVENTS, UDP_FLOWS};

/// Open outbound TCP connections, by socket cookie.
#[map]
static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(262_144, 0);

/// Threads inside `connect()` on a TCP socket: thread id → socket cookie. A plain (faster)
/// hash: every entry is removed when its `connect()` returns; when full, a connect's early
/// failure is reported at the socket's close without its errno instead.
#[map]
static CONNECTING: HashMap<u32, u64> = HashMap::with_max_entries(16_384, 0);

/// The last ICMP error reported on this CPU, for the close that follows it in the same call.
#[map]
static LAST_SK_ERROR: PerCpuArray<SkError> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct SkError {
    error: u32,
    /// Host byte order.
    sport: u16,
    dport: u16,
    ktime_ns: u64,
}

/// Zero: connection ends are off (`--connection-ends off`); connects are not followed.
#[unsafe(no_mangle)]
static CONN_TRACKING: u32 = 1;

/// Non-zero: copy TCP counters into `CONNS` on egress, for progress lines. Set by userspace
/// (`--progress-interval`).
#[unsafe(no_mangle)]
static TCP_PROGRESS: u32 = 0;

const SOCK_STREAM: u16 = 1;
const EINPROGRESS: i64 = 115;
const ECONNREFUSED: u32 = 111;
const ECONNRESET: u32 = 104;
const ETIMEDOUT: u32 = 110;
const ECONNABORTED: u32 = 103;
const TCP_FIN: u32 = 0x01;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// `connect4/6` of a TCP socket the policy let through: start following it.
#[inline(always)]
pub(crate) fn on_tcp_connect(cookie: u64, sock_type: u16) {
    // SAFETY: a read of a constant the loader may have rewritten.
    if sock_type != SOCK_STREAM || unsafe { read_volatile(&CONN_TRACKING) } == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let state = ConnState {
        connect_ns: now_ns(),
        established_ns: 0,
        bytes_acked: 0,
        bytes_received: 0,
        sampled_ns: 0,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        flags: 0,
        total_retrans: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if CONNS.insert(&cookie, &state, BPF_ANY as u64).is_err() {
        count(Counter::ConnUpdateFailed);
        return;
    }
    let _ = CONNECTING.insert(&(pid_tgid as u32), &cookie, BPF_ANY as u64);
}

/// `sock_release`: the application closed the socket. Before the handshake completed, that
/// is the application giving up. A connection older than egret (no state callbacks) ends here.
#[inline(always)]
pub(crate) fn on_release(cookie: u64, tcp_state: u32) {
    let Some(state) = CONNS.get_ptr_mut(&cookie) else {
        return;
    };
    // SAFETY: a live map value; flags are only ever OR-ed.
    let flags = unsafe {
        if (*state).flags & CONN_FLAG_ESTABLISHED == 0 {
            (*state).flags |= CONN_FLAG_RELEASED;
        }
        (*state).flags
    };
    // A connection older than egret ends here; so does a `connect()` that never reached the
    // TCP layer and whose failure `sys_exit_connect` did not report.
    let never_sent = flags & CONN_FLAG_SYN_SENT == 0;
    if flags & CONN_FLAG_PREEXISTING == 0 && !never_sent {
        return;
    }
    let flags = if never_sent && flags & CONN_FLAG_PREEXISTING == 0 {
        flags | CONN_FLAG_SYNC_FAILURE
    } else {
        flags
    };
    // SAFETY: copied out before removal.
    let state = unsafe { *state };
    let _ = CONNS.remove(&cookie);
    let Some(mut entry) = EVENTS.reserve::<ConnEndEvent>(0) else {
        count(Counter::RingBufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    let now = now_ns();
    // SAFETY: valid reservation of a `ConnEndEvent`; the header names the releasing task.
    unsafe {
        crate::fill_header(
            addr_of_mut!((*event).header),
            EventKind::ConnEnd,
            size_of::<ConnEndEvent>(),
            now,
        );
        (*event).cookie = cookie;
        (*event).connect_ns = state.connect_ns;
        (*event).established_ns = 0;
        (*event).bytes_acked = state.bytes_acked;
        (*event).bytes_received = state.bytes_received;
        (*event).netns = 0;
        (*event).flags = flags;
        (*event).error = 0;
        (*event).total_retrans = state.total_retrans;
        (*event).srtt_us = 0;
        (*event).old_state = tcp_state;
        (*event).family = 0;
        (*event).local_port = 0;
        (*event).remote_port = 0;
        (*event)._pad = [0; 6];
        (*event).local_addr = [0; 16];
        (*event).remote_addr = [0; 16];
    }
    entry.submit(submit_flags());
}

#[inline(always)]
fn ops_u32(field: *const u32) -> u32 {
    // SAFETY: `field` points at a field of the sock_ops context.
    unsafe { read_volatile(field) }
}

#[inline(always)]
fn ops_u64(field: *const u64) -> u64 {
    // SAFETY: `field` points at a field of the sock_ops context.
    unsafe { read_volatile(field) }
}

/// Adds callbacks for this socket (keeping those already on).
fn set_flags(ctx: &SockOpsContext, flags: u32) {
    // SAFETY: a field of the sock_ops context.
    let current = ops_u32(unsafe { addr_of!((*ctx.ops).bpf_sock_ops_cb_flags) });
    // SAFETY: `bpf_sock_ops_cb_flags_set` accepts a sock_ops context of a full socket; it
    // returns an error (ignored: nothing to do about it) otherwise.
    let _ = unsafe { bpf_sock_ops_cb_flags_set(ctx.ops, (current | flags) as i32) };
}

/// Progress reporting on: per-ACK RTT callbacks copy the counters (uploads), as the egress
/// program does for every packet sent (downloads' ACKs).
fn progress_on() -> bool {
    // SAFETY: a read of a constant the loader may have rewritten.
    unsafe { read_volatile(&TCP_PROGRESS) != 0 }
}

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: fields of the sock_ops context.
    let op = ops_u32(unsafe { addr_of!((*ops).op) });
    match op {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let cookie = cookie(&ctx);
            if let Some(state) = CONNS.get_ptr_mut(&cookie) {
                // SAFETY: a live map value.
                unsafe { (*state).flags |= CONN_FLAG_SYN_SENT };
                let rtt = if progress_on() {
                    BPF_SOCK_OPS_RTT_CB_FLAG
                } else {
                    0
                };
                set_flags(&ctx, BPF_SOCK_OPS_STATE_CB_FLAG | rtt);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            if let Some(state) = CONNS.get_ptr_mut(&cookie(&ctx)) {
                // SAFETY: a live map value.
                unsafe {
                    (*state).established_ns = now_ns();
                    (*state).flags |= CONN_FLAG_ESTABLISHED;
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            // SAFETY: args of a STATE_CB are (old state, new state).
            let (old, new) = unsafe {
                (
                    ops_u32(addr_of!((*ops).__bindgen_anon_1.args[0])),
                    ops_u32(addr_of!((*ops).__bindgen_anon_1.args[1])),
                )
            };
            on_state(&ctx, old, new);
        }
        BPF_SOCK_OPS_RTT_CB => {
            if let Some(state) = CONNS.get_ptr_mut(&cookie(&ctx)) {
                // SAFETY: a live map value; fields of the sock_ops context.
                unsafe {
                    (*state).bytes_acked = ops_u64(addr_of!((*ops).bytes_acked));
                    (*state).bytes_received = ops_u64(addr_of!((*ops).bytes_received));
                    (*state).total_retrans = ops_u32(addr_of!((*ops).total_retrans));
                    (*state).sampled_ns = now_ns();
                }
            }
        }
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => {
            // SAFETY: a field of the sock_ops context.
            let tcp_flags = ops_u32(unsafe { addr_of!((*ops).skb_tcp_flags) });
            if tcp_flags & TCP_FIN != 0 {
                if let Some(state) = CONNS.get_ptr_mut(&cookie(&ctx)) {
                    // SAFETY: a live map value.
                    unsafe { (*state).flags |= CONN_FLAG_PEER_FIN };
                }
            }
        }
        _ => {}
    }
    1
}

fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: `bpf_get_socket_cookie` accepts a sock_ops context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

fn on_state(ctx: &SockOpsContext, old: u32, new: u32) {
    let cookie = cookie(ctx);
    match new {
        TCP_FIN_WAIT1 => {
            // Our FIN is out: watch incoming segments for the peer's FIN until the close.
            mark(cookie, CONN_FLAG_FIN_SENT);
            set_flags(ctx, BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
        }
        TCP_LAST_ACK => mark(cookie, CONN_FLAG_FIN_SENT),
        TCP_CLOSE_WAIT | TCP_CLOSING => mark(cookie, CONN_FLAG_PEER_FIN),
        TCP_CLOSE => emit_close(ctx, cookie, old),
        _ => {}
    }
}

fn mark(cookie: u64, flag: u32) {
    if let Some(state) = CONNS.get_ptr_mut(&cookie) {
        // SAFETY: a live map value.
        unsafe { (*state).flags |= flag };
    }
}

fn header_from(state: Option<&ConnState>, now: u64) -> EventHeader {
    match state {
        Some(s) => EventHeader {
            kind: EventKind::ConnEnd as u16,
            version: EVENT_VERSION,
            size: size_of::<ConnEndEvent>() as u32,
            ktime_ns: now,
            tgid: s.tgid,
            tid: s.tid,
            uid: s.uid,
            gid: s.gid,
            cgroup_id: s.cgroup_id,
            comm: s.comm,
        },
        None => EventHeader {
            kind: EventKind::ConnEnd as u16,
            version: EVENT_VERSION,
            size: size_of::<ConnEndEvent>() as u32,
            ktime_ns: now,
            tgid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            comm: [0; 16],
        },
    }
}

/// The socket moved to `TCP_CLOSE`: its counters are final. One event, then forget it.
fn emit_close(ctx: &SockOpsContext, cookie: u64, old: u32) {
    let now = now_ns();
    // SAFETY: the value is copied out before the entry is removed.
    let state: Option<ConnState> = unsafe { CONNS.get(&cookie) }.copied();
    let _ = CONNS.remove(&cookie);
    let Some(mut entry) = EVENTS.reserve::<ConnEndEvent>(0) else {
        count(Counter::RingBufFull);
        return;
    };
    let ops: *mut bpf_sock_ops = ctx.ops;
    let event = entry.as_mut_ptr();
    let mut flags = match &state {
        Some(s) => s.flags,
        None => {
            count(Counter::ConnStateMissing);
            CONN_FLAG_STATE_LOST
        }
    };
    // SAFETY: fields of the sock_ops context (counters read as 0 for a non-full socket).
    let (snd_una, snd_nxt, srtt, retrans, acked, received, family, lport, rport) = unsafe {
        (
            ops_u32(addr_of!((*ops).snd_una)),
            ops_u32(addr_of!((*ops).snd_nxt)),
            ops_u32(addr_of!((*ops).srtt_us)),
            ops_u32(addr_of!((*ops).total_retrans)),
            ops_u64(addr_of!((*ops).bytes_acked)),
            ops_u64(addr_of!((*ops).bytes_received)),
            ops_u32(addr_of!((*ops).family)),
            ops_u32(addr_of!((*ops).local_port)),
            ops_u32(addr_of!((*ops).remote_port)),
        )
    };
    if snd_una == snd_nxt {
        flags |= CONN_FLAG_ALL_ACKED;
    }
    let mut error = 0;
    if flags & CONN_FLAG_ESTABLISHED == 0 {
        // The handshake never completed: why?
        error = if flags & CONN_FLAG_RESET != 0 {
            ECONNREFUSED
        } else if let Some(e) = icmp_error(lport as u16, u16::from_be((rport >> 16) as u16)) {
            flags |= CONN_FLAG_ICMP_ERROR;
            e
        } else if flags & CONN_FLAG_RELEASED != 0 {
            ECONNABORTED
        } else {
            ETIMEDOUT
        };
    } else if flags & CONN_FLAG_RESET != 0 {
        error = ECONNRESET;
    }
    let mut local_addr = [0u8; 16];
    let mut remote_addr = [0u8; 16];
    // SAFETY: address fields of the sock_ops context.
    unsafe {
        if family == u32::from(AF_INET) {
            local_addr[..4].copy_from_slice(&ops_u32(addr_of!((*ops).local_ip4)).to_ne_bytes());
            remote_addr[..4].copy_from_slice(&ops_u32(addr_of!((*ops).remote_ip4)).to_ne_bytes());
        } else if family == u32::from(AF_INET6) {
            let mut i = 0;
            while i < 4 {
                let l = ops_u32(addr_of!((*ops).local_ip6[i])).to_ne_bytes();
                let r = ops_u32(addr_of!((*ops).remote_ip6[i])).to_ne_bytes();
                local_addr[i * 4..i * 4 + 4].copy_from_slice(&l);
                remote_addr[i * 4..i * 4 + 4].copy_from_slice(&r);
                i += 1;
            }
        }
    }
    // SAFETY: valid reservation of a `ConnEndEvent`; `bpf_get_netns_cookie` accepts a sock_ops
    // context.
    unsafe {
        event.write(ConnEndEvent {
            header: header_from(state.as_ref(), now),
            cookie,
            connect_ns: state.map_or(0, |s| s.connect_ns),
            established_ns: state.map_or(0, |s| s.established_ns),
            bytes_acked: acked,
            bytes_received: received,
            netns: bpf_get_netns_cookie(ctx.as_ptr()),
            flags,
            error,
            total_retrans: retrans,
            srtt_us: srtt >> 3,
            old_state: old,
            family: family as u16,
            local_port: lport as u16,
            // `remote_port` is in network byte order in the upper 16 bits.
            remote_port: u16::from_be((rport >> 16) as u16),
            _pad: [0; 6],
            local_addr,
            remote_addr,
        });
    }
    entry.submit(submit_flags());
}

/// An ICMP error reported on this CPU for the same ports just before this close.
fn icmp_error(sport: u16, dport: u16) -> Option<u32> {
    let slot = LAST_SK_ERROR.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, written only by `inet_sk_error_report` on this CPU.
    unsafe {
        let e = *slot;
        if e.error != 0 && e.sport == sport && e.dport == dport && now_ns().saturating_sub(e.ktime_ns) < 1_000_000
        {
            (*slot).error = 0;
            Some(e.error)
        } else {
            None
        }
    }
}

/// `tcp:tcp_receive_reset`: a RST for a socket we follow.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: `sock_cookie` at its format-file offset (checked by userspace at start-up).
    let cookie: u64 = unsafe { ctx.read_at(64) }.unwrap_or(0);
    if cookie != 0 {
        mark(cookie, CONN_FLAG_RESET);
    }
    0
}

/// `sock:inet_sk_error_report`: an error (ICMP unreachable, ...) reported on a socket. Kept per
/// CPU: when it fails a connect, the close follows in the same softirq.
#[tracepoint]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    // SAFETY: fields at their format-file offsets (checked by userspace at start-up).
    let (error, sport, dport, protocol) = unsafe {
        (
            ctx.read_at::<i32>(8).unwrap_or(0),
            ctx.read_at::<u16>(12).unwrap_or(0),
            ctx.read_at::<u16>(14).unwrap_or(0),
            ctx.read_at::<u16>(18).unwrap_or(0),
        )
    };
    if protocol != u16::from(IPPROTO_TCP) || error <= 0 {
        return 0;
    }
    if let Some(slot) = LAST_SK_ERROR.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            slot.write(SkError {
                error: error as u32,
                sport,
                dport,
                ktime_ns: now_ns(),
            })
        };
    }
    0
}

/// `syscalls:sys_exit_connect`: a TCP `connect()` that failed before the TCP layer sent
/// anything gets its end here (no state callback will ever come for it).
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out.
    let Some(cookie) = (unsafe { CONNECTING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = CONNECTING.remove(&tid);
    // SAFETY: `ret` at its format-file offset (checked by userspace at start-up).
    let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
    if ret >= 0 || ret == -EINPROGRESS {
        return 0;
    }
    // SAFETY: copied out before removal.
    let Some(state) = (unsafe { CONNS.get(&cookie) }).copied() else {
        return 0; // already closed out by the state callback
    };
    if state.flags & CONN_FLAG_SYN_SENT != 0 {
        return 0; // the close (state callback) reports it
    }
    let _ = CONNS.remove(&cookie);
    let Some(mut entry) = EVENTS.reserve::<ConnEndEvent>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    let now = now_ns();
    // SAFETY: valid reservation.
    unsafe {
        entry.as_mut_ptr().write(ConnEndEvent {
            header: header_from(Some(&state), now),
            cookie,
            connect_ns: state.connect_ns,
            established_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            netns: 0,
            flags: state.flags | CONN_FLAG_SYNC_FAILURE,
            error: (-ret) as u32,
            total_retrans: 0,
            srtt_us: 0,
            old_state: 0,
            family: 0,
            local_port: 0,
            remote_port: 0,
            _pad: [0; 6],
            local_addr: [0; 16],
            remote_addr: [0; 16],
        });
    }
    entry.submit(submit_flags());
    0
}

// ---- Byte counts on the packet path ----

/// The IP protocol of a packet and, for UDP, (family, peer address, peer port, payload
/// length); `outbound` picks the destination as the peer, else the source.
#[inline(always)]
fn udp_peer(ctx: &SkBuffContext, outbound: bool) -> (u8, Option<(u16, [u8; 16], u16, u64)>) {
    let Some(first) = load::<u8>(ctx, 0) else {
        return (0, None);
    };
    let (family, proto, l4) = match first >> 4 {
        4 => (AF_INET, load::<u8>(ctx, 9), u32::from(first & 0x0f) * 4),
        6 => (AF_INET6, load::<u8>(ctx, 6), 40),
        _ => return (0, None),
    };
    let Some(proto) = proto else {
        return (0, None);
    };
    if proto != IPPROTO_UDP {
        return (proto, None);
    }
    let mut addr = [0u8; 16];
    let found = if family == AF_INET {
        load::<[u8; 4]>(ctx, if outbound { 16 } else { 12 }).map(|v4| {
            addr[..4].copy_from_slice(&v4);
        })
    } else {
        load::<[u8; 16]>(ctx, if outbound { 24 } else { 8 }).map(|v6| addr = v6)
    };
    let port = load::<u16>(ctx, l4 + if outbound { 2 } else { 0 });
    let udp_len = load::<u16>(ctx, l4 + 4);
    match (found, port, udp_len) {
        (Some(()), Some(port), Some(len)) => (
            proto,
            Some((
                family,
                addr,
                u16::from_be(port),
                u64::from(u16::from_be(len)).saturating_sub(8),
            )),
        ),
        _ => (proto, None),
    }
}

/// Egress: UDP bytes into the flow; with progress on, a TCP socket's counters into `CONNS`.
#[cgroup_skb(egress)]
pub fn conn_egress(ctx: SkBuffContext) -> i32 {
    match udp_peer(&ctx, true) {
        (_, Some((family, addr, port, payload))) => {
            count_udp(&ctx, family, addr, port, payload, true)
        }
        (IPPROTO_TCP, None) => sample_tcp(&ctx),
        _ => {}
    }
    1
}

/// Ingress: UDP bytes received from a flow's destination. Called by the ingress program
/// (`dns_ingress`) first, so every received packet runs one program, not two.
#[inline(never)]
pub(crate) fn count_ingress(ctx: &SkBuffContext) {
    // SAFETY: a read of a constant the loader may have rewritten.
    if unsafe { read_volatile(&CONN_TRACKING) } == 0 {
        return;
    }
    if let (_, Some((family, addr, port, payload))) = udp_peer(ctx, false) {
        count_udp(ctx, family, addr, port, payload, false);
    }
}

fn count_udp(ctx: &SkBuffContext, family: u16, addr: [u8; 16], port: u16, payload: u64, out: bool) {
    let key = UdpFlowKey {
        // SAFETY: `bpf_get_socket_cookie` accepts an skb.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        family,
        port,
        _pad: 0,
        addr,
    };
    let Some(flow) = UDP_FLOWS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a live map value, updated with atomic adds (several senders may share a socket).
    unsafe {
        if out {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                addr_of_mut!((*flow).bytes_out),
                payload,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                addr_of_mut!((*flow).packets_out),
                1,
            );
            if (*flow).connected != 0 {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    addr_of_mut!((*flow).datagrams),
                    1,
                );
                (*flow).last_ns = now_ns();
            }
        } else {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                addr_of_mut!((*flow).bytes_in),
                payload,
            );
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                addr_of_mut!((*flow).packets_in),
                1,
            );
        }
    }
}

/// Copies the TCP socket's counters into its `CONNS` entry (progress lines).
fn sample_tcp(ctx: &SkBuffContext) {
    if !progress_on() {
        return;
    }
    // SAFETY: `bpf_get_socket_cookie` accepts an skb.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(state) = CONNS.get_ptr_mut(&cookie) else {
        return;
    };
    // SAFETY: `sk` of the skb context, then the helpers that narrow it to a TCP socket; both
    // return NULL (checked) when it is not one.
    unsafe {
        let skb = ctx.skb.skb;
        let sk = read_volatile(addr_of!((*skb).__bindgen_anon_2.sk));
        if sk.is_null() {
            return;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return;
        }
        let tp = bpf_tcp_sock(full);
        if tp.is_null() {
            return;
        }
        (*state).bytes_acked = (*tp).bytes_acked;
        (*state).bytes_received = (*tp).bytes_received;
        (*state).total_retrans = (*tp).total_retrans;
        (*state).sampled_ns = now_ns();
    }
}

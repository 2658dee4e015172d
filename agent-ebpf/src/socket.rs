//! The socket hooks of the monitored cgroup: every outbound `connect()` and unconnected UDP
//! datagram, judged by the block-mode policy before anything is sent, and every socket release.
//!
//! Programs:
//! - `connect4`/`connect6` (`cgroup/connect4|6`): every `connect()` on an inet socket. One
//!   `Connect` event; the policy may refuse it (EPERM). A TCP connect the policy lets through
//!   starts its connection's life in `conn`; a connected UDP socket gets its flow entry here
//!   (its datagrams skip `sendmsg4/6`, the egress program counts them).
//! - `sendmsg4`/`sendmsg6` (`cgroup/sendmsg4|6`): unconnected UDP, aggregated per (socket,
//!   destination) flow in `UDP_FLOWS` (`shared`); only the datagram that opens a flow (or
//!   reopens it after `UDP_IDLE_NS`, or after a policy reload changed its verdict) is a `Send`
//!   event. The policy may refuse it (EPERM).
//! - `sock_release` (`cgroup/sock_release`): a socket closed. A TCP socket's connection may end
//!   here (`conn`); a socket with UDP flows is reported (`SockRelease`) so userspace can close
//!   its flows.
//!
//! Map: `UDP_SOCKETS` (LRU hash, socket cookie → mark): sockets that have UDP flows, so
//! `sock_release` reports only those. Kernel-only; sized with `UDP_FLOWS` (`--max-udp-flows`). A
//! mark evicted only delays its flows' lines to `--udp-idle` (their counts are in `UDP_FLOWS`).
//!
//! Global (set by userspace, `--udp-idle`): `UDP_IDLE_NS`.
//!
//! A TCP connect approved only through a learned address, or on a `name_gate` port, goes ahead
//! with its first payload held until its name is checked (`payload::open_gate`); it is
//! reported with that verdict (`VERDICT_LEARNED`, `VERDICT_NAME_GATE`).
//!
//! Uses `shared`, `policy` (the verdict), `conn` (a TCP connection's start and release) and
//! `payload` (the gate).

use core::ptr::{addr_of, addr_of_mut};

use agent_common::{
    ConnectEvent, Counter, EventKind, SockReleaseEvent, UdpFlowKey, UdpFlowValue, UdpSocketMark,
    AF_INET, AF_INET6, GATE_PENDING_LEARNED, GATE_PENDING_NAME_GATE, VERDICT_ALLOWED,
    VERDICT_BLOCKED, VERDICT_LEARNED, VERDICT_NAME_GATE,
};
use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::{SockAddrContext, SockContext},
};

use crate::{
    conn, dns, payload, policy,
    shared::{
        atomic_add, count, ctx_field, ctx_ip6, emit, fail, flow_key, global, log_refusal,
        netns_cookie, now_ns, socket_cookie, v4_in_16, Dest, Origin, Task, IPPROTO_TCP, SOCK_DGRAM,
        UDP_FLOWS,
    },
    task,
};

/// Verdict of a `cgroup_sock_addr`/`cgroup_sock` program: let the operation go on.
const ALLOW: i32 = 1;
/// Verdict of a `cgroup_sock_addr` program: refuse the operation (EPERM).
const DENY: i32 = 0;

/// Sockets that have UDP flows, so `sock_release` reports only those.
#[map]
static UDP_SOCKETS: LruHashMap<u64, UdpSocketMark> = LruHashMap::with_max_entries(65536, 0);

/// A flow with no datagram for this long is closed; the next datagram opens a new one.
/// Set by userspace (`--udp-idle`).
#[unsafe(no_mangle)]
static UDP_IDLE_NS: u64 = 5_000_000_000;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, &dest4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, &dest6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    let dest = dest4(&ctx);
    let cookie = socket_cookie(&ctx);
    dns::note_send(cookie, &dest);
    decision(on_sendmsg(cookie, &dest))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    let dest = dest6(&ctx);
    let cookie = socket_cookie(&ctx);
    dns::note_send(cookie, &dest);
    decision(on_sendmsg(cookie, &dest))
}

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let cookie = socket_cookie(&ctx);
    // SAFETY: `protocol` and `state` are readable in every cgroup sock program.
    let (protocol, tcp_state) = unsafe {
        (
            ctx_field(addr_of!((*ctx.sock).protocol)),
            ctx_field(addr_of!((*ctx.sock).state)),
        )
    };
    // Only TCP sockets have connection entries, and only the others UDP flows: one lookup
    // either way.
    if protocol == u32::from(IPPROTO_TCP) {
        conn::on_release(cookie, tcp_state);
        return ALLOW;
    }
    // One hash operation: the removal fails for a socket that had no flows.
    if UDP_SOCKETS.remove(&cookie).is_err() {
        return ALLOW;
    }
    emit(
        EventKind::SockRelease,
        Origin::CurrentTask,
        |event: *mut SockReleaseEvent| {
            // SAFETY: a reservation of a `SockReleaseEvent`.
            unsafe { (*event).cookie = cookie };
        },
    );
    ALLOW
}

/// The destination of an IPv4 hook (`connect4`, `sendmsg4`). Only the `*4` hooks may read
/// `user_ip4`, so each family has its own reader.
#[inline(always)]
fn dest4(ctx: &SockAddrContext) -> Dest {
    // SAFETY: a field of the context valid for IPv4 sock_addr programs.
    let ip4 = unsafe { ctx_field(addr_of!((*ctx.sock_addr).user_ip4)) };
    dest(ctx, AF_INET, v4_in_16(ip4.to_ne_bytes()))
}

/// The destination of an IPv6 hook (`connect6`, `sendmsg6`).
#[inline(always)]
fn dest6(ctx: &SockAddrContext) -> Dest {
    // SAFETY: a field of the context valid for IPv6 sock_addr programs.
    let addr = unsafe { ctx_ip6(addr_of!((*ctx.sock_addr).user_ip6)) };
    dest(ctx, AF_INET6, addr)
}

/// The destination at `addr` of `family`, with the rest read from the context.
#[inline(always)]
fn dest(ctx: &SockAddrContext, family: u16, addr: [u8; 16]) -> Dest {
    let sa = ctx.sock_addr;
    // SAFETY: fields of the context valid for every sock_addr program.
    let (port, sock_type, protocol) = unsafe {
        (
            ctx_field(addr_of!((*sa).user_port)),
            ctx_field(addr_of!((*sa).type_)),
            ctx_field(addr_of!((*sa).protocol)),
        )
    };
    Dest {
        family,
        port: u16::from_be(port as u16),
        sock_type: sock_type as u16,
        protocol: protocol as u16,
        addr,
        netns: netns_cookie(ctx),
    }
}

/// Return value of a `cgroup_sock_addr` program for a verdict: refusal makes the syscall fail
/// with EPERM before any packet is sent.
#[inline(always)]
fn decision(verdict: u32) -> i32 {
    if verdict == VERDICT_BLOCKED {
        DENY
    } else {
        ALLOW
    }
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, dest: &Dest) -> i32 {
    let cookie = socket_cookie(ctx);
    // Read once: the connection's entry and the event's header both name it.
    let task = Task::current();
    let verdict = match policy::evaluate(dest) {
        VERDICT_LEARNED => gate(cookie, dest, GATE_PENDING_LEARNED, VERDICT_ALLOWED, &task),
        VERDICT_NAME_GATE => gate(cookie, dest, GATE_PENDING_NAME_GATE, VERDICT_BLOCKED, &task),
        verdict => {
            if verdict != VERDICT_BLOCKED {
                conn::on_tcp_connect(cookie, dest.sock_type, false, &task);
                if dest.sock_type == SOCK_DGRAM {
                    open_connected_udp(cookie, dest, verdict);
                }
            }
            verdict
        }
    };
    emit_connect(
        EventKind::Connect,
        Origin::Task(&task),
        dest,
        cookie,
        0,
        verdict,
    );
    if verdict == VERDICT_BLOCKED {
        log_refusal("connect", task.tgid, dest);
    }
    decision(verdict)
}

/// A TCP connect whose first payload must carry an approved name: followed with its gate
/// pending. When it cannot be (connection ends off, a full map), `unfollowed` is the verdict.
#[inline(always)]
fn gate(cookie: u64, dest: &Dest, pending: u32, unfollowed: u32, task: &Task) -> u32 {
    let verdict = if pending == GATE_PENDING_LEARNED {
        VERDICT_LEARNED
    } else {
        VERDICT_NAME_GATE
    };
    if !conn::tracking() {
        return unfollowed;
    }
    if conn::state_of(cookie).is_some() {
        return verdict; // `connect()` again on a connecting socket: its gate stands
    }
    if !payload::open_gate(cookie, pending) {
        return VERDICT_BLOCKED; // no room to hold its payload: refused (counted)
    }
    if !conn::on_tcp_connect(cookie, dest.sock_type, true, task) {
        payload::close_gate(cookie);
        return VERDICT_BLOCKED;
    }
    verdict
}

/// A `Connect` or `Send` event for `dest`, by `origin` (the running task). Inlined: more
/// arguments than a BPF function call takes (five).
#[inline(always)]
fn emit_connect(
    kind: EventKind,
    origin: Origin<'_>,
    dest: &Dest,
    cookie: u64,
    prev: u64,
    verdict: u32,
) {
    emit(kind, origin, |event: *mut ConnectEvent| {
        // SAFETY: a reservation of a `ConnectEvent`.
        unsafe {
            (*event).cookie = cookie;
            (*event).family = dest.family;
            (*event).port = dest.port;
            (*event).sock_type = dest.sock_type;
            (*event).protocol = dest.protocol;
            (*event).addr = dest.addr;
            (*event).prev_datagrams = prev;
            (*event).verdict = verdict;
            let (euid, egid) = task::current_effective_ids();
            (*event).euid = euid;
            (*event).egid = egid;
            (*event)._pad = 0;
            (*event).netns = dest.netns;
        }
    });
}

/// A connected UDP socket: its datagrams skip `sendmsg4/6`, so its flow entry is created here
/// and the egress program counts them.
fn open_connected_udp(cookie: u64, dest: &Dest, verdict: u32) {
    let key = flow_key(cookie, dest.family, dest.port, dest.addr);
    store_flow(&key, &new_flow(0, now_ns(), verdict, 1));
}

/// A flow's first entry: `datagrams` so far, no bytes yet (the egress program counts them).
#[inline(always)]
fn new_flow(datagrams: u64, now: u64, verdict: u32, connected: u32) -> UdpFlowValue {
    UdpFlowValue {
        datagrams,
        first_ns: now,
        last_ns: now,
        verdict,
        connected,
        bytes_out: 0,
        packets_out: 0,
        bytes_in: 0,
        packets_in: 0,
    }
}

/// Stores a new flow and marks its socket, so its release is reported.
fn store_flow(key: &UdpFlowKey, value: &UdpFlowValue) {
    if let Err(error) = UDP_FLOWS.insert(key, value, BPF_ANY as u64) {
        fail(Counter::UdpFlowUpdateFailed, "UDP_FLOWS", error);
    }
    let _ = UDP_SOCKETS.insert(&key.cookie, &1, BPF_ANY as u64);
}

/// Counts a datagram in its flow; emits a `Send` event when the datagram opens a flow (or the
/// flow's verdict changed after a policy reload). Returns the verdict.
fn on_sendmsg(cookie: u64, dest: &Dest) -> u32 {
    let verdict = policy::evaluate(dest);
    let key = flow_key(cookie, dest.family, dest.port, dest.addr);
    let now = now_ns();
    let idle_ns = global(&UDP_IDLE_NS);
    let mut prev = 0;
    if let Some(flow) = UDP_FLOWS.get_ptr_mut(&key) {
        // SAFETY: `flow` points at a live map value; concurrent senders on the same socket
        // update it with atomic adds, the times are advisory.
        unsafe {
            let last = (*flow).last_ns;
            if now.saturating_sub(last) < idle_ns && (*flow).verdict == verdict {
                atomic_add(addr_of_mut!((*flow).datagrams), 1);
                (*flow).last_ns = now;
                count(Counter::UdpAggregated);
                return verdict;
            }
            // The flow went idle: report what the old period never reported, open a new one.
            prev = (*flow).datagrams;
            (*flow).datagrams = 1;
            (*flow).first_ns = now;
            (*flow).last_ns = now;
            (*flow).verdict = verdict;
        }
    } else {
        store_flow(&key, &new_flow(1, now, verdict, 0));
    }
    emit_connect(
        EventKind::Send,
        Origin::CurrentTask,
        dest,
        cookie,
        prev,
        verdict,
    );
    if verdict == VERDICT_BLOCKED {
        log_refusal("sendmsg", (bpf_get_current_pid_tgid() >> 32) as u32, dest);
    }
    verdict
}

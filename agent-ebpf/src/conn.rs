//! The life of each outbound TCP connection, and the byte counts of UDP flows. All of it is
//! off when connection ends are (`--connection-ends off`: `CONN_TRACKING` is 0 and userspace
//! attaches none of these programs).
//!
//! Programs:
//! - `sock_ops` (`sockops`): at `TCP_CONNECT_CB` (the SYN) it asks for state callbacks on this
//!   socket only; `ACTIVE_ESTABLISHED_CB` records the handshake; `STATE_CB` notes FINs and, on
//!   the move to `TCP_CLOSE`, emits a `ConnEnd` event with the socket's own counters. While this
//!   side's FIN is out it also parses incoming headers, only to see the peer's FIN (exact byte
//!   counts). With progress reporting on, per-ACK `RTT_CB`s copy the counters into `CONNS`.
//! - `tcp_receive_reset` (`tcp:`): marks a RST on a connection it follows.
//! - `inet_sk_error_report` (`sock:`): keeps an ICMP error for the close that follows it on the
//!   same CPU.
//! - `sys_exit_connect` (`syscalls:`): reports a `connect()` that failed before any packet (no
//!   route, ...), with its errno.
//!
//! Called by the packet programs (`skb`): [`count_egress`] and [`count_ingress`], a UDP
//! datagram's payload bytes in its flow; [`sample_tcp`] (through `payload`), only with progress
//! reporting on, a copy of a TCP socket's counters into `CONNS`. [`state_of`] hands `payload`
//! a connection's entry.
//!
//! The three tracepoints are optional: userspace attaches them when their format files match
//! (`agent/src/tracefs.rs`); without them failures are reported less precisely.
//!
//! Called by other hook modules (this module calls none of them):
//! - [`on_tcp_connect`] (`socket`, `connect4/6`): a `CONNS` entry (keyed by socket cookie) with
//!   the connect time and the connecting task, and `CONNECTING[tid]` for the syscall's exit.
//! - [`on_release`] (`socket`, `sock_release`): the application gave up before the handshake,
//!   or a connection older than egret ended.
//!
//! Maps:
//! - `CONNS` (LRU hash, socket cookie → [`ConnState`]): open outbound TCP connections; userspace
//!   reads it for progress lines and puts in connections older than egret (sock_diag).
//! - `CONNECTING` (hash, thread id → socket cookie): threads inside a TCP `connect()`. A plain
//!   (faster) hash map, not an LRU: every entry is removed when its `connect()` returns; when it
//!   is full, a connect's early failure is reported at the socket's close without its errno.
//! - `LAST_SK_ERROR` (per-CPU array of one): the last ICMP error seen on this CPU.
//!
//! Kernel-only apart from `CONNS`. Everything is bounded: an entry lost to `CONNS`'s eviction
//! (its size set at load, `--max-tcp-connections`) only costs the end line its connect time and
//! connecting task (userspace still has them from the start line). The eviction is detected
//! where it costs something, at the close that finds no entry (`Counter::ConnStateMissing`):
//! no bookkeeping on the connect path.
//!
//! Globals (set by userspace): `CONN_TRACKING` (`--connection-ends`), `TCP_PROGRESS`
//! (`--progress-interval`).

use core::ptr::{addr_of, addr_of_mut};

use agent_common::{
    ConnEndEvent, ConnState, Counter, EventKind, AF_INET, AF_INET6, CONN_FLAG_ALL_ACKED,
    CONN_FLAG_ESTABLISHED, CONN_FLAG_FIN_SENT, CONN_FLAG_GATED, CONN_FLAG_ICMP_ERROR,
    CONN_FLAG_PEER_FIN, CONN_FLAG_PREEXISTING, CONN_FLAG_RELEASED, CONN_FLAG_RESET,
    CONN_FLAG_SEQ_BASES, CONN_FLAG_STATE_LOST, CONN_FLAG_SYNC_FAILURE, CONN_FLAG_SYN_SENT,
    TCP_CLOSE, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_FIN_WAIT1, TCP_LAST_ACK,
};
use aya_ebpf::{
    bindings::{
        bpf_sock_ops, BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG, BPF_SOCK_OPS_PARSE_HDR_OPT_CB, BPF_SOCK_OPS_RTT_CB,
        BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_sk_fullsock, bpf_sock_ops_cb_flags_set, bpf_tcp_sock},
    },
    macros::{map, sock_ops, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockOpsContext, TracePointContext},
};

use crate::shared::{
    atomic_add, count, ctx_field, ctx_ip6, emit, fail, flow_key, global, ip_addr, load,
    netns_cookie, now_ns, socket_cookie, tp_field, v4_in_16, End, IpHeader, Origin, Task,
    IPPROTO_TCP, SOCK_STREAM, UDP_FLOWS,
};

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

/// The errno a connection end reports (`ConnEndEvent::error`) when the socket does not.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Errno {
    /// The application gave up before the handshake completed.
    ConnAborted = 103,
    /// A RST after the handshake.
    ConnReset = 104,
    /// No answer to the SYN.
    TimedOut = 110,
    /// A RST answered the SYN.
    ConnRefused = 111,
}

// ---- Called by the socket hooks ----

/// `connect4/6` of a TCP socket the policy let through, by `task`: start following it.
/// `gated`: its first payload waits for a name check (`payload`). `false` when it is not
/// followed (not TCP, connection ends off, or its entry could not be stored).
#[inline(always)]
pub(crate) fn on_tcp_connect(cookie: u64, sock_type: u16, gated: bool, task: &Task) -> bool {
    if sock_type != SOCK_STREAM || !tracking() {
        return false;
    }
    let state = ConnState {
        connect_ns: now_ns(),
        established_ns: 0,
        bytes_acked: 0,
        bytes_received: 0,
        sampled_ns: 0,
        cgroup_id: task.cgroup_id,
        tgid: task.tgid,
        tid: task.tid,
        uid: task.uid,
        gid: task.gid,
        flags: if gated { CONN_FLAG_GATED } else { 0 },
        total_retrans: 0,
        comm: task.comm,
        out_base: 0,
        in_base: 0,
        out_want: 0,
        _pad: 0,
    };
    if let Err(error) = CONNS.insert(&cookie, &state, BPF_ANY as u64) {
        fail(Counter::ConnUpdateFailed, "CONNS", error);
        return false;
    }
    let _ = CONNECTING.insert(&task.tid, &cookie, BPF_ANY as u64);
    true
}

/// `sock_release`: the application closed the socket. Before the handshake completed, that
/// is the application giving up. A connection older than egret (no state callbacks) ends here.
#[inline(always)]
pub(crate) fn on_release(cookie: u64, tcp_state: u32) {
    // Connection ends off: `CONNS` stays empty (userspace puts in no older connection either).
    if !tracking() {
        return;
    }
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
    // The header names the releasing task.
    emit(
        EventKind::ConnEnd,
        Origin::CurrentTask,
        |event: *mut ConnEndEvent| {
            // SAFETY: a reservation of a `ConnEndEvent`.
            unsafe { fill_socketless_end(event, cookie, &state, flags, 0, tcp_state) };
        },
    );
}

/// Fills a `ConnEnd` record seen away from its socket (a `connect()` that failed before any
/// packet, a release): no addresses, namespace or round-trip time; `state`'s counters.
///
/// # Safety
/// `event` is a reservation of a `ConnEndEvent`.
#[inline(always)]
unsafe fn fill_socketless_end(
    event: *mut ConnEndEvent,
    cookie: u64,
    state: &ConnState,
    flags: u32,
    error: u32,
    old_state: u32,
) {
    // SAFETY: the caller's promise.
    unsafe {
        (*event).cookie = cookie;
        (*event).connect_ns = state.connect_ns;
        (*event).established_ns = 0;
        (*event).bytes_acked = state.bytes_acked;
        (*event).bytes_received = state.bytes_received;
        (*event).netns = 0;
        (*event).flags = flags;
        (*event).error = error;
        (*event).total_retrans = state.total_retrans;
        (*event).srtt_us = 0;
        (*event).old_state = old_state;
        (*event).family = 0;
        (*event).local_port = 0;
        (*event).remote_port = 0;
        (*event)._pad = [0; 6];
        (*event).local_addr = [0; 16];
        (*event).remote_addr = [0; 16];
    }
}

// ---- sock_ops ----

/// Adds callbacks for this socket (keeping those already on).
fn set_flags(ctx: &SockOpsContext, flags: u32) {
    // SAFETY: a field of the sock_ops context.
    let current = unsafe { ctx_field(addr_of!((*ctx.ops).bpf_sock_ops_cb_flags)) };
    // SAFETY: `bpf_sock_ops_cb_flags_set` accepts a sock_ops context of a full socket; it
    // returns an error (ignored: nothing to do about it) otherwise.
    let _ = unsafe { bpf_sock_ops_cb_flags_set(ctx.ops, (current | flags) as i32) };
}

/// Progress reporting on: per-ACK RTT callbacks copy the counters (uploads), as the egress
/// program does for every packet sent (downloads' ACKs).
#[inline(always)]
pub(crate) fn progress_on() -> bool {
    global(&TCP_PROGRESS) != 0
}

/// The FIN bit of a TCP header's flags.
const TCP_FIN: u32 = 0x01;

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: a field of the sock_ops context.
    let op = unsafe { ctx_field(addr_of!((*ops).op)) };
    match op {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            if let Some(state) = CONNS.get_ptr_mut(&socket_cookie(&ctx)) {
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
            if let Some(state) = CONNS.get_ptr_mut(&socket_cookie(&ctx)) {
                // SAFETY: a live map value; fields of the sock_ops context. Payload offsets
                // (`payload`) count from the first sequence number after the handshake.
                unsafe {
                    (*state).established_ns = now_ns();
                    (*state).out_base = ctx_field(addr_of!((*ops).snd_nxt));
                    (*state).in_base = ctx_field(addr_of!((*ops).rcv_nxt));
                    (*state).flags |= CONN_FLAG_ESTABLISHED | CONN_FLAG_SEQ_BASES;
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            // SAFETY: args of a STATE_CB are (old state, new state).
            let (old, new) = unsafe {
                (
                    ctx_field(addr_of!((*ops).__bindgen_anon_1.args[0])),
                    ctx_field(addr_of!((*ops).__bindgen_anon_1.args[1])),
                )
            };
            on_state(&ctx, old, new);
        }
        BPF_SOCK_OPS_RTT_CB => {
            if let Some(state) = CONNS.get_ptr_mut(&socket_cookie(&ctx)) {
                // SAFETY: a live map value; fields of the sock_ops context.
                unsafe {
                    (*state).bytes_acked = ctx_field(addr_of!((*ops).bytes_acked));
                    (*state).bytes_received = ctx_field(addr_of!((*ops).bytes_received));
                    (*state).total_retrans = ctx_field(addr_of!((*ops).total_retrans));
                    (*state).sampled_ns = now_ns();
                }
            }
        }
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => {
            // SAFETY: a field of the sock_ops context.
            let tcp_flags = unsafe { ctx_field(addr_of!((*ops).skb_tcp_flags)) };
            if tcp_flags & TCP_FIN != 0 {
                mark(socket_cookie(&ctx), CONN_FLAG_PEER_FIN);
            }
        }
        _ => {}
    }
    1
}

/// A state callback; the cookie is read only for the states that need the entry (not for the
/// move to `TCP_ESTABLISHED`, which every followed connection makes).
fn on_state(ctx: &SockOpsContext, old: u32, new: u32) {
    match new {
        TCP_FIN_WAIT1 => {
            // Our FIN is out: watch incoming segments for the peer's FIN until the close.
            mark(socket_cookie(ctx), CONN_FLAG_FIN_SENT);
            set_flags(ctx, BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
        }
        TCP_LAST_ACK => mark(socket_cookie(ctx), CONN_FLAG_FIN_SENT),
        TCP_CLOSE_WAIT | TCP_CLOSING => mark(socket_cookie(ctx), CONN_FLAG_PEER_FIN),
        TCP_CLOSE => emit_close(ctx, socket_cookie(ctx), old),
        _ => {}
    }
}

fn mark(cookie: u64, flag: u32) {
    if let Some(state) = CONNS.get_ptr_mut(&cookie) {
        // SAFETY: a live map value.
        unsafe { (*state).flags |= flag };
    }
}

/// The socket moved to `TCP_CLOSE`: its counters are final. One event, then forget it.
fn emit_close(ctx: &SockOpsContext, cookie: u64, old: u32) {
    // SAFETY: the value is copied out before the entry is removed.
    let state: Option<ConnState> = unsafe { CONNS.get(&cookie) }.copied();
    let _ = CONNS.remove(&cookie);
    let origin = match &state {
        Some(state) => Origin::Connection(state),
        None => Origin::Nobody,
    };
    emit(EventKind::ConnEnd, origin, |event: *mut ConnEndEvent| {
        // SAFETY: a reservation of a `ConnEndEvent`.
        unsafe { fill_close(ctx, event, cookie, state.as_ref(), old) };
    });
}

/// Fills the `ConnEnd` record of a socket moving to `TCP_CLOSE` from the sock_ops context.
///
/// # Safety
/// `event` is a reservation of a `ConnEndEvent`.
#[inline(always)]
unsafe fn fill_close(
    ctx: &SockOpsContext,
    event: *mut ConnEndEvent,
    cookie: u64,
    state: Option<&ConnState>,
    old: u32,
) {
    let ops: *mut bpf_sock_ops = ctx.ops;
    let mut flags = match state {
        Some(s) => s.flags,
        None => {
            count(Counter::ConnStateMissing);
            CONN_FLAG_STATE_LOST
        }
    };
    // SAFETY: fields of the sock_ops context (counters read as 0 for a non-full socket).
    let (snd_una, snd_nxt, srtt, retrans, acked, received, family, lport, rport) = unsafe {
        (
            ctx_field(addr_of!((*ops).snd_una)),
            ctx_field(addr_of!((*ops).snd_nxt)),
            ctx_field(addr_of!((*ops).srtt_us)),
            ctx_field(addr_of!((*ops).total_retrans)),
            ctx_field(addr_of!((*ops).bytes_acked)),
            ctx_field(addr_of!((*ops).bytes_received)),
            ctx_field(addr_of!((*ops).family)),
            ctx_field(addr_of!((*ops).local_port)),
            ctx_field(addr_of!((*ops).remote_port)),
        )
    };
    if snd_una == snd_nxt {
        flags |= CONN_FLAG_ALL_ACKED;
    }
    // `remote_port` is in network byte order in the upper 16 bits.
    let remote_port = u16::from_be((rport >> 16) as u16);
    let mut error = 0;
    if flags & CONN_FLAG_ESTABLISHED == 0 {
        // The handshake never completed: why?
        error = if flags & CONN_FLAG_RESET != 0 {
            Errno::ConnRefused as u32
        } else if let Some(e) = icmp_error(lport as u16, remote_port) {
            flags |= CONN_FLAG_ICMP_ERROR;
            e
        } else if flags & CONN_FLAG_RELEASED != 0 {
            Errno::ConnAborted as u32
        } else {
            Errno::TimedOut as u32
        };
    } else if flags & CONN_FLAG_RESET != 0 {
        error = Errno::ConnReset as u32;
    }
    // SAFETY: the caller's promise.
    unsafe {
        (*event).cookie = cookie;
        (*event).connect_ns = state.map_or(0, |s| s.connect_ns);
        (*event).established_ns = state.map_or(0, |s| s.established_ns);
        (*event).bytes_acked = acked;
        (*event).bytes_received = received;
        (*event).netns = netns_cookie(ctx);
        (*event).flags = flags;
        (*event).error = error;
        (*event).total_retrans = retrans;
        (*event).srtt_us = srtt >> 3;
        (*event).old_state = old;
        (*event).family = family as u16;
        (*event).local_port = lport as u16;
        (*event).remote_port = remote_port;
        (*event)._pad = [0; 6];
        fill_close_addrs(event, ops, family);
    }
}

/// Writes the local and remote addresses of a closing socket; zero for a non-inet family.
///
/// # Safety
/// `event` is a reservation of a `ConnEndEvent`.
#[inline(always)]
unsafe fn fill_close_addrs(event: *mut ConnEndEvent, ops: *mut bpf_sock_ops, family: u32) {
    // SAFETY: the caller's promise; address fields of the sock_ops context.
    unsafe {
        let local = addr_of_mut!((*event).local_addr);
        let remote = addr_of_mut!((*event).remote_addr);
        if family == u32::from(AF_INET) {
            local.write(v4_in_16(
                ctx_field(addr_of!((*ops).local_ip4)).to_ne_bytes(),
            ));
            remote.write(v4_in_16(
                ctx_field(addr_of!((*ops).remote_ip4)).to_ne_bytes(),
            ));
        } else if family == u32::from(AF_INET6) {
            local.write(ctx_ip6(addr_of!((*ops).local_ip6)));
            remote.write(ctx_ip6(addr_of!((*ops).remote_ip6)));
        } else {
            local.write([0; 16]);
            remote.write([0; 16]);
        }
    }
}

/// An ICMP error reported on this CPU for the same ports just before this close.
fn icmp_error(sport: u16, dport: u16) -> Option<u32> {
    let slot = LAST_SK_ERROR.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, written only by `inet_sk_error_report` on this CPU.
    unsafe {
        let e = *slot;
        if e.error != 0
            && e.sport == sport
            && e.dport == dport
            && now_ns().saturating_sub(e.ktime_ns) < 1_000_000
        {
            (*slot).error = 0;
            Some(e.error)
        } else {
            None
        }
    }
}

// ---- Tracepoints ----

/// `tcp:tcp_receive_reset`: a RST for a socket we follow.
#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    // SAFETY: `sock_cookie` at its format-file offset (checked by userspace at start-up).
    let cookie: u64 = unsafe { tp_field(&ctx, 64) };
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
    let (protocol, error) = unsafe { (tp_field::<u16>(&ctx, 18), tp_field::<i32>(&ctx, 8)) };
    if protocol != u16::from(IPPROTO_TCP) || error <= 0 {
        return 0;
    }
    // SAFETY: as above.
    let (sport, dport) = unsafe { (tp_field::<u16>(&ctx, 12), tp_field::<u16>(&ctx, 14)) };
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

/// What `connect()` returns (negated) while the handshake goes on: not a failure.
const EINPROGRESS: i64 = 115;

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
    let ret: i64 = unsafe { tp_field(&ctx, 16) };
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
    // Nothing was sent: no counters.
    let unsent = ConnState {
        bytes_acked: 0,
        bytes_received: 0,
        total_retrans: 0,
        ..state
    };
    emit(
        EventKind::ConnEnd,
        Origin::Connection(&state),
        |event: *mut ConnEndEvent| {
            let flags = state.flags | CONN_FLAG_SYNC_FAILURE;
            // SAFETY: a reservation of a `ConnEndEvent`.
            unsafe { fill_socketless_end(event, cookie, &unsent, flags, (-ret) as u32, 0) };
        },
    );
    0
}

// ---- Byte counts on the packet path ----

/// The other end of a UDP datagram on the packet path.
#[derive(Clone, Copy)]
struct UdpPeer {
    family: u16,
    addr: [u8; 16],
    /// Host byte order.
    port: u16,
    /// UDP payload bytes.
    payload: u64,
}

/// The peer of a UDP datagram; `outbound` picks the destination as the peer, else the source.
#[inline(always)]
fn udp_peer(ctx: &SkBuffContext, ip: &IpHeader, outbound: bool) -> Option<UdpPeer> {
    let end = if outbound {
        End::Destination
    } else {
        End::Source
    };
    let addr = ip_addr(ctx, ip.family, end)?;
    let port = load::<u16>(ctx, ip.l4 + if outbound { 2 } else { 0 })?;
    let udp_len = load::<u16>(ctx, ip.l4 + 4)?;
    Some(UdpPeer {
        family: ip.family,
        addr,
        port: u16::from_be(port),
        payload: u64::from(u16::from_be(udp_len)).saturating_sub(8),
    })
}

/// Egress of a UDP datagram: its bytes into the flow.
#[inline(never)]
pub(crate) fn count_egress(ctx: &SkBuffContext, ip: &IpHeader) {
    if tracking() {
        if let Some(peer) = udp_peer(ctx, ip, true) {
            count_udp(ctx, &peer, true);
        }
    }
}

/// Ingress of a UDP datagram: its bytes received from a flow's destination.
#[inline(never)]
pub(crate) fn count_ingress(ctx: &SkBuffContext, ip: &IpHeader) {
    if tracking() {
        if let Some(peer) = udp_peer(ctx, ip, false) {
            count_udp(ctx, &peer, false);
        }
    }
}

/// Whether connections are followed (`--connection-ends`).
#[inline(always)]
pub(crate) fn tracking() -> bool {
    global(&CONN_TRACKING) != 0
}

/// The `CONNS` entry of an outbound TCP connection being followed.
#[inline(always)]
pub(crate) fn state_of(cookie: u64) -> Option<*mut ConnState> {
    CONNS.get_ptr_mut(&cookie)
}

/// Counts a datagram to (`out`) or from its peer in the peer's flow, if it has one.
fn count_udp(ctx: &SkBuffContext, peer: &UdpPeer, out: bool) {
    let UdpPeer {
        family,
        addr,
        port,
        payload,
    } = *peer;
    let key = flow_key(socket_cookie(ctx), family, port, addr);
    let Some(flow) = UDP_FLOWS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a live map value, updated with atomic adds (several senders may share a socket).
    unsafe {
        if out {
            atomic_add(addr_of_mut!((*flow).bytes_out), payload);
            atomic_add(addr_of_mut!((*flow).packets_out), 1);
            if (*flow).connected != 0 {
                atomic_add(addr_of_mut!((*flow).datagrams), 1);
                (*flow).last_ns = now_ns();
            }
        } else {
            atomic_add(addr_of_mut!((*flow).bytes_in), payload);
            atomic_add(addr_of_mut!((*flow).packets_in), 1);
        }
    }
}

/// Copies the TCP socket's counters into its `CONNS` entry (progress lines).
#[inline(always)]
pub(crate) fn sample_tcp(ctx: &SkBuffContext, state: *mut ConnState) {
    if !progress_on() {
        return;
    }
    // SAFETY: `sk` of the skb context, then the helpers that narrow it to a TCP socket; both
    // return NULL (checked) when it is not one.
    unsafe {
        let skb = ctx.skb.skb;
        let sk = ctx_field(addr_of!((*skb).__bindgen_anon_2.sk));
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

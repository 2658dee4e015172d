//! egret's kernel programs.
//!
//! - `connect4`/`connect6` (`cgroup/connect4|6`): every `connect()` on an inet socket.
//! - `sendmsg4`/`sendmsg6` (`cgroup/sendmsg4|6`): unconnected UDP, aggregated per
//!   (socket, destination) flow in `UDP_FLOWS`; one event opens a flow.
//! - `sock_release` (`cgroup/sock_release`): tells userspace a socket with UDP flows closed.
//! - `sys_enter_execve`/`sys_enter_execveat`: path and argv captured before they are gone.
//! - `sched_process_exec`, `task_newtask`, `sched_process_exit`: the process table's life cycle.
//!
//! The socket programs refuse (EPERM) what the block-mode policy does not approve (`policy.rs`);
//! everything else only records. All
//! events go to one ring buffer (`EVENTS`) submitted without a wakeup unless the buffer holds
//! more than `WAKEUP_BYTES`; userspace drains it on a short timer.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target's core has no `AtomicU64::fetch_add`; this lowers to the BPF
// atomic add instruction.
#![feature(core_intrinsics)]
// `asm!` barriers keep verifier-visible bounds checks (dns.rs).
#![feature(asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only way to an atomic add on bpf"
)]

mod conn;
mod dns;
mod policy;

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::{addr_of, addr_of_mut, read_volatile},
};

use agent_common::{
    ConnectEvent, Counter, EventHeader, EventKind, ExecArgsEvent, ExecEvent, ExitEvent, ForkEvent,
    SockReleaseEvent, UdpFlowKey, UdpFlowValue, UdpSocketMark, AF_INET, AF_INET6, COUNTER_COUNT,
    EVENT_VERSION, EXEC_ARGS_START_LIMIT, EXEC_ARG_LEN, EXEC_FLAG_ARGS_TRUNCATED,
    EXEC_FLAG_PATH_TRUNCATED, EXEC_FLAG_READ_FAILED, EXEC_MAX_ARGS, EXEC_PATH_LEN, VERDICT_BLOCKED,
};
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_user,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
            bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
        },
    },
    macros::{cgroup_sock, cgroup_sock_addr, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{SockAddrContext, SockContext, TracePointContext},
    EbpfContext as _,
};

/// Verdict of a `cgroup_sock_addr`/`cgroup_sock` program: let the operation go on.
const ALLOW: i32 = 1;
/// Verdict of a `cgroup_sock_addr` program: refuse the operation (EPERM).
const DENY: i32 = 0;
const CLONE_THREAD: u64 = 0x0001_0000;

/// Ring buffer for every event. Userspace sets the size (`--ring-buffer-size`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Open UDP flows: (socket cookie, destination) -> datagram count and times.
#[map]
pub(crate) static UDP_FLOWS: LruHashMap<UdpFlowKey, UdpFlowValue> = LruHashMap::with_max_entries(65536, 0);

/// Sockets that have UDP flows, so `sock_release` reports only those.
#[map]
static UDP_SOCKETS: LruHashMap<u64, UdpSocketMark> = LruHashMap::with_max_entries(65536, 0);

/// A flow with no datagram for this long is closed; the next datagram opens a new one.
/// Set by userspace (`--udp-idle`).
#[unsafe(no_mangle)]
static UDP_IDLE_NS: u64 = 5_000_000_000;

/// Wake the reader when the ring buffer holds more than this many bytes; otherwise the reader
/// polls on its drain interval. Set by userspace to a quarter of the ring size.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 4 * 1024 * 1024;

pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and BPF programs do not migrate CPUs while running.
        unsafe { *slot += 1 };
    }
}

/// Flags for submitting a record: wake the reader only when the buffer is filling up.
pub(crate) fn submit_flags() -> u64 {
    // SAFETY: a read of a constant the loader may have rewritten.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Fills the common header from the current task.
pub(crate) fn fill_header(header: *mut EventHeader, kind: EventKind, size: usize, now: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: `header` points into a ring-buffer reservation of at least `size` bytes.
    unsafe {
        header.write(EventHeader {
            kind: kind as u16,
            version: EVENT_VERSION,
            size: size as u32,
            ktime_ns: now,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            cgroup_id: bpf_get_current_cgroup_id(),
            comm,
        });
    }
}

pub(crate) fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// What the programs read from a `bpf_sock_addr` context.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) family: u16,
    pub(crate) port: u16,
    pub(crate) sock_type: u16,
    pub(crate) protocol: u16,
    pub(crate) addr: [u8; 16],
    /// `bpf_get_netns_cookie()` of the socket's namespace.
    pub(crate) netns: u64,
}

/// Reads one `u32` context field. Volatile, so LLVM neither merges nor offsets the context
/// pointer (the verifier only accepts `*(u32 *)(ctx + const)`).
#[inline(always)]
fn ctx_u32(field: *const u32) -> u32 {
    // SAFETY: `field` points at a field of the program's context.
    unsafe { read_volatile(field) }
}

/// The socket's network namespace cookie.
#[inline(always)]
fn netns_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: `bpf_get_netns_cookie` accepts a sock_addr context.
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}

/// The destination of an IPv4 hook (`connect4`, `sendmsg4`). Only the `*4` hooks may read
/// `user_ip4`, so each family has its own reader.
#[inline(always)]
fn dest4(ctx: &SockAddrContext) -> Dest {
    let sa = ctx.sock_addr;
    // SAFETY: fields of the context valid for IPv4 sock_addr programs.
    let (ip4, port, sock_type, protocol) = unsafe {
        (
            ctx_u32(addr_of!((*sa).user_ip4)),
            ctx_u32(addr_of!((*sa).user_port)),
            ctx_u32(addr_of!((*sa).type_)),
            ctx_u32(addr_of!((*sa).protocol)),
        )
    };
    let mut addr = [0u8; 16];
    let [a, b, c, d] = ip4.to_ne_bytes();
    addr[0] = a;
    addr[1] = b;
    addr[2] = c;
    addr[3] = d;
    Dest {
        family: AF_INET,
        port: u16::from_be(port as u16),
        sock_type: sock_type as u16,
        protocol: protocol as u16,
        addr,
        netns: netns_cookie(ctx),
    }
}

/// The destination of an IPv6 hook (`connect6`, `sendmsg6`).
#[inline(always)]
fn dest6(ctx: &SockAddrContext) -> Dest {
    let sa = ctx.sock_addr;
    // SAFETY: fields of the context valid for IPv6 sock_addr programs.
    let (w0, w1, w2, w3, port, sock_type, protocol) = unsafe {
        (
            ctx_u32(addr_of!((*sa).user_ip6[0])),
            ctx_u32(addr_of!((*sa).user_ip6[1])),
            ctx_u32(addr_of!((*sa).user_ip6[2])),
            ctx_u32(addr_of!((*sa).user_ip6[3])),
            ctx_u32(addr_of!((*sa).user_port)),
            ctx_u32(addr_of!((*sa).type_)),
            ctx_u32(addr_of!((*sa).protocol)),
        )
    };
    let mut addr = [0u8; 16];
    let words = [w0, w1, w2, w3];
    let mut i = 0;
    while i < 4 {
        let [a, b, c, d] = words[i].to_ne_bytes();
        addr[i * 4] = a;
        addr[i * 4 + 1] = b;
        addr[i * 4 + 2] = c;
        addr[i * 4 + 3] = d;
        i += 1;
    }
    Dest {
        family: AF_INET6,
        port: u16::from_be(port as u16),
        sock_type: sock_type as u16,
        protocol: protocol as u16,
        addr,
        netns: netns_cookie(ctx),
    }
}

fn emit_connect(kind: EventKind, dest: &Dest, cookie: u64, prev: u64, verdict: u32) {
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count(Counter::RingBufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    fill_header(
        // SAFETY: `event` is a valid reservation of a `ConnectEvent`.
        unsafe { addr_of_mut!((*event).header) },
        kind,
        size_of::<ConnectEvent>(),
        now_ns(),
    );
    // SAFETY: as above.
    unsafe {
        (*event).cookie = cookie;
        (*event).family = dest.family;
        (*event).port = dest.port;
        (*event).sock_type = dest.sock_type;
        (*event).protocol = dest.protocol;
        (*event).addr = dest.addr;
        (*event).prev_datagrams = prev;
        (*event).verdict = verdict;
        (*event)._pad = 0;
        (*event).netns = dest.netns;
    }
    entry.submit(submit_flags());
}

fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: `bpf_get_socket_cookie` accepts a sock_addr context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
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
    let verdict = policy::evaluate(dest);
    let cookie = socket_cookie(ctx);
    if verdict != VERDICT_BLOCKED {
        conn::on_tcp_connect(cookie, dest.sock_type);
        if dest.sock_type == SOCK_DGRAM {
            open_connected_udp(cookie, dest, verdict);
        }
    }
    emit_connect(EventKind::Connect, dest, cookie, 0, verdict);
    decision(verdict)
}

const SOCK_DGRAM: u16 = 2;
const IPPROTO_TCP: u32 = 6;

/// A connected UDP socket: its datagrams skip `sendmsg4/6`, so its flow entry is created here
/// and the egress program counts them.
fn open_connected_udp(cookie: u64, dest: &Dest, verdict: u32) {
    let key = UdpFlowKey {
        cookie,
        family: dest.family,
        port: dest.port,
        _pad: 0,
        addr: dest.addr,
    };
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
    if UDP_FLOWS.insert(key, value, BPF_ANY as u64).is_err() {
        count(Counter::UdpFlowUpdateFailed);
    }
    let _ = UDP_SOCKETS.insert(&key.cookie, &1, BPF_ANY as u64);
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, &dest4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, &dest6(&ctx))
}

/// Counts a datagram in its flow; emits a `Send` event when the datagram opens a flow (or the
/// flow's verdict changed after a policy reload). Returns the verdict.
fn on_sendmsg(cookie: u64, dest: &Dest) -> u32 {
    let verdict = policy::evaluate(dest);
    let key = UdpFlowKey {
        cookie,
        family: dest.family,
        port: dest.port,
        _pad: 0,
        addr: dest.addr,
    };
    let now = now_ns();
    // SAFETY: a read of a constant the loader may have rewritten.
    let idle_ns = unsafe { read_volatile(&UDP_IDLE_NS) };
    let mut prev = 0;
    if let Some(flow) = UDP_FLOWS.get_ptr_mut(&key) {
        // SAFETY: `flow` points at a live map value; concurrent senders on the same socket
        // update it with atomic adds, the times are advisory.
        unsafe {
            let last = (*flow).last_ns;
            if now.saturating_sub(last) < idle_ns && (*flow).verdict == verdict {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    addr_of_mut!((*flow).datagrams),
                    1,
                );
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
    emit_connect(EventKind::Send, dest, cookie, prev, verdict);
    verdict
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decision(on_sendmsg(socket_cookie(&ctx), &dest4(&ctx)))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decision(on_sendmsg(socket_cookie(&ctx), &dest6(&ctx)))
}

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: `bpf_get_socket_cookie` accepts a sock context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: `protocol` and `state` are readable in every cgroup sock program.
    let (protocol, tcp_state) = unsafe {
        (
            read_volatile(addr_of!((*ctx.sock).protocol)),
            read_volatile(addr_of!((*ctx.sock).state)),
        )
    };
    // Only TCP sockets have connection entries: a UDP release skips the lookup.
    if protocol == IPPROTO_TCP {
        conn::on_release(cookie, tcp_state);
    }
    // SAFETY: the value is a plain byte that is only checked for presence.
    if unsafe { UDP_SOCKETS.get(&cookie) }.is_none() {
        return ALLOW;
    }
    let _ = UDP_SOCKETS.remove(&cookie);
    match EVENTS.reserve::<SockReleaseEvent>(0) {
        Some(mut entry) => {
            let event = entry.as_mut_ptr();
            // SAFETY: valid reservation.
            let header = unsafe { addr_of_mut!((*event).header) };
            fill_header(
                header,
                EventKind::SockRelease,
                size_of::<SockReleaseEvent>(),
                now_ns(),
            );
            unsafe { (*event).cookie = cookie };
            entry.submit(submit_flags());
        }
        None => count(Counter::RingBufFull),
    }
    ALLOW
}

// ---- Process life cycle ----

/// Captures `filename` and `argv` (user pointers) of an `execve`/`execveat` call.
fn capture_exec(filename: *const u8, argv: *const *const u8) {
    let Some(mut entry) = EVENTS.reserve::<ExecArgsEvent>(0) else {
        count(Counter::RingBufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: valid reservation of an `ExecArgsEvent`; all writes below stay inside it.
    unsafe {
        fill_header(
            addr_of_mut!((*event).header),
            EventKind::ExecArgs,
            size_of::<ExecArgsEvent>(),
            now_ns(),
        );
        let mut flags = 0u32;
        let path = addr_of_mut!((*event).path) as *mut u8;
        let path_len =
            match bpf_probe_read_user_str(path.cast(), EXEC_PATH_LEN as u32, filename.cast()) {
                n if n > 0 => n as u32 - 1,
                _ => {
                    flags |= EXEC_FLAG_READ_FAILED;
                    0
                }
            };
        if path_len as usize >= EXEC_PATH_LEN - 1 {
            flags |= EXEC_FLAG_PATH_TRUNCATED;
        }
        (*event).path_len = path_len;

        let args = addr_of_mut!((*event).args) as *mut u8;
        let mut off: u32 = 0;
        let mut argc: u32 = 0;
        let mut i = 0;
        while i < EXEC_MAX_ARGS {
            let arg: *const u8 = match bpf_probe_read_user(argv.add(i)) {
                Ok(p) => p,
                Err(_) => {
                    flags |= EXEC_FLAG_READ_FAILED;
                    break;
                }
            };
            if arg.is_null() {
                break;
            }
            if off > EXEC_ARGS_START_LIMIT as u32 {
                flags |= EXEC_FLAG_ARGS_TRUNCATED;
                break;
            }
            let n = bpf_probe_read_user_str(
                args.add(off as usize).cast(),
                EXEC_ARG_LEN as u32,
                arg.cast(),
            );
            if n <= 0 {
                flags |= EXEC_FLAG_READ_FAILED;
                break;
            }
            if n as usize >= EXEC_ARG_LEN {
                flags |= EXEC_FLAG_ARGS_TRUNCATED;
            }
            off += n as u32;
            argc += 1;
            i += 1;
        }
        if i == EXEC_MAX_ARGS {
            // There may be more: check whether argv goes on.
            if let Ok(next) = bpf_probe_read_user::<*const u8>(argv.add(i)) {
                if !next.is_null() {
                    flags |= EXEC_FLAG_ARGS_TRUNCATED;
                }
            }
        }
        (*event).argc = argc;
        (*event).args_len = off;
        (*event).flags = flags;
    }
    entry.submit(submit_flags());
}

/// Reads the `filename` and `argv` pointers of a `sys_enter_execve(at)` tracepoint at the
/// offsets of its format file (checked by userspace at start-up) and captures them.
#[inline(always)]
fn capture_exec_at(ctx: &TracePointContext, filename_off: usize, argv_off: usize) -> u32 {
    // SAFETY: reads of the tracepoint's fixed fields.
    let (filename, argv) = unsafe {
        (
            ctx.read_at::<u64>(filename_off).unwrap_or(0),
            ctx.read_at::<u64>(argv_off).unwrap_or(0),
        )
    };
    capture_exec(filename as *const u8, argv as *const *const u8);
    0
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    capture_exec_at(&ctx, 16, 24)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    capture_exec_at(&ctx, 24, 32)
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: valid reservation; tracepoint fields at the offsets of its format file.
    unsafe {
        fill_header(
            addr_of_mut!((*event).header),
            EventKind::Exec,
            size_of::<ExecEvent>(),
            now_ns(),
        );
        let data_loc = ctx.read_at::<u32>(8).unwrap_or(0);
        let name_off = (data_loc & 0xffff) as usize;
        (*event).old_tid = ctx.read_at::<i32>(16).unwrap_or(0) as u32;
        let filename = addr_of_mut!((*event).filename) as *mut u8;
        let n = bpf_probe_read_kernel_str(
            filename.cast(),
            EXEC_PATH_LEN as u32,
            (ctx.as_ptr() as *const u8).add(name_off).cast(),
        );
        (*event).filename_len = if n > 0 { n as u32 - 1 } else { 0 };
    }
    entry.submit(submit_flags());
    0
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: tracepoint fields at the offsets of task/task_newtask/format.
    let (child, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(8).unwrap_or(0),
            ctx.read_at::<u64>(32).unwrap_or(0),
        )
    };
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: valid reservation.
    unsafe {
        fill_header(
            addr_of_mut!((*event).header),
            EventKind::Fork,
            size_of::<ForkEvent>(),
            now_ns(),
        );
        (*event).child_tgid = child as u32;
        (*event)._pad = 0;
        (*event).clone_flags = clone_flags;
    }
    entry.submit(submit_flags());
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0; // a thread, not the group leader
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: valid reservation.
    fill_header(
        unsafe { addr_of_mut!((*event).header) },
        EventKind::Exit,
        size_of::<ExitEvent>(),
        now_ns(),
    );
    entry.submit(submit_flags());
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_user_str` and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

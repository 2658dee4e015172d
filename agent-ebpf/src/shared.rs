//! What every hook module uses; this module uses none of them.
//!
//! - [`emit`]: the one way to put an event on the ring buffer (reserve, header, fill, submit),
//!   with the header naming an [`Origin`]; [`Task`], the identity of the running task.
//! - [`count`]: the per-CPU counters of what the programs could not report or folded;
//!   [`fail`] counts a failure and logs it, [`log_refusal`] logs a refused operation (aya-log,
//!   `debug`: shown with `egret run --log-level debug`; at other levels each costs one load of
//!   `AYA_LOG_LEVEL` and a branch, on paths that are failures or refusals anyway).
//! - [`Dest`], [`flow_key`] and `UDP_FLOWS`: the destination of a connect/sendmsg and the UDP
//!   flow it belongs to; [`v4_in_16`], the 16-byte layout of every address.
//! - [`ip_header`], [`ip_addr`], [`load`]: reads from a packet (the `cgroup_skb` programs).
//! - [`ctx_field`], [`ctx_ip6`], [`global`], [`socket_cookie`], [`netns_cookie`], [`now_ns`],
//!   [`atomic_add`]: context fields, loader-set globals, cookies, the clock, shared counters.
//! - `IPPROTO_*`, `SOCK_*`: protocol numbers.
//!
//! Maps:
//! - `EVENTS` (ring buffer): every event, for `egret`'s reader, which sets its size
//!   (`--ring-buffer-size`). Records are submitted without a wakeup, except those that take the
//!   buffer over `WAKEUP_BYTES` (the first [`WAKEUP_WINDOW`] bytes above it): the reader drains
//!   it on a short timer anyway, and once woken it drains everything, so a wakeup per record
//!   above the mark (an interrupt each, about 1 µs in a VM) would only slow the programs down
//!   while the reader is behind.
//! - `COUNTERS` (per-CPU array, indexed by [`Counter`]): events lost to a full ring buffer,
//!   datagrams folded into a flow, failed map updates; userspace sums them into its metrics.
//! - `UDP_FLOWS` (LRU hash, (socket cookie, destination) → [`UdpFlowValue`]): open UDP flows.
//!   `socket` opens them and counts unconnected datagrams, `conn` counts payload bytes on the
//!   packet path; userspace reads a flow when its socket is released, and for its summaries.
//!   Never deleted: finished flows are what the LRU evicts first. Its size is set at load
//!   (`--max-udp-flows`); an open flow evicted is noticed by userspace when its entry is gone
//!   (`udp_flows_evicted`), nothing is counted here, so the datagram path stays one lookup.
//!
//! - `AYA_LOGS` (ring buffer, aya-log's): the programs' diagnostics, for userspace's
//!   `kernel_log` reader. A full one drops the message (a diagnostic, never an event).
//!
//! Globals (set by userspace at load time): `WAKEUP_BYTES`, a quarter of the ring size;
//! `AYA_LOG_LEVEL` (aya-log's), the most verbose level of diagnostics written, from
//! `--log-level`.

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::{addr_of_mut, read_volatile},
};

use agent_common::{
    CgroupMkdirEvent, ConnEndEvent, ConnState, ConnectEvent, Counter, DnsEvent, EventHeader,
    EventKind, ExecEvent, ExitEvent, ForkEvent, PayloadEvent, SockReleaseEvent, UdpFlowKey,
    UdpFlowValue, AF_INET, AF_INET6, COMM_LEN, COUNTER_COUNT, EVENT_VERSION,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
            bpf_ktime_get_boot_ns,
        },
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
    EbpfContext,
};
use aya_log_ebpf::debug;

/// `IPPROTO_TCP` / `IPPROTO_UDP`, as an IP header and a socket's `protocol` carry them.
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
/// `SOCK_STREAM` / `SOCK_DGRAM`, a socket's type.
pub(crate) const SOCK_STREAM: u16 = 1;
pub(crate) const SOCK_DGRAM: u16 = 2;

/// Ring buffer for every event. Userspace sets the size (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Open UDP flows: (socket cookie, destination) → datagram and byte counts, times.
#[map]
pub(crate) static UDP_FLOWS: LruHashMap<UdpFlowKey, UdpFlowValue> =
    LruHashMap::with_max_entries(65536, 0);

/// Wake the reader when a record takes the ring buffer over this many bytes; otherwise the
/// reader polls on its drain interval. Set by userspace to a quarter of the ring size.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 4 * 1024 * 1024;

/// The records that end within this many bytes above `WAKEUP_BYTES` wake the reader: more than
/// one, since records reserved at the same time on other CPUs may be counted in before this
/// one's check; any crossing missed all the same waits for the reader's drain timer.
const WAKEUP_WINDOW: u64 = 16 * 1024;

pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and BPF programs do not migrate CPUs while running.
        unsafe { *slot += 1 };
    }
}

/// A map update that failed (`error`, the helper's): counted in `counter` and logged, naming
/// `map`.
#[inline(always)]
pub(crate) fn fail(counter: Counter, map: &str, error: i32) {
    count(counter);
    debug!(&(), "{}: update failed (error {})", map, error);
}

/// An operation the policy refused (`hook`: the program), logged with who and where to.
#[inline(always)]
pub(crate) fn log_refusal(hook: &str, tgid: u32, dest: &Dest) {
    if dest.family == AF_INET {
        let [a, b, c, d, ..] = dest.addr;
        debug!(
            &(),
            "{}: refused pid {} to {:i}:{}",
            hook,
            tgid,
            u32::from_be_bytes([a, b, c, d]),
            dest.port
        );
    } else {
        debug!(
            &(),
            "{}: refused pid {} to [{:i}]:{}", hook, tgid, dest.addr, dest.port
        );
    }
}

pub(crate) fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Reads a global the loader may have rewritten (`EbpfLoader::override_global`). Volatile, so
/// the compiler does not fold in the value the object was built with.
#[inline(always)]
pub(crate) fn global<T: Copy>(value: &'static T) -> T {
    // SAFETY: a read of a valid, initialised static.
    unsafe { read_volatile(value) }
}

/// Reads one field of the program's context. Volatile, so LLVM neither merges nor offsets the
/// context pointer (the verifier only accepts `*(u32 *)(ctx + const)`).
///
/// # Safety
/// `field` points at a field of the running program's context that its type may read.
#[inline(always)]
pub(crate) unsafe fn ctx_field<T: Copy>(field: *const T) -> T {
    // SAFETY: the caller's promise.
    unsafe { read_volatile(field) }
}

/// Reads the field at `offset` of a tracepoint's record: a plain load, which the verifier
/// allows for any aligned offset past the record's first 8 bytes (cheaper than
/// `bpf_probe_read`, which `TracePointContext::read_at` calls).
///
/// # Safety
/// `offset` is the offset of a `T` in the tracepoint's format (checked by userspace at
/// start-up), at least 8 and a multiple of `size_of::<T>()`.
#[inline(always)]
pub(crate) unsafe fn tp_field<T: Copy>(ctx: &impl EbpfContext, offset: usize) -> T {
    // SAFETY: the caller's promise; the record is the program's context.
    unsafe { ctx_field(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Adds `value` to a counter other CPUs may update at the same time (a map value). The BPF
/// target's core has no `AtomicU64::fetch_add`; this lowers to the BPF atomic add instruction.
///
/// # Safety
/// `target` points at a live `u64` (a map value).
#[inline(always)]
pub(crate) unsafe fn atomic_add(target: *mut u64, value: u64) {
    // SAFETY: the caller's promise.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(target, value) };
}

/// `bpf_get_socket_cookie()` of the context's socket: its id for its whole life.
#[inline(always)]
pub(crate) fn socket_cookie(ctx: &impl EbpfContext) -> u64 {
    // SAFETY: called with the contexts the helper accepts (sock_addr, sock, sock_ops, skb).
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// `bpf_get_netns_cookie()` of the context's socket: its network namespace.
#[inline(always)]
pub(crate) fn netns_cookie(ctx: &impl EbpfContext) -> u64 {
    // SAFETY: called with the contexts the helper accepts (sock_addr, sock_ops, skb).
    unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
}

// ---- Ring-buffer records ----

/// An event struct of `agent_common` that starts with an [`EventHeader`].
pub(crate) trait Record {
    /// Where the header of the record at `record` is.
    fn header(record: *mut Self) -> *mut EventHeader;
}

macro_rules! records {
    ($($record:ty),* $(,)?) => {$(
        impl Record for $record {
            #[inline(always)]
            fn header(record: *mut Self) -> *mut EventHeader {
                // SAFETY: only the field's address is computed, inside the reservation.
                unsafe { addr_of_mut!((*record).header) }
            }
        }
    )*};
}

records!(
    CgroupMkdirEvent,
    ConnEndEvent,
    ConnectEvent,
    DnsEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    PayloadEvent,
    SockReleaseEvent,
);

/// Whose identity an event's header carries.
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// The task running the program (syscall, tracepoint and socket hooks).
    CurrentTask,
    /// The task running the program, already read by the caller.
    Task(&'a Task),
    /// The task that called `connect()`, from its `CONNS` entry: the close runs in any context.
    Connection(&'a ConnState),
    /// No task: a packet (softirq), or a connection whose entry was lost.
    Nobody,
}

/// Writes the header of a `kind` record of `size` bytes happening now.
///
/// # Safety
/// `header` points at the header of a ring-buffer reservation.
#[inline(always)]
unsafe fn write_header(header: *mut EventHeader, kind: EventKind, size: usize, origin: Origin<'_>) {
    let ktime_ns = now_ns();
    // SAFETY: the caller's promise. `comm` is written in place in each arm: an array passed
    // through a value would be copied a byte at a time.
    unsafe {
        let (tgid, tid, uid, gid, cgroup_id) = match origin {
            Origin::CurrentTask => {
                let Task {
                    tgid,
                    tid,
                    uid,
                    gid,
                    cgroup_id,
                    comm,
                } = Task::current();
                (*header).comm = comm;
                (tgid, tid, uid, gid, cgroup_id)
            }
            Origin::Task(task) => {
                (*header).comm = task.comm;
                (task.tgid, task.tid, task.uid, task.gid, task.cgroup_id)
            }
            Origin::Connection(state) => {
                (*header).comm = state.comm;
                (state.tgid, state.tid, state.uid, state.gid, state.cgroup_id)
            }
            Origin::Nobody => {
                (*header).comm = [0; COMM_LEN];
                (0, 0, 0, 0, 0)
            }
        };
        (*header).kind = kind as u16;
        (*header).version = EVENT_VERSION;
        (*header).size = size as u32;
        (*header).ktime_ns = ktime_ns;
        (*header).tgid = tgid;
        (*header).tid = tid;
        (*header).uid = uid;
        (*header).gid = gid;
        (*header).cgroup_id = cgroup_id;
    }
}

/// Puts one `T` record on the ring buffer: reserves it (a full buffer is counted in
/// [`Counter::RingBufFull`] and the event dropped), writes its header (`kind`, now, `origin`),
/// lets `fill` write the rest of the reservation, and submits it.
#[inline(always)]
pub(crate) fn emit<T: Record + 'static>(
    kind: EventKind,
    origin: Origin<'_>,
    fill: impl FnOnce(*mut T),
) {
    emit_waking(kind, origin, false, fill);
}

/// [`emit`], and with `wake` the reader is woken at once: something waits for its answer (a
/// held first payload).
#[inline(always)]
pub(crate) fn emit_waking<T: Record + 'static>(
    kind: EventKind,
    origin: Origin<'_>,
    wake: bool,
    fill: impl FnOnce(*mut T),
) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        // Counted only: a message here, in every program's every emit, would cost the
        // verifier ~25 % more work (`dns_ingress` is the closest to the kernel's limit).
        count(Counter::RingBufFull);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is a reservation of a whole `T`.
    unsafe { write_header(T::header(record), kind, size_of::<T>(), origin) };
    fill(record);
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        submit_flags()
    };
    entry.submit(flags);
}

/// Flags for submitting a record: wake the reader only when this record took the buffer over
/// the mark (see `WAKEUP_WINDOW`).
fn submit_flags() -> u64 {
    let held = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let mark = global(&WAKEUP_BYTES);
    if held >= mark && held - mark < WAKEUP_WINDOW {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The identity of the task running the program.
pub(crate) struct Task {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) cgroup_id: u64,
    pub(crate) comm: [u8; COMM_LEN],
}

impl Task {
    #[inline(always)]
    pub(crate) fn current() -> Self {
        let pid_tgid = bpf_get_current_pid_tgid();
        let uid_gid = bpf_get_current_uid_gid();
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        Self {
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            // SAFETY: helper without arguments.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm,
        }
    }
}

// ---- Destinations and UDP flows ----

/// The destination of a `connect()` or `sendmsg()`, as read from a `bpf_sock_addr` context.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) family: u16,
    /// Host byte order.
    pub(crate) port: u16,
    pub(crate) sock_type: u16,
    pub(crate) protocol: u16,
    /// Network byte order; IPv4 in the first 4 bytes.
    pub(crate) addr: [u8; 16],
    /// `bpf_get_netns_cookie()` of the socket's namespace.
    pub(crate) netns: u64,
}

/// The `UDP_FLOWS` key of a socket's datagrams to one peer.
#[inline(always)]
pub(crate) fn flow_key(cookie: u64, family: u16, port: u16, addr: [u8; 16]) -> UdpFlowKey {
    UdpFlowKey {
        cookie,
        family,
        port,
        _pad: 0,
        addr,
    }
}

/// An IPv4 address laid out as every 16-byte address field is: first 4 bytes, the rest zero.
#[inline(always)]
pub(crate) fn v4_in_16(v4: [u8; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&v4);
    addr
}

/// An IPv6 address field of the context (`user_ip6`, `local_ip6`, ...), read one `u32` at a
/// time (the only access the verifier accepts) and laid out as in the events.
///
/// # Safety
/// `field` points at an IPv6 address field of the running program's context.
#[inline(always)]
pub(crate) unsafe fn ctx_ip6(field: *const [u32; 4]) -> [u8; 16] {
    let word = field.cast::<u32>();
    // SAFETY: the four words of the caller's field, then a `[u32; 4]` as the 16 bytes it is
    // made of (network byte order stays as it was).
    unsafe {
        let words = [
            ctx_field(word),
            ctx_field(word.add(1)),
            ctx_field(word.add(2)),
            ctx_field(word.add(3)),
        ];
        core::mem::transmute::<[u32; 4], [u8; 16]>(words)
    }
}

// ---- Packets ----

/// Hides a value from LLVM so range checks written after it stay in the object code, where the
/// verifier needs them (LLVM otherwise folds them into the arithmetic before).
#[inline(always)]
pub(crate) fn opaque(mut value: u64) -> u64 {
    // SAFETY: one register-to-itself move; it only claims to read and write the register.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads a `T` at `offset` of the packet.
#[inline(always)]
pub(crate) fn load<T>(ctx: &SkBuffContext, offset: u32) -> Option<T> {
    ctx.load::<T>(offset as usize).ok()
}

/// What a packet's IP header says.
pub(crate) struct IpHeader {
    /// [`AF_INET`] or [`AF_INET6`].
    pub(crate) family: u16,
    /// The transport protocol (`IPPROTO_*`).
    pub(crate) protocol: u8,
    /// Offset of the transport header.
    pub(crate) l4: u32,
    /// An IPv4 fragment (offset or more-fragments set). An IPv6 fragment's `protocol` is its
    /// fragment header's, which nothing parses.
    pub(crate) fragment: bool,
}

/// The IP header of a packet; `None` when it is neither IPv4 nor IPv6 or cannot be read. One
/// load of the first 10 bytes (every IPv4 header has 20, every IPv6 header 40): the version,
/// the protocol and, for IPv4, the fragment field.
#[inline(always)]
pub(crate) fn ip_header(ctx: &SkBuffContext) -> Option<IpHeader> {
    let [first, _, _, _, _, _, b6, b7, _, b9] = load::<[u8; 10]>(ctx, 0)?;
    match first >> 4 {
        4 => Some(IpHeader {
            family: AF_INET,
            protocol: b9,
            l4: u32::from(first & 0x0f) * 4,
            fragment: u16::from_be_bytes([b6, b7]) & 0x3fff != 0,
        }),
        6 => Some(IpHeader {
            family: AF_INET6,
            protocol: b6,
            l4: 40,
            fragment: false,
        }),
        _ => None,
    }
}

/// Which address of a packet to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Source,
    Destination,
}

/// The source or destination address of a packet of `family`, laid out as in the events.
#[inline(always)]
pub(crate) fn ip_addr(ctx: &SkBuffContext, family: u16, end: End) -> Option<[u8; 16]> {
    let to = end == End::Destination;
    if family == AF_INET {
        load::<[u8; 4]>(ctx, if to { 16 } else { 12 }).map(v4_in_16)
    } else {
        load::<[u8; 16]>(ctx, if to { 24 } else { 8 })
    }
}

//! Types shared by the kernel programs (`agent-ebpf`) and the userspace agent (`egret`).
//!
//! Every record the kernel writes to the ring buffer starts with an [`EventHeader`]; its
//! [`EventHeader::kind`] (a stable numeric id, see [`EventKind`]) says which payload struct
//! follows. All structs are `#[repr(C)]`, contain no implicit padding (padding is explicit and
//! zeroed), and their sizes and field offsets are pinned by compile-time asserts below, so a
//! change to the layout is a build error rather than garbage at run time.
//!
//! With the `user` feature the crate also provides the userspace half: `aya::Pod` impls and a
//! checked decoder ([`decode`]) from the raw ring-buffer bytes.
#![no_std]

pub mod dns;
pub mod names;
pub mod task;

pub use task::{ExeId, KernelOffsets, TaskIdentity};

#[cfg(feature = "user")]
mod decode;
#[cfg(feature = "user")]
pub use decode::{decode, DecodeError, Event};

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the path an exec named (`bprm->filename`), including the terminating NUL.
pub const EXEC_PATH_LEN: usize = 256;
/// Bytes of the new image's argument vector kept (NUL-separated, as the kernel laid it out);
/// a longer vector is cut and flagged.
pub const EXEC_ARGS_LEN: usize = 4096;

/// `AF_INET` / `AF_INET6` as the kernel uses them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Flag in [`ExecEvent::flags`] (the others are in [`task`]): the path the exec named was
/// longer than [`EXEC_PATH_LEN`].
pub const EXEC_FLAG_PATH_TRUNCATED: u32 = 1 << 0;

/// Indices into the per-CPU `COUNTERS` array: 0, 1, ... in this order.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A record could not be reserved in the ring buffer (it was full): the event is lost.
    RingBufFull,
    /// Datagrams folded into an already-reported UDP flow (not lost, aggregated).
    UdpAggregated,
    /// A UDP flow entry could not be stored (map update failed).
    UdpFlowUpdateFailed,
    /// A TCP connection's state entry could not be stored (map update failed): its end line
    /// lacks the kernel's connect time and identity.
    ConnUpdateFailed,
    /// A TCP connection closed whose state entry was gone (evicted from the LRU map, or the
    /// connection predates the programs): its end line has no connect time.
    ConnStateMissing,
    /// Block mode: a connection whose first payload must carry an approved name could not get
    /// its gate entry (the `GATES` map was full): it was refused instead.
    GateUpdateFailed,
    /// A DNS query's entry could not be stored (map update failed): its answer will not be
    /// believed.
    DnsQueryUpdateFailed,
    /// Block mode: an exec'd file a `processes:` selector approves by its path could not get
    /// its `EXES` entry (the map was full): it is not approved.
    ExeUpdateFailed,
}
/// Number of entries in the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = 8;

/// Stable numeric event ids. Never renumber: add new kinds at the end.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `connect()` on an IPv4/IPv6 socket (TCP or connected UDP): [`ConnectEvent`].
    Connect = 1,
    /// First datagram of a UDP flow (socket, destination) sent with an address: [`ConnectEvent`].
    Send = 2,
    // 3 was `ExecArgs` (path and argv at `execve` entry), gone since the exec event carries
    // the new image's arguments: never reuse it.
    /// A successful exec (`sched_process_exec`): [`ExecEvent`].
    Exec = 4,
    /// A new process (not a thread) was created: [`ForkEvent`].
    Fork = 5,
    /// A process's group leader exited: [`ExitEvent`].
    Exit = 6,
    /// A socket that sent UDP datagrams was released: [`SockReleaseEvent`].
    SockRelease = 7,
    /// A DNS response arrived for a monitored socket: [`DnsEvent`].
    Dns = 8,
    /// A cgroup v2 directory was created: [`CgroupMkdirEvent`].
    CgroupMkdir = 9,
    /// An outbound TCP connection ended (closed, refused, timed out, or failed before any
    /// packet): [`ConnEndEvent`].
    ConnEnd = 10,
    /// First bytes of an outbound TCP connection, one direction: [`PayloadEvent`].
    Payload = 11,
}

impl EventKind {
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Connect,
            2 => Self::Send,
            4 => Self::Exec,
            5 => Self::Fork,
            6 => Self::Exit,
            7 => Self::SockRelease,
            8 => Self::Dns,
            9 => Self::CgroupMkdir,
            10 => Self::ConnEnd,
            11 => Self::Payload,
            _ => return None,
        })
    }
}

/// Common header of every ring-buffer record: who did it, when, where.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EventKind`] as `u16`.
    pub kind: u16,
    /// Layout version of this record; bump when a payload changes incompatibly.
    pub version: u16,
    /// Size in bytes of the whole record (header + payload).
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ktime_ns: u64,
    /// Thread group id (the userspace "pid") of the current task.
    pub tgid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id (inode number of the cgroup directory) of the current task.
    pub cgroup_id: u64,
    /// `comm` of the current task, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Record layout version written by this build.
pub const EVENT_VERSION: u16 = 3;

/// `connect4/6` and `sendmsg4/6`: one outbound connection or UDP flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// `bpf_get_socket_cookie()`: stable id of the socket for its lifetime.
    pub cookie: u64,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, ...
    pub sock_type: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, ... (0 when the kernel did not say).
    pub protocol: u16,
    /// Destination address in network byte order: IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    /// For [`EventKind::Send`]: datagrams of the previous period of this flow that were
    /// never reported (the flow went idle and restarted); 0 otherwise.
    pub prev_datagrams: u64,
    /// What the kernel decided: `VERDICT_*`.
    pub verdict: u32,
    /// Effective uid of the caller at the call ([`UNSET_ID`](task::UNSET_ID) when unknown):
    /// the header has the real one.
    pub euid: u32,
    /// `bpf_get_netns_cookie()` of the socket's network namespace.
    pub netns: u64,
    /// Effective gid of the caller at the call ([`UNSET_ID`](task::UNSET_ID) when unknown).
    pub egid: u32,
    pub _pad: u32,
}

/// The kernel did not evaluate the policy (audit mode): the connection went ahead.
pub const VERDICT_NONE: u32 = 0;
/// Block mode: a rule approved it; the connection went ahead.
pub const VERDICT_ALLOWED: u32 = 1;
/// Block mode: no rule approved it; the call failed with EPERM.
pub const VERDICT_BLOCKED: u32 = 2;
/// Block mode, TCP: approved only because its address was learned from an approved name; its
/// first payload must carry an approved name if it carries one (TLS SNI, HTTP Host).
pub const VERDICT_LEARNED: u32 = 3;
/// Block mode, TCP: no rule approved the address, but the port is in the policy's `name_gate`:
/// the connect went ahead and the first payload must carry an approved name.
pub const VERDICT_NAME_GATE: u32 = 4;

/// `sched_process_exec`: the exec succeeded. Everything is read from the new image, so it is
/// what runs, whatever path, link, interpreter or file descriptor the exec went through.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread id that called exec (differs from `header.tgid` when a non-leader thread execs).
    pub old_tid: u32,
    /// Bytes used in [`Self::filename`].
    pub filename_len: u32,
    /// `EXEC_FLAG_*` (here and in [`task`]).
    pub flags: u32,
    /// Bytes used in [`Self::args`].
    pub args_len: u32,
    pub identity: TaskIdentity,
    /// The file the new image runs (`mm->exe_file`): for a script, its interpreter.
    pub exe: ExeId,
    /// Path components filled in [`Self::exe_names`], from the file up.
    pub exe_depth: u32,
    /// The inode number of the mount namespace the path walk ended in (`/proc/PID/ns/mnt`'s);
    /// 0 when the walk did not reach one (cut, internal, anonymous).
    pub exe_mnt_ns: u32,
    /// Bytes used in each of [`Self::exe_names`].
    pub exe_name_lens: [u8; task::EXE_DEPTH],
    /// The path the exec named, as the caller gave it (`bprm->filename`): relative, a link,
    /// `/proc/self/exe`, `/dev/fd/3`, or for a script the script.
    pub filename: [u8; EXEC_PATH_LEN],
    /// The executable's path, one component per slot from the file up to the root of its mount
    /// namespace (mounts crossed): `["curl", "bin", "usr"]`.
    pub exe_names: [[u8; task::EXE_NAME_LEN]; task::EXE_DEPTH],
    /// The new image's argument vector (`mm->arg_start..arg_end`), NUL-separated: for a script,
    /// the interpreter's (`["/bin/sh", "./run.sh", "a"]`).
    pub args: [u8; EXEC_ARGS_LEN],
}

/// `task_newtask` without `CLONE_THREAD`: a new process. The header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_tgid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
    /// The parent's identity, which the child inherits.
    pub identity: TaskIdentity,
}

/// `sched_process_exit` of a thread-group leader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
}

/// `cgroup/sock_release` of a socket that has UDP flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockReleaseEvent {
    pub header: EventHeader,
    pub cookie: u64,
}

/// `cgroup/cgroup_mkdir` on the cgroup2 hierarchy: a new cgroup (a container starting, a
/// service restarting). Userspace starts identifying a container's cgroup before its first
/// connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupMkdirEvent {
    pub header: EventHeader,
    /// The new cgroup's id.
    pub id: u64,
    /// Bytes used in [`Self::path`].
    pub path_len: u32,
    pub _pad: u32,
    /// Path relative to the cgroup2 root (`/kubepods/besteffort/pod…/<id>`), cut at
    /// [`CGROUP_PATH_HASH_MAX`] bytes.
    pub path: [u8; CGROUP_PATH_HASH_MAX + 1],
}

// ---- TCP connection life cycle (sock_ops) ----

/// `connect()` reached the TCP layer: a SYN was sent (`BPF_SOCK_OPS_TCP_CONNECT_CB`).
pub const CONN_FLAG_SYN_SENT: u32 = 1 << 0;
/// The handshake completed (`BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`).
pub const CONN_FLAG_ESTABLISHED: u32 = 1 << 1;
/// A RST arrived (`tcp:tcp_receive_reset`): refused in `SYN_SENT`, reset afterwards.
pub const CONN_FLAG_RESET: u32 = 1 << 2;
/// The application released the socket before the handshake completed (gave up).
pub const CONN_FLAG_RELEASED: u32 = 1 << 3;
/// This side sent its FIN (entered `FIN_WAIT1` or `LAST_ACK`).
pub const CONN_FLAG_FIN_SENT: u32 = 1 << 4;
/// The peer's FIN was received by the socket (entered `CLOSE_WAIT`/`CLOSING`, or a FIN seen
/// while in `FIN_WAIT1/2`).
pub const CONN_FLAG_PEER_FIN: u32 = 1 << 5;
/// At close, everything sent (including a FIN) was acknowledged (`snd_una == snd_nxt`).
pub const CONN_FLAG_ALL_ACKED: u32 = 1 << 6;
/// No state entry was found at close (evicted, or opened before the programs were attached):
/// the connect time and the connecting task are unknown.
pub const CONN_FLAG_STATE_LOST: u32 = 1 << 7;
/// `connect()` failed before any packet was sent; [`ConnEndEvent::error`] is its errno.
pub const CONN_FLAG_SYNC_FAILURE: u32 = 1 << 8;
/// The error came from an ICMP error report (`sock:inet_sk_error_report`) before the close.
pub const CONN_FLAG_ICMP_ERROR: u32 = 1 << 9;
/// The connection was open before egret started: userspace found it (sock_diag) and put its
/// entry in `CONNS`; its end is reported when the application releases the socket.
pub const CONN_FLAG_PREEXISTING: u32 = 1 << 10;
/// The connection's first payload waits for a name check (`VERDICT_LEARNED`,
/// `VERDICT_NAME_GATE`): the egress program drops it until its `GATES` entry says pass.
pub const CONN_FLAG_GATED: u32 = 1 << 11;
/// The gate said pass: payload flows freely from now on.
pub const CONN_FLAG_GATE_PASSED: u32 = 1 << 12;
/// [`ConnState::out_base`] and [`ConnState::in_base`] are set (the handshake completed).
pub const CONN_FLAG_SEQ_BASES: u32 = 1 << 13;
/// The first bytes this side sends were copied (or will not be).
pub const CONN_FLAG_OUT_SEEN: u32 = 1 << 14;
/// The first bytes the peer sent were copied.
pub const CONN_FLAG_IN_SEEN: u32 = 1 << 15;

/// TCP states as `include/net/tcp_states.h` numbers them.
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_SYN_SENT: u32 = 2;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_FIN_WAIT2: u32 = 5;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_CLOSE_WAIT: u32 = 8;
pub const TCP_LAST_ACK: u32 = 9;
pub const TCP_CLOSING: u32 = 11;

/// Value of the kernel's per-connection map (`CONNS`, LRU, keyed by socket cookie): what the
/// kernel learns between `connect()` and the close.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnState {
    /// `bpf_ktime_get_boot_ns()` at `connect()`.
    pub connect_ns: u64,
    /// When the handshake completed; 0 = not (yet).
    pub established_ns: u64,
    /// Latest counters copied by the egress program (only with progress reporting on).
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// When the counters above were copied; 0 = never.
    pub sampled_ns: u64,
    /// The connecting task (the close may run in any context).
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `CONN_FLAG_*`.
    pub flags: u32,
    pub total_retrans: u32,
    pub comm: [u8; COMM_LEN],
    /// Sequence number of the first payload byte each way (`snd_nxt`, `rcv_nxt` when the
    /// handshake completed): payload offsets are counted from them.
    pub out_base: u32,
    pub in_base: u32,
    /// Bytes of the first flight out to copy (a TLS record's length, else one chunk); 0 = not
    /// known yet.
    pub out_want: u32,
    pub _pad: u32,
}

/// The end of an outbound TCP connection. The header names the task that called `connect()`
/// (from the connection's state entry; zero when [`CONN_FLAG_STATE_LOST`]), its time is the
/// close.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEndEvent {
    pub header: EventHeader,
    pub cookie: u64,
    /// `bpf_ktime_get_boot_ns()` at `connect()`; 0 = unknown.
    pub connect_ns: u64,
    /// When the handshake completed; 0 = never.
    pub established_ns: u64,
    /// `tcp_sock.bytes_acked`: bytes sent and acknowledged, plus one each for SYN and FIN.
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`: bytes received, plus one for a received FIN.
    pub bytes_received: u64,
    /// `bpf_get_netns_cookie()` of the socket's namespace (0 for a synchronous failure).
    pub netns: u64,
    /// `CONN_FLAG_*`.
    pub flags: u32,
    /// errno of a failure (`ECONNREFUSED`, `ETIMEDOUT`, ...); 0 = none known.
    pub error: u32,
    pub total_retrans: u32,
    /// Smoothed round-trip time in microseconds.
    pub srtt_us: u32,
    /// TCP state the socket left for `TCP_CLOSE`.
    pub old_state: u32,
    /// [`AF_INET`] or [`AF_INET6`]; 0 when the addresses are unknown (synchronous failure).
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: [u8; 6],
    /// Network byte order; IPv4 in the first 4 bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// Key of the kernel's UDP flow map: one (socket, destination) pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpFlowKey {
    pub cookie: u64,
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
}

/// Value of the kernel's UDP flow map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlowValue {
    /// Datagrams sent in the current period (since the event that opened it).
    pub datagrams: u64,
    /// `bpf_ktime_get_boot_ns()` of the first datagram of the current period.
    pub first_ns: u64,
    /// `bpf_ktime_get_boot_ns()` of the latest datagram.
    pub last_ns: u64,
    /// `VERDICT_*` of the current period: a change (policy reload) starts a new period.
    pub verdict: u32,
    /// 1 when the flow is a connected socket (`connect()`): its datagrams are counted on the
    /// egress path, not by `sendmsg`.
    pub connected: u32,
    /// UDP payload bytes and datagrams that left (cgroup egress), since the flow entry was
    /// created; never reset.
    pub bytes_out: u64,
    pub packets_out: u64,
    /// UDP payload bytes and datagrams received from the destination (cgroup ingress).
    pub bytes_in: u64,
    pub packets_in: u64,
}

// ---- Policy maps (block mode) ----

/// Protocol bits in [`PolicyEntry::protocols`].
pub const PROTO_TCP: u8 = 1 << 0;
pub const PROTO_UDP: u8 = 1 << 1;
/// Any other transport (ICMP ping sockets, ...).
pub const PROTO_OTHER: u8 = 1 << 2;
pub const PROTO_ANY: u8 = PROTO_TCP | PROTO_UDP | PROTO_OTHER;

/// Most entries one address prefix can carry (its own rules and those of every shorter prefix
/// that contains it). The compiler rejects a policy that needs more.
pub const POLICY_ENTRIES_MAX: usize = 16;
/// Most prefixes per address family in one policy.
pub const POLICY_PREFIXES_MAX: u32 = 16384;
/// Most cgroup selector groups (a rule's `cgroups:` list, or its `systemd_units:` list) in one
/// block-mode policy: each gets one bit of a `u64`.
pub const POLICY_SCOPES_MAX: usize = 64;
/// cgroup ids tracked for scoped rules.
pub const POLICY_CGROUPS_MAX: u32 = 65536;
/// Deepest cgroup level the kernel walks when matching scoped rules.
pub const POLICY_CGROUP_LEVELS: usize = 16;

/// One (ports, protocols, cgroup scope) combination that approves an address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PolicyEntry {
    pub port_lo: u16,
    pub port_hi: u16,
    /// `PROTO_*` bits.
    pub protocols: u8,
    pub _pad: [u8; 3],
    /// Scope bits that must ALL be set in the caller's cgroup mask; 0 = any cgroup.
    pub scopes: u64,
}

/// Value of the LPM tries: the entries that approve the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    pub count: u32,
    pub _pad: u32,
    pub entries: [PolicyEntry; POLICY_ENTRIES_MAX],
}

/// LPM trie key data for IPv4 (network byte order); the prefix length is aya's `Key` header.
pub type PolicyAddr4 = [u8; 4];
/// LPM trie key data for IPv6 (network byte order).
pub type PolicyAddr6 = [u8; 16];

/// The policy program state: which of the two map sets (0 or 1) is live, and per set its mode
/// and number of domain rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PolicyState {
    /// Index (0 or 1) of the live map set.
    pub active: u32,
    /// `POLICY_MODE_*` of set 0 and set 1.
    pub mode: [u32; 2],
    /// Domain rules in set 0 and set 1 (≤ [`DNS_RULES_MAX`]).
    pub domain_rules: [u32; 2],
    /// Bit `i` set: set `i` has cgroup-scoped entries (the caller's cgroup mask is needed).
    pub scoped: u32,
    /// Bit `i` set: set `i` has `name_gate` ports (`NAME_GATE_PORTS_i`).
    pub name_gate: u32,
    /// Bit `i` set: set `i` has `processes:` selectors (`EXES_i`, `EXE_PATHS_i`).
    pub exes: u32,
}

/// Most executable files the `processes:` selectors of one policy approve at once.
pub const EXES_MAX: u32 = 16384;
/// Most paths and directory patterns of `processes:` selectors in one policy.
pub const EXE_PATHS_MAX: u32 = 4096;

/// The word an exec path hash starts each component with.
pub const EXE_HASH_COMPONENT: u64 = b'/' as u64;
/// The word that ends a directory's path hash for a `DIR/*` selector (its files).
pub const EXE_HASH_IN: u64 = 1;
/// The word that ends a directory's path hash for a `DIR/**` selector (all below it).
pub const EXE_HASH_BELOW: u64 = 2;

/// One step of the exec path hash (FNV-1a style, on 64-bit words, so the kernel hashes a
/// component in [`task::EXE_NAME_LEN`] / 8 steps without a branch per byte).
pub const fn exe_hash_step(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(dns::NAME_HASH_PRIME)
}

/// The hash the kernel matches an exec'd file's path against for a `processes:` selector:
/// each component (`usr`, `bin`, `curl`) as [`EXE_HASH_COMPONENT`] and then its name
/// zero-padded to [`task::EXE_NAME_LEN`] bytes as little-endian words; a final `*` or `**`
/// component becomes [`EXE_HASH_IN`] or [`EXE_HASH_BELOW`]. `None` for a component the kernel
/// cannot hash (longer than [`task::EXE_NAME_LEN`] − 1 bytes).
pub fn exe_pattern_hash(pattern: &str) -> Option<u64> {
    let mut hash = dns::NAME_HASH_SEED;
    let components: heapless_components::Components<'_> = heapless_components::split(pattern);
    for component in components {
        hash = match component {
            "*" => exe_hash_step(hash, EXE_HASH_IN),
            "**" => exe_hash_step(hash, EXE_HASH_BELOW),
            name => {
                let bytes = name.as_bytes();
                if bytes.len() >= task::EXE_NAME_LEN {
                    return None;
                }
                let mut padded = [0u8; task::EXE_NAME_LEN];
                for (slot, byte) in padded.iter_mut().zip(bytes) {
                    *slot = *byte;
                }
                let mut h = exe_hash_step(hash, EXE_HASH_COMPONENT);
                for word in padded.chunks_exact(8) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(word);
                    h = exe_hash_step(h, u64::from_le_bytes(w));
                }
                h
            }
        };
    }
    Some(hash)
}

/// The non-empty components of a path, without allocating (`no_std`).
mod heapless_components {
    pub type Components<'a> = core::iter::Filter<core::str::Split<'a, char>, fn(&&str) -> bool>;

    pub fn split(path: &str) -> Components<'_> {
        path.split('/').filter(|c| !c.is_empty())
    }
}

/// Most ports in a policy's `name_gate`.
pub const NAME_GATE_PORTS_MAX: u32 = 64;

pub const POLICY_MODE_AUDIT: u32 = 0;
pub const POLICY_MODE_BLOCK: u32 = 1;

/// Longest cgroup path (bytes, relative to the cgroup2 root) the kernel hashes when a cgroup is
/// created; deeper paths get their scope bits from userspace's rescan instead.
pub const CGROUP_PATH_HASH_MAX: usize = 255;

/// Hash of a cgroup path or name (FNV-1a 64, case-sensitive), as the `cgroup_mkdir` tracepoint
/// computes it: the whole path (`/system.slice/payments.service`) for `cgroups:` selectors and
/// its last component (`payments.service`) for exact `systemd_units:` names.
pub const fn path_hash_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(dns::NAME_HASH_PRIME)
}

/// [`path_hash_step`] over a whole string.
pub fn path_hash(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hash = dns::NAME_HASH_SEED;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&b) = bytes.get(i) {
            hash = path_hash_step(hash, b);
        }
        i += 1;
    }
    hash
}

// ---- DNS ----

/// Bytes of a DNS message the kernel copies to userspace (the common EDNS buffer size).
/// Longer messages are cut (`DNS_FLAG_CUT`); their answers past this point are not seen.
pub const DNS_PAYLOAD_MAX: usize = 1232;
/// Most domain rules (rules with at least one name in `to:`) in one block-mode policy.
pub const DNS_RULES_MAX: usize = 16;
/// Most answer records the kernel walks in one response.
pub const DNS_ANSWERS_MAX: usize = 16;
/// Most learned (network namespace, address, rule) entries the kernel keeps per policy set.
pub const DNS_ALLOW_MAX: u32 = 32768;
/// Most approved names (exact and wildcard bases) per policy set.
pub const DNS_NAMES_MAX: u32 = 16384;

/// [`DnsEvent::flags`]: the message was longer than [`DNS_PAYLOAD_MAX`] and was cut.
pub const DNS_FLAG_CUT: u8 = 1 << 0;
/// The kernel could not parse the question or an answer (userspace parses again anyway).
pub const DNS_FLAG_KERNEL_PARSE_FAILED: u8 = 1 << 1;

/// A DNS response delivered to a socket of the monitored cgroup (`cgroup_skb/ingress`). The
/// header's task fields are zero: the packet is handled in softirq, not by the receiver.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    pub header: EventHeader,
    /// Cookie of the receiving socket: ties the answer to the socket (and so the process) that
    /// sent the query.
    pub cookie: u64,
    /// Network namespace cookie of the receiving socket.
    pub netns: u64,
    pub family: u16,
    /// The resolver's port (53 unless configured otherwise).
    pub sport: u16,
    /// 17 (UDP) or 6 (TCP).
    pub transport: u8,
    /// `DNS_FLAG_*`.
    pub flags: u8,
    pub _pad: u16,
    /// Length of the DNS message.
    pub msg_len: u32,
    /// Bytes of it in [`Self::payload`].
    pub captured: u32,
    /// Domain rules (bit i = rule i of the block-mode policy) that approved the question;
    /// their answers' addresses were put in the kernel's allow map before delivery.
    pub approved: u32,
    pub _pad2: u32,
    /// The resolver's address (network byte order; IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

/// Key of the kernel's learned-address map: one entry per (namespace, address, domain rule);
/// the value is the `bpf_ktime_get_boot_ns` time until which the rule approves the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DnsAllowKey {
    pub netns: u64,
    pub family: u16,
    /// Index of the domain rule (0..DNS_RULES_MAX).
    pub rule: u8,
    pub _pad: [u8; 5],
    /// Network byte order; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

/// Value of the approved-names map, keyed by [`dns::name_hash`]: the domain rules that approve
/// exactly this name, and those that approve every name strictly below it (`*.name`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsNameValue {
    pub exact: u32,
    pub wildcard: u32,
}

/// [`DnsEvent::flags`]: the answer came from an address that is not a trusted resolver.
pub const DNS_FLAG_UNTRUSTED: u8 = 1 << 2;
/// The answer matches no query this socket sent to that address and port (same transaction
/// id and question, within [`DNS_QUERY_WINDOW_NS`]).
pub const DNS_FLAG_UNSOLICITED: u8 = 1 << 3;
/// How long a query waits for its answer.
pub const DNS_QUERY_WINDOW_NS: u64 = 5_000_000_000;
/// Most queries awaiting an answer the kernel remembers (LRU).
pub const DNS_QUERIES_MAX: u32 = 16384;
/// Most trusted resolver prefixes.
pub const DNS_RESOLVERS_MAX: u32 = 1024;

/// Key of the kernel's outstanding-query map: a socket and a transaction id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DnsQueryKey {
    pub cookie: u64,
    pub txid: u16,
    pub _pad: [u8; 6],
}

/// Value of the outstanding-query map: where the query went, what it asked, until when an
/// answer is believed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DnsQueryValue {
    /// The resolver's address, as in [`DnsEvent::saddr`].
    pub addr: [u8; 16],
    /// Hash of the question (name, type, class).
    pub question: u64,
    pub expires_ns: u64,
    pub family: u16,
    /// The resolver's port, host byte order.
    pub port: u16,
    pub _pad: u32,
}

// ---- First bytes of each TCP connection ----

/// Bytes of payload one [`PayloadEvent`] carries.
pub const PAYLOAD_CHUNK: usize = 1024;
/// Most bytes of the client's first flight the kernel copies (a ClientHello with
/// post-quantum key shares is about 1.8 KB; the rest of a long first request is not needed).
pub const PAYLOAD_OUT_MAX: u32 = 8192;
/// Most chunks copied from one packet (a GSO packet carries up to 64 KB).
pub const PAYLOAD_CHUNKS_PER_PACKET: u32 = PAYLOAD_OUT_MAX / PAYLOAD_CHUNK as u32;
/// [`PayloadEvent::direction`].
pub const PAYLOAD_OUT: u8 = 0;
pub const PAYLOAD_IN: u8 = 1;

/// Values of the `GATES` map (socket cookie → gate): a connection whose first payload waits
/// for its name to be checked. The kernel writes the pending values at `connect()`, userspace
/// the decision.
pub const GATE_PENDING_LEARNED: u32 = 1;
pub const GATE_PENDING_NAME_GATE: u32 = 2;
pub const GATE_PASS: u32 = 3;
pub const GATE_DROP: u32 = 4;
/// Most connections waiting for a name check at once.
pub const GATES_MAX: u32 = 16384;

/// Bytes a connection carried first, one direction (`cgroup_skb`): the client's first flight
/// (up to [`PAYLOAD_OUT_MAX`]) or the first segment of the server's answer. The header's task
/// fields are zero (a packet may be sent from softirq).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadEvent {
    pub header: EventHeader,
    pub cookie: u64,
    /// Offset of `data[0]` from the first payload byte of this direction.
    pub offset: u32,
    /// Bytes in [`Self::data`].
    pub len: u32,
    /// [`PAYLOAD_OUT`] or [`PAYLOAD_IN`].
    pub direction: u8,
    /// 1: the connection is gated and this packet was dropped (it waits for userspace).
    pub held: u8,
    pub _pad: [u8; 6],
    pub data: [u8; PAYLOAD_CHUNK],
}

/// Marker so a socket cookie is only reported at release when it had UDP flows.
pub type UdpSocketMark = u8;

// ---- Compile-time layout asserts: the kernel and userspace must agree byte for byte. ----
macro_rules! assert_layout {
    ($t:ty, size = $size:expr, $($field:ident @ $off:expr),* $(,)?) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
    };
}

// Every counter has its slot in `COUNTERS`.
const _: () = assert!(Counter::ExeUpdateFailed as u32 + 1 == COUNTER_COUNT);

assert_layout!(EventHeader, size = 56,
    kind @ 0, version @ 2, size @ 4, ktime_ns @ 8, tgid @ 16, tid @ 20, uid @ 24, gid @ 28,
    cgroup_id @ 32, comm @ 40);
assert_layout!(ConnectEvent, size = 120,
    header @ 0, cookie @ 56, family @ 64, port @ 66, sock_type @ 68, protocol @ 70, addr @ 72,
    prev_datagrams @ 88, verdict @ 96, euid @ 100, netns @ 104, egid @ 112);
assert_layout!(DnsEvent, size = 56 + 56 + DNS_PAYLOAD_MAX,
    header @ 0, cookie @ 56, netns @ 64, family @ 72, sport @ 74, transport @ 76, flags @ 77,
    msg_len @ 80, captured @ 84, approved @ 88, saddr @ 96, payload @ 112);
assert_layout!(CgroupMkdirEvent, size = 56 + 16 + CGROUP_PATH_HASH_MAX + 1,
    header @ 0, id @ 56, path_len @ 64, path @ 72);
assert_layout!(DnsAllowKey, size = 32, netns @ 0, family @ 8, rule @ 10, addr @ 16);
assert_layout!(DnsNameValue, size = 8, exact @ 0, wildcard @ 4);
assert_layout!(ExecEvent, size = 56 + 88 + EXEC_PATH_LEN + 16 * 128 + EXEC_ARGS_LEN,
    header @ 0, old_tid @ 56, filename_len @ 60, flags @ 64, args_len @ 68, identity @ 72,
    exe @ 104, exe_depth @ 120, exe_mnt_ns @ 124, exe_name_lens @ 128, filename @ 144, exe_names @ 400,
    args @ 400 + 16 * 128);
assert_layout!(ForkEvent, size = 104, header @ 0, child_tgid @ 56, clone_flags @ 64,
    identity @ 72);
assert_layout!(TaskIdentity, size = 32, loginuid @ 0, sessionid @ 4, uid @ 8, euid @ 12,
    gid @ 16, egid @ 20, sid @ 24, tty @ 28);
assert_layout!(ExeId, size = 16, dev @ 0, generation @ 4, ino @ 8);
assert_layout!(ExitEvent, size = 56, header @ 0);
assert_layout!(SockReleaseEvent, size = 64, header @ 0, cookie @ 56);
assert_layout!(UdpFlowKey, size = 32, cookie @ 0, family @ 8, port @ 10, addr @ 16);
assert_layout!(UdpFlowValue, size = 64, datagrams @ 0, first_ns @ 8, last_ns @ 16, verdict @ 24,
    connected @ 28, bytes_out @ 32, packets_out @ 40, bytes_in @ 48, packets_in @ 56);
assert_layout!(ConnState, size = 104, connect_ns @ 0, established_ns @ 8, bytes_acked @ 16,
    bytes_received @ 24, sampled_ns @ 32, cgroup_id @ 40, tgid @ 48, tid @ 52, uid @ 56,
    gid @ 60, flags @ 64, total_retrans @ 68, comm @ 72, out_base @ 88, in_base @ 92,
    out_want @ 96);
assert_layout!(DnsQueryKey, size = 16, cookie @ 0, txid @ 8);
assert_layout!(DnsQueryValue, size = 40, addr @ 0, question @ 16, expires_ns @ 24, family @ 32,
    port @ 34);
assert_layout!(PayloadEvent, size = 56 + 24 + PAYLOAD_CHUNK, header @ 0, cookie @ 56,
    offset @ 64, len @ 68, direction @ 72, held @ 73, data @ 80);
assert_layout!(ConnEndEvent, size = 168,
    header @ 0, cookie @ 56, connect_ns @ 64, established_ns @ 72, bytes_acked @ 80,
    bytes_received @ 88, netns @ 96, flags @ 104, error @ 108, total_retrans @ 112,
    srtt_us @ 116, old_state @ 120, family @ 124, local_port @ 126, remote_port @ 128,
    local_addr @ 136, remote_addr @ 152);
assert_layout!(PolicyEntry, size = 16, port_lo @ 0, port_hi @ 2, protocols @ 4, scopes @ 8);
assert_layout!(PolicyValue, size = 8 + 16 * POLICY_ENTRIES_MAX, count @ 0, entries @ 8);
assert_layout!(PolicyState, size = 32, active @ 0, mode @ 4, domain_rules @ 12, scoped @ 20,
    name_gate @ 24, exes @ 28);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, contain only integers and byte arrays, and
    // have no implicit padding (asserted above), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::UdpFlowKey {}
    unsafe impl aya::Pod for super::UdpFlowValue {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::PolicyValue {}
    unsafe impl aya::Pod for super::PolicyState {}
    unsafe impl aya::Pod for super::DnsAllowKey {}
    unsafe impl aya::Pod for super::DnsNameValue {}
    unsafe impl aya::Pod for super::DnsQueryKey {}
    unsafe impl aya::Pod for super::DnsQueryValue {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ExeId {}
}

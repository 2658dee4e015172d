//! Kernel records built as the programs write them: a connect, a connection's end, a DNS
//! answer, an exec, a fork, an exit, a socket release, a connection's first bytes. The unit
//! tests feed them to the stages, and the replay benchmark ([`super::replay`]) generates its
//! workload with them.

use std::net::{IpAddr, Ipv4Addr};

use agent_common::{
    task::{EXE_DEPTH, EXE_NAME_LEN},
    CgroupMkdirEvent, ConnEndEvent, ConnectEvent, DnsEvent, EventHeader, EventKind, ExeId,
    ExecEvent, ExitEvent, ForkEvent, PayloadEvent, SockReleaseEvent, TaskIdentity,
    CGROUP_PATH_HASH_MAX, CONN_FLAG_ALL_ACKED, CONN_FLAG_ESTABLISHED, CONN_FLAG_FIN_SENT,
    CONN_FLAG_SYN_SENT, DNS_PAYLOAD_MAX, EVENT_VERSION, EXEC_ARGS_LEN, EXEC_PATH_LEN,
    PAYLOAD_CHUNK, TCP_SYN_SENT, VERDICT_NONE,
};

use crate::record::kernel_address;

/// A pid no real process has, so nothing is read from this machine's `/proc`.
pub const PID: u32 = 4_000_000_001;
pub const SECOND: u64 = 1_000_000_000;

/// A record type the kernel programs write into the ring buffer.
///
/// # Safety
/// Implemented only for the shared `#[repr(C)]` record types, whose padding is explicit
/// (`_pad` fields): every byte of a value is initialised.
pub unsafe trait KernelRecord: Copy {}

// SAFETY: the shared record types, `#[repr(C)]` with explicit padding.
unsafe impl KernelRecord for ConnectEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for ConnEndEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for DnsEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for ExecEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for ForkEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for ExitEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for SockReleaseEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for CgroupMkdirEvent {}
// SAFETY: as above.
unsafe impl KernelRecord for PayloadEvent {}

/// The bytes of a record, as the kernel writes it (borrowed: no copy).
pub fn record_bytes<T: KernelRecord>(value: &T) -> &[u8] {
    // SAFETY: `KernelRecord` types have every byte initialised, and the slice borrows `value`.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of a record, as the kernel writes it.
pub fn bytes<T: KernelRecord>(value: &T) -> Vec<u8> {
    record_bytes(value).to_vec()
}

/// An address a record builder takes: an [`IpAddr`], or in unit tests its text.
pub trait ToIp {
    fn to_ip(self) -> IpAddr;
}

impl ToIp for IpAddr {
    fn to_ip(self) -> IpAddr {
        self
    }
}

#[cfg(test)]
impl ToIp for &str {
    fn to_ip(self) -> IpAddr {
        self.parse().unwrap()
    }
}

pub fn header(kind: EventKind, ktime_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u16,
        version: EVENT_VERSION,
        size: 0,
        ktime_ns,
        tgid: PID,
        tid: PID,
        uid: 0,
        gid: 0,
        cgroup_id: 1,
        comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
    }
}

/// A `connect()` (TCP) or first datagram (UDP, `Send`) to `ip:port`.
pub fn connect(
    kind: EventKind,
    cookie: u64,
    ip: impl ToIp,
    port: u16,
    ktime_ns: u64,
) -> ConnectEvent {
    let (family, addr) = kernel_address(ip.to_ip());
    let udp = kind == EventKind::Send;
    ConnectEvent {
        header: header(kind, ktime_ns),
        cookie,
        family,
        port,
        sock_type: if udp { 2 } else { 1 },
        protocol: if udp { 17 } else { 6 },
        addr,
        prev_datagrams: 0,
        verdict: VERDICT_NONE,
        euid: 0,
        netns: 1,
        egid: 0,
        _pad: 0,
    }
}

/// The kernel's end record of connection `cookie` to `ip:port`.
pub fn conn_end(cookie: u64, ip: impl ToIp, port: u16, flags: u32, error: u32) -> ConnEndEvent {
    let (family, remote_addr) = kernel_address(ip.to_ip());
    let (_, local_addr) = kernel_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    ConnEndEvent {
        header: header(EventKind::ConnEnd, 3 * SECOND),
        cookie,
        connect_ns: SECOND,
        established_ns: if flags & CONN_FLAG_ESTABLISHED != 0 {
            SECOND + 250_000
        } else {
            0
        },
        bytes_acked: 1002,
        bytes_received: 300,
        netns: 1,
        flags,
        error,
        total_retrans: 0,
        srtt_us: 30,
        old_state: TCP_SYN_SENT,
        family,
        local_port: 40_000,
        remote_port: port,
        _pad: [0; 6],
        local_addr,
        remote_addr,
    }
}

pub const CLOSED: u32 =
    CONN_FLAG_SYN_SENT | CONN_FLAG_ESTABLISHED | CONN_FLAG_FIN_SENT | CONN_FLAG_ALL_ACKED;

/// `example.com A 93.184.215.14`, TTL 3600, as received on a socket with `cookie`.
pub fn dns_answer(cookie: u64) -> DnsEvent {
    let message = dns_message(
        0xb4a6,
        "example.com",
        &[IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14))],
        3600,
    );
    let resolver = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53));
    dns_event(cookie, resolver, &message, SECOND)
}

/// A resolver's answer (`id`, recursion desired and available) to the question `name` (of
/// the first address's type) with one record per address, each with `ttl` seconds. The
/// question is named once; each answer points back at it.
pub fn dns_message(id: u16, name: &str, addresses: &[IpAddr], ttl: u32) -> Vec<u8> {
    let rtype = |ip: &IpAddr| -> u16 {
        match ip {
            IpAddr::V4(_) => 1,
            IpAddr::V6(_) => 28,
        }
    };
    let count = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
    let mut m = Vec::with_capacity(64 + name.len() + 28 * addresses.len());
    for word in [id, 0x8180, 1, count, 0, 0] {
        m.extend_from_slice(&word.to_be_bytes());
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        m.extend_from_slice(label.as_bytes().get(..63).unwrap_or(label.as_bytes()));
    }
    m.push(0);
    let qtype = addresses.first().map_or(1, rtype);
    for word in [qtype, 1] {
        m.extend_from_slice(&word.to_be_bytes());
    }
    for ip in addresses.iter().take(usize::from(count)) {
        // A pointer to the question's name at offset 12.
        for word in [0xc00c, rtype(ip), 1] {
            m.extend_from_slice(&word.to_be_bytes());
        }
        m.extend_from_slice(&ttl.to_be_bytes());
        let data = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        m.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
}

/// The ingress program's record of DNS `message` from `resolver` port 53 (UDP), received on
/// the asking socket `cookie`; cut at [`DNS_PAYLOAD_MAX`] bytes as the kernel cuts it.
pub fn dns_event(cookie: u64, resolver: IpAddr, message: &[u8], ktime_ns: u64) -> DnsEvent {
    let captured = message.len().min(DNS_PAYLOAD_MAX);
    let mut payload = [0; DNS_PAYLOAD_MAX];
    if let (Some(to), Some(from)) = (payload.get_mut(..captured), message.get(..captured)) {
        to.copy_from_slice(from);
    }
    let (family, saddr) = kernel_address(resolver);
    DnsEvent {
        header: header(EventKind::Dns, ktime_ns),
        cookie,
        netns: 1,
        family,
        sport: 53,
        transport: 17,
        flags: if captured < message.len() {
            agent_common::DNS_FLAG_CUT
        } else {
            0
        },
        _pad: 0,
        msg_len: u32::try_from(message.len()).unwrap_or(u32::MAX),
        captured: u32::try_from(captured).unwrap_or(u32::MAX),
        approved: 0,
        _pad2: 0,
        saddr,
        payload,
    }
}

/// `bytes` at the start of a zeroed array, as the kernel fills a fixed-size field (cut to it).
fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    for (to, from) in out.iter_mut().zip(bytes) {
        *to = *from;
    }
    out
}

fn len_u32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

/// `pid` exec'd `path` (absolute; the kernel walked it) with `args`.
pub fn exec(pid: u32, path: &str, args: &[&str]) -> ExecEvent {
    let joined = args.join("\0");
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).rev().collect();
    let mut exe_names = [[0u8; EXE_NAME_LEN]; EXE_DEPTH];
    let mut exe_name_lens = [0u8; EXE_DEPTH];
    for ((slot, len), name) in exe_names
        .iter_mut()
        .zip(&mut exe_name_lens)
        .zip(&components)
    {
        *slot = padded::<EXE_NAME_LEN>(name.as_bytes());
        *len = u8::try_from(name.len().min(EXE_NAME_LEN)).unwrap_or(u8::MAX);
    }
    ExecEvent {
        header: EventHeader {
            tgid: pid,
            tid: pid,
            ..header(EventKind::Exec, 0)
        },
        old_tid: pid,
        filename_len: len_u32(path.as_bytes()).min(EXEC_PATH_LEN as u32),
        flags: 0,
        args_len: len_u32(joined.as_bytes()).min(EXEC_ARGS_LEN as u32),
        identity: TaskIdentity {
            loginuid: 1000,
            sessionid: 7,
            uid: 1000,
            euid: 1000,
            gid: 1000,
            egid: 1000,
            sid: pid,
            tty: 0,
        },
        exe: ExeId {
            dev: 8 << 20 | 1,
            generation: 0,
            ino: 4242,
        },
        exe_depth: u32::try_from(components.len().min(EXE_DEPTH)).unwrap_or(0),
        exe_mnt_ns: 4_026_531_841,
        exe_name_lens,
        filename: padded::<EXEC_PATH_LEN>(path.as_bytes()),
        exe_names,
        args: padded::<EXEC_ARGS_LEN>(joined.as_bytes()),
    }
}

/// `parent` forked `child`, which inherits `identity`.
pub fn fork(parent: u32, child: u32, identity: TaskIdentity, ktime_ns: u64) -> ForkEvent {
    ForkEvent {
        header: EventHeader {
            tgid: parent,
            tid: parent,
            ..header(EventKind::Fork, ktime_ns)
        },
        child_tgid: child,
        _pad: 0,
        // SIGCHLD, as fork() passes it.
        clone_flags: 17,
        identity,
    }
}

/// Process `pid` exited.
pub fn exit(pid: u32, ktime_ns: u64) -> ExitEvent {
    ExitEvent {
        header: EventHeader {
            tgid: pid,
            tid: pid,
            ..header(EventKind::Exit, ktime_ns)
        },
    }
}

/// Socket `cookie`, which had UDP flows, was released.
pub fn sock_release(cookie: u64, ktime_ns: u64) -> SockReleaseEvent {
    SockReleaseEvent {
        header: header(EventKind::SockRelease, ktime_ns),
        cookie,
    }
}

/// Cgroup `id` was created at `path` (relative to the cgroup2 root).
pub fn cgroup_mkdir(id: u64, path: &str, ktime_ns: u64) -> CgroupMkdirEvent {
    CgroupMkdirEvent {
        header: header(EventKind::CgroupMkdir, ktime_ns),
        id,
        path_len: len_u32(path.as_bytes()).min(CGROUP_PATH_HASH_MAX as u32),
        _pad: 0,
        path: padded::<{ CGROUP_PATH_HASH_MAX + 1 }>(
            path.as_bytes()
                .get(..CGROUP_PATH_HASH_MAX)
                .unwrap_or(path.as_bytes()),
        ),
    }
}

/// A chunk of connection `cookie`'s first bytes (`direction`: `PAYLOAD_OUT` or `PAYLOAD_IN`)
/// at `offset`; `held`: the kernel dropped it, waiting for the name check.
pub fn payload(cookie: u64, direction: u8, offset: u32, data: &[u8], held: bool) -> PayloadEvent {
    PayloadEvent {
        header: header(EventKind::Payload, SECOND),
        cookie,
        offset,
        len: len_u32(data).min(PAYLOAD_CHUNK as u32),
        direction,
        held: u8::from(held),
        _pad: [0; 6],
        data: padded::<PAYLOAD_CHUNK>(data),
    }
}

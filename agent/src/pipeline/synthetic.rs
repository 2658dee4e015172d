//! Kernel records for unit tests, built as the programs write them: a connect, a connection's
//! end, a DNS answer, an exec, a connection's first bytes.

use std::net::IpAddr;

use agent_common::{
    task::{EXE_DEPTH, EXE_NAME_LEN},
    ConnEndEvent, ConnectEvent, DnsEvent, EventHeader, EventKind, ExeId, ExecEvent, PayloadEvent,
    TaskIdentity, CONN_FLAG_ALL_ACKED, CONN_FLAG_ESTABLISHED, CONN_FLAG_FIN_SENT,
    CONN_FLAG_SYN_SENT, DNS_PAYLOAD_MAX, EVENT_VERSION, EXEC_ARGS_LEN, EXEC_PATH_LEN,
    PAYLOAD_CHUNK, TCP_SYN_SENT, VERDICT_NONE,
};

use crate::record::kernel_address;

/// A pid no real process has, so nothing is read from this machine's `/proc`.
pub const PID: u32 = 4_000_000_001;
pub const SECOND: u64 = 1_000_000_000;

/// The bytes of a `#[repr(C)]` record, as the kernel writes it.
pub fn bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the shared record types are `#[repr(C)]` with explicit padding: every byte is
    // initialised, and the slice lives no longer than `value`.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
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
pub fn connect(kind: EventKind, cookie: u64, ip: &str, port: u16, ktime_ns: u64) -> ConnectEvent {
    let (family, addr) = kernel_address(ip.parse::<IpAddr>().unwrap());
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
pub fn conn_end(cookie: u64, ip: &str, port: u16, flags: u32, error: u32) -> ConnEndEvent {
    let (family, remote_addr) = kernel_address(ip.parse::<IpAddr>().unwrap());
    let (_, local_addr) = kernel_address("192.0.2.1".parse::<IpAddr>().unwrap());
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
    let answer: &[u8] = &[
        0xb4, 0xa6, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l',
        b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4,
        93, 184, 215, 14,
    ];
    let mut payload = [0; DNS_PAYLOAD_MAX];
    payload[..answer.len()].copy_from_slice(answer);
    let (family, saddr) = kernel_address("10.0.0.53".parse::<IpAddr>().unwrap());
    DnsEvent {
        header: header(EventKind::Dns, SECOND),
        cookie,
        netns: 1,
        family,
        sport: 53,
        transport: 17,
        flags: 0,
        _pad: 0,
        msg_len: answer.len() as u32,
        captured: answer.len() as u32,
        approved: 0,
        _pad2: 0,
        saddr,
        payload,
    }
}

/// `bytes` at the start of a zeroed array, as the kernel fills a fixed-size field.
fn padded<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

/// `pid` exec'd `path` (absolute; the kernel walked it) with `args`.
pub fn exec(pid: u32, path: &str, args: &[&str]) -> ExecEvent {
    let joined = args.join("\0");
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).rev().collect();
    let mut exe_names = [[0u8; EXE_NAME_LEN]; EXE_DEPTH];
    let mut exe_name_lens = [0u8; EXE_DEPTH];
    for (i, name) in components.iter().enumerate() {
        exe_names[i] = padded::<EXE_NAME_LEN>(name.as_bytes());
        exe_name_lens[i] = name.len() as u8;
    }
    ExecEvent {
        header: EventHeader {
            tgid: pid,
            tid: pid,
            ..header(EventKind::Exec, 0)
        },
        old_tid: pid,
        filename_len: path.len() as u32,
        flags: 0,
        args_len: joined.len() as u32,
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
        exe_depth: components.len() as u32,
        _pad: 0,
        exe_name_lens,
        filename: padded::<EXEC_PATH_LEN>(path.as_bytes()),
        exe_names,
        args: padded::<EXEC_ARGS_LEN>(joined.as_bytes()),
    }
}

/// A chunk of connection `cookie`'s first bytes (`direction`: `PAYLOAD_OUT` or `PAYLOAD_IN`)
/// at `offset`; `held`: the kernel dropped it, waiting for the name check.
pub fn payload(cookie: u64, direction: u8, offset: u32, data: &[u8], held: bool) -> PayloadEvent {
    PayloadEvent {
        header: header(EventKind::Payload, SECOND),
        cookie,
        offset,
        len: data.len() as u32,
        direction,
        held: u8::from(held),
        _pad: [0; 6],
        data: padded::<PAYLOAD_CHUNK>(data),
    }
}

//! Outbound TCP connections that were already open when egret started, found with sock_diag
//! (`NETLINK_SOCK_DIAG` dumps) in every network namespace a process lives in.
//!
//! The kernel never ran the state callbacks for these sockets, so egret cannot see them close
//! through `sock_ops`. Instead it gives each one a `CONNS` entry marked pre-existing (keyed by
//! the socket cookie, which sock_diag reports), and the `sock_release` program reports its end
//! when the application closes it.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::fs::MetadataExt,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg` without its attributes.
const DIAG_MSG: usize = 72;
const IPPROTO_TCP: u8 = 6;

const TCP_LISTEN: u8 = 10;
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag socket: {0}")]
    Io(#[from] io::Error),
    #[error("sock_diag: the kernel answered with error {0}")]
    Kernel(i32),
    #[error("sock_diag: malformed answer ({0})")]
    Malformed(&'static str),
    #[error("entering the network namespace of pid {pid}: {source}")]
    Setns { pid: u32, source: nix::Error },
    #[error("{0} other network namespaces not searched: entering one needs CAP_SYS_ADMIN, which egret does not have (connections older than egret there get no end line)")]
    NoSysAdmin(usize),
}

/// Whether this process may enter other network namespaces (CAP_SYS_ADMIN in its effective
/// set). Without it egret does not even try: a hardened unit's system call filter may not allow
/// `setns`.
fn may_setns() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// One TCP socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSock {
    pub cookie: u64,
    /// `AF_INET` or `AF_INET6` (an IPv6 socket's IPv4-mapped addresses are shown as IPv4).
    pub family: u8,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub uid: u32,
    pub inode: u32,
}

/// The request for every TCP socket of `family` in the current network namespace.
fn request(family: u8, seq: u32) -> [u8; NLMSG_HDR + 56] {
    const LEN: usize = NLMSG_HDR + 56;
    let mut msg = [0u8; LEN];
    msg[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, id (all zero: any).
    msg[16] = family;
    msg[17] = IPPROTO_TCP;
    msg[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    msg
}

fn addr(family: u8, bytes: &[u8], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(
            *bytes.first()?,
            *bytes.get(1)?,
            *bytes.get(2)?,
            *bytes.get(3)?,
        )),
        10 => {
            let v6: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            let v6 = Ipv6Addr::from(v6);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one `recv` worth of netlink messages. Returns the sockets and whether the dump is
/// complete (`NLMSG_DONE` seen).
pub fn parse(mut buf: &[u8], out: &mut Vec<DiagSock>) -> Result<bool, SockDiagError> {
    while buf.len() >= NLMSG_HDR {
        let len = u32_at(buf, 0).ok_or(SockDiagError::Malformed("header"))? as usize;
        let kind = buf
            .get(4..6)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes)
            .ok_or(SockDiagError::Malformed("header"))?;
        let body = buf
            .get(NLMSG_HDR..len)
            .filter(|_| len >= NLMSG_HDR)
            .ok_or(SockDiagError::Malformed("message length"))?;
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or(SockDiagError::Malformed("error"))? as i32;
                // Saturating: `-i32::MIN` overflows (found by fuzz/fuzz_targets/sockdiag_parse).
                return Err(SockDiagError::Kernel(code.saturating_neg()));
            }
            SOCK_DIAG_BY_FAMILY => out.extend(diag_msg(body)?),
            _ => {}
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Ok(false)
}

/// One `struct inet_diag_msg`: family, state, timer, retrans, then the socket id (ports in
/// network order, source and destination addresses, interface, cookie), expires, queues, uid,
/// inode. `None` for a family other than IPv4/IPv6.
fn diag_msg(body: &[u8]) -> Result<Option<DiagSock>, SockDiagError> {
    let msg: &[u8; DIAG_MSG] = body
        .get(..DIAG_MSG)
        .and_then(|b| b.try_into().ok())
        .ok_or(SockDiagError::Malformed("inet_diag_msg"))?;
    let [family, state, _timer, _retrans, s0, s1, d0, d1, ..] = *msg;
    let (Some(src), Some(dst)) = (msg.get(8..24), msg.get(24..40)) else {
        return Err(SockDiagError::Malformed("inet_diag_msg"));
    };
    let (Some(local), Some(remote)) = (
        addr(family, src, u16::from_be_bytes([s0, s1])),
        addr(family, dst, u16::from_be_bytes([d0, d1])),
    ) else {
        return Ok(None);
    };
    let cookie_lo = u32_at(msg, 44).unwrap_or(0);
    let cookie_hi = u32_at(msg, 48).unwrap_or(0);
    Ok(Some(DiagSock {
        cookie: u64::from(cookie_lo) | (u64::from(cookie_hi) << 32),
        family,
        state,
        local,
        remote,
        uid: u32_at(msg, 64).unwrap_or(0),
        inode: u32_at(msg, 68).unwrap_or(0),
    }))
}

/// Every TCP socket (IPv4 and IPv6) of the calling thread's network namespace.
pub fn dump() -> Result<Vec<DiagSock>, SockDiagError> {
    let fd = netlink_socket()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        send(&fd, &request(family, seq))?;
        loop {
            // SAFETY: valid descriptor and buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error().into());
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 || parse(buf.get(..n).unwrap_or_default(), &mut out)? {
                break;
            }
        }
    }
    Ok(out)
}

/// A sock_diag netlink socket in the calling thread's network namespace.
fn netlink_socket() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request to the kernel.
fn send(fd: &OwnedFd, req: &[u8]) -> Result<(), SockDiagError> {
    // SAFETY: valid descriptor and buffer; the kernel's netlink address is all zeros.
    let sent = unsafe {
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            std::ptr::from_ref(&sa).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// The outbound connections among one namespace's sockets: not listening, not accepted from a
/// local listener (its local port is not a listening port), not in TIME_WAIT or closed.
pub fn outbound(socks: &[DiagSock]) -> Vec<DiagSock> {
    let listening: HashSet<u16> = socks
        .iter()
        .filter(|s| s.state == TCP_LISTEN)
        .map(|s| s.local.port())
        .collect();
    socks
        .iter()
        .filter(|s| {
            !matches!(
                s.state,
                TCP_LISTEN | TCP_SYN_RECV | TCP_TIME_WAIT | TCP_CLOSE
            ) && !listening.contains(&s.local.port())
                && s.cookie != 0
        })
        .copied()
        .collect()
}

/// The outbound connections open right now in every network namespace some process is in.
/// A namespace that cannot be entered is reported in the second list and skipped.
pub fn scan_all() -> (Vec<DiagSock>, Vec<SockDiagError>) {
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| (m.dev(), m.ino()));
    for pid in crate::process::live_pids() {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            seen.entry((m.dev(), m.ino())).or_insert(pid);
        }
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let may_enter = may_setns();
    let mut skipped = 0;
    for (ns, pid) in seen {
        let result = if own.as_ref().ok() == Some(&ns) {
            dump()
        } else if may_enter {
            in_netns_of(pid)
        } else {
            skipped += 1;
            continue;
        };
        match result {
            Ok(socks) => found.extend(outbound(&socks)),
            Err(err) => errors.push(err),
        }
    }
    if skipped > 0 {
        errors.push(SockDiagError::NoSysAdmin(skipped));
    }
    (found, errors)
}

/// `SOCK_DESTROY`: closes a socket from outside, as `ss -K` does (`CONFIG_INET_DIAG_DESTROY`).
const SOCK_DESTROY: u16 = 21;
const NLM_F_ACK: u16 = 0x4;

/// Destroys the TCP socket with `cookie` (its application gets `ECONNABORTED`, the peer a
/// RST), looking for it in the network namespace of `pid` (the process that connected), or
/// in egret's own without one. `Ok(false)`: no such socket (it is gone already).
pub fn destroy(pid: Option<u32>, cookie: u64) -> Result<bool, SockDiagError> {
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| (m.dev(), m.ino()));
    let theirs = pid.and_then(|pid| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|m| ((m.dev(), m.ino()), pid))
    });
    match theirs {
        Some((ns, pid)) if own.as_ref().ok() != Some(&ns) => {
            let file = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            std::thread::spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|source| SockDiagError::Setns { pid, source })?;
                destroy_here(cookie)
            })
            .join()
            .unwrap_or(Err(SockDiagError::Malformed("namespace thread panicked")))
        }
        _ => destroy_here(cookie),
    }
}

/// [`destroy`] in the calling thread's network namespace.
fn destroy_here(cookie: u64) -> Result<bool, SockDiagError> {
    let Some(sock) = dump()?.into_iter().find(|s| s.cookie == cookie) else {
        return Ok(false);
    };
    let fd = netlink_socket()?;
    let req = destroy_request(&sock);
    send(&fd, &req)?;
    let mut buf = [0u8; 512];
    // SAFETY: valid descriptor and buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let answer = buf
        .get(..usize::try_from(n).unwrap_or(0))
        .unwrap_or_default();
    // The ACK is an NLMSG_ERROR with code 0.
    match parse(answer, &mut Vec::new()) {
        Ok(_) | Err(SockDiagError::Kernel(0)) => Ok(true),
        Err(SockDiagError::Kernel(code)) if code == libc::ENOENT => Ok(false),
        Err(err) => Err(err),
    }
}

/// A `SOCK_DESTROY` request naming one socket exactly (its addresses, ports and cookie).
fn destroy_request(sock: &DiagSock) -> [u8; NLMSG_HDR + 56] {
    const LEN: usize = NLMSG_HDR + 56;
    let mut msg = [0u8; LEN];
    msg[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DESTROY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[16] = sock.family;
    msg[17] = IPPROTO_TCP;
    msg[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // struct inet_diag_sockid at 24: sport, dport (network order), src[4], dst[4] (u32 each),
    // if, cookie[2].
    msg[24..26].copy_from_slice(&sock.local.port().to_be_bytes());
    msg[26..28].copy_from_slice(&sock.remote.port().to_be_bytes());
    let v6 = sock.family == libc::AF_INET6 as u8;
    let octets = |ip: IpAddr| -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) if v6 => v4.to_ipv6_mapped().octets(),
            IpAddr::V4(v4) => {
                let mut out = [0u8; 16];
                out[..4].copy_from_slice(&v4.octets());
                out
            }
            IpAddr::V6(v6) => v6.octets(),
        }
    };
    msg[28..44].copy_from_slice(&octets(sock.local.ip()));
    msg[44..60].copy_from_slice(&octets(sock.remote.ip()));
    msg[64..68].copy_from_slice(&(sock.cookie as u32).to_ne_bytes());
    msg[68..72].copy_from_slice(&((sock.cookie >> 32) as u32).to_ne_bytes());
    msg
}

/// Most socket descriptors of one process [`push_pending`] tries before giving up.
const PUSH_FDS_MAX: usize = 64;

/// Makes the TCP socket with `cookie`, owned by process `pid`, send what it holds now: a first
/// payload the kernel held for its name check is otherwise sent again only when TCP's probe
/// timer fires (200 ms or more). Finds the socket among the process's descriptors (a copy
/// through `pidfd_getfd`, checked by its cookie) and sets `TCP_NODELAY`, which pushes pending
/// data, then puts the option back. `Ok(false)`: not found (the timer will do it).
pub fn push_pending(pid: u32, cookie: u64) -> io::Result<bool> {
    let Ok(pid) = i32::try_from(pid) else {
        return Ok(false);
    };
    // SAFETY: plain syscall; the result is a new descriptor owned right away.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut tried = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        tried += 1;
        if tried > PUSH_FDS_MAX {
            break;
        }
        // SAFETY: plain syscall on a descriptor we own; the result is owned right away.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if copy < 0 {
            continue;
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
        if sockopt::<u64>(&copy, libc::SOL_SOCKET, libc::SO_COOKIE) != Some(cookie) {
            continue;
        }
        let nodelay = sockopt::<i32>(&copy, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap_or(0);
        set_sockopt(&copy, libc::TCP_NODELAY, 1)?;
        if nodelay == 0 {
            set_sockopt(&copy, libc::TCP_NODELAY, 0)?;
        }
        return Ok(true);
    }
    Ok(false)
}

/// One socket option's value.
fn sockopt<T: Copy + Default>(fd: &OwnedFd, level: i32, name: i32) -> Option<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` has `len` bytes; the kernel writes at most that many.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<T>()).then_some(value)
}

/// Sets a TCP-level integer option.
fn set_sockopt(fd: &OwnedFd, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is an `int`, as the option wants.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Dumps the sockets of `pid`'s network namespace from a short-lived thread that joins it.
fn in_netns_of(pid: u32) -> Result<Vec<DiagSock>, SockDiagError> {
    let file = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|source| SockDiagError::Setns { pid, source })?;
        dump()
    })
    .join()
    .unwrap_or(Err(SockDiagError::Malformed("namespace thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(family: u8, state: u8, sport: u16, dport: u16, cookie: u64) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDR + DIAG_MSG];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let b = &mut m[NLMSG_HDR..];
        b[0] = family;
        b[1] = state;
        b[4..6].copy_from_slice(&sport.to_be_bytes());
        b[6..8].copy_from_slice(&dport.to_be_bytes());
        b[8..12].copy_from_slice(&[127, 0, 0, 1]);
        b[24..28].copy_from_slice(&[10, 0, 0, 9]);
        b[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        b[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        b[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        m
    }

    #[test]
    fn parses_a_dump_and_keeps_outbound_connections() {
        let mut buf = message(2, 10, 8080, 0, 1); // listener
        buf.extend(message(2, 1, 8080, 40000, 2)); // accepted from it
        buf.extend(message(2, 1, 51000, 443, 0x1_0000_0003)); // outbound
        buf.extend(message(2, 6, 52000, 443, 4)); // TIME_WAIT
        let mut done = vec![0u8; NLMSG_HDR + 4];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf.extend(done);
        let mut socks = Vec::new();
        assert!(parse(&buf, &mut socks).unwrap());
        assert_eq!(socks.len(), 4);
        let out = outbound(&socks);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cookie, 0x1_0000_0003);
        assert_eq!(out[0].remote, "10.0.0.9:443".parse().unwrap());
        assert_eq!(out[0].local, "127.0.0.1:51000".parse().unwrap());
        assert_eq!(out[0].uid, 1000);
    }

    /// Found by the fuzzer: an error message whose code is `i32::MIN` panicked negating it.
    #[test]
    fn an_error_code_that_does_not_negate_is_an_error() {
        let mut error = vec![0u8; NLMSG_HDR + 4];
        error[0..4].copy_from_slice(&20u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[NLMSG_HDR..].copy_from_slice(&i32::MIN.to_ne_bytes());
        let mut socks = Vec::new();
        assert!(matches!(
            parse(&error, &mut socks),
            Err(SockDiagError::Kernel(i32::MAX))
        ));
    }

    #[test]
    fn rejects_truncated_and_error_answers() {
        let mut m = message(2, 1, 1, 2, 3);
        m.truncate(40);
        assert!(parse(&m, &mut Vec::new()).is_err());
        let mut err = vec![0u8; NLMSG_HDR + 4];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-13i32).to_ne_bytes());
        assert!(matches!(
            parse(&err, &mut Vec::new()),
            Err(SockDiagError::Kernel(13))
        ));
    }

    #[test]
    fn dumps_this_namespace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let socks = dump().unwrap();
        let local = client.local_addr().unwrap();
        let out = outbound(&socks);
        assert!(
            out.iter()
                .any(|s| s.local == local && s.remote == listener.local_addr().unwrap()),
            "{out:?}"
        );
    }

    /// The cookie of a socket of this process.
    fn cookie_of(stream: &std::net::TcpStream) -> u64 {
        use std::os::fd::AsFd;
        let fd = stream.as_fd().try_clone_to_owned().unwrap();
        sockopt::<u64>(&fd, libc::SOL_SOCKET, libc::SO_COOKIE).unwrap()
    }

    /// `SOCK_DESTROY` needs CAP_NET_ADMIN: run as root (CI is), skipped otherwise.
    fn root() -> bool {
        let root = nix::unistd::geteuid().is_root();
        assert!(
            root || std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root"
        );
        root
    }

    #[test]
    fn destroys_a_socket_by_cookie_and_its_owner_sees_an_abort() {
        if !root() {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _accepted = listener.accept().unwrap();
        let cookie = cookie_of(&client);
        assert!(destroy(None, cookie).unwrap());
        let mut buf = [0u8; 1];
        let err = io::Read::read(&mut client, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
        assert!(!destroy(None, cookie).unwrap(), "gone already");
    }

    #[test]
    fn pushes_a_socket_of_a_process_found_by_its_cookie() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let cookie = cookie_of(&client);
        let pid = std::process::id();
        assert!(push_pending(pid, cookie).unwrap());
        assert!(!client.nodelay().unwrap(), "the option is put back");
        assert!(!push_pending(pid, u64::MAX).unwrap(), "no such socket");
    }
}

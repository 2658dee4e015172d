//! A connection event joined with everything egret knows about who made it: the in-memory
//! form of one `connect`/`send` line, before it is rendered as ECS JSON (`ecs.rs`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use agent_common::{ConnectEvent, EventHeader, AF_INET, AF_INET6};

use crate::{
    cgroup::CgroupInfo,
    policy::{Mode, Protocol},
    process::ProcessInfo,
};

/// `network.transport`, from the socket's protocol (or its type when the protocol is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
    Ipv6Icmp,
    UdpLite,
    Other(u16),
}

impl Transport {
    const SOCK_STREAM: u16 = 1;
    const SOCK_DGRAM: u16 = 2;

    pub fn from_socket(sock_type: u16, protocol: u16) -> Self {
        match (protocol, sock_type) {
            (6, _) | (0, Self::SOCK_STREAM) => Self::Tcp,
            (17, _) | (0, Self::SOCK_DGRAM) => Self::Udp,
            (1, _) => Self::Icmp,
            (58, _) => Self::Ipv6Icmp,
            (136, _) => Self::UdpLite,
            (other, _) => Self::Other(other),
        }
    }

    /// The policy protocol this transport is, if policies can name it.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            Self::Tcp => Some(Protocol::Tcp),
            Self::Udp => Some(Protocol::Udp),
            Self::Icmp | Self::Ipv6Icmp | Self::UdpLite | Self::Other(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Ipv6Icmp => "ipv6-icmp",
            Self::UdpLite => "udplite",
            Self::Other(_) => "unknown",
        }
    }

    /// IANA protocol number, as ECS `network.iana_number` (a string).
    pub fn iana_number(self) -> u16 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
            Self::Ipv6Icmp => 58,
            Self::UdpLite => 136,
            Self::Other(n) => n,
        }
    }
}

/// The destination address of an event; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
/// `None` for an address family the kernel programs do not hook.
pub fn destination_ip(family: u16, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The kernel's form of an address (family and 16 bytes, IPv4 in the first 4): the inverse of
/// [`destination_ip`]. An IPv4-mapped IPv6 address is written as IPv4.
pub fn kernel_address(ip: IpAddr) -> (u16, [u8; 16]) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (AF_INET, addr)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

/// `comm` bytes up to the first NUL.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(comm.get(..end).unwrap_or_default()).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Send,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Send => "send",
        }
    }
}

/// `egret.policy.verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVerdict {
    Approved,
    Unapproved,
    /// Refused in the kernel (block mode).
    Blocked,
}

impl PolicyVerdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Unapproved => "unapproved",
            Self::Blocked => "blocked",
        }
    }
}

/// What the policy said about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub verdict: PolicyVerdict,
    /// The approving rule (`loopback` for the built-in loopback approval).
    pub rule: Option<String>,
    pub mode: Mode,
}

/// What observed DNS says about a connection's destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsNames {
    /// `destination.domain`: the name this process resolved to the address (or the only name
    /// anyone asked for it).
    pub domain: Option<String>,
    /// `egret.dns.names`: every name known for the address.
    pub names: Vec<String>,
    /// Names asked as questions (what domain rules are matched against).
    pub questions: Vec<String>,
}

/// One connection or UDP flow, fully resolved.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub action: Action,
    pub ktime_ns: u64,
    pub tid: u32,
    pub users: Users,
    pub process: Arc<ProcessInfo>,
    pub cgroup: Arc<CgroupInfo>,
    pub cookie: u64,
    pub ip: IpAddr,
    pub port: u16,
    pub transport: Transport,
    /// `VERDICT_*` from the kernel.
    pub kernel_verdict: u32,
    /// Set by the agent once the policy has been consulted.
    pub policy: Option<PolicyOutcome>,
    /// Network namespace cookie of the socket.
    pub netns: u64,
    /// Set by the agent from its DNS cache.
    pub dns: Option<DnsNames>,
    /// Set by the agent from the container runtimes.
    pub container: crate::container::Lookup,
    /// TCP: what the connection's first bytes said, once they were read (boxed: most records
    /// are written before).
    pub first_bytes: Option<Box<FirstBytesSeen>>,
}

/// The users of a connection's call, and the names of every user its line shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Real user and group (the event's header).
    pub uid: u32,
    pub gid: u32,
    /// Effective user and group: the kernel's at the call, else the process's last known.
    pub euid: u32,
    pub egid: u32,
    /// Names of the users on the line (effective, real, login, entry leader's): uid → name.
    pub names: Vec<(u32, Arc<str>)>,
}

impl Users {
    /// Real and effective ids equal: a call whose effective user is not known apart.
    pub fn same(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            euid: uid,
            egid: gid,
            names: Vec::new(),
        }
    }

    pub fn name(&self, uid: u32) -> Option<&str> {
        self.names
            .iter()
            .find(|(id, _)| *id == uid)
            .map(|(_, name)| &**name)
    }
}

/// What the first bytes of a TCP connection said (`--first-bytes`, and gated connections).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstBytesSeen {
    /// The client's first flight was a TLS ClientHello.
    pub tls: Option<crate::payload::tls::ClientHello>,
    /// The client's first flight was an HTTP/1.x request.
    pub http: Option<crate::payload::http::Request>,
    /// The status code of the server's first HTTP response.
    pub status_code: Option<u16>,
    /// The client's first flight looked like TLS or HTTP but could not be read
    /// ([`crate::payload::FirstBytes::Unreadable`]).
    pub unreadable: bool,
    /// Block mode: what became of a first payload held for its name check.
    pub gate: Option<GateOutcome>,
}

/// A held first payload's fate (`egret.destination.name_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// Its name was approved (or it had none where none is required): sent.
    Passed,
    /// Its name was not approved, or it had none where one is required: dropped, socket
    /// destroyed.
    Refused,
    /// The whole first flight did not arrive in time to be judged: dropped, socket destroyed.
    TimedOut,
}

impl GateOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Refused => "refused",
            Self::TimedOut => "timed-out",
        }
    }
}

/// Where a destination's name came from (`egret.destination.name_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// A trusted DNS answer to this process's question.
    Dns,
    /// The TLS ClientHello's server name.
    Tls,
    /// The HTTP request's Host.
    Http,
}

impl NameSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Http => "http",
        }
    }

    /// The source [`name`](Self::name) calls `name`, for readers of the lines.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Dns, Self::Tls, Self::Http]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

impl FirstBytesSeen {
    /// The name the first bytes carry: the TLS server name, else the HTTP Host (not an
    /// address literal: that names nothing).
    pub fn name(&self) -> Option<(&str, NameSource)> {
        if let Some(name) = self.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
            return Some((name, NameSource::Tls));
        }
        self.http
            .as_ref()
            .and_then(|h| h.host.as_deref())
            .filter(|host| host.trim_matches(['[', ']']).parse::<IpAddr>().is_err())
            .map(|host| (host, NameSource::Http))
    }

    /// Block mode: the first flight carries no name a server could route it by, so a
    /// connection approved through a learned address may send it. Not so: a ClientHello with
    /// a `server_name` extension (valid or not), an HTTP request that sent a Host (valid or
    /// not, unless a valid address literal) or whose header block is not whole in the bytes
    /// seen (a Host may follow), a flight that looks like TLS or HTTP but could not be read.
    /// Anything else (SSH, a database protocol) carries none.
    pub fn carries_no_name(&self) -> bool {
        if self.unreadable {
            return false;
        }
        if let Some(hello) = &self.tls {
            return !hello
                .extensions
                .contains(&crate::payload::tls::EXT_SERVER_NAME);
        }
        if let Some(request) = &self.http {
            // A valid host that `name` does not take for a name is an address literal.
            return request.headers_complete && (request.host.is_some() || !request.host_sent);
        }
        true
    }
}

impl ConnectionRecord {
    /// The kernel refused it (block mode).
    pub fn blocked(&self) -> bool {
        self.kernel_verdict == agent_common::VERDICT_BLOCKED
    }

    /// The kernel let it through with its first payload held for a name check (block mode).
    pub fn gated(&self) -> bool {
        matches!(
            self.kernel_verdict,
            agent_common::VERDICT_LEARNED | agent_common::VERDICT_NAME_GATE
        )
    }

    /// `destination.domain` and where it came from: the DNS name this process asked for,
    /// else the TLS server name, else the HTTP Host.
    pub fn destination_name(&self) -> Option<(&str, NameSource)> {
        if let Some(domain) = self.dns.as_ref().and_then(|d| d.domain.as_deref()) {
            return Some((domain, NameSource::Dns));
        }
        self.first_bytes.as_ref().and_then(|f| f.name())
    }

    /// The first bytes name a name the address's trusted DNS answers do not (domain fronting,
    /// a shared address). `false` when either side has no name.
    pub fn name_mismatch(&self) -> bool {
        let Some((name, _)) = self.first_bytes.as_ref().and_then(|f| f.name()) else {
            return false;
        };
        self.dns
            .as_ref()
            .is_some_and(|d| !d.names.is_empty() && !d.names.iter().any(|n| n == name))
    }

    /// Builds the record from a kernel event and its resolved process and cgroup.
    /// `None` when the address family is not IPv4/IPv6 (never produced by the programs).
    pub fn new(
        action: Action,
        event: &ConnectEvent,
        process: Arc<ProcessInfo>,
        cgroup: Arc<CgroupInfo>,
        users: Users,
    ) -> Option<Self> {
        let ConnectEvent {
            header,
            cookie,
            family,
            port,
            sock_type,
            protocol,
            addr,
            prev_datagrams: _,
            verdict,
            euid: _,
            netns,
            egid: _,
            _pad: _,
        } = event;
        let EventHeader { ktime_ns, tid, .. } = header;
        Some(Self {
            action,
            ktime_ns: *ktime_ns,
            tid: *tid,
            users,
            process,
            cgroup,
            cookie: *cookie,
            ip: destination_ip(*family, addr)?,
            port: *port,
            transport: Transport::from_socket(*sock_type, *protocol),
            kernel_verdict: *verdict,
            policy: None,
            netns: *netns,
            dns: None,
            container: crate::container::Lookup::NotAContainer,
            first_bytes: None,
        })
    }
}

/// A connection record for unit tests: process 1 (`curl`), cgroup 1, socket cookie 1, at time
/// 0, nothing resolved; tests change what they look at with struct update syntax.
#[cfg(test)]
pub(crate) fn sample(
    action: Action,
    transport: Transport,
    ip: &str,
    port: u16,
) -> ConnectionRecord {
    ConnectionRecord {
        action,
        ktime_ns: 0,
        tid: 1,
        users: Users::same(0, 0),
        process: Arc::new(ProcessInfo::from_comm(1, "curl")),
        cgroup: Arc::new(CgroupInfo {
            id: 1,
            path: None,
            systemd_unit: None,
        }),
        cookie: 1,
        ip: ip.parse().unwrap(),
        port,
        transport,
        kernel_verdict: 0,
        policy: None,
        netns: 0,
        dns: None,
        container: crate::container::Lookup::NotAContainer,
        first_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_v4_mapped_v6_to_v4() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[93, 184, 216, 34]);
        assert_eq!(
            destination_ip(AF_INET6, &addr),
            Some("93.184.216.34".parse().unwrap())
        );
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            destination_ip(AF_INET, &v4),
            Some("127.0.0.1".parse().unwrap())
        );
        let loopback6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(
            destination_ip(AF_INET6, &loopback6),
            Some("::1".parse().unwrap())
        );
        assert_eq!(destination_ip(1, &v4), None);
        for ip in ["127.0.0.1", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (family, addr) = kernel_address(ip);
            assert_eq!(destination_ip(family, &addr), Some(ip));
        }
        assert_eq!(
            kernel_address("::ffff:10.1.2.3".parse().unwrap()),
            kernel_address("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn names_transports() {
        assert_eq!(Transport::from_socket(1, 6), Transport::Tcp);
        assert_eq!(Transport::from_socket(1, 0), Transport::Tcp);
        assert_eq!(Transport::from_socket(2, 17), Transport::Udp);
        assert_eq!(Transport::from_socket(2, 1).name(), "icmp");
        assert_eq!(Transport::from_socket(5, 132), Transport::Other(132));
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_str(b"curl\0\0\0\0\0\0\0\0\0\0\0\0"), "curl");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}

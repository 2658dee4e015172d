//! The allowlist policy: which destinations are approved, for whom.
//!
//! A policy is a YAML file (`docs/policy.md`), parsed by [`parse`] with every error located by
//! file, line and column. [`matcher`] decides a connection's verdict in userspace (audit mode,
//! and the rule name for every approved connection); [`compile`] turns the rules into the
//! kernel maps that refuse connections in block mode.

pub mod active;
pub mod compile;
pub mod matcher;
pub mod parse;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where something is in a policy file (1-based).
pub use crate::yaml::Position;

/// `audit` reports unapproved destinations; `block` also refuses them in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Audit,
    Block,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Block => "block",
        }
    }
}

/// What loopback destinations get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loopback {
    /// Always approved (the default): 127.0.0.0/8, ::1 (and IPv4-mapped loopback).
    #[default]
    Approve,
    /// Treated like any other destination: approved only by a rule.
    Audit,
}

/// A network transport a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// An address prefix: `addr/len` with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The one address `ip` (`/32` or `/128`); an IPv4-mapped IPv6 address becomes the IPv4
    /// address it maps.
    pub fn host(ip: IpAddr) -> Self {
        let addr = ip.to_canonical();
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// `addr` with the host bits (those after the first `len`) cleared.
    pub fn network(self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` is inside this prefix. An IPv4 prefix never contains an IPv6 address and
    /// the other way round (pass IPv4-mapped addresses unmapped).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self {
            addr: ip,
            len: self.len,
        }
        .network()
            == self.addr
    }

    /// Whether every address of `inner` is inside this prefix (compared on this prefix's
    /// leading bits, host bits or not).
    pub fn covers(self, inner: Self) -> bool {
        let inner_network = Self {
            addr: inner.addr,
            len: self.len,
        }
        .network();
        self.len <= inner.len && self.network() == inner_network
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// A domain name in `to:`: `api.example.com`, or `*.example.com` for any subdomain at any
/// depth (not the apex). Lower-case, without the trailing dot. Matched once DNS correlation
/// exists; until then such entries approve nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPattern {
    /// The name without the `*.` prefix.
    pub name: String,
    pub wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Prefix(Prefix),
    Domain(DomainPattern),
}

/// A glob over a path or name: `*` any run of characters except `/`, `**` any run including
/// `/`, `?` one character, `[abc]` a class. Kept with its source text for messages.
#[derive(Debug, Clone)]
pub struct Glob {
    pub text: String,
    pub matcher: globset::GlobMatcher,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// One rule: a destination is approved by it when every selector it names matches.
/// An empty selector list means "any".
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub position: Position,
    /// Required and non-empty.
    pub to: Vec<Destination>,
    pub ports: Vec<PortRange>,
    pub protocols: Vec<Protocol>,
    /// Executable path globs (`/usr/bin/git`, `/usr/lib/git-core/*`). Audit mode only.
    pub processes: Vec<Glob>,
    /// systemd unit name globs (`payments.service`, `backup-*.service`).
    pub systemd_units: Vec<Glob>,
    /// cgroup paths below the cgroup2 mount (`/system.slice/payments.service`): the cgroup and
    /// everything below it.
    pub cgroups: Vec<String>,
    /// Container name or image globs (`web-*`, `registry.example/app:*`): the connection comes
    /// from a container whose name or image matches.
    pub containers: Vec<Glob>,
    /// Kubernetes namespace globs: the connection comes from a pod in a matching namespace.
    pub namespaces: Vec<Glob>,
    /// Kubernetes pod name globs.
    pub pods: Vec<Glob>,
    /// Where each entry of `to` is in the file (same length and order as `to`; empty for a
    /// rule built in code), for messages such as [`parse::block_mode_errors`].
    pub to_positions: Vec<Position>,
    /// Where the `processes` key is in the file, when the rule has one.
    pub processes_position: Option<Position>,
}

impl Rule {
    /// A rule approving `to` for anyone: every selector "any", no positions. Handy with struct
    /// update syntax: `Rule { ports: vec![..], ..Rule::new("web", to) }`.
    pub fn new(name: impl Into<String>, to: Vec<Destination>) -> Self {
        Self {
            name: name.into(),
            position: Position::default(),
            to,
            ports: Vec::new(),
            protocols: Vec::new(),
            processes: Vec::new(),
            systemd_units: Vec::new(),
            cgroups: Vec::new(),
            containers: Vec::new(),
            namespaces: Vec::new(),
            pods: Vec::new(),
            to_positions: Vec::new(),
            processes_position: None,
        }
    }

    /// Where `to[index]` is in the file, else where the rule is.
    pub fn to_position(&self, index: usize) -> Position {
        self.to_positions
            .get(index)
            .copied()
            .unwrap_or(self.position)
    }
}

/// A whole policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub loopback: Loopback,
    pub rules: Vec<Rule>,
    /// `resolvers:`: the only DNS servers whose answers teach egret names and approvals.
    /// `None` = the key is absent: the nameservers of the host's and each container's
    /// `resolv.conf` (`dns::resolvers`).
    pub resolvers: Option<Vec<Prefix>>,
    /// `name_gate:`: ports on which block mode lets a TCP connect to any address proceed and
    /// judges the first payload's name (TLS SNI, HTTP Host) instead.
    pub name_gate: NameGate,
    /// The file it came from, or `<default>` for the embedded default.
    pub source: String,
}

/// `name_gate:` (off when `ports` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameGate {
    pub ports: Vec<u16>,
}

impl NameGate {
    pub fn covers(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

/// The policy used without `--policy`: audit mode, loopback approved, nothing else.
pub const DEFAULT_POLICY_YAML: &str = "\
# egret's built-in policy: report every destination that is not loopback.
mode: audit
rules: []
";

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: {path}: {message}", position.line, position.column)]
pub struct PolicyError {
    pub file: String,
    pub position: Position,
    /// Where in the document: `rules[2].ports[0]`, `mode`, ...
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Loading failed: every error found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s) in policy {file}:\n{}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors {
    pub file: String,
    pub errors: Vec<PolicyError>,
}

//! Userspace verdicts: is this connection approved by the policy, and by which rule?
//!
//! Address prefixes are indexed per family by (network bits, prefix length), with the distinct
//! lengths kept in a list: a lookup costs one hash probe per distinct prefix length, whatever
//! the number of rules. The candidate rules found there are checked for their other selectors
//! (ports, protocols, processes, systemd units, cgroups) in file order, and the first rule that
//! matches all of them wins.

use std::{collections::HashMap, hash::Hash, net::IpAddr};

use super::{Destination, DomainPattern, Loopback, Policy, Protocol, Rule};

/// `name` (lower-case, no trailing dot) is `pattern`, or for `*.` strictly below it.
pub fn domain_matches(pattern: &DomainPattern, name: &str) -> bool {
    if pattern.wildcard {
        name.len() > pattern.name.len()
            && name.ends_with(pattern.name.as_str())
            && name.as_bytes().get(name.len() - pattern.name.len() - 1) == Some(&b'.')
    } else {
        name == pattern.name
    }
}

/// What is known about one outbound connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// Destination address; an IPv4-mapped IPv6 address is treated as the IPv4 address.
    pub ip: IpAddr,
    pub port: u16,
    /// `None` for a transport that is neither TCP nor UDP: it never matches a rule that names
    /// protocols.
    pub protocol: Option<Protocol>,
    /// `process.executable`; `None` never matches a rule that names processes.
    pub executable: Option<&'a str>,
    /// `egret.systemd.unit`; `None` never matches a rule that names systemd units.
    pub systemd_unit: Option<&'a str>,
    /// `egret.cgroup.path`; `None` never matches a rule that names cgroups.
    pub cgroup_path: Option<&'a str>,
    /// Names (questions of DNS answers, still within their TTL) the address was learned from:
    /// a rule's domain entries approve the connection when one of them matches.
    pub dns_names: &'a [String],
    /// `container.name`, `container.image.name`; `None` never matches `containers`.
    pub container_name: Option<&'a str>,
    pub container_image: Option<&'a str>,
    /// `orchestrator.namespace` and `orchestrator.resource.name` of the pod.
    pub pod_namespace: Option<&'a str>,
    pub pod_name: Option<&'a str>,
}

/// The policy's answer for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'p> {
    /// Approved by the named rule (`loopback` for the built-in loopback approval).
    Approved {
        rule: &'p str,
    },
    Unapproved,
}

impl<'p> Verdict<'p> {
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::Approved { .. })
    }

    /// The approving rule's name.
    pub fn rule(&self) -> Option<&'p str> {
        match self {
            Self::Approved { rule } => Some(rule),
            Self::Unapproved => None,
        }
    }
}

/// Address bits of one family.
trait Bits: Copy + Eq + Hash {
    const WIDTH: u32;
    /// The address with all but the first `len` bits cleared.
    fn network(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u32 = 32;
    fn network(self, len: u8) -> Self {
        self & u32::MAX
            .checked_shl(Self::WIDTH.saturating_sub(u32::from(len)))
            .unwrap_or(0)
    }
}

impl Bits for u128 {
    const WIDTH: u32 = 128;
    fn network(self, len: u8) -> Self {
        self & u128::MAX
            .checked_shl(Self::WIDTH.saturating_sub(u32::from(len)))
            .unwrap_or(0)
    }
}

/// Prefixes of one family: (network, length) to the indices of the rules naming it, ascending.
#[derive(Debug, Clone)]
struct PrefixIndex<A: Bits> {
    /// Distinct prefix lengths present.
    lens: Vec<u8>,
    rules: HashMap<(A, u8), Vec<usize>>,
}

impl<A: Bits> PrefixIndex<A> {
    fn new() -> Self {
        Self {
            lens: Vec::new(),
            rules: HashMap::new(),
        }
    }

    fn insert(&mut self, addr: A, len: u8, rule: usize) {
        let list = self.rules.entry((addr.network(len), len)).or_default();
        // Rules are inserted in order; a rule naming a prefix twice is listed once.
        if list.last() != Some(&rule) {
            list.push(rule);
        }
        if let Err(at) = self.lens.binary_search(&len) {
            self.lens.insert(at, len);
        }
    }

    /// The lowest rule index containing `addr` for which `accept` holds.
    fn first(&self, addr: A, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for &len in &self.lens {
            let Some(list) = self.rules.get(&(addr.network(len), len)) else {
                continue;
            };
            for &rule in list {
                if best.is_some_and(|b| rule >= b) {
                    break;
                }
                if accept(rule) {
                    best = Some(rule);
                    break;
                }
            }
        }
        best
    }
}

/// A policy prepared for fast verdicts. Build it once per policy (load or reload).
#[derive(Debug, Clone)]
pub struct Matcher {
    loopback_approved: bool,
    rules: Vec<Rule>,
    v4: PrefixIndex<u32>,
    v6: PrefixIndex<u128>,
    /// Rules with domain entries, in file order, with those entries.
    domain_rules: Vec<(usize, Vec<DomainPattern>)>,
}

impl Matcher {
    pub fn new(policy: &Policy) -> Self {
        let mut v4 = PrefixIndex::new();
        let mut v6 = PrefixIndex::new();
        let mut domain_rules = Vec::new();
        for (i, rule) in policy.rules.iter().enumerate() {
            let mut domains = Vec::new();
            for to in &rule.to {
                match to {
                    Destination::Prefix(p) => match p.addr {
                        IpAddr::V4(a) => v4.insert(u32::from(a), p.len.min(32), i),
                        IpAddr::V6(a) => v6.insert(u128::from(a), p.len.min(128), i),
                    },
                    Destination::Domain(d) => domains.push(d.clone()),
                }
            }
            if !domains.is_empty() {
                domain_rules.push((i, domains));
            }
        }
        Self {
            loopback_approved: policy.loopback == Loopback::Approve,
            rules: policy.rules.clone(),
            v4,
            v6,
            domain_rules,
        }
    }

    /// The verdict for `conn`: loopback (unless `loopback: audit`), else the first rule in file
    /// order that matches every selector it names.
    pub fn evaluate(&self, conn: &Connection<'_>) -> Verdict<'_> {
        let ip = conn.ip.to_canonical();
        if self.loopback_approved && ip.is_loopback() {
            return Verdict::Approved { rule: "loopback" };
        }
        let accept = |i: usize| {
            self.rules
                .get(i)
                .is_some_and(|rule| selectors_match(rule, conn))
        };
        let by_prefix = match ip {
            IpAddr::V4(a) => self.v4.first(u32::from(a), accept),
            IpAddr::V6(a) => self.v6.first(u128::from(a), accept),
        };
        // Domain rules before the prefix match in file order may still win.
        let by_name = self
            .domain_rules
            .iter()
            .take_while(|(i, _)| by_prefix.is_none_or(|p| *i < p))
            .find(|(i, domains)| {
                domains
                    .iter()
                    .any(|d| conn.dns_names.iter().any(|n| domain_matches(d, n)))
                    && accept(*i)
            })
            .map(|(i, _)| *i);
        match by_name.or(by_prefix).and_then(|i| self.rules.get(i)) {
            Some(rule) => Verdict::Approved { rule: &rule.name },
            None => Verdict::Unapproved,
        }
    }

    /// The first domain rule (file order) that approves `conn` by `name` alone: a name read
    /// from the connection's first bytes (TLS server name, HTTP Host). Address rules and the
    /// names learned from DNS play no part.
    pub fn approve_name(&self, conn: &Connection<'_>, name: &str) -> Option<&str> {
        self.domain_rules
            .iter()
            .find(|(i, domains)| {
                domains.iter().any(|d| domain_matches(d, name))
                    && self
                        .rules
                        .get(*i)
                        .is_some_and(|rule| selectors_match(rule, conn))
            })
            .and_then(|(i, _)| self.rules.get(*i))
            .map(|rule| rule.name.as_str())
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Every selector of `rule` other than `to` matches `conn` (an empty list matches anything).
fn selectors_match(rule: &Rule, conn: &Connection<'_>) -> bool {
    let glob = |globs: &[super::Glob], value: Option<&str>| {
        value.is_some_and(|v| globs.iter().any(|g| g.matcher.is_match(v)))
    };
    (rule.containers.is_empty()
        || glob(&rule.containers, conn.container_name)
        || glob(&rule.containers, conn.container_image))
        && (rule.namespaces.is_empty() || glob(&rule.namespaces, conn.pod_namespace))
        && (rule.pods.is_empty() || glob(&rule.pods, conn.pod_name))
        && (rule.ports.is_empty() || rule.ports.iter().any(|r| r.contains(conn.port)))
        && (rule.protocols.is_empty() || conn.protocol.is_some_and(|p| rule.protocols.contains(&p)))
        && (rule.processes.is_empty()
            || conn
                .executable
                .is_some_and(|exe| rule.processes.iter().any(|g| g.matcher.is_match(exe))))
        && (rule.systemd_units.is_empty()
            || conn
                .systemd_unit
                .is_some_and(|unit| rule.systemd_units.iter().any(|g| g.matcher.is_match(unit))))
        && (rule.cgroups.is_empty()
            || conn
                .cgroup_path
                .is_some_and(|path| rule.cgroups.iter().any(|c| cgroup_contains(c, path))))
}

/// `path` is the cgroup `base` or below it: `/a/b` contains `/a/b` and `/a/b/c`, not `/a/bc`;
/// `/` contains everything.
pub fn cgroup_contains(base: &str, path: &str) -> bool {
    base == "/"
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::{
        super::{parse::parse_policy, Destination, Mode, NameGate, PortRange, Prefix},
        *,
    };

    fn policy(yaml: &str) -> Policy {
        parse_policy(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn conn(ip: &str) -> Connection<'static> {
        Connection {
            ip: ip.parse().unwrap(),
            port: 443,
            protocol: Some(Protocol::Tcp),
            executable: Some("/usr/bin/curl"),
            systemd_unit: Some("app.service"),
            cgroup_path: Some("/system.slice/app.service"),
            dns_names: &[],
            container_name: None,
            container_image: None,
            pod_namespace: None,
            pod_name: None,
        }
    }

    fn rule_of(m: &Matcher, c: &Connection<'_>) -> Option<String> {
        m.evaluate(c).rule().map(str::to_owned)
    }

    /// For each `(value, approved)` case: a connection to `ip` with `value` put in by `set`
    /// is approved by `m`, or not, as the case says.
    fn assert_approvals<T: Copy + std::fmt::Debug>(
        m: &Matcher,
        ip: &str,
        set: impl Fn(&mut Connection<'static>, T),
        cases: &[(T, bool)],
    ) {
        for &(value, approved) in cases {
            let mut c = conn(ip);
            set(&mut c, value);
            assert_eq!(m.evaluate(&c).is_approved(), approved, "{value:?}");
        }
    }

    #[test]
    fn loopback_approve_and_audit() {
        let m = Matcher::new(&policy("rules: []\n"));
        for ip in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                m.evaluate(&conn(ip)),
                Verdict::Approved { rule: "loopback" },
                "{ip}"
            );
        }
        assert_eq!(m.evaluate(&conn("10.0.0.1")), Verdict::Unapproved);
        let m = Matcher::new(&policy("loopback: audit\nrules: []\n"));
        assert_eq!(m.evaluate(&conn("127.0.0.1")), Verdict::Unapproved);
        let m = Matcher::new(&policy(
            "loopback: audit\nrules:\n  - name: lo\n    to: [\"127.0.0.0/8\"]\n    ports: [443]\n",
        ));
        assert_eq!(rule_of(&m, &conn("127.0.0.1")).as_deref(), Some("lo"));
        let mut c = conn("127.0.0.1");
        c.port = 80;
        assert_eq!(m.evaluate(&c), Verdict::Unapproved);
    }

    #[test]
    fn ports_and_ranges() {
        let m = Matcher::new(&policy(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    ports: [22, \"8000-8100\"]\n",
        ));
        assert_approvals(
            &m,
            "10.1.2.3",
            |c, port| c.port = port,
            &[
                (22, true),
                (23, false),
                (7999, false),
                (8000, true),
                (8050, true),
                (8100, true),
                (8101, false),
            ],
        );
    }

    #[test]
    fn protocols() {
        let m = Matcher::new(&policy(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    protocols: [udp]\n  - name: any\n    to: [\"192.0.2.0/24\"]\n",
        ));
        let mut c = conn("10.0.0.1");
        assert!(!m.evaluate(&c).is_approved());
        c.protocol = Some(Protocol::Udp);
        assert!(m.evaluate(&c).is_approved());
        c.protocol = None;
        assert!(!m.evaluate(&c).is_approved());
        let mut c = conn("192.0.2.1");
        c.protocol = None;
        assert_eq!(rule_of(&m, &c).as_deref(), Some("any"));
    }

    #[test]
    fn processes() {
        let m = Matcher::new(&policy(
            "rules:\n  - name: git\n    to: [\"0.0.0.0/0\"]\n    processes: [\"/usr/bin/git\", \"/usr/lib/git-core/*\"]\n",
        ));
        assert_approvals(
            &m,
            "203.0.113.5",
            |c, exe| c.executable = exe,
            &[
                (Some("/usr/bin/git"), true),
                (Some("/usr/lib/git-core/git-remote-https"), true),
                (Some("/usr/lib/git-core/sub/x"), false),
                (Some("/usr/bin/gitk"), false),
                (Some("/usr/bin/curl"), false),
                (None, false),
            ],
        );
    }

    #[test]
    fn systemd_units() {
        let m = Matcher::new(&policy(
            "rules:\n  - name: u\n    to: [\"::/0\", \"0.0.0.0/0\"]\n    systemd_units: [\"payments.service\", \"backup-*.service\"]\n",
        ));
        assert_approvals(
            &m,
            "2001:db8::1",
            |c, unit| c.systemd_unit = unit,
            &[
                (Some("payments.service"), true),
                (Some("backup-daily.service"), true),
                (Some("backup-daily.timer"), false),
                (Some("app.service"), false),
                (None, false),
            ],
        );
    }

    #[test]
    fn cgroups_are_prefixes_by_component() {
        assert!(cgroup_contains("/a/b", "/a/b"));
        assert!(cgroup_contains("/a/b", "/a/b/c"));
        assert!(!cgroup_contains("/a/b", "/a/bc"));
        assert!(!cgroup_contains("/a/b", "/a"));
        assert!(cgroup_contains("/", "/anything/at/all"));
        assert!(cgroup_contains("/", "/"));
        let m = Matcher::new(&policy(
            "rules:\n  - name: c\n    to: [\"10.0.0.0/8\"]\n    cgroups: [\"/system.slice/payments.service\"]\n",
        ));
        assert_approvals(
            &m,
            "10.0.0.1",
            |c, path| c.cgroup_path = path,
            &[
                (Some("/system.slice/payments.service"), true),
                (Some("/system.slice/payments.service/worker"), true),
                (Some("/system.slice/payments.service2"), false),
                (Some("/system.slice"), false),
                (None, false),
            ],
        );
        let root = Matcher::new(&policy(
            "rules:\n  - name: c\n    to: [\"10.0.0.0/8\"]\n    cgroups: [\"/\"]\n",
        ));
        assert!(root.evaluate(&conn("10.0.0.1")).is_approved());
    }

    #[test]
    fn ipv6_prefixes_and_zero_length() {
        let m = Matcher::new(&policy(
            r#"rules:
  - name: doc
    to: ["2001:db8::/32"]
  - name: host
    to: ["2001:db8:1::5"]
  - name: v4-all
    to: ["0.0.0.0/0"]
"#,
        ));
        assert_eq!(
            rule_of(&m, &conn("2001:db8:ffff::1")).as_deref(),
            Some("doc")
        );
        // The /32 comes first in the file, so it wins over the /128.
        assert_eq!(rule_of(&m, &conn("2001:db8:1::5")).as_deref(), Some("doc"));
        assert_eq!(m.evaluate(&conn("2001:db9::1")), Verdict::Unapproved);
        assert_eq!(rule_of(&m, &conn("8.8.8.8")).as_deref(), Some("v4-all"));
        // IPv4-mapped addresses are matched as IPv4.
        assert_eq!(
            rule_of(&m, &conn("::ffff:8.8.8.8")).as_deref(),
            Some("v4-all")
        );
        let all6 = Matcher::new(&policy("rules:\n  - name: all\n    to: [\"::/0\"]\n"));
        assert!(all6.evaluate(&conn("fe80::1")).is_approved());
        assert!(!all6.evaluate(&conn("10.0.0.1")).is_approved());
    }

    #[test]
    fn first_matching_rule_in_file_order_wins() {
        let m = Matcher::new(&policy(
            r#"rules:
  - name: narrow-but-ssh-only
    to: ["10.1.2.3"]
    ports: [22]
  - name: wide
    to: ["10.0.0.0/8"]
  - name: narrow
    to: ["10.1.2.0/24"]
"#,
        ));
        let mut c = conn("10.1.2.3");
        assert_eq!(rule_of(&m, &c).as_deref(), Some("wide"));
        c.port = 22;
        assert_eq!(rule_of(&m, &c).as_deref(), Some("narrow-but-ssh-only"));
    }

    #[test]
    fn domains_approve_nothing_yet() {
        let m = Matcher::new(&policy(
            "rules:\n  - name: d\n    to: [\"api.example.com\", \"*.example.com\"]\n",
        ));
        assert_eq!(m.evaluate(&conn("93.184.216.34")), Verdict::Unapproved);
    }

    /// Deterministic xorshift64*.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn naive<'p>(policy: &'p Policy, c: &Connection<'_>) -> Verdict<'p> {
        let ip = c.ip.to_canonical();
        if policy.loopback == Loopback::Approve && ip.is_loopback() {
            return Verdict::Approved { rule: "loopback" };
        }
        for rule in &policy.rules {
            let to = rule.to.iter().any(|d| match d {
                Destination::Prefix(p) => p.contains(ip),
                Destination::Domain(_) => false,
            });
            if to && selectors_match(rule, c) {
                return Verdict::Approved { rule: &rule.name };
            }
        }
        Verdict::Unapproved
    }

    #[test]
    fn thousands_of_rules_agree_with_a_linear_scan() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Addresses concentrated in a few /16s so that prefixes overlap a lot.
        let v4 = |rng: &mut Rng| -> u32 {
            let base = [0x0a00_0000_u32, 0xc000_0200, 0xc633_6400, 0xcb00_7100];
            base[rng.below(4) as usize] | (rng.next() as u32 & 0x0000_ffff)
        };
        let v6 = |rng: &mut Rng| -> u128 {
            (0x2001_0db8_u128 << 96)
                | (u128::from(rng.below(4)) << 80)
                | u128::from(rng.next() as u16)
        };
        let mut rules = Vec::new();
        for i in 0..1500 {
            let mut to = Vec::new();
            for _ in 0..=rng.below(3) {
                let prefix = if rng.below(4) == 0 {
                    let len = [0, 48, 64, 80, 112, 120, 128][rng.below(7) as usize];
                    let addr = v6(&mut rng).network(len);
                    Prefix {
                        addr: IpAddr::V6(Ipv6Addr::from(addr)),
                        len,
                    }
                } else {
                    let len = [8, 16, 20, 24, 28, 30, 32, 32, 32][rng.below(9) as usize];
                    let len = if rng.below(500) == 0 { 0 } else { len };
                    let addr = v4(&mut rng).network(len);
                    Prefix {
                        addr: IpAddr::V4(Ipv4Addr::from(addr)),
                        len,
                    }
                };
                to.push(Destination::Prefix(prefix));
            }
            let mut rule = Rule::new(format!("r{i}"), to);
            if rng.below(3) == 0 {
                let lo = 1 + rng.below(1000) as u16;
                rule.ports = vec![PortRange {
                    lo,
                    hi: lo + rng.below(50) as u16,
                }];
            }
            if rng.below(4) == 0 {
                rule.protocols = vec![if rng.below(2) == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                }];
            }
            if rng.below(6) == 0 {
                rule.cgroups = vec![format!("/slice{}", rng.below(3))];
            }
            rules.push(rule);
        }
        let policy = Policy {
            mode: Mode::Audit,
            loopback: Loopback::Approve,
            rules,
            resolvers: None,
            name_gate: NameGate::default(),
            source: "random".into(),
        };
        let m = Matcher::new(&policy);
        let cgroups = ["/slice0/x", "/slice1", "/slice2/y/z", "/other"];
        let mut approved = 0;
        for _ in 0..20_000 {
            let ip = match rng.below(5) {
                0 => IpAddr::V6(Ipv6Addr::from(v6(&mut rng))),
                1 => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
                _ => IpAddr::V4(Ipv4Addr::from(v4(&mut rng))),
            };
            let c = Connection {
                ip,
                port: 1 + rng.below(1100) as u16,
                protocol: [Some(Protocol::Tcp), Some(Protocol::Udp), None][rng.below(3) as usize],
                executable: None,
                systemd_unit: None,
                cgroup_path: Some(cgroups[rng.below(4) as usize]),
                dns_names: &[],
                container_name: None,
                container_image: None,
                pod_namespace: None,
                pod_name: None,
            };
            let want = naive(&policy, &c);
            assert_eq!(m.evaluate(&c), want, "{c:?}");
            approved += usize::from(want.is_approved());
        }
        // The test means something only if both verdicts are common.
        assert!((2_000..18_000).contains(&approved), "{approved}");
    }

    #[test]
    fn domain_entries_approve_learned_names() {
        use crate::policy::parse::parse_policy;
        let policy = parse_policy(
            "mode: audit\nloopback: audit\nrules:\n  - name: first\n    to: [\"10.0.0.0/8\"]\n    ports: [22]\n  - name: api\n    to: [\"api.example.com\", \"*.cdn.example.net\"]\n    ports: [443]\n  - name: wide\n    to: [\"10.0.0.0/8\"]\n",
            "p.yaml",
        )
        .unwrap();
        let m = Matcher::new(&policy);
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let conn = |port: u16, dns: &'static [String]| Connection {
            port,
            dns_names: dns,
            executable: None,
            systemd_unit: None,
            cgroup_path: None,
            ..conn("10.1.2.3")
        };
        let api: &'static [String] = Box::leak(names(&["api.example.com"]).into_boxed_slice());
        let cdn: &'static [String] = Box::leak(names(&["a.b.cdn.example.net"]).into_boxed_slice());
        let apex: &'static [String] = Box::leak(names(&["cdn.example.net"]).into_boxed_slice());
        assert_eq!(
            m.evaluate(&conn(443, api)).rule(),
            Some("api"),
            "a domain rule earlier in the file wins"
        );
        assert_eq!(
            m.evaluate(&conn(443, cdn)).rule(),
            Some("api"),
            "wildcards match any depth"
        );
        assert_eq!(
            m.evaluate(&conn(443, apex)).rule(),
            Some("wide"),
            "not the apex"
        );
        assert_eq!(m.evaluate(&conn(22, api)).rule(), Some("first"));
        assert_eq!(m.evaluate(&conn(443, &[])).rule(), Some("wide"));
        assert!(domain_matches(
            &DomainPattern {
                name: "example.com".into(),
                wildcard: true
            },
            "a.example.com"
        ));
        assert!(!domain_matches(
            &DomainPattern {
                name: "example.com".into(),
                wildcard: true
            },
            "aexample.com"
        ));
    }

    #[test]
    fn container_namespace_and_pod_selectors_in_audit_mode() {
        use crate::policy::parse::parse_policy;
        let policy = parse_policy(
            "mode: audit\nloopback: audit\nrules:\n  - name: team-a\n    to: [\"10.0.0.0/8\"]\n    namespaces: [\"team-a\"]\n  - name: web\n    to: [\"10.0.0.0/8\"]\n    containers: [\"web-*\", \"registry.example/app:*\"]\n    pods: [\"frontend-*\"]\n",
            "p.yaml",
        )
        .unwrap();
        let m = Matcher::new(&policy);
        let conn = |name: Option<&'static str>,
                    image: Option<&'static str>,
                    ns: Option<&'static str>,
                    pod: Option<&'static str>| Connection {
            executable: None,
            systemd_unit: None,
            cgroup_path: None,
            container_name: name,
            container_image: image,
            pod_namespace: ns,
            pod_name: pod,
            ..conn("10.1.2.3")
        };
        assert_eq!(
            m.evaluate(&conn(None, None, Some("team-a"), Some("x")))
                .rule(),
            Some("team-a")
        );
        assert_eq!(
            m.evaluate(&conn(None, None, Some("team-b"), Some("x")))
                .rule(),
            None
        );
        assert_eq!(
            m.evaluate(&conn(Some("web-1"), None, None, Some("frontend-7")))
                .rule(),
            Some("web")
        );
        assert_eq!(
            m.evaluate(&conn(
                Some("x"),
                Some("registry.example/app:2"),
                None,
                Some("frontend-1")
            ))
            .rule(),
            Some("web"),
            "a container matches by its image too"
        );
        assert_eq!(
            m.evaluate(&conn(Some("web-1"), None, None, Some("backend-1")))
                .rule(),
            None,
            "all selectors must match"
        );
        assert_eq!(
            m.evaluate(&conn(None, None, None, None)).rule(),
            None,
            "not a container"
        );
    }
}

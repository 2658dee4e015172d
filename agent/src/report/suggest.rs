//! `egret report --suggest-policy`: an allowlist (the syntax of `docs/policy.md`) that
//! approves exactly the connections observed.
//!
//! - **Destinations**: the name the process resolved (`destination.domain`) where the line has
//!   one that is a valid policy name, else the address. Domain rules match the DNS *question*
//!   (docs/dns.md), which is what `destination.domain` is; `egret.dns.names` also holds
//!   `CNAME` targets, which would not match, so it is not used. A TCP connection without a
//!   DNS name is named by its end line's `destination.domain` (its TLS server name or HTTP
//!   Host, which domain rules also match): such names are marked in the rules' comments, and
//!   the header says what block mode needs for them (`name_gate`).
//! - **Exactness**: a rule approves every combination of its `to`, `ports` and `protocols`,
//!   so destinations are grouped only with others seen on exactly the same ports and
//!   protocols: every approved (destination, port, protocol) was observed.
//! - **Scope**: the Kubernetes namespace (`namespaces`), else the container name or image
//!   (`containers`), else the systemd unit (`systemd_units`); connections with none of them
//!   are approved for anyone. Unit names that carry a session number or a container id
//!   (`session-4.scope`, `docker-<64 hex>.scope`) become globs (`session-*.scope`).
//!   `processes` is not used: block mode cannot enforce it.
//! - **Loopback**: when the lines show that loopback was audited (a loopback connection that
//!   was unapproved, blocked, or approved by a rule), the policy says `loopback: audit` and
//!   lists the loopback destinations; otherwise `loopback: approve` covers them.
//! - One rule per (scope, protocols, ports), sorted: the same input gives the same file.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    net::IpAddr,
};

use super::{
    input::{NameSource, Observation, Verdict},
    timespec::rfc3339_seconds,
};
use crate::policy::{self, parse, Destination};

/// What to do about loopback destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoopbackChoice {
    /// `audit` when the input shows loopback was audited, else `approve`.
    #[default]
    Auto,
    /// `loopback: approve`; loopback destinations are not listed.
    Approve,
    /// `loopback: audit`; loopback destinations get rules like any other.
    Audit,
}

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Any,
    /// A `systemd_units` glob.
    Unit(String),
    /// A `containers` glob.
    Container(String),
    /// A `namespaces` glob.
    Namespace(String),
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Self::Any => "any process (no unit, container or pod)".to_owned(),
            Self::Unit(g) => format!("systemd unit {}", quote(g)),
            Self::Container(g) => format!("container {}", quote(g)),
            Self::Namespace(g) => format!("Kubernetes namespace {}", quote(g)),
        }
    }

    fn slug(&self) -> String {
        let (kind, value) = match self {
            Self::Any => return "any".to_owned(),
            Self::Unit(g) => ("unit", g),
            Self::Container(g) => ("container", g),
            Self::Namespace(g) => ("namespace", g),
        };
        let value: String = value
            .chars()
            .filter(|c| *c != '\\')
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '@' | ':') {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        format!("{kind}-{value}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Domain(String),
    Addr(IpAddr),
}

impl Dest {
    fn text(&self) -> String {
        match self {
            Self::Domain(d) => d.clone(),
            Self::Addr(ip) => ip.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
    /// Neither TCP nor UDP: a rule that names protocols never matches it.
    Other,
}

const TCP: u8 = 1;
const UDP: u8 = 2;

/// At most this many ports are suggested for `name_gate` in the header.
const MAX_GATE_PORTS: usize = 32;

/// Where a name's connections got it from: a trusted DNS answer, a TLS ClientHello's server
/// name, an HTTP request's Host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NameSources {
    dns: bool,
    tls: bool,
    http: bool,
}

impl NameSources {
    fn add(&mut self, source: Option<NameSource>) {
        match source {
            // A line that does not say (older egret, a start line) had it from DNS.
            Some(NameSource::Dns) | None => self.dns = true,
            Some(NameSource::Tls) => self.tls = true,
            Some(NameSource::Http) => self.http = true,
        }
    }

    /// What a rule's comment calls a name no DNS answer gave: `TLS` or `HTTP`; `None` for a
    /// name some connection had from DNS.
    fn first_bytes_only(self) -> Option<&'static str> {
        match self {
            Self { dns: true, .. } => None,
            Self { tls: true, .. } => Some("TLS"),
            Self { http: true, .. } => Some("HTTP"),
            Self { .. } => None,
        }
    }
}

/// Connections seen for one (scope, destination, protocol, port).
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    connections: u64,
    /// Of those, to an address that is not loopback (a name can resolve to both).
    non_loopback: u64,
    first_ns: i64,
    last_ns: i64,
}

impl Seen {
    fn add(&mut self, ts: i64, loopback: bool) {
        if self.connections == 0 {
            self.first_ns = ts;
            self.last_ns = ts;
        }
        self.connections = self.connections.saturating_add(1);
        if !loopback {
            self.non_loopback = self.non_loopback.saturating_add(1);
        }
        self.first_ns = self.first_ns.min(ts);
        self.last_ns = self.last_ns.max(ts);
    }

    fn merge(&mut self, other: &Self, count: u64) {
        if self.connections == 0 {
            self.first_ns = other.first_ns;
            self.last_ns = other.last_ns;
        }
        self.connections = self.connections.saturating_add(count);
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// Ports of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ports {
    List(BTreeSet<u16>),
    /// No `ports` key: the lines had port 0, or a transport without ports.
    Any,
}

/// A rule's `protocols`, in rule order: tcp, udp, both, any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Protocols {
    Tcp,
    Udp,
    Both,
    Any,
}

impl Protocols {
    fn of(bits: u8) -> Self {
        match bits {
            TCP => Self::Tcp,
            UDP => Self::Udp,
            _ => Self::Both,
        }
    }

    fn yaml(self) -> Option<&'static str> {
        match self {
            Self::Tcp => Some("[tcp]"),
            Self::Udp => Some("[udp]"),
            Self::Both => Some("[tcp, udp]"),
            Self::Any => None,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Both => "tcp+udp",
            Self::Any => "any-transport",
        }
    }
}

/// Accumulates connection lines; [`Suggester::render`] writes the policy.
#[derive(Debug, Default)]
pub struct Suggester {
    choice: LoopbackChoice,
    include_blocked: bool,
    /// A loopback line showed that loopback was audited when it was written.
    loopback_audited: bool,
    seen: BTreeMap<Scope, BTreeMap<(Dest, Proto, u16), Seen>>,
    connections: u64,
    blocked_skipped: u64,
    /// Names in `destination.domain` that are not valid in a policy (single label, `_srv`…):
    /// those connections are approved by address.
    unusable_names: BTreeSet<String>,
    /// Connections whose unit, container or namespace name could not be used as a selector.
    unusable_scopes: u64,
    /// Where each name used as a destination came from, over its connections
    /// ([`NameSources`]).
    name_sources: BTreeMap<String, NameSources>,
    /// TCP ports of connections named only by their first bytes (at most
    /// [`MAX_GATE_PORTS`]).
    first_bytes_ports: BTreeSet<u16>,
    first_ns: Option<i64>,
    last_ns: Option<i64>,
}

/// Escapes glob metacharacters, so a name matches only itself.
fn glob_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A unit name as a glob: `session-4.scope` → `session-*.scope`, `docker-<64 hex>.scope` →
/// `docker-*.scope`; other names match only themselves.
fn unit_glob(unit: &str) -> String {
    if let Some((stem, suffix)) = unit.rsplit_once('.') {
        if let Some((prefix, id)) = stem.rsplit_once('-') {
            let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            let container = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if !prefix.is_empty() && (numeric || container) {
                return format!("{}-*.{}", glob_literal(prefix), glob_literal(suffix));
            }
        }
    }
    glob_literal(unit)
}

/// A name usable as a `containers`/`namespaces` entry.
fn usable_name(s: &str) -> bool {
    !s.trim().is_empty()
}

fn looks_like_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a loopback line shows that the policy in force audited loopback: built-in loopback
/// approval comes first and is always named `loopback`.
fn shows_loopback_audited(o: &Observation<'_>) -> bool {
    match o.verdict {
        Some(Verdict::Unapproved | Verdict::Blocked) => true,
        Some(Verdict::Approved) => o.rule.as_deref().is_some_and(|r| r != "loopback"),
        None => false,
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Text for a `#` comment: no line breaks or other control characters can end the comment.
fn comment_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `[443, "8000-8002"]`: runs of three or more consecutive ports become ranges.
fn ports_yaml(ports: &BTreeSet<u16>) -> (String, String) {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match runs.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(p) => *hi = p,
            _ => runs.push((p, p)),
        }
    }
    let mut items = Vec::new();
    let mut slugs = Vec::new();
    for (lo, hi) in runs {
        if hi.saturating_sub(lo) >= 2 {
            items.push(format!("\"{lo}-{hi}\""));
            slugs.push(format!("{lo}..{hi}"));
        } else {
            for p in lo..=hi {
                items.push(p.to_string());
                slugs.push(p.to_string());
            }
        }
    }
    let slug = if slugs.len() > 3 {
        let rest = slugs.len().saturating_sub(3);
        format!(
            "{}+{rest}more",
            slugs.into_iter().take(3).collect::<Vec<_>>().join("+")
        )
    } else {
        slugs.join("+")
    };
    (format!("[{}]", items.join(", ")), slug)
}

/// One rule of the output.
struct RuleOut {
    scope: Scope,
    protocols: Protocols,
    ports: Ports,
    dests: BTreeSet<Dest>,
    seen: Seen,
}

impl RuleOut {
    /// `unit-app.service-tcp-443`: the rule's name, before it is made unique.
    fn base_name(&self) -> String {
        let ports = match &self.ports {
            Ports::Any => "any-port".to_owned(),
            Ports::List(p) => ports_yaml(p).1,
        };
        format!("{}-{}-{}", self.scope.slug(), self.protocols.slug(), ports)
    }
}

/// What [`Suggester::render`] wrote, for the caller's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub yaml: String,
    pub rules: usize,
    pub connections: u64,
}

impl Suggester {
    pub fn new(choice: LoopbackChoice, include_blocked: bool) -> Self {
        Self {
            choice,
            include_blocked,
            ..Self::default()
        }
    }

    fn scope(&mut self, o: &Observation<'_>) -> Scope {
        let mut unusable = false;
        if let Some(ns) = o.pod_namespace.as_deref() {
            if usable_name(ns) {
                return Scope::Namespace(glob_literal(ns));
            }
            unusable = true;
        }
        let name = o
            .container_name
            .as_deref()
            .filter(|n| usable_name(n) && !looks_like_container_id(n));
        let image = o.container_image.as_deref().filter(|i| usable_name(i));
        if let Some(name) = name.or(image) {
            return Scope::Container(glob_literal(name));
        }
        unusable |= o.container_id.is_some();
        if let Some(unit) = o.unit.as_deref() {
            // A unit as egret derives it: the whole name is one unit name component.
            if crate::cgroup::systemd_unit(unit) == Some(unit) {
                return Scope::Unit(unit_glob(unit));
            }
            unusable = true;
        }
        if unusable {
            self.unusable_scopes = self.unusable_scopes.saturating_add(1);
        }
        Scope::Any
    }

    /// Takes one connection line (start line or UDP `send` line) inside the time range.
    pub fn observe(&mut self, o: &Observation<'_>) {
        let loopback = o.ip.is_loopback();
        if loopback && shows_loopback_audited(o) {
            self.loopback_audited = true;
        }
        if o.verdict == Some(Verdict::Blocked) && !self.include_blocked {
            self.blocked_skipped = self.blocked_skipped.saturating_add(1);
            return;
        }
        self.connections = self.connections.saturating_add(u64::from(o.new));
        self.first_ns = Some(self.first_ns.map_or(o.ts_ns, |f| f.min(o.ts_ns)));
        self.last_ns = Some(self.last_ns.map_or(o.ts_ns, |l| l.max(o.ts_ns)));
        let dest = match o.domain.as_deref() {
            Some(name) => match parse::destination(name) {
                Ok(Destination::Domain(d)) if !d.wildcard => {
                    self.note_name_source(&d.name, o);
                    Dest::Domain(d.name)
                }
                _ => {
                    if self.unusable_names.len() < 16 {
                        self.unusable_names.insert(name.to_owned());
                    }
                    Dest::Addr(o.ip)
                }
            },
            None => Dest::Addr(o.ip),
        };
        let (proto, port) = match o.transport.as_ref() {
            "tcp" => (Proto::Tcp, o.port),
            "udp" => (Proto::Udp, o.port),
            _ => (Proto::Other, 0),
        };
        let scope = self.scope(o);
        self.seen
            .entry(scope)
            .or_default()
            .entry((dest, proto, port))
            .or_default()
            .add(o.ts_ns, loopback);
    }

    /// Notes where the connection `o` got its name `name` from.
    fn note_name_source(&mut self, name: &str, o: &Observation<'_>) {
        let sources = self.name_sources.entry(name.to_owned()).or_default();
        sources.add(o.name_source);
        let first_bytes = matches!(o.name_source, Some(NameSource::Tls | NameSource::Http));
        if first_bytes
            && o.transport == "tcp"
            && o.port != 0
            && self.first_bytes_ports.len() < MAX_GATE_PORTS
        {
            self.first_bytes_ports.insert(o.port);
        }
    }

    /// The names of `dests` that no connection had from DNS, with where they came from:
    /// `"a.example" (TLS), "b.example" (HTTP)`.
    fn first_bytes_names(&self, dests: &BTreeSet<Dest>) -> Vec<String> {
        dests
            .iter()
            .filter_map(|d| match d {
                Dest::Domain(name) => self
                    .name_sources
                    .get(name)
                    .and_then(|s| s.first_bytes_only())
                    .map(|source| format!("{} ({source})", quote(name))),
                Dest::Addr(_) => None,
            })
            .collect()
    }

    /// Writes one rule (its comments and YAML) named `name`. Returns whether it has a name no
    /// connection had from DNS.
    fn write_rule(&self, body: &mut String, rule: &RuleOut, name: &str) -> bool {
        let _ = writeln!(
            body,
            "  # {}, {} .. {}",
            if rule.seen.connections == 1 {
                "1 connection".to_owned()
            } else {
                format!("{} connections", rule.seen.connections)
            },
            rfc3339_seconds(rule.seen.first_ns),
            rfc3339_seconds(rule.seen.last_ns)
        );
        let first_bytes = self.first_bytes_names(&rule.dests);
        if !first_bytes.is_empty() {
            let _ = writeln!(
                body,
                "  # named by their first bytes, not by DNS: {}",
                comment_safe(&first_bytes.join(", "))
            );
        }
        let _ = writeln!(body, "  - name: {}", quote(name));
        let to: Vec<String> = rule.dests.iter().map(|d| quote(&d.text())).collect();
        if to.len() <= 4 {
            let _ = writeln!(body, "    to: [{}]", to.join(", "));
        } else {
            let _ = writeln!(body, "    to:");
            for t in &to {
                let _ = writeln!(body, "      - {t}");
            }
        }
        if let Ports::List(p) = &rule.ports {
            let _ = writeln!(body, "    ports: {}", ports_yaml(p).0);
        }
        if let Some(p) = rule.protocols.yaml() {
            let _ = writeln!(body, "    protocols: {p}");
        }
        match &rule.scope {
            Scope::Any => {}
            Scope::Unit(g) => {
                let _ = writeln!(body, "    systemd_units: [{}]", quote(g));
            }
            Scope::Container(g) => {
                let _ = writeln!(body, "    containers: [{}]", quote(g));
            }
            Scope::Namespace(g) => {
                let _ = writeln!(body, "    namespaces: [{}]", quote(g));
            }
        }
        !first_bytes.is_empty()
    }

    /// The header's note on names that came from the connections' first bytes.
    fn first_bytes_note(&self) -> String {
        let ports: Vec<String> = self.first_bytes_ports.iter().map(u16::to_string).collect();
        let mut note = String::from(
            "# Rules marked \"named by their first bytes\" list names no DNS answer gave: egret read\n\
             # them from the connections' TLS server name (SNI) or HTTP Host. A domain rule approves\n\
             # such a connection by that name once its first bytes are read. In block mode its\n\
             # connect is refused unless its address is approved otherwise or its port is in\n\
             # `name_gate` (docs/policy.md)",
        );
        if ports.is_empty() {
            note.push_str(".\n");
        } else {
            let _ = writeln!(note, ":\n#   name_gate: {{ports: [{}]}}", ports.join(", "));
        }
        note
    }

    fn loopback_audit(&self) -> bool {
        match self.choice {
            LoopbackChoice::Auto => self.loopback_audited,
            LoopbackChoice::Approve => false,
            LoopbackChoice::Audit => true,
        }
    }

    /// The rules, sorted, and the connections left to `loopback: approve`.
    fn rules(&self) -> (Vec<RuleOut>, u64) {
        let audit_loopback = self.loopback_audit();
        let mut loopback_approved = 0_u64;
        let mut rules = Vec::new();
        for (scope, seen) in &self.seen {
            // (destination) → port → protocol bits; and destinations seen on other transports.
            let mut per_dest: BTreeMap<&Dest, BTreeMap<u16, u8>> = BTreeMap::new();
            let mut stats: BTreeMap<(&Dest, Proto, u16), (Seen, u64)> = BTreeMap::new();
            for ((dest, proto, port), s) in seen {
                let count = if audit_loopback {
                    s.connections
                } else {
                    loopback_approved = loopback_approved
                        .saturating_add(s.connections.saturating_sub(s.non_loopback));
                    s.non_loopback
                };
                if count == 0 {
                    continue;
                }
                stats.insert((dest, *proto, *port), (*s, count));
                let bits = match proto {
                    Proto::Tcp => TCP,
                    Proto::Udp => UDP,
                    Proto::Other => 0,
                };
                let slot = per_dest.entry(dest).or_default().entry(*port).or_insert(0);
                *slot |= bits;
                if bits == 0 {
                    // Marked with the top bit: any transport.
                    *slot |= 0x80;
                }
            }
            // (protocols, ports) → destinations.
            let mut grouped: BTreeMap<(Protocols, Ports), BTreeSet<&Dest>> = BTreeMap::new();
            for (dest, ports) in &per_dest {
                let mut by_bits: BTreeMap<u8, BTreeSet<u16>> = BTreeMap::new();
                let mut any_transport = false;
                for (port, bits) in ports {
                    if bits & 0x80 != 0 {
                        any_transport = true;
                    }
                    let proto_bits = bits & (TCP | UDP);
                    if proto_bits != 0 {
                        by_bits.entry(proto_bits).or_default().insert(*port);
                    }
                }
                for (bits, ports) in by_bits {
                    let ports = if ports.contains(&0) {
                        Ports::Any
                    } else {
                        Ports::List(ports)
                    };
                    grouped
                        .entry((Protocols::of(bits), ports))
                        .or_default()
                        .insert(dest);
                }
                if any_transport {
                    grouped
                        .entry((Protocols::Any, Ports::Any))
                        .or_default()
                        .insert(dest);
                }
            }
            for ((protocols, ports), dests) in grouped {
                let mut total = Seen::default();
                for ((dest, proto, port), (s, count)) in &stats {
                    if !dests.contains(dest) {
                        continue;
                    }
                    let proto_ok = matches!(
                        (protocols, proto),
                        (Protocols::Any, Proto::Other)
                            | (Protocols::Tcp | Protocols::Both, Proto::Tcp)
                            | (Protocols::Udp | Protocols::Both, Proto::Udp)
                    );
                    let port_ok = match &ports {
                        Ports::Any => true,
                        Ports::List(list) => list.contains(port),
                    };
                    if proto_ok && port_ok {
                        total.merge(s, *count);
                    }
                }
                rules.push(RuleOut {
                    scope: scope.clone(),
                    protocols,
                    ports,
                    dests: dests.into_iter().cloned().collect(),
                    seen: total,
                });
            }
        }
        (rules, loopback_approved)
    }

    /// Writes the policy. `sources` name the input files in the header comment.
    ///
    /// # Errors
    /// The generated policy did not pass egret's own parser (a bug): every error.
    pub fn render(&self, sources: &[String]) -> Result<Suggestion, String> {
        let (rules, loopback_approved) = self.rules();
        let audit_loopback = self.loopback_audit();
        let mut body = String::new();
        let _ = writeln!(body, "mode: audit");
        if audit_loopback {
            let _ = writeln!(
                body,
                "loopback: audit     # loopback destinations are approved only by the rules below"
            );
        } else {
            let _ = writeln!(
                body,
                "loopback: approve   # 127.0.0.0/8 and ::1 are approved without a rule"
            );
        }
        if rules.is_empty() {
            let _ = writeln!(body, "rules: []");
        } else {
            let _ = writeln!(body, "rules:");
        }
        let mut names: HashSet<String> = HashSet::new();
        let mut has_domains = false;
        let mut first_bytes_names = false;
        let mut last_scope: Option<&Scope> = None;
        for rule in &rules {
            if last_scope != Some(&rule.scope) {
                let _ = writeln!(body, "\n  # {}", comment_safe(&rule.scope.describe()));
                last_scope = Some(&rule.scope);
            }
            let base = rule.base_name();
            let mut name = base.clone();
            let mut n = 2_u32;
            while names.contains(&name) || name == parse::LOOPBACK_RULE_NAME {
                name = format!("{base}-{n}");
                n = n.saturating_add(1);
            }
            has_domains |= rule.dests.iter().any(|d| matches!(d, Dest::Domain(_)));
            first_bytes_names |= self.write_rule(&mut body, rule, &name);
            names.insert(name);
        }

        let policy = parse::parse_policy(&body, "<suggested policy>").map_err(|e| e.to_string())?;
        let mut block = policy.clone();
        block.mode = policy::Mode::Block;
        let mut block_errors: Vec<String> = parse::block_mode_errors(&block)
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        if let Err(e) = policy::compile::compile(&block) {
            block_errors.extend(
                e.errors
                    .into_iter()
                    .map(|e| format!("{}: {}", e.path, e.message)),
            );
        }

        let header = self.header(
            sources,
            rules.len(),
            loopback_approved,
            (has_domains, first_bytes_names),
            &block_errors,
        );
        Ok(Suggestion {
            yaml: format!("{header}{body}"),
            rules: rules.len(),
            connections: self.connections,
        })
    }

    fn header(
        &self,
        sources: &[String],
        rules: usize,
        loopback_approved: u64,
        (has_domains, first_bytes_names): (bool, bool),
        block_errors: &[String],
    ) -> String {
        let mut h = String::new();
        let files = sources
            .iter()
            .map(|s| comment_safe(s))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            h,
            "# egret allowlist suggested by `egret report --suggest-policy`"
        );
        let _ = writeln!(h, "# from {} connection(s) in {files}", self.connections);
        if let (Some(first), Some(last)) = (self.first_ns, self.last_ns) {
            let _ = writeln!(
                h,
                "# seen {} .. {}",
                rfc3339_seconds(first),
                rfc3339_seconds(last)
            );
        }
        let _ = writeln!(
            h,
            "#\n# It approves exactly what was observed ({rules} rule(s)): each rule lists destinations seen\n\
             # on the same ports and protocols, scoped to the systemd unit, container or Kubernetes\n\
             # namespace that made the connections. Domain names are used where egret knew the name\n\
             # the process resolved (or a TCP connection's first bytes gave), addresses otherwise."
        );
        if has_domains {
            let _ = writeln!(
                h,
                "# A domain entry approves the addresses of the DNS answers for that name while their\n\
                 # TTL lasts (docs/dns.md); a process that resolves through DNS over HTTPS/TLS or\n\
                 # /etc/hosts shows up by address and needs an address rule."
            );
        }
        if first_bytes_names {
            h.push_str(&self.first_bytes_note());
        }
        if !self.loopback_audit() && loopback_approved > 0 {
            let _ = writeln!(
                h,
                "# {loopback_approved} connection(s) to loopback are approved by `loopback: approve` and not listed."
            );
        }
        if self.blocked_skipped > 0 {
            let _ = writeln!(
                h,
                "# {} connection(s) the kernel blocked are NOT approved here (--include-blocked adds them).",
                self.blocked_skipped
            );
        }
        if !self.unusable_names.is_empty() {
            let names: Vec<String> = self.unusable_names.iter().map(|n| quote(n)).collect();
            let _ = writeln!(
                h,
                "# Names that are not valid in a policy, approved by address instead: {}",
                comment_safe(&names.join(", "))
            );
        }
        if self.unusable_scopes > 0 {
            let _ = writeln!(
                h,
                "# {} connection(s) came from a unit, container or namespace whose name cannot be a\n\
                 # selector (or a container egret had not identified): they are approved for anyone.",
                self.unusable_scopes
            );
        }
        let _ = writeln!(
            h,
            "#\n# Workflow: run egret with this policy in audit mode for a while\n\
             #   egret policy check policy.yaml\n\
             #   egret run --policy policy.yaml --watch\n\
             # and add what the new alert lines show. When a run has no alert lines, switch to\n\
             # enforcement: change `mode: audit` to `mode: block`, check the file again with\n\
             # `egret policy check`, and reload egret (SIGHUP, or --watch picks up the change)."
        );
        if !block_errors.is_empty() {
            let _ = writeln!(
                h,
                "#\n# Before switching to block mode, fix what egret would refuse there:"
            );
            for e in block_errors {
                let _ = writeln!(h, "#   {}", comment_safe(e));
            }
        }
        h.push('\n');
        h
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::policy::matcher::{Connection, Matcher};
    use crate::report::aggregate::tests::obs;

    fn policy_of(s: &Suggester) -> (String, policy::Policy) {
        let out = s.render(&["events.jsonl".to_owned()]).unwrap();
        let p = parse::parse_policy(&out.yaml, "t.yaml")
            .unwrap_or_else(|e| panic!("{e}\n{}", out.yaml));
        (out.yaml, p)
    }

    /// The verdict the matcher gives `o`, with `o`'s name as the DNS question it resolved.
    fn approved(p: &policy::Policy, o: &Observation<'_>) -> bool {
        // The agent keeps questions lower-case, without the trailing dot.
        let names: Vec<String> = o
            .domain
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let m = Matcher::new(p);
        m.evaluate(&Connection {
            ip: o.ip,
            port: o.port,
            protocol: match o.transport.as_ref() {
                "tcp" => Some(policy::Protocol::Tcp),
                "udp" => Some(policy::Protocol::Udp),
                _ => None,
            },
            executable: o.executable.as_deref(),
            systemd_unit: o.unit.as_deref(),
            cgroup_path: None,
            dns_names: &names,
            container_name: o.container_name.as_deref(),
            container_image: o.container_image.as_deref(),
            pod_namespace: o.pod_namespace.as_deref(),
            pod_name: o.pod_name.as_deref(),
        })
        .is_approved()
    }

    fn sample() -> Vec<Observation<'static>> {
        let mut v = Vec::new();
        // A unit talking to a named API on 443 (two addresses) and a database by address.
        let mut api = obs(100, "/usr/bin/app", "203.0.113.10", 443);
        api.domain = Some(Cow::Borrowed("API.Example.com."));
        api.unit = Some(Cow::Borrowed("app.service"));
        v.push(api.clone());
        api.ip = "203.0.113.11".parse().unwrap();
        v.push(api.clone());
        let mut db = api.clone();
        db.domain = None;
        db.ip = "10.0.0.5".parse().unwrap();
        db.port = 5432;
        v.push(db);
        // The same unit on udp and tcp 53 to its resolver.
        let mut dns = obs(101, "/usr/bin/app", "10.0.0.53", 53);
        dns.unit = Some(Cow::Borrowed("app.service"));
        dns.transport = Cow::Borrowed("udp");
        v.push(dns.clone());
        dns.transport = Cow::Borrowed("tcp");
        v.push(dns);
        // A login session, twice.
        let mut ssh = obs(102, "/usr/bin/ssh", "198.51.100.7", 22);
        ssh.unit = Some(Cow::Borrowed("session-4.scope"));
        v.push(ssh.clone());
        ssh.unit = Some(Cow::Borrowed("session-9.scope"));
        v.push(ssh);
        // A pod, and a container.
        let mut pod = obs(103, "/app", "10.96.0.1", 443);
        pod.container_name = Some(Cow::Borrowed("web"));
        pod.pod_namespace = Some(Cow::Borrowed("shop"));
        pod.pod_name = Some(Cow::Borrowed("web-7d4b9c8f6-x2x9z"));
        v.push(pod);
        let mut ctr = obs(104, "/app", "192.0.2.80", 80);
        ctr.container_name = Some(Cow::Borrowed("cache[1]"));
        ctr.unit = Some(Cow::Borrowed(
            "docker-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899.scope",
        ));
        v.push(ctr);
        // No scope at all; and a transport without ports.
        v.push(obs(105, "/usr/bin/curl", "192.0.2.1", 8080));
        let mut icmp = obs(106, "/usr/bin/ping", "192.0.2.2", 0);
        icmp.transport = Cow::Borrowed("icmp");
        v.push(icmp);
        // Loopback, approved by the built-in approval: left to `loopback: approve`.
        let mut lo = obs(107, "/usr/bin/curl", "127.0.0.1", 9000);
        lo.verdict = Some(Verdict::Approved);
        lo.rule = Some(Cow::Borrowed("loopback"));
        v.push(lo);
        v
    }

    #[test]
    fn approves_what_was_observed_and_nothing_more() {
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        let lines = sample();
        for o in &lines {
            s.observe(o);
        }
        let (yaml, p) = policy_of(&s);
        for o in &lines {
            assert!(approved(&p, o), "not approved: {o:?}\n{yaml}");
        }
        // Same destinations with another port, protocol, name or scope: not approved.
        let mut other_port = lines[0].clone();
        other_port.port = 8443;
        let mut other_proto = lines[0].clone();
        other_proto.transport = Cow::Borrowed("udp");
        let mut other_unit = lines[2].clone();
        other_unit.unit = Some(Cow::Borrowed("other.service"));
        let mut no_unit = lines[2].clone();
        no_unit.unit = None;
        let mut db_on_443 = lines[2].clone();
        db_on_443.port = 443;
        let mut other_name = lines[0].clone();
        other_name.domain = Some(Cow::Borrowed("evil.example.com"));
        let mut other_ns = lines[7].clone();
        other_ns.pod_namespace = Some(Cow::Borrowed("other"));
        let mut other_ctr = lines[8].clone();
        other_ctr.container_name = Some(Cow::Borrowed("cache1"));
        for o in [
            other_port,
            other_proto,
            other_unit,
            no_unit,
            db_on_443,
            other_name,
            other_ns,
            other_ctr,
        ] {
            assert!(!approved(&p, &o), "approved: {o:?}\n{yaml}");
        }
        // Domain over address; the resolver on both protocols in one rule.
        assert!(yaml.contains("to: [\"api.example.com\"]"), "{yaml}");
        assert!(!yaml.contains("203.0.113.10"), "{yaml}");
        assert!(yaml.contains("protocols: [tcp, udp]"), "{yaml}");
        assert!(
            yaml.contains("systemd_units: [\"session-*.scope\"]"),
            "{yaml}"
        );
        assert!(yaml.contains("namespaces: [\"shop\"]"), "{yaml}");
        assert!(
            yaml.contains("containers: [\"cache\\\\[1\\\\]\"]"),
            "{yaml}"
        );
        assert!(yaml.contains("loopback: approve"), "{yaml}");
        assert!(!yaml.contains("127.0.0.1"), "{yaml}");
        assert!(
            yaml.contains("1 connection(s) to loopback are approved"),
            "{yaml}"
        );
        // The two session scopes are one rule; every scope is one block of rules.
        assert_eq!(yaml.matches("session-*.scope\"]").count(), 1, "{yaml}");
        assert_eq!(p.mode, policy::Mode::Audit);
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"unit-app.service-tcp-443"), "{names:?}");
        assert!(names.contains(&"unit-app.service-tcp+udp-53"), "{names:?}");
        assert!(names.contains(&"any-any-transport-any-port"), "{names:?}");
    }

    #[test]
    fn output_is_deterministic_whatever_the_order() {
        let lines = sample();
        let mut a = Suggester::new(LoopbackChoice::Auto, false);
        let mut b = Suggester::new(LoopbackChoice::Auto, false);
        for o in &lines {
            a.observe(o);
        }
        for o in lines.iter().rev() {
            b.observe(o);
        }
        assert_eq!(policy_of(&a).0, policy_of(&b).0);
    }

    #[test]
    fn loopback_audited_in_the_input_gives_loopback_rules() {
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        let mut lo = obs(1, "/x", "127.0.0.2", 4000);
        lo.verdict = Some(Verdict::Unapproved);
        s.observe(&lo);
        let mut named = obs(2, "/x", "127.0.0.21", 4000);
        named.domain = Some(Cow::Borrowed("web.test"));
        s.observe(&named);
        let (yaml, p) = policy_of(&s);
        assert_eq!(p.loopback, policy::Loopback::Audit, "{yaml}");
        assert!(approved(&p, &lo) && approved(&p, &named), "{yaml}");
        assert!(yaml.contains("to: [\"web.test\", \"127.0.0.2\"]"), "{yaml}");

        // Forced approve: loopback lines are left out.
        let mut s = Suggester::new(LoopbackChoice::Approve, false);
        s.observe(&lo);
        let (yaml, p) = policy_of(&s);
        assert_eq!(p.loopback, policy::Loopback::Approve);
        assert!(p.rules.is_empty(), "{yaml}");
        assert!(yaml.contains("rules: []"), "{yaml}");
    }

    #[test]
    fn blocked_connections_are_left_out_unless_asked() {
        let mut blocked = obs(1, "/x", "192.0.2.9", 25);
        blocked.verdict = Some(Verdict::Blocked);
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        s.observe(&blocked);
        let (yaml, p) = policy_of(&s);
        assert!(
            p.rules.is_empty() && yaml.contains("kernel blocked are NOT approved"),
            "{yaml}"
        );
        let mut s = Suggester::new(LoopbackChoice::Auto, true);
        s.observe(&blocked);
        let (_, p) = policy_of(&s);
        assert!(approved(&p, &blocked));
    }

    #[test]
    fn hostile_names_cannot_escape_their_strings() {
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        let mut o = obs(1, "/x", "192.0.2.1", 443);
        o.unit = Some(Cow::Borrowed("a\"]\nmode: block\n#.service"));
        o.container_name = Some(Cow::Borrowed("x\nrules: []\u{2028}*"));
        o.domain = Some(Cow::Borrowed("not a name\nmode: block"));
        s.observe(&o);
        let mut bad_unit = obs(2, "/x", "192.0.2.2", 443);
        bad_unit.unit = Some(Cow::Borrowed("a/b.service"));
        s.observe(&bad_unit);
        let out = s.render(&["evil\nmode: block.jsonl".to_owned()]).unwrap();
        let p = parse::parse_policy(&out.yaml, "t.yaml").unwrap();
        assert_eq!(p.mode, policy::Mode::Audit, "{}", out.yaml);
        assert!(approved(&p, &o), "{}", out.yaml);
        assert!(approved(&p, &bad_unit), "{}", out.yaml);
        let mut other = o.clone();
        other.container_name = Some(Cow::Borrowed("xy"));
        assert!(
            !approved(&p, &other),
            "the container glob is literal\n{}",
            out.yaml
        );
        assert!(out.yaml.contains("approved for anyone"), "{}", out.yaml);
    }

    #[test]
    fn port_lists_become_ranges() {
        let set: BTreeSet<u16> = [22, 80, 8000, 8001, 8002, 8003, 9000, 9001].into();
        let (yaml, slug) = ports_yaml(&set);
        assert_eq!(yaml, "[22, 80, \"8000-8003\", 9000, 9001]");
        assert_eq!(slug, "22+80+8000..8003+2more");
        assert_eq!(unit_glob("session-12.scope"), "session-*.scope");
        assert_eq!(unit_glob("nginx.service"), "nginx.service");
        assert_eq!(unit_glob("user@1000.service"), "user@1000.service");
        assert_eq!(unit_glob("getty@tty1.service"), "getty@tty1.service");
        assert_eq!(unit_glob("a*b.service"), "a\\*b.service");
    }

    #[test]
    fn names_from_first_bytes_become_domain_rules() {
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        // Only an address and an SNI; a Host on port 8080; a DNS name also seen by SNI.
        let mut tls = obs(1, "/x", "203.0.113.5", 443);
        tls.domain = Some(Cow::Borrowed("API.example.com"));
        tls.name_source = Some(NameSource::Tls);
        s.observe(&tls);
        let mut http = obs(2, "/x", "203.0.113.9", 8080);
        http.domain = Some(Cow::Borrowed("www.example.com"));
        http.name_source = Some(NameSource::Http);
        s.observe(&http);
        let mut both = obs(3, "/x", "198.51.100.1", 443);
        both.domain = Some(Cow::Borrowed("cdn.example.com"));
        s.observe(&both);
        both.name_source = Some(NameSource::Tls);
        s.observe(&both);
        let (yaml, p) = policy_of(&s);
        assert!(
            yaml.contains("to: [\"api.example.com\", \"cdn.example.com\"]"),
            "{yaml}"
        );
        assert!(yaml.contains("to: [\"www.example.com\"]"), "{yaml}");
        assert!(!yaml.contains("203.0.113"), "{yaml}");
        assert!(
            yaml.contains(
                "  # named by their first bytes, not by DNS: \"api.example.com\" (TLS)\n"
            ),
            "a name also seen by DNS is not marked\n{yaml}"
        );
        assert!(yaml.contains("\"www.example.com\" (HTTP)"), "{yaml}");
        assert!(
            yaml.contains("#   name_gate: {ports: [443, 8080]}"),
            "{yaml}"
        );
        // egret's matcher approves them by the name their first bytes gave (no DNS name).
        let m = Matcher::new(&p);
        for o in [&tls, &http] {
            let conn = Connection {
                ip: o.ip,
                port: o.port,
                protocol: Some(policy::Protocol::Tcp),
                executable: o.executable.as_deref(),
                systemd_unit: None,
                cgroup_path: None,
                dns_names: &[],
                container_name: None,
                container_image: None,
                pod_namespace: None,
                pod_name: None,
            };
            assert!(!m.evaluate(&conn).is_approved(), "not by address\n{yaml}");
            let name = o.domain.as_deref().unwrap_or_default().to_ascii_lowercase();
            assert!(m.approve_name(&conn, &name).is_some(), "{name}\n{yaml}");
        }
        // Without names from first bytes, no such note.
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        s.observe(&obs(1, "/x", "203.0.113.5", 443));
        let (yaml, _) = policy_of(&s);
        assert!(
            !yaml.contains("named by their first bytes") && !yaml.contains("name_gate"),
            "{yaml}"
        );
    }

    #[test]
    fn block_mode_problems_are_named_in_the_header() {
        // 17 rules with domain names (distinct ports) cannot be enforced in block mode.
        let mut s = Suggester::new(LoopbackChoice::Auto, false);
        for i in 0..17_u16 {
            let mut o = obs(1, "/x", "192.0.2.1", 1000 + i * 10);
            o.domain = Some(Cow::Owned(format!("n{i}.example.com")));
            s.observe(&o);
        }
        let (yaml, p) = policy_of(&s);
        assert_eq!(p.rules.len(), 17);
        assert!(yaml.contains("Before switching to block mode"), "{yaml}");
    }
}

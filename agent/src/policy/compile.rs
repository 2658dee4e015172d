//! Block mode: compiling a policy into the kernel's maps.
//!
//! Every address prefix named by a rule becomes one LPM-trie entry per family. Its value lists
//! the (port range, protocols, cgroup scope) combinations that approve it: its own rules' and
//! those of every shorter prefix containing it, because the kernel looks up only the longest
//! match. Rules scoped to `cgroups:` or `systemd_units:` get one scope bit per selector list;
//! the kernel ORs the bits of the caller's cgroup and its ancestors and requires all of an
//! entry's bits. [`scope_ids`] finds the cgroups that carry each bit.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use agent_common::{
    dns::dotted_name_hash, path_hash, DnsNameValue, PolicyEntry, PolicyValue, DNS_RULES_MAX,
    POLICY_ENTRIES_MAX, POLICY_PREFIXES_MAX, POLICY_SCOPES_MAX, PROTO_ANY, PROTO_TCP, PROTO_UDP,
};

use super::{
    Destination, DomainPattern, Glob, Loopback, Mode, Policy, PolicyError, PolicyErrors, Position,
    Prefix, Protocol, Rule,
};

/// What one scope bit stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum ScopeSelector {
    /// The cgroup at one of these paths, or below it.
    Cgroups(Vec<String>),
    /// A cgroup whose systemd unit (first non-slice unit in its path) matches one of these.
    Units(Vec<Glob>),
    /// A container's cgroup, when the container's name or image matches one of these.
    Containers(Vec<Glob>),
    /// A container's cgroup, when its pod's namespace matches one of these.
    Namespaces(Vec<Glob>),
    /// A container's cgroup, when its pod's name matches one of these.
    Pods(Vec<Glob>),
    /// A process whose executable file is one these name: exact paths, `DIR/*` (the files
    /// in DIR) or `DIR/**` (every file below DIR). Known to the kernel by the file's identity
    /// (device, inode), never by a name the process gives itself.
    Processes(Vec<Glob>),
}

/// The kernel's form of a `processes:` selector, or why it has none: an exact path, or a
/// directory without glob characters followed by `/*` or `/**`.
pub fn exe_pattern(text: &str) -> Result<ExePattern<'_>, String> {
    let (dir, kind) = match (text.strip_suffix("/**"), text.strip_suffix("/*")) {
        (Some(dir), _) => (dir, ExePatternKind::Below),
        (None, Some(dir)) => (dir, ExePatternKind::In),
        (None, None) => (text, ExePatternKind::Exact),
    };
    if dir.contains(['*', '?', '[', ']', '{', '}']) || !dir.starts_with('/') {
        return Err(format!(
            "`{text}`: in block mode a process selector is an absolute path, DIR/* or DIR/** with no other glob characters"
        ));
    }
    Ok(ExePattern { path: dir, kind })
}

/// A `processes:` selector the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExePattern<'a> {
    /// The file (exact) or the directory.
    pub path: &'a str,
    pub kind: ExePatternKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExePatternKind {
    Exact,
    /// `DIR/*`: the files directly in DIR.
    In,
    /// `DIR/**`: every file below DIR.
    Below,
}

impl ExePattern<'_> {
    /// The text the kernel hashes for `path` (the pattern's path or its canonical form).
    fn text(&self, path: &str) -> String {
        match self.kind {
            ExePatternKind::Exact => path.to_owned(),
            ExePatternKind::In => format!("{}/*", path.trim_end_matches('/')),
            ExePatternKind::Below => format!("{}/**", path.trim_end_matches('/')),
        }
    }

    /// The hashes the kernel matches an exec'd file's walked path against: the path as
    /// written and, when links lead elsewhere, the path they lead to (the kernel walks the
    /// real file's path).
    pub fn hashes(&self) -> Vec<u64> {
        let mut texts = vec![self.text(self.path)];
        if let Ok(real) = std::fs::canonicalize(self.path) {
            let real = real.to_string_lossy().into_owned();
            if real != self.path {
                texts.push(self.text(&real));
            }
        }
        texts
            .iter()
            .filter_map(|t| agent_common::exe_pattern_hash(t))
            .collect()
    }

    /// The identities of the files it approves now (bounded by `room`).
    pub fn files(&self, room: usize, out: &mut Vec<agent_common::ExeId>) {
        match self.kind {
            ExePatternKind::Exact => {
                if let Some(id) = exe_identity(Path::new(self.path)) {
                    out.push(id);
                }
            }
            ExePatternKind::In | ExePatternKind::Below => {
                let mut stack = vec![std::path::PathBuf::from(self.path)];
                while let Some(dir) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        if out.len() >= room {
                            return;
                        }
                        let Ok(meta) = std::fs::metadata(entry.path()) else {
                            continue;
                        };
                        if meta.is_file() {
                            out.extend(exe_identity(&entry.path()));
                        } else if meta.is_dir() && self.kind == ExePatternKind::Below {
                            stack.push(entry.path());
                        }
                    }
                }
            }
        }
    }
}

/// The identity the kernel reads of the regular file at `path` (device, inode, generation),
/// all three from one open file. The generation comes from `FS_IOC_GETVERSION` (ext4, XFS,
/// btrfs); where the file system answers no such call (tmpfs) or the file cannot be opened it
/// is taken as 0, which matches on a file system that keeps no generation and matches no file
/// on one that keeps them (such a file is approved when it is exec'd under a matching path).
pub(crate) fn exe_identity(path: &Path) -> Option<agent_common::ExeId> {
    use std::os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    };
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let id = |meta: &std::fs::Metadata, generation: u32| agent_common::ExeId {
        dev: crate::process::kernel_dev(meta.dev()),
        generation,
        ino: meta.ino(),
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return Some(id(&meta, 0));
    };
    let meta = file.metadata().ok().filter(std::fs::Metadata::is_file)?;
    // The call is declared with a `long` argument; file systems write an `int` into it.
    let mut generation: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes at most one `long` through the pointer, which lives
    // for the call; the descriptor is open.
    let answered = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::FS_IOC_GETVERSION,
            std::ptr::addr_of_mut!(generation),
        )
    } == 0;
    let generation = if answered {
        u32::try_from(generation & 0xffff_ffff).unwrap_or(0)
    } else {
        0
    };
    Some(id(&meta, generation))
}

/// The files the `processes:` selectors approve now: file identity → scope bits (at most
/// `EXES_MAX`; past it, a warning, and only execs under a matching path earn theirs).
pub fn exe_ids(scopes: &[ScopeSelector]) -> HashMap<agent_common::ExeId, u64> {
    let room = agent_common::EXES_MAX as usize;
    let mut ids: HashMap<agent_common::ExeId, u64> = HashMap::new();
    for (i, selector) in scopes.iter().enumerate() {
        let ScopeSelector::Processes(globs) = selector else {
            continue;
        };
        let mut files = Vec::new();
        for pattern in globs.iter().filter_map(|g| exe_pattern(&g.text).ok()) {
            pattern.files(room, &mut files);
        }
        for file in files {
            if ids.len() >= room && !ids.contains_key(&file) {
                log::warn!("processes: selectors name more than {room} files; the rest are approved once exec'd under a matching path");
                return ids;
            }
            *ids.entry(file).or_default() |= 1u64 << i;
        }
    }
    ids
}

/// What the container selectors look at, for one container.
#[derive(Debug, Clone, Copy, Default)]
pub struct Workload<'a> {
    pub container_name: Option<&'a str>,
    pub container_image: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
}

/// Scope bits a container's cgroup carries (its `containers`/`namespaces`/`pods` selectors).
pub fn workload_bits(scopes: &[ScopeSelector], workload: &Workload<'_>) -> u64 {
    let any = |globs: &[Glob], value: Option<&str>| {
        value.is_some_and(|v| globs.iter().any(|g| g.matcher.is_match(v)))
    };
    scopes.iter().enumerate().fold(0u64, |bits, (i, selector)| {
        let hit = match selector {
            ScopeSelector::Cgroups(_) | ScopeSelector::Units(_) | ScopeSelector::Processes(_) => {
                false
            }
            ScopeSelector::Containers(globs) => {
                any(globs, workload.container_name) || any(globs, workload.container_image)
            }
            ScopeSelector::Namespaces(globs) => any(globs, workload.namespace),
            ScopeSelector::Pods(globs) => any(globs, workload.pod),
        };
        if hit {
            bits | (1u64 << i)
        } else {
            bits
        }
    })
}

/// A prefix in network byte order with its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix4 {
    pub addr: [u8; 4],
    pub len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix6 {
    pub addr: [u8; 16],
    pub len: u8,
}

/// A policy as the kernel holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub block: bool,
    pub v4: Vec<(Prefix4, PolicyValue)>,
    pub v6: Vec<(Prefix6, PolicyValue)>,
    /// Bit `i` of an entry's `scopes` is `scopes[i]`.
    pub scopes: Vec<ScopeSelector>,
    /// Domain rule `i` (a rule naming domains in `to:`): its (ports, protocols, scope) entries.
    pub domain_rules: Vec<PolicyValue>,
    /// Approved names by [`dotted_name_hash`]: which domain rules approve the name exactly
    /// and which approve every name below it.
    pub dns_names: Vec<(u64, DnsNameValue)>,
    /// Scope bits by [`path_hash`] of a `cgroups:` path and of an exact `systemd_units:` name:
    /// the kernel gives them to a cgroup the moment it is created.
    pub scope_paths: Vec<(u64, u64)>,
    pub scope_units: Vec<(u64, u64)>,
    /// `name_gate` ports: TCP connects there go ahead with their first payload held until its
    /// name is checked.
    pub name_gate_ports: Vec<u16>,
    /// Scope bits by [`agent_common::exe_pattern_hash`] of each `processes:` selector: the
    /// kernel gives them to a file exec'd under a matching path.
    pub exe_paths: Vec<(u64, u64)>,
}

impl CompiledPolicy {
    /// Audit mode: the kernel only records.
    pub fn audit() -> Self {
        Self {
            block: false,
            v4: Vec::new(),
            v6: Vec::new(),
            scopes: Vec::new(),
            domain_rules: Vec::new(),
            dns_names: Vec::new(),
            scope_paths: Vec::new(),
            scope_units: Vec::new(),
            name_gate_ports: Vec::new(),
            exe_paths: Vec::new(),
        }
    }

    /// It has `processes:` selectors (the kernel needs each caller's executable).
    pub fn has_exes(&self) -> bool {
        !self.exe_paths.is_empty()
    }

    /// The domain rules (bit mask) approving `name` (`api.example.com`), computed the way the
    /// kernel does: the exact name, then each parent domain for wildcards.
    pub fn approving_domain_rules(&self, name: &str) -> u32 {
        let lookup = |hash: Option<u64>| {
            hash.and_then(|h| {
                self.dns_names
                    .iter()
                    .find(|(k, _)| *k == h)
                    .map(|(_, v)| *v)
            })
        };
        let mut mask = lookup(dotted_name_hash(name)).map_or(0, |v| v.exact);
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            mask |= lookup(dotted_name_hash(parent)).map_or(0, |v| v.wildcard);
            rest = parent;
        }
        mask
    }

    pub fn has_scopes(&self) -> bool {
        !self.scopes.is_empty()
    }
}

fn error(policy: &Policy, position: Position, path: String, message: String) -> PolicyError {
    PolicyError {
        file: policy.source.clone(),
        position,
        path,
        message,
    }
}

fn protocol_bits(protocols: &[Protocol]) -> u8 {
    if protocols.is_empty() {
        return PROTO_ANY;
    }
    protocols.iter().fold(0, |bits, p| {
        bits | match p {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    })
}

fn entry(port_lo: u16, port_hi: u16, protocols: u8, scopes: u64) -> PolicyEntry {
    PolicyEntry {
        port_lo,
        port_hi,
        protocols,
        _pad: [0; 3],
        scopes,
    }
}

/// A key of one of the kernel's prefix maps ([`Prefix4`], [`Prefix6`]), as the policy's
/// [`Prefix`] it stands for: for containment tests and messages.
trait KernelPrefix: Ord + Copy {
    fn prefix(self) -> Prefix;
}

impl KernelPrefix for Prefix4 {
    fn prefix(self) -> Prefix {
        Prefix {
            addr: IpAddr::from(self.addr),
            len: self.len,
        }
    }
}

impl KernelPrefix for Prefix6 {
    fn prefix(self) -> Prefix {
        Prefix {
            addr: IpAddr::from(self.addr),
            len: self.len,
        }
    }
}

/// Merges entries that differ only in adjacent or overlapping port ranges.
fn compact(entries: &mut Vec<PolicyEntry>) {
    entries.sort_by_key(|e| (e.protocols, e.scopes, e.port_lo, e.port_hi));
    entries.dedup();
    let mut out: Vec<PolicyEntry> = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        match out.last_mut() {
            Some(last)
                if last.protocols == e.protocols
                    && last.scopes == e.scopes
                    && u32::from(e.port_lo) <= u32::from(last.port_hi) + 1 =>
            {
                last.port_hi = last.port_hi.max(e.port_hi);
            }
            _ => out.push(e),
        }
    }
    *entries = out;
}

fn value(entries: &[PolicyEntry]) -> Option<PolicyValue> {
    let mut value = PolicyValue {
        count: u32::try_from(entries.len()).ok()?,
        _pad: 0,
        entries: [PolicyEntry::default(); POLICY_ENTRIES_MAX],
    };
    for (slot, e) in value.entries.iter_mut().zip(entries) {
        *slot = *e;
    }
    (entries.len() <= POLICY_ENTRIES_MAX).then_some(value)
}

/// Own entries per prefix, with the rules that contributed (for error messages).
struct Table<P> {
    own: BTreeMap<P, (Vec<PolicyEntry>, Vec<String>)>,
}

impl<P: KernelPrefix> Table<P> {
    fn new() -> Self {
        Self {
            own: BTreeMap::new(),
        }
    }

    fn add(&mut self, prefix: P, e: PolicyEntry, rule: &str) {
        let slot = self.own.entry(prefix).or_default();
        slot.0.push(e);
        if !slot.1.iter().any(|r| r == rule) {
            slot.1.push(rule.to_owned());
        }
    }

    /// Each prefix with its own entries and those of every prefix containing it.
    fn merged(&self) -> Vec<(P, Vec<PolicyEntry>, Vec<String>)> {
        self.own
            .keys()
            .map(|p| {
                let mut entries = Vec::new();
                let mut rules = Vec::new();
                for (q, (own, names)) in &self.own {
                    if q.prefix().covers(p.prefix()) {
                        entries.extend_from_slice(own);
                        rules.extend(names.iter().cloned());
                    }
                }
                compact(&mut entries);
                rules.sort();
                rules.dedup();
                (*p, entries, rules)
            })
            .collect()
    }

    /// The kernel map: each prefix with its merged entries. A prefix with more entries than
    /// the kernel holds is an error instead.
    fn kernel_map(&self, policy: &Policy, errors: &mut Vec<PolicyError>) -> Vec<(P, PolicyValue)> {
        let mut map = Vec::new();
        for (prefix, entries, rules) in self.merged() {
            match value(&entries) {
                Some(v) => map.push((prefix, v)),
                None => errors.push(too_many(
                    policy,
                    &prefix.prefix().to_string(),
                    entries.len(),
                    &rules,
                )),
            }
        }
        map
    }
}

/// Compiles `policy` for the kernel. Audit mode compiles to [`CompiledPolicy::audit`].
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, PolicyErrors> {
    if policy.mode == Mode::Audit {
        return Ok(CompiledPolicy::audit());
    }
    let mut compiler = Compiler::new(policy);
    if policy.loopback == Loopback::Approve {
        compiler.approve_loopback();
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        compiler.add_rule(index, rule);
    }
    compiler.finish()
}

/// Where a rule is, for its errors: `rules[index]` in the document, and its place in the file.
#[derive(Debug, Clone, Copy)]
struct RuleSite {
    index: usize,
    position: Position,
}

impl RuleSite {
    /// `rules[index]` followed by `what` (`.to`, `.ports`, or nothing for the whole rule).
    fn path(self, what: &str) -> String {
        format!("rules[{}]{what}", self.index)
    }
}

/// What one rule approves at each of its destinations: its port ranges, with its protocols
/// and scope bits.
struct Grant<'r> {
    /// The rule's name, for error messages about the prefixes it adds to.
    rule: &'r str,
    ranges: Vec<(u16, u16)>,
    protocols: u8,
    scopes: u64,
}

impl Grant<'_> {
    /// One kernel entry per port range.
    fn entries(&self) -> impl Iterator<Item = PolicyEntry> + '_ {
        self.ranges
            .iter()
            .map(|&(lo, hi)| entry(lo, hi, self.protocols, self.scopes))
    }
}

/// A block-mode policy being compiled, rule by rule: the kernel's maps so far and the errors
/// found (all of them are reported, not just the first).
struct Compiler<'p> {
    policy: &'p Policy,
    errors: Vec<PolicyError>,
    /// Bit `i` of an entry's `scopes` is `scopes[i]`.
    scopes: Vec<ScopeSelector>,
    v4: Table<Prefix4>,
    v6: Table<Prefix6>,
    /// Domain rule `i` (bit `i` of a name's masks): its entries.
    domain_rules: Vec<PolicyValue>,
    /// Approved names by [`dotted_name_hash`]: the domain rules approving each.
    names: BTreeMap<u64, DnsNameValue>,
}

impl<'p> Compiler<'p> {
    /// Nothing compiled yet.
    fn new(policy: &'p Policy) -> Self {
        Self {
            policy,
            errors: Vec::new(),
            scopes: Vec::new(),
            v4: Table::new(),
            v6: Table::new(),
            domain_rules: Vec::new(),
            names: BTreeMap::new(),
        }
    }

    /// Records an error at `position` in the file (`path` in the document), and goes on.
    fn push_error(&mut self, position: Position, path: String, message: String) {
        self.errors
            .push(error(self.policy, position, path, message));
    }

    /// Approves every port and protocol to 127.0.0.0/8 and ::1, from any cgroup.
    fn approve_loopback(&mut self) {
        let any = entry(0, u16::MAX, PROTO_ANY, 0);
        let v4 = Prefix4 {
            addr: [127, 0, 0, 0],
            len: 8,
        };
        self.v4.add(v4, any, "loopback");
        let v6 = Prefix6 {
            addr: Ipv6Addr::LOCALHOST.octets(),
            len: 128,
        };
        self.v6.add(v6, any, "loopback");
    }

    /// Adds rule `index`: its address prefixes to the tries, its domain names (if any) as a
    /// domain rule. A rule the kernel cannot enforce adds nothing, only its error.
    fn add_rule(&mut self, index: usize, rule: &Rule) {
        let Rule {
            name,
            position,
            to,
            ports,
            protocols,
            processes,
            systemd_units,
            cgroups,
            containers,
            namespaces,
            pods,
            to_positions: _,
            processes_position,
        } = rule;
        let site = RuleSite {
            index,
            position: *position,
        };
        for glob in processes {
            if let Err(message) = exe_pattern(&glob.text) {
                self.push_error(
                    processes_position.unwrap_or(*position),
                    site.path(".processes"),
                    message,
                );
                return;
            }
        }
        let selectors = [
            (!processes.is_empty()).then(|| ScopeSelector::Processes(processes.clone())),
            (!cgroups.is_empty()).then(|| ScopeSelector::Cgroups(cgroups.clone())),
            (!systemd_units.is_empty()).then(|| ScopeSelector::Units(systemd_units.clone())),
            (!containers.is_empty()).then(|| ScopeSelector::Containers(containers.clone())),
            (!namespaces.is_empty()).then(|| ScopeSelector::Namespaces(namespaces.clone())),
            (!pods.is_empty()).then(|| ScopeSelector::Pods(pods.clone())),
        ];
        let grant = Grant {
            rule: name,
            ranges: if ports.is_empty() {
                vec![(0, u16::MAX)]
            } else {
                ports.iter().map(|r| (r.lo, r.hi)).collect()
            },
            protocols: protocol_bits(protocols),
            scopes: self.assign_scope_bits(site, selectors.into_iter().flatten()),
        };
        let mut domains = Vec::new();
        for destination in to {
            match destination {
                Destination::Prefix(prefix) => self.add_prefix(prefix, &grant),
                Destination::Domain(domain) => domains.push(domain),
            }
        }
        if !domains.is_empty() {
            self.add_domain_rule(site, &domains, &grant);
        }
    }

    /// Gives each of a rule's selector lists the next scope bit; returns the rule's bits.
    /// Past the kernel's limit, the rule keeps the bits it got and the policy an error.
    fn assign_scope_bits(
        &mut self,
        site: RuleSite,
        selectors: impl Iterator<Item = ScopeSelector>,
    ) -> u64 {
        let mut bits = 0u64;
        for selector in selectors {
            if self.scopes.len() >= POLICY_SCOPES_MAX {
                self.push_error(
                    site.position,
                    site.path(""),
                    format!("block mode supports at most {POLICY_SCOPES_MAX} cgroups/systemd_units selector lists; merge scoped rules"),
                );
                break;
            }
            bits |= 1u64 << self.scopes.len();
            self.scopes.push(selector);
        }
        bits
    }

    /// Adds the rule's entries to `prefix`, in the trie of its family.
    fn add_prefix(&mut self, prefix: &Prefix, grant: &Grant<'_>) {
        for e in grant.entries() {
            match prefix.addr {
                IpAddr::V4(a) => self.v4.add(
                    Prefix4 {
                        addr: a.octets(),
                        len: prefix.len,
                    },
                    e,
                    grant.rule,
                ),
                IpAddr::V6(a) => self.v6.add(
                    Prefix6 {
                        addr: a.octets(),
                        len: prefix.len,
                    },
                    e,
                    grant.rule,
                ),
            }
        }
    }

    /// Makes the rule the next domain rule (its own bit, its own entries) and sets that bit
    /// on each of its names: exact, or for every name below a wildcard.
    fn add_domain_rule(&mut self, site: RuleSite, domains: &[&DomainPattern], grant: &Grant<'_>) {
        let bit = self.domain_rules.len();
        if bit >= DNS_RULES_MAX {
            self.push_error(
                site.position,
                site.path(".to"),
                format!("block mode supports at most {DNS_RULES_MAX} rules with domain names; list more names in fewer rules"),
            );
            return;
        }
        let mut entries: Vec<PolicyEntry> = grant.entries().collect();
        compact(&mut entries);
        let Some(value) = value(&entries) else {
            self.push_error(
                site.position,
                site.path(".ports"),
                format!("a rule with domain names supports at most {POLICY_ENTRIES_MAX} port ranges in block mode"),
            );
            return;
        };
        self.domain_rules.push(value);
        for domain in domains {
            let Some(hash) = dotted_name_hash(&domain.name) else {
                continue;
            };
            let slot = self.names.entry(hash).or_default();
            if domain.wildcard {
                slot.wildcard |= 1 << bit;
            } else {
                slot.exact |= 1 << bit;
            }
        }
    }

    /// The compiled policy, or every error: the rules' own, then the prefixes over the
    /// kernel's limits (IPv4, then IPv6).
    fn finish(self) -> Result<CompiledPolicy, PolicyErrors> {
        let Self {
            policy,
            mut errors,
            scopes,
            v4,
            v6,
            domain_rules,
            names,
        } = self;
        let (scope_paths, scope_units) = creation_hashes(&scopes);
        let exe_paths = exe_path_hashes(&scopes);
        let compiled = CompiledPolicy {
            block: true,
            v4: v4.kernel_map(policy, &mut errors),
            v6: v6.kernel_map(policy, &mut errors),
            scopes,
            domain_rules,
            dns_names: names.into_iter().collect(),
            scope_paths,
            scope_units,
            name_gate_ports: policy.name_gate.ports.clone(),
            exe_paths,
        };
        for (family, n) in [("IPv4", compiled.v4.len()), ("IPv6", compiled.v6.len())] {
            if n > POLICY_PREFIXES_MAX as usize {
                errors.push(error(
                    policy,
                    Position::default(),
                    "rules".to_owned(),
                    format!(
                        "{n} {family} prefixes; block mode supports at most {POLICY_PREFIXES_MAX}"
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(compiled)
        } else {
            Err(PolicyErrors {
                file: policy.source.clone(),
                errors,
            })
        }
    }
}

fn too_many(policy: &Policy, prefix: &str, n: usize, rules: &[String]) -> PolicyError {
    error(
        policy,
        Position::default(),
        "rules".to_owned(),
        format!(
            "address {prefix} is covered by {n} distinct (ports, protocols, cgroups) combinations from rules {}; block mode supports at most {POLICY_ENTRIES_MAX} per address: merge port lists or rules",
            rules.join(", ")
        ),
    )
}

/// The cgroups that carry each scope bit: cgroup id → bits. Descendants inherit in the
/// kernel (it walks the caller's ancestors), so only the top cgroup of each match is listed.
pub fn scope_ids(compiled: &CompiledPolicy, mount: &Path) -> HashMap<u64, u64> {
    let mut ids = HashMap::new();
    if !compiled.has_scopes() {
        return ids;
    }
    let mut stack = vec![(mount.to_path_buf(), "/".to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        let bits = scope_bits(&compiled.scopes, &rel);
        if bits != 0 {
            if let Ok(meta) = std::fs::metadata(&dir) {
                use std::os::unix::fs::MetadataExt as _;
                *ids.entry(meta.ino()).or_insert(0) |= bits;
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel == "/" {
                format!("/{name}")
            } else {
                format!("{rel}/{name}")
            };
            stack.push((entry.path(), child_rel));
        }
    }
    ids
}

/// (hash, scope bits) pairs for one kernel table.
type HashBits = Vec<(u64, u64)>;

/// The (hash → bits) tables the kernel's `cgroup_mkdir` tracepoint uses: whole paths of
/// `cgroups:` selectors, and exact (glob-free) `systemd_units:` names. Glob unit names are
/// matched by userspace's rescan only.
fn creation_hashes(scopes: &[ScopeSelector]) -> (HashBits, HashBits) {
    let mut paths: BTreeMap<u64, u64> = BTreeMap::new();
    let mut units: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, selector) in scopes.iter().enumerate() {
        let bit = 1u64 << i;
        match selector {
            ScopeSelector::Cgroups(list) => {
                for path in list {
                    *paths.entry(path_hash(path)).or_default() |= bit;
                }
            }
            ScopeSelector::Units(globs) => {
                for glob in globs
                    .iter()
                    .filter(|g| !g.text.contains(['*', '?', '[', '{']))
                {
                    *units.entry(path_hash(&glob.text)).or_default() |= bit;
                }
            }
            ScopeSelector::Containers(_)
            | ScopeSelector::Namespaces(_)
            | ScopeSelector::Pods(_)
            | ScopeSelector::Processes(_) => {}
        }
    }
    (paths.into_iter().collect(), units.into_iter().collect())
}

/// (hash → bits) of every `processes:` selector, for the kernel's exec hook.
fn exe_path_hashes(scopes: &[ScopeSelector]) -> HashBits {
    let mut hashes: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, selector) in scopes.iter().enumerate() {
        let ScopeSelector::Processes(globs) = selector else {
            continue;
        };
        for pattern in globs.iter().filter_map(|g| exe_pattern(&g.text).ok()) {
            for hash in pattern.hashes() {
                *hashes.entry(hash).or_default() |= 1u64 << i;
            }
        }
    }
    hashes.into_iter().collect()
}

/// Scope bits a cgroup path itself carries.
pub fn scope_bits(scopes: &[ScopeSelector], rel: &str) -> u64 {
    let last = rel.rsplit('/').next().unwrap_or("");
    let unit = crate::cgroup::systemd_unit(rel);
    scopes.iter().enumerate().fold(0u64, |bits, (i, selector)| {
        let hit = match selector {
            ScopeSelector::Cgroups(paths) => paths.iter().any(|p| p == rel),
            // The cgroup that *is* the unit (its first non-slice unit component is itself).
            ScopeSelector::Containers(_)
            | ScopeSelector::Namespaces(_)
            | ScopeSelector::Pods(_)
            | ScopeSelector::Processes(_) => false,
            ScopeSelector::Units(globs) => {
                unit.is_some_and(|u| u == last.strip_prefix('_').unwrap_or(last))
                    && globs
                        .iter()
                        .any(|g| g.matcher.is_match(last.strip_prefix('_').unwrap_or(last)))
            }
        };
        if hit {
            bits | (1u64 << i)
        } else {
            bits
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DomainPattern, NameGate, PortRange, Prefix};

    fn glob(text: &str) -> Glob {
        Glob {
            text: text.to_owned(),
            matcher: globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
                .unwrap()
                .compile_matcher(),
        }
    }

    fn rule(name: &str, to: &[&str], ports: &[(u16, u16)], protocols: &[Protocol]) -> Rule {
        let to = to
            .iter()
            .map(|t| {
                let (addr, len) = t.split_once('/').unwrap();
                Destination::Prefix(Prefix {
                    addr: addr.parse().unwrap(),
                    len: len.parse().unwrap(),
                })
            })
            .collect();
        Rule {
            position: Position { line: 1, column: 1 },
            ports: ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
            protocols: protocols.to_vec(),
            ..Rule::new(name, to)
        }
    }

    fn policy(rules: Vec<Rule>, loopback: Loopback) -> Policy {
        Policy {
            mode: Mode::Block,
            loopback,
            rules,
            resolvers: None,
            name_gate: NameGate::default(),
            source: "p.yaml".to_owned(),
        }
    }

    fn find4(c: &CompiledPolicy, addr: [u8; 4], len: u8) -> Vec<PolicyEntry> {
        let (_, v) =
            c.v4.iter()
                .find(|(p, _)| p.addr == addr && p.len == len)
                .unwrap();
        v.entries[..v.count as usize].to_vec()
    }

    /// Every field of `c`, one line per map entry (name hashes in hex).
    fn describe(c: &CompiledPolicy) -> String {
        use std::fmt::Write as _;
        let CompiledPolicy {
            block,
            v4,
            v6,
            scopes,
            domain_rules,
            dns_names,
            scope_paths,
            scope_units,
            name_gate_ports: _,
            exe_paths: _,
        } = c;
        let entries = |v: &PolicyValue| {
            let listed: Vec<String> = v.entries[..v.count as usize]
                .iter()
                .map(|e| {
                    format!(
                        "{}-{} proto {:03b} scopes {:b}",
                        e.port_lo, e.port_hi, e.protocols, e.scopes
                    )
                })
                .collect();
            assert!(v.entries[v.count as usize..]
                .iter()
                .all(|e| *e == PolicyEntry::default()));
            listed.join(", ")
        };
        let texts = |globs: &[Glob]| {
            globs
                .iter()
                .map(|g| g.text.clone())
                .collect::<Vec<String>>()
        };
        let mut out = format!("block {block}\n");
        for (p, v) in v4 {
            writeln!(out, "{}: {}", p.prefix(), entries(v)).unwrap();
        }
        for (p, v) in v6 {
            writeln!(out, "{}: {}", p.prefix(), entries(v)).unwrap();
        }
        for (i, selector) in scopes.iter().enumerate() {
            let text = match selector {
                ScopeSelector::Cgroups(paths) => format!("cgroups {paths:?}"),
                ScopeSelector::Units(globs) => format!("units {:?}", texts(globs)),
                ScopeSelector::Containers(globs) => format!("containers {:?}", texts(globs)),
                ScopeSelector::Namespaces(globs) => format!("namespaces {:?}", texts(globs)),
                ScopeSelector::Pods(globs) => format!("pods {:?}", texts(globs)),
                ScopeSelector::Processes(globs) => format!("processes {:?}", texts(globs)),
            };
            writeln!(out, "scope {i}: {text}").unwrap();
        }
        for (i, v) in domain_rules.iter().enumerate() {
            writeln!(out, "domain rule {i}: {}", entries(v)).unwrap();
        }
        for (hash, v) in dns_names {
            let DnsNameValue { exact, wildcard } = v;
            writeln!(
                out,
                "name {hash:016x}: exact {exact:b} wildcard {wildcard:b}"
            )
            .unwrap();
        }
        for (hash, bits) in scope_paths {
            writeln!(out, "path {hash:016x}: {bits:b}").unwrap();
        }
        for (hash, bits) in scope_units {
            writeln!(out, "unit {hash:016x}: {bits:b}").unwrap();
        }
        out
    }

    fn domain(name: &str, wildcard: bool) -> Destination {
        Destination::Domain(DomainPattern {
            name: name.to_owned(),
            wildcard,
        })
    }

    /// Everything a policy that compiles becomes, pinned whole.
    #[test]
    fn a_compiled_policy_is_pinned() {
        let wide = rule("wide", &["10.0.0.0/8"], &[(443, 443)], &[Protocol::Tcp]);
        let mut narrow = rule(
            "narrow",
            &["10.1.0.0/16", "10.1.2.0/24"],
            &[(53, 53), (80, 90), (85, 100)],
            &[Protocol::Udp],
        );
        narrow.cgroups = vec!["/system.slice/a.service".into(), "/b".into()];
        narrow.systemd_units = vec![glob("a.service"), glob("web-*.service")];
        let mut v6 = rule("v6", &["2001:db8::/32", "2001:db8:1::/48"], &[], &[]);
        v6.containers = vec![glob("web-*")];
        v6.namespaces = vec![glob("shop")];
        v6.pods = vec![glob("cart-*")];
        let mut api = rule(
            "api",
            &["192.0.2.1/32"],
            &[(443, 443), (8443, 8443)],
            &[Protocol::Tcp, Protocol::Udp],
        );
        api.to.push(domain("api.example.com", false));
        api.to.push(domain("example.net", true));
        let mut again = rule("again", &[], &[], &[]);
        again.to = vec![
            domain("api.example.com", false),
            domain("example.org", true),
        ];
        again.cgroups = vec!["/b".into()];
        let c = compile(&policy(
            vec![wide, narrow, v6, api, again],
            Loopback::Approve,
        ))
        .unwrap();
        assert_eq!(
            describe(&c),
            "block true\n\
            10.0.0.0/8: 443-443 proto 001 scopes 0\n\
            10.1.0.0/16: 443-443 proto 001 scopes 0, 53-53 proto 010 scopes 11, 80-100 proto 010 scopes 11\n\
            10.1.2.0/24: 443-443 proto 001 scopes 0, 53-53 proto 010 scopes 11, 80-100 proto 010 scopes 11\n\
            127.0.0.0/8: 0-65535 proto 111 scopes 0\n\
            192.0.2.1/32: 443-443 proto 011 scopes 0, 8443-8443 proto 011 scopes 0\n\
            ::1/128: 0-65535 proto 111 scopes 0\n\
            2001:db8::/32: 0-65535 proto 111 scopes 11100\n\
            2001:db8:1::/48: 0-65535 proto 111 scopes 11100\n\
            scope 0: cgroups [\"/system.slice/a.service\", \"/b\"]\n\
            scope 1: units [\"a.service\", \"web-*.service\"]\n\
            scope 2: containers [\"web-*\"]\n\
            scope 3: namespaces [\"shop\"]\n\
            scope 4: pods [\"cart-*\"]\n\
            scope 5: cgroups [\"/b\"]\n\
            domain rule 0: 443-443 proto 011 scopes 0, 8443-8443 proto 011 scopes 0\n\
            domain rule 1: 0-65535 proto 111 scopes 100000\n\
            name 257dd8637fa3ad3e: exact 0 wildcard 10\n\
            name 30bdfcdb70b035b0: exact 11 wildcard 0\n\
            name 5c980d568ce5759f: exact 0 wildcard 1\n\
            path 07d66407b49cd414: 100001\n\
            path 37d16144f31ee4be: 1\n\
            unit b54e3dc93b238a5d: 10\n"
        );
    }

    /// Every error compiling can report, in the order it reports them.
    #[test]
    fn compile_errors_are_pinned() {
        let mut rules = Vec::new();
        let mut exe = rule("exe", &["203.0.113.0/24"], &[], &[]);
        exe.processes = vec![glob("/usr/bin/g*t")];
        exe.processes_position = Some(Position { line: 3, column: 5 });
        rules.push(exe);
        // 14 rules of 5 selector lists: the 13th rule's fifth list is one too many.
        for i in 0..14u8 {
            let to = format!("10.{i}.0.0/16");
            let mut r = rule(&format!("scoped{i}"), &[to.as_str()], &[], &[]);
            r.cgroups = vec![format!("/s{i}")];
            r.systemd_units = vec![glob("s.service")];
            r.containers = vec![glob("c")];
            r.namespaces = vec![glob("n")];
            r.pods = vec![glob("p")];
            rules.push(r);
        }
        let ports: Vec<(u16, u16)> = (0..17).map(|i| (1000 + i * 10, 1000 + i * 10)).collect();
        let mut ranges = rule("ranges", &[], &ports, &[]);
        ranges.to = vec![domain("ranges.example.com", false)];
        rules.push(ranges);
        for i in 0..17 {
            let mut r = rule(&format!("names{i}"), &[], &[], &[]);
            r.to = vec![domain(&format!("n{i}.example.com"), false)];
            rules.push(r);
        }
        for i in 0..17u16 {
            let to = ["198.18.0.0/15", "2001:db8::/32"];
            rules.push(rule(
                &format!("any{i}"),
                &to,
                &[(2000 + i * 10, 2000 + i * 10)],
                &[],
            ));
        }
        for (line, r) in (1..).zip(&mut rules) {
            r.position = Position { line, column: 3 };
        }
        let err = compile(&policy(rules, Loopback::Approve)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "7 error(s) in policy p.yaml:\n\
            p.yaml:3:5: rules[0].processes: `/usr/bin/g*t`: in block mode a process selector is an absolute path, DIR/* or DIR/** with no other glob characters\n\
            p.yaml:14:3: rules[13]: block mode supports at most 64 cgroups/systemd_units selector lists; merge scoped rules\n\
            p.yaml:15:3: rules[14]: block mode supports at most 64 cgroups/systemd_units selector lists; merge scoped rules\n\
            p.yaml:16:3: rules[15].ports: a rule with domain names supports at most 16 port ranges in block mode\n\
            p.yaml:33:3: rules[32].to: block mode supports at most 16 rules with domain names; list more names in fewer rules\n\
            p.yaml:0:0: rules: address 198.18.0.0/15 is covered by 17 distinct (ports, protocols, cgroups) combinations from rules any0, any1, any10, any11, any12, any13, any14, any15, any16, any2, any3, any4, any5, any6, any7, any8, any9; block mode supports at most 16 per address: merge port lists or rules\n\
            p.yaml:0:0: rules: address 2001:db8::/32 is covered by 17 distinct (ports, protocols, cgroups) combinations from rules any0, any1, any10, any11, any12, any13, any14, any15, any16, any2, any3, any4, any5, any6, any7, any8, any9; block mode supports at most 16 per address: merge port lists or rules"
        );
    }

    #[test]
    fn audit_mode_compiles_to_nothing() {
        let mut p = policy(
            vec![rule("a", &["10.0.0.0/8"], &[], &[])],
            Loopback::Approve,
        );
        p.mode = Mode::Audit;
        assert_eq!(compile(&p).unwrap(), CompiledPolicy::audit());
    }

    #[test]
    fn longer_prefixes_inherit_the_entries_of_shorter_ones() {
        let p = policy(
            vec![
                rule("wide", &["10.0.0.0/8"], &[(443, 443)], &[Protocol::Tcp]),
                rule("narrow", &["10.1.0.0/16"], &[(53, 53)], &[Protocol::Udp]),
            ],
            Loopback::Audit,
        );
        let c = compile(&p).unwrap();
        assert_eq!(c.v4.len(), 2);
        assert_eq!(find4(&c, [10, 0, 0, 0], 8), [entry(443, 443, PROTO_TCP, 0)]);
        let mut narrow = find4(&c, [10, 1, 0, 0], 16);
        narrow.sort_by_key(|e| e.port_lo);
        assert_eq!(
            narrow,
            [entry(53, 53, PROTO_UDP, 0), entry(443, 443, PROTO_TCP, 0)]
        );
    }

    #[test]
    fn loopback_is_approved_unless_audited() {
        let c = compile(&policy(vec![], Loopback::Approve)).unwrap();
        assert_eq!(
            find4(&c, [127, 0, 0, 0], 8),
            [entry(0, u16::MAX, PROTO_ANY, 0)]
        );
        assert_eq!(c.v6.len(), 1);
        let c = compile(&policy(vec![], Loopback::Audit)).unwrap();
        assert!(c.v4.is_empty() && c.v6.is_empty());
    }

    #[test]
    fn adjacent_port_ranges_merge() {
        let p = policy(
            vec![rule(
                "r",
                &["192.0.2.0/24"],
                &[(80, 80), (81, 90), (100, 200), (150, 160)],
                &[Protocol::Tcp],
            )],
            Loopback::Audit,
        );
        let c = compile(&p).unwrap();
        assert_eq!(
            find4(&c, [192, 0, 2, 0], 24),
            [entry(80, 90, PROTO_TCP, 0), entry(100, 200, PROTO_TCP, 0)]
        );
    }

    #[test]
    fn executable_selectors_get_a_scope_bit_and_path_hashes() {
        let mut r = rule("git", &["203.0.113.0/24"], &[(22, 22)], &[]);
        r.processes = vec![glob("/usr/bin/git"), glob("/usr/lib/git-core/*")];
        let c = compile(&policy(vec![r], Loopback::Approve)).unwrap();
        assert_eq!(find4(&c, [203, 0, 113, 0], 24), [entry(22, 22, 7, 1)]);
        assert!(c.has_exes());
        let hashes: Vec<u64> = c.exe_paths.iter().map(|(h, _)| *h).collect();
        for text in ["/usr/bin/git", "/usr/lib/git-core/*"] {
            let hash = agent_common::exe_pattern_hash(text).unwrap();
            assert!(hashes.contains(&hash), "{text}");
        }
        assert!(c.exe_paths.iter().all(|(_, bits)| *bits == 1));
    }

    #[test]
    fn executable_selectors_the_kernel_cannot_match_are_refused() {
        for bad in [
            "/opt/**/bin/java",
            "/usr/bin/py*",
            "relative/tool",
            "/a/[bc]/x",
        ] {
            let mut r = rule("x", &["203.0.113.0/24"], &[(22, 22)], &[]);
            r.processes = vec![glob(bad)];
            let err = compile(&policy(vec![r], Loopback::Approve)).unwrap_err();
            assert!(err.errors[0].message.contains("DIR/**"), "{bad}: {err}");
        }
        assert_eq!(
            exe_pattern("/usr/lib/git-core/**"),
            Ok(ExePattern {
                path: "/usr/lib/git-core",
                kind: ExePatternKind::Below
            })
        );
    }

    #[test]
    fn the_files_a_selector_approves_are_found_by_identity() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("egret-exe-ids-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), b"a").unwrap();
        std::fs::write(dir.join("sub/b"), b"b").unwrap();
        let text = |suffix: &str| format!("{}{suffix}", dir.display());
        let scopes = vec![
            ScopeSelector::Processes(vec![glob(&text("/a"))]),
            ScopeSelector::Processes(vec![glob(&text("/*"))]),
            ScopeSelector::Processes(vec![glob(&text("/**"))]),
        ];
        let ids = exe_ids(&scopes);
        let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
        let bits = |p: &str| {
            ids.iter()
                .find(|(id, _)| id.ino == ino(p))
                .map(|(_, b)| *b)
                .unwrap_or(0)
        };
        assert_eq!(bits("a"), 0b111, "exact, in the directory, below it");
        assert_eq!(bits("sub/b"), 0b100, "only below");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn domain_rules_compile_to_name_hashes_and_rule_entries() {
        use crate::policy::DomainPattern;
        let domain = |name: &str, wildcard: bool| {
            Destination::Domain(DomainPattern {
                name: name.to_owned(),
                wildcard,
            })
        };
        let mut api = rule("api", &[], &[(443, 443)], &[Protocol::Tcp]);
        api.to = vec![
            domain("api.example.com", false),
            domain("example.net", true),
        ];
        let mut dns = rule("dns", &["10.96.0.10/32"], &[(53, 53)], &[]);
        dns.to.push(domain("resolver.example.com", false));
        let c = compile(&policy(vec![api, dns], Loopback::Approve)).unwrap();
        assert_eq!(c.domain_rules.len(), 2);
        assert_eq!(c.domain_rules[0].entries[0], entry(443, 443, PROTO_TCP, 0));
        assert_eq!(c.approving_domain_rules("api.example.com"), 0b01);
        assert_eq!(c.approving_domain_rules("a.b.example.net"), 0b01);
        assert_eq!(
            c.approving_domain_rules("example.net"),
            0,
            "a wildcard is not the apex"
        );
        assert_eq!(c.approving_domain_rules("resolver.example.com"), 0b10);
        assert_eq!(c.approving_domain_rules("example.com"), 0);
        assert_eq!(
            find4(&c, [10, 96, 0, 10], 32),
            [entry(53, 53, PROTO_ANY, 0)]
        );
    }

    #[test]
    fn at_most_sixteen_domain_rules() {
        use crate::policy::DomainPattern;
        let rules = (0..17)
            .map(|i| {
                let mut r = rule(&format!("r{i}"), &[], &[], &[]);
                r.to = vec![Destination::Domain(DomainPattern {
                    name: format!("n{i}.example.com"),
                    wildcard: false,
                })];
                r
            })
            .collect();
        let err = compile(&policy(rules, Loopback::Approve)).unwrap_err();
        assert!(
            err.errors[0]
                .message
                .contains("at most 16 rules with domain names"),
            "{err}"
        );
    }

    #[test]
    fn too_many_combinations_for_one_address_is_an_error_naming_the_rules() {
        let rules = (0..20u16)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    &["0.0.0.0/0"],
                    &[(1000 + i * 10, 1000 + i * 10)],
                    &[],
                )
            })
            .collect();
        let err = compile(&policy(rules, Loopback::Audit)).unwrap_err();
        assert!(err.errors[0].message.contains("0.0.0.0/0"), "{err}");
        assert!(err.errors[0].message.contains("r19"), "{err}");
    }

    #[test]
    fn scoped_rules_get_one_bit_per_selector_list() {
        let mut r = rule("pay", &["198.51.100.10/32"], &[], &[]);
        r.cgroups = vec!["/system.slice/payments.service".into()];
        r.systemd_units = vec![glob("payments.service")];
        let c = compile(&policy(vec![r], Loopback::Audit)).unwrap();
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(find4(&c, [198, 51, 100, 10], 32)[0].scopes, 0b11);
        assert_eq!(
            scope_bits(&c.scopes, "/system.slice/payments.service"),
            0b11
        );
        assert_eq!(
            scope_bits(&c.scopes, "/system.slice/payments.service/sub"),
            0
        );
        assert_eq!(scope_bits(&c.scopes, "/system.slice/other.service"), 0);
    }

    #[test]
    fn a_thousand_rules_compile() {
        let rules = (0..1000u32)
            .map(|i| {
                let to = format!("10.{}.{}.0/24", i / 256, i % 256);
                rule(
                    &format!("r{i}"),
                    &[to.as_str()],
                    &[(443, 443)],
                    &[Protocol::Tcp],
                )
            })
            .collect();
        let c = compile(&policy(rules, Loopback::Approve)).unwrap();
        assert_eq!(c.v4.len(), 1001);
    }

    #[test]
    fn container_selectors_get_scope_bits_matched_per_workload() {
        let mut r = rule("team-a", &["10.0.0.0/8"], &[], &[]);
        r.namespaces = vec![glob("team-a")];
        r.containers = vec![glob("web-*"), glob("registry.example/app:*")];
        let c = compile(&policy(vec![r], Loopback::Audit)).unwrap();
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(find4(&c, [10, 0, 0, 0], 8)[0].scopes, 0b11);
        let both = Workload {
            container_name: Some("web-1"),
            container_image: None,
            namespace: Some("team-a"),
            pod: Some("p"),
        };
        assert_eq!(workload_bits(&c.scopes, &both), 0b11);
        let by_image = Workload {
            container_name: Some("x"),
            container_image: Some("registry.example/app:1.2"),
            namespace: Some("team-b"),
            pod: None,
        };
        assert_eq!(
            workload_bits(&c.scopes, &by_image),
            0b01,
            "containers come first in the scope list"
        );
        assert_eq!(workload_bits(&c.scopes, &Workload::default()), 0);
        assert_eq!(
            scope_bits(&c.scopes, "/kubepods/pod1/abc"),
            0,
            "paths never carry workload bits"
        );
    }
}

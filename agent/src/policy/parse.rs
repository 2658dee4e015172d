//! Reading a policy: YAML text to [`Policy`], with every error located.
//!
//! The YAML is loaded with positions ([`saphyr::MarkedYaml`]) and then walked once; every
//! problem found becomes a [`PolicyError`] at the offending node (key or value), and walking
//! goes on, so one run reports every mistake in the file, in document order. A YAML syntax
//! error stops the YAML loader, so it is reported alone.
//!
//! The format is documented in `docs/policy.md`.

use std::{collections::HashMap, net::IpAddr, path::Path};

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    Destination, DomainPattern, Glob, Loopback, Mode, NameGate, Policy, PolicyError, PolicyErrors,
    PortRange, Position, Prefix, Protocol, Rule, DEFAULT_POLICY_YAML,
};
use crate::yaml::{describe, load, position, read_bounded, single_document, untag};

/// Policy files larger than this are refused (a policy is a few KiB; this stops a mistaken path
/// such as `/dev/zero` from eating memory).
pub const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;

/// Keys of the top-level mapping.
const TOP_KEYS: &[&str] = &["mode", "loopback", "rules", "resolvers", "name_gate"];
/// Keys of `name_gate`.
const NAME_GATE_KEYS: &[&str] = &["ports"];
/// Keys of a rule.
const RULE_KEYS: &[&str] = &[
    "name",
    "to",
    "ports",
    "protocols",
    "processes",
    "systemd_units",
    "cgroups",
    "containers",
    "namespaces",
    "pods",
];
/// The name verdicts use for the built-in loopback approval; no rule may take it.
pub const LOOPBACK_RULE_NAME: &str = "loopback";
/// Unit name suffixes systemd knows (`systemd.unit(5)`).
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// What a list key says when its value is null or an empty list.
struct ListKey {
    /// What omitting the key means, after "expected a list, found nothing (null); ".
    omitted: &'static str,
    /// The error for an empty list; `None`: an empty list is a value like any other.
    empty: Option<&'static str>,
}

/// A rule's selector list (`ports`, `protocols`, `processes`, ...).
const SELECTOR: ListKey = ListKey {
    omitted: "omit the key to mean any",
    empty: Some("empty list matches nothing; omit the key to mean any"),
};
/// `resolvers`: an empty list is allowed (no resolver is trusted; [`notes`] says so).
const RESOLVERS: ListKey = ListKey {
    omitted: "omit the key to trust the resolv.conf nameservers; `[]` trusts none",
    empty: None,
};
/// `name_gate.ports`.
const GATE_PORTS: ListKey = ListKey {
    omitted: "omit `name_gate` to leave the name gate off",
    empty: Some(
        "empty list gates no port: list ports such as [443, 80], or omit `name_gate` to leave \
         the name gate off",
    ),
};

/// Parses a policy. `file` names the source in errors and becomes [`Policy::source`].
///
/// # Errors
/// Every problem found: YAML syntax (reported alone, as the YAML loader stops there), wrong
/// shapes, unknown keys, invalid values, duplicate rule names.
pub fn parse_policy(text: &str, file: &str) -> Result<Policy, PolicyErrors> {
    let mut cx = Cx {
        file,
        errors: Vec::new(),
    };
    let policy = match load(text) {
        Ok(docs) => cx.document(&docs),
        Err((position, message)) => {
            cx.error(position, "(syntax)", message);
            None
        }
    };
    match policy {
        Some(policy) if cx.errors.is_empty() => Ok(policy),
        _ => {
            let mut errors = cx.errors;
            // Stable: errors at the same place keep the order they were found in.
            errors.sort_by_key(|e| e.position);
            Err(PolicyErrors {
                file: file.to_owned(),
                errors,
            })
        }
    }
}

/// Reads and parses the policy file at `path` (named in errors as given).
///
/// # Errors
/// A read error (one [`PolicyError`] at 0:0 with an empty path), or every problem
/// [`parse_policy`] finds.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyErrors> {
    let file = path.display().to_string();
    let text = read_policy_file(path, &file)?;
    parse_policy(&text, &file)
}

/// The policy used without `--policy`: [`DEFAULT_POLICY_YAML`], source `<default>`.
pub fn default_policy() -> Policy {
    parse_policy(DEFAULT_POLICY_YAML, "<default>").unwrap_or_else(|_| Policy {
        mode: Mode::Audit,
        loopback: Loopback::Approve,
        rules: Vec::new(),
        resolvers: None,
        name_gate: NameGate::default(),
        source: "<default>".to_owned(),
    })
}

/// What a valid policy cannot do in block mode: `processes:` selectors the kernel cannot
/// match (it knows exact paths, `DIR/*` and `DIR/**`). Empty in audit mode. Sorted by
/// position.
pub fn block_mode_errors(policy: &Policy) -> Vec<PolicyError> {
    if policy.mode != Mode::Block {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        for glob in &rule.processes {
            if let Err(message) = super::compile::exe_pattern(&glob.text) {
                errors.push(PolicyError {
                    file: policy.source.clone(),
                    // A rule built in code has no positions: point at the rule.
                    position: rule.processes_position.unwrap_or(rule.position),
                    path: format!("rules[{i}].processes"),
                    message,
                });
            }
        }
    }
    errors.sort_by_key(|e| e.position);
    errors
}

/// Things worth telling a person about a valid policy (`egret policy check` prints them):
/// how its domain entries are matched, which resolvers' answers count, what the name gate does.
pub fn notes(policy: &Policy) -> Vec<String> {
    let domains = domain_entries(policy);
    let mut notes = Vec::new();
    if domains > 0 {
        notes.push(format!(
            "{}: approve the addresses that trusted resolvers' answers give for those names, \
             while their TTL lasts (docs/dns.md)",
            plural(domains, "domain entry", "domain entries")
        ));
    }
    notes.push(match policy.resolvers.as_deref() {
        None => "DNS answers count only from trusted resolvers: the nameservers in the \
                 resolv.conf of the host and of each container (no `resolvers:` key; \
                 docs/dns.md)"
            .to_owned(),
        Some([]) => "`resolvers: []` trusts no resolver: DNS answers name no destination, and \
                     domain entries approve nothing (docs/dns.md)"
            .to_owned(),
        Some(resolvers) => format!(
            "DNS answers count only from the policy's resolvers: {} (docs/dns.md)",
            listed(resolvers)
        ),
    });
    let ports = &policy.name_gate.ports;
    if !ports.is_empty() {
        notes.push(match policy.mode {
            Mode::Audit => "`name_gate` matters only in block mode: in audit mode it changes \
                            nothing"
                .to_owned(),
            Mode::Block => name_gate_note(ports, domains),
        });
    }
    notes
}

/// What the name gate does in block mode.
fn name_gate_note(ports: &[u16], domains: usize) -> String {
    let mut note = format!(
        "name gate on {}: a TCP connect to an unapproved address goes ahead (its handshake \
         reaches the address); the name in its first payload (TLS SNI, HTTP Host) decides, and \
         an unapproved name drops that payload and the connection before any byte of it leaves \
         (docs/policy.md)",
        gate_ports(ports)
    );
    if domains == 0 {
        note.push_str(
            "; no rule names a domain, so no name can approve such a connection: approve \
             destinations by name, or leave the name gate off",
        );
    }
    note
}

/// `port 443` or `ports [443, 80]`.
fn gate_ports(ports: &[u16]) -> String {
    match ports {
        [port] => format!("port {port}"),
        _ => format!(
            "ports [{}]",
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Up to eight of `prefixes`, then how many more.
fn listed(prefixes: &[Prefix]) -> String {
    const SHOWN: usize = 8;
    let mut text = prefixes
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if prefixes.len() > SHOWN {
        text.push_str(&format!(
            " and {} more",
            prefixes.len().saturating_sub(SHOWN)
        ));
    }
    text
}

fn domain_entries(policy: &Policy) -> usize {
    policy
        .rules
        .iter()
        .flat_map(|r| &r.to)
        .filter(|to| matches!(to, Destination::Domain(_)))
        .count()
}

/// `egret policy check PATH`: loads the policy and applies [`block_mode_errors`].
///
/// # Errors
/// Every error, as [`load_policy`] and [`block_mode_errors`] report them.
pub fn check(path: &Path) -> Result<String, PolicyErrors> {
    let file = path.display().to_string();
    let text = read_policy_file(path, &file)?;
    check_text(&text, &file)
}

/// [`check`] for text already read; `file` names it.
///
/// # Errors
/// As [`check`].
pub fn check_text(text: &str, file: &str) -> Result<String, PolicyErrors> {
    let policy = parse_policy(text, file)?;
    let errors = block_mode_errors(&policy);
    if errors.is_empty() {
        Ok(summary(&policy))
    } else {
        Err(PolicyErrors {
            file: file.to_owned(),
            errors,
        })
    }
}

/// One line describing a valid policy:
/// `policy.yaml: ok: mode block, loopback approved, 4 rules (7 address prefixes)`.
pub fn summary(policy: &Policy) -> String {
    let (mut prefixes, mut domains) = (0_usize, 0_usize);
    for to in policy.rules.iter().flat_map(|r| &r.to) {
        match to {
            Destination::Prefix(_) => prefixes = prefixes.saturating_add(1),
            Destination::Domain(_) => domains = domains.saturating_add(1),
        }
    }
    let loopback = match policy.loopback {
        Loopback::Approve => "approved",
        Loopback::Audit => "audited",
    };
    let mut line = format!(
        "{}: ok: mode {}, loopback {loopback}, {}",
        policy.source,
        policy.mode.name(),
        plural(policy.rules.len(), "rule", "rules"),
    );
    if !policy.rules.is_empty() {
        line.push_str(" (");
        line.push_str(&plural(prefixes, "address prefix", "address prefixes"));
        if domains > 0 {
            line.push_str(", ");
            line.push_str(&plural(domains, "domain entry", "domain entries"));
        }
        line.push(')');
    }
    match policy.resolvers.as_deref() {
        None => {}
        Some([]) => line.push_str(", no trusted resolver"),
        Some(resolvers) => {
            line.push_str(", ");
            line.push_str(&plural(
                resolvers.len(),
                "trusted resolver",
                "trusted resolvers",
            ));
        }
    }
    if !policy.name_gate.ports.is_empty() {
        line.push_str(", name gate on ");
        line.push_str(&gate_ports(&policy.name_gate.ports));
    }
    line
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn read_policy_file(path: &Path, file: &str) -> Result<String, PolicyErrors> {
    read_bounded(path, MAX_POLICY_BYTES, "policy").map_err(|message| PolicyErrors {
        file: file.to_owned(),
        errors: vec![PolicyError {
            file: file.to_owned(),
            position: Position::default(),
            // As the config file's errors say it.
            path: "(file)".to_owned(),
            message,
        }],
    })
}

/// The walk's state: where errors go.
struct Cx<'f> {
    file: &'f str,
    errors: Vec<PolicyError>,
}

fn as_str<'a>(node: &'a MarkedYaml<'_>) -> Option<&'a str> {
    match &untag(node).data {
        YamlData::Value(Scalar::String(s)) | YamlData::Representation(s, _, _) => Some(s),
        _ => None,
    }
}

/// A string node's text; anything else is the message "expected `expected` (a string),
/// found ...".
fn string<'a>(node: &'a MarkedYaml<'_>, expected: &str) -> Result<&'a str, String> {
    as_str(node).ok_or_else(|| format!("expected {expected} (a string), found {}", describe(node)))
}

fn one_of(keys: &[&str]) -> String {
    keys.join(", ")
}

impl Cx<'_> {
    fn error(&mut self, position: Position, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            position,
            path: path.into(),
            message: message.into(),
        });
    }

    /// The entries of a mapping as (key text, key node, value node), in document order;
    /// keys that are not strings, or not in `allowed`, are errors and left out.
    fn entries<'a, 'i>(
        &mut self,
        map: &'a saphyr::AnnotatedMapping<'i, MarkedYaml<'i>>,
        path: &str,
        allowed: &[&str],
    ) -> Vec<(&'a str, &'a MarkedYaml<'i>, &'a MarkedYaml<'i>)> {
        let mut out = Vec::new();
        for (key, value) in map {
            let key_path = |k: &str| {
                if path.is_empty() {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                }
            };
            match as_str(key) {
                Some(k) if allowed.contains(&k) => out.push((k, key, value)),
                Some(k) => self.error(
                    position(key),
                    key_path(k),
                    format!("unknown key `{k}`; expected one of: {}", one_of(allowed)),
                ),
                None => self.error(
                    position(key),
                    if path.is_empty() { "(document)" } else { path },
                    format!(
                        "expected a key (one of: {}), found {}",
                        one_of(allowed),
                        describe(key)
                    ),
                ),
            }
        }
        out
    }

    fn document(&mut self, docs: &[MarkedYaml<'_>]) -> Option<Policy> {
        let root = match single_document(docs) {
            Ok(Some(root)) => root,
            Ok(None) => {
                self.error(
                    Position { line: 1, column: 1 },
                    "(document)",
                    format!(
                        "expected a mapping with keys {}, found an empty document",
                        one_of(TOP_KEYS)
                    ),
                );
                return None;
            }
            Err((position, message)) => {
                self.error(position, "(document)", message);
                return None;
            }
        };
        let YamlData::Mapping(map) = &untag(root).data else {
            self.error(
                position(root),
                "(document)",
                format!(
                    "expected a mapping with keys {}, found {}",
                    one_of(TOP_KEYS),
                    describe(root)
                ),
            );
            return None;
        };
        let mut policy = Policy {
            mode: Mode::default(),
            loopback: Loopback::default(),
            rules: Vec::new(),
            resolvers: None,
            name_gate: NameGate::default(),
            source: self.file.to_owned(),
        };
        for (key, _, value) in self.entries(map, "", TOP_KEYS) {
            match key {
                "mode" => match as_str(value) {
                    Some("audit") => policy.mode = Mode::Audit,
                    Some("block") => policy.mode = Mode::Block,
                    _ => self.error(
                        position(value),
                        "mode",
                        format!("expected `audit` or `block`, found {}", describe(value)),
                    ),
                },
                "loopback" => match as_str(value) {
                    Some("approve") => policy.loopback = Loopback::Approve,
                    Some("audit") => policy.loopback = Loopback::Audit,
                    _ => self.error(
                        position(value),
                        "loopback",
                        format!("expected `approve` or `audit`, found {}", describe(value)),
                    ),
                },
                "resolvers" => policy.resolvers = self.resolvers(value),
                "name_gate" => policy.name_gate = self.name_gate(value),
                _ => policy.rules = self.rules(value),
            }
        }
        Some(policy)
    }

    /// `resolvers:`: addresses and prefixes, as in `to:` but without names.
    fn resolvers(&mut self, node: &MarkedYaml<'_>) -> Option<Vec<Prefix>> {
        self.list_of("resolvers", node, &RESOLVERS, resolver)
    }

    /// `name_gate:`: a mapping whose one key, `ports`, is required.
    fn name_gate(&mut self, node: &MarkedYaml<'_>) -> NameGate {
        let mut gate = NameGate::default();
        let YamlData::Mapping(map) = &untag(node).data else {
            self.error(
                position(node),
                "name_gate",
                format!(
                    "expected a mapping such as {{ports: [443, 80]}}, found {}",
                    describe(node)
                ),
            );
            return gate;
        };
        let mut has_ports = false;
        for (_, _, value) in self.entries(map, "name_gate", NAME_GATE_KEYS) {
            has_ports = true;
            let mut first: HashMap<u16, Position> = HashMap::new();
            let ports = self.list_of("name_gate.ports", value, &GATE_PORTS, |item| {
                let port = single_port(item)?;
                match first.get(&port) {
                    Some(at) => Err(format!(
                        "port {port} is listed twice (first at line {}, column {})",
                        at.line, at.column
                    )),
                    None => {
                        first.insert(port, position(item));
                        Ok(port)
                    }
                }
            });
            gate.ports = ports.unwrap_or_default();
        }
        if !has_ports {
            self.error(
                position(node),
                "name_gate",
                "missing key `ports`: list the TCP ports whose first payload's name decides \
                 (`ports: [443, 80]`), or omit `name_gate` to leave the name gate off",
            );
        }
        gate
    }

    fn rules(&mut self, node: &MarkedYaml<'_>) -> Vec<Rule> {
        let YamlData::Sequence(items) = &untag(node).data else {
            self.error(
                position(node),
                "rules",
                format!(
                    "expected a list of rules (`[]` for none), found {}",
                    describe(node)
                ),
            );
            return Vec::new();
        };
        let mut names: HashMap<String, Position> = HashMap::new();
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.rule(i, item, &mut names))
            .collect()
    }

    fn rule(
        &mut self,
        index: usize,
        node: &MarkedYaml<'_>,
        names: &mut HashMap<String, Position>,
    ) -> Option<Rule> {
        let path = format!("rules[{index}]");
        let YamlData::Mapping(map) = &untag(node).data else {
            self.error(
                position(node),
                path,
                format!(
                    "expected a rule (a mapping with keys {}), found {}",
                    one_of(RULE_KEYS),
                    describe(node)
                ),
            );
            return None;
        };
        let mut rule = Rule::new(String::new(), Vec::new());
        rule.position = position(node);
        let errors_before = self.errors.len();
        let (mut has_name, mut has_to) = (false, false);
        for (key, key_node, value) in self.entries(map, &path, RULE_KEYS) {
            let key_path = format!("{path}.{key}");
            match key {
                "name" => {
                    has_name = true;
                    self.rule_name(&mut rule, &key_path, value, names);
                }
                "to" => {
                    has_to = true;
                    self.rule_to(&mut rule, &key_path, value);
                }
                "ports" => {
                    rule.ports = self.list(&key_path, value, port_range);
                }
                "protocols" => rule.protocols = self.list(&key_path, value, protocol),
                "processes" => {
                    rule.processes_position = Some(position(key_node));
                    rule.processes = self.list(&key_path, value, process_glob);
                }
                "systemd_units" => rule.systemd_units = self.list(&key_path, value, unit_glob),
                "containers" => rule.containers = self.list(&key_path, value, name_glob),
                "namespaces" => rule.namespaces = self.list(&key_path, value, name_glob),
                "pods" => rule.pods = self.list(&key_path, value, name_glob),
                _ => rule.cgroups = self.list(&key_path, value, cgroup_path),
            }
        }
        if !has_name {
            self.error(
                rule.position,
                &path,
                "missing key `name`: every rule needs a unique name (it is reported with each \
                 connection the rule approves)",
            );
        }
        if !has_to {
            self.error(
                rule.position,
                &path,
                "missing key `to`: a rule must list its destinations; for any address use \
                 [\"0.0.0.0/0\", \"::/0\"]",
            );
        }
        (self.errors.len() == errors_before).then_some(rule)
    }

    fn rule_name(
        &mut self,
        rule: &mut Rule,
        path: &str,
        value: &MarkedYaml<'_>,
        names: &mut HashMap<String, Position>,
    ) {
        let here = position(value);
        match string(value, "a rule name") {
            Ok(name) if name.trim().is_empty() => {
                self.error(
                    here,
                    path,
                    "expected a non-empty name, found an empty string",
                );
            }
            Ok(LOOPBACK_RULE_NAME) => self.error(
                here,
                path,
                format!(
                    "`{LOOPBACK_RULE_NAME}` is reserved for the built-in loopback approval; \
                     choose another name"
                ),
            ),
            Ok(name) => {
                if let Some(first) = names.get(name) {
                    self.error(
                        here,
                        path,
                        format!(
                            "duplicate rule name `{name}` (first used at line {}); rule names \
                             must be unique",
                            first.line
                        ),
                    );
                } else {
                    names.insert(name.to_owned(), here);
                }
                name.clone_into(&mut rule.name);
            }
            Err(message) => self.error(here, path, message),
        }
    }

    fn rule_to(&mut self, rule: &mut Rule, path: &str, value: &MarkedYaml<'_>) {
        let YamlData::Sequence(items) = &untag(value).data else {
            self.error(
                position(value),
                path,
                format!(
                    "expected a list of destinations (addresses, CIDR prefixes, domain names), \
                     found {}; for any address use [\"0.0.0.0/0\", \"::/0\"]",
                    describe(value)
                ),
            );
            return;
        };
        if items.is_empty() {
            self.error(
                position(value),
                path,
                "empty list: a rule must name at least one destination; for any address use \
                 [\"0.0.0.0/0\", \"::/0\"]",
            );
            return;
        }
        for (j, item) in items.iter().enumerate() {
            let here = position(item);
            match string(item, "an IP address, CIDR prefix or domain name").and_then(destination) {
                Ok(d) => {
                    rule.to.push(d);
                    rule.to_positions.push(here);
                }
                Err(message) => self.error(here, format!("{path}[{j}]"), message),
            }
        }
    }

    /// A selector list: a non-empty sequence, each entry parsed by `entry` (which gets the
    /// entry node and returns the value or a message). Invalid entries are errors and left
    /// out.
    fn list<T>(
        &mut self,
        path: &str,
        node: &MarkedYaml<'_>,
        entry: impl FnMut(&MarkedYaml<'_>) -> Result<T, String>,
    ) -> Vec<T> {
        self.list_of(path, node, &SELECTOR, entry)
            .unwrap_or_default()
    }

    /// A list key: a sequence, each entry parsed by `entry` (called in order; it gets the
    /// entry node and returns the value or a message), `None` (an error) when `node` is not a
    /// sequence. Invalid entries are errors and left out; an empty list is one when `key` says
    /// so.
    fn list_of<T>(
        &mut self,
        path: &str,
        node: &MarkedYaml<'_>,
        key: &ListKey,
        mut entry: impl FnMut(&MarkedYaml<'_>) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let YamlData::Sequence(items) = &untag(node).data else {
            let hint = if matches!(untag(node).data, YamlData::Value(Scalar::Null)) {
                format!("; {}", key.omitted)
            } else {
                " (write a single value as `[value]`)".to_owned()
            };
            self.error(
                position(node),
                path,
                format!("expected a list, found {}{hint}", describe(node)),
            );
            return None;
        };
        if let (true, Some(message)) = (items.is_empty(), key.empty) {
            self.error(position(node), path, message);
            return Some(Vec::new());
        }
        let mut out = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            match entry(item) {
                Ok(v) => out.push(v),
                Err(message) => self.error(position(item), format!("{path}[{j}]"), message),
            }
        }
        Some(out)
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    let text = text.trim();
    match text.parse::<u32>() {
        Ok(0) => Err("port 0 is not a port: expected 1-65535".to_owned()),
        Ok(n) => {
            u16::try_from(n).map_err(|_| format!("port {n} is out of range: expected 1-65535"))
        }
        Err(_) => Err(format!("`{text}` is not a port number (1-65535)")),
    }
}

fn port_range(node: &MarkedYaml<'_>) -> Result<PortRange, String> {
    match &untag(node).data {
        YamlData::Value(Scalar::Integer(n)) => match u16::try_from(*n) {
            Ok(0) => Err("port 0 is not a port: expected 1-65535".to_owned()),
            Ok(p) => Ok(PortRange { lo: p, hi: p }),
            Err(_) => Err(format!("port {n} is out of range: expected 1-65535")),
        },
        _ => match as_str(node) {
            Some(text) => match text.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port_number(lo)?, port_number(hi)?);
                    if lo <= hi {
                        Ok(PortRange { lo, hi })
                    } else {
                        Err(format!(
                            "port range {lo}-{hi} is reversed; did you mean {hi}-{lo}?"
                        ))
                    }
                }
                None => port_number(text).map(|p| PortRange { lo: p, hi: p }),
            },
            None => Err(format!(
                "expected a port (443) or a port range (\"8000-8100\"), found {}",
                describe(node)
            )),
        },
    }
}

/// One port, written as in a rule's `ports` but not as a range.
fn single_port(node: &MarkedYaml<'_>) -> Result<u16, String> {
    match port_range(node)? {
        PortRange { lo, hi } if lo == hi => Ok(lo),
        PortRange { lo, hi } => Err(format!(
            "expected a single port, found the range {lo}-{hi}: list the ports one by one"
        )),
    }
}

fn protocol(node: &MarkedYaml<'_>) -> Result<Protocol, String> {
    match as_str(node).map(str::to_ascii_lowercase).as_deref() {
        Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        _ => Err(format!("expected `tcp` or `udp`, found {}", describe(node))),
    }
}

fn compile_glob(text: &str) -> Result<Glob, String> {
    globset::GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map(|g| Glob {
            text: text.to_owned(),
            matcher: g.compile_matcher(),
        })
        .map_err(|e| format!("invalid glob `{text}`: {}", e.kind()))
}

fn process_glob(node: &MarkedYaml<'_>) -> Result<Glob, String> {
    let text = string(node, "an executable path or glob")?;
    if !text.starts_with('/') {
        return Err(format!(
            "expected an absolute executable path or glob (starting with `/`, like \
             `/usr/bin/git`), found `{text}`"
        ));
    }
    compile_glob(text)
}

fn unit_glob(node: &MarkedYaml<'_>) -> Result<Glob, String> {
    let text = string(node, "a systemd unit name or glob")?;
    if text.is_empty() {
        return Err("expected a systemd unit name, found an empty string".to_owned());
    }
    if text.contains('/') {
        return Err(format!(
            "`{text}` contains `/`: a systemd unit is a name like `payments.service` (for a \
             cgroup path use `cgroups`)"
        ));
    }
    if !text.ends_with('*') && !UNIT_SUFFIXES.iter().any(|s| text.ends_with(s)) {
        return Err(format!(
            "`{text}` does not end in a unit type ({}) or `*`; did you mean `{text}.service`?",
            UNIT_SUFFIXES.join(", ")
        ));
    }
    compile_glob(text)
}

/// A container name or image, a Kubernetes namespace or pod name: a non-empty glob.
fn name_glob(node: &MarkedYaml<'_>) -> Result<Glob, String> {
    let text = string(node, "a name or glob")?;
    if text.trim().is_empty() {
        return Err("expected a name or glob, found an empty string".to_owned());
    }
    compile_glob(text)
}

fn cgroup_path(node: &MarkedYaml<'_>) -> Result<String, String> {
    let text = string(node, "a cgroup path")?;
    if !text.starts_with('/') {
        return Err(format!(
            "expected a cgroup path below the cgroup2 mount, starting with `/` (like \
             `/system.slice/payments.service`), found `{text}`"
        ));
    }
    if let Some(rest) = text.strip_prefix("/sys/fs/cgroup/") {
        return Err(format!(
            "cgroup paths are relative to the cgroup2 mount: write `/{rest}`, not `{text}`"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    for component in trimmed.split('/').skip(1) {
        match component {
            "" => return Err(format!("`{text}` has an empty component (`//`)")),
            "." | ".." => {
                return Err(format!(
                    "`{text}` has a `{component}` component: write the cgroup's plain path"
                ))
            }
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// One entry of `to:`.
pub fn destination(text: &str) -> Result<Destination, String> {
    let text = text.trim();
    if text.contains("://") {
        return Err(format!(
            "`{text}` is a URL: write only the host name or address (and put the port in \
             `ports`)"
        ));
    }
    if let Some(prefix) = address_or_prefix(text) {
        return prefix.map(Destination::Prefix);
    }
    domain(text)
        .map(Destination::Domain)
        .map_err(|why| format!("`{text}` is not an IP address, CIDR prefix or domain name: {why}"))
}

/// One entry of `resolvers:`: an address or a prefix, never a name.
fn resolver(node: &MarkedYaml<'_>) -> Result<Prefix, String> {
    let text = string(node, "a resolver's IP address or CIDR prefix")?.trim();
    address_or_prefix(text).unwrap_or_else(|| {
        Err(format!(
            "`{text}` is not an IP address or CIDR prefix: resolvers are trusted by address \
             (a name would need a trusted resolver to resolve it)"
        ))
    })
}

/// `text` (trimmed) as an address (a `/32` or `/128` prefix) or a CIDR prefix, IPv4-mapped
/// ones read as IPv4; `None` when it has neither shape (so it may be a name).
fn address_or_prefix(text: &str) -> Option<Result<Prefix, String>> {
    if let Some((addr, len)) = text.split_once('/') {
        return Some(cidr(text, addr, len));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Ok(Prefix::host(ip)));
    }
    let (addr, zone) = text.split_once('%')?;
    addr.parse::<IpAddr>().is_ok().then(|| {
        Err(format!(
            "`{text}`: an address with a zone (`%{zone}`) cannot be matched; write `{addr}`"
        ))
    })
}

fn cidr(text: &str, addr: &str, len: &str) -> Result<Prefix, String> {
    let ip: IpAddr = addr.parse().map_err(|_| {
        format!(
            "`{text}`: `{addr}` is not an IP address (expected a CIDR prefix like `10.0.0.0/8`)"
        )
    })?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("`{text}`: prefix length `{len}` is not 0-{max}"))?;
    let prefix = Prefix { addr: ip, len };
    let network = prefix.network();
    if network != ip {
        return Err(format!(
            "{text} has host bits set; did you mean {network}/{len}?"
        ));
    }
    Ok(normalise(prefix))
}

/// An IPv6 prefix inside `::ffff:0:0/96` (IPv4-mapped) becomes the IPv4 prefix it maps.
fn normalise(prefix: Prefix) -> Prefix {
    match prefix.addr {
        IpAddr::V6(a) if prefix.len >= 96 => match a.to_ipv4_mapped() {
            Some(v4) => Prefix {
                addr: IpAddr::V4(v4),
                len: prefix.len.saturating_sub(96),
            },
            None => prefix,
        },
        _ => prefix,
    }
}

/// A domain name or `*.` wildcard, normalised (lower case, no trailing dot).
fn domain(text: &str) -> Result<DomainPattern, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(base) => (true, base),
        None => (false, name),
    };
    if name.len() > 253 {
        return Err(format!("longer than 253 characters ({})", name.len()));
    }
    if base.contains('*') {
        return Err("`*` is allowed only as the whole first label (`*.example.com`)".to_owned());
    }
    let labels: Vec<&str> = base.split('.').collect();
    if labels.len().saturating_add(usize::from(wildcard)) < 2 {
        return Err(
            "a domain name needs at least two labels (`example.com`); for a single-label \
             name use its addresses"
                .to_owned(),
        );
    }
    for label in &labels {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a leading `.`)".to_owned());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "character `{c}` is not allowed (letters, digits and `-` only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the last label is all digits (is it a mistyped address?)".to_owned());
    }
    Ok(DomainPattern {
        name: base.to_owned(),
        wildcard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        match parse_policy(text, "p.yaml") {
            Ok(p) => panic!("expected errors, parsed {p:?}"),
            Err(e) => {
                assert_eq!(e.file, "p.yaml");
                e.errors
            }
        }
    }

    /// The one error of `text`, as (line, column, path, message).
    fn one_error(text: &str) -> (usize, usize, String, String) {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = &errs[0];
        (
            e.position.line,
            e.position.column,
            e.path.clone(),
            e.message.clone(),
        )
    }

    /// The one error `text` has is at `(line, column, path)`: its message.
    fn error_at(text: &str, at: (usize, usize, &str)) -> String {
        let (line, column, path, msg) = one_error(text);
        assert_eq!((line, column, path.as_str()), at, "{text}: {msg}");
        msg
    }

    fn ok(text: &str) -> Policy {
        ok_as(text, "p.yaml")
    }

    fn ok_as(text: &str, file: &str) -> Policy {
        match parse_policy(text, file) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn prefix(text: &str) -> Destination {
        let (a, l) = text.split_once('/').unwrap();
        Destination::Prefix(Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        })
    }

    #[test]
    fn full_example_parses() {
        let p = ok(r#"
mode: block
loopback: audit
rules:
  - name: package-mirror
    to: ["10.20.0.0/16", "2001:db8::/32", "192.0.2.7"]
    ports: [443, "8000-8100"]
    protocols: [tcp]
  - name: dns
    to: ["10.96.0.10"]
    ports: [53]
    protocols: [UDP, tcp]
  - name: units
    to: ["::ffff:198.51.100.0/120", "::ffff:198.51.100.9", "api.Stripe.com.", "*.stripe.com"]
    systemd_units: ["payments.service", "backup-*"]
    cgroups: ["/system.slice/payments.service/", "/"]
"#);
        assert_eq!(p.mode, Mode::Block);
        assert_eq!(p.loopback, Loopback::Audit);
        assert_eq!(p.source, "p.yaml");
        assert_eq!(p.rules.len(), 3);
        let r = &p.rules[0];
        assert_eq!(r.name, "package-mirror");
        assert_eq!(r.position, Position { line: 5, column: 5 });
        assert_eq!(
            r.to,
            vec![
                prefix("10.20.0.0/16"),
                prefix("2001:db8::/32"),
                prefix("192.0.2.7/32")
            ]
        );
        assert_eq!(
            r.to_positions,
            vec![
                Position {
                    line: 6,
                    column: 10
                },
                Position {
                    line: 6,
                    column: 26
                },
                Position {
                    line: 6,
                    column: 43
                },
            ]
        );
        assert_eq!(
            r.ports,
            vec![
                PortRange { lo: 443, hi: 443 },
                PortRange { lo: 8000, hi: 8100 }
            ]
        );
        assert_eq!(r.protocols, vec![Protocol::Tcp]);
        assert_eq!(p.rules[1].protocols, vec![Protocol::Udp, Protocol::Tcp]);
        let r = &p.rules[2];
        assert_eq!(
            r.to,
            vec![
                prefix("198.51.100.0/24"),
                prefix("198.51.100.9/32"),
                Destination::Domain(DomainPattern {
                    name: "api.stripe.com".into(),
                    wildcard: false
                }),
                Destination::Domain(DomainPattern {
                    name: "stripe.com".into(),
                    wildcard: true
                }),
            ]
        );
        assert_eq!(r.cgroups, vec!["/system.slice/payments.service", "/"]);
        assert_eq!(r.systemd_units.len(), 2);
        assert!(r.processes_position.is_none());
    }

    #[test]
    fn default_policy_is_audit_with_loopback_and_no_rules() {
        let p = default_policy();
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(p.loopback, Loopback::Approve);
        assert!(p.rules.is_empty());
        assert_eq!(p.source, "<default>");
        // It really parses (not the fallback).
        assert!(parse_policy(DEFAULT_POLICY_YAML, "<default>").is_ok());
    }

    #[test]
    fn unknown_key_is_located() {
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    port: [443]\n",
            (4, 5, "rules[0].port"),
        );
        assert_eq!(
            msg,
            "unknown key `port`; expected one of: name, to, ports, protocols, processes, \
             systemd_units, cgroups, containers, namespaces, pods"
        );
        let msg = error_at("mode: audit\nrule: []\n", (2, 1, "rule"));
        assert!(
            msg.contains("expected one of: mode, loopback, rules"),
            "{msg}"
        );
    }

    #[test]
    fn host_bits_are_located() {
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"192.0.2.0/24\", \"10.0.0.1/8\"]\n",
            (3, 26, "rules[0].to[1]"),
        );
        assert_eq!(
            msg,
            "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        let (_, _, _, msg) = one_error("rules:\n  - name: a\n    to: [\"2001:db8::1/32\"]\n");
        assert_eq!(
            msg,
            "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?"
        );
    }

    #[test]
    fn port_zero_and_reversed_range_are_located() {
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    ports: [443, 0]\n",
            (4, 18, "rules[0].ports[1]"),
        );
        assert!(msg.contains("port 0"), "{msg}");
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    ports:\n      - \"8100-8000\"\n",
            (5, 9, "rules[0].ports[0]"),
        );
        assert_eq!(
            msg,
            "port range 8100-8000 is reversed; did you mean 8000-8100?"
        );
    }

    #[test]
    fn port_forms() {
        let p = ok("rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    ports: [1, 65535, \"22\", 8000-8100, \" 9 - 10 \"]\n");
        assert_eq!(
            p.rules[0].ports,
            vec![
                PortRange { lo: 1, hi: 1 },
                PortRange {
                    lo: 65535,
                    hi: 65535
                },
                PortRange { lo: 22, hi: 22 },
                PortRange { lo: 8000, hi: 8100 },
                PortRange { lo: 9, hi: 10 },
            ]
        );
        for bad in [
            "65536", "-1", "\"0-5\"", "\"http\"", "1.5", "true", "\"1-\"", "[1]",
        ] {
            let text =
                format!("rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    ports: [{bad}]\n");
            error_at(&text, (4, 13, "rules[0].ports[0]"));
        }
    }

    #[test]
    fn bad_protocol_is_located() {
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n    protocols: [tcp, icmp]\n",
            (4, 22, "rules[0].protocols[1]"),
        );
        assert_eq!(msg, "expected `tcp` or `udp`, found `icmp`");
    }

    #[test]
    fn duplicate_name_is_reported_at_the_second() {
        let msg = error_at(
            "rules:\n  - name: web\n    to: [\"10.0.0.0/8\"]\n  - name: web\n    to: [\"10.0.0.0/8\"]\n",
            (4, 11, "rules[1].name"),
        );
        assert!(
            msg.contains("duplicate rule name `web` (first used at line 2)"),
            "{msg}"
        );
    }

    #[test]
    fn missing_to_and_name_are_located_at_the_rule() {
        let msg = error_at(
            "rules:\n  - name: a\n    ports: [443]\n",
            (2, 5, "rules[0]"),
        );
        assert!(msg.contains("missing key `to`"), "{msg}");
        assert!(msg.contains("0.0.0.0/0") && msg.contains("::/0"), "{msg}");
        let msg = error_at("rules:\n  - name: a\n    to: []\n", (3, 9, "rules[0].to"));
        assert!(msg.contains("0.0.0.0/0"), "{msg}");
        let msg = error_at("rules:\n  - to: [\"10.0.0.0/8\"]\n", (2, 5, "rules[0]"));
        assert!(msg.contains("missing key `name`"), "{msg}");
    }

    #[test]
    fn bad_domains_are_located() {
        for bad in [
            "*foo.com",
            "a.*.com",
            "http://x.example",
            "localhost",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a..com",
            "*.",
            "10.0.0.300",
            "",
        ] {
            let text = format!("rules:\n  - name: a\n    to:\n      - \"{bad}\"\n");
            error_at(&text, (4, 9, "rules[0].to[0]"));
        }
        let long_label = "a".repeat(64);
        let text = format!("rules:\n  - name: a\n    to: [{long_label}.com]\n");
        let (_, _, _, msg) = one_error(&text);
        assert!(msg.contains("longer than 63"), "{msg}");
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        let (_, _, _, msg) = one_error(&format!("rules:\n  - name: a\n    to: [{long_name}]\n"));
        assert!(msg.contains("longer than 253"), "{msg}");
    }

    #[test]
    fn addresses_and_prefixes() {
        let cases = [
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::/0", "::/0"),
            ("::1", "::1/128"),
            ("::ffff:10.1.2.3", "10.1.2.3/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("2001:db8::/32", "2001:db8::/32"),
        ];
        for (input, want) in cases {
            assert_eq!(destination(input).unwrap(), prefix(want), "{input}");
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "10.0.0/8",
            "fe80::1%eth0",
        ] {
            assert!(destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let p = ok(r#"
rules:
  - name: a
    to: ["10.0.0.0/8"]
    processes: ["/usr/bin/git", "/usr/lib/git-core/*", "/opt/**/bin/*"]
    systemd_units: ["payments.service", "backup-*", "sshd@?.service"]
    cgroups: ["/a/b", "/"]
"#);
        let r = &p.rules[0];
        assert_eq!(r.processes_position, Some(Position { line: 5, column: 5 }));
        let procs: Vec<&str> = r.processes.iter().map(|g| g.text.as_str()).collect();
        assert_eq!(
            procs,
            ["/usr/bin/git", "/usr/lib/git-core/*", "/opt/**/bin/*"]
        );
        assert!(r.processes[1]
            .matcher
            .is_match("/usr/lib/git-core/git-remote-https"));
        assert!(!r.processes[1].matcher.is_match("/usr/lib/git-core/x/y"));
        assert!(r.processes[2].matcher.is_match("/opt/a/b/bin/tool"));
        let errs = errors(
            r#"
rules:
  - name: a
    to: ["10.0.0.0/8"]
    processes: ["git", "/usr/bin/[", 3]
    systemd_units: ["payments", "a/b.service", ""]
    cgroups: ["system.slice", "/a/../b", "/a//b", "/sys/fs/cgroup/x", "/./a"]
    ports: []
    protocols: tcp
"#,
        );
        let got: Vec<(usize, usize, &str)> = errs
            .iter()
            .map(|e| (e.position.line, e.position.column, e.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, 17, "rules[0].processes[0]"),
                (5, 24, "rules[0].processes[1]"),
                (5, 38, "rules[0].processes[2]"),
                (6, 21, "rules[0].systemd_units[0]"),
                (6, 33, "rules[0].systemd_units[1]"),
                (6, 48, "rules[0].systemd_units[2]"),
                (7, 15, "rules[0].cgroups[0]"),
                (7, 31, "rules[0].cgroups[1]"),
                (7, 42, "rules[0].cgroups[2]"),
                (7, 51, "rules[0].cgroups[3]"),
                (7, 71, "rules[0].cgroups[4]"),
                (8, 12, "rules[0].ports"),
                (9, 16, "rules[0].protocols"),
            ],
            "{errs:#?}"
        );
        assert!(errs[11].message.contains("omit the key to mean any"));
    }

    #[test]
    fn nesting_too_deep_is_a_located_error() {
        // 100,000 nested lists overflowed the stack (found with the policy_parse fuzz target).
        let text = format!("mode: audit\nrules:\n{}", "- ".repeat(100_000));
        let (line, _, path, msg) = one_error(&text);
        assert_eq!((line, path.as_str()), (3, "(syntax)"));
        assert!(msg.contains("nested deeper than 64 levels"), "{msg}");
    }

    #[test]
    fn yaml_syntax_error_is_located() {
        let errs = errors("mode: audit\nrules:\n  - name: a\n    to: [\"10.0.0.0/8\"\n");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "(syntax)");
        assert!(
            errs[0].message.starts_with("invalid YAML: "),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[0].position, Position { line: 5, column: 1 });
        let msg = error_at("mode: audit\n  rules: []\n", (2, 8, "(syntax)"));
        assert!(msg.contains("mapping values are not allowed"), "{msg}");
        let (l, c, _, msg) = one_error("mode: audit\nmode: block\n");
        assert_eq!((l, c), (2, 1));
        assert!(msg.contains("duplicated key"), "{msg}");
        let (l, c, _, _) = one_error("rules:\n  - name: a\n   bad: [\n");
        assert!(l >= 3 && c >= 1);
    }

    #[test]
    fn document_shape() {
        error_at("", (1, 1, "(document)"));
        let (l, c, _, msg) = one_error("- a\n- b\n");
        assert_eq!((l, c), (1, 1));
        assert!(msg.contains("found a list"), "{msg}");
        let (l, _, _, msg) = one_error("mode: audit\n---\nmode: block\n");
        assert_eq!(l, 3);
        assert!(msg.contains("one YAML document"), "{msg}");
        let (_, _, path, msg) = one_error("mode: Audit\n");
        assert_eq!(path, "mode");
        assert_eq!(msg, "expected `audit` or `block`, found `Audit`");
        let (_, _, path, _) = one_error("loopback: yes\n");
        assert_eq!(path, "loopback");
        let (_, _, path, _) = one_error("rules: {}\n");
        assert_eq!(path, "rules");
        error_at("rules:\n  - \"web\"\n", (2, 5, "rules[0]"));
        // No `rules` at all: nothing but loopback is approved.
        assert!(ok("mode: block\n").rules.is_empty());
        assert_eq!(ok("rules: []\n").mode, Mode::Audit);
    }

    #[test]
    fn reserved_and_empty_names() {
        let (_, _, path, msg) = one_error("rules:\n  - name: loopback\n    to: [\"::1\"]\n");
        assert_eq!(path, "rules[0].name");
        assert!(msg.contains("reserved"), "{msg}");
        let (_, _, _, msg) = one_error("rules:\n  - name: \"\"\n    to: [\"::1\"]\n");
        assert!(msg.contains("non-empty"), "{msg}");
        let (_, _, _, msg) = one_error("rules:\n  - name: 42\n    to: [\"::1\"]\n");
        assert!(msg.contains("integer `42`"), "{msg}");
    }

    #[test]
    fn every_error_is_reported_in_document_order() {
        let text = r#"mode: enforce
loopback: approve
rules:
  - name: a
    to: ["10.0.0.1/8", "ok.example.com"]
    ports: [0, "90-80"]
    protocol: [tcp]
  - name: a
    to: ["bad..name"]
    protocols: [sctp]
  - ports: [22]
"#;
        let errs = errors(text);
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let want_prefixes = [
            "p.yaml:1:7: mode: ",
            "p.yaml:5:10: rules[0].to[0]: ",
            "p.yaml:6:13: rules[0].ports[0]: ",
            "p.yaml:6:16: rules[0].ports[1]: ",
            "p.yaml:7:5: rules[0].protocol: unknown key `protocol`",
            "p.yaml:8:11: rules[1].name: duplicate rule name `a`",
            "p.yaml:9:10: rules[1].to[0]: ",
            "p.yaml:10:17: rules[1].protocols[0]: ",
            "p.yaml:11:5: rules[2]: missing key `name`",
            "p.yaml:11:5: rules[2]: missing key `to`",
        ];
        assert_eq!(got.len(), want_prefixes.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want_prefixes) {
            assert!(g.starts_with(w), "{g} does not start with {w}");
        }
    }

    #[test]
    fn block_mode_rejects_process_globs_it_cannot_match_but_not_domains() {
        let text = r#"mode: block
rules:
  - name: git
    to: ["203.0.113.0/24"]
    processes: ["/usr/bin/gi?"]
  - name: pay
    to: ["198.51.100.10", "api.stripe.com", "*.stripe.com"]
    cgroups: ["/system.slice/payments.service"]
"#;
        let p = ok(text);
        let errs = block_mode_errors(&p);
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("p.yaml:5:5: rules[0].processes: `/usr/bin/gi?`: in block mode"),
            "{got:?}"
        );
        // An exact path is enforced.
        let exact = ok(&text.replace("gi?", "git"));
        assert!(block_mode_errors(&exact).is_empty());
        assert!(check_text(text, "p.yaml").is_err());
        // Without the process rule, block mode is fine, with a note about the domains.
        let without_git = text.replace("    processes: [\"/usr/bin/gi?\"]\n", "");
        let p = ok(&without_git);
        assert!(block_mode_errors(&p).is_empty());
        assert_eq!(
            notes(&p),
            vec![
                "2 domain entries: approve the addresses that trusted resolvers' answers give \
                 for those names, while their TTL lasts (docs/dns.md)",
                "DNS answers count only from trusted resolvers: the nameservers in the \
                 resolv.conf of the host and of each container (no `resolvers:` key; \
                 docs/dns.md)"
            ]
        );
        assert_eq!(
            check_text(&without_git, "policy.yaml").unwrap(),
            "policy.yaml: ok: mode block, loopback approved, 2 rules (2 address prefixes, 2 \
             domain entries)"
        );
    }

    #[test]
    fn resolvers_and_name_gate_parse() {
        let p = ok(r#"
mode: block
resolvers: ["10.0.0.2", "fd00::53", "10.96.0.0/12", "::ffff:192.0.2.53", " 10.0.0.3 "]
name_gate: {ports: [443, "80"]}
"#);
        let prefixes: Vec<String> = p
            .resolvers
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            prefixes,
            [
                "10.0.0.2/32",
                "fd00::53/128",
                "10.96.0.0/12",
                "192.0.2.53/32",
                "10.0.0.3/32"
            ]
        );
        assert_eq!(p.name_gate.ports, [443, 80]);
        assert!(p.name_gate.covers(80) && !p.name_gate.covers(8080));
        let block = ok("name_gate:\n  ports:\n    - 8443\n");
        assert_eq!(block.name_gate.ports, [8443]);
        // Without the keys: resolv.conf nameservers, no name gate.
        let p = ok("mode: block\n");
        assert_eq!(p.resolvers, None);
        assert_eq!(p.name_gate, NameGate::default());
        assert_eq!(default_policy().resolvers, None);
        // An empty list is a choice: trust no resolver.
        assert_eq!(ok("resolvers: []\n").resolvers, Some(Vec::new()));
    }

    #[test]
    fn bad_resolvers_are_located() {
        let errs = errors(
            r#"resolvers: ["10.0.0.1/8", "10.0.0.0/33", "::/129", "dns.google", 53, "fe80::1%eth0", "10.0.0/8", "https://dns.google"]
"#,
        );
        let got: Vec<(usize, &str, &str)> = errs
            .iter()
            .map(|e| (e.position.column, e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    13,
                    "resolvers[0]",
                    "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
                ),
                (
                    27,
                    "resolvers[1]",
                    "`10.0.0.0/33`: prefix length `33` is not 0-32"
                ),
                (
                    42,
                    "resolvers[2]",
                    "`::/129`: prefix length `129` is not 0-128"
                ),
                (
                    52,
                    "resolvers[3]",
                    "`dns.google` is not an IP address or CIDR prefix: resolvers are trusted by \
                     address (a name would need a trusted resolver to resolve it)"
                ),
                (
                    66,
                    "resolvers[4]",
                    "expected a resolver's IP address or CIDR prefix (a string), found integer \
                     `53`"
                ),
                (
                    70,
                    "resolvers[5]",
                    "`fe80::1%eth0`: an address with a zone (`%eth0`) cannot be matched; write \
                     `fe80::1`"
                ),
                (
                    86,
                    "resolvers[6]",
                    "`10.0.0/8`: `10.0.0` is not an IP address (expected a CIDR prefix like \
                     `10.0.0.0/8`)"
                ),
                (
                    98,
                    "resolvers[7]",
                    "`https://dns.google`: `https:` is not an IP address (expected a CIDR \
                     prefix like `10.0.0.0/8`)"
                ),
            ],
            "{errs:#?}"
        );
        let msg = error_at("resolvers: \"10.0.0.2\"\n", (1, 12, "resolvers"));
        assert_eq!(
            msg,
            "expected a list, found `10.0.0.2` (write a single value as `[value]`)"
        );
        let msg = error_at("resolvers:\nmode: audit\n", (1, 10, "resolvers"));
        assert_eq!(
            msg,
            "expected a list, found nothing (null); omit the key to trust the resolv.conf \
             nameservers; `[]` trusts none"
        );
        // The zone message serves `to:` too.
        let msg = error_at(
            "rules:\n  - name: a\n    to: [\"fe80::1%eth0\"]\n",
            (3, 10, "rules[0].to[0]"),
        );
        assert!(msg.contains("write `fe80::1`"), "{msg}");
    }

    #[test]
    fn bad_name_gates_are_located() {
        let msg = error_at("name_gate: [443]\n", (1, 12, "name_gate"));
        assert_eq!(
            msg,
            "expected a mapping such as {ports: [443, 80]}, found a list"
        );
        let msg = error_at("name_gate: {}\n", (1, 12, "name_gate"));
        assert!(msg.starts_with("missing key `ports`"), "{msg}");
        let msg = error_at("name_gate: {ports: []}\n", (1, 20, "name_gate.ports"));
        assert!(msg.starts_with("empty list gates no port"), "{msg}");
        let msg = error_at("name_gate:\n  ports:\n", (2, 8, "name_gate.ports"));
        assert!(
            msg.ends_with("; omit `name_gate` to leave the name gate off"),
            "{msg}"
        );
        let errs = errors(
            "name_gate:\n  ports: [443, 0, \"8000-8100\", 443, 65536, http, 80, 80]\n  port: 1\n",
        );
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "p.yaml:2:16: name_gate.ports[1]: port 0 is not a port: expected 1-65535",
                "p.yaml:2:19: name_gate.ports[2]: expected a single port, found the range \
                 8000-8100: list the ports one by one",
                "p.yaml:2:32: name_gate.ports[3]: port 443 is listed twice (first at line 2, \
                 column 11)",
                "p.yaml:2:37: name_gate.ports[4]: port 65536 is out of range: expected 1-65535",
                "p.yaml:2:44: name_gate.ports[5]: `http` is not a port number (1-65535)",
                "p.yaml:2:54: name_gate.ports[7]: port 80 is listed twice (first at line 2, \
                 column 50)",
                "p.yaml:3:3: name_gate.port: unknown key `port`; expected one of: ports",
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn resolvers_and_name_gate_in_notes_and_summary() {
        let resolvers_note = |p: &Policy| {
            notes(p)
                .into_iter()
                .find(|n| n.contains("resolver"))
                .unwrap_or_default()
        };
        let p = ok("resolvers: [\"10.0.0.2\", \"fd00::53\", \"10.96.0.0/12\"]\n");
        assert_eq!(
            resolvers_note(&p),
            "DNS answers count only from the policy's resolvers: 10.0.0.2/32, fd00::53/128, \
             10.96.0.0/12 (docs/dns.md)"
        );
        assert_eq!(
            summary(&p),
            "p.yaml: ok: mode audit, loopback approved, 0 rules, 3 trusted resolvers"
        );
        let many: Vec<String> = (1..=10).map(|i| format!("\"10.0.0.{i}\"")).collect();
        let p = ok(&format!("resolvers: [{}]\n", many.join(", ")));
        assert!(
            resolvers_note(&p).ends_with("10.0.0.8/32 and 2 more (docs/dns.md)"),
            "{}",
            resolvers_note(&p)
        );
        let p = ok("resolvers: []\n");
        assert!(resolvers_note(&p).starts_with("`resolvers: []` trusts no resolver"));
        assert_eq!(
            summary(&p),
            "p.yaml: ok: mode audit, loopback approved, 0 rules, no trusted resolver"
        );
        // The name gate: only block mode uses it.
        let audit = ok("resolvers: [\"10.0.0.2\"]\nname_gate: {ports: [443]}\n");
        assert_eq!(
            summary(&audit),
            "p.yaml: ok: mode audit, loopback approved, 0 rules, 1 trusted resolver, name gate \
             on port 443"
        );
        assert_eq!(
            notes(&audit).last().map(String::as_str),
            Some("`name_gate` matters only in block mode: in audit mode it changes nothing")
        );
        let text = "mode: block\nname_gate: {ports: [443, 80]}\nrules:\n  - name: a\n    to: \
                    [api.example.com]\n";
        let block = ok(text);
        assert_eq!(
            check_text(text, "p.yaml").unwrap(),
            "p.yaml: ok: mode block, loopback approved, 1 rule (0 address prefixes, 1 domain \
             entry), name gate on ports [443, 80]"
        );
        let gate_note = notes(&block).pop().unwrap();
        assert!(
            gate_note.starts_with("name gate on ports [443, 80]: a TCP connect")
                && gate_note.ends_with("(docs/policy.md)"),
            "{gate_note}"
        );
        let no_domains = ok("mode: block\nname_gate: {ports: [443]}\n");
        let gate_note = notes(&no_domains).pop().unwrap();
        assert!(
            gate_note.ends_with(
                "no rule names a domain, so no name can approve such a \
                                 connection: approve destinations by name, or leave the name \
                                 gate off"
            ),
            "{gate_note}"
        );
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary(&default_policy()),
            "<default>: ok: mode audit, loopback approved, 0 rules"
        );
        let p = ok("mode: block\nloopback: audit\nrules:\n  - name: a\n    to: [\"::/0\"]\n");
        assert_eq!(
            summary(&p),
            "p.yaml: ok: mode block, loopback audited, 1 rule (1 address prefix)"
        );
    }

    #[test]
    fn load_and_check_files() {
        let dir = std::env::temp_dir().join(format!("egret-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "mode: block\nrules:\n  - name: a\n    to: [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let p = load_policy(&good).unwrap();
        assert_eq!(p.source, good.display().to_string());
        let line = check(&good).unwrap();
        assert_eq!(
            line,
            format!(
                "{}: ok: mode block, loopback approved, 1 rule (1 address prefix)",
                good.display()
            )
        );
        let missing = dir.join("missing.yaml");
        let e = load_policy(&missing).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].position, Position::default());
        assert_eq!(e.errors[0].path, "(file)");
        assert!(
            e.errors[0].message.contains("cannot open"),
            "{}",
            e.errors[0].message
        );
        assert!(check(&missing).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every ```yaml block in docs/policy.md passes `policy check` (for a `kind: ConfigMap`
    /// block: every policy it carries), unless its first line starts with `# invalid`. A yaml
    /// block followed by a ```text block whose first line is `$ egret policy check FILE`: the
    /// rest of that block is exactly what the check prints (the summary line and its notes, or
    /// every error).
    #[test]
    fn docs_examples_are_honest() {
        let doc = include_str!("../../../docs/policy.md");
        let mut blocks: Vec<(String, String)> = Vec::new();
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            if let Some(lang) = line.strip_prefix("```") {
                let mut body = String::new();
                for l in lines.by_ref() {
                    if l.starts_with("```") {
                        break;
                    }
                    body.push_str(l);
                    body.push('\n');
                }
                blocks.push((lang.trim().to_owned(), body));
            }
        }
        let (mut valid, mut invalid, mut outputs) = (0, 0, 0);
        for (i, (lang, body)) in blocks.iter().enumerate() {
            if lang != "yaml" {
                continue;
            }
            if body.contains("kind: ConfigMap") {
                let docs = load(body).unwrap();
                let data = &docs[0].data["data"];
                let YamlData::Mapping(files) = &data.data else {
                    panic!("data: {data:?}")
                };
                for (name, text) in files {
                    let name = as_str(name).unwrap();
                    let text = as_str(text).unwrap();
                    if let Err(e) = check_text(text, name) {
                        panic!("ConfigMap policy {name} in docs/policy.md:\n{e}\n{text}");
                    }
                    valid += 1;
                }
                continue;
            }
            let output = blocks
                .get(i + 1)
                .filter(|(lang, next)| lang == "text" && next.starts_with("$ egret policy check "));
            let file = output
                .and_then(|(_, next)| next.lines().next())
                .and_then(|cmd| cmd.rsplit(' ').next())
                .unwrap_or("example.yaml");
            let result = check_text(body, file);
            if body.starts_with("# invalid") {
                assert!(result.is_err(), "marked invalid but valid:\n{body}");
                invalid += 1;
            } else if let Err(e) = &result {
                panic!("docs/policy.md example fails `policy check`:\n{e}\n{body}");
            } else {
                valid += 1;
            }
            if let Some((_, next)) = output {
                let want: Vec<&str> = next.lines().skip(1).collect();
                let got: Vec<String> = match result {
                    // As `egret policy check` prints them: the summary, then the notes.
                    Ok(line) => std::iter::once(line)
                        .chain(
                            notes(&ok_as(body, file))
                                .into_iter()
                                .map(|note| format!("note: {note}")),
                        )
                        .collect(),
                    // As `egret policy check` prints them: every error, then the count.
                    Err(e) => e
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .chain([format!("{}: {} error(s)", e.file, e.errors.len())])
                        .collect(),
                };
                assert_eq!(got, want, "output shown in docs/policy.md for:\n{body}");
                outputs += 1;
            }
        }
        assert!(
            valid >= 5 && invalid >= 1 && outputs >= 2,
            "{valid} {invalid} {outputs}"
        );
    }
}

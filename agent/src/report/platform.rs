//! `egret report --suggest-policy --policy-format networkpolicy|cilium|systemd`: the observed
//! connections as the platform's own egress policy, per Kubernetes workload (from
//! `orchestrator.resource.parent.*`, else the pod) or per systemd unit.
//!
//! - `networkpolicy`: a Kubernetes `NetworkPolicy` (networking.k8s.io/v1) per workload,
//!   `policyTypes: [Egress]`, its pods selected by the workload's labels (`container.labels`
//!   less the per-revision ones), one egress rule per (protocol, port) with the addresses as
//!   `ipBlock` `/32` or `/128` (NetworkPolicy has no names), and a rule to the cluster DNS
//!   (kube-system's `k8s-app: kube-dns`, UDP and TCP 53).
//! - `cilium`: a `CiliumNetworkPolicy` (cilium.io/v2) per workload: named destinations as
//!   `toFQDNs` `matchName` with their `toPorts`, address-only ones as `toCIDR`, and the DNS
//!   rule through Cilium's DNS proxy (`toEndpoints` kube-dns with `rules.dns`
//!   `matchPattern: "*"`) without which `toFQDNs` never learns an address.
//! - `systemd`: per unit, a drop-in `<unit>.d/50-egret-egress.conf` with `IPAddressAllow=`
//!   (the addresses, and `localhost`) and `IPAddressDeny=any`. systemd's IP filter has no
//!   ports or names.
//!
//! The output is one text (multi-document YAML; for systemd the drop-ins one after another,
//! each under a `# --- <path> ---` line) or, with `--output-dir`, one file per policy.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
};

use super::input::{Observation, Verdict};

/// The policy's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PolicyFormat {
    /// egret's own policy (docs/policy.md).
    #[default]
    Egret,
    /// Kubernetes NetworkPolicy per workload (addresses only).
    Networkpolicy,
    /// CiliumNetworkPolicy per workload (names through toFQDNs).
    Cilium,
    /// A systemd IPAddressAllow=/IPAddressDeny= drop-in per unit (addresses only).
    Systemd,
}

/// Labels that change with every rollout (or name a single pod): never in a selector.
const UNSTABLE_LABELS: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// A workload: namespace, kind, name.
type WorkloadKey = (String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
    Any,
}

impl Proto {
    fn k8s(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Any => "ANY",
        }
    }
}

/// What one workload or unit reached.
#[derive(Debug, Default)]
struct Reached {
    /// (protocol, port) -> addresses.
    addresses: BTreeMap<(Proto, u16), BTreeSet<IpAddr>>,
    /// (protocol, port) -> names (Cilium).
    names: BTreeMap<(Proto, u16), BTreeSet<String>>,
    /// (protocol, port) -> addresses of connections without a usable name (Cilium).
    unnamed: BTreeMap<(Proto, u16), BTreeSet<IpAddr>>,
    /// The labels of its pods that every line agreed on.
    labels: Option<BTreeMap<String, String>>,
    connections: u64,
}

/// Accumulates connection lines for the platform formats.
#[derive(Debug, Default)]
pub struct PlatformSuggester {
    include_blocked: bool,
    workloads: BTreeMap<WorkloadKey, Reached>,
    units: BTreeMap<String, Reached>,
    /// Connections neither of a pod nor of a unit (not in any output).
    unscoped: u64,
    blocked_skipped: u64,
}

/// A name Kubernetes and Cilium accept: a DNS name of letters, digits, `-` and `.`.
fn usable_name(name: &str) -> bool {
    crate::container::workload::valid_name(&name.to_ascii_lowercase())
        && name.contains('.')
        && name.len() <= 253
}

/// A label Kubernetes accepts in a selector: key `[prefix/]name` (prefix a DNS subdomain,
/// name at most 63 of `[A-Za-z0-9._-]` starting and ending alphanumeric), value empty or the
/// same as a name. Others (a hostile pod's labels) are left out of selectors.
fn valid_label(key: &str, value: &str) -> bool {
    fn name(s: &str) -> bool {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    }
    let key_ok = match key.split_once('/') {
        Some((prefix, rest)) => {
            crate::container::workload::valid_name(prefix) && prefix.len() <= 253 && name(rest)
        }
        None => name(key),
    };
    key_ok && (value.is_empty() || name(value))
}

/// A YAML comment's text: no line breaks or control characters.
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

/// A YAML double-quoted string (JSON's escapes are valid YAML).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// `egret-<kind>-<name>`, a valid object name (at most 253 characters).
fn policy_name(kind: &str, name: &str) -> String {
    let mut out = format!("egret-{}-{name}", kind.to_ascii_lowercase());
    out.truncate(253);
    out.trim_end_matches(['-', '.']).to_owned()
}

/// A systemd unit name that can have a drop-in: a concrete name (no transient session or
/// container scope, whose name changes every time).
fn droppable_unit(unit: &str) -> bool {
    crate::cgroup::systemd_unit(unit) == Some(unit)
        && !unit
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'/' || b == b'*')
        && !unit.starts_with("session-")
        && (!unit.ends_with(".scope") || unit.chars().filter(char::is_ascii_hexdigit).count() < 32)
}

/// The section of a unit file where `IPAddressAllow=` goes, from the unit's suffix.
fn section(unit: &str) -> Option<&'static str> {
    let (_, suffix) = unit.rsplit_once('.')?;
    Some(match suffix {
        "service" => "Service",
        "socket" => "Socket",
        "slice" => "Slice",
        "scope" => "Scope",
        "mount" => "Mount",
        "swap" => "Swap",
        _ => return None,
    })
}

impl PlatformSuggester {
    pub fn new(include_blocked: bool) -> Self {
        Self {
            include_blocked,
            ..Self::default()
        }
    }

    /// Connections taken (of pods and units).
    pub fn connections(&self) -> u64 {
        self.workloads
            .values()
            .chain(self.units.values())
            .map(|r| r.connections)
            .fold(0, u64::saturating_add)
    }

    /// Takes one connection line.
    pub fn observe(&mut self, o: &Observation<'_>) {
        if o.verdict == Some(Verdict::Blocked) && !self.include_blocked {
            self.blocked_skipped = self.blocked_skipped.saturating_add(1);
            return;
        }
        let (proto, port) = match o.transport.as_ref() {
            "tcp" => (Proto::Tcp, o.port),
            "udp" => (Proto::Udp, o.port),
            _ => (Proto::Any, 0),
        };
        let name = o
            .domain
            .as_deref()
            .filter(|d| usable_name(d))
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        let reached = match (&o.workload, o.pod_namespace.as_deref(), o.unit.as_deref()) {
            (Some(w), Some(ns), _) => {
                let reached = self
                    .workloads
                    .entry((ns.to_owned(), w.kind.clone(), w.name.clone()))
                    .or_default();
                let stable: BTreeMap<String, String> = w
                    .labels
                    .iter()
                    .filter(|(k, v)| {
                        !UNSTABLE_LABELS.contains(&k.as_str())
                            && !k.starts_with("io.kubernetes.")
                            && !k.starts_with("io.cri-containerd.")
                            && valid_label(k, v)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                // Only the labels every line of the workload agreed on.
                reached.labels = Some(match reached.labels.take() {
                    None => stable,
                    Some(mut common) => {
                        common.retain(|k, v| stable.get(k) == Some(v));
                        common
                    }
                });
                reached
            }
            (_, _, Some(unit)) if o.pod_namespace.is_none() && o.container_id.is_none() => {
                self.units.entry(unit.to_owned()).or_default()
            }
            _ => {
                self.unscoped = self.unscoped.saturating_add(1);
                return;
            }
        };
        reached.connections = reached.connections.saturating_add(u64::from(o.new));
        reached
            .addresses
            .entry((proto, port))
            .or_default()
            .insert(o.ip);
        match name {
            Some(name) => {
                reached.names.entry((proto, port)).or_default().insert(name);
            }
            None => {
                reached
                    .unnamed
                    .entry((proto, port))
                    .or_default()
                    .insert(o.ip);
            }
        }
    }

    /// The rendered policies: `(file name, text)` per workload or unit, in order.
    pub fn render(&self, format: PolicyFormat, sources: &[String]) -> Vec<(String, String)> {
        match format {
            PolicyFormat::Egret => Vec::new(),
            PolicyFormat::Networkpolicy | PolicyFormat::Cilium => self
                .workloads
                .iter()
                .map(|(key, reached)| self.kubernetes(format, key, reached, sources))
                .collect(),
            PolicyFormat::Systemd => self
                .units
                .iter()
                .filter_map(|(unit, reached)| systemd(unit, reached, sources))
                .collect(),
        }
    }

    /// The whole output as one text: YAML documents separated by `---`, or the systemd
    /// drop-ins each after a `# --- <path> ---` line. Says so when there is nothing.
    pub fn render_stream(&self, format: PolicyFormat, sources: &[String]) -> String {
        let files = self.render(format, sources);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Suggested by egret report --suggest-policy --policy-format {} from {} ({} blocked connection(s) left out; {} connection(s) neither of a pod nor of a unit)",
            match format {
                PolicyFormat::Egret => "egret",
                PolicyFormat::Networkpolicy => "networkpolicy",
                PolicyFormat::Cilium => "cilium",
                PolicyFormat::Systemd => "systemd",
            },
            comment_safe(&sources.join(", ")),
            self.blocked_skipped,
            self.unscoped
        );
        if files.is_empty() {
            let _ = writeln!(
                out,
                "# nothing to suggest: no connection of a {}",
                if format == PolicyFormat::Systemd {
                    "systemd unit"
                } else {
                    "Kubernetes pod"
                }
            );
        }
        for (index, (path, text)) in files.iter().enumerate() {
            if format == PolicyFormat::Systemd {
                let _ = writeln!(out, "# --- {path} ---");
            } else if index > 0 {
                out.push_str("---\n");
            }
            out.push_str(text);
        }
        out
    }

    fn kubernetes(
        &self,
        format: PolicyFormat,
        (namespace, kind, name): &WorkloadKey,
        reached: &Reached,
        sources: &[String],
    ) -> (String, String) {
        let policy = policy_name(kind, name);
        let mut y = String::new();
        let _ = writeln!(
            y,
            "# {kind} {} in namespace {}: {} connection(s) seen in {}",
            comment_safe(name),
            comment_safe(namespace),
            reached.connections,
            comment_safe(&sources.join(", "))
        );
        let labels = reached.labels.clone().unwrap_or_default();
        if labels.is_empty() {
            let _ = writeln!(
                y,
                "# WARNING: the lines carry no label of this workload's pods to select them by; \
                 the selector names the pod's name label instead: add the workload's labels to \
                 --container-label (e.g. app) and suggest again"
            );
        }
        let (api, k8s_kind, selector_key) = match format {
            PolicyFormat::Cilium => ("cilium.io/v2", "CiliumNetworkPolicy", "endpointSelector"),
            _ => ("networking.k8s.io/v1", "NetworkPolicy", "podSelector"),
        };
        let _ = writeln!(y, "apiVersion: {api}\nkind: {k8s_kind}\nmetadata:");
        let _ = writeln!(
            y,
            "  name: {}\n  namespace: {}",
            quote(&policy),
            quote(namespace)
        );
        let _ = writeln!(y, "  labels:\n    app.kubernetes.io/managed-by: egret");
        let _ = writeln!(y, "spec:\n  {selector_key}:\n    matchLabels:");
        if labels.is_empty() {
            let _ = writeln!(
                y,
                "      {}: {}",
                quote("egret.dev/workload"),
                quote(&policy)
            );
        }
        for (k, v) in &labels {
            let _ = writeln!(y, "      {}: {}", quote(k), quote(v));
        }
        if format == PolicyFormat::Cilium {
            cilium_egress(&mut y, reached);
        } else {
            networkpolicy_egress(&mut y, reached);
        }
        (format!("{namespace}.{policy}.yaml"), y)
    }
}

fn k8s_port(y: &mut String, indent: &str, proto: Proto, port: u16, string_port: bool) {
    let _ = writeln!(y, "{indent}- protocol: {}", proto.k8s());
    if port != 0 {
        if string_port {
            let _ = writeln!(y, "{indent}  port: \"{port}\"");
        } else {
            let _ = writeln!(y, "{indent}  port: {port}");
        }
    }
}

fn networkpolicy_egress(y: &mut String, reached: &Reached) {
    y.push_str("  policyTypes:\n    - Egress\n  egress:\n");
    y.push_str("    # DNS: the cluster resolver\n");
    y.push_str("    - to:\n        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: kube-system\n          podSelector:\n            matchLabels:\n              k8s-app: kube-dns\n");
    y.push_str("      ports:\n        - protocol: UDP\n          port: 53\n        - protocol: TCP\n          port: 53\n");
    for ((proto, port), addresses) in &reached.addresses {
        let names = reached.names.get(&(*proto, *port));
        if let Some(names) = names {
            let listed: Vec<&str> = names.iter().map(String::as_str).take(8).collect();
            let _ = writeln!(y, "    # {}", comment_safe(&listed.join(", ")));
        }
        y.push_str("    - to:\n");
        for ip in addresses {
            let _ = writeln!(y, "        - ipBlock:\n            cidr: {}", cidr(*ip));
        }
        // Another protocol (ICMP...): NetworkPolicy ports name TCP, UDP or SCTP only, so the
        // rule has none (any port, any protocol, to those addresses).
        if *proto != Proto::Any {
            y.push_str("      ports:\n");
            k8s_port(y, "        ", *proto, *port, false);
        }
    }
}

fn cilium_egress(y: &mut String, reached: &Reached) {
    y.push_str("  egress:\n");
    y.push_str("    # DNS through Cilium's proxy: needed for toFQDNs to learn addresses\n");
    y.push_str("    - toEndpoints:\n        - matchLabels:\n            k8s:io.kubernetes.pod.namespace: kube-system\n            k8s:k8s-app: kube-dns\n");
    y.push_str("      toPorts:\n        - ports:\n            - port: \"53\"\n              protocol: ANY\n          rules:\n            dns:\n              - matchPattern: \"*\"\n");
    let rule_ports = |y: &mut String, proto: Proto, port: u16| {
        if port != 0 || proto != Proto::Any {
            y.push_str("      toPorts:\n        - ports:\n");
            k8s_port(y, "            ", proto, port, true);
        }
    };
    for ((proto, port), names) in &reached.names {
        y.push_str("    - toFQDNs:\n");
        for name in names {
            let _ = writeln!(y, "        - matchName: {}", quote(name));
        }
        rule_ports(y, *proto, *port);
    }
    for ((proto, port), addresses) in &reached.unnamed {
        y.push_str("    - toCIDR:\n");
        for ip in addresses {
            let _ = writeln!(y, "        - {}", cidr(*ip));
        }
        rule_ports(y, *proto, *port);
    }
}

fn systemd(unit: &str, reached: &Reached, sources: &[String]) -> Option<(String, String)> {
    if !droppable_unit(unit) {
        return None;
    }
    let section = section(unit)?;
    let addresses: BTreeSet<IpAddr> = reached
        .addresses
        .values()
        .flatten()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# egret: egress of {unit} as seen in {} ({} connection(s)).\n\
         # Install as /etc/systemd/system/{unit}.d/50-egret-egress.conf, then\n\
         # `systemctl daemon-reload` and restart the unit. systemd's IP filter has no ports or\n\
         # names: every port of these addresses is allowed, a name's other addresses are not.",
        comment_safe(&sources.join(", ")),
        reached.connections
    );
    let _ = writeln!(out, "[{section}]\nIPAddressAllow=localhost");
    for chunk in addresses.iter().collect::<Vec<_>>().chunks(8) {
        let list: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "IPAddressAllow={}", list.join(" "));
    }
    out.push_str("IPAddressDeny=any\n");
    Some((format!("{unit}.d/50-egret-egress.conf"), out))
}

#[cfg(test)]
#[path = "platform_tests.rs"]
mod tests;

//! Aggregating connection and alert lines as they are read: counts per destination, per
//! process, systemd unit, container and pod, and a time series per destination.
//!
//! Memory grows with the number of distinct (group, destination) pairs and time buckets, not
//! with the number of lines.

use std::{
    borrow::Cow,
    cmp::Ordering,
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use serde::Serialize;

use super::{
    input::{Observation, Verdict},
    requests::HttpStats,
    timespec::serialize_rfc3339,
};

/// At most this many distinct addresses are kept per destination (for display).
pub const MAX_ADDRESSES: usize = 16;
/// The time series keeps at most this many buckets; the bucket width doubles when the data
/// spans more.
pub const MAX_BUCKETS: i64 = 120;

/// What a destination is called: the name the process resolved (or, for a TCP connection, the
/// name its first bytes gave), else the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestName {
    Domain(Box<str>),
    Addr(IpAddr),
}

impl DestName {
    pub fn text(&self) -> String {
        match self {
            Self::Domain(d) => d.to_string(),
            Self::Addr(ip) => ip.to_string(),
        }
    }

    pub fn is_domain(&self) -> bool {
        matches!(self, Self::Domain(_))
    }
}

/// A destination as reports show it: a name where egret knew one, else the address; the
/// port and transport. Small: one of these is kept per (group, destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    pub name: DestName,
    pub port: u16,
    pub transport: Cow<'static, str>,
}

/// The transports egret writes, without an allocation each.
fn intern_transport(t: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 6] = ["tcp", "udp", "icmp", "ipv6-icmp", "udplite", "unknown"];
    KNOWN
        .iter()
        .find(|k| **k == t)
        .map_or_else(|| Cow::Owned(t.to_owned()), |k| Cow::Borrowed(*k))
}

/// `api.example.com:443/tcp`, `[2001:db8::1]:443/tcp`.
pub fn dest_label(name: &str, is_domain: bool, port: u16, transport: &str) -> String {
    if !is_domain && name.contains(':') {
        format!("[{name}]:{port}/{transport}")
    } else {
        format!("{name}:{port}/{transport}")
    }
}

impl DestKey {
    pub fn of(o: &Observation<'_>) -> Self {
        Self {
            name: match &o.domain {
                Some(d) => DestName::Domain(d.to_ascii_lowercase().into_boxed_str()),
                None => DestName::Addr(o.ip),
            },
            port: o.port,
            transport: intern_transport(&o.transport),
        }
    }

    /// `api.example.com:443/tcp`, `[2001:db8::1]:443/tcp`.
    pub fn label(&self) -> String {
        dest_label(
            &self.name.text(),
            self.name.is_domain(),
            self.port,
            &self.transport,
        )
    }
}

/// The dimensions a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// `process.executable` (else `process.name`).
    Process,
    /// `egret.systemd.unit`.
    Unit,
    /// `container.name` (else `container.id`).
    Container,
    /// `orchestrator.namespace`/`orchestrator.resource.name` (else `egret.k8s.pod.uid`).
    Pod,
    /// `orchestrator.namespace`/`orchestrator.resource.parent.type`/`name`: the pod's
    /// workload (pods without a parent are only under [`Self::Pod`]).
    Workload,
}

impl Dimension {
    pub const ALL: [Self; 5] = [
        Self::Process,
        Self::Unit,
        Self::Container,
        Self::Pod,
        Self::Workload,
    ];

    /// The key in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Unit => "systemd_unit",
            Self::Container => "container",
            Self::Pod => "pod",
            Self::Workload => "workload",
        }
    }

    /// A heading.
    pub fn title(self) -> &'static str {
        match self {
            Self::Process => "By process (executable)",
            Self::Unit => "By systemd unit",
            Self::Container => "By container",
            Self::Pod => "By Kubernetes pod",
            Self::Workload => "By Kubernetes workload",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Process => 0,
            Self::Unit => 1,
            Self::Container => 2,
            Self::Pod => 3,
            Self::Workload => 4,
        }
    }

    /// The group an observation belongs to in this dimension, if any.
    pub fn group_of(self, o: &Observation<'_>) -> Option<String> {
        match self {
            Self::Process => Some(
                o.executable
                    .as_deref()
                    .or(o.process_name.as_deref())
                    .unwrap_or("(unknown)")
                    .to_owned(),
            ),
            Self::Unit => o.unit.as_deref().map(str::to_owned),
            Self::Container => o
                .container_name
                .as_deref()
                .or(o.container_id.as_deref())
                .map(str::to_owned),
            Self::Pod => match (&o.pod_namespace, &o.pod_name) {
                (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
                (None, Some(name)) => Some(name.to_string()),
                _ => o.pod_uid.as_deref().map(str::to_owned),
            },
            Self::Workload => {
                o.workload
                    .as_ref()
                    .filter(|w| w.kind != "Pod")
                    .map(|w| match &o.pod_namespace {
                        Some(ns) => format!("{ns}/{}/{}", w.kind, w.name),
                        None => format!("{}/{}", w.kind, w.name),
                    })
            }
        }
    }
}

/// Counters shared by destinations and groups: in the report, members of each destination
/// and group object (`docs/report.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Connection lines (a UDP `send` line is one).
    pub connections: u64,
    /// `egret.udp.datagrams` summed over `send` lines.
    pub datagrams: u64,
    /// Alert lines.
    pub alerts: u64,
    /// Connection lines with verdict `unapproved` (audit mode let them through).
    pub unapproved: u64,
    /// Connection lines with verdict `blocked` (refused by the kernel).
    pub blocked: u64,
    #[serde(rename = "first_seen", serialize_with = "serialize_rfc3339")]
    pub first_ns: Option<i64>,
    #[serde(rename = "last_seen", serialize_with = "serialize_rfc3339")]
    pub last_ns: Option<i64>,
}

impl Counts {
    /// Alerts, or connections the policy did not approve: what a reader should look at.
    pub fn need_attention(&self) -> bool {
        self.alerts > 0 || self.unapproved > 0 || self.blocked > 0
    }

    /// Busiest first: most connections, then most alerts.
    fn busiest_first(&self, other: &Self) -> Ordering {
        other
            .connections
            .cmp(&self.connections)
            .then(other.alerts.cmp(&self.alerts))
    }

    fn seen(&mut self, ts: i64) {
        self.first_ns = Some(self.first_ns.map_or(ts, |f| f.min(ts)));
        self.last_ns = Some(self.last_ns.map_or(ts, |l| l.max(ts)));
    }

    fn connection(&mut self, o: &Observation<'_>) {
        self.datagrams = self.datagrams.saturating_add(o.datagrams.unwrap_or(0));
        self.seen(o.ts_ns);
        if !o.new {
            return;
        }
        self.connections = self.connections.saturating_add(1);
        match o.verdict {
            Some(Verdict::Unapproved) => self.unapproved = self.unapproved.saturating_add(1),
            Some(Verdict::Blocked) => self.blocked = self.blocked.saturating_add(1),
            Some(Verdict::Approved) | None => {}
        }
    }

    fn alert(&mut self, o: &Observation<'_>) {
        self.alerts = self.alerts.saturating_add(1);
        self.seen(o.ts_ns);
    }
}

/// One destination within a group.
#[derive(Debug, Clone, Default)]
pub struct DestStats {
    pub counts: Counts,
    /// For a destination named by its domain: distinct addresses seen (at most
    /// [`MAX_ADDRESSES`], in the order seen).
    pub addresses: Vec<IpAddr>,
    /// More distinct addresses were seen than kept.
    pub more_addresses: bool,
    /// Connections per time bucket (only kept for the overall group).
    pub series: BTreeMap<i64, u64>,
    /// HTTP requests and status codes of its connections (only kept for the overall group;
    /// `None` until one was seen).
    pub http: Option<Box<HttpStats>>,
}

impl DestStats {
    fn address(&mut self, key: &DestKey, ip: IpAddr) {
        if !key.name.is_domain() || self.addresses.contains(&ip) {
            return;
        }
        if self.addresses.len() < MAX_ADDRESSES {
            self.addresses.push(ip);
        } else {
            self.more_addresses = true;
        }
    }
}

/// A group (one process, unit, container or pod; or everything) and its destinations.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub counts: Counts,
    pub dests: HashMap<DestKey, DestStats>,
}

impl Group {
    fn dest(&mut self, key: &DestKey) -> &mut DestStats {
        self.dests.entry(key.clone()).or_default()
    }

    fn connection(&mut self, key: &DestKey, o: &Observation<'_>) -> &mut DestStats {
        self.counts.connection(o);
        let d = self.dest(key);
        d.counts.connection(o);
        d.address(key, o.ip);
        d
    }

    fn alert(&mut self, key: &DestKey, o: &Observation<'_>) {
        self.counts.alert(o);
        let d = self.dest(key);
        d.counts.alert(o);
        d.address(key, o.ip);
    }

    /// Destinations, most connections first (then most alerts, then by name, port, transport).
    pub fn sorted_dests(&self) -> Vec<(&DestKey, &DestStats)> {
        let mut v: Vec<_> = self.dests.iter().collect();
        v.sort_by(|(ka, a), (kb, b)| a.counts.busiest_first(&b.counts).then_with(|| ka.cmp(kb)));
        v
    }
}

/// Bucket widths in seconds, each a multiple of the one before (so buckets merge exactly);
/// past the last, widths double.
pub const WIDTHS: [i64; 13] = [
    1, 2, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21_600, 43_200, 86_400,
];

/// The width after `width`: the next of [`WIDTHS`], else twice it.
pub fn next_width(width: i64) -> i64 {
    WIDTHS
        .iter()
        .copied()
        .find(|w| *w > width)
        .unwrap_or_else(|| width.saturating_mul(2))
}

/// Time buckets: `width_s` seconds each, aligned to the epoch; the width grows (to the next
/// of [`WIDTHS`], merging buckets) whenever the data would need more than [`MAX_BUCKETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub width_s: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            width_s: 1,
            min: None,
            max: None,
        }
    }
}

impl Buckets {
    fn index(&self, ts_ns: i64) -> i64 {
        ts_ns
            .div_euclid(1_000_000_000)
            .div_euclid(self.width_s.max(1))
    }

    /// The number of buckets from the first to the last.
    pub fn len(&self) -> i64 {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => hi.saturating_sub(lo).saturating_add(1),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start of bucket `index`, in nanoseconds since the epoch.
    pub fn start_ns(&self, index: i64) -> i64 {
        index
            .saturating_mul(self.width_s)
            .saturating_mul(1_000_000_000)
    }
}

/// Per-file counts of lines; in the report's `input.files` (`docs/report.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    pub path: String,
    pub lines: u64,
    pub bad_lines: u64,
}

/// What was read, and what was done with it: the report's `input` (`docs/report.md`), its
/// members in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InputCounts {
    pub files: Vec<FileCounts>,
    pub lines: u64,
    pub connection_lines: u64,
    /// TCP end lines joined to a start line of the input (the rest are `ignored_lines`).
    pub end_lines: u64,
    pub alert_lines: u64,
    /// Alert lines seen before (same host, sequence and time): an `--alerts` file given along
    /// with the output it duplicates.
    pub duplicate_alert_lines: u64,
    pub metric_lines: u64,
    /// Lines of kinds a report does not use (DNS lines, progress lines, end lines whose start
    /// line is not in the input or the range, new kinds).
    pub ignored_lines: u64,
    pub blank_lines: u64,
    /// Connection and alert lines outside `--since`/`--until`.
    pub out_of_range: u64,
    pub bad_lines: u64,
}

/// Loss counters from metric lines: per (file, host), totals since that egret started; a
/// counter that goes down means a new egret run.
#[derive(Debug, Clone, Copy, Default)]
struct LossRun {
    done: u64,
    current: u64,
}

impl LossRun {
    fn update(&mut self, value: u64) {
        if value < self.current {
            self.done = self.done.saturating_add(self.current);
        }
        self.current = value;
    }

    fn total(self) -> u64 {
        self.done.saturating_add(self.current)
    }
}

/// Everything a report is made of.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub input: InputCounts,
    /// Every destination, with its time series.
    pub overall: Group,
    groups: [HashMap<String, Group>; 5],
    pub buckets: Buckets,
    seen_alerts: HashSet<(String, u64, i64)>,
    lost_kernel: HashMap<(usize, String), LossRun>,
    dropped_userspace: HashMap<(usize, String), LossRun>,
}

impl Aggregate {
    pub fn new(since_ns: Option<i64>, until_ns: Option<i64>) -> Self {
        Self {
            since_ns,
            until_ns,
            ..Self::default()
        }
    }

    /// Whether `ts_ns` is inside `--since` (inclusive) .. `--until` (exclusive).
    pub fn in_range(&self, ts_ns: i64) -> bool {
        self.since_ns.is_none_or(|s| ts_ns >= s) && self.until_ns.is_none_or(|u| ts_ns < u)
    }

    /// The groups of one dimension, most connections first (then most alerts, then by name).
    pub fn groups(&self, dim: Dimension) -> Vec<(&String, &Group)> {
        let mut v: Vec<_> = self
            .groups
            .get(dim.index())
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        v.sort_by(|(na, a), (nb, b)| a.counts.busiest_first(&b.counts).then_with(|| na.cmp(nb)));
        v
    }

    /// Counts a connection line (already known to be in range).
    pub fn connection(&mut self, o: &Observation<'_>) {
        let key = DestKey::of(o);
        self.bucket(o.ts_ns);
        let index = self.buckets.index(o.ts_ns);
        let d = self.overall.connection(&key, o);
        let slot = d.series.entry(index).or_insert(0);
        *slot = slot.saturating_add(u64::from(o.new));
        if let Some(h) = &o.http {
            d.http.get_or_insert_with(Box::default).add(h);
        }
        for dim in Dimension::ALL {
            if let (Some(name), Some(groups)) = (dim.group_of(o), self.groups.get_mut(dim.index()))
            {
                groups.entry(name).or_default().connection(&key, o);
            }
        }
    }

    /// Counts an alert line (already known to be in range). Returns `false` for a duplicate.
    pub fn alert(&mut self, o: &Observation<'_>) -> bool {
        if let (Some(host), Some(seq)) = (&o.host, o.sequence) {
            if !self.seen_alerts.insert((host.to_string(), seq, o.ts_ns)) {
                return false;
            }
        }
        let key = DestKey::of(o);
        self.overall.alert(&key, o);
        for dim in Dimension::ALL {
            if let (Some(name), Some(groups)) = (dim.group_of(o), self.groups.get_mut(dim.index()))
            {
                groups.entry(name).or_default().alert(&key, o);
            }
        }
        true
    }

    /// A metric line's loss counters, from file number `file`.
    pub fn metric(
        &mut self,
        file: usize,
        host: Option<&str>,
        lost_kernel: u64,
        dropped_userspace: u64,
    ) {
        let key = (file, host.unwrap_or_default().to_owned());
        self.lost_kernel
            .entry(key.clone())
            .or_default()
            .update(lost_kernel);
        self.dropped_userspace
            .entry(key)
            .or_default()
            .update(dropped_userspace);
    }

    /// Events egret reported lost in the kernel, over every run in the input.
    pub fn events_lost_kernel(&self) -> u64 {
        self.lost_kernel
            .values()
            .fold(0, |a, r| a.saturating_add(r.total()))
    }

    /// Events egret reported dropped in userspace, over every run in the input.
    pub fn events_dropped_userspace(&self) -> u64 {
        self.dropped_userspace
            .values()
            .fold(0, |a, r| a.saturating_add(r.total()))
    }

    /// Extends the bucket range to `ts_ns`, widening buckets (and merging the series) while
    /// the range is longer than [`MAX_BUCKETS`].
    fn bucket(&mut self, ts_ns: i64) {
        loop {
            let i = self.buckets.index(ts_ns);
            let lo = self.buckets.min.map_or(i, |m| m.min(i));
            let hi = self.buckets.max.map_or(i, |m| m.max(i));
            if hi.saturating_sub(lo) < MAX_BUCKETS || self.buckets.width_s >= i64::MAX / 4 {
                self.buckets.min = Some(lo);
                self.buckets.max = Some(hi);
                return;
            }
            let width = next_width(self.buckets.width_s);
            let factor = (width / self.buckets.width_s.max(1)).max(1);
            self.buckets.width_s = width;
            self.buckets.min = self.buckets.min.map(|m| m.div_euclid(factor));
            self.buckets.max = self.buckets.max.map(|m| m.div_euclid(factor));
            for d in self.overall.dests.values_mut() {
                let old = std::mem::take(&mut d.series);
                for (index, n) in old {
                    let slot = d.series.entry(index.div_euclid(factor)).or_insert(0);
                    *slot = slot.saturating_add(n);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;

    use super::*;

    pub(crate) fn obs(ts_s: i64, exe: &str, ip: &str, port: u16) -> Observation<'static> {
        Observation {
            ts_ns: ts_s * 1_000_000_000,
            ip: ip.parse().unwrap(),
            port,
            transport: Cow::Borrowed("tcp"),
            domain: None,
            executable: Some(Cow::Owned(exe.to_owned())),
            process_name: None,
            unit: None,
            container_id: None,
            container_name: None,
            container_image: None,
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            verdict: None,
            rule: None,
            datagrams: None,
            new: true,
            host: Some(Cow::Borrowed("h")),
            sequence: None,
            name_source: None,
            connection_id: None,
            http: None,
            workload: None,
        }
    }

    #[test]
    fn counts_per_group_and_destination() {
        let mut a = Aggregate::new(None, None);
        let mut curl = obs(100, "/usr/bin/curl", "10.0.0.1", 443);
        curl.domain = Some(Cow::Borrowed("API.example.com"));
        curl.unit = Some(Cow::Borrowed("app.service"));
        curl.verdict = Some(Verdict::Unapproved);
        a.connection(&curl);
        let mut later = curl.clone();
        later.ts_ns += 50_000_000_000;
        later.ip = "10.0.0.2".parse().unwrap();
        a.connection(&later);
        let mut alert = curl.clone();
        alert.sequence = Some(2);
        assert!(a.alert(&alert));
        assert!(!a.alert(&alert), "the same alert line twice counts once");
        let wget = obs(90, "/usr/bin/wget", "10.0.0.9", 80);
        a.connection(&wget);

        assert_eq!(a.overall.counts.connections, 3);
        assert_eq!(a.overall.counts.alerts, 1);
        assert_eq!(a.overall.counts.first_ns, Some(90_000_000_000));
        assert_eq!(a.overall.counts.last_ns, Some(150_000_000_000));

        let procs = a.groups(Dimension::Process);
        assert_eq!(procs.len(), 2);
        let (name, g) = procs[0];
        assert_eq!(name, "/usr/bin/curl");
        assert_eq!(g.counts.connections, 2);
        let dests = g.sorted_dests();
        assert_eq!(dests.len(), 1);
        let (key, d) = dests[0];
        assert_eq!(key.name, DestName::Domain("api.example.com".into()));
        assert_eq!(key.label(), "api.example.com:443/tcp");
        assert_eq!(d.counts.connections, 2);
        assert_eq!(d.counts.unapproved, 2);
        assert_eq!(d.counts.alerts, 1);
        assert_eq!(d.addresses.len(), 2);
        assert_eq!(d.counts.first_ns, Some(100_000_000_000));
        assert_eq!(d.counts.last_ns, Some(150_000_000_000));

        let units = a.groups(Dimension::Unit);
        assert_eq!(units.len(), 1, "wget has no unit");
        assert_eq!(units[0].0, "app.service");
        assert_eq!(units[0].1.counts.alerts, 1);
        assert!(a.groups(Dimension::Container).is_empty());
    }

    #[test]
    fn group_names() {
        let mut o = obs(1, "/bin/x", "::1", 1);
        o.executable = None;
        assert_eq!(
            Dimension::Process.group_of(&o).as_deref(),
            Some("(unknown)")
        );
        o.process_name = Some(Cow::Borrowed("kworker"));
        assert_eq!(Dimension::Process.group_of(&o).as_deref(), Some("kworker"));
        o.container_id = Some(Cow::Borrowed("3f4e"));
        assert_eq!(Dimension::Container.group_of(&o).as_deref(), Some("3f4e"));
        o.container_name = Some(Cow::Borrowed("web"));
        assert_eq!(Dimension::Container.group_of(&o).as_deref(), Some("web"));
        o.pod_uid = Some(Cow::Borrowed("uid-1"));
        assert_eq!(Dimension::Pod.group_of(&o).as_deref(), Some("uid-1"));
        o.pod_namespace = Some(Cow::Borrowed("shop"));
        o.pod_name = Some(Cow::Borrowed("web-1"));
        assert_eq!(Dimension::Pod.group_of(&o).as_deref(), Some("shop/web-1"));
        assert_eq!(
            DestKey::of(&o).label(),
            "[::1]:1/tcp",
            "IPv6 addresses are bracketed"
        );
    }

    #[test]
    fn time_range_is_inclusive_exclusive() {
        let a = Aggregate::new(Some(10), Some(20));
        assert!(!a.in_range(9));
        assert!(a.in_range(10));
        assert!(a.in_range(19));
        assert!(!a.in_range(20));
        assert!(Aggregate::new(None, None).in_range(i64::MIN));
    }

    #[test]
    fn buckets_widen_and_keep_every_count() {
        let mut a = Aggregate::new(None, None);
        // One connection a second for an hour, spread over two destinations.
        for s in 0..3600 {
            let port = if s % 3 == 0 { 1 } else { 2 };
            a.connection(&obs(1_000_000 + s, "/x", "10.0.0.1", port));
        }
        assert!(a.buckets.len() <= MAX_BUCKETS, "{:?}", a.buckets);
        assert!(a.buckets.len() > MAX_BUCKETS / 5, "{:?}", a.buckets);
        assert_eq!(a.buckets.width_s, 60, "one-minute bars for an hour");
        let total: u64 = a
            .overall
            .dests
            .values()
            .flat_map(|d| d.series.values())
            .sum();
        assert_eq!(total, 3600);
        for d in a.overall.dests.values() {
            for index in d.series.keys() {
                assert!(a.buckets.min <= Some(*index) && Some(*index) <= a.buckets.max);
            }
        }
        // Out-of-order input (several files) extends the range backwards.
        a.connection(&obs(1, "/x", "10.0.0.1", 1));
        assert!(a.buckets.len() <= MAX_BUCKETS);
        assert_eq!(a.overall.counts.first_ns, Some(1_000_000_000));
    }

    #[test]
    fn widths_divide_each_other() {
        let mut w = 1;
        for _ in 0..20 {
            let next = next_width(w);
            assert!(next > w && next % w == 0 && next / w <= 5, "{w} -> {next}");
            w = next;
        }
    }

    #[test]
    fn loss_counters_add_up_over_restarts() {
        let mut a = Aggregate::new(None, None);
        for v in [0, 5, 7] {
            a.metric(0, Some("h"), v, 0);
        }
        // egret restarted: its counter starts again.
        for v in [1, 2] {
            a.metric(0, Some("h"), v, 4);
        }
        a.metric(1, Some("other"), 10, 0);
        assert_eq!(a.events_lost_kernel(), 7 + 2 + 10);
        assert_eq!(a.events_dropped_userspace(), 4);
    }
}

//! What `egret top` shows, computed from egret's lines and nothing else (no terminal): rows of
//! destinations per process, unit, container or pod, with connection counts, bytes each way,
//! alerts, last seen and the strictest verdict; sorted and filtered as the keys say.
//!
//! Counting follows `egret report` (docs/report.md): a TCP connection counts at its start line
//! (`connect`, or the one `connection-end` line of a merged short connection), a UDP flow at
//! its first `send` line. Bytes come from `send` lines (each carries the bytes since the
//! flow's previous line) and from TCP `connection-progress` / `connection-end` lines (totals
//! so far: only what grew since the connection's previous line is added, joined by
//! `egret.connection.id`). Alert lines add to the alert count and the verdict, not to the
//! connections.

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet},
};

use crate::{
    report::{aggregate::dest_label, input::Verdict},
    schema::{self, Document},
};

/// Rows kept per grouping; lines about more are counted as `overflow` and not shown.
pub const MAX_ROWS: usize = 50_000;
/// Open TCP connections remembered to join their progress and end lines.
pub const MAX_OPEN: usize = 65_536;

/// What rows are grouped by (the `g` key cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grouping {
    /// `process.executable`, else `process.name`.
    Process,
    /// `egret.systemd.unit`.
    Unit,
    /// `container.name`, else `container.id`.
    Container,
    /// `orchestrator.namespace/orchestrator.resource.name`, else `egret.k8s.pod.uid`.
    Pod,
}

impl Grouping {
    pub const ALL: [Self; 4] = [Self::Process, Self::Unit, Self::Container, Self::Pod];

    pub fn next(self) -> Self {
        match self {
            Self::Process => Self::Unit,
            Self::Unit => Self::Container,
            Self::Container => Self::Pod,
            Self::Pod => Self::Process,
        }
    }

    /// The column title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Process => "PROCESS",
            Self::Unit => "UNIT",
            Self::Container => "CONTAINER",
            Self::Pod => "POD",
        }
    }

    /// The line's group, `-` when it has none (a process outside any unit, container or pod).
    fn of(self, doc: &Document<'_>) -> String {
        let text = match self {
            Self::Process => doc.process.as_ref().and_then(|p| p.fields()).map(|p| {
                p.executable
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .unwrap_or(&p.name)
                    .to_owned()
            }),
            Self::Unit => doc.egret.systemd.as_ref().map(|u| u.unit.to_string()),
            Self::Container => doc.container.as_ref().map(|c| {
                c.name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&c.id)
                    .to_owned()
            }),
            Self::Pod => match (&doc.orchestrator, &doc.egret.k8s) {
                (Some(o), _) if !o.resource.name.is_empty() => {
                    Some(format!("{}/{}", o.namespace, o.resource.name))
                }
                (_, Some(k8s)) => k8s.pod.as_ref().map(|p| p.uid.to_string()),
                _ => None,
            },
        };
        text.filter(|t| !t.is_empty())
            .unwrap_or_else(|| "-".to_owned())
    }
}

/// The column rows are sorted by (keys `c`, `b`, `l`, `d`, `v`, `n`; `s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Connections,
    /// Bytes sent plus received.
    Bytes,
    LastSeen,
    Destination,
    /// Strictest first: blocked, unapproved, approved, none.
    Verdict,
    /// The group (process, unit, container, pod).
    Group,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::Connections => Self::Bytes,
            Self::Bytes => Self::LastSeen,
            Self::LastSeen => Self::Destination,
            Self::Destination => Self::Verdict,
            Self::Verdict => Self::Group,
            Self::Group => Self::Connections,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Bytes => "bytes",
            Self::LastSeen => "last seen",
            Self::Destination => "destination",
            Self::Verdict => "verdict",
            Self::Group => "group",
        }
    }

    /// The key that picks this column.
    pub fn of_key(key: char) -> Option<Self> {
        match key {
            'c' => Some(Self::Connections),
            'b' => Some(Self::Bytes),
            'l' => Some(Self::LastSeen),
            'd' => Some(Self::Destination),
            'v' => Some(Self::Verdict),
            'n' => Some(Self::Group),
            _ => None,
        }
    }
}

/// One destination of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub group: String,
    /// `api.example.com:443/tcp`, `[2001:db8::1]:53/udp`.
    pub destination: String,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub alerts: u64,
    /// `@timestamp` of the latest line (RFC 3339, UTC).
    pub last_seen: String,
    pub verdict: Option<Verdict>,
}

impl Row {
    pub fn verdict_name(&self) -> &'static str {
        match self.verdict {
            Some(Verdict::Approved) => "approved",
            Some(Verdict::Unapproved) => "unapproved",
            Some(Verdict::Blocked) => "blocked",
            None => "-",
        }
    }

    fn matches(&self, filter: &str) -> bool {
        filter.is_empty()
            || [
                self.group.as_str(),
                self.destination.as_str(),
                self.verdict_name(),
            ]
            .iter()
            .any(|field| field.to_lowercase().contains(filter))
    }
}

/// A TCP connection between its start and end lines: where its bytes go and what was
/// counted of them.
#[derive(Debug, Clone)]
struct Open {
    destination: String,
    groups: [String; 4],
    sent: u64,
    received: u64,
}

/// Counts of the lines read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub read: u64,
    /// Not JSON, or not egret's schema: counted, never shown.
    pub unparsed: u64,
    /// Lines of egret's that are no connection (dns, output, kinds this version does not know).
    pub other: u64,
    /// Lines about a (group, destination) past [`MAX_ROWS`].
    pub overflow: u64,
    /// From the latest metric line: events lost in the kernel, dropped in userspace.
    pub lost: u64,
    pub dropped: u64,
}

/// Everything read so far.
#[derive(Debug, Default)]
pub struct Model {
    rows: HashMap<(Grouping, String, String), Row>,
    open: HashMap<String, Open>,
    pub counts: LineCounts,
    /// The latest reason a line could not be read (`LINE: reason`, without its values).
    pub last_error: Option<String>,
}

/// Why a line is read.
enum Effect {
    Connection,
    Bytes,
    Alert,
}

impl Model {
    /// Reads one line (without its newline). Never fails: a line that is not egret's is
    /// counted.
    pub fn ingest(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.counts.read += 1;
        let doc = match schema::read(line) {
            Ok(doc) => doc,
            Err(err) => {
                self.counts.unparsed += 1;
                self.last_error = Some(format!("line {}: {}", self.counts.read, reason(&err)));
                return;
            }
        };
        let event = &doc.event;
        let has = |t: &str| event.types.contains(t);
        let effect = match (event.kind.as_ref(), event.action.as_ref()) {
            ("metric", _) => {
                if let Some(m) = &doc.egret.metrics {
                    self.counts.lost = m.events_lost_kernel;
                    self.counts.dropped = m.events_dropped_userspace;
                }
                return;
            }
            ("alert", _) => Effect::Alert,
            ("event", "connect") => Effect::Connection,
            ("event", "send") => {
                if event.types.is_empty() || has("start") {
                    Effect::Connection
                } else {
                    Effect::Bytes
                }
            }
            ("event", "connection-end") if has("start") => Effect::Connection,
            ("event", "connection-end" | "connection-progress") => Effect::Bytes,
            _ => {
                self.counts.other += 1;
                return;
            }
        };
        if doc.destination.is_none() {
            self.counts.other += 1;
            return;
        }
        self.apply(&doc, effect);
    }

    fn apply(&mut self, doc: &Document<'_>, effect: Effect) {
        let id = doc
            .egret
            .connection
            .as_ref()
            .map(|c| c.id.to_string())
            .filter(|id| !id.is_empty());
        let tcp = doc.network.as_ref().is_some_and(|n| n.transport == "tcp");
        let action = doc.event.action.as_ref();
        // A TCP end or progress line's bytes go where its start line's went (its name may
        // differ: the end line adds what the first bytes named).
        let joined = id
            .as_ref()
            .filter(|_| tcp && matches!(effect, Effect::Bytes))
            .and_then(|id| self.open.get(id).cloned());
        let (destination, groups) = match &joined {
            Some(open) => (open.destination.clone(), open.groups.clone()),
            None => (destination(doc), Grouping::ALL.map(|g| g.of(doc))),
        };
        let (mut sent, mut received) = (
            doc.source.as_ref().and_then(|s| s.bytes).unwrap_or(0),
            doc.destination.as_ref().and_then(|d| d.bytes).unwrap_or(0),
        );
        if tcp && action != "send" && !matches!(effect, Effect::Alert) {
            // Totals so far: add what grew since the last line of this connection.
            if let Some(open) = &joined {
                sent = sent.saturating_sub(open.sent);
                received = received.saturating_sub(open.received);
            }
            self.track(id, doc, &destination, &groups);
        }
        let verdict = doc
            .egret
            .policy
            .as_ref()
            .and_then(|p| match p.verdict.as_ref() {
                "approved" => Some(Verdict::Approved),
                "unapproved" => Some(Verdict::Unapproved),
                "blocked" => Some(Verdict::Blocked),
                _ => None,
            });
        for (grouping, group) in Grouping::ALL.into_iter().zip(groups) {
            let key = (grouping, group, destination.clone());
            if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS * 4 {
                self.counts.overflow += 1;
                continue;
            }
            let row = self
                .rows
                .entry(key)
                .or_insert_with_key(|(_, group, dest)| Row {
                    group: group.clone(),
                    destination: dest.clone(),
                    ..Row::default()
                });
            match effect {
                Effect::Connection => row.connections += 1,
                Effect::Alert => row.alerts += 1,
                Effect::Bytes => {}
            }
            if !matches!(effect, Effect::Alert) {
                row.bytes_sent = row.bytes_sent.saturating_add(sent);
                row.bytes_received = row.bytes_received.saturating_add(received);
            }
            row.verdict = Verdict::stricter(row.verdict, verdict);
            if *doc.timestamp > *row.last_seen {
                row.last_seen = doc.timestamp.to_string();
            }
        }
    }

    /// Remembers an open TCP connection's totals (forgets it at its end line).
    fn track(&mut self, id: Option<String>, doc: &Document<'_>, dest: &str, groups: &[String; 4]) {
        let Some(id) = id else { return };
        let ended = doc.event.action == "connection-end";
        if ended {
            self.open.remove(&id);
            return;
        }
        if !self.open.contains_key(&id) && self.open.len() >= MAX_OPEN {
            // Connections that never ended (egret restarted): start afresh.
            self.open.clear();
        }
        self.open.insert(
            id,
            Open {
                destination: dest.to_owned(),
                groups: groups.clone(),
                sent: doc.source.as_ref().and_then(|s| s.bytes).unwrap_or(0),
                received: doc.destination.as_ref().and_then(|d| d.bytes).unwrap_or(0),
            },
        );
    }

    /// The rows of `grouping` whose group, destination or verdict contains `filter` (any
    /// case), sorted by `sort` (descending unless `ascending`; ties by group, destination).
    pub fn rows(
        &self,
        grouping: Grouping,
        sort: SortBy,
        ascending: bool,
        filter: &str,
    ) -> Vec<&Row> {
        let filter = filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|((g, _, _), row)| *g == grouping && row.matches(&filter))
            .map(|(_, row)| row)
            .collect();
        rows.sort_by(|a, b| {
            let order = compare(a, b, sort);
            let order = if ascending { order } else { order.reverse() };
            order
                .then_with(|| a.group.cmp(&b.group))
                .then_with(|| a.destination.cmp(&b.destination))
        });
        rows
    }

    /// Distinct groups of `grouping`.
    pub fn groups(&self, grouping: Grouping) -> usize {
        self.rows
            .keys()
            .filter(|(g, _, _)| *g == grouping)
            .map(|(_, group, _)| group)
            .collect::<HashSet<_>>()
            .len()
    }
}

fn compare(a: &Row, b: &Row, sort: SortBy) -> Ordering {
    let rank = |v: Option<Verdict>| match v {
        None => 0,
        Some(Verdict::Approved) => 1,
        Some(Verdict::Unapproved) => 2,
        Some(Verdict::Blocked) => 3,
    };
    match sort {
        SortBy::Connections => a.connections.cmp(&b.connections),
        SortBy::Bytes => (a.bytes_sent.saturating_add(a.bytes_received))
            .cmp(&b.bytes_sent.saturating_add(b.bytes_received)),
        SortBy::LastSeen => a.last_seen.cmp(&b.last_seen),
        // Names read A to Z when descending is the default: reversed here.
        SortBy::Destination => b.destination.cmp(&a.destination),
        SortBy::Group => b.group.cmp(&a.group),
        SortBy::Verdict => rank(a.verdict).cmp(&rank(b.verdict)),
    }
}

/// The destination's label: the domain (lower case) where the line has one, else the address.
fn destination(doc: &Document<'_>) -> String {
    let transport = doc.network.as_ref().map_or("?", |n| n.transport.as_ref());
    let Some(d) = doc.destination.as_ref() else {
        return "-".to_owned();
    };
    let port = d.port.unwrap_or(0);
    match (
        d.domain.as_deref().filter(|d| !d.is_empty()),
        d.ip.as_deref(),
    ) {
        (Some(domain), _) => dest_label(&domain.to_ascii_lowercase(), true, port, transport),
        (None, Some(ip)) => dest_label(ip, false, port, transport),
        (None, None) => dest_label("?", true, port, transport),
    }
}

/// Why a line is not egret's, without the values serde quotes (a line may hold a secret).
fn reason(err: &schema::ReadError) -> String {
    match err {
        schema::ReadError::NotJson(_) => "not JSON".to_owned(),
        schema::ReadError::NotObject => "not a JSON object".to_owned(),
        schema::ReadError::Field(e) => format!("unexpected field value (column {})", e.column()),
    }
}

#[cfg(test)]
mod tests;

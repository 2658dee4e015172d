//! The report as data: the `--format json` schema (documented in `docs/report.md`), from
//! which the text and HTML renderings are made too.

use serde::Serialize;

use super::{
    aggregate::{Aggregate, Counts, DestKey, DestName, DestStats, Dimension, Group, InputCounts},
    requests::{HttpStats, MAX_SHOWN},
    timespec::{rfc3339, serialize_rfc3339},
};

/// `schema` of the JSON document. A change that removes, renames or retypes a field gets a
/// new version; new fields may be added within a version.
pub const SCHEMA: &str = "egret-report/1";

/// At most this many destinations get their own series in the timeline (the rest are summed
/// in `other`).
pub const MAX_SERIES: usize = 8;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportDoc {
    pub schema: &'static str,
    /// Nanoseconds since the epoch, like every time kept as a number here; the JSON has them
    /// in RFC 3339.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub generated_at: i64,
    pub range: RangeDoc,
    pub input: InputCounts,
    pub totals: TotalsDoc,
    /// `--top`: destinations listed per group.
    pub top: usize,
    /// The busiest destinations over everything, at most `top`.
    pub destinations: Vec<DestDoc>,
    pub groups: GroupsDoc,
    pub timeline: TimelineDoc,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RangeDoc {
    /// `--since`, resolved (RFC 3339), or null.
    pub since: Option<String>,
    /// `--until`, resolved (RFC 3339), or null.
    pub until: Option<String>,
    /// The earliest and latest connection or alert counted; null when none was.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub first_seen: Option<i64>,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub last_seen: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TotalsDoc {
    pub connections: u64,
    pub datagrams: u64,
    pub alerts: u64,
    pub unapproved: u64,
    pub blocked: u64,
    /// Distinct destinations (name or address, port, transport).
    pub destinations: usize,
    pub events_lost_kernel: u64,
    pub events_dropped_userspace: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DestDoc {
    /// `domain` when known, else the address.
    pub destination: String,
    pub domain: Option<String>,
    /// Distinct addresses seen for it (at most 16, sorted).
    pub addresses: Vec<String>,
    /// More addresses were seen than listed.
    pub addresses_truncated: bool,
    pub port: u16,
    pub transport: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The HTTP requests of its connections: in `destinations` (not in groups), for a
    /// destination with at least one; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDoc>,
}

/// A destination's HTTP: each connection's first request (method and path, never the query)
/// and its response's status code.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HttpDoc {
    /// Connections with an HTTP request.
    pub requests: u64,
    /// The most frequent requests (at most 10), most first.
    pub paths: Vec<PathDoc>,
    /// Requests not in `paths` (less frequent, or past the 256 distinct ones counted).
    pub other_paths: u64,
    /// Connections with an HTTP response status code.
    pub responses: u64,
    /// The most frequent status codes (at most 10), most first.
    pub status_codes: Vec<StatusDoc>,
    /// Responses not in `status_codes`.
    pub other_status_codes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathDoc {
    /// `GET`, `POST`, ...; empty when egret did not see it.
    pub method: String,
    /// `url.path` without the query.
    pub path: String,
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusDoc {
    pub status_code: u16,
    pub connections: u64,
}

fn http_doc(h: &HttpStats) -> HttpDoc {
    let (paths, other_paths) = h.requests.top(MAX_SHOWN);
    let (codes, other_status_codes) = h.statuses.top(MAX_SHOWN);
    HttpDoc {
        requests: h.requests.total,
        paths: paths
            .into_iter()
            .map(|(r, connections)| PathDoc {
                method: r.method.to_string(),
                path: r.path.to_string(),
                connections,
            })
            .collect(),
        other_paths,
        responses: h.statuses.total,
        status_codes: codes
            .into_iter()
            .map(|(code, connections)| StatusDoc {
                status_code: *code,
                connections,
            })
            .collect(),
        other_status_codes,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupDoc {
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Distinct destinations of the group (`destinations` lists at most `top`).
    pub destinations_total: usize,
    pub destinations: Vec<DestDoc>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupsDoc {
    pub process: Vec<GroupDoc>,
    pub systemd_unit: Vec<GroupDoc>,
    pub container: Vec<GroupDoc>,
    pub pod: Vec<GroupDoc>,
    /// `namespace/Kind/name` of the pods' workloads (`orchestrator.resource.parent`).
    pub workload: Vec<GroupDoc>,
}

impl GroupsDoc {
    pub fn get(&self, dim: Dimension) -> &[GroupDoc] {
        match dim {
            Dimension::Process => &self.process,
            Dimension::Unit => &self.systemd_unit,
            Dimension::Container => &self.container,
            Dimension::Pod => &self.pod,
            Dimension::Workload => &self.workload,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesDoc {
    /// `name:port/transport` (`[v6]:port/transport`).
    pub destination: String,
    pub name: String,
    pub port: u16,
    pub transport: String,
    /// Connections per bucket.
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TimelineDoc {
    /// Start of the first bucket (RFC 3339), null when there is no data.
    pub start: Option<String>,
    pub bucket_seconds: i64,
    pub buckets: usize,
    /// The busiest destinations (at most 8), most connections first.
    pub series: Vec<SeriesDoc>,
    /// Connections per bucket to every other destination.
    pub other: Vec<u64>,
}

fn opt_time(ns: Option<i64>) -> Option<String> {
    ns.map(rfc3339)
}

fn dest_doc(key: &DestKey, d: &DestStats) -> DestDoc {
    DestDoc {
        destination: key.name.text(),
        domain: key.name.is_domain().then(|| key.name.text()),
        addresses: match key.name {
            DestName::Addr(ip) => vec![ip.to_string()],
            DestName::Domain(_) => {
                let mut a = d.addresses.clone();
                a.sort_unstable();
                a.iter().map(ToString::to_string).collect()
            }
        },
        addresses_truncated: d.more_addresses,
        port: key.port,
        transport: key.transport.to_string(),
        counts: d.counts,
        http: d.http.as_deref().map(http_doc),
    }
}

fn group_doc(name: &str, g: &Group, top: usize) -> GroupDoc {
    GroupDoc {
        name: name.to_owned(),
        counts: g.counts,
        destinations_total: g.dests.len(),
        destinations: g
            .sorted_dests()
            .into_iter()
            .take(top)
            .map(|(k, d)| dest_doc(k, d))
            .collect(),
    }
}

fn timeline(a: &Aggregate) -> TimelineDoc {
    let b = a.buckets;
    let (Some(min), len) = (b.min, usize::try_from(b.len()).unwrap_or(0)) else {
        return TimelineDoc {
            start: None,
            bucket_seconds: b.width_s,
            buckets: 0,
            series: Vec::new(),
            other: Vec::new(),
        };
    };
    let counts = |d: &DestStats| -> Vec<u64> {
        let mut v = vec![0_u64; len];
        for (index, n) in &d.series {
            if let Some(slot) = usize::try_from(index.saturating_sub(min))
                .ok()
                .and_then(|i| v.get_mut(i))
            {
                *slot = slot.saturating_add(*n);
            }
        }
        v
    };
    let sorted = a.overall.sorted_dests();
    let series = sorted
        .iter()
        .take(MAX_SERIES)
        .map(|(k, d)| SeriesDoc {
            destination: k.label(),
            name: k.name.text(),
            port: k.port,
            transport: k.transport.to_string(),
            counts: counts(d),
        })
        .collect();
    let mut other = vec![0_u64; len];
    for (_, d) in sorted.iter().skip(MAX_SERIES) {
        for (slot, n) in other.iter_mut().zip(counts(d)) {
            *slot = slot.saturating_add(n);
        }
    }
    TimelineDoc {
        start: Some(rfc3339(b.start_ns(min))),
        bucket_seconds: b.width_s,
        buckets: len,
        series,
        other,
    }
}

/// The report document for `a`, listing at most `top` destinations per group.
pub fn build(a: &Aggregate, top: usize, generated_at_ns: i64) -> ReportDoc {
    let groups = |dim| -> Vec<GroupDoc> {
        a.groups(dim)
            .into_iter()
            .map(|(name, g)| group_doc(name, g, top))
            .collect()
    };
    let overall = group_doc("", &a.overall, top);
    ReportDoc {
        schema: SCHEMA,
        generated_at: generated_at_ns,
        range: RangeDoc {
            since: opt_time(a.since_ns),
            until: opt_time(a.until_ns),
            first_seen: overall.counts.first_ns,
            last_seen: overall.counts.last_ns,
        },
        input: a.input.clone(),
        totals: TotalsDoc {
            connections: overall.counts.connections,
            datagrams: overall.counts.datagrams,
            alerts: overall.counts.alerts,
            unapproved: overall.counts.unapproved,
            blocked: overall.counts.blocked,
            destinations: overall.destinations_total,
            events_lost_kernel: a.events_lost_kernel(),
            events_dropped_userspace: a.events_dropped_userspace(),
        },
        top,
        destinations: overall.destinations,
        groups: GroupsDoc {
            process: groups(Dimension::Process),
            systemd_unit: groups(Dimension::Unit),
            container: groups(Dimension::Container),
            pod: groups(Dimension::Pod),
            workload: groups(Dimension::Workload),
        },
        timeline: timeline(a),
    }
}

//! The learned baseline: per workload, the destinations it talks to (docs/baseline.md).
//!
//! During the learning period (`--baseline-learn`, counted from the moment the state was
//! created, so a restart does not start it again) every destination a workload reaches is
//! recorded. After it, a destination the workload has never reached is *new*: it is
//! recorded too (marked `new`), and the caller alerts once. `egret baseline forget` lets a
//! workload learn again for the same period.
//!
//! Bounded: at most `max_destinations` per workload and `max_workloads` in total. When a
//! workload is full, its least recently seen eighth of destinations is evicted; when the
//! table is full, the least recently seen workloads (an eighth of them) go. Both are counted.
//!
//! The state is a JSON document ([`State`], versioned); [`store`] reads and writes it.

pub mod command;
pub mod spikes;
pub mod store;
pub mod workload;

use std::{collections::HashMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use workload::{Workload, WorkloadKind};

/// The state file's version this egret writes and reads.
pub const STATE_VERSION: u32 = 1;

/// A destination as the baseline keys it: the trusted name (a believed DNS answer) or the
/// address, with port and transport.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Destination {
    /// A DNS name, or an IP address.
    pub host: String,
    pub port: u16,
    /// `tcp`, `udp`, ...
    pub transport: String,
}

impl Destination {
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}/{}", self.port, self.transport),
            _ => write!(f, "{}:{}/{}", self.host, self.port, self.transport),
        }
    }
}

/// What the baseline remembers of one destination of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub connections: u64,
    /// First seen after learning: it raised a `new-destination` alert.
    #[serde(default)]
    pub new: bool,
}

/// One workload's baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadBaseline {
    pub first_seen: u64,
    pub last_seen: u64,
    /// Unix seconds: it learns until then whatever the global period (set by `forget`).
    pub learn_until: Option<u64>,
    pub destinations: HashMap<Destination, Seen>,
}

/// The whole baseline, as kept in memory and in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Unix seconds when learning started (when this state was created).
    pub learning_started: u64,
    /// The learning period (seconds) when it was last written: what `forget` relearns for.
    pub learn_secs: u64,
    pub workloads: HashMap<Workload, WorkloadBaseline>,
}

impl State {
    pub fn new(now: u64, learn_secs: u64) -> Self {
        Self {
            learning_started: now,
            learn_secs,
            workloads: HashMap::new(),
        }
    }

    /// Unix seconds when the global learning period ends.
    pub fn learning_ends(&self) -> u64 {
        self.learning_started.saturating_add(self.learn_secs)
    }

    /// Whether `workload` is learning at `now`.
    pub fn learning(&self, workload: &Workload, now: u64) -> bool {
        now < self.learning_ends()
            || self
                .workloads
                .get(workload)
                .and_then(|w| w.learn_until)
                .is_some_and(|until| now < until)
    }

    pub fn destinations(&self) -> usize {
        self.workloads.values().map(|w| w.destinations.len()).sum()
    }

    /// Forgets a workload: it learns again for the learning period from `now`. False when
    /// the baseline does not have it.
    pub fn forget(&mut self, workload: &Workload, now: u64) -> bool {
        let Some(entry) = self.workloads.get_mut(workload) else {
            return false;
        };
        *entry = WorkloadBaseline {
            first_seen: now,
            last_seen: now,
            learn_until: Some(now.saturating_add(self.learn_secs)),
            destinations: HashMap::new(),
        };
        true
    }

    /// The workload a user named: `KIND:NAME`, or a NAME only one workload has.
    pub fn find(&self, name: &str) -> Result<Workload, String> {
        if let Some(w) = Workload::parse(name).filter(|w| self.workloads.contains_key(w)) {
            return Ok(w);
        }
        let mut matches: Vec<&Workload> =
            self.workloads.keys().filter(|w| w.name == name).collect();
        matches.sort();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(format!("no workload {name:?} in the baseline")),
            many => Err(format!(
                "{name:?} names {} workloads, give one as KIND:NAME: {}",
                many.len(),
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// What the baseline made of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Recorded while learning.
    Learned,
    /// Known already.
    Known,
    /// Never seen for this workload after its learning: alert (once: it is recorded now).
    New,
}

/// The bounds of a [`Baseline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_workloads: usize,
    pub max_destinations: usize,
}

/// What the baseline counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BaselineStats {
    /// Destinations evicted from a full workload.
    pub destinations_evicted: u64,
    /// Workloads evicted from a full table.
    pub workloads_evicted: u64,
}

/// The baseline in memory, with its bounds.
#[derive(Debug)]
pub struct Baseline {
    pub state: State,
    bounds: Bounds,
    pub stats: BaselineStats,
    /// Changed since the last time it was written.
    pub dirty: bool,
}

impl Baseline {
    /// A state read from a file written under larger bounds is cut down to these at once
    /// (least recently seen first; counted).
    pub fn new(state: State, bounds: Bounds) -> Self {
        let mut me = Self {
            state,
            bounds: Bounds {
                max_workloads: bounds.max_workloads.max(1),
                max_destinations: bounds.max_destinations.max(1),
            },
            stats: BaselineStats::default(),
            dirty: true,
        };
        me.enforce_bounds();
        me
    }

    fn enforce_bounds(&mut self) {
        let max = self.bounds.max_destinations;
        for entry in self.state.workloads.values_mut() {
            if entry.destinations.len() > max {
                let mut ages: Vec<(u64, Destination)> = entry
                    .destinations
                    .iter()
                    .map(|(d, s)| (s.last_seen, d.clone()))
                    .collect();
                ages.sort();
                let excess = ages.len() - max;
                for (_, d) in ages.into_iter().take(excess) {
                    entry.destinations.remove(&d);
                }
                self.stats.destinations_evicted += excess as u64;
            }
        }
        let workloads = &mut self.state.workloads;
        if workloads.len() > self.bounds.max_workloads {
            let mut ages: Vec<(u64, Workload)> = workloads
                .iter()
                .map(|(w, b)| (b.last_seen, w.clone()))
                .collect();
            ages.sort();
            let excess = ages.len() - self.bounds.max_workloads;
            for (_, w) in ages.into_iter().take(excess) {
                workloads.remove(&w);
            }
            self.stats.workloads_evicted += excess as u64;
        }
    }

    pub fn learning_now(&self, now: u64) -> bool {
        now < self.state.learning_ends()
    }

    /// A connection of `workload` to `destination` at `now` (Unix seconds).
    pub fn observe(
        &mut self,
        workload: &Workload,
        destination: &Destination,
        now: u64,
    ) -> Observed {
        let learning = self.state.learning(workload, now);
        if !self.state.workloads.contains_key(workload) {
            self.make_room_for_workload();
            self.state.workloads.insert(
                workload.clone(),
                WorkloadBaseline {
                    first_seen: now,
                    last_seen: now,
                    learn_until: None,
                    destinations: HashMap::new(),
                },
            );
        }
        let Some(entry) = self.state.workloads.get_mut(workload) else {
            return Observed::Known;
        };
        entry.last_seen = entry.last_seen.max(now);
        if let Some(seen) = entry.destinations.get_mut(destination) {
            seen.last_seen = seen.last_seen.max(now);
            seen.connections = seen.connections.saturating_add(1);
            // Counts change often: written at the next flush only if something else changed.
            return Observed::Known;
        }
        if entry.destinations.len() >= self.bounds.max_destinations {
            self.stats.destinations_evicted = self
                .stats
                .destinations_evicted
                .saturating_add(evict_oldest_destinations(entry));
        }
        entry.destinations.insert(
            destination.clone(),
            Seen {
                first_seen: now,
                last_seen: now,
                connections: 1,
                new: !learning,
            },
        );
        self.dirty = true;
        if learning {
            Observed::Learned
        } else {
            Observed::New
        }
    }

    fn make_room_for_workload(&mut self) {
        let workloads = &mut self.state.workloads;
        if workloads.len() < self.bounds.max_workloads {
            return;
        }
        let mut ages: Vec<(u64, Workload)> = workloads
            .iter()
            .map(|(w, b)| (b.last_seen, w.clone()))
            .collect();
        ages.sort();
        let n = (ages.len() / 8).max(1);
        for (_, w) in ages.into_iter().take(n) {
            workloads.remove(&w);
            self.stats.workloads_evicted = self.stats.workloads_evicted.saturating_add(1);
        }
        self.dirty = true;
    }
}

/// Evicts the least recently seen eighth (at least one) of a full workload's destinations.
fn evict_oldest_destinations(entry: &mut WorkloadBaseline) -> u64 {
    let mut ages: Vec<(u64, Destination)> = entry
        .destinations
        .iter()
        .map(|(d, s)| (s.last_seen, d.clone()))
        .collect();
    ages.sort();
    let n = (ages.len() / 8).max(1);
    let mut evicted = 0u64;
    for (_, d) in ages.into_iter().take(n) {
        entry.destinations.remove(&d);
        evicted += 1;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Workload {
        Workload {
            kind: WorkloadKind::Unit,
            name: name.into(),
        }
    }

    fn d(host: &str, port: u16) -> Destination {
        Destination {
            host: host.into(),
            port,
            transport: "tcp".into(),
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            max_workloads: 100,
            max_destinations: 100,
        }
    }

    #[test]
    fn learns_then_alerts_once_per_new_destination() {
        let mut b = Baseline::new(State::new(1_000, 60), bounds());
        for host in ["a.example", "b.example", "10.0.0.1"] {
            assert_eq!(
                b.observe(&w("app.service"), &d(host, 443), 1_010),
                Observed::Learned
            );
        }
        for host in ["a.example", "b.example", "10.0.0.1"] {
            assert_eq!(
                b.observe(&w("app.service"), &d(host, 443), 1_100),
                Observed::Known
            );
        }
        assert_eq!(
            b.observe(&w("app.service"), &d("c.example", 443), 1_100),
            Observed::New
        );
        assert_eq!(
            b.observe(&w("app.service"), &d("c.example", 443), 1_101),
            Observed::Known
        );
        assert_eq!(
            b.observe(&w("app.service"), &d("a.example", 80), 1_102),
            Observed::New
        );
        // Another workload: what the first one knows is new for it.
        assert_eq!(
            b.observe(&w("other.service"), &d("a.example", 443), 1_103),
            Observed::New
        );
    }

    #[test]
    fn forget_relearns_for_the_period() {
        let mut b = Baseline::new(State::new(0, 60), bounds());
        b.observe(&w("x"), &d("a", 1), 10);
        assert!(b.state.forget(&w("x"), 1_000));
        assert_eq!(b.observe(&w("x"), &d("b", 1), 1_010), Observed::Learned);
        assert_eq!(b.observe(&w("x"), &d("c", 1), 1_061), Observed::New);
        assert!(!b.state.forget(&w("nope"), 1));
    }

    #[test]
    fn bounded_per_workload_and_in_total() {
        let mut b = Baseline::new(
            State::new(0, 1_000_000),
            Bounds {
                max_workloads: 4,
                max_destinations: 16,
            },
        );
        for i in 0..10_000u32 {
            b.observe(&w("one"), &d(&format!("h{i}"), 1), u64::from(i));
        }
        assert!(b.state.destinations() <= 16);
        assert_eq!(
            b.stats.destinations_evicted + b.state.destinations() as u64,
            10_000
        );
        // The newest stay.
        assert!(b.state.workloads[&w("one")]
            .destinations
            .contains_key(&d("h9999", 1)));
        for i in 0..10u32 {
            b.observe(&w(&format!("w{i}")), &d("a", 1), 20_000 + u64::from(i));
        }
        assert!(b.state.workloads.len() <= 4);
        assert!(b.stats.workloads_evicted >= 6);
        assert!(b.state.workloads.contains_key(&w("w9")));
    }

    #[test]
    fn a_state_over_the_bounds_is_cut_down_on_load() {
        let mut big = Baseline::new(State::new(0, 10), bounds());
        for i in 0..50u64 {
            big.observe(&w(&format!("w{i}")), &d("a", 1), i);
            big.observe(&w("w0"), &d(&format!("h{i}"), 1), 100 + i);
        }
        let small = Baseline::new(
            big.state,
            Bounds {
                max_workloads: 5,
                max_destinations: 10,
            },
        );
        assert_eq!(small.state.workloads.len(), 5);
        assert!(
            small.state.workloads.contains_key(&w("w0")),
            "most recently seen"
        );
        assert_eq!(small.state.workloads[&w("w0")].destinations.len(), 10);
        assert!(small.state.workloads[&w("w0")]
            .destinations
            .contains_key(&d("h49", 1)));
        assert_eq!(small.stats.workloads_evicted, 45);
    }

    #[test]
    fn find_by_name_or_key() {
        let mut b = Baseline::new(State::new(0, 10), bounds());
        b.observe(&w("app.service"), &d("a", 1), 1);
        let exe = Workload {
            kind: WorkloadKind::Executable,
            name: "app.service".into(),
        };
        b.observe(&exe, &d("a", 1), 1);
        assert!(b.state.find("app.service").is_err(), "ambiguous");
        assert_eq!(b.state.find("unit:app.service"), Ok(w("app.service")));
        assert!(b.state.find("zzz").is_err());
    }
}

//! Error spikes: per workload and destination, a rolling window of connection outcomes
//! (a TCP connect that failed, an HTTP response 4xx/5xx, or neither) and an alert when the
//! share of errors in the window crosses a threshold relative to that key's own recent normal.
//!
//! The window is [`BUCKETS`] buckets of `window / BUCKETS` each. A bucket that leaves the
//! window feeds the *normal*: an exponentially weighted share of errors over past buckets
//! (each leaving bucket weighs [`NORMAL_WEIGHT`]). A spike is a window with at least
//! `min_errors` errors (the absolute floor) whose error share is at least `factor` times the
//! normal share and at least [`MIN_SHARE`]. One alert per spike: the key is quiet again only
//! once its window falls back under the threshold.

use std::collections::{HashMap, VecDeque};

/// Buckets per window.
pub const BUCKETS: u64 = 6;
/// The weight of a bucket leaving the window in the normal share.
const NORMAL_WEIGHT: f64 = 0.2;
/// A window whose share of errors is below this is never a spike.
pub const MIN_SHARE: f64 = 0.1;

/// What became of one connection, for the spike counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connect failed (refused, timed out, unreachable...).
    Failed,
    /// The server answered with this HTTP status, 400-599.
    HttpError(u16),
    /// Neither.
    Ok,
}

/// The thresholds (`--spike-*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeConfig {
    pub window_ns: u64,
    pub min_errors: u64,
    pub factor: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    total: u64,
    failures: u64,
    http_errors: u64,
}

#[derive(Debug, Default)]
struct Key {
    buckets: VecDeque<Bucket>,
    /// Exponentially weighted share of errors in buckets past the window; `None` before any.
    normal: Option<f64>,
    in_spike: bool,
    last_index: u64,
}

/// A spike to alert about.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    /// Connections in the window.
    pub total: u64,
    pub failures: u64,
    pub http_errors: u64,
    /// The error share in the window.
    pub share: f64,
    /// The recent normal share (0 when nothing was seen before the window).
    pub normal: f64,
    /// The latest HTTP error status, if any.
    pub last_status: Option<u16>,
}

/// Every key's window, bounded.
#[derive(Debug)]
pub struct Spikes<K> {
    config: SpikeConfig,
    keys: HashMap<K, Key>,
    max_keys: usize,
    /// Keys forgotten because the table was full.
    pub evicted: u64,
}

impl<K: std::hash::Hash + Eq + Clone> Spikes<K> {
    pub fn new(config: SpikeConfig, max_keys: usize) -> Self {
        Self {
            config,
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
            evicted: 0,
        }
    }

    fn bucket_ns(&self) -> u64 {
        (self.config.window_ns / BUCKETS).max(1)
    }

    /// One connection's outcome at `now_ns` (boot clock). `Some` when it starts a spike.
    pub fn record(&mut self, key: &K, outcome: Outcome, now_ns: u64) -> Option<Spike> {
        let index = now_ns / self.bucket_ns();
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            self.make_room(index);
        }
        let config = self.config;
        let entry = self.keys.entry(key.clone()).or_default();
        entry.last_index = entry.last_index.max(index);
        roll(entry, index);
        if entry.buckets.back().map(|b| b.index) != Some(index) {
            entry.buckets.push_back(Bucket {
                index,
                ..Bucket::default()
            });
        }
        if let Some(bucket) = entry.buckets.back_mut() {
            bucket.total += 1;
            match outcome {
                Outcome::Failed => bucket.failures += 1,
                Outcome::HttpError(_) => bucket.http_errors += 1,
                Outcome::Ok => {}
            }
        }
        let (total, failures, http_errors) = entry.buckets.iter().fold((0, 0, 0), |acc, b| {
            (acc.0 + b.total, acc.1 + b.failures, acc.2 + b.http_errors)
        });
        let errors = failures + http_errors;
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let share = errors as f64 / total.max(1) as f64;
        let normal = entry.normal.unwrap_or(0.0);
        let spiking = errors >= config.min_errors
            && share >= MIN_SHARE
            && share >= config.factor * normal
            && share > normal;
        let starts = spiking && !entry.in_spike;
        if !spiking && share < MIN_SHARE.max(config.factor * normal) {
            entry.in_spike = false;
        }
        if starts {
            entry.in_spike = true;
            return Some(Spike {
                total,
                failures,
                http_errors,
                share,
                normal,
                last_status: match outcome {
                    Outcome::HttpError(status) => Some(status),
                    Outcome::Failed | Outcome::Ok => None,
                },
            });
        }
        None
    }

    /// Forgets keys idle for two windows (once a second is plenty).
    pub fn expire(&mut self, now_ns: u64) {
        let index = now_ns / self.bucket_ns();
        self.keys
            .retain(|_, k| index.saturating_sub(k.last_index) < BUCKETS * 2);
    }

    fn make_room(&mut self, index: u64) {
        self.keys
            .retain(|_, k| index.saturating_sub(k.last_index) < BUCKETS);
        if self.keys.len() >= self.max_keys {
            // Still full of active keys: the least recently active eighth goes.
            let mut ages: Vec<(u64, K)> = self
                .keys
                .iter()
                .map(|(key, k)| (k.last_index, key.clone()))
                .collect();
            ages.sort_by_key(|(i, _)| *i);
            let n = (ages.len() / 8).max(1);
            for (_, key) in ages.into_iter().take(n) {
                self.keys.remove(&key);
                self.evicted += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Buckets that left the window (ending before `index`'s window) feed the normal share.
fn roll(key: &mut Key, index: u64) {
    while let Some(front) = key.buckets.front().copied() {
        if index.saturating_sub(front.index) < BUCKETS {
            break;
        }
        key.buckets.pop_front();
        if front.total == 0 {
            continue;
        }
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let share = (front.failures + front.http_errors) as f64 / front.total as f64;
        key.normal = Some(match key.normal {
            Some(n) => n * (1.0 - NORMAL_WEIGHT) + share * NORMAL_WEIGHT,
            None => share,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn spikes() -> Spikes<&'static str> {
        Spikes::new(
            SpikeConfig {
                window_ns: 60 * S,
                min_errors: 5,
                factor: 3.0,
            },
            100,
        )
    }

    #[test]
    fn a_run_of_403s_after_a_normal_period_is_one_spike() {
        let mut s = spikes();
        let mut t = 0;
        for _ in 0..120 {
            assert!(s.record(&"k", Outcome::Ok, t).is_none());
            t += S;
        }
        let mut alerts = Vec::new();
        for i in 0..60 {
            let outcome = if i % 5 == 0 {
                Outcome::Ok
            } else {
                Outcome::HttpError(403)
            };
            alerts.extend(s.record(&"k", outcome, t));
            t += S / 2;
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let spike = &alerts[0];
        assert!(spike.http_errors >= 5);
        assert_eq!(spike.last_status, Some(403));
        assert!(spike.normal < 0.01);
    }

    #[test]
    fn an_occasional_404_is_not_a_spike() {
        let mut s = spikes();
        let mut t = 0;
        for i in 0..600 {
            let outcome = if i % 50 == 0 {
                Outcome::HttpError(404)
            } else {
                Outcome::Ok
            };
            assert!(s.record(&"k", outcome, t).is_none(), "at {i}");
            t += S / 4;
        }
    }

    #[test]
    fn failing_from_the_start_is_a_spike_once_and_a_steady_error_rate_is_its_normal() {
        let mut s = spikes();
        let mut count = 0;
        for i in 0..1_000u64 {
            count += usize::from(s.record(&"k", Outcome::Failed, i * S).is_some());
        }
        assert_eq!(count, 1, "one spike, not one per window");
        // Keys are independent.
        assert!(s.record(&"other", Outcome::Failed, 1_000 * S).is_none());
    }

    #[test]
    fn recovery_rearms() {
        let mut s = spikes();
        let mut t = 0;
        let mut n = 0;
        for round in 0..2 {
            for _ in 0..200 {
                s.record(&"k", Outcome::Ok, t);
                t += S;
            }
            for _ in 0..10 {
                n += usize::from(s.record(&"k", Outcome::Failed, t).is_some());
                t += S;
            }
            assert_eq!(n, round + 1);
        }
    }

    #[test]
    fn bounded() {
        let mut s = Spikes::new(
            SpikeConfig {
                window_ns: 60 * S,
                min_errors: 5,
                factor: 3.0,
            },
            8,
        );
        for i in 0..1_000u32 {
            s.record(&i, Outcome::Ok, 0);
        }
        assert!(s.len() <= 8);
        assert!(s.evicted > 0);
        s.expire(1_000 * S);
        assert!(s.is_empty());
    }
}

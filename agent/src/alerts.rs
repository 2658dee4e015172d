//! Alerts for unapproved destinations, deduplicated so a retry loop does not flood the log.
//!
//! The key is (process executable, cgroup, destination ip, port, transport). The first
//! occurrence alerts at once (`repeats` 0). Further occurrences within the window are counted;
//! when the window ends, one more alert reports how many there were (`repeats` N). A later
//! occurrence starts a new window.

use std::{collections::HashMap, net::IpAddr};

use crate::record::{ConnectionRecord, Transport};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AlertKey {
    executable: String,
    cgroup_id: u64,
    ip: IpAddr,
    port: u16,
    transport: Transport,
    /// The name the first bytes carried (an address may serve several).
    name: Option<String>,
}

impl AlertKey {
    fn of(record: &ConnectionRecord) -> Self {
        Self {
            executable: record
                .process
                .executable
                .clone()
                .unwrap_or_else(|| record.process.name.clone()),
            cgroup_id: record.cgroup.id,
            ip: record.ip,
            port: record.port,
            transport: record.transport,
            name: record
                .first_bytes
                .as_ref()
                .and_then(|f| f.name())
                .map(|(name, _)| name.to_owned()),
        }
    }
}

#[derive(Debug)]
struct Window {
    start_ns: u64,
    suppressed: u64,
    /// The latest suppressed occurrence, reported by the summary alert.
    latest: Option<ConnectionRecord>,
}

/// An alert line to write.
#[derive(Debug, Clone)]
pub struct Alert {
    pub record: ConnectionRecord,
    /// Occurrences since the previous alert for the same key that produced no alert.
    pub repeats: u64,
}

#[derive(Debug)]
pub struct Alerts {
    window_ns: u64,
    max_keys: usize,
    windows: HashMap<AlertKey, Window>,
    /// Occurrences that produced no alert line of their own.
    pub suppressed_total: u64,
}

impl Alerts {
    pub fn new(window_ns: u64, max_keys: usize) -> Self {
        Self {
            window_ns,
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
            suppressed_total: 0,
        }
    }

    /// An unapproved (or blocked) connection at `record.ktime_ns`: the alert to write, if any.
    pub fn occurrence(&mut self, record: &ConnectionRecord) -> Option<Alert> {
        let key = AlertKey::of(record);
        let now = record.ktime_ns;
        if let Some(window) = self.windows.get_mut(&key) {
            if now.saturating_sub(window.start_ns) < self.window_ns {
                window.suppressed += 1;
                window.latest = Some(record.clone());
                self.suppressed_total += 1;
                return None;
            }
            // The window is over: this occurrence alerts and carries any count not yet reported.
            let repeats = window.suppressed;
            *window = Window {
                start_ns: now,
                suppressed: 0,
                latest: None,
            };
            return Some(Alert {
                record: record.clone(),
                repeats,
            });
        }
        if self.windows.len() >= self.max_keys {
            self.windows.retain(|_, w| w.suppressed > 0);
            if self.windows.len() >= self.max_keys {
                // Still full of busy keys: forget them (their counts are lost, not their alerts).
                self.windows.clear();
            }
        }
        self.windows.insert(
            key,
            Window {
                start_ns: now,
                suppressed: 0,
                latest: None,
            },
        );
        Some(Alert {
            record: record.clone(),
            repeats: 0,
        })
    }

    /// Windows that ended: a summary alert for each that suppressed something; quiet keys are
    /// forgotten after two windows.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Alert> {
        let mut out = Vec::new();
        let window_ns = self.window_ns;
        self.windows.retain(|_, window| {
            let age = now_ns.saturating_sub(window.start_ns);
            if age >= window_ns && window.suppressed > 0 {
                if let Some(record) = window.latest.take() {
                    out.push(Alert {
                        record,
                        repeats: window.suppressed,
                    });
                }
                window.suppressed = 0;
                window.start_ns = now_ns;
                return true;
            }
            age < window_ns.saturating_mul(2)
        });
        out
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        cgroup::CgroupInfo,
        process::ProcessInfo,
        record::{sample, Action},
    };

    fn record(ktime_ns: u64, port: u16) -> ConnectionRecord {
        ConnectionRecord {
            ktime_ns,
            process: Arc::new(ProcessInfo {
                executable: Some("/usr/bin/curl".into()),
                ..ProcessInfo::from_comm(1, "curl")
            }),
            cgroup: Arc::new(CgroupInfo {
                id: 7,
                path: None,
                systemd_unit: None,
            }),
            ..sample(Action::Connect, Transport::Tcp, "93.184.216.34", port)
        }
    }

    #[test]
    fn first_alerts_then_counts_then_summarises() {
        let mut alerts = Alerts::new(1_000, 100);
        assert_eq!(
            alerts.occurrence(&record(0, 443)).map(|a| a.repeats),
            Some(0)
        );
        for t in 1..=5 {
            assert!(alerts.occurrence(&record(t * 100, 443)).is_none());
        }
        assert_eq!(alerts.suppressed_total, 5);
        assert!(alerts.tick(900).is_empty(), "window not over yet");
        let summary = alerts.tick(1_000);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].repeats, 5);
        assert_eq!(summary[0].record.ktime_ns, 500, "the latest occurrence");
        assert!(alerts.tick(1_500).is_empty(), "nothing new to report");
    }

    #[test]
    fn keys_are_independent() {
        let mut alerts = Alerts::new(1_000, 100);
        assert!(alerts.occurrence(&record(0, 443)).is_some());
        assert!(alerts.occurrence(&record(1, 80)).is_some());
        assert!(alerts.occurrence(&record(2, 443)).is_none());
    }

    #[test]
    fn an_occurrence_after_the_window_alerts_again_with_the_unreported_count() {
        let mut alerts = Alerts::new(1_000, 100);
        alerts.occurrence(&record(0, 443));
        alerts.occurrence(&record(10, 443));
        let again = alerts.occurrence(&record(5_000, 443)).unwrap();
        assert_eq!(again.repeats, 1);
    }

    #[test]
    fn quiet_keys_are_forgotten_and_the_table_is_bounded() {
        let mut alerts = Alerts::new(1_000, 2);
        alerts.occurrence(&record(0, 1));
        alerts.occurrence(&record(0, 2));
        alerts.occurrence(&record(0, 3));
        assert!(alerts.len() <= 2);
        alerts.tick(10_000);
        assert!(alerts.is_empty());
    }
}

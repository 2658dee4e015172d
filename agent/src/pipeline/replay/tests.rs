//! A short replay (not timed): every connection is written, whole, named, chained, and
//! nothing is dropped.

use std::{collections::HashMap, path::PathBuf};

use serde_json::Value;

use super::{run, ReplayConfig, ReplayReport};
use crate::output::{verify::verify, OUTPUT_DATASET};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("egret-replay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn replay(
    name: &str,
    change: impl FnOnce(&mut ReplayConfig),
) -> (TempDir, ReplayReport, Vec<Value>) {
    let dir = TempDir::new(name);
    let mut config = ReplayConfig::new(dir.0.clone());
    config.connections = 2_000;
    change(&mut config);
    let report = run(&config).unwrap();
    let lines = std::fs::read_to_string(&report.output)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .collect();
    (dir, report, lines)
}

fn text<'a>(line: &'a Value, path: &str) -> &'a str {
    path.split('.')
        .fold(line, |v, key| &v[key])
        .as_str()
        .unwrap_or_default()
}

/// Every check of a replay's output; returns the event lines by action.
fn check(report: &ReplayReport, lines: &[Value]) -> HashMap<String, usize> {
    let counts = report.counts;
    assert!(counts.connections() >= 2_000);
    let m = &report.metrics;
    assert_eq!(m.events_received, counts.records);
    assert_eq!(
        (m.events_dropped_userspace, m.decode_errors, m.write_errors),
        (0, 0, 0)
    );
    assert_eq!((m.tcp_ends_without_start, m.tcp_connections_lost), (0, 0));
    assert_eq!(
        (
            m.udp_flows_evicted,
            m.process_table_misses,
            m.process_table_stale
        ),
        (0, 0, 0)
    );
    assert_eq!(m.tcp_connection_ends, counts.tcp);
    // The file's own first line is not counted among the lines written.
    let own = lines
        .iter()
        .filter(|l| l["event"]["dataset"] == OUTPUT_DATASET)
        .count();
    assert_eq!(m.lines_written, (lines.len() - own) as u64);
    let verified = verify(std::slice::from_ref(&report.output)).unwrap();
    assert!(verified.intact(), "{verified}");
    assert_eq!(verified.lines, lines.len() as u64);

    let mut actions: HashMap<String, usize> = HashMap::new();
    let mut starts: HashMap<&str, usize> = HashMap::new();
    let mut ends: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        if line["event"]["dataset"] == OUTPUT_DATASET || text(line, "event.kind") != "event" {
            continue;
        }
        let action = text(line, "event.action");
        *actions.entry(action.to_owned()).or_default() += 1;
        let id = text(line, "egret.connection.id");
        match action {
            "connect" => *starts.entry(id).or_default() += 1,
            "connection-end" => *ends.entry(id).or_default() += 1,
            _ => {}
        }
        // Lines carry the whole ancestry, like real ones.
        for field in ["parent.pid", "session_leader.pid", "entry_leader.pid"] {
            assert!(
                line["process"][field.split('.').next().unwrap()].is_object(),
                "{line}"
            );
        }
        let ip = text(line, "destination.ip");
        let named = ip.starts_with("203.0.113.")
            || ip.starts_with("198.51.100.")
            || ip.starts_with("2001:db8:ffff:");
        if named {
            assert!(
                text(line, "destination.domain").starts_with("node-"),
                "{line}"
            );
        }
    }
    assert_eq!(starts.len() as u64, counts.tcp);
    assert!(starts.values().all(|&n| n == 1));
    assert_eq!(starts.keys().collect::<Vec<_>>().len(), ends.len());
    assert!(starts.keys().all(|id| ends.get(id) == Some(&1)));
    assert_eq!(
        actions.get("send").copied().unwrap_or(0) as u64,
        counts.udp_flows
    );
    actions
}

#[test]
fn a_short_replay_writes_every_connection_whole_named_and_chained() {
    let (_dir, report, lines) = replay("audit", |_| {});
    let actions = check(&report, &lines);
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(report.counts.dns_answers > 0 && report.counts.commands > 0);
    // The same seed gives the same records.
    let (_again, second, _) = replay("audit-again", |_| {});
    assert_eq!(second.counts, report.counts);
}

#[test]
fn a_block_mode_replay_with_first_bytes_and_a_long_entry_argument() {
    let (_dir, report, lines) = replay("block", |config| {
        config.block_rules = Some(1000);
        config.first_bytes = true;
        config.long_entry_args = true;
    });
    check(&report, &lines);
    assert!(report.counts.payloads > 0);
    assert_eq!(report.metrics.alerts, 0);
    let connect = lines
        .iter()
        .find(|l| text(l, "event.action") == "connect" && text(l, "destination.port") != "x")
        .unwrap();
    assert_eq!(text(connect, "egret.policy.mode"), "block");
    assert_eq!(text(connect, "egret.policy.verdict"), "approved");
    let entry_args = connect["process"]["entry_leader"]["args"].to_string();
    assert!(entry_args.len() > 500, "{entry_args}");
    assert!(lines
        .iter()
        .any(|l| !text(l, "tls.client.server_name").is_empty() || l["http"].is_object()));
}

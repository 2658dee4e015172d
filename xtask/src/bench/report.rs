//! The benchmark's results table, `results.json` and target verdict.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::parse::{median, Metrics};
use super::{Round, Workload, WorkloadResult};

/// With egret, the TCP connect loop must keep at least this share of its baseline rate (also
/// when egret enforces a block-mode policy).
const MIN_TCP_RATIO: f64 = 0.90;

#[derive(Serialize)]
struct Summary<'a> {
    workload: Workload,
    label: String,
    /// Rules of the enforced block-mode policy (`tcp-policy` only).
    policy_rules: Option<u32>,
    action: &'static str,
    baseline_ops_per_sec: f64,
    egret_ops_per_sec: f64,
    ratio: f64,
    /// Operations performed while egret watched (all rounds).
    ops_with_egret: u64,
    /// `event.action` lines egret logged for them (all rounds).
    events_logged: u64,
    /// Of those, lines with policy verdict `approved` / `blocked` (all rounds).
    events_approved: u64,
    events_blocked: u64,
    /// Sums over rounds of each egret run's last metric line; null if a run wrote none.
    events_received: Option<u64>,
    events_lost_kernel: Option<u64>,
    events_dropped_userspace: Option<u64>,
    egret_peak_rss_kib: Option<u64>,
    rounds: &'a [Round],
}

#[derive(Serialize)]
struct Results<'a> {
    rounds: u32,
    duration_ms: u64,
    kernel: String,
    cpus: usize,
    workloads: Vec<Summary<'a>>,
    target_missed: Vec<String>,
}

/// Prints the table and verdict and writes `<work_dir>/results.json`.
pub fn report(
    results: &[WorkloadResult],
    rounds: u32,
    duration_ms: u64,
    work_dir: &Path,
) -> Result<()> {
    let workloads: Vec<_> = results.iter().map(summarize).collect();
    print_table(&workloads);
    let target_missed = target_misses(&workloads);
    let document = Results {
        rounds,
        duration_ms,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        workloads,
        target_missed,
    };
    let path = work_dir.join("results.json");
    let json = serde_json::to_string_pretty(&document)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    print_verdict(&document);
    Ok(())
}

fn summarize(result: &WorkloadResult) -> Summary<'_> {
    let rounds = result.rounds.as_slice();
    let baseline: Vec<f64> = rounds.iter().map(|r| r.baseline.rate()).collect();
    let with_egret: Vec<f64> = rounds.iter().map(|r| r.with_egret.rate()).collect();
    let baseline_ops_per_sec = median(&baseline).unwrap_or(0.0);
    let egret_ops_per_sec = median(&with_egret).unwrap_or(0.0);
    Summary {
        workload: result.workload,
        label: result.label.clone(),
        policy_rules: result.policy_rules,
        action: result.workload.action(),
        baseline_ops_per_sec,
        egret_ops_per_sec,
        ratio: ratio(egret_ops_per_sec, baseline_ops_per_sec),
        ops_with_egret: rounds.iter().map(|r| r.with_egret.ops).sum(),
        events_logged: rounds.iter().map(|r| r.log.events).sum(),
        events_approved: rounds.iter().map(|r| r.log.approved).sum(),
        events_blocked: rounds.iter().map(|r| r.log.blocked).sum(),
        events_received: sum_metric(rounds, |m| m.events_received),
        events_lost_kernel: sum_metric(rounds, |m| m.events_lost_kernel),
        events_dropped_userspace: sum_metric(rounds, |m| m.events_dropped_userspace),
        egret_peak_rss_kib: rounds.iter().filter_map(|r| r.egret_peak_rss_kib).max(),
        rounds,
    }
}

fn ratio(with: f64, without: f64) -> f64 {
    if without > 0.0 {
        with / without
    } else {
        0.0
    }
}

fn sum_metric(rounds: &[Round], field: impl Fn(&Metrics) -> u64) -> Option<u64> {
    rounds
        .iter()
        .map(|r| r.log.metrics.as_ref().map(&field))
        .sum()
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn show_rss(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".to_owned(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    )
}

fn print_table(workloads: &[Summary<'_>]) {
    let width = workloads
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(0)
        .max(12);
    println!(
        "{:<width$} {:>14} {:>14} {:>6} {:>21} {:>12} {:>13} {:>14} {:>8}",
        "workload",
        "baseline ops/s",
        "egret ops/s",
        "ratio",
        "events/ops",
        "lost(kernel)",
        "dropped(user)",
        "egret peak RSS",
        "blocked"
    );
    for s in workloads {
        println!(
            "{:<width$} {:>14.0} {:>14.0} {:>6.3} {:>21} {:>12} {:>13} {:>14} {:>8}",
            s.label,
            s.baseline_ops_per_sec,
            s.egret_ops_per_sec,
            s.ratio,
            format!("{}/{}", s.events_logged, s.ops_with_egret),
            show(s.events_lost_kernel),
            show(s.events_dropped_userspace),
            show_rss(s.egret_peak_rss_kib),
            if s.policy_rules.is_some() {
                s.events_blocked.to_string()
            } else {
                "-".to_owned()
            },
        );
    }
}

/// Reasons the run misses its targets (empty when all are met).
fn target_misses(workloads: &[Summary<'_>]) -> Vec<String> {
    let mut misses = Vec::new();
    for s in workloads {
        let label = &s.label;
        if matches!(s.workload, Workload::Tcp | Workload::TcpPolicy) && s.ratio < MIN_TCP_RATIO {
            misses.push(format!(
                "{label}: ratio {:.3} < {MIN_TCP_RATIO:.2}",
                s.ratio
            ));
        }
        if let Some(lost) = s.events_lost_kernel.filter(|&n| n > 0) {
            misses.push(format!("{label}: {lost} events lost in the kernel"));
        }
        if let Some(dropped) = s.events_dropped_userspace.filter(|&n| n > 0) {
            misses.push(format!("{label}: {dropped} events dropped in userspace"));
        }
        if s.events_logged < s.ops_with_egret {
            let missing = s.ops_with_egret - s.events_logged;
            misses.push(format!(
                "{label}: {missing} of {} operations missing from the log",
                s.ops_with_egret
            ));
        }
        if s.policy_rules.is_some() && s.events_approved < s.events_logged {
            misses.push(format!(
                "{label}: {} of {} connect lines not approved ({} blocked); the 127.0.0.0/8 rule should approve every one",
                s.events_logged - s.events_approved,
                s.events_logged,
                s.events_blocked
            ));
        }
    }
    misses
}

fn print_verdict(results: &Results<'_>) {
    for s in &results.workloads {
        if s.events_received.is_none() {
            println!("warning: {}: an egret run wrote no metric line", s.label);
        }
    }
    if results.target_missed.is_empty() {
        println!("all targets met");
    }
    for miss in &results.target_missed {
        println!("TARGET MISSED: {miss}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::parse::{LogSummary, Sample};

    fn round(baseline_ops: u64, egret_ops: u64, events: u64, lost: u64) -> Round {
        let second = 1_000_000_000;
        Round {
            baseline: Sample {
                ops: baseline_ops,
                elapsed_ns: second,
            },
            with_egret: Sample {
                ops: egret_ops,
                elapsed_ns: second,
            },
            log: LogSummary {
                events,
                approved: 0,
                blocked: 0,
                metrics: Some(Metrics {
                    events_received: events,
                    events_lost_kernel: lost,
                    events_dropped_userspace: 0,
                }),
                unparsable_lines: 0,
            },
            egret_peak_rss_kib: Some(1000 + lost),
        }
    }

    #[test]
    fn summary_uses_medians_and_sums() {
        let result = WorkloadResult {
            workload: Workload::Tcp,
            label: Workload::Tcp.label(0),
            policy_rules: None,
            rounds: vec![
                round(100, 95, 95, 0),
                round(200, 50, 50, 0),
                round(120, 90, 90, 0),
            ],
        };
        let s = summarize(&result);
        assert_eq!(s.baseline_ops_per_sec, 120.0);
        assert_eq!(s.egret_ops_per_sec, 90.0);
        assert_eq!(s.ratio, 0.75);
        assert_eq!(s.ops_with_egret, 235);
        assert_eq!(s.events_logged, 235);
        assert_eq!(s.events_lost_kernel, Some(0));
        assert_eq!(s.egret_peak_rss_kib, Some(1000));
        assert_eq!(
            target_misses(&[s]),
            vec!["tcp connect: ratio 0.750 < 0.90".to_owned()]
        );
    }

    #[test]
    fn losses_miss_the_target() {
        let result = WorkloadResult {
            workload: Workload::Udp,
            label: Workload::Udp.label(0),
            policy_rules: None,
            rounds: vec![round(100, 100, 90, 10)],
        };
        let misses = target_misses(&[summarize(&result)]);
        assert_eq!(
            misses,
            vec![
                "udp send: 10 events lost in the kernel".to_owned(),
                "udp send: 10 of 100 operations missing from the log".to_owned(),
            ]
        );
    }

    #[test]
    fn policy_workload_needs_every_connect_approved() {
        let mut good = round(100, 95, 95, 0);
        good.log.approved = 95;
        let mut bad = round(100, 95, 95, 0);
        bad.log.approved = 90;
        bad.log.blocked = 5;
        let result = |r: Round| WorkloadResult {
            workload: Workload::TcpPolicy,
            label: Workload::TcpPolicy.label(1000),
            policy_rules: Some(1000),
            rounds: vec![r],
        };
        assert!(target_misses(&[summarize(&result(good))]).is_empty());
        assert_eq!(
            target_misses(&[summarize(&result(bad))]),
            vec![
                "tcp connect, block mode, 1000 rules: 5 of 95 connect lines not approved (5 blocked); \
                 the 127.0.0.0/8 rule should approve every one"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn missing_metrics_sum_to_none() {
        let mut without_metrics = round(1, 1, 1, 0);
        without_metrics.log.metrics = None;
        let rounds = [round(1, 1, 1, 0), without_metrics];
        assert_eq!(sum_metric(&rounds, |m| m.events_received), None);
        assert_eq!(sum_metric(&rounds[..1], |m| m.events_received), Some(1));
    }
}

//! The replay benchmark of the userspace pipeline (`--replay`, `--replay-only`): a generated
//! node's ring-buffer records through egret's whole pipeline on this thread, no kernel
//! (`egret::pipeline::replay`), timed by the thread's CPU clock. Deterministic: the same
//! seed gives the same records, so instruction counts compare between versions.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::ValueEnum as _;
use serde::Serialize;

use egret::pipeline::replay::{self, ReplayConfig, ReplayReport};

use super::options::{BenchOptions, ReplayVariant};
use super::parse::median;

/// The replay's seed (fixed: every run replays the same records).
const SEED: u64 = 15;
const METHOD: &str = "replay: generated ring-buffer records (exec, fork, exit, connect, \
     connection end, DNS query flows and answers, UDP flows and socket releases; fixed seed) fed \
     through egret's whole pipeline on one thread without the kernel: Pipeline::handle per \
     record, after_drain every 256 records, tick per simulated second (50,000 connections), \
     shutdown; output to a file with the chain. CPU = this thread's user + system time \
     (getrusage RUSAGE_THREAD) over the timed parts only (record generation excluded); \
     connections = TCP connects + UDP flows; median of the rounds.";

impl ReplayVariant {
    fn label(self, policy_rules: u32) -> String {
        match self {
            Self::Audit => "replay, audit (defaults)".to_owned(),
            Self::LongEntryArgs => "replay, audit, 1 KB entry-leader argument".to_owned(),
            Self::FirstBytes => "replay, audit, first bytes on every HTTP(S) connection".to_owned(),
            Self::Block => format!("replay, block mode, {policy_rules} rules"),
            Self::StartsOnly => "replay, audit, --connection-ends off".to_owned(),
            Self::Merged => "replay, audit, --merge-short-connections on".to_owned(),
        }
    }

    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }

    fn configure(self, config: &mut ReplayConfig, policy_rules: u32) {
        match self {
            Self::Audit => {}
            Self::LongEntryArgs => config.long_entry_args = true,
            Self::FirstBytes => config.first_bytes = true,
            Self::Block => config.block_rules = Some(policy_rules),
            Self::StartsOnly => config.connection_ends = false,
            Self::Merged => config
                .run_flags
                .extend(["--merge-short-connections".to_owned(), "on".to_owned()]),
        }
    }
}

#[derive(Serialize)]
struct RoundResult {
    cpu_seconds: f64,
    user_seconds: f64,
    system_seconds: f64,
    wall_seconds: f64,
    connections_per_cpu_second: f64,
}

#[derive(Serialize)]
struct VariantSummary {
    variant: ReplayVariant,
    label: String,
    /// Per round (every round replays the same records).
    connections: u64,
    tcp_connections: u64,
    udp_flows: u64,
    dns_answers: u64,
    short_lived_commands: u64,
    first_byte_records: u64,
    records: u64,
    /// Connections per second of one core's CPU time (median of the rounds), and its range.
    connections_per_second_per_core: f64,
    connections_per_second_per_core_min: f64,
    connections_per_second_per_core_max: f64,
    /// CPU µs per connection (median), user and system.
    cpu_us_per_connection: f64,
    user_us_per_connection: f64,
    system_us_per_connection: f64,
    /// Connections per wall-clock second of the timed parts (median).
    connections_per_wall_second: f64,
    lines: u64,
    lines_per_connection: f64,
    bytes_per_line: f64,
    output_bytes: u64,
    events_dropped_userspace: u64,
    write_errors: u64,
    tcp_connection_ends: u64,
    alerts: u64,
    rounds: Vec<RoundResult>,
}

#[derive(Serialize)]
struct ReplayResults {
    method: &'static str,
    seed: u64,
    connections_per_simulated_second: u64,
    records_per_drain: usize,
    variants: Vec<VariantSummary>,
}

/// Runs the chosen variants `--rounds` times each, prints them and writes them into
/// `<work_dir>/results.json`: under `replay` next to the workloads' results (`merge`), or alone.
pub fn bench(options: &BenchOptions, work_dir: &Path, merge: bool) -> Result<()> {
    let mut variants = match options.replay_variants.as_slice() {
        [] => ReplayVariant::value_variants().to_vec(),
        chosen => chosen.to_vec(),
    };
    variants.sort();
    variants.dedup();
    let mut summaries = Vec::new();
    for variant in variants {
        summaries.push(run_variant(options, variant, work_dir)?);
    }
    print_table(&summaries);
    let defaults = ReplayConfig::new(work_dir.to_path_buf());
    let results = ReplayResults {
        method: METHOD,
        seed: SEED,
        connections_per_simulated_second: defaults.rate,
        records_per_drain: defaults.drain_records,
        variants: summaries,
    };
    write_results(&results, work_dir, merge)
}

fn run_variant(
    options: &BenchOptions,
    variant: ReplayVariant,
    work_dir: &Path,
) -> Result<VariantSummary> {
    let dir = options
        .replay_dir
        .as_deref()
        .unwrap_or(work_dir)
        .join(format!("egret-replay-{}", variant.name()));
    let mut reports = Vec::new();
    for round in 1..=options.rounds {
        // A fresh directory each round; the output (hundreds of MB) goes once measured.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut config = ReplayConfig::new(dir.clone());
        config.seed = SEED;
        config.connections = options.replay_connections;
        variant.configure(&mut config, options.policy_rules);
        let report = replay::run(&config).with_context(|| variant.label(options.policy_rules))?;
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "egret-bench: replay round {round}/{} {}: {:.0} connections/s/core ({:.2} µs CPU each, user {:.2}, system {:.2}), {:.2} lines/connection, {:.0} bytes/line",
            options.rounds,
            variant.label(options.policy_rules),
            report.connections_per_cpu_second(),
            report.cpu_us_per_connection(),
            per_connection_us(&report, report.user.as_secs_f64()),
            per_connection_us(&report, report.system.as_secs_f64()),
            report.lines_per_connection(),
            report.bytes_per_line(),
        );
        reports.push(report);
    }
    summarize(variant, options.policy_rules, &reports)
}

fn per_connection_us(report: &ReplayReport, seconds: f64) -> f64 {
    seconds * 1e6 / (report.counts.connections().max(1) as f64)
}

fn summarize(
    variant: ReplayVariant,
    policy_rules: u32,
    reports: &[ReplayReport],
) -> Result<VariantSummary> {
    let last = reports.last().context("no replay round ran")?;
    let of = |f: &dyn Fn(&ReplayReport) -> f64| -> Vec<f64> { reports.iter().map(f).collect() };
    let rates = of(&ReplayReport::connections_per_cpu_second);
    let pick = |values: &[f64]| median(values).unwrap_or(0.0);
    let counts = last.counts;
    let metrics = &last.metrics;
    Ok(VariantSummary {
        variant,
        label: variant.label(policy_rules),
        connections: counts.connections(),
        tcp_connections: counts.tcp,
        udp_flows: counts.udp_flows,
        dns_answers: counts.dns_answers,
        short_lived_commands: counts.commands,
        first_byte_records: counts.payloads,
        records: counts.records,
        connections_per_second_per_core: pick(&rates),
        connections_per_second_per_core_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        connections_per_second_per_core_max: rates.iter().copied().fold(0.0, f64::max),
        cpu_us_per_connection: pick(&of(&ReplayReport::cpu_us_per_connection)),
        user_us_per_connection: pick(&of(&|r| per_connection_us(r, r.user.as_secs_f64()))),
        system_us_per_connection: pick(&of(&|r| per_connection_us(r, r.system.as_secs_f64()))),
        connections_per_wall_second: pick(&of(&|r| {
            r.counts.connections() as f64 / r.wall.as_secs_f64().max(1e-9)
        })),
        lines: metrics.lines_written,
        lines_per_connection: last.lines_per_connection(),
        bytes_per_line: last.bytes_per_line(),
        output_bytes: last.bytes,
        events_dropped_userspace: metrics.events_dropped_userspace,
        write_errors: metrics.write_errors,
        tcp_connection_ends: metrics.tcp_connection_ends,
        alerts: metrics.alerts,
        rounds: reports
            .iter()
            .map(|r| RoundResult {
                cpu_seconds: r.cpu().as_secs_f64(),
                user_seconds: r.user.as_secs_f64(),
                system_seconds: r.system.as_secs_f64(),
                wall_seconds: r.wall.as_secs_f64(),
                connections_per_cpu_second: r.connections_per_cpu_second(),
            })
            .collect(),
    })
}

fn print_table(summaries: &[VariantSummary]) {
    let width = summaries
        .iter()
        .map(|s| s.label.len())
        .max()
        .unwrap_or(0)
        .max(12);
    println!(
        "{:<width$} {:>12} {:>16} {:>12} {:>10} {:>10} {:>11} {:>8}",
        "replay",
        "connections",
        "conns/s/core",
        "µs CPU/conn",
        "user µs",
        "sys µs",
        "lines/conn",
        "B/line"
    );
    for s in summaries {
        println!(
            "{:<width$} {:>12} {:>16.0} {:>12.2} {:>10.2} {:>10.2} {:>11.2} {:>8.0}",
            s.label,
            s.connections,
            s.connections_per_second_per_core,
            s.cpu_us_per_connection,
            s.user_us_per_connection,
            s.system_us_per_connection,
            s.lines_per_connection,
            s.bytes_per_line
        );
    }
    println!("{METHOD}");
}

/// `results.json`: the replay under `replay`, next to what the workloads wrote (`merge`), or
/// alone (`--replay-only`).
fn write_results(results: &ReplayResults, work_dir: &Path, merge: bool) -> Result<()> {
    let path = work_dir.join("results.json");
    let mut document = if merge {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("parsing {}", path.display()))?
    } else {
        serde_json::json!({})
    };
    if let Some(object) = document.as_object_mut() {
        object.insert("replay".to_owned(), serde_json::to_value(results)?);
    }
    let json = serde_json::to_string_pretty(&document)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    Ok(())
}

//! The benchmark's results table, `results.json` and target verdict.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::dns::{self, ClientCounts};
use egret::metrics::Metrics;

use super::kernel::{self, KernelCost};
use super::parse::{median, REQUEST_PATH, RESPONSE_STATUS};
use super::{Round, Workload, WorkloadResult};

/// With egret, the TCP connect loop must keep at least this share of its baseline rate (also
/// when egret enforces a block-mode policy).
const MIN_TCP_RATIO: f64 = 0.90;
/// With the first bytes read, at least this share of a `tcp-request` run's end lines must
/// name the request's path and the answer's status.
const MIN_REQUEST_SHARE: f64 = 0.999;
/// What the CPU column counts, printed under the table.
const CPU_NOTE: &str = "egret CPU µs/op: user + system time of all of egret's threads \
     (/proc/<pid>/stat utime + stime) from its ready file to just before SIGTERM (the loop, then \
     1.5 s of settling), divided by the loop's operations in that run; median of the rounds. \
     The eBPF programs run in the load's own threads and are not in it (they are in the ratio \
     and in kernel ns/op: run_time_ns of egret's programs over the same span, divided by the \
     loop's operations, all rounds together; the kernel's accounting was on during it). \
     lines/op: every line of the with-egret log per operation; B/line: their mean size.";

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
    /// What egret adds to one operation, in µs: `1e6 / egret − 1e6 / baseline` (medians).
    added_us_per_op: f64,
    /// Operations performed while egret watched (all rounds).
    ops_with_egret: u64,
    /// `event.action` lines egret logged for them (all rounds).
    events_logged: u64,
    /// Of those, lines with policy verdict `approved` / `blocked` (all rounds).
    events_approved: u64,
    /// `connection-end` lines (all rounds).
    ends_logged: u64,
    events_blocked: u64,
    /// Sums over rounds of each egret run's last metric line; null if a run wrote none.
    events_received: Option<u64>,
    events_lost_kernel: Option<u64>,
    events_dropped_userspace: Option<u64>,
    egret_peak_rss_kib: Option<u64>,
    /// egret's own CPU time per operation, in µs: see [`CPU_NOTE`]. Median and range of the
    /// rounds; null if no round could read it.
    egret_cpu_us_per_op: Option<f64>,
    egret_cpu_us_per_op_min: Option<f64>,
    egret_cpu_us_per_op_max: Option<f64>,
    /// egret's kernel programs' run time per operation, by program (all rounds together);
    /// null if no round could read it.
    kernel: Option<KernelCost>,
    /// Lines of egret's log per operation (every line: events, ends, processes, metrics), and
    /// their mean size in bytes (all rounds together).
    lines_per_op: Option<f64>,
    bytes_per_line: Option<f64>,
    /// The request workloads' own checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<RequestSummary>,
    /// The resolve-and-connect workloads' own checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<DnsSummary>,
    rounds: &'a [Round],
}

/// What the end lines of a `tcp-request` / `tcp-request-plain` workload read from the first
/// bytes (sums over rounds).
#[derive(Serialize)]
struct RequestSummary {
    /// Whether egret read the first bytes (`--first-bytes`).
    first_bytes: bool,
    path: &'static str,
    status: u16,
    /// End lines whose `url.path` is `path`.
    ends_with_path: u64,
    /// End lines whose `http.response.status_code` is `status`.
    ends_with_status: u64,
    /// End lines with anything from the first bytes (`tls`, `http`, `url`).
    ends_with_first_bytes: u64,
    /// `first_bytes_read` / `first_bytes_evicted` of each run's last metric line; null if a
    /// run wrote none.
    first_bytes_read: Option<u64>,
    first_bytes_evicted: Option<u64>,
}

/// What reading the first bytes costs per connection: `tcp-request` − `tcp-request-plain`
/// (medians, same run, same baseline).
#[derive(Serialize, Debug, PartialEq)]
struct FirstBytesCost {
    /// Added wall time per connection of the loop, in µs.
    added_us_per_connection: f64,
    /// Added egret CPU per connection, in µs (null if either could not be read).
    egret_cpu_us_per_connection: Option<f64>,
}

/// What a `dns` / `dns-block` workload's client and egret reported (sums over rounds).
#[derive(Serialize)]
struct DnsSummary {
    name: &'static str,
    /// Resolve + connect iterations per run.
    iterations_per_run: u64,
    baseline_client: ClientCounts,
    egret_client: ClientCounts,
    /// DNS answers egret received (`dns_messages` of each run's last metric line); null if
    /// a run wrote no metric line.
    dns_messages: Option<u64>,
    /// Connect lines whose `destination.domain` is `name`.
    connect_lines_with_domain: u64,
}

/// The cost of a DNS answer to egret, derived from the `dns`, `tcp` (and `udp`, `dns-block`)
/// workloads of one run; all in µs added per operation (medians).
#[derive(Serialize, Debug, PartialEq)]
struct AnswerCost {
    /// Per iteration of the `dns` loop: one UDP query (new socket), one answer, one connect.
    dns_added_us_per_resolve_connect: f64,
    /// Per connect of the `tcp` loop.
    tcp_added_us_per_connect: f64,
    /// `dns` − `tcp`: one answer, with the query that asked for it.
    added_us_per_answer: f64,
    /// Per send of the `udp` loop (new socket per datagram, like each query), when it ran.
    udp_added_us_per_send: Option<f64>,
    /// `dns` − `tcp` − `udp`: the answer alone.
    added_us_per_answer_without_query: Option<f64>,
    /// Per iteration of the `dns-block` loop, against the `dns` baseline, when it ran.
    dns_block_added_us_per_resolve_connect: Option<f64>,
    /// `dns-block` − `dns`: what block mode with a domain rule adds per iteration.
    block_mode_added_us_per_resolve_connect: Option<f64>,
}

#[derive(Serialize)]
struct Results<'a> {
    rounds: u32,
    duration_ms: u64,
    kernel: String,
    cpus: usize,
    workloads: Vec<Summary<'a>>,
    /// Null unless the `dns` and `tcp` workloads both ran.
    dns_answer_cost: Option<AnswerCost>,
    /// Null unless `tcp-request` and `tcp-request-plain` both ran.
    first_bytes_cost: Option<FirstBytesCost>,
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
    let dns_answer_cost = answer_cost(&workloads);
    print_dns(&workloads, dns_answer_cost.as_ref());
    let first_bytes_cost = first_bytes_cost(&workloads);
    print_requests(&workloads, first_bytes_cost.as_ref());
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
        dns_answer_cost,
        first_bytes_cost,
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
    let cpu: Vec<f64> = rounds
        .iter()
        .filter_map(Round::egret_cpu_us_per_op)
        .collect();
    Summary {
        workload: result.workload,
        label: result.label.clone(),
        policy_rules: result.policy_rules,
        action: result.workload.action(),
        baseline_ops_per_sec,
        egret_ops_per_sec,
        ratio: ratio(egret_ops_per_sec, baseline_ops_per_sec),
        added_us_per_op: added_us(egret_ops_per_sec, baseline_ops_per_sec),
        ops_with_egret: rounds.iter().map(|r| r.with_egret.ops).sum(),
        events_logged: rounds.iter().map(|r| r.log.events).sum(),
        events_approved: rounds.iter().map(|r| r.log.approved).sum(),
        ends_logged: rounds.iter().map(|r| r.log.ends).sum(),
        events_blocked: rounds.iter().map(|r| r.log.blocked).sum(),
        events_received: sum_metric(rounds, |m| m.events_received),
        events_lost_kernel: sum_metric(rounds, |m| m.events_lost_kernel),
        events_dropped_userspace: sum_metric(rounds, |m| m.events_dropped_userspace),
        egret_peak_rss_kib: rounds.iter().filter_map(|r| r.egret_peak_rss_kib).max(),
        egret_cpu_us_per_op: median(&cpu),
        egret_cpu_us_per_op_min: cpu.iter().copied().reduce(f64::min),
        egret_cpu_us_per_op_max: cpu.iter().copied().reduce(f64::max),
        kernel: kernel::cost(rounds.iter().filter_map(|r| {
            let programs = r.kernel_programs.as_deref()?;
            Some((r.with_egret.ops, programs))
        })),
        lines_per_op: per(
            rounds.iter().map(|r| r.log.lines).sum(),
            rounds.iter().map(|r| r.with_egret.ops).sum(),
        ),
        bytes_per_line: per(
            rounds.iter().map(|r| r.log.bytes).sum(),
            rounds.iter().map(|r| r.log.lines).sum(),
        ),
        request: result
            .workload
            .reads_request()
            .map(|first_bytes| RequestSummary {
                first_bytes,
                path: REQUEST_PATH,
                status: RESPONSE_STATUS,
                ends_with_path: rounds.iter().map(|r| r.log.ends_with_path).sum(),
                ends_with_status: rounds.iter().map(|r| r.log.ends_with_status).sum(),
                ends_with_first_bytes: rounds.iter().map(|r| r.log.ends_with_first_bytes).sum(),
                first_bytes_read: sum_metric(rounds, |m| m.first_bytes_read),
                first_bytes_evicted: sum_metric(rounds, |m| m.first_bytes_evicted),
            }),
        dns: result.dns_iterations.map(|iterations_per_run| {
            let mut baseline_client = ClientCounts::default();
            let mut egret_client = ClientCounts::default();
            for round in rounds {
                baseline_client.add(&round.baseline_client.unwrap_or_default());
                egret_client.add(&round.egret_client.unwrap_or_default());
            }
            DnsSummary {
                name: dns::NAME,
                iterations_per_run,
                baseline_client,
                egret_client,
                dns_messages: sum_metric(rounds, |m| m.dns_messages),
                connect_lines_with_domain: rounds.iter().map(|r| r.log.with_domain).sum(),
            }
        }),
        rounds,
    }
}

/// µs added per operation: `1e6 / with − 1e6 / without` (0 without both rates).
fn added_us(with: f64, without: f64) -> f64 {
    if with > 0.0 && without > 0.0 {
        1e6 / with - 1e6 / without
    } else {
        0.0
    }
}

fn answer_cost(workloads: &[Summary<'_>]) -> Option<AnswerCost> {
    let added = |workload: Workload| {
        workloads
            .iter()
            .find(|s| s.workload == workload)
            .map(|s| s.added_us_per_op)
    };
    let dns = added(Workload::Dns)?;
    let tcp = added(Workload::Tcp)?;
    let udp = added(Workload::Udp);
    let dns_block = added(Workload::DnsBlock);
    Some(AnswerCost {
        dns_added_us_per_resolve_connect: dns,
        tcp_added_us_per_connect: tcp,
        added_us_per_answer: dns - tcp,
        udp_added_us_per_send: udp,
        added_us_per_answer_without_query: udp.map(|udp| dns - tcp - udp),
        dns_block_added_us_per_resolve_connect: dns_block,
        block_mode_added_us_per_resolve_connect: dns_block.map(|block| block - dns),
    })
}

fn first_bytes_cost(workloads: &[Summary<'_>]) -> Option<FirstBytesCost> {
    let find = |workload: Workload| workloads.iter().find(|s| s.workload == workload);
    let on = find(Workload::TcpRequest)?;
    let off = find(Workload::TcpRequestPlain)?;
    Some(FirstBytesCost {
        added_us_per_connection: on.added_us_per_op - off.added_us_per_op,
        egret_cpu_us_per_connection: on
            .egret_cpu_us_per_op
            .zip(off.egret_cpu_us_per_op)
            .map(|(on, off)| on - off),
    })
}

/// `count / per` (`None` when `per` is 0).
fn per(count: u64, per: u64) -> Option<f64> {
    (per > 0).then(|| count as f64 / per as f64)
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

fn show_us(us: Option<f64>) -> String {
    us.map_or_else(|| "?".to_owned(), |us| format!("{us:.2}"))
}

fn show_f(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v:.decimals$}"))
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
        "{:<width$} {:>14} {:>14} {:>6} {:>16} {:>13} {:>9} {:>7} {:>21} {:>9} {:>12} {:>13} {:>14} {:>8}",
        "workload",
        "baseline ops/s",
        "egret ops/s",
        "ratio",
        "egret CPU µs/op",
        "kernel ns/op",
        "lines/op",
        "B/line",
        "events/ops",
        "ends",
        "lost(kernel)",
        "dropped(user)",
        "egret peak RSS",
        "blocked"
    );
    for s in workloads {
        println!(
            "{:<width$} {:>14.0} {:>14.0} {:>6.3} {:>16} {:>13} {:>9} {:>7} {:>21} {:>9} {:>12} {:>13} {:>14} {:>8}",
            s.label,
            s.baseline_ops_per_sec,
            s.egret_ops_per_sec,
            s.ratio,
            show_us(s.egret_cpu_us_per_op),
            show_f(s.kernel.as_ref().map(|k| k.ns_per_op), 0),
            show_f(s.lines_per_op, 2),
            show_f(s.bytes_per_line, 0),
            format!("{}/{}", s.events_logged, s.ops_with_egret),
            if s.workload.ends() {
                s.ends_logged.to_string()
            } else {
                "-".to_owned()
            },
            show(s.events_lost_kernel),
            show(s.events_dropped_userspace),
            show_rss(s.egret_peak_rss_kib),
            if s.workload.enforces() {
                s.events_blocked.to_string()
            } else {
                "-".to_owned()
            },
        );
    }
    println!("{CPU_NOTE}");
    print_kernel(workloads);
}

/// Each workload's kernel programs: runs, ns per run and ns per operation.
fn print_kernel(workloads: &[Summary<'_>]) {
    for s in workloads {
        let Some(k) = &s.kernel else { continue };
        println!(
            "{}: egret's kernel programs, {:.0} ns per {} ({:.0}–{:.0} over the rounds)",
            s.label, k.ns_per_op, s.action, k.ns_per_op_min, k.ns_per_op_max
        );
        println!(
            "  {:<40} {:>9} {:>9} {:>9}",
            "program", "runs/op", "ns/run", "ns/op"
        );
        for p in &k.programs {
            println!(
                "  {:<40} {:>9.2} {:>9.1} {:>9.1}",
                p.name, p.runs_per_op, p.ns_per_run, p.ns_per_op
            );
        }
    }
}

/// The request workloads' checks and the derived cost of reading the first bytes.
fn print_requests(workloads: &[Summary<'_>], cost: Option<&FirstBytesCost>) {
    for s in workloads {
        let Some(r) = &s.request else { continue };
        println!(
            "{}: {}/{} end lines with url.path {}, {}/{} with http.response.status_code {}, \
             {} with anything from the first bytes; first_bytes_read {}, evicted {}",
            s.label,
            r.ends_with_path,
            s.ends_logged,
            r.path,
            r.ends_with_status,
            s.ends_logged,
            r.status,
            r.ends_with_first_bytes,
            show(r.first_bytes_read),
            show(r.first_bytes_evicted),
        );
    }
    if let Some(cost) = cost {
        println!(
            "reading the first bytes costs {:+.2} µs per connection of the loop and {} µs of \
             egret CPU (tcp-request − tcp-request-plain)",
            cost.added_us_per_connection,
            cost.egret_cpu_us_per_connection
                .map_or_else(|| "?".to_owned(), |us| format!("{us:+.2}")),
        );
    }
}

/// The resolve-and-connect workloads' checks and the derived cost of a DNS answer.
fn print_dns(workloads: &[Summary<'_>], cost: Option<&AnswerCost>) {
    for s in workloads {
        let Some(dns) = &s.dns else { continue };
        let c = &dns.egret_client;
        println!(
            "{}: {} iterations/run; with egret: ok {} eperm {} other {}, {} DNS answers seen, \
             {}/{} connect lines with destination.domain {}; +{:.2} µs per resolve + connect",
            s.label,
            dns.iterations_per_run,
            c.ok,
            c.eperm,
            c.other,
            show(dns.dns_messages),
            dns.connect_lines_with_domain,
            s.events_logged,
            dns.name,
            s.added_us_per_op,
        );
    }
    let Some(cost) = cost else {
        if workloads.iter().any(|s| s.workload == Workload::Dns) {
            println!("(run the tcp workload with dns to derive the cost of one DNS answer)");
        }
        return;
    };
    println!(
        "added cost per DNS answer (with its query): {:.2} µs = {:.2} µs per resolve + connect \
         (dns) − {:.2} µs per connect (tcp)",
        cost.added_us_per_answer,
        cost.dns_added_us_per_resolve_connect,
        cost.tcp_added_us_per_connect
    );
    if let (Some(answer), Some(udp)) = (
        cost.added_us_per_answer_without_query,
        cost.udp_added_us_per_send,
    ) {
        println!(
            "  without the query's send (new UDP socket, {udp:.2} µs in the udp workload): \
             {answer:.2} µs per answer"
        );
    }
    if let (Some(block), Some(extra)) = (
        cost.dns_block_added_us_per_resolve_connect,
        cost.block_mode_added_us_per_resolve_connect,
    ) {
        println!(
            "  block mode with a domain rule: {block:.2} µs per resolve + connect, \
             {extra:+.2} µs over audit"
        );
    }
}

/// Reasons the run misses its targets (empty when all are met).
fn target_misses(workloads: &[Summary<'_>]) -> Vec<String> {
    let mut misses = Vec::new();
    for s in workloads {
        let label = &s.label;
        if matches!(
            s.workload,
            Workload::Tcp | Workload::TcpPolicy | Workload::TcpProgress
        ) && s.ratio < MIN_TCP_RATIO
        {
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
        if s.workload.ends() && s.ends_logged < s.events_logged {
            misses.push(format!(
                "{label}: {} of {} connections without a connection-end line",
                s.events_logged - s.ends_logged,
                s.events_logged
            ));
        }
        if s.events_logged < s.ops_with_egret {
            let missing = s.ops_with_egret - s.events_logged;
            misses.push(format!(
                "{label}: {missing} of {} operations missing from the log",
                s.ops_with_egret
            ));
        }
        if s.workload.enforces() && s.events_approved < s.events_logged {
            let approver = match s.workload {
                Workload::DnsBlock => format!(
                    "the {} rule should approve every one through the learned answers",
                    dns::SERVICE_RULE
                ),
                _ => "the 127.0.0.0/8 rule should approve every one".to_owned(),
            };
            misses.push(format!(
                "{label}: {} of {} connect lines not approved ({} blocked); {approver}",
                s.events_logged - s.events_approved,
                s.events_logged,
                s.events_blocked
            ));
        }
        if let Some(dns) = &s.dns {
            dns_misses(s, dns, &mut misses);
        }
        if let Some(request) = &s.request {
            request_misses(s, request, &mut misses);
        }
    }
    misses
}

fn request_misses(s: &Summary<'_>, r: &RequestSummary, misses: &mut Vec<String>) {
    let label = &s.label;
    if !r.first_bytes {
        if r.ends_with_first_bytes > 0 {
            misses.push(format!(
                "{label}: {} end lines carry first bytes though --first-bytes is off",
                r.ends_with_first_bytes
            ));
        }
        return;
    }
    let least = (s.ends_logged as f64 * MIN_REQUEST_SHARE).ceil() as u64;
    for (field, value, seen) in [
        ("url.path", r.path.to_owned(), r.ends_with_path),
        (
            "http.response.status_code",
            r.status.to_string(),
            r.ends_with_status,
        ),
    ] {
        if seen < least || s.ends_logged == 0 {
            misses.push(format!(
                "{label}: {seen} of {} end lines with {field} {value}",
                s.ends_logged
            ));
        }
    }
}

fn dns_misses(s: &Summary<'_>, dns: &DnsSummary, misses: &mut Vec<String>) {
    let label = &s.label;
    for (when, c) in [
        ("without egret", &dns.baseline_client),
        ("with egret", &dns.egret_client),
    ] {
        if !c.all_ok() {
            misses.push(format!(
                "{label}: {when}, {} of {} iterations did not connect (eperm {}, other {})",
                c.iterations.saturating_sub(c.ok),
                c.iterations,
                c.eperm,
                c.other
            ));
        }
        if let Some(overflows) = c.listen_overflows.filter(|&n| n > 0) {
            misses.push(format!(
                "{label}: {when}, the listener's accept queue overflowed {overflows} times \
                 (each a connect waiting ~1 s for its SYN retransmission): the rate is distorted"
            ));
        }
    }
    // A retried query gets a second answer: more than one per iteration is fine.
    if let Some(seen) = dns
        .dns_messages
        .filter(|&n| n < dns.egret_client.iterations)
    {
        misses.push(format!(
            "{label}: egret saw {seen} DNS answers for {} resolutions",
            dns.egret_client.iterations
        ));
    }
    if dns.connect_lines_with_domain < s.events_logged {
        misses.push(format!(
            "{label}: {} of {} connect lines without destination.domain {}",
            s.events_logged - dns.connect_lines_with_domain,
            s.events_logged,
            dns.name
        ));
    }
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
    use super::super::parse::{LogSummary, Sample};
    use super::*;

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
            baseline_client: None,
            egret_client: None,
            log: LogSummary {
                events,
                approved: 0,
                blocked: 0,
                with_domain: 0,
                ends: events,
                ends_with_path: 0,
                ends_with_status: 0,
                ends_with_first_bytes: 0,
                metrics: Some(Metrics {
                    events_received: events,
                    events_lost_kernel: lost,
                    events_dropped_userspace: 0,
                    dns_messages: 0,
                    ..Metrics::default()
                }),
                unparsable_lines: 0,
                lines: events * 2,
                bytes: events * 2_000,
            },
            egret_peak_rss_kib: Some(1000 + lost),
            egret_cpu_seconds: Some(egret_ops as f64 * 1e-5),
            kernel_programs: Some(vec![kernel::ProgramRuns {
                name: "connect4".to_owned(),
                runs: egret_ops,
                run_time_ns: egret_ops * 500,
            }]),
        }
    }

    /// A workload without a policy or a DNS rig.
    fn workload_result(workload: Workload, rounds: Vec<Round>) -> WorkloadResult {
        WorkloadResult {
            workload,
            label: workload.label(0),
            policy_rules: None,
            dns_iterations: None,
            rounds,
        }
    }

    #[test]
    fn summary_uses_medians_and_sums() {
        let result = workload_result(
            Workload::Tcp,
            vec![
                round(100, 95, 95, 0),
                round(200, 50, 50, 0),
                round(120, 90, 90, 0),
            ],
        );
        let s = summarize(&result);
        assert_eq!(s.baseline_ops_per_sec, 120.0);
        assert_eq!(s.egret_ops_per_sec, 90.0);
        assert_eq!(s.ratio, 0.75);
        assert_eq!(s.ops_with_egret, 235);
        assert_eq!(s.events_logged, 235);
        assert_eq!(s.events_lost_kernel, Some(0));
        assert_eq!(s.egret_peak_rss_kib, Some(1000));
        // 235 lines of 1,000 bytes for each of 235 operations, and 500 ns of connect4 each.
        assert_eq!(
            (s.lines_per_op, s.bytes_per_line),
            (Some(2.0), Some(1_000.0))
        );
        assert_eq!(s.kernel.as_ref().map(|k| k.ns_per_op), Some(500.0));
        assert_eq!(per(3, 0), None);
        assert_eq!(
            target_misses(&[s]),
            vec!["tcp connect: ratio 0.750 < 0.90".to_owned()]
        );
    }

    #[test]
    fn losses_miss_the_target() {
        let result = workload_result(Workload::Udp, vec![round(100, 100, 90, 10)]);
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
        let policy_result = |r: Round| WorkloadResult {
            label: Workload::TcpPolicy.label(1000),
            policy_rules: Some(1000),
            ..workload_result(Workload::TcpPolicy, vec![r])
        };
        assert!(target_misses(&[summarize(&policy_result(good))]).is_empty());
        assert_eq!(
            target_misses(&[summarize(&policy_result(bad))]),
            vec![
                "tcp connect, block mode, 1000 rules: 5 of 95 connect lines not approved (5 blocked); \
                 the 127.0.0.0/8 rule should approve every one"
                    .to_owned()
            ]
        );
    }

    fn dns_round(baseline_ops: u64, egret_ops: u64, client: ClientCounts) -> Round {
        let mut r = round(baseline_ops, egret_ops, egret_ops, 0);
        let all_ok = |n| ClientCounts {
            iterations: n,
            ok: n,
            eperm: 0,
            other: 0,
            listen_overflows: Some(0),
        };
        r.baseline_client = Some(all_ok(baseline_ops));
        r.egret_client = Some(client);
        r.log.with_domain = egret_ops;
        r.log.approved = egret_ops;
        if let Some(m) = r.log.metrics.as_mut() {
            m.dns_messages = egret_ops;
        }
        r
    }

    fn dns_result(workload: Workload, rounds: Vec<Round>) -> WorkloadResult {
        WorkloadResult {
            dns_iterations: Some(100),
            ..workload_result(workload, rounds)
        }
    }

    #[test]
    fn dns_workloads_check_the_client_answers_and_names() {
        let good = ClientCounts {
            iterations: 100,
            ok: 100,
            eperm: 0,
            other: 0,
            listen_overflows: Some(0),
        };
        let result = dns_result(Workload::DnsBlock, vec![dns_round(100, 100, good)]);
        assert!(target_misses(&[summarize(&result)]).is_empty());

        let refused = ClientCounts {
            eperm: 3,
            ok: 97,
            listen_overflows: Some(2),
            ..good
        };
        let mut bad = dns_round(100, 100, refused);
        bad.log.with_domain = 90;
        bad.log.approved = 97;
        bad.log.blocked = 3;
        if let Some(m) = bad.log.metrics.as_mut() {
            m.dns_messages = 99;
        }
        let label = Workload::DnsBlock.label(0);
        assert_eq!(
            target_misses(&[summarize(&dns_result(Workload::DnsBlock, vec![bad]))]),
            vec![
                format!(
                    "{label}: 3 of 100 connect lines not approved (3 blocked); \
                     the bench-service rule should approve every one through the learned answers"
                ),
                format!(
                    "{label}: with egret, 3 of 100 iterations did not connect (eperm 3, other 0)"
                ),
                format!(
                    "{label}: with egret, the listener's accept queue overflowed 2 times \
                     (each a connect waiting ~1 s for its SYN retransmission): the rate is distorted"
                ),
                format!("{label}: egret saw 99 DNS answers for 100 resolutions"),
                format!(
                    "{label}: 10 of 100 connect lines without destination.domain svc.bench.test"
                ),
            ]
        );
    }

    #[test]
    fn derives_the_cost_of_an_answer() {
        let ok = |n| ClientCounts {
            iterations: n,
            ok: n,
            eperm: 0,
            other: 0,
            listen_overflows: Some(0),
        };
        // tcp: 100 000 → 80 000 ops/s: +2.5 µs per connect.
        let tcp = workload_result(Workload::Tcp, vec![round(100_000, 80_000, 80_000, 0)]);
        // dns: 20 000 → 16 000 ops/s: +12.5 µs per resolve + connect.
        let dns = dns_result(Workload::Dns, vec![dns_round(20_000, 16_000, ok(16_000))]);
        // dns-block: 20 000 → 10 000 ops/s: +50 µs.
        let block = dns_result(
            Workload::DnsBlock,
            vec![dns_round(20_000, 10_000, ok(10_000))],
        );
        let summaries = [summarize(&tcp), summarize(&dns), summarize(&block)];
        assert_eq!(
            answer_cost(&summaries),
            Some(AnswerCost {
                dns_added_us_per_resolve_connect: 12.5,
                tcp_added_us_per_connect: 2.5,
                added_us_per_answer: 10.0,
                udp_added_us_per_send: None,
                added_us_per_answer_without_query: None,
                dns_block_added_us_per_resolve_connect: Some(50.0),
                block_mode_added_us_per_resolve_connect: Some(37.5),
            })
        );
        assert_eq!(answer_cost(&summaries[1..]), None);
        assert_eq!(added_us(0.0, 10.0), 0.0);
    }

    #[test]
    fn request_workloads_check_the_first_bytes_and_derive_their_cost() {
        // on: 100 000 → 50 000 ops/s (+10 µs), 10 µs of egret CPU per op; off: → 80 000
        // (+2.5 µs), 4 µs per op.
        let mut on = round(100_000, 50_000, 50_000, 0);
        on.log.ends_with_path = 50_000;
        on.log.ends_with_status = 49_000;
        on.log.ends_with_first_bytes = 50_000;
        on.egret_cpu_seconds = Some(0.5);
        let mut off = round(100_000, 80_000, 80_000, 0);
        off.log.ends_with_first_bytes = 2;
        off.egret_cpu_seconds = Some(0.32);
        let on = workload_result(Workload::TcpRequest, vec![on]);
        let off = workload_result(Workload::TcpRequestPlain, vec![off]);
        let (on, off) = (summarize(&on), summarize(&off));
        assert_eq!(on.egret_cpu_us_per_op, Some(10.0));
        assert_eq!(off.egret_cpu_us_per_op_max, Some(4.0));
        let none = workload_result(Workload::TcpRequest, vec![]);
        assert_eq!(summarize(&none).egret_cpu_us_per_op, None);
        assert_eq!(
            first_bytes_cost(&[on, off]),
            Some(FirstBytesCost {
                added_us_per_connection: 7.5,
                egret_cpu_us_per_connection: Some(6.0),
            })
        );
    }

    #[test]
    fn request_workloads_miss_without_their_first_bytes() {
        let mut on = round(100, 100, 100, 0);
        on.log.ends_with_path = 100;
        on.log.ends_with_status = 98;
        let mut off = round(100, 90, 90, 0);
        off.log.ends_with_first_bytes = 3;
        let on_label = Workload::TcpRequest.label(0);
        let off_label = Workload::TcpRequestPlain.label(0);
        let on = workload_result(Workload::TcpRequest, vec![on]);
        let off = workload_result(Workload::TcpRequestPlain, vec![off]);
        assert_eq!(
            target_misses(&[summarize(&on), summarize(&off)]),
            vec![
                format!("{on_label}: 98 of 100 end lines with http.response.status_code 200"),
                format!("{off_label}: 3 end lines carry first bytes though --first-bytes is off"),
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

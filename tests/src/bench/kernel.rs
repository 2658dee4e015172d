//! The kernel programs' own run time: the kernel's per-program accounting (`run_cnt`,
//! `run_time_ns` of `bpf_prog_info`, counted only while run-time statistics are enabled) of the
//! programs the egret process holds, read before and after a load.
//!
//! Statistics are enabled with `BPF_ENABLE_STATS` (the same switch as `sysctl
//! kernel.bpf_stats_enabled=1`, reference-counted by the kernel): they stay on while the
//! returned file descriptor is open and go back to what they were when it is closed, which the
//! kernel also does when this process dies, so neither an error nor Ctrl-C leaves them on.
//!
//! egret's programs are picked by id: the `prog_id` of the eBPF file descriptors in
//! `/proc/<egret pid>/fdinfo`, so another egret on the machine is never counted; their names are
//! mapped back to `agent_common::names::programs` (the kernel keeps 15 bytes of a name).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;

use agent_common::names::programs;
use anyhow::{Context as _, Result};
use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};
use serde::Serialize;

/// Longest program name the kernel keeps (`BPF_OBJ_NAME_LEN` − 1).
const KERNEL_NAME_LEN: usize = 15;

/// Run-time statistics, on while this lives.
pub struct StatsOn(#[expect(dead_code, reason = "held only to keep the statistics on")] OwnedFd);

/// Turns the kernel's per-program run-time statistics on (see the module doc).
pub fn stats_on() -> Result<StatsOn> {
    let fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (kernel ≥ 5.8)")?;
    Ok(StatsOn(fd))
}

/// One program's (or same-named programs') runs over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramRuns {
    /// Its name in `agent_common::names::programs`, or the names it may be, joined with `|`,
    /// when the kernel's 15 bytes do not tell them apart.
    pub name: String,
    /// `run_cnt`.
    pub runs: u64,
    /// `run_time_ns`.
    pub run_time_ns: u64,
}

/// egret's programs' counters at one moment, by program id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<u32, ProgramRuns>);

/// The counters of the programs process `pid` holds.
pub fn snapshot(pid: u32) -> Result<Snapshot> {
    let ids = program_ids(pid)?;
    let mut programs = BTreeMap::new();
    for info in loaded_programs() {
        let info = info.context("listing the loaded eBPF programs")?;
        if !ids.contains(&info.id()) {
            continue;
        }
        let kernel_name = String::from_utf8_lossy(info.name()).into_owned();
        programs.insert(
            info.id(),
            ProgramRuns {
                name: program_name(&kernel_name),
                runs: info.run_count(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            },
        );
    }
    Ok(Snapshot(programs))
}

/// The ids of the eBPF programs (and of the links' programs) among `pid`'s file descriptors.
fn program_ids(pid: u32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry.with_context(|| format!("reading {dir}"))?;
        // A descriptor closed since the listing is simply not there any more.
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            ids.extend(parse_prog_id(&text));
        }
    }
    Ok(ids)
}

/// The `prog_id:` of an fdinfo text (a program's or a link's descriptor), if any.
fn parse_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|line| {
        let value = line.strip_prefix("prog_id:")?;
        value.trim().parse().ok()
    })
}

/// The name a program was given in `agent_common::names::programs`, from the (at most 15-byte)
/// name the kernel kept; the candidates joined with `|` when several share those bytes, and the
/// kernel's name itself when none matches.
fn program_name(kernel_name: &str) -> String {
    let candidates: Vec<&str> = programs::ALL
        .iter()
        .copied()
        .filter(|full| {
            *full == kernel_name
                || (kernel_name.len() == KERNEL_NAME_LEN && full.starts_with(kernel_name))
        })
        .collect();
    match candidates.as_slice() {
        [] => kernel_name.to_owned(),
        names => names.join("|"),
    }
}

/// What each program ran between two snapshots, summed by name, in name order; programs
/// that did not run are left out. A program loaded after `before` counts from zero.
pub fn runs_between(before: &Snapshot, after: &Snapshot) -> Vec<ProgramRuns> {
    let mut by_name: BTreeMap<&str, ProgramRuns> = BTreeMap::new();
    for (id, now) in &after.0 {
        let (runs_then, time_then) = before
            .0
            .get(id)
            .map_or((0, 0), |then| (then.runs, then.run_time_ns));
        let entry = by_name
            .entry(now.name.as_str())
            .or_insert_with(|| ProgramRuns {
                name: now.name.clone(),
                runs: 0,
                run_time_ns: 0,
            });
        entry.runs += now.runs.saturating_sub(runs_then);
        entry.run_time_ns += now.run_time_ns.saturating_sub(time_then);
    }
    by_name.into_values().filter(|p| p.runs > 0).collect()
}

/// One program's cost per operation of a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramCost {
    pub name: String,
    pub runs_per_op: f64,
    /// Mean run time of one run, in ns.
    pub ns_per_run: f64,
    pub ns_per_op: f64,
}

/// All of egret's programs' run time per operation of a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelCost {
    /// Sum of the programs' `ns_per_op`.
    pub ns_per_op: f64,
    /// The lowest and highest of the rounds' own totals per operation.
    pub ns_per_op_min: f64,
    pub ns_per_op_max: f64,
    /// By program, in name order.
    pub programs: Vec<ProgramCost>,
}

/// The cost per operation over rounds, each given as (the operations of its with-egret run,
/// what the programs ran meanwhile): sums over the rounds divided by their operations. `None`
/// without a round that made an operation.
pub fn cost<'a>(rounds: impl IntoIterator<Item = (u64, &'a [ProgramRuns])>) -> Option<KernelCost> {
    let mut ops = 0_u64;
    let mut totals = BTreeMap::<&str, (u64, u64)>::new();
    let mut round_totals = Vec::new();
    for (round_ops, runs) in rounds {
        if round_ops == 0 {
            continue;
        }
        ops += round_ops;
        let mut round_ns = 0_u64;
        for run in runs {
            let total = totals.entry(run.name.as_str()).or_default();
            total.0 += run.runs;
            total.1 += run.run_time_ns;
            round_ns += run.run_time_ns;
        }
        round_totals.push(round_ns as f64 / round_ops as f64);
    }
    if ops == 0 {
        return None;
    }
    let programs: Vec<ProgramCost> = totals
        .into_iter()
        .map(|(name, (runs, ns))| ProgramCost {
            name: name.to_owned(),
            runs_per_op: runs as f64 / ops as f64,
            ns_per_run: if runs == 0 {
                0.0
            } else {
                ns as f64 / runs as f64
            },
            ns_per_op: ns as f64 / ops as f64,
        })
        .collect();
    Some(KernelCost {
        ns_per_op: programs.iter().map(|p| p.ns_per_op).sum(),
        ns_per_op_min: round_totals.iter().copied().fold(f64::INFINITY, f64::min),
        ns_per_op_max: round_totals.iter().copied().fold(0.0, f64::max),
        programs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(name: &str, runs: u64, run_time_ns: u64) -> ProgramRuns {
        ProgramRuns {
            name: name.to_owned(),
            runs,
            run_time_ns,
        }
    }

    #[test]
    fn reads_the_program_id_of_program_and_link_descriptors() {
        let program = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nprog_type:\t13\n\
                       prog_jited:\t1\nprog_tag:\t8f1a0e4c2d3b5a69\nmemlock:\t4096\n\
                       prog_id:\t421\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(parse_prog_id(program), Some(421));
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\tcgroup\nlink_id:\t9\n\
                    prog_tag:\tb0c1\nprog_id:\t422\ncgroup_id:\t7\nattach_type:\t11\n";
        assert_eq!(parse_prog_id(link), Some(422));
        assert_eq!(parse_prog_id("pos:\t0\nflags:\t02\nmnt_id:\t16\n"), None);
        assert_eq!(parse_prog_id("prog_id:\tx\n"), None);
    }

    #[test]
    fn maps_kernel_names_back_to_egrets() {
        assert_eq!(program_name("sock_ops"), "sock_ops");
        assert_eq!(program_name("inet_sk_error_r"), "inet_sk_error_report");
        // Both tracepoints keep the same 15 bytes.
        assert_eq!(
            program_name("sched_process_e"),
            "sched_process_exec|sched_process_exit"
        );
        // A shorter name is never a prefix match.
        assert_eq!(program_name("sock"), "sock");
        assert_eq!(program_name("other_program"), "other_program");
    }

    #[test]
    fn runs_between_snapshots_sum_by_name() {
        let before = Snapshot(BTreeMap::from([
            (1, runs("connect4", 10, 1_000)),
            (2, runs("sock_ops", 5, 500)),
            (3, runs("sock_ops", 1, 100)),
            (4, runs("conn_egress", 7, 70)),
        ]));
        let after = Snapshot(BTreeMap::from([
            (1, runs("connect4", 110, 71_000)),
            (2, runs("sock_ops", 505, 35_500)),
            (3, runs("sock_ops", 101, 7_100)),
            (4, runs("conn_egress", 7, 70)),
            (5, runs("sock_release", 3, 300)),
        ]));
        assert_eq!(
            runs_between(&before, &after),
            vec![
                runs("connect4", 100, 70_000),
                runs("sock_ops", 600, 42_000),
                runs("sock_release", 3, 300),
            ]
        );
        assert_eq!(runs_between(&after, &after), vec![]);
    }

    #[test]
    fn costs_per_operation_over_rounds() -> Result<()> {
        let one = [
            runs("connect4", 100, 70_000),
            runs("sock_ops", 1_100, 77_000),
        ];
        let two = [
            runs("connect4", 300, 150_000),
            runs("sock_ops", 3_300, 231_000),
        ];
        let total = cost([(100, &one[..]), (300, &two[..]), (0, &[][..])]).context("no cost")?;
        assert_eq!(
            total.programs,
            vec![
                ProgramCost {
                    name: "connect4".to_owned(),
                    runs_per_op: 1.0,
                    ns_per_run: 550.0,
                    ns_per_op: 550.0,
                },
                ProgramCost {
                    name: "sock_ops".to_owned(),
                    runs_per_op: 11.0,
                    ns_per_run: 70.0,
                    ns_per_op: 770.0,
                },
            ]
        );
        assert_eq!(total.ns_per_op, 1_320.0);
        // Round one: 1,470 ns per op; round two: 1,270.
        assert_eq!(
            (total.ns_per_op_min, total.ns_per_op_max),
            (1_270.0, 1_470.0)
        );
        assert_eq!(cost(std::iter::empty()), None);
        assert_eq!(cost([(0, &one[..])]), None);
        Ok(())
    }
}

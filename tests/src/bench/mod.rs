//! `cargo xtask bench` (the `egret-bench` binary): egret's overhead on tight loopback
//! TCP-connect / UDP-send loops, and on a resolve-then-connect loop.
//!
//! Each round runs a load generator inside a fresh cgroup, once without egret
//! (baseline) and once with `egret run --cgroup <that cgroup>` watching it.
//! The `tcp-policy` workload runs the TCP loop under a generated block-mode policy of
//! `--policy-rules` rules (the last of which approves the loop) and shares the `tcp`
//! workload's baseline. The `dns` workload resolves a name (a fresh UDP query to a local
//! `egret-dns server`) and connects to the answer, in a loop; `dns-block` runs the same loop
//! under a block-mode policy that approves the connects only by that name, and shares the
//! `dns` workload's baseline. `tcp-starts-only` runs the TCP loop with `--connection-ends off`
//! (start lines only: what the connection-end programs cost is the gap to `tcp`), `tcp-merged`
//! with `--merge-short-connections on` (one line per connection that ends within a drain), and
//! `tcp-progress` with everything on (`--progress-interval 10`: per-packet counter copies);
//! both share the `tcp` workload's baseline. `tcp-request` sends an HTTP request on every
//! connection and reads the answer (`egret-testclient request-loop`), egret with its defaults
//! (the first bytes each way read and parsed); `tcp-request-plain` runs the same loop with
//! `--first-bytes off` and shares `tcp-request`'s baseline: the gap between the two is what
//! reading the first bytes costs.
//!
//! Besides the rates, every with-egret run records egret's own CPU time (user + system, all of
//! its threads, from `/proc/<pid>/stat`) from its ready file to just before it is stopped, and
//! over the same span the run count and run time of each of egret's kernel programs (the
//! kernel's own accounting, switched on for the span: see `kernel`).
//!
//! The cgroup, the egret launcher, the DNS server and the client runner are the end-to-end
//! harness's; the binaries are the release builds next to `egret-bench`.

mod dns;
mod interrupt;
mod kernel;
pub mod options;
mod parse;
mod policy;
mod replay;
mod report;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use clap::ValueEnum as _;
use serde::Serialize;

use crate::{run_with_timeout, Egret, TestCgroup};
use dns::ClientCounts;
pub use options::{BenchOptions, ReplayVariant, Workload};
use parse::{LogSummary, Sample};

/// Pause after the load so egret drains its buffers and emits a metric line (interval 1 s).
const SETTLE: Duration = Duration::from_millis(1500);
/// How long egret may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `egret policy check` may take.
const POLICY_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

impl Workload {
    /// The `event.action` egret logs for one operation of this workload.
    fn action(self) -> &'static str {
        match self {
            Self::Tcp
            | Self::TcpPolicy
            | Self::Dns
            | Self::DnsBlock
            | Self::TcpStartsOnly
            | Self::TcpMerged
            | Self::TcpProgress
            | Self::TcpRequest
            | Self::TcpRequestPlain => "connect",
            Self::Udp => "send",
        }
    }

    /// Base name of this workload's files.
    fn file_stem(self) -> &'static str {
        match self {
            Self::Tcp => "tcp-loop",
            Self::Udp => "udp-loop",
            Self::TcpPolicy => "tcp-policy",
            Self::Dns => "dns",
            Self::DnsBlock => "dns-block",
            Self::TcpStartsOnly => "tcp-starts-only",
            Self::TcpMerged => "tcp-merged",
            Self::TcpProgress => "tcp-progress",
            Self::TcpRequest => "tcp-request",
            Self::TcpRequestPlain => "tcp-request-plain",
        }
    }

    fn label(self, policy_rules: u32) -> String {
        match self {
            Self::Tcp => "tcp connect".to_owned(),
            Self::Udp => "udp send".to_owned(),
            Self::TcpPolicy => format!("tcp connect, block mode, {policy_rules} rules"),
            Self::Dns => "dns resolve + tcp connect".to_owned(),
            Self::DnsBlock => "dns resolve + tcp connect, block mode, domain rule".to_owned(),
            Self::TcpStartsOnly => "tcp connect, start lines only".to_owned(),
            Self::TcpMerged => "tcp connect, --merge-short-connections on".to_owned(),
            Self::TcpProgress => "tcp connect, progress lines on".to_owned(),
            Self::TcpRequest => "tcp connect + http request, first bytes read".to_owned(),
            Self::TcpRequestPlain => "tcp connect + http request, --first-bytes off".to_owned(),
        }
    }

    /// Whether egret enforces a block-mode policy that should approve every operation.
    fn enforces(self) -> bool {
        matches!(self, Self::TcpPolicy | Self::DnsBlock)
    }

    /// Whether this is a resolve-then-connect workload.
    fn resolves(self) -> bool {
        matches!(self, Self::Dns | Self::DnsBlock)
    }

    /// Whether every connect should also get a `connection-end` line.
    fn ends(self) -> bool {
        matches!(
            self,
            Self::Tcp
                | Self::TcpPolicy
                | Self::TcpMerged
                | Self::TcpProgress
                | Self::TcpRequest
                | Self::TcpRequestPlain
        )
    }

    /// Whether each connection carries an HTTP request: `Some(true)` when egret reads the
    /// first bytes (every end line should name the request and its status), `Some(false)`
    /// when it does not (no end line should).
    fn reads_request(self) -> Option<bool> {
        match self {
            Self::TcpRequest => Some(true),
            Self::TcpRequestPlain => Some(false),
            _ => None,
        }
    }

    /// The workload that measures the baseline this one shares in a round (the same load
    /// without egret), if any.
    fn baseline_owner(self) -> Option<Self> {
        match self {
            Self::TcpStartsOnly | Self::TcpMerged | Self::TcpProgress | Self::TcpPolicy => {
                Some(Self::Tcp)
            }
            Self::TcpRequestPlain => Some(Self::TcpRequest),
            Self::DnsBlock => Some(Self::Dns),
            Self::Tcp | Self::Udp | Self::Dns | Self::TcpRequest => None,
        }
    }

    /// The name `--workload` takes.
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }

    /// The name every connect line should carry in `destination.domain`.
    fn expected_domain(self) -> Option<&'static str> {
        self.resolves().then_some(dns::NAME)
    }
}

/// One baseline + with-egret pair.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub baseline: Sample,
    pub with_egret: Sample,
    /// What the resolve-and-connect client reported (`dns` workloads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_client: Option<ClientCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egret_client: Option<ClientCounts>,
    pub log: LogSummary,
    pub egret_peak_rss_kib: Option<u64>,
    /// egret's user + system CPU time (all its threads) from its ready file to just before
    /// SIGTERM, in seconds; `None` if `/proc/<pid>/stat` could not be read.
    pub egret_cpu_seconds: Option<f64>,
    /// What each of egret's kernel programs ran over the same span; `None` if the kernel's
    /// accounting could not be read.
    pub kernel_programs: Option<Vec<kernel::ProgramRuns>>,
}

impl Round {
    /// egret's CPU time per operation of the with-egret run, in µs.
    pub fn egret_cpu_us_per_op(&self) -> Option<f64> {
        let seconds = self.egret_cpu_seconds?;
        (self.with_egret.ops > 0).then(|| seconds * 1e6 / self.with_egret.ops as f64)
    }
}

/// One load-generator run.
#[derive(Debug, Clone, Copy)]
struct Measured {
    sample: Sample,
    /// The client's counts (`dns` workloads only).
    client: Option<ClientCounts>,
}

/// How a round's load is generated.
#[derive(Clone, Copy)]
enum Load<'a> {
    /// `egret-testclient <command>` for `--duration-ms`.
    TestClient(&'static str),
    /// `egret-dns resolve-connect` for `count` iterations against `rig`.
    ResolveConnect { rig: &'a dns::Rig, count: u64 },
}

pub struct WorkloadResult {
    pub workload: Workload,
    pub label: String,
    /// Rules of the enforced policy (`tcp-policy` only).
    pub policy_rules: Option<u32>,
    /// Resolve + connect iterations per run (`dns` workloads only).
    pub dns_iterations: Option<u64>,
    pub rounds: Vec<Round>,
}

/// The binaries under test and where their files go.
struct Tools {
    egret: PathBuf,
    testclient: PathBuf,
    /// `egret-dns` (checked only when a `dns` workload runs).
    egret_dns: PathBuf,
    work_dir: PathBuf,
}

impl Tools {
    /// The release builds next to this binary (`target/release`); files go to
    /// `target/bench`.
    fn locate(workloads: &[Workload]) -> Result<Self> {
        let (release, work_dir) = bench_dirs()?;
        let tools = Self {
            egret: release.join("egret"),
            testclient: release.join("egret-testclient"),
            egret_dns: release.join("egret-dns"),
            work_dir,
        };
        let mut needed = vec![&tools.egret, &tools.testclient];
        if workloads.iter().any(|w| w.resolves()) {
            needed.push(&tools.egret_dns);
        }
        for binary in needed {
            if !binary.is_file() {
                bail!("{} was not built", binary.display());
            }
        }
        std::fs::create_dir_all(&tools.work_dir)
            .with_context(|| format!("creating {}", tools.work_dir.display()))?;
        Ok(tools)
    }
}

/// The directory of this binary (`target/release`) and the benchmark's files
/// (`target/bench`).
fn bench_dirs() -> Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("locating egret-bench")?;
    let release = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let target = release.parent().unwrap_or(release);
    Ok((release.to_path_buf(), target.join("bench")))
}

/// `egret-bench [--rounds N] [--duration-ms MS] [--workload W]... [--policy-rules N]
/// [--replay | --replay-only] [--replay-connections N] [--replay-variant V]...`.
pub fn bench(options: &BenchOptions) -> Result<()> {
    if options.replay_only {
        let (_, work_dir) = bench_dirs()?;
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        return replay::bench(options, &work_dir, false);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("bench needs root (it creates a cgroup and loads eBPF programs); run it as root");
    }
    let BenchOptions {
        rounds,
        duration_ms,
        ref workloads,
        policy_rules,
        replay,
        replay_only: _,
        replay_connections: _,
        replay_variants: _,
        replay_dir: _,
    } = *options;
    let workloads = chosen_workloads(workloads);
    let tools = Tools::locate(&workloads)?;
    interrupt::install()?;
    let policy = if workloads.contains(&Workload::TcpPolicy) {
        let file_name = format!("policy-{policy_rules}-rules.yaml");
        Some(write_policy(
            &tools,
            &file_name,
            &policy::generate(policy_rules)?,
        )?)
    } else {
        None
    };
    let results = {
        let cgroup = TestCgroup::create("bench")?;
        eprintln!("egret-bench: bench cgroup {}", cgroup.path().display());
        measure(options, &workloads, policy.as_deref(), &tools, &cgroup)?
    };
    report::report(&results, rounds, duration_ms, &tools.work_dir)?;
    if replay {
        replay::bench(options, &tools.work_dir, true)?;
    }
    Ok(())
}

/// The workloads to run, in a fixed order (`tcp` before `tcp-policy` and `dns` before
/// `dns-block`, whose baselines they provide), each once. Default: all.
fn chosen_workloads(chosen: &[Workload]) -> Vec<Workload> {
    let mut workloads = match chosen {
        [] => Workload::value_variants().to_vec(),
        chosen => chosen.to_vec(),
    };
    workloads.sort();
    workloads.dedup();
    workloads
}

/// Writes a generated policy to the work directory and has `egret policy check` accept it.
fn write_policy(tools: &Tools, file_name: &str, yaml: &str) -> Result<PathBuf> {
    let path = tools.work_dir.join(file_name);
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    let mut command = Command::new(&tools.egret);
    command.arg("policy").arg("check").arg(&path);
    let output = run_with_timeout(&mut command, POLICY_CHECK_TIMEOUT)?
        .ensure_success()
        .with_context(|| format!("egret rejected the generated policy {}", path.display()))?;
    eprintln!("egret-bench: {}", output.stdout.trim_end());
    Ok(path)
}

fn measure(
    options: &BenchOptions,
    workloads: &[Workload],
    policy: Option<&Path>,
    tools: &Tools,
    cgroup: &TestCgroup,
) -> Result<Vec<WorkloadResult>> {
    let mut results: Vec<_> = workloads
        .iter()
        .map(|&workload| WorkloadResult {
            workload,
            label: workload.label(options.policy_rules),
            policy_rules: (workload == Workload::TcpPolicy).then_some(options.policy_rules),
            dns_iterations: None,
            rounds: Vec::new(),
        })
        .collect();
    // Iterations of every resolve-and-connect run, sized once so that a run lasts about
    // `--duration-ms` without egret.
    let dns_count = if workloads.iter().any(|w| w.resolves()) {
        interrupt::check()?;
        let rig = dns::Rig::start(&tools.egret_dns)?;
        let count = rig.calibrate(&tools.egret_dns, cgroup, options.duration_ms)?;
        eprintln!(
            "egret-bench: dns: {count} resolve + connect iterations per run (about {} ms without egret)",
            options.duration_ms
        );
        Some(count)
    } else {
        None
    };
    for round in 1..=options.rounds {
        let mut baselines = Baselines::default();
        for result in &mut results {
            let workload = result.workload;
            // Started before the baseline, stopped (dropped) at the end of the round.
            let rig = if workload.resolves() {
                Some(dns::Rig::start(&tools.egret_dns)?)
            } else {
                None
            };
            let load = match (&rig, dns_count) {
                (None, _) => Load::TestClient(test_client_command(workload)),
                (Some(rig), Some(count)) => {
                    result.dns_iterations = Some(count);
                    Load::ResolveConnect { rig, count }
                }
                (Some(_), None) => bail!("{} workload without its iteration count", result.label),
            };
            let egret_args = egret_args(workload, tools, policy, rig.as_ref())?;
            let shared_baseline = baselines.shared_with(workload);
            let measured = measure_round(
                tools,
                cgroup,
                workload,
                load,
                options.duration_ms,
                shared_baseline,
                &egret_args,
            )?;
            drop(rig);
            baselines.keep(workload, &measured);
            eprintln!(
                "egret-bench: round {round}/{} {}: baseline {:.0} ops/s{}, with egret {:.0} ops/s",
                options.rounds,
                result.label,
                measured.baseline.rate(),
                match (shared_baseline, workload.baseline_owner()) {
                    (Some(_), Some(owner)) => format!(" (the {} workload's)", owner.name()),
                    _ => String::new(),
                },
                measured.with_egret.rate()
            );
            result.rounds.push(measured);
        }
    }
    Ok(results)
}

/// A round's baselines, which other workloads share (the same load without egret: see
/// [`Workload::baseline_owner`]).
#[derive(Default)]
struct Baselines(BTreeMap<Workload, Measured>);

impl Baselines {
    /// The baseline `workload` reuses, once the workload that measures it ran this round.
    fn shared_with(&self, workload: Workload) -> Option<Measured> {
        self.0.get(&workload.baseline_owner()?).copied()
    }

    fn keep(&mut self, workload: Workload, round: &Round) {
        let baseline = Measured {
            sample: round.baseline,
            client: round.baseline_client,
        };
        self.0.insert(workload, baseline);
    }
}

/// The `egret-testclient` loop of a TCP/UDP workload.
fn test_client_command(workload: Workload) -> &'static str {
    match workload {
        Workload::Udp => "udp-loop",
        Workload::TcpRequest | Workload::TcpRequestPlain => "request-loop",
        Workload::Tcp
        | Workload::TcpPolicy
        | Workload::Dns
        | Workload::DnsBlock
        | Workload::TcpStartsOnly
        | Workload::TcpMerged
        | Workload::TcpProgress => "tcp-loop",
    }
}

/// egret's arguments for `workload`, on top of the launcher's (`run --cgroup --output
/// --ready-file --metrics-interval 1`). The `dns` workloads get a policy that trusts this round's
/// resolver (`dns-block`'s also approves it and the service's name).
fn egret_args(
    workload: Workload,
    tools: &Tools,
    policy: Option<&Path>,
    rig: Option<&dns::Rig>,
) -> Result<Vec<OsString>> {
    let args = match workload {
        Workload::Tcp | Workload::Udp | Workload::TcpRequest => Vec::new(),
        Workload::TcpRequestPlain => vec!["--first-bytes".into(), "off".into()],
        Workload::TcpStartsOnly => vec!["--connection-ends".into(), "off".into()],
        Workload::TcpMerged => vec!["--merge-short-connections".into(), "on".into()],
        Workload::TcpProgress => vec!["--progress-interval".into(), "10".into()],
        Workload::TcpPolicy => {
            let policy = policy.context("tcp-policy workload without a policy file")?;
            vec!["--policy".into(), policy.into()]
        }
        Workload::Dns | Workload::DnsBlock => {
            let rig =
                rig.with_context(|| format!("{workload:?} workload without its DNS server"))?;
            let mut args = vec!["--dns-port".into(), rig.dns_port().to_string().into()];
            // Both trust the test resolver, which /etc/resolv.conf does not list.
            let policy = if workload == Workload::DnsBlock {
                let yaml = dns::block_policy(rig.dns_port());
                write_policy(tools, "policy-dns-block.yaml", &yaml)?
            } else {
                write_policy(tools, "policy-dns.yaml", &dns::audit_policy())?
            };
            args.extend(["--policy".into(), policy.into_os_string()]);
            args
        }
    };
    Ok(args)
}

fn measure_round(
    tools: &Tools,
    cgroup: &TestCgroup,
    workload: Workload,
    load: Load<'_>,
    duration_ms: u64,
    baseline: Option<Measured>,
    egret_args: &[OsString],
) -> Result<Round> {
    interrupt::check()?;
    let baseline = match baseline {
        Some(measured) => measured,
        None => run_load(tools, cgroup, load, duration_ms)?,
    };
    interrupt::check()?;
    // Reused (overwritten) by every round of the workload.
    let dir = tools
        .work_dir
        .join(format!("egret-{}", workload.file_stem()));
    eprintln!(
        "egret-bench: starting {} on {} with {:?} (files in {})",
        tools.egret.display(),
        cgroup.path().display(),
        egret_args,
        dir.display()
    );
    let mut egret = Egret::start_in(&tools.egret, dir, cgroup.path(), egret_args)?;
    // Start-up (loading the programs, reading /proc) is not the workload's.
    let cpu_at_start = egret.pid().and_then(cpu_seconds);
    let programs_at_start = ProgramsWatch::start(egret.pid());
    let with_egret = run_load(tools, cgroup, load, duration_ms)?;
    std::thread::sleep(SETTLE);
    let kernel_programs = programs_at_start.finish(egret.pid());
    let egret_peak_rss_kib = egret.pid().and_then(peak_rss_kib);
    let egret_cpu_seconds = match (cpu_at_start, egret.pid().and_then(cpu_seconds)) {
        (Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    let status = egret.stop_within(STOP_TIMEOUT)?;
    ensure!(
        status.success(),
        "egret failed ({status})\n{}",
        egret.stderr_tail()
    );
    let output = egret.events_path();
    let output = File::open(&output).with_context(|| format!("opening {}", output.display()))?;
    let log = parse::summarize_log(
        BufReader::new(output),
        workload.action(),
        workload.expected_domain(),
    )?;
    // Hundreds of MB per UDP round: removed once read, kept (and shown) when reading fails.
    egret.discard_dir_on_drop();
    Ok(Round {
        baseline: baseline.sample,
        with_egret: with_egret.sample,
        baseline_client: baseline.client,
        egret_client: with_egret.client,
        log,
        egret_peak_rss_kib,
        egret_cpu_seconds,
        kernel_programs,
    })
}

/// The kernel's accounting of egret's programs over a with-egret run: statistics on, and the
/// counters when they were switched on. A failure is a warning and leaves the figures out.
struct ProgramsWatch(Option<(kernel::StatsOn, kernel::Snapshot)>);

impl ProgramsWatch {
    fn start(pid: Option<u32>) -> Self {
        let start = || -> Result<_> {
            let pid = pid.context("egret has no pid")?;
            let on = kernel::stats_on()?;
            Ok((on, kernel::snapshot(pid)?))
        };
        Self(
            start()
                .inspect_err(|e| {
                    eprintln!("egret-bench: warning: no kernel program figures: {e:#}")
                })
                .ok(),
        )
    }

    /// What each program ran since [`Self::start`]; the statistics go back off.
    fn finish(self, pid: Option<u32>) -> Option<Vec<kernel::ProgramRuns>> {
        let (on, before) = self.0?;
        let after = pid.context("egret has no pid").and_then(kernel::snapshot);
        drop(on);
        after
            .inspect_err(|e| eprintln!("egret-bench: warning: no kernel program figures: {e:#}"))
            .ok()
            .map(|after| kernel::runs_between(&before, &after))
    }
}

/// Runs the load inside the bench cgroup.
fn run_load(
    tools: &Tools,
    cgroup: &TestCgroup,
    load: Load<'_>,
    duration_ms: u64,
) -> Result<Measured> {
    match load {
        Load::TestClient(loop_command) => Ok(Measured {
            sample: run_test_client(tools, cgroup, loop_command, duration_ms)?,
            client: None,
        }),
        Load::ResolveConnect { rig, count } => {
            // Generous: egret slows the loop down, and a failing resolution waits for its
            // timeouts.
            let timeout =
                Duration::from_millis(duration_ms.saturating_mul(10)) + Duration::from_secs(30);
            let (sample, client) = rig.run_client(&tools.egret_dns, cgroup, count, timeout)?;
            Ok(Measured {
                sample,
                client: Some(client),
            })
        }
    }
}

/// Runs `egret-testclient <tcp-loop|udp-loop>` inside the bench cgroup.
fn run_test_client(
    tools: &Tools,
    cgroup: &TestCgroup,
    loop_command: &str,
    duration_ms: u64,
) -> Result<Sample> {
    let mut command = Command::new(&tools.testclient);
    command
        .arg(loop_command)
        .arg("--duration-ms")
        .arg(duration_ms.to_string());
    cgroup.command(&mut command)?;
    let timeout = Duration::from_millis(duration_ms) + Duration::from_secs(30);
    let output = run_with_timeout(&mut command, timeout)?.ensure_success()?;
    parse::parse_ops_line(&output.stdout)
}

/// User + system CPU time of all of `pid`'s threads so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse::parse_stat_cpu_ticks(&stat)?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// egret's peak resident set size (`VmHWM`, KiB), while it runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse::parse_vm_hwm_kib(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_run_in_a_fixed_order_with_dns_last() {
        assert_eq!(
            chosen_workloads(&[]),
            [
                Workload::Tcp,
                Workload::TcpStartsOnly,
                Workload::TcpMerged,
                Workload::TcpProgress,
                Workload::TcpRequest,
                Workload::TcpRequestPlain,
                Workload::Udp,
                Workload::TcpPolicy,
                Workload::Dns,
                Workload::DnsBlock
            ]
        );
        assert_eq!(
            chosen_workloads(&[
                Workload::DnsBlock,
                Workload::Tcp,
                Workload::Dns,
                Workload::Tcp
            ]),
            [Workload::Tcp, Workload::Dns, Workload::DnsBlock]
        );
        assert_eq!(
            chosen_workloads(&[Workload::TcpRequestPlain, Workload::TcpRequest]),
            [Workload::TcpRequest, Workload::TcpRequestPlain]
        );
    }

    #[test]
    fn shared_baselines_are_measured_earlier_in_the_round() {
        for workload in Workload::value_variants() {
            if let Some(owner) = workload.baseline_owner() {
                assert!(owner < *workload, "{workload:?} shares a later baseline");
                assert_eq!(owner.baseline_owner(), None);
                assert_eq!(test_client_command(owner), test_client_command(*workload));
            }
        }
        assert_eq!(Workload::TcpRequestPlain.name(), "tcp-request-plain");
    }
}

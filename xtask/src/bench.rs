//! `cargo xtask bench`: egret's overhead on tight loopback TCP-connect / UDP-send loops, and
//! on a resolve-then-connect loop.
//!
//! Each round runs a load generator inside a fresh cgroup, once without egret
//! (baseline) and once with `egret run --cgroup <that cgroup>` watching it.
//! The `tcp-policy` workload runs the TCP loop under a generated block-mode policy of
//! `--policy-rules` rules (the last of which approves the loop) and shares the `tcp`
//! workload's baseline. The `dns` workload resolves a name (a fresh UDP query to a local
//! `egret-dns server`) and connects to the answer, in a loop; `dns-block` runs the same loop
//! under a block-mode policy that approves the connects only by that name, and shares the
//! `dns` workload's baseline. `tcp-starts-only` runs the TCP loop with `--connection-ends off`
//! (start lines only: what the connection-end programs cost is the gap to `tcp`), and
//! `tcp-progress` with everything on (`--progress-interval 10`: per-packet counter copies);
//! both share the `tcp` workload's baseline.

mod dns;
mod parse;
mod policy;
mod report;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cgroup::BenchCgroup;
use crate::cmd::{self, describe, target_dir, wait_timeout};
use crate::interrupt;
use crate::setup::setup;
use dns::ClientCounts;
use parse::{LogSummary, Sample};

/// How long egret may take to attach and write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after the load so egret drains its buffers and emits a metric line (interval 1 s).
const SETTLE: Duration = Duration::from_millis(1500);
/// How long egret may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct BenchOptions {
    /// Baseline + with-egret rounds per workload (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Length of each load-generator run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Workloads to run (repeatable; default: all, in the order tcp, tcp-starts-only,
    /// tcp-progress, udp, tcp-policy, dns, dns-block).
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Rules in the generated block-mode policy of the `tcp-policy` workload.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(policy::MAX_RULES)))]
    policy_rules: u32,
    /// Skip setup and the release build; use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Tcp,
    /// The TCP loop with `--connection-ends off`: start lines only.
    TcpStartsOnly,
    /// The TCP loop with everything on: end lines and `--progress-interval 10`.
    TcpProgress,
    Udp,
    /// The TCP loop with egret enforcing a large block-mode policy.
    TcpPolicy,
    /// Resolve a name (fresh UDP query), then connect to its address; default audit policy.
    Dns,
    /// The `dns` loop with egret in block mode, the connects approved only by a domain rule.
    DnsBlock,
}

impl Workload {
    /// The `event.action` egret logs for one operation of this workload.
    fn action(self) -> &'static str {
        match self {
            Self::Tcp
            | Self::TcpPolicy
            | Self::Dns
            | Self::DnsBlock
            | Self::TcpStartsOnly
            | Self::TcpProgress => "connect",
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
            Self::TcpProgress => "tcp-progress",
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
            Self::TcpProgress => "tcp connect, progress lines on".to_owned(),
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
        matches!(self, Self::Tcp | Self::TcpPolicy | Self::TcpProgress)
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
    fn locate(workloads: &[Workload]) -> Result<Self> {
        let release = target_dir().join("release");
        let tools = Self {
            egret: release.join("egret"),
            testclient: release.join("egret-testclient"),
            egret_dns: release.join("egret-dns"),
            work_dir: target_dir().join("bench"),
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

/// `cargo xtask bench [--rounds N] [--duration-ms MS] [--workload W]... [--no-build]`.
pub fn bench(options: &BenchOptions) -> Result<()> {
    if !cmd::is_root() {
        bail!("bench needs root (it creates a cgroup and loads eBPF programs); run it as root");
    }
    if !options.no_build {
        setup()?;
        cmd::cargo_build(&["-p", "egret", "-p", "egret-e2e", "--bins"], true)?;
    }
    let workloads = chosen_workloads(&options.workloads);
    let tools = Tools::locate(&workloads)?;
    interrupt::install()?;
    let policy = if workloads.contains(&Workload::TcpPolicy) {
        Some(write_policy(&tools, options.policy_rules)?)
    } else {
        None
    };
    let results = {
        let cgroup = BenchCgroup::create()?;
        measure(options, &workloads, policy.as_deref(), &tools, &cgroup)?
    };
    report::report(
        &results,
        options.rounds,
        options.duration_ms,
        &tools.work_dir,
    )
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

/// Writes the generated policy to the work directory and has `egret policy check` accept it.
fn write_policy(tools: &Tools, rules: u32) -> Result<PathBuf> {
    let path = tools.work_dir.join(format!("policy-{rules}-rules.yaml"));
    std::fs::write(&path, policy::generate(rules)?)
        .with_context(|| format!("writing {}", path.display()))?;
    check_policy(tools, &path)?;
    Ok(path)
}

/// Writes the `dns-block` policy for a resolver on `dns_port` and has egret accept it.
fn write_dns_policy(tools: &Tools, dns_port: u16) -> Result<PathBuf> {
    let path = tools.work_dir.join("policy-dns-block.yaml");
    std::fs::write(&path, dns::block_policy(dns_port))
        .with_context(|| format!("writing {}", path.display()))?;
    check_policy(tools, &path)?;
    Ok(path)
}

/// Runs `egret policy check` on a generated policy; fails unless egret accepts it.
fn check_policy(tools: &Tools, path: &Path) -> Result<()> {
    let mut command = Command::new(&tools.egret);
    command.arg("policy").arg("check").arg(path);
    let output = command
        .output()
        .with_context(|| format!("running `{}`", describe(&command)))?;
    if !output.status.success() {
        bail!(
            "`{}` rejected the generated policy ({}):\n{}{}",
            describe(&command),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!(
        "xtask: {}",
        String::from_utf8_lossy(&output.stdout).trim_end()
    );
    Ok(())
}

fn measure(
    options: &BenchOptions,
    workloads: &[Workload],
    policy: Option<&Path>,
    tools: &Tools,
    cgroup: &BenchCgroup,
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
            "xtask: dns: {count} resolve + connect iterations per run (about {} ms without egret)",
            options.duration_ms
        );
        Some(count)
    } else {
        None
    };
    for round in 1..=options.rounds {
        // This round's `tcp` / `dns` baselines, reused by `tcp-policy` / `dns-block` (the same
        // load without egret).
        let mut tcp_baseline = None;
        let mut dns_baseline = None;
        for result in &mut results {
            let mut egret_args = Vec::new();
            // Started before the baseline, stopped (dropped) at the end of the round.
            let rig = match result.workload {
                Workload::Dns | Workload::DnsBlock => Some(dns::Rig::start(&tools.egret_dns)?),
                Workload::Tcp
                | Workload::Udp
                | Workload::TcpPolicy
                | Workload::TcpStartsOnly
                | Workload::TcpProgress => None,
            };
            let (load, shared_baseline) = match (result.workload, &rig, dns_count) {
                (Workload::Tcp | Workload::Udp, _, _) => {
                    (Load::TestClient(test_client_command(result.workload)), None)
                }
                (Workload::TcpStartsOnly, _, _) => {
                    egret_args.push(OsString::from("--connection-ends"));
                    egret_args.push(OsString::from("off"));
                    (Load::TestClient("tcp-loop"), tcp_baseline)
                }
                (Workload::TcpProgress, _, _) => {
                    egret_args.push(OsString::from("--progress-interval"));
                    egret_args.push(OsString::from("10"));
                    (Load::TestClient("tcp-loop"), tcp_baseline)
                }
                (Workload::TcpPolicy, _, _) => {
                    let policy = policy.context("tcp-policy workload without a policy file")?;
                    egret_args.push(OsString::from("--policy"));
                    egret_args.push(policy.as_os_str().to_owned());
                    (Load::TestClient("tcp-loop"), tcp_baseline)
                }
                (Workload::Dns | Workload::DnsBlock, Some(rig), Some(count)) => {
                    egret_args.push(OsString::from("--dns-port"));
                    egret_args.push(OsString::from(rig.dns_port.to_string()));
                    let shared = if result.workload == Workload::DnsBlock {
                        let policy = write_dns_policy(tools, rig.dns_port)?;
                        egret_args.push(OsString::from("--policy"));
                        egret_args.push(policy.into_os_string());
                        dns_baseline
                    } else {
                        None
                    };
                    result.dns_iterations = Some(count);
                    (Load::ResolveConnect { rig, count }, shared)
                }
                (Workload::Dns | Workload::DnsBlock, _, _) => {
                    bail!("{} workload without its DNS server", result.label)
                }
            };
            let measured = measure_round(
                tools,
                cgroup,
                result.workload,
                load,
                options.duration_ms,
                shared_baseline,
                &egret_args,
            )?;
            drop(rig);
            let baseline = Measured {
                sample: measured.baseline,
                client: measured.baseline_client,
            };
            match result.workload {
                Workload::Tcp => tcp_baseline = Some(baseline),
                Workload::Dns => dns_baseline = Some(baseline),
                Workload::Udp
                | Workload::TcpPolicy
                | Workload::DnsBlock
                | Workload::TcpStartsOnly
                | Workload::TcpProgress => {}
            }
            eprintln!(
                "xtask: round {round}/{} {}: baseline {:.0} ops/s{}, with egret {:.0} ops/s",
                options.rounds,
                result.label,
                measured.baseline.rate(),
                match (shared_baseline.is_some(), result.workload) {
                    (true, Workload::DnsBlock) => " (the dns workload's)",
                    (true, _) => " (the tcp workload's)",
                    (false, _) => "",
                },
                measured.with_egret.rate()
            );
            result.rounds.push(measured);
        }
    }
    Ok(results)
}

/// The `egret-testclient` loop of a TCP/UDP workload.
fn test_client_command(workload: Workload) -> &'static str {
    match workload {
        Workload::Udp => "udp-loop",
        Workload::Tcp
        | Workload::TcpPolicy
        | Workload::Dns
        | Workload::DnsBlock
        | Workload::TcpStartsOnly
        | Workload::TcpProgress => "tcp-loop",
    }
}

fn measure_round(
    tools: &Tools,
    cgroup: &BenchCgroup,
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
    let files = EgretFiles::prepare(&tools.work_dir, workload)?;
    let mut egret = Egret::start(tools, cgroup, &files, egret_args)?;
    egret.wait_ready(&files)?;
    let with_egret = run_load(tools, cgroup, load, duration_ms)?;
    std::thread::sleep(SETTLE);
    let egret_peak_rss_kib = egret.peak_rss_kib();
    egret.stop(&files)?;
    let output =
        File::open(&files.output).with_context(|| format!("opening {}", files.output.display()))?;
    let log = parse::summarize_log(
        BufReader::new(output),
        workload.action(),
        workload.expected_domain(),
    )?;
    // Hundreds of MB per UDP round; only kept when parsing fails. A failed removal is harmless.
    let _ = std::fs::remove_file(&files.output);
    Ok(Round {
        baseline: baseline.sample,
        with_egret: with_egret.sample,
        baseline_client: baseline.client,
        egret_client: with_egret.client,
        log,
        egret_peak_rss_kib,
    })
}

/// Runs the load inside the bench cgroup.
fn run_load(
    tools: &Tools,
    cgroup: &BenchCgroup,
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
    cgroup: &BenchCgroup,
    loop_command: &str,
    duration_ms: u64,
) -> Result<Sample> {
    let mut command = Command::new(&tools.testclient);
    command
        .arg(loop_command)
        .arg("--duration-ms")
        .arg(duration_ms.to_string());
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    cgroup.place_child(&mut command)?;
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{}`", describe(&command)))?;
    let timeout = Duration::from_millis(duration_ms) + Duration::from_secs(30);
    let Some(status) = wait_timeout(&mut child, timeout)? else {
        kill_and_reap(&mut child);
        bail!("`{}` did not finish within {timeout:?}", describe(&command));
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout)
            .context("reading load generator output")?;
    }
    if !status.success() {
        bail!("`{}` failed ({status})", describe(&command));
    }
    parse::parse_ops_line(&stdout)
}

fn kill_and_reap(child: &mut Child) {
    // Errors mean it already exited, which is what we want.
    let _ = child.kill();
    let _ = child.wait();
}

/// Files of one egret run, reused (overwritten) by every round of a workload.
struct EgretFiles {
    output: PathBuf,
    ready: PathBuf,
    log: PathBuf,
}

impl EgretFiles {
    fn prepare(dir: &Path, workload: Workload) -> Result<Self> {
        let name = workload.file_stem();
        let files = Self {
            output: dir.join(format!("egret-{name}.jsonl")),
            ready: dir.join(format!("egret-{name}.ready")),
            log: dir.join(format!("egret-{name}.log")),
        };
        for path in [&files.output, &files.ready] {
            match std::fs::remove_file(path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("removing {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(files)
    }

    /// The last lines egret wrote to stdout/stderr, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default();
        format!(
            "egret output ({}):\n{}",
            self.log.display(),
            tail.join("\n")
        )
    }
}

/// A running `egret run`; killed on drop unless stopped cleanly.
struct Egret {
    child: Child,
}

impl Egret {
    fn start(
        tools: &Tools,
        cgroup: &BenchCgroup,
        files: &EgretFiles,
        extra_args: &[OsString],
    ) -> Result<Self> {
        let log = File::create(&files.log)
            .with_context(|| format!("creating {}", files.log.display()))?;
        let mut command = Command::new(&tools.egret);
        command.arg("run").arg("--cgroup").arg(cgroup.path());
        command.arg("--output").arg(&files.output);
        command.arg("--ready-file").arg(&files.ready);
        command.args(["--metrics-interval", "1"]);
        command.args(extra_args);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        eprintln!("xtask: $ {}", describe(&command));
        let child = command
            .spawn()
            .with_context(|| format!("starting `{}`", describe(&command)))?;
        Ok(Self { child })
    }

    fn wait_ready(&mut self, files: &EgretFiles) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !files.ready.exists() {
            interrupt::check()?;
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "egret exited before it was ready ({status})\n{}",
                    files.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "egret not ready after {READY_TIMEOUT:?}\n{}",
                    files.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        parse::parse_vm_hwm_kib(&status)
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self, files: &EgretFiles) -> Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        // ESRCH means it already exited; the wait below reports how.
        let _ = kill(pid, Signal::SIGTERM);
        let Some(status) = wait_timeout(&mut self.child, STOP_TIMEOUT)? else {
            bail!(
                "egret did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                files.log_tail()
            );
        };
        if !status.success() {
            bail!("egret failed ({status})\n{}", files.log_tail());
        }
        Ok(())
    }
}

impl Drop for Egret {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_and_reap(&mut self.child);
        }
    }
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
                Workload::TcpProgress,
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
    }
}

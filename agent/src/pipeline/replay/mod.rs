//! The replay benchmark of the userspace pipeline: a generated node's ring-buffer records
//! ([`workload`]) through the whole [`Pipeline`] — decode, identity, DNS names, policy,
//! connection life cycle, rendering, the chain and a real output file — without the kernel,
//! on this thread, timed by the thread's own CPU clock. The kernel's maps are in memory
//! ([`FakeKernel`]): the map lookups the real pipeline makes (UDP flow counts) cost a hash
//! look-up here instead of a system call.
//!
//! The records of each drain are generated before it, outside the timed part; the timed part
//! is what `egret run` does with them: [`Pipeline::handle`] for each, [`Pipeline::after_drain`]
//! after the drain, [`Pipeline::tick`] once per simulated second, and at the end
//! [`Pipeline::shutdown`] (the final flush). `cargo xtask bench --replay` runs it.

pub mod workload;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::resource::{getrusage, UsageWho};

use super::{
    destination::Destination,
    emit::Emitter,
    fake_kernel::{FakeKernel, FakePolicy},
    identity::Identity,
    judgement::Judgement,
    lifecycle::Lifecycle,
    Pipeline,
};
use crate::{
    clock::boot_ns_now,
    config::RunConfig,
    container::ContainerResolver,
    dns::resolvers::{ResolverSource, TrustedResolvers},
    metrics::{Metrics, MetricsError, Telemetry},
    output::{OutputError, Sink},
    policy::{
        active::{load_policy, ActivePolicy},
        PolicyErrors,
    },
};
use workload::{Batch, Counts, Options, Workload};

/// The output file's name in [`ReplayConfig::dir`].
pub const OUTPUT_FILE: &str = "events.jsonl";

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Connections (TCP connects and UDP flows) to replay.
    pub connections: u64,
    /// The workload's seed: the same seed, the same records.
    pub seed: u64,
    /// Connections per simulated second (a tick each simulated second).
    pub rate: u64,
    /// Records per drain.
    pub drain_records: usize,
    /// Block mode with a generated policy of this many rules (else the default audit policy).
    pub block_rules: Option<u32>,
    /// `--connection-ends`: the kernel writes an end record for every TCP connection, and
    /// egret an end line.
    pub connection_ends: bool,
    /// TCP connections to ports 80 and 443 carry first bytes (egret reads them: `--first-bytes`
    /// is on by default).
    pub first_bytes: bool,
    /// The entry leader carries a 1 KB argument, like this development sandbox's.
    pub long_entry_args: bool,
    /// Where the output file (and the policy) go; it must exist.
    pub dir: PathBuf,
    /// `egret run` flags the pipeline is built with (`--connection-ends off`, ...); the
    /// output, policy and first-bytes settings above win.
    pub run_flags: Vec<String>,
}

impl ReplayConfig {
    /// The benchmark's defaults: 200,000 connections at 50,000 a simulated second, drains of
    /// 256 records, audit mode, no first bytes, a short entry-leader argument.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            connections: 200_000,
            seed: 15,
            rate: 50_000,
            drain_records: 256,
            block_rules: None,
            connection_ends: true,
            first_bytes: false,
            long_entry_args: false,
            dir,
            run_flags: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("egret run flags for the replay: {0}")]
    Flags(#[from] clap::Error),
    #[error("writing the replay's policy {path}: {source}")]
    Policy {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    PolicyErrors(#[from] PolicyErrors),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("reading the replay's output {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// What a replay measured.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub counts: Counts,
    /// The pipeline's final counters (lines written, drops, ...).
    pub metrics: Metrics,
    /// Bytes of the output file.
    pub bytes: u64,
    /// CPU time of this thread in the timed part, user and system.
    pub user: Duration,
    pub system: Duration,
    /// Wall-clock time of the timed part.
    pub wall: Duration,
    pub output: PathBuf,
}

impl ReplayReport {
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// Connections per second of one core's CPU time.
    pub fn connections_per_cpu_second(&self) -> f64 {
        self.counts.connections() as f64 / self.cpu().as_secs_f64().max(1e-9)
    }

    /// CPU µs per connection.
    pub fn cpu_us_per_connection(&self) -> f64 {
        self.cpu().as_secs_f64() * 1e6 / (self.counts.connections().max(1) as f64)
    }

    pub fn lines_per_connection(&self) -> f64 {
        self.metrics.lines_written as f64 / (self.counts.connections().max(1) as f64)
    }

    pub fn bytes_per_line(&self) -> f64 {
        self.bytes as f64 / (self.metrics.lines_written.max(1) as f64)
    }
}

/// The pipeline as `egret run` builds it with its defaults (output to a file in `dir`, no
/// container runtime), and the in-memory kernel.
struct Rig {
    pipeline: Pipeline,
    /// The container fetcher, kept but never run: the workload has no container.
    _fetcher: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    kernel: FakeKernel,
    policy: FakePolicy,
}

impl Rig {
    fn new(config: &ReplayConfig, output: &Path) -> Result<Self, ReplayError> {
        let mut run = RunConfig::from_flags(&config.run_flags)?;
        if let Some(rules) = config.block_rules {
            let path = config.dir.join("policy.yaml");
            std::fs::write(&path, workload::block_policy(rules)).map_err(|source| {
                ReplayError::Policy {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            run.policy.file = Some(path);
        }
        run.connections.ends = config.connection_ends;
        run.containers.containerd_socket = None;
        run.containers.docker_socket = None;
        run.containers.podman_socket = None;
        run.containers.crio_socket = None;
        let (policy, compiled) = load_policy(run.policy.file.as_deref())?;
        let (containers, fetcher) = ContainerResolver::new(run.containers.runtime_config());
        let sink = Sink::open(&output.display().to_string(), &run.output.files(), None)?;
        let telemetry =
            Telemetry::start(None, run.attach.ring_buffer_size, run.attach.drain_interval)?;
        // The cgroup mount: the workload's cgroups arrive as `cgroup_mkdir` records.
        let mut identity = Identity::new(&run.processes, config.dir.clone(), containers);
        // Its sshd is a name: no such process or file on this machine backs it.
        identity.believe_starters_by_name();
        let pipeline = Pipeline::new(
            identity,
            Destination::new(
                &run.dns,
                // The kernel's flags say whether an answer is believed; the set is not read.
                TrustedResolvers::new(ResolverSource::Policy(Vec::new())),
            ),
            Judgement::new(
                ActivePolicy::new(policy, compiled),
                &run.policy,
                &run.connections,
            ),
            Lifecycle::new(&run.connections, boot_ns_now()),
            Emitter::new(sink, None, telemetry),
        );
        Ok(Self {
            pipeline,
            _fetcher: Box::pin(fetcher),
            kernel: FakeKernel::default(),
            policy: FakePolicy::default(),
        })
    }

    /// One drain: every record, then what a drain does after them.
    fn drain(&mut self, batch: &Batch) {
        for record in batch.records() {
            self.pipeline.handle(record, &self.kernel);
        }
        self.pipeline.after_drain(&mut self.policy, &self.kernel);
    }
}

/// This thread's CPU time (user, system) and the wall clock, summed over the timed parts.
#[derive(Debug, Default)]
struct Stopwatch {
    user: Duration,
    system: Duration,
    wall: Duration,
}

impl Stopwatch {
    /// Never inlined: `valgrind --tool=callgrind --toggle-collect='*replay*Stopwatch*time*'`
    /// counts the instructions of the timed parts alone.
    #[inline(never)]
    fn time(&mut self, work: impl FnOnce()) {
        let before = thread_cpu();
        let wall = Instant::now();
        work();
        self.wall += wall.elapsed();
        let after = thread_cpu();
        self.user += after.0.saturating_sub(before.0);
        self.system += after.1.saturating_sub(before.1);
    }
}

/// User and system CPU time of the calling thread.
fn thread_cpu() -> (Duration, Duration) {
    let Ok(usage) = getrusage(UsageWho::RUSAGE_THREAD) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let duration = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
    };
    (duration(usage.user_time()), duration(usage.system_time()))
}

/// Replays `config.connections` connections; the output is `config.dir`/[`OUTPUT_FILE`].
///
/// # Errors
/// The policy, the output file or the telemetry could not be set up, or the output could not
/// be measured.
pub fn run(config: &ReplayConfig) -> Result<ReplayReport, ReplayError> {
    let output = config.dir.join(OUTPUT_FILE);
    let mut rig = Rig::new(config, &output)?;
    let rate = config.rate.max(1);
    // Every record lies in the past: nothing is older than the simulated time it took.
    let simulated_ns = config.connections / rate * 1_000_000_000 + 1_000_000_000;
    let base_ns = boot_ns_now().saturating_sub(simulated_ns);
    let options = Options {
        block: config.block_rules.is_some(),
        first_bytes: config.first_bytes,
        ends: config.connection_ends,
        long_entry_args: config.long_entry_args,
    };
    let mut workload = Workload::new(config.seed, base_ns, rate, options);
    let mut batch = Batch::default();
    let mut clock = Stopwatch::default();
    workload.prologue(&mut batch);
    clock.time(|| rig.drain(&batch));
    let mut second = workload.second();
    while workload.counts.connections() < config.connections {
        batch.clear();
        workload.fill(&mut batch, config.drain_records, &mut rig.kernel);
        let tick = workload.second() != second;
        second = workload.second();
        clock.time(|| {
            rig.drain(&batch);
            if tick {
                rig.pipeline.tick(&rig.kernel, &mut rig.policy);
            }
        });
    }
    batch.clear();
    workload.finish(&mut batch, &mut rig.kernel);
    clock.time(|| {
        rig.drain(&batch);
        rig.pipeline.shutdown(&rig.kernel);
    });
    let metrics = rig.pipeline.snapshot(&rig.kernel);
    drop(rig);
    let bytes = std::fs::metadata(&output)
        .map_err(|source| ReplayError::Read {
            path: output.display().to_string(),
            source,
        })?
        .len();
    Ok(ReplayReport {
        counts: workload.counts,
        metrics,
        bytes,
        user: clock.user,
        system: clock.system,
        wall: clock.wall,
        output,
    })
}

#[cfg(test)]
mod tests;

//! Running egret: start-up (policy, Prometheus endpoint, outputs, programs attached, stages
//! built), the event loop that drains the ring buffer into the [`Pipeline`] and drives its
//! timers, and the orderly shutdown (detach, drain what is left, write what is still open,
//! flush). What happens to each record is the pipeline's business (`pipeline/mod.rs`).

use std::{future::Future, path::PathBuf, pin::pin, time::Duration};

pub use crate::policy::active::load_policy;

use tokio::{io::unix::AsyncFd, time::MissedTickBehavior};

use crate::{
    alerts::Alerts,
    cgroup::{self, CgroupError, CgroupResolver},
    clock::boot_ns_now,
    conn::Failures,
    container::{ContainerResolver, RuntimeConfig},
    dns::CacheConfig,
    kernel::{self, KernelConfig, KernelError, KernelLookups, KernelMaps, OnExit},
    metrics::Metrics,
    output::{OutputError, Sink},
    pipeline::{
        destination::Destination, emit::Emitter, identity::Identity, judgement::Judgement,
        lifecycle::Lifecycle, Pipeline,
    },
    policy::{
        active::{ActivePolicy, FileWatch},
        compile, Mode, PolicyErrors,
    },
    process::ProcessTable,
};

/// Everything `egret run` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// cgroup v2 directory to attach to; `None` = the root of the cgroup2 mount.
    pub cgroup: Option<PathBuf>,
    /// `-` for stdout, else a file appended to.
    pub output: String,
    pub ring_buffer_size: u32,
    pub drain_interval: Duration,
    /// `None`: a metric line only at shutdown.
    pub metrics_interval: Option<Duration>,
    pub udp_idle: Duration,
    pub udp_report_interval: Duration,
    pub process_exit_grace: Duration,
    pub max_processes: usize,
    /// Created (with egret's pid) once the programs are attached and the drain loop runs.
    pub ready_file: Option<PathBuf>,
    /// The allowlist; `None` = the built-in default (audit, loopback approved, nothing else).
    pub policy: Option<PathBuf>,
    /// Alert lines also go here.
    pub alerts: Option<String>,
    /// Rotation and retention of the `output` and `alerts` files.
    pub output_files: crate::output::FileOptions,
    /// Every line also goes to syslog.
    pub syslog: Option<crate::output::SyslogConfig>,
    pub alert_window: Duration,
    /// Reload the policy when its file changes.
    pub watch: bool,
    pub on_exit: OnExit,
    pub pin_path: PathBuf,
    /// Resolver port whose responses are captured.
    pub dns_port: u16,
    /// Bounds on how long an answer's addresses stay associated with its names.
    pub dns_ttl_floor: Duration,
    pub dns_ttl_ceiling: Duration,
    /// Write a `dns` line per answer observed.
    pub dns_events: bool,
    /// Container runtimes to ask for container and pod identity.
    pub runtimes: RuntimeConfig,
    /// A `connection-progress` line for every TCP connection open this long, again every
    /// interval; `None` = off.
    pub progress_interval: Option<Duration>,
    /// Alert when a process's connects to one destination fail this many times within
    /// `failure_alert_window`; 0 = off.
    pub failure_alert_count: u64,
    pub failure_alert_window: Duration,
    /// Follow each TCP connection to its end and count UDP bytes (sock_ops and packet-path
    /// programs); off: start lines only, the lowest overhead.
    pub connection_ends: bool,
    /// The Prometheus endpoint (`None`: none).
    pub metrics_listen: Option<crate::metrics::Listen>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroup: None,
            output: "-".to_owned(),
            ring_buffer_size: 16 * 1024 * 1024,
            drain_interval: Duration::from_millis(20),
            metrics_interval: Some(Duration::from_secs(10)),
            udp_idle: Duration::from_secs(5),
            udp_report_interval: Duration::from_secs(60),
            process_exit_grace: Duration::from_secs(30),
            max_processes: 65536,
            ready_file: None,
            policy: None,
            alerts: None,
            output_files: crate::output::FileOptions::default(),
            syslog: None,
            alert_window: Duration::from_secs(60),
            watch: false,
            on_exit: OnExit::Detach,
            pin_path: PathBuf::from("/sys/fs/bpf/egret"),
            dns_port: 53,
            dns_ttl_floor: Duration::from_secs(5),
            dns_ttl_ceiling: Duration::from_secs(3600),
            dns_events: false,
            runtimes: RuntimeConfig::default(),
            progress_interval: None,
            failure_alert_count: 5,
            failure_alert_window: Duration::from_secs(60),
            connection_ends: true,
            metrics_listen: crate::metrics::Listen::from_arg(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{0} is not a cgroup v2 directory (find the cgroup2 mount in /proc/self/mounts)")]
    NotCgroup2(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("watching the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Finds the outbound TCP connections open before egret started (sock_diag, every network
/// namespace) and gives each a kernel entry, so its release is reported.
fn follow_preexisting(
    lookups: &mut KernelLookups,
) -> std::collections::HashMap<u64, crate::sockdiag::DiagSock> {
    let (found, errors) = crate::sockdiag::scan_all();
    for err in &errors {
        log::warn!("looking for connections open before egret started: {err}");
    }
    let state = agent_common::ConnState {
        flags: agent_common::CONN_FLAG_PREEXISTING
            | agent_common::CONN_FLAG_SYN_SENT
            | agent_common::CONN_FLAG_ESTABLISHED,
        ..agent_common::ConnState::default()
    };
    let mut followed = std::collections::HashMap::new();
    for sock in found {
        match lookups.follow_existing(sock.cookie, &state) {
            Ok(true) => {
                followed.insert(sock.cookie, sock);
            }
            Ok(false) => {}
            Err(err) => {
                log::warn!("following a connection open before egret started: {err}");
                break;
            }
        }
    }
    if !followed.is_empty() {
        log::info!(
            "following {} outbound TCP connections that were open before egret started",
            followed.len()
        );
    }
    followed
}

/// Drains every record currently in the ring buffer, then lets the pipeline finish what the
/// drain started.
fn drain(maps: &mut KernelMaps, pipeline: &mut Pipeline) {
    let KernelMaps {
        events,
        lookups,
        policy,
    } = maps;
    pipeline.emitter().telemetry().before_drain();
    while let Some(item) = events.next() {
        pipeline.handle(&item, lookups);
    }
    pipeline.after_drain(policy, lookups);
}

/// Runs egret until `shutdown` completes; then detaches, drains what is left, writes a final
/// metric line and flushes. Returns the final metrics.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Metrics, AgentError> {
    let mount = cgroup::cgroup2_mount()?;
    let cgroup_dir = config.cgroup.clone().unwrap_or_else(|| mount.clone());
    if !cgroup::is_cgroup2_dir(&cgroup_dir) {
        return Err(AgentError::NotCgroup2(cgroup_dir.display().to_string()));
    }
    let (policy, compiled) = load_policy(config.policy.as_deref())?;
    // Listening before the programs load: a taken address stops egret before it attaches.
    let mut telemetry = crate::metrics::Telemetry::start(
        config.metrics_listen,
        config.ring_buffer_size,
        config.drain_interval,
    )?;
    let sink = Sink::open(&config.output, &config.output_files, config.syslog.as_ref())?;
    let alert_sink = config
        .alerts
        .as_deref()
        .map(|path| Sink::open(path, &config.output_files, None))
        .transpose()?;

    let mut processes =
        ProcessTable::new(config.max_processes, duration_ns(config.process_exit_grace));
    let scope_ids = compile::scope_ids(&compiled, &mount);
    let (kernel, mut maps) = kernel::load_and_attach(
        &KernelConfig {
            ring_buffer_size: config.ring_buffer_size,
            udp_idle_ns: duration_ns(config.udp_idle),
            on_exit: config.on_exit,
            pin_path: config.pin_path.clone(),
            dns_port: config.dns_port,
            dns_ttl_floor_ns: duration_ns(config.dns_ttl_floor),
            dns_ttl_ceiling_ns: duration_ns(config.dns_ttl_ceiling),
            tcp_progress: config.progress_interval.is_some() && config.connection_ends,
            connection_ends: config.connection_ends,
        },
        &cgroup_dir,
        &compiled,
        &scope_ids,
    )?;
    if kernel.took_over > 0 {
        log::info!(
            "took over {} pinned programs of an earlier egret",
            kernel.took_over
        );
    }
    telemetry.watch_ring(std::os::fd::AsFd::as_fd(&maps.events));
    let (containers, fetcher) = ContainerResolver::new(config.runtimes.clone());
    tokio::spawn(fetcher);
    for warning in containers.startup_warnings() {
        log::warn!("{warning}");
    }
    let active = ActivePolicy::new(policy, compiled);
    log::info!("policy {} in force", active.summary());
    if active.policy.mode == Mode::Block && config.cgroup.is_none() {
        log::warn!("block mode on the whole host: anything the policy does not approve is refused");
    }
    // Seed after attaching: a process that starts in between is seen by the tracepoints, one
    // that exits in between no longer matters.
    let seeded = processes.seed_from_proc();
    log::info!(
        "attached to cgroup {}; {seeded} processes seeded from /proc",
        cgroup_dir.display()
    );

    let mut lifecycle = Lifecycle::new(
        duration_ns(config.udp_idle),
        duration_ns(config.udp_report_interval),
        config.connection_ends,
        config.progress_interval.map(duration_ns),
        boot_ns_now(),
    );
    if config.connection_ends {
        lifecycle.follow_preexisting(follow_preexisting(&mut maps.lookups));
    }
    let mut pipeline = Pipeline::new(
        Identity::new(processes, CgroupResolver::new(mount, 65536), containers),
        Destination::new(
            CacheConfig {
                ttl_floor: config.dns_ttl_floor,
                ttl_ceiling: config.dns_ttl_ceiling,
                ..CacheConfig::default()
            },
            config.dns_events,
            config.dns_port,
        ),
        Judgement::new(
            active,
            config.policy.clone(),
            Alerts::new(duration_ns(config.alert_window), 65536),
            config.alert_window.as_secs(),
            Failures::new(
                config.failure_alert_count,
                duration_ns(config.failure_alert_window),
                65536,
            ),
        ),
        lifecycle,
        Emitter::new(sink, alert_sink, telemetry),
    );

    let result = event_loop(&config, &mut maps, &mut pipeline, shutdown).await;

    // Detach first so nothing new arrives, then drain what the kernel already wrote.
    if let Some(dir) = &kernel.pinned_at {
        log::info!(
            "--on-exit keep: the socket programs stay attached and enforce the last policy (pinned at {}) until the next egret takes over",
            dir.display()
        );
    }
    drop(kernel);
    drain(&mut maps, &mut pipeline);
    pipeline.shutdown(&maps.lookups);
    if let Some(path) = &config.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(pipeline.snapshot(&maps.lookups))
}

async fn event_loop(
    config: &Config,
    maps: &mut KernelMaps,
    pipeline: &mut Pipeline,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // A duplicate of the ring buffer's fd, owned by the AsyncFd, so readiness can be awaited
    // while the ring buffer itself is borrowed mutably for draining.
    let ring_fd = std::os::fd::AsFd::as_fd(&maps.events)
        .try_clone_to_owned()
        .map_err(AgentError::Poll)?;
    // SAFETY: the AsyncFd owns `ring_fd`, so the descriptor stays open while registered.
    let ring_fd =
        unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
            .map_err(|err| AgentError::Poll(err.into()))?;
    let mut drain_tick = tokio::time::interval(config.drain_interval);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut second_tick = tokio::time::interval(Duration::from_secs(1));
    second_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let metrics_every = config
        .metrics_interval
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let mut metrics_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + metrics_every, metrics_every);
    metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    if let Some(path) = &config.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            AgentError::ReadyFile {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    pipeline.emitter().telemetry().set_ready(true);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AgentError::Poll)?;
    let mut watch = config
        .watch
        .then(|| config.policy.clone().map(FileWatch::new))
        .flatten();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => {
                drain(maps, pipeline);
                pipeline.reload(&mut maps.policy, "SIGHUP");
            }
            guard = ring_fd.readable() => {
                let mut guard = guard.map_err(AgentError::Poll)?;
                drain(maps, pipeline);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => drain(maps, pipeline),
            _ = second_tick.tick() => {
                drain(maps, pipeline);
                if watch.as_mut().is_some_and(FileWatch::changed) {
                    pipeline.reload(&mut maps.policy, "policy file changed");
                }
                pipeline.tick(&maps.lookups, &mut maps.policy);
            }
            _ = metrics_tick.tick() => {
                drain(maps, pipeline);
                pipeline.write_metrics(&maps.lookups);
                pipeline.emitter().flush();
            }
        }
    }
    pipeline.emitter().telemetry().set_ready(false);
    Ok(())
}

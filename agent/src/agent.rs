//! Running egret: start-up (policy, Prometheus endpoint, outputs, programs attached, stages
//! built), the event loop that drains the ring buffer into the [`Pipeline`] and drives its
//! timers, and the orderly shutdown (detach, drain what is left, write what is still open,
//! flush). What happens to each record is the pipeline's business (`pipeline/mod.rs`).

use std::{future::Future, pin::pin, time::Duration};

pub use crate::policy::active::load_policy;

use tokio::{io::unix::AsyncFd, time::MissedTickBehavior};

use crate::{
    cgroup::{self, CgroupError},
    clock::{boot_ns_now, duration_ns},
    config::RunConfig,
    container::ContainerResolver,
    dns::resolvers::{ResolverSource, TrustedResolvers},
    kernel::{self, KernelConfig, KernelError, KernelLookups, KernelMaps, MapSizes},
    metrics::Metrics,
    output::{journal::Journal, OutputError, Sink},
    pipeline::{
        baseline::BaselineStage, destination::Destination, emit::Emitter, identity::Identity,
        judgement::Judgement, lifecycle::Lifecycle, Pipeline,
    },
    policy::{
        active::{ActivePolicy, FileWatch},
        compile, Mode, PolicyErrors,
    },
};

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
    #[error(transparent)]
    Redact(#[from] crate::redact::RedactError),
    #[error(transparent)]
    FdLimit(#[from] crate::fdlimit::FdLimitError),
    #[error("baseline state: {0}")]
    Baseline(#[from] crate::baseline::store::StoreError),
}

/// Exit status of `egret run` for a start-up error that starting again cannot fix (a policy
/// that does not load, an open file limit too low, no cgroup v2 directory): sysexits'
/// `EX_CONFIG`, which the systemd unit names in `RestartPreventExitStatus`, so it is not
/// restarted in a loop.
pub const EXIT_CONFIG: u8 = 78;

impl AgentError {
    /// The error is in egret's configuration or environment: see [`EXIT_CONFIG`].
    pub fn is_config(&self) -> bool {
        match self {
            Self::NotCgroup2(_)
            | Self::Policy(_)
            | Self::Redact(_)
            | Self::FdLimit(_)
            | Self::Baseline(_) => true,
            Self::Cgroup(_)
            | Self::Kernel(_)
            | Self::Output(_)
            | Self::Poll(_)
            | Self::ReadyFile { .. }
            | Self::Metrics(_) => false,
        }
    }
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
/// drain started; writes the programs' diagnostics to egret's log.
fn drain(maps: &mut KernelMaps, pipeline: &mut Pipeline) {
    let KernelMaps {
        events,
        logs,
        lookups,
        policy,
    } = maps;
    logs.flush();
    pipeline.emitter().telemetry().before_drain();
    while let Some(item) = events.next() {
        pipeline.handle(&item, lookups);
    }
    pipeline.after_drain(policy, lookups);
}

/// Runs egret until `shutdown` completes; then detaches, drains what is left, writes a final
/// metric line and flushes. Returns the final metrics.
pub async fn run(
    config: &RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Metrics, AgentError> {
    let RunConfig {
        log_level: _,
        config_file: _,
        attach,
        output,
        processes,
        redaction,
        dns,
        containers,
        connections,
        policy: policy_config,
        baseline,
        metrics,
    } = config;
    // Before the kernel BTF is read (twice): its large blocks must not raise the threshold.
    crate::memory::fix_mmap_threshold();
    let limit = crate::fdlimit::raise()?;
    if limit.now > limit.was {
        log::info!(
            "open file limit raised from {} to its hard limit {}",
            limit.was,
            limit.now
        );
    }
    let mount = cgroup::cgroup2_mount()?;
    let cgroup_dir = attach.cgroup.clone().unwrap_or_else(|| mount.clone());
    if !cgroup::is_cgroup2_dir(&cgroup_dir) {
        return Err(AgentError::NotCgroup2(cgroup_dir.display().to_string()));
    }
    let (policy, compiled) = load_policy(policy_config.file.as_deref())?;
    let redactor = redactor(redaction)?;
    // Listening before the programs load: a taken address stops egret before it attaches.
    let mut telemetry = crate::metrics::Telemetry::start(
        metrics.listen(),
        attach.ring_buffer_size,
        attach.drain_interval,
    )?;
    let files = output.files();
    let sink = Sink::open(&output.path, &files, output.syslog().as_ref())?;
    let alert_sink = output
        .alerts
        .as_deref()
        .map(|path| Sink::open(path, &files, None))
        .transpose()?;
    let journal = output.journal().map(Journal::open).transpose()?;

    let scope_ids = compile::scope_ids(&compiled, &mount);
    let (resolvers, trusted) = trusted_resolvers(&policy);
    let (kernel, mut maps) = kernel::load_and_attach(
        &kernel_config(config),
        &cgroup_dir,
        &compiled,
        &scope_ids,
        &trusted,
    )?;
    if kernel.took_over > 0 {
        log::info!(
            "took over {} pinned programs of an earlier egret",
            kernel.took_over
        );
    }
    telemetry.watch_ring(std::os::fd::AsFd::as_fd(&maps.events));
    let (resolver, fetcher) = ContainerResolver::new(containers.runtime_config());
    tokio::spawn(fetcher);
    for warning in resolver.startup_warnings() {
        log::warn!("{warning}");
    }
    let active = ActivePolicy::new(policy, compiled);
    log::info!("policy {} in force", active.summary());
    if active.policy.mode == Mode::Block && attach.cgroup.is_none() {
        log::warn!("block mode on the whole host: anything the policy does not approve is refused");
    }
    let mut identity = Identity::new(processes, mount, resolver);
    identity.set_redactor(redactor);
    // Seed after attaching: a process that starts in between is seen by the tracepoints, one
    // that exits in between no longer matters.
    let seeded = identity.seed_from_proc();
    log::info!(
        "attached to cgroup {}; {seeded} processes seeded from /proc",
        cgroup_dir.display()
    );
    let mut lifecycle = Lifecycle::new(connections, boot_ns_now());
    if connections.ends {
        lifecycle.follow_preexisting(follow_preexisting(&mut maps.lookups));
    }
    // Once the programs are attached: a fresh baseline's learning starts when egret sees.
    let baseline = BaselineStage::open(baseline)?;
    let mut pipeline = Pipeline::new(
        identity,
        Destination::new(dns, resolvers),
        Judgement::new(active, policy_config, connections),
        lifecycle,
        emitter(sink, alert_sink, telemetry, output).with_journal(journal),
    );
    pipeline.set_baseline(baseline);

    let result = event_loop(config, &mut maps, &mut pipeline, shutdown).await;

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
    if let Some(path) = &attach.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(pipeline.snapshot(&maps.lookups))
}

async fn event_loop(
    config: &RunConfig,
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
    let mut drain_tick = tokio::time::interval(config.attach.drain_interval);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut second_tick = tokio::time::interval(Duration::from_secs(1));
    second_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let metrics_every = config
        .metrics
        .interval
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let mut metrics_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + metrics_every, metrics_every);
    metrics_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    // Before the ready file: a SIGHUP sent as soon as egret says it is ready must reload,
    // not kill it.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AgentError::Poll)?;
    if let Some(path) = &config.attach.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            AgentError::ReadyFile {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    pipeline.emitter().telemetry().set_ready(true);
    let mut watch = config
        .policy
        .watch
        .then(|| config.policy.file.clone().map(FileWatch::new))
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

/// The redactor `--redact-args` and `--redact` ask for, with a warning when it is off.
/// The emitter, writing text or JSON as `--format` (or the terminal) says.
fn emitter(
    sink: Sink,
    alert_sink: Option<Sink>,
    telemetry: crate::metrics::Telemetry,
    output: &crate::config::OutputConfig,
) -> Emitter {
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let emitter = Emitter::new(sink, alert_sink, telemetry);
    match output.format(terminal) {
        crate::output::Format::Json => emitter,
        crate::output::Format::Text => emitter.with_text(crate::ecs::text::Style {
            // no-color.org: set and not empty turns colour off.
            colour: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }),
    }
}

fn redactor(
    redaction: &crate::config::RedactConfig,
) -> Result<crate::redact::Redactor, AgentError> {
    let redactor = crate::redact::Redactor::new(redaction.args, &redaction.patterns)?;
    if !redactor.is_on() {
        log::warn!(
            "--redact-args off: process arguments are written as captured, secrets included"
        );
        if !redaction.patterns.is_empty() {
            log::warn!("--redact patterns are not applied while --redact-args is off");
        }
    }
    Ok(redactor)
}

/// The resolvers whose answers count (`policy`'s, else the resolv.conf ones), read once now
/// for the kernel, and what they are now.
fn trusted_resolvers(
    policy: &crate::policy::Policy,
) -> (TrustedResolvers, Vec<crate::policy::Prefix>) {
    let mut resolvers = TrustedResolvers::new(ResolverSource::of(policy.resolvers.as_deref()));
    let trusted = resolvers.refresh().unwrap_or_default();
    for err in resolvers.take_errors() {
        log::warn!("trusted resolvers: {err}");
    }
    for note in resolvers.notes() {
        log::warn!("{note}");
    }
    log::info!("{}", resolvers.describe());
    (resolvers, trusted)
}

/// What the kernel programs are loaded with, from the run's configuration.
fn kernel_config(config: &RunConfig) -> KernelConfig {
    let RunConfig {
        attach,
        dns,
        connections,
        ..
    } = config;
    KernelConfig {
        ring_buffer_size: attach.ring_buffer_size,
        udp_idle_ns: duration_ns(connections.udp_idle),
        on_exit: attach.on_exit,
        pin_path: attach.pin_path.clone(),
        dns_port: dns.port,
        dns_ttl_floor_ns: duration_ns(dns.ttl_floor),
        dns_ttl_ceiling_ns: duration_ns(dns.ttl_ceiling),
        tcp_progress: connections.progress_interval.is_some() && connections.ends,
        connection_ends: connections.ends,
        first_bytes: connections.first_bytes && connections.ends,
        offsets: task_offsets(),
        log_level: config.log_level,
        map_sizes: MapSizes {
            tcp_connections: attach.max_tcp_connections,
            udp_flows: attach.max_udp_flows,
            learned_addresses: attach.max_learned_addresses,
        },
    }
}

/// The running kernel's field offsets for the task programs, from its BTF. Without BTF egret
/// still runs: lines then lack the login identity, terminal and session, executables are
/// named from the exec's path, and in block mode no process matches a `processes:` selector
/// (the kernel cannot read the caller's executable).
fn task_offsets() -> agent_common::KernelOffsets {
    let offsets = crate::btf::Btf::from_sys_fs()
        .and_then(|btf| crate::btf::kernel_offsets(&btf, host_mnt_ns()));
    match offsets {
        Ok(offsets) => offsets,
        Err(err) => {
            log::warn!("kernel BTF: {err}: lines will lack login identity, session, terminal and the executable's own path; in block mode, rules with processes: selectors approve no connection");
            agent_common::KernelOffsets::default()
        }
    }
}

/// The inode number of the host's mount namespace (pid 1's, else our own); 0 if unreadable.
fn host_mnt_ns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/1/ns/mnt")
        .or_else(|_| std::fs::metadata("/proc/self/ns/mnt"))
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

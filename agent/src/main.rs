//! The `egret` command line.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use egret::Config;

/// egret: every outbound connection of this host, as one JSON line each, with the process,
/// user, cgroup and systemd unit that made it.
#[derive(Debug, Parser)]
#[command(name = "egret", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the hash chain (`egret.chain`) of output files: exit 0 and a summary when
    /// intact, else exit 1 and the first broken, removed, inserted or reordered line as
    /// `FILE:LINE: WHAT`. Rotated sets are checked in rotation order whatever the argument
    /// order (docs/output.md).
    Verify {
        /// Output files, e.g. `/var/log/egret/events.jsonl*`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Attach the kernel programs and write one JSON line per outbound connection until
    /// SIGINT/SIGTERM. Needs uid 0 with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (+ CAP_SYS_PTRACE).
    Run(Box<RunArgs>),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with `egret run --config` files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when FILE, the `--ready-file` of an `egret run`, exists and names a running
    /// process; else exit 1. A readiness probe for images without a shell (docs/deploy.md).
    Ready {
        /// The `--ready-file` path.
        file: PathBuf,
    },
    /// Summarise egret's JSON lines (top destinations per process, unit, container and pod;
    /// text, JSON or HTML), or suggest a policy approving what they show (docs/report.md).
    Report(Box<egret::report::ReportArgs>),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file as `egret run --config FILE` would read it: exit 0 and a one-line
    /// summary, or exit 1 and every error as `FILE:LINE:COLUMN: KEY: MESSAGE`.
    Check {
        /// The config file (YAML; see docs/config.md).
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file: exit 0 and a one-line summary, or exit 1 and every error as
    /// `FILE:LINE:COLUMN: PATH: MESSAGE`.
    Check {
        /// The policy file (YAML; see docs/policy.md).
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnExitArg {
    /// Programs go away with egret (also on SIGKILL): traffic flows unchecked.
    Detach,
    /// Programs stay attached (pinned under --pin-path) and keep enforcing the last policy
    /// until the next egret on the same cgroup takes them over.
    Keep,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// cgroup v2 directory to monitor (with everything below it). Default: the root of the
    /// cgroup2 mount found in /proc/self/mounts, i.e. the whole host.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,

    /// Where to write JSON lines: `-` for stdout, or a file that is appended to. Lines are
    /// flushed at least every second and on shutdown.
    #[arg(long, value_name = "PATH", default_value = "-")]
    output: String,

    /// Log verbosity (logs go to stderr, never to the event output).
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,

    /// Kernel ring buffer size in bytes (a power of two, at least 4096). Larger survives longer
    /// bursts; every event that does not fit is counted in `events_lost_kernel`.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    ring_buffer_size: u32,

    /// How often the ring buffer is drained when the kernel does not wake egret (it wakes it
    /// only when a quarter of the buffer is full, to keep the per-event cost low).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    drain_interval_ms: u64,

    /// Seconds between `metric` lines (0: only the one at shutdown).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    metrics_interval: u64,

    /// A UDP flow (socket, destination) with no datagram for this many seconds ends: its `send`
    /// line is written and the next datagram starts a new flow.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    udp_idle: u64,

    /// A busy UDP flow gets a `send` line at least this often (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    udp_report_interval: u64,

    /// Seconds an exited process stays in the process table, for late events.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    process_exit_grace: u64,

    /// Most processes kept in the process table.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    max_processes: usize,

    /// Create this file (containing egret's pid) once the programs are attached; remove it on
    /// exit. For supervisors and tests that must not start work before egret sees it.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,

    /// Allowlist policy (YAML, docs/policy.md). Default: the built-in policy (audit mode,
    /// loopback approved, nothing else), so every other destination is reported.
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,

    /// Also write alert lines (unapproved destinations) to this file (appended).
    #[arg(long, value_name = "PATH")]
    alerts: Option<String>,

    /// Rotate the output (and alerts) file before a line would make it larger than this
    /// (bytes; K, M, G suffixes, binary). Default: no rotation by size.
    #[arg(long, value_name = "SIZE")]
    output_max_bytes: Option<egret::output::rotate::ByteSize>,

    /// Rotate the output (and alerts) file once its first line is this old (30s, 15m, 1h,
    /// 1d, 1w). Default: no rotation by age.
    #[arg(long, value_name = "DURATION")]
    output_max_age: Option<egret::output::rotate::Age>,

    /// Rotated files kept per output file; older ones are deleted at rotation.
    #[arg(long, value_name = "N", default_value_t = 10)]
    output_retain: usize,

    /// Also delete rotated files closed longer ago than this (1d, 1w...).
    #[arg(long, value_name = "DURATION")]
    output_retain_age: Option<egret::output::rotate::Age>,

    /// Also send every line to the local syslog daemon (RFC 5424 over a unix datagram
    /// socket; message = the JSON line).
    #[arg(long)]
    syslog: bool,

    /// The syslog daemon's socket.
    #[arg(long, value_name = "PATH", default_value = "/dev/log")]
    syslog_socket: PathBuf,

    /// Syslog facility: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron,
    /// authpriv, ftp, ntp, audit, alert, clock, local0-local7, or 0-23.
    #[arg(long, value_name = "NAME", default_value = "daemon")]
    syslog_facility: egret::output::syslog::Facility,

    /// Alerts for the same (executable, cgroup, destination, port, transport) within this
    /// many seconds are folded into one, with a repeat count.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    alert_window: u64,

    /// Reload the policy when its file changes (checked every second). SIGHUP always reloads.
    /// An invalid new policy is refused and the old one stays in force.
    #[arg(long)]
    watch: bool,

    /// What happens to the programs when egret exits (or is killed).
    #[arg(long, value_enum, default_value = "detach")]
    on_exit: OnExitArg,

    /// bpffs directory where `--on-exit keep` pins the programs (per cgroup).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/egret")]
    pin_path: PathBuf,

    /// Resolver port whose responses egret reads to name destinations (UDP and TCP).
    #[arg(long, value_name = "PORT", default_value_t = 53)]
    dns_port: u16,

    /// Shortest time (seconds) an answer's addresses stay tied to its name, whatever its TTL.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    dns_ttl_floor: u64,

    /// Longest time (seconds) an answer's addresses stay tied to its name, whatever its TTL.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    dns_ttl_ceiling: u64,

    /// Also write a `dns` line for every DNS answer observed (chatty).
    #[arg(long)]
    dns_events: bool,

    /// containerd's gRPC socket (`none` to not ask containerd).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_socket: PathBuf,

    /// Docker Engine API socket (`none` to not ask Docker).
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    docker_socket: PathBuf,

    /// Podman's Docker-compatible API socket (`none` to not ask podman).
    #[arg(long, value_name = "PATH", default_value = "/run/podman/podman.sock")]
    podman_socket: PathBuf,

    /// CRI-O's CRI socket (`none` to not ask CRI-O).
    #[arg(long, value_name = "PATH", default_value = "/var/run/crio/crio.sock")]
    crio_socket: PathBuf,

    /// Container label copied into `container.labels` (repeatable; a trailing `*` is a
    /// prefix). Default: a few common application labels.
    #[arg(long = "container-label", value_name = "KEY")]
    container_labels: Vec<String>,

    /// Milliseconds a connection from a container egret has not identified yet may wait for
    /// the runtime's answer before its line is written with the container id only.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    container_grace_ms: u64,

    /// Seconds between `connection-progress` lines for each open TCP connection (bytes so
    /// far); 0 = off. On, the egress program copies each TCP socket's counters per packet.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    progress_interval: u64,

    /// Alert when a process's connects to one destination fail this many times in a row
    /// within --failure-alert-window (0 = no such alerts).
    #[arg(long, value_name = "N", default_value_t = 5)]
    failure_alert_count: u64,

    /// Window (seconds) for --failure-alert-count.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    failure_alert_window: u64,

    /// `on`: follow every TCP connection to its end (`connection-end` lines: outcome, latency,
    /// duration, bytes) and count UDP bytes. `off`: start lines only, the lowest overhead.
    #[arg(long, value_enum, default_value = "on")]
    connection_ends: Switch,

    /// Prometheus endpoint (/metrics, /healthz, /ready): `IP:PORT`, or `none`. Default:
    /// 127.0.0.1:9477, skipped with a warning if taken; an address given must be free.
    #[arg(long, value_name = "ADDR:PORT", value_parser = egret::metrics::parse_metrics_addr)]
    metrics_addr: Option<egret::metrics::MetricsAddr>,

    /// Read `run` flags from this YAML file (docs/config.md); flags given on the command line
    /// win. `egret config check FILE` validates one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// `none` turns a runtime off.
fn socket(path: &std::path::Path) -> Option<PathBuf> {
    (path.as_os_str() != "none").then(|| path.to_path_buf())
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let RunArgs {
            cgroup,
            output,
            log_level: _,
            ring_buffer_size,
            drain_interval_ms,
            metrics_interval,
            udp_idle,
            udp_report_interval,
            process_exit_grace,
            max_processes,
            ready_file,
            policy,
            alerts,
            output_max_bytes,
            output_max_age,
            output_retain,
            output_retain_age,
            syslog,
            syslog_socket,
            syslog_facility,
            alert_window,
            watch,
            on_exit,
            pin_path,
            dns_port,
            dns_ttl_floor,
            dns_ttl_ceiling,
            dns_events,
            containerd_socket,
            docker_socket,
            podman_socket,
            crio_socket,
            container_labels,
            container_grace_ms,
            progress_interval,
            failure_alert_count,
            failure_alert_window,
            connection_ends,
            metrics_addr,
            config: _,
        } = self;
        anyhow::ensure!(
            *failure_alert_window > 0,
            "--failure-alert-window must be at least 1 second"
        );
        anyhow::ensure!(*dns_port > 0, "--dns-port must be a port (1-65535)");
        anyhow::ensure!(
            dns_ttl_floor <= dns_ttl_ceiling,
            "--dns-ttl-floor ({dns_ttl_floor}) must not exceed --dns-ttl-ceiling ({dns_ttl_ceiling})"
        );
        anyhow::ensure!(
            alerts.as_deref() != Some(output.as_str()) || output == "-",
            "--alerts must name another file than --output (each file has its own chain)"
        );
        anyhow::ensure!(
            *alert_window > 0,
            "--alert-window must be at least 1 second"
        );
        anyhow::ensure!(
            *drain_interval_ms > 0,
            "--drain-interval-ms must be at least 1"
        );
        anyhow::ensure!(*udp_idle > 0, "--udp-idle must be at least 1 second");
        anyhow::ensure!(
            *udp_report_interval > 0,
            "--udp-report-interval must be at least 1 second"
        );
        Ok(Config {
            cgroup: cgroup.clone(),
            output: output.clone(),
            ring_buffer_size: *ring_buffer_size,
            drain_interval: Duration::from_millis(*drain_interval_ms),
            metrics_interval: (*metrics_interval > 0)
                .then(|| Duration::from_secs(*metrics_interval)),
            udp_idle: Duration::from_secs(*udp_idle),
            udp_report_interval: Duration::from_secs(*udp_report_interval),
            process_exit_grace: Duration::from_secs(*process_exit_grace),
            max_processes: *max_processes,
            ready_file: ready_file.clone(),
            policy: policy.clone(),
            alerts: alerts.clone(),
            output_files: egret::output::FileOptions {
                max_bytes: output_max_bytes.map(|size| size.0),
                max_age: output_max_age.map(|age| age.0),
                retain: *output_retain,
                retain_age: output_retain_age.map(|age| age.0),
            },
            syslog: syslog.then(|| egret::output::SyslogConfig {
                socket: syslog_socket.clone(),
                facility: *syslog_facility,
            }),
            alert_window: Duration::from_secs(*alert_window),
            watch: *watch,
            on_exit: match on_exit {
                OnExitArg::Detach => egret::kernel::OnExit::Detach,
                OnExitArg::Keep => egret::kernel::OnExit::Keep,
            },
            pin_path: pin_path.clone(),
            dns_port: *dns_port,
            dns_ttl_floor: Duration::from_secs(*dns_ttl_floor),
            dns_ttl_ceiling: Duration::from_secs(*dns_ttl_ceiling),
            dns_events: *dns_events,
            runtimes: egret::container::RuntimeConfig {
                containerd_socket: socket(containerd_socket),
                docker_socket: socket(docker_socket),
                podman_socket: socket(podman_socket),
                crio_socket: socket(crio_socket),
                label_allowlist: if container_labels.is_empty() {
                    egret::container::RuntimeConfig::default().label_allowlist
                } else {
                    container_labels.clone()
                },
                grace: Duration::from_millis(*container_grace_ms),
                ..egret::container::RuntimeConfig::default()
            },
            progress_interval: (*progress_interval > 0)
                .then(|| Duration::from_secs(*progress_interval)),
            failure_alert_count: *failure_alert_count,
            failure_alert_window: Duration::from_secs(*failure_alert_window),
            connection_ends: *connection_ends == Switch::On,
            metrics_listen: egret::metrics::Listen::from_arg(*metrics_addr),
        })
    }
}

fn init_logging(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(filter)
        .target(env_logger::Target::Stderr)
        .format_timestamp_micros()
        .init();
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(err), _) | (_, Err(err)) => {
            log::error!("cannot install signal handlers ({err}); stop egret with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = int.recv() => log::info!("SIGINT: detaching and flushing"),
        _ = term.recv() => log::info!("SIGTERM: detaching and flushing"),
    }
}

/// `egret verify`: the report on stdout when intact (exit 0), on stderr when broken (exit
/// 1); exit 2 when a file cannot be read.
fn verify(files: &[PathBuf]) -> std::process::ExitCode {
    match egret::output::verify::verify(files) {
        Ok(report) if report.intact() => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!("{report}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("egret verify: {err}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `egret policy check`: the parser's summary, after the same compilation `egret run` does.
fn policy_check(path: &std::path::Path) -> std::process::ExitCode {
    let result = egret::policy::parse::check(path).and_then(|summary| {
        egret::agent::load_policy(Some(path)).map(|(policy, _)| (summary, policy))
    });
    match result {
        Ok((summary, policy)) => {
            println!("{summary}");
            for note in egret::policy::parse::notes(&policy) {
                println!("note: {note}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.errors {
                eprintln!("{error}");
            }
            eprintln!("{}: {} error(s)", errors.file, errors.errors.len());
            std::process::ExitCode::FAILURE
        }
    }
}

/// Flags a config file may not set.
const NOT_IN_CONFIG: &[&str] = &["config"];

/// `egret run`'s command, as clap knows it.
fn run_command() -> anyhow::Result<clap::Command> {
    use clap::CommandFactory as _;
    Cli::command()
        .find_subcommand("run")
        .cloned()
        .context("the `run` subcommand is missing")
}

/// `egret run`'s arguments with a config file read in: its settings, then `command_line`
/// (the arguments after `run`), which win. Also returns the file, to locate later errors.
fn with_config_file(
    path: &std::path::Path,
    command_line: &[std::ffi::OsString],
) -> anyhow::Result<(Box<RunArgs>, egret::config_file::ConfigFile)> {
    use clap::FromArgMatches as _;
    let command = run_command()?;
    let given = command
        .clone()
        .try_get_matches_from(std::iter::once("egret run".into()).chain(command_line.to_vec()))?;
    let file = egret::config_file::ConfigFile::load(path, &command, NOT_IN_CONFIG)?;
    let merged = file.merge(&command, "egret run", &given, command_line)?;
    let args = RunArgs::from_arg_matches(&merged)?;
    // Checks across flags, located at the key they name.
    if let Err(err) = args.config() {
        return Err(egret::config_file::ConfigErrors {
            file: file.file().to_owned(),
            errors: vec![file.locate(&err.to_string())],
        }
        .into());
    }
    Ok((Box::new(args), file))
}

/// `egret config check`: what `egret run --config FILE` (with no other flag) would use.
fn config_check(path: &std::path::Path) -> std::process::ExitCode {
    match with_config_file(path, &[]) {
        Ok((_, file)) => {
            let keys: Vec<&str> = file.keys().collect();
            println!(
                "{}: ok: {} setting(s){}",
                path.display(),
                keys.len(),
                if keys.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", keys.join(", "))
                }
            );
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            match err.downcast_ref::<egret::config_file::ConfigErrors>() {
                Some(errors) => {
                    for error in &errors.errors {
                        eprintln!("{error}");
                    }
                    eprintln!("{}: {} error(s)", errors.file, errors.errors.len());
                }
                None => eprintln!("{}: {err:#}", path.display()),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// `egret ready FILE`: the ready file exists and holds the pid of a live process (seen in this
/// pid namespace, so the probe must share egret's).
fn ready_check(file: &std::path::Path) -> std::process::ExitCode {
    let pid = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            std::process::ExitCode::SUCCESS
        }
        Some(pid) => {
            eprintln!("{}: egret (pid {pid}) is not running", file.display());
            std::process::ExitCode::FAILURE
        }
        None => {
            eprintln!("{}: not ready (no ready file with a pid)", file.display());
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { path }) => Ok(policy_check(&path)),
        Command::Config(ConfigCommand::Check { path }) => Ok(config_check(&path)),
        Command::Ready { file } => Ok(ready_check(&file)),
        Command::Report(args) => Ok(egret::report::command(&args)?),
        Command::Run(args) => {
            let args = match &args.config {
                Some(path) => {
                    let command_line: Vec<std::ffi::OsString> = std::env::args_os()
                        .skip(1)
                        .skip_while(|arg| arg != "run")
                        .skip(1)
                        .collect();
                    with_config_file(path, &command_line)?.0
                }
                None => args,
            };
            init_logging(args.log_level);
            let config = args.config()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let metrics = runtime.block_on(egret::run(config, shutdown_signal()))?;
            log::info!(
                "stopped: {} events received, {} lost in the kernel, {} dropped in userspace",
                metrics.events_received,
                metrics.events_lost_kernel,
                metrics.events_dropped_userspace
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Verify { files } => Ok(verify(&files)),
    }
}

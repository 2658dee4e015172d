//! What `egret run` is told: one group of flags per subsystem, each the configuration that
//! subsystem takes.
//!
//! Every flag is defined once, here: its name, value syntax, default (clap's `default_value`)
//! and help. Values are checked and converted while clap parses them (the value parsers
//! below), so a group holds typed values (`Duration`; [`OrOff`]`<Duration>` where 0 turns a
//! feature off, `OrOff<PathBuf>` where `none` does) and the subsystem converts nothing. The
//! two checks that span two flags are each group's `validate`, run once by
//! [`RunConfig::validate`] after parsing (`egret config check` runs it too, and locates its
//! message at the key it names).
//!
//! `--config FILE` (`config_file`) needs nothing from here: it reads the flags from clap's
//! command. README.md's `egret run` table is generated from these definitions (the
//! `readme_flag_table` test).

use std::{path::PathBuf, time::Duration};

use clap::{
    builder::{EnumValueParser, TypedValueParser},
    ArgAction,
};

use crate::{
    config_file::{ConfigErrors, ConfigFile},
    container::{
        RuntimeConfig, CONTAINERD_SOCKET, CRIO_SOCKET, DEFAULT_LABEL_ALLOWLIST, DOCKER_SOCKET,
        PODMAN_SOCKET,
    },
    kernel::OnExit,
    metrics::{parse_metrics_addr, Listen, MetricsAddr},
    output::{
        journal,
        rotate::{Age, ByteSize, ParseError},
        syslog::Facility,
        FileOptions, Format, SyslogConfig,
    },
    redact::Pattern,
};

/// A setting that can be turned off: `None` for `none` (a socket) or `0` (an interval).
///
/// `Option<T>` under another name: clap reads a field typed `Option<T>` as a flag that may be
/// left out (`None` when it is), while these flags have a default and their parser gives
/// `None`.
pub type OrOff<T> = Option<T>;

/// Everything `egret run` takes.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RunConfig {
    /// Log verbosity; logs go to stderr, never into the event output. Also the kernel
    /// programs' (target `egret::bpf`; at `debug`: failed map updates, refused operations).
    #[arg(long, default_value = "info", value_parser = log_level())]
    pub log_level: log::LevelFilter,

    /// Read `egret run`'s flags from this YAML file (docs/config.md); flags given on the command
    /// line win; `egret config check FILE` validates one.
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub attach: AttachConfig,
    #[command(flatten)]
    pub output: OutputConfig,
    #[command(flatten)]
    pub processes: ProcessConfig,
    #[command(flatten)]
    pub redaction: RedactConfig,
    #[command(flatten)]
    pub dns: DnsConfig,
    #[command(flatten)]
    pub containers: ContainerConfig,
    #[command(flatten)]
    pub connections: ConnectionConfig,
    #[command(flatten)]
    pub policy: PolicyConfig,
    #[command(flatten)]
    pub baseline: BaselineConfig,
    #[command(flatten)]
    pub metrics: MetricsConfig,
}

/// Loading, attaching and draining the kernel programs (`kernel`, the drain loop, the ready
/// file).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Kernel programs")]
pub struct AttachConfig {
    /// Monitor this cgroup v2 directory and everything below it.
    ///
    /// Default: the root of the cgroup2 mount (the whole host).
    ///
    /// The mount is found in /proc/self/mounts.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,

    /// Kernel ring buffer size in bytes (a power of two, at least 4096); events that do not fit
    /// are counted in `events_lost_kernel`.
    ///
    /// A larger buffer survives longer bursts.
    #[arg(long, value_name = "BYTES")]
    #[arg(default_value = "16777216", value_parser = ring_buffer_size())]
    pub ring_buffer_size: u32,

    /// How often (milliseconds) the ring buffer is drained when the kernel has not woken egret.
    ///
    /// The kernel wakes egret only when a quarter of the buffer is full, to keep the per-event
    /// cost low.
    #[arg(long = "drain-interval-ms", value_name = "MS")]
    #[arg(default_value = "20", value_parser = positive_millis())]
    pub drain_interval: Duration,

    /// What happens to the programs when egret exits or is killed: `keep` leaves the socket
    /// programs attached (pinned), enforcing the last policy until the next egret takes over.
    #[arg(long, default_value = "detach", value_parser = on_exit())]
    pub on_exit: OnExit,

    /// bpffs directory where `--on-exit keep` pins the programs (per cgroup).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/egret")]
    pub pin_path: PathBuf,

    /// Create this file (holding egret's pid) once the programs are attached; remove it at exit.
    ///
    /// For supervisors and tests that must not start work before egret sees it; `egret ready
    /// FILE` is a probe for it.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Most TCP connections the kernel follows at once (its `CONNS` map); past it the oldest
    /// entry is evicted and its end line lacks the connect time (`tcp_state_missing`).
    #[arg(long = "max-tcp-connections", value_name = "N")]
    #[arg(default_value = "262144", value_parser = map_entries())]
    pub max_tcp_connections: u32,

    /// Most UDP flows (socket, destination) the kernel counts at once (its `UDP_FLOWS` and
    /// `UDP_SOCKETS` maps); a flow evicted while open is counted in `udp_flows_evicted`.
    #[arg(long = "max-udp-flows", value_name = "N")]
    #[arg(default_value = "65536", value_parser = map_entries())]
    pub max_udp_flows: u32,

    /// Block mode: most (address, domain rule) pairs the kernel keeps learned from approved DNS
    /// answers (its `DNS_ALLOW` maps); past it one of the least recently used is forgotten (the
    /// kernel's LRU is approximate), and a connection to it is refused
    /// (`learned_addresses_evicted`).
    #[arg(long = "max-learned-addresses", value_name = "N")]
    #[arg(default_value = "32768", value_parser = map_entries())]
    pub max_learned_addresses: u32,
}

/// Where lines go (the sinks: output and alerts files, their rotation, syslog).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Output")]
pub struct OutputConfig {
    /// Where JSON lines go: `-` for stdout, or a file that is appended to.
    ///
    /// Lines are flushed at least every second and at shutdown.
    #[arg(long = "output", value_name = "PATH", default_value = "-")]
    pub path: String,

    /// How the output's lines are written: `json` (JSON Lines), or `text` (one aligned line
    /// per event for a person; colour on a terminal unless NO_COLOR is set; only with
    /// `--output -`: a file keeps JSON).
    ///
    /// Default: text when --output is `-` and stdout is a terminal, else json.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,

    /// Also write alert lines (unapproved destinations) to this file (appended), another file
    /// than the output.
    #[arg(long, value_name = "PATH")]
    pub alerts: Option<String>,

    /// Rotate the output (and alerts) file before a line would make it larger than this:
    /// bytes, or with a K, M or G suffix (binary).
    ///
    /// Default: no rotation by size.
    #[arg(long = "output-max-bytes", value_name = "SIZE", value_parser = byte_size)]
    pub max_bytes: Option<u64>,

    /// Rotate the output (and alerts) file once its first line is this old (30s, 15m, 1h, 1d,
    /// 1w).
    ///
    /// Default: no rotation by age.
    #[arg(long = "output-max-age", value_name = "DURATION", value_parser = age)]
    pub max_age: Option<Duration>,

    /// Rotated files kept per output file; older ones are deleted at rotation.
    #[arg(long = "output-retain", value_name = "N", default_value = "10")]
    pub retain: usize,

    /// Also delete rotated files closed longer ago than this (1d, 1w...).
    ///
    /// Default: no limit by age.
    #[arg(long = "output-retain-age", value_name = "DURATION", value_parser = age)]
    pub retain_age: Option<Duration>,

    /// Also send every line to the local syslog daemon (RFC 5424; the message is the JSON
    /// line).
    ///
    /// Over a unix datagram socket, --syslog-socket.
    #[arg(long)]
    pub syslog: bool,

    /// The syslog daemon's socket.
    #[arg(long, value_name = "PATH", default_value = "/dev/log")]
    pub syslog_socket: PathBuf,

    /// Syslog facility: a name (`daemon`, `local0`...) or 0-23.
    ///
    /// The names: kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv,
    /// ftp, ntp, audit, alert, clock, local0-local7.
    #[arg(long, value_name = "NAME", default_value = "daemon")]
    pub syslog_facility: Facility,

    /// Also send alert lines to the systemd journal, natively, with structured fields
    /// (EGRET_VERDICT=, EGRET_DESTINATION_IP=, EGRET_UNIT=...).
    ///
    /// `journalctl -u egret EGRET_VERDICT=unapproved` lists them. A missing journal socket
    /// stops egret at start; an alert the journal does not take is counted, not fatal.
    #[arg(long)]
    pub journal: bool,

    /// journald's native socket (--journal).
    #[arg(long, value_name = "PATH", default_value = journal::SOCKET)]
    pub journal_socket: PathBuf,
}

/// The process table (the identity stage).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Processes")]
pub struct ProcessConfig {
    /// Most processes kept in the process table.
    #[arg(long = "max-processes", value_name = "N", default_value = "65536")]
    pub max: usize,

    /// Seconds an exited process stays in the process table, for late events.
    #[arg(long = "process-exit-grace", value_name = "SECS")]
    #[arg(default_value = "30", value_parser = seconds())]
    pub exit_grace: Duration,
}

/// Secrets in command lines (`redact`: the redactor the process table applies to every
/// process's arguments).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Redaction")]
pub struct RedactConfig {
    /// `on`: secrets in process arguments and command lines (passwords, tokens, keys,
    /// credentials in URLs and headers; docs/events.md) are replaced with `[REDACTED]` before
    /// any line is written; `off`: arguments are written as captured, --redact included.
    ///
    /// Also applies to the parent's and leaders' arguments on a line.
    #[arg(long = "redact-args", value_name = "REDACT_ARGS", action = ArgAction::Set)]
    #[arg(default_value = "on", value_parser = on_off())]
    pub args: bool,

    /// Also replace what this regular expression matches in every argument with
    /// `[REDACTED]` (repeatable; with capture groups, only what the groups match).
    ///
    /// Rust regex syntax (https://docs.rs/regex): `(?i)` for case-insensitive. Applied after
    /// the built-in rules, only while --redact-args is on.
    #[arg(long = "redact", value_name = "REGEX", value_parser = Pattern::parse)]
    pub patterns: Vec<Pattern>,
}

/// Naming destinations from the DNS answers egret sees (the kernel's capture, the DNS state).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "DNS")]
pub struct DnsConfig {
    /// Resolver port whose answers egret reads to name destinations (UDP and TCP).
    #[arg(long = "dns-port", value_name = "PORT", default_value = "53", value_parser = port())]
    pub port: u16,

    /// Shortest time (seconds) an answer's addresses stay tied to its name, whatever its TTL;
    /// at most --dns-ttl-ceiling.
    #[arg(long = "dns-ttl-floor", value_name = "SECS")]
    #[arg(default_value = "5", value_parser = seconds())]
    pub ttl_floor: Duration,

    /// Longest time (seconds) an answer's addresses stay tied to its name, whatever its TTL.
    #[arg(long = "dns-ttl-ceiling", value_name = "SECS")]
    #[arg(default_value = "3600", value_parser = seconds())]
    pub ttl_ceiling: Duration,

    /// Also write a `dns` line for every DNS answer observed (chatty).
    #[arg(long = "dns-events")]
    pub events: bool,
}

/// Asking container runtimes for container and pod identity (`container`, through
/// [`ContainerConfig::runtime_config`]).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Containers")]
pub struct ContainerConfig {
    /// containerd's gRPC socket; `none`: do not ask containerd.
    ///
    /// A socket that is missing is a warning.
    #[arg(long, value_name = "PATH", default_value = CONTAINERD_SOCKET, value_parser = socket())]
    pub containerd_socket: OrOff<PathBuf>,

    /// Docker Engine API socket; `none`: do not ask Docker.
    #[arg(long, value_name = "PATH", default_value = DOCKER_SOCKET, value_parser = socket())]
    pub docker_socket: OrOff<PathBuf>,

    /// Podman's Docker-compatible API socket; `none`: do not ask podman.
    #[arg(long, value_name = "PATH", default_value = PODMAN_SOCKET, value_parser = socket())]
    pub podman_socket: OrOff<PathBuf>,

    /// CRI-O's CRI socket; `none`: do not ask CRI-O.
    #[arg(long, value_name = "PATH", default_value = CRIO_SOCKET, value_parser = socket())]
    pub crio_socket: OrOff<PathBuf>,

    /// Container label copied into `container.labels` (repeatable; a trailing `*` makes a
    /// prefix).
    ///
    /// Given labels replace the default ones.
    #[arg(long = "container-label", value_name = "KEY", default_values = DEFAULT_LABEL_ALLOWLIST)]
    pub labels: Vec<String>,

    /// Milliseconds a line from a container egret has not identified yet may wait for the
    /// runtime's answer.
    ///
    /// After that, the line is written with the container id only.
    #[arg(long = "container-grace-ms", value_name = "MS")]
    #[arg(default_value = "500", value_parser = millis())]
    pub grace: Duration,
}

/// Following connections and flows through their life (the UDP and TCP life cycles, failure
/// alerts; the kernel attaches the programs that see ends only when `ends`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Connections")]
pub struct ConnectionConfig {
    /// `on`: follow every TCP connection to its end (a `connection-end` line: outcome, connect
    /// latency, duration, bytes each way) and count UDP bytes; `off`: start lines only, the
    /// lowest overhead.
    #[arg(long = "connection-ends", value_name = "CONNECTION_ENDS", action = ArgAction::Set)]
    #[arg(default_value = "on", value_parser = on_off())]
    pub ends: bool,

    /// `on`: read the first bytes each way of every TCP connection for names and requests
    /// (TLS server name, ALPN, JA4; HTTP method, host, path, status) on its end line; `off`:
    /// not read (block mode still reads the first payload of connections whose name it must
    /// check). Needs --connection-ends on.
    #[arg(long = "first-bytes", value_name = "FIRST_BYTES", action = ArgAction::Set)]
    #[arg(default_value = "on", value_parser = on_off())]
    pub first_bytes: bool,

    /// Seconds between `connection-progress` lines (bytes so far) for each open TCP
    /// connection; 0: none.
    ///
    /// On, the egress program copies each TCP socket's counters per packet.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = seconds_or_off())]
    pub progress_interval: OrOff<Duration>,

    /// A UDP flow (socket, destination) with no datagram for this many seconds ends: its
    /// `send` line is written.
    ///
    /// The next datagram starts a new flow.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_seconds())]
    pub udp_idle: Duration,

    /// A busy UDP flow gets a `send` line at least this often (seconds).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = positive_seconds())]
    pub udp_report_interval: Duration,

    /// Alert when a process's connects to one destination fail this many times in a row
    /// within --failure-alert-window; 0: no such alerts.
    #[arg(long, value_name = "N", default_value = "5")]
    pub failure_alert_count: u64,

    /// Window (seconds) for --failure-alert-count.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = positive_seconds())]
    pub failure_alert_window: Duration,

    /// `on`: a TCP connection that ends within the drain that saw it start gets one line,
    /// its `connection-end` line with `event.type` `[connection, start, end]`, instead of a
    /// `connect` line and a `connection-end` line; `off`: always two lines.
    ///
    /// About half the lines, bytes and CPU for short connections. Needs --connection-ends on.
    #[arg(long = "merge-short-connections", value_name = "MERGE", action = ArgAction::Set)]
    #[arg(default_value = "off", value_parser = on_off())]
    pub merge_short: bool,
}

/// Judging destinations (the allowlist, its reloads, alert folding).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Policy")]
pub struct PolicyConfig {
    /// Allowlist policy (YAML, docs/policy.md); `egret policy check PATH` validates one.
    ///
    /// Default: the built-in policy (audit mode, loopback approved), which reports every other
    /// destination.
    #[arg(long = "policy", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Reload the policy when its file changes (checked every second); SIGHUP always reloads.
    ///
    /// An invalid new policy is refused and the old one stays in force.
    #[arg(long)]
    pub watch: bool,

    /// Alerts for the same (executable, cgroup, destination, port, transport) within this many
    /// seconds are folded into one, with a repeat count.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = positive_seconds())]
    pub alert_window: Duration,
}

/// `--state-dir`'s default, for `egret run` and `egret baseline`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/egret";

/// The learned baseline and error spikes (`baseline`, the baseline stage; docs/baseline.md).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Baseline")]
pub struct BaselineConfig {
    /// Learn each workload's destinations for this long (30s, 15m, 1h, 7d), counted from
    /// when the state file was created; after it, a destination new to a workload raises one
    /// `new-destination` alert.
    ///
    /// Default: no baseline (and no spike alerts). With a baseline and no --policy, the
    /// built-in policy stops alerting on every destination.
    #[arg(long = "baseline-learn", value_name = "DURATION", value_parser = age)]
    pub learn: Option<Duration>,

    /// Directory of egret's state (the baseline, `baseline.json`), created if missing.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Most workloads in the baseline; past it the least recently seen eighth is evicted.
    #[arg(
        long = "baseline-max-workloads",
        value_name = "N",
        default_value = "1000"
    )]
    #[arg(value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_workloads: usize,

    /// Most destinations per workload; past it the workload's least recently seen eighth is
    /// evicted.
    #[arg(
        long = "baseline-max-destinations",
        value_name = "N",
        default_value = "1000"
    )]
    #[arg(value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_destinations: usize,

    /// Seconds between writes of the state file (when it changed); it is also written when
    /// learning ends and at shutdown.
    #[arg(long = "baseline-flush-interval", value_name = "SECS")]
    #[arg(default_value = "30", value_parser = positive_seconds())]
    pub flush_interval: Duration,

    /// Rolling window (seconds) of connection failures and HTTP 4xx/5xx per workload and
    /// destination for spike alerts.
    #[arg(long = "spike-window", value_name = "SECS")]
    #[arg(default_value = "60", value_parser = positive_seconds())]
    pub spike_window: Duration,

    /// Fewest errors in the window for a spike (the absolute floor); 0: no spike alerts.
    #[arg(long = "spike-min-errors", value_name = "N", default_value = "5")]
    pub spike_min_errors: u64,

    /// A spike's error share must be at least this many times the destination's recent normal
    /// share (and at least 10%).
    #[arg(long = "spike-factor", value_name = "X", default_value = "3")]
    #[arg(value_parser = factor)]
    pub spike_factor: Factor,
}

/// `--spike-factor`: a finite number of at least 1 (so it compares like a whole value).
#[derive(Debug, Clone, Copy)]
pub struct Factor(pub f64);

impl PartialEq for Factor {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Factor {}

fn factor(text: &str) -> Result<Factor, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 1.0 => Ok(Factor(x)),
        Ok(_) => Err("must be a number of at least 1".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// egret's own metrics (`metric` lines, the Prometheus endpoint).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsConfig {
    /// Seconds between `metric` lines; 0: only the one at shutdown.
    #[arg(long = "metrics-interval", value_name = "SECS")]
    #[arg(default_value = "10", value_parser = seconds_or_off())]
    pub interval: OrOff<Duration>,

    /// Prometheus endpoint (/metrics, /healthz, /ready; docs/metrics.md): `IP:PORT`, or `none`.
    ///
    /// Default: 127.0.0.1:9477, skipped with a warning if taken.
    ///
    /// An address given must be free.
    #[arg(long = "metrics-addr", value_name = "ADDR:PORT", value_parser = parse_metrics_addr)]
    pub addr: Option<MetricsAddr>,
}

/// `--log-level`'s values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::Error,
            LogLevel::Warn => Self::Warn,
            LogLevel::Info => Self::Info,
            LogLevel::Debug => Self::Debug,
            LogLevel::Trace => Self::Trace,
        }
    }
}

/// `--on-exit`'s values, with their help.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnExitArg {
    /// Programs go away with egret (also on SIGKILL): traffic flows unchecked.
    Detach,
    /// Programs stay attached (pinned under --pin-path) and keep enforcing the last policy
    /// until the next egret on the same cgroup takes them over.
    Keep,
}

impl From<OnExitArg> for OnExit {
    fn from(arg: OnExitArg) -> Self {
        match arg {
            OnExitArg::Detach => Self::Detach,
            OnExitArg::Keep => Self::Keep,
        }
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

// The value parsers: each turns a flag's text into the value its subsystem takes, or refuses it
// with a reason that clap shows after the flag's name. Numbers are clap's own parsers first,
// so a value that is no number is refused in clap's words.

fn log_level() -> impl TypedValueParser<Value = log::LevelFilter> {
    EnumValueParser::<LogLevel>::new().map(log::LevelFilter::from)
}

fn on_exit() -> impl TypedValueParser<Value = OnExit> {
    EnumValueParser::<OnExitArg>::new().map(OnExit::from)
}

/// `on`: true.
fn on_off() -> impl TypedValueParser<Value = bool> {
    EnumValueParser::<Switch>::new().map(|switch| switch == Switch::On)
}

/// `--ring-buffer-size`: the kernel takes a power of two, at least one page.
fn ring_buffer_size() -> impl TypedValueParser<Value = u32> {
    clap::value_parser!(u32).try_map(|bytes| {
        if bytes >= 4096 && bytes.is_power_of_two() {
            Ok(bytes)
        } else {
            Err("must be a power of two and at least 4096 (one page)")
        }
    })
}

/// The size of a kernel map: at least 16 entries (the kernel's LRU maps keep some free per
/// CPU), at most 16 Mi.
fn map_entries() -> impl TypedValueParser<Value = u32> {
    clap::value_parser!(u32).range(16..=16 * 1024 * 1024)
}

/// A port number: 0 is none.
fn port() -> impl TypedValueParser<Value = u16> {
    clap::value_parser!(u16).range(1..)
}

/// Whole milliseconds, 0 included.
fn millis() -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64).map(Duration::from_millis)
}

/// Whole seconds, 0 included.
fn seconds() -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64).map(Duration::from_secs)
}

/// Whole milliseconds, at least 1: a period.
fn positive_millis() -> impl TypedValueParser<Value = Duration> {
    at_least_one(Duration::from_millis, "must be at least 1")
}

/// Whole seconds, at least 1: windows and timeouts that 0 would make meaningless.
fn positive_seconds() -> impl TypedValueParser<Value = Duration> {
    at_least_one(Duration::from_secs, "must be at least 1 second")
}

/// A whole number of `unit`s; 0 is refused with `refusal`.
fn at_least_one(
    unit: fn(u64) -> Duration,
    refusal: &'static str,
) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64).try_map(move |count| match count {
        0 => Err(refusal),
        count => Ok(unit(count)),
    })
}

/// Whole seconds; 0 turns the feature off (`None`).
fn seconds_or_off() -> impl TypedValueParser<Value = OrOff<Duration>> {
    clap::value_parser!(u64).map(|secs| (secs > 0).then(|| Duration::from_secs(secs)))
}

/// A runtime's socket; `none` turns that runtime off.
fn socket() -> impl TypedValueParser<Value = OrOff<PathBuf>> {
    clap::builder::PathBufValueParser::new()
        .map(|path| (path.as_os_str() != "none").then_some(path))
}

/// `100M`: bytes.
fn byte_size(text: &str) -> Result<u64, ParseError> {
    text.parse::<ByteSize>().map(|size| size.0)
}

/// `1d`: a duration.
fn age(text: &str) -> Result<Duration, ParseError> {
    text.parse::<Age>().map(|age| age.0)
}

/// A check across two flags that failed. The message names both flags: `egret config check`
/// locates it at the first one the file sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagConflict {
    #[error(
        "--dns-ttl-floor ({}) must not exceed --dns-ttl-ceiling ({})",
        floor.as_secs(),
        ceiling.as_secs()
    )]
    DnsTtl { floor: Duration, ceiling: Duration },
    #[error("--alerts must name another file than --output (each file has its own chain)")]
    AlertsIsOutput,
    #[error(
        "--format text writes to stdout only (--output -); a file keeps JSON lines (its hash \
         chain, `egret verify`, `egret report` and `egret top` read them)"
    )]
    TextToFile,
}

impl RunConfig {
    /// The checks across flags, once the values themselves are parsed.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn validate(&self) -> Result<(), FlagConflict> {
        self.dns.validate()?;
        self.output.validate()
    }

    /// `egret run`'s configuration from a config file and `command_line` (the arguments
    /// after `run`, which win; clap's matches for them alone are `given`), `command` being
    /// `egret run`'s; checked across flags, an error located at the key it names. What
    /// `egret run --config` and `egret config check` do with a file's text once parsed,
    /// fuzzed from bytes (`fuzz/fuzz_targets/config_parse.rs`).
    ///
    /// # Errors
    /// Every error [`ConfigFile::merge`] finds, or the first check across flags that fails.
    pub fn from_config_file(
        file: &ConfigFile,
        command: &clap::Command,
        given: &clap::ArgMatches,
        command_line: &[std::ffi::OsString],
    ) -> Result<Self, ConfigErrors> {
        use clap::FromArgMatches as _;
        let located = |message: &str| ConfigErrors {
            file: file.file().to_owned(),
            errors: vec![file.locate(message)],
        };
        let merged = file.merge(command, "egret run", given, command_line)?;
        let config = Self::from_arg_matches(&merged)
            .map_err(|e| located(e.to_string().lines().next().unwrap_or_default()))?;
        config
            .validate()
            .map_err(|conflict| located(&conflict.to_string()))?;
        Ok(config)
    }
}

impl OutputConfig {
    /// Each file has its own hash chain: alerts cannot go into the output file (stdout can
    /// take both).
    ///
    /// # Errors
    /// [`FlagConflict::AlertsIsOutput`], [`FlagConflict::TextToFile`].
    pub fn validate(&self) -> Result<(), FlagConflict> {
        if self.format == Some(Format::Text) && self.path != "-" {
            return Err(FlagConflict::TextToFile);
        }
        match &self.alerts {
            Some(alerts) if *alerts == self.path && self.path != "-" => {
                Err(FlagConflict::AlertsIsOutput)
            }
            _ => Ok(()),
        }
    }

    /// The format lines are written in: `--format`, else text when the output is stdout and
    /// `stdout_is_terminal`, else JSON.
    pub fn format(&self, stdout_is_terminal: bool) -> Format {
        self.format
            .unwrap_or(if self.path == "-" && stdout_is_terminal {
                Format::Text
            } else {
                Format::Json
            })
    }

    /// Rotation and retention of the output and alerts files.
    pub fn files(&self) -> FileOptions {
        FileOptions {
            max_bytes: self.max_bytes,
            max_age: self.max_age,
            retain: self.retain,
            retain_age: self.retain_age,
        }
    }

    /// The journal socket alert lines go to, when `--journal`.
    pub fn journal(&self) -> Option<PathBuf> {
        self.journal.then(|| self.journal_socket.clone())
    }

    /// The syslog copy of every line, when `--syslog`.
    pub fn syslog(&self) -> Option<SyslogConfig> {
        self.syslog.then(|| SyslogConfig {
            socket: self.syslog_socket.clone(),
            facility: self.syslog_facility,
        })
    }
}

impl DnsConfig {
    /// # Errors
    /// [`FlagConflict::DnsTtl`] when the floor exceeds the ceiling.
    pub fn validate(&self) -> Result<(), FlagConflict> {
        if self.ttl_floor > self.ttl_ceiling {
            return Err(FlagConflict::DnsTtl {
                floor: self.ttl_floor,
                ceiling: self.ttl_ceiling,
            });
        }
        Ok(())
    }
}

impl ContainerConfig {
    /// The container resolver's settings: these, and the container module's own constants
    /// for the rest (cache bounds, timeouts, retries).
    pub fn runtime_config(&self) -> RuntimeConfig {
        let Self {
            containerd_socket,
            docker_socket,
            podman_socket,
            crio_socket,
            labels,
            grace,
        } = self;
        RuntimeConfig {
            containerd_socket: containerd_socket.clone(),
            docker_socket: docker_socket.clone(),
            podman_socket: podman_socket.clone(),
            crio_socket: crio_socket.clone(),
            label_allowlist: labels.clone(),
            grace: *grace,
            ..RuntimeConfig::default()
        }
    }
}

impl MetricsConfig {
    /// Where the Prometheus endpoint listens (`None`: `--metrics-addr none`).
    pub fn listen(&self) -> Option<Listen> {
        Listen::from_arg(self.addr)
    }
}

impl RunConfig {
    /// What `egret run ARGS` parses (before [`RunConfig::validate`]); `args` follow `run`.
    /// For unit tests and the replay benchmark (`crate::pipeline::replay`).
    pub fn from_flags<S: AsRef<str>>(args: &[S]) -> Result<Self, clap::Error> {
        use clap::{Args as _, FromArgMatches as _};
        let matches = Self::augment_args(clap::Command::new("egret run"))
            .no_binary_name(true)
            .try_get_matches_from(args.iter().map(AsRef::as_ref))?;
        Self::from_arg_matches(&matches)
    }
}

#[cfg(test)]
impl RunConfig {
    /// The defaults: what `egret run` with no flag uses. For unit tests of the subsystems.
    pub(crate) fn defaults() -> Self {
        Self::from_flags::<&str>(&[]).expect("no flag is required")
    }
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, net::SocketAddr};

    use clap::{ArgAction, Args as _};

    use super::*;

    fn refused(args: &[&str]) -> String {
        match RunConfig::from_flags(args) {
            Ok(config) => panic!("{args:?} accepted: {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn no_flag_gives_the_defaults() {
        let config = RunConfig::defaults();
        assert_eq!(config.log_level, log::LevelFilter::Info);
        assert_eq!(config.config_file, None);
        assert_eq!(
            config.attach,
            AttachConfig {
                cgroup: None,
                ring_buffer_size: 16 * 1024 * 1024,
                drain_interval: Duration::from_millis(20),
                on_exit: OnExit::Detach,
                pin_path: PathBuf::from("/sys/fs/bpf/egret"),
                ready_file: None,
                max_tcp_connections: 262_144,
                max_udp_flows: 65536,
                max_learned_addresses: 32768,
            }
        );
        assert_eq!(
            config.output,
            OutputConfig {
                path: "-".to_owned(),
                format: None,
                alerts: None,
                max_bytes: None,
                max_age: None,
                retain: 10,
                retain_age: None,
                syslog: false,
                syslog_socket: PathBuf::from("/dev/log"),
                syslog_facility: Facility::DAEMON,
                journal: false,
                journal_socket: PathBuf::from("/run/systemd/journal/socket"),
            }
        );
        assert_eq!(config.output.files(), FileOptions::default());
        assert_eq!(config.output.syslog(), None);
        assert_eq!(config.output.journal(), None);
        assert_eq!(
            config.processes,
            ProcessConfig {
                max: 65536,
                exit_grace: Duration::from_secs(30),
            }
        );
        assert_eq!(
            config.dns,
            DnsConfig {
                port: 53,
                ttl_floor: Duration::from_secs(5),
                ttl_ceiling: Duration::from_secs(3600),
                events: false,
            }
        );
        assert_eq!(config.containers.runtime_config(), RuntimeConfig::default());
        assert_eq!(
            config.connections,
            ConnectionConfig {
                ends: true,
                first_bytes: true,
                progress_interval: None,
                udp_idle: Duration::from_secs(5),
                udp_report_interval: Duration::from_secs(60),
                failure_alert_count: 5,
                failure_alert_window: Duration::from_secs(60),
                merge_short: false,
            }
        );
        assert_eq!(
            config.policy,
            PolicyConfig {
                file: None,
                watch: false,
                alert_window: Duration::from_secs(60),
            }
        );
        assert_eq!(
            config.metrics,
            MetricsConfig {
                interval: Some(Duration::from_secs(10)),
                addr: None,
            }
        );
        assert_eq!(
            config.metrics.listen(),
            Some(Listen {
                addr: crate::metrics::DEFAULT_METRICS_ADDR,
                required: false
            })
        );
    }

    #[test]
    fn values_become_typed_settings() {
        let config = RunConfig::from_flags(&[
            "--log-level=debug",
            "--ring-buffer-size=4096",
            "--drain-interval-ms=1",
            "--on-exit=keep",
            "--output=/var/log/e.jsonl",
            "--alerts=/var/log/a.jsonl",
            "--output-max-bytes=100M",
            "--output-max-age=1d",
            "--output-retain-age=1w",
            "--syslog",
            "--syslog-facility=local3",
            "--dns-port=5353",
            "--dns-ttl-floor=0",
            "--dns-ttl-ceiling=0",
            "--docker-socket=none",
            "--crio-socket=/run/crio.sock",
            "--container-label=team",
            "--container-label=app*",
            "--container-grace-ms=0",
            "--connection-ends=off",
            "--progress-interval=7",
            "--metrics-interval=0",
            "--metrics-addr=none",
            "--policy=p.yaml",
            "--watch",
        ])
        .unwrap();
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        assert_eq!(config.attach.ring_buffer_size, 4096);
        assert_eq!(config.attach.drain_interval, Duration::from_millis(1));
        assert_eq!(config.attach.on_exit, OnExit::Keep);
        assert_eq!(
            config.output.files(),
            FileOptions {
                max_bytes: Some(100 << 20),
                max_age: Some(Duration::from_secs(86_400)),
                retain: 10,
                retain_age: Some(Duration::from_secs(7 * 86_400)),
            }
        );
        assert_eq!(
            config.output.syslog(),
            Some(SyslogConfig {
                socket: PathBuf::from("/dev/log"),
                facility: "local3".parse().unwrap(),
            })
        );
        assert_eq!(config.dns.port, 5353);
        assert_eq!(config.dns.ttl_ceiling, Duration::ZERO);
        let runtimes = config.containers.runtime_config();
        assert_eq!(runtimes.docker_socket, None);
        assert_eq!(runtimes.crio_socket, Some(PathBuf::from("/run/crio.sock")));
        assert_eq!(
            runtimes.containerd_socket,
            RuntimeConfig::default().containerd_socket
        );
        assert_eq!(runtimes.label_allowlist, ["team", "app*"]);
        assert_eq!(runtimes.grace, Duration::ZERO);
        assert!(!config.connections.ends);
        assert_eq!(
            config.connections.progress_interval,
            Some(Duration::from_secs(7))
        );
        assert_eq!(config.metrics.interval, None);
        assert_eq!(config.metrics.listen(), None);
        assert_eq!(config.policy.file, Some(PathBuf::from("p.yaml")));
        assert!(config.policy.watch);
        assert_eq!(config.validate(), Ok(()));
        // An address given is required.
        let config = RunConfig::from_flags(&["--metrics-addr=[::1]:9000"]).unwrap();
        let addr: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(
            config.metrics.listen(),
            Some(Listen {
                addr,
                required: true
            })
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (args, flag, why) in [
            (
                &["--ring-buffer-size=4095"][..],
                "--ring-buffer-size",
                "power of two and at least 4096",
            ),
            (
                &["--ring-buffer-size=2048"],
                "--ring-buffer-size",
                "power of two and at least 4096",
            ),
            (
                &["--ring-buffer-size=12288"],
                "--ring-buffer-size",
                "power of two and at least 4096",
            ),
            (
                &["--ring-buffer-size=lots"],
                "--ring-buffer-size",
                "invalid digit",
            ),
            (
                &["--drain-interval-ms=0"],
                "--drain-interval-ms",
                "at least 1",
            ),
            (&["--udp-idle=0"], "--udp-idle", "at least 1 second"),
            (
                &["--udp-report-interval=0"],
                "--udp-report-interval",
                "at least 1 second",
            ),
            (&["--alert-window=0"], "--alert-window", "at least 1 second"),
            (
                &["--failure-alert-window=0"],
                "--failure-alert-window",
                "at least 1 second",
            ),
            (&["--dns-port=0"], "--dns-port", "not in 1..=65535"),
            (&["--dns-port=65536"], "--dns-port", "not in 1..=65535"),
            (&["--dns-ttl-floor=-1"], "--dns-ttl-floor", "invalid digit"),
            (
                &["--metrics-interval=soon"],
                "--metrics-interval",
                "invalid digit",
            ),
            (
                &["--metrics-addr=localhost:1"],
                "--metrics-addr",
                "expected IP:PORT",
            ),
            (
                &["--on-exit=linger"],
                "--on-exit",
                "possible values: detach, keep",
            ),
            (
                &["--connection-ends=yes"],
                "--connection-ends",
                "possible values: on, off",
            ),
            (
                &["--log-level=loud"],
                "--log-level",
                "possible values: error, warn",
            ),
            (&["--output-max-bytes=0"], "--output-max-bytes", "size"),
            (&["--output-max-age=1y"], "--output-max-age", "duration"),
            (
                &["--syslog-facility=local8"],
                "--syslog-facility",
                "facility",
            ),
        ] {
            let err = refused(args);
            assert!(err.contains(flag) && err.contains(why), "{args:?}: {err}");
        }
    }

    #[test]
    fn checks_across_flags() {
        let config = |args: &[&str]| RunConfig::from_flags(args).unwrap().validate();
        assert_eq!(
            config(&["--dns-ttl-floor=100", "--dns-ttl-ceiling=10"])
                .unwrap_err()
                .to_string(),
            "--dns-ttl-floor (100) must not exceed --dns-ttl-ceiling (10)"
        );
        assert_eq!(
            config(&["--dns-ttl-floor=10", "--dns-ttl-ceiling=10"]),
            Ok(())
        );
        assert_eq!(
            config(&["--output=/x", "--alerts=/x"])
                .unwrap_err()
                .to_string(),
            "--alerts must name another file than --output (each file has its own chain)"
        );
        assert_eq!(config(&["--alerts=-"]), Ok(()));
        assert_eq!(config(&["--output=/x", "--alerts=/y"]), Ok(()));
        assert_eq!(
            config(&["--output=/x", "--format=text"]),
            Err(FlagConflict::TextToFile)
        );
        assert_eq!(config(&["--output=-", "--format=text"]), Ok(()));
        assert_eq!(config(&["--output=/x", "--format=json"]), Ok(()));
        let format =
            |args: &[&str], terminal| RunConfig::from_flags(args).unwrap().output.format(terminal);
        assert_eq!(format(&[], true), Format::Text);
        assert_eq!(format(&[], false), Format::Json);
        assert_eq!(format(&["--output=/x"], true), Format::Json);
        assert_eq!(format(&["--format=json"], true), Format::Json);
        assert_eq!(format(&["--format=text"], false), Format::Text);
    }

    /// Where README.md's `egret run` table starts and ends.
    const TABLE_START: &str = "<!-- egret run flags: generated from agent/src/config.rs; \
                               EGRET_BLESS=1 cargo test -p egret readme_flag_table -->\n";
    const TABLE_END: &str = "<!-- end of egret run flags -->";

    /// README.md's `egret run` table: one row per flag (with its values), its default and
    /// its short help, under the help's headings.
    fn flag_table(command: &clap::Command) -> String {
        let mut table = String::from("| flag | default | meaning |\n| --- | --- | --- |\n");
        let mut heading = None;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if arg.get_help_heading() != heading {
                heading = arg.get_help_heading();
                writeln!(table, "| **{}** | | |", heading.unwrap_or_default()).unwrap();
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            writeln!(
                table,
                "| `--{long}{}` | {} | {} |",
                value_syntax(arg),
                default(arg),
                help.replace('|', r"\|")
            )
            .unwrap();
        }
        table
    }

    /// ` detach\|keep` (the choices) or ` PATH` (the value's name), nothing for a switch.
    fn value_syntax(arg: &clap::Arg) -> String {
        if !matches!(arg.get_action(), ArgAction::Set | ArgAction::Append) {
            return String::new();
        }
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|value| value.get_name().to_owned())
            .collect();
        if choices.is_empty() {
            let names = arg.get_value_names().unwrap_or_default();
            names.iter().map(|name| format!(" {name}")).collect()
        } else {
            format!(" {}", choices.join(r"\|"))
        }
    }

    /// clap's default; for a flag without one, `off` (a switch), the long help's `Default:`
    /// paragraph, or `none`.
    fn default(arg: &clap::Arg) -> String {
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| format!("`{}`", value.to_string_lossy()))
            .collect();
        if !defaults.is_empty() {
            return defaults.join(", ");
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            return "off".to_owned();
        }
        let long_help = arg.get_long_help().map(ToString::to_string);
        long_help
            .as_deref()
            .unwrap_or_default()
            .split("\n\n")
            .find_map(|paragraph| paragraph.strip_prefix("Default: "))
            .map_or_else(
                || "none".to_owned(),
                |text| text.trim_end_matches('.').to_owned(),
            )
    }

    #[test]
    fn readme_flag_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let (before, rest) = readme
            .split_once(TABLE_START)
            .expect("the table's start marker");
        let (table, after) = rest.split_once(TABLE_END).expect("the table's end marker");
        let generated = flag_table(&RunConfig::augment_args(clap::Command::new("run")));
        if table == generated {
            return;
        }
        if std::env::var_os("EGRET_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(
                path,
                format!("{before}{TABLE_START}{generated}{TABLE_END}{after}"),
            )
            .unwrap();
            return;
        }
        // The first line that differs (a missing line shows as empty).
        let (readme_line, flags_line) = table
            .lines()
            .map(Some)
            .chain(std::iter::repeat(None))
            .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
            .find(|(readme_line, flags_line)| readme_line != flags_line)
            .unwrap_or_default();
        panic!(
            "README.md's `egret run` table is not what the flags say; regenerate it with\n  \
             EGRET_BLESS=1 cargo test -p egret readme_flag_table\n\
             first difference:\n  README.md: {}\n  the flags: {}",
            readme_line.unwrap_or_default(),
            flags_line.unwrap_or_default()
        );
    }
}

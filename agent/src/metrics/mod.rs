//! The Prometheus endpoint (`--metrics-addr`): `/metrics` in the text exposition format,
//! `/healthz` and `/ready`, served on egret's own runtime.
//!
//! The event loop owns every counter; the HTTP tasks never touch its state. A scrape asks for
//! a fresh [`Snapshot`] (a flag the loop checks after each drain, so within
//! `--drain-interval-ms`) and renders whatever the loop publishes: the same [`Metrics`] the
//! `metric` JSON line is built from, plus what only Prometheus shows (events by kind and
//! verdict, ring buffer fill, the policy's mode). [`render::render`] destructures [`Metrics`]
//! exhaustively, so a counter added there does not compile until it is exported too.
//!
//! Metric names and meanings: `docs/metrics.md`.

mod counters;
pub mod exposition;
pub mod render;
pub mod ring;
mod server;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::BorrowedFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::policy::Mode;

pub use counters::Metrics;
pub use ring::RingProbe;

/// Where the endpoint listens unless told otherwise: loopback only.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9477));

/// `--metrics-addr`: an address, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    At(SocketAddr),
}

/// Parses `--metrics-addr`: `none`, or `IP:PORT` (`[IPv6]:PORT`).
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "none" {
        return Ok(MetricsAddr::Off);
    }
    text.parse::<SocketAddr>()
        .map(MetricsAddr::At)
        .map_err(|_| {
            "expected IP:PORT (`127.0.0.1:9477`, `[::1]:9477`, `0.0.0.0:9477`) or `none`".to_owned()
        })
}

/// Where to listen, and whether failing to is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// The address was asked for: egret does not run without it. The default address is
    /// best effort (another egret or program may hold it): a warning, and no endpoint.
    pub required: bool,
}

impl Listen {
    /// `--metrics-addr` as given (`None`: not given) to where to listen.
    pub fn from_arg(arg: Option<MetricsAddr>) -> Option<Self> {
        match arg {
            None => Some(Self {
                addr: DEFAULT_METRICS_ADDR,
                required: false,
            }),
            Some(MetricsAddr::Off) => None,
            Some(MetricsAddr::At(addr)) => Some(Self {
                addr,
                required: true,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-addr {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Lines written, by `event.kind`, `event.action` and `egret.policy.verdict`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounts {
    counts: Vec<(EventKey, u64)>,
}

/// One combination of labels of `egret_events_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    /// `event.kind`.
    pub kind: String,
    /// `event.action`.
    pub action: String,
    /// `egret.policy.verdict`; `none` when the line has none (`dns` lines).
    pub verdict: String,
}

impl EventCounts {
    /// Counts one line (allocating only for a combination not seen before).
    pub fn add(&mut self, kind: &str, action: &str, verdict: &str) {
        let found = self
            .counts
            .iter_mut()
            .find(|(k, _)| k.kind == kind && k.action == action && k.verdict == verdict);
        match found {
            Some((_, n)) => *n = n.saturating_add(1),
            None => {
                let key = EventKey {
                    kind: kind.to_owned(),
                    action: action.to_owned(),
                    verdict: verdict.to_owned(),
                };
                self.counts.push((key, 1));
                self.counts.sort_unstable();
            }
        }
    }

    /// Every combination seen, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&EventKey, u64)> + '_ {
        self.counts.iter().map(|(k, n)| (k, *n))
    }
}

/// What `/metrics` shows: published by the event loop, read by the HTTP tasks.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The counters of the `metric` line.
    pub metrics: Metrics,
    pub events: EventCounts,
    pub ring: RingFill,
    /// `None` until the loop publishes.
    pub policy_mode: Option<Mode>,
}

/// How full the kernel ring buffer is, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingFill {
    pub size: u64,
    /// Pending when the last drain started (what accumulated between two drains); `None`
    /// when the positions cannot be read.
    pub pending: Option<u64>,
    /// The most ever pending when a drain started.
    pub peak: Option<u64>,
}

/// Facts that do not change while egret runs.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub version: &'static str,
    /// Unix time the process started, in seconds.
    pub start_time: f64,
}

impl StaticInfo {
    fn new() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            start_time: process_start_time().unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            }),
        }
    }
}

/// When this process started, from `/proc/self/stat` and the boot time.
fn process_start_time() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let boot = procfs::boot_time_secs().ok()?;
    let ticks = procfs::ticks_per_second();
    (ticks > 0).then(|| boot as f64 + stat.starttime as f64 / ticks as f64)
}

/// State the HTTP tasks share with the event loop.
struct Shared {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Set by a scrape; the loop publishes after its next drain and clears it.
    wanted: AtomicBool,
    /// The programs are attached and the loop runs.
    ready: AtomicBool,
    info: StaticInfo,
    /// How long a scrape waits for a fresh snapshot before using the last one.
    freshness: Duration,
}

/// The event loop's side: counts lines, samples the ring buffer, publishes snapshots for
/// the endpoint (when there is one). Stops the endpoint when dropped.
pub struct Telemetry {
    events: EventCounts,
    ring: Option<RingProbe>,
    ring_fill: RingFill,
    endpoint: Option<Endpoint>,
}

struct Endpoint {
    publish: watch::Sender<Arc<Snapshot>>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Telemetry {
    /// Starts listening on `listen` (if any) and serving on the current runtime.
    /// `drain_interval`: how soon the loop answers a scrape.
    ///
    /// # Errors
    /// A required address cannot be bound. (The default address failing is a warning.)
    pub fn start(
        listen: Option<Listen>,
        ring_buffer_size: u32,
        drain_interval: Duration,
    ) -> Result<Self, MetricsError> {
        let mut telemetry = Self {
            events: EventCounts::default(),
            ring: None,
            ring_fill: RingFill {
                size: u64::from(ring_buffer_size),
                pending: None,
                peak: None,
            },
            endpoint: None,
        };
        let Some(listen) = listen else {
            return Ok(telemetry);
        };
        let listener = match server::bind(listen.addr) {
            Ok(listener) => listener,
            Err(source) if listen.required => {
                return Err(MetricsError::Bind {
                    addr: listen.addr,
                    source,
                })
            }
            Err(err) => {
                log::warn!(
                    "no Prometheus endpoint: cannot listen on the default {} ({err}); set --metrics-addr (or `none`)",
                    listen.addr
                );
                return Ok(telemetry);
            }
        };
        let addr = listener.local_addr().unwrap_or(listen.addr);
        let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let shared = Arc::new(Shared {
            snapshot,
            wanted: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            info: StaticInfo::new(),
            freshness: drain_interval.saturating_add(Duration::from_secs(1)),
        });
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        log::info!("Prometheus endpoint on http://{addr}/metrics");
        telemetry.endpoint = Some(Endpoint {
            publish,
            shared,
            task,
            addr,
        });
        Ok(telemetry)
    }

    /// Where the endpoint listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(|e| e.addr)
    }

    /// Reads the fill of the ring buffer map `fd` from now on (a warning if it cannot).
    pub fn watch_ring(&mut self, fd: BorrowedFd<'_>) {
        match RingProbe::new(fd) {
            Ok(probe) => self.ring = Some(probe),
            Err(err) => log::warn!(
                "cannot map the ring buffer's positions: {err}; its fill is not reported"
            ),
        }
    }

    /// A line was written, with this `event.kind`, `event.action` and
    /// `egret.policy.verdict` (if it has one): the emitter calls this once a line is out.
    pub fn line(&mut self, kind: &str, action: &str, verdict: Option<&str>) {
        self.events.add(kind, action, verdict.unwrap_or("none"));
    }

    /// Before a drain: how much the kernel wrote since the last one.
    pub fn before_drain(&mut self) {
        if let Some(ring) = &self.ring {
            let pending = ring.pending();
            self.ring_fill.pending = Some(pending);
            self.ring_fill.peak = Some(self.ring_fill.peak.unwrap_or(0).max(pending));
        }
    }

    /// Whether a scrape is waiting for [`Telemetry::publish`].
    pub fn wanted(&self) -> bool {
        self.endpoint
            .as_ref()
            .is_some_and(|e| e.shared.wanted.load(Ordering::Acquire))
    }

    /// Hands the current counters to the endpoint.
    pub fn publish(&mut self, metrics: Metrics, mode: Mode) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        endpoint.shared.wanted.store(false, Ordering::Release);
        endpoint.publish.send_replace(Arc::new(Snapshot {
            metrics,
            events: self.events.clone(),
            ring: self.ring_fill,
            policy_mode: Some(mode),
        }));
    }

    /// `/ready` answers 200 from now on (`true`), or 503.
    pub fn set_ready(&self, ready: bool) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.shared.ready.store(ready, Ordering::Release);
        }
    }

    /// The lines counted so far.
    pub fn events(&self) -> &EventCounts {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_forms() {
        assert_eq!(parse_metrics_addr("none").unwrap(), MetricsAddr::Off);
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9477").unwrap(),
            MetricsAddr::At(DEFAULT_METRICS_ADDR)
        );
        assert!(matches!(
            parse_metrics_addr("[::1]:80").unwrap(),
            MetricsAddr::At(SocketAddr::V6(_))
        ));
        for bad in [
            "",
            "localhost:9477",
            "127.0.0.1",
            ":9477",
            "127.0.0.1:99999",
            "None",
        ] {
            let err = parse_metrics_addr(bad).unwrap_err();
            assert!(err.contains("expected IP:PORT"), "{bad}: {err}");
        }
        assert_eq!(
            Listen::from_arg(None),
            Some(Listen {
                addr: DEFAULT_METRICS_ADDR,
                required: false
            })
        );
        assert_eq!(Listen::from_arg(Some(MetricsAddr::Off)), None);
        assert!(
            Listen::from_arg(Some(MetricsAddr::At(DEFAULT_METRICS_ADDR)))
                .unwrap()
                .required
        );
    }

    #[test]
    fn event_counts_by_labels() {
        let mut counts = EventCounts::default();
        counts.add("event", "send", "approved");
        counts.add("event", "connect", "unapproved");
        counts.add("event", "connect", "unapproved");
        counts.add("alert", "connect", "unapproved");
        let all: Vec<_> = counts
            .iter()
            .map(|(k, n)| (k.kind.as_str(), k.action.as_str(), k.verdict.as_str(), n))
            .collect();
        assert_eq!(
            all,
            [
                ("alert", "connect", "unapproved", 1),
                ("event", "connect", "unapproved", 2),
                ("event", "send", "approved", 1),
            ]
        );
    }

    #[tokio::test]
    async fn no_endpoint_when_off() {
        let mut t = Telemetry::start(None, 4096, Duration::from_millis(20)).unwrap();
        assert_eq!(t.local_addr(), None);
        assert!(!t.wanted());
        t.line("event", "dns-answer", None);
        t.line("event", "dns-answer", Some("blocked"));
        t.publish(Metrics::default(), Mode::Block);
        let verdicts: Vec<_> = t
            .events()
            .iter()
            .map(|(k, n)| (k.verdict.as_str(), n))
            .collect();
        assert_eq!(verdicts, [("blocked", 1), ("none", 1)]);
    }

    #[tokio::test]
    async fn a_taken_address_is_fatal_only_when_asked_for() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let listen = |required| {
            Telemetry::start(
                Some(Listen { addr, required }),
                4096,
                Duration::from_millis(20),
            )
        };
        let err = listen(true).err().unwrap();
        assert!(err
            .to_string()
            .starts_with(&format!("--metrics-addr {addr}: cannot listen: ")));
        assert_eq!(listen(false).unwrap().local_addr(), None);
    }
}

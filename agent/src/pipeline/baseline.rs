//! The baseline stage: what each workload normally reaches, and how its connections end.
//!
//! - Each judged connection's workload and destination go into the learned baseline
//!   ([`crate::baseline`]); after the learning period a destination new to the workload raises
//!   one `new-destination` alert.
//! - Each ended TCP connection's outcome (connect failed, HTTP 4xx/5xx from its first bytes,
//!   or neither) goes into the spike windows ([`crate::baseline::spikes`]): a burst raises one
//!   `spike` alert.
//! - The state file is written off the hot path: the stage encodes the state on a tick (every
//!   `--baseline-flush-interval` when it changed, when learning ends, at shutdown) and a writer
//!   thread writes it (temporary file, fsync, rename). A state file replaced by someone else
//!   (`egret baseline forget`) is read again before the next write.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::emit::{Emitter, Line};
use crate::{
    baseline::{
        spikes::{Outcome as SpikeOutcome, SpikeConfig, Spikes},
        store::{self, Loaded, StoreError},
        workload::{self, Identity},
        Baseline, Bounds, Destination, Observed, State, Workload,
    },
    clock::duration_ns,
    config::BaselineConfig,
    conn::{ConnEnd, Outcome},
    container::Lookup,
    record::ConnectionRecord,
};

/// Most (workload, destination) keys with a spike window.
const SPIKE_KEYS_MAX: usize = 65536;

/// The stage's numbers for the metric line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BaselineStats {
    pub workloads: usize,
    pub destinations: usize,
    /// Destinations and workloads evicted by the bounds.
    pub evicted: u64,
    /// State files set aside because they were unusable (corrupt, truncated, another version).
    pub state_set_aside: u64,
    pub state_writes: u64,
    pub state_write_errors: u64,
    /// Spike windows forgotten because their table was full.
    pub spike_keys_evicted: u64,
}

/// What the writer thread reports back.
#[derive(Debug, Default)]
struct WriterShared {
    writes: AtomicU64,
    errors: AtomicU64,
    /// Inode of the file it last wrote.
    inode: AtomicU64,
    /// A write is queued or running.
    busy: AtomicBool,
}

struct Writer {
    queue: Option<mpsc::SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<WriterShared>,
}

impl Writer {
    fn start(dir: PathBuf) -> Self {
        let (queue, jobs) = mpsc::sync_channel::<Vec<u8>>(1);
        let shared = Arc::new(WriterShared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("egret-state".into())
            .spawn(move || {
                for bytes in jobs {
                    match store::write(&dir, &bytes) {
                        Ok(inode) => {
                            theirs.inode.store(inode, Ordering::SeqCst);
                            theirs.writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            let n = theirs.errors.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_power_of_two() {
                                log::error!("writing the baseline: {err} ({n} failures so far)");
                            }
                        }
                    }
                    theirs.busy.store(false, Ordering::SeqCst);
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(err) => {
                log::error!("starting the baseline writer: {err}; the baseline is not saved");
                None
            }
        };
        Self {
            queue: thread.is_some().then_some(queue),
            thread,
            shared,
        }
    }

    /// Queues a write; false when one is still running (try again later).
    fn offer(&self, bytes: Vec<u8>) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        if self.shared.busy.swap(true, Ordering::SeqCst) {
            return false;
        }
        if queue.try_send(bytes).is_err() {
            self.shared.busy.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The last write, waited for.
    fn finish(&mut self, bytes: Vec<u8>) {
        if let Some(queue) = self.queue.take() {
            self.shared.busy.store(true, Ordering::SeqCst);
            if queue.send(bytes).is_err() {
                log::error!("the baseline writer stopped; the last state is not saved");
            }
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the baseline writer failed");
            }
        }
    }
}

/// A `new-destination` alert to write.
#[derive(Debug)]
pub struct NewDestination {
    record: ConnectionRecord,
    workload: Workload,
    destination: Destination,
}

impl NewDestination {
    pub fn line(&self) -> Line<'_> {
        Line::NewDestination {
            record: &self.record,
            workload: &self.workload,
            destination: &self.destination,
        }
    }
}

/// Unix seconds now.
fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Active {
    baseline: Baseline,
    spikes: Option<Spikes<(Workload, Destination)>>,
    spike_window_secs: u64,
    dir: PathBuf,
    writer: Writer,
    flush_every: Duration,
    last_flush: std::time::Instant,
    was_learning: bool,
    set_aside: u64,
}

/// The stage; inert without `--baseline-learn`.
pub struct BaselineStage {
    active: Option<Box<Active>>,
}

impl BaselineStage {
    /// No baseline.
    pub fn off() -> Self {
        Self { active: None }
    }

    /// Opens the state in `--state-dir` (created if missing): read, or set aside when
    /// unusable (logged, counted), or started afresh.
    ///
    /// # Errors
    /// The directory cannot be created or read, or an unusable file cannot be moved.
    pub fn open(config: &BaselineConfig) -> Result<Self, StoreError> {
        let BaselineConfig {
            learn,
            state_dir,
            max_workloads,
            max_destinations,
            flush_interval,
            spike_window,
            spike_min_errors,
            spike_factor,
        } = config;
        let Some(learn) = learn else {
            return Ok(Self::off());
        };
        create_dir(state_dir)?;
        let now = wall_secs();
        let (state, set_aside) = match store::load(state_dir, now)? {
            Loaded::Fresh => (State::new(now, learn.as_secs()), 0),
            Loaded::Read(state) => (state, 0),
            Loaded::SetAside { moved_to, why } => {
                log::error!(
                    "baseline state {}: {why}; moved aside to {} and learning starts afresh",
                    store::state_path(state_dir).display(),
                    moved_to.display()
                );
                (State::new(now, learn.as_secs()), 1)
            }
        };
        let mut baseline = Baseline::new(
            State {
                learn_secs: learn.as_secs(),
                ..state
            },
            Bounds {
                max_workloads: *max_workloads,
                max_destinations: *max_destinations,
            },
        );
        let learning = baseline.learning_now(now);
        describe(&baseline.state, state_dir, now);
        baseline.dirty = true;
        let spikes = (*spike_min_errors > 0).then(|| {
            Spikes::new(
                SpikeConfig {
                    window_ns: duration_ns(*spike_window),
                    min_errors: *spike_min_errors,
                    factor: spike_factor.0,
                },
                SPIKE_KEYS_MAX,
            )
        });
        Ok(Self {
            active: Some(Box::new(Active {
                baseline,
                spikes,
                spike_window_secs: spike_window.as_secs(),
                dir: state_dir.clone(),
                writer: Writer::start(state_dir.clone()),
                flush_every: *flush_interval,
                last_flush: std::time::Instant::now(),
                was_learning: learning,
                set_aside,
            })),
        })
    }

    /// A baseline is in use.
    pub fn in_use(&self) -> bool {
        self.active.is_some()
    }

    pub fn stats(&self) -> BaselineStats {
        let Some(a) = &self.active else {
            return BaselineStats::default();
        };
        let shared = &a.writer.shared;
        let b = &a.baseline;
        BaselineStats {
            workloads: b.state.workloads.len(),
            destinations: b.state.destinations(),
            evicted: b.stats.destinations_evicted + b.stats.workloads_evicted,
            state_set_aside: a.set_aside,
            state_writes: shared.writes.load(Ordering::Relaxed),
            state_write_errors: shared.errors.load(Ordering::Relaxed),
            spike_keys_evicted: a.spikes.as_ref().map_or(0, |s| s.evicted),
        }
    }

    /// A judged connection: into the baseline. A destination new to its workload returns
    /// its alert, to write after the connection's own line.
    pub fn observe(&mut self, record: &ConnectionRecord) -> Option<NewDestination> {
        let a = self.active.as_mut()?;
        let workload = workload_of(record);
        let destination = destination_of(record);
        (a.baseline.observe(&workload, &destination, wall_secs()) == Observed::New).then(|| {
            NewDestination {
                record: record.clone(),
                workload,
                destination,
            }
        })
    }

    /// An ended TCP connection: into its spike window; a burst of errors alerts.
    pub fn connection_ended(
        &mut self,
        record: &ConnectionRecord,
        end: &ConnEnd,
        out: &mut Emitter,
    ) {
        let Some(a) = &mut self.active else {
            return;
        };
        let Some(spikes) = &mut a.spikes else {
            return;
        };
        let status = record.first_bytes.as_ref().and_then(|f| f.status_code);
        let outcome = match (end.outcome, status) {
            (Outcome::Failure, _) => SpikeOutcome::Failed,
            (_, Some(code)) if (400..=599).contains(&code) => SpikeOutcome::HttpError(code),
            (Outcome::Unknown, None) => return,
            _ => SpikeOutcome::Ok,
        };
        let key = (workload_of(record), destination_of(record));
        if let Some(spike) = spikes.record(&key, outcome, end.end_ns) {
            out.emit(Line::Spike {
                record,
                workload: &key.0,
                destination: &key.1,
                spike: &spike,
                window_secs: a.spike_window_secs,
            });
        }
    }

    /// Once a second: spike windows expire; the state is written when it is time (or
    /// learning just ended), after reading it again if someone else replaced it.
    pub fn tick(&mut self, now_ns: u64) {
        let Some(a) = &mut self.active else {
            return;
        };
        if let Some(spikes) = &mut a.spikes {
            spikes.expire(now_ns);
        }
        let now = wall_secs();
        let learning = a.baseline.learning_now(now);
        let learning_ended = a.was_learning && !learning;
        if learning_ended {
            log::info!(
                "baseline: learning ended; {} workloads, {} destinations; new destinations alert from now",
                a.baseline.state.workloads.len(),
                a.baseline.state.destinations()
            );
        }
        a.was_learning = learning;
        if !learning_ended && a.last_flush.elapsed() < a.flush_every {
            return;
        }
        reread_if_replaced(a, now);
        if !a.baseline.dirty && !learning_ended {
            a.last_flush = std::time::Instant::now();
            return;
        }
        if a.writer.offer(store::encode(&a.baseline.state)) {
            a.baseline.dirty = false;
            a.last_flush = std::time::Instant::now();
        }
    }

    /// At shutdown: the last write, waited for.
    pub fn shutdown(&mut self) {
        let Some(a) = &mut self.active else {
            return;
        };
        reread_if_replaced(a, wall_secs());
        a.writer.finish(store::encode(&a.baseline.state));
    }
}

/// `egret baseline forget` (or anyone) replaced the file since egret last wrote it: read it
/// again (what egret learned since its last write is lost: at most one flush interval).
fn reread_if_replaced(a: &mut Active, now: u64) {
    let shared = &a.writer.shared;
    if shared.busy.load(Ordering::SeqCst) {
        return;
    }
    let ours = shared.inode.load(Ordering::SeqCst);
    let on_disk = store::inode(&a.dir);
    if ours == 0 || on_disk.is_none_or(|ino| ino == ours) {
        return;
    }
    match store::load(&a.dir, now) {
        Ok(Loaded::Read(state)) => {
            log::info!("baseline: the state file was replaced; read it again");
            a.baseline.state = State {
                learn_secs: a.baseline.state.learn_secs,
                ..state
            };
            a.baseline.dirty = true;
        }
        Ok(Loaded::SetAside { moved_to, why }) => {
            a.set_aside += 1;
            log::error!(
                "baseline state replaced by an unusable file: {why}; moved aside to {}, egret's own state stays",
                moved_to.display()
            );
        }
        Ok(Loaded::Fresh) => {}
        Err(err) => log::error!("reading the replaced baseline state: {err}"),
    }
    // Whatever happened, the file on disk is not ours to compare with any more.
    shared.inode.store(0, Ordering::SeqCst);
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

fn describe(state: &State, dir: &Path, now: u64) {
    let path = store::state_path(dir);
    if now < state.learning_ends() {
        log::info!(
            "baseline {}: {} workloads, {} destinations; learning for {} more seconds",
            path.display(),
            state.workloads.len(),
            state.destinations(),
            state.learning_ends() - now
        );
    } else {
        log::info!(
            "baseline {}: {} workloads, {} destinations; learning ended, new destinations alert",
            path.display(),
            state.workloads.len(),
            state.destinations()
        );
    }
}

/// The workload of a connection (`baseline::workload::derive`, on what the record knows).
pub fn workload_of(record: &ConnectionRecord) -> Workload {
    let container = match &record.container {
        Lookup::Known(info) => Some(info.as_ref()),
        Lookup::Pending(_) | Lookup::Unknown(_) | Lookup::NotAContainer => None,
    };
    let pod = container.and_then(|c| c.pod.as_ref());
    // The pod's owner (`orchestrator.resource.parent`) when one was recognised.
    let owner = pod
        .and_then(|p| p.workload.as_ref())
        .filter(|w| w.has_parent())
        .map(|w| format!("{}/{}/{}", w.namespace, w.kind, w.name));
    let process = &record.process;
    workload::derive(&Identity {
        systemd_unit: record.cgroup.systemd_unit.as_deref(),
        kubernetes: owner.as_deref(),
        pod_namespace: pod.map(|p| p.namespace.as_str()),
        pod_name: pod.map(|p| p.name.as_str()),
        container_image: container.and_then(|c| c.image.as_deref()),
        executable: process.executable.as_deref().unwrap_or(&process.name),
    })
}

/// The destination as the baseline keys it: the name a believed DNS answer gave the address
/// (`destination.domain`), else the address; with port and transport. The first bytes' name
/// (TLS server name, HTTP Host) is not used: the watched process writes it.
pub fn destination_of(record: &ConnectionRecord) -> Destination {
    let host = record
        .dns
        .as_ref()
        .and_then(|d| d.domain.clone())
        .unwrap_or_else(|| record.ip.to_string());
    Destination {
        host,
        port: record.port,
        transport: record.transport.name().to_owned(),
    }
}

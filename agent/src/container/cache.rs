//! The resolver the pipeline calls: a synchronous cache of container metadata by id, fed by
//! the asynchronous fetch task through channels. Nothing here waits.
//!
//! An id is in one of three states: known (fetched), in flight (a request was sent to the
//! fetch task) or missing (the last fetch found nothing or failed; asked again after
//! `not_found_retry` or `error_retry`). A known container stays while events keep naming it,
//! and `keep_after_exit` after the last one.

use std::{
    collections::HashMap,
    fs,
    future::Future,
    io,
    os::unix::fs::FileTypeExt as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    fetch::{self, FetchError, Outcome},
    path::{self, ContainerRef},
    ContainerInfo, Lookup, RuntimeConfig,
};

/// Requests waiting for the fetch task; past this, lookups answer `Unknown` (counted in
/// `requests_dropped`) instead of queueing.
pub const QUEUE: usize = 256;

/// Counters, totals since start except `cached`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// Fetches requested from the fetch task.
    pub fetches: u64,
    /// Fetches that failed (no socket, timeout, error status, malformed answer).
    pub fetch_errors: u64,
    /// Of those, answers that were malformed (did not parse, too large).
    pub malformed: u64,
    /// Of those, runtimes that did not answer in time (a call, a whole fetch, or a fetch
    /// whose answer never came).
    pub timeouts: u64,
    /// Fetches where the runtimes answered but none knew the container.
    pub not_found: u64,
    /// Containers currently known (gauge).
    pub cached: u64,
    /// Lookups that could not request a fetch (queue full or fetch task gone): reported
    /// by id only.
    pub requests_dropped: u64,
    /// Entries dropped before their time because of `max_entries`.
    pub evicted: u64,
}

#[derive(Debug)]
enum Entry {
    Known {
        info: Arc<ContainerInfo>,
        last_used: Instant,
    },
    InFlight {
        reference: ContainerRef,
        since: Instant,
    },
    Missing {
        retry_at: Instant,
    },
}

impl Entry {
    /// When the entry was last useful, for eviction order.
    fn touched(&self) -> Instant {
        match self {
            Self::Known { last_used, .. } => *last_used,
            Self::InFlight { since, .. } => *since,
            Self::Missing { retry_at, .. } => *retry_at,
        }
    }
}

/// Container metadata by cgroup path; see the module documentation.
pub struct ContainerResolver {
    allowlist: Vec<String>,
    grace: Duration,
    keep_after_exit: Duration,
    not_found_retry: Duration,
    error_retry: Duration,
    /// An in-flight entry older than this lost its answer.
    in_flight_limit: Duration,
    max_entries: usize,
    entries: HashMap<String, Entry>,
    requests: mpsc::Sender<ContainerRef>,
    results: mpsc::UnboundedReceiver<Outcome>,
    warnings: Vec<String>,
    last_warned: Option<Instant>,
    last_error: Option<String>,
    pub stats: ContainerStats,
}

/// `now + delay`, or a year from now if that overflows.
fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86400)))
        .unwrap_or(now)
}

/// What is wrong with a configured socket, if anything.
fn socket_problem(path: &Path) -> Option<String> {
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => None,
        Ok(_) => Some("is not a socket".to_owned()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Some("not found".to_owned()),
        Err(err) => Some(format!("cannot be read ({err})")),
    }
}

impl ContainerResolver {
    /// The resolver, and the future that performs fetches: spawn it on tokio
    /// (`tokio::spawn(fetcher)`). It ends when the resolver is dropped. Until it runs, lookups
    /// queue up to [`QUEUE`] requests and then answer `Unknown`.
    pub fn new(config: RuntimeConfig) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let RuntimeConfig {
            ref containerd_socket,
            ref docker_socket,
            ref podman_socket,
            ref crio_socket,
            ref label_allowlist,
            grace,
            keep_after_exit,
            max_entries,
            call_timeout,
            not_found_retry,
            error_retry,
        } = config;
        let mut warnings = Vec::new();
        for (name, socket, consequence) in [
            (
                "containerd",
                containerd_socket,
                "containerd and Kubernetes (containerd) containers",
            ),
            ("docker", docker_socket, "Docker containers"),
            (
                "podman",
                podman_socket,
                "Podman containers (unless its service answers on the Docker socket)",
            ),
            ("CRI-O", crio_socket, "CRI-O containers"),
        ] {
            match socket {
                None => warnings.push(format!(
                    "{name} socket disabled: {consequence} will be reported by id only"
                )),
                Some(path) => {
                    if let Some(problem) = socket_problem(path) {
                        warnings.push(format!(
                            "{name} socket {} {problem}: {consequence} will be reported by id only",
                            path.display()
                        ));
                    }
                }
            }
        }
        let (request_tx, request_rx) = mpsc::channel(QUEUE);
        let (result_tx, result_rx) = mpsc::unbounded_channel();
        let resolver = Self {
            allowlist: label_allowlist.clone(),
            grace,
            keep_after_exit,
            not_found_retry,
            error_retry,
            in_flight_limit: fetch::deadline(call_timeout).saturating_add(Duration::from_secs(2)),
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            requests: request_tx,
            results: result_rx,
            warnings,
            last_warned: None,
            last_error: None,
            stats: ContainerStats::default(),
        };
        let fetcher = fetch::run(request_rx, result_tx, Arc::new(config));
        (resolver, fetcher)
    }

    /// Configured sockets that are missing or not sockets (not failures: those runtimes'
    /// containers are reported by id only).
    pub fn startup_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// How long the pipeline may hold an event for a `Pending` container.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The most recent fetch error, for diagnostics.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Number of entries (known, in flight, missing).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The container of a cgroup path. Never waits: on a miss it requests a fetch and answers
    /// `Pending`; the answer arrives through [`Self::poll_results`].
    pub fn lookup(&mut self, cgroup_path: &str, now: Instant) -> Lookup {
        let Some(reference) = path::parse(cgroup_path) else {
            return Lookup::NotAContainer;
        };
        let keep = self.keep_after_exit;
        match self.entries.get_mut(&reference.id) {
            Some(Entry::Known { info, last_used })
                if now.saturating_duration_since(*last_used) <= keep =>
            {
                *last_used = now;
                return Lookup::Known(Arc::clone(info));
            }
            Some(Entry::InFlight { .. }) => return Lookup::Pending(reference),
            Some(Entry::Missing { retry_at }) if now < *retry_at => {
                return Lookup::Unknown(reference);
            }
            // Expired, or due for a retry: ask again.
            Some(Entry::Known { .. } | Entry::Missing { .. }) | None => {}
        }
        self.request(reference, now)
    }

    /// Like [`Self::lookup`] for an event held since `held_since`: once the grace period is
    /// over, `Pending` becomes `Unknown` (write the event with what is known).
    pub fn settle(&mut self, cgroup_path: &str, held_since: Instant, now: Instant) -> Lookup {
        match self.lookup(cgroup_path, now) {
            Lookup::Pending(reference)
                if now.saturating_duration_since(held_since) >= self.grace =>
            {
                Lookup::Unknown(reference)
            }
            other => other,
        }
    }

    fn request(&mut self, reference: ContainerRef, now: Instant) -> Lookup {
        let id = reference.id.clone();
        match self.requests.try_send(reference.clone()) {
            Ok(()) => {
                self.stats.fetches += 1;
                self.insert(
                    id,
                    Entry::InFlight {
                        reference: reference.clone(),
                        since: now,
                    },
                    now,
                );
                Lookup::Pending(reference)
            }
            Err(_) => {
                self.stats.requests_dropped += 1;
                self.insert(
                    id,
                    Entry::Missing {
                        retry_at: later(now, self.error_retry),
                    },
                    now,
                );
                Lookup::Unknown(reference)
            }
        }
    }

    /// Applies finished fetches; returns how many. Call it often (every drain): events held
    /// for `Pending` containers can be looked up again after it.
    pub fn poll_results(&mut self) -> usize {
        self.poll_results_at(Instant::now())
    }

    /// [`Self::poll_results`] with an explicit clock.
    pub fn poll_results_at(&mut self, now: Instant) -> usize {
        let mut applied = 0;
        while let Ok(Outcome { reference, result }) = self.results.try_recv() {
            applied += 1;
            self.apply(reference, result, now);
        }
        applied
    }

    fn apply(
        &mut self,
        reference: ContainerRef,
        result: Result<Option<super::RuntimeContainer>, FetchError>,
        now: Instant,
    ) {
        let id = reference.id.clone();
        let entry = match result {
            Ok(Some(found)) => Entry::Known {
                info: Arc::new(ContainerInfo::new(found, &reference, &self.allowlist)),
                last_used: now,
            },
            Ok(None) => {
                self.stats.not_found += 1;
                Entry::Missing {
                    retry_at: later(now, self.not_found_retry),
                }
            }
            Err(err) => {
                self.failed(&err, now);
                Entry::Missing {
                    retry_at: later(now, self.error_retry),
                }
            }
        };
        self.insert(id, entry, now);
    }

    /// Counts a failure; logs it as a warning at most once a minute.
    fn failed(&mut self, err: &FetchError, now: Instant) {
        self.stats.fetch_errors += 1;
        if err.is_malformed() {
            self.stats.malformed += 1;
        }
        if err.is_timeout() {
            self.stats.timeouts += 1;
        }
        let message = err.to_string();
        let quiet = self
            .last_warned
            .is_some_and(|when| now.saturating_duration_since(when) < Duration::from_secs(60));
        if quiet {
            log::debug!("container metadata: {message}");
        } else {
            log::warn!(
                "container metadata: {message} (such containers are reported by id only; further errors in the next minute are logged at debug level)"
            );
            self.last_warned = Some(now);
        }
        self.last_error = Some(message);
    }

    fn insert(&mut self, id: String, entry: Entry, now: Instant) {
        if !self.entries.contains_key(&id) && self.entries.len() >= self.max_entries {
            self.make_room(now);
        }
        let known = matches!(entry, Entry::Known { .. });
        let replaced = self.entries.insert(id, entry);
        let was_known = matches!(replaced, Some(Entry::Known { .. }));
        match (was_known, known) {
            (false, true) => self.stats.cached += 1,
            (true, false) => self.stats.cached = self.stats.cached.saturating_sub(1),
            (true, true) | (false, false) => {}
        }
    }

    /// Drops expired entries; if that is not enough, the least recently used eighth.
    fn make_room(&mut self, now: Instant) {
        self.expire(now);
        if self.entries.len() < self.max_entries {
            return;
        }
        let mut ages: Vec<(Instant, String)> = self
            .entries
            .iter()
            .map(|(id, entry)| (entry.touched(), id.clone()))
            .collect();
        let evict = (self.max_entries / 8).max(1).min(ages.len());
        if evict < ages.len() {
            ages.select_nth_unstable(evict);
        }
        for (_, id) in ages.into_iter().take(evict) {
            if let Some(Entry::Known { .. }) = self.entries.remove(&id) {
                self.stats.cached = self.stats.cached.saturating_sub(1);
            }
            self.stats.evicted += 1;
        }
    }

    /// Drops containers no event named for `keep_after_exit` and missing entries due for a
    /// retry; an in-flight fetch that never answered counts as failed. Call it once a second
    /// or so. Returns how many entries were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let keep = self.keep_after_exit;
        let limit = self.in_flight_limit;
        let mut lost: Vec<String> = Vec::new();
        let mut expired_known = 0u64;
        self.entries.retain(|id, entry| match entry {
            Entry::Known { last_used, .. } => {
                let stay = now.saturating_duration_since(*last_used) <= keep;
                if !stay {
                    expired_known += 1;
                }
                stay
            }
            Entry::InFlight { since, .. } => {
                if now.saturating_duration_since(*since) > limit {
                    lost.push(id.clone());
                }
                true
            }
            Entry::Missing { retry_at, .. } => now < *retry_at,
        });
        self.stats.cached = self.stats.cached.saturating_sub(expired_known);
        let dropped = before.saturating_sub(self.entries.len());
        for id in lost {
            if let Some(Entry::InFlight { reference, .. }) = self.entries.remove(&id) {
                self.apply(reference, Err(FetchError::Lost), now);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        io::{Read as _, Write as _},
        os::unix::net::UnixListener as StdUnixListener,
        path::PathBuf,
    };

    use super::*;
    use crate::{
        container::{
            docker::tests::inspect_json,
            path::tests::container,
            tests::{no_sockets, ID, ID2},
            RuntimeContainer, RuntimeHint,
        },
        output::tests::TempDir,
    };

    fn docker_path(id: &str) -> String {
        format!("/system.slice/docker-{id}.scope")
    }

    fn found(id: &str) -> RuntimeContainer {
        RuntimeContainer {
            id: id.to_owned(),
            name: Some("web".to_owned()),
            image: Some("nginx:1.25".to_owned()),
            runtime: "docker",
            labels: BTreeMap::new(),
            pod: None,
        }
    }

    fn reference(id: &str) -> ContainerRef {
        container(id, RuntimeHint::Docker)
    }

    /// A resolver whose fetch task is not running (but not dropped either: its requests
    /// queue up): tests feed outcomes by hand.
    fn offline(config: RuntimeConfig) -> (ContainerResolver, impl Future<Output = ()>) {
        ContainerResolver::new(config)
    }

    /// An [`offline`] resolver that asked about `ID` at `now` and got `result`.
    fn answered(
        result: Result<Option<RuntimeContainer>, FetchError>,
        now: Instant,
    ) -> (ContainerResolver, impl Future<Output = ()>) {
        let (mut resolver, fetcher) = offline(no_sockets());
        resolver.lookup(&docker_path(ID), now);
        resolver.apply(reference(ID), result, now);
        (resolver, fetcher)
    }

    #[test]
    fn host_paths_are_not_containers() {
        let (mut resolver, _fetcher) = offline(no_sockets());
        let now = Instant::now();
        assert_eq!(
            resolver.lookup("/system.slice/nginx.service", now),
            Lookup::NotAContainer
        );
        assert_eq!(resolver.stats.fetches, 0);
        assert!(resolver.is_empty());
    }

    #[test]
    fn miss_pending_known() {
        let (mut resolver, _fetcher) = offline(no_sockets());
        let now = Instant::now();
        let path = docker_path(ID);
        assert_eq!(resolver.lookup(&path, now), Lookup::Pending(reference(ID)));
        // Still in flight: no second request.
        assert_eq!(resolver.lookup(&path, now), Lookup::Pending(reference(ID)));
        assert_eq!(resolver.stats.fetches, 1);
        resolver.apply(reference(ID), Ok(Some(found(ID))), now);
        let Lookup::Known(info) = resolver.lookup(&path, now) else {
            panic!("not known");
        };
        assert_eq!(info.name.as_deref(), Some("web"));
        assert_eq!(resolver.stats.cached, 1);
        // A nested cgroup of the same container hits the same entry.
        assert!(matches!(
            resolver.lookup(&format!("{path}/init"), now),
            Lookup::Known(_)
        ));
    }

    #[test]
    fn settle_ends_the_grace_period() {
        let (mut resolver, _fetcher) = offline(no_sockets());
        let start = Instant::now();
        let path = docker_path(ID);
        assert!(matches!(resolver.lookup(&path, start), Lookup::Pending(_)));
        let early = start + Duration::from_millis(100);
        assert!(matches!(
            resolver.settle(&path, start, early),
            Lookup::Pending(_)
        ));
        let late = start + resolver.grace();
        assert_eq!(
            resolver.settle(&path, start, late),
            Lookup::Unknown(reference(ID))
        );
        // Settling does not cancel the fetch: its answer still lands.
        resolver.apply(reference(ID), Ok(Some(found(ID))), late);
        assert!(matches!(
            resolver.settle(&path, start, late),
            Lookup::Known(_)
        ));
    }

    #[test]
    fn not_found_is_retried_after_a_short_while() {
        let now = Instant::now();
        let (mut resolver, _fetcher) = answered(Ok(None), now);
        let path = docker_path(ID);
        assert_eq!(resolver.stats.not_found, 1);
        assert_eq!(resolver.lookup(&path, now), Lookup::Unknown(reference(ID)));
        let soon = now + Duration::from_secs(1);
        assert_eq!(resolver.lookup(&path, soon), Lookup::Unknown(reference(ID)));
        assert_eq!(resolver.stats.fetches, 1);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            resolver.lookup(&path, later),
            Lookup::Pending(reference(ID))
        );
        assert_eq!(resolver.stats.fetches, 2);
    }

    #[test]
    fn errors_are_counted_and_retried_later() {
        let now = Instant::now();
        let (mut resolver, _fetcher) = answered(Err(FetchError::NoRuntime), now);
        let path = docker_path(ID);
        assert_eq!(resolver.stats.fetch_errors, 1);
        assert!(resolver.last_error().is_some());
        assert_eq!(
            resolver.lookup(&path, now + Duration::from_secs(5)),
            Lookup::Unknown(reference(ID))
        );
        assert!(matches!(
            resolver.lookup(&path, now + Duration::from_secs(10)),
            Lookup::Pending(_)
        ));
    }

    #[test]
    fn known_containers_stay_while_used_and_keep_after_exit() {
        let start = Instant::now();
        let (mut resolver, _fetcher) = answered(Ok(Some(found(ID))), start);
        let path = docker_path(ID);
        let keep = Duration::from_secs(300);
        // Used every minute for ten minutes: stays.
        for minute in 1..=10 {
            let now = start + Duration::from_secs(60 * minute);
            assert_eq!(resolver.expire(now), 0);
            assert!(matches!(resolver.lookup(&path, now), Lookup::Known(_)));
        }
        let last = start + Duration::from_secs(600);
        assert_eq!(resolver.expire(last + keep), 0);
        assert_eq!(resolver.expire(last + keep + Duration::from_secs(1)), 1);
        assert_eq!(resolver.stats.cached, 0);
        assert!(matches!(
            resolver.lookup(&path, last + keep + Duration::from_secs(1)),
            Lookup::Pending(_)
        ));
    }

    #[test]
    fn lost_fetches_become_errors() {
        let (mut resolver, _fetcher) = offline(no_sockets());
        let now = Instant::now();
        resolver.lookup(&docker_path(ID), now);
        resolver.expire(now + Duration::from_secs(5));
        assert_eq!(resolver.stats.fetch_errors, 0);
        resolver.expire(now + Duration::from_secs(11));
        assert_eq!(resolver.stats.fetch_errors, 1);
        assert!(matches!(
            resolver.lookup(&docker_path(ID), now + Duration::from_secs(11)),
            Lookup::Unknown(_)
        ));
    }

    #[test]
    fn a_full_queue_answers_unknown_and_counts() {
        let (mut resolver, _fetcher) = offline(no_sockets());
        let now = Instant::now();
        for n in 0..QUEUE {
            let id = format!("{n:064x}");
            assert!(matches!(
                resolver.lookup(&docker_path(&id), now),
                Lookup::Pending(_)
            ));
        }
        let extra = format!("{:064x}", QUEUE);
        assert!(matches!(
            resolver.lookup(&docker_path(&extra), now),
            Lookup::Unknown(_)
        ));
        assert_eq!(resolver.stats.requests_dropped, 1);
        assert_eq!(resolver.stats.fetches, u64::try_from(QUEUE).unwrap());
    }

    #[test]
    fn entries_are_bounded() {
        let (mut resolver, _fetcher) = offline(RuntimeConfig {
            max_entries: 16,
            ..no_sockets()
        });
        let start = Instant::now();
        for n in 0..40u64 {
            let id = format!("{n:064x}");
            let now = start + Duration::from_millis(n);
            resolver.apply(reference(&id), Ok(Some(found(&id))), now);
        }
        assert!(resolver.len() <= 16);
        assert!(resolver.stats.evicted >= 24);
        assert_eq!(
            resolver.stats.cached,
            u64::try_from(resolver.len()).unwrap()
        );
        // The most recent survive.
        let newest = format!("{:064x}", 39);
        assert!(matches!(
            resolver.lookup(&docker_path(&newest), start + Duration::from_millis(40)),
            Lookup::Known(_)
        ));
    }

    #[test]
    fn warns_about_missing_sockets() {
        let dir = TempDir::new("warn");
        let socket = dir.0.join("docker.sock");
        let _listener = StdUnixListener::bind(&socket).unwrap();
        let file = dir.0.join("plain");
        fs::write(&file, "").unwrap();
        let (resolver, _fetcher) = offline(RuntimeConfig {
            docker_socket: Some(socket),
            containerd_socket: Some(PathBuf::from("/nonexistent/containerd.sock")),
            podman_socket: Some(file),
            crio_socket: None,
            ..RuntimeConfig::default()
        });
        let warnings = resolver.startup_warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("/nonexistent/containerd.sock not found")));
        assert!(warnings.iter().any(|w| w.contains("is not a socket")));
        assert!(warnings
            .iter()
            .any(|w| w.starts_with("CRI-O socket disabled")));
        assert!(!warnings.iter().any(|w| w.starts_with("docker")));
    }

    /// A Docker Engine stand-in: answers inspect for `ID` (chunked, as dockerd does for
    /// large documents) and 404 for anything else.
    fn fake_docker(socket: &Path) {
        let listener = StdUnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let response = if request
                    .starts_with(&format!("GET /containers/{ID}/json HTTP/1.1\r\n"))
                    && request.contains("Host: docker\r\n")
                {
                    let body = inspect_json(ID);
                    let (a, b) = body.split_at(body.len() / 2);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    )
                } else {
                    let body = r#"{"message":"No such container"}"#;
                    format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
    }

    #[tokio::test]
    async fn resolves_through_a_fake_docker_engine() {
        let dir = TempDir::new("docker");
        let socket = dir.0.join("docker.sock");
        fake_docker(&socket);
        let (mut resolver, fetcher) = ContainerResolver::new(RuntimeConfig {
            docker_socket: Some(socket),
            ..no_sockets()
        });
        let task = tokio::spawn(fetcher);
        let path = docker_path(ID);
        let other = docker_path(ID2);
        let now = Instant::now();
        assert!(matches!(resolver.lookup(&path, now), Lookup::Pending(_)));
        assert!(matches!(resolver.lookup(&other, now), Lookup::Pending(_)));
        let mut applied = 0;
        for _ in 0..200 {
            applied += resolver.poll_results();
            if applied == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(applied, 2);
        let Lookup::Known(info) = resolver.lookup(&path, Instant::now()) else {
            panic!("not known: {:?}", resolver.last_error());
        };
        assert_eq!(
            *info,
            ContainerInfo {
                id: ID.to_owned(),
                name: Some("web".to_owned()),
                image: Some("nginx:1.25".to_owned()),
                runtime: "docker",
                labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
                pod: None,
            }
        );
        assert!(matches!(
            resolver.lookup(&other, Instant::now()),
            Lookup::Unknown(_)
        ));
        assert_eq!(
            resolver.stats,
            ContainerStats {
                fetches: 2,
                not_found: 1,
                cached: 1,
                ..ContainerStats::default()
            }
        );
        // Dropping the resolver ends the fetch task.
        drop(resolver);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Against real runtimes, when asked: `EGRET_LIVE_DOCKER` and `EGRET_LIVE_CONTAINERD` name
    /// the sockets, `EGRET_LIVE_CHECKS` lists `cgroup-path|expected-name` pairs separated by
    /// `;`. Without `EGRET_LIVE_CHECKS` the test does nothing. docs/containers.md shows a setup.
    #[tokio::test]
    async fn live_runtimes() {
        let Ok(checks) = std::env::var("EGRET_LIVE_CHECKS") else {
            return;
        };
        let socket = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let (mut resolver, fetcher) = ContainerResolver::new(RuntimeConfig {
            docker_socket: socket("EGRET_LIVE_DOCKER"),
            containerd_socket: socket("EGRET_LIVE_CONTAINERD"),
            label_allowlist: vec!["*".to_owned()],
            ..no_sockets()
        });
        tokio::spawn(fetcher);
        for check in checks.split(';').filter(|c| !c.is_empty()) {
            let (path, name) = check.split_once('|').unwrap();
            let mut lookup = resolver.lookup(path, Instant::now());
            for _ in 0..500 {
                if !matches!(lookup, Lookup::Pending(_)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                resolver.poll_results();
                lookup = resolver.lookup(path, Instant::now());
            }
            println!("{path}: {lookup:?}");
            let Lookup::Known(info) = lookup else {
                panic!("{path}: {lookup:?}, last error {:?}", resolver.last_error());
            };
            assert_eq!(info.name.as_deref(), Some(name), "{path}");
        }
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_hang() {
        let (mut resolver, fetcher) = ContainerResolver::new(RuntimeConfig {
            docker_socket: Some(PathBuf::from("/nonexistent/egret-docker.sock")),
            ..no_sockets()
        });
        tokio::spawn(fetcher);
        let path = docker_path(ID);
        resolver.lookup(&path, Instant::now());
        for _ in 0..200 {
            if resolver.poll_results() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(resolver.stats.fetch_errors, 1);
        assert!(matches!(
            resolver.lookup(&path, Instant::now()),
            Lookup::Unknown(_)
        ));
        assert!(resolver
            .last_error()
            .is_some_and(|e| e.contains("/nonexistent/egret-docker.sock")));
    }
}

//! Container and Kubernetes identity for events: which container a cgroup path belongs to
//! ([`path`]), and what its runtime says about it (name, image, labels, pod).
//!
//! The pipeline owns a [`ContainerResolver`] (synchronous, never blocks) and spawns the fetch
//! task it returns on tokio:
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Instant;
//! use egret::container::{ContainerResolver, Lookup, RuntimeConfig};
//!
//! let (mut resolver, fetcher) = ContainerResolver::new(RuntimeConfig::default());
//! tokio::spawn(fetcher);
//! for warning in resolver.startup_warnings() {
//!     log::warn!("{warning}");
//! }
//! // Per event, with the cgroup path:
//! match resolver.lookup("/system.slice/docker-<id>.scope", Instant::now()) {
//!     Lookup::Known(info) => { /* name, image, labels, pod */ }
//!     Lookup::Pending(_) => { /* hold the event up to resolver.grace(), then settle() */ }
//!     Lookup::Unknown(reference) => { /* id and runtime hint only */ }
//!     Lookup::NotAContainer => {}
//! }
//! // Regularly (each drain, each second):
//! resolver.poll_results();
//! resolver.expire(Instant::now());
//! # }
//! ```
//!
//! Runtimes are asked over their unix sockets: Docker and Podman through the Docker Engine API
//! ([`docker`], over a small HTTP/1.1 client, [`http`]), containerd through its own gRPC API
//! ([`containerd`]) and CRI-O through the Kubernetes CRI ([`crio`]), both over a small unary
//! gRPC client ([`grpc`]). `docs/containers.md` describes the behaviour and the fields.

pub mod cache;
pub mod containerd;
pub mod crio;
pub mod docker;
pub mod fetch;
pub mod fields;
pub mod grpc;
pub mod http;
pub mod path;
pub mod serviceaccount;
pub mod workload;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

pub use cache::{ContainerResolver, ContainerStats};
pub use fetch::FetchError;
pub use fields::ContainerFields;
pub use path::{parse, ContainerRef, RuntimeHint};
pub use workload::{Workload, WorkloadKind};

/// Where the runtimes listen and how long things are kept. `None` for a socket turns that
/// runtime off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// containerd's gRPC socket; default `/run/containerd/containerd.sock`.
    pub containerd_socket: Option<PathBuf>,
    /// The Docker Engine API socket; default `/var/run/docker.sock`.
    pub docker_socket: Option<PathBuf>,
    /// Podman's Docker-compatible API socket (`podman system service`); default
    /// `/run/podman/podman.sock`. Rootless Podman is found at `/run/user/<uid>/podman/podman.sock`.
    pub podman_socket: Option<PathBuf>,
    /// CRI-O's CRI gRPC socket; default `/var/run/crio/crio.sock`.
    pub crio_socket: Option<PathBuf>,
    /// Label keys copied to `container.labels`; a key ending in `*` is a prefix.
    pub label_allowlist: Vec<String>,
    /// How long the pipeline may hold an event whose container is being fetched.
    pub grace: Duration,
    /// How long a container stays cached after the last event that named it.
    pub keep_after_exit: Duration,
    /// Bound on cached containers (known, failed and in flight).
    pub max_entries: usize,
    /// Bound on each call to a runtime (connecting included).
    pub call_timeout: Duration,
    /// A container no runtime knows is asked about again after this long (it may be created
    /// a moment after its first process runs).
    pub not_found_retry: Duration,
    /// After a failed fetch (socket missing, timeout, malformed answer), the container is
    /// asked about again after this long.
    pub error_retry: Duration,
}

/// Labels copied by default.
pub const DEFAULT_LABEL_ALLOWLIST: [&str; 4] = [
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
    "io.kubernetes.container.name",
];

/// The runtimes' usual sockets (the defaults of `--containerd-socket` and the others).
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";
pub const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";

/// The flags' defaults (`config::ContainerConfig`, checked equal by its tests) and the
/// settings that are not flags.
impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            containerd_socket: Some(PathBuf::from(CONTAINERD_SOCKET)),
            docker_socket: Some(PathBuf::from(DOCKER_SOCKET)),
            podman_socket: Some(PathBuf::from(PODMAN_SOCKET)),
            crio_socket: Some(PathBuf::from(CRIO_SOCKET)),
            label_allowlist: DEFAULT_LABEL_ALLOWLIST
                .iter()
                .map(|key| (*key).to_owned())
                .collect(),
            grace: Duration::from_millis(500),
            keep_after_exit: Duration::from_secs(300),
            max_entries: 16384,
            call_timeout: Duration::from_secs(2),
            not_found_retry: Duration::from_secs(2),
            error_retry: Duration::from_secs(10),
        }
    }
}

/// What egret reports about a container (made by [`ContainerInfo::new`] from what its
/// runtime said, a [`RuntimeContainer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: Option<String>,
    pub image: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman`.
    pub runtime: &'static str,
    /// The allow-listed labels (every label, in a [`RuntimeContainer`]).
    pub labels: BTreeMap<String, String>,
    /// The pod (in a [`RuntimeContainer`], only pod identity given outside the labels: a CRI
    /// sandbox's metadata).
    pub pod: Option<PodInfo>,
}

/// What a runtime said about a container, before [`ContainerInfo::new`] applies the
/// allow-list and fills the pod from the kubelet's labels.
pub type RuntimeContainer = ContainerInfo;

/// The Kubernetes pod a container belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    /// The container's name in the pod spec (absent for the pod's sandbox).
    pub container_name: Option<String>,
    /// The workload owning the pod, derived from its name and labels by
    /// [`ContainerInfo::new`] ([`workload::derive`]); `None` in a [`RuntimeContainer`].
    pub workload: Option<Workload>,
    /// The pod's service account, when the runtime shows its token ([`serviceaccount`]).
    pub service_account: Option<String>,
}

/// The answer for one cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Arc<ContainerInfo>),
    /// A fetch is in flight: the caller may hold the event up to [`ContainerResolver::grace`]
    /// and then use [`ContainerResolver::settle`]. Carries what the path says, to report if
    /// the caller does not wait.
    Pending(ContainerRef),
    /// The runtime does not know it, or could not be asked: report the id and hint only.
    Unknown(ContainerRef),
    NotAContainer,
}

impl Lookup {
    /// The container's id, if the path names one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Known(info) => Some(&info.id),
            Self::Pending(reference) | Self::Unknown(reference) => Some(&reference.id),
            Self::NotAContainer => None,
        }
    }
}

/// The labels the kubelet puts on every container (whatever the runtime).
pub mod k8s_labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// The pod named by the kubelet's labels: name and namespace are required.
pub fn pod_from_labels(labels: &BTreeMap<String, String>) -> Option<PodInfo> {
    let non_empty = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
    Some(PodInfo {
        name: non_empty(k8s_labels::POD_NAME)?,
        namespace: non_empty(k8s_labels::POD_NAMESPACE)?,
        uid: non_empty(k8s_labels::POD_UID),
        container_name: non_empty(k8s_labels::CONTAINER_NAME),
        workload: None,
        service_account: None,
    })
}

/// Longest label value copied; longer values are cut (on a character boundary).
pub const MAX_LABEL_VALUE: usize = 512;

fn allowed(key: &str, allowlist: &[String]) -> bool {
    allowlist
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == pattern,
        })
}

fn shortened(value: &str) -> String {
    let mut end = value.len().min(MAX_LABEL_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default().to_owned()
}

impl ContainerInfo {
    /// The reported form of what a runtime said: the allow-listed labels, and the pod from the
    /// runtime or the kubelet's labels (its uid from the cgroup path if the labels lack it).
    pub fn new(
        mut found: RuntimeContainer,
        reference: &ContainerRef,
        allowlist: &[String],
    ) -> Self {
        let pod = found
            .pod
            .take()
            .or_else(|| pod_from_labels(&found.labels))
            .map(|mut pod| {
                if pod.uid.is_none() {
                    pod.uid.clone_from(&reference.pod_uid);
                }
                pod.workload = Some(workload::derive(&pod.name, &pod.namespace, &found.labels));
                pod
            });
        let labels = found
            .labels
            .iter()
            .filter(|(key, _)| allowed(key, allowlist))
            .map(|(key, value)| (key.clone(), shortened(value)))
            .collect();
        // A libpod cgroup is Podman's even when its Docker-compatible API was on the Docker
        // socket path.
        let runtime = match (reference.runtime, found.runtime) {
            (RuntimeHint::Podman, "docker") => "podman",
            (_, runtime) => runtime,
        };
        Self {
            runtime,
            labels,
            pod,
            ..found
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Container ids for fixtures (the second is also a CRI-O pod sandbox's).
    pub(crate) const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    pub(crate) const ID2: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    /// The defaults with every runtime turned off.
    pub(crate) fn no_sockets() -> RuntimeConfig {
        RuntimeConfig {
            containerd_socket: None,
            docker_socket: None,
            podman_socket: None,
            crio_socket: None,
            ..RuntimeConfig::default()
        }
    }

    /// A label map, for runtime fixtures.
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn reference(runtime: RuntimeHint) -> ContainerRef {
        ContainerRef {
            pod_uid: Some("4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8".to_owned()),
            ..path::tests::container(&"a".repeat(64), runtime)
        }
    }

    #[test]
    fn pods_from_kubelet_labels() {
        let full = labels(&[
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.uid", "u-1"),
            ("io.kubernetes.container.name", "web"),
        ]);
        assert_eq!(
            pod_from_labels(&full),
            Some(PodInfo {
                name: "web-0".to_owned(),
                namespace: "shop".to_owned(),
                uid: Some("u-1".to_owned()),
                container_name: Some("web".to_owned()),
                workload: None,
                service_account: None,
            })
        );
        // The sandbox has no container name.
        let sandbox = labels(&[
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.cri-containerd.kind", "sandbox"),
        ]);
        assert_eq!(
            pod_from_labels(&sandbox).map(|p| (p.uid, p.container_name)),
            Some((None, None))
        );
        assert_eq!(
            pod_from_labels(&labels(&[("io.kubernetes.pod.name", "x")])),
            None
        );
        assert_eq!(
            pod_from_labels(&labels(&[
                ("io.kubernetes.pod.name", ""),
                ("io.kubernetes.pod.namespace", "shop")
            ])),
            None
        );
    }

    #[test]
    fn info_applies_the_allowlist_and_fills_the_pod_uid() {
        let found = RuntimeContainer {
            id: "a".repeat(64),
            name: Some("web".to_owned()),
            image: Some("nginx".to_owned()),
            runtime: "containerd",
            labels: labels(&[
                ("app", "web"),
                ("app.kubernetes.io/name", "shop"),
                ("app.kubernetes.io/part-of", "store"),
                ("secret-ish", "x"),
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
            ]),
            pod: None,
        };
        let allowlist = vec!["app".to_owned(), "app.kubernetes.io/*".to_owned()];
        let info = ContainerInfo::new(found, &reference(RuntimeHint::Containerd), &allowlist);
        assert_eq!(
            info.labels,
            labels(&[
                ("app", "web"),
                ("app.kubernetes.io/name", "shop"),
                ("app.kubernetes.io/part-of", "store"),
            ])
        );
        assert_eq!(
            info.pod.and_then(|p| p.uid).as_deref(),
            Some("4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8")
        );
    }

    #[test]
    fn long_label_values_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_LABEL_VALUE);
        let found = RuntimeContainer {
            id: "a".repeat(64),
            name: None,
            image: None,
            runtime: "docker",
            labels: labels(&[("app", &long)]),
            pod: None,
        };
        let info = ContainerInfo::new(found, &reference(RuntimeHint::Podman), &["app".to_owned()]);
        let value = info.labels.get("app").cloned().unwrap_or_default();
        assert_eq!(value.len(), MAX_LABEL_VALUE);
        assert!(value.chars().all(|c| c == 'é'));
        // Found through the Docker-compatible API, but a libpod cgroup: Podman.
        assert_eq!(info.runtime, "podman");
    }

    #[test]
    fn default_config() {
        let config = RuntimeConfig::default();
        assert_eq!(config.grace, Duration::from_millis(500));
        assert_eq!(config.keep_after_exit, Duration::from_secs(300));
        assert!(config.label_allowlist.iter().any(|l| l == "app"));
    }
}

//! Real container runtimes, started by the tests and torn down by them.
//!
//! - [`Containerd`]: a private `containerd` (its own root, state, socket and config) driven
//!   with `ctr`, running kubelet-style containers (the labels and cgroup layout the CRI plugin
//!   and kubelet produce) without a kubelet.
//! - [`Dockerd`]: a private `dockerd` (its own data root, exec root, socket and containerd)
//!   driven with the `docker` CLI.
//! - [`FakeDocker`]: a Docker API socket that never answers, answers garbage, 100 MB or
//!   half an answer, or answers as dockerd does (for the hostile-runtime tests).
//! - [`image`]: the busybox image both import, built here from Debian's static busybox,
//!   because no registry is reachable.
//! - [`install`]: installs the Debian packages when they are missing.
//! - [`ContainerVeth`]: a veth pair into a container's own network namespace.
//! - [`V1Mirrors`]: on a hybrid host runc also creates the container's cgroup in every
//!   cgroup v1 hierarchy; this removes those copies of a test cgroup.
//!
//! Everything a runtime starts or mounts lives under a scratch directory of its own and is
//! killed, unmounted and removed on drop, also when a test fails.

pub mod containerd;
pub mod docker;
pub mod fake_docker;
pub mod image;
pub mod install;
pub mod podman;
mod proc;
mod veth;

pub use containerd::Containerd;
pub use docker::Dockerd;
pub use fake_docker::{Behaviour, FakeDocker};
pub use image::{build_busybox_image, BuiltImage, IMAGE_REF};
pub use install::{ensure_installed, ensure_programs, Program, Runtime, Tools};
pub use podman::Podman;
pub use proc::{cgroup_v2_path, pid_alive, V1Mirrors};
pub use veth::ContainerVeth;

use crate::run::log_tail;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// How long one runtime CLI call (`ctr`, `docker`) may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to answer on its socket after it was started.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What a container should be: its name, labels, cgroup parent, network and command.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// containerd: the container id is derived from it (64 hex, as the CRI plugin makes);
    /// docker: `--name`.
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// OCI annotations (containerd only; docker sets its own).
    pub annotations: Vec<(String, String)>,
    /// The cgroup the container's cgroup goes below, relative to the cgroup root and starting
    /// with `/` (e.g. `/egret-e2e-ctr-1-0/kubepods/besteffort/pod<uid>`). `None`: the
    /// runtime's default.
    pub cgroup_parent: Option<String>,
    /// Share the host's network namespace (`--net-host`, `--network host`); otherwise the
    /// container gets its own namespace with only loopback.
    pub host_network: bool,
    /// Join the network namespace of this pid instead (containerd: `--with-ns`), the way a
    /// pod's containers join its sandbox's namespace.
    pub join_network_of: Option<u32>,
    /// A user-defined network to join (docker: `--network NAME`, made with
    /// [`Dockerd::create_network`]); Docker's embedded DNS then answers its containers' names.
    pub network: Option<String>,
    /// The container id to use (containerd; default: a fresh 64-hex id).
    pub id: Option<String>,
    /// The command, run by the image's busybox (e.g. `["sh", "-c", "..."]`).
    pub args: Vec<String>,
    /// Read-only bind mounts `(host source, container destination)` (containerd only).
    pub mounts: Vec<(String, String)>,
}

impl RunSpec {
    /// A container `name` on the host network running `args`.
    pub fn new(name: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            host_network: true,
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Self::default()
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }

    /// A read-only bind mount of `source` (on the host) at `destination` (containerd).
    pub fn bind_mount(mut self, source: &str, destination: &str) -> Self {
        self.mounts
            .push((source.to_string(), destination.to_string()));
        self
    }

    pub fn cgroup_parent(mut self, parent: &str) -> Self {
        self.cgroup_parent = Some(parent.to_string());
        self
    }

    /// The container gets its own network namespace (only loopback until a
    /// [`ContainerVeth`] is added).
    pub fn own_network(mut self) -> Self {
        self.host_network = false;
        self
    }

    /// Joins the user-defined network `name` (docker only; see [`RunSpec::network`]).
    pub fn network(mut self, name: &str) -> Self {
        self.host_network = false;
        self.network = Some(name.to_string());
        self
    }

    /// Shares the network namespace of `pid` (e.g. a pod sandbox's first process).
    pub fn join_network_of(mut self, pid: u32) -> Self {
        self.host_network = false;
        self.join_network_of = Some(pid);
        self
    }

    /// Applies a kubelet-style pod: its labels and annotations for container `container`,
    /// and its pod cgroup below `under` as the cgroup parent.
    pub fn in_pod(mut self, pod: &KubePod, container: &str, under: &str) -> Self {
        self.labels.extend(pod.labels(container));
        self.annotations.extend(pod.annotations(container));
        self.cgroup_parent = Some(pod.cgroup_parent(under));
        self
    }
}

/// A Kubernetes pod as the kubelet and the containerd CRI plugin describe it to the runtime,
/// without a kubelet: the labels on each container, the CRI annotations in its OCI spec, and
/// the cgroupfs-driver cgroup layout `/kubepods/<qos>/pod<uid>/<container id>`.
#[derive(Debug, Clone)]
pub struct KubePod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `besteffort` or `burstable` (guaranteed pods sit directly below `/kubepods`).
    pub qos: String,
    /// The id of the pod's sandbox container, once one runs (see
    /// [`Containerd::start_sandbox`]).
    pub sandbox_id: Option<String>,
    /// The pod's own labels (`metadata.labels`: `pod-template-hash`, `app`...): the kubelet
    /// gives them to the runtime with the sandbox only.
    pub labels: Vec<(String, String)>,
}

impl KubePod {
    /// A best-effort pod with a fresh, unique uid (UUID-shaped).
    pub fn new(name: &str, namespace: &str) -> Self {
        let h = image::sha256_hex(format!("pod {name} {namespace} {}", crate::marker()).as_bytes());
        let uid = format!(
            "{}-{}-{}-{}-{}",
            h.get(0..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default(),
            h.get(20..32).unwrap_or_default()
        );
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid,
            qos: "besteffort".to_string(),
            sandbox_id: None,
            labels: Vec::new(),
        }
    }

    /// The labels that name the pod (kubelet's), on its sandbox and on every container.
    fn pod_labels(&self) -> [(&str, &str); 3] {
        [
            ("io.kubernetes.pod.name", self.name.as_str()),
            ("io.kubernetes.pod.namespace", self.namespace.as_str()),
            ("io.kubernetes.pod.uid", self.uid.as_str()),
        ]
    }

    /// The CRI annotations that name the pod's sandbox, on the sandbox and every container.
    fn sandbox_identity(&self) -> [(&str, &str); 3] {
        [
            ("io.kubernetes.cri.sandbox-name", self.name.as_str()),
            (
                "io.kubernetes.cri.sandbox-namespace",
                self.namespace.as_str(),
            ),
            ("io.kubernetes.cri.sandbox-uid", self.uid.as_str()),
        ]
    }

    /// The labels the CRI plugin puts on a container of this pod (what kubelet passes plus
    /// `io.cri-containerd.kind`).
    pub fn labels(&self, container: &str) -> Vec<(String, String)> {
        let mut pairs = self.pod_labels().to_vec();
        pairs.extend([
            ("io.kubernetes.container.name", container),
            ("io.cri-containerd.kind", "container"),
        ]);
        owned_pairs(&pairs)
    }

    /// The CRI annotations the plugin writes into a container's OCI spec.
    pub fn annotations(&self, container: &str) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", container),
            ("io.kubernetes.cri.image-name", IMAGE_REF),
        ];
        pairs.extend(self.sandbox_identity());
        if let Some(id) = &self.sandbox_id {
            pairs.push(("io.kubernetes.cri.sandbox-id", id));
        }
        owned_pairs(&pairs)
    }

    /// The labels of the pod's sandbox (pause) container.
    pub fn sandbox_labels(&self) -> Vec<(String, String)> {
        let mut pairs = self.pod_labels().to_vec();
        pairs.push(("io.cri-containerd.kind", "sandbox"));
        let mut owned = owned_pairs(&pairs);
        owned.extend(self.labels.iter().cloned());
        owned
    }

    /// The CRI annotations of the sandbox container `id`.
    pub fn sandbox_annotations(&self, id: &str) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-id", id),
        ];
        pairs.extend(self.sandbox_identity());
        owned_pairs(&pairs)
    }

    /// `<under>/kubepods/<qos>/pod<uid>`: the pod cgroup (cgroupfs driver) below `under`, a
    /// cgroup path relative to the cgroup root (e.g. a test cgroup's `relative_path()`).
    pub fn cgroup_parent(&self, under: &str) -> String {
        format!(
            "{}/kubepods/{}/pod{}",
            under.trim_end_matches('/'),
            self.qos,
            self.uid
        )
    }
}

/// A container started in the background.
#[derive(Debug, Clone)]
pub struct RunningContainer {
    /// The full id (64 hex).
    pub id: String,
    pub name: String,
    /// The pid of the container's first process, in the host's pid namespace.
    pub pid: u32,
    /// The cgroup path the container was asked to get (relative to the cgroup root).
    pub cgroup: Option<String>,
}

/// A container that ran to completion in the foreground.
#[derive(Debug)]
pub struct ContainerRun {
    pub id: String,
    pub name: String,
    /// The container's exit status (as the CLI passed it on).
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From the CLI's start to its exit.
    pub elapsed: Duration,
}

impl ContainerRun {
    /// Errors (with the output) unless the container exited 0.
    pub fn ensure_success(self) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "container {} ({}) failed: {}\nstdout: {}\nstderr: {}",
                self.name,
                self.id,
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Runs a CLI command to completion (at most [`CLI_TIMEOUT`]) and requires success.
fn cli(cmd: &mut Command) -> Result<crate::RunOutput> {
    crate::run_with_timeout(cmd, CLI_TIMEOUT)?.ensure_success_of(&format!("{cmd:?}"))
}

/// [`crate::wait_until`] `cond` holds; an error naming `what` when it does not within `timeout`.
fn require_within(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    if crate::wait_until(timeout, || Ok(cond()))? {
        Ok(())
    } else {
        bail!("{what}: not within {timeout:?}")
    }
}

/// Whether `dir` is on overlayfs (where overlay storage cannot be stacked: use vfs/native).
fn on_overlayfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Waits until `probe` (a CLI call that needs the daemon `what`, started as `daemon`) succeeds;
/// an error with the tail of the daemon's `log` when it exits first or is not answering within
/// [`DAEMON_START_TIMEOUT`].
fn wait_until_answering(
    what: &str,
    daemon: &mut Option<Child>,
    probe: &mut Command,
    log: &Path,
) -> Result<()> {
    probe.stdout(Stdio::null()).stderr(Stdio::null());
    let mut exited = None;
    let ready = require_within(
        &format!("{what} answering on its socket"),
        DAEMON_START_TIMEOUT,
        || {
            if let Some(Ok(Some(s))) = daemon.as_mut().map(Child::try_wait) {
                exited = Some(s);
                return true;
            }
            probe.status().is_ok_and(|s| s.success())
        },
    );
    let log_name = log.file_name().unwrap_or_default().to_string_lossy();
    if let Some(s) = exited {
        bail!(
            "{what} exited ({s}) while starting\n--- {log_name} ---\n{}",
            log_tail(log, 40)
        );
    }
    ready.with_context(|| format!("--- {log_name} ---\n{}", log_tail(log, 40)))
}

/// The containers a runtime started, taken out of its list for removal on drop (newest last).
fn take_tracked<T>(containers: &Mutex<Vec<T>>) -> Vec<T> {
    containers
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default()
}

/// Records a container a runtime started, so that drop removes it.
fn track<T>(containers: &Mutex<Vec<T>>, container: T) -> Result<()> {
    containers
        .lock()
        .map_err(|_| anyhow::anyhow!("container list lock poisoned"))?
        .push(container);
    Ok(())
}

/// `(key, value)` pairs as owned strings (labels, annotations).
fn owned_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A scratch directory under the system temp dir, removed on drop after everything mounted
/// below it has been unmounted. Kept (and named on stderr) when the thread is panicking.
#[derive(Debug)]
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        proc::unmount_below(&self.dir);
        if std::thread::panicking() {
            eprintln!("egret-e2e: keeping runtime dir {}", self.dir.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("egret-e2e: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// The file a container started with [`wait_for_go_then`] waits for.
pub const GO_FILE: &str = "/tmp/egret-go";

/// A shell script for the image's busybox: waits until [`GO_FILE`] exists (see [`go`]), then
/// runs `then` with `$GO` set to the file's content. For containers that must not connect
/// before the test has set something up (a veth into their network namespace).
pub fn wait_for_go_then(then: &str) -> String {
    format!("while [ ! -e {GO_FILE} ]; do sleep 0.05; done; GO=$(cat {GO_FILE}); {then}")
}

/// Writes `content` to [`GO_FILE`] inside the root file system of the container whose first
/// process is `pid` (through `/proc/<pid>/root`), atomically.
pub fn go(pid: u32, content: &str) -> Result<()> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let rel = GO_FILE.trim_start_matches('/');
    let tmp = root.join(format!("{rel}.tmp"));
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, root.join(rel)).with_context(|| format!("rename {}", tmp.display()))
}

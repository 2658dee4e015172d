//! A private containerd, driven with `ctr`.
//!
//! `containerd` runs with its own root, state, socket (`<scratch>/containerd.sock`) and a
//! minimal generated config: the CRI plugin is disabled (there is no kubelet; the tests
//! create what the CRI plugin would: kubelet labels, CRI annotations, the kubepods cgroup
//! layout), runc is used with cgroupfs, runc's state goes to `<scratch>/runc` (`--runc-root`)
//! and I/O fifos to `<scratch>/fifo`. The snapshotter is `overlayfs` when it can work there
//! and `native` otherwise (`EGRET_E2E_SNAPSHOTTER` overrides).
//!
//! On a hybrid cgroup host, runc (1.1) creates the container's cgroup path (`--cgroup`) in
//! every v1 hierarchy and in the unified (v2) one, and puts the container's processes in all
//! of them: the `0::` line of `/proc/<pid>/cgroup` is the path given. So a path below a test
//! cgroup lands below the cgroup egret monitors.

use super::image::{build_busybox_image, BuiltImage, IMAGE_REF};
use super::install::{ensure_installed, Runtime, Tools};
use super::{
    cli, log_tail, on_overlayfs, proc, require_within, take_tracked, track, wait_until_answering,
    ContainerRun, KubePod, RunSpec, RunningContainer, Scratch,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The namespace the CRI plugin (and so Kubernetes) uses.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// A running private containerd; dropped → its containers and tasks are deleted, containerd
/// is stopped (SIGTERM, then SIGKILL), leftover shims killed, mounts undone, files removed.
pub struct Containerd {
    child: Option<Child>,
    tools: Tools,
    socket: PathBuf,
    snapshotter: String,
    started_in: Duration,
    /// (namespace, id) of every container created, for the cleanup.
    containers: Mutex<Vec<(String, String)>>,
    /// The namespaces the image was imported into, and the image.
    images: Mutex<(Vec<String>, Option<BuiltImage>)>,
    /// Last: dropped after containerd is gone.
    scratch: Scratch,
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        r#"# egret e2e: a private containerd for one test
version = 2
root = {root}
state = {state}
oom_score = 0
# No kubelet: the tests create what the CRI plugin would. Nothing else that is not needed.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""

[metrics]
  address = ""
"#,
        root = q(&dir.join("root")),
        state = q(&dir.join("state")),
        sock = q(socket),
        ttrpc = q(&dir.join("containerd.sock.ttrpc")),
    )
}

/// A 64-hex container id (the shape the CRI plugin gives containers), unique per call.
pub fn container_id(name: &str) -> String {
    super::image::sha256_hex(format!("{name} {}", crate::marker()).as_bytes())
}

impl Containerd {
    /// Installs the packages if needed ([`ensure_installed`]) and starts containerd.
    pub fn start() -> Result<Self> {
        Self::start_with(&ensure_installed(&[Runtime::Containerd])?)
    }

    /// Starts containerd with `tools` and waits until its socket answers (`ctr version`).
    pub fn start_with(tools: &Tools) -> Result<Self> {
        let t0 = Instant::now();
        let scratch = Scratch::create("egret-e2e-containerd")?;
        let dir = scratch.path().to_path_buf();
        let socket = dir.join("containerd.sock");
        for sub in ["root", "state", "runc", "fifo", "pids"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket))
            .with_context(|| format!("write {}", config.display()))?;
        let log = std::fs::File::create(dir.join("containerd.log")).context("create log")?;
        let mut cmd = Command::new(&tools.containerd);
        cmd.arg("--config")
            .arg(&config)
            .arg("--address")
            .arg(&socket)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup log")?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut me = Self {
            child: Some(child),
            tools: tools.clone(),
            socket,
            snapshotter: String::new(),
            started_in: Duration::ZERO,
            containers: Mutex::new(Vec::new()),
            images: Mutex::new((Vec::new(), None)),
            scratch,
        };
        let mut probe = me.ctr_cmd("default");
        probe.arg("version");
        wait_until_answering(
            "containerd",
            &mut me.child,
            &mut probe,
            &me.scratch.path().join("containerd.log"),
        )?;
        me.snapshotter = me.pick_snapshotter()?;
        me.started_in = t0.elapsed();
        Ok(me)
    }

    fn pick_snapshotter(&self) -> Result<String> {
        if let Ok(s) = std::env::var("EGRET_E2E_SNAPSHOTTER") {
            if !s.is_empty() {
                return Ok(s);
            }
        }
        let out = cli(self.ctr_cmd("default").args(["plugins", "ls"]))?;
        let overlay_ok = out.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"io.containerd.snapshotter.v1")
                && f.get(1) == Some(&"overlayfs")
                && f.last() == Some(&"ok")
        });
        Ok(if overlay_ok && !on_overlayfs(self.scratch.path()) {
            "overlayfs".to_string()
        } else {
            "native".to_string()
        })
    }

    /// `ctr --address <socket> --namespace <ns>`.
    pub fn ctr_cmd(&self, ns: &str) -> Command {
        let mut c = Command::new(&self.tools.ctr);
        for var in [
            "CONTAINERD_ADDRESS",
            "CONTAINERD_NAMESPACE",
            "CONTAINERD_SNAPSHOTTER",
        ] {
            c.env_remove(var);
        }
        c.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(ns);
        c
    }

    /// The socket (what egret's `--containerd-socket` gets).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The scratch directory (config, log, root, state).
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The snapshotter in use (`overlayfs` or `native`).
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// From spawn to answering (and the snapshotter chosen).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// containerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of containerd's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.scratch.path().join("containerd.log"), 40)
    }

    /// Builds the busybox image (once) and imports it into namespace `ns` as [`IMAGE_REF`]
    /// (unpacked for the snapshotter in use). Returns how long the import took.
    pub fn import_image(&self, ns: &str) -> Result<Duration> {
        let t0 = Instant::now();
        let mut images = self
            .images
            .lock()
            .map_err(|_| anyhow::anyhow!("image lock poisoned"))?;
        if images.0.iter().any(|n| n == ns) {
            return Ok(Duration::ZERO);
        }
        let image = match &images.1 {
            Some(i) => i.clone(),
            None => {
                let i = build_busybox_image(
                    &self.tools.busybox,
                    IMAGE_REF,
                    &self.scratch.path().join("busybox-image.tar"),
                )?;
                images.1 = Some(i.clone());
                i
            }
        };
        cli(self
            .ctr_cmd(ns)
            .args(["images", "import", "--all-platforms", "--snapshotter"])
            .arg(&self.snapshotter)
            .arg(&image.path))
        .with_context(|| format!("--- containerd.log ---\n{}", self.log_tail()))?;
        let listed = cli(self.ctr_cmd(ns).args(["images", "ls", "-q"]))?;
        if !listed.stdout.lines().any(|l| l.trim() == IMAGE_REF) {
            bail!(
                "{IMAGE_REF} not listed after the import into {ns}: {:?}",
                listed.stdout
            );
        }
        images.0.push(ns.to_string());
        Ok(t0.elapsed())
    }

    fn run_args(&self, cmd: &mut Command, spec: &RunSpec, id: &str) {
        cmd.arg("--snapshotter")
            .arg(&self.snapshotter)
            .arg("--runc-root")
            .arg(self.scratch.path().join("runc"))
            .arg("--fifo-dir")
            .arg(self.scratch.path().join("fifo"))
            .arg("--pid-file")
            .arg(self.pid_file(id));
        if let Some(pid) = spec.join_network_of {
            cmd.arg("--with-ns")
                .arg(format!("network:/proc/{pid}/ns/net"));
        } else if spec.host_network {
            cmd.arg("--net-host");
        }
        for (k, v) in &spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        for (k, v) in &spec.annotations {
            cmd.arg("--annotation").arg(format!("{k}={v}"));
        }
        for (source, destination) in &spec.mounts {
            cmd.arg("--mount").arg(format!(
                "type=bind,src={source},dst={destination},options=rbind:ro"
            ));
        }
        if let Some(parent) = &spec.cgroup_parent {
            cmd.arg("--cgroup").arg(format!("{parent}/{id}"));
        }
        cmd.arg(IMAGE_REF).arg(id).args(&spec.args);
    }

    fn pid_file(&self, id: &str) -> PathBuf {
        self.scratch.path().join("pids").join(format!("{id}.pid"))
    }

    fn track(&self, ns: &str, id: &str) -> Result<()> {
        track(&self.containers, (ns.to_string(), id.to_string()))
    }

    /// `ctr run <mode> ...` for `spec` in namespace `ns` (image imported, container tracked
    /// for removal), and the container's id.
    fn run_command(&self, ns: &str, spec: &RunSpec, mode: &str) -> Result<(String, Command)> {
        self.import_image(ns)?;
        let id = spec.id.clone().unwrap_or_else(|| container_id(&spec.name));
        self.track(ns, &id)?;
        let mut cmd = self.ctr_cmd(ns);
        cmd.args(["run", mode]);
        self.run_args(&mut cmd, spec, &id);
        Ok((id, cmd))
    }

    /// Runs a container to completion (`ctr run --rm`) in namespace `ns`, at most `timeout`.
    /// The container id is 64 hex; its cgroup is `<cgroup_parent>/<id>`.
    pub fn run(&self, ns: &str, spec: &RunSpec, timeout: Duration) -> Result<ContainerRun> {
        let (id, mut cmd) = self.run_command(ns, spec, "--rm")?;
        let t0 = Instant::now();
        let out = crate::run_with_timeout(&mut cmd, timeout)?;
        Ok(ContainerRun {
            id,
            name: spec.name.clone(),
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            elapsed: t0.elapsed(),
        })
    }

    /// Starts a container in the background (`ctr run -d`) and returns once its first
    /// process exists.
    pub fn start_container(&self, ns: &str, spec: &RunSpec) -> Result<RunningContainer> {
        let (id, mut cmd) = self.run_command(ns, spec, "-d")?;
        cli(&mut cmd).with_context(|| format!("--- containerd.log ---\n{}", self.log_tail()))?;
        let pid_file = self.pid_file(&id);
        let mut pid = None;
        require_within("the container's pid file", Duration::from_secs(10), || {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            pid.is_some()
        })?;
        let pid = pid.context("no pid")?;
        Ok(RunningContainer {
            id: id.clone(),
            name: spec.name.clone(),
            pid,
            cgroup: spec.cgroup_parent.as_ref().map(|p| format!("{p}/{id}")),
        })
    }

    /// Starts the sandbox ("pause") container of `pod` in `ns`, as the CRI plugin does before
    /// the pod's containers: kind `sandbox`, in the pod cgroup below `under`, holding the
    /// pod's network namespace (its own one unless `host_network`). Records its id in `pod`,
    /// so the pod's containers carry the `io.kubernetes.cri.sandbox-id` annotation; they join
    /// its network namespace with [`RunSpec::join_network_of`] and its `pid`.
    pub fn start_sandbox(
        &self,
        ns: &str,
        pod: &mut KubePod,
        under: &str,
        host_network: bool,
    ) -> Result<RunningContainer> {
        let id = container_id(&format!("sandbox {}", pod.name));
        let mut spec = RunSpec::new(&format!("{}-sandbox", pod.name), &["sleep", "86400"]);
        spec.host_network = host_network;
        spec.id = Some(id.clone());
        spec.labels = pod.sandbox_labels();
        spec.annotations = pod.sandbox_annotations(&id);
        spec.cgroup_parent = Some(pod.cgroup_parent(under));
        let c = self.start_container(ns, &spec)?;
        pod.sandbox_id = Some(id);
        Ok(c)
    }

    /// Kills and deletes a container started with [`Self::start_container`].
    pub fn remove(&self, ns: &str, id: &str) -> Result<()> {
        let _ = crate::run_with_timeout(
            self.ctr_cmd(ns).args(["task", "kill", "-s", "SIGKILL", id]),
            Duration::from_secs(20),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = crate::run_with_timeout(
                self.ctr_cmd(ns).args(["task", "delete", "--force", id]),
                Duration::from_secs(20),
            )?;
            if out.status.success() || out.stderr.contains("not found") {
                break;
            }
            if Instant::now() > deadline {
                bail!("ctr task delete {id}: {}", out.stderr.trim());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = crate::run_with_timeout(
            self.ctr_cmd(ns).args(["containers", "delete", id]),
            Duration::from_secs(20),
        )?;
        if !out.status.success() && !out.stderr.contains("not found") {
            bail!("ctr containers delete {id}: {}", out.stderr.trim());
        }
        Ok(())
    }

    /// The ids of the containers in `ns` (`ctr containers ls -q`).
    pub fn list(&self, ns: &str) -> Result<Vec<String>> {
        let out = cli(self.ctr_cmd(ns).args(["containers", "ls", "-q"]))?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    fn stop_daemon(&mut self) {
        if let Some(child) = self.child.take() {
            proc::stop_daemon(child, "containerd");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            for (ns, id) in take_tracked(&self.containers).iter().rev() {
                if let Err(e) = self.remove(ns, id) {
                    eprintln!("egret-e2e: removing container {id}: {e:#}");
                }
            }
        }
        self.stop_daemon();
        // Shims outlive containerd; they (and anything else started for this instance) carry
        // the scratch path on their command line.
        proc::kill_leftovers(&self.scratch.path().display().to_string(), &["containerd"]);
    }
}

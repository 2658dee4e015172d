//! A private dockerd, driven with the `docker` CLI.
//!
//! `dockerd` runs with its own data root, exec root, pid file and socket
//! (`<scratch>/docker.sock`), starts its own containerd (below the exec root), and changes
//! nothing on the host's network: no bridge, no iptables, no IP masquerading, no IP
//! forwarding. Containers use cgroupfs (`native.cgroupdriver=cgroupfs`) below a cgroup
//! parent (`--cgroup-parent`), so their cgroup is `<parent>/<64 hex id>` in the unified
//! hierarchy (and in each v1 one on a hybrid host). Storage: `overlay2` where it works,
//! `vfs` otherwise (`EGRET_E2E_DOCKER_STORAGE` overrides).

use super::image::{build_busybox_image, IMAGE_REF};
use super::install::{ensure_installed, Runtime, Tools};
use super::{
    cli, log_tail, on_overlayfs, proc, take_tracked, track, wait_until_answering, ContainerRun,
    RunSpec, RunningContainer, Scratch,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running private dockerd; dropped → its containers are removed, dockerd is stopped
/// (SIGTERM, then SIGKILL), its containerd and shims killed if left, mounts undone, files
/// removed.
pub struct Dockerd {
    child: Option<Child>,
    docker: PathBuf,
    busybox: PathBuf,
    socket: PathBuf,
    storage: String,
    cgroup_parent: Option<String>,
    started_in: Duration,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    image_loaded: Mutex<bool>,
    scratch: Scratch,
}

impl Dockerd {
    /// Installs the packages if needed ([`ensure_installed`]) and starts dockerd; containers
    /// go below `cgroup_parent` (relative to the cgroup root) unless a [`RunSpec`] says
    /// otherwise.
    pub fn start(cgroup_parent: Option<&str>) -> Result<Self> {
        Self::start_with(&ensure_installed(&[Runtime::Docker])?, cgroup_parent)
    }

    /// Starts dockerd with `tools` and waits until it answers (`docker version`).
    pub fn start_with(tools: &Tools, cgroup_parent: Option<&str>) -> Result<Self> {
        let dockerd = tools.dockerd.clone().context("dockerd not found")?;
        let docker = tools.docker.clone().context("docker not found")?;
        let storage = match std::env::var("EGRET_E2E_DOCKER_STORAGE") {
            Ok(s) if !s.is_empty() => s,
            _ => String::new(),
        };
        if !storage.is_empty() {
            return Self::start_storage(tools, &dockerd, &docker, &storage, cgroup_parent);
        }
        let scratch_probe = std::env::temp_dir();
        let first = if on_overlayfs(&scratch_probe) {
            "vfs"
        } else {
            "overlay2"
        };
        match Self::start_storage(tools, &dockerd, &docker, first, cgroup_parent) {
            Ok(d) => Ok(d),
            Err(e) if first != "vfs" => {
                eprintln!("egret-e2e: dockerd with {first} failed ({e:#}); trying vfs");
                Self::start_storage(tools, &dockerd, &docker, "vfs", cgroup_parent)
            }
            Err(e) => Err(e),
        }
    }

    fn start_storage(
        tools: &Tools,
        dockerd: &Path,
        docker: &Path,
        storage: &str,
        cgroup_parent: Option<&str>,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let scratch = Scratch::create("egret-e2e-dockerd")?;
        let dir = scratch.path().to_path_buf();
        let socket = dir.join("docker.sock");
        for sub in ["data", "exec", "cid"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        // A daemon.json of our own, so /etc/docker/daemon.json of the host does not apply; and
        // Docker 20.10 writes a trust key to /etc/docker/key.json unless told otherwise.
        let daemon_json = serde_json::json!({
            "deprecated-key-path": dir.join("key.json").display().to_string(),
        });
        std::fs::write(dir.join("daemon.json"), daemon_json.to_string())
            .context("write daemon.json")?;
        let log = std::fs::File::create(dir.join("dockerd.log")).context("create log")?;
        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--shutdown-timeout",
                "2",
                "--log-level",
                "info",
                "--storage-driver",
                storage,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup log")?)
            .stderr(log);
        if let Some(p) = cgroup_parent {
            cmd.arg("--cgroup-parent").arg(p);
        }
        // dockerd puts runc, containerd and its shims on PATH lookups; make sure the
        // directories of the tools are there.
        let mut path = std::env::var("PATH").unwrap_or_default();
        for t in [&tools.containerd, &tools.runc] {
            if let Some(d) = t.parent() {
                path = format!("{path}:{}", d.display());
            }
        }
        cmd.env("PATH", path);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut me = Self {
            child: Some(child),
            docker: docker.to_path_buf(),
            busybox: tools.busybox.clone(),
            socket,
            storage: storage.to_string(),
            cgroup_parent: cgroup_parent.map(String::from),
            started_in: Duration::ZERO,
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
            image_loaded: Mutex::new(false),
            scratch,
        };
        let mut probe = me.docker_cmd();
        probe.args(["version", "--format", "{{.Server.Version}}"]);
        wait_until_answering(
            &format!("dockerd ({storage})"),
            &mut me.child,
            &mut probe,
            &me.scratch.path().join("dockerd.log"),
        )?;
        let info =
            cli(me
                .docker_cmd()
                .args(["info", "--format", "{{.Driver}} {{.CgroupDriver}}"]))?;
        let want = format!("{storage} cgroupfs");
        if info.stdout.trim() != want {
            bail!("dockerd reports {:?}, want {want:?}", info.stdout.trim());
        }
        me.started_in = t0.elapsed();
        Ok(me)
    }

    /// `docker --host unix://<socket>`.
    pub fn docker_cmd(&self) -> Command {
        let mut c = Command::new(&self.docker);
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            c.env_remove(var);
        }
        // The CLI's own config (contexts, credentials) stays in the scratch directory.
        c.env("DOCKER_CONFIG", self.scratch.path().join("cli"));
        c.arg("--host")
            .arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// The API socket (what egret's `--docker-socket` gets).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The socket of the containerd dockerd started (namespace `moby`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.scratch.path().join("exec/containerd/containerd.sock")
    }

    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The storage driver in use (`overlay2` or `vfs`).
    pub fn storage_driver(&self) -> &str {
        &self.storage
    }

    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.scratch.path().join("dockerd.log"), 40)
    }

    /// Builds the busybox image and loads it (`docker load`) as [`IMAGE_REF`], once.
    /// Returns how long it took.
    pub fn load_image(&self) -> Result<Duration> {
        let t0 = Instant::now();
        let mut loaded = self
            .image_loaded
            .lock()
            .map_err(|_| anyhow::anyhow!("image lock poisoned"))?;
        if *loaded {
            return Ok(Duration::ZERO);
        }
        let image = build_busybox_image(
            &self.busybox,
            IMAGE_REF,
            &self.scratch.path().join("busybox-image.tar"),
        )?;
        cli(self
            .docker_cmd()
            .arg("load")
            .arg("--input")
            .arg(&image.path))
        .with_context(|| format!("--- dockerd.log ---\n{}", self.log_tail()))?;
        let id = cli(self
            .docker_cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", IMAGE_REF]))?;
        if id.stdout.trim() != image.config_digest {
            bail!(
                "{IMAGE_REF} has id {:?} after docker load, want {}",
                id.stdout.trim(),
                image.config_digest
            );
        }
        *loaded = true;
        Ok(t0.elapsed())
    }

    fn track(&self, name: &str) -> Result<()> {
        track(&self.containers, name.to_string())
    }

    fn run_args(&self, cmd: &mut Command, spec: &RunSpec) -> Result<()> {
        if spec.join_network_of.is_some() || spec.id.is_some() {
            bail!("docker containers cannot join a namespace by pid or be given an id here");
        }
        cmd.args(["--pull", "never", "--name", &spec.name]);
        if let Some(network) = &spec.network {
            cmd.args(["--network", network]);
        } else if spec.host_network {
            cmd.args(["--network", "host"]);
        } else {
            cmd.args(["--network", "none"]);
        }
        for (k, v) in &spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        if let Some(p) = spec.cgroup_parent.as_ref().or(self.cgroup_parent.as_ref()) {
            cmd.arg("--cgroup-parent").arg(p);
        }
        cmd.arg(IMAGE_REF).args(&spec.args);
        Ok(())
    }

    /// Runs a container to completion (`docker run --rm`), at most `timeout`.
    pub fn run(&self, spec: &RunSpec, timeout: Duration) -> Result<ContainerRun> {
        self.load_image()?;
        self.track(&spec.name)?;
        let cidfile =
            self.scratch
                .path()
                .join("cid")
                .join(format!("{}-{}", spec.name, crate::unique()));
        let mut cmd = self.docker_cmd();
        cmd.args(["run", "--rm", "--cidfile"]).arg(&cidfile);
        self.run_args(&mut cmd, spec)?;
        let t0 = Instant::now();
        let out = crate::run_with_timeout(&mut cmd, timeout)?;
        let elapsed = t0.elapsed();
        let id = std::fs::read_to_string(&cidfile)
            .map(|s| s.trim().to_string())
            .with_context(|| {
                format!(
                    "no container id from {cmd:?} ({})\nstdout: {}\nstderr: {}",
                    out.status, out.stdout, out.stderr
                )
            })?;
        Ok(ContainerRun {
            id,
            name: spec.name.clone(),
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            elapsed,
        })
    }

    /// Starts a container in the background (`docker run -d`).
    pub fn start_container(&self, spec: &RunSpec) -> Result<RunningContainer> {
        self.load_image()?;
        self.track(&spec.name)?;
        let mut cmd = self.docker_cmd();
        cmd.args(["run", "-d"]);
        self.run_args(&mut cmd, spec)?;
        let out =
            cli(&mut cmd).with_context(|| format!("--- dockerd.log ---\n{}", self.log_tail()))?;
        let id = out.stdout.trim().to_string();
        let pid = cli(self
            .docker_cmd()
            .args(["inspect", "--format", "{{.State.Pid}}", &id]))?;
        let pid: u32 = pid
            .stdout
            .trim()
            .parse()
            .with_context(|| format!("pid of {id}: {:?}", pid.stdout))?;
        let parent = spec.cgroup_parent.as_ref().or(self.cgroup_parent.as_ref());
        Ok(RunningContainer {
            cgroup: parent.map(|p| format!("{p}/{id}")),
            id,
            name: spec.name.clone(),
            pid,
        })
    }

    /// `docker network create NAME` (bridge driver): a user-defined network, whose containers
    /// get Docker's embedded DNS (`nameserver 127.0.0.11` in their `resolv.conf`, served by
    /// dockerd inside each container's network namespace). It adds a bridge (`br-<id>`) on
    /// the host and, since dockerd runs with `--iptables=false`, no host firewall rule; the
    /// network is removed when dockerd is dropped.
    pub fn create_network(&self, name: &str) -> Result<()> {
        track(&self.networks, name.to_string())?;
        cli(self
            .docker_cmd()
            .args(["network", "create", "--driver", "bridge", name]))
        .with_context(|| format!("--- dockerd.log ---\n{}", self.log_tail()))?;
        Ok(())
    }

    /// `docker network rm`.
    fn remove_network(&self, name: &str) -> Result<()> {
        let out = crate::run_with_timeout(
            self.docker_cmd().args(["network", "rm", name]),
            Duration::from_secs(30),
        )?;
        if !out.status.success() && !out.stderr.contains("not found") {
            bail!("docker network rm {name}: {}", out.stderr.trim());
        }
        Ok(())
    }

    /// `docker exec CONTAINER ARGS...` (its process joins the container's cgroup and
    /// namespaces), at most `timeout`.
    pub fn exec(
        &self,
        container: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<crate::RunOutput> {
        crate::run_with_timeout(
            self.docker_cmd().arg("exec").arg(container).args(args),
            timeout,
        )
    }

    /// `docker rm -f`.
    pub fn remove(&self, name_or_id: &str) -> Result<()> {
        let out = crate::run_with_timeout(
            self.docker_cmd().args(["rm", "--force", name_or_id]),
            Duration::from_secs(30),
        )?;
        if !out.status.success() && !out.stderr.contains("No such container") {
            bail!("docker rm -f {name_or_id}: {}", out.stderr.trim());
        }
        Ok(())
    }

    fn stop_daemon(&mut self) {
        if let Some(child) = self.child.take() {
            proc::stop_daemon(child, "dockerd");
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            for name in take_tracked(&self.containers).iter().rev() {
                if let Err(e) = self.remove(name) {
                    eprintln!("egret-e2e: removing container {name}: {e:#}");
                }
            }
            for name in take_tracked(&self.networks).iter().rev() {
                if let Err(e) = self.remove_network(name) {
                    eprintln!("egret-e2e: removing network {name}: {e:#}");
                }
            }
        }
        self.stop_daemon();
        proc::kill_leftovers(
            &self.scratch.path().display().to_string(),
            &["containerd", "dockerd", "docker-proxy"],
        );
    }
}

//! A private podman: its own storage, run directory, configuration and temporary files under a
//! scratch directory, so that building and running images leaves nothing on the host.
//!
//! No registry is reachable, so images are only built from local files (`FROM scratch`).
//! Containers always use the host's network namespace (`--network host`): no CNI or netavark
//! network is ever set up (podman's default bridge would add an interface, firewall rules and
//! turn on IP forwarding). The OCI runtime is crun when installed, else runc. Events are not
//! logged, cgroups are managed by podman itself (cgroupfs; systemd need not be PID 1).

use super::install::{ensure_programs, Program};
use super::{log_tail, on_overlayfs, proc, Scratch, CLI_TIMEOUT};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PODMAN: Program = ("podman", "podman", &["/usr/bin/podman"]);
const RUNC: Program = ("runc", "runc", &["/usr/sbin/runc", "/usr/bin/runc"]);

/// A private podman; dropped → its containers are removed (SIGKILL), leftover conmon
/// processes killed, its overlay mounts undone and its files removed.
pub struct Podman {
    podman: PathBuf,
    runtime: PathBuf,
    storage: &'static str,
    containers: Mutex<Vec<String>>,
    scratch: Scratch,
}

/// What [`Podman::build`] produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub tag: String,
    /// Bytes, as `podman image inspect` reports the image's size.
    pub size: u64,
    pub took: Duration,
}

impl Podman {
    /// Installs podman (and runc) when missing, and prepares a private store.
    pub fn new() -> Result<Self> {
        let found = ensure_programs(&[PODMAN, RUNC])?;
        let (Some(podman), Some(runc)) = (found.first(), found.get(1)) else {
            bail!("podman or runc not found");
        };
        let runtime = ["/usr/bin/crun", "/usr/local/bin/crun"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| runc.clone());
        let scratch = Scratch::create("egret-e2e-podman")?;
        let dir = scratch.path();
        for sub in ["root", "runroot", "tmp", "net", "volumes"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        let storage = if on_overlayfs(dir) { "vfs" } else { "overlay" };
        // Our own configuration files, so the host's do not apply and nothing outside the
        // scratch directory is written.
        let conf = format!(
            "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\
             tmp_dir = \"{tmp}\"\nvolume_path = \"{vol}\"\n\
             [network]\nnetwork_config_dir = \"{net}\"\n",
            tmp = dir.join("tmp").display(),
            vol = dir.join("volumes").display(),
            net = dir.join("net").display(),
        );
        std::fs::write(dir.join("containers.conf"), conf).context("write containers.conf")?;
        let storage_conf = format!(
            "[storage]\ndriver = \"{storage}\"\ngraphroot = \"{root}\"\nrunroot = \"{run}\"\n",
            root = dir.join("root").display(),
            run = dir.join("runroot").display(),
        );
        std::fs::write(dir.join("storage.conf"), storage_conf).context("write storage.conf")?;
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .context("write registries.conf")?;
        let me = Self {
            podman: podman.clone(),
            runtime,
            storage,
            containers: Mutex::new(Vec::new()),
            scratch,
        };
        super::cli(me.cmd().arg("version"))
            .context("podman does not start with the private configuration")?;
        Ok(me)
    }

    /// `podman` with the private store and configuration.
    pub fn cmd(&self) -> Command {
        let dir = self.scratch.path();
        let mut c = Command::new(&self.podman);
        c.env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
            .env("TMPDIR", dir.join("tmp"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("runroot"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .arg("--storage-driver")
            .arg(self.storage)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .arg("--runtime")
            .arg(&self.runtime);
        c
    }

    /// The OCI runtime containers run with.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// A scratch directory of this podman's (removed with it) for build contexts and volumes.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.path().join("work").join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(dir)
    }

    /// `podman build -f containerfile -t tag [--build-arg K=V]... context`.
    pub fn build(
        &self,
        containerfile: &Path,
        context: &Path,
        tag: &str,
        build_args: &[(&str, &str)],
    ) -> Result<BuiltImage> {
        let t0 = Instant::now();
        let mut cmd = self.cmd();
        cmd.args(["build", "--pull=never", "--network", "none", "-f"])
            .arg(containerfile)
            .args(["-t", tag]);
        for (k, v) in build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        cmd.arg(context);
        crate::run_with_timeout(&mut without_blob_cache(&cmd), Duration::from_secs(300))?
            .ensure_success_of("podman build")?;
        let took = t0.elapsed();
        let size = super::cli(
            self.cmd()
                .args(["image", "inspect", "--format", "{{.Size}}", tag]),
        )?;
        let size = size
            .stdout
            .trim()
            .parse()
            .with_context(|| format!("image size {:?}", size.stdout))?;
        Ok(BuiltImage {
            tag: tag.to_string(),
            size,
            took,
        })
    }

    /// `podman run -d --name NAME --network host <podman args> IMAGE <args>`, with the file and
    /// process limits of this process (podman would raise them, which needs CAP_SYS_RESOURCE).
    /// Returns the container id.
    pub fn run_detached(
        &self,
        name: &str,
        podman_args: &[String],
        image: &str,
        args: &[String],
    ) -> Result<String> {
        let mut limit = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 1024,
        };
        // SAFETY: getrlimit writes into the valid rlimit above.
        let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_max.min(1 << 20)
        } else {
            1024
        };
        let mut cmd = self.cmd();
        cmd.args(["run", "-d", "--name", name, "--network", "host"])
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            // Root (uid 0 of the host) is exempt from RLIMIT_NPROC; the value only has to be
            // one this process may set.
            .arg("--ulimit=nproc=4096:4096")
            .args(podman_args)
            .arg(image)
            .args(args);
        self.containers
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?
            .push(name.to_string());
        let out = super::cli(&mut cmd)?;
        Ok(out.stdout.trim().to_string())
    }

    /// `podman inspect --format FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> Result<String> {
        let out = super::cli(self.cmd().args(["inspect", "--format", format, name]))?;
        Ok(out.stdout.trim().to_string())
    }

    /// Whether the container is running.
    pub fn running(&self, name: &str) -> bool {
        self.inspect(name, "{{.State.Running}}")
            .is_ok_and(|s| s == "true")
    }

    /// The container's stdout and stderr so far.
    pub fn logs(&self, name: &str) -> String {
        match crate::run_with_timeout(self.cmd().args(["logs", name]), CLI_TIMEOUT) {
            Ok(out) => format!("{}{}", out.stdout, out.stderr),
            Err(e) => format!("<podman logs {name}: {e:#}>"),
        }
    }

    /// `podman stop -t SECS NAME` (SIGTERM, SIGKILL after SECS); returns the exit code.
    pub fn stop(&self, name: &str, secs: u64) -> Result<i64> {
        super::cli(self.cmd().args(["stop", "-t", &secs.to_string(), name]))?;
        let code = self.inspect(name, "{{.State.ExitCode}}")?;
        code.parse().with_context(|| format!("exit code {code:?}"))
    }

    /// Removes the container (killing it if needed).
    pub fn remove(&self, name: &str) -> Result<()> {
        super::cli(self.cmd().args(["rm", "-f", "-t", "0", name]))?;
        if let Ok(mut list) = self.containers.lock() {
            list.retain(|c| c != name);
        }
        Ok(())
    }

    /// The last lines of a file in the scratch directory (for messages).
    pub fn tail(&self, path: &Path) -> String {
        log_tail(path, 40)
    }
}

/// `cmd` run in a mount namespace of its own with an empty tmpfs over `/var/lib/containers`
/// (or `/var/lib` when that does not exist): `podman build` keeps a blob-info cache there
/// whatever its storage configuration says. The built image is in the private store.
fn without_blob_cache(cmd: &Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(
            "if [ -d /var/lib/containers ]; then d=/var/lib/containers; else d=/var/lib; fi; \
             mount -t tmpfs -o mode=0700 tmpfs \"$d\" && exec \"$@\"",
        )
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

impl Drop for Podman {
    fn drop(&mut self) {
        let names = self
            .containers
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for name in names {
            let _ = crate::run_with_timeout(
                self.cmd().args(["rm", "-f", "-t", "0", &name]),
                CLI_TIMEOUT,
            );
        }
        let _ = crate::run_with_timeout(self.cmd().args(["rmi", "-a", "-f"]), CLI_TIMEOUT);
        let needle = self.scratch.path().display().to_string();
        proc::kill_leftovers(&needle, &["conmon", "podman", "runc", "crun"]);
    }
}

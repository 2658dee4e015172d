//! A Debian 12 root booted with `systemd-nspawn -b`: a real systemd as PID 1, for the package
//! and unit tests (tests/tests/systemd.rs).
//!
//! What the container needs to run egret (found on this machine: a hybrid cgroup host whose
//! PID 1 is not systemd, no systemd-machined):
//! - `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`: the container gets a pure cgroup v2 tree (the host's
//!   is hybrid), which egret attaches to; nspawn itself runs in a [`TestCgroup`] of the host's
//!   cgroup2 mount, so the container's tree is `<that cgroup>/payload` and is killed and removed
//!   with it.
//! - `--register=no --keep-unit`: no machined, no transient scope (there is no system bus).
//! - `--capability=CAP_BPF,CAP_PERFMON,CAP_SYS_RAWIO` and
//!   `--system-call-filter='bpf perf_event_open'`: nspawn's default bounding set and seccomp
//!   filter refuse BPF (`failed to create map: Operation not permitted`). CAP_SYS_RAWIO lets the
//!   container's systemd mount tracefs itself (`sys-kernel-tracing.mount` has
//!   `ConditionCapability=CAP_SYS_RAWIO`): a bind mount of the host's /sys/kernel/tracing is
//!   hidden under the sysfs nspawn mounts on /sys/kernel afterwards.
//! - a bpffs of its own on /sys/fs/bpf (a fresh instance mounted in the scratch directory), so
//!   pins in the container never meet the host's.
//! - `--volatile=overlay`: the cached root is the read-only lower layer of a tmpfs overlay, so
//!   every boot starts from the same files and the cache is never written.
//! - `--private-network`: only loopback; the container's egret cannot take a port of the host.
//!
//! Commands run inside with `nsenter --all` into the container's PID 1 namespaces;
//! processes whose connections egret must see run as transient units (`systemd-run`) so they
//! are in the container's cgroup tree.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{ScratchDir, TestCgroup};

/// How long systemd may take to boot the container.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh bpffs instance mounted on a scratch directory, unmounted on drop.
struct BpfFs(PathBuf);

impl BpfFs {
    fn mount(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mount -t bpf bpf {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A booted container. Dropping it powers it off (killing it after a grace period), then
/// removes its cgroup, its bpffs and its scratch directory.
pub struct Machine {
    nspawn: Option<Child>,
    leader: u32,
    /// Field order is drop order after [`Drop::drop`]: the cgroup (killing what is left),
    /// the bpffs, then the scratch directory holding both.
    cgroup: Option<TestCgroup>,
    bpffs: Option<BpfFs>,
    scratch: ScratchDir,
    console: PathBuf,
}

impl Machine {
    /// Boots `root` with `binds` (host path, container path) mounted read-only.
    pub fn boot(root: &Path, binds: &[(&Path, &str)]) -> Result<Self> {
        let scratch = ScratchDir::create("nspawn")?;
        let bpffs = BpfFs::mount(scratch.path().join("bpffs"))?;
        let cgroup = TestCgroup::create("nspawn")?;
        let console = scratch.path().join("console.log");
        let mut command = Command::new("systemd-nspawn");
        command
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
            ])
            .args(["--private-network", "--machine=egret-e2e"])
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_SYS_RAWIO")
            .arg("--system-call-filter=bpf perf_event_open")
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.0.display()))
            .arg("--directory")
            .arg(root);
        for (host, inside) in binds {
            command.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        command
            .arg("--boot")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console)?)
            .stderr(std::fs::File::create(scratch.path().join("nspawn.err"))?);
        cgroup.command(&mut command)?;
        let nspawn = command.spawn().context("spawn systemd-nspawn")?;
        let mut machine = Self {
            nspawn: Some(nspawn),
            leader: 0,
            cgroup: Some(cgroup),
            bpffs: Some(bpffs),
            scratch,
            console,
        };
        machine.leader = machine.wait_for_leader()?;
        machine.wait_booted()?;
        Ok(machine)
    }

    /// The container's PID 1, as the host sees it: the process in `payload/init.scope`.
    fn wait_for_leader(&mut self) -> Result<u32> {
        let procs = self
            .cgroup
            .as_ref()
            .context("no cgroup")?
            .path()
            .join("payload/init.scope/cgroup.procs");
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(pid) = std::fs::read_to_string(&procs)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                return Ok(pid);
            }
            if let Some(status) = self
                .nspawn
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "systemd-nspawn exited ({status}) before the boot\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the container did not start within {BOOT_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `systemctl is-system-running` says `running` (or `degraded`: a unit of the
    /// minimal root that cannot run in a container is not this test's business).
    fn wait_booted(&self) -> Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        // Until systemd listens on its bus, systemctl fails at once ("Failed to connect").
        let out = loop {
            let out = self.sh(&format!(
                "timeout {} systemctl is-system-running --wait",
                BOOT_TIMEOUT.as_secs()
            ))?;
            if !out.stdout.is_empty() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state == "running" || state == "degraded" {
            return Ok(());
        }
        let failed = self.sh("systemctl --failed --no-legend --no-pager")?;
        bail!(
            "the container's systemd is {state:?} ({}); failed units:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&failed.stdout),
            self.logs()
        )
    }

    /// Runs `args` inside the container (all its namespaces, as root); returns what it did.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .arg("--all")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("nsenter {args:?}"))
    }

    /// `sh -c SCRIPT` inside the container.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// `sh -c SCRIPT` inside the container, which must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> Result<String> {
        let out = self.sh(script)?;
        if !out.status.success() {
            bail!(
                "in the container `{script}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The console (boot messages) and nspawn's own messages, for a failure's context.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let console = read(&self.console);
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        format!(
            "--- console (last 30 lines)\n{}\n--- systemd-nspawn\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            read(&self.scratch.path().join("nspawn.err"))
        )
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // A clean shutdown (egret detaches and flushes); killed if it takes too long.
            let _ = self.sh("systemctl poweroff --no-block");
            let deadline = Instant::now() + Duration::from_secs(20);
            while nspawn.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        // The cgroup's drop kills anything left in the container's tree and removes it.
        drop(self.cgroup.take());
        drop(self.bpffs.take());
    }
}

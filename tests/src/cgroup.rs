//! Test-owned cgroup v2 directories.

use anyhow::{bail, ensure, Context, Result};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The cgroup v2 mount point of this machine, from `/proc/self/mounts` (the agent's own
/// parser, so the tests and egret agree on where cgroups live).
pub fn cgroup2_mount() -> Result<PathBuf> {
    Ok(egret::cgroup::cgroup2_mount()?)
}

fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "invalid cgroup name {name:?}"
    );
    Ok(())
}

/// A cgroup created by a test under the cgroup2 mount. Dropping it kills every
/// process in it (and its descendants) and removes the directories.
#[derive(Debug)]
pub struct TestCgroup {
    mount: PathBuf,
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/egret-e2e-<name>-<pid>-<counter>`.
    pub fn create(name: &str) -> Result<Self> {
        check_name(name)?;
        let mount = cgroup2_mount()?;
        let dir = mount.join(format!("egret-e2e-{name}-{}", crate::unique_suffix()));
        Self::mkdir(mount, dir)
    }

    /// Creates a sub-cgroup `<self>/<name>` (the name is used as is, so it can
    /// look like a systemd unit, e.g. `egret-e2e-3.service`).
    pub fn child(&self, name: &str) -> Result<Self> {
        check_name(name)?;
        Self::mkdir(self.mount.clone(), self.path.join(name))
    }

    fn mkdir(mount: PathBuf, path: PathBuf) -> Result<Self> {
        ensure!(
            path != mount && path.starts_with(&mount),
            "refusing to use {} as a test cgroup (cgroup2 mount is {})",
            path.display(),
            mount.display()
        );
        std::fs::create_dir(&path).with_context(|| format!("mkdir cgroup {}", path.display()))?;
        Ok(Self { mount, path })
    }

    /// Absolute path of the cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Last path component (the name the directory was created with).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Path relative to the cgroup2 mount, starting with `/` (as egret reports it).
    pub fn relative_path(&self) -> String {
        let rel = self.path.strip_prefix(&self.mount).unwrap_or(&self.path);
        format!("/{}", rel.display())
    }

    /// The cgroup id, which is the inode number of the cgroup directory.
    pub fn id(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)
            .with_context(|| format!("stat {}", self.path.display()))?
            .ino())
    }

    /// The pids currently in this cgroup (not its descendants).
    pub fn procs(&self) -> Result<Vec<i32>> {
        read_procs(&self.path)
    }

    /// Makes `cmd` move itself into this cgroup (by writing `0` to
    /// `cgroup.procs`) between fork and exec. Register this before any other
    /// `pre_exec` hook that drops privileges.
    pub fn command<'a>(&self, cmd: &'a mut Command) -> Result<&'a mut Command> {
        let procs = self.path.join("cgroup.procs");
        // Opened here, by root, so the write in the child uses open-time credentials
        // and needs no allocation.
        let file = OpenOptions::new()
            .write(true)
            .open(&procs)
            .with_context(|| format!("open {}", procs.display()))?;
        // SAFETY: the hook only calls write(2), which is async-signal-safe; it
        // allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                let buf = b"0";
                let n = libc::write(file.as_raw_fd(), buf.as_ptr().cast(), buf.len());
                if n == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        Ok(cmd)
    }
}

fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}/cgroup.procs", dir.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<i32>()
                .with_context(|| format!("bad pid {l:?}"))
        })
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in `dir` and its descendants; waits until they are gone.
fn kill_all(mount: &Path, dir: &Path) -> Result<()> {
    if dir == mount || !dir.starts_with(mount) {
        bail!("refusing to kill processes of {}", dir.display());
    }
    // cgroup.kill (5.14+) kills the whole subtree atomically; fall back to kill(2).
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut any = false;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for pid in read_procs(&d)? {
                any = true;
                if pid > 0 && u32::try_from(pid).ok() != Some(std::process::id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            stack.extend(subdirs(&d));
        }
        if !any {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes are still in {} after SIGKILL", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes `dir` and its sub-cgroups, deepest first, retrying briefly on EBUSY.
fn remove_tree(mount: &Path, dir: &Path) -> Result<()> {
    if dir == mount || !dir.starts_with(mount) {
        bail!("refusing to remove {}", dir.display());
    }
    for sub in subdirs(dir) {
        remove_tree(mount, &sub)?;
    }
    remove_cgroup_dir(dir)
}

/// Removes one empty cgroup directory (already gone is fine), retrying for up to 5 s while
/// the kernel still reports it busy (its last processes are still exiting).
pub(crate) fn remove_cgroup_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("rmdir {}", dir.display())),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        if let Err(e) =
            kill_all(&self.mount, &self.path).and_then(|()| remove_tree(&self.mount, &self.path))
        {
            eprintln!(
                "egret-e2e: cleaning up cgroup {}: {e:#}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("egret-e2e-1.service").is_ok());
    }
}

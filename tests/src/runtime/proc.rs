//! Processes, mounts and cgroup v1 copies: what the runtimes leave behind and how it is found.

use anyhow::{bail, Context, Result};
use egret::cgroup::{mount_points_of_type, unescape_mount_field};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/<pid>/cgroup`), e.g.
/// `/egret-e2e-ctr-1-0/kubepods/besteffort/pod<uid>/<id>`.
pub fn cgroup_v2_path(pid: u32) -> Result<String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .with_context(|| format!("no cgroup v2 (0::) line in {path}:\n{text}"))
}

/// Whether `pid` exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Pids of the processes whose command line contains `needle` and whose name (`comm`)
/// starts with one of `comms` (never this process).
pub(crate) fn pids_with_cmdline(needle: &str, comms: &[&str]) -> Vec<i32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| comms.iter().any(|p| c.trim().starts_with(p)))
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// SIGKILLs the processes named `comms*` whose command line contains `needle` (daemons and
/// shims a runtime of this test started, found by its private scratch path; egret, whose
/// command line may name the same socket, is not among the names) and waits briefly until
/// they are gone.
pub(crate) fn kill_leftovers(needle: &str, comms: &[&str]) {
    let pids = pids_with_cmdline(needle, comms);
    for &pid in &pids {
        eprintln!("egret-e2e: killing leftover runtime process {pid} ({needle})");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| u32::try_from(p).is_ok_and(pid_alive)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points at or below `dir`, deepest first.
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    mount_points_below(&mountinfo, dir)
}

/// The mount points (field 5, decoded by the agent's parser) in `/proc/self/mountinfo` text
/// that are at or below `dir`, deepest first.
fn mount_points_below(mountinfo: &[u8], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            line.split(u8::is_ascii_whitespace)
                .filter(|field| !field.is_empty())
                .nth(4)
        })
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything mounted at or below `dir` (container root filesystems,
/// overlay snapshots, shm), deepest first, repeating for stacked mounts.
pub(crate) fn unmount_below(dir: &Path) {
    for _ in 0..8 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("egret-e2e: umount {}: {e}", m.display());
            }
        }
    }
}

/// The mount points of the cgroup v1 hierarchies (`cgroup` file system type).
fn cgroup_v1_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read("/proc/self/mounts").unwrap_or_default();
    mount_points_of_type(&mounts, "cgroup").collect()
}

/// On a hybrid host runc creates a container's cgroup path in every cgroup v1 hierarchy
/// too (`/sys/fs/cgroup/memory/<test cgroup>/kubepods/...`), and nobody removes the parents.
/// This guard removes the v1 copies of one test cgroup's path on drop; declare it before the
/// runtime so that it drops after the containers are gone.
#[derive(Debug)]
pub struct V1Mirrors {
    rel: PathBuf,
}

impl V1Mirrors {
    /// `rel`: the test cgroup's path relative to the cgroup root (`/egret-e2e-...`).
    pub fn new(rel: &str) -> Result<Self> {
        let rel = PathBuf::from(rel.trim_start_matches('/'));
        let ok = rel.components().count() >= 1
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            && rel.to_string_lossy().starts_with("egret-e2e-");
        if !ok {
            bail!("refusing to manage cgroup v1 copies of {}", rel.display());
        }
        Ok(Self { rel })
    }

    /// For a test cgroup.
    pub fn of(cgroup: &crate::TestCgroup) -> Result<Self> {
        Self::new(&cgroup.relative_path())
    }

    /// The v1 directories of this cgroup that exist now.
    pub fn existing(&self) -> Vec<PathBuf> {
        cgroup_v1_mounts()
            .into_iter()
            .map(|m| m.join(&self.rel))
            .filter(|d| d.is_dir())
            .collect()
    }
}

fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    // Whatever is still in it (a process that escaped the runtime's cleanup) goes first.
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if u32::try_from(pid).ok() != Some(std::process::id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    crate::cgroup::remove_cgroup_dir(dir)
}

impl Drop for V1Mirrors {
    fn drop(&mut self) {
        for dir in self.existing() {
            if let Err(e) = remove_cgroup_tree(&dir) {
                eprintln!(
                    "egret-e2e: removing cgroup v1 copy {}: {e:#}",
                    dir.display()
                );
            }
        }
    }
}

/// Stops a daemon started by a runtime harness: SIGTERM, then SIGKILL after
/// [`super::DAEMON_STOP_TIMEOUT`].
pub fn stop_daemon(mut child: std::process::Child, name: &str) {
    use std::time::{Duration, Instant};
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + super::DAEMON_STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                eprintln!(
                    "egret-e2e: {name} did not stop within {:?}; killing it",
                    super::DAEMON_STOP_TIMEOUT
                );
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        let mountinfo = br"22 1 0:21 / /tmp/a\040b rw - tmpfs tmpfs rw
23 22 0:22 / /tmp/a\040b/c rw - tmpfs tmpfs rw
24 1 0:23 / /tmp/x\\y rw - tmpfs tmpfs rw
25 1 0:24 / /plain rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_points_below(mountinfo, Path::new("/tmp/a b")),
            [PathBuf::from("/tmp/a b/c"), PathBuf::from("/tmp/a b")]
        );
        assert_eq!(
            mount_points_below(mountinfo, Path::new(r"/tmp/x\\y")),
            [PathBuf::from(r"/tmp/x\\y")]
        );
        assert_eq!(
            mount_points_below(mountinfo, Path::new("/plain")),
            [PathBuf::from("/plain")]
        );
    }

    #[test]
    fn v1_mirrors_only_for_test_cgroups() {
        assert!(V1Mirrors::new("/egret-e2e-ctr-1-0").is_ok());
        assert!(V1Mirrors::new("/").is_err());
        assert!(V1Mirrors::new("/system.slice").is_err());
        assert!(V1Mirrors::new("/egret-e2e-x/../y").is_err());
    }
}

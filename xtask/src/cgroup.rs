//! A throw-away cgroup v2 directory for the benchmark load generators.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PREFIX: &str = "egret-bench-";

/// `<cgroup2 mount>/egret-bench-<pid>`, removed (members killed) on drop.
pub struct BenchCgroup {
    path: PathBuf,
}

impl BenchCgroup {
    /// Creates the cgroup, first removing ones left behind by dead bench runs.
    pub fn create() -> Result<Self> {
        let mounts =
            std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        let mount = parse_cgroup2_mount(&mounts).context("no cgroup2 filesystem is mounted")?;
        remove_stale(&mount);
        let path = mount.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {}", path.display()))?;
        eprintln!("xtask: bench cgroup {}", path.display());
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `command`'s child join this cgroup before it execs.
    pub fn place_child(&self, command: &mut Command) -> Result<()> {
        let procs = CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())?;
        // SAFETY: the closure only calls async-signal-safe functions (open/write/close).
        unsafe { command.pre_exec(move || join_cgroup(&procs)) };
        Ok(())
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Err(err) = destroy(&self.path) {
            eprintln!(
                "xtask: warning: cannot remove {}: {err:#}",
                self.path.display()
            );
        }
    }
}

/// Writes "0" (= the calling process) into `cgroup.procs`; runs between fork and exec.
fn join_cgroup(procs: &CStr) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the fd we own.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the fd opened above exactly once.
    unsafe { libc::close(fd) };
    result
}

/// The mount point of the first `cgroup2` filesystem in `/proc/self/mounts` text.
fn parse_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(target)))
    })
}

/// Undoes the octal escapes (`\040` = space) used in `/proc/self/mounts`.
fn unescape_mount_path(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('\\') {
        out.push_str(rest.get(..pos).unwrap_or_default());
        let escape = rest
            .get(pos + 1..pos + 4)
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match escape {
            Some(byte) => {
                out.push(char::from(byte));
                rest = rest.get(pos + 4..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                rest = rest.get(pos + 1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes `egret-bench-<pid>` cgroups whose xtask process no longer exists.
fn remove_stale(mount: &Path) {
    let Ok(entries) = std::fs::read_dir(mount) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        eprintln!("xtask: removing stale cgroup {}", entry.path().display());
        if let Err(err) = destroy(&entry.path()) {
            eprintln!("xtask: warning: {err:#}");
        }
    }
}

/// Kills every member, then removes the directory (retrying while the kernel reaps them).
fn destroy(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        kill_members(path)?;
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("rmdir {}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn kill_members(path: &Path) -> Result<()> {
    let procs = match std::fs::read_to_string(path.join("cgroup.procs")) {
        Ok(procs) => procs,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).context("reading cgroup.procs"),
    };
    for pid in parse_pids(&procs) {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    Ok(())
}

fn parse_pids(procs: &str) -> Vec<i32> {
    procs
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            parse_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup2_mount("cgroup /a cgroup rw 0 0\n"), None);
    }

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(unescape_mount_path(r"/mnt/my\040cgroup"), "/mnt/my cgroup");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/odd\x"), r"/odd\x");
    }

    #[test]
    fn parses_pids() {
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
    }
}

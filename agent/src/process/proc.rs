//! A process read from `/proc`: for processes that started before egret (the seed) and those
//! whose events were missed. What cannot be known this way is documented in docs/events.md
//! (the arguments as they were at exec, a working directory since changed).

use std::{fs, os::unix::fs::MetadataExt};

use agent_common::{task::UNSET_ID, ExeId, TaskIdentity};

use super::{basename, image::read_cmdline, ProcessInfo};

/// Reads one process; `None` if it is gone or is a kernel thread (no executable).
pub(super) fn read(pid: u32) -> Option<ProcessInfo> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let exe_link = process.exe().ok().map(|p| p.to_string_lossy().into_owned());
    let (executable, fileless) = match exe_link.as_deref() {
        Some(link) => {
            let path = link.strip_suffix(" (deleted)").unwrap_or(link);
            match path.strip_prefix("/memfd:") {
                Some(memfd) => (Some(format!("memfd:{memfd}")), true),
                None => (Some(path.to_owned()), false),
            }
        }
        None => (None, false),
    };
    let name = match executable.as_deref() {
        Some(exe) if fileless => exe.to_owned(),
        Some(exe) => basename(exe).to_owned(),
        None => stat.comm.clone(),
    };
    let ticks = procfs::ticks_per_second().max(1);
    let mut info = ProcessInfo {
        ppid: u32::try_from(stat.ppid).ok(),
        executable,
        name,
        args: read_cmdline(pid).unwrap_or_default(),
        start_ns: Some(stat.starttime.saturating_mul(1_000_000_000) / ticks),
        exe_id: exe_id(pid),
        fileless,
        ..ProcessInfo::from_comm(pid, &stat.comm)
    };
    let status = process.status().ok();
    let (uid, euid, gid, egid) = match &status {
        Some(s) => (s.ruid, s.euid, s.rgid, s.egid),
        None => (UNSET_ID, UNSET_ID, UNSET_ID, UNSET_ID),
    };
    let id_file = |name: &str| -> u32 {
        fs::read_to_string(format!("/proc/{pid}/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(UNSET_ID)
    };
    let identity = TaskIdentity {
        loginuid: id_file("loginuid"),
        sessionid: id_file("sessionid"),
        uid,
        euid,
        gid,
        egid,
        sid: u32::try_from(stat.session).unwrap_or(0),
        tty: tty_dev(stat.tty_nr),
    };
    info.set_identity(&identity);
    if status.is_none() {
        info.creds = None;
    }
    Some(info)
}

/// `/proc/PID/stat`'s `tty_nr` (userspace `dev_t` encoding) as the kernel's `major << 20 |
/// minor`; 0 for none.
fn tty_dev(tty_nr: i32) -> u32 {
    let nr = tty_nr as u32;
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    (major << 20) | minor
}

/// The identity of the file `/proc/PID/exe` links to, in the kernel's encoding.
pub(crate) fn exe_id(pid: u32) -> Option<ExeId> {
    let meta = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(ExeId {
        dev: kernel_dev(meta.dev()),
        generation: 0,
        ino: meta.ino(),
    })
}

/// A userspace `dev_t` (`stat.st_dev`) as the kernel's internal `major << 20 | minor`.
pub(crate) fn kernel_dev(dev: u64) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (major << 20) | (minor & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_numbers_in_the_kernels_encoding() {
        // pts/3: major 136, minor 3; tty_nr = 136 << 8 | 3.
        assert_eq!(tty_dev(136 << 8 | 3), 136 << 20 | 3);
        // pts/300: minor 300 = 0x12c, high bits of the minor above the major.
        assert_eq!(tty_dev((0x1 << 20) | (136 << 8) | 0x2c), 136 << 20 | 300);
        assert_eq!(tty_dev(0), 0);
    }

    #[test]
    fn this_process_from_proc() {
        let me = read(std::process::id()).expect("this process");
        assert!(me.executable.is_some());
        assert!(me.exe_id.is_some());
        let creds = me.creds.expect("creds");
        assert_eq!(creds.uid, nix::unistd::getuid().as_raw());
        assert_eq!(creds.euid, nix::unistd::geteuid().as_raw());
        // A session whose leader is outside this pid namespace reads as 0 (CI runs in one),
        // and 0 means "not known" to egret.
        let sid = u32::try_from(nix::unistd::getsid(None).expect("sid").as_raw()).ok();
        assert_eq!(me.sid, sid.filter(|&sid| sid != 0));
    }
}

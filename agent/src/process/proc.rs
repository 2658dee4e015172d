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

/// The owner and mode of the file process `pid` runs: `/proc/PID/exe` (the file itself, even
/// deleted or replaced since), else, when the process is gone, the file at `executable` when
/// it is the same file as `exe_id` (a path can be made to point elsewhere since). `None` when
/// neither can be told, or `/proc/PID/exe` is another file than `exe_id` (the pid was reused).
pub(crate) fn exe_file(
    pid: u32,
    executable: Option<&str>,
    exe_id: Option<ExeId>,
) -> Option<super::lineage::ExeFile> {
    let (meta, own_link) = match fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(meta) => (meta, true),
        Err(_) => (fs::metadata(executable?).ok()?, false),
    };
    let same = exe_id.map(|id| id.dev == kernel_dev(meta.dev()) && id.ino == meta.ino());
    same.unwrap_or(own_link).then_some(super::lineage::ExeFile {
        uid: meta.uid(),
        mode: meta.mode(),
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

    /// The file a process runs, by its own link, or by its path when that is still the file
    /// the kernel named; a path now naming another file, or a link to another file than the
    /// kernel's, is not the process's.
    #[test]
    fn the_executable_file_of_a_process() {
        let me = std::process::id();
        let exe = std::env::current_exe().expect("own executable");
        let meta = fs::metadata(&exe).expect("stat own executable");
        let own = exe_id(me);
        let file = exe_file(me, None, own).expect("own link");
        assert_eq!((file.uid, file.mode), (meta.uid(), meta.mode()));
        assert!(exe_file(me, None, None).is_some(), "own link, no kernel id");
        let other = ExeId {
            ino: meta.ino() + 1,
            ..own.expect("own id")
        };
        assert!(exe_file(me, None, Some(other)).is_none(), "reused pid");
        // A process that is gone: its path, when it is still the same file.
        const GONE: u32 = u32::MAX - 1;
        let path = exe.to_str();
        assert!(exe_file(GONE, path, own).is_some());
        assert!(exe_file(GONE, path, Some(other)).is_none(), "path replaced");
        assert!(
            exe_file(GONE, path, None).is_none(),
            "nothing to check it by"
        );
        assert!(exe_file(GONE, None, own).is_none());
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

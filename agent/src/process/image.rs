//! What an exec runs, named from the kernel's exec event ([`ExecImage`]): the executable by its
//! real path (walked up from the file by the kernel, so a relative path, a symbolic link, a
//! `/proc/self/exe` re-exec or `fexecve` of a file all name the file itself), the arguments the
//! kernel laid out for the new image (for a `#!` script, the interpreter's, with the script),
//! and fileless images (a memfd) named as such.

use std::{fs, path::Path};

use agent_common::{
    task::{
        EXEC_FLAG_ARGS_TRUNCATED, EXEC_FLAG_EXE_FOREIGN_NS, EXEC_FLAG_EXE_INTERNAL,
        EXEC_FLAG_EXE_PATH_CUT, EXEC_FLAG_NO_OFFSETS, EXEC_FLAG_READ_FAILED,
    },
    ExeId, ExecEvent, TaskIdentity, EXEC_FLAG_PATH_TRUNCATED,
};

use super::{basename, split_nul};

/// An exec as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecImage {
    /// The path the exec named (`bprm->filename`): as the caller wrote it.
    pub filename: String,
    /// The executable's path components from the root down, when the kernel walked all of them.
    pub exe_path: Option<Vec<String>>,
    /// The walk ended outside any mount namespace: a memfd or another anonymous file.
    pub exe_internal: bool,
    /// The walk ended at the root of a mount namespace other than the process's own (a file
    /// reached through `/proc/PID/root`, or a descriptor from another namespace): the path
    /// names a file there, not the file of that path here, so it names nothing.
    pub exe_foreign: bool,
    pub exe_id: Option<ExeId>,
    pub args: Vec<String>,
    pub args_truncated: bool,
    /// The kernel could not read the arguments (or had no offsets to find them).
    pub args_unread: bool,
    pub identity: TaskIdentity,
}

impl ExecImage {
    pub fn from_event(ev: &ExecEvent) -> Self {
        let ExecEvent {
            header: _,
            old_tid: _,
            filename_len,
            flags,
            args_len,
            identity,
            exe,
            exe_depth,
            exe_mnt_ns: _,
            exe_name_lens,
            filename,
            exe_names,
            args,
        } = ev;
        let depth = *exe_depth as usize;
        let whole = flags & (EXEC_FLAG_EXE_PATH_CUT | EXEC_FLAG_NO_OFFSETS) == 0 && depth > 0;
        // A directory entry always has a name: a walk with an empty one is not a path.
        let exe_path = whole
            .then(|| {
                exe_names
                    .iter()
                    .zip(exe_name_lens)
                    .take(depth)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .map(|(name, len)| {
                        String::from_utf8_lossy(filled(name, u32::from(*len))).into_owned()
                    })
                    .collect::<Vec<String>>()
            })
            .filter(|path| path.iter().all(|name| !name.is_empty()));
        let args_bytes = filled(args, *args_len);
        Self {
            filename: String::from_utf8_lossy(filled(filename, *filename_len)).into_owned(),
            exe_path,
            exe_internal: flags & EXEC_FLAG_EXE_INTERNAL != 0,
            exe_foreign: flags & EXEC_FLAG_EXE_FOREIGN_NS != 0,
            exe_id: (*exe != ExeId::default()).then_some(*exe),
            args: split_nul(args_bytes),
            args_truncated: flags & (EXEC_FLAG_ARGS_TRUNCATED | EXEC_FLAG_PATH_TRUNCATED) != 0,
            args_unread: args_bytes.is_empty()
                && flags & (EXEC_FLAG_READ_FAILED | EXEC_FLAG_NO_OFFSETS) != 0,
            identity: *identity,
        }
    }
}

/// The part of a record's byte array the kernel filled: its first `len` bytes (all of it, if
/// `len` says more).
pub(crate) fn filled(bytes: &[u8], len: u32) -> &[u8] {
    bytes.get(..len as usize).unwrap_or(bytes)
}

/// How egret names an exec's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub executable: Option<String>,
    pub name: String,
    pub args: Vec<String>,
    pub args_truncated: bool,
    /// The kernel had no arguments: they were read from `/proc`.
    pub args_from_proc: bool,
    pub fileless: bool,
    pub script: Option<String>,
}

/// Names the process `pid` that exec'd `image` (`comm`: the kernel's name for it, the last
/// resort).
pub fn name(pid: u32, image: &ExecImage, comm: &str) -> Named {
    let (executable, fileless) = executable(pid, image);
    let (args, args_from_proc) = if image.args_unread {
        (read_cmdline(pid).unwrap_or_default(), true)
    } else {
        (image.args.clone(), false)
    };
    let name = match executable.as_deref() {
        Some(exe) if fileless => exe.to_owned(),
        Some(exe) if !basename(exe).is_empty() => basename(exe).to_owned(),
        // Another mount namespace's file: the kernel's name, not a path chosen here.
        None if image.exe_foreign => comm.to_owned(),
        _ => name_without_executable(image, &args, comm),
    };
    let script = script(pid, image, &args, &name);
    Named {
        executable,
        name,
        args,
        args_truncated: image.args_truncated,
        args_from_proc,
        fileless,
        script,
    }
}

/// The name of a process whose executable is unknown (the kernel's walk was cut and the
/// process is gone): the basename of the path the exec named, unless that was a descriptor
/// link (`/proc/self/exe`, `/proc/self/fd/3`, `/dev/fd/3`: its basename, and the kernel's
/// `comm` made from it, say nothing of the program), else the basename of `args[0]`, else the
/// `comm`; empty (the line leaves `process.name` out) rather than a link's basename such as
/// `exe`.
fn name_without_executable(image: &ExecImage, args: &[String], comm: &str) -> String {
    let named = image.filename.as_str();
    let via_link = named.starts_with("/proc/") || named.starts_with("/dev/fd/");
    let usable = |name: &&str| !name.is_empty() && *name != "." && *name != "..";
    if !via_link {
        if let Some(base) = Some(basename(named)).filter(usable) {
            return base.to_owned();
        }
    }
    let arg0 = args.first().map(|a| basename(a)).filter(usable);
    if let Some(base) = arg0.filter(|b| !via_link || *b != basename(named)) {
        return base.to_owned();
    }
    if via_link || (named.is_empty() && comm == "exe") {
        return String::new();
    }
    comm.to_owned()
}

/// The executable's path and whether it is fileless: the kernel's walk, else what
/// `/proc/PID/exe` says while the process lives, else the path the exec named when absolute.
/// None for a file of another mount namespace: its path there is not a path here (and
/// `/proc/PID/exe` would print the same misleading text).
fn executable(pid: u32, image: &ExecImage) -> (Option<String>, bool) {
    if image.exe_foreign {
        return (None, false);
    }
    if let Some(components) = &image.exe_path {
        if image.exe_internal {
            // A memfd (`memfd:NAME`) or another file of no directory: its name is all there is.
            return (components.last().cloned(), true);
        }
        return (Some(format!("/{}", components.join("/"))), false);
    }
    if let Ok(link) = fs::read_link(format!("/proc/{pid}/exe")) {
        let link = link.to_string_lossy();
        let path = link.strip_suffix(" (deleted)").unwrap_or(&link);
        if let Some(memfd) = path.strip_prefix("/memfd:") {
            return (Some(format!("memfd:{memfd}")), true);
        }
        return (Some(path.to_owned()), false);
    }
    let named = image.filename.as_str();
    let usable =
        named.starts_with('/') && !named.starts_with("/proc/") && !named.starts_with("/dev/fd/");
    (usable.then(|| named.to_owned()), false)
}

/// The script a `#!` exec runs: the kernel puts the path the exec named right after the
/// interpreter (and its one optional argument) in the new argument vector.
fn script(pid: u32, image: &ExecImage, args: &[String], name: &str) -> Option<String> {
    let named = image.filename.as_str();
    if named.is_empty() || basename(named) == name {
        return None;
    }
    args.iter()
        .skip(1)
        .take(2)
        .any(|a| a == named)
        .then(|| absolute(pid, named))
}

/// `path` made absolute against the working directory of `pid` (as it is now: the best that
/// can be done once the exec happened), or as it is when that is gone.
fn absolute(pid: u32, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_owned();
    }
    match fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let relative = path.trim_start_matches("./");
            Path::new(&cwd)
                .join(relative)
                .to_string_lossy()
                .into_owned()
        }
        Err(_) => path.to_owned(),
    }
}

pub(super) fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(split_nul(&raw))
}

/// The exec of the absolute `path` with `args` by a task with `identity`, as the kernel
/// reports it (unit tests).
#[cfg(test)]
pub(crate) fn exec_of(path: &str, args: &[&str], identity: TaskIdentity) -> ExecImage {
    ExecImage {
        filename: path.to_owned(),
        exe_path: Some(
            path.split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        exe_internal: false,
        exe_foreign: false,
        exe_id: None,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        args_truncated: false,
        args_unread: false,
        identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has: nothing is read from `/proc`.
    const GONE: u32 = u32::MAX - 1;

    fn image(filename: &str, exe: &[&str], args: &[&str]) -> ExecImage {
        ExecImage {
            filename: filename.to_owned(),
            exe_path: Some(exe.iter().map(|s| (*s).to_owned()).collect()),
            exe_internal: false,
            exe_foreign: false,
            exe_id: None,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            args_truncated: false,
            args_unread: false,
            identity: TaskIdentity::default(),
        }
    }

    #[test]
    fn the_file_itself_whatever_path_the_exec_named() {
        for filename in [
            "/proc/self/exe",
            "./python3",
            "/usr/bin/python3",
            "/dev/fd/3",
        ] {
            let named = name(
                GONE,
                &image(filename, &["usr", "bin", "python3.13"], &["python3"]),
                "exe",
            );
            assert_eq!(
                named.executable.as_deref(),
                Some("/usr/bin/python3.13"),
                "{filename}"
            );
            assert_eq!(named.name, "python3.13");
            assert!(!named.fileless);
            assert_eq!(named.script, None);
        }
    }

    #[test]
    fn a_memfd_is_fileless_and_named_by_its_memfd_name() {
        let mut memfd = image("/dev/fd/3", &["memfd:payload"], &["payload"]);
        memfd.exe_internal = true;
        let named = name(GONE, &memfd, "3");
        assert_eq!(named.executable.as_deref(), Some("memfd:payload"));
        assert_eq!(named.name, "memfd:payload");
        assert!(named.fileless);
    }

    #[test]
    fn a_file_of_another_mount_namespace_is_not_named_by_its_path_there() {
        let mut foreign = image(
            "/proc/4242/root/usr/bin/curl",
            &["usr", "bin", "curl"],
            &["curl"],
        );
        foreign.exe_foreign = true;
        let named = name(GONE, &foreign, "curl-impostor");
        assert_eq!(named.executable, None);
        assert_eq!(named.name, "curl-impostor");
        assert!(!named.fileless);
    }

    #[test]
    fn a_script_runs_under_its_interpreter() {
        let script_exec = image(
            "/opt/run.sh",
            &["usr", "bin", "dash"],
            &["/bin/sh", "/opt/run.sh", "a"],
        );
        let named = name(GONE, &script_exec, "run.sh");
        assert_eq!(named.executable.as_deref(), Some("/usr/bin/dash"));
        assert_eq!(named.args, ["/bin/sh", "/opt/run.sh", "a"]);
        assert_eq!(named.script.as_deref(), Some("/opt/run.sh"));
        // With the interpreter's one argument: `#!/usr/bin/env python3`.
        let env = image(
            "/opt/x.py",
            &["usr", "bin", "env"],
            &["/usr/bin/env", "python3", "/opt/x.py"],
        );
        assert_eq!(
            name(GONE, &env, "x.py").script.as_deref(),
            Some("/opt/x.py")
        );
        // Not a script: the binary itself, even when an argument repeats its path.
        let plain = image("/bin/ls", &["usr", "bin", "ls"], &["ls", "/bin/ls"]);
        assert_eq!(name(GONE, &plain, "ls").script, None);
    }

    #[test]
    fn without_the_walk_an_absolute_named_path_is_used_but_never_a_proc_link() {
        let mut cut = image("/usr/bin/curl", &[], &["curl"]);
        cut.exe_path = None;
        assert_eq!(
            name(GONE, &cut, "curl").executable.as_deref(),
            Some("/usr/bin/curl")
        );
        cut.filename = "/proc/self/exe".into();
        let named = name(GONE, &cut, "curl");
        assert_eq!(named.executable, None);
        assert_eq!(named.name, "curl");
    }

    /// The kernel's walk was cut (a path of more than 16 components or a long name) and the
    /// process is gone: the name comes from the path the exec named or from `args[0]`, never
    /// from the `exe` (or `3`) comm a descriptor link gives.
    #[test]
    fn without_the_walk_or_the_process_the_name_is_never_the_links() {
        let cut = |filename: &str, args: &[&str]| {
            let mut image = image(filename, &[], args);
            image.exe_path = None;
            image
        };
        let reexec = cut("/proc/self/exe", &["/opt/deep/tool", "--serve"]);
        let named = name(GONE, &reexec, "exe");
        assert_eq!(named.executable, None);
        assert_eq!(named.name, "tool", "args[0]'s basename");
        assert_eq!(named.args, ["/opt/deep/tool", "--serve"]);
        // argv[0] that repeats the link is no better than it.
        assert_eq!(name(GONE, &cut("/proc/self/exe", &["exe"]), "exe").name, "");
        assert_eq!(name(GONE, &cut("/proc/self/exe", &[]), "exe").name, "");
        assert_eq!(name(GONE, &cut("/dev/fd/3", &[]), "3").name, "");
        assert_eq!(
            name(GONE, &cut("/proc/self/fd/4", &["run"]), "4").name,
            "run"
        );
        // A relative path (not made absolute: its directory is gone with the process) names
        // the file; so does an absolute one, beyond the comm's 15 characters.
        let relative = cut("./a-tool-with-a-long-name", &["x"]);
        assert_eq!(
            name(GONE, &relative, "a-tool-with-a-l").name,
            "a-tool-with-a-long-name"
        );
        // Nothing at all: the comm.
        assert_eq!(name(GONE, &cut("", &[]), "worker").name, "worker");
        assert_eq!(name(GONE, &cut("", &[]), "exe").name, "");
    }
}

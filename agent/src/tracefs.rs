//! tracefs: find (or mount) it, and check that the tracepoint fields the kernel programs read
//! are where the programs expect them.

use std::{fs, io, path::Path};

use agent_common::names::programs;

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0}; mount it with `mount -t tracefs tracefs /sys/kernel/tracing`")]
    Mount(nix::Error),
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: field `{field}` is at offset {found:?} size {found_size:?}, the kernel programs expect offset {offset} size {size}")]
    Layout {
        path: String,
        field: &'static str,
        offset: usize,
        size: usize,
        found: Option<usize>,
        found_size: Option<usize>,
    },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn is_populated(path: &Path) -> bool {
    fs::read_dir(path)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Returns the tracefs directory, mounting tracefs on `/sys/kernel/tracing` if no populated
/// one exists (aya looks in the same two places).
pub fn ensure_mounted() -> Result<&'static str, TracefsError> {
    if let Some(found) = CANDIDATES.into_iter().find(|p| is_populated(Path::new(p))) {
        return Ok(found);
    }
    let target = CANDIDATES[0];
    mount_pseudo_fs("tracefs", Path::new(target)).map_err(TracefsError::Mount)?;
    log::info!("mounted tracefs on {target}");
    Ok(target)
}

/// Mounts a kernel pseudo file system (`tracefs`, `bpf`) of type `fstype` on `target`.
pub(crate) fn mount_pseudo_fs(fstype: &str, target: &Path) -> nix::Result<()> {
    nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
}

/// A field of a tracepoint format: name → (offset, size).
pub fn field_layout(format: &str, field: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.trim().rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let num = |key: &str| -> Option<usize> {
            rest.split(';')
                .find_map(|part| part.trim().strip_prefix(key)?.trim().parse().ok())
        };
        Some((num("offset:")?, num("size:")?))
    })
}

/// A field the programs read: (name, offset, size).
pub type FieldLayout = (&'static str, usize, usize);

/// Fields the kernel programs read, by tracepoint: (category, event, fields).
pub const EXPECTED: &[(&str, &str, &[FieldLayout])] = &[
    ("sched", programs::SCHED_PROCESS_EXEC, PROCESS_EXEC),
    ("task", programs::TASK_NEWTASK, NEWTASK),
];
const PROCESS_EXEC: &[FieldLayout] = &[("filename", 8, 4), ("old_pid", 16, 4)];
const NEWTASK: &[FieldLayout] = &[("pid", 8, 4), ("clone_flags", 32, 8)];

/// Tracepoints that refine connection end lines (the exact failure of a connect). On a kernel
/// where one is missing or laid out differently, egret goes on without it: failures are then
/// reported as timeouts or aborts instead of "refused" / "host unreachable".
pub const OPTIONAL: &[(&str, &str, &[FieldLayout])] = &[
    ("tcp", programs::TCP_RECEIVE_RESET, RECEIVE_RESET),
    ("sock", programs::INET_SK_ERROR_REPORT, SK_ERROR_REPORT),
    ("syscalls", programs::SYS_EXIT_CONNECT, EXIT_CONNECT),
];
const RECEIVE_RESET: &[FieldLayout] = &[("sock_cookie", 64, 8)];
const SK_ERROR_REPORT: &[FieldLayout] = &[
    ("error", 8, 4),
    ("sport", 12, 2),
    ("dport", 14, 2),
    ("protocol", 18, 2),
];
const EXIT_CONNECT: &[FieldLayout] = &[("ret", 16, 8)];

/// Checks every tracepoint's format against [`EXPECTED`].
pub fn check_layouts(tracefs: &str) -> Result<(), TracefsError> {
    check(tracefs, EXPECTED)
}

/// Checks one tracepoint list; the error names the first field that does not match.
pub fn check(tracefs: &str, expected: &[(&str, &str, &[FieldLayout])]) -> Result<(), TracefsError> {
    for (category, event, fields) in expected {
        let path = format!("{tracefs}/events/{category}/{event}/format");
        let format = fs::read_to_string(&path).map_err(|source| TracefsError::Io {
            path: path.clone(),
            source,
        })?;
        for &(field, offset, size) in *fields {
            let found = field_layout(&format, field);
            if found != Some((offset, size)) {
                return Err(TracefsError::Layout {
                    path,
                    field,
                    offset,
                    size,
                    found: found.map(|f| f.0),
                    found_size: found.map(|f| f.1),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec\nID: 365\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
        \tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n";

    #[test]
    fn parses_field_offsets() {
        assert_eq!(field_layout(EXEC, "filename"), Some((8, 4)));
        assert_eq!(field_layout(EXEC, "pid"), Some((12, 4)));
        assert_eq!(field_layout(EXEC, "old_pid"), Some((16, 4)));
        assert_eq!(field_layout(EXEC, "nope"), None);
        let execve = "\tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;\n\
                      \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n";
        assert_eq!(field_layout(execve, "argv"), Some((24, 8)));
        assert_eq!(field_layout(execve, "comm"), Some((8, 16)));
    }

    #[test]
    fn this_kernel_matches_the_programs() {
        // Only meaningful where tracefs is readable (root); elsewhere nothing to check.
        if let Some(tracefs) = CANDIDATES.into_iter().find(|p| is_populated(Path::new(p))) {
            check_layouts(tracefs).unwrap();
        }
    }
}

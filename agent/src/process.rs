//! The process table: who a pid is, kept current from exec/fork/exit events so a process that
//! lived for a millisecond is still named correctly when its connect event is processed.
//!
//! Entries are immutable snapshots ([`ProcessInfo`] behind an `Arc`): an exec replaces the
//! snapshot, so an event already resolved keeps the identity it had when it happened.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    sync::Arc,
};

use crate::redact::Redactor;

/// One process as egret reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Absolute path of the executable when known.
    pub executable: Option<String>,
    /// Program name: basename of the executable, else the kernel's `comm`.
    pub name: String,
    pub args: Vec<String>,
    /// The kernel cut the path or the arguments (see `docs/events.md` for the limits).
    pub args_truncated: bool,
    /// Secrets in `args` were replaced (`crate::redact`).
    pub args_redacted: bool,
    /// Process start, CLOCK_BOOTTIME ns.
    pub start_ns: Option<u64>,
}

impl ProcessInfo {
    /// `process.command_line`: the arguments joined by spaces.
    pub fn command_line(&self) -> String {
        self.args.join(" ")
    }

    /// A process known only from an event's header.
    pub fn from_comm(pid: u32, comm: &str) -> Self {
        Self {
            pid,
            ppid: None,
            executable: None,
            name: comm.to_owned(),
            args: Vec::new(),
            args_truncated: false,
            args_redacted: false,
            start_ns: None,
        }
    }
}

/// What `sys_enter_execve` captured, waiting for the matching `sched_process_exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    pub path: String,
    pub args: Vec<String>,
    pub truncated: bool,
    pub ktime_ns: u64,
}

#[derive(Debug)]
struct Entry {
    info: Arc<ProcessInfo>,
    exited_ns: Option<u64>,
}

/// Counters the table reports in metric lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Lookups that found nothing and fell back to `/proc` or the event's comm.
    pub misses: u64,
    /// Live entries evicted because the table was full.
    pub evicted: u64,
    /// Execs without captured arguments (read from `/proc` instead, when possible).
    pub exec_without_args: u64,
    /// Processes whose arguments had secrets replaced (`crate::redact`).
    pub args_redacted: u64,
}

pub struct ProcessTable {
    procs: HashMap<u32, Entry>,
    exited: VecDeque<(u64, u32)>,
    pending: HashMap<u32, ExecArgs>,
    max_entries: usize,
    exit_grace_ns: u64,
    pub stats: TableStats,
    redactor: Redactor,
}

/// Pending exec captures older than this are dropped (the exec failed).
const PENDING_EXEC_MAX_AGE_NS: u64 = 10_000_000_000;
const PENDING_EXEC_MAX: usize = 4096;

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl ProcessTable {
    pub fn new(max_entries: usize, exit_grace_ns: u64) -> Self {
        Self {
            procs: HashMap::new(),
            exited: VecDeque::new(),
            pending: HashMap::new(),
            max_entries: max_entries.max(1),
            exit_grace_ns,
            stats: TableStats::default(),
            redactor: Redactor::off(),
        }
    }

    /// Secrets in the arguments of every process the table learns from now on are redacted.
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.procs.get(&pid).map(|entry| Arc::clone(&entry.info))
    }

    /// Looks `pid` up; on a miss reads `/proc` (the process may predate egret's seed), else
    /// builds a minimal entry from the event's `comm`.
    pub fn resolve(&mut self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        if let Some(info) = self.get(pid) {
            return info;
        }
        self.stats.misses += 1;
        match read_proc(pid) {
            Some(info) => self.insert(Arc::new(info)),
            None => Arc::new(ProcessInfo::from_comm(pid, comm)),
        }
    }

    /// Every process the table keeps comes through here: its arguments are redacted first.
    /// Returns the entry as kept.
    pub fn insert(&mut self, mut info: Arc<ProcessInfo>) -> Arc<ProcessInfo> {
        if self.redactor.redact_process(&mut info) {
            self.stats.args_redacted += 1;
        }
        if !self.procs.contains_key(&info.pid) && self.procs.len() >= self.max_entries {
            self.make_room();
        }
        self.procs.insert(
            info.pid,
            Entry {
                info: Arc::clone(&info),
                exited_ns: None,
            },
        );
        info
    }

    /// Seeds the table from `/proc`. Returns how many processes were read.
    pub fn seed_from_proc(&mut self) -> usize {
        let mut n = 0;
        for pid in live_pids() {
            if let Some(info) = read_proc(pid) {
                self.insert(Arc::new(info));
                n += 1;
            }
        }
        n
    }

    pub fn on_exec_args(&mut self, tid: u32, args: ExecArgs) {
        if self.pending.len() >= PENDING_EXEC_MAX {
            let now = args.ktime_ns;
            self.pending
                .retain(|_, p| now.saturating_sub(p.ktime_ns) < PENDING_EXEC_MAX_AGE_NS);
            if self.pending.len() >= PENDING_EXEC_MAX {
                self.pending.clear();
            }
        }
        self.pending.insert(tid, args);
    }

    /// A successful exec by thread `old_tid`, now process `pid`, of `filename`.
    pub fn on_exec(&mut self, pid: u32, old_tid: u32, filename: &str, comm: &str, ktime_ns: u64) {
        let previous = self.procs.get(&pid).map(|entry| Arc::clone(&entry.info));
        let captured = self.pending.remove(&old_tid);
        let (args, args_truncated) = match captured {
            Some(ExecArgs {
                args, truncated, ..
            }) => (args, truncated),
            None => {
                self.stats.exec_without_args += 1;
                (read_cmdline(pid).unwrap_or_default(), false)
            }
        };
        let executable = if filename.starts_with('/') {
            Some(filename.to_owned())
        } else {
            // A relative path: the kernel's view is relative to a cwd we do not know.
            fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
                .or_else(|| (!filename.is_empty()).then(|| filename.to_owned()))
        };
        let name = executable
            .as_deref()
            .map(basename)
            .filter(|s| !s.is_empty())
            .unwrap_or(comm);
        let info = ProcessInfo {
            pid,
            ppid: previous.as_ref().and_then(|p| p.ppid),
            name: name.to_owned(),
            executable,
            args,
            args_truncated,
            args_redacted: false,
            start_ns: previous
                .as_ref()
                .and_then(|p| p.start_ns)
                .or(Some(ktime_ns)),
        };
        self.insert(Arc::new(info));
    }

    /// A new process `child` forked by `parent`: it runs the parent's program until it execs.
    pub fn on_fork(&mut self, parent: u32, child: u32, parent_comm: &str, ktime_ns: u64) {
        let parent_info = self.get(parent);
        let info = match parent_info {
            Some(p) => ProcessInfo {
                pid: child,
                ppid: Some(parent),
                start_ns: Some(ktime_ns),
                ..(*p).clone()
            },
            None => ProcessInfo {
                ppid: Some(parent),
                start_ns: Some(ktime_ns),
                ..ProcessInfo::from_comm(child, parent_comm)
            },
        };
        self.insert(Arc::new(info));
    }

    /// The process exited: keep it for the grace period so late events still resolve.
    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(entry) = self.procs.get_mut(&pid) {
            entry.exited_ns = Some(ktime_ns);
            self.exited.push_back((ktime_ns, pid));
        }
        self.pending.remove(&pid);
    }

    /// Drops exited processes older than the grace period and stale exec captures.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(exited_ns, pid)) = self.exited.front() {
            if now_ns.saturating_sub(exited_ns) < self.exit_grace_ns {
                break;
            }
            self.exited.pop_front();
            // Only remove if the entry is still that exited process (the pid may be reused).
            if self.procs.get(&pid).and_then(|e| e.exited_ns) == Some(exited_ns) {
                self.procs.remove(&pid);
            }
        }
        self.pending
            .retain(|_, p| now_ns.saturating_sub(p.ktime_ns) < PENDING_EXEC_MAX_AGE_NS);
    }

    /// Frees one slot: the oldest exited process, else the oldest-started live one.
    fn make_room(&mut self) {
        while let Some((exited_ns, pid)) = self.exited.pop_front() {
            if self.procs.get(&pid).and_then(|e| e.exited_ns) == Some(exited_ns) {
                self.procs.remove(&pid);
                return;
            }
        }
        let oldest = self
            .procs
            .iter()
            .min_by_key(|(_, e)| e.info.start_ns.unwrap_or(0))
            .map(|(pid, _)| *pid);
        if let Some(pid) = oldest {
            self.procs.remove(&pid);
            self.stats.evicted += 1;
        }
    }
}

/// The pids `/proc` lists now (none when it cannot be read).
pub fn live_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(split_nul(&raw))
}

/// Splits NUL-separated strings (a trailing NUL does not make an empty last argument).
pub fn split_nul(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Reads one process from `/proc`; `None` if it is gone or is a kernel thread without a
/// command line and executable.
fn read_proc(pid: u32) -> Option<ProcessInfo> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let executable = process.exe().ok().map(|p| p.to_string_lossy().into_owned());
    let args = read_cmdline(pid).unwrap_or_default();
    let ticks = procfs::ticks_per_second().max(1);
    let name = executable
        .as_deref()
        .map(basename)
        .unwrap_or(stat.comm.as_str())
        .to_owned();
    Some(ProcessInfo {
        pid,
        ppid: u32::try_from(stat.ppid).ok(),
        executable,
        name,
        args,
        args_truncated: false,
        args_redacted: false,
        start_ns: Some(stat.starttime.saturating_mul(1_000_000_000) / ticks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_args(path: &str, args: &[&str], ktime_ns: u64) -> ExecArgs {
        ExecArgs {
            path: path.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            truncated: false,
            ktime_ns,
        }
    }

    #[test]
    fn fork_then_exec_names_the_child() {
        let mut table = ProcessTable::new(100, 1_000);
        table.insert(Arc::new(ProcessInfo {
            executable: Some("/bin/bash".into()),
            name: "bash".into(),
            args: vec!["bash".into()],
            start_ns: Some(1),
            ..ProcessInfo::from_comm(10, "bash")
        }));
        table.on_fork(10, 11, "bash", 100);
        let child = table.get(11);
        assert_eq!(
            child.as_ref().and_then(|c| c.executable.as_deref()),
            Some("/bin/bash")
        );
        assert_eq!(child.as_ref().and_then(|c| c.ppid), Some(10));

        table.on_exec_args(
            11,
            exec_args("/usr/bin/curl", &["curl", "-v", "http://x"], 150),
        );
        table.on_exec(11, 11, "/usr/bin/curl", "curl", 160);
        let child = table.get(11).expect("fixture");
        assert_eq!(child.executable.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(child.name, "curl");
        assert_eq!(child.args, ["curl", "-v", "http://x"]);
        assert_eq!(child.command_line(), "curl -v http://x");
        assert_eq!(child.ppid, Some(10));
        assert_eq!(child.start_ns, Some(100), "start is the fork, not the exec");
    }

    /// A table (100 entries, exits kept 1 µs) where pid 1 forked `pid` (`comm`) at 5 ns.
    fn forked(pid: u32, comm: &str) -> ProcessTable {
        let mut table = ProcessTable::new(100, 1_000);
        table.on_fork(1, pid, comm, 5);
        table
    }

    #[test]
    fn exec_from_a_thread_uses_the_threads_capture() {
        let mut table = forked(20, "app");
        table.on_exec_args(23, exec_args("/usr/bin/env", &["env"], 10));
        table.on_exec(20, 23, "/usr/bin/env", "env", 11);
        assert_eq!(table.get(20).expect("fixture").args, ["env"]);
    }

    #[test]
    fn exited_processes_resolve_during_the_grace_period_only() {
        let mut table = forked(30, "sh");
        table.on_exit(30, 100);
        table.expire(600);
        assert!(table.get(30).is_some());
        table.expire(1_100);
        assert!(table.get(30).is_none());
    }

    #[test]
    fn a_reused_pid_is_not_expired_by_the_old_exit() {
        let mut table = forked(40, "a");
        table.on_exit(40, 100);
        table.on_fork(1, 40, "b", 200);
        table.expire(5_000);
        assert!(table.get(40).is_some());
    }

    #[test]
    fn bounded_size_evicts_exited_first() {
        let mut table = ProcessTable::new(2, 1_000_000);
        table.on_fork(1, 50, "a", 5);
        table.on_fork(1, 51, "b", 6);
        table.on_exit(50, 7);
        table.on_fork(1, 52, "c", 8);
        assert_eq!(table.len(), 2);
        assert!(table.get(50).is_none());
        assert!(table.get(51).is_some() && table.get(52).is_some());
        table.on_fork(1, 53, "d", 9);
        assert_eq!(table.len(), 2);
        assert_eq!(table.stats.evicted, 1);
    }

    #[test]
    fn splits_nul_separated_args() {
        assert_eq!(split_nul(b"a\0bc\0"), ["a", "bc"]);
        assert_eq!(split_nul(b"a\0\0c"), ["a", "", "c"]);
        assert!(split_nul(b"").is_empty());
    }

    #[test]
    fn seeds_this_process_from_proc() {
        let mut table = ProcessTable::new(100_000, 1_000);
        assert!(table.seed_from_proc() > 0);
        let me = table.get(std::process::id()).expect("fixture");
        assert!(me.executable.is_some());
        assert!(me.start_ns.is_some());
    }
}

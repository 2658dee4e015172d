//! The process table: who a pid is, kept current from exec/fork/exit events so a process that
//! lived for a millisecond is still named correctly when its connect event is processed.
//!
//! Entries are immutable snapshots ([`ProcessInfo`] behind an `Arc`): an exec replaces the
//! snapshot, so an event already resolved keeps the identity it had when it happened.
//!
//! - [`image`]: what an exec runs, from the kernel's exec event: the executable (its real
//!   path, whatever path, link, interpreter or descriptor the exec went through), arguments,
//!   script, fileless images.
//! - [`lineage`]: parent, session leader, entry leader, terminal names, the SSH client.

pub mod image;
pub mod lineage;

use std::{
    collections::{HashMap, VecDeque},
    fs,
    sync::{Arc, OnceLock},
};

use agent_common::{task::UNSET_ID, ExeId, TaskIdentity};

use crate::redact::Redactor;

pub use image::ExecImage;
use lineage::{Ancestor, EntryLeader};
pub(crate) use proc::kernel_dev;

/// A process's users, as the kernel gave them at its last exec or fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

/// The audit login identity (`/proc/PID/loginuid`, `/proc/PID/sessionid`), set by
/// `pam_loginuid` at a login and inherited by everything started from it, through `su`,
/// `sudo` and setuid programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    pub uid: u32,
    /// `None` when the session id was never set.
    pub session: Option<u32>,
}

impl Login {
    /// The login of a task identity; `None` when its login uid was never set.
    pub fn of(identity: &TaskIdentity) -> Option<Self> {
        (identity.loginuid != UNSET_ID).then_some(Self {
            uid: identity.loginuid,
            session: (identity.sessionid != UNSET_ID).then_some(identity.sessionid),
        })
    }
}

/// One process as egret reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Absolute path of the executable when known (`memfd:NAME` for a fileless one).
    pub executable: Option<String>,
    /// Program name: basename of the executable, else the kernel's `comm`.
    pub name: String,
    /// The kernel's `comm` as of the last exec or fork (or `/proc`): a record whose task has
    /// another one shows this entry may be stale (see [`ProcessTable::resolve`]).
    pub comm: String,
    pub args: Vec<String>,
    /// The kernel cut the path or the arguments (see `docs/events.md` for the limits).
    pub args_truncated: bool,
    /// Secrets in `args` were replaced (`crate::redact`).
    pub args_redacted: bool,
    /// Process start, CLOCK_BOOTTIME ns.
    pub start_ns: Option<u64>,
    /// Users at the last exec or fork (a connection line has the users of its call).
    pub creds: Option<Creds>,
    pub login: Option<Login>,
    /// Session id: the pid of its session leader.
    pub sid: Option<u32>,
    /// Controlling terminal (`major << 20 | minor`).
    pub tty: Option<u32>,
    /// The executable file's identity (device, inode).
    pub exe_id: Option<ExeId>,
    /// It runs from no file on disk (a memfd, an anonymous mapping).
    pub fileless: bool,
    /// A `#!` script it runs (the executable is then its interpreter).
    pub script: Option<String>,
    pub parent: Option<Arc<Ancestor>>,
    pub session_leader: Option<Arc<Ancestor>>,
    pub entry_leader: Option<Arc<EntryLeader>>,
    /// This process as its children name it, made once. A copy made with `..info` must
    /// reset it (`OnceLock::new()`): it describes the original.
    pub(crate) ancestor: OnceLock<Arc<Ancestor>>,
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
            comm: comm.to_owned(),
            args: Vec::new(),
            args_truncated: false,
            args_redacted: false,
            start_ns: None,
            creds: None,
            login: None,
            sid: None,
            tty: None,
            exe_id: None,
            fileless: false,
            script: None,
            parent: None,
            session_leader: None,
            entry_leader: None,
            ancestor: OnceLock::new(),
        }
    }

    /// This process as a parent or leader on its children's lines (its arguments cut to
    /// [`ANCESTOR_ARGS_MAX`] bytes: every line of every descendant repeats them).
    pub fn ancestor(&self) -> Arc<Ancestor> {
        Arc::clone(self.ancestor.get_or_init(|| {
            Arc::new(Ancestor {
                pid: self.pid,
                executable: self.executable.clone(),
                name: self.name.clone(),
                args: cap_args(&self.args, ANCESTOR_ARGS_MAX),
                start_ns: self.start_ns,
                euid: self.creds.map(|c| c.euid),
            })
        }))
    }

    /// The identity fields of a kernel event.
    fn set_identity(&mut self, identity: &TaskIdentity) {
        let TaskIdentity {
            loginuid: _,
            sessionid: _,
            uid,
            euid,
            gid,
            egid,
            sid,
            tty,
        } = *identity;
        self.creds = Some(Creds {
            uid,
            euid,
            gid,
            egid,
        });
        self.login = Login::of(identity);
        self.sid = (sid != 0).then_some(sid);
        self.tty = (tty != 0).then_some(tty);
    }
}

/// Bytes of arguments kept for a parent or leader on a line (`process.parent.args`, ...).
pub const ANCESTOR_ARGS_MAX: usize = 512;

/// How far a start time read from `/proc` (clock ticks) may lie from one an event gave (ns)
/// for the two to be the same process's.
const PROC_START_SLACK_NS: u64 = 50_000_000;

/// The first arguments of `args` that fit in `max` bytes; the first one that does not fit is
/// cut (at a character boundary) and the rest are dropped.
fn cap_args(args: &[String], max: usize) -> Vec<String> {
    let mut left = max;
    let mut kept = Vec::new();
    for arg in args {
        if arg.len() <= left {
            left -= arg.len();
            kept.push(arg.clone());
            continue;
        }
        let mut end = left;
        while !arg.is_char_boundary(end) {
            end -= 1;
        }
        kept.push(format!("{}…", arg.get(..end).unwrap_or_default()));
        break;
    }
    kept
}

#[derive(Debug)]
struct Entry {
    info: Arc<ProcessInfo>,
    exited_ns: Option<u64>,
    /// A record with another `comm` already had this entry checked against `/proc` (a thread
    /// that names itself must not cost a `/proc` read per connection).
    comm_checked: bool,
}

/// Counters the table reports in metric lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Lookups that found nothing and fell back to `/proc` or the event's comm.
    pub misses: u64,
    /// Entries found stale (the process runs another program than its entry says: its exec
    /// record was lost) and read again from `/proc`.
    pub stale: u64,
    /// Live entries evicted because the table was full.
    pub evicted: u64,
    /// Exited entries evicted before their grace period ended because the table was full.
    pub exited_evicted: u64,
    /// Execs whose arguments the kernel could not read (read from `/proc` instead, when
    /// possible).
    pub exec_without_args: u64,
    /// Processes whose arguments had secrets replaced (`crate::redact`).
    pub args_redacted: u64,
}

pub struct ProcessTable {
    procs: HashMap<u32, Entry>,
    exited: VecDeque<(u64, u32)>,
    max_entries: usize,
    exit_grace_ns: u64,
    pub stats: TableStats,
    redactor: Redactor,
    /// A parent's name is believed without its [`lineage::Backing`] (synthetic records).
    starters_by_name: bool,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl ProcessTable {
    pub fn new(max_entries: usize, exit_grace_ns: u64) -> Self {
        Self {
            procs: HashMap::new(),
            exited: VecDeque::new(),
            max_entries: max_entries.max(1),
            exit_grace_ns,
            stats: TableStats::default(),
            redactor: Redactor::off(),
            starters_by_name: false,
        }
    }

    /// Believes a parent's name (sshd, cron...) without checking its executable's owner and
    /// its user: for synthetic records (the replay benchmark), whose processes and files are
    /// not on this machine. Never for a real kernel's records.
    pub fn believe_starters_by_name(&mut self) {
        self.starters_by_name = true;
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
    ///
    /// An entry whose `comm` differs from the record's (`comm`, when given) may be stale: the
    /// kernel lost the exec record (a full ring buffer) and the entry still names the program
    /// the process forked from. It is read again from `/proc` once; a thread that names itself
    /// (`prctl(PR_SET_NAME)`) costs that one read, no more.
    pub fn resolve(&mut self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        if let Some(entry) = self.procs.get_mut(&pid) {
            if comm.is_empty() || entry.comm_checked || entry.info.comm == comm {
                return Arc::clone(&entry.info);
            }
            entry.comm_checked = true;
            let kept = Arc::clone(&entry.info);
            return self.refresh(kept);
        }
        self.stats.misses += 1;
        match proc::read(pid) {
            Some(mut info) => {
                self.link_from_table(&mut info);
                self.insert(Arc::new(info))
            }
            None => Arc::new(ProcessInfo::from_comm(pid, comm)),
        }
    }

    /// `kept`, read again from `/proc` when its program changed there (kept as it is when the
    /// process is gone or runs what the entry says).
    fn refresh(&mut self, kept: Arc<ProcessInfo>) -> Arc<ProcessInfo> {
        let Some(mut info) = proc::read(kept.pid) else {
            return kept;
        };
        // `/proc` gives no inode generation (the kernel's exec record does): the same file
        // is the same device and inode.
        let same_file = |a: Option<ExeId>, b: Option<ExeId>| {
            a.map(|a| (a.dev, a.ino)) == b.map(|b| (b.dev, b.ino))
        };
        if info.executable == kept.executable && same_file(info.exe_id, kept.exe_id) {
            return kept;
        }
        self.stats.stale += 1;
        // The same process (the start times agree to /proc's tick): its fork record's start
        // is the precise one.
        let same_start = match (info.start_ns, kept.start_ns) {
            (Some(read), Some(known)) => read.abs_diff(known) < PROC_START_SLACK_NS,
            _ => false,
        };
        if same_start {
            info.start_ns = kept.start_ns;
        }
        self.link_from_table(&mut info);
        let fresh = self.insert(Arc::new(info));
        if let Some(entry) = self.procs.get_mut(&fresh.pid) {
            entry.comm_checked = true;
        }
        fresh
    }

    /// Every process the table keeps comes through here: its arguments (and, where it leads
    /// its own session or entry, its leader's) are redacted first. Returns the entry as kept.
    pub fn insert(&mut self, mut info: Arc<ProcessInfo>) -> Arc<ProcessInfo> {
        if redact_process(&self.redactor, &mut info) {
            self.stats.args_redacted += 1;
        }
        self.store(info)
    }

    /// Keeps `info` as it is: arguments already through [`Self::insert`] (a fork's copy of
    /// its parent's).
    fn store(&mut self, info: Arc<ProcessInfo>) -> Arc<ProcessInfo> {
        if !self.procs.contains_key(&info.pid) && self.procs.len() >= self.max_entries {
            self.make_room();
        }
        self.procs.insert(
            info.pid,
            Entry {
                info: Arc::clone(&info),
                exited_ns: None,
                comm_checked: false,
            },
        );
        info
    }

    /// Seeds the table from `/proc`, parents before children so each names its parent and
    /// leaders. Returns how many processes were read.
    pub fn seed_from_proc(&mut self) -> usize {
        let mut read: Vec<ProcessInfo> = live_pids().filter_map(proc::read).collect();
        // Start order puts parents first (a parent starts before its child).
        read.sort_by_key(|info| (info.start_ns.unwrap_or(0), info.pid));
        let n = read.len();
        for mut info in read {
            self.link_from_table(&mut info);
            self.insert(Arc::new(info));
        }
        n
    }

    /// Parent, leaders of a process read from `/proc`, from the table's entries.
    fn link_from_table(&self, info: &mut ProcessInfo) {
        let parent = info.ppid.and_then(|ppid| self.get(ppid));
        info.parent = parent.as_ref().map(|p| p.ancestor());
        info.session_leader = self.session_leader(info, parent.as_deref());
        info.entry_leader = self.entry_leader(info, parent.as_deref());
    }

    /// The session leader of `info` (whose parent is `parent`).
    fn session_leader(
        &self,
        info: &ProcessInfo,
        parent: Option<&ProcessInfo>,
    ) -> Option<Arc<Ancestor>> {
        let sid = info.sid?;
        if sid == info.pid {
            return Some(info.ancestor());
        }
        if let Some(parent) = parent.filter(|p| p.sid == Some(sid)) {
            if parent.session_leader.is_some() {
                return parent.session_leader.clone();
            }
        }
        self.get(sid).map(|leader| leader.ancestor())
    }

    /// The entry leader of `info` (which now runs its program; its parent is `parent`): itself
    /// when its parent is what starts entries (sshd, cron, init, a container runtime, login:
    /// by name, backed by its executable's owner and its user, [`lineage::Backing`]), else its
    /// parent's.
    fn entry_leader(
        &self,
        info: &ProcessInfo,
        parent: Option<&ProcessInfo>,
    ) -> Option<Arc<EntryLeader>> {
        let parent = parent?;
        let backed = |backing: lineage::Backing| {
            if self.starters_by_name {
                return true;
            }
            let file = proc::exe_file(parent.pid, parent.executable.as_deref(), parent.exe_id);
            backing.met(parent.creds.map(|c| c.euid), file)
        };
        match lineage::entry_type(&info.name, &parent.ancestor(), info.tty, backed) {
            Some(kind) => Some(Arc::new(EntryLeader {
                process: info.ancestor(),
                kind,
                source_ip: (kind == lineage::EntryType::Sshd)
                    .then(|| lineage::ssh_client(parent.pid))
                    .flatten(),
            })),
            None => parent.entry_leader.clone(),
        }
    }

    /// A successful exec: `pid` (thread `old_tid` called it) now runs `image`.
    pub fn on_exec(&mut self, pid: u32, image: ExecImage, comm: &str, ktime_ns: u64) {
        let previous = self.get(pid);
        let named = image::name(pid, &image, comm);
        if named.args_from_proc {
            self.stats.exec_without_args += 1;
        }
        let mut info = ProcessInfo {
            ppid: previous.as_ref().and_then(|p| p.ppid),
            start_ns: previous
                .as_ref()
                .and_then(|p| p.start_ns)
                .or(Some(ktime_ns)),
            executable: named.executable,
            name: named.name,
            args: named.args,
            args_truncated: named.args_truncated,
            exe_id: image.exe_id,
            fileless: named.fileless,
            script: named.script,
            parent: previous.as_ref().and_then(|p| p.parent.clone()),
            ..ProcessInfo::from_comm(pid, comm)
        };
        info.set_identity(&image.identity);
        let parent = info.ppid.and_then(|ppid| self.get(ppid));
        info.session_leader = self.session_leader(&info, parent.as_deref());
        info.entry_leader = match &parent {
            Some(parent) => self.entry_leader(&info, Some(parent)),
            None => previous.as_ref().and_then(|p| p.entry_leader.clone()),
        };
        self.insert(Arc::new(info));
    }

    /// A new process `child` forked by `parent` (whose identity it inherits): it runs the
    /// parent's program until it execs.
    pub fn on_fork(
        &mut self,
        parent: u32,
        child: u32,
        parent_comm: &str,
        identity: &TaskIdentity,
        ktime_ns: u64,
    ) {
        let parent_info = self.get(parent);
        let mut info = match &parent_info {
            Some(p) => ProcessInfo {
                pid: child,
                ppid: Some(parent),
                start_ns: Some(ktime_ns),
                parent: Some(p.ancestor()),
                ancestor: OnceLock::new(),
                // The child has the comm of the thread that forked it.
                comm: parent_comm.to_owned(),
                ..(**p).clone()
            },
            None => ProcessInfo {
                ppid: Some(parent),
                start_ns: Some(ktime_ns),
                ..ProcessInfo::from_comm(child, parent_comm)
            },
        };
        info.set_identity(identity);
        if info.sid == Some(child) {
            info.session_leader = Some(info.ancestor());
        }
        // The parent's arguments, redacted when the parent went in (or none): kept as they are.
        self.store(Arc::new(info));
    }

    /// The process exited: keep it for the grace period so late events still resolve.
    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(entry) = self.procs.get_mut(&pid) {
            entry.exited_ns = Some(ktime_ns);
            self.exited.push_back((ktime_ns, pid));
        }
    }

    /// Drops exited processes older than the grace period.
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
    }

    /// Frees one slot: the oldest exited process, else the oldest-started live one.
    fn make_room(&mut self) {
        while let Some((exited_ns, pid)) = self.exited.pop_front() {
            if self.procs.get(&pid).and_then(|e| e.exited_ns) == Some(exited_ns) {
                self.procs.remove(&pid);
                self.stats.exited_evicted += 1;
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

/// Redacts a process's arguments, copying the snapshot only when something changes (then
/// `args_redacted` is set). True when it did.
///
/// Its parent and leaders are other processes of the table, redacted when they went in;
/// but a process may lead its own session or entry, named (`ProcessInfo::ancestor`) by
/// its arguments before this: those are named again.
pub(crate) fn redact_process(redactor: &Redactor, info: &mut Arc<ProcessInfo>) -> bool {
    if info.args.is_empty() {
        return false;
    }
    let Some(args) = redactor.redacted(&info.args) else {
        return false;
    };
    let info = Arc::make_mut(info);
    info.args = args;
    info.args_redacted = true;
    info.ancestor = OnceLock::new();
    let me = info.pid;
    let redacted = info.ancestor();
    if info.session_leader.as_ref().is_some_and(|l| l.pid == me) {
        info.session_leader = Some(Arc::clone(&redacted));
    }
    if let Some(entry) = info.entry_leader.as_mut().filter(|e| e.process.pid == me) {
        Arc::make_mut(entry).process = redacted;
    }
    true
}

/// The pids `/proc` lists now (none when it cannot be read).
pub fn live_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
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

mod proc;

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(uid: u32, sid: u32) -> TaskIdentity {
        TaskIdentity {
            loginuid: 1000,
            sessionid: 3,
            uid,
            euid: uid,
            gid: uid,
            egid: uid,
            sid,
            tty: 136 << 20 | 2,
        }
    }

    use image::exec_of as image;

    /// Pids no real process has, so nothing is read from this machine's `/proc`.
    const P: u32 = 4_000_000_000;

    #[test]
    fn fork_then_exec_names_the_child_its_parent_and_its_login() {
        let mut table = ProcessTable::new(100, 1_000);
        table.insert(Arc::new(ProcessInfo {
            executable: Some("/bin/bash".into()),
            name: "bash".into(),
            args: vec!["bash".into()],
            start_ns: Some(1),
            ..ProcessInfo::from_comm(P + 10, "bash")
        }));
        table.on_fork(P + 10, P + 11, "bash", &identity(1000, P + 10), 100);
        let child = table.get(P + 11).expect("forked");
        assert_eq!(child.executable.as_deref(), Some("/bin/bash"));
        assert_eq!(child.ppid, Some(P + 10));
        assert_eq!(child.parent.as_ref().map(|p| p.pid), Some(P + 10));

        table.on_exec(
            P + 11,
            image(
                "/usr/bin/curl",
                &["curl", "-v", "http://x"],
                identity(0, P + 10),
            ),
            "curl",
            160,
        );
        let child = table.get(P + 11).expect("exec'd");
        assert_eq!(child.executable.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(child.name, "curl");
        assert_eq!(child.args, ["curl", "-v", "http://x"]);
        assert_eq!(child.command_line(), "curl -v http://x");
        assert_eq!(child.ppid, Some(P + 10));
        assert_eq!(child.start_ns, Some(100), "start is the fork, not the exec");
        assert_eq!(
            child.login,
            Some(Login {
                uid: 1000,
                session: Some(3)
            })
        );
        assert_eq!(child.creds.map(|c| c.euid), Some(0));
        assert_eq!(child.tty, Some(136 << 20 | 2));
        let parent = child.parent.as_ref().expect("parent");
        assert_eq!(parent.executable.as_deref(), Some("/bin/bash"));
        assert_eq!(
            child.session_leader.as_ref().map(|l| l.pid),
            Some(P + 10),
            "the session's leader is the shell"
        );
    }

    /// A gone process named `name` that ran as `euid` from `path` (an existing file: its
    /// identity is the kernel's).
    fn gone_process(pid: u32, name: &str, path: &str, euid: u32) -> ProcessInfo {
        use std::os::unix::fs::MetadataExt;
        let path = fs::canonicalize(path).expect("fixture file");
        let meta = fs::metadata(&path).expect("stat fixture");
        ProcessInfo {
            executable: Some(path.to_string_lossy().into_owned()),
            name: name.into(),
            exe_id: Some(ExeId {
                dev: kernel_dev(meta.dev()),
                generation: 0,
                ino: meta.ino(),
            }),
            creds: Some(Creds {
                euid,
                ..Creds::default()
            }),
            ..ProcessInfo::from_comm(pid, name)
        }
    }

    #[test]
    fn an_ssh_login_shell_is_the_entry_leader_of_what_it_starts() {
        let mut table = ProcessTable::new(100, 1_000);
        // sshd's session process: root, from a root-owned binary (the shell stands in for it).
        table.insert(Arc::new(gone_process(P + 20, "sshd-session", "/bin/sh", 0)));
        // sshd forks the shell, which calls setsid() and execs bash.
        table.on_fork(P + 20, P + 21, "sshd-session", &identity(0, P + 20), 10);
        table.on_exec(
            P + 21,
            image("/usr/bin/bash", &["-bash"], identity(0, P + 21)),
            "bash",
            11,
        );
        let shell = table.get(P + 21).expect("shell");
        assert_eq!(shell.session_leader.as_ref().map(|l| l.pid), Some(P + 21));
        let entry = shell.entry_leader.as_ref().expect("entry leader");
        assert_eq!(entry.kind, lineage::EntryType::Sshd);
        assert_eq!(entry.process.pid, P + 21);
        // bash forks curl: same session, same entry, parent bash.
        table.on_fork(P + 21, P + 22, "bash", &identity(0, P + 21), 12);
        table.on_exec(
            P + 22,
            image("/usr/bin/curl", &["curl"], identity(0, P + 21)),
            "curl",
            13,
        );
        let curl = table.get(P + 22).expect("curl");
        assert_eq!(curl.parent.as_ref().map(|p| p.name.as_str()), Some("bash"));
        assert_eq!(curl.session_leader.as_ref().map(|l| l.pid), Some(P + 21));
        let entry = curl.entry_leader.as_ref().expect("inherited entry leader");
        assert_eq!(
            (entry.kind, entry.process.pid),
            (lineage::EntryType::Sshd, P + 21)
        );
        assert_eq!(entry.process.name, "bash");
    }

    /// A program a user runs under the name of sshd or cron starts no entry: its children
    /// keep the entry leader of the user's own session.
    #[test]
    fn a_user_program_named_sshd_starts_no_entry() {
        let dir = std::env::temp_dir().join(format!("egret-fake-sshd-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let fake = dir.join("sshd");
        fs::copy("/bin/sh", &fake).expect("copy");
        let fake = fake.to_string_lossy().into_owned();
        let login = Arc::new(EntryLeader {
            process: Arc::new(Ancestor {
                pid: P + 29,
                executable: Some("/usr/bin/bash".into()),
                name: "bash".into(),
                args: vec!["-bash".into()],
                start_ns: None,
                euid: Some(1000),
            }),
            kind: lineage::EntryType::Sshd,
            source_ip: None,
        });
        // Made the test user's own when it runs as root.
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(fake.as_str(), Some(nix::unistd::Uid::from_raw(1000)), None)
                .expect("chown");
        }
        // (parent name, its binary, its user, entry type of its child)
        let root_sh = "/bin/sh";
        let cases = [
            ("sshd", fake.as_str(), 0, None),
            ("cron", fake.as_str(), 1000, None),
            ("sshd", root_sh, 1000, None),
            ("cron", root_sh, 1000, None),
            ("cron", root_sh, 0, Some(lineage::EntryType::Cron)),
            ("sshd", root_sh, 0, Some(lineage::EntryType::Sshd)),
        ];
        for (i, (name, path, euid, want)) in cases.into_iter().enumerate() {
            let pid = P + 30 + 2 * u32::try_from(i).expect("few");
            let mut table = ProcessTable::new(100, 1_000);
            table.insert(Arc::new(ProcessInfo {
                entry_leader: Some(Arc::clone(&login)),
                ..gone_process(pid, name, path, euid)
            }));
            table.on_fork(pid, pid + 1, name, &identity(euid, pid), 10);
            table.on_exec(
                pid + 1,
                image("/usr/bin/curl", &["curl"], identity(euid, pid)),
                "curl",
                11,
            );
            let entry = table.get(pid + 1).and_then(|c| c.entry_leader.clone());
            let kind = entry
                .as_ref()
                .filter(|e| e.process.pid != P + 29)
                .map(|e| e.kind);
            assert_eq!(kind, want, "{name} from {path} as {euid}");
            if want.is_none() {
                assert_eq!(entry.map(|e| e.process.pid), Some(P + 29), "the user's own");
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// A table (100 entries, exits kept 1 µs) where pid 1 forked `pid` (`comm`) at 5 ns.
    fn forked(pid: u32, comm: &str) -> ProcessTable {
        let mut table = ProcessTable::new(100, 1_000);
        table.on_fork(1, pid, comm, &TaskIdentity::default(), 5);
        table
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
        table.on_fork(1, 40, "b", &TaskIdentity::default(), 200);
        table.expire(5_000);
        assert!(table.get(40).is_some());
    }

    #[test]
    fn bounded_size_evicts_exited_first() {
        let mut table = ProcessTable::new(2, 1_000_000);
        let none = TaskIdentity::default();
        table.on_fork(1, 50, "a", &none, 5);
        table.on_fork(1, 51, "b", &none, 6);
        table.on_exit(50, 7);
        table.on_fork(1, 52, "c", &none, 8);
        assert_eq!(table.len(), 2);
        assert!(table.get(50).is_none());
        assert!(table.get(51).is_some() && table.get(52).is_some());
        assert_eq!((table.stats.exited_evicted, table.stats.evicted), (1, 0));
        table.on_fork(1, 53, "d", &none, 9);
        assert_eq!(table.len(), 2);
        assert_eq!((table.stats.exited_evicted, table.stats.evicted), (1, 1));
    }

    #[test]
    fn ancestors_keep_a_bounded_part_of_their_arguments() {
        let long = ProcessInfo {
            args: vec!["java".into(), "x".repeat(2000), "Main".into()],
            ..ProcessInfo::from_comm(P + 60, "java")
        };
        let kept = &long.ancestor().args;
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], "java");
        assert!(kept[1].ends_with('…') && kept[1].len() <= ANCESTOR_ARGS_MAX);
        let short = vec!["-bash".to_owned()];
        assert_eq!(cap_args(&short, ANCESTOR_ARGS_MAX), short);
        assert_eq!(cap_args(&["é".repeat(10)], 5), ["éé…"]);
    }

    #[test]
    fn splits_nul_separated_args() {
        assert_eq!(split_nul(b"a\0bc\0"), ["a", "bc"]);
        assert_eq!(split_nul(b"a\0\0c"), ["a", "", "c"]);
        assert!(split_nul(b"").is_empty());
    }

    /// A lost exec record: the entry (from the fork) names the parent's program; the next
    /// record's `comm` differs, so the entry is read again from `/proc` (this test's process
    /// plays the child), once.
    #[test]
    fn an_entry_whose_exec_was_lost_is_read_again_from_proc_once() {
        let me = std::process::id();
        let mut table = ProcessTable::new(100, 1_000);
        table.insert(Arc::new(ProcessInfo {
            executable: Some("/usr/sbin/forker".into()),
            name: "forker".into(),
            args: vec!["forker".into(), "--serve".into()],
            start_ns: Some(1),
            ..ProcessInfo::from_comm(P + 20, "forker")
        }));
        table.on_fork(P + 20, me, "forker", &identity(0, P + 20), 100);
        let comm = fs::read_to_string(format!("/proc/{me}/comm")).expect("own comm");
        let comm = comm.trim_end();

        // The same comm as the entry: the entry is believed, nothing is read.
        let stale = table.resolve(me, "forker");
        assert_eq!(stale.executable.as_deref(), Some("/usr/sbin/forker"));
        assert_eq!(table.stats.stale, 0);

        let fresh = table.resolve(me, comm);
        let exe = std::env::current_exe().expect("own executable");
        assert_eq!(fresh.executable.as_deref(), exe.to_str());
        assert_eq!(fresh.comm, comm);
        assert_eq!(fresh.ppid, Some(std::os::unix::process::parent_id()));
        assert_eq!(table.stats.stale, 1);
        assert_eq!(table.stats.misses, 0);

        // A thread with a name of its own: the entry, checked once, is kept without a read.
        let again = table.resolve(me, "worker-7");
        assert!(Arc::ptr_eq(&again, &fresh));
        assert_eq!(table.stats.stale, 1);
    }

    /// A thread that names itself, in a process whose entry is right: one `/proc` read finds
    /// nothing changed; the entry is kept as it is and nothing is counted.
    #[test]
    fn a_renamed_thread_keeps_a_right_entry() {
        let me = std::process::id();
        let mut table = ProcessTable::new(100, 1_000);
        assert!(table.seed_from_proc() > 0);
        let seeded = table.get(me).expect("seeded");
        let kept = table.resolve(me, "renamed-thread");
        assert!(Arc::ptr_eq(&kept, &seeded));
        assert_eq!((table.stats.stale, table.stats.misses), (0, 0));
    }

    /// An entry from an exec record carries the file's inode generation, which `/proc` cannot
    /// give: the same device and inode is the same file, so a renamed thread keeps the entry.
    #[test]
    fn an_exec_entrys_generation_does_not_make_it_stale() {
        let me = std::process::id();
        let mut table = ProcessTable::new(100, 1_000);
        assert!(table.seed_from_proc() > 0);
        let seeded = table.get(me).expect("seeded");
        let from_exec = Arc::new(ProcessInfo {
            exe_id: seeded.exe_id.map(|id| ExeId {
                generation: 0x5eed,
                ..id
            }),
            ..(*seeded).clone()
        });
        table.insert(Arc::clone(&from_exec));
        let kept = table.resolve(me, "renamed-thread");
        assert!(Arc::ptr_eq(&kept, &from_exec));
        assert_eq!((table.stats.stale, table.stats.misses), (0, 0));
    }

    #[test]
    fn seeds_this_process_from_proc_with_its_parent() {
        let mut table = ProcessTable::new(100_000, 1_000);
        assert!(table.seed_from_proc() > 0);
        let me = table.get(std::process::id()).expect("fixture");
        assert!(me.executable.is_some());
        assert!(me.start_ns.is_some());
        assert_eq!(me.parent.as_ref().map(|p| p.pid), me.ppid);
    }
}

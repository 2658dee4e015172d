//! The identity stage: who made a connection. It keeps the tables the process events feed
//! (exec, fork, exit: [`ProcessTable`]), the cgroup and user names, and the container and pod
//! identity from the runtimes, and joins them to each connection event as a
//! [`ConnectionRecord`].
//!
//! A container's identity comes from its runtime a little after its first process runs, so a
//! connection from a container egret has not identified yet waits here (with whatever the
//! later stages attached to it, the `P` of [`Identity`]) for up to the container grace period;
//! [`Identity::release`] hands back those whose identity arrived or whose grace ran out. A new
//! container cgroup (`cgroup_mkdir`) is looked up at once, ahead of its first connection, so
//! container-scoped rules can apply from the start.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    task::UNSET_ID, CgroupMkdirEvent, ConnectEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent,
};

use crate::{
    cgroup::CgroupResolver,
    clock::duration_ns,
    config::ProcessConfig,
    container::{ContainerInfo, ContainerResolver, ContainerStats, Lookup},
    process::{ExecImage, ProcessInfo, ProcessTable, TableStats},
    record::{comm_str, Action, ConnectionRecord, Users},
    users::UserNames,
};

/// Most connections waiting for container identity at once; beyond, lines go out with the
/// container id only. Also the bound on new containers being identified ahead of time.
const WAITING_MAX: usize = 4096;
/// Most cgroups and user names remembered.
const CGROUPS_MAX: usize = 65536;
const USERS_MAX: usize = 4096;
/// How long a new container cgroup is looked up ahead of its first connection.
const NEW_CONTAINER_WATCH: Duration = Duration::from_secs(10);

/// A connection waiting (briefly) for its container's identity.
#[derive(Debug)]
struct Waiting<P> {
    since: Instant,
    record: ConnectionRecord,
    /// What the later stages need to finish it.
    payload: P,
}

/// A new container cgroup being identified before its first connection.
#[derive(Debug)]
struct NewContainer {
    path: String,
    cgroup_id: u64,
    since: Instant,
}

/// What [`Identity::release`] hands back.
#[derive(Debug)]
pub struct Released<P> {
    /// New containers identified: their cgroup id and identity.
    pub identified: Vec<(u64, Arc<ContainerInfo>)>,
    /// Waiting connections whose container lookup settled, in arrival order.
    pub ready: Vec<(ConnectionRecord, P)>,
}

/// The identity stage's numbers for the metric line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityStats {
    pub processes: usize,
    pub process_table: TableStats,
    pub cgroups: usize,
    pub container_stats: ContainerStats,
    pub waiting: usize,
}

pub struct Identity<P> {
    processes: ProcessTable,
    cgroups: CgroupResolver,
    users: UserNames,
    containers: ContainerResolver,
    waiting: Vec<Waiting<P>>,
    new_containers: Vec<NewContainer>,
}

impl<P> Identity<P> {
    /// `cgroup_mount`: the cgroup2 mount, to which cgroup paths are relative.
    pub fn new(
        config: &ProcessConfig,
        cgroup_mount: PathBuf,
        containers: ContainerResolver,
    ) -> Self {
        let ProcessConfig { max, exit_grace } = config;
        Self {
            processes: ProcessTable::new(*max, duration_ns(*exit_grace)),
            cgroups: CgroupResolver::new(cgroup_mount, CGROUPS_MAX),
            users: UserNames::new(USERS_MAX),
            containers,
            waiting: Vec::new(),
            new_containers: Vec::new(),
        }
    }

    /// Secrets in the arguments of every process from now on are redacted (set before
    /// [`Self::seed_from_proc`]).
    pub fn set_redactor(&mut self, redactor: crate::redact::Redactor) {
        self.processes.set_redactor(redactor);
    }

    /// Synthetic records only: see [`ProcessTable::believe_starters_by_name`].
    pub fn believe_starters_by_name(&mut self) {
        self.processes.believe_starters_by_name();
    }

    /// Fills the process table from `/proc` (once the programs are attached, so no process
    /// falls between the two). Returns how many processes were read.
    pub fn seed_from_proc(&mut self) -> usize {
        self.processes.seed_from_proc()
    }

    /// The cgroup2 mount, to which cgroup paths are relative.
    pub fn cgroup_mount(&self) -> &Path {
        self.cgroups.mount()
    }

    pub fn stats(&self) -> IdentityStats {
        IdentityStats {
            processes: self.processes.len(),
            process_table: self.processes.stats,
            cgroups: self.cgroups.len(),
            container_stats: self.containers.stats,
            waiting: self.waiting.len(),
        }
    }

    /// A connection or datagram event joined with its process, cgroup and user. `None` for
    /// an address family the programs never produce.
    pub fn connection(&mut self, action: Action, ev: &ConnectEvent) -> Option<ConnectionRecord> {
        let EventHeader {
            tgid,
            uid,
            gid,
            cgroup_id,
            comm,
            ..
        } = &ev.header;
        let process = self.processes.resolve(*tgid, &comm_str(comm));
        let cgroup = self.cgroups.resolve(*cgroup_id);
        let users = self.users_of(&process, [*uid, *gid], [ev.euid, ev.egid]);
        ConnectionRecord::new(action, ev, process, cgroup, users)
    }

    /// The users of a call by `process` with real ids `[uid, gid]` and effective ids
    /// `[euid, egid]` (`UNSET_ID`: the kernel could not say), with the names of every user
    /// its line shows.
    fn users_of(
        &mut self,
        process: &ProcessInfo,
        [uid, gid]: [u32; 2],
        [euid, egid]: [u32; 2],
    ) -> Users {
        let known = process.creds;
        // Without the kernel's word: the process's last known effective ids, unless its real
        // ones changed since.
        let euid = if euid != UNSET_ID {
            euid
        } else {
            known.filter(|c| c.uid == uid).map_or(uid, |c| c.euid)
        };
        let egid = if egid != UNSET_ID {
            egid
        } else {
            known.filter(|c| c.gid == gid).map_or(gid, |c| c.egid)
        };
        let mut users = Users {
            uid,
            gid,
            euid,
            egid,
            names: Vec::new(),
        };
        let login = process.login.map(|l| l.uid);
        let entry = process.entry_leader.as_ref().and_then(|e| e.process.euid);
        for id in [Some(euid), Some(uid), login, entry].into_iter().flatten() {
            if users.name(id).is_none() {
                if let Some(name) = self.users.name(id) {
                    users.names.push((id, Arc::clone(name)));
                }
            }
        }
        users
    }

    /// The process with this pid (from `/proc` or a bare entry when the table lacks it).
    pub fn process(&mut self, pid: u32) -> Arc<ProcessInfo> {
        self.processes.resolve(pid, "")
    }

    /// Adds the container identity to `record`. Returns it with `payload` when it is complete
    /// (or cannot be): a container still being identified keeps them waiting (`None`).
    pub fn complete(
        &mut self,
        mut record: ConnectionRecord,
        payload: P,
        now: Instant,
    ) -> Option<(ConnectionRecord, P)> {
        record.container = match record.cgroup.path.as_deref() {
            Some(path) => self.containers.lookup(path, now),
            None => Lookup::NotAContainer,
        };
        if matches!(record.container, Lookup::Pending(_)) && self.waiting.len() < WAITING_MAX {
            self.waiting.push(Waiting {
                since: now,
                record,
                payload,
            });
            return None;
        }
        Some((record, payload))
    }

    /// Adds the container identity known now, without waiting (a connection whose start was
    /// not seen: its end is being written).
    pub fn complete_now(&mut self, record: &mut ConnectionRecord) {
        record.container = match record.cgroup.path.as_deref() {
            Some(path) => self.containers.lookup(path, Instant::now()),
            None => Lookup::NotAContainer,
        };
        if let Lookup::Pending(reference) = &record.container {
            record.container = Lookup::Unknown(reference.clone());
        }
    }

    /// The payload of a waiting connection that `matches`, to add to it.
    pub fn waiting_mut(&mut self, matches: impl Fn(&ConnectionRecord) -> bool) -> Option<&mut P> {
        self.waiting
            .iter_mut()
            .find(|w| matches(&w.record))
            .map(|w| &mut w.payload)
    }

    /// The record of a waiting connection that `matches`, to add to it.
    pub fn waiting_record_mut(
        &mut self,
        matches: impl Fn(&ConnectionRecord) -> bool,
    ) -> Option<&mut ConnectionRecord> {
        self.waiting
            .iter_mut()
            .find(|w| matches(&w.record))
            .map(|w| &mut w.record)
    }

    /// New containers whose identity arrived, and waiting connections whose container is now
    /// known (or whose grace ran out).
    pub fn release(&mut self, now: Instant) -> Released<P> {
        let mut released = Released {
            identified: Vec::new(),
            ready: Vec::new(),
        };
        if self.waiting.is_empty() && self.new_containers.is_empty() {
            return released;
        }
        self.containers.poll_results();
        for new in std::mem::take(&mut self.new_containers) {
            match self.containers.lookup(&new.path, now) {
                Lookup::Known(info) => released.identified.push((new.cgroup_id, info)),
                Lookup::Pending(_) if now.duration_since(new.since) < NEW_CONTAINER_WATCH => {
                    self.new_containers.push(new);
                }
                Lookup::Pending(_) | Lookup::Unknown(_) | Lookup::NotAContainer => {}
            }
        }
        for mut waiting in std::mem::take(&mut self.waiting) {
            let path = waiting.record.cgroup.path.as_deref().unwrap_or_default();
            match self.containers.settle(path, waiting.since, now) {
                Lookup::Pending(_) => self.waiting.push(waiting),
                settled => {
                    waiting.record.container = settled;
                    released.ready.push((waiting.record, waiting.payload));
                }
            }
        }
        released
    }

    /// Every waiting connection, with what is known of its container (shutdown).
    pub fn release_all(&mut self) -> Vec<(ConnectionRecord, P)> {
        std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|mut waiting| {
                if let Lookup::Pending(reference) = &waiting.record.container {
                    waiting.record.container = Lookup::Unknown(reference.clone());
                }
                (waiting.record, waiting.payload)
            })
            .collect()
    }

    /// A process exec'd: what it runs now, from the new image.
    pub fn on_exec(&mut self, ev: &ExecEvent) {
        let header = &ev.header;
        self.processes.on_exec(
            header.tgid,
            ExecImage::from_event(ev),
            &comm_str(&header.comm),
            header.ktime_ns,
        );
    }

    pub fn on_fork(&mut self, ev: &ForkEvent) {
        let ForkEvent {
            header,
            child_tgid,
            _pad: _,
            clone_flags: _,
            identity,
        } = ev;
        self.processes.on_fork(
            header.tgid,
            *child_tgid,
            &comm_str(&header.comm),
            identity,
            header.ktime_ns,
        );
    }

    pub fn on_exit(&mut self, ev: &ExitEvent) {
        let ExitEvent { header } = ev;
        self.processes.on_exit(header.tgid, header.ktime_ns);
    }

    /// A cgroup was created: remember its path, and if it is a container's, start
    /// identifying it now, so a container-scoped rule applies from (nearly) its first
    /// connection.
    pub fn on_cgroup_mkdir(&mut self, ev: &CgroupMkdirEvent) {
        let CgroupMkdirEvent {
            header: _,
            id,
            path_len,
            _pad: _,
            path,
        } = ev;
        let path = String::from_utf8_lossy(path.get(..*path_len as usize).unwrap_or_default())
            .into_owned();
        if path.starts_with('/') {
            self.cgroups.remember(*id, &path);
        }
        if crate::container::parse(&path).is_none() || self.new_containers.len() >= WAITING_MAX {
            return;
        }
        let now = Instant::now();
        let _ = self.containers.lookup(&path, now);
        self.new_containers.push(NewContainer {
            path,
            cgroup_id: *id,
            since: now,
        });
    }

    /// Forgets exited processes and unused containers past their grace.
    pub fn expire(&mut self, now_ns: u64, now: Instant) {
        self.processes.expire(now_ns);
        self.containers.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use agent_common::EventKind;

    use super::*;
    use crate::{
        container::RuntimeConfig,
        pipeline::synthetic::{self, exec, PID, SECOND},
    };

    /// The stage, and the container fetcher it sends requests to (kept, never run: no
    /// runtime answers, and a dropped fetcher would make every lookup fail at once).
    fn identity() -> (Identity<u32>, impl std::future::Future<Output = ()>) {
        let config = RuntimeConfig {
            containerd_socket: None,
            docker_socket: None,
            podman_socket: None,
            crio_socket: None,
            ..RuntimeConfig::default()
        };
        let (containers, fetcher) = ContainerResolver::new(config);
        let identity = Identity::new(
            &crate::config::RunConfig::defaults().processes,
            PathBuf::from("/nonexistent-cgroup2"),
            containers,
        );
        (identity, fetcher)
    }

    fn connect() -> ConnectEvent {
        synthetic::connect(EventKind::Connect, 7, "10.0.0.1", 443, SECOND)
    }

    #[test]
    fn a_connection_is_named_after_the_exec_that_preceded_it() {
        let (mut identity, _fetcher) = identity();
        identity.on_exec(&exec(PID, "/usr/bin/curl", &["curl", "-s", "x.io"]));
        let record = identity
            .connection(Action::Connect, &connect())
            .expect("an IPv4 connect");
        assert_eq!(record.process.executable.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(record.process.args, ["curl", "-s", "x.io"]);
        assert_eq!(record.ip.to_string(), "10.0.0.1");
        assert_eq!(record.port, 443);
        assert_eq!(identity.stats().process_table.exec_without_args, 0);
        // A host cgroup is no container: nothing waits.
        let (record, payload) = identity
            .complete(record, 5, Instant::now())
            .expect("not a container");
        assert_eq!(record.container, Lookup::NotAContainer);
        assert_eq!(payload, 5);
    }

    #[test]
    fn an_unknown_address_family_is_no_connection() {
        let (mut identity, _fetcher) = identity();
        let mut ev = connect();
        ev.family = 1;
        assert!(identity.connection(Action::Connect, &ev).is_none());
    }

    #[test]
    fn a_container_connection_waits_for_its_identity_then_goes_out_unknown() {
        let (mut identity, _fetcher) = identity();
        let mut record = identity
            .connection(Action::Connect, &connect())
            .expect("record");
        let id = "a".repeat(64);
        record.cgroup = Arc::new(crate::cgroup::CgroupInfo {
            id: 9,
            path: Some(format!("/system.slice/docker-{id}.scope")),
            systemd_unit: None,
        });
        let start = Instant::now();
        assert!(identity.complete(record, 1, start).is_none(), "waits");
        assert_eq!(identity.stats().waiting, 1);
        *identity
            .waiting_mut(|r| r.cookie == 7)
            .expect("found by cookie") += 10;
        // No runtime answers (no sockets): once the grace is over it goes out as unknown.
        let later = start + RuntimeConfig::default().grace + Duration::from_millis(1);
        let released = identity.release(later);
        let [(record, payload)] = released.ready.as_slice() else {
            panic!("one released: {released:?}");
        };
        assert!(matches!(record.container, Lookup::Unknown(_)));
        assert_eq!(*payload, 11);
        assert_eq!(identity.stats().waiting, 0);
    }
}

//! Which DNS servers' answers egret believes: the trusted resolvers.
//!
//! A DNS answer names destinations, and in block mode approves addresses, only when it comes
//! from a trusted resolver (`docs/dns.md`, "Which answers egret believes"). The set is the
//! policy's `resolvers:` when it has that key ([`ResolverSource::Policy`]); without it, the
//! nameservers of the host's `resolv.conf` and of each identified container's own
//! (`/proc/PID/root/etc/resolv.conf`), re-read when they change
//! ([`ResolverSource::Discovered`]).
//!
//! [`TrustedResolvers`] keeps that set: the pipeline registers containers
//! ([`TrustedResolvers::add_container`]) and calls [`TrustedResolvers::refresh`] now and then;
//! `refresh` returns the whole set when it changed, for the kernel's copy.
//! [`TrustedResolvers::is_trusted`] is the same check in userspace, for audit lines.
//!
//! Files are read with a size bound ([`MAX_RESOLV_CONF_BYTES`]), opened non-blocking and only
//! read when they are regular files, so a container cannot stall egret with a FIFO or a device
//! in place of its `resolv.conf`. A container's file is opened with `openat2(RESOLVE_IN_ROOT)`
//! below its root, so its symlinks (`/etc/resolv.conf -> /run/...`) resolve inside the
//! container, as its resolver library sees them.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io,
    net::{IpAddr, Ipv6Addr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{openat2, OFlag, OpenHow, ResolveFlag},
};

use crate::{policy::Prefix, yaml::read_at_most};

/// At most this many nameservers are read from one file; later ones are ignored (and counted).
/// glibc and musl use only the first 3 (`MAXNS`), but other resolver libraries a watched
/// process may use (c-ares, Go's, hickory, dnsmasq reading the file) take more, and a server
/// the administrator listed is one to believe; 16 covers them while keeping the set small.
pub const MAX_NAMESERVERS: usize = 16;
/// Larger `resolv.conf` files are not read (they are a few hundred bytes).
pub const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;
/// At most this many containers are watched; the nameservers of more are not trusted.
pub const MAX_CONTAINERS: usize = 4096;
/// The host's `resolv.conf` (unless [`TrustedResolvers::with_host_resolv_conf`] says another).
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// A container's `resolv.conf`, below its root.
const CONTAINER_RESOLV_CONF: &str = "etc/resolv.conf";
/// How often [`TrustedResolvers::refresh`] looks at the files (`fstat`, re-read on a change).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often every file is re-read whatever its `fstat` says.
pub const REREAD_EVERY: Duration = Duration::from_secs(60);
/// Problems kept for [`TrustedResolvers::take_errors`] between two calls; more are only
/// counted.
const MAX_PENDING_ERRORS: usize = 64;

/// The nameservers a `resolv.conf` lists, by glibc's rules: a line whose first word is
/// `nameserver` (at the start of the line, then a space or tab), then an address, which ends
/// at white space, `#` or `;`. An IPv6 address may carry a zone (`fe80::1%eth0`), which is
/// dropped. Comment lines (`#`, `;`), other keywords and unreadable addresses are ignored; at
/// most [`MAX_NAMESERVERS`] are read.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    ResolvConf::parse(text).nameservers
}

/// What a `resolv.conf` says about nameservers, with what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// In file order, as written (an IPv4-mapped address stays IPv6 here).
    pub nameservers: Vec<IpAddr>,
    /// `nameserver` lines without an address egret reads (no address, a name, inet_aton's
    /// shorthand forms such as `10.1` or octal): ignored.
    pub malformed: usize,
    /// Nameservers after the first [`MAX_NAMESERVERS`]: ignored.
    pub beyond_limit: usize,
}

impl ResolvConf {
    /// Reads the `nameserver` lines of `text` ([`parse_resolv_conf`] says how).
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("nameserver") else {
                continue;
            };
            if !rest.starts_with([' ', '\t']) {
                continue;
            }
            let token = rest
                .trim_start()
                .split(|c: char| c.is_ascii_whitespace() || c == '#' || c == ';')
                .next()
                .unwrap_or_default();
            match nameserver_address(token) {
                None => conf.malformed = conf.malformed.saturating_add(1),
                Some(_) if conf.nameservers.len() >= MAX_NAMESERVERS => {
                    conf.beyond_limit = conf.beyond_limit.saturating_add(1);
                }
                Some(address) => conf.nameservers.push(address),
            }
        }
        conf
    }
}

/// An address, or an IPv6 address with a zone (dropped: egret matches addresses only).
fn nameserver_address(token: &str) -> Option<IpAddr> {
    if let Ok(address) = token.parse::<IpAddr>() {
        return Some(address);
    }
    let (address, _zone) = token.split_once('%')?;
    address.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Where the trusted resolvers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverSource {
    /// The policy's `resolvers:` (empty: no resolver is trusted).
    Policy(Vec<Prefix>),
    /// The nameservers of the host's `resolv.conf` and of each registered container's.
    Discovered,
}

impl ResolverSource {
    /// What a policy's `resolvers:` key says (absent: [`Self::Discovered`]).
    pub fn of(resolvers: Option<&[Prefix]>) -> Self {
        resolvers.map_or(Self::Discovered, |list| Self::Policy(list.to_vec()))
    }
}

/// A problem with the files, for a log line; each is reported once (until it goes away and
/// comes back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolversError {
    /// A file could not be read; its nameservers from the last good read (if any) stay
    /// trusted.
    #[error("{path}: {message}; the nameservers last read from it stay trusted")]
    Read { path: String, message: String },
    /// Some `nameserver` lines were ignored.
    #[error(
        "{path}: {malformed} nameserver line(s) without an address egret reads and \
         {beyond_limit} past the first {MAX_NAMESERVERS} ignored: answers from those servers \
         are not trusted"
    )]
    Ignored {
        path: String,
        malformed: usize,
        beyond_limit: usize,
    },
    /// [`MAX_CONTAINERS`] are watched already.
    #[error(
        "more than {MAX_CONTAINERS} containers: the nameservers of container {key} (and of \
         others past the limit) are not trusted"
    )]
    TooManyContainers { key: String },
}

/// Counters for metric lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResolverStats {
    /// Files read (a check that finds a file unchanged is not a read).
    pub reads: u64,
    /// Read problems found (a problem that persists counts once).
    pub read_errors: u64,
    /// Containers registered now.
    pub containers: usize,
    /// Registrations refused at [`MAX_CONTAINERS`].
    pub containers_refused: u64,
}

/// What `fstat` says about a file's contents: when any part changes, it is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Where a `resolv.conf` is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// A path in egret's own file system, symlinks followed as usual.
    Path(PathBuf),
    /// [`CONTAINER_RESOLV_CONF`] below a container's root (`/proc/PID/root`), symlinks
    /// resolved inside that root.
    InRoot(PathBuf),
}

impl Location {
    fn display(&self) -> String {
        match self {
            Self::Path(path) => path.display().to_string(),
            Self::InRoot(root) => root.join(CONTAINER_RESOLV_CONF).display().to_string(),
        }
    }
}

/// Why a file could not be opened.
enum OpenFailure {
    /// It does not exist: no nameservers from it.
    Missing,
    /// Anything else: the message; the last good read stays.
    Failed(String),
}

/// Where problems and counts go.
#[derive(Debug, Default)]
struct Log {
    stats: ResolverStats,
    errors: Vec<ResolversError>,
}

impl Log {
    fn report(&mut self, error: ResolversError) {
        if self.errors.len() < MAX_PENDING_ERRORS {
            self.errors.push(error);
        }
    }
}

/// One watched `resolv.conf`: what was last read from it.
#[derive(Debug, Clone)]
struct Watched {
    location: Location,
    /// Of the last read; `None` before the first, and after a failure or a missing file.
    stamp: Option<Stamp>,
    nameservers: Vec<IpAddr>,
    /// The file did not exist at the last check.
    missing: bool,
    /// The problem of the last check, if it failed (reported when it first appeared).
    problem: Option<String>,
    /// (malformed, beyond the limit) of the last read.
    ignored: (usize, usize),
}

impl Watched {
    fn new(location: Location) -> Self {
        Self {
            location,
            stamp: None,
            nameservers: Vec::new(),
            missing: false,
            problem: None,
            ignored: (0, 0),
        }
    }

    /// Looks at the file and reads it when its stamp changed (or always, with `force`).
    /// Whether its nameservers changed.
    fn check(&mut self, force: bool, log: &mut Log) -> bool {
        let opened = match &self.location {
            Location::Path(path) => open_path(path),
            Location::InRoot(root) => open_in_root(root),
        };
        let read = opened.and_then(|file| {
            let stamp = stamp_of(&file).map_err(OpenFailure::Failed)?;
            if !force && self.stamp == Some(stamp) {
                return Ok(None);
            }
            let bytes = read_at_most(&file, MAX_RESOLV_CONF_BYTES, "resolv.conf")
                .map_err(OpenFailure::Failed)?;
            Ok(Some((
                stamp,
                ResolvConf::parse(&String::from_utf8_lossy(&bytes)),
            )))
        });
        let before = self.nameservers.clone();
        match read {
            Ok(None) => {}
            Ok(Some((stamp, conf))) => {
                log.stats.reads = log.stats.reads.saturating_add(1);
                (self.stamp, self.missing, self.problem) = (Some(stamp), false, None);
                let ignored = (conf.malformed, conf.beyond_limit);
                if ignored != self.ignored && ignored != (0, 0) {
                    log.report(ResolversError::Ignored {
                        path: self.location.display(),
                        malformed: conf.malformed,
                        beyond_limit: conf.beyond_limit,
                    });
                }
                self.ignored = ignored;
                self.nameservers = conf.nameservers;
            }
            Err(OpenFailure::Missing) => {
                (self.stamp, self.missing, self.problem) = (None, true, None);
                self.ignored = (0, 0);
                self.nameservers.clear();
            }
            Err(OpenFailure::Failed(message)) => {
                self.stamp = None;
                if self.problem.as_ref() != Some(&message) {
                    log.stats.read_errors = log.stats.read_errors.saturating_add(1);
                    log.report(ResolversError::Read {
                        path: self.location.display(),
                        message: message.clone(),
                    });
                    self.problem = Some(message);
                }
            }
        }
        self.nameservers != before
    }
}

/// Flags for opening a `resolv.conf`: never wait (a FIFO), never become a controlling tty.
const OPEN_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

fn open_path(path: &Path) -> Result<File, OpenFailure> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenFailure::Missing,
            _ => OpenFailure::Failed(format!("cannot open: {e}")),
        })
}

/// [`CONTAINER_RESOLV_CONF`] below `root`, with every symlink resolved inside `root`. Where
/// `openat2` is missing (before Linux 5.6, or refused by a seccomp filter) the plain path is
/// opened instead: an absolute symlink in the container then resolves in egret's own root.
fn open_in_root(root: &Path) -> Result<File, OpenFailure> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map_err(|e| OpenFailure::Failed(format!("cannot open {}: {e}", root.display())))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::from_bits_truncate(OPEN_FLAGS))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir.as_raw_fd(), CONTAINER_RESOLV_CONF, how) {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Err(OpenFailure::Missing),
        Err(Errno::ENOSYS | Errno::EPERM) => open_path(&root.join(CONTAINER_RESOLV_CONF)),
        Err(e) => Err(OpenFailure::Failed(format!("cannot open: {e}"))),
    }
}

fn stamp_of(file: &File) -> Result<Stamp, String> {
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    Ok(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// A container whose `resolv.conf` is watched.
#[derive(Debug, Clone)]
struct Container {
    pid: u32,
    file: Watched,
}

/// The trusted resolvers: where they come from, the files they were read from, and the
/// current set of prefixes.
#[derive(Debug)]
pub struct TrustedResolvers {
    source: ResolverSource,
    host: Watched,
    /// `/proc`, where containers' roots are (`PID/root`).
    proc_root: PathBuf,
    containers: BTreeMap<String, Container>,
    /// The set [`Self::refresh`] last returned; `None` before the first call.
    current: Option<Vec<Prefix>>,
    /// Something changed since the set was last computed.
    dirty: bool,
    last_check: Option<Instant>,
    last_full: Option<Instant>,
    log: Log,
}

impl TrustedResolvers {
    /// Nothing is read yet: call [`Self::refresh`] once and install what it returns.
    pub fn new(source: ResolverSource) -> Self {
        Self {
            source,
            host: Watched::new(Location::Path(PathBuf::from(HOST_RESOLV_CONF))),
            proc_root: PathBuf::from("/proc"),
            containers: BTreeMap::new(),
            current: None,
            dirty: true,
            last_check: None,
            last_full: None,
            log: Log::default(),
        }
    }

    /// Reads the host's nameservers from `path` instead of [`HOST_RESOLV_CONF`] (egret in a
    /// container: `/proc/1/root/etc/resolv.conf`, or a test's file).
    #[must_use]
    pub fn with_host_resolv_conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.host = Watched::new(Location::Path(path.into()));
        self
    }

    /// Finds containers' roots below `proc_root` (`PID/root`) instead of `/proc`.
    #[must_use]
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    pub fn source(&self) -> &ResolverSource {
        &self.source
    }

    /// A new policy's source (on reload); the next [`Self::refresh`] returns the set if it
    /// changed, reading every file first when the files are now the source.
    pub fn set_source(&mut self, source: ResolverSource) {
        if source != self.source {
            self.source = source;
            (self.last_check, self.last_full, self.dirty) = (None, None, true);
        }
    }

    /// Whether container `key`'s `resolv.conf` is read through process `pid`'s root.
    pub fn watches(&self, key: &str, pid: u32) -> bool {
        self.containers
            .get(key)
            .is_some_and(|known| known.pid == pid)
    }

    /// Watches the `resolv.conf` of container `key`, read through process `pid`'s root; a
    /// new pid for a known key replaces the old one (a pid that dies leaves the last good
    /// read in place). With the files as the source it is read at once; the next
    /// [`Self::refresh`] returns the set if it changed. `false`: [`MAX_CONTAINERS`] are
    /// watched already (reported once through [`Self::take_errors`]).
    pub fn add_container(&mut self, key: String, pid: u32) -> bool {
        match self.containers.get(&key).map(|known| known.pid) {
            Some(known) if known == pid => return true,
            None if self.containers.len() >= MAX_CONTAINERS => {
                let refused = &mut self.log.stats.containers_refused;
                let first = *refused == 0;
                *refused = refused.saturating_add(1);
                if first {
                    self.log.report(ResolversError::TooManyContainers { key });
                }
                return false;
            }
            Some(_) | None => {}
        }
        let location = Location::InRoot(self.proc_root.join(pid.to_string()).join("root"));
        let container = self.containers.entry(key).or_insert_with(|| Container {
            pid,
            file: Watched::new(location.clone()),
        });
        // A new pid: the same file through another root, read afresh (the old read stays
        // until the new one succeeds).
        container.pid = pid;
        container.file.location = location;
        container.file.stamp = None;
        if self.source == ResolverSource::Discovered && container.file.check(true, &mut self.log) {
            self.dirty = true;
        }
        true
    }

    /// Stops watching container `key`: its nameservers are no longer trusted (unless another
    /// file lists them). Whether it was watched.
    pub fn remove_container(&mut self, key: &str) -> bool {
        let Some(gone) = self.containers.remove(key) else {
            return false;
        };
        if !gone.file.nameservers.is_empty() {
            self.dirty = true;
        }
        true
    }

    /// [`Self::refresh_at`] now.
    pub fn refresh(&mut self) -> Option<Vec<Prefix>> {
        self.refresh_at(Instant::now())
    }

    /// With the files as the source, and [`CHECK_EVERY`] since the last look: re-reads every
    /// file whose `fstat` (device, inode, length, mtime, ctime: a symlink's target, so a
    /// replaced target or a re-pointed link is seen) changed, and every file when
    /// [`REREAD_EVERY`] has passed. Returns the whole set (sorted, deduplicated, addresses as
    /// `/32` or `/128`) on the first call and whenever it changed; `None` otherwise. Cheap
    /// when there is nothing to do: call it as often as convenient.
    pub fn refresh_at(&mut self, now: Instant) -> Option<Vec<Prefix>> {
        let due = |last: Option<Instant>, every| {
            last.is_none_or(|last| now.saturating_duration_since(last) >= every)
        };
        if self.source == ResolverSource::Discovered && due(self.last_check, CHECK_EVERY) {
            let full = due(self.last_full, REREAD_EVERY);
            let mut changed = self.host.check(full, &mut self.log);
            for container in self.containers.values_mut() {
                changed |= container.file.check(full, &mut self.log);
            }
            self.dirty |= changed;
            self.last_check = Some(now);
            if full {
                self.last_full = Some(now);
            }
        }
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let fresh = self.compute();
        if self.current.as_ref() == Some(&fresh) {
            return None;
        }
        self.current = Some(fresh.clone());
        Some(fresh)
    }

    /// The set as [`Self::refresh`] last returned it (empty before the first call).
    pub fn prefixes(&self) -> &[Prefix] {
        self.current.as_deref().unwrap_or_default()
    }

    /// Whether an answer from `address` is believed (the kernel's check, in userspace; an
    /// IPv4-mapped address counts as the IPv4 address).
    pub fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.prefixes().iter().any(|p| p.contains(address))
    }

    /// Conditions worth a log line (at start, and after a reload): a missing or unreadable
    /// host `resolv.conf`, no trusted resolver at all.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.source == ResolverSource::Discovered {
            let path = self.host.location.display();
            if self.host.missing {
                notes.push(format!(
                    "{path} does not exist: the host has no trusted resolver (glibc then asks \
                     127.0.0.1, which egret trusts only if the policy's `resolvers:` lists it)"
                ));
            } else if let Some(problem) = &self.host.problem {
                notes.push(format!("{path}: {problem}"));
            }
        }
        if self.current.is_some() && self.prefixes().is_empty() {
            notes.push(match self.source {
                ResolverSource::Policy(_) => "the policy's `resolvers: []` trusts no resolver: \
                                              DNS answers name no destination"
                    .to_owned(),
                ResolverSource::Discovered => "no resolv.conf lists a nameserver: no resolver \
                                               is trusted, DNS answers name no destination"
                    .to_owned(),
            });
        }
        notes
    }

    /// One line for a log: the set and where it came from.
    pub fn describe(&self) -> String {
        let set = if self.prefixes().is_empty() {
            "none".to_owned()
        } else {
            self.prefixes()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.source {
            ResolverSource::Policy(_) => format!("trusted resolvers (policy): {set}"),
            ResolverSource::Discovered => format!(
                "trusted resolvers (resolv.conf nameservers of the host and {} container(s)): \
                 {set}",
                self.containers.len()
            ),
        }
    }

    /// The problems found since the last call, each once.
    pub fn take_errors(&mut self) -> Vec<ResolversError> {
        std::mem::take(&mut self.log.errors)
    }

    pub fn stats(&self) -> ResolverStats {
        ResolverStats {
            containers: self.containers.len(),
            ..self.log.stats
        }
    }

    /// The set the source gives now: sorted by (address, length), without duplicates.
    fn compute(&self) -> Vec<Prefix> {
        let mut set: Vec<Prefix> = match &self.source {
            ResolverSource::Policy(list) => list
                .iter()
                .map(|p| Prefix {
                    addr: p.network(),
                    len: p.len,
                })
                .collect(),
            ResolverSource::Discovered => self
                .containers
                .values()
                .map(|c| &c.file)
                .chain([&self.host])
                .flat_map(|w| w.nameservers.iter().copied().map(Prefix::host))
                .collect(),
        };
        set.sort_by_key(|p| (p.addr, p.len));
        set.dedup();
        set
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::output::tests::TempDir;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn shown(set: Option<Vec<Prefix>>) -> Vec<String> {
        set.expect("the set changed")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// `seconds` after `start`.
    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// The root of process `pid` below `dir`'s fake `/proc`, with `etc/` made.
    fn container_root(dir: &TempDir, pid: u32) -> PathBuf {
        let root = dir.join("proc").join(pid.to_string()).join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        root
    }

    #[test]
    fn resolv_conf_follows_glibc() {
        let text = "\
# nameserver 10.9.9.9
; nameserver 10.9.9.8
search example.com
nameserver 10.0.0.1
nameserver\t10.0.0.2 # a comment
nameserver   10.0.0.3;another
nameserver fe80::1%eth0
nameserver 2001:db8::53
nameserver ::ffff:192.0.2.1\r
 nameserver 10.9.9.7
NAMESERVER 10.9.9.6
nameserverx 10.9.9.5
nameserver
nameserver 
nameserver 10.1
nameserver 010.0.0.1
nameserver dns.google
nameserver 10.0.0.1%eth0
options ndots:5
";
        let conf = ResolvConf::parse(text);
        let want: Vec<IpAddr> = [
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "fe80::1",
            "2001:db8::53",
            "::ffff:192.0.2.1",
        ]
        .into_iter()
        .map(ip)
        .collect();
        assert_eq!(conf.nameservers, want);
        assert_eq!((conf.malformed, conf.beyond_limit), (5, 0));
        assert_eq!(parse_resolv_conf(text), want);
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        assert_eq!(
            ResolvConf::parse("\u{0}\u{ff}nameserver\n\n\u{fffd}"),
            ResolvConf::default()
        );
    }

    #[test]
    fn resolv_conf_is_bounded() {
        let text: String = (1..=20)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        let conf = ResolvConf::parse(&text);
        assert_eq!(conf.nameservers.len(), MAX_NAMESERVERS);
        assert_eq!(conf.nameservers.last(), Some(&ip("10.0.0.16")));
        assert_eq!(conf.beyond_limit, 4);
    }

    #[test]
    fn the_host_file_is_followed_through_its_symlink() {
        let dir = TempDir::new("resolvers-host");
        let (stub, uplink, link) = (
            dir.join("stub-resolv.conf"),
            dir.join("resolv.conf.uplink"),
            dir.join("resolv.conf"),
        );
        write(&stub, "nameserver 127.0.0.53\noptions edns0\n");
        write(
            &uplink,
            "nameserver 10.0.0.2\nnameserver 10.0.0.2\nnameserver fd00::53\n",
        );
        symlink(&stub, &link).unwrap();
        let mut t = TrustedResolvers::new(ResolverSource::Discovered).with_host_resolv_conf(&link);
        let start = Instant::now();
        assert!(t.prefixes().is_empty());
        assert_eq!(shown(t.refresh_at(start)), ["127.0.0.53/32"]);
        assert_eq!(t.refresh_at(start), None);
        // The target changes: seen at the next check (not before CHECK_EVERY).
        write(&stub, "nameserver 127.0.0.53\nnameserver 10.0.0.9\n");
        assert_eq!(t.refresh_at(start), None);
        assert_eq!(
            shown(t.refresh_at(at(start, 1))),
            ["10.0.0.9/32", "127.0.0.53/32"]
        );
        // The link is pointed elsewhere (systemd-resolved's modes): the new target is read.
        std::fs::remove_file(&link).unwrap();
        symlink(&uplink, &link).unwrap();
        assert_eq!(
            shown(t.refresh_at(at(start, 2))),
            ["10.0.0.2/32", "fd00::53/128"]
        );
        assert!(t.is_trusted(ip("10.0.0.2")) && t.is_trusted(ip("::ffff:10.0.0.2")));
        assert!(t.is_trusted(ip("fd00::53")));
        assert!(!t.is_trusted(ip("10.0.0.3")) && !t.is_trusted(ip("127.0.0.53")));
        assert_eq!(t.stats().reads, 3);
        // Unchanged files are not read again, until REREAD_EVERY.
        assert_eq!(t.refresh_at(at(start, 3)), None);
        assert_eq!(t.stats().reads, 3);
        assert_eq!(t.refresh_at(at(start, 62)), None);
        assert_eq!(t.stats().reads, 4);
        assert!(t.notes().is_empty());
        assert!(t.take_errors().is_empty());
        assert_eq!(
            t.describe(),
            "trusted resolvers (resolv.conf nameservers of the host and 0 container(s)): \
             10.0.0.2/32, fd00::53/128"
        );
    }

    #[test]
    fn a_missing_host_file_means_no_host_resolvers() {
        let dir = TempDir::new("resolvers-missing");
        let path = dir.join("resolv.conf");
        let mut t = TrustedResolvers::new(ResolverSource::Discovered).with_host_resolv_conf(&path);
        let start = Instant::now();
        // The first call returns the set, even empty.
        assert_eq!(t.refresh_at(start), Some(Vec::new()));
        let notes = t.notes();
        assert_eq!(notes.len(), 2, "{notes:#?}");
        assert!(notes[0].ends_with(
            "resolv.conf does not exist: the host has no trusted resolver (glibc then asks \
             127.0.0.1, which egret trusts only if the policy's `resolvers:` lists it)"
        ));
        assert_eq!(
            notes[1],
            "no resolv.conf lists a nameserver: no resolver is trusted, DNS answers name no \
             destination"
        );
        assert!(t.take_errors().is_empty(), "a missing file is not an error");
        write(&path, "nameserver 10.0.0.2\n");
        assert_eq!(shown(t.refresh_at(at(start, 1))), ["10.0.0.2/32"]);
        assert!(t.notes().is_empty());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.refresh_at(at(start, 2)), Some(Vec::new()));
    }

    #[test]
    fn unreadable_files_keep_their_last_read_and_are_reported_once() {
        let dir = TempDir::new("resolvers-errors");
        let path = dir.join("resolv.conf");
        write(&path, "nameserver 10.0.0.2\n");
        let mut t = TrustedResolvers::new(ResolverSource::Discovered).with_host_resolv_conf(&path);
        let start = Instant::now();
        assert_eq!(shown(t.refresh_at(start)), ["10.0.0.2/32"]);
        // Too large.
        write(
            &path,
            &format!("nameserver 10.0.0.3\n{}", "#".repeat(70_000)),
        );
        assert_eq!(t.refresh_at(at(start, 1)), None);
        let errors: Vec<String> = t.take_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [format!(
                "{}: larger than 65536 bytes: not a resolv.conf file; the nameservers last \
                 read from it stay trusted",
                path.display()
            )]
        );
        assert_eq!(t.refresh_at(at(start, 2)), None);
        assert!(t.take_errors().is_empty(), "reported once");
        assert_eq!(t.stats().read_errors, 1);
        assert!(t.notes()[0].contains("larger than 65536 bytes"));
        // A FIFO in its place: opened without waiting, not read.
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(t.refresh_at(at(start, 3)), None);
        let errors = t.take_errors();
        assert!(
            matches!(&errors[..], [ResolversError::Read { message, .. }] if message == "not a regular file"),
            "{errors:?}"
        );
        assert!(t.is_trusted(ip("10.0.0.2")));
        // Readable again, with lines that are ignored: read, and those reported.
        std::fs::remove_file(&path).unwrap();
        let mut text = String::from("nameserver resolver.example\n");
        text.extend((1..=18).map(|i| format!("nameserver 10.1.0.{i}\n")));
        write(&path, &text);
        let set = t.refresh_at(at(start, 4)).unwrap();
        assert_eq!(set.len(), MAX_NAMESERVERS);
        assert!(!t.is_trusted(ip("10.0.0.2")));
        let errors: Vec<String> = t.take_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [format!(
                "{}: 1 nameserver line(s) without an address egret reads and 2 past the first \
                 16 ignored: answers from those servers are not trusted",
                path.display()
            )]
        );
        assert!(t.notes().is_empty());
    }

    #[test]
    fn containers_are_read_inside_their_own_root() {
        let dir = TempDir::new("resolvers-containers");
        let host = dir.join("host-resolv.conf");
        write(&host, "nameserver 10.0.0.2\n");
        // Container 100: /etc/resolv.conf -> /run/resolv.conf, resolved inside its root.
        let root = container_root(&dir, 100);
        std::fs::create_dir_all(root.join("run")).unwrap();
        write(&root.join("run/resolv.conf"), "nameserver 10.96.0.10\n");
        symlink("/run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        let root = container_root(&dir, 200);
        write(
            &root.join("etc/resolv.conf"),
            "nameserver 127.0.0.11\nnameserver 10.0.0.2\n",
        );
        let mut t = TrustedResolvers::new(ResolverSource::Discovered)
            .with_host_resolv_conf(&host)
            .with_proc_root(dir.join("proc"));
        let start = Instant::now();
        assert_eq!(shown(t.refresh_at(start)), ["10.0.0.2/32"]);
        // Read when added: no wait for the next check.
        assert!(t.add_container("c1".into(), 100));
        assert_eq!(shown(t.refresh_at(start)), ["10.0.0.2/32", "10.96.0.10/32"]);
        assert!(t.add_container("c2".into(), 200));
        assert!(t.add_container("c2".into(), 200));
        assert_eq!(
            shown(t.refresh_at(start)),
            ["10.0.0.2/32", "10.96.0.10/32", "127.0.0.11/32"]
        );
        // The pid dies: its last good read stays, the failure is reported once.
        std::fs::remove_dir_all(dir.join("proc/200")).unwrap();
        assert_eq!(t.refresh_at(at(start, 1)), None);
        let errors = t.take_errors();
        assert!(
            matches!(&errors[..], [ResolversError::Read { path, .. }] if path.ends_with("proc/200/root/etc/resolv.conf")),
            "{errors:?}"
        );
        assert_eq!(t.refresh_at(at(start, 2)), None);
        assert!(t.take_errors().is_empty());
        assert!(t.is_trusted(ip("127.0.0.11")));
        // Another pid of the container: read through it.
        write(
            &container_root(&dir, 300).join("etc/resolv.conf"),
            "nameserver 10.0.0.53\n",
        );
        assert!(t.add_container("c2".into(), 300));
        assert_eq!(
            shown(t.refresh_at(at(start, 2))),
            ["10.0.0.2/32", "10.0.0.53/32", "10.96.0.10/32"]
        );
        // Removed: its nameservers go (10.0.0.2 stays: the host lists it).
        assert!(t.remove_container("c2"));
        assert!(!t.remove_container("c2"));
        assert_eq!(
            shown(t.refresh_at(at(start, 2))),
            ["10.0.0.2/32", "10.96.0.10/32"]
        );
        // A container without resolv.conf: no nameservers, no error.
        container_root(&dir, 400);
        assert!(t.add_container("c4".into(), 400));
        assert_eq!(t.refresh_at(at(start, 3)), None);
        assert!(t.take_errors().is_empty());
        assert_eq!(t.stats().containers, 2);
        assert!(t.describe().contains("the host and 2 container(s)"));
    }

    #[test]
    fn containers_are_bounded() {
        // With the policy as the source, registering reads nothing.
        let mut t = TrustedResolvers::new(ResolverSource::Policy(Vec::new()));
        for i in 0..MAX_CONTAINERS {
            assert!(t.add_container(format!("c{i}"), 1));
        }
        assert!(!t.add_container("one-more".into(), 1));
        assert!(!t.add_container("two-more".into(), 1));
        assert_eq!(
            t.take_errors(),
            [ResolversError::TooManyContainers {
                key: "one-more".into()
            }]
        );
        let stats = t.stats();
        assert_eq!(
            (stats.containers, stats.containers_refused, stats.reads),
            (MAX_CONTAINERS, 2, 0)
        );
        // A known container may change pid; room made by a removal is used.
        assert!(t.add_container("c0".into(), 2));
        assert!(t.remove_container("c0"));
        assert!(t.add_container("one-more".into(), 1));
    }

    #[test]
    fn the_policy_list_is_the_set_until_a_reload_drops_it() {
        let dir = TempDir::new("resolvers-policy");
        let host = dir.join("resolv.conf");
        write(&host, "nameserver 10.0.0.2\n");
        let prefix = |addr: &str, len| Prefix {
            addr: ip(addr),
            len,
        };
        let list = [
            prefix("10.96.0.0", 12),
            prefix("fd00::53", 128),
            prefix("10.0.0.9", 32),
            prefix("10.96.0.0", 12),
        ];
        let mut t =
            TrustedResolvers::new(ResolverSource::of(Some(&list))).with_host_resolv_conf(&host);
        let start = Instant::now();
        assert_eq!(
            shown(t.refresh_at(start)),
            ["10.0.0.9/32", "10.96.0.0/12", "fd00::53/128"]
        );
        assert_eq!(t.refresh_at(at(start, 100)), None);
        assert_eq!(t.stats().reads, 0, "the files are not read");
        assert!(t.is_trusted(ip("10.111.255.255")) && !t.is_trusted(ip("10.112.0.0")));
        assert!(t.is_trusted(ip("::ffff:10.0.0.9")) && t.is_trusted(ip("fd00::53")));
        assert!(!t.is_trusted(ip("10.0.0.2")));
        assert!(t.notes().is_empty());
        assert_eq!(
            t.describe(),
            "trusted resolvers (policy): 10.0.0.9/32, 10.96.0.0/12, fd00::53/128"
        );
        // A reload without the key: the files, read at once.
        t.set_source(ResolverSource::of(None));
        assert_eq!(t.source(), &ResolverSource::Discovered);
        assert_eq!(shown(t.refresh_at(at(start, 100))), ["10.0.0.2/32"]);
        // `resolvers: []`: nothing is trusted.
        t.set_source(ResolverSource::Policy(Vec::new()));
        assert_eq!(t.refresh_at(at(start, 100)), Some(Vec::new()));
        assert!(!t.is_trusted(ip("10.0.0.2")));
        assert_eq!(
            t.notes(),
            ["the policy's `resolvers: []` trusts no resolver: DNS answers name no destination"]
        );
        assert_eq!(t.describe(), "trusted resolvers (policy): none");
    }
}

//! Who started a process: its parent, its session leader and its entry leader (the process
//! through which a person or the system entered: an SSH login's shell, a cron job, a service
//! systemd started, a container's first process, a terminal login), and for an SSH login the
//! address the person came from.
//!
//! Each process keeps these as [`Ancestor`]s: snapshots without links of their own, so a
//! process holds at most three of them however deep its ancestry (the bound of the ancestry
//! egret keeps, docs/events.md). They are decided when the kernel reports an exec or a fork,
//! from the process table, so a process that lived a millisecond has them too.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

/// Another process, as a line names it (`process.parent`, the leaders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    pub executable: Option<String>,
    pub name: String,
    pub args: Vec<String>,
    pub start_ns: Option<u64>,
    /// Effective uid, when known.
    pub euid: Option<u32>,
}

/// How a person or the system entered (`process.entry_leader.entry_meta.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// Started by the init system (PID 1): a service, a timer's job.
    Init,
    /// An SSH login.
    Sshd,
    /// A cron or at job.
    Cron,
    /// A container's first process.
    Container,
    /// A login on a terminal (`login`, `getty`).
    Terminal,
    /// A login on the system console.
    Console,
}

impl EntryType {
    /// The value on lines (ECS `entry_meta.type`; `cron` is egret's own).
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Sshd => "sshd",
            Self::Cron => "cron",
            Self::Container => "container",
            Self::Terminal => "terminal",
            Self::Console => "console",
        }
    }
}

/// `process.entry_leader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLeader {
    pub process: Arc<Ancestor>,
    pub kind: EntryType,
    /// SSH: the client's address, from the TCP connection of the sshd process above.
    pub source_ip: Option<IpAddr>,
}

const SSHD: &[&str] = &["sshd", "sshd-session", "sshd-auth"];
const CRON: &[&str] = &["cron", "crond", "anacron", "atd", "fcron"];
const CONTAINER_PARENTS: &[&str] = &[
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "conmon",
    "runc",
    "crun",
    "runsc",
    "youki",
    "crio",
];
const LOGIN: &[&str] = &["login", "agetty", "getty", "mingetty", "mgetty"];

/// What backs a parent's name before egret believes it starts entries: anyone can run a
/// program of their own named `sshd` or `cron`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Its executable is a file owned by root that no group or other user may write, and it
    /// ran as root (effective uid 0 at its last exec or fork): sshd, cron, login. A user can
    /// start neither without root.
    RootProgram,
    /// Its executable is such a file, whoever runs it: a container runtime (rootless
    /// containers run theirs as a user; a user who starts the real one does start a container).
    RootFile,
}

/// The owner and mode of a process's executable file, as `stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeFile {
    pub uid: u32,
    pub mode: u32,
}

impl Backing {
    /// Whether a parent that ran as `euid` from the executable `file` (`None`: unknown, or not
    /// the file it runs) meets it.
    pub fn met(self, euid: Option<u32>, file: Option<ExeFile>) -> bool {
        const GROUP_OR_OTHER_WRITE: u32 = 0o022;
        let root_file = file.is_some_and(|f| f.uid == 0 && f.mode & GROUP_OR_OTHER_WRITE == 0);
        match self {
            Self::RootProgram => root_file && euid == Some(0),
            Self::RootFile => root_file,
        }
    }
}

/// Does a process that now runs `name` (with terminal `tty`), whose parent is `parent`, begin
/// an entry? Which kind. A process that does not inherits its parent's entry leader.
///
/// A parent is known by its name (`process.name`: its executable's basename), and that name
/// is believed only when `backed` says the parent meets the [`Backing`] asked (asked only of a
/// parent whose name matches, so it may cost a `stat`). A parent that does not is an ordinary
/// process. PID 1 needs no backing.
pub fn entry_type(
    name: &str,
    parent: &Ancestor,
    tty: Option<u32>,
    backed: impl FnOnce(Backing) -> bool,
) -> Option<EntryType> {
    let parent_name = parent.name.as_str();
    let (kind, backing) = if SSHD.contains(&parent_name) {
        // sshd's own processes (privilege separation) are not the entry yet.
        (
            (!SSHD.contains(&name)).then_some(EntryType::Sshd),
            Backing::RootProgram,
        )
    } else if CRON.contains(&parent_name) {
        (
            (!CRON.contains(&name)).then_some(EntryType::Cron),
            Backing::RootProgram,
        )
    } else if CONTAINER_PARENTS.contains(&parent_name) {
        // The runtime's own helpers (`runc init`, another shim) are not the container yet.
        (
            (!CONTAINER_PARENTS.contains(&name)).then_some(EntryType::Container),
            Backing::RootFile,
        )
    } else if LOGIN.contains(&parent_name) {
        let kind = if tty.is_some_and(is_console) {
            EntryType::Console
        } else {
            EntryType::Terminal
        };
        (Some(kind), Backing::RootProgram)
    } else {
        return (parent.pid == 1).then_some(EntryType::Init);
    };
    kind.filter(|_| backed(backing))
}

/// The system console or a virtual console (`/dev/console`, `/dev/ttyN`).
fn is_console(tty: u32) -> bool {
    let (major, minor) = (tty >> 20, tty & 0xf_ffff);
    (major == 5 && minor == 1) || (major == 4 && minor < 64)
}

/// A terminal's name as `ps` shows it: `pts/3`, `tty1`, `ttyS0`, `console`.
pub fn tty_name(tty: u32) -> String {
    let (major, minor) = (tty >> 20, tty & 0xf_ffff);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 0 => "tty".to_owned(),
        5 if minor == 1 => "console".to_owned(),
        _ => format!("char:{major}:{minor}"),
    }
}

/// The remote address of the SSH client of the session that `sshd_pid` (the sshd process the
/// login's first process was started by) serves: the peer of the established TCP socket it
/// holds, read from its own `/proc` (its network namespace). Unforgeable by the person logged
/// in, unlike `SSH_CONNECTION` in their environment.
pub fn ssh_client(sshd_pid: u32) -> Option<IpAddr> {
    let inodes: Vec<u64> = fs::read_dir(format!("/proc/{sshd_pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| socket_inode(fs::read_link(fd.path()).ok()?.to_str()?))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    ["tcp", "tcp6"].into_iter().find_map(|table| {
        let text = fs::read_to_string(format!("/proc/{sshd_pid}/net/{table}")).ok()?;
        established_peer(&text, &inodes)
    })
}

/// The inode of a socket an `/proc/PID/fd/N` link names (`socket:[12345]`).
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The remote address of the first established socket of `/proc/net/tcp{,6}` text whose inode
/// is one of `inodes`. Pure, so it is fuzzed (`fuzz/fuzz_targets/proc_text.rs`).
pub fn established_peer(text: &str, inodes: &[u64]) -> Option<IpAddr> {
    const ESTABLISHED: &str = "01";
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
        if *state != ESTABLISHED || !inodes.contains(&inode.parse().ok()?) {
            return None;
        }
        parse_proc_addr(remote.split(':').next()?)
    })
}

/// An address as `/proc/net/tcp` prints it: the kernel's bytes as native-endian 32-bit words
/// in hex.
fn parse_proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] => Some(IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ancestor(pid: u32, name: &str) -> Ancestor {
        Ancestor {
            pid,
            executable: Some(format!("/usr/sbin/{name}")),
            name: name.to_owned(),
            args: vec![name.to_owned()],
            start_ns: None,
            euid: Some(0),
        }
    }

    /// `entry_type` with every parent backed.
    fn entry(name: &str, parent: &Ancestor, tty: Option<u32>) -> Option<EntryType> {
        entry_type(name, parent, tty, |_| true)
    }

    #[test]
    fn entries_by_the_parent_that_started_them() {
        let sshd = ancestor(700, "sshd-session");
        assert_eq!(entry("bash", &sshd, None), Some(EntryType::Sshd));
        assert_eq!(entry("sshd-session", &sshd, None), None, "privsep");
        assert_eq!(
            entry("sh", &ancestor(90, "cron"), None),
            Some(EntryType::Cron)
        );
        assert_eq!(
            entry("backup", &ancestor(1, "systemd"), None),
            Some(EntryType::Init)
        );
        assert_eq!(
            entry("nginx", &ancestor(300, "containerd-shim-runc-v2"), None),
            Some(EntryType::Container)
        );
        assert_eq!(entry("runc", &ancestor(300, "runc"), None), None);
        assert_eq!(
            entry("bash", &ancestor(40, "login"), Some(4 << 20 | 1)),
            Some(EntryType::Console)
        );
        assert_eq!(
            entry("bash", &ancestor(40, "login"), Some(136 << 20 | 2)),
            Some(EntryType::Terminal)
        );
        assert_eq!(entry("curl", &ancestor(41, "bash"), None), None);
    }

    /// A name alone starts no entry: `/tmp/sshd` run by a user is an ordinary parent, and
    /// what each kind of parent is asked to show.
    #[test]
    fn a_parent_named_like_a_starter_must_be_backed() {
        let mut asked = Vec::new();
        for parent in ["sshd", "cron", "atd", "login", "conmon"] {
            let kind = entry_type("sh", &ancestor(90, parent), None, |backing| {
                asked.push((parent, backing));
                false
            });
            assert_eq!(kind, None, "{parent} not backed");
        }
        assert_eq!(
            asked,
            [
                ("sshd", Backing::RootProgram),
                ("cron", Backing::RootProgram),
                ("atd", Backing::RootProgram),
                ("login", Backing::RootProgram),
                ("conmon", Backing::RootFile),
            ]
        );
        // Neither PID 1 nor a parent of no starter's name is asked anything.
        let never = |_: Backing| -> bool { panic!("asked") };
        assert_eq!(
            entry_type("svc", &ancestor(1, "systemd"), None, never),
            Some(EntryType::Init)
        );
        assert_eq!(entry_type("curl", &ancestor(41, "bash"), None, never), None);
    }

    #[test]
    fn backing_is_a_root_owned_file_others_cannot_write_and_for_programs_root() {
        let file = |uid, mode| Some(ExeFile { uid, mode });
        let program = Backing::RootProgram;
        assert!(program.met(Some(0), file(0, 0o100_755)));
        assert!(program.met(Some(0), file(0, 0o104_711)), "setuid root");
        assert!(
            !program.met(Some(1000), file(0, 0o100_755)),
            "a user ran it"
        );
        assert!(!program.met(None, file(0, 0o100_755)), "no known user");
        assert!(
            !program.met(Some(0), file(1000, 0o100_755)),
            "a user's file"
        );
        assert!(!program.met(Some(0), file(0, 0o100_775)), "group-writable");
        assert!(!program.met(Some(0), file(0, 0o100_757)), "world-writable");
        assert!(!program.met(Some(0), None), "not the file it runs");
        assert!(Backing::RootFile.met(Some(1000), file(0, 0o100_755)));
        assert!(!Backing::RootFile.met(Some(0), file(1000, 0o100_755)));
    }

    #[test]
    fn terminal_names() {
        assert_eq!(tty_name(136 << 20 | 3), "pts/3");
        assert_eq!(tty_name(137 << 20 | 1), "pts/257");
        assert_eq!(tty_name(4 << 20 | 1), "tty1");
        assert_eq!(tty_name(4 << 20 | 64), "ttyS0");
        assert_eq!(tty_name(5 << 20 | 1), "console");
        assert_eq!(tty_name(200 << 20 | 7), "char:200:7");
    }

    #[test]
    fn peers_of_established_sockets() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n\
           1: 0100007F:0016 0700710A:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n";
        assert_eq!(
            established_peer(v4, &[222]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 113, 0, 7)))
        );
        assert_eq!(established_peer(v4, &[111]), None, "listening");
        assert_eq!(established_peer(v4, &[333]), None, "not its socket");
        let v6 = "header\n   0: 00000000000000000000000001000000:0016 0000000000000000FFFF00000700710A:D431 01 0:0 0:0 0 0 0 444 1\n";
        assert_eq!(
            established_peer(v6, &[444]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 113, 0, 7))),
            "a v4-mapped peer is its IPv4 address"
        );
        assert_eq!(established_peer("garbage\n 0: zz", &[1]), None);
    }
}

//! Who a task is, as the kernel programs read it from `task_struct` at exec and fork (and the
//! effective user at each connect): its login identity, users, session and terminal
//! ([`TaskIdentity`]), and the file it runs ([`ExeId`], and the path components of
//! [`crate::ExecEvent`]).
//!
//! The Rust eBPF toolchain has no CO-RE field relocations, so the byte offsets of the fields
//! read are found by userspace in the running kernel's BTF (`agent/src/btf.rs`) and handed to
//! the programs as one global, [`KernelOffsets`].

/// An offset the running kernel does not have (`task_struct.loginuid` without
/// `CONFIG_AUDIT`): the programs leave the field at its "unknown" value.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Byte offsets of every kernel struct field the programs read, from the running kernel's BTF.
/// All zero (the object's value) means "not set": the programs then read nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// 1 once userspace filled the struct; the programs read no kernel memory before.
    pub valid: u32,
    pub task_loginuid: u32,
    pub task_sessionid: u32,
    pub task_cred: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `file.f_path` + `path.dentry` / `path.mnt`.
    pub file_dentry: u32,
    pub file_mnt: u32,
    pub file_f_inode: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_name` + `qstr.name`.
    pub dentry_name: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_generation: u32,
    pub inode_i_nlink: u32,
    pub sb_s_dev: u32,
    /// Offset of the `vfsmount` embedded in `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub mount_mnt_ns: u32,
    pub vfsmount_mnt_root: u32,
    pub signal_tty: u32,
    /// `signal_struct.pids[PIDTYPE_SID]`: the array's offset plus the index times 8.
    pub signal_sid_pid: u32,
    /// `pid.numbers[0].nr`: the id in the initial pid namespace.
    pub pid_nr: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub driver_major: u32,
    pub driver_minor_start: u32,
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` + `ns_common.inum`.
    pub mnt_ns_inum: u32,
    /// Not an offset: the inode number of the host's mount namespace (`/proc/1/ns/mnt`).
    pub host_mnt_ns: u32,
}

/// A task's identity: login, users, session, terminal. The kernel copies all of it to a child
/// at fork, so a fork event's (the parent's) is the child's too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskIdentity {
    /// Audit login uid (`/proc/PID/loginuid`); [`UNSET_ID`] when never set.
    pub loginuid: u32,
    /// Audit session id (`/proc/PID/sessionid`); [`UNSET_ID`] when never set.
    pub sessionid: u32,
    /// Real and effective user and group (initial user namespace).
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// Session id: the pid (initial namespace) of the session leader; 0 when unknown.
    pub sid: u32,
    /// Controlling terminal as `major << 20 | minor` (the kernel's `dev_t`); 0 when none.
    pub tty: u32,
}

/// The "not set" value of the login uid and session id (`AUDIT_UID_UNSET`, `(u32)-1`).
pub const UNSET_ID: u32 = u32::MAX;

/// The identity of an executable file, which a process cannot choose by naming itself: its
/// file system's device, inode number and inode generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeId {
    /// `super_block.s_dev`, the kernel's `dev_t` (`major << 20 | minor`).
    pub dev: u32,
    /// `inode.i_generation`: a new file that reuses a freed inode number gets another one on
    /// the file systems that set it (ext4, XFS, btrfs, tmpfs); 0 where the file system does not.
    pub generation: u32,
    pub ino: u64,
}

/// Path components of an executable kept (from the file up); deeper paths are cut.
pub const EXE_DEPTH: usize = 16;
/// Bytes kept of each path component, with its NUL; longer names are cut.
pub const EXE_NAME_LEN: usize = 128;

/// Flags in [`crate::ExecEvent::flags`].
/// The argument vector was longer than [`crate::EXEC_ARGS_LEN`]: cut.
pub const EXEC_FLAG_ARGS_TRUNCATED: u32 = 1 << 1;
/// The arguments could not be read from the new image's memory.
pub const EXEC_FLAG_READ_FAILED: u32 = 1 << 2;
/// The executable's path was deeper than [`EXE_DEPTH`] or a name longer than
/// [`EXE_NAME_LEN`]: the components are not the whole path.
pub const EXEC_FLAG_EXE_PATH_CUT: u32 = 1 << 3;
/// The executable has no link left in any directory (a memfd, or a file deleted since).
pub const EXEC_FLAG_EXE_UNLINKED: u32 = 1 << 4;
/// The walk up from the executable ended at a mount outside any mount namespace the host can
/// name (an internal mount: memfd, anonymous files).
pub const EXEC_FLAG_EXE_INTERNAL: u32 = 1 << 5;
/// The kernel offsets were not set: no identity, no executable path, no arguments.
pub const EXEC_FLAG_NO_OFFSETS: u32 = 1 << 6;
/// The walk up from the executable ended at the root of a mount namespace other than the
/// exec'ing task's own (the file was reached through `/proc/PID/root` or a file descriptor
/// from another namespace): its path there may name another file here.
pub const EXEC_FLAG_EXE_FOREIGN_NS: u32 = 1 << 7;

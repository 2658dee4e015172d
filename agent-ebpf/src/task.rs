//! Reads of the running task's kernel structs: its identity (login uid, session, users,
//! session leader, terminal), the file it runs and that file's path, and its arguments. What
//! the process says about itself (`comm`, `argv[0]`, a path it chose) is never used to name the
//! file: the path is walked up from the executable's dentry by the kernel's own links.
//!
//! There are no CO-RE relocations in the Rust toolchain: every field is read with
//! `bpf_probe_read_kernel` at the offset userspace found in the running kernel's BTF and set in
//! the `KERNEL_OFFSETS` global before loading. Until it is set (`valid == 0`) nothing is read.
//!
//! No programs and no maps. Uses nothing else of the crate.

use core::ptr::{addr_of, addr_of_mut, read_volatile};

use agent_common::{
    task::{
        EXEC_FLAG_ARGS_TRUNCATED, EXEC_FLAG_EXE_FOREIGN_NS, EXEC_FLAG_EXE_INTERNAL,
        EXEC_FLAG_EXE_PATH_CUT, EXEC_FLAG_EXE_UNLINKED, EXEC_FLAG_NO_OFFSETS,
        EXEC_FLAG_READ_FAILED, EXE_DEPTH, EXE_NAME_LEN, OFFSET_ABSENT, UNSET_ID,
    },
    ExeId, ExecEvent, KernelOffsets, TaskIdentity, EXEC_ARGS_LEN,
};
use aya_ebpf::helpers::{
    bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_probe_read_kernel_str, bpf_probe_read_user},
};

/// Field offsets of the running kernel, set by userspace (`agent/src/btf.rs`).
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_loginuid: 0,
    task_sessionid: 0,
    task_cred: 0,
    task_mm: 0,
    task_signal: 0,
    cred_uid: 0,
    cred_euid: 0,
    cred_gid: 0,
    cred_egid: 0,
    mm_exe_file: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    file_dentry: 0,
    file_mnt: 0,
    file_f_inode: 0,
    dentry_d_parent: 0,
    dentry_name: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    inode_i_generation: 0,
    inode_i_nlink: 0,
    sb_s_dev: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    mount_mnt_ns: 0,
    vfsmount_mnt_root: 0,
    signal_tty: 0,
    signal_sid_pid: 0,
    pid_nr: 0,
    tty_index: 0,
    tty_driver: 0,
    driver_major: 0,
    driver_minor_start: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    host_mnt_ns: 0,
};

/// One offset of `KERNEL_OFFSETS`, read volatile so the loader's value is used.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a read of a field of a valid, initialised static.
        unsafe { read_volatile(addr_of!(KERNEL_OFFSETS.$field)) }
    };
}

/// Most mounts crossed on the way up from an executable (bind mounts, overlays).
const MOUNT_CROSSINGS: usize = 8;

/// The `T` at `base + offset` in kernel memory; `None` for a null base, an absent field or a
/// failed read.
#[inline(always)]
fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == OFFSET_ABSENT {
        return None;
    }
    // SAFETY: the helper checks the address; a bad one is an error, never a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// A pointer field: `None` when null too.
#[inline(always)]
fn pointer(base: u64, offset: u32) -> Option<u64> {
    read::<u64>(base, offset).filter(|p| *p != 0)
}

fn offsets_valid() -> bool {
    off!(valid) == 1
}

/// The running task (`struct task_struct *`), when the offsets are set.
#[inline(always)]
fn current_task() -> Option<u64> {
    if !offsets_valid() {
        return None;
    }
    // SAFETY: helper without arguments.
    Some(unsafe { bpf_get_current_task() }).filter(|t| *t != 0)
}

/// The running task's identity. Without offsets, only the real ids the helpers give.
#[inline(always)]
pub(crate) fn current_identity() -> TaskIdentity {
    let uid_gid = bpf_get_current_uid_gid();
    let (uid, gid) = (uid_gid as u32, (uid_gid >> 32) as u32);
    let mut identity = TaskIdentity {
        loginuid: UNSET_ID,
        sessionid: UNSET_ID,
        uid,
        euid: uid,
        gid,
        egid: gid,
        sid: 0,
        tty: 0,
    };
    let Some(task) = current_task() else {
        return identity;
    };
    identity.loginuid = read(task, off!(task_loginuid)).unwrap_or(UNSET_ID);
    identity.sessionid = read(task, off!(task_sessionid)).unwrap_or(UNSET_ID);
    if let Some(cred) = pointer(task, off!(task_cred)) {
        identity.euid = read(cred, off!(cred_euid)).unwrap_or(uid);
        identity.egid = read(cred, off!(cred_egid)).unwrap_or(gid);
    }
    if let Some(signal) = pointer(task, off!(task_signal)) {
        if let Some(sid_pid) = pointer(signal, off!(signal_sid_pid)) {
            identity.sid = read(sid_pid, off!(pid_nr)).unwrap_or(0);
        }
        identity.tty = tty(signal).unwrap_or(0);
    }
    identity
}

/// The controlling terminal of a task's `signal_struct`, as `major << 20 | minor`.
#[inline(always)]
fn tty(signal: u64) -> Option<u32> {
    let tty = pointer(signal, off!(signal_tty))?;
    let index: i32 = read(tty, off!(tty_index))?;
    let driver = pointer(tty, off!(tty_driver))?;
    let major: i32 = read(driver, off!(driver_major))?;
    let minor_start: i32 = read(driver, off!(driver_minor_start))?;
    let minor = minor_start.wrapping_add(index) as u32 & 0xf_ffff;
    Some(((major as u32 & 0xfff) << 20) | minor)
}

/// The effective uid and gid of the running task ([`UNSET_ID`] without offsets).
#[inline(always)]
pub(crate) fn current_effective_ids() -> (u32, u32) {
    let Some(cred) = current_task().and_then(|task| pointer(task, off!(task_cred))) else {
        return (UNSET_ID, UNSET_ID);
    };
    let euid = read(cred, off!(cred_euid)).unwrap_or(UNSET_ID);
    let egid = read(cred, off!(cred_egid)).unwrap_or(UNSET_ID);
    (euid, egid)
}

/// The inode number of the host's mount namespace (0 when unknown).
#[inline(always)]
pub(crate) fn host_mount_namespace() -> u32 {
    off!(host_mnt_ns)
}

/// The inode number of the running task's mount namespace.
#[inline(always)]
fn current_mount_namespace() -> Option<u32> {
    let task = current_task()?;
    let nsproxy = pointer(task, off!(task_nsproxy))?;
    let ns = pointer(nsproxy, off!(nsproxy_mnt_ns))?;
    read::<u32>(ns, off!(mnt_ns_inum))
}

/// Whether the running task is in the host's mount namespace, where paths mean what the
/// policy's `processes:` paths mean (a container's `/usr/bin/curl` is another file).
#[inline(always)]
pub(crate) fn in_host_mount_namespace() -> bool {
    let host = host_mount_namespace();
    host != 0 && current_mount_namespace() == Some(host)
}

/// The file the running task executes (`mm->exe_file`), if it has one.
#[inline(always)]
fn current_exe_file() -> Option<(u64, u64)> {
    let task = current_task()?;
    let mm = pointer(task, off!(task_mm))?;
    Some((mm, pointer(mm, off!(mm_exe_file))?))
}

/// The identity of a `struct file *`'s inode (`None` when a read fails).
#[inline(always)]
fn file_id(file: u64) -> Option<ExeId> {
    let inode = pointer(file, off!(file_f_inode))?;
    let sb = pointer(inode, off!(inode_i_sb))?;
    let dev: u32 = read(sb, off!(sb_s_dev))?;
    let ino: u64 = read(inode, off!(inode_i_ino))?;
    let generation: u32 = read(inode, off!(inode_i_generation)).unwrap_or(0);
    Some(ExeId {
        dev,
        generation,
        ino,
    })
}

/// Whether a `struct file *`'s inode has no link left in any directory.
#[inline(always)]
fn file_unlinked(file: u64) -> bool {
    pointer(file, off!(file_f_inode)).and_then(|inode| read::<u32>(inode, off!(inode_i_nlink)))
        == Some(0)
}

/// The identity of the file the running task executes (block mode's `processes:`).
#[inline(always)]
pub(crate) fn current_exe_id() -> Option<ExeId> {
    let (_, file) = current_exe_file()?;
    file_id(file)
}

/// Fills the identity, executable and arguments of an exec event from the new image.
///
/// # Safety
/// `event` is a ring-buffer reservation of an `ExecEvent`.
#[inline(always)]
pub(crate) unsafe fn fill_exec(event: *mut ExecEvent) {
    // SAFETY: the caller's promise; every write stays inside the reservation.
    unsafe {
        (*event).identity = current_identity();
        (*event).exe = ExeId::default();
        (*event).exe_depth = 0;
        (*event).exe_mnt_ns = 0;
        (*event).exe_name_lens = [0; EXE_DEPTH];
        (*event).args_len = 0;
        let Some((mm, file)) = current_exe_file() else {
            (*event).flags |= if offsets_valid() {
                EXEC_FLAG_READ_FAILED
            } else {
                EXEC_FLAG_NO_OFFSETS
            };
            return;
        };
        if let Some(id) = file_id(file) {
            (*event).exe = id;
        }
        if file_unlinked(file) {
            (*event).flags |= EXEC_FLAG_EXE_UNLINKED;
        }
        (*event).flags |= walk_path(file, event);
        // A path is only meaningful in the namespace it was walked in.
        let walked = (*event).exe_mnt_ns;
        if walked != 0 && current_mount_namespace() != Some(walked) {
            (*event).flags |= EXEC_FLAG_EXE_FOREIGN_NS;
        }
        (*event).flags |= read_args(mm, event);
    }
}

/// Copies the new image's argument vector (`mm->arg_start..arg_end`); returns flags.
///
/// # Safety
/// `event` is a ring-buffer reservation of an `ExecEvent`.
#[inline(always)]
unsafe fn read_args(mm: u64, event: *mut ExecEvent) -> u32 {
    let Some(start) = read::<u64>(mm, off!(mm_arg_start)) else {
        return EXEC_FLAG_READ_FAILED;
    };
    let Some(end) = read::<u64>(mm, off!(mm_arg_end)) else {
        return EXEC_FLAG_READ_FAILED;
    };
    let mut flags = 0;
    let mut len = end.saturating_sub(start);
    if len > EXEC_ARGS_LEN as u64 {
        len = EXEC_ARGS_LEN as u64;
        flags |= EXEC_FLAG_ARGS_TRUNCATED;
    }
    // SAFETY: the caller's promise; at most EXEC_ARGS_LEN bytes go into `args`. The pages
    // were written by the kernel during this exec, so they are present.
    unsafe {
        let args = addr_of_mut!((*event).args) as *mut u8;
        let len = len as u32;
        if len > 0 && bpf_probe_read_user(args.cast(), len, start as *const _) == 0 {
            (*event).args_len = len;
        } else if len > 0 {
            flags |= EXEC_FLAG_READ_FAILED;
        }
    }
    flags
}

/// Walks from `file`'s dentry up to the root of its mount namespace, crossing mounts, writing
/// one name per component into `exe_names` (from the file up); returns flags.
///
/// Shaped for the verifier: the outer loop's counter is the component written, so every path
/// reaching an iteration has the same depth and states prune; mount crossings, which write
/// nothing, are an inner loop of their own.
///
/// # Safety
/// `event` is a ring-buffer reservation of an `ExecEvent`.
#[inline(always)]
unsafe fn walk_path(file: u64, event: *mut ExecEvent) -> u32 {
    // One `let`-`else` at a time: a tuple of `Option`s leaves LLVM an undefined register
    // on the `None` path, which the verifier refuses to see spilled.
    let Some(mut dentry) = pointer(file, off!(file_dentry)) else {
        return EXEC_FLAG_EXE_PATH_CUT;
    };
    let Some(vfsmount) = pointer(file, off!(file_mnt)) else {
        return EXEC_FLAG_EXE_PATH_CUT;
    };
    let mount_mnt = off!(mount_mnt) as u64;
    let mut mount = vfsmount.wrapping_sub(mount_mnt);
    let mut depth = 0;
    while depth < EXE_DEPTH {
        // At the root of a mount: go to where it is mounted, or stop at the top.
        let mut crossings = 0;
        while crossings < MOUNT_CROSSINGS {
            let Some(root) = pointer(mount.wrapping_add(mount_mnt), off!(vfsmount_mnt_root)) else {
                return EXEC_FLAG_EXE_PATH_CUT;
            };
            if dentry != root {
                break;
            }
            let Some(parent) = pointer(mount, off!(mount_mnt_parent)) else {
                return EXEC_FLAG_EXE_PATH_CUT;
            };
            if parent == mount {
                // SAFETY: the caller's promise.
                return unsafe { top_of(mount, event) };
            }
            let Some(mountpoint) = pointer(mount, off!(mount_mnt_mountpoint)) else {
                return EXEC_FLAG_EXE_PATH_CUT;
            };
            dentry = mountpoint;
            mount = parent;
            crossings += 1;
        }
        if crossings == MOUNT_CROSSINGS {
            return EXEC_FLAG_EXE_PATH_CUT;
        }
        let Some(name) = pointer(dentry, off!(dentry_name)) else {
            return EXEC_FLAG_EXE_PATH_CUT;
        };
        // SAFETY: the caller's promise; `depth < EXE_DEPTH` keeps the slot inside the array,
        // and the helper writes at most EXE_NAME_LEN bytes into it. Zeroed first: the policy
        // hashes whole slots (`policy::on_exec`).
        let n = unsafe {
            let slot = (addr_of_mut!((*event).exe_names) as *mut u8).add(depth * EXE_NAME_LEN);
            core::ptr::write_bytes(slot, 0, EXE_NAME_LEN);
            bpf_probe_read_kernel_str(slot.cast(), EXE_NAME_LEN as u32, name as *const _)
        };
        if n <= 0 {
            return EXEC_FLAG_EXE_PATH_CUT;
        }
        // SAFETY: as above.
        unsafe {
            (addr_of_mut!((*event).exe_name_lens) as *mut u8)
                .add(depth)
                .write((n - 1) as u8);
            (*event).exe_depth = depth as u32 + 1;
        }
        if n as usize >= EXE_NAME_LEN {
            return EXEC_FLAG_EXE_PATH_CUT; // the name may be longer
        }
        let Some(up) = pointer(dentry, off!(dentry_d_parent)) else {
            return EXEC_FLAG_EXE_PATH_CUT;
        };
        if up == dentry {
            // A dentry of no directory (a memfd, an anonymous file): its name is all there is.
            return EXEC_FLAG_EXE_INTERNAL;
        }
        dentry = up;
        depth += 1;
    }
    EXEC_FLAG_EXE_PATH_CUT
}

/// Flags for a walk that reached `mount`, the top of its tree: none for a mount namespace's
/// root (whose inode number goes in `exe_mnt_ns`: the path means a file only there), internal
/// for a mount of no namespace (the kernel's own: pipes, memfds).
///
/// # Safety
/// `event` is a ring-buffer reservation of an `ExecEvent`.
#[inline(always)]
unsafe fn top_of(mount: u64, event: *mut ExecEvent) -> u32 {
    let ns: u64 = read(mount, off!(mount_mnt_ns)).unwrap_or(0);
    // `MNT_NS_INTERNAL` is an error pointer.
    if ns == 0 || ns > u64::MAX - 4095 {
        return EXEC_FLAG_EXE_INTERNAL;
    }
    // An anonymous namespace (a detached tree) has inode 0.
    let inum = read::<u32>(ns, off!(mnt_ns_inum)).unwrap_or(0);
    // SAFETY: the caller's promise.
    unsafe { (*event).exe_mnt_ns = inum };
    0
}

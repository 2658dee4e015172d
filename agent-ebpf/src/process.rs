//! The process table's life cycle, host-wide: userspace names the process behind each
//! connection from these events (executable, arguments, parent), not from `/proc` after the
//! fact, when a short-lived process is already gone.
//!
//! Programs (tracepoints; the field offsets are checked against the tracepoint format files by
//! userspace at start-up, `agent/src/tracefs.rs`):
//! - `sys_enter_execve`/`sys_enter_execveat` (`syscalls:`): the path and argv an `execve` asked
//!   for, read from user memory before the new image replaces them (`ExecArgs`).
//! - `sched_process_exec` (`sched:`): the exec succeeded; the binary as the kernel resolved it
//!   (`Exec`).
//! - `task_newtask` (`task:`): a new process (threads are skipped): its parent (`Fork`).
//! - `sched_process_exit` (`sched:`): a thread-group leader exited (`Exit`).
//!
//! No maps of its own: everything goes to the ring buffer (`shared`). Uses only `shared`.

use core::ptr::addr_of_mut;

use agent_common::{
    EventKind, ExecArgsEvent, ExecEvent, ExitEvent, ForkEvent, EXEC_ARGS_START_LIMIT, EXEC_ARG_LEN,
    EXEC_FLAG_ARGS_TRUNCATED, EXEC_FLAG_PATH_TRUNCATED, EXEC_FLAG_READ_FAILED, EXEC_MAX_ARGS,
    EXEC_PATH_LEN,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::shared::{emit, Origin};

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    capture_exec_at(&ctx, 16, 24)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    capture_exec_at(&ctx, 24, 32)
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    emit(
        EventKind::Exec,
        Origin::CurrentTask,
        |event: *mut ExecEvent| {
            // SAFETY: a reservation of an `ExecEvent`; tracepoint fields at the offsets of its
            // format file; the file name is read as a bounded string.
            unsafe {
                let data_loc = ctx.read_at::<u32>(8).unwrap_or(0);
                let name_off = (data_loc & 0xffff) as usize;
                (*event).old_tid = ctx.read_at::<i32>(16).unwrap_or(0) as u32;
                let filename = addr_of_mut!((*event).filename) as *mut u8;
                let n = bpf_probe_read_kernel_str(
                    filename.cast(),
                    EXEC_PATH_LEN as u32,
                    (ctx.as_ptr() as *const u8).add(name_off).cast(),
                );
                (*event).filename_len = if n > 0 { n as u32 - 1 } else { 0 };
            }
        },
    );
    0
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // SAFETY: tracepoint fields at the offsets of task/task_newtask/format.
    let (child, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(8).unwrap_or(0),
            ctx.read_at::<u64>(32).unwrap_or(0),
        )
    };
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    emit(
        EventKind::Fork,
        Origin::CurrentTask,
        |event: *mut ForkEvent| {
            // SAFETY: a reservation of a `ForkEvent`.
            unsafe {
                (*event).child_tgid = child as u32;
                (*event)._pad = 0;
                (*event).clone_flags = clone_flags;
            }
        },
    );
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return 0; // a thread, not the group leader
    }
    // The header is the whole event.
    emit(EventKind::Exit, Origin::CurrentTask, |_: *mut ExitEvent| {});
    0
}

/// Reads the `filename` and `argv` pointers of a `sys_enter_execve(at)` tracepoint at the
/// offsets of its format file (checked by userspace at start-up) and captures them.
#[inline(always)]
fn capture_exec_at(ctx: &TracePointContext, filename_off: usize, argv_off: usize) -> u32 {
    // SAFETY: reads of the tracepoint's fixed fields.
    let (filename, argv) = unsafe {
        (
            ctx.read_at::<u64>(filename_off).unwrap_or(0),
            ctx.read_at::<u64>(argv_off).unwrap_or(0),
        )
    };
    capture_exec(filename as *const u8, argv as *const *const u8);
    0
}

/// Captures `filename` and `argv` (user pointers) of an `execve`/`execveat` call.
fn capture_exec(filename: *const u8, argv: *const *const u8) {
    emit(
        EventKind::ExecArgs,
        Origin::CurrentTask,
        |event: *mut ExecArgsEvent| {
            // SAFETY: a reservation of an `ExecArgsEvent`; every write below stays inside it.
            unsafe { fill_exec_args(event, filename, argv) }
        },
    );
}

/// Writes the path and arguments (user memory) into an `ExecArgsEvent`.
///
/// # Safety
/// `event` is a reservation of an `ExecArgsEvent`.
#[inline(always)]
unsafe fn fill_exec_args(event: *mut ExecArgsEvent, filename: *const u8, argv: *const *const u8) {
    // SAFETY: the caller's promise; the helpers write at most the lengths they are given, and
    // the argument offset stays under EXEC_ARGS_START_LIMIT + EXEC_ARG_LEN = the buffer's size.
    unsafe {
        let mut flags = 0u32;
        let path = addr_of_mut!((*event).path) as *mut u8;
        let path_len =
            match bpf_probe_read_user_str(path.cast(), EXEC_PATH_LEN as u32, filename.cast()) {
                n if n > 0 => n as u32 - 1,
                _ => {
                    flags |= EXEC_FLAG_READ_FAILED;
                    0
                }
            };
        if path_len as usize >= EXEC_PATH_LEN - 1 {
            flags |= EXEC_FLAG_PATH_TRUNCATED;
        }
        (*event).path_len = path_len;

        let args = addr_of_mut!((*event).args) as *mut u8;
        let mut off: u32 = 0;
        let mut argc: u32 = 0;
        let mut i = 0;
        while i < EXEC_MAX_ARGS {
            let arg: *const u8 = match bpf_probe_read_user(argv.add(i)) {
                Ok(p) => p,
                Err(_) => {
                    flags |= EXEC_FLAG_READ_FAILED;
                    break;
                }
            };
            if arg.is_null() {
                break;
            }
            if off > EXEC_ARGS_START_LIMIT as u32 {
                flags |= EXEC_FLAG_ARGS_TRUNCATED;
                break;
            }
            let n = bpf_probe_read_user_str(
                args.add(off as usize).cast(),
                EXEC_ARG_LEN as u32,
                arg.cast(),
            );
            if n <= 0 {
                flags |= EXEC_FLAG_READ_FAILED;
                break;
            }
            if n as usize >= EXEC_ARG_LEN {
                flags |= EXEC_FLAG_ARGS_TRUNCATED;
            }
            off += n as u32;
            argc += 1;
            i += 1;
        }
        if i == EXEC_MAX_ARGS {
            // There may be more: check whether argv goes on.
            if let Ok(next) = bpf_probe_read_user::<*const u8>(argv.add(i)) {
                if !next.is_null() {
                    flags |= EXEC_FLAG_ARGS_TRUNCATED;
                }
            }
        }
        (*event).argc = argc;
        (*event).args_len = off;
        (*event).flags = flags;
    }
}

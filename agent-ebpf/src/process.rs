//! The process table's life cycle, host-wide: userspace names the process behind each
//! connection from these events (executable, arguments, parent), not from `/proc` after the
//! fact, when a short-lived process is already gone.
//!
//! Programs (tracepoints; the field offsets are checked against the tracepoint format files by
//! userspace at start-up, `agent/src/tracefs.rs`):
//! - `sched_process_exec` (`sched:`): the exec succeeded (`Exec`): the path it named, and from
//!   the new image (`task`) the executable's identity and path, the arguments the kernel laid
//!   out (after any `#!` rewrite) and the task's login identity, users, session and terminal.
//! - `task_newtask` (`task:`): a new process (threads are skipped): its parent, and the
//!   identity the child inherits (`Fork`).
//! - `sched_process_exit` (`sched:`): a thread-group leader exited (`Exit`).
//!
//! No maps of its own: everything goes to the ring buffer (`shared`). Uses `shared`, `task` and `policy` (an exec'd file earns the scope bits of the `processes:`
//! selectors its path matches).

use core::ptr::addr_of_mut;

use agent_common::{
    EventKind, ExecEvent, ExitEvent, ForkEvent, EXEC_FLAG_PATH_TRUNCATED, EXEC_PATH_LEN,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_kernel_str},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::{
    policy,
    shared::{emit, Origin},
    task,
};

const CLONE_THREAD: u64 = 0x0001_0000;

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
                (*event).flags = if n as usize >= EXEC_PATH_LEN {
                    EXEC_FLAG_PATH_TRUNCATED
                } else {
                    0
                };
                task::fill_exec(event);
                policy::on_exec(&*event);
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
                (*event).identity = task::current_identity();
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

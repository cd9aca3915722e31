//! Process lifecycle of tracked TGIDs, sent through the `EVENTS` ring buffer so userspace can
//! snapshot /proc/PID/maps while the process is alive (symbolization after it exits) and know
//! when the traced tree has ended. Later: the child-process ledger.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::RingBuf,
    programs::TracePointContext,
};
use tracer_common::{
    counters,
    limits::EVENTS_RING_BYTES,
    process::{ProcEvent, EVENT_EXEC, EVENT_EXIT, EVENT_FORK},
};

use crate::target::{global, is_tracked};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Offset of `group_dead` in sched:sched_process_exit, or u32::MAX on kernels without it.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFF: u32 = 32;

fn emit(kind: u32, tgid: u32, tid: u32, parent_tgid: u32) {
    match EVENTS.reserve::<ProcEvent>(0) {
        Some(mut entry) => {
            entry.write(ProcEvent {
                kind,
                tgid,
                tid,
                parent_tgid,
                ts_ns: unsafe { bpf_ktime_get_ns() },
                exit_code: 0,
                _pad: 0,
                comm: bpf_get_current_comm().unwrap_or([0; 16]),
            });
            entry.submit(0);
        }
        None => crate::counters::bump(counters::EVENTS_DROPPED),
    }
}

/// Called by task_newtask in the parent's context (comm is the parent's).
pub fn emit_fork(child_tgid: u32, parent_tgid: u32) {
    emit(EVENT_FORK, child_tgid, child_tgid, parent_tgid);
}

pub fn sched_process_exec(_ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if is_tracked(tgid) {
        emit(EVENT_EXEC, tgid, pid_tgid as u32, 0);
    }
    Ok(())
}

pub fn sched_process_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_tracked(tgid) {
        return Ok(());
    }
    let off = global(&EXIT_GROUP_DEAD_OFF);
    let group_dead = if off == u32::MAX {
        tgid == pid_tgid as u32
    } else {
        // SAFETY: offset from the format file.
        unsafe { ctx.read_at::<u8>(off as usize) }.map_err(|e| e as i64)? != 0
    };
    // A thread dying inside exit/exit_group never reaches sys_exit, nor switches back in.
    let _ = crate::syscalls::INFLIGHT.remove(pid_tgid as u32);
    let _ = crate::sched::OFF_START.remove(pid_tgid as u32);
    if group_dead {
        emit(EVENT_EXIT, tgid, pid_tgid as u32, 0);
    }
    Ok(())
}

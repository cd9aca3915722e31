//! Process lifecycle of tracked TGIDs, sent through the `EVENTS` ring buffer (rare events):
//! fork/exec/exit (userspace snapshots /proc/PID/maps while the process is alive, and builds
//! the child-process ledger), signals generated and delivered, wait calls returning, pidfds
//! obtained, and tasks freed.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::map,
    maps::{ring_buf::RingBufEntry, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{
    counters,
    limits::EVENTS_RING_BYTES,
    process::{
        ExecArgs, LifeEvent, ARGS_CHUNK, ARGS_LEN, EVENT_EXEC, EVENT_EXEC_ARGS, EVENT_EXIT, EVENT_FORK, EVENT_FREE,
        EVENT_SIGNAL, EVENT_SIGNAL_DELIVER, EVENT_SKIPPED,
    },
};

use crate::target::{global, is_tracked};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Offset of `group_dead` in sched:sched_process_exit, or u32::MAX on kernels without it.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFF: u32 = 32;
/// Offsets in sched:sched_process_exec, signal:signal_generate, signal:signal_deliver and
/// sched:sched_process_free (tracefs format files).
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFF: u32 = 8;
#[unsafe(no_mangle)]
static SIGGEN_SIG_OFF: u32 = 8;
#[unsafe(no_mangle)]
static SIGGEN_CODE_OFF: u32 = 16;
#[unsafe(no_mangle)]
static SIGGEN_COMM_OFF: u32 = 20;
#[unsafe(no_mangle)]
static SIGGEN_PID_OFF: u32 = 36;
#[unsafe(no_mangle)]
static SIGGEN_RESULT_OFF: u32 = 44;
#[unsafe(no_mangle)]
static SIGDEL_SIG_OFF: u32 = 8;
#[unsafe(no_mangle)]
static SIGDEL_CODE_OFF: u32 = 16;
/// Offset of task_struct.exit_code (from the kernel's BTF), or u32::MAX when unknown. do_exit
/// stores the wait status there before sched_process_exit fires.
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFF: u32 = u32::MAX;
/// Offsets of task_struct.mm and mm_struct.arg_start (arg_end follows it), from the kernel's
/// BTF, or u32::MAX when unknown (then argv comes from /proc or the exec'd filename).
#[unsafe(no_mangle)]
static TASK_MM_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static MM_ARG_START_OFF: u32 = u32::MAX;

/// task_struct.mm's offset (u32::MAX: unknown), for creds.rs.
#[inline(always)]
pub fn task_mm_off() -> u32 {
    global(&TASK_MM_OFF)
}

/// Whether current has no address space any more (an exiting thread past exit_mm): it has no
/// user stack to take. False when task_struct.mm's offset is unknown.
#[inline(always)]
pub fn current_without_mm() -> bool {
    let off = global(&TASK_MM_OFF);
    if off == u32::MAX {
        return false;
    }
    let task = unsafe { bpf_get_current_task() } as usize;
    // SAFETY: a kernel read through the helper.
    matches!(unsafe { bpf_probe_read_kernel((task + off as usize) as *const usize) }, Ok(0))
}

/// Go preempts goroutines with SIGURG, thousands of times a second: not lifecycle.
const SIGURG: i32 = 23;

/// An event being filled in place in the ring buffer. Each program reserves its own record:
/// a shared per-CPU scratch buffer would be overwritten when a program runs nested inside
/// another on the same CPU (sched_process_free from an RCU softirq, signal_generate from a
/// timer interrupt, interrupting a syscall-exit program), garbling both events.
pub struct Event(Option<RingBufEntry<LifeEvent>>);

impl core::ops::Deref for Event {
    type Target = LifeEvent;
    fn deref(&self) -> &LifeEvent {
        // SAFETY: initialized in new_event; Some until sent or dropped.
        unsafe { self.0.as_ref().unwrap_unchecked().assume_init_ref() }
    }
}

impl core::ops::DerefMut for Event {
    fn deref_mut(&mut self) -> &mut LifeEvent {
        // SAFETY: as above.
        unsafe { self.0.as_mut().unwrap_unchecked().assume_init_mut() }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            e.discard(0);
        }
    }
}

/// A zeroed record of type `T` reserved in EVENTS (a full ring counts as a dropped event).
/// The caller fills it in and submits it.
#[inline(always)]
pub fn reserve_zeroed<T>() -> Option<RingBufEntry<T>> {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        crate::counters::lose!(counters::EVENTS_DROPPED, "lifecycle event dropped: the events ring buffer is full");
        return None;
    };
    // SAFETY: the reserved record is ours; every record type here is plain data.
    unsafe { core::ptr::write_bytes(entry.as_mut_ptr(), 0, 1) };
    Some(entry)
}

/// A zeroed event of `kind` for the current task, reserved in the ring buffer.
#[inline(always)]
pub fn new_event(kind: u32) -> Option<Event> {
    let mut entry = reserve_zeroed::<LifeEvent>()?;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: zeroed by reserve_zeroed; now set the common fields.
    let e = unsafe { entry.assume_init_mut() };
    e.kind = kind;
    e.tgid = (pid_tgid >> 32) as u32;
    e.tid = pid_tgid as u32;
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    Some(Event(Some(entry)))
}

#[inline(always)]
pub fn send(mut e: Event) {
    if let Some(entry) = e.0.take() {
        entry.submit(0);
    }
}

/// Called by task_newtask in the parent's context for a new process (not a thread).
pub fn emit_fork(child_tgid: u32, parent_tgid: u32, clone_flags: u64) {
    // The child runs the parent's image until it execs (then userspace decides again).
    crate::ustack::inherit(child_tgid, parent_tgid);
    if let Some(mut e) = new_event(EVENT_FORK) {
        e.other = parent_tgid;
        e.tgid = child_tgid;
        e.a = clone_flags as i64;
        send(e);
    }
}

pub fn sched_process_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_tracked(tgid) {
        return Ok(());
    }
    // A program the session's owner could not inspect (creds.rs): not followed from here on,
    // nor are the processes it starts; nothing of its new image is read (not even argv).
    let skipped = crate::creds::foreign(task_mm_off());
    if skipped.is_some() {
        crate::target::untrack(tgid);
        crate::ustack::forget(tgid);
    } else {
        send_exec_args(tgid);
    }
    let Some(mut e) = new_event(if skipped.is_some() { EVENT_SKIPPED } else { EVENT_EXEC }) else { return Ok(()) };
    if let Some((why, euid)) = skipped {
        e.a = why;
        e.b = euid as i64;
    }
    // __data_loc: low 16 bits offset of the string in the record, high 16 bits its length.
    let loc: u32 = unsafe { ctx.read_at(global(&EXEC_FILENAME_OFF) as usize) }.map_err(|e| e as i64)?;
    let src = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut e.text) };
    send(e);
    Ok(())
}

/// The new image's argv (mm->arg_start..arg_end, which execve has just filled in), in reads
/// that never pass its end: what follows it on the stack may be only the filename and a null
/// pointer before the end of the mapping.
#[inline(always)]
fn send_exec_args(tgid: u32) {
    let (task_mm, arg_start) = (global(&TASK_MM_OFF), global(&MM_ARG_START_OFF));
    if task_mm == u32::MAX || arg_start == u32::MAX {
        return;
    }
    let task = unsafe { bpf_get_current_task() } as usize;
    // SAFETY: kernel reads through the helper.
    let Ok(mm) = (unsafe { bpf_probe_read_kernel((task + task_mm as usize) as *const usize) }) else { return };
    let Ok([start, end]) = (unsafe { bpf_probe_read_kernel((mm + arg_start as usize) as *const [u64; 2]) }) else {
        return;
    };
    if end <= start {
        return;
    }
    let Some(mut entry) = reserve_zeroed::<ExecArgs>() else { return };
    // SAFETY: zeroed by reserve_zeroed.
    let a = unsafe { entry.assume_init_mut() };
    a.kind = EVENT_EXEC_ARGS;
    a.tgid = tgid;
    let full = (end - start) as usize;
    let len = if full > ARGS_LEN { ARGS_LEN } else { full };
    a.len = len as u32;
    a.truncated = (full > ARGS_LEN) as u32;
    a.ok = read_args(start, len, a) as u32;
    entry.submit(0);
}

/// Reads argv's `len` bytes from `start` into `a` (see ExecArgs); false if a read failed.
#[inline(always)]
fn read_args(start: u64, len: usize, a: &mut ExecArgs) -> bool {
    use aya_ebpf::helpers::generated::bpf_probe_read_user as read;
    let end = start + len as u64;
    if len < ARGS_CHUNK {
        // The chunk that ends where argv ends: the bytes before it are the stack's pointer
        // arrays, always mapped.
        // SAFETY: the destination is ARGS_CHUNK bytes of the reserved record.
        return unsafe { read(a.tail.as_mut_ptr().cast(), ARGS_CHUNK as u32, (end - ARGS_CHUNK as u64) as *const _) }
            == 0;
    }
    for k in 0..ARGS_LEN / ARGS_CHUNK {
        let off = k * ARGS_CHUNK;
        if off + ARGS_CHUNK > len {
            break;
        }
        // SAFETY: off + ARGS_CHUNK <= len <= ARGS_LEN: inside buf.
        if unsafe { read(a.buf.as_mut_ptr().add(off).cast(), ARGS_CHUNK as u32, (start + off as u64) as *const _) } != 0
        {
            return false;
        }
    }
    if len % ARGS_CHUNK == 0 {
        return true;
    }
    // The rest: the chunk that ends at argv's end (it overlaps the last whole one).
    let off = (len - ARGS_CHUNK) & (ARGS_LEN - 1);
    if off + ARGS_CHUNK > ARGS_LEN {
        return false;
    }
    // SAFETY: off + ARGS_CHUNK <= ARGS_LEN, checked above for the verifier.
    unsafe { read(a.buf.as_mut_ptr().add(off).cast(), ARGS_CHUNK as u32, (end - ARGS_CHUNK as u64) as *const _) == 0 }
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
    crate::threads::remove(pid_tgid as u32);
    // Its last run ends here for the timeline (its final switch-out finds no thread entry).
    if crate::timeline::on() {
        crate::timeline::exit(pid_tgid as u32, tgid, crate::clock::now());
    }
    if group_dead {
        if let Some(mut e) = new_event(EVENT_EXIT) {
            let off = global(&TASK_EXIT_CODE_OFF);
            if off != u32::MAX {
                let task = unsafe { bpf_get_current_task() } as usize;
                // SAFETY: kernel read through the helper; a failed read leaves b = 0 (unknown).
                if let Ok(code) = unsafe { bpf_probe_read_kernel((task + off as usize) as *const i32) } {
                    e.a = code as i64;
                    e.b = 1;
                }
            }
            send(e);
        }
    }
    Ok(())
}

/// signal:signal_generate runs in the sender's context: record signals a tracked process sends
/// or a tracked process is sent (kill, tgkill, pidfd_send_signal and kernel-generated alike).
pub fn signal_generate(ctx: &TracePointContext) -> Result<(), i64> {
    let sig: i32 = unsafe { ctx.read_at(global(&SIGGEN_SIG_OFF) as usize) }.map_err(|e| e as i64)?;
    if sig == SIGURG {
        return Ok(());
    }
    let target: i32 = unsafe { ctx.read_at(global(&SIGGEN_PID_OFF) as usize) }.map_err(|e| e as i64)?;
    let sender = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(target as u32) && !is_tracked(sender) {
        return Ok(());
    }
    let Some(mut e) = new_event(EVENT_SIGNAL) else { return Ok(()) };
    e.other = target as u32;
    e.a = sig as i64;
    e.b = unsafe { ctx.read_at::<i32>(global(&SIGGEN_CODE_OFF) as usize) }.unwrap_or(0) as i64;
    e.c = unsafe { ctx.read_at::<i32>(global(&SIGGEN_RESULT_OFF) as usize) }.unwrap_or(0) as i64;
    if let Ok(comm) = unsafe { ctx.read_at::<[u8; 16]>(global(&SIGGEN_COMM_OFF) as usize) } {
        e.text[..16].copy_from_slice(&comm);
    }
    send(e);
    Ok(())
}

pub fn signal_deliver(ctx: &TracePointContext) -> Result<(), i64> {
    if !is_tracked((bpf_get_current_pid_tgid() >> 32) as u32) {
        return Ok(());
    }
    let sig: i32 = unsafe { ctx.read_at(global(&SIGDEL_SIG_OFF) as usize) }.map_err(|e| e as i64)?;
    if sig == SIGURG {
        return Ok(());
    }
    let Some(mut e) = new_event(EVENT_SIGNAL_DELIVER) else { return Ok(()) };
    e.a = sig as i64;
    e.b = unsafe { ctx.read_at::<i32>(global(&SIGDEL_CODE_OFF) as usize) }.unwrap_or(0) as i64;
    send(e);
    Ok(())
}

/// sched:sched_process_free runs when the task struct is released (after an RCU grace period,
/// so it lags the real reap): the pid may be reused from now on, so it leaves the tracked set.
/// A BTF tracepoint, not a perf-attached one: it runs from an RCU callback in softirq, often
/// on top of another BPF program (sched_process_exit's runs for microseconds), and the kernel
/// skips a perf-attached program whenever any BPF program is running on the CPU (3 % of frees
/// were lost in a 2,000-children run); a BTF tracepoint is skipped only while itself runs.
pub fn sched_process_free(ctx: &aya_ebpf::programs::BtfTracePointContext) -> Result<(), i64> {
    let (pid, _) = crate::target::task_ids(ctx.arg(0));
    if !is_tracked(pid) {
        return Ok(());
    }
    crate::target::untrack(pid);
    crate::ustack::forget(pid);
    if let Some(mut e) = new_event(EVENT_FREE) {
        e.tgid = pid;
        e.tid = pid;
        send(e);
    }
    Ok(())
}

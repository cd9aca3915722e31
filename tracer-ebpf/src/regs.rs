//! `rt_task_regs`: a task iterator (iter/task) that dumps the saved user registers of every
//! tracked thread. Userspace runs it at attach and at the end, for the threads blocked in a
//! syscall then: /proc/PID/task/TID/syscall shows their sp and pc but not bp, and without bp a
//! user-stack walk from /proc has to guess where the first frame is. No hook is involved: the
//! iterator runs only when userspace reads it.
use aya_ebpf::{
    bindings::{pt_regs, task_struct},
    helpers::generated::{bpf_seq_write, bpf_task_pt_regs},
};
use tracer_common::thread::TaskRegs;

use crate::target::{is_tracked, task_ids};

/// The iterator's context, `struct bpf_iter__task` (both fields are BTF pointers).
#[repr(C)]
pub struct IterTask {
    meta: *const IterMeta,
    task: *const u8,
}

/// `struct bpf_iter_meta`: only its first field, the seq_file to write to, is used.
#[repr(C)]
struct IterMeta {
    seq: *mut aya_ebpf::bindings::seq_file,
}

#[inline(always)]
pub fn task_regs(ctx: *const IterTask) -> i32 {
    // SAFETY: the verifier types the context fields and every load below against the kernel's
    // BTF (task_struct offsets are load-time constants, from the kernel's BTF too).
    unsafe {
        let task = (*ctx).task;
        if task.is_null() {
            return 0; // the end of the iteration
        }
        let (tid, tgid) = task_ids(task);
        if !is_tracked(tgid) {
            return 0;
        }
        let regs = bpf_task_pt_regs(task as *mut task_struct) as *const pt_regs;
        if regs.is_null() {
            return 0;
        }
        let rec = TaskRegs {
            tid,
            tgid,
            ip: core::ptr::read_volatile(core::ptr::addr_of!((*regs).rip)),
            sp: core::ptr::read_volatile(core::ptr::addr_of!((*regs).rsp)),
            bp: core::ptr::read_volatile(core::ptr::addr_of!((*regs).rbp)),
        };
        let seq = (*(*ctx).meta).seq;
        bpf_seq_write(seq, (&raw const rec).cast(), core::mem::size_of::<TaskRegs>() as u32);
    }
    0
}

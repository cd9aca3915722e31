//! `--timeline` records (tracer_common::timeline), sent through the `TIMELINE` ring buffer.
//!
//! `TIMELINE_ON` is a load-time constant: without `--timeline` it is 0 and the verifier drops
//! every call below, so the default session pays nothing for them. Records are output without
//! a wakeup (BPF_RB_NO_WAKEUP): userspace reads the ring on its tick, and a wakeup per context
//! switch would double what the target pays. A full ring counts TIMELINE_LOST.
use aya_ebpf::{macros::map, maps::RingBuf};
use tracer_common::{
    counters,
    timeline::{TlExit, TlSample, TlSwitch, TIMELINE_RING_OFF, TL_EXIT, TL_SAMPLE, TL_SWITCH},
    unwind::LeafFix,
};

use crate::{counters::lose, target::global};

/// Sized by the loader (TIMELINE_RING_BYTES with --timeline).
#[map]
static TIMELINE: RingBuf = RingBuf::with_byte_size(TIMELINE_RING_OFF, 0);

/// 1 with --timeline (set by the loader).
#[unsafe(no_mangle)]
static TIMELINE_ON: u32 = 0;

const BPF_RB_NO_WAKEUP: u64 = 1;

#[inline(always)]
pub fn on() -> bool {
    global(&TIMELINE_ON) != 0
}

#[inline(always)]
fn send<T: 'static>(rec: &T) {
    if TIMELINE.output::<T>(rec, BPF_RB_NO_WAKEUP).is_err() {
        lose!(counters::TIMELINE_LOST, "timeline record lost: the timeline ring buffer is full");
    }
}

/// A switch-in of a tracked thread (see TlSwitch).
#[inline(always)]
pub fn switch(tid: u32, tgid: u32, s: &tracer_common::sched::OffStart, now: u64) {
    let woken = s.ts != 0 && s.wake_ts >= s.ts;
    // The waker only when it was a traced thread in a syscall (see OffStart::waker_in_call).
    let by_call = woken && s.waker_in_call != 0;
    send(&TlSwitch {
        kind: TL_SWITCH,
        tid,
        tgid,
        state: s.state,
        off_ts: s.ts,
        wake_ts: if woken { s.wake_ts } else { 0 },
        ts: now,
        waker_tid: if by_call { s.waker_tid } else { 0 },
        waker_tgid: if by_call { s.waker_tgid } else { 0 },
    });
}

/// A tracked thread exits (sched_process_exit: its last run ends).
#[inline(always)]
pub fn exit(tid: u32, tgid: u32, now: u64) {
    send(&TlExit { kind: TL_EXIT, tid, tgid, _pad: 0, ts: now });
}

/// An on-CPU sample of a frame-pointer process.
#[inline(always)]
pub fn sample(tid: u32, tgid: u32, user_stack_id: i32, kernel_stack_id: i32, leaf: LeafFix) {
    let ts = crate::clock::now();
    send(&TlSample { kind: TL_SAMPLE, tid, tgid, user_stack_id, kernel_stack_id, _pad: 0, ts, leaf });
}

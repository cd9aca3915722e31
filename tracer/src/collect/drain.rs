//! Reads the kernel maps (after the programs are detached) into the raw part of a `Capture`.
use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use tracer_common::{counters as c, cpu::NO_STACK};

use crate::{
    capture::{Accounting, Addrs, Capture, OffState, RawOff, RawSample, RawSlowCall, RawSyscall, RawWake, StackErrors},
    loader::Probes,
};

use super::ustacks::{add_counted_samples, UserStacks, Ustacks};

/// `harvested`: syscall stats already taken out of the kernel map during the session.
/// `detach_mono`: CLOCK_MONOTONIC just before the programs were detached. Calls and blocks
/// still in flight then are measured to that instant, not to now: after detach no probe sees
/// them end, and the drain runs after the Go readings and the unwinding of the last stacks
/// (hundreds of ms), which would otherwise be counted as blocked time.
/// `ustacks`: the stack copies read from the ring (copy ids resolve there) and the on-CPU
/// samples of DWARF-mode processes counted in userspace. `timeline`: --timeline's records,
/// put on session time with their samples' stacks resolved here. `stacks`: the stack tables'
/// entries moved out during the session (stacks.rs).
pub fn drain(
    probes: &Probes,
    mut slow: super::slow::SlowStore,
    (start_mono, detach_mono): (u64, u64),
    harvested: Vec<(tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)>,
    ustacks: &Ustacks,
    timeline: Option<super::timeline::Reader>,
    stacks: super::stacks::StackTables,
) -> Result<Capture> {
    let n = probes.counters();
    let stacks = stacks.finish(probes)?;
    let (user_stacks, kernel_stacks) = (stacks.user, stacks.kernel);
    let users = UserStacks::new(&user_stacks, ustacks);
    let user = |tgid: u32, id: i32, count: u64| users.get(tgid, id, count);
    let (mut samples, mut offcpu) = on_and_off(probes, &users, &kernel_stacks)?;
    // Threads still blocked now: their time so far counts (a hung CLI shows up here). Off-CPU
    // timestamps are on the scheduler's clock: CLOCK_MONOTONIC converted with its offset
    // (syscall timestamps below are CLOCK_MONOTONIC itself).
    let now = detach_mono;
    let off_now = off_clock(probes, now);
    for (tid, s) in probes.off_in_flight()? {
        let ns = off_now.saturating_sub(s.ts);
        offcpu.push(RawOff {
            tgid: s.tgid,
            tid,
            user: user(s.tgid, s.user_stack_id, 1),
            kernel: frames(&kernel_stacks, s.kernel_stack_id),
            state: OffState::from_kernel(s.state),
            total_ns: ns,
            count: 1,
            max_ns: ns,
            in_flight: true,
            leaf: users.leaf(s.user_stack_id, s.leaf),
            ..Default::default()
        });
    }
    let wakeups: Vec<RawWake> = probes
        .wakeups()?
        .into_iter()
        .map(|(k, v)| RawWake {
            tgid: k.tgid,
            tid: k.tid,
            user: user(k.tgid, k.user_stack_id, 0),
            kernel: frames(&kernel_stacks, k.kernel_stack_id),
            waker_pid: k.waker_tgid,
            waker_tid: k.waker_tid,
            waker_comm: super::cstr(&k.waker_comm),
            waker_user: user(k.waker_tgid, k.waker_user_stack_id, 0),
            waker_kernel: frames(&kernel_stacks, k.waker_kernel_stack_id),
            total_ns: v.total_ns,
            count: v.count,
            max_ns: v.max_ns,
            leaf: users.leaf(k.user_stack_id, k.leaf),
            waker_leaf: users.leaf(k.waker_user_stack_id, k.waker_leaf),
        })
        .collect();
    let syscalls = raw_syscalls(probes.syscall_stats()?.into_iter().chain(harvested));
    // With --no-syscalls the probes still mark calls in flight (for the ledger and off-CPU),
    // but time none of them.
    if probes.syscall_latency() {
        for (tid, inf) in probes.syscalls_in_flight()? {
            slow.add_in_flight(tid, &inf, now.saturating_sub(inf.ts));
        }
    }
    let slow_calls: Vec<RawSlowCall> = slow
        .into_calls()
        .into_iter()
        .map(|r| RawSlowCall {
            tgid: r.call.tgid,
            tid: r.call.tid,
            nr: r.call.nr,
            start_ns: r.call.start_ns.saturating_sub(start_mono),
            duration_ns: r.call.duration_ns,
            ret: r.call.ret,
            user: user(r.call.tgid, r.call.user_stack_id, 0).to_vec(),
            kernel: frames(&kernel_stacks, r.call.kernel_stack_id).to_vec(),
            leaf: users.leaf(r.call.user_stack_id, r.call.leaf),
            args: r.call.args,
            extra: r.call.extra.to_vec(),
            fd_desc: r.fd_desc,
            pidfd_pid: r.pidfd_pid,
            in_flight: r.in_flight,
            ..Default::default()
        })
        .collect();
    // On-CPU samples of DWARF-mode processes, counted from their records.
    add_counted_samples(&mut samples, ustacks, |id| frames(&kernel_stacks, id).to_vec());
    samples.sort_by(|a, b| (a.tgid, a.tid, &a.user, &a.kernel).cmp(&(b.tgid, b.tid, &b.user, &b.kernel)));

    // Off-CPU clock → CLOCK_MONOTONIC → session time.
    let offset = probes.offcpu_clock_offset().unwrap_or(0);
    let to_session = |ts: u64| (ts as i64).wrapping_add(offset).wrapping_sub(start_mono as i64);
    let mut timeline =
        timeline.map(|r| r.finish(to_session, &users, &kernel_stacks, ustacks, n[c::TIMELINE_LOST as usize]));
    if let Some(t) = &mut timeline {
        let end = detach_mono.saturating_sub(start_mono);
        t.open = super::timeline::open(&probes.off_in_flight()?, to_session, end);
    }
    let drops: BTreeMap<u32, u64> = probes.ustack_drops()?.into_iter().collect();
    let (fp_stacks, unresolved) = users.counts();
    let unwind = ustacks.stats(&fp_stacks, &unresolved, &drops);
    let mut accounting = accounting(&n, syscalls.iter().map(|s| s.count).sum());
    (accounting.stacks_harvested, accounting.stack_id_conflicts) = (stacks.harvested, stacks.conflicts);
    if let Some(t) = &timeline {
        accounting.timeline_records = (t.switches.len() + t.exits.len() + t.samples.len()) as u64;
        (accounting.timeline_dropped, accounting.timeline_lost) = (t.dropped, t.lost);
    }
    Ok(Capture {
        unwind,
        accounting,
        cpu_samples: samples,
        offcpu,
        wakeups,
        syscalls,
        slow_calls,
        timeline,
        ..Default::default()
    })
}

pub(super) fn frames(map: &HashMap<i32, Addrs>, id: i32) -> Addrs {
    if id == NO_STACK || id < 0 {
        return Addrs::default();
    }
    map.get(&id).cloned().unwrap_or_default()
}

/// On-CPU sample counts and ended off-CPU blocks as the kernel maps hold them now.
fn on_and_off(
    probes: &Probes,
    users: &UserStacks<'_>,
    kernel_stacks: &HashMap<i32, Addrs>,
) -> Result<(Vec<RawSample>, Vec<RawOff>)> {
    let samples = probes
        .cpu_counts()?
        .into_iter()
        .map(|(k, count)| RawSample {
            tgid: k.tgid,
            tid: k.tid,
            user: users.get(k.tgid, k.user_stack_id, count).to_vec(),
            kernel: frames(kernel_stacks, k.kernel_stack_id).to_vec(),
            count,
            leaf: users.leaf(k.user_stack_id, k.leaf),
        })
        .collect();
    let offcpu = probes
        .offcpu()?
        .into_iter()
        .map(|(k, v)| RawOff {
            tgid: k.tgid,
            tid: k.tid,
            user: users.get(k.tgid, k.user_stack_id, v.count),
            kernel: frames(kernel_stacks, k.kernel_stack_id),
            state: OffState::from_kernel(k.state),
            total_ns: v.total_ns,
            count: v.count,
            max_ns: v.max_ns,
            in_flight: false,
            leaf: users.leaf(k.user_stack_id, k.leaf),
            ..Default::default()
        })
        .collect();
    Ok((samples, offcpu))
}

/// The on-CPU samples and ended off-CPU blocks so far (absolute counts, never reset), while
/// the programs run: what watch mode's periodic profiles are the differences of.
pub fn profiles_now(probes: &Probes, ustacks: &Ustacks) -> Result<Capture> {
    let user_stacks = probes.stacks("USER_STACKS")?;
    let kernel_stacks = probes.stacks("KERNEL_STACKS")?;
    let users = UserStacks::new(&user_stacks, ustacks);
    let (mut cpu_samples, offcpu) = on_and_off(probes, &users, &kernel_stacks)?;
    add_counted_samples(&mut cpu_samples, ustacks, |id| frames(&kernel_stacks, id).to_vec());
    Ok(Capture { cpu_samples, offcpu, ..Default::default() })
}

pub use crate::clock::monotonic_ns;

/// CLOCK_MONOTONIC `mono` on the scheduler's clock, which off-CPU timestamps are taken on.
pub fn off_clock(probes: &Probes, mono: u64) -> u64 {
    (mono as i64).wrapping_sub(probes.offcpu_clock_offset().unwrap_or(0)) as u64
}

/// The kernel's counters (`Probes::counters`) as the capture's accounting; `syscalls`: the
/// calls counted in the stats maps.
pub fn accounting(n: &[u64], syscalls: u64) -> Accounting {
    let errors = StackErrors {
        user_collision: n[c::USER_STACK_COLLISION as usize],
        user_error: n[c::USER_STACK_ERROR as usize],
        kernel_collision: n[c::KERNEL_STACK_COLLISION as usize],
        kernel_error: n[c::KERNEL_STACK_ERROR as usize],
    };
    Accounting {
        cpu_samples: n[c::CPU_SAMPLES as usize],
        lost_samples: n[c::CPU_KEYS_FULL as usize],
        stack_errors: errors.total(),
        stack_errors_by_reason: errors,
        offcpu_stack_errors: n[c::OFF_STACK_ERRORS as usize],
        tracked_map_full: n[c::TRACKED_FULL as usize],
        events_dropped: n[c::EVENTS_DROPPED as usize],
        offcpu_events: n[c::OFF_EVENTS as usize],
        offcpu_lost: n[c::OFF_LOST as usize],
        syscalls,
        syscalls_lost: n[c::SYSCALL_INFLIGHT_FULL as usize] + n[c::SYSCALL_STATS_FULL as usize],
        slow_calls_sent: n[c::SLOW_CALLS_SENT as usize],
        slow_calls_dropped: n[c::SLOW_CALLS_DROPPED as usize],
        threads_spilled: n[c::THREADS_SPILLED as usize],
        samples_exiting: n[c::SAMPLES_EXITING as usize],
        offcpu_exiting: n[c::OFF_EXITING as usize],
        // Read before detach, by collect::run.
        bpf_recursion_misses: Default::default(),
        go_unread: 0,
        ..Default::default()
    }
}

/// The kernel's per-(process, syscall) stats as the capture keeps them.
pub fn raw_syscalls(
    stats: impl Iterator<Item = (tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)>,
) -> Vec<RawSyscall> {
    stats
        .map(|(k, v)| RawSyscall {
            tgid: k.tgid,
            nr: k.nr,
            count: v.count,
            errors: v.errors,
            total_ns: v.total_ns,
            max_ns: v.max_ns,
            hist: v.hist.to_vec(),
        })
        .collect()
}

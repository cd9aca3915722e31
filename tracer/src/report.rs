//! The report tree serialized to report.json (one typed tree, extended by later sections) and
//! the pipeline capture → symbolize → analyze that builds it.
use serde::{Deserialize, Serialize};

use crate::{
    analyze::{
        cpu::{CpuProfile, TopFunction},
        offcpu::{OffEntry, OffcpuProfile, OffcpuSection, WakeEntry},
    },
    capture::{Accounting, Capture, Clock, EndedBy, TargetInfo},
    symbolize::{self, Resolver, StackInput},
};

pub const SCHEMA_VERSION: u32 = 1;
/// How many functions the top lists keep.
pub const TOP_N: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub target: TargetInfo,
    pub session: Session,
    pub accounting: Accounting,
    pub cpu: CpuSection,
    /// Absent with --no-offcpu.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu: Option<OffcpuSection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub duration_ms: u64,
    pub ended_by: EndedBy,
    pub sample_frequency_hz: u64,
    pub clock: Clock,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuSection {
    pub total_samples: u64,
    /// By self samples.
    pub top: Vec<TopFunction>,
    /// By total samples (function anywhere on the stack).
    pub top_total: Vec<TopFunction>,
}

/// Everything the renderers need.
pub struct Analysis {
    pub report: Report,
    pub cpu: CpuProfile,
    pub offcpu: OffcpuProfile,
}

/// Symbolizes off-CPU stacks and wakeups, and merges them.
fn offcpu_profile(capture: &Capture, resolver: &mut dyn Resolver) -> OffcpuProfile {
    fn input<'a>(tgid: u32, tid: u32, user: &'a [u64], kernel: &'a [u64]) -> StackInput<'a> {
        StackInput { tgid, tid, user, kernel, leaf: (0, 0), count: 0 }
    }
    let off: Vec<StackInput> = capture.offcpu.iter().map(|o| input(o.tgid, o.tid, &o.user, &o.kernel)).collect();
    let blocked: Vec<StackInput> = capture.wakeups.iter().map(|w| input(w.tgid, w.tid, &w.user, &w.kernel)).collect();
    let wakers: Vec<StackInput> =
        capture.wakeups.iter().map(|w| input(w.waker_pid, w.waker_tid, &w.waker_user, &w.waker_kernel)).collect();
    let off_stacks = symbolize::stacks(capture, &off, resolver);
    let blocked_stacks = symbolize::stacks(capture, &blocked, resolver);
    let waker_stacks = symbolize::stacks(capture, &wakers, resolver);
    let entries = capture
        .offcpu
        .iter()
        .zip(off_stacks)
        .map(|(o, s)| OffEntry { frames: s.frames, state: o.state, total_ns: o.total_ns, count: o.count, max_ns: o.max_ns, in_flight: o.in_flight })
        .collect();
    let wakeups = capture
        .wakeups
        .iter()
        .zip(blocked_stacks.into_iter().zip(waker_stacks))
        .map(|(w, (b, mut k))| {
            // The waker's root frame is its own name (it may be an untraced process).
            if let Some(root) = k.frames.first_mut() {
                *root = symbolize::Frame::process(&w.waker_comm);
            }
            WakeEntry {
                blocked: b.frames,
                waker: k.frames,
                waker_comm: w.waker_comm.clone(),
                waker_pid: w.waker_pid,
                waker_tid: w.waker_tid,
                total_ns: w.total_ns,
                count: w.count,
            }
        })
        .collect();
    OffcpuProfile::merge(entries, wakeups)
}

pub fn analyze(capture: &Capture, resolver: &mut dyn Resolver) -> Analysis {
    let stacks = symbolize::cpu_stacks(capture, resolver);
    let cpu = CpuProfile::from_stacks(&stacks);
    let (top, top_total) = cpu.top(TOP_N);
    let offcpu = offcpu_profile(capture, resolver);
    let s = &capture.session;
    let offcpu_section = s.min_block_us.map(|min_block_us| OffcpuSection {
        total_us: offcpu.total_us(),
        by_state: offcpu.by_state(),
        min_block_us,
        top: offcpu.top(TOP_N),
    });
    let report = Report {
        schema_version: SCHEMA_VERSION,
        target: capture.target.clone(),
        session: Session {
            duration_ms: s.duration_ms,
            ended_by: s.ended_by,
            sample_frequency_hz: s.sample_frequency_hz,
            clock: s.clock,
        },
        accounting: capture.accounting.clone(),
        cpu: CpuSection { total_samples: cpu.total_samples, top, top_total },
        offcpu: offcpu_section,
    };
    Analysis { report, cpu, offcpu }
}

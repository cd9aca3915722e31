//! The report tree serialized to report.json (one typed tree, extended by later sections) and
//! the pipeline capture → symbolize → analyze that builds it.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    analyze::target::TargetReport,
    analyze::{
        children::{self, ChildRecord, ChildrenConfig, Finding},
        cpu::{CpuProfile, TopFunction},
        offcpu::{OffEntry, OffcpuProfile, OffcpuSection, WakeEntry},
        syscalls::{self as sc, SlowCallReport, SyscallRow},
    },
    capture::{Accounting, Capture, Clock, EndedBy, Leaf},
    symbolize::{self, Frames, Prepared, Resolver, StackInput, Symbols},
};

pub const SCHEMA_VERSION: u32 = 1;
/// How many functions the top lists keep.
pub const TOP_N: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// What needs attention, most severe first (child-process findings).
    pub findings: Vec<Finding>,
    /// The target: the program it runs at the end, and how it ended (`exit`).
    pub target: TargetReport,
    pub session: Session,
    pub accounting: Accounting,
    pub cpu: CpuSection,
    /// Absent with --no-offcpu.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu: Option<OffcpuSection>,
    /// Per-syscall latency, by total time; absent with --no-syscalls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<SyscallRow>>,
    /// The slowest individual calls, slowest first (in-flight ones included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_syscalls: Option<Vec<SlowCallReport>>,
    /// The child-process ledger: every descendant of the target seen or found at attach.
    pub children: Vec<ChildRecord>,
    /// The Go runtime view: one entry per traced Go process (absent when none, or --no-go).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub go: Vec<crate::analyze::go::GoReport>,
    /// How complete the user stacks are (CFI unwinding, frame pointers, truncation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::analyze::unwind::UnwindSection>,
    /// Descendants a non-root caller's session left out (other credentials), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<crate::lifecycle::Skipped>,
}

/// Appends kernel frames known only by name (innermost first), root-first like the rest.
fn with_kernel_names(frames: Frames, names: &[String]) -> Frames {
    if names.is_empty() {
        return frames;
    }
    let mut frames = frames.to_vec();
    for n in names.iter().rev() {
        frames.push(symbolize::Frame {
            kind: symbolize::FrameKind::Kernel,
            function: n.as_str().into(),
            module: "[kernel]".into(),
            offset: 0,
        });
    }
    frames.into()
}

fn slow_inputs(capture: &Capture) -> Vec<StackInput<'_>> {
    capture
        .slow_calls
        .iter()
        .map(|c| StackInput { tgid: c.tgid, tid: c.tid, user: &c.user, kernel: &c.kernel, leaf: c.leaf, count: 0 })
        .collect()
}

/// Symbolizes and decodes the slow calls.
fn slow_calls(
    capture: &Capture,
    inputs: &[StackInput],
    prepared: Prepared,
    symbols: &mut Symbols,
    resolver: &mut dyn Resolver,
) -> Vec<SlowCallReport> {
    let stacks = symbols.finish(inputs, prepared, None, resolver);
    let mut out: Vec<SlowCallReport> = capture
        .slow_calls
        .iter()
        .zip(stacks)
        .map(|(c, st)| {
            let st = symbolize::Stack { frames: with_kernel_names(st.frames, &c.kernel_names), ..st };
            let name = sc::name_of(c.nr as i64);
            let leaf_function = symbolize::leaf_function(&st.frames);
            SlowCallReport {
                args: sc::decode(&name, &c.args, &c.extra, c.fd_desc.clone(), c.pidfd_pid),
                name,
                pid: c.tgid,
                tid: c.tid,
                start_ns: c.start_ns,
                duration_ns: c.duration_ns,
                ret: c.ret,
                ret_text: if c.in_flight { "(in flight)".into() } else { crate::analyze::sysargs::ret_text(c.ret) },
                frames: st.frames.iter().map(symbolize::Frame::folded_name).collect(),
                leaf_function,
                caller_function: symbolize::caller_function(&st.frames),
                in_flight: c.in_flight,
                started_before_attach: c.before_attach,
            }
        })
        .collect();
    out.sort_by(|a, b| b.duration_ns.cmp(&a.duration_ns).then_with(|| a.tid.cmp(&b.tid)));
    out
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
    /// Samples by process, most first (which child of a build burned the CPU).
    #[serde(default)]
    pub by_process: Vec<crate::analyze::build::ProcessCpu>,
}

/// Everything the renderers need.
pub struct Analysis {
    pub report: Report,
    pub cpu: CpuProfile,
    pub offcpu: OffcpuProfile,
    /// The signals the ledger's processes received (report.html's Gantt chart marks them).
    pub signals: Vec<children::signals::ReceivedSignal>,
    /// --timeline: the symbolized stack of each of the capture's timeline samples, in order.
    pub timeline_stacks: Vec<Frames>,
}

/// A wakeup from interrupt context runs on whatever task the interrupt hit: that task is not the
/// waker. Timer expiries (sleeps, timeouts) and other interrupts are named as such, with only
/// their kernel frames (`label`: the root frame for each wakeup, "[timer]" or "[interrupt]");
/// otherwise the waker is the task, with its own name as root frame.
struct OffInputs<'a> {
    off: Vec<StackInput<'a>>,
    blocked: Vec<StackInput<'a>>,
    wakers: Vec<StackInput<'a>>,
    /// Per wakeup: the interrupt label, or None for a waker in task context.
    labels: Vec<Option<&'static str>>,
}

impl<'a> OffInputs<'a> {
    fn new(capture: &'a Capture, symbols: &mut Symbols, resolver: &mut dyn Resolver) -> Self {
        fn input<'a>(tgid: u32, tid: u32, user: &'a [u64], kernel: &'a [u64], leaf: Leaf) -> StackInput<'a> {
            StackInput { tgid, tid, user, kernel, leaf, count: 0 }
        }
        // Wakers' kernel stacks first: a wakeup from an interrupt ran on whatever task it hit,
        // and that task's user stack is dropped anyway. Not looking it up keeps the binaries of
        // unrelated processes unread: under load, most timer wakeups interrupt some compiler,
        // and symbolizing its 100 MB libLLVM was most of rtrace's peak RSS (244 MB).
        let waker_kernels: Vec<&[u64]> = capture.wakeups.iter().map(|w| &w.waker_kernel[..]).collect();
        let labels: Vec<Option<&'static str>> =
            symbols.kernel_names(&waker_kernels, resolver).map(|names| interrupt_label(&names)).collect();
        let wakers = capture
            .wakeups
            .iter()
            .zip(&labels)
            .map(|(w, l)| match l {
                Some(_) => input(w.waker_pid, w.waker_tid, &[], &w.waker_kernel, Leaf::default()),
                None => input(w.waker_pid, w.waker_tid, &w.waker_user, &w.waker_kernel, w.waker_leaf),
            })
            .collect();
        OffInputs {
            off: capture.offcpu.iter().map(|o| input(o.tgid, o.tid, &o.user, &o.kernel, o.leaf)).collect(),
            blocked: capture.wakeups.iter().map(|w| input(w.tgid, w.tid, &w.user, &w.kernel, w.leaf)).collect(),
            wakers,
            labels,
        }
    }

    fn prepare(&self, symbols: &mut Symbols, resolver: &mut dyn Resolver) -> [Prepared; 3] {
        [&self.off, &self.blocked, &self.wakers].map(|list| symbols.prepare(list, resolver))
    }
}

/// What each process did, for the wait_stall verdicts: on-CPU time from the samples, off-CPU
/// blocks with the syscall their kernel stack shows (`off_syscalls`: per capture.offcpu record,
/// the syscall and whether the stack runs through the Go runtime).
fn evidence(
    capture: &Capture,
    cpu: &[symbolize::Stack],
    off_syscalls: &[(Option<String>, bool)],
) -> children::Evidence {
    let period_ns = 1_000_000_000 / capture.session.sample_frequency_hz.max(1);
    let mut ev = children::Evidence { offcpu: capture.session.min_block_us.is_some(), ..Default::default() };
    for s in &capture.cpu_samples {
        ev.add_cpu(s.tgid, s.count * period_ns);
    }
    for (o, syscall) in capture.offcpu.iter().zip(off_syscalls) {
        let b = children::Block {
            tid: o.tid,
            syscall: syscall.0.clone(),
            state: o.state,
            total_ns: o.total_ns,
            count: o.count,
            max_ns: o.max_ns,
            in_flight: o.in_flight,
        };
        ev.add_block(o.tgid, b);
    }
    // Go's runtime is on every stack of a Go program's threads.
    let root = capture.target.pid;
    ev.go_target = cpu.iter().any(|st| st.tgid == root && st.frames.iter().any(go_frame))
        || capture.offcpu.iter().zip(off_syscalls).any(|(o, (_, go))| o.tgid == root && *go);
    ev
}

fn go_frame(f: &symbolize::Frame) -> bool {
    f.kind == symbolize::FrameKind::User && f.function.starts_with("runtime.")
}

/// "[timer]" or "[interrupt]" when the kernel functions show a wakeup from interrupt context.
fn interrupt_label(kernel_functions: &[&str]) -> Option<&'static str> {
    let has = |needles: &[&str]| kernel_functions.iter().any(|f| needles.iter().any(|n| f.starts_with(n)));
    if has(&["hrtimer_wakeup", "__hrtimer_run_queues", "call_timer_fn"]) {
        Some("[timer]")
    } else if has(&["asm_sysvec_", "asm_common_interrupt", "handle_softirqs", "__do_softirq", "do_softirq"]) {
        Some("[interrupt]")
    } else {
        None
    }
}

/// Symbolizes off-CPU stacks and wakeups, and merges them; with, for each capture.offcpu
/// record, the syscall it blocked in and whether its stack runs through the Go runtime.
type OffFacts = Vec<(Option<String>, bool)>;
#[cfg(test)]
fn offcpu_profile(capture: &Capture, resolver: &mut dyn Resolver) -> (OffcpuProfile, OffFacts) {
    let mut symbols = Symbols::new(capture);
    let inputs = OffInputs::new(capture, &mut symbols, resolver);
    let prepared = inputs.prepare(&mut symbols, resolver);
    offcpu_with(capture, &inputs, prepared, &mut symbols, resolver)
}

fn offcpu_with(
    capture: &Capture,
    inputs: &OffInputs,
    [off, blocked, wakers]: [Prepared; 3],
    symbols: &mut Symbols,
    resolver: &mut dyn Resolver,
) -> (OffcpuProfile, OffFacts) {
    let off_stacks = symbols.finish(&inputs.off, off, None, resolver);
    let blocked_stacks = symbols.finish(&inputs.blocked, blocked, None, resolver);
    // The waker's root frame is its own name (it may be an untraced process), or the interrupt.
    let roots: Vec<&str> =
        capture.wakeups.iter().zip(&inputs.labels).map(|(w, l)| l.unwrap_or(w.waker_comm.as_str())).collect();
    let waker_stacks = symbols.finish(&inputs.wakers, wakers, Some(&roots), resolver);
    let entries: Vec<OffEntry> = capture
        .offcpu
        .iter()
        .zip(off_stacks)
        .map(|(o, s)| OffEntry {
            frames: with_kernel_names(s.frames, &o.kernel_names),
            state: o.state,
            total_ns: o.total_ns,
            count: o.count,
            max_ns: o.max_ns,
            in_flight: o.in_flight,
        })
        .collect();
    let wakeups = capture
        .wakeups
        .iter()
        .zip(&inputs.labels)
        .zip(blocked_stacks.into_iter().zip(waker_stacks))
        .map(|((w, label), (b, k))| {
            let (waker_comm, waker_pid, waker_tid) = match label {
                Some(l) => (l.to_string(), 0, 0),
                None => (w.waker_comm.clone(), w.waker_pid, w.waker_tid),
            };
            WakeEntry {
                blocked: b.frames,
                waker: k.frames,
                waker_comm,
                waker_pid,
                waker_tid,
                total_ns: w.total_ns,
                count: w.count,
            }
        })
        .collect();
    // Per distinct stack (shared lists: most records repeat one).
    let mut facts: HashMap<*const symbolize::Frame, (Option<String>, bool)> = HashMap::new();
    let syscalls = entries
        .iter()
        .map(|e| {
            facts
                .entry(e.frames.as_ptr())
                .or_insert_with(|| (crate::analyze::offcpu::syscall_of(&e.frames), e.frames.iter().any(go_frame)))
                .clone()
        })
        .collect();
    (OffcpuProfile::merge(entries, wakeups), syscalls)
}

pub fn analyze(capture: &Capture, resolver: &mut dyn Resolver) -> Analysis {
    // One symbolization for all stack lists: each address is looked up once, each distinct
    // stack built once (see symbolize::Symbols).
    let mut symbols = Symbols::new(capture);
    let off_inputs = OffInputs::new(capture, &mut symbols, resolver);
    let cpu_inputs = symbolize::cpu_inputs(capture);
    let slow_inputs = slow_inputs(capture);
    let cpu_prepared = symbols.prepare_cpu(&cpu_inputs, resolver);
    let off_prepared = off_inputs.prepare(&mut symbols, resolver);
    let slow_prepared = capture.session.slow_top.map(|_| symbols.prepare(&slow_inputs, resolver));
    // The Go view's stacks too: a build's Go processes share their binaries with the samples.
    let go_stacks = crate::analyze::go::GoStacks::new(capture);
    let go_inputs = go_stacks.inputs(capture);
    let go_prepared = symbols.prepare(&go_inputs, resolver);
    let tl_inputs = timeline_inputs(capture);
    let tl_prepared = symbols.prepare_cpu(&tl_inputs, resolver);
    let stacks = symbols.finish(&cpu_inputs, cpu_prepared, None, resolver);
    let cpu = CpuProfile::from_stacks(&stacks);
    let (top, top_total) = cpu.top(TOP_N);
    // The Go view before the off-CPU stacks are built: its line tables (12 MB for a build's
    // `compile`) are dropped by then, and the two never take memory at once.
    let go_symbolized = symbols.finish(&go_inputs, go_prepared, None, resolver);
    let go = crate::analyze::go::reports(capture, &go_stacks, &go_symbolized);
    let (offcpu, off_syscalls) = offcpu_with(capture, &off_inputs, off_prepared, &mut symbols, resolver);
    let s = &capture.session;
    let offcpu_section = s.min_block_us.map(|min_block_us| OffcpuSection {
        total_us: offcpu.total_us(),
        by_state: offcpu.by_state(),
        min_block_us,
        top: offcpu.top(TOP_N),
    });
    let timeline_stacks =
        symbols.finish(&tl_inputs, tl_prepared, None, resolver).into_iter().map(|s| s.frames).collect();
    let mut ev = evidence(capture, &stacks, &off_syscalls);
    ev.go_waiters = go.iter().map(|g| (g.pid, g.goroutines.waiters.clone())).collect();
    let kids = crate::analyze::children::analyze_with(
        &capture.lifecycle,
        &ChildrenConfig { slow_reap_ns: s.slow_reap_ms * 1_000_000, wait_stall_ns: s.wait_stall_ms * 1_000_000 },
        &ev,
    );
    let signals = children::signals::received(&capture.lifecycle, &kids.children);
    let mut findings = kids.findings;
    findings.extend(crate::analyze::gc::findings(&go, s.duration_ms));
    findings.extend(crate::analyze::goleak::findings(capture, &go));
    // Stable: each analysis' own order within a (severity, kind).
    findings.sort_by_key(|f| (f.severity, f.kind));
    let report = Report {
        schema_version: SCHEMA_VERSION,
        findings,
        children: kids.children,
        target: crate::analyze::target::report(&capture.target, &capture.lifecycle),
        session: Session {
            duration_ms: s.duration_ms,
            ended_by: s.ended_by,
            sample_frequency_hz: s.sample_frequency_hz,
            clock: s.clock,
        },
        accounting: capture.accounting.clone(),
        cpu: CpuSection {
            total_samples: cpu.total_samples,
            top,
            top_total,
            by_process: crate::analyze::build::cpu_by_process(&capture.cpu_samples, &capture.processes),
        },
        offcpu: offcpu_section,
        syscalls: s.slow_top.map(|_| sc::rows(&capture.syscalls)),
        slowest_syscalls: slow_prepared.map(|p| slow_calls(capture, &slow_inputs, p, &mut symbols, resolver)),
        go,
        unwind: crate::analyze::unwind::analyze(capture),
        skipped: capture.lifecycle.skipped.clone(),
    };
    Analysis { report, cpu, offcpu, signals, timeline_stacks }
}

/// --timeline's samples, as stacks to symbolize (one each, in the capture's order).
fn timeline_inputs(capture: &Capture) -> Vec<StackInput<'_>> {
    let samples = capture.timeline.iter().flat_map(|t| &t.samples);
    samples
        .map(|s| StackInput { tgid: s.tgid, tid: s.tid, user: &s.user, kernel: &s.kernel, leaf: s.leaf, count: 1 })
        .collect()
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;

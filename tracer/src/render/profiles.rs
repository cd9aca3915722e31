//! The session's pprof profiles built in memory from an analysis: on-CPU (cpu.pb.gz), off-CPU
//! (offcpu.pb.gz) and wall clock (on- and off-CPU in one, nanoseconds). output.rs writes the
//! first two to the report directory; `rtrace serve` answers /debug/pprof/{profile,offcpu,wall}
//! with them.
use crate::{
    analyze::offcpu::state_frame,
    render::pprof::{self, Profile, Spec},
    report::Analysis,
    symbolize::{Frame, FrameKind},
};

/// The profile's start: now minus the session's length (pprof shows it as the time taken).
pub fn start_nanos(analysis: &Analysis) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64 - analysis.report.session.duration_ms as i64 * 1_000_000)
        .unwrap_or(0)
}

/// Nanoseconds one on-CPU sample stands for.
fn period_ns(analysis: &Analysis) -> i64 {
    1_000_000_000 / analysis.report.session.sample_frequency_hz.max(1) as i64
}

fn duration_nanos(analysis: &Analysis) -> i64 {
    analysis.report.session.duration_ms as i64 * 1_000_000
}

/// On-CPU samples: `samples/count` and `cpu/nanoseconds` (cpu the default), as Go's CPU profile.
pub fn cpu(analysis: &Analysis, time_nanos: i64) -> Profile {
    let r = &analysis.report;
    let period = period_ns(analysis);
    let stacks: Vec<_> =
        analysis.cpu.stacks.iter().map(|(f, c)| (f.clone(), vec![*c as i64, *c as i64 * period])).collect();
    let spec = Spec {
        sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
        default_sample_type: "cpu",
        period_type: ("cpu", "nanoseconds"),
        period,
        time_nanos,
        duration_nanos: duration_nanos(analysis),
        comment: format!("rtrace: pid {} ({})", r.target.pid, r.target.comm),
    };
    pprof::build(&stacks, &spec)
}

/// Off-CPU time by blocking stack, the state (`[sleep]`, `[disk]`, …) as leaf: `offcpu/nanoseconds`
/// (the default) and `blocks/count`.
pub fn offcpu(analysis: &Analysis, time_nanos: i64) -> Profile {
    let r = &analysis.report;
    let entries = &analysis.offcpu.entries;
    let states: Vec<_> = entries.iter().map(|e| state_frame(e.state)).collect();
    let stacks =
        entries.iter().zip(&states).map(|(e, s)| (&e.frames[..], Some(s), vec![e.total_ns as i64, e.count as i64]));
    let spec = Spec {
        sample_types: &[("offcpu", "nanoseconds"), ("blocks", "count")],
        // Time, not the count of blocks (pprof's default would be the last type).
        default_sample_type: "offcpu",
        period_type: ("offcpu", "nanoseconds"),
        period: 1,
        time_nanos,
        duration_nanos: duration_nanos(analysis),
        comment: format!("rtrace off-CPU: pid {} ({})", r.target.pid, r.target.comm),
    };
    pprof::build_from(stacks, &spec)
}

/// Wall clock: every on-CPU stack (samples × period, leaf `[on-cpu]`) and every off-CPU one
/// (leaf its state) in `wall/nanoseconds`: where the threads' time went, running or not.
pub fn wall(analysis: &Analysis, time_nanos: i64) -> Profile {
    let r = &analysis.report;
    let period = period_ns(analysis);
    let on_cpu = Frame { kind: FrameKind::Process, function: "[on-cpu]".into(), module: "".into(), offset: 0 };
    let entries = &analysis.offcpu.entries;
    let states: Vec<_> = entries.iter().map(|e| state_frame(e.state)).collect();
    let on = analysis.cpu.stacks.iter().map(|(f, c)| (&f[..], Some(&on_cpu), vec![*c as i64 * period]));
    let off = entries.iter().zip(&states).map(|(e, s)| (&e.frames[..], Some(s), vec![e.total_ns as i64]));
    let spec = Spec {
        sample_types: &[("wall", "nanoseconds")],
        default_sample_type: "wall",
        period_type: ("wall", "nanoseconds"),
        period: 1,
        time_nanos,
        duration_nanos: duration_nanos(analysis),
        comment: format!("rtrace wall clock (on-CPU + off-CPU): pid {} ({})", r.target.pid, r.target.comm),
    };
    pprof::build_from(on.chain(off), &spec)
}

/// Drops kernel frames from every stack (a caller not allowed kernel stacks: serve/auth.rs).
pub fn strip_kernel(analysis: &mut Analysis) {
    let user = |f: &crate::symbolize::Frames| -> crate::symbolize::Frames {
        f.iter().filter(|x| x.kind != FrameKind::Kernel).cloned().collect()
    };
    for (f, _) in &mut analysis.cpu.stacks {
        *f = user(f);
    }
    for e in &mut analysis.offcpu.entries {
        e.frames = user(&e.frames);
    }
}

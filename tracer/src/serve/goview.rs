//! The Go runtime view of one process, read on demand for `/goroutine` and `/heap` (no
//! session, no BPF): goruntime's validated target, one goroutine snapshot or the heap
//! buckets, symbolized and analyzed as a session's last snapshot would be, rendered by the
//! session's own renderers — plus Go's `debug=1` grouped text, which only serve writes.
use std::{collections::BTreeMap, fmt::Write as _};

use super::backend::ServeError;
use crate::{
    analyze::go::GoReport,
    capture::{Capture, GoProcess, ProcessInfo},
    clock::monotonic_ns,
    goruntime::{target, track::Tracker},
    symbolize::BlazeResolver,
};

/// "pid 123 (bash)".
fn named(pid: u32) -> String {
    format!("pid {pid} ({})", crate::procfs::comm(pid).unwrap_or_else(|| "?".into()))
}

/// The validated target, or the request's error: 404 gone or not Go, 500 unreadable.
fn open(pid: u32) -> Result<target::Target, ServeError> {
    match target::open(pid) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(ServeError::NotFound(format!("{} is not a Go program", named(pid)))),
        Err(_) if !crate::procfs::is_alive(pid) => Err(ServeError::NotFound(format!("no such pid {pid}"))),
        Err(u) => Err(ServeError::Internal(format!("{}: {u}", named(pid)))),
    }
}

/// One reading of `pid` analyzed into the report a session would give (`heap`: read its
/// heap profile too).
fn report(pid: u32, heap: bool) -> Result<GoReport, ServeError> {
    let t = open(pid)?;
    let mut rec = GoProcess {
        pid,
        go_version: t.version.clone(),
        offsets_from: t.rt.layout.from.to_owned(),
        wait_reasons: t.rt.globals.wait_reasons.clone(),
        ..Default::default()
    };
    // No session: no thread registers for running goroutines (their stacks start at the last
    // saved pc, as Go's own dump of a running goroutine does not show either). A snapshot is
    // racy: a torn read is retried as the session does.
    let snap = t
        .snapshot(&|_| None)
        .or_else(|_| t.snapshot(&|_| None))
        .map_err(|e| ServeError::Internal(format!("{}: reading the goroutines: {e}", named(pid))))?;
    let mut tracker = Tracker::new();
    tracker.observe(0, snap);
    (rec.snapshots, rec.last, rec.stacks) = tracker.finish();
    if heap {
        rec.heap = match &t.rt.heap {
            Ok(h) => crate::goruntime::heap::read(pid, h, t.bias),
            Err(e) => e.clone(),
        };
    }
    let mut capture = Capture::default();
    capture.session.start_mono_ns = monotonic_ns();
    let maps = crate::procfs::maps(pid).ok_or_else(|| ServeError::NotFound(format!("no such pid {pid}")))?;
    let comm = crate::procfs::comm(pid).unwrap_or_default();
    capture.processes.insert(pid, ProcessInfo { pid, comm, cmdline: crate::procfs::cmdline(pid), maps });
    capture.go.push(rec);
    let mut r = crate::analyze::go::reports_alone(&capture, &mut BlazeResolver::default());
    Ok(r.remove(0))
}

/// Wall-clock now, for the profiles' time_nanos.
fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

fn gz(p: &crate::render::pprof::Profile) -> Result<Vec<u8>, ServeError> {
    let mut out = Vec::new();
    crate::render::pprof::write_gz(p, &mut out).map_err(|e| ServeError::Internal(format!("encoding: {e:#}")))?;
    Ok(out)
}

/// `/goroutine?debug=N`: 0 pprof, 1 Go's grouped text, 2 the dump.
pub fn goroutine(pid: u32, debug: u8) -> Result<Vec<u8>, ServeError> {
    let r = report(pid, false)?;
    match debug {
        0 => gz(&crate::render::goroutine_pprof::profile(std::slice::from_ref(&r), now_nanos(), 0)),
        1 => Ok(grouped(&r).into_bytes()),
        _ => Ok(crate::render::goroutines_txt::render(std::slice::from_ref(&r)).into_bytes()),
    }
}

/// `/heap`: as of the last GC; 404 when the binary keeps no heap profile.
pub fn heap(pid: u32) -> Result<Vec<u8>, ServeError> {
    let r = report(pid, true)?;
    let comment = format!("rtrace heap: pid {pid} ({})", r.go_version);
    match crate::render::heap_pprof::profile(&r.heap, now_nanos(), comment) {
        Some(p) => gz(&p),
        None => Err(ServeError::NotFound(format!(
            "{}: {}",
            named(pid),
            r.heap.unavailable.as_deref().unwrap_or("no heap profile: the runtime holds no samples yet")
        ))),
    }
}

/// Go's `goroutine?debug=1` (runtime/pprof's printCountProfile): a total, then one block per
/// distinct stack, most goroutines first: "N @ addr…" and "#\taddr\tfunction\tmodule" lines,
/// innermost first (file:line is not known here: the module stands in its place).
pub fn grouped(r: &GoReport) -> String {
    let mut by_stack: BTreeMap<Vec<(u64, String, String)>, u64> = BTreeMap::new();
    for g in &r.goroutines.groups {
        let frames = g.stack.iter().rev().map(|f| (f.offset, f.function.to_string(), f.module.to_string())).collect();
        *by_stack.entry(frames).or_default() += g.count;
    }
    let mut blocks: Vec<_> = by_stack.into_iter().collect();
    blocks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut s = format!("goroutine profile: total {}\n", r.goroutines.total);
    for (frames, n) in blocks {
        let addrs: Vec<String> = frames.iter().map(|f| format!("{:#x}", f.0)).collect();
        let _ = writeln!(s, "{n} @ {}", addrs.join(" "));
        for (off, function, module) in &frames {
            let _ = writeln!(s, "#\t{off:#x}\t{function}\t{module}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analyze::goroutines::GoroutineGroup,
        symbolize::{Frame, FrameKind},
    };

    fn frame(f: &str, off: u64) -> Frame {
        Frame { kind: FrameKind::User, function: f.into(), module: "go_parked".into(), offset: off }
    }

    /// Groups that differ only by state or creation site are one block, as Go's are.
    #[test]
    fn debug_1_groups_by_stack_most_first() {
        let recv = vec![frame("main.main.func1", 0x10), frame("main.recvWorker", 0x20), frame("runtime.gopark", 0x30)];
        let sleep = vec![frame("main.sleeper", 0x40), frame("time.Sleep", 0x50)];
        let grp = |stack: &Vec<Frame>, count, state: &str| GoroutineGroup {
            count,
            state: state.into(),
            stack: stack.clone(),
            ..Default::default()
        };
        let mut r = GoReport::default();
        r.goroutines.total = 7;
        r.goroutines.groups = vec![grp(&sleep, 4, "waiting"), grp(&recv, 2, "waiting"), grp(&recv, 1, "runnable")];
        assert_eq!(
            grouped(&r),
            "goroutine profile: total 7\n\
             4 @ 0x50 0x40\n#\t0x50\ttime.Sleep\tgo_parked\n#\t0x40\tmain.sleeper\tgo_parked\n\n\
             3 @ 0x30 0x20 0x10\n#\t0x30\truntime.gopark\tgo_parked\n#\t0x20\tmain.recvWorker\tgo_parked\n\
             #\t0x10\tmain.main.func1\tgo_parked\n\n"
        );
    }

    #[test]
    fn not_go_and_gone() {
        let me = std::process::id();
        let e = goroutine(me, 0).unwrap_err();
        assert_eq!(e.status().as_u16(), 404);
        let comm = crate::procfs::comm(me).unwrap();
        assert_eq!(e.to_string(), format!("pid {me} ({comm}) is not a Go program"));
        assert_eq!(heap(u32::MAX - 1).unwrap_err(), ServeError::NotFound(format!("no such pid {}", u32::MAX - 1)));
    }
}

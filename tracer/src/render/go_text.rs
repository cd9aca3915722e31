//! report.txt's Go sections: "Goroutines", "GC", "Heap", one block per Go process.
use std::fmt::Write;

use crate::analyze::go::GoReport;

/// Go processes shown in full beyond the target (a go build runs a hundred Go children: the
/// rest are in report.json `go` and goroutines.txt).
const FULL: usize = 5;

/// The target's Go view, then those of Go processes still running at the end (at most
/// `FULL`), then one line for the others.
pub fn sections(s: &mut String, go: &[GoReport], target: u32, unread: u64) {
    let mut shown: Vec<&GoReport> = go.iter().filter(|g| g.pid == target).collect();
    shown.extend(go.iter().filter(|g| g.pid != target && g.alive_at_end).take(FULL));
    for g in &shown {
        let _ = writeln!(s, "\nGo runtime: pid {} ({})", g.pid, g.go_version);
        if let Some(u) = &g.unavailable {
            let _ = writeln!(s, "  {u}");
            continue;
        }
        goroutines(s, g);
        gc(s, g);
        heap(s, g);
    }
    let rest = go.len() - shown.len();
    if rest > 0 {
        let ended = go.iter().filter(|g| !g.alive_at_end && g.pid != target).count();
        let _ = writeln!(
            s,
            "\n{rest} more Go processes ({ended} exited during the session): their goroutines are in goroutines.txt, \
             everything in report.json `go`"
        );
    }
    if unread > 0 {
        let _ = writeln!(s, "{unread} short-lived processes exited before their Go runtime could be read");
    }
}

/// How many groups each Goroutines list shows.
const GROUPS: usize = 3;

fn goroutines(s: &mut String, g: &GoReport) {
    use crate::render::goroutines_txt::{bracket, duration};
    let r = &g.goroutines;
    let states: Vec<String> = r
        .by_state
        .iter()
        .map(|(state, n)| {
            let reasons: Vec<String> = r.by_wait_reason.iter().map(|(w, n)| format!("{w} {n}")).collect();
            if state == "waiting" && !reasons.is_empty() {
                format!("{state} {n} ({})", reasons.join(", "))
            } else {
                format!("{state} {n}")
            }
        })
        .collect();
    let runtime = if r.system > 0 { format!(" (and runtime goroutines: {})", r.system) } else { String::new() };
    let _ = writeln!(s, "  Goroutines: {} at {}: {}{runtime}", r.total, duration(r.at_ms), states.join(", "));
    let line = |s: &mut String, grp: &crate::analyze::goroutines::GoroutineGroup| {
        let func = where_(&grp.stack);
        let by = grp.created_by.as_ref().map(|c| format!(" (created by {})", c.function)).unwrap_or_default();
        let _ = writeln!(s, "    {:>6}  [{}]  {func}{by}", grp.count, bracket(grp));
    };
    if r.groups.is_empty() {
        return;
    }
    let _ = writeln!(s, "   largest groups:");
    for grp in r.groups.iter().take(GROUPS) {
        line(s, grp);
    }
    let mut blocked: Vec<_> = r.groups.iter().skip(GROUPS).filter(|g| g.blocked_ms.is_some()).collect();
    blocked.sort_by_key(|g| std::cmp::Reverse(g.blocked_ms));
    if !blocked.is_empty() {
        let _ = writeln!(s, "   longest blocked:");
        for grp in blocked.into_iter().take(GROUPS) {
            line(s, grp);
        }
    }
}

/// The "GC" section: cycles, pauses, the share of the session stopped, each stop-the-world
/// reason, heap live/goal.
fn gc(s: &mut String, g: &GoReport) {
    let Some(gc) = &g.gc else { return };
    let ms = |ns: u64| ns as f64 / 1e6;
    let _ = writeln!(
        s,
        "  GC: {} cycles, pauses {:.1} ms (p50 {:.2} ms, max {:.2} ms), world stopped {:.1} % of the session",
        gc.cycles,
        ms(gc.pause_total_ns),
        ms(gc.pause_p50_ns),
        ms(gc.pause_max_ns),
        gc.stopped_share * 100.0
    );
    if let Some(u) = &gc.stw_unavailable {
        let _ = writeln!(s, "    stop-the-world not timed: {u}");
    } else if !gc.stw.is_empty() {
        let w = gc.stw.iter().map(|r| r.reason.len()).max().unwrap_or(0).max("stop-the-world".len());
        let _ = writeln!(s, "    {:<w$}  {:>6}  {:>10}  {:>9}", "stop-the-world", "count", "total", "max");
        for r in &gc.stw {
            let _ = writeln!(
                s,
                "    {:<w$}  {:>6}  {:>7.2} ms  {:>6.2} ms",
                r.reason,
                r.count,
                ms(r.total_ns),
                ms(r.max_ns)
            );
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut heap = Vec::new();
    if let Some(h) = gc.heap_live {
        heap.push(format!("live {:.1} → {:.1} MiB (max {:.1})", mib(h.first), mib(h.last), mib(h.max)));
    }
    if let Some(h) = gc.heap_goal {
        heap.push(format!("goal {:.1} → {:.1} MiB (max {:.1})", mib(h.first), mib(h.last), mib(h.max)));
    }
    if let Some(f) = gc.gc_cpu_share {
        heap.push(format!("GC CPU {:.1} % since start", f * 100.0));
    }
    if !heap.is_empty() {
        let _ = writeln!(s, "    heap {}", heap.join(", "));
    }
}

/// Whether a Go function is the standard library's: its package path's first element has no
/// dot ("os/exec", "net/http"; not "github.com/…") and it is not package main.
fn standard(function: &str) -> bool {
    let first = match function.split_once('/') {
        Some((first, _)) => first,
        None => function.split('.').next().unwrap_or_default(),
    };
    !first.contains('.') && first != "main"
}

/// The innermost frame of the program's own code, and when that is the standard library's, the
/// program's function that called into it: "os/exec.(*Cmd).Wait ← main.runChild".
pub(crate) fn where_(stack: &[crate::symbolize::Frame]) -> String {
    let Some(inner) = crate::symbolize::caller_function(stack).or_else(|| crate::symbolize::leaf_function(stack))
    else {
        return "[stack not read]".into();
    };
    let caller = standard(&inner)
        .then(|| {
            stack.iter().rev().find(|f| {
                f.kind == crate::symbolize::FrameKind::User
                    && !standard(&f.function)
                    && !crate::symbolize::is_plumbing(f)
            })
        })
        .flatten();
    match caller {
        Some(c) => format!("{inner} ← {}", c.function),
        None => inner,
    }
}

/// "Heap": the in-use totals and the functions holding the most, or why there is no profile.
fn heap(s: &mut String, g: &GoReport) {
    let h = &g.heap;
    if let Some(u) = &h.unavailable {
        let _ = writeln!(s, "  Heap: {u}");
        return;
    }
    let (Some(t), Some(rate)) = (h.totals, h.rate) else { return };
    let _ = writeln!(
        s,
        "  Heap (as of the last GC; sampled every {} allocated, estimated as pprof does): {} in use in {} objects, \
         {} allocated in all — heap.pb.gz",
        human_bytes(rate as i64),
        human_bytes(t.inuse_bytes),
        t.inuse_objects,
        human_bytes(t.alloc_bytes)
    );
    if h.top.is_empty() {
        return;
    }
    let _ = writeln!(s, "    {:>10}  {:>9}  function (called from)", "in use", "objects");
    for site in &h.top {
        let from =
            if site.called_from.is_empty() { String::new() } else { format!(" <- {}", site.called_from.join(" <- ")) };
        let _ = writeln!(
            s,
            "    {:>10}  {:>9}  {}{from}",
            human_bytes(site.values.inuse_bytes),
            site.values.inuse_objects,
            site.function
        );
    }
}

/// 1536 → "1.5 KiB".
fn human_bytes(b: i64) -> String {
    let f = b as f64;
    match b {
        ..=1023 => format!("{b} B"),
        1024..=1_048_575 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gc::{GcReport, Series, StwRow};

    #[test]
    fn gc_section() {
        let g = GoReport {
            pid: 7,
            go_version: "go1.27.3".into(),
            gc: Some(GcReport {
                cycles: 3,
                pause_total_ns: 1_500_000,
                pause_p50_ns: 400_000,
                pause_max_ns: 900_000,
                stw: vec![StwRow {
                    reason: "GC mark termination".into(),
                    count: 3,
                    total_ns: 1_200_000,
                    max_ns: 700_000,
                }],
                heap_live: Some(Series { first: 1 << 20, last: 2 << 20, max: 3 << 20 }),
                stopped_share: 0.0123,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut s = String::new();
        gc(&mut s, &g);
        assert_eq!(
            s,
            "  GC: 3 cycles, pauses 1.5 ms (p50 0.40 ms, max 0.90 ms), world stopped 1.2 % of the session\n\
             \x20   stop-the-world        count       total        max\n\
             \x20   GC mark termination       3     1.20 ms    0.70 ms\n\
             \x20   heap live 1.0 → 2.0 MiB (max 3.0)\n"
        );
    }
}

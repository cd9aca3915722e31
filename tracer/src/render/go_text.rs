//! report.txt's Go sections: "Goroutines", "GC", "Heap", one block per Go process.
use std::fmt::Write;

use crate::analyze::go::GoReport;

pub fn sections(s: &mut String, go: &[GoReport]) {
    for g in go {
        let _ = writeln!(s, "\nGo runtime: pid {} ({})", g.pid, g.go_version);
        if let Some(u) = &g.unavailable {
            let _ = writeln!(s, "  {u}");
            continue;
        }
        goroutines(s, g);
        gc(s, g);
        heap(s, g);
    }
}

fn goroutines(s: &mut String, g: &GoReport) {
    let _ = writeln!(s, "  Goroutines: {}", g.goroutines.total);
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

fn heap(_s: &mut String, _g: &GoReport) {}

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

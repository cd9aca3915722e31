//! report.txt, also printed on stdout: what a person reads first.
use std::{fmt::Write as _, path::Path};

use crate::{
    analyze::cpu::TopFunction,
    capture::{Clock, EndedBy},
    report::Report,
};

/// How many functions each top list shows in text.
const TEXT_TOP: usize = 10;

pub fn render(report: &Report, dir: &Path, files: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let t = &report.target;
    let cmd = if t.cmdline.is_empty() { String::new() } else { format!(" `{}`", t.cmdline.join(" ")) };
    let _ = writeln!(s, "rtrace report: pid {} ({}){cmd}", t.pid, t.comm);
    let ss = &report.session;
    let ended = match ss.ended_by {
        EndedBy::Duration => "duration elapsed",
        EndedBy::Interrupt => "interrupted",
        EndedBy::TargetExit => "target exited",
    };
    let clock = match ss.clock {
        Clock::CpuClock => "cpu-clock",
        Clock::Cycles => "cycles",
    };
    let _ = writeln!(s, "duration: {:.1} s ({ended}); sampling {clock} at {} Hz", ss.duration_ms as f64 / 1000.0, ss.sample_frequency_hz);
    let a = &report.accounting;
    let _ = writeln!(
        s,
        "samples: {} on CPU; lost {}; without stack {}",
        a.cpu_samples, a.lost_samples, a.stack_errors
    );
    if a.tracked_map_full > 0 || a.events_dropped > 0 {
        let _ = writeln!(s, "warning: {} descendants untracked (map full), {} lifecycle events dropped", a.tracked_map_full, a.events_dropped);
    }

    let total = report.cpu.total_samples;
    let _ = writeln!(s, "\nOn CPU — top functions by self time:");
    table(&mut s, &report.cpu.top, total, true);
    let _ = writeln!(s, "\nOn CPU — top functions by total time (self + callees):");
    table(&mut s, &report.cpu.top_total, total, false);

    let _ = writeln!(s, "\nFiles in {}:", dir.display());
    for (name, what) in files {
        let _ = writeln!(s, "  {name:<12} {what}");
    }
    s
}

fn table(s: &mut String, rows: &[TopFunction], total: u64, by_self: bool) {
    if rows.is_empty() || total == 0 {
        let _ = writeln!(s, "  (no samples)");
        return;
    }
    let _ = writeln!(s, "  {:>6} {:>7} {:>8}  function", "self%", "total%", "samples");
    for r in rows.iter().take(TEXT_TOP) {
        let pct = |n: u64| 100.0 * n as f64 / total as f64;
        let n = if by_self { r.self_samples } else { r.total_samples };
        let _ = writeln!(s, "  {:>5.1}% {:>6.1}% {:>8}  {}", pct(r.self_samples), pct(r.total_samples), n, r.function);
    }
}

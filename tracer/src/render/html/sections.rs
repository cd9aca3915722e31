//! report.html's "Syscalls" section (one latency histogram per syscall, drawn from the log2
//! buckets the analysis keeps, and the slowest calls) and its "Goroutines" section (the Go
//! view's goroutine groups, one table per Go process).
use std::fmt::Write as _;

use super::esc;
use crate::{
    analyze::{go::GoReport, syscalls::SyscallRow},
    render::{go_text, goroutines_txt, text::human_us},
    report::Report,
};

/// Histograms shown; the rest are in report.json (a build calls a hundred syscalls).
const HISTOGRAMS: usize = 40;
const SLOWEST: usize = 10;
/// Goroutine groups listed per process.
const GROUPS: usize = 100;
/// Go processes shown beyond the target, as report.txt.
const GO_PROCESSES: usize = 5;

fn ns(v: u64) -> String {
    if v < 1_000 {
        format!("{v} ns")
    } else {
        human_us(v / 1_000)
    }
}

/// "1 call", "3 calls".
fn calls(n: u64) -> String {
    if n == 1 {
        "1 call".into()
    } else {
        format!("{n} calls")
    }
}

/// The log2 bucket an upper bound closes: bucket i holds [2^i, 2^(i+1)) ns (bucket 0 from 0).
fn bucket_of(upper: u64) -> usize {
    (upper.max(2).trailing_zeros() as usize).saturating_sub(1)
}

/// One bar per bucket from the fastest non-empty bucket to the slowest, empty ones between
/// included (a gap is part of the shape): (bucket, count).
pub(super) fn bars(row: &SyscallRow) -> Vec<(usize, u64)> {
    let (Some(first), Some(last)) = (row.histogram.first(), row.histogram.last()) else {
        return Vec::new();
    };
    (bucket_of(first.0)..=bucket_of(last.0))
        .map(|b| (b, row.histogram.iter().find(|(u, _)| bucket_of(*u) == b).map_or(0, |(_, n)| *n)))
        .collect()
}

fn histogram(s: &mut String, row: &SyscallRow) {
    let bars = bars(row);
    let errors = if row.errors > 0 { format!(", {} failed", row.errors) } else { String::new() };
    let _ = write!(
        s,
        "<figure class=\"hist\" data-syscall=\"{0}\"><figcaption><b>{0}</b> — {1}{errors}, total {2}; \
         p50 {3}, p99 {4}, max {5}</figcaption>",
        esc(&row.name),
        calls(row.count),
        ns(row.total_ns),
        ns(row.p50_ns),
        ns(row.p99_ns),
        ns(row.max_ns)
    );
    let (w, h, base) = (400.0, 90.0, 74.0);
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let slot = w / bars.len().max(1) as f64;
    let _ = write!(
        s,
        "<svg class=\"histogram\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"latency of {}\">",
        esc(&row.name)
    );
    let _ = write!(s, "<text x=\"0\" y=\"9\">{}</text>", calls(top));
    // Labels under every bar would overlap past a dozen: every n-th, the first and last always.
    let every = bars.len().div_ceil(8).max(1);
    for (i, &(b, n)) in bars.iter().enumerate() {
        let bh = if n == 0 { 0.0 } else { ((base - 12.0) * n as f64 / top as f64).max(2.0) };
        let lo = if b == 0 { 0 } else { 1u64 << b };
        let hi = 1u64 << (b + 1);
        let class = if n == 0 { "hbar zero" } else { "hbar" };
        let _ = write!(
            s,
            "<rect class=\"{class}\" data-bucket=\"{b}\" data-count=\"{n}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{bh:.2}\">\
             <title>[{}, {}): {}</title></rect>",
            i as f64 * slot + 1.0,
            base - bh,
            (slot - 2.0).max(1.0),
            ns(lo),
            ns(hi),
            calls(n)
        );
        let last = bars.len() - 1;
        // The last bar always, so no regular label may crowd it.
        if i == last || (i % every == 0 && last - i > every / 2) {
            // The outer labels stay inside the chart.
            let (x, anchor) = match i {
                0 => (i as f64 * slot + 1.0, "start"),
                _ if i == last && i > 0 => ((i + 1) as f64 * slot - 1.0, "end"),
                _ => (i as f64 * slot + slot / 2.0, "middle"),
            };
            let _ = write!(s, "<text x=\"{x:.2}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>", h - 4.0, ns(lo));
        }
    }
    s.push_str("</svg></figure>\n");
}

pub(super) fn syscalls(s: &mut String, r: &Report) {
    s.push_str("<section id=\"syscalls\">\n<h2>Syscalls — latency by syscall</h2>\n");
    let Some(rows) = &r.syscalls else {
        s.push_str("<p class=\"empty\">Syscall latency was not traced (--no-syscalls).</p>\n</section>\n");
        return;
    };
    let shown: Vec<&SyscallRow> = rows.iter().filter(|r| !r.histogram.is_empty()).collect();
    if shown.is_empty() {
        s.push_str("<p class=\"empty\">No syscall completed during the session.</p>\n</section>\n");
        return;
    }
    let _ = writeln!(
        s,
        "<p class=\"meta\">{} calls of {} syscalls, by total time; each bar is a power-of-two latency range \
         (from the kernel's log2 histograms), hover for its count.</p>\n<div class=\"hists\">",
        r.accounting.syscalls,
        shown.len()
    );
    for row in shown.iter().take(HISTOGRAMS) {
        histogram(s, row);
    }
    s.push_str("</div>\n");
    if shown.len() > HISTOGRAMS {
        let _ = writeln!(s, "<p class=\"meta\">… {} more syscalls in report.json.</p>", shown.len() - HISTOGRAMS);
    }
    let slow = r.slowest_syscalls.as_deref().unwrap_or(&[]);
    if !slow.is_empty() {
        s.push_str(
            "<h3>Slowest calls</h3>\n<table class=\"slowest\"><tr><th class=\"num\">duration</th><th>call</th>\
             <th>result</th><th class=\"num\">tid</th><th>in</th></tr>\n",
        );
        for c in slow.iter().take(SLOWEST) {
            let state = match (c.in_flight, c.started_before_attach) {
                (true, true) => " (in flight since before attach)",
                (true, false) => " (still in flight at the end)",
                _ => "",
            };
            let at = c.caller_function.as_deref().or(c.leaf_function.as_deref()).unwrap_or("[kernel]");
            let _ = writeln!(
                s,
                "<tr><td class=\"num\">{}</td><td><code>{}({})</code>{state}</td><td><code>{}</code></td>\
                 <td class=\"num\">{}</td><td><details><summary>{}</summary><pre>{}</pre></details></td></tr>",
                ns(c.duration_ns),
                esc(&c.name),
                esc(&c.args.text),
                esc(&c.ret_text),
                c.tid,
                esc(at),
                esc(&c.frames.iter().rev().cloned().collect::<Vec<_>>().join("\n"))
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</section>\n");
}

fn go_process(s: &mut String, g: &GoReport) {
    let _ = writeln!(s, "<h3>pid {} — {}</h3>", g.pid, esc(&g.go_version));
    if let Some(u) = &g.unavailable {
        let _ = writeln!(s, "<p class=\"empty\">{}</p>", esc(u));
        return;
    }
    let r = &g.goroutines;
    let states: Vec<String> = r.by_state.iter().map(|(state, n)| format!("{state} {n}")).collect();
    let runtime = if r.system > 0 { format!(" (and {} runtime goroutines)", r.system) } else { String::new() };
    let _ = writeln!(
        s,
        "<p>{} goroutines at {}: {}{runtime}</p>",
        r.total,
        goroutines_txt::duration(r.at_ms),
        esc(&states.join(", "))
    );
    if r.groups.is_empty() {
        return;
    }
    s.push_str(
        "<table class=\"goroutines\"><tr><th class=\"num\">count</th><th>state</th><th>where</th>\
         <th>created by</th></tr>\n",
    );
    for grp in r.groups.iter().take(GROUPS) {
        let by = grp.created_by.as_ref().map(|c| c.function.clone()).unwrap_or_default();
        let _ = writeln!(
            s,
            "<tr class=\"group\"><td class=\"num\">{}</td><td>{}</td><td><details><summary><code>{}</code></summary>\
             <pre>{}</pre></details></td><td><code>{}</code></td></tr>",
            grp.count,
            esc(&goroutines_txt::bracket(grp)),
            esc(&go_text::where_(&grp.stack)),
            esc(&grp.frames.iter().rev().cloned().collect::<Vec<_>>().join("\n")),
            esc(&by)
        );
    }
    s.push_str("</table>\n");
    if r.groups.len() > GROUPS {
        let _ = writeln!(s, "<p class=\"meta\">… {} more groups in goroutines.txt.</p>", r.groups.len() - GROUPS);
    }
}

pub(super) fn goroutines(s: &mut String, r: &Report) {
    s.push_str("<section id=\"goroutines\">\n<h2>Goroutines</h2>\n");
    if r.go.is_empty() {
        s.push_str(
            "<p class=\"empty\">No Go process was traced (the Go runtime view reads Go programs only; \
             --no-go turns it off).</p>\n</section>\n",
        );
        return;
    }
    let target = r.target.pid;
    let mut shown: Vec<&GoReport> = r.go.iter().filter(|g| g.pid == target).collect();
    shown.extend(r.go.iter().filter(|g| g.pid != target && g.alive_at_end).take(GO_PROCESSES));
    for g in &shown {
        go_process(s, g);
    }
    if r.go.len() > shown.len() {
        let _ = writeln!(
            s,
            "<p class=\"meta\">{} more Go processes: their goroutines are in goroutines.txt.</p>",
            r.go.len() - shown.len()
        );
    }
    s.push_str("</section>\n");
}

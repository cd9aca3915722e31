//! report.html's "Children" section: the child-process ledger as a Gantt chart in inline SVG,
//! one row per process in the ledger's order (pre-attach ones, then fork order): a bar `alive`
//! from fork (or attach) to exit, a bar `zombie` from exit to reap — or to the session's end
//! when it was never reaped — and markers for the exec, each signal received (with its sender)
//! and the exit's outcome. Every shape has a `<title>`: the browser shows it on hover.
use std::fmt::Write as _;

use super::{esc, secs};
use crate::{
    analyze::children::{signals::ReceivedSignal, ChildRecord},
    lifecycle::{signal_name, ExitInfo},
    report::Report,
};

/// The chart's coordinate system (the SVG scales to the page's width): a label column, then
/// the session's time from 0 to its end.
const LABEL_W: f64 = 330.0;
const CHART_W: f64 = 870.0;
const WIDTH: f64 = LABEL_W + CHART_W + 10.0;
const AXIS_H: f64 = 28.0;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 12.0;
/// A bar of a few microseconds still shows: the eye looks for it.
const MIN_BAR_W: f64 = 1.5;
/// Row labels are cut here; the full command line is in the row's title.
const LABEL_CHARS: usize = 44;

/// Where a process's bars start and end, in ns since attach.
#[derive(Debug, PartialEq)]
pub(super) struct Bars {
    pub alive: Option<(u64, u64)>,
    pub zombie: Option<(u64, u64)>,
}

/// The bars of one process: `end` is the session's end.
pub(super) fn bars(c: &ChildRecord, end: u64) -> Bars {
    // Before attach (or its fork lost): alive from the chart's start.
    let born = c.forked_at_ns.unwrap_or(0);
    let alive_until = c.exited_at_ns.or(c.alive_at_end.then_some(end)).or(c.reaped_at_ns);
    let alive = if c.zombie_at_attach { None } else { alive_until.map(|e| (born, e.max(born))) };
    let died = c.exited_at_ns.or(c.zombie_at_attach.then_some(0));
    let buried = c.reaped_at_ns.or(c.never_reaped.then_some(end));
    let zombie = died.zip(buried).map(|(d, b)| (d, b.max(d)));
    Bars { alive, zombie }
}

/// The session's end on the ledger's clock: its length, or later when an event says so (the
/// final snapshot is taken after the duration elapsed).
fn session_end(r: &Report, signals: &[ReceivedSignal]) -> u64 {
    let mut end = r.session.duration_ms * 1_000_000;
    for c in &r.children {
        let never = c.never_reaped.then(|| c.exited_at_ns.unwrap_or(0) + c.zombie_age_ns.unwrap_or(0));
        for t in [c.forked_at_ns, c.execd_at_ns, c.exited_at_ns, c.reaped_at_ns, never].into_iter().flatten() {
            end = end.max(t);
        }
    }
    signals.iter().fold(end.max(1), |e, s| e.max(s.ts_ns))
}

/// "exit 0", "killed by SIGKILL (sent by pid 12 sh, tid 12)".
fn outcome(c: &ChildRecord) -> Option<(String, &'static str)> {
    match c.exit? {
        ExitInfo::Exited { code } => Some((format!("exit {code}"), if code == 0 { "ok" } else { "failed" })),
        ExitInfo::Killed { signal, core_dumped } => {
            let by = match &c.killed_by {
                Some(k) if k.kernel => " (sent by the kernel)".to_owned(),
                Some(k) => format!(" (sent by pid {} {}, tid {})", k.sender_pid, k.sender_comm, k.sender_tid),
                None => String::new(),
            };
            let core = if core_dumped { ", core dumped" } else { "" };
            Some((format!("killed by {}{by}{core}", signal_name(signal)), "killed"))
        }
    }
}

/// Nice tick steps (1, 2, 5 × 10^k ns) so that about 8 ticks span the session.
fn tick_step(end: u64) -> u64 {
    let target = (end / 8).max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= target {
                return step * m;
            }
        }
        step *= 10;
    }
}

fn tick_label(ns: u64, step: u64) -> String {
    if step >= 1_000_000_000 {
        format!("{}s", ns as f64 / 1e9)
    } else if step >= 1_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}µs", ns / 1_000)
    }
}

pub(super) fn section(s: &mut String, r: &Report, signals: &[ReceivedSignal]) {
    s.push_str("<section id=\"children\">\n");
    let kids = &r.children;
    if kids.is_empty() {
        s.push_str(
            "<h2>Children</h2>\n<p class=\"empty\">No children were traced: the target started no process \
             during the session and had none at attach (or rtrace ran with --no-children).</p>\n</section>\n",
        );
        return;
    }
    let _ = writeln!(s, "<h2>Children ({} processes; times since attach)</h2>", kids.len());
    if let Some(line) = crate::analyze::build::children_summary(kids) {
        let _ = writeln!(s, "<p>{}</p>", esc(&line));
    }
    s.push_str(
        "<p class=\"legend\"><i style=\"background:var(--alive)\"></i>alive \
         <i style=\"background:var(--zombie)\"></i>zombie (exited, not yet reaped) \
         <i style=\"border:1px solid #1d1d1f\"></i>exec \
         <i style=\"background:#f2b705;border-radius:50%\"></i>signal received \
         <i style=\"background:#188038;width:3px\"></i>exit (green 0, orange failed, black killed) \
         — hover for details</p>\n",
    );
    let end = session_end(r, signals);
    let x = |t: u64| LABEL_W + CHART_W * (t.min(end) as f64 / end as f64);
    let height = AXIS_H + ROW_H * kids.len() as f64 + 4.0;
    let _ = writeln!(
        s,
        "<svg class=\"gantt\" viewBox=\"0 0 {WIDTH} {height}\" \
         role=\"img\" aria-label=\"children over time\">"
    );
    let step = tick_step(end);
    let mut t = 0;
    while t <= end {
        let tx = x(t);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{height:.1}\"/>\
             <text x=\"{tx:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            AXIS_H - 8.0,
            tick_label(t, step)
        );
        t += step;
    }
    // By receiver: a build's ledger has thousands of rows.
    let mut by_pid: std::collections::HashMap<u32, Vec<&ReceivedSignal>> = std::collections::HashMap::new();
    for sig in signals {
        by_pid.entry(sig.pid).or_default().push(sig);
    }
    for (i, c) in kids.iter().enumerate() {
        let received = by_pid.get(&c.pid).map_or(&[][..], Vec::as_slice);
        row(s, c, received, end, AXIS_H + ROW_H * i as f64, i, &x);
    }
    s.push_str("</svg>\n</section>\n");
}

/// One process's row; `signals`: those it received.
fn row(
    s: &mut String,
    c: &ChildRecord,
    signals: &[&ReceivedSignal],
    end: u64,
    y: f64,
    i: usize,
    x: &dyn Fn(u64) -> f64,
) {
    let cmd = crate::analyze::build::short_command(&c.argv, &c.comm, LABEL_CHARS);
    let full = if c.argv.is_empty() { c.comm.clone() } else { c.argv.join(" ") };
    let _ = write!(
        s,
        "<g class=\"gantt-row\" data-pid=\"{}\"><title>pid {} (parent {}): {}</title>",
        c.pid,
        c.pid,
        c.ppid,
        esc(&full)
    );
    if i % 2 == 1 {
        let _ = write!(s, "<rect class=\"stripe\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{ROW_H}\"/>");
    }
    let _ =
        write!(s, "<text class=\"label\" x=\"4\" y=\"{:.1}\">{} {}</text>", y + ROW_H / 2.0 + 4.0, c.pid, esc(&cmd));
    let by = (y + (ROW_H - BAR_H) / 2.0, BAR_H);
    let b = bars(c, end);
    let bar = |s: &mut String, class: &str, (from, to): (u64, u64), what: String| {
        let w = (x(to) - x(from)).max(MIN_BAR_W);
        let _ = write!(
            s,
            "<rect class=\"bar {class}\" x=\"{:.2}\" y=\"{:.1}\" width=\"{w:.2}\" height=\"{}\" \
             data-from-ns=\"{from}\" data-to-ns=\"{to}\"><title>{}</title></rect>",
            x(from),
            by.0,
            by.1,
            esc(&what)
        );
    };
    if let Some(a) = b.alive {
        let from = if c.forked_at_ns.is_some() { format!("forked at {}", secs(a.0)) } else { "at attach".into() };
        let to = match c.exited_at_ns {
            Some(e) => format!("exited at {}", secs(e)),
            None if c.alive_at_end => "still running at the end".into(),
            None => format!("gone by {} (exit not seen)", secs(a.1)),
        };
        bar(s, "alive", a, format!("pid {} alive: {from}, {to} ({})", c.pid, secs(a.1 - a.0)));
    }
    if let Some(z) = b.zombie {
        let what = match (&c.reaped_by, c.never_reaped) {
            (_, true) => format!(
                "pid {} zombie from {} to the end: never reaped by its parent pid {} ({})",
                c.pid,
                secs(z.0),
                c.ppid,
                secs(z.1 - z.0)
            ),
            (Some(rb), _) if rb.pid != 0 => format!(
                "pid {} zombie {} → {}: reaped by pid {} (tid {}) with {} after {}",
                c.pid,
                secs(z.0),
                secs(z.1),
                rb.pid,
                rb.tid,
                rb.call,
                secs(z.1 - z.0)
            ),
            _ => format!("pid {} zombie {} → {}: released after {}", c.pid, secs(z.0), secs(z.1), secs(z.1 - z.0)),
        };
        bar(s, "zombie", z, what);
    }
    let mid = y + ROW_H / 2.0;
    if let Some(e) = c.execd_at_ns {
        let ex = x(e);
        let prog = c.argv.first().map(String::as_str).unwrap_or(&c.comm);
        let _ = write!(
            s,
            "<path class=\"mark exec\" d=\"M{ex:.2},{:.1} l4,6 l-4,6 l-4,-6z\"><title>exec {} at {}</title></path>",
            mid - 6.0,
            esc(prog),
            secs(e)
        );
    }
    for sig in signals {
        let ignored = sig.not_delivered().map(|w| format!(" ({w})")).unwrap_or_default();
        let class = if sig.not_delivered().is_some() { "mark signal ignored" } else { "mark signal" };
        let _ = write!(
            s,
            "<circle class=\"{class}\" cx=\"{:.2}\" cy=\"{mid:.1}\" r=\"4\"><title>{} from pid {} ({}, tid {}) at {}{}</title></circle>",
            x(sig.ts_ns),
            esc(&sig.signal),
            sig.sender_pid,
            esc(&sig.sender_comm),
            sig.sender_tid,
            secs(sig.ts_ns),
            ignored
        );
    }
    if let (Some(e), Some((what, class))) = (c.exited_at_ns, outcome(c)) {
        let ex = x(e);
        let _ = write!(
            s,
            "<line class=\"mark exit {class}\" x1=\"{ex:.2}\" y1=\"{:.1}\" x2=\"{ex:.2}\" y2=\"{:.1}\"><title>pid {} {} at {}</title></line>",
            mid - 8.0,
            mid + 8.0,
            c.pid,
            esc(&what),
            secs(e)
        );
    }
    s.push_str("</g>\n");
}

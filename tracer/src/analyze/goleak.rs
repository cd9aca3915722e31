//! The goroutine_leak finding: a creation site whose live goroutines only grew across the
//! session's snapshots (or, with the churn uprobes, were created far more than they exited),
//! with where they are parked. The rule is also the README's (Findings).
//!
//! Why these thresholds: a leak is growth that does not stop, so one snapshot pair is not
//! enough (`MIN_SNAPSHOTS`, `MIN_SPAN_NS`), a worker pool started at the beginning must not
//! count (the site must still grow in the second half of the session), and a handful of
//! goroutines in flight is noise (`MIN_GROWTH` and +50 %). What rtrace cannot see is the
//! future: goroutines that pile up on purpose (results collected at the end, a server's
//! connections during a ramp) look the same. So the finding is MEDIUM, LOW when they are
//! parked in network I/O or are working, and HIGH only when nothing can ever wake them.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::{
    analyze::{
        children::{Finding, FindingKind, Severity},
        go::GoReport,
        goroutines::GoroutineGroup,
    },
    capture::{Capture, GoProcess},
    symbolize,
};

/// Snapshots needed to call a trend (attach, one a second, end: a 2 s session has them).
pub const MIN_SNAPSHOTS: usize = 3;
/// The first and last snapshot at least this far apart.
pub const MIN_SPAN_NS: u64 = 2_000_000_000;
/// Growth from the first snapshot to the last, in goroutines, and at least +50 %.
pub const MIN_GROWTH: u64 = 10;

/// One goroutine_leak finding per leaking creation site of every Go process.
pub fn findings(capture: &Capture, go: &[GoReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in go.iter().filter(|r| r.unavailable.is_none()) {
        let Some(p) = capture.go.iter().find(|p| p.pid == r.pid) else { continue };
        out.extend(sites(p).into_iter().filter_map(|s| leak(p, r, s)));
    }
    out
}

fn sites(p: &GoProcess) -> BTreeSet<u64> {
    let snap = p.snapshots.iter().flat_map(|s| s.by_site.keys().copied());
    snap.chain(p.churn.iter().flat_map(|c| c.created.keys().copied())).collect()
}

/// What the snapshots say about one site: its counts, and whether they grew as a leak does.
struct Trend {
    first: u64,
    last: u64,
    span_ns: u64,
    /// Never fell (beyond what a snapshot dropped: racy reads lose entries).
    monotonic: bool,
    /// The last snapshot holds more than the one at the session's midpoint.
    still_growing: bool,
}

fn trend(p: &GoProcess, site: u64) -> Option<Trend> {
    let s = &p.snapshots;
    if s.len() < MIN_SNAPSHOTS {
        return None;
    }
    let c: Vec<u64> = s.iter().map(|s| s.by_site.get(&site).copied().unwrap_or(0)).collect();
    let (t0, tn) = (s[0].at_ns, s[s.len() - 1].at_ns);
    let monotonic = (1..c.len()).all(|i| c[i] + s[i].dropped >= c[i - 1]);
    let mid_t = t0 + (tn - t0) / 2;
    let mid = s.iter().position(|s| s.at_ns >= mid_t).unwrap_or(0).min(s.len() - 2);
    Some(Trend {
        first: c[0],
        last: c[c.len() - 1],
        span_ns: tn.saturating_sub(t0),
        monotonic,
        still_growing: c[c.len() - 1] > c[mid],
    })
}

fn grew(first: u64, last: u64) -> bool {
    last >= first + MIN_GROWTH && last * 2 >= first * 3
}

/// Where the site's goroutines are parked: its largest group.
fn parked(r: &GoReport, site: u64) -> Option<&GoroutineGroup> {
    r.goroutines
        .groups
        .iter()
        .filter(|g| g.gopc == site)
        .max_by_key(|g| (g.count, std::cmp::Reverse(g.goids.first().copied())))
}

fn where_parked(g: &GoroutineGroup) -> (String, Option<String>) {
    let what = g.wait_reason.clone().unwrap_or_else(|| g.state.clone());
    (what, symbolize::caller_function(&g.stack).or_else(|| symbolize::leaf_function(&g.stack)))
}

fn severity_and_advice(g: Option<&GoroutineGroup>) -> (Severity, &'static str) {
    let Some(g) = g else { return (Severity::Low, "rtrace did not see where they are (not in the last snapshot)") };
    if g.forever {
        return (Severity::High, "nothing can ever wake them (a nil channel or an empty select): a goroutine leak");
    }
    match (g.state.as_str(), g.wait_reason.as_deref()) {
        ("waiting", Some("IO wait")) => (
            Severity::Low,
            "they wait for network I/O: connections held open (normal while clients are connected; otherwise set deadlines and close them)",
        ),
        ("running" | "runnable" | "syscall" | "preempted", _) => {
            (Severity::Low, "they are working: more work in flight, a leak only if it never finishes")
        }
        _ => (
            Severity::Medium,
            "unless something will still wake them, they leak: give each goroutine a way to finish (close the channel, cancel a context, a timeout)",
        ),
    }
}

fn leak(p: &GoProcess, r: &GoReport, site: u64) -> Option<Finding> {
    let t = trend(p, site)?;
    if t.span_ns < MIN_SPAN_NS || !t.still_growing || !grew(t.first, t.last) {
        return None;
    }
    let churn = p.churn.as_ref().map(|c| {
        let get = |m: &BTreeMap<u64, u64>| m.get(&site).copied().unwrap_or(0);
        (get(&c.created), get(&c.exited))
    });
    // Churn: short-lived goroutines of the same site make the counts jitter; created − exited
    // counts every one, so it stands in for "never decreased".
    let by_churn = churn.is_some_and(|(c, e)| c >= e + MIN_GROWTH && e * 2 <= c);
    if !t.monotonic && !by_churn {
        return None;
    }
    let function = r.goroutines.sites.get(&site).cloned().unwrap_or_else(|| format!("{site:#x}"));
    let group = parked(r, site);
    let (severity, advice) = severity_and_advice(group);
    let secs = t.span_ns as f64 / 1e9;
    let rate = (t.last - t.first) as f64 / secs;
    let how = if t.monotonic { " and never decreased" } else { "" };
    let churned = churn.map(|(c, e)| format!(" ({c} created, {e} exited)")).unwrap_or_default();
    let at = group.map(|g| {
        let (what, func) = where_parked(g);
        let func = func.map(|f| format!(" in {f}")).unwrap_or_default();
        let blocked = g
            .blocked_ms
            .map(|ms| {
                format!(
                    ", the oldest for {}{:.1} s",
                    if g.blocked_at_least { "at least " } else { "" },
                    ms as f64 / 1e3
                )
            })
            .unwrap_or_default();
        format!(
            "; {} of them are {}{func}{blocked}",
            g.count,
            if g.state == "waiting" { format!("parked in {what}") } else { what }
        )
    });
    let summary = format!(
        "goroutines created by {function} in pid {} grew from {} to {} in {secs:.1} s ({rate:.1} a second){how}{churned}{}: {advice}.",
        p.pid,
        t.first,
        t.last,
        at.unwrap_or_default()
    );
    let parked_in = group.map(|g| {
        let (what, func) = where_parked(g);
        json!({ "count": g.count, "state": g.state, "wait_reason": g.wait_reason, "function": func, "what": what, "forever": g.forever })
    });
    let fields = json!({
        "pid": p.pid, "created_by": function, "gopc": format!("{site:#x}"),
        "count_start": t.first, "count_end": t.last, "span_ms": t.span_ns / 1_000_000,
        "rate_per_s": (rate * 10.0).round() / 10.0, "snapshots": p.snapshots.len(), "monotonic": t.monotonic,
        "created": churn.map(|c| c.0), "exited": churn.map(|c| c.1), "parked": parked_in,
    });
    let Value::Object(fields) = fields else { unreachable!() };
    Some(Finding { kind: FindingKind::GoroutineLeak, severity, summary, fields })
}

#[cfg(test)]
#[path = "goleak_tests.rs"]
mod tests;

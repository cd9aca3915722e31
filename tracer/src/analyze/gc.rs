//! GC cycles, pauses and stop-the-world of a Go process during the session (issue #12 item
//! 5), from the memory reads of `runtime.memstats` / `gcController` and the stop-the-world
//! uprobe (`capture::go::GoGc`); and the `gc_pressure` finding when the world was stopped for
//! a notable share of the session.
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    analyze::children::{Finding, FindingKind, Severity},
    capture::{go::GoGc, Capture, GoProcess},
};

/// Share of the session the world may be stopped before `gc_pressure` is MEDIUM, and HIGH.
/// 5 %: the runtime's own GC design goal keeps STW well under 1 % of wall time; at 5 % every
/// request of a server or step of a CLI is visibly slowed. 20 %: the program spends a fifth of
/// its time with every goroutine stopped.
pub const PAUSE_SHARE_MEDIUM: f64 = 0.05;
pub const PAUSE_SHARE_HIGH: f64 = 0.20;
/// Less stopped time than this is never a finding (a short session with one pause).
pub const PAUSE_MIN_NS: u64 = 20_000_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// GC cycles completed during the session (memstats.numgc, exact).
    pub cycles: u64,
    /// GC pause time during the session (memstats.pause_total_ns at the end minus the start).
    pub pause_total_ns: u64,
    /// Of the pauses that ended during the session (the runtime's pause ring).
    pub pause_p50_ns: u64,
    pub pause_max_ns: u64,
    /// Every stop-the-world timed by the uprobe, by reason (GC's and others: ReadMemStats,
    /// goroutine profiles, GOMAXPROCS…), most total time first.
    pub stw: Vec<StwRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stw_unavailable: Option<String>,
    /// Heap live bytes (first, last, max of the reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_live: Option<Series>,
    /// Heap goal bytes (first, last, max).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_goal: Option<Series>,
    /// The runtime's gc_cpu_fraction (GC's share of the program's CPU since it started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_cpu_share: Option<f64>,
    /// Share of the session's wall time the world was stopped: the uprobe's total when it
    /// ran, else the GC pauses'.
    pub stopped_share: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StwRow {
    pub reason: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub first: u64,
    pub last: u64,
    pub max: u64,
}

fn series(v: impl Iterator<Item = u64> + Clone) -> Option<Series> {
    let first = v.clone().next()?;
    Some(Series { first, last: v.clone().last()?, max: v.max()? })
}

pub fn report(capture: &Capture, _p: &GoProcess, g: &GoGc) -> GcReport {
    let mut pauses: Vec<u64> = g.pauses.iter().map(|&(_, ns)| ns).collect();
    pauses.sort_unstable();
    let mut stw: Vec<StwRow> = g
        .stw
        .iter()
        .map(|s| StwRow { reason: s.reason.clone(), count: s.count, total_ns: s.total_ns, max_ns: s.max_ns })
        .collect();
    stw.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then_with(|| a.reason.cmp(&b.reason)));
    let pause_total_ns = g.pause_total_end_ns.saturating_sub(g.pause_total_start_ns);
    let stw_total: u64 = stw.iter().map(|s| s.total_ns).sum();
    let stopped = if g.stw_unavailable.is_none() && !stw.is_empty() { stw_total } else { pause_total_ns };
    let session_ns = capture.session.duration_ms.saturating_mul(1_000_000);
    GcReport {
        cycles: g.numgc_end.wrapping_sub(g.numgc_start) as u64,
        pause_total_ns,
        // The lower median: a pause that happened.
        pause_p50_ns: pauses.get(pauses.len().saturating_sub(1) / 2).copied().unwrap_or(0),
        pause_max_ns: pauses.last().copied().unwrap_or(0),
        stw,
        stw_unavailable: g.stw_unavailable.clone(),
        heap_live: series(g.heap.iter().map(|h| h.1)),
        heap_goal: series(g.heap.iter().map(|h| h.2)),
        gc_cpu_share: g.gc_cpu_fraction,
        stopped_share: if session_ns == 0 { 0.0 } else { stopped as f64 / session_ns as f64 },
    }
}

/// `gc_pressure`: one per Go process whose world was stopped at least PAUSE_SHARE_MEDIUM of
/// the session (and PAUSE_MIN_NS).
pub fn findings(go: &[crate::analyze::go::GoReport], session_ms: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in go {
        let Some(gc) = &p.gc else { continue };
        let stopped_ns = (gc.stopped_share * session_ms as f64 * 1e6) as u64;
        if gc.stopped_share < PAUSE_SHARE_MEDIUM || stopped_ns < PAUSE_MIN_NS {
            continue;
        }
        let severity = if gc.stopped_share >= PAUSE_SHARE_HIGH { Severity::High } else { Severity::Medium };
        let ms = |ns: u64| ns as f64 / 1e6;
        let worst = gc.stw.first().map_or_else(String::new, |w| {
            format!(
                "; most in {} ({} stops, {:.1} ms, longest {:.2} ms)",
                w.reason,
                w.count,
                ms(w.total_ns),
                ms(w.max_ns)
            )
        });
        let stops: u64 = gc.stw.iter().map(|s| s.count).sum();
        let how = if stops > 0 { format!("{stops} stop-the-world pauses") } else { "GC pauses".to_owned() };
        let summary = format!(
            "pid {} ({}): the world was stopped {:.1} % of the session ({:.1} ms in {how}, {} GC cycles{worst}): \
             allocate less (reuse buffers, sync.Pool), or give the GC more room (GOGC, GOMEMLIMIT)",
            p.pid,
            p.go_version,
            gc.stopped_share * 100.0,
            ms(stopped_ns),
            gc.cycles
        );
        let mut fields = Map::new();
        fields.insert("pid".into(), json!(p.pid));
        fields.insert("stopped_share".into(), json!(gc.stopped_share));
        fields.insert("stopped_ns".into(), json!(stopped_ns));
        fields.insert("cycles".into(), json!(gc.cycles));
        fields.insert("pause_total_ns".into(), json!(gc.pause_total_ns));
        if let Some(w) = gc.stw.first() {
            fields.insert("top_reason".into(), Value::String(w.reason.clone()));
        }
        out.push(Finding { kind: FindingKind::GcPressure, severity, summary, fields });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::go::GoStw;

    fn capture(ms: u64) -> Capture {
        let mut c = Capture::default();
        c.session.duration_ms = ms;
        c
    }

    fn stw(reason: &str, count: u64, total_ns: u64, max_ns: u64) -> GoStw {
        GoStw { reason: reason.into(), count, total_ns, max_ns }
    }

    fn gc_of(stw_rows: Vec<GoStw>) -> GoGc {
        GoGc {
            numgc_start: 10,
            numgc_end: 14,
            pause_total_start_ns: 1_000,
            pause_total_end_ns: 1_000 + 40_000_000,
            pauses: vec![(5, 4_000_000), (1, 1_000_000), (3, 30_000_000), (2, 5_000_000)],
            heap: vec![(0, 8 << 20, 16 << 20), (1, 30 << 20, 32 << 20), (2, 12 << 20, 24 << 20)],
            gc_cpu_fraction: Some(0.125),
            stw: stw_rows,
            stw_unavailable: None,
        }
    }

    #[test]
    fn figures() {
        let g = gc_of(vec![
            stw("GC sweep termination", 4, 2_000_000, 900_000),
            stw("GC mark termination", 4, 41_000_000, 30_000_000),
        ]);
        let r = report(&capture(1_000), &GoProcess::default(), &g);
        assert_eq!(r.cycles, 4);
        assert_eq!(r.pause_total_ns, 40_000_000);
        assert_eq!((r.pause_p50_ns, r.pause_max_ns), (4_000_000, 30_000_000));
        assert_eq!(r.stw[0].reason, "GC mark termination", "most time first");
        assert_eq!(r.heap_live, Some(Series { first: 8 << 20, last: 12 << 20, max: 30 << 20 }));
        assert_eq!(r.heap_goal, Some(Series { first: 16 << 20, last: 24 << 20, max: 32 << 20 }));
        assert_eq!(r.gc_cpu_share, Some(0.125));
        // 43 ms stopped (the uprobe's total) of 1 s.
        assert!((r.stopped_share - 0.043).abs() < 1e-9, "{}", r.stopped_share);
        // numgc wraps (uint32).
        let w = GoGc { numgc_start: u32::MAX, numgc_end: 1, ..Default::default() };
        assert_eq!(report(&capture(1_000), &GoProcess::default(), &w).cycles, 2);
    }

    /// Without the uprobe, the GC pauses' total decides the share.
    #[test]
    fn pause_total_without_uprobe() {
        let mut g = gc_of(vec![]);
        g.stw_unavailable = Some("go1.20 without DWARF".into());
        let r = report(&capture(400), &GoProcess::default(), &g);
        assert!((r.stopped_share - 0.1).abs() < 1e-9);
    }

    fn finding_for(ms: u64, stw_ns: u64) -> Vec<Finding> {
        let g = gc_of(vec![stw("GC mark termination", 8, stw_ns, stw_ns / 4)]);
        let c = capture(ms);
        let p = GoProcess { pid: 42, go_version: "go1.27.3".into(), ..Default::default() };
        let r = crate::analyze::go::GoReport {
            pid: 42,
            go_version: p.go_version.clone(),
            gc: Some(report(&c, &p, &g)),
            ..Default::default()
        };
        findings(&[r], ms)
    }

    #[test]
    fn thresholds() {
        // 4.9 % of 1 s: none.
        assert!(finding_for(1_000, 49_000_000).is_empty());
        // 5 %: MEDIUM.
        let f = finding_for(1_000, 50_000_000);
        assert_eq!((f.len(), f[0].severity, f[0].kind), (1, Severity::Medium, FindingKind::GcPressure));
        assert!(f[0].summary.starts_with("pid 42 (go1.27.3): the world was stopped 5.0 % of the session (50.0 ms in 8 stop-the-world pauses, 4 GC cycles; most in GC mark termination"), "{}", f[0].summary);
        // 20 %: HIGH.
        assert_eq!(finding_for(1_000, 200_000_000)[0].severity, Severity::High);
        // 50 % of 30 ms is 15 ms: under PAUSE_MIN_NS, none.
        assert!(finding_for(30, 15_000_000).is_empty());
    }
}

//! How complete the user stacks are (issue #13's accounting): per process, stacks unwound by
//! CFI, walked by frame pointers, truncated by reason, and the stack bytes unwinds needed —
//! with a `--ustack-bytes` suggestion when copies were too small for more than 1 % of stacks.
use serde::{Deserialize, Serialize};

use crate::capture::Capture;

/// Above this share of truncated copies, report.txt suggests a larger `--ustack-bytes`.
const SUGGEST_ABOVE: f64 = 0.01;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UnwindSection {
    /// Bytes copied per stack (--ustack-bytes); 0 when no process was in DWARF mode.
    pub ustack_bytes: u32,
    pub processes: Vec<UnwindRow>,
    pub total: UnwindRow,
    /// "rerun with --ustack-bytes 32K: …" when truncation by copy size exceeds 1 %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UnwindRow {
    pub pid: u32,
    pub comm: String,
    /// "dwarf" or "fp".
    pub mode: String,
    pub complete_cfi: u64,
    pub frame_pointer: u64,
    pub truncated: Truncated,
    /// Copies dropped (ring buffer full): their stacks are missing from the profiles.
    pub dropped: u64,
    pub bytes_needed_p99: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Truncated {
    pub copy_exhausted: u64,
    pub no_module: u64,
    pub cfi_error: u64,
}

impl Truncated {
    pub fn total(&self) -> u64 {
        self.copy_exhausted + self.no_module + self.cfi_error
    }
}

impl UnwindRow {
    /// Stacks that went through the CFI unwinder.
    pub fn unwound(&self) -> u64 {
        self.complete_cfi + self.truncated.total()
    }
}

/// None when the capture has no unwinding records (older captures, or nothing sampled).
pub fn analyze(capture: &Capture) -> Option<UnwindSection> {
    if capture.unwind.is_empty() {
        return None;
    }
    let processes: Vec<UnwindRow> = capture
        .unwind
        .iter()
        .map(|(&pid, u)| UnwindRow {
            pid,
            comm: capture.processes.get(&pid).map(|p| p.comm.clone()).unwrap_or_default(),
            mode: u.mode.clone(),
            complete_cfi: u.complete_cfi,
            frame_pointer: u.frame_pointer,
            truncated: Truncated {
                copy_exhausted: u.truncated_copy,
                no_module: u.truncated_no_module,
                cfi_error: u.truncated_cfi,
            },
            dropped: u.dropped,
            bytes_needed_p99: u.bytes_needed_p99,
        })
        .collect();
    let mut total = UnwindRow { comm: "all".into(), ..Default::default() };
    for p in &processes {
        total.complete_cfi += p.complete_cfi;
        total.frame_pointer += p.frame_pointer;
        total.truncated.copy_exhausted += p.truncated.copy_exhausted;
        total.truncated.no_module += p.truncated.no_module;
        total.truncated.cfi_error += p.truncated.cfi_error;
        total.dropped += p.dropped;
        // The worst process decides what a copy must hold.
        total.bytes_needed_p99 = total.bytes_needed_p99.max(p.bytes_needed_p99);
    }
    let ustack_bytes = capture.session.ustack_bytes.unwrap_or(0);
    let suggestion = suggest(&total, ustack_bytes);
    Some(UnwindSection { ustack_bytes, processes, total, suggestion })
}

fn suggest(total: &UnwindRow, ustack_bytes: u32) -> Option<String> {
    let unwound = total.unwound();
    if unwound == 0 || (total.truncated.copy_exhausted as f64) <= SUGGEST_ABOVE * unwound as f64 {
        return None;
    }
    let pct = 100.0 * total.truncated.copy_exhausted as f64 / unwound as f64;
    let max = tracer_common::ustack::USTACK_MAX;
    if ustack_bytes >= max {
        return Some(format!(
            "{pct:.1} % of stacks were deeper than the largest copy (--ustack-bytes {}K): their outer frames are missing",
            max / 1024
        ));
    }
    // The next power of two above what the unwinds needed, at least twice the copy now.
    let want = total.bytes_needed_p99.max(ustack_bytes.saturating_mul(2)).next_power_of_two().min(max);
    Some(format!(
        "{pct:.1} % of stacks were cut at --ustack-bytes {}K: rerun with --ustack-bytes {}K",
        ustack_bytes / 1024,
        want / 1024
    ))
}

/// The one-line summary for report.txt (None when nothing was unwound or walked).
pub fn summary_line(u: &UnwindSection) -> Option<String> {
    let t = &u.total;
    if t.unwound() + t.frame_pointer == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if t.unwound() > 0 {
        let pct = 100.0 * t.complete_cfi as f64 / t.unwound() as f64;
        parts.push(format!("{} unwound by CFI ({pct:.1} % complete)", t.unwound()));
    }
    if t.frame_pointer > 0 {
        parts.push(format!("{} walked by frame pointers", t.frame_pointer));
    }
    let mut line = format!("user stacks: {}", parts.join(", "));
    let tr = &t.truncated;
    if tr.total() > 0 {
        let reasons: Vec<String> =
            [(tr.copy_exhausted, "copy exhausted"), (tr.no_module, "no module"), (tr.cfi_error, "CFI error")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{what} {n}"))
                .collect();
        line.push_str(&format!("; truncated {} ({})", tr.total(), reasons.join(", ")));
    }
    if t.dropped > 0 {
        line.push_str(&format!("; {} stack copies dropped (ring buffer full)", t.dropped));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::UnwindStats;

    fn capture(stats: &[(u32, UnwindStats)], ustack: u32) -> Capture {
        let mut c = Capture { unwind: stats.iter().cloned().collect(), ..Default::default() };
        c.session.ustack_bytes = Some(ustack);
        c
    }

    #[test]
    fn totals_and_no_suggestion_under_one_percent() {
        let a = UnwindStats {
            mode: "dwarf".into(),
            complete_cfi: 990,
            truncated_copy: 10,
            bytes_needed_p99: 9000,
            ..Default::default()
        };
        let b = UnwindStats { mode: "fp".into(), frame_pointer: 50, ..Default::default() };
        let u = analyze(&capture(&[(1, a), (2, b)], 16384)).unwrap();
        assert_eq!((u.total.complete_cfi, u.total.frame_pointer, u.total.truncated.copy_exhausted), (990, 50, 10));
        assert_eq!(u.suggestion, None, "10 of 1000 is exactly 1 %: no suggestion");
        assert_eq!(
            summary_line(&u).unwrap(),
            "user stacks: 1000 unwound by CFI (99.0 % complete), 50 walked by frame pointers; truncated 10 (copy exhausted 10)"
        );
    }

    #[test]
    fn suggests_a_larger_copy_above_one_percent() {
        let a = UnwindStats {
            mode: "dwarf".into(),
            complete_cfi: 900,
            truncated_copy: 100,
            bytes_needed_p99: 18_384,
            ..Default::default()
        };
        let u = analyze(&capture(&[(1, a.clone())], 16384)).unwrap();
        assert_eq!(
            u.suggestion.as_deref(),
            Some("10.0 % of stacks were cut at --ustack-bytes 16K: rerun with --ustack-bytes 32K")
        );
        let u = analyze(&capture(&[(1, a)], 65536)).unwrap();
        assert!(u.suggestion.unwrap().contains("deeper than the largest copy (--ustack-bytes 64K)"));
    }

    #[test]
    fn nothing_without_records() {
        assert_eq!(analyze(&Capture::default()), None);
    }
}

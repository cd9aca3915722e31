//! goroutine_leak on literal snapshot series (the goroutines capture of goroutines_tests).
use serde_json::json;

use super::*;
use crate::{
    analyze::goroutines::tests::{go_capture, resolver, worker_site},
    capture::go::GoChurn,
};

const S: u64 = 1_000_000_000;

/// The literal capture with 30 more workers in the last snapshot (33 in chan receive), and the
/// workers' site counted `counts` in the snapshots (at 0, 1, 2, 3 s; `dropped` entries lost).
fn capture(counts: &[u64], dropped: &[u64]) -> Capture {
    let mut c = go_capture();
    let p = &mut c.go[0];
    let worker = p.last[1].clone();
    for goid in 30..60 {
        p.last.push(crate::capture::go::Goroutine { goid, ..worker.clone() });
    }
    p.snapshots = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| crate::capture::go::GoSnapshot {
            at_ns: i as u64 * S,
            live: n + 3,
            dropped: dropped.get(i).copied().unwrap_or(0),
            by_site: [(worker_site(), n)].into_iter().collect(),
            ..Default::default()
        })
        .collect();
    c
}

fn leaks(c: &Capture) -> Vec<Finding> {
    let go = crate::analyze::go::reports_alone(c, &mut resolver());
    findings(c, &go)
}

#[test]
fn a_site_that_only_grows_is_a_medium_leak_with_where_they_wait() {
    let f = leaks(&capture(&[3, 13, 23, 33], &[]));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].kind, f[0].severity), (FindingKind::GoroutineLeak, Severity::Medium));
    assert_eq!(
        f[0].summary,
        "goroutines created by main.main in pid 100 grew from 3 to 33 in 3.0 s (10.0 a second) and never decreased; 33 of them are parked in chan receive in main.worker, the oldest for at least 8.0 s: unless something will still wake them, they leak: give each goroutine a way to finish (close the channel, cancel a context, a timeout)."
    );
    let x = &f[0].fields;
    assert_eq!(
        (x["count_start"].clone(), x["count_end"].clone(), x["rate_per_s"].clone()),
        (json!(3), json!(33), json!(10.0))
    );
    assert_eq!(x["parked"]["wait_reason"], json!("chan receive"));
    assert_eq!(x["parked"]["function"], json!("main.worker"));
    // And it reaches the report's findings.
    let c = capture(&[3, 13, 23, 33], &[]);
    let a = crate::report::analyze(&c, &mut resolver());
    assert_eq!(a.report.findings.iter().filter(|f| f.kind == FindingKind::GoroutineLeak).count(), 1);
}

#[test]
fn a_pool_started_at_the_beginning_is_not_a_leak() {
    assert_eq!(leaks(&capture(&[1, 33, 33, 33], &[])), []);
    assert_eq!(leaks(&capture(&[1, 30, 33, 33], &[])), [], "grew before the midpoint only");
}

#[test]
fn a_fall_is_not_a_leak_unless_the_snapshot_dropped_that_many() {
    assert_eq!(leaks(&capture(&[3, 13, 10, 33], &[])), []);
    assert_eq!(leaks(&capture(&[3, 13, 10, 33], &[0, 0, 3, 0])).len(), 1);
}

#[test]
fn small_growth_short_sessions_and_few_snapshots_are_not_leaks() {
    assert_eq!(leaks(&capture(&[3, 6, 9, 12], &[])), [], "+9");
    assert_eq!(leaks(&capture(&[30, 35, 40, 44], &[])), [], "+14 but under +50 %");
    assert_eq!(leaks(&capture(&[3, 33, 63], &[])).len(), 1, "three snapshots, 2 s");
    assert_eq!(leaks(&capture(&[3, 63], &[])), [], "two snapshots");
    let mut c = capture(&[3, 13, 23, 33], &[]);
    c.go[0].snapshots[3].at_ns = S + S / 2;
    c.go[0].snapshots[2].at_ns = S + S / 4;
    assert_eq!(leaks(&c), [], "1.5 s");
}

#[test]
fn growth_on_a_nil_channel_is_high_in_io_wait_low() {
    let mut c = capture(&[3, 13, 23, 33], &[]);
    c.go[0].wait_reasons[14] = "chan receive (nil chan)".into();
    let f = leaks(&c);
    assert_eq!(f[0].severity, Severity::High);
    assert!(f[0].summary.ends_with("nothing can ever wake them (a nil channel or an empty select): a goroutine leak."));
    c.go[0].wait_reasons[14] = "IO wait".into();
    let f = leaks(&c);
    assert_eq!(f[0].severity, Severity::Low);
    assert!(f[0].summary.contains("33 of them are parked in IO wait in main.worker"), "{}", f[0].summary);
}

#[test]
fn with_churn_counts_that_jitter_still_show_a_leak() {
    let mut c = capture(&[3, 20, 15, 33], &[]);
    assert_eq!(leaks(&c), []);
    let churn = GoChurn {
        created: [(worker_site(), 40)].into_iter().collect(),
        exited: [(worker_site(), 10)].into_iter().collect(),
        ..Default::default()
    };
    c.go[0].churn = Some(churn.clone());
    let f = leaks(&c);
    assert_eq!(f.len(), 1);
    assert!(
        f[0].summary.contains("grew from 3 to 33 in 3.0 s (10.0 a second) (40 created, 10 exited);"),
        "{}",
        f[0].summary
    );
    assert_eq!((f[0].fields["created"].clone(), f[0].fields["monotonic"].clone()), (json!(40), json!(false)));
    // Most exited: short-lived goroutines, the growth is noise in their counts.
    c.go[0].churn = Some(GoChurn { exited: [(worker_site(), 30)].into_iter().collect(), ..churn });
    assert_eq!(leaks(&c), []);
}

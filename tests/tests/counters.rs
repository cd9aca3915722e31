//! Counters that mean what they say (root required): "without stack" counts on-CPU samples
//! only; off-CPU stack walks that fail are counted apart.
use tests::*;

/// 100 short children sampled at 1 Hz: (almost) no on-CPU sample, but blocked threads whose
/// stacks cannot be walked (a task between exec and exit has no user stack to walk). Before
/// the split, those walks were reported as samples without a stack: "without stack 14" of 0.
#[test]
fn without_stack_counts_samples_only() {
    if !privileged("without_stack_counts_samples_only") {
        return;
    }
    let run = rtrace("counters", &["-q", "-F", "1", "--", "bash", "-c", "for i in $(seq 100); do /bin/true; done"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let a = &run.report()["accounting"];
    let samples = a["cpu_samples"].as_u64().unwrap();
    // A sample may miss both its user and its kernel stack: at most two errors each.
    assert!(a["stack_errors"].as_u64().unwrap() <= 2 * samples, "{a}");
    // Whether a walk fails depends on where the children are caught; when one does, it is
    // printed on its own line, and never counted as a sample's.
    let off = a["offcpu_stack_errors"].as_u64().unwrap();
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    let line = format!("warning: lost {off} off-CPU stack walks that failed: those blocks show no stack");
    assert_eq!(txt.lines().any(|l| l == line), off > 0, "{txt}");
    assert!(!txt.contains("off-CPU stack walks that failed") || off > 0, "{txt}");
    assert_no_rtrace_programs();
}

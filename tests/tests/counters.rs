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
    assert!(a["offcpu_stack_errors"].as_u64().unwrap() > 0, "{a}");
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    let line = format!("off-CPU stack walks that failed: {}", a["offcpu_stack_errors"]);
    assert!(txt.lines().any(|l| l == line), "{txt}");
    assert_no_rtrace_programs();
}

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

/// A Go program that blocks in 24,000 distinct stacks, half again as many as the kernel's user
/// stack table holds (16,384): every stack is kept, because the table's entries move to rtrace
/// as it fills (collect/stacks.rs). Before, the table filled and the rest were lost: this
/// fixture lost ~10,600 off-CPU stack walks, and `go build -a` a third of its samples' user
/// stacks.
#[test]
fn more_stacks_than_the_kernel_table_holds_are_all_kept() {
    if !privileged("more_stacks_than_the_kernel_table_holds_are_all_kept") {
        return;
    }
    let bin = go_fixture("go_stacks", Go::Debian119);
    let run = rtrace("stacks", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    // The fixture's own count of the sleeps that blocked (the kernel's count of its thread's
    // voluntary switches): a sleep whose timer fired before the switch never blocked.
    let out = run.stdout();
    let blocked: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("paths=24000 blocked="))
        .unwrap_or_else(|| panic!("no fixture line in {out}"))
        .parse()
        .unwrap();
    let a = &run.report()["accounting"];
    assert_eq!(a["stack_errors_by_reason"]["user_collision"], 0, "{a}");
    assert_eq!(a["offcpu_stack_errors"], 0, "{a}");
    assert_eq!(a["offcpu_lost"], 0, "{a}");
    // At least one move (the table half full), and more entries moved than the table holds.
    assert!(a["stacks_harvested"].as_u64().unwrap_or(0) > 16_384, "{a}");
    // Each block is in offcpu.folded under its own path: 15 frames main.zero or main.one.
    let paths: std::collections::BTreeSet<u32> = run
        .folded("offcpu.folded")
        .iter()
        .filter(|(s, _)| s.contains("hrtimer_nanosleep") && s.ends_with("[sleep]"))
        .filter_map(|(s, _)| s.split_once(";main.block;").map(|(path, _)| path.to_owned()))
        .filter_map(|path| {
            let bits: Vec<bool> = path
                .split(';')
                .filter_map(|f| match f {
                    "main.zero" => Some(false),
                    "main.one" => Some(true),
                    _ => None,
                })
                .collect();
            (bits.len() == 15).then(|| bits.iter().enumerate().map(|(i, &b)| u32::from(b) << i).sum())
        })
        .collect();
    assert!(paths.iter().all(|&p| p < 24_000), "a path the fixture never took: {:?}", paths.last());
    // Not quite all: a handful in 24,000 (0-6 measured) blocked by the fixture's count and
    // have no record (see the closing note of stop 27); before the table's entries moved, the
    // fixture lost thousands.
    assert!(paths.len() * 1000 >= blocked * 999, "{} of {blocked} blocked paths seen", paths.len());
    assert_no_rtrace_programs();
}

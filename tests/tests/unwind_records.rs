//! The eBPF half of CFI unwinding (issue #13), end to end (root required): with `--unwind
//! dwarf` every user stack becomes a copy of registers + stack bytes sent through the USTACKS
//! ring; on-CPU samples are counted from their records, off-CPU blocks, wakers and slow calls
//! reference copies by id. These tests check the records, ids and counts (rtrace's
//! RTRACE_USTACK_STATS line and capture.json), not the unwound frames: those are the
//! unwinder's (tracer/src/unwind) and have tests of their own.
use serde_json::Value;
use tests::*;

/// The numbers of rtrace's `rtrace-ustacks:` line (RTRACE_USTACK_STATS=1).
fn stats(run: &Run) -> std::collections::BTreeMap<String, u64> {
    let err = run.stderr();
    let line = err.lines().find(|l| l.starts_with("rtrace-ustacks:")).unwrap_or_else(|| panic!("no stats in {err}"));
    line.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_owned(), v.parse().unwrap())).collect()
}

fn capture(run: &Run) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.dir.join("capture.json")).unwrap()).unwrap()
}

fn run_with(test: &str, args: &[&str], env: &[(&str, &str)]) -> (Run, std::collections::BTreeMap<String, u64>) {
    let mut env = env.to_vec();
    env.push(("RTRACE_USTACK_STATS", "1"));
    let run = rtrace_env(test, args, &env);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let s = stats(&run);
    (run, s)
}

/// The unwind accounting of the process the fixture runs as (the root).
fn unwind_of(c: &Value, pid: u64) -> &Value {
    &c["unwind"][pid.to_string()]
}

/// Every on-CPU sample of a DWARF process comes as one record, counted once; nothing dropped;
/// copies hold between 1 byte and --ustack-bytes, and a 16 KiB copy of this shallow stack
/// reaches the top of the stack mapping (never cut).
#[test]
fn dwarf_samples_are_records() {
    if !privileged("dwarf_samples_are_records") {
        return;
    }
    let bin = fixture("cpu_chain");
    let (run, s) = run_with("dwarf_samples", &["-q", "--unwind", "dwarf", "--", bin.to_str().unwrap(), "2"], &[]);
    assert_eq!(s["dropped"], 0, "{s:?}");
    assert_eq!(s["malformed"], 0, "{s:?}");
    assert_eq!(s["sent"], s["records"], "{s:?}");
    assert_eq!(s["samples"], s["cpu_samples"], "every sample is a record: {s:?}");
    assert!(s["samples"] >= 100, "{s:?}");
    assert_eq!(s["samples"] + s["copies"], s["records"]);
    assert!(s["max_len"] <= 16384 && s["max_len"] > 0, "{s:?}");
    // One at most: a sample that hits the execve itself (before its point of no return) copies
    // the held child's stack, rtrace's own and deeper than 16 KiB (about 1 run in 7).
    assert!(s["cut"] <= 1, "{s:?}");
    // An empty copy only where the stack was unreadable, and counted so.
    assert!(s["empty"] <= s["copy_failed"], "{s:?}");
    let c = capture(&run);
    let pid = c["target"]["pid"].as_u64().unwrap();
    // The report counts exactly the samples taken.
    let counted: u64 = c["cpu_samples"].as_array().unwrap().iter().map(|x| x["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, c["accounting"]["cpu_samples"].as_u64().unwrap());
    assert_eq!(counted, s["cpu_samples"]);
    for x in c["cpu_samples"].as_array().unwrap() {
        assert!(!x["user"].as_array().unwrap().is_empty(), "a sample without its user stack: {x}");
        assert!(x.get("leaf").is_none(), "no frame-pointer leaf repair for a copy: {x}");
    }
    let u = unwind_of(&c, pid);
    assert_eq!(u["mode"], "dwarf", "{}", c["unwind"]);
    assert_eq!(u["dropped"], 0);
    assert_eq!(u["unresolved"], 0);
    assert_eq!(u["frame_pointer"], 0, "{u}");
    // Every record of the process was unwound and counted under one outcome.
    let outcomes: u64 = ["complete_cfi", "truncated_copy", "truncated_no_module", "truncated_cfi"]
        .iter()
        .map(|k| u[k].as_u64().unwrap())
        .sum();
    // (and the held child's stack at attach, read from its memory: blocked before exec)
    assert_eq!(outcomes, s["records"] + s["proc_reads"], "{u}");
    // Raw stack bytes never reach the capture.
    let text = std::fs::read_to_string(run.dir.join("capture.json")).unwrap();
    assert!(!text.contains("\"stack\"") && !text.contains("bytes\":["), "raw bytes in capture.json");
    assert_no_rtrace_programs();
}

/// --ustack-bytes 4K: a copy stops at 4096 bytes and says it was cut (FLAG_CUT) when the stack
/// goes on above. The samples are taken at the bottom of a 40-deep recursion (~10 KiB of
/// frames), so every one of them is cut. (A shallow stack is not a reliable case: above the
/// program's first frames the kernel leaves a random gap of up to 8 KiB below the argument and
/// environment strings at exec, and a page of it that was never written cannot be read by the
/// copy: about one run in six, most copies of a shallow stack stopped there, not at the limit.)
#[test]
fn small_copies_are_cut() {
    if !privileged("small_copies_are_cut") {
        return;
    }
    let bin = tests::nofp_fixture("nofp_recurse");
    let (_run, s) = run_with(
        "ustack_4k",
        &["-q", "--unwind", "dwarf", "--ustack-bytes", "4K", "--", bin.to_str().unwrap(), "1"],
        &[],
    );
    assert_eq!(s["dropped"], 0, "{s:?}");
    assert_eq!(s["max_len"], 4096, "{s:?}");
    // Every sample but one taken in the fixture's first milliseconds (before the recursion is
    // deep) is cut; copies of shallow stacks may be too.
    assert!(s["samples"] >= 50 && s["cut"] + 1 >= s["samples"], "{s:?}");
    assert_no_rtrace_programs();
}

/// Off-CPU: the blocked read's user stack (taken when the call returns), its waker's and the
/// slow call's are copies, resolved by id at drain (none missing), without leaf repair.
#[test]
fn dwarf_offcpu_stacks_by_copy_id() {
    if !privileged("dwarf_offcpu_stacks_by_copy_id") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let (run, s) = run_with("dwarf_offcpu", &["-q", "--unwind", "dwarf", "--", bin.to_str().unwrap()], &[]);
    assert_eq!(s["dropped"], 0, "{s:?}");
    assert_eq!(s["sent"], s["records"], "{s:?}");
    let out = run.stdout();
    let tid = |key: &str| -> u64 { out.split(key).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let (reader, writer) = (tid("reader_tid="), tid("writer_tid="));
    let c = capture(&run);
    let pid = c["target"]["pid"].as_u64().unwrap();
    assert_eq!(unwind_of(&c, pid)["unresolved"], 0, "{}", c["unwind"]);
    assert_eq!(unwind_of(&c, pid)["mode"], "dwarf");
    // The ~1 s read, woken by the writer.
    let read: Vec<&Value> = c["offcpu"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["tid"] == reader && o["total_ns"].as_u64().unwrap() > 800_000_000)
        .collect();
    assert!(!read.is_empty(), "{}", c["offcpu"]);
    for o in &read {
        assert!(!o["user"].as_array().unwrap().is_empty(), "{o}");
        assert!(o.get("leaf").is_none(), "{o}");
    }
    let wake = c["wakeups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["tid"] == reader && w["waker_tid"] == writer)
        .unwrap_or_else(|| panic!("{}", c["wakeups"]));
    assert!(!wake["user"].as_array().unwrap().is_empty(), "{wake}");
    assert!(!wake["waker_user"].as_array().unwrap().is_empty(), "{wake}");
    assert!(wake.get("waker_leaf").is_none(), "{wake}");
    let slow = c["slow_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["tid"] == reader && x["duration_ns"].as_u64().unwrap() > 800_000_000)
        .unwrap_or_else(|| panic!("{}", c["slow_calls"]));
    assert!(!slow["user"].as_array().unwrap().is_empty(), "{slow}");
    assert_no_rtrace_programs();
}

/// A child forked without exec (a subshell) inherits its parent's mode in the kernel: its
/// samples come as records too.
#[test]
fn forked_child_inherits_dwarf() {
    if !privileged("forked_child_inherits_dwarf") {
        return;
    }
    let script = "i=0; (while [ $i -lt 300000 ]; do i=$((i+1)); done); true";
    let (run, s) = run_with("dwarf_fork", &["-q", "--unwind", "dwarf", "--", "sh", "-c", script], &[]);
    assert_eq!(s["samples"], s["cpu_samples"], "{s:?}");
    let c = capture(&run);
    let pid = c["target"]["pid"].as_u64().unwrap();
    let sub: Vec<(&String, &Value)> =
        c["unwind"].as_object().unwrap().iter().filter(|(k, _)| k.as_str() != pid.to_string()).collect();
    assert!(!sub.is_empty(), "no child in {}", c["unwind"]);
    let busy = sub
        .iter()
        .find(|(_, u)| u["truncated_no_module"].as_u64().unwrap() + u["complete_cfi"].as_u64().unwrap() >= 20);
    let (_, u) = busy.unwrap_or_else(|| panic!("the subshell's samples are not records: {}", c["unwind"]));
    assert_eq!(u["mode"], "dwarf");
    assert_eq!(u["frame_pointer"], 0, "{u}");
    assert_no_rtrace_programs();
}

/// --unwind fp: no copy at all, the frame-pointer walk as before (the full chain of the -O0
/// fixture), its stacks counted as frame-pointer ones.
#[test]
fn fp_mode_sends_nothing() {
    if !privileged("fp_mode_sends_nothing") {
        return;
    }
    let bin = fixture("cpu_chain");
    let (run, s) = run_with("fp_mode", &["-q", "--unwind", "fp", "--", bin.to_str().unwrap(), "2"], &[]);
    assert_eq!((s["sent"], s["records"]), (0, 0), "{s:?}");
    let c = capture(&run);
    let pid = c["target"]["pid"].as_u64().unwrap();
    let u = unwind_of(&c, pid);
    assert_eq!(u["mode"], "fp", "{}", c["unwind"]);
    let samples: u64 = c["cpu_samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["tgid"] == pid && !x["user"].as_array().unwrap().is_empty())
        .map(|x| x["count"].as_u64().unwrap())
        .sum();
    let blocks: u64 = c["offcpu"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["tgid"] == pid && !x["user"].as_array().unwrap().is_empty())
        .map(|x| x["count"].as_u64().unwrap())
        .sum();
    assert_eq!(u["frame_pointer"].as_u64().unwrap(), samples + blocks, "{u}");
    let folded = run.folded("cpu.folded");
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    let chain = samples_matching(&folded, "cpu_chain;__libc_start_call_main;main;outer;middle;leaf");
    assert!(chain * 100 >= total * 90, "{folded:?}");
    assert_no_rtrace_programs();
}

/// A thread blocked since before attach in a DWARF-mode process: its stack is read from its
/// memory (process_vm_readv, from the saved sp) and unwound like a copy, not walked by frame
/// pointers (no leaf repair), and counted in the process's accounting.
#[test]
fn blocked_before_attach_read_for_cfi() {
    if !privileged("blocked_before_attach_read_for_cfi") {
        return;
    }
    let blocked = FifoBlocked::start("fifo_cfi");
    let pid = blocked.pid();
    let (run, s) = run_with("cfi_pre", &["-q", "--unwind", "dwarf", "--pid", &pid.to_string(), "-d", "1s"], &[]);
    drop(blocked);
    assert_eq!(s["proc_reads"], 1, "{s:?}");
    let c = capture(&run);
    let read = c["slow_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["before_attach"] == true)
        .unwrap_or_else(|| panic!("{}", c["slow_calls"]));
    assert!(!read["user"].as_array().unwrap().is_empty(), "{read}");
    assert!(read.get("leaf").is_none(), "{read}");
    let u = unwind_of(&c, pid as u64);
    assert_eq!(u["mode"], "dwarf");
    let outcomes: u64 = ["complete_cfi", "truncated_copy", "truncated_no_module", "truncated_cfi"]
        .iter()
        .map(|k| u[k].as_u64().unwrap())
        .sum();
    assert_eq!(outcomes, s["records"] + 1, "{u}");
    assert_no_rtrace_programs();
}

//! Complete user stacks without frame pointers (issue #13), end to end (root required): C built
//! -O2 -fomit-frame-pointer and Rust release fixtures, Debian's python3, an off-CPU read()
//! through libc — each with the exact chain on ≥ 95 % of samples by CFI unwinding (the default,
//! --unwind auto), a `--unwind fp` control that shows the fixture really lacks frame pointers,
//! and truncation counted when --ustack-bytes is too small. Nothing lost: no sample, no copy.
use serde_json::Value;
use tests::*;

/// Runs `bin secs` under rtrace with `extra` arguments; checks nothing was lost.
fn traced(test: &str, extra: &[&str], bin: &std::path::Path, secs: &str) -> Run {
    let mut args = vec!["-q", "-F", "199"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", bin.to_str().unwrap(), secs]);
    let run = rtrace(test, &args);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["accounting"]["lost_samples"], 0);
    if let Some(t) = r["unwind"]["total"].as_object() {
        assert_eq!(t["dropped"], 0, "stack copies dropped: {}", r["unwind"]);
    }
    run
}

/// Share (‰) of the samples whose stack contains `needle`, and the total.
fn share(run: &Run, needle: &str) -> (u64, u64) {
    let folded = run.folded("cpu.folded");
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    assert!(total >= 100, "too few samples ({total}) to judge: {folded:?}");
    (samples_matching(&folded, needle) * 1000 / total, total)
}

fn unwind_total(r: &Value) -> &Value {
    &r["unwind"]["total"]
}

/// main → outer → middle → leaf in C without frame pointers: the whole chain on ≥ 95 % of the
/// samples with CFI; a frame-pointer walk of the same program finds it (almost) never.
#[test]
fn c_chain_without_frame_pointers() {
    if !privileged("c_chain_without_frame_pointers") {
        return;
    }
    let bin = nofp_fixture("nofp_chain");
    let chain = "__libc_start_call_main;main;outer;middle;leaf";
    let run = traced("nofp_chain", &[], &bin, "2");
    let (permille, total) = share(&run, chain);
    assert!(permille >= 950, "chain on {permille}‰ of {total}: {:?}", run.folded("cpu.folded"));
    let r = run.report();
    assert_eq!(r["unwind"]["processes"][0]["mode"], "dwarf");
    let fp = traced("nofp_chain_fp", &["--unwind", "fp"], &bin, "1");
    let (fp_permille, _) = share(&fp, chain);
    assert!(
        fp_permille <= 200,
        "the fp control found the chain on {fp_permille}‰: does the fixture keep frame pointers?"
    );
    assert_no_rtrace_programs();
}

/// A comparator called back from libc's qsort keeps run_sort and main above libc's frames.
#[test]
fn qsort_callback_keeps_its_callers() {
    if !privileged("qsort_callback_keeps_its_callers") {
        return;
    }
    let bin = nofp_fixture("nofp_qsort");
    let run = traced("nofp_qsort", &[], &bin, "2");
    let folded = run.folded("cpu.folded");
    let in_cmp: u64 = folded.iter().filter(|(s, _)| s.ends_with(";cmp")).map(|(_, n)| n).sum();
    let whole: u64 = folded
        .iter()
        .filter(|(s, _)| s.ends_with(";cmp") && s.contains("__libc_start_call_main;main;run_sort;"))
        .map(|(_, n)| n)
        .sum();
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    assert!(in_cmp * 100 >= total * 50, "cmp is the hot function: {folded:?}");
    assert!(whole * 100 >= in_cmp * 95, "run_sort and main above cmp in {whole} of {in_cmp}: {folded:?}");
    let fp = traced("nofp_qsort_fp", &["--unwind", "fp"], &bin, "1");
    let (lost, _) = share(&fp, "main;run_sort;");
    assert!(lost <= 50, "fp control kept run_sort on {lost}‰");
    assert_no_rtrace_programs();
}

/// A 40-deep recursion with frames of three sizes (~10 KiB of stack): every level on ≥ 95 % of
/// the samples at the default copy; with --ustack-bytes 4K the stacks are cut, counted as
/// "copy exhausted", and report.txt suggests a larger copy.
#[test]
fn deep_recursion_and_truncation_counted() {
    if !privileged("deep_recursion_and_truncation_counted") {
        return;
    }
    let bin = nofp_fixture("nofp_recurse");
    let run = traced("nofp_recurse", &[], &bin, "2");
    let folded = run.folded("cpu.folded");
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    let exact: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.ends_with(";bottom")
                && s.contains("__libc_start_call_main;main;descend;")
                && s.split(';').filter(|f| *f == "descend").count() == 41
                && s.split(';').filter(|f| f.ends_with("_frame")).count() == 40
        })
        .map(|(_, n)| n)
        .sum();
    assert!(exact * 100 >= total * 95, "exact 41-level chain on {exact} of {total}: {folded:?}");
    let r = run.report();
    assert_eq!(unwind_total(&r)["truncated"]["copy_exhausted"], 0, "{}", r["unwind"]);

    let small = traced("nofp_recurse_4k", &["--ustack-bytes", "4K"], &bin, "1");
    let r = small.report();
    let t = unwind_total(&r);
    let cut = t["truncated"]["copy_exhausted"].as_u64().unwrap();
    let unwound = t["complete_cfi"].as_u64().unwrap()
        + t["truncated"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    assert!(cut * 2 >= unwound, "most stacks cut at 4 KiB: {}", r["unwind"]);
    assert!(t["bytes_needed_p99"].as_u64().unwrap() >= 4096, "{}", r["unwind"]);
    let txt = std::fs::read_to_string(small.dir.join("report.txt")).unwrap();
    assert!(txt.contains("hint: ") && txt.contains("rerun with --ustack-bytes 8K"), "{txt}");
    assert_no_rtrace_programs();
}

/// Rust release code (no frame pointers, linked by LLD: p_offset ≠ p_vaddr) names its chain.
#[test]
fn rust_release_chain() {
    if !privileged("rust_release_chain") {
        return;
    }
    let bin = rust_fixture("nofp_chain");
    let chain = "nofp_chain::main;nofp_chain::outer;nofp_chain::middle;nofp_chain::leaf";
    let run = traced("nofp_rust", &[], &bin, "2");
    let (permille, total) = share(&run, chain);
    assert!(permille >= 950, "chain on {permille}‰ of {total}: {:?}", run.folded("cpu.folded"));
    assert!(share(&run, "__libc_start_call_main;main;").0 >= 950, "{:?}", run.folded("cpu.folded"));
    let fp = traced("nofp_rust_fp", &["--unwind", "fp"], &bin, "1");
    assert!(share(&fp, chain).0 <= 200, "fp control: {:?}", fp.folded("cpu.folded"));
    assert_no_rtrace_programs();
}

/// Debian's python3 (no frame pointers, non-PIE): interpreter stacks reach Py_BytesMain.
#[test]
fn python3_reaches_py_bytes_main() {
    if !privileged("python3_reaches_py_bytes_main") {
        return;
    }
    let py = std::path::Path::new("/usr/bin/python3");
    let script = "import json, time\nt = time.time()\nd = [{'a': [i, str(i)]} for i in range(2000)]\n\
                  while time.time() - t < 2: json.loads(json.dumps(d))";
    let run = rtrace("python3", &["-q", "-F", "199", "--", py.to_str().unwrap(), "-c", script]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let (permille, total) = share(&run, "Py_BytesMain;");
    assert!(
        permille >= 950,
        "Py_BytesMain on {permille}‰ of {total}: {:?}",
        &run.folded("cpu.folded")[..5.min(total as usize)]
    );
    let r = run.report();
    assert_eq!(unwind_total(&r)["dropped"], 0);
    assert_no_rtrace_programs();
}

/// A read() through libc's frameless wrapper, off CPU: attributed to its caller wait_for_child.
#[test]
fn offcpu_read_through_libc_names_its_caller() {
    if !privileged("offcpu_read_through_libc_names_its_caller") {
        return;
    }
    let bin = nofp_fixture("nofp_read");
    let run = rtrace("nofp_read", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    assert!(run.stdout().contains("nofp_read: rounds=5"), "{}", run.stdout());
    let folded = run.folded("offcpu.folded");
    let pid = run.report()["target"]["pid"].as_u64().unwrap();
    let _ = pid;
    // Off-CPU values are µs; five ~200 ms reads.
    let through: u64 = folded
        .iter()
        .filter(|(s, _)| s.contains("__libc_start_call_main;main;wait_for_child;") && s.contains("read"))
        .map(|(_, n)| n)
        .sum();
    assert!(through >= 800_000, "read() under wait_for_child: {through} µs in {folded:?}");
    assert_no_rtrace_programs();
}

//! On-CPU profiling, end to end, against fixtures with known call chains (root required).
use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use tests::*;

/// main → outer → middle → leaf, symbolized in order, leaf ≥ 90% of samples, nothing lost.
#[test]
fn c_call_chain_symbolized_in_order() {
    if !privileged("c_call_chain_symbolized_in_order") {
        return;
    }
    let bin = fixture("cpu_chain");
    let run = rtrace("c_chain", &["-q", "--", bin.to_str().unwrap(), "2"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["session"]["ended_by"], "target_exit");
    assert_eq!(r["session"]["clock"], "cpu-clock");
    assert_eq!(r["accounting"]["lost_samples"], 0);
    assert_eq!(r["accounting"]["stack_errors"], 0);
    let total = r["accounting"]["cpu_samples"].as_u64().unwrap();
    // One sample per 1/99 s of CPU time the fixture really got (it reports it), ±15%.
    let expected = expected_samples(fixture_cpu_ms(&run.stdout()), 99);
    assert!(total * 100 >= expected * 85 && total * 100 <= expected * 115, "samples {total}, expected ~{expected}");

    let folded = run.folded("cpu.folded");
    // The whole chain from _start: CFI unwinding (the default) goes past libc's frameless
    // __libc_start_call_main, where the frame-pointer walk stopped.
    let chain = samples_matching(
        &folded,
        "cpu_chain;_start;__libc_start_main_impl;__libc_start_call_main;main;outer;middle;leaf",
    );
    assert!(chain * 100 >= total * 90, "chain has {chain} of {total} samples: {folded:?}");
    let top = &r["cpu"]["top"][0];
    assert_eq!(top["function"], "leaf");
    assert!(top["self_samples"].as_u64().unwrap() * 100 >= total * 90);

    // The other files are there and well-formed.
    let svg = std::fs::read_to_string(run.dir.join("cpu.svg")).unwrap();
    assert!(svg.contains("rtrace on-CPU: cpu_chain") && svg.contains("leaf"));
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    assert!(txt.contains("leaf") && txt.contains("cpu.pb.gz"));
    let pprof = Command::new("go").args(["tool", "pprof", "-top"]).arg(run.dir.join("cpu.pb.gz")).output().unwrap();
    let top = String::from_utf8_lossy(&pprof.stdout);
    assert!(pprof.status.success() && top.contains("leaf") && top.contains("middle"), "go tool pprof: {top}");
    assert_no_rtrace_programs();
}

/// A Go program's hot function is named as Go names it.
#[test]
fn go_function_named() {
    if !privileged("go_function_named") {
        return;
    }
    let bin = fixture("go_hot");
    let run = rtrace("go_hot", &["-q", "--", bin.to_str().unwrap(), "2"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let total = r["cpu"]["total_samples"].as_u64().unwrap();
    let top = &r["cpu"]["top"][0];
    assert_eq!(top["function"], "main.hotLoop", "top: {}", r["cpu"]["top"]);
    assert!(top["self_samples"].as_u64().unwrap() * 100 >= total * 80);
    let folded = run.folded("cpu.folded");
    // hotLoop is a frameless leaf: its caller main.main is only there because rtrace recovers
    // it from [sp] (plain frame-pointer walks, as in perf or BCC, skip it).
    assert!(
        samples_matching(&folded, "go_hot;runtime.goexit;runtime.main;main.main;main.hotLoop") * 100 >= total * 80,
        "{folded:?}"
    );
    assert_eq!(hot_loop_without_caller(&folded), 0, "{folded:?}");
    assert_only_frame_pointers(&r);
    assert_no_rtrace_programs();
}

/// A stripped Go binary (no .symtab, no DWARF) is still named, from the Go runtime's own
/// function table: perf and the BCC tools show hex addresses here.
#[test]
fn stripped_go_function_named() {
    if !privileged("stripped_go_function_named") {
        return;
    }
    let bin = go_fixture_stripped("go_hot");
    let sections = Command::new("readelf").arg("-S").arg(&bin).output().unwrap();
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(!sections.contains(".symtab") && sections.contains(".gopclntab"), "not stripped: {sections}");
    let run = rtrace("go_stripped", &["-q", "--", bin.to_str().unwrap(), "1"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["cpu"]["top"][0]["function"], "main.hotLoop", "{}", r["cpu"]["top"]);
    let total = r["cpu"]["total_samples"].as_u64().unwrap();
    let folded = run.folded("cpu.folded");
    let chain = samples_matching(&folded, ";runtime.goexit;runtime.main;main.main;main.hotLoop");
    assert!(chain * 100 >= total * 80, "{folded:?}");
    assert_eq!(hot_loop_without_caller(&folded), 0, "{folded:?}");
    assert_only_frame_pointers(&r);
    assert_no_rtrace_programs();
}

/// The same for Go 1.26+, whose function table header says textStart 0 (entries are
/// relative to .text): a stripped Go 1.27 binary's frames were all unnamed.
#[test]
fn stripped_modern_go_function_named() {
    if !privileged("stripped_modern_go_function_named") {
        return;
    }
    let bin = go_fixture_variant("go_hot", Go::Modern, true);
    let run = rtrace("go_stripped_modern", &["-q", "--", bin.to_str().unwrap(), "1"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["cpu"]["top"][0]["function"], "main.hotLoop", "{}", r["cpu"]["top"]);
    let total = r["cpu"]["total_samples"].as_u64().unwrap();
    let folded = run.folded("cpu.folded");
    let chain = samples_matching(&folded, ";runtime.goexit;runtime.main;main.main;main.hotLoop");
    assert!(chain * 100 >= total * 80, "{folded:?}");
    assert_eq!(hot_loop_without_caller(&folded), 0, "{folded:?}");
    assert_only_frame_pointers(&r);
    assert_no_rtrace_programs();
}

/// Samples in go_hot's main.hotLoop without its caller main.main — a frameless leaf whose
/// caller every path must recover: samples taken in user mode, in an interrupt's kernel work
/// (the scan runs from the registers the thread entered the kernel with) and in DWARF mode
/// (the fixture inherits rtrace's own mode until its exec is applied; the copy is scanned in
/// userspace). asyncPreempt's samples are left out: the runtime injects that call with a
/// signal, and no return address to main.main lies between its frame and hotLoop's pc.
fn hot_loop_without_caller(folded: &[(String, u64)]) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| {
            s.contains(";main.hotLoop") && !s.contains("main.main;main.hotLoop") && !s.contains("asyncPreempt")
        })
        .map(|(_, n)| n)
        .sum()
}

/// A held Go command is in frame-pointer mode from its first sample: decided from the program
/// it is about to exec, not from rtrace's own image that it runs until then (142 of its
/// stacks were copies before, until its exec was applied).
fn assert_only_frame_pointers(r: &serde_json::Value) {
    let p = &r["unwind"]["processes"][0];
    assert_eq!(p["mode"], "fp", "{p}");
    assert!(p["frame_pointer"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["complete_cfi"], 0, "copies of a Go process: {p}");
    assert_eq!(p["truncated"]["cfi_error"], 0, "{p}");
}

/// --pid on a process that was already running, ended by --duration.
#[test]
fn attach_to_running_pid() {
    if !privileged("attach_to_running_pid") {
        return;
    }
    let bin = fixture("cpu_chain");
    let mut child = Command::new(&bin).arg("6").spawn().unwrap();
    sleep(Duration::from_millis(200));
    let pid = child.id().to_string();
    let run = rtrace("attach_pid", &["-q", "--pid", &pid, "-d", "1500ms"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["session"]["ended_by"], "duration");
    assert_eq!(r["target"]["pid"].as_u64().unwrap().to_string(), pid);
    assert_eq!(r["target"]["comm"], "cpu_chain");
    let ms = r["session"]["duration_ms"].as_u64().unwrap();
    assert!((1400..2500).contains(&ms), "duration_ms {ms}");
    let total = r["accounting"]["cpu_samples"].as_u64().unwrap();
    assert!(total >= 30, "samples {total}");
    let chain = samples_matching(&run.folded("cpu.folded"), "main;outer;middle;leaf");
    assert!(chain * 100 >= total * 90);
    assert_no_rtrace_programs();
}

/// The target exits mid-session: the report is written, ended_by target_exit.
#[test]
fn target_exit_mid_session() {
    if !privileged("target_exit_mid_session") {
        return;
    }
    let bin = fixture("cpu_chain");
    let mut child = Command::new(&bin).arg("1.5").spawn().unwrap();
    let pid = child.id().to_string();
    let waiter = std::thread::spawn(move || child.wait());
    let started = Instant::now();
    let run = rtrace("target_exit", &["-q", "--pid", &pid, "-d", "30s"]);
    waiter.join().unwrap().unwrap();
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = run.report();
    assert_eq!(r["session"]["ended_by"], "target_exit");
    assert!(r["accounting"]["cpu_samples"].as_u64().unwrap() > 20);
    assert_no_rtrace_programs();
}

/// SIGINT to rtrace: the report is still written, ended_by interrupt; the target is untouched.
#[test]
fn sigint_writes_report() {
    if !privileged("sigint_writes_report") {
        return;
    }
    let bin = fixture("cpu_chain");
    let dir = report_dir("sigint");
    let mut rt = Command::new(rtrace_bin())
        .arg("-q")
        .arg("-o")
        .arg(&dir)
        .args(["--", bin.to_str().unwrap(), "20"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rt.id() as i32, libc::SIGINT) };
    let status = rt.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["session"]["ended_by"], "interrupt");
    assert!(r["accounting"]["cpu_samples"].as_u64().unwrap() > 20);
    // rtrace never signals its target: the command is still running after rtrace ended.
    let pid = r["target"]["pid"].as_u64().unwrap() as i32;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(state.contains(") R") || state.contains(") S"), "target state: {state}");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_no_rtrace_programs();
}

/// --no-children: a child's samples are not collected; with children they are.
#[test]
fn children_followed_unless_disabled() {
    if !privileged("children_followed_unless_disabled") {
        return;
    }
    let bin = fixture("cpu_chain");
    let script = format!("{} 1.5; true", bin.display());
    let with = rtrace("children", &["-q", "--", "sh", "-c", &script]);
    assert_eq!(with.code(), Some(0), "stderr: {}", with.stderr());
    let n = samples_matching(
        &with.folded("cpu.folded"),
        "cpu_chain;_start;__libc_start_main_impl;__libc_start_call_main;main;outer;middle;leaf",
    );
    // The child exited before the session ended and still symbolized, in full.
    let expected = expected_samples(fixture_cpu_ms(&with.stdout()), 99);
    assert!(n * 100 >= expected * 80, "child samples {n}, expected ~{expected}");

    let without = rtrace("no_children", &["-q", "--no-children", "--", "sh", "-c", &script]);
    assert_eq!(without.code(), Some(0));
    let n = samples_matching(&without.folded("cpu.folded"), "leaf");
    assert_eq!(n, 0);
    assert_no_rtrace_programs();
}

/// Kernel frames are symbolized through kallsyms and marked `_[k]`, under the user frames.
#[test]
fn kernel_frames_symbolized() {
    if !privileged("kernel_frames_symbolized") {
        return;
    }
    // dd spends its time in read(2)/write(2) of /dev/zero and /dev/null: kernel code.
    let run = rtrace("kernel_frames", &["-q", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=64k", "count=400000"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let folded = run.folded("cpu.folded");
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    let in_syscall = samples_matching(&folded, "do_syscall_64_[k]");
    assert!(in_syscall * 2 >= total, "{in_syscall} of {total} in syscalls: {folded:?}");
    // Debian's dd keeps no frame pointers and no symbols: its frames are unnamed, but CFI
    // unwinding takes every read back through __libc_start_call_main to dd's entry point.
    let reads = samples_matching(&folded, ";__GI___libc_read;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k]");
    let whole = folded
        .iter()
        .filter(|(s, _)| {
            s.starts_with("dd;[unknown] (dd+")
                && s.contains(";__libc_start_main_impl;__libc_start_call_main;")
                && s.contains(";__GI___libc_read;entry_SYSCALL_64_after_hwframe_[k]")
        })
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(reads > 0 && whole * 100 >= reads * 95, "{whole} of {reads} reads complete: {folded:?}");
    assert!(samples_matching(&folded, "vfs_read_[k]") > 0, "{folded:?}");
    assert!(folded.iter().all(|(s, _)| s.starts_with("dd;")));
    assert_no_rtrace_programs();
}

/// A saved capture re-renders into the same report; also without root (kernel frames then
/// stay unnamed: /proc/kallsyms hides addresses from other users).
#[test]
fn replay_capture() {
    if !privileged("replay_capture") {
        return;
    }
    let bin = fixture("cpu_chain");
    let run = rtrace("replay_src", &["-q", "--", bin.to_str().unwrap(), "1"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let dir = std::env::temp_dir().join(format!("rtrace-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(run.dir.join("capture.json"), dir.join("capture.json")).unwrap();
    let out =
        std::process::Command::new(rtrace_bin()).args(["report", "-q"]).arg(dir.join("capture.json")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.dir.join("report.json")).unwrap()).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for section in ["cpu", "accounting", "children", "findings", "session", "target"] {
        assert_eq!(a[section], b[section], "{section}");
    }
    assert_eq!(
        std::fs::read_to_string(run.dir.join("cpu.folded")).unwrap(),
        std::fs::read_to_string(dir.join("cpu.folded")).unwrap()
    );

    // As user nobody, from a world-readable copy.
    std::fs::copy(rtrace_bin(), dir.join("rtrace")).unwrap();
    let _ = std::fs::remove_file(dir.join("report.json"));
    assert!(std::process::Command::new("chmod").args(["-R", "a+rwX"]).arg(&dir).status().unwrap().success());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dir.join("rtrace"))
        .args(["report", "-q"])
        .arg(dir.join("capture.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(a["cpu"]["top"][0], c["cpu"]["top"][0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binary deleted while it runs is symbolized through /proc/PID/map_files, and vDSO frames
/// are named from the image read out of the process: one `__vdso_clock_gettime` frame.
#[test]
fn deleted_binary_and_vdso_named() {
    if !privileged("deleted_binary_and_vdso_named") {
        return;
    }
    let bin = fixture("deleted_vdso");
    // It deletes the file it runs from: run a copy.
    let dir = report_dir("deleted_vdso_bin");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("deleted_vdso");
    std::fs::copy(&bin, &copy).unwrap();
    let run = rtrace("deleted_vdso", &["-q", "--", copy.to_str().unwrap(), "2"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    assert!(!copy.exists(), "the fixture did not delete itself");
    let folded = run.folded("cpu.folded");
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    let burn = samples_matching(&folded, ";main;burn_after_delete");
    // read_clock → clock_gettime (libc, frameless: the walk skips read_clock) → vDSO.
    let vdso = samples_matching(&folded, "__vdso_clock_gettime");
    // Each half of the time, ±15 points (the slices are timed by the clock they read).
    assert!(burn * 100 >= total * 35, "burn {burn} of {total}: {folded:?}");
    assert!(vdso * 100 >= total * 35, "__vdso_clock_gettime {vdso} of {total}: {folded:?}");
    let unknown: Vec<_> = folded.iter().filter(|(s, _)| s.contains("(deleted)+") || s.contains("[vdso]+")).collect();
    assert!(unknown.is_empty(), "unnamed frames: {unknown:?}");
    assert_no_rtrace_programs();
}

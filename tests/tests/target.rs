//! The target's own fate (root required): its exit code or killing signal and sender in the
//! header and report.json `target.exit`, rtrace's exit status in `-- COMMAND` mode, a command
//! that never ran, the program after an exec, SIGHUP, stopped and zombie targets, and rtrace
//! never tracing itself.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::*;

/// Nothing of process `pid` was recorded: no sample, syscall, off-CPU block or slow call, and
/// it is in no ledger snapshot. (It may be in `processes` as the waker of a traced thread: the
/// maps that name a waker's frames are read for untraced processes too.)
fn assert_not_traced(cap: &serde_json::Value, pid: u64) {
    for section in ["cpu_samples", "syscalls", "offcpu", "slow_calls"] {
        let rows = cap[section].as_array().unwrap();
        assert!(rows.iter().all(|r| r["tgid"].as_u64() != Some(pid)), "rtrace {pid} is in {section}");
    }
    for snaps in ["initial", "final_procs"] {
        let rows = cap["lifecycle"][snaps].as_array().unwrap();
        assert!(rows.iter().all(|r| r["pid"].as_u64() != Some(pid)), "rtrace {pid} is in lifecycle.{snaps}");
    }
}

fn header(run: &Run) -> Vec<String> {
    run.stdout().lines().take(4).map(str::to_owned).collect()
}

#[test]
fn command_exit_code_is_reported_and_returned() {
    if !privileged("command_exit_code_is_reported_and_returned") {
        return;
    }
    let run = rtrace("exit_code", &["--", "sh", "-c", "exit 5"]);
    assert_eq!(run.code(), Some(5), "{}", run.stderr());
    let r = run.report();
    assert_eq!(r["target"]["exit"]["kind"], "exited");
    assert_eq!(r["target"]["exit"]["code"], 5);
    assert!(header(&run)[1].starts_with("target exited with code 5 at "), "{:?}", header(&run));
    let run = rtrace("exit_code0", &["--", "true"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(run.report()["target"]["exit"]["code"], 0);
    assert_no_rtrace_programs();
}

#[test]
fn killed_command_names_the_sender_and_exits_128_plus_n() {
    if !privileged("killed_command_names_the_sender_and_exits_128_plus_n") {
        return;
    }
    // The shell kills itself: the sender is the target.
    let run = rtrace("killed", &["--", "sh", "-c", "sleep 0.1; kill -TERM $$"]);
    assert_eq!(run.code(), Some(128 + 15), "{}", run.stderr());
    let r = run.report();
    let pid = r["target"]["pid"].as_u64().unwrap();
    let e = &r["target"]["exit"];
    assert_eq!(
        (e["kind"].as_str(), e["signal"].as_str(), e["signal_number"].as_u64()),
        (Some("killed"), Some("SIGTERM"), Some(15))
    );
    assert_eq!(e["killed_by"]["sender_pid"].as_u64(), Some(pid), "{e}");
    assert!(
        header(&run)[1].starts_with(&format!("target killed by SIGTERM (raised by the target itself, tid {pid}) at ")),
        "{:?}",
        header(&run)
    );
    assert_no_rtrace_programs();
}

#[test]
fn command_that_never_ran_says_why() {
    if !privileged("command_that_never_ran_says_why") {
        return;
    }
    let dir = report_dir("never_ran_files");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    // Neither ELF nor #!: execve gives ENOEXEC. A #! naming a missing interpreter: ENOENT.
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, "not a program\n").unwrap();
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/nonexistent/rtrace-interp\necho hi\n").unwrap();
    for f in [&garbage, &script] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = rtrace("never_ran", &["--", garbage.to_str().unwrap()]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr());
    let want = format!("execve({}) failed with ENOEXEC", garbage.display());
    assert!(run.stderr().contains(&format!("rtrace: the command never ran: {want}")), "{}", run.stderr());
    let e = &run.report()["target"]["exit"];
    assert_eq!(e["kind"], "never_started");
    assert!(e["reason"].as_str().unwrap().starts_with(&want), "{e}");

    let run = rtrace("never_ran_script", &["--", script.to_str().unwrap()]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr());
    let line = header(&run)[1].clone();
    assert_eq!(
        line,
        format!(
            "target never started: execve({}) failed with ENOENT: its #! interpreter /nonexistent/rtrace-interp does not exist; install it or fix the #! line",
            script.display()
        )
    );
    assert_no_rtrace_programs();
}

#[test]
fn after_exec_the_header_shows_the_new_program() {
    if !privileged("after_exec_the_header_shows_the_new_program") {
        return;
    }
    let run = rtrace("exec_header", &["--", "sh", "-c", "exec sleep 0.2"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let r = run.report();
    assert_eq!(r["target"]["comm"], "sleep");
    assert_eq!(r["target"]["cmdline"], serde_json::json!(["sleep", "0.2"]));
    assert_eq!(r["target"]["exec_from"], serde_json::json!(["sh", "-c", "exec sleep 0.2"]));
    let h = header(&run);
    assert!(h[0].starts_with("rtrace report: pid ") && h[0].ends_with(" (sleep) `sleep 0.2`"), "{h:?}");
    assert_eq!(h[1], "  (after an exec from `sh -c exec sleep 0.2`)");
    assert_no_rtrace_programs();
}

#[test]
fn sighup_ends_the_session_with_the_report_written() {
    if !privileged("sighup_ends_the_session_with_the_report_written") {
        return;
    }
    let dir = report_dir("sighup");
    // sleep 4 stops by itself; the hangup comes after 1 s.
    let mut child = Command::new(rtrace_bin())
        .arg("-q")
        .arg("-o")
        .arg(&dir)
        .args(["--", "sleep", "4"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    // SAFETY: kill on our own child (rtrace), never the traced process.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_millis(2500), "rtrace took {:?} after SIGHUP", t.elapsed());
    assert_eq!(status.code(), Some(0));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["session"]["ended_by"], "hangup");
    assert!(r["target"].get("exit").is_none(), "sleep 4 was still running: {}", r["target"]);
    assert_no_rtrace_programs();
}

#[test]
fn stopped_and_zombie_targets_are_said_so() {
    if !privileged("stopped_and_zombie_targets_are_said_so") {
        return;
    }
    // Our own children: one stopped by us, one exited and not yet reaped by us.
    let mut stopped = Command::new("sleep").arg("20").spawn().unwrap();
    unsafe { libc::kill(stopped.id() as i32, libc::SIGSTOP) };
    let mut zombie = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let run = rtrace("stopped", &["--pid", &stopped.id().to_string(), "-d", "1s"]);
    let _ = stopped.kill();
    let _ = stopped.wait();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let line = "target was stopped (state T) at attach: it runs only after SIGCONT";
    assert!(run.stderr().contains(&format!("rtrace: warning: {line}")), "{}", run.stderr());
    assert_eq!(header(&run)[1], line);
    assert_eq!(run.report()["target"]["state_at_attach"], "stopped");

    let run = rtrace("zombie", &["--pid", &zombie.id().to_string(), "-d", "1s"]);
    let _ = zombie.wait();
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let me = std::process::id();
    assert_eq!(
        header(&run)[1..3],
        [
            format!("target was a zombie at attach: it had exited before the session; its parent (pid {me}) has not reaped it"),
            "target exited with code 3 before attach".to_owned()
        ]
    );
    let r = run.report();
    assert_eq!(r["target"]["exit"], serde_json::json!({"kind": "exited", "code": 3, "at_ns": null}));
    assert_no_rtrace_programs();
}

/// `bash -c 'rtrace --pid $$'`: rtrace is the target's child; it is not traced, not in the
/// ledger, and the shell waiting for it is no wait_stall.
#[test]
fn rtrace_under_its_target_is_not_traced() {
    if !privileged("rtrace_under_its_target_is_not_traced") {
        return;
    }
    let dir = report_dir("self_child");
    // Two commands: bash would exec a lone one, and rtrace would be its own target.
    let script =
        format!("{} -q -o {} --pid $$ -d 2s --wait-stall 500ms; exit $?", rtrace_bin().display(), dir.display());
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["findings"], serde_json::json!([]));
    assert_eq!(r["children"], serde_json::json!([]));
    // bash only waits: no sample, no syscall of rtrace's is counted.
    assert_eq!(r["accounting"]["cpu_samples"], 0, "{}", r["accounting"]);
    assert_eq!(r["accounting"]["syscalls"], 0, "{}", r["accounting"]);
    let cap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("capture.json")).unwrap()).unwrap();
    let chain = cap["lifecycle"]["rtrace_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert_not_traced(&cap, chain[0].as_u64().unwrap());
    assert_no_rtrace_programs();
}

/// `--pid 1`: rtrace descends from pid 1, and must not count its own work.
#[test]
fn rtrace_under_pid_1_is_not_traced() {
    if !privileged("rtrace_under_pid_1_is_not_traced") {
        return;
    }
    let dir = report_dir("self_pid1");
    let child = Command::new(rtrace_bin())
        .arg("-q")
        .arg("-o")
        .arg(&dir)
        .args(["--pid", "1", "-d", "1s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let me = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let cap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("capture.json")).unwrap()).unwrap();
    assert_not_traced(&cap, me as u64);
    let chain = cap["lifecycle"]["rtrace_chain"].as_array().unwrap();
    assert_eq!(chain[0], me, "{chain:?}");
    assert_eq!(chain[1], std::process::id(), "the test itself is between pid 1 and rtrace: {chain:?}");
    assert_no_rtrace_programs();
}

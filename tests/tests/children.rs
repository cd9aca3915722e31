//! The child-process ledger and its findings, end to end (root required): C fixtures, and Go
//! fixtures built by both Go 1.19 (wait4 + kill) and Go >= 1.23 (pidfds).
use serde_json::Value;
use tests::*;

fn findings<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {r}"))
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// "key=1,2,3" or "key=7" in a fixture's output.
fn pids(out: &str, key: &str) -> Vec<u64> {
    let line = out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {out}"));
    line.trim().split(',').map(|p| p.parse().unwrap()).collect()
}

fn check_zombies(r: &Value, expected: &[u64], parent: u64) {
    let mut got: Vec<u64> = findings(r, "zombie_child").iter().map(|f| f["pid"].as_u64().unwrap()).collect();
    got.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "findings: {}", r["findings"]);
    for f in findings(r, "zombie_child") {
        assert_eq!(f["parent_pid"].as_u64(), Some(parent), "{f}");
        assert_eq!(f["reaped"], false);
        assert_eq!(f["severity"], "high");
        assert!(f["summary"].as_str().unwrap().contains(&f["pid"].to_string()), "{f}");
    }
    // Findings come first in the text report.
}

#[test]
fn c_zombies() {
    if !privileged("c_zombies") {
        return;
    }
    let bin = fixture("zombies");
    let run = rtrace("zombies", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "3"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    check_zombies(&r, &pids(&run.stdout(), "zombie_pids="), r["target"]["pid"].as_u64().unwrap());
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    let first_section = txt.lines().find(|l| l.starts_with("Findings")).map(|_| txt.find("Findings").unwrap());
    assert!(first_section.is_some_and(|i| i < txt.find("On CPU").unwrap()), "findings must come first:\n{txt}");
    assert_no_rtrace_programs();
}

/// Attaching to a process that already has zombies diagnoses them at once.
#[test]
fn zombies_present_at_attach() {
    if !privileged("zombies_present_at_attach") {
        return;
    }
    use std::io::BufRead;
    let bin = fixture("zombies");
    let mut child = std::process::Command::new(&bin).arg("5").stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid = child.id().to_string();
    let run = rtrace("zombies_attach", &["-q", "--pid", &pid, "-d", "1s"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    check_zombies(&r, &pids(&line, "zombie_pids="), child.id() as u64);
    let ledger = r["children"].as_array().unwrap();
    assert!(ledger.iter().filter(|c| c["zombie_at_attach"] == true).count() == 3, "{ledger:?}");
    assert_no_rtrace_programs();
}

/// `extra`: more rtrace options (the wait is seen the same way with --no-syscalls: the syscall
/// hooks then still mark waits, reading the clock only for them).
fn wait_stall(mode: &str, wait_syscall: &str, extra: &[&str]) {
    let bin = fixture("waiter");
    let mut args = vec!["-q", "-d", "1500ms"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", bin.to_str().unwrap(), mode]);
    let run = rtrace(&format!("waiter_{mode}{}", extra.join("")), &args);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let child = pids(&run.stdout(), "child_pid=")[0];
    let f = findings(&r, "wait_stall");
    assert_eq!(f.len(), 1, "{}", r["findings"]);
    let f = f[0];
    assert_eq!(f["child_pid"].as_u64(), Some(child), "{f}");
    assert_eq!(f["waiter_pid"], r["target"]["pid"]);
    assert!(f["blocked_ms"].as_u64().unwrap() >= 1000, "{f}");
    assert_eq!(f["child_state"], "sleeping", "{f}");
    assert!(f["child_blocked_in"].as_str().unwrap_or("").contains("nanosleep"), "{f}");
    assert!(f["summary"].as_str().unwrap().contains(wait_syscall), "{f}");
    // The child sleeps as it was told: the wait is long, not a defect.
    assert_eq!((f["severity"].as_str(), f["verdict"].as_str()), (Some("low"), Some("child_sleeping")), "{f}");
    assert_no_rtrace_programs();
}

#[test]
fn c_wait_stall_wait4() {
    if privileged("c_wait_stall_wait4") {
        wait_stall("wait4", "wait4", &[]);
    }
}

#[test]
fn c_wait_stall_pidfd() {
    if privileged("c_wait_stall_pidfd") {
        wait_stall("pidfd", "waitid", &[]);
    }
}

#[test]
fn c_wait_stall_pidfd_without_syscall_latency() {
    if privileged("c_wait_stall_pidfd_without_syscall_latency") {
        wait_stall("pidfd", "waitid", &["--no-syscalls"]);
    }
}

/// A child that never becomes its program: env's PATH search fails at every directory. Its
/// failed execs (seen at sys_exit, with the file name copied at entry) make an exec_failed
/// finding, with or without syscall latency.
#[test]
fn exec_failed_path_search() {
    if !privileged("exec_failed_path_search") {
        return;
    }
    for extra in [&[][..], &["--no-syscalls"][..]] {
        let mut args = vec!["-q"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", "env rtrace_no_such_program; true"]);
        let run = rtrace(&format!("exec_failed{}", extra.join("")), &args);
        assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
        let r = run.report();
        let f = findings(&r, "exec_failed");
        assert_eq!(f.len(), 1, "{extra:?}: {}", r["findings"]);
        assert_eq!(f[0]["program"], "rtrace_no_such_program", "{}", f[0]);
        assert_eq!(f[0]["error"], "ENOENT", "{}", f[0]);
        let attempts = f[0]["attempts"].as_array().unwrap();
        assert!(
            !attempts.is_empty() && attempts.iter().all(|a| a.as_str().unwrap().ends_with("/rtrace_no_such_program")),
            "{}",
            f[0]
        );
        let env = r["children"].as_array().unwrap().iter().find(|c| c["pid"] == f[0]["pid"]).unwrap();
        assert_eq!(env["argv"], serde_json::json!(["env", "rtrace_no_such_program"]), "{env}");
        assert_eq!(env["exit"]["code"], 127, "{env}");
        assert_no_rtrace_programs();
    }
}

/// `timeout 1 sleep 5` in a traced script: timeout (a descendant of the target) kills sleep
/// with SIGTERM after 1 s. A correct trace has a MEDIUM killed_by_signal for sleep naming
/// timeout as one of the target's own descendants, not "outside the target".
#[test]
fn killed_by_a_descendant() {
    if !privileged("killed_by_a_descendant") {
        return;
    }
    let run = rtrace("killed_by_descendant", &["-q", "--", "sh", "-c", "timeout 1 sleep 5; true"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let ledger = r["children"].as_array().unwrap();
    let timeout = ledger.iter().find(|c| c["argv"][0] == "timeout").unwrap_or_else(|| panic!("{ledger:?}"));
    let sleep = ledger.iter().find(|c| c["argv"][0] == "sleep").unwrap_or_else(|| panic!("{ledger:?}"));
    let f = findings(&r, "killed_by_signal");
    assert_eq!(f.len(), 1, "{}", r["findings"]);
    let f = f[0];
    assert_eq!(f["pid"], sleep["pid"], "{f}");
    assert_eq!((f["signal"].as_str(), f["sender_pid"].as_u64()), (Some("SIGTERM"), timeout["pid"].as_u64()), "{f}");
    assert_eq!((f["by_descendant"].as_bool(), f["severity"].as_str()), (Some(true), Some("medium")), "{f}");
    let summary = f["summary"].as_str().unwrap();
    assert!(
        summary
            .contains(&format!("from pid {} (timeout 1 sleep 5), one of the target's own descendants", timeout["pid"])),
        "{f}"
    );
    assert!(!summary.contains("outside the target") && !summary.contains("CommandContext"), "{f}");
    assert_no_rtrace_programs();
}

fn go_nowait(go: Go) {
    let bin = go_fixture("go_children", go);
    let run = rtrace("go_nowait", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "nowait", "3"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    check_zombies(&r, &pids(&run.stdout(), "zombie_pids="), r["target"]["pid"].as_u64().unwrap());
    assert_no_rtrace_programs();
}

fn go_wait(go: Go) {
    let bin = go_fixture("go_children", go);
    let run = rtrace("go_wait", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "wait"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let child = pids(&run.stdout(), "child_pid=")[0];
    let f = findings(&r, "wait_stall");
    assert!(
        f.iter().any(|f| f["child_pid"].as_u64() == Some(child)
            && f["blocked_ms"].as_u64().unwrap() >= 1000
            && f["severity"] == "low"
            && f["verdict"] == "child_sleeping"),
        "{}",
        r["findings"]
    );
    assert_no_rtrace_programs();
}

fn go_timeout(go: Go) {
    let bin = go_fixture("go_children", go);
    let run = rtrace("go_timeout", &["-q", "--", bin.to_str().unwrap(), "timeout"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let child = pids(&run.stdout(), "child_pid=")[0];
    let f = findings(&r, "killed_by_signal");
    let f = f.iter().find(|f| f["pid"].as_u64() == Some(child)).unwrap_or_else(|| panic!("{}", r["findings"]));
    assert_eq!(f["signal"], "SIGKILL");
    assert_eq!(f["by_target"], true);
    assert_eq!(f["sender_pid"], r["target"]["pid"]);
    let ledger = r["children"].as_array().unwrap();
    let c = ledger.iter().find(|c| c["pid"].as_u64() == Some(child)).unwrap();
    assert_eq!(c["exit"]["kind"], "killed", "{c}");
    assert!(c["reaped_at_ns"].as_u64().is_some(), "{c}");
    assert_no_rtrace_programs();
}

fn go_pipe(go: Go) {
    let bin = go_fixture("go_children", go);
    let run = rtrace("go_pipe", &["-q", "--", bin.to_str().unwrap(), "pipe"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let sh = pids(&run.stdout(), "child_pid=")[0];
    let f = findings(&r, "pipe_held_by_descendant");
    assert!(!f.is_empty(), "{}", r["findings"]);
    assert!(f.iter().all(|f| f["comm"] == "sleep" && f["killed_child_pid"].as_u64() == Some(sh)), "{}", r["findings"]);
    assert!(f[0]["summary"].as_str().unwrap().contains("WaitDelay"), "{}", f[0]);
    assert_no_rtrace_programs();
}

fn go_many(go: Go) {
    let bin = go_fixture("go_children", go);
    let run = rtrace("go_many", &["-q", "--", bin.to_str().unwrap(), "many", "2000"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let a = &r["accounting"];
    assert_eq!(a["events_dropped"], 0, "{a}");
    assert_eq!(a["tracked_map_full"], 0, "{a}");
    // Exited children's syscall stats are taken out of the kernel map during the session, so
    // 2,000 processes' worth of (process, syscall) keys never fill it.
    assert_eq!(a["syscalls_lost"], 0, "{a}");
    // Every free event arrives: sched_process_free fires from RCU callbacks on top of other
    // BPF programs, which made the kernel skip ~3 % of them while it was perf-attached.
    assert!(a["bpf_recursion_misses"].is_object() && a["bpf_recursion_misses"].get("rt_proc_free").is_none(), "{a}");
    let execs =
        r["syscalls"].as_array().unwrap().iter().find(|s| s["name"] == "execve").unwrap()["count"].as_u64().unwrap();
    assert!(execs >= 2000, "execve counted {execs} times");
    let ledger = r["children"].as_array().unwrap();
    // Each `true` lives for a millisecond or two: its argv is the kernel's copy made at exec,
    // so every child shows exactly the arguments it was started with.
    let trues: Vec<&Value> =
        ledger.iter().filter(|c| c["argv"][0].as_str().is_some_and(|a| a == "true" || a.ends_with("/true"))).collect();
    assert_eq!(trues.len(), 2000, "ledger has {} `true` children", trues.len());
    let mut seen: Vec<u64> = trues
        .iter()
        .map(|c| {
            let argv = c["argv"].as_array().unwrap();
            assert_eq!(argv.len(), 3, "{}", c["argv"]);
            assert_eq!(argv[1], "child", "{}", c["argv"]);
            argv[2].as_str().unwrap().parse().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..2000).collect::<Vec<u64>>());
    assert!(
        trues.iter().all(|c| c["exit"]["kind"] == "exited" && c["reaped_at_ns"].is_u64()),
        "a child without exit or reap"
    );
    assert!(findings(&r, "zombie_child").is_empty());
    assert_no_rtrace_programs();
}

macro_rules! both_gos {
    ($($name:ident => $f:ident),* $(,)?) => {
        mod go119 {
            use super::*;
            $(#[test] fn $name() { if privileged(stringify!($name)) { $f(Go::Debian119) } })*
        }
        mod modern {
            use super::*;
            $(#[test] fn $name() { if privileged(stringify!($name)) { $f(Go::Modern) } })*
        }
    };
}

both_gos! {
    start_without_wait => go_nowait,
    wait_stall_on_sleeping_child => go_wait,
    command_context_timeout_kill => go_timeout,
    grandchild_holds_pipe => go_pipe,
    two_thousand_children => go_many,
}

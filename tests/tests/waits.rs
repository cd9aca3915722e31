//! Waits for children, end to end (root required): no false "since before attach" call for a
//! thread that keeps re-entering the same call, and wait_stall severities that follow what the
//! child did (issue #11): working or told to sleep is not HIGH, stuck is.
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tests::*;

fn wait_stalls(r: &Value) -> Vec<&Value> {
    r["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {r}"))
        .iter()
        .filter(|f| f["kind"] == "wait_stall")
        .collect()
}

/// Kills and reaps a helper process even if an assertion fails first.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bash -c 'while :; do sleep 0.3; done'` attached by --pid: bash is in wait4(-1, …, 0, NULL)
/// at attach and again at the end, but it returned ~10 times in between. A correct trace has
/// no call "in flight since before attach" for it, no wait_stall (each wait lasts 0.3 s), and
/// its in-flight wait4 counted from the moment the probes saw it start. The loop stops itself
/// after 20 s.
#[test]
fn sleep_loop_attached_has_no_preattach_wait() {
    if !privileged("sleep_loop_attached_has_no_preattach_wait") {
        return;
    }
    let bash = Reap(
        Command::new("bash")
            .args(["-c", "end=$((SECONDS+20)); while [ $SECONDS -lt $end ]; do sleep 0.3; done"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = bash.0.id().to_string();
    // Only the 3 slowest calls kept: the loop's in-flight wait4 at the end (shorter than the
    // completed 0.3 s ones) is not among them, so only the /proc check can tell it is new.
    let run = rtrace("sleep_loop_attached", &["-q", "--pid", &pid, "-d", "3s", "--slow-top", "3"]);
    drop(bash);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert!(wait_stalls(&r).is_empty(), "{}", r["findings"]);
    let slow = r["slowest_syscalls"].as_array().unwrap();
    let pre: Vec<&Value> = slow.iter().filter(|c| c["started_before_attach"] == true).collect();
    assert!(pre.is_empty(), "no call of the loop is older than the session: {pre:?}");
    // The loop ran: bash reaped its sleeps with wait4 during the session (one every 0.3 s).
    let wait4 = r["syscalls"].as_array().unwrap().iter().find(|s| s["name"] == "wait4").unwrap();
    assert!(wait4["count"].as_u64().unwrap() >= 6, "{wait4}");
    // Nor off-CPU: no block of the loop lasts longer than a sleep (0.3 s, plus scheduling).
    let long: Vec<&Value> =
        r["offcpu"]["top"].as_array().unwrap().iter().filter(|o| o["max_us"].as_u64().unwrap() > 600_000).collect();
    assert!(long.is_empty(), "{long:?}");
    assert_no_rtrace_programs();
}

/// `rtrace -- sh -c 'sleep 2; true'`: sh waits 2 s for `sleep 2`, which sleeps as it was told.
/// A correct trace has one wait_stall, LOW, saying the child slept in clock_nanosleep; the wait
/// started after attach, so not "at least".
#[test]
fn shell_waiting_for_sleep_is_low() {
    if !privileged("shell_waiting_for_sleep_is_low") {
        return;
    }
    let run = rtrace("shell_sleep", &["-q", "--", "sh", "-c", "sleep 2; true"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let f = wait_stalls(&r);
    assert_eq!(f.len(), 1, "{}", r["findings"]);
    let f = f[0];
    let sleep = r["children"].as_array().unwrap().iter().find(|c| c["argv"][0] == "sleep").unwrap();
    assert_eq!(f["child_pid"], sleep["pid"], "{f}");
    assert_eq!((f["severity"].as_str(), f["verdict"].as_str()), (Some("low"), Some("child_sleeping")), "{f}");
    assert_eq!(f["since_before_attach"], false, "{f}");
    assert!(f["summary"].as_str().unwrap().contains("it slept in clock_nanosleep"), "{f}");
    assert!(r["findings"].as_array().unwrap().iter().all(|f| f["severity"] != "high"), "{}", r["findings"]);
    assert_no_rtrace_programs();
}

/// tests/fixtures/waiter.c `stuck`: the child reads a pipe whose write end the waiting parent
/// holds. A correct trace has one HIGH wait_stall naming the child, stuck in read for (nearly)
/// the whole wait and still blocked at the end.
#[test]
fn stuck_child_is_high() {
    if !privileged("stuck_child_is_high") {
        return;
    }
    let bin = fixture("waiter");
    let run = rtrace("waiter_stuck", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "stuck"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let child: u64 = run.stdout().lines().find_map(|l| l.strip_prefix("child_pid=")?.trim().parse().ok()).unwrap();
    let f = wait_stalls(&r);
    assert_eq!(f.len(), 1, "{}", r["findings"]);
    let f = f[0];
    assert_eq!(f["child_pid"], child, "{f}");
    assert_eq!((f["severity"].as_str(), f["verdict"].as_str()), (Some("high"), Some("child_stuck")), "{f}");
    let stuck = &f["stuck"];
    assert_eq!((stuck["pid"].as_u64(), stuck["syscall"].as_str()), (Some(child), Some("read")), "{f}");
    assert_eq!(stuck["in_flight"], true, "{f}");
    // Blocked from just after fork to the end: at least the wait's own length, less the
    // parent's printf between fork and wait4.
    assert!(stuck["blocked_ms"].as_u64().unwrap() + 50 >= f["blocked_ms"].as_u64().unwrap(), "{f}");
    assert!(f["summary"].as_str().unwrap().contains("the child is stuck: it was blocked in read"), "{f}");
    assert_no_rtrace_programs();
}

/// A pid namespace: `unshare -p -f --mount-proc bash -c 'sleep 0.5 & true & sleep 1; wait'`.
/// bash (pid 1 inside) reaps its children with wait4, which returns their namespace pids
/// (2, 3, 4). A correct ledger has exactly unshare's child bash and bash's three children, by
/// host pid, each with its command and reaped by bash — no phantom "pid 2" without a command.
/// Everything ends after ~1 s by itself.
#[test]
fn pid_namespace_waits_name_host_pids() {
    if !privileged("pid_namespace_waits_name_host_pids") {
        return;
    }
    let script = "sleep 0.5 & true & sleep 1; wait";
    let run = rtrace("pidns", &["-q", "-d", "5s", "--", "unshare", "-p", "-f", "--mount-proc", "bash", "-c", script]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let ledger = r["children"].as_array().unwrap();
    assert_eq!(ledger.len(), 4, "{ledger:#?}");
    let bash = ledger.iter().find(|c| c["argv"][0] == "bash").unwrap_or_else(|| panic!("{ledger:#?}"));
    assert_eq!(bash["ppid"], r["target"]["pid"], "{bash}");
    let mut kids: Vec<String> = ledger
        .iter()
        .filter(|c| c["pid"] != bash["pid"])
        .map(|c| {
            assert_eq!(c["ppid"], bash["pid"], "{c}");
            assert!(c["forked_at_ns"].is_u64(), "every row is a process the probes saw forked: {c}");
            assert_eq!(c["reaped_by"]["pid"], bash["pid"], "{c}");
            assert_eq!(c["exit"]["code"], 0, "{c}");
            c["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" ")
        })
        .collect();
    kids.sort();
    // `true &` runs in a forked bash (a builtin): its command is bash's.
    assert_eq!(kids, ["bash", "sleep 0.5", "sleep 1"], "{ledger:#?}");
    assert_no_rtrace_programs();
}

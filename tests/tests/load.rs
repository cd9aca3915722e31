//! An overloaded target (1000 threads spinning and sleeping on a 2-CPU machine) must not break
//! the session: rtrace keeps its real-time priority while the target and its children keep
//! theirs, every thread is in the capture, the session ends on time by rtrace's own clock,
//! and every loss is printed in report.txt (root required).
use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::*;

const THREADS: usize = 1000;

/// Fields of /proc/PID/stat after the comm (which may hold spaces): index 0 is field 3.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(text.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

/// (policy, rt_priority): stat fields 41 and 40.
fn sched_policy(pid: u32) -> Option<(u32, u32)> {
    let f = stat_fields(pid)?;
    Some((f.get(38)?.parse().ok()?, f.get(37)?.parse().ok()?))
}

/// The threads fixture, started and past its start barrier (every thread exists).
fn start_threads(seconds: u32) -> Child {
    let bin = fixture("threads");
    let mut child = Command::new(bin)
        .args([THREADS.to_string(), seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the threads fixture");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("threads_ready={THREADS}"));
    child
}

struct Session {
    dir: std::path::PathBuf,
    code: i32,
    stderr: String,
    /// The most privileged (policy, priority) rtrace was seen with while it ran.
    policy: (u32, u32),
    max_rss_kib: i64,
}

impl Session {
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\nstderr: {}", self.stderr))
    }
    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&self.file(name)).unwrap()
    }
}

/// Runs rtrace --pid `pid` -d 3s, watching its scheduling policy, and reaps it with wait4 for
/// its peak RSS (the kernel's count, not ours).
// Reaped by wait4, not Child::wait: wait4 also returns its rusage.
#[allow(clippy::zombie_processes)]
fn trace_pid(test: &str, pid: u32, env: &[(&str, &str)]) -> Session {
    let dir = report_dir(test);
    let mut rt = Command::new(rtrace_bin())
        .args(["-q", "--pid", &pid.to_string(), "-d", "3s", "-o"])
        .arg(&dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rtrace");
    let rt_pid = rt.id();
    let mut policy = (0, 0);
    // Until it becomes a zombie: its stat is readable until it is reaped below.
    while let Some(f) = stat_fields(rt_pid) {
        if f[0] == "Z" {
            break;
        }
        if let Some(p) = sched_policy(rt_pid) {
            policy = policy.max(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(rt_pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, rt_pid as i32, "wait4 on rtrace");
    let mut stderr = String::new();
    rt.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Session { dir, code, stderr, policy, max_rss_kib: usage.ru_maxrss }
}

#[test]
fn thousand_threads_all_traced_on_time() {
    if !privileged("thousand_threads_all_traced_on_time") {
        return;
    }
    let mut fixture = start_threads(60);
    let pid = fixture.id();
    let tids: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(tids.len(), THREADS + 1);
    let s = trace_pid("thousand_threads", pid, &[("RTRACE_TIMINGS", "1")]);
    // The fixture's threads keep their normal policy: rtrace changes only itself.
    let fixture_policies: std::collections::BTreeSet<(u32, u32)> = tids
        .iter()
        .filter_map(|t| {
            let f = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat")).ok()?;
            let f: Vec<&str> = f.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f[38].parse().ok()?, f[37].parse().ok()?))
        })
        .collect();
    let _ = fixture.kill();
    let _ = fixture.wait();
    assert_eq!(s.code, 0, "stderr: {}", s.stderr);
    assert_eq!(s.policy, (libc::SCHED_FIFO as u32, 1), "rtrace ran without its real-time priority");
    assert_eq!(fixture_policies, [(0, 0)].into(), "the fixture's threads changed policy");

    let r = s.json("report.json");
    let c = s.json("capture.json");
    assert_eq!(r["session"]["ended_by"], "duration");
    // rtrace's own clock: -d counts from attach, and the loop must end on time (the tick is
    // 100 ms; the rest is slack for a 2-CPU VM shared with other work).
    let ms = r["session"]["duration_ms"].as_u64().unwrap();
    assert!((3000..3500).contains(&ms), "-d 3s ran {ms} ms");

    // Every thread: each one was seen off CPU (blocked or waiting for a CPU) at least once.
    let seen: std::collections::BTreeSet<u64> = c["offcpu"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["tgid"] == pid)
        .map(|o| o["tid"].as_u64().unwrap())
        .collect();
    let missing: Vec<_> = tids.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} threads missing: {missing:?}; accounting {}",
        missing.len(),
        tids.len(),
        r["accounting"]
    );

    // Whatever was lost is said in report.txt, with the count report.json has.
    let text = s.file("report.txt");
    let a = &r["accounting"];
    for (key, line) in [
        ("offcpu_lost", "off-CPU intervals not recorded"),
        ("syscalls_lost", "syscalls not measured"),
        ("lost_samples", "on-CPU samples not counted"),
        ("slow_calls_dropped", "slow calls not reported"),
        ("events_dropped", "lifecycle events dropped"),
    ] {
        let n = a[key].as_u64().unwrap();
        assert_eq!(n > 0, text.contains(&format!("warning: lost {n} {line}")), "{key}={n}:\n{text}");
    }
    assert!(s.max_rss_kib <= 128 * 1024, "rtrace peak RSS {} KiB", s.max_rss_kib);
    // The report after the session is rtrace's work too: its threads (the capture writer
    // among them) keep the session's priority against 1000 runnable ones.
    let report_ms: u64 = s
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("rtrace-timings: report_ms=")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no report timing in {}", s.stderr));
    assert!(report_ms < 2000, "the report took {report_ms} ms");
    assert_no_rtrace_programs();
}

/// The off-CPU map shrunk to 64 keys (RTRACE_OFFCPU_KEYS) cannot hold 1000 threads' blocks:
/// the loss is counted and report.txt says how many, as report.json does.
#[test]
fn offcpu_loss_is_printed() {
    if !privileged("offcpu_loss_is_printed") {
        return;
    }
    let mut fixture = start_threads(60);
    let s = trace_pid("offcpu_loss", fixture.id(), &[("RTRACE_OFFCPU_KEYS", "64")]);
    let _ = fixture.kill();
    let _ = fixture.wait();
    assert_eq!(s.code, 0, "stderr: {}", s.stderr);
    let r = s.json("report.json");
    let lost = r["accounting"]["offcpu_lost"].as_u64().unwrap();
    assert!(lost > 0, "{}", r["accounting"]);
    let text = s.file("report.txt");
    assert!(text.contains(&format!("warning: lost {lost} off-CPU intervals not recorded (a map was full)")), "{text}");
    assert_no_rtrace_programs();
}

/// `rtrace -- CMD`: the command starts with a normal policy (SCHED_RESET_ON_FORK), although
/// rtrace raised its own before starting it.
#[test]
fn spawned_command_keeps_normal_priority() {
    if !privileged("spawned_command_keeps_normal_priority") {
        return;
    }
    let run =
        rtrace("spawned_priority", &["-q", "--", "/bin/sh", "-c", "echo policy=$(cut -d' ' -f40,41 /proc/$$/stat)"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    assert_eq!(run.stdout().trim(), "policy=0 0");
    assert_no_rtrace_programs();
}

/// RTRACE_LOG=debug (or -v): the eBPF side logs its rare anomalies through aya-log — here the off-CPU
/// map (shrunk to 8 keys) filling up, once per CPU, not once per lost interval. Without it,
/// nothing is logged.
#[test]
fn ebpf_anomalies_logged_at_debug() {
    if !privileged("ebpf_anomalies_logged_at_debug") {
        return;
    }
    let bin = fixture("threads");
    let args = ["-q", "-d", "2s", "--", bin.to_str().unwrap(), "50", "2"];
    let line = "off-CPU interval lost: the off-CPU or wakeup map is full";
    let run = rtrace_env("ebpf_log", &args, &[("RTRACE_LOG", "debug"), ("RTRACE_OFFCPU_KEYS", "8")]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let lost = run.report()["accounting"]["offcpu_lost"].as_u64().unwrap();
    let logged = run.stderr().lines().filter(|l| l.contains(line)).count() as u64;
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(lost > cpus, "offcpu_lost {lost}");
    assert!((1..=cpus).contains(&logged), "{logged} log lines for {lost} losses:\n{}", run.stderr());
    assert!(!run.stderr().contains("aya_obj"), "aya's own debug output is not asked for:\n{}", run.stderr());

    // -v says the same without the environment variable.
    let mut v_args = vec!["-v"];
    v_args.extend_from_slice(&args);
    let verbose = rtrace_env("ebpf_log_v", &v_args, &[("RTRACE_OFFCPU_KEYS", "8")]);
    assert_eq!(verbose.code(), Some(0), "stderr: {}", verbose.stderr());
    assert!(verbose.stderr().lines().any(|l| l.contains(line)), "{}", verbose.stderr());
    assert!(!verbose.stderr().contains("aya_obj"), "{}", verbose.stderr());

    let quiet = rtrace_env("ebpf_log_off", &args, &[("RTRACE_OFFCPU_KEYS", "8")]);
    assert_eq!(quiet.code(), Some(0), "stderr: {}", quiet.stderr());
    assert!(!quiet.stderr().contains(line), "{}", quiet.stderr());
    assert_no_rtrace_programs();
}

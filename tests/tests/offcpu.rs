//! Off-CPU analysis end to end, on fixtures with known blocking (root required).
use serde_json::Value;
use tests::*;

fn within(v: u64, expected: u64, pct: u64) -> bool {
    v * 100 >= expected * (100 - pct) && v * 100 <= expected * (100 + pct)
}

/// The off-CPU top entries whose stack contains `needle` (joined with ';').
fn entries<'a>(r: &'a Value, needle: &str) -> Vec<&'a Value> {
    r["offcpu"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(";")
                .contains(needle)
        })
        .collect()
}

/// A thread blocked ~1 s in read() on a pipe written by another thread; a thread in nanosleep
/// for 0.5 s.
#[test]
fn pipe_read_and_nanosleep() {
    if !privileged("pipe_read_and_nanosleep") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run = rtrace("offcpu_pipe", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let out = run.stdout();
    let tid = |key: &str| -> u64 { out.split(key).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let (reader, writer) = (tid("reader_tid="), tid("writer_tid="));
    let r = run.report();
    assert_eq!(r["accounting"]["offcpu_lost"], 0);

    // The read: through the fixture function (libc's read has no frame pointer: the caller is
    // recovered from the stack), ~1 s, state sleep, syscall read, woken by the writer thread.
    let read = entries(&r, "reader;blocking_read;");
    let read: Vec<_> = read.into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(read.len(), 1, "{}", r["offcpu"]["top"]);
    let t = read[0];
    assert_eq!(t["syscall"], "read");
    assert!(within(t["total_us"].as_u64().unwrap(), 1_000_000, 15), "{t}");
    assert_eq!(t["count"], 1);
    let w = &t["top_waker"];
    assert_eq!(w["tid"].as_u64().unwrap(), writer, "waker {w}");
    // The waker's stack, through the caller its libc write() wrapper hides (recovered from
    // its saved registers), down to the wakeup itself — without rtrace's own probe frames.
    let wf: Vec<&str> = w["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(wf.windows(2).any(|p| p == ["writer", "writer_wait_then_write"]), "{wf:?}");
    assert_eq!(wf.last(), Some(&"try_to_wake_up_[k]"), "{wf:?}");
    assert_ne!(reader, writer);

    // The nap: 0.5 s in clock_nanosleep under sleep_half_second, woken by the timer.
    let nap: Vec<_> =
        entries(&r, "main;sleep_half_second;nap;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(nap.len(), 1, "{}", r["offcpu"]["top"]);
    assert_eq!(nap[0]["syscall"], "clock_nanosleep");
    assert!(within(nap[0]["total_us"].as_u64().unwrap(), 500_000, 15), "{}", nap[0]);
    assert_eq!(nap[0]["top_waker"]["comm"], "[timer]");

    // The read is also among the slowest syscalls, with the stacks of where it blocked: the
    // kernel stack taken when the thread came back (it is not taken at switch-out), the user
    // stack when the call returned.
    let calls = r["slowest_syscalls"].as_array().unwrap();
    let slow_read =
        calls.iter().find(|c| c["name"] == "read" && c["tid"] == reader).unwrap_or_else(|| panic!("{calls:?}"));
    let frames: Vec<&str> = slow_read["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(frames.windows(2).any(|w| w == ["reader", "blocking_read"]), "{frames:?}");
    assert!(frames.iter().any(|f| f.contains("pipe_read_[k]")), "{frames:?}");

    // wakeups.folded pairs the blocked read with the writer's stack.
    let wake = run.folded("wakeups.folded");
    assert!(
        wake.iter().any(|(s, _)| s.contains("blocking_read;") && s.contains(";--;") && s.contains(";writer;")),
        "{wake:?}"
    );
    // The wall-clock graph holds the blocked time in µs.
    let svg = std::fs::read_to_string(run.dir.join("wall.svg")).unwrap();
    assert!(svg.contains("blocking_read"));
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    assert!(txt.contains("Where it waits"), "{txt}");
    let pprof = std::process::Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(run.dir.join("offcpu.pb.gz"))
        .output()
        .unwrap();
    assert!(pprof.status.success() && String::from_utf8_lossy(&pprof.stdout).contains("blocking_read"));
    assert_no_rtrace_programs();
}

/// --no-syscalls turns off syscall latency, not the syscall hooks: they still mark a thread as
/// inside a call (no clock read), so off-CPU stacks are still deferred to the call's return —
/// the same blocks with the same complete stacks (the frameless libc wrapper's caller, nap,
/// recovered from the saved registers) — and no syscall table or slowest call is reported.
#[test]
fn without_syscall_latency() {
    if !privileged("without_syscall_latency") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run = rtrace("offcpu_pipe_nosys", &["-q", "--no-syscalls", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    assert_eq!(r["accounting"]["offcpu_lost"], 0);
    assert!(r["syscalls"].as_array().is_none_or(|s| s.is_empty()), "{}", r["syscalls"]);
    assert!(r["slowest_syscalls"].as_array().is_none_or(|s| s.is_empty()), "{}", r["slowest_syscalls"]);
    let read: Vec<_> = entries(&r, "reader;blocking_read;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(read.len(), 1, "{}", r["offcpu"]["top"]);
    assert_eq!(read[0]["syscall"], "read");
    assert!(within(read[0]["total_us"].as_u64().unwrap(), 1_000_000, 15), "{}", read[0]);
    let nap: Vec<_> =
        entries(&r, "main;sleep_half_second;nap;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(nap.len(), 1, "{}", r["offcpu"]["top"]);
    assert_eq!(nap[0]["syscall"], "clock_nanosleep");
    assert!(within(nap[0]["total_us"].as_u64().unwrap(), 500_000, 15), "{}", nap[0]);
    assert_no_rtrace_programs();
}

/// Off-CPU on bpf_ktime_get_ns, as on a kernel whose BTF lacks the run queue's clock (the
/// fallback of clock.rs): the same blocks, lengths and wakers.
#[test]
fn without_scheduler_clock() {
    if !privileged("without_scheduler_clock") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run =
        rtrace_env("offcpu_pipe_ktime", &["-q", "--", bin.to_str().unwrap()], &[("RTRACE_OFFCPU_CLOCK", "ktime")]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let out = run.stdout();
    let writer: u64 = out.split("writer_tid=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let r = run.report();
    assert_eq!(r["accounting"]["offcpu_lost"], 0);
    let read: Vec<_> = entries(&r, "reader;blocking_read;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(read.len(), 1, "{}", r["offcpu"]["top"]);
    assert!(within(read[0]["total_us"].as_u64().unwrap(), 1_000_000, 15), "{}", read[0]);
    assert_eq!(read[0]["top_waker"]["tid"].as_u64().unwrap(), writer, "{}", read[0]);
    let nap: Vec<_> =
        entries(&r, "main;sleep_half_second;nap;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(nap.len(), 1, "{}", r["offcpu"]["top"]);
    assert!(within(nap[0]["total_us"].as_u64().unwrap(), 500_000, 15), "{}", nap[0]);
    assert_eq!(nap[0]["top_waker"]["comm"], "[timer]");
    assert_no_rtrace_programs();
}

/// A thread table of one slot: every thread but one lives in the spill map (the path a thread
/// takes when another thread's tid shares its slot). The same blocks, wakers, slow call and
/// stacks are found.
#[test]
fn thread_table_spill() {
    if !privileged("thread_table_spill") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run = rtrace_env("offcpu_pipe_spill", &["-q", "--", bin.to_str().unwrap()], &[("RTRACE_THREAD_SLOTS", "1")]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let out = run.stdout();
    let tid = |key: &str| -> u64 { out.split(key).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let (reader, writer) = (tid("reader_tid="), tid("writer_tid="));
    let r = run.report();
    assert_eq!(
        (r["accounting"]["offcpu_lost"].as_u64(), r["accounting"]["syscalls_lost"].as_u64()),
        (Some(0), Some(0))
    );
    let read: Vec<_> = entries(&r, "reader;blocking_read;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(read.len(), 1, "{}", r["offcpu"]["top"]);
    assert!(within(read[0]["total_us"].as_u64().unwrap(), 1_000_000, 15), "{}", read[0]);
    assert_eq!(read[0]["top_waker"]["tid"].as_u64().unwrap(), writer, "{}", read[0]);
    let calls = r["slowest_syscalls"].as_array().unwrap();
    let slow_read =
        calls.iter().find(|c| c["name"] == "read" && c["tid"] == reader).unwrap_or_else(|| panic!("{calls:?}"));
    assert!(slow_read["frames"].as_array().unwrap().iter().any(|f| f == "blocking_read"), "{slow_read}");
    let nap: Vec<_> =
        entries(&r, "main;sleep_half_second;nap;").into_iter().filter(|t| t["state"] == "sleep").collect();
    assert_eq!(nap.len(), 1, "{}", r["offcpu"]["top"]);
    assert!(within(nap[0]["total_us"].as_u64().unwrap(), 500_000, 15), "{}", nap[0]);
    assert_no_rtrace_programs();
}

/// Two busy threads pinned to one CPU: each waits for the CPU half of the time.
#[test]
fn runqueue_of_two_threads_on_one_cpu() {
    if !privileged("runqueue_of_two_threads_on_one_cpu") {
        return;
    }
    let bin = fixture("offcpu_runq");
    let run = rtrace("offcpu_runq", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let field = |name: &str| -> u64 {
        run.stdout().split(name).nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap()
    };
    let (spin_ms, kernel_us) = (field("spin_ms="), field("run_delay_us="));
    let r = run.report();
    let rq = r["offcpu"]["by_state"]["runqueue_us"].as_u64().unwrap();
    // The kernel's own run-delay accounting of the two spinning threads, not an assumed half
    // of wall time: anything else that runs on CPU 0 adds to both alike.
    assert!(
        within(rq, kernel_us, 5),
        "runqueue {rq} µs, schedstat run delay {kernel_us} µs ({spin_ms} ms of spinning)"
    );
    let through_spin: u64 =
        entries(&r, ";spin").iter().filter(|t| t["state"] == "runqueue").map(|t| t["total_us"].as_u64().unwrap()).sum();
    assert!(through_spin * 100 >= rq * 80, "{through_spin} of {rq}");
    assert_no_rtrace_programs();
}

/// Go: the main goroutine parked in a channel receive (~1 s) while another sleeps, then in
/// time.Sleep (0.5 s): the threads block on the runtime's park path with those frames on
/// their stacks.
#[test]
fn go_channel_receive_and_sleep() {
    if !privileged("go_channel_receive_and_sleep") {
        return;
    }
    let bin = fixture("go_block");
    let run = rtrace("go_block", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let sum = |needle: &str| -> u64 {
        entries(&r, needle).iter().filter(|t| t["state"] == "sleep").map(|t| t["total_us"].as_u64().unwrap()).sum()
    };
    // Every stack stored: a bucketed stack map loses about one per session to collisions.
    // (A stack that cannot be walked at all, e.g. mid-exec, is another matter.)
    let e = &r["accounting"]["stack_errors_by_reason"];
    assert_eq!((e["user_collision"].as_u64(), e["kernel_collision"].as_u64()), (Some(0), Some(0)), "{e}");
    let recv = sum("main.main;runtime.chanrecv1;runtime.chanrecv;runtime.mcall;runtime.park_m;runtime.schedule;");
    assert!(within(recv, 1_000_000, 15), "chanrecv blocked {recv} µs: {}", r["offcpu"]["top"]);
    let sleep = sum("main.main;time.Sleep;runtime.mcall;runtime.park_m;runtime.schedule;");
    assert!(within(sleep, 500_000, 15), "time.Sleep blocked {sleep} µs: {}", r["offcpu"]["top"]);
    // Each is named as a goroutine that parked, with where its thread then waited (idle in
    // stopm, or in netpoll for the timer) — not as the thread's own runtime.futex.
    for (needle, parked_in) in
        [("main.main;runtime.chanrecv1;", "runtime.chanrecv1"), ("main.main;time.Sleep;", "time.Sleep")]
    {
        for t in entries(&r, needle) {
            let p = &t["go_park"];
            assert_eq!((p["goroutine"].as_str(), p["parked_in"].as_str()), (Some("main.main"), Some(parked_in)), "{t}");
            let waits = p["thread_waits_in"].as_str().unwrap();
            assert!(["runtime.stopm", "runtime.netpoll"].contains(&waits), "{t}");
        }
    }
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    assert!(txt.contains("main.main → runtime.chanrecv1 (goroutine parked; its thread"), "{txt}");
    assert_no_rtrace_programs();
}

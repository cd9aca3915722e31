//! Syscall latency accuracy, end to end (root required).
use serde_json::Value;
use tests::*;

fn row<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} row: {}", r["syscalls"]))
}

/// Exact counts and error counts of a deterministic fixture; a 100 ms nanosleep in its bucket.
#[test]
fn exact_counts_and_errors() {
    if !privileged("exact_counts_and_errors") {
        return;
    }
    let bin = fixture("syscall_counts");
    let run = rtrace("syscall_counts", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    // One read: ld.so's of libc's ELF header. rtrace's hold of the command before its exec (a
    // read of a pipe, spawn.rs) is entered before attach, so it is never the target's.
    let exact = [("getppid", 1000, 0), ("dup", 500, 500), ("umask", 200, 0), ("sched_yield", 300, 0), ("read", 1, 0)];
    for (name, count, errors) in exact {
        let s = row(&r, name);
        assert_eq!((s["count"].as_u64().unwrap(), s["errors"].as_u64().unwrap()), (count, errors), "{name}: {s}");
    }
    // glibc's nanosleep is clock_nanosleep: one call of ~100 ms, in [2^26, 2^27) ns.
    let s = row(&r, "clock_nanosleep");
    assert_eq!(s["count"], 1);
    assert_eq!(s["histogram"], serde_json::json!([[1u64 << 27, 1]]), "{s}");
    assert!((100_000_000..115_000_000).contains(&s["max_ns"].as_u64().unwrap()));
    let a = &r["accounting"];
    assert_eq!((a["syscalls_lost"].as_u64(), a["slow_calls_dropped"].as_u64()), (Some(0), Some(0)));
    // The slowest call is the nap, decoded, with the fixture's frame recovered through libc.
    let slow = &r["slowest_syscalls"][0];
    assert_eq!(slow["name"], "clock_nanosleep");
    assert_eq!(slow["args"]["fields"]["requested_ns"], 100_000_000);
    assert!(slow["frames"].as_array().unwrap().iter().any(|f| f == "main"), "{slow}");
    assert_no_rtrace_programs();
}

/// The user frames of syscall_counts' blocked fifo read end with the exact chain
/// `main → block_on_fifo → read` (the frameless libc wrapper's caller included).
fn assert_fifo_chain(read: &Value) {
    let user: Vec<&str> = read["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .filter(|f| !f.ends_with("_[k]"))
        .collect();
    let n = user.len();
    assert!(n >= 3 && user[n - 3..n - 1] == ["main", "block_on_fifo"] && user[n - 1].contains("read"), "{user:?}");
}

/// A read blocked on a named pipe when the session ends: reported in flight, with the path.
#[test]
fn in_flight_read_on_named_pipe() {
    if !privileged("in_flight_read_on_named_pipe") {
        return;
    }
    let bin = fixture("syscall_counts");
    let fifo = report_dir("fifo").with_extension("fifo");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let run = rtrace("fifo_read", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "fifo", fifo.to_str().unwrap()]);
    let _ = std::fs::remove_file(&fifo);
    // rtrace never signals its target: the fixture is still blocked; end it here.
    let pid = run.report()["target"]["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let calls = r["slowest_syscalls"].as_array().unwrap();
    let read = calls.iter().find(|c| c["name"] == "read").unwrap_or_else(|| panic!("{calls:?}"));
    assert_eq!(read["in_flight"], true);
    assert_eq!(read["args"]["fields"]["fd_desc"], fifo.to_str().unwrap(), "{read}");
    assert!(read["duration_ns"].as_u64().unwrap() >= 1_000_000_000, "{read}");
    // The thread is still blocked at the end: its user stack is walked from /proc with the
    // frame pointer the task iterator read — the exact chain, the frameless libc wrapper's
    // caller included.
    assert_fifo_chain(read);
    // The same block as off-CPU time still in progress: off-CPU timestamps are the scheduler's
    // clock and the syscall's are bpf_ktime_get_ns, so this checks the conversion between
    // them (the two clocks differ by ~6 ms on the VM this was written on).
    let off = r["offcpu"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["in_flight"] == true && t["syscall"] == "read")
        .unwrap_or_else(|| panic!("{}", r["offcpu"]["top"]));
    let (off_us, call_us) = (off["total_us"].as_i64().unwrap(), read["duration_ns"].as_i64().unwrap() / 1000);
    assert!((off_us - call_us).abs() < 2_000, "off-CPU {off_us} µs, call {call_us} µs");
    assert_no_rtrace_programs();
}

/// Go: exactly 1000 getppid calls (the runtime never makes it).
#[test]
fn go_exact_count() {
    if !privileged("go_exact_count") {
        return;
    }
    let bin = fixture("go_block");
    let run = rtrace("go_syscalls", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let s = row(&r, "getppid");
    assert_eq!((s["count"].as_u64(), s["errors"].as_u64()), (Some(1000), Some(0)), "{s}");
    assert_no_rtrace_programs();
}

/// Attaching to a process already blocked (a hung CLI): the call it is stuck in is reported,
/// in flight since before attach, with its fd's path and its stack, and as off-CPU time.
#[test]
fn blocked_before_attach() {
    if !privileged("blocked_before_attach") {
        return;
    }
    let blocked = FifoBlocked::start("fifo_pre");
    let pid = blocked.pid().to_string();
    let fifo = blocked.fifo().to_owned();
    let run = rtrace("blocked_pre", &["-q", "--pid", &pid, "-d", "1s"]);
    drop(blocked);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let read = &r["slowest_syscalls"][0];
    assert_eq!(read["name"], "read", "{}", r["slowest_syscalls"]);
    assert_eq!(read["in_flight"], true);
    assert_eq!(read["started_before_attach"], true);
    assert_eq!(read["args"]["fields"]["fd_desc"], fifo.to_str().unwrap(), "{read}");
    // Walked from /proc with the frame pointer the task iterator read: the exact chain, the
    // frameless libc wrapper's caller included.
    assert_fifo_chain(read);
    let off = &r["offcpu"]["top"][0];
    assert_eq!(off["in_flight"], true, "{off}");
    assert_eq!(off["syscall"], "read", "{off}");
    assert!(off["stack"].as_array().unwrap().windows(2).any(|w| w[0] == "main" && w[1] == "block_on_fifo"), "{off}");
    assert_no_rtrace_programs();
}

//! timeline.pftrace, end to end (root required): real sessions of deterministic fixtures, the
//! file checked and read by tests/timeline_check.py with Perfetto's own full trace schema
//! (PyPI `perfetto`, installed by `cargo xtask setup`), not with rtrace's declarations.
use serde_json::Value;
use tests::*;

/// What timeline_check.py read from the run's timeline.pftrace (it fails on any unknown field,
/// undescribed track, unbalanced slice or time going back).
fn check(run: &Run) -> Value {
    let py = root_dir().join("target/perfetto-venv/bin/python");
    assert!(py.exists(), "{} missing: `cargo xtask setup` installs PyPI perfetto there", py.display());
    let out = std::process::Command::new(&py)
        .arg(root_dir().join("tests/timeline_check.py"))
        .arg(run.dir.join("timeline.pftrace"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "timeline_check.py failed:\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (name, begin, end) of a list of [name, begin, end, args].
fn spans(v: &Value) -> Vec<(String, u64, u64)> {
    let spans = v.as_array().unwrap().iter();
    spans.map(|s| (s[0].as_str().unwrap().to_owned(), s[1].as_u64().unwrap(), s[2].as_u64().unwrap())).collect()
}

/// The zombies fixture's three children, never reaped: each has `alive` from its fork to its
/// exit and `zombie` from the exit to the session's end, exactly where the ledger has them; the
/// fixture itself is alive throughout.
#[test]
fn zombies_fixture_timeline() {
    if !privileged("zombies_fixture_timeline") {
        return;
    }
    let bin = fixture("zombies");
    let run = rtrace("timeline_zombies", &["-q", "-d", "1500ms", "--", bin.to_str().unwrap(), "3"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let r = run.report();
    let t = check(&run);
    let end = t["end"].as_u64().unwrap();
    // The session ran its 1.5 s (the fixture sleeps 3 s).
    assert!((1_500_000_000..1_700_000_000).contains(&end), "end {end}");
    let root = r["target"]["pid"].as_u64().unwrap().to_string();
    let p = &t["processes"][&root];
    assert_eq!(spans(&p["slices"]), [("alive".to_owned(), 0, end)], "{p}");
    assert_eq!(p["cmdline"][0].as_str(), Some(bin.to_str().unwrap()));
    let children = r["children"].as_array().unwrap();
    assert_eq!(children.len(), 3, "{children:?}");
    let zombie_pids: Vec<u64> =
        run.stdout().trim().strip_prefix("zombie_pids=").unwrap().split(',').map(|p| p.parse().unwrap()).collect();
    for c in children {
        let pid = c["pid"].as_u64().unwrap();
        assert!(zombie_pids.contains(&pid), "{c}");
        let (fork, exit) = (c["forked_at_ns"].as_u64().unwrap(), c["exited_at_ns"].as_u64().unwrap());
        let p = &t["processes"][pid.to_string()];
        let want = [("alive".to_owned(), fork, exit), ("zombie".to_owned(), exit, end)];
        assert_eq!(spans(&p["slices"]), want, "pid {pid}: {p}");
        let instants: Vec<&str> = p["instants"].as_array().unwrap().iter().map(|i| i[0].as_str().unwrap()).collect();
        assert_eq!(instants, ["finding: zombie_child"], "pid {pid}");
    }
    let zombies = t["processes"].as_object().unwrap().values().flat_map(|p| spans(&p["slices"]));
    assert_eq!(zombies.filter(|s| s.0 == "zombie").count(), 3);
    // `rtrace report capture.json` writes the same timeline.
    let again = report_dir("timeline_zombies_replay");
    let out = std::process::Command::new(rtrace_bin())
        .args(["report", "-q"])
        .arg(run.dir.join("capture.json"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |d: &std::path::Path| std::fs::read(d.join("timeline.pftrace")).unwrap();
    assert!(read(&again) == read(&run.dir), "the re-rendered timeline differs");
    // The fixture's 200 ms nanosleep (before it prints) is on its main thread's syscalls track.
    let main = spans(&t["syscalls"][&root]);
    let nap: Vec<_> = main.iter().filter(|s| s.0 == "clock_nanosleep").collect();
    assert!(nap.iter().any(|s| (190_000_000..260_000_000).contains(&(s.2 - s.1))), "{main:?}");
    assert_no_rtrace_programs();
}

/// The off-CPU fixture's slow calls: each thread's on its own syscalls track, at the times
/// report.json gives, with the arguments decoded as report.txt shows them.
#[test]
fn offcpu_fixture_slow_calls_carry_decoded_arguments() {
    if !privileged("offcpu_fixture_slow_calls_carry_decoded_arguments") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run = rtrace("timeline_offcpu_pipe", &["-q", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let out = run.stdout();
    let tid = |key: &str| -> String { out.split(key).nth(1).unwrap().split_whitespace().next().unwrap().to_owned() };
    let (reader, writer) = (tid("reader_tid="), tid("writer_tid="));
    let r = run.report();
    let t = check(&run);
    let main = r["target"]["pid"].as_u64().unwrap().to_string();
    let calls = |tid: &str, name: &str| -> Vec<Value> {
        let all = t["syscalls"][tid].as_array().unwrap_or_else(|| panic!("no syscalls track for {tid}: {t}"));
        all.iter().filter(|s| s[0] == name).cloned().collect()
    };
    // The same slice as report.json's call: start and end to the nanosecond.
    let in_report = |s: &Value| {
        let slow = r["slowest_syscalls"].as_array().unwrap();
        let (b, e) = (s[1].as_u64().unwrap(), s[2].as_u64().unwrap());
        let hit = slow
            .iter()
            .any(|c| c["start_ns"] == b && c["start_ns"].as_u64().unwrap() + c["duration_ns"].as_u64().unwrap() == e);
        assert!(hit, "{s} not in report.json's slowest_syscalls");
    };
    let read = calls(&reader, "read");
    assert_eq!(read.len(), 1, "{read:?}");
    let a = &read[0][3];
    assert!(a["fd_desc"].as_str().unwrap().starts_with("pipe:["), "{a}");
    assert!(a["fd_desc"].as_str().unwrap().ends_with("(read end)"), "{a}");
    assert_eq!(a["count"], 1, "{a}");
    assert!(a["args"].as_str().unwrap().starts_with("fd="), "{a}");
    let d = read[0][2].as_u64().unwrap() - read[0][1].as_u64().unwrap();
    assert!((950_000_000..1_200_000_000).contains(&d), "{d}");
    in_report(&read[0]);
    // The writer's 1 s nap and the main thread's 0.5 s one, with the requested time decoded.
    for (tid, ns) in [(&writer, 1_000_000_000u64), (&main, 500_000_000)] {
        let naps: Vec<Value> =
            calls(tid, "clock_nanosleep").into_iter().filter(|s| s[3]["requested_ns"] == ns).collect();
        assert_eq!(naps.len(), 1, "{tid}: {:?}", t["syscalls"][tid]);
        in_report(&naps[0]);
    }
    assert_no_rtrace_programs();
}

/// The checker itself fails where it must (root-free): a trace rtrace renders from a
/// constructed capture passes; the same with a packet carrying a field the schema lacks (as a
/// wrong field number would) fails naming it, and so does the file cut short.
#[test]
fn checker_refuses_unknown_fields_and_truncated_files() {
    use tracer::lifecycle::LifeEvent;
    let mut c = tracer::capture::Capture::default();
    c.target.pid = 100;
    c.session.duration_ms = 1000;
    c.lifecycle.root_pid = 100;
    c.lifecycle.end_ns = 1_000_000_000;
    let fork = LifeEvent::Fork { ts_ns: 1000, pid: 101, parent_pid: 100, parent_tid: 100, parent_comm: "p".into() };
    c.lifecycle.events.push(fork);
    let a = tracer::report::analyze(&c, &mut tracer::symbolize::BlazeResolver::default());
    let mut good = Vec::new();
    tracer::render::timeline::write(&c, &a, &mut good).unwrap();
    let dir = report_dir("timeline_checker");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |bytes: &[u8]| {
        std::fs::write(dir.join("timeline.pftrace"), bytes).unwrap();
        let py = root_dir().join("target/perfetto-venv/bin/python");
        assert!(py.exists(), "{} missing: `cargo xtask setup` installs PyPI perfetto there", py.display());
        let out = std::process::Command::new(&py)
            .arg(root_dir().join("tests/timeline_check.py"))
            .arg(dir.join("timeline.pftrace"))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&good);
    assert!(ok, "{err}");
    // Trace.packet (field 1, length-delimited) holding field 999 = 1, on rtrace's sequence (2)
    // with its flags (2): only the unknown field is wrong.
    let packet = [0xb8, 0x3e, 1, 10 << 3, 2, 13 << 3, 2];
    let mut bad = good.clone();
    bad.extend_from_slice(&[1 << 3 | 2, packet.len() as u8]);
    bad.extend_from_slice(&packet);
    let (ok, err) = run(&bad);
    assert!(!ok && err.contains("unknown fields [999]"), "{err}");
    let (ok, err) = run(&good[..good.len() - 3]);
    assert!(!ok && err.contains("DecodeError"), "{err}");
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The Go fixture told to run GC cycles while traced: every cycle it counts (numgc before and
/// after) is a `GC pause` slice, and each lies, on the trace's CLOCK_MONOTONIC, between the
/// moment this test asked for the cycles and the moment the fixture said they were done
/// (the runtime keeps the pause ends in CLOCK_REALTIME: this checks they were moved onto the
/// trace's clock). Goroutine counts are a counter track under the process.
#[test]
fn go_gc_pauses_on_the_trace_clock() {
    use std::io::{BufRead, Write};
    if !privileged("go_gc_pauses_on_the_trace_clock") {
        return;
    }
    let exe = go_fixture_variant("go_gc", Go::Debian119, false);
    let dir = report_dir("timeline_go_gc");
    let mut rt = std::process::Command::new(rtrace_bin())
        .args(["-q", "-d", "4s", "-o"])
        .arg(&dir)
        .arg("--")
        .arg(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The fixture inherits rtrace's stdin and stdout.
    let mut stdin = rt.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(rt.stdout.take().unwrap());
    let mut line = || {
        let mut s = String::new();
        out.read_line(&mut s).unwrap();
        s.trim().to_owned()
    };
    assert_eq!(line(), "ready");
    // The Go view reads the GC statistics first when it finds the runtime, soon after exec.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let t0 = monotonic_ns();
    writeln!(stdin, "gc 5").unwrap();
    let (start, end) = (line(), line());
    let t1 = monotonic_ns();
    let numgc =
        |l: &str| -> u64 { l.split("numgc=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap() };
    let cycles = numgc(&end) - numgc(&start);
    assert!(cycles >= 5, "{start} / {end}");
    let status = rt.wait().unwrap();
    writeln!(stdin, "exit").unwrap();
    assert!(status.success(), "{status}");
    let run = Run { output: std::process::Output { status, stdout: vec![], stderr: vec![] }, dir };
    let t = check(&run);
    let base = t["base"].as_u64().unwrap();
    let pid = run.report()["target"]["pid"].as_u64().unwrap().to_string();
    let tracks = &t["processes"][&pid]["tracks"];
    let pauses = spans(&tracks["GC stop-the-world"]["slices"]);
    let capture: Value = serde_json::from_slice(&std::fs::read(run.dir.join("capture.json")).unwrap()).unwrap();
    let gc = &capture["go"][0]["gc"];
    assert_eq!(pauses.len() as u64 + gc["pauses_missed"].as_u64().unwrap(), cycles, "{pauses:?}");
    for (name, b, e) in &pauses {
        assert_eq!(name, "GC pause");
        assert!(t0 <= base + b && base + e <= t1, "pause [{b}, {e}] outside [{}, {}]", t0 - base, t1 - base);
    }
    let goroutines = tracks["goroutines"]["counter"].as_array().unwrap();
    let snapshots = capture["go"][0]["snapshots"].as_array().unwrap();
    assert_eq!(goroutines.len(), snapshots.len(), "{goroutines:?}");
    for (c, s) in goroutines.iter().zip(snapshots) {
        assert_eq!((&c[0], &c[1]), (&s["at_ns"], &s["live"]));
    }
    assert_no_rtrace_programs();
}

/// --timeline on the off-CPU fixture: the reader's ~1 s read is a `sleep` slice on its thread's
/// track, ended by a wakeup on the writer's track whose flow leads to the reader's next
/// `running` slice; and each thread's off-CPU slices (the main thread's too) add up, block by
/// block, to the off-CPU time the kernel's aggregation recorded for it (capture.json, blocks
/// of at least --min-block), to the nanosecond — a block begun before the session's time 0
/// (the command runs a moment before the session clock starts) with the part not drawn, which
/// its first slice gives as `before_session_ns`.
#[test]
fn timeline_scheduling_matches_the_offcpu_totals() {
    if !privileged("timeline_scheduling_matches_the_offcpu_totals") {
        return;
    }
    let bin = fixture("offcpu_pipe");
    let run = rtrace("timeline_sched_offcpu_pipe", &["-q", "--timeline", "--", bin.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let out = run.stdout();
    let tid = |key: &str| -> String { out.split(key).nth(1).unwrap().split_whitespace().next().unwrap().to_owned() };
    let (reader, writer) = (tid("reader_tid="), tid("writer_tid="));
    let t = check(&run);
    let capture: Value = serde_json::from_slice(&std::fs::read(run.dir.join("capture.json")).unwrap()).unwrap();
    let acc = &capture["accounting"];
    assert_eq!(acc["timeline_lost"].as_u64().unwrap_or(0), 0, "{acc}");
    assert_eq!(acc["timeline_dropped"].as_u64().unwrap_or(0), 0, "{acc}");
    let thread = |tid: &str| t["threads"].get(tid).unwrap_or_else(|| panic!("no thread track {tid}: {t}"));
    // The reader's read: one sleep of ~1 s, woken by the writer.
    let r = thread(&reader);
    let slices = spans(&r["slices"]);
    let (i, nap) = slices
        .iter()
        .enumerate()
        .find(|(_, s)| s.0 == "sleep" && s.2 - s.1 > 900_000_000)
        .unwrap_or_else(|| panic!("no 1 s sleep on the reader's track: {slices:?}"));
    assert!(nap.2 - nap.1 < 1_200_000_000, "{nap:?}");
    let run_again = slices[i + 1..].iter().find(|s| s.0 == "running").expect("the reader runs again");
    // Then it returns from the thread and exits: its last slice ends at its exit.
    let last = slices.last().unwrap();
    assert!(last.0 == "running" && last.2 - last.1 < 50_000_000, "the reader's last slice {last:?}");
    let flow_in = r["flows_in"].as_array().unwrap();
    let id = flow_in
        .iter()
        .find(|f| f[0].as_u64() == Some(run_again.1))
        .unwrap_or_else(|| panic!("no flow ends at the running slice {run_again:?}: {flow_in:?}"))[1]
        .clone();
    let w = thread(&writer);
    let from = w["flows_out"].as_array().unwrap().iter().find(|f| f[1] == id).expect("the flow leaves the writer");
    // The wakeup is where the sleep ends (two clocks: a few µs apart at most).
    let woke = from[0].as_u64().unwrap();
    assert!(woke.abs_diff(nap.2) < 50_000, "wakeup at {woke}, sleep ends at {}", nap.2);
    let wakeups = w["instants"].as_array().unwrap().iter().filter(|i| i[0] == "wakeup").count();
    assert!(wakeups >= 1, "{w}");
    // Off-CPU, block by block (a block: the slices between two `running` ones).
    let min_block = 10_000;
    let main = run.report()["target"]["pid"].as_u64().unwrap().to_string();
    for tid in [&main, &reader, &writer] {
        let mut blocks = Vec::new();
        let mut cur: Option<u64> = None;
        for s in thread(tid)["slices"].as_array().unwrap() {
            let (begin, end) = (s[1].as_u64().unwrap(), s[2].as_u64().unwrap());
            if s[0] == "running" {
                blocks.extend(cur.take());
            } else {
                *cur.get_or_insert(0) += end - begin + s[3]["before_session_ns"].as_u64().unwrap_or(0);
            }
        }
        blocks.extend(cur);
        let drawn: u64 = blocks.iter().filter(|&&b| b >= min_block).sum();
        let offcpu = capture["offcpu"].as_array().unwrap();
        let recorded: u64 = offcpu
            .iter()
            .filter(|o| o["tid"].as_u64() == tid.parse().ok())
            .map(|o| o["total_ns"].as_u64().unwrap())
            .sum();
        assert_eq!(drawn, recorded, "thread {tid}: drawn off-CPU {drawn} ns, recorded {recorded} ns");
    }
    assert_no_rtrace_programs();
}

/// --timeline-events caps what is kept: a shell starting 1000 short children switches far more
/// often than 1000 times (each child at least once in, and its parent again); exactly 1000 switches and samples are kept, the rest counted as
/// dropped in report.json and said in report.txt, and the file still passes the checker.
#[test]
fn timeline_cap_keeps_the_file_bounded_and_counts_the_rest() {
    if !privileged("timeline_cap_keeps_the_file_bounded_and_counts_the_rest") {
        return;
    }
    let script = "for i in $(seq 1000); do /bin/true; done";
    let run = rtrace("timeline_cap", &["-q", "--timeline", "--timeline-events", "1000", "--", "sh", "-c", script]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    check(&run);
    let capture: Value = serde_json::from_slice(&std::fs::read(run.dir.join("capture.json")).unwrap()).unwrap();
    let tl = &capture["timeline"];
    let kept = tl["switches"].as_array().unwrap().len() + tl["samples"].as_array().unwrap().len();
    assert_eq!(kept, 1000, "{}", capture["accounting"]);
    let dropped = capture["accounting"]["timeline_dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 1000, "{}", capture["accounting"]);
    assert_eq!(run.report()["accounting"]["timeline_dropped"].as_u64(), Some(dropped));
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    assert!(txt.contains(&format!("warning: lost {dropped} timeline records beyond --timeline-events")), "{txt}");
    assert_no_rtrace_programs();
}

//! `rtrace serve --watch` over a minute of short-lived watched processes (issue #15 item 4):
//! 1,000 shells started 60 ms apart, each living ~3 s with one child. One session follows them
//! all (a session per process cost ~350 ms of CPU to load: 1,000 in a minute did not fit on
//! this machine); each is adopted (rtrace_watched_total counts exactly 1,000), its ledger is in
//! /metrics while it runs and for --watch-keep after, then it leaves; the daemon's memory stays
//! flat from the first third of the run to its end, and the kernel lost nothing.
use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{assert_no_rtrace_programs, privileged, serve::metrics};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

const N: usize = 1000;
const EVERY: Duration = Duration::from_millis(60);
const KEEP: Duration = Duration::from_secs(10);

/// This process's resident memory (the daemon runs in it), KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn value(m: &str, series: &str) -> Option<u64> {
    m.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_thousand_short_lived_watched_processes_in_flat_memory() {
    if !privileged("a_thousand_short_lived_watched_processes_in_flat_memory") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sh = tmp.path().join("rtmanysh");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let args = ServeArgs {
        watch: vec!["comm:rtmanysh".parse().unwrap()],
        watch_keep: KEEP,
        ..ServeArgs::on_socket(tmp.path().join("rtrace.sock"))
    };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let socket = server.socket.clone();
    let (mut kids, mut rss, mut series) = (Vec::new(), Vec::new(), Vec::new());
    let t0 = Instant::now();
    for i in 0..N {
        // `sleep` runs as a child: it is not the last command (which dash may exec in place).
        let c = Command::new(&sh).args(["-c", "sleep 3; true"]).stdout(Stdio::null()).spawn().unwrap();
        kids.push(c);
        kids.retain_mut(|c| c.try_wait().unwrap().is_none());
        if i % (N / 3) == N / 3 - 1 {
            let m = metrics(&socket);
            series.push(m.lines().filter(|l| l.starts_with("rtrace_zombie_children{")).count());
            rss.push(rss_kib());
        }
        let next = t0 + EVERY * (i as u32 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    for mut c in kids {
        assert_eq!(c.wait().unwrap().code(), Some(0));
    }
    // Every one adopted, and seen leaving.
    let t = Instant::now();
    let m = loop {
        let m = metrics(&socket);
        if value(&m, "rtrace_watched_total") == Some(N as u64) && value(&m, "rtrace_watched_processes") == Some(0) {
            break m;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "after the run:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    rss.push(rss_kib());
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
    eprintln!("rss KiB at 1/3, 2/3, the end: {rss:?}; watched processes in /metrics then: {series:?}; CPU {cpu_ms} ms");
    // The ones still kept each saw their child exit 0 and nothing else.
    let rows: Vec<&str> =
        m.lines().filter(|l| l.starts_with("rtrace_children_exited_total{") && l.contains("rtmanysh")).collect();
    assert!(!rows.is_empty(), "{m}");
    assert!(rows.iter().all(|l| l.ends_with(r#"outcome="exit_0"} 1"#)), "{rows:?}");
    for kind in ["events", "syscalls", "offcpu", "samples"] {
        assert_eq!(value(&m, &format!(r#"rtrace_events_lost_total{{kind="{kind}"}}"#)), Some(0), "{m}");
    }
    // Exited processes leave /metrics after --watch-keep: at most those of the last KEEP (167)
    // and the ~50 running, with a scan's lag, not the 666 or 999 started by then.
    let bound = (KEEP.as_millis() / EVERY.as_millis()) as usize + 150;
    assert!(series[1..].iter().all(|&n| n <= bound), "watched processes in /metrics {series:?} (bound {bound})");
    // Flat: the last two thirds of the run added less than 8 MiB to what the first had.
    assert!(rss[rss.len() - 1] < rss[0] + 8 * 1024, "rss KiB {rss:?}");
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

/// A long-lived watched process running children one after another (a CI agent, a make): the
/// session folds each child once it was reaped and a reading showed it, so its ledger holds
/// the live ones only, while the exit counter goes on counting every child, never down.
#[test]
fn a_long_lived_watched_process_folds_its_reaped_children() {
    if !privileged("a_long_lived_watched_process_folds_its_reaped_children") {
        return;
    }
    const CHILDREN: u64 = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let sh = tmp.path().join("rtlongsh");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let args = ServeArgs {
        watch: vec!["comm:rtlongsh".parse().unwrap()],
        ..ServeArgs::on_socket(tmp.path().join("rtrace.sock"))
    };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let socket = server.socket.clone();
    let go = tmp.path().join("go");
    let c = std::ffi::CString::new(go.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Waits for the daemon (a line on the `go` fifo once it watches the shell: `read` is a
    // builtin, no child), then CHILDREN /bin/true (exit_0) one after another, then becomes a
    // sleep that outlasts a fold (~1 s): exactly CHILDREN children.
    let script = format!(
        "read x < {go}; i=0; while [ $i -lt {CHILDREN} ]; do /bin/true; i=$((i+1)); done; exec sleep 60",
        go = go.display()
    );
    let mut shell = Command::new(&sh).args(["-c", &script]).spawn().unwrap();
    let l = format!(r#"{{pid="{}",comm="rtlongsh""#, shell.id());
    let exited = format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}}"#);
    let t = Instant::now();
    while value(&metrics(&socket), &format!("rtrace_wait_stalls_total{l}}}")).is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "never watched");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&go, b"go\n").unwrap();
    let (mut last, mut most_held) = (0, 0);
    let t = Instant::now();
    let m = loop {
        let m = metrics(&socket);
        let n = value(&m, &exited).unwrap_or(0);
        assert!(n >= last, "{exited} went down: {last} → {n}");
        last = n;
        let held = value(&m, "rtrace_ledger_processes").unwrap();
        most_held = most_held.max(held);
        assert!(n <= CHILDREN, "{n} children counted of {CHILDREN}");
        // All counted, and the ledger down to the shell (a sleep now).
        if n == CHILDREN && held == 1 {
            break m;
        }
        assert!(t.elapsed() < Duration::from_secs(50), "after 50 s: {n} of {CHILDREN} counted, ledger {held}:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "exit_0 {last} after {:?}; the ledger held at most {most_held} processes; rss {} KiB",
        t.elapsed(),
        rss_kib()
    );
    // Folded as it went (about every second): without folding it held all 3,000 at the end.
    assert!(most_held < CHILDREN / 2, "{most_held}");
    for kind in ["events", "syscalls"] {
        assert_eq!(value(&m, &format!(r#"rtrace_events_lost_total{{kind="{kind}"}}"#)), Some(0), "{m}");
    }
    let _ = shell.kill();
    let _ = shell.wait();
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

//! `rtrace serve` (issue #14) in-process, on a temporary unix socket and a loopback TCP port:
//! /healthz on both, the error contract as `go tool pprof` shows it (404 no such pid, 400 bad
//! seconds, 403 a foreign Host), and the goroutine endpoint of go_parked read by the real
//! `go tool pprof` with the exact counts per site the fixture sets up (its own profile), and a
//! 1 s CPU profile of it through a session. The goroutine view itself needs no session (no
//! BPF); the session-backed endpoints are tested in serve_sessions.rs.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
};

use tests::{
    go_fixture, goroutines_by_main, privileged,
    serve::{get, pprof},
    Go,
};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

/// Goroutines per innermost `main.*` function but main.main (its frames differ between the
/// fixture's own profile, written from main, and rtrace's).
fn debug1_by_main(text: &str) -> BTreeMap<String, u64> {
    let mut out = goroutines_by_main(text);
    out.remove("main.main");
    out
}

/// Goroutines per innermost main.* function (main.main's own left out) from `pprof -traces`.
fn traces_by_main(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for block in text.split("-----------+") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty() && !l.contains("---"));
        let Some(first) = lines.next() else { continue };
        let mut words = first.split_whitespace();
        let Some(count) = words.next().and_then(|c| c.parse::<u64>().ok()) else { continue };
        let frames = words.map(str::to_owned).chain(lines.map(|l| l.trim().to_owned()));
        if let Some(f) = frames.into_iter().find(|f| f.starts_with("main.")) {
            if f != "main.main" {
                *out.entry(f).or_default() += count;
            }
        }
    }
    out
}

#[test]
fn serve_endpoints_and_go_tool_pprof() {
    if !privileged("serve_endpoints_and_go_tool_pprof") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/rtrace.sock");
    let args = ServeArgs { listen: Some("127.0.0.1:0".into()), ..ServeArgs::on_socket(socket.clone()) };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let tcp = server.tcp.unwrap();
    let host = tcp.to_string();
    let over_tcp = |path: &str, host: &str| get(std::net::TcpStream::connect(tcp).unwrap(), path, host);
    let over_unix = |path: &str| get(std::os::unix::net::UnixStream::connect(&socket).unwrap(), path, "localhost");

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    assert_eq!(over_unix("/healthz").2, "ok\n");
    let (status, _, body) = over_tcp("/healthz", &host);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // The error contract, raw.
    let gone = u32::MAX - 1;
    let (status, head, body) = over_tcp(&format!("/pid/{gone}/debug/pprof/goroutine"), &host);
    assert_eq!((status, body.as_str()), (404, format!("no such pid {gone}\n").as_str()));
    assert!(head.contains("x-go-pprof: 1") && head.contains("content-type: text/plain"), "{head}");
    let me = std::process::id();
    let (status, _, body) = over_tcp(&format!("/pid/{me}/debug/pprof/profile?seconds=0"), &host);
    assert_eq!((status, body.as_str()), (400, "bad seconds=\"0\": a whole number of seconds, 1 to 3600\n"));
    let (status, head, body) = over_tcp("/healthz", "rebound.example:80");
    assert_eq!(status, 403, "{head}{body}");
    assert!(body.contains("DNS rebinding"), "{body}");
    assert!(!head.contains("access-control-"), "no CORS: {head}");

    // A non-Go process.
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let (status, _, body) = over_unix(&format!("/pid/{}/debug/pprof/goroutine", sleep.id()));
    assert_eq!((status, body.as_str()), (404, format!("pid {} (sleep) is not a Go program\n", sleep.id()).as_str()));
    let _ = sleep.kill();
    let _ = sleep.wait();

    // go_parked: its own debug=1 profile, then ours three ways.
    let own = tmp.path().join("own.txt");
    let exe = go_fixture("go_parked", Go::Modern);
    let mut child =
        Command::new(&exe).args(["0", "120"]).env("GO_PARKED_PROFILE", &own).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l == "ready")), "go_parked never got ready");
    let pid = child.id();
    let expected: BTreeMap<String, u64> = [
        ("main.recvWorker", 3),
        ("main.selectWorker", 2),
        ("main.sleeper", 4),
        ("main.waiter", 5),
        ("main.runChild", 1),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_owned(), n))
    .collect();
    assert_eq!(debug1_by_main(&std::fs::read_to_string(&own).unwrap()), expected, "the fixture's own profile");

    let t0 = std::time::Instant::now();
    let url = format!("http://{tcp}/pid/{pid}/debug/pprof/goroutine");
    let (ok, out, err) = pprof(&["-traces"], &url, tmp.path());
    assert!(ok, "{err}");
    assert_eq!(traces_by_main(&out), expected, "go tool pprof -traces:\n{out}");
    let (ok, out, err) = pprof(&["-raw"], &url, tmp.path());
    assert!(ok && out.contains("PeriodType: goroutine count"), "{err}{out}");
    let (status, _, body) = over_unix(&format!("/pid/{pid}/debug/pprof/goroutine?debug=1"));
    assert_eq!(status, 200);
    assert_eq!(debug1_by_main(&body), expected, "debug=1:\n{body}");
    let (status, _, body) = over_unix(&format!("/pid/{pid}/debug/pprof/goroutine?debug=2"));
    assert!(status == 200 && body.contains("main.recvWorker") && body.contains("[chan receive"), "{body}");

    // Errors as go tool pprof shows them.
    let (ok, _, err) = pprof(&["-raw"], &format!("http://{tcp}/pid/{gone}/debug/pprof/goroutine"), tmp.path());
    assert!(!ok && err.contains(&format!("server response: 404 Not Found - no such pid {gone}")), "{err}");
    let (ok, _, err) = pprof(&["-raw"], &format!("http://{tcp}/pid/{pid}/debug/pprof/goroutine?debug=7"), tmp.path());
    assert!(!ok && err.contains("server response: 400 Bad Request - bad debug=\"7\""), "{err}");
    let (ok, out, err) =
        pprof(&["-raw", "-seconds", "1"], &format!("http://{tcp}/pid/{pid}/debug/pprof/profile"), tmp.path());
    assert!(out.contains("PeriodType: cpu nanoseconds"), "{out}");
    // A session of 1 s on the (idle) Go process: a valid CPU profile, whatever it holds.
    assert!(ok, "{err}");

    eprintln!("go_parked served and read in {:.1?}", t0.elapsed());
    let _ = child.kill();
    let _ = child.wait();

    // go_heap: go tool pprof -top of the served heap profile and of the program's own
    // give the same rows for the program's functions.
    let theirs = tmp.path().join("theirs");
    let mut heap = Command::new(go_fixture("go_heap", Go::Modern))
        .env("GO_HEAP_OUT", &theirs)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(heap.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.starts_with("ready"))), "go_heap never got ready");
    let rows = |source: &str| {
        let (ok, out, err) = pprof(&["-top", "-sample_index=inuse_space"], source, tmp.path());
        assert!(ok, "{err}");
        out.lines().filter(|l| l.contains(" main.")).map(str::to_owned).collect::<Vec<_>>()
    };
    let ours = rows(&format!("http://{tcp}/pid/{}/debug/pprof/heap", heap.id()));
    assert!(ours.len() >= 2, "{ours:?}");
    assert_eq!(ours, rows(theirs.with_extension("pb.gz").to_str().unwrap()));
    let _ = heap.kill();
    let _ = heap.wait();

    // The other three builds (Go 1.19, and both stripped): the same counts by debug=1.
    for (go, stripped) in tests::GO_VARIANTS {
        let mut child = Command::new(tests::go_fixture_variant("go_parked", go, stripped))
            .args(["0", "60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.is_ok_and(|l| l == "ready")), "go_parked never got ready");
        let (status, _, body) = over_unix(&format!("/pid/{}/debug/pprof/goroutine?debug=1", child.id()));
        assert_eq!((status, debug1_by_main(&body)), (200, expected.clone()), "{go:?} stripped={stripped}:\n{body}");
        let _ = child.kill();
        let _ = child.wait();
    }

    // Idle: no request, no work (the test thread sleeps; the daemon's thread waits in epoll).
    let cpu = || {
        // SAFETY: a valid out-pointer.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as u64 * 1_000_000 + v.tv_usec as u64;
        t(u.ru_utime) + t(u.ru_stime)
    };
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let idle_us = cpu() - before;
    eprintln!("idle: {idle_us} µs of CPU in 2 s");
    assert!(idle_us < 20_000, "idle CPU {idle_us} µs in 2 s");
    server.stop().unwrap();
    assert!(!socket.exists(), "the socket file is removed at stop");
}

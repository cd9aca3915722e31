//! `rtrace serve --watch` on a Go process (issue #15): /metrics carries its live goroutines
//! and the runtime's own GC totals — exactly the numgc and pause_total_ns the fixture prints
//! from runtime.ReadMemStats (tests/fixtures/go_gc.go: GC runs only when told to).
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{assert_no_rtrace_programs, go_fixture, privileged, serve::get, Go};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

fn body(socket: &Path, path: &str) -> String {
    let (status, head, body) = get(UnixStream::connect(socket).unwrap(), path, "localhost");
    assert_eq!(status, 200, "{path}: {head}\n{body}");
    body
}

/// The value of the one /metrics series whose line starts with `prefix`, once it is there.
fn value(socket: &Path, prefix: &str, until: impl Fn(f64) -> bool) -> f64 {
    let t = Instant::now();
    loop {
        let m = body(socket, "/metrics");
        let v = m.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if let Some(v) = v.filter(|v| until(*v)) {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{prefix}… gave {v:?} in:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// "start|end numgc=N pause_total_ns=P" → (N, P).
fn memstats(line: &str) -> (u64, u64) {
    let field = |k: &str| line.split(k).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    (field("numgc="), field("pause_total_ns="))
}

#[test]
fn watched_go_process_goroutines_and_gc_in_metrics() {
    if !privileged("watched_go_process_goroutines_and_gc_in_metrics") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("rtwatchgo");
    std::fs::copy(go_fixture("go_gc", Go::Modern), &exe).unwrap();
    let args = ServeArgs {
        watch: vec!["comm:rtwatchgo".parse().unwrap()],
        ..ServeArgs::on_socket(tmp.path().join("rtrace.sock"))
    };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let socket = server.socket.clone();
    let mut child = Command::new(&exe).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = || {
        let mut s = String::new();
        out.read_line(&mut s).unwrap();
        s.trim().to_owned()
    };
    assert_eq!(line(), "ready");
    let pid = child.id();
    // (go_version follows: the modern Go the set-up installs.)
    let l = format!(r#"{{pid="{pid}",comm="rtwatchgo",go_pid="{pid}",go_version="go1."#);
    // Watched and read: its goroutines (the runtime's own left out), as many as the
    // daemon's goroutine endpoint counts.
    let goroutines = value(&socket, &format!("rtrace_go_goroutines{l}"), |v| v >= 1.0);
    let dump = body(&socket, &format!("/pid/{pid}/debug/pprof/goroutine?debug=1"));
    assert!(dump.starts_with(&format!("goroutine profile: total {goroutines}\n")), "{goroutines} vs {dump}");

    writeln!(stdin, "gc 3").unwrap();
    let (start, _) = memstats(&line());
    let (numgc, pause_ns) = memstats(&line());
    assert!(numgc >= start + 3, "{start} → {numgc}");
    let cycles = value(&socket, &format!("rtrace_go_gc_cycles_total{l}"), |v| v == numgc as f64);
    assert_eq!(cycles, numgc as f64);
    let pause = value(&socket, &format!("rtrace_go_gc_pause_seconds_total{l}"), |v| v > 0.0);
    assert!((pause - pause_ns as f64 / 1e9).abs() < 1e-9, "{pause} s vs the runtime's {pause_ns} ns");

    writeln!(stdin, "exit").unwrap();
    assert!(child.wait().unwrap().success());
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

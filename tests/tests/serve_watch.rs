//! `rtrace serve --watch` (issue #15): a process that matches, started after the daemon, is
//! picked up and traced continuously; GET /metrics shows its ledger as it goes (exact counts
//! of tests/fixtures/zombies under a shell), the kill the test sends, and the process leaving
//! the watched set when it exits; nothing stays attached after the daemon stops.
use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{assert_no_rtrace_programs, fixture, privileged, serve::get};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

fn metrics(socket: &Path) -> String {
    let (status, head, body) = get(UnixStream::connect(socket).unwrap(), "/metrics", "localhost");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    body
}

/// Polls /metrics until every line of `want` is in it (the sessions publish once a second).
fn until(socket: &Path, want: &[String], limit: Duration) -> String {
    let t = Instant::now();
    loop {
        let m = metrics(socket);
        if want.iter().all(|w| m.lines().any(|l| l == w)) {
            return m;
        }
        assert!(t.elapsed() < limit, "after {limit:?}, missing {:?} in:\n{m}", {
            want.iter().filter(|w| !m.lines().any(|l| l == *w)).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn watched_shell_ledger_in_metrics() {
    if !privileged("watched_shell_ledger_in_metrics") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A shell of its own name, so that the spec matches this test's process only.
    let sh = tmp.path().join("rtwatchsh");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let socket = tmp.path().join("rtrace.sock");
    let args = ServeArgs { watch: vec!["comm:rtwatchsh".parse().unwrap()], ..ServeArgs::on_socket(socket.clone()) };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    assert!(metrics(&socket).lines().any(|l| l == "rtrace_watched_processes 0"));

    // Started after the daemon: picked up within a scan (1 s); the sleep leaves it time to
    // attach before anything happens. Then: sleep exits 0; zombies forks 3 children that exit
    // 0, 1 and 2 and are never reaped.
    let script = format!("sleep 3; {} 30; true", fixture("zombies").display());
    let mut shell = Command::new(&sh).args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = shell.id();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("zombie_pids="), "{line}");
    let l = format!(r#"{{pid="{pid}",comm="rtwatchsh""#);
    until(
        &socket,
        &[
            "rtrace_watched_processes 1".into(),
            format!("rtrace_zombie_children{l}}} 3"),
            format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}} 2"#),
            format!(r#"rtrace_children_exited_total{l},outcome="exit_nonzero"}} 2"#),
            format!(r#"rtrace_events_lost_total{l},kind="events"}} 0"#),
        ],
        Duration::from_secs(10),
    );

    // The test kills zombies (the shell's child): a kill by a sender outside the tree.
    let zombies = tests::children_of(pid);
    assert_eq!(zombies.len(), 1, "{zombies:?}");
    let test_comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap().trim().to_owned();
    // SAFETY: a signal to the fixture this test started.
    assert_eq!(unsafe { libc::kill(zombies[0] as i32, libc::SIGTERM) }, 0);
    let m = until(
        &socket,
        &[
            format!(r#"rtrace_children_killed_total{l},signal="SIGTERM",sender="{test_comm}"}} 1"#),
            format!(r#"rtrace_children_exited_total{l},outcome="signal"}} 1"#),
            "rtrace_watched_processes 0".into(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(shell.wait().unwrap().code(), Some(0));
    // Its last values stay for a while after it left; nothing is lost.
    assert!(m.lines().any(|x| x == format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}} 2"#)), "{m}");
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

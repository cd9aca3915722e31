//! `rtrace serve --watch` (issue #15): a process that matches, started after the daemon, is
//! picked up and traced continuously; GET /metrics shows its ledger as it goes (exact counts
//! of tests/fixtures/zombies under a shell), the kill the test sends, and the process leaving
//! the watched set when it exits; nothing stays attached after the daemon stops. And Debian's
//! real Prometheus scraping the daemon sees 4 zombies and the exit counts through PromQL. A
//! burst of children while the daemon attaches loses nothing.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    assert_no_rtrace_programs, fixture, privileged,
    serve::{get, metrics},
};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

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

/// A shell copied under `name` (so that `comm:NAME` matches this test's processes only) and a
/// daemon watching it, listening on `listen` too.
fn daemon_watching_shell(tmp: &Path, name: &str, listen: Option<&str>) -> (PathBuf, Background) {
    let sh = tmp.join(name);
    std::fs::copy("/bin/sh", &sh).unwrap();
    let args = ServeArgs {
        listen: listen.map(str::to_owned),
        watch: vec![format!("comm:{name}").parse().unwrap()],
        ..ServeArgs::on_socket(tmp.join("rtrace.sock"))
    };
    (sh, Background::start(args, Arc::new(Sessions::default())).unwrap())
}

/// `sh` runs `sleep 3` (time for the daemon to find and attach to it; it exits 0), then the
/// zombies fixture, whose 3 children exit 0, 1 and 2 and are never reaped. Returns once they
/// have exited.
fn zombies_under(sh: &Path) -> std::process::Child {
    let script = format!("sleep 3; {} 30; true", fixture("zombies").display());
    let mut shell =
        Command::new(sh).args(["-c", &script]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("zombie_pids="), "{line}");
    shell
}

#[test]
fn watched_shell_ledger_in_metrics() {
    if !privileged("watched_shell_ledger_in_metrics") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sh, server) = daemon_watching_shell(tmp.path(), "rtwatchsh", None);
    let socket = server.socket.clone();
    assert!(metrics(&socket).lines().any(|l| l == "rtrace_watched_processes 0"));

    // Started after the daemon: picked up within a scan (1 s).
    let mut shell = zombies_under(&sh);
    let pid = shell.id();
    let l = format!(r#"{{pid="{pid}",comm="rtwatchsh""#);
    until(
        &socket,
        &[
            "rtrace_watched_processes 1".into(),
            format!("rtrace_zombie_children{l}}} 3"),
            format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}} 2"#),
            format!(r#"rtrace_children_exited_total{l},outcome="exit_nonzero"}} 2"#),
            r#"rtrace_events_lost_total{kind="events"} 0"#.into(),
            "rtrace_watched_total 1".into(),
        ],
        Duration::from_secs(10),
    );

    // The test kills zombies (the shell's child): a kill by a sender outside the tree.
    let zombies = tests::children_of(pid);
    assert_eq!(zombies.len(), 1, "{zombies:?}");
    let test_comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap().trim().to_owned();
    // The shell's wait on it stalls past --wait-stall (1 s) first.
    std::thread::sleep(Duration::from_millis(1500));
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
    // The shell's two waits stalled. On the fixture (until the kill): it slept as told, not
    // stuck — low, as the one-shot report judges it, from the session's off-CPU evidence. On
    // `sleep 3`, begun before attach: medium, as in the one-shot report (no block of it seen),
    // when the daemon attached more than a second before it ended (as it does: ~1.3 s in).
    let mut stalls: Vec<&str> =
        m.lines().filter(|x| x.starts_with("rtrace_findings_total") && x.contains("wait_stall")).collect();
    stalls.sort();
    let stall = |sev: &str| format!(r#"rtrace_findings_total{l},kind="wait_stall",severity="{sev}"}} 1"#);
    assert!(stalls == [stall("low"), stall("medium")] || stalls == [stall("low")], "{m}");
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

/// Issue #15: a watched shell forking short children from its start, so that the daemon finds
/// it and attaches (its programs take ~1.5 s to verify) in the middle of the burst, then exactly
/// `N` more once the session has published: nothing is lost and those exits are counted
/// exactly. Programs were loaded between attaches before: the events ring overflowed while
/// they were verified (4,268 events dropped in a measured run), the stats of the children
/// whose events were lost stayed in SYSCALL_STATS, and later bursts lost thousands of
/// syscalls. How much overflows depends on how fast the machine forks: against that code
/// this test failed in 2 of 3 runs here.
#[test]
fn burst_during_attach_loses_nothing() {
    if !privileged("burst_during_attach_loses_nothing") {
        return;
    }
    const N: u32 = 1500;
    let tmp = tempfile::tempdir().unwrap();
    let (sh, server) = daemon_watching_shell(tmp.path(), "rtburstsh", None);
    let socket = server.socket.clone();
    let go = tmp.path().join("go");
    // Two loops of /bin/false (exit_nonzero) until `go` exists (at most 20,000 each, should
    // the test fail first), one in a subshell that then exits 3 (exit_nonzero): one loop
    // overflowed the ring left unread for the verification less often (1 run in 3); then N
    // /bin/true (exit_0), then a sleep (exit_0) long enough for a snapshot after the last
    // child. `[` and `$((…))` are dash builtins: no other child.
    let script = format!(
        "burst() {{ j=0; while [ ! -e {go} ] && [ $j -lt 20000 ]; do /bin/false; j=$((j+1)); done; }}; \
         (burst; exit 3) & burst; wait; \
         i=0; while [ $i -lt {N} ]; do /bin/true; i=$((i+1)); done; sleep 2",
        go = go.display()
    );
    let mut shell = Command::new(&sh).args(["-c", &script]).spawn().unwrap();
    let l = format!(r#"{{pid="{}",comm="rtburstsh""#, shell.id());
    // The session attached and published once, the first burst running all along.
    let published = format!("rtrace_wait_stalls_total{l}}}");
    let t = Instant::now();
    while !metrics(&socket).lines().any(|x| x.starts_with(&published)) {
        assert!(t.elapsed() < Duration::from_secs(20), "the session never published");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&go, b"").unwrap();
    assert_eq!(shell.wait().unwrap().code(), Some(0));
    let m = until(
        &socket,
        &[
            "rtrace_watched_processes 0".into(),
            format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}} {}"#, N + 1),
            r#"rtrace_events_lost_total{kind="syscalls"} 0"#.into(),
            r#"rtrace_events_lost_total{kind="events"} 0"#.into(),
        ],
        Duration::from_secs(15),
    );
    // The first burst's children were seen exiting: the session attached during it.
    let nonzero = format!(r#"rtrace_children_exited_total{l},outcome="exit_nonzero"}} "#);
    let first: u64 = m.lines().find_map(|x| x.strip_prefix(&nonzero)?.parse().ok()).unwrap_or(0);
    assert!(first > 0, "{m}");
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the Prometheus server on drop.
struct Prom(std::process::Child);

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of a PromQL instant query that returns one sample (None when it returns none).
fn promql(port: u16, query: &str) -> Option<f64> {
    let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (status, _, body) = get(s, &format!("/api/v1/query?query={q}"), &format!("127.0.0.1:{port}"));
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].get(0)?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_watched_ledger() {
    if !privileged("prometheus_scrapes_the_watched_ledger") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sh, server) = daemon_watching_shell(tmp.path(), "rtpromsh", Some("127.0.0.1:0"));
    let target = server.tcp.unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: rtrace\n    static_configs: [{{ targets: ['{target}'] }}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Prom(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/bin/prometheus (Debian's prometheus, installed by cargo xtask setup)"),
    );
    // Prometheus up and scraping: rtrace's own series arrive first.
    let t = Instant::now();
    while promql(port, "rtrace_watched_processes") != Some(0.0) {
        assert!(t.elapsed() < Duration::from_secs(30), "Prometheus never scraped {target}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // 4 zombies: the shell starts a short sleep and becomes the zombies fixture (exec), which
    // never waits for it nor for its own 3 children (exit 0, 1, 2). Exits 0: `sleep 3` (the
    // shell reaps it), the short sleep and the fixture's first child.
    let script = format!("sleep 3; sleep 0.2 & exec {} 30", fixture("zombies").display());
    let mut shell =
        Command::new(&sh).args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let want = [
        ("sum(rtrace_zombie_children)", 4.0),
        ("sum(rtrace_children_exited_total{outcome=\"exit_nonzero\"})", 2.0),
        ("sum(rtrace_children_exited_total{outcome=\"exit_0\"})", 3.0),
        ("rtrace_watched_processes", 1.0),
    ];
    let t = Instant::now();
    loop {
        let got: Vec<Option<f64>> = want.iter().map(|(q, _)| promql(port, q)).collect();
        if got.iter().zip(&want).all(|(g, (_, w))| *g == Some(*w)) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "PromQL {want:?} gave {got:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    for z in tests::children_of(shell.id()) {
        // SAFETY: the fixture this test started.
        unsafe { libc::kill(z as i32, libc::SIGKILL) };
    }
    let _ = shell.kill();
    let _ = shell.wait();
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

//! `--pyroscope URL` (issue #15): the one-shot CLI pushes its profiles once the report is
//! written, and `rtrace serve --watch` pushes each watched process's profiles every
//! --push-interval and once more when it exits. A receiver on loopback (tests/src/pyroscope.rs,
//! its own protobuf reading) records the requests; `go tool pprof` reads the embedded
//! profiles and finds the fixture's hot function.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{
    assert_no_rtrace_programs, fixture, privileged,
    pyroscope::{Push, Receiver, Series},
    rtrace,
    serve::go_bin,
};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

/// `go tool pprof -top` of a pushed profile.
fn top(profile: &[u8], dir: &Path, name: &str) -> String {
    let f = dir.join(name);
    std::fs::write(&f, profile).unwrap();
    let out =
        Command::new(go_bin()).args(["tool", "pprof", "-top"]).arg(&f).env("GOTOOLCHAIN", "local").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

fn of<'a>(push: &'a Push, name: &str) -> Option<&'a Series> {
    push.series.iter().find(|s| s.label("__name__") == Some(name))
}

#[test]
fn one_shot_pushes_its_profiles() {
    if !privileged("one_shot_pushes_its_profiles") {
        return;
    }
    let rx = Receiver::start();
    let url = format!("http://{}", rx.addr);
    let run = rtrace("pyroscope_once", &["--pyroscope", &url, "--", fixture("cpu_chain").to_str().unwrap(), "1"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(run.stderr().contains(&format!("profiles pushed to {}", rx.addr)), "{}", run.stderr());
    let pid = run.report()["target"]["pid"].as_u64().unwrap().to_string();
    let pushes = rx.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let p = &pushes[0];
    assert_eq!(p.path, "/push.v1.PusherService/Push");
    assert_eq!(p.content_type, "application/proto");
    let cpu = of(p, "process_cpu").expect("a process_cpu series");
    for s in &p.series {
        assert_eq!(s.label("service_name"), Some("cpu_chain"), "{:?}", s.labels);
        assert_eq!(s.label("pid"), Some(pid.as_str()));
        assert_eq!(s.label("host"), Some(hostname().as_str()));
        assert_eq!((s.profiles.len(), s.ids.len()), (1, 1));
    }
    let t = top(&cpu.profiles[0], &run.dir, "pushed_cpu.pb.gz");
    assert!(t.lines().any(|l| l == "Type: cpu"), "{t}");
    assert!(t.lines().any(|l| l.trim_end().ends_with(" leaf")), "{t}");
    // The same profile as the report's own cpu.pb.gz.
    let own = top(&std::fs::read(run.dir.join("cpu.pb.gz")).unwrap(), &run.dir, "own");
    let rows = |t: &str| t.lines().filter(|l| l.contains('%')).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(rows(&t), rows(&own));

    // Nobody listening: the report is written all the same, the failure said, the status kept.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let run = rtrace("pyroscope_refused", &["--pyroscope", &url, "--", "sh", "-c", "sleep 0.2"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(run.stderr().contains("were not pushed"), "{}", run.stderr());
    assert!(run.dir.join("report.json").exists());
    assert_no_rtrace_programs();
}

#[test]
fn watched_process_pushed_every_interval_and_at_exit() {
    if !privileged("watched_process_pushed_every_interval_and_at_exit") {
        return;
    }
    let rx = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("rtpushchain");
    std::fs::copy(fixture("cpu_chain"), &exe).unwrap();
    let args = ServeArgs {
        watch: vec!["comm:rtpushchain".parse().unwrap()],
        pyroscope: Some(format!("http://{}", rx.addr).parse().unwrap()),
        push_interval: Duration::from_secs(2),
        service_name: vec![("rtpushchain".into(), "chain-svc".into())],
        ..ServeArgs::on_socket(tmp.path().join("rtrace.sock"))
    };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let mut child = Command::new(&exe).arg("7").stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id().to_string();
    assert!(child.wait().unwrap().success());
    let during = rx.pushes().len();
    // The last part, pushed as it exited.
    let t = Instant::now();
    while rx.pushes().len() == during {
        assert!(t.elapsed() < Duration::from_secs(15), "no push after the process exited ({during} before)");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pushes = rx.pushes();
    assert!(during >= 2, "{during} pushes in 7 s at a 2 s interval");
    let mut leaf = 0;
    for (i, p) in pushes.iter().enumerate() {
        let cpu = of(p, "process_cpu").unwrap_or_else(|| panic!("push {i}: {:?}", p.series));
        assert_eq!(cpu.label("service_name"), Some("chain-svc"));
        assert_eq!(cpu.label("pid"), Some(pid.as_str()));
        let t = top(&cpu.profiles[0], tmp.path(), &format!("push{i}.pb.gz"));
        leaf += usize::from(t.lines().any(|l| l.trim_end().ends_with(" leaf")));
    }
    // Every interval's profile is of the fixture's hot loop (the last one may be only its exit).
    assert!(leaf >= pushes.len() - 1, "{leaf} of {} pushes show leaf", pushes.len());
    let socket = tmp.path().join("rtrace.sock");
    let sent = format!(r#"rtrace_pushes_total{{result="sent"}} {}"#, pushes.len());
    let t = Instant::now();
    loop {
        let (_, _, m) =
            tests::serve::get(std::os::unix::net::UnixStream::connect(&socket).unwrap(), "/metrics", "localhost");
        if m.lines().any(|l| l == sent) {
            break;
        }
        // The answer is counted once the pusher has read it.
        assert!(t.elapsed() < Duration::from_secs(5), "{sent} not in:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

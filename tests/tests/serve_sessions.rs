//! `rtrace serve`'s session-backed endpoints (issue #14, root required): an on-CPU profile of
//! cpu_chain read by the real `go tool pprof`, whose CPU time matches what the kernel says the
//! fixture got in the window and whose top function is its leaf; a second profile of the same
//! pid and kind refused with 409 while an off-CPU one of the same pid runs beside it; the
//! report endpoint; the real daemon stopped by SIGTERM in the middle of a 30 s profile,
//! answering with what it had and leaving no BPF program behind; and `--allow-group`: user
//! nobody, a member, profiles its own process (without its children) and is refused root's.
use std::{
    os::unix::net::UnixStream,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tests::{
    assert_no_rtrace_programs, fixture, privileged, rtrace_bin,
    serve::{get, get_bytes, pprof, split_response},
};
use tracer::serve::{sessions::Sessions, Background, ServeArgs};

/// user + system CPU of `pid` so far, in ms, from /proc/PID/stat (the kernel's own count).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the state.
    let ticks = f[11] + f[12];
    // SAFETY: sysconf has no preconditions.
    ticks * 1000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// "Total samples = 1.98s" of `pprof -top`, in ms.
fn total_ms(top: &str) -> u64 {
    let v = top.split("Total samples = ").nth(1).unwrap_or_else(|| panic!("{top}"));
    let v = v.split_whitespace().next().unwrap();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = num.parse().unwrap();
    (match unit {
        "s" => n * 1000.0,
        "ms" => n,
        other => panic!("unit {other} in {top}"),
    }) as u64
}

#[test]
fn cpu_profile_conflict_offcpu_and_report() {
    if !privileged("cpu_profile_conflict_offcpu_and_report") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("rtrace.sock");
    let args = ServeArgs { listen: Some("127.0.0.1:0".into()), ..ServeArgs::on_socket(socket.clone()) };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    let host = server.tcp.unwrap().to_string();
    let mut chain = Command::new(fixture("cpu_chain")).arg("20").stdout(Stdio::null()).spawn().unwrap();
    let pid = chain.id();
    std::thread::sleep(Duration::from_millis(200));

    // go tool pprof over TCP, as a user would; meanwhile the same profile again (409) and an
    // off-CPU profile of the same pid (its own session, at the same time).
    let url = format!("http://{host}/pid/{pid}/debug/pprof/profile?seconds=3");
    let before = cpu_ms(pid);
    let started = Instant::now();
    let top = std::thread::scope(|s| {
        let top = s.spawn(|| pprof(&["-top", "-nodecount=5"], &url, tmp.path()));
        std::thread::sleep(Duration::from_millis(1000));
        let (status, head, body) = get(
            UnixStream::connect(&socket).unwrap(),
            &format!("/pid/{pid}/debug/pprof/profile?seconds=1"),
            "localhost",
        );
        assert_eq!(status, 409, "{head}\n{body}");
        assert_eq!(body, format!("a profile of pid {pid} is already running: wait for it to finish\n"));
        let (status, head, off) = get_bytes(
            UnixStream::connect(&socket).unwrap(),
            &format!("/pid/{pid}/debug/pprof/offcpu?seconds=1"),
            "localhost",
        );
        assert_eq!(status, 200, "{head}");
        assert_eq!(off[..2], [0x1f, 0x8b], "a gzipped pprof file");
        top.join().unwrap()
    });
    let window = started.elapsed();
    let got = cpu_ms(pid) - before;
    let (ok, out, err) = top;
    assert!(ok, "go tool pprof failed: {err}");
    // The samples' time is the CPU the kernel counted for the fixture over the session, ±15 %
    // (the session is a little shorter than the request: load and attach come first).
    let total = total_ms(&out);
    assert!(
        total * 100 >= got * 70 && total * 100 <= got * 115,
        "pprof total {total} ms, /proc {got} ms over {window:?}:\n{out}"
    );
    let rows: Vec<&str> = out.lines().skip_while(|l| !l.trim_start().starts_with("flat")).skip(1).collect();
    assert!(rows.first().is_some_and(|r| r.trim_end().ends_with(" leaf")), "top row is leaf:\n{out}");
    let flat: f64 = rows[0].split_whitespace().nth(1).unwrap().trim_end_matches('%').parse().unwrap();
    assert!(flat >= 90.0, "leaf has {flat} % flat:\n{out}");

    // The report of a 1 s session: the target, and its samples.
    let (status, _, body) =
        get(UnixStream::connect(&socket).unwrap(), &format!("/pid/{pid}/debug/rtrace/report?seconds=1"), "localhost");
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["target"]["pid"], pid);
    assert_eq!(r["session"]["ended_by"], "duration");
    assert!(r["accounting"]["cpu_samples"].as_u64().unwrap() > 50, "{}", r["accounting"]);
    assert_eq!(r["accounting"]["lost_samples"], 0);
    // The same session code renders report.html: the page, with the chain's on-CPU graph.
    let (status, head, html) = get(
        UnixStream::connect(&socket).unwrap(),
        &format!("/pid/{pid}/debug/rtrace/report.html?seconds=1"),
        "localhost",
    );
    assert_eq!(status, 200, "{head}\n{html}");
    assert!(head.contains("\r\ncontent-type: text/html; charset=utf-8"), "{head}");
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"), "{html}");
    assert!(html.contains(&format!("<title>rtrace report: pid {pid} (cpu_chain)</title>")), "{html}");
    let cpu = html.split("<iframe class=\"flame\" id=\"flame-cpu\"").nth(1).expect("an on-CPU graph");
    assert!(cpu[..cpu.find("</iframe>").unwrap()].contains("leaf"), "{cpu}");
    assert!(html.contains("Served by rtrace serve for one session"), "no report directory to link to");
    let _ = chain.kill();
    let _ = chain.wait();
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

/// The real daemon, SIGTERM in the middle of a 30 s profile: it answers with the profile so far,
/// exits 0 within seconds, and no rtrace BPF program is left.
#[test]
fn sigterm_mid_profile_detaches_everything() {
    if !privileged("sigterm_mid_profile_detaches_everything") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("rtrace.sock");
    let mut daemon =
        Command::new(rtrace_bin()).arg("serve").arg("--socket").arg(&socket).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut chain = Command::new(fixture("cpu_chain")).arg("40").stdout(Stdio::null()).spawn().unwrap();
    let pid = chain.id();
    let answer = std::thread::spawn({
        let socket = socket.clone();
        move || {
            get_bytes(
                UnixStream::connect(&socket).unwrap(),
                &format!("/pid/{pid}/debug/pprof/profile?seconds=30"),
                "localhost",
            )
        }
    });
    // Attached: rtrace's programs are loaded.
    let loaded = || {
        let out = Command::new("bpftool").args(["prog", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(" name rt_")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !loaded() {
        assert!(Instant::now() < deadline, "no session started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let (status, head, body) = answer.join().unwrap();
    assert_eq!(status, 200, "{head}");
    assert_eq!(body[..2], [0x1f, 0x8b], "the profile collected until SIGTERM");
    let code = daemon.wait().unwrap();
    let took = t.elapsed();
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(code.success(), "{code:?}: {log}");
    assert!(took < Duration::from_secs(10), "stopped {took:?} after SIGTERM: {log}");
    assert!(!socket.exists(), "socket removed: {log}");
    let _ = chain.kill();
    let _ = chain.wait();
    assert_no_rtrace_programs();
}

/// The group `group_members_trace_their_own_processes_only` lets in: created when missing,
/// user nobody added to it (both idempotent). Its gid.
fn test_group() -> u32 {
    const GROUP: &str = "rtracetest";
    let gid = || {
        let out = Command::new("getent").args(["group", GROUP]).output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        line.split(':').nth(2).and_then(|g| g.trim().parse::<u32>().ok())
    };
    if gid().is_none() {
        // Exit 9: created meanwhile by someone else; fine.
        let st = Command::new("groupadd").arg(GROUP).status().unwrap();
        assert!(st.success() || st.code() == Some(9), "groupadd {GROUP}: {st:?}");
    }
    let st = Command::new("usermod").args(["-aG", GROUP, "nobody"]).status().unwrap();
    assert!(st.success(), "usermod -aG {GROUP} nobody: {st:?}");
    gid().expect("the group exists now")
}

/// `sh -c 'yes >/dev/null & while :; do :; done'`: a shell burning CPU itself and in a child
/// named yes, in a process group of its own (killed whole on drop). `as_nobody`: run as user
/// nobody (uid and gid 65534, no other group, no capability). `suid`: a setuid-root program
/// the shell also runs again and again in the background, 300 ms at a time (through timeout).
struct Burner(std::process::Child);

impl Burner {
    fn start(as_nobody: bool, suid: Option<&std::path::Path>) -> Burner {
        use std::os::unix::process::CommandExt;
        let again = suid.map(|p| format!("while :; do timeout 0.3 {} >/dev/null; done & ", p.display()));
        let text = format!("yes >/dev/null & {}while :; do :; done", again.unwrap_or_default());
        let script = ["sh", "-c", text.as_str()];
        let mut c = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]).args(script);
            c
        } else {
            let mut c = Command::new(script[0]);
            c.args(&script[1..]);
            c
        };
        Burner(c.process_group(0).current_dir("/").stdout(Stdio::null()).spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group of our own child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The root frames (process names) of a pprof file, from `go tool pprof -traces`, and its
/// comments (`-comments`).
fn roots_and_comments(profile: &[u8], tmp: &std::path::Path, name: &str) -> (Vec<String>, String) {
    let file = tmp.join(name);
    std::fs::write(&file, profile).unwrap();
    let file = file.to_str().unwrap();
    let (ok, traces, err) = pprof(&["-traces"], file, tmp);
    assert!(ok, "go tool pprof -traces {name}: {err}");
    // Each sample: "-----------+-------", then a count and the leaf, then one frame a line; the
    // last line before the next separator is the root.
    let mut roots: Vec<String> = traces
        .split("-----------+")
        // The first piece is the header (File:, Type:, …).
        .skip(1)
        .filter_map(|block| block.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.contains("---")))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    roots.sort();
    roots.dedup();
    let (ok, comments, err) = pprof(&["-comments"], file, tmp);
    assert!(ok, "go tool pprof -comments {name}: {err}");
    (roots, comments)
}

/// `--allow-group`: user nobody, in the group (a supplementary group of its curl), asks the
/// daemon (root) over the unix socket for a profile of its own process: 200, a profile of that
/// process alone — its child `yes` is not traced, the header and a profile comment say so —
/// and for root's process of the same shape: 403 with the reason in one line. Root's own
/// profile of that process has the child (descendants followed). No BPF program left.
#[test]
fn group_members_trace_their_own_processes_only() {
    if !privileged("group_members_trace_their_own_processes_only") {
        return;
    }
    let gid = test_group();
    let tmp = tempfile::tempdir().unwrap();
    // Nobody must reach the socket: the directories on its way searchable (the socket itself
    // is mode 0660, group rtracetest).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = tmp.path().join("run/rtrace.sock");
    let args = ServeArgs { allow_group: Some("rtracetest".into()), ..ServeArgs::on_socket(socket.clone()) };
    let server = Background::start(args, Arc::new(Sessions::default())).unwrap();
    // A setuid-root copy of yes, which the member's shell keeps starting: its processes run as
    // root from their exec on, so the member's session must skip them.
    let suid = tmp.path().join("suidyes");
    std::fs::copy("/usr/bin/yes", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let own = Burner::start(true, Some(&suid));
    let roots = Burner::start(false, None);
    std::thread::sleep(Duration::from_millis(300));

    // curl as nobody with the group as a supplementary one: SO_PEERCRED gives uid and gid
    // 65534, /proc/PID/status of curl the group.
    let as_member = |path: &str| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", &format!("--groups={gid}"), "--inh-caps=-all"])
            .args(["curl", "-s", "-i", "--unix-socket"])
            .current_dir("/")
            .arg(&socket)
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl as nobody: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
        split_response(&out.stdout)
    };
    let (status, head, body) = as_member(&format!("/pid/{}/debug/pprof/profile?seconds=1", own.pid()));
    assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    let own_text = "traced while they run as the caller (others skipped and listed)";
    assert!(head.contains(&format!("\r\nx-rtrace-descendants: {own_text}")), "{head}");
    assert_eq!(body[..2], [0x1f, 0x8b], "a gzipped pprof file");
    let (frames, comments) = roots_and_comments(&body, tmp.path(), "own.pb.gz");
    // The shell and its child yes (the member's own), never the setuid copy.
    assert!(frames.iter().any(|f| f == "sh") && frames.iter().any(|f| f == "yes"), "{frames:?}");
    assert!(frames.iter().all(|f| ["sh", "yes", "timeout"].contains(&f.as_str())), "{frames:?}");
    assert!(comments.contains(&format!("descendants: {own_text}")), "{comments}");
    let skipped = format!("({}) not traced after its exec at ", suid.display());
    assert!(comments.contains(&skipped), "{comments}");
    // Root's effective uid brings every capability, and a setuid exec makes it non-dumpable.
    let why = "runs as another user or group, has capabilities, is not dumpable (euid 0)";
    assert!(comments.lines().any(|l| l.contains(&skipped) && l.ends_with(why)), "{comments}");

    let (status, head, body) = as_member(&format!("/pid/{}/debug/pprof/profile?seconds=1", roots.pid()));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{head}\n{body}");
    assert_eq!(body.matches('\n').count(), 1, "one line: {body}");
    assert!(
        body.starts_with("uid 65534 (nobody) pid ")
            && body.contains(&format!(
                " on the unix socket may not trace pid {} (sh): it runs as uid 0/gid 0",
                roots.pid()
            )),
        "{body}"
    );

    // Root's profile of its own process follows the child.
    let (status, head, body) = get_bytes(
        UnixStream::connect(&socket).unwrap(),
        &format!("/pid/{}/debug/pprof/profile?seconds=1", roots.pid()),
        "localhost",
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\nx-rtrace-descendants: traced"), "{head}");
    let (frames, comments) = roots_and_comments(&body, tmp.path(), "root.pb.gz");
    assert!(frames.iter().any(|f| f == "yes") && frames.iter().any(|f| f == "sh"), "{frames:?}");
    assert!(!comments.contains("descendants:"), "{comments}");
    drop((own, roots));
    server.stop().unwrap();
    assert_no_rtrace_programs();
}

/// A session given a start time that is not the pid's (what a pid reused between the daemon's
/// authorization and the attach looks like) refuses the pid as "no such pid", and leaves
/// nothing attached; the right start time traces it.
#[test]
fn a_pid_reused_after_authorization_is_not_traced() {
    if !privileged("a_pid_reused_after_authorization_is_not_traced") {
        return;
    }
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let start = tracer::procfs::stat(pid).unwrap().start_time;
    let mut opts = tracer::options::SessionOptions::for_pid(pid, Some(Duration::from_millis(300)));
    opts.quiet = true;
    opts.expect_start = Some(start + 1);
    let e = tracer::session::run(&opts, "unchanged", |_| Ok(())).unwrap_err();
    assert_eq!(e.to_string(), tracer::error::UsageError::NoSuchPid(pid).to_string());
    assert_no_rtrace_programs();
    opts.expect_start = Some(start);
    let capture = tracer::session::run(&opts, "unchanged", |_| Ok(())).unwrap();
    assert_eq!(capture.target.pid, pid);
    let _ = child.kill();
    let _ = child.wait();
    assert_no_rtrace_programs();
}

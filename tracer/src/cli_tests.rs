//! Tests of cli.rs.
use super::*;

/// The session options of a command line.
fn cfg(args: &[&str]) -> Result<SessionOptions, UsageError> {
    Args::try_parse_from(std::iter::once("rtrace").chain(args.iter().copied()))
        .unwrap()
        .into_config()
        .map(|c| c.session)
}

/// A process to point --pid at (not the test itself: that is rtrace's own pid here).
struct Other(std::process::Child);
impl Other {
    fn new() -> Self {
        Other(std::process::Command::new("sleep").arg("30").spawn().unwrap())
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}
impl Drop for Other {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(matches!(parse_duration("soon"), Err(UsageError::BadDuration(_))));
    assert!(matches!(parse_duration("0s"), Err(UsageError::ZeroDuration(_))));
    assert_eq!(
        parse_duration("0s").unwrap_err().to_string(),
        "bad duration \"0s\": a session must last longer than zero; omit -d to trace until Ctrl-C or the target exits"
    );
    // Too large for a Duration, and large but representable: both "longer than a year".
    for long in ["5000000000000000h", "366d", "99999999999999999999s"] {
        assert!(matches!(parse_duration(long), Err(UsageError::DurationTooLong("duration", _))), "{long}");
    }
    assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
    assert_eq!(
        parse_duration("5000000000000000h").unwrap_err().to_string(),
        "bad duration \"5000000000000000h\": longer than a year, the most rtrace accepts"
    );
}

#[test]
fn every_duration_option_is_bounded() {
    let o = Other::new();
    for opt in ["--min-block", "--slow-threshold", "--slow-reap", "--wait-stall"] {
        let r = cfg(&["--pid", &o.pid(), opt, "400d"]);
        assert!(matches!(r, Err(UsageError::DurationTooLong(name, _)) if name == opt), "{opt}: {r:?}");
    }
}

#[test]
fn commands_that_cannot_run_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").unwrap();
    let d = dir.path().display().to_string();
    assert!(matches!(resolve_command(&d), Err(UsageError::CommandIsDirectory(p)) if p == d));
    let p = plain.display().to_string();
    assert!(matches!(resolve_command(&p), Err(UsageError::CommandNotExecutable(q)) if q == p));
    assert!(matches!(resolve_command(&format!("{d}/none")), Err(UsageError::CommandNotFound(_))));
    assert!(resolve_command("sh").unwrap().is_absolute());
}

#[test]
fn a_command_without_dashes_gets_the_fix() {
    let e = parse_args(["rtrace", "-d", "5s", "sleep", "1"].map(Into::into).to_vec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unexpected argument \"sleep\": to start a command, put it after `--`: rtrace -d 5s -- sleep 1"
    );
    assert!(parse_args(["rtrace", "--", "sleep", "1"].map(Into::into).to_vec()).is_ok());
    assert!(parse_args(["rtrace", "report", "x.json"].map(Into::into).to_vec()).is_ok());
}

#[test]
fn pids_rtrace_cannot_trace() {
    let me = std::process::id();
    assert!(matches!(cfg(&["--pid", &me.to_string()]), Err(UsageError::OwnPid(p)) if p == me));
    // Kernel threads: kthreadd is pid 2 wherever there is a kernel thread at all.
    if crate::procfs::is_kernel_thread(2) {
        assert!(matches!(cfg(&["--pid", "2"]), Err(UsageError::KernelThread { pid: 2, .. })));
    }
    // A thread of another process names the process.
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import threading,time,sys\nt=threading.Thread(target=time.sleep,args=(30,));t.start();time.sleep(30)",
        ])
        .spawn();
    if let Ok(mut child) = o {
        let pid = child.id();
        let task = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|&t| t != pid)
        });
        let r = cfg(&["--pid", &task.unwrap().to_string()]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(r, Err(UsageError::ThreadNotProcess { tgid, .. }) if tgid == pid), "{r:?}");
    }
}

#[test]
fn frequencies() {
    assert_eq!(parse_frequency("99").unwrap(), 99);
    for bad in ["0", "-5", "abc", "20000"] {
        assert!(matches!(parse_frequency(bad), Err(UsageError::BadFrequency(_))), "{bad}");
    }
}

#[test]
fn targets() {
    let o = Other::new();
    let me = o.pid();
    let c = cfg(&["--pid", &me, "-d", "1s", "-F", "49", "--no-children", "-q"]).unwrap();
    assert_eq!(c.target, Target::Pid(o.0.id()));
    assert_eq!(c.duration, Some(Duration::from_secs(1)));
    assert_eq!(c.frequency_hz, 49);
    assert!(!c.follow_children && c.quiet);
    assert_eq!(c.min_block, Some(Duration::from_micros(10)));
    let c = cfg(&["--pid", &me, "--min-block", "1ms"]).unwrap();
    assert_eq!(c.min_block, Some(Duration::from_millis(1)));
    let c = cfg(&["--pid", &me, "--no-offcpu"]).unwrap();
    assert_eq!(c.min_block, None);
    assert!(matches!(cfg(&["--pid", &me, "--min-block", "x"]), Err(UsageError::BadMinBlock(_))));
    let c = cfg(&["--pid", &me, "--slow-top", "5", "--slow-threshold", "100ms"]).unwrap();
    assert_eq!(c.syscalls, Some(SyscallOptions { slow_top: 5, slow_threshold: Some(Duration::from_millis(100)) }));
    assert_eq!(cfg(&["--pid", &me, "--no-syscalls"]).unwrap().syscalls, None);
    assert!(matches!(cfg(&["--pid", &me, "--slow-top", "0"]), Err(UsageError::BadSlowTop(0))));
    assert!(matches!(cfg(&["--pid", &me, "--slow-top", "1000"]), Err(UsageError::BadSlowTop(1000))));

    let c = cfg(&["--", "sh", "-c", "true"]).unwrap();
    match c.target {
        Target::Command { program, argv } => {
            assert!(program.ends_with("sh"));
            assert_eq!(argv, ["sh", "-c", "true"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(c.follow_children);
}

/// `rtrace --pid P` and the daemon's sessions (SessionOptions::for_pid) trace the same way.
#[test]
fn cli_defaults_are_the_session_defaults() {
    let o = Other::new();
    let c = cfg(&["--pid", &o.pid()]).unwrap();
    let mut want = SessionOptions::for_pid(o.0.id(), None);
    // RTRACE_UNWIND (when a test run pins a mode) is the CLI's alone.
    want.unwind = c.unwind;
    assert_eq!(c, want);
    assert_eq!(crate::options::DEFAULT_MIN_BLOCK, parse_min_block(DEFAULT_MIN_BLOCK).unwrap());
}

#[test]
fn ustack_bytes() {
    for (s, n) in [("16384", 16384), ("16K", 16384), ("16KiB", 16384), ("4K", 4096), ("64KiB", 65536), ("8k", 8192)] {
        assert_eq!(parse_ustack_bytes(s).unwrap(), n, "{s}");
    }
    for s in ["4095", "3K", "65537", "65K", "1M", "16 KB", "", "K", "-4K", "99999999999999999999K"] {
        assert!(matches!(parse_ustack_bytes(s), Err(UsageError::BadUstackBytes(ref b)) if b == s), "{s}");
    }
    let msg = UsageError::BadUstackBytes("3K".into()).to_string();
    assert!(msg.contains("--ustack-bytes") && msg.contains("4K to 64K"), "{msg}");
}

#[test]
fn unwind_choice() {
    use crate::unwind::Choice;
    assert_eq!(parse_unwind(Some("fp")).unwrap(), Choice::Fp);
    assert_eq!(parse_unwind(Some("dwarf")).unwrap(), Choice::Dwarf);
    assert_eq!(parse_unwind(Some("auto")).unwrap(), Choice::Auto);
    if std::env::var_os("RTRACE_UNWIND").is_none() {
        assert_eq!(parse_unwind(None).unwrap(), Choice::Auto, "auto is the default");
    }
    assert!(matches!(parse_unwind(Some("cfi")), Err(UsageError::BadUnwind(ref s)) if s == "cfi"));
}

#[test]
fn bad_targets() {
    assert!(matches!(cfg(&["--pid", "999999999"]), Err(UsageError::NoSuchPid(999999999))));
    assert!(matches!(cfg(&["--", "no-such-command-rtrace"]), Err(UsageError::CommandNotFound(_))));
    assert!(matches!(cfg(&[]), Err(UsageError::NoTarget)));
    let o = Other::new();
    let me = o.pid();
    assert!(matches!(cfg(&["--pid", &me, "--", "true"]), Err(UsageError::PidAndCommand)));
    assert!(matches!(cfg(&["--pid", &me, "-d", "forever"]), Err(UsageError::BadDuration(_))));
    assert!(matches!(cfg(&["--pid", &me, "-F", "0"]), Err(UsageError::BadFrequency(_))));
}

#[test]
fn timeline_flags() {
    let o = Other::new();
    assert_eq!(cfg(&["--pid", &o.pid()]).unwrap().timeline, None);
    let on = cfg(&["--pid", &o.pid(), "--timeline"]).unwrap();
    assert_eq!(on.timeline, Some(crate::options::DEFAULT_TIMELINE_EVENTS));
    let capped = cfg(&["--pid", &o.pid(), "--timeline", "--timeline-events", "50_000"]).unwrap();
    assert_eq!(capped.timeline, Some(50_000));
    for bad in ["10", "x", "1000000000"] {
        let e = cfg(&["--pid", &o.pid(), "--timeline", "--timeline-events", bad]).unwrap_err();
        assert!(matches!(e, UsageError::BadTimelineEvents(ref s) if s == bad), "{bad}: {e}");
    }
    let e = cfg(&["--pid", &o.pid(), "--timeline", "--no-offcpu"]).unwrap_err();
    assert!(matches!(e, UsageError::TimelineWithoutOffcpu), "{e}");
    assert!(e.to_string().contains("--no-offcpu"), "{e}");
    // --timeline-events alone is refused by clap (it requires --timeline).
    let args = ["rtrace", "--pid", "1", "--timeline-events", "5000"];
    assert!(Args::try_parse_from(args).is_err());
}

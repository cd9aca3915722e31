//! Bad input: one line naming the object and the fix, exit code 2, nothing started.
use std::process::Command;

use tests::*;

fn rtrace_err(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(rtrace_bin()).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn nonexistent_pid() {
    let (code, err) = rtrace_err(&["--pid", "999999999", "-d", "1s"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("pid 999999999 not found"), "{err}");
}

#[test]
fn bad_duration_and_frequency() {
    let me = std::process::id().to_string();
    let (code, err) = rtrace_err(&["--pid", &me, "-d", "forever"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad duration \"forever\"") && err.contains("30s"), "{err}");
    let (code, err) = rtrace_err(&["--pid", &me, "-F", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad frequency"), "{err}");
}

#[test]
fn command_not_found() {
    let (code, err) = rtrace_err(&["--", "definitely-not-a-command-rtrace"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("command \"definitely-not-a-command-rtrace\" not found"), "{err}");
}

#[test]
fn output_not_writable() {
    if !privileged("output_not_writable") {
        return;
    }
    let me = std::process::id().to_string();
    let (code, err) = rtrace_err(&["--pid", &me, "-d", "1s", "-o", "/proc/rtrace-report"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/proc/rtrace-report is not writable") && err.contains("-o DIR"), "{err}");
    assert_no_rtrace_programs();
}

/// Run as an unprivileged user (setpriv, from util-linux): refused with the fix named.
#[test]
fn not_privileged() {
    if !privileged("not_privileged") {
        return;
    }
    let me = std::process::id().to_string();
    // A copy under /tmp: the checkout may live where user nobody cannot reach (e.g. /root).
    let dir = std::env::temp_dir().join(format!("rtrace-unpriv-{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("rtrace");
    std::fs::copy(rtrace_bin(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .args(["--pid", &me, "-d", "1s", "-o", "/tmp"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root or CAP_BPF+CAP_PERFMON") && err.contains("sudo"), "{err}");
}

/// Refused before anything starts: the command (which would leave a marker) never runs.
fn refused_before_start(args: &[&str], message: &str) {
    let marker = std::env::temp_dir().join(format!("rtrace-marker-{}-{}", std::process::id(), args.len()));
    let _ = std::fs::remove_file(&marker);
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--", "sh", "-c"].map(String::from));
    all.push(format!("touch {}", marker.display()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let (code, err) = rtrace_err(&all);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim_end(), format!("rtrace: {message}"));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn durations_too_long_or_zero() {
    refused_before_start(
        &["-d", "5000000000000000h"],
        "bad duration \"5000000000000000h\": longer than a year, the most rtrace accepts",
    );
    refused_before_start(&["-d", "400d"], "bad duration \"400d\": longer than a year, the most rtrace accepts");
    refused_before_start(
        &["-d", "0s"],
        "bad duration \"0s\": a session must last longer than zero; omit -d to trace until Ctrl-C or the target exits",
    );
    refused_before_start(
        &["--wait-stall", "99999999999999999999s"],
        "bad --wait-stall \"99999999999999999999s\": longer than a year, the most rtrace accepts",
    );
}

#[test]
fn directory_and_not_executable() {
    let (code, err) = rtrace_err(&["--", "/tmp"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim_end(),
        "rtrace: command \"/tmp\" is a directory, not a program; give the path of the program to run"
    );
    // A plain file without the x bits.
    let file = std::env::temp_dir().join(format!("rtrace-plain-{}", std::process::id()));
    std::fs::write(&file, "x\n").unwrap();
    let f = file.display().to_string();
    let (code, err) = rtrace_err(&["--", &f]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim_end(),
        format!("rtrace: command \"{f}\" is not executable; `chmod +x` it, or run it through its interpreter (rtrace -- sh {f})")
    );
}

#[test]
fn command_without_dashes_suggests_them() {
    let (code, err) = rtrace_err(&["sleep", "1"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim_end(),
        "rtrace: unexpected argument \"sleep\": to start a command, put it after `--`: rtrace -- sleep 1"
    );
    let (code, err) = rtrace_err(&["-d", "3s", "sleep", "1"]);
    assert_eq!(code, Some(2));
    assert!(err.ends_with("put it after `--`: rtrace -d 3s -- sleep 1\n"), "{err}");
}

#[test]
fn kernel_thread_and_own_pid_refused() {
    let (code, err) = rtrace_err(&["--pid", "2", "-d", "1s"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim_end(),
        "rtrace: pid 2 (kthreadd) is a kernel thread: rtrace traces user processes; give a program's pid (see `ps -e`)"
    );
    // exec keeps the shell's pid: rtrace is asked to trace itself.
    let out =
        Command::new("sh").args(["-c", &format!("exec {} --pid $$ -d 1s", rtrace_bin().display())]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("rtrace: pid ")
            && err.trim_end().ends_with(" is rtrace itself; give the pid of the process to trace"),
        "{err}"
    );
}

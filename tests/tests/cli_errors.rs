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

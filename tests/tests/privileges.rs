//! rtrace as a non-root user with exactly the capabilities README lists (file capabilities on
//! a copy of the binary, run as user nobody through setpriv), and with one of them missing:
//! each missing one is named with its fix, never reported as something else.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use tests::{assert_no_rtrace_programs, fixture, privileged, rtrace_bin};

const NOBODY: &str = "65534";
const DOCUMENTED: &str = "cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace,cap_syslog,cap_sys_nice";

/// A directory user nobody can use, holding a copy of rtrace with `caps` and of the fixture.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str, caps: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("rtrace-caps-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let bin = dir.join("rtrace");
        std::fs::copy(rtrace_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("setcap").arg(format!("{caps}+ep")).arg(&bin).status().expect("setcap (libcap2-bin)");
        assert!(st.success(), "setcap {caps} failed");
        let chain = dir.join("cpu_chain");
        std::fs::copy(fixture("cpu_chain"), &chain).unwrap();
        std::fs::set_permissions(&chain, std::fs::Permissions::from_mode(0o755)).unwrap();
        Sandbox { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// rtrace run as user nobody, with no capability but the binary's own.
    fn rtrace(&self, args: &[&str]) -> Output {
        as_nobody(&self.path("rtrace")).args(args).current_dir(&self.dir).output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups", "--inh-caps=-all"])
        .arg(program);
    c
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// With exactly the documented set: a full session, user frames and kernel frames named, and a
/// process of the same user attached by pid with its in-flight call read from /proc.
#[test]
fn documented_capabilities_suffice() {
    if !privileged("documented_capabilities_suffice") {
        return;
    }
    let sb = Sandbox::new("full", DOCUMENTED);
    let out_dir = sb.path("out");
    let chain = sb.path("cpu_chain");
    let out = sb.rtrace(&["-q", "-o", out_dir.to_str().unwrap(), "--", chain.to_str().unwrap(), "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "no capability should be reported missing: {err}");
    let folded = std::fs::read_to_string(out_dir.join("cpu.folded")).unwrap();
    assert!(folded.lines().any(|l| l.contains("main;outer;middle;leaf")), "{folded}");
    let r = report(&out_dir);
    assert!(r["cpu"]["total_samples"].as_u64().unwrap() > 50, "{}", r["cpu"]);

    // Kernel frames named through /proc/kallsyms (CAP_SYSLOG).
    let dd_dir = sb.path("dd");
    let out = sb.rtrace(&[
        "-q",
        "-o",
        dd_dir.to_str().unwrap(),
        "--",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64k",
        "count=100000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let folded = std::fs::read_to_string(dd_dir.join("cpu.folded")).unwrap();
    assert!(folded.contains("do_syscall_64_[k]"), "{folded}");

    // --pid of a process of the same user, blocked in a call since before attach.
    let mut sleeper = as_nobody(Path::new("/bin/sleep")).arg("20").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid_dir = sb.path("pid");
    let out = sb.rtrace(&["-q", "-d", "1s", "-o", pid_dir.to_str().unwrap(), "--pid", &sleeper.id().to_string()]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&pid_dir);
    let calls = r["slowest_syscalls"].as_array().unwrap();
    assert!(
        calls.iter().any(|c| c["name"] == "clock_nanosleep" && c["in_flight"] == true),
        "the sleep's call, read from /proc/PID/syscall, is missing: {calls:?}"
    );
    assert_no_rtrace_programs();
}

/// CAP_BPF+CAP_PERFMON alone: tracefs (mode 0700) is not readable, and rtrace says that, not
/// that tracefs is not mounted.
#[test]
fn tracefs_needs_dac_read_search() {
    if !privileged("tracefs_needs_dac_read_search") {
        return;
    }
    let sb = Sandbox::new("bpf", "cap_bpf,cap_perfmon");
    let out = sb.rtrace(&["-d", "1s", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read it (mode 0700)") && err.contains("CAP_DAC_READ_SEARCH"), "{err}");
    assert!(err.contains("setcap cap_bpf,cap_perfmon,cap_dac_read_search"), "{err}");
    assert!(!err.contains("mount -t tracefs"), "{err}");
}

/// Without CAP_SYS_PTRACE, another user's process cannot be read: refused before anything is
/// loaded, naming the capability. Without CAP_BPF, the missing one is named.
#[test]
fn missing_capabilities_are_named() {
    if !privileged("missing_capabilities_are_named") {
        return;
    }
    let sb = Sandbox::new("noptrace", "cap_bpf,cap_perfmon,cap_dac_read_search,cap_syslog");
    let me = std::process::id().to_string();
    let out = sb.rtrace(&["-d", "1s", "--pid", &me]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {me} belongs to another user")) && err.contains("CAP_SYS_PTRACE"), "{err}");

    let sb = Sandbox::new("nobpf", "cap_perfmon,cap_dac_read_search");
    let out = sb.rtrace(&["-d", "1s", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("(CAP_BPF missing)"), "{err}");

    // Without CAP_SYSLOG the session runs, and the warning says kernel frames are unnamed.
    let sb = Sandbox::new("nosyslog", "cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace");
    let out_dir = sb.path("out");
    let out = sb.rtrace(&["-q", "-o", out_dir.to_str().unwrap(), "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Whether nobody sees kernel addresses is the kernel's call (kptr_restrict,
    // perf_event_paranoid): ask it the same way.
    let kallsyms = as_nobody(Path::new("/usr/bin/head")).args(["-n1", "/proc/kallsyms"]).output().unwrap();
    let hidden = String::from_utf8_lossy(&kallsyms.stdout).starts_with("0000000000000000 ");
    assert_eq!(err.contains("kernel frames will be unnamed; add CAP_SYSLOG"), hidden, "{err}");
    assert_no_rtrace_programs();
}

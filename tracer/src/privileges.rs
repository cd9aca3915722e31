//! What a session needs from the kernel's permission checks, tested before anything starts, so
//! that a missing capability is named with its fix instead of surfacing as "tracefs is not
//! mounted" or as a report that is silently empty.
//!
//! rtrace runs as root, or as any user with exactly these effective capabilities (README,
//! *Privileges*): CAP_BPF and CAP_PERFMON to load and attach the programs, CAP_DAC_READ_SEARCH
//! to read tracefs (mode 0700), CAP_SYS_PTRACE to read /proc/PID/{mem,syscall,maps} of another
//! user's process, CAP_SYSLOG for kernel symbol addresses, CAP_SYS_NICE for the real-time priority
//! that keeps a busy target from starving rtrace (priority.rs). Each is checked by its effect where
//! that is cheap (opening the file the kernel guards), so the answer is the kernel's own.
use std::{fs::File, io::ErrorKind, path::Path};

use crate::error::UsageError;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub use crate::error::SETCAP;

/// This process's effective capability set (/proc/self/status CapEff).
pub fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> u64 {
    crate::procfs::status_field(status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0)
}

/// Names of the capabilities of `needed` missing from `eff`, e.g. "CAP_BPF, CAP_PERFMON".
pub fn missing(eff: u64, needed: &[u32]) -> Option<String> {
    let names: Vec<&str> = needed.iter().filter(|&&c| eff & (1u64 << c) == 0).map(|&c| name(c)).collect();
    (!names.is_empty()).then(|| names.join(", "))
}

fn name(cap: u32) -> &'static str {
    match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYSLOG => "CAP_SYSLOG",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "an unnamed capability",
    }
}

/// Before anything starts: the programs can be loaded and tracefs read.
pub fn check_session(tracefs_format: &Path) -> Result<(), UsageError> {
    let eff = effective();
    if let Some(missing) = missing(eff, &[CAP_BPF, CAP_PERFMON]) {
        return Err(UsageError::NotPrivileged { missing });
    }
    match File::open(tracefs_format) {
        Ok(_) => Ok(()),
        // Mode 0700 on tracefs: only root, or CAP_DAC_READ_SEARCH, gets in.
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            Err(UsageError::TracefsNotReadable { missing: missing(eff, &[CAP_DAC_READ_SEARCH]) })
        }
        Err(_) => Err(UsageError::NoTracefs),
    }
}

/// Once the target pid is known: its /proc files can be read (the kernel's ptrace access check
/// guards /proc/PID/mem, syscall and maps; open is where it runs). Reading is all rtrace does:
/// the check is the same one `cat /proc/PID/syscall` would face. Without CAP_SYS_PTRACE that is
/// the fix, and the session is refused; with it, the refusal comes from elsewhere (the process
/// is outside rtrace's user namespace, or a security module denies it), nothing rtrace can
/// change: the session runs on what the probes see, and the returned warning says what is lost.
pub fn check_target(pid: u32) -> Result<Option<String>, UsageError> {
    match File::open(format!("/proc/{pid}/mem")) {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => match missing(effective(), &[CAP_SYS_PTRACE]) {
            Some(m) => Err(UsageError::TargetNotReadable { pid, missing: Some(m) }),
            None => Ok(Some(format!(
                "the kernel denies reading /proc/{pid}/mem, syscall and maps although rtrace has CAP_SYS_PTRACE (pid {pid} is outside rtrace's user namespace, or a security module refuses): calls blocked before attach and the process's own frames will be missing"
            ))),
        },
        _ => Ok(None),
    }
}

/// What still works without: warnings to print, each naming what is lost and the fix.
pub fn warnings() -> Vec<String> {
    let mut out = Vec::new();
    // kptr_restrict shows zeros to a reader without CAP_SYSLOG: kernel frames would be unnamed.
    let first = std::fs::read_to_string("/proc/kallsyms")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.split_whitespace().next().unwrap_or("").to_owned()));
    if first.is_some_and(|a| a.chars().all(|c| c == '0')) {
        out.push(format!(
            "/proc/kallsyms hides kernel addresses from this user: kernel frames will be unnamed; add CAP_SYSLOG (sudo setcap {SETCAP} $(which rtrace)) or run with sudo"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_capabilities() {
        let status = "Name:\trtrace\nCapInh:\t0000000000000000\nCapEff:\t0000004000000000\n";
        let eff = parse_cap_eff(status);
        assert_eq!(eff, 1 << CAP_PERFMON);
        assert_eq!(missing(eff, &[CAP_BPF, CAP_PERFMON]).as_deref(), Some("CAP_BPF"));
        assert_eq!(missing(eff | 1 << CAP_BPF, &[CAP_BPF, CAP_PERFMON]), None);
        assert_eq!(missing(0, &[CAP_BPF, CAP_PERFMON]).as_deref(), Some("CAP_BPF, CAP_PERFMON"));
        // Root's full set.
        assert_eq!(missing(parse_cap_eff("CapEff:\t000001ffffffffff\n"), &[CAP_BPF, CAP_SYS_PTRACE]), None);
    }
}

//! Who may trace what (issue #14 item 3; the model of docs/timeline-and-serve.md): root any
//! pid; other users only with `--allow-group G`, only when in G, never at
//! `kernel.yama.ptrace_scope` ≥ 2, and only processes they could inspect themselves — the
//! kernel's PTRACE_MODE_READ_REALCREDS rule: same uid and gid in every slot (real, effective,
//! saved, fs) and dumpable — without kernel stacks unless `kernel.perf_event_paranoid` ≤ 1,
//! and their descendants only while those run as the caller (`Access::owner`). Every refusal is one line
//! saying why. The decisions are pure functions of literal texts.

use super::backend::Access;

/// The identity of the connecting user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The primary gid (SO_PEERCRED's, or the user's from the passwd database over TCP).
    pub gid: u32,
    /// The connecting process (unix socket only).
    pub pid: Option<u32>,
    /// Its supplementary groups (/proc/PID/status Groups: of the connecting process, else the
    /// group database).
    pub groups: Vec<u32>,
    /// "uid 1000 (alice) pid 4242 on the unix socket": for logs and refusals.
    pub who: String,
}

/// `--allow-group`, resolved at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// (name, gid) of the group whose members may trace their own processes.
    pub allow_group: Option<(String, u32)>,
}

/// The two kernel settings the rules read, per request (an admin may change them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// kernel.yama.ptrace_scope (0 without Yama).
    pub ptrace_scope: u32,
    pub perf_event_paranoid: i32,
}

impl Sysctl {
    pub fn read() -> Sysctl {
        let num = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<i64>().ok());
        Sysctl {
            ptrace_scope: num("/proc/sys/kernel/yama/ptrace_scope").unwrap_or(0) as u32,
            // Absent (no perf events): the strictest reading.
            perf_event_paranoid: num("/proc/sys/kernel/perf_event_paranoid").unwrap_or(4) as i32,
        }
    }
}

pub use crate::procfs::TargetCreds;

/// Whether the caller may use the daemon at all, and with kernel stacks or not.
pub fn admit(caller: &Caller, policy: &Policy, sys: Sysctl) -> Result<bool, String> {
    if caller.uid == 0 {
        return Ok(true);
    }
    let Some((name, gid)) = &policy.allow_group else {
        return Err(format!(
            "{} refused: only root may trace (rtrace serve was started without --allow-group)",
            caller.who
        ));
    };
    if caller.gid != *gid && !caller.groups.contains(gid) {
        return Err(format!("{} refused: not a member of group {name} (--allow-group)", caller.who));
    }
    if sys.ptrace_scope >= 2 {
        return Err(format!(
            "{} refused: kernel.yama.ptrace_scope is {}, so only root may trace",
            caller.who, sys.ptrace_scope
        ));
    }
    Ok(sys.perf_event_paranoid <= 1)
}

/// Whether an admitted caller may trace this target (root: any).
pub fn inspect(caller: &Caller, t: &TargetCreds) -> Result<(), String> {
    if caller.uid == 0 {
        return Ok(());
    }
    let what = format!("pid {} ({})", t.pid, t.comm);
    if t.uids.iter().any(|&u| u != caller.uid) || t.gids.iter().any(|&g| g != caller.gid) {
        return Err(format!(
            "{} may not trace {what}: it runs as uid {}/gid {} (real, effective, saved, fs: {:?}/{:?}), not as yours",
            caller.who, t.uids[1], t.gids[1], t.uids, t.gids
        ));
    }
    if !t.dumpable() {
        return Err(format!(
            "{} may not trace {what}: it is not dumpable (setuid, or prctl PR_SET_DUMPABLE 0)",
            caller.who
        ));
    }
    Ok(())
}

/// The whole decision for one pid: NotFound when there is no such process.
pub fn authorize(
    caller: &Caller,
    policy: &Policy,
    sys: Sysctl,
    target: Option<&TargetCreds>,
    pid: u32,
) -> Result<Access, super::backend::ServeError> {
    use super::backend::ServeError;
    let kernel_stacks = admit(caller, policy, sys).map_err(ServeError::Forbidden)?;
    let t = target.ok_or_else(|| ServeError::NotFound(format!("no such pid {pid}")))?;
    inspect(caller, t).map_err(ServeError::Forbidden)?;
    // Descendants are checked again at attach and at each exec (a setuid program is skipped).
    Ok(Access { pid, kernel_stacks, owner: (caller.uid != 0).then_some((caller.uid, caller.gid)), start: None })
}

/// The processes a caller may trace, (pid, comm) in pid order, kernel threads left out.
pub fn traceable(caller: &Caller, policy: &Policy, sys: Sysctl) -> Vec<(u32, String)> {
    if admit(caller, policy, sys).is_err() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<(u32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| !crate::procfs::is_kernel_thread(pid))
        .filter_map(TargetCreds::read)
        .filter(|t| inspect(caller, t).is_ok())
        .map(|t| (t.pid, t.comm))
        .collect();
    out.sort();
    out
}

/// Supplementary groups of a running process (the Groups: line).
pub fn groups_of(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    crate::procfs::status_field(&status, "Groups")
        .map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// A user's name, primary gid and the groups listing it as a member (a TCP caller has no
/// process to read them from).
pub fn user_groups(uid: u32) -> (String, Option<u32>, Vec<u32>) {
    use nix::unistd::{Uid, User};
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => {
            let cname = std::ffi::CString::new(u.name.clone()).unwrap_or_default();
            let groups = nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_default();
            (u.name, Some(u.gid.as_raw()), groups.into_iter().map(|g| g.as_raw()).collect())
        }
        _ => (String::new(), None, Vec::new()),
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;

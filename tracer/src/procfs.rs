//! Reads of /proc: process names, command lines, states, descendants and executable mappings.
//! rtrace only reads /proc; it never writes to, signals or ptraces a traced process.
use std::{collections::BTreeMap, fs};

use crate::capture::Mapping;

pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
        })
        .unwrap_or_default()
}

/// The fields of /proc/PID/stat rtrace uses.
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    /// Field 9: the kernel's PF_* flags.
    pub flags: u64,
    /// Field 52: the exit status a zombie will report to wait().
    pub exit_status: Option<i32>,
    /// Field 22: when the process started (clock ticks since boot): with the pid, it names one
    /// process for its whole life (a reused pid gets a later one).
    pub start_time: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm may contain spaces and parentheses: the fields start after the last ')', with
    // field 3 (state).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        flags: fields.get(9 - 3).and_then(|f| f.parse().ok()).unwrap_or(0),
        exit_status: fields.get(52 - 3).and_then(|f| f.parse().ok()),
        start_time: fields.get(22 - 3).and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in the flags, field 9 of /proc/PID/stat).
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    stat(pid).is_some_and(|s| s.flags & PF_KTHREAD != 0)
}

/// The value of one `Name:\tvalue` line of a /proc status file, trimmed.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The process (thread group) a thread id belongs to, from /proc/ID/status.
pub fn tgid_of(id: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status_field(&status, "Tgid")?.parse().ok()
}

/// State and ppid from /proc/PID/stat.
pub fn state_and_ppid(pid: u32) -> Option<(char, u32)> {
    stat(pid).map(|s| (s.state, s.ppid))
}

pub fn exit_status(pid: u32) -> Option<i32> {
    stat(pid)?.exit_status
}

/// The syscall a blocked thread is in, from /proc/PID/syscall ("running" or a number first).
pub fn current_syscall(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let nr: i64 = text.split_whitespace().next()?.parse().ok()?;
    (nr >= 0).then(|| crate::analyze::syscalls::name_of(nr))
}

/// Pipe ends in a process's fd table: (fd, pipe inode, is the write end).
pub fn pipe_fds(pid: u32) -> Vec<(i32, u64, bool)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(link) = fs::read_link(e.path()) else { continue };
        let Some(inode) = link.to_str().and_then(|l| l.strip_prefix("pipe:[")?.strip_suffix(']')?.parse::<u64>().ok())
        else {
            continue;
        };
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        out.push((fd, inode, crate::collect::fds::fdinfo_is_write_end(&info)));
    }
    out.sort_unstable();
    out
}

/// Alive means: exists and is neither a zombie nor dead.
pub fn is_alive(pid: u32) -> bool {
    matches!(state_and_ppid(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// All processes' parent pids (one pass over /proc).
pub fn parent_map() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((_, ppid)) = state_and_ppid(pid) {
                    out.insert(pid, ppid);
                }
            }
        }
    }
    out
}

/// Descendants of `root` (not including it), zombies included.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents = parent_map();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &ppid) in &parents {
            if ppid == p && child != root && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out.sort_unstable();
    out
}

/// One executable mapping of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub inode: u64,
    /// A path, `[vdso]`, `[vsyscall]`, or empty (anonymous: JIT code).
    pub path: String,
}

/// The executable mappings of a maps text (anonymous ones too), by start address, with the
/// identity of their files: the one parser of /proc/PID/maps.
pub fn exec_map_lines(text: &str) -> Vec<MapLine> {
    let mut out: Vec<MapLine> = text
        .lines()
        .filter_map(|line| {
            let mut it = line.splitn(6, ' ');
            let (s, e) = it.next()?.split_once('-')?;
            let perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let inode = it.next()?.parse().ok()?;
            let path = it.next().unwrap_or("").trim_start().to_owned();
            if perms.as_bytes().get(2) != Some(&b'x') {
                return None;
            }
            Some(MapLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset,
                inode,
                path,
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// Parses /proc/PID/maps text into executable mappings (file-backed or pseudo like [vdso]).
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    exec_map_lines(text)
        .into_iter()
        .filter(|m| !m.path.is_empty())
        .map(|m| Mapping { start: m.start, end: m.end, offset: m.offset, path: m.path, build_id: None })
        .collect()
}

pub fn maps(pid: u32) -> Option<Vec<Mapping>> {
    fs::read_to_string(format!("/proc/{pid}/maps")).ok().map(|t| parse_maps(&t))
}

/// (nr, args, sp, pc) of a thread in a syscall; None when running or not in a syscall.
pub fn parse_syscall(text: &str) -> Option<(i64, [u64; 6], u64, u64)> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = hex(it.next()?)?;
    }
    Some((nr, args, hex(it.next()?)?, hex(it.next()?)?))
}

/// A target's credentials: /proc/PID/status's Uid:/Gid: lines (real, effective, saved, fs)
/// and the owner of /proc/PID, which the kernel sets to root while the task is not dumpable
/// (task_dump_owner: `prctl(PR_SET_DUMPABLE, 0)`, a setuid/setgid exec, a credential change)
/// and to its euid/egid otherwise — so "dumpable" is read from outside without ptrace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetCreds {
    pub pid: u32,
    pub comm: String,
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub owner: (u32, u32),
    /// CapEff (None: no such line).
    pub cap_eff: Option<u64>,
}

fn four(status: &str, field: &str) -> Option<[u32; 4]> {
    let v: Vec<u32> = status_field(status, field)?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    v.try_into().ok()
}

impl TargetCreds {
    /// From the literal status text and /proc/PID's owner.
    pub fn parse(pid: u32, status: &str, owner: (u32, u32)) -> Option<TargetCreds> {
        let comm = status_field(status, "Name").unwrap_or("?").trim().to_owned();
        let cap_eff = status_field(status, "CapEff").and_then(|c| u64::from_str_radix(c, 16).ok());
        Some(TargetCreds { pid, comm, uids: four(status, "Uid")?, gids: four(status, "Gid")?, owner, cap_eff })
    }

    /// None: no such process (or gone while read).
    pub fn read(pid: u32) -> Option<TargetCreds> {
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(format!("/proc/{pid}")).ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(pid, &status, (owner.uid(), owner.gid()))
    }

    pub fn dumpable(&self) -> bool {
        self.owner == (self.uids[1], self.gids[1])
    }
}

/// Why the non-root `owner` (uid, gid) could not inspect `pid` itself — the kernel's
/// PTRACE_MODE_READ_REALCREDS rule that tracer-ebpf's creds.rs applies at exec: every uid and
/// gid slot the owner's, no effective capability, dumpable. None: it could (or it is gone).
/// Fails closed: a status whose Uid/Gid lines do not parse counts as another's.
pub fn foreign(pid: u32, owner: (u32, u32)) -> Option<crate::lifecycle::Skipped> {
    use crate::lifecycle::Skipped;
    use tracer_common::process::{SKIP_CAPS, SKIP_CREDS, SKIP_DUMPABLE};
    let Some(t) = TargetCreds::read(pid) else {
        // Gone (None), or a status that does not parse: that counts as another's.
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let program = status_field(&status, "Name").unwrap_or("?").to_owned();
        return Some(Skipped { pid, program, reasons: Skipped::reasons_of(SKIP_CREDS), ..Default::default() });
    };
    let creds = t.uids.iter().any(|&u| u != owner.0) || t.gids.iter().any(|&g| g != owner.1);
    let bit = |on: bool, b: i64| if on { b } else { 0 };
    let why = bit(creds, SKIP_CREDS) | bit(t.cap_eff != Some(0), SKIP_CAPS) | bit(!t.dumpable(), SKIP_DUMPABLE);
    let reasons = Skipped::reasons_of(why);
    (why != 0).then(|| Skipped { pid, ts_ns: 0, program: t.comm, euid: Some(t.uids[1]), reasons })
}

/// The descendants an owner's session follows (`existing` in tree order unimportant): each
/// one whose own credentials and every ancestor's up to `root` are the owner's; the others
/// are returned apart (a process started by a skipped one is skipped with it).
pub fn split_foreign(root: u32, existing: Vec<u32>, owner: (u32, u32)) -> (Vec<u32>, Vec<crate::lifecycle::Skipped>) {
    let foreign: std::collections::BTreeMap<u32, crate::lifecycle::Skipped> =
        existing.iter().filter_map(|&p| Some((p, foreign(p, owner)?))).collect();
    let parents = parent_map();
    let (mut keep, mut skipped) = (Vec::new(), Vec::new());
    for p in existing {
        let mut at = p;
        let mut by = None;
        // Up the tree to the root (bounded: a cycle is impossible, but /proc changes meanwhile).
        for _ in 0..64 {
            if foreign.contains_key(&at) {
                by = Some(at);
            }
            match parents.get(&at) {
                Some(&pp) if at != root && pp != 0 => at = pp,
                _ => break,
            }
        }
        match (by, foreign.get(&p)) {
            (None, _) => keep.push(p),
            (_, Some(s)) => skipped.push(s.clone()),
            (Some(b), None) => skipped.push(crate::lifecycle::Skipped {
                pid: p,
                program: comm(p).unwrap_or_default(),
                reasons: vec![format!("started by skipped pid {b}")],
                ..Default::default()
            }),
        }
    }
    (keep, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /usr/bin/prog
55d0c0a01000-55d0c0a05000 r-xp 00001000 fd:01 1234 /usr/bin/prog
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 r-xp 00028000 fd:01 99 /tmp/a b (deleted)
7f0000300000-7f0000301000 r-xp 00000000 00:00 0
7ffd10000000-7ffd10002000 r-xp 00000000 00:00 0                          [vdso]
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x55d0c0a01000);
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].path, "/usr/bin/prog");
        assert_eq!(m[1].path, "/tmp/a b (deleted)");
        assert_eq!(m[2].path, "[vdso]", "anonymous code (JIT) is no module");
    }

    #[test]
    fn own_pipes_and_status() {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let me = std::process::id();
        let pipes = pipe_fds(me);
        let r = pipes.iter().find(|p| p.0 == fds[0]).unwrap();
        let w = pipes.iter().find(|p| p.0 == fds[1]).unwrap();
        assert_eq!(r.1, w.1);
        assert!(!r.2 && w.2);
        assert_eq!(exit_status(me), Some(0));
        unsafe { libc::close(fds[0]) };
        unsafe { libc::close(fds[1]) };
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(comm(me).is_some());
        assert!(maps(me).unwrap().iter().any(|m| m.path.contains("tracer")));
    }
}

//! What someone tracing a build asks first: which process burned the CPU, and what the
//! children were, by command, and whether they all succeeded.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    analyze::children::ChildRecord,
    capture::{ProcessInfo, RawSample},
    lifecycle::{signal_name, ExitInfo},
};

/// On-CPU samples of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessCpu {
    pub pid: u32,
    /// The command's name (argv[0]'s file name, else the comm).
    pub command: String,
    /// The whole command line, as the process had it.
    pub argv: Vec<String>,
    pub samples: u64,
}

/// On-CPU samples of all processes of one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandCpu {
    pub command: String,
    pub processes: usize,
    pub samples: u64,
}

/// argv[0]'s file name, or the comm: `/usr/lib/go/pkg/tool/linux_amd64/compile` → `compile`.
pub fn command_name(argv: &[String], comm: &str) -> String {
    match argv.first() {
        Some(a) if !a.is_empty() => a.rsplit('/').next().unwrap_or(a).to_owned(),
        _ => comm.to_owned(),
    }
}

/// Samples by process, most first (ties by pid).
pub fn cpu_by_process(samples: &[RawSample], processes: &BTreeMap<u32, ProcessInfo>) -> Vec<ProcessCpu> {
    let mut by_pid: BTreeMap<u32, u64> = BTreeMap::new();
    for s in samples {
        *by_pid.entry(s.tgid).or_default() += s.count;
    }
    let mut out: Vec<ProcessCpu> = by_pid
        .into_iter()
        .map(|(pid, samples)| {
            let p = processes.get(&pid);
            let argv = p.map(|p| p.cmdline.clone()).unwrap_or_default();
            let comm = p.map(|p| p.comm.as_str()).unwrap_or("[unknown process]");
            ProcessCpu { pid, command: command_name(&argv, comm), argv, samples }
        })
        .collect();
    out.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.pid.cmp(&b.pid)));
    out
}

/// The same, summed by command, most first.
pub fn cpu_by_command(by_process: &[ProcessCpu]) -> Vec<CommandCpu> {
    let mut m: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for p in by_process {
        let e = m.entry(&p.command).or_default();
        e.0 += 1;
        e.1 += p.samples;
    }
    let mut out: Vec<CommandCpu> =
        m.into_iter().map(|(c, (n, s))| CommandCpu { command: c.to_owned(), processes: n, samples: s }).collect();
    out.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.command.cmp(&b.command)));
    out
}

/// Whether a child ended badly: a non-zero exit or a signal.
pub fn failed(c: &ChildRecord) -> bool {
    match c.exit {
        Some(ExitInfo::Exited { code }) => code != 0,
        Some(ExitInfo::Killed { .. }) => true,
        None => false,
    }
}

/// How a child ended, in a few words: "exit 0", "SIGKILL", "running", "-".
pub fn ending(c: &ChildRecord) -> String {
    match &c.exit {
        Some(ExitInfo::Exited { code }) => format!("exit {code}"),
        Some(ExitInfo::Killed { signal, .. }) => signal_name(*signal),
        None if c.alive_at_end => "running".into(),
        None => "end unknown".into(),
    }
}

/// One line for a build's children: "103 children: 59 compile, 42 asm, 2 link; all exited 0",
/// or, when not all did, how many ended each way (with the commands of the failures).
pub fn children_summary(children: &[ChildRecord]) -> Option<String> {
    if children.is_empty() {
        return None;
    }
    let mut by_cmd: BTreeMap<String, usize> = BTreeMap::new();
    for c in children {
        *by_cmd.entry(command_name(&c.argv, &c.comm)).or_default() += 1;
    }
    let mut cmds: Vec<(String, usize)> = by_cmd.into_iter().collect();
    cmds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let shown: Vec<String> = cmds.iter().take(8).map(|(c, n)| format!("{n} {c}")).collect();
    let more = if cmds.len() > 8 {
        format!(", {} more in {} other commands", cmds[8..].iter().map(|c| c.1).sum::<usize>(), cmds.len() - 8)
    } else {
        String::new()
    };
    // Endings, most common first; failures name their commands.
    type Ending = (usize, BTreeMap<String, usize>);
    let mut ends: BTreeMap<String, Ending> = BTreeMap::new();
    for c in children {
        let e = ends.entry(ending(c)).or_default();
        e.0 += 1;
        if failed(c) {
            *e.1.entry(command_name(&c.argv, &c.comm)).or_default() += 1;
        }
    }
    let endings = if ends.len() == 1 && ends.contains_key("exit 0") {
        "all exited 0".to_owned()
    } else {
        let mut v: Vec<(String, Ending)> = ends.into_iter().collect();
        v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
        let parts: Vec<String> = v
            .into_iter()
            .map(|(e, (n, cmds))| {
                let who = if cmds.is_empty() {
                    String::new()
                } else {
                    let c: Vec<String> = cmds.into_iter().map(|(c, k)| format!("{k} {c}")).collect();
                    format!(" ({})", c.join(", "))
                };
                format!("{n} {e}{who}")
            })
            .collect();
        parts.join(", ")
    };
    let noun = if children.len() == 1 { "child" } else { "children" };
    Some(format!("{} {noun}: {}{more}; {endings}", children.len(), shown.join(", ")))
}

/// The children in the order the ledger shows them: failed ones first, each group in its
/// original order.
pub fn failed_first(children: &[ChildRecord]) -> Vec<&ChildRecord> {
    let (mut bad, good): (Vec<&ChildRecord>, Vec<&ChildRecord>) = children.iter().partition(|c| failed(c));
    bad.extend(good);
    bad
}

/// A command line short enough for one table row, but long enough to tell children apart:
/// argv[0] by its file name (the directory is the same for every child of a build), then the
/// arguments, up to `width` characters.
pub fn short_command(argv: &[String], comm: &str, width: usize) -> String {
    if argv.is_empty() {
        return comm.to_owned();
    }
    let mut s = command_name(argv, comm);
    for a in &argv[1..] {
        s.push(' ');
        s.push_str(a);
    }
    if s.chars().count() > width {
        let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        s
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn child(pid: u32, argv: &[&str], exit: Option<ExitInfo>) -> ChildRecord {
        ChildRecord {
            pid,
            ppid: 1,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            comm: argv.first().map(|a| a.rsplit('/').next().unwrap().chars().take(15).collect()).unwrap_or_default(),
            forked_at_ns: Some(0),
            execd_at_ns: None,
            exited_at_ns: None,
            exit,
            killed_by: None,
            sigchld_delivered: None,
            reaped_at_ns: None,
            reaped_by: None,
            zombie_ns: None,
            never_reaped: false,
            zombie_age_ns: None,
            zombie_at_attach: false,
            alive_at_end: false,
            orphaned: false,
            exec_failures: vec![],
        }
    }

    const COMPILE: &str = "/usr/lib/go-1.19/pkg/tool/linux_amd64/compile";
    const ASM: &str = "/usr/lib/go-1.19/pkg/tool/linux_amd64/asm";
    const LINK: &str = "/usr/lib/go-1.19/pkg/tool/linux_amd64/link";

    fn build(fail: bool) -> Vec<ChildRecord> {
        let ok = Some(ExitInfo::Exited { code: 0 });
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(child(100 + i, &[COMPILE, "-o", "/tmp/b/_pkg_.a", "-p", "fmt"], ok));
        }
        for i in 0..3 {
            v.push(child(200 + i, &[ASM, "-p", "runtime"], ok));
        }
        v.push(child(300, &[LINK, "-o", "a.out"], if fail { Some(ExitInfo::Exited { code: 2 }) } else { ok }));
        v
    }

    #[test]
    fn summary_of_a_clean_build() {
        assert_eq!(children_summary(&build(false)).unwrap(), "9 children: 5 compile, 3 asm, 1 link; all exited 0");
        assert_eq!(children_summary(&[]), None);
    }

    #[test]
    fn summary_and_order_when_one_failed() {
        let mut kids = build(true);
        kids.push(child(400, &["sleep", "5"], Some(ExitInfo::Killed { signal: 9, core_dumped: false })));
        let mut running = child(500, &["cat"], None);
        running.alive_at_end = true;
        kids.push(running);
        assert_eq!(
            children_summary(&kids).unwrap(),
            "11 children: 5 compile, 3 asm, 1 cat, 1 link, 1 sleep; 8 exit 0, 1 SIGKILL (1 sleep), 1 exit 2 (1 link), \
             1 running"
        );
        let order: Vec<u32> = failed_first(&kids).iter().map(|c| c.pid).collect();
        assert_eq!(order, [300, 400, 100, 101, 102, 103, 104, 200, 201, 202, 500]);
    }

    #[test]
    fn commands_told_apart() {
        let argv: Vec<String> = [COMPILE, "-o", "/tmp/go-build1/b042/_pkg_.a", "-trimpath", "x", "-p", "encoding/json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            short_command(&argv, "compile", 200),
            "compile -o /tmp/go-build1/b042/_pkg_.a -trimpath x -p encoding/json"
        );
        assert_eq!(short_command(&argv, "compile", 20), "compile -o /tmp/go-…");
        assert_eq!(short_command(&argv, "compile", 20).chars().count(), 20);
        assert_eq!(short_command(&[], "kworker", 20), "kworker");
    }

    #[test]
    fn cpu_by_process_and_command() {
        let mut procs = BTreeMap::new();
        for (pid, argv) in [(10, vec![COMPILE, "-p", "fmt"]), (11, vec![COMPILE, "-p", "os"]), (12, vec![LINK])] {
            procs.insert(
                pid,
                ProcessInfo {
                    pid,
                    comm: "x".into(),
                    cmdline: argv.iter().map(|s| s.to_string()).collect(),
                    maps: vec![],
                },
            );
        }
        let s = |tgid, count| RawSample { tgid, tid: tgid, count, ..Default::default() };
        let samples = [s(10, 5), s(11, 30), s(10, 7), s(12, 20), s(13, 1)];
        let p = cpu_by_process(&samples, &procs);
        let rows: Vec<(u32, &str, u64)> = p.iter().map(|r| (r.pid, r.command.as_str(), r.samples)).collect();
        assert_eq!(rows, [(11, "compile", 30), (12, "link", 20), (10, "compile", 12), (13, "[unknown process]", 1)]);
        let c = cpu_by_command(&p);
        assert_eq!(c[0], CommandCpu { command: "compile".into(), processes: 2, samples: 42 });
        assert_eq!(c[1], CommandCpu { command: "link".into(), processes: 1, samples: 20 });
    }
}

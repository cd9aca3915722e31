//! The target's own fate for the report header and report.json `target`: the program it runs
//! now (after any exec), how it ended (exit code, or signal and who sent it), or why it never
//! started, and whether it was stopped or a zombie when rtrace attached. Pure.
use serde::{Deserialize, Serialize};

use crate::{
    analyze::children::{killer_of, SignalSender},
    capture::TargetInfo,
    lifecycle::{signal_name, ExitInfo, LifeEvent, Lifecycle},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    pub pid: u32,
    /// The program it runs at the end (after its last exec).
    pub comm: String,
    pub cmdline: Vec<String>,
    /// The command line it ran before its last exec during the session (`sh -c 'exec …'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_from: Option<Vec<String>>,
    /// "stopped" or "zombie" when it was so at attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_at_attach: Option<String>,
    /// A zombie at attach: the parent that has not reaped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombie_parent: Option<u32>,
    /// How it ended; None: still running at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<TargetExit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetExit {
    Exited {
        code: i32,
        /// ns since attach; None: before attach (a zombie at attach).
        at_ns: Option<u64>,
    },
    Killed {
        signal: String,
        signal_number: i32,
        core_dumped: bool,
        killed_by: Option<SignalSender>,
        at_ns: Option<u64>,
    },
    /// `-- COMMAND` whose exec failed: nothing of it ran.
    NeverStarted { reason: String },
}

impl TargetExit {
    /// rtrace's own exit status in `-- COMMAND` mode, as time and strace give it: the command's
    /// code, 128+N for a signal; None when it never started (rtrace's own 2 then).
    pub fn status(&self) -> Option<u8> {
        match self {
            TargetExit::Exited { code, .. } => Some(*code as u8),
            TargetExit::Killed { signal_number, .. } => Some((128 + *signal_number).min(255) as u8),
            TargetExit::NeverStarted { .. } => None,
        }
    }
}

impl TargetReport {
    /// The header lines about the target after its first line (none: ran throughout).
    pub fn status_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.state_at_attach.as_deref() {
            Some("stopped") => {
                out.push("target was stopped (state T) at attach: it runs only after SIGCONT".to_owned())
            }
            Some("zombie") => out.push(format!(
                "target was a zombie at attach: it had exited before the session; its parent{} has not reaped it",
                self.zombie_parent.map(|p| format!(" (pid {p})")).unwrap_or_default()
            )),
            _ => {}
        }
        let zombie = self.state_at_attach.as_deref() == Some("zombie");
        let at = |t: &Option<u64>| match t {
            Some(ns) => format!(" at {:.3}s", *ns as f64 / 1e9),
            None if zombie => " before attach".to_owned(),
            None => String::new(),
        };
        match &self.exit {
            None => {}
            Some(TargetExit::Exited { code, at_ns }) => {
                out.push(format!("target exited with code {code}{}", at(at_ns)))
            }
            Some(TargetExit::Killed { signal, core_dumped, killed_by, at_ns, .. }) => {
                let by = match killed_by {
                    Some(k) if k.kernel => " (sent by the kernel)".to_owned(),
                    // kill $$, abort(), or a fault (SIGSEGV from its own bad access).
                    Some(k) if k.sender_pid == self.pid => {
                        format!(" (raised by the target itself, tid {})", k.sender_tid)
                    }
                    Some(k) => format!(" (sent by pid {} {}, tid {})", k.sender_pid, k.sender_comm, k.sender_tid),
                    None => " (sender not seen)".to_owned(),
                };
                let core = if *core_dumped { ", core dumped" } else { "" };
                out.push(format!("target killed by {signal}{by}{}{core}", at(at_ns)));
            }
            Some(TargetExit::NeverStarted { reason }) => out.push(format!("target never started: {reason}")),
        }
        out
    }
}

/// The target's report from what the session collected about it.
pub fn report(t: &TargetInfo, l: &Lifecycle) -> TargetReport {
    let root = t.pid;
    let mut execs: Vec<(u64, &str, &[String])> = l
        .events
        .iter()
        .filter_map(|e| match e {
            LifeEvent::Exec { ts_ns, pid, filename, argv } if *pid == root => {
                Some((*ts_ns, filename.as_str(), argv.as_slice()))
            }
            _ => None,
        })
        .collect();
    execs.sort_by_key(|x| x.0);
    // The command lines it ran, oldest first, repeats merged (`-- CMD` sees its own first exec).
    let mut lines: Vec<&[String]> = vec![&t.cmdline];
    for (_, _, argv) in &execs {
        if !argv.is_empty() && lines.last() != Some(argv) {
            lines.push(argv);
        }
    }
    let fin = l.final_procs.iter().find(|p| p.pid == root);
    let comm = match execs.last() {
        // TASK_COMM_LEN - 1: what the kernel names it after the exec.
        Some((_, filename, _)) => filename.rsplit('/').next().unwrap_or_default().chars().take(15).collect(),
        None => fin.map(|p| p.comm.clone()).filter(|c| !c.is_empty()).unwrap_or_else(|| t.comm.clone()),
    };
    let state_at_attach = match t.attach_state {
        Some('T' | 't') => Some("stopped".to_owned()),
        Some('Z') => Some("zombie".to_owned()),
        _ => None,
    };
    TargetReport {
        pid: root,
        comm,
        cmdline: lines.last().map(|l| l.to_vec()).unwrap_or_default(),
        exec_from: (lines.len() > 1).then(|| lines[lines.len() - 2].to_vec()),
        zombie_parent: (state_at_attach.as_deref() == Some("zombie")).then_some(t.attach_ppid).flatten(),
        state_at_attach,
        exit: exit(t, l),
    }
}

/// The most exact source first: rtrace's own wait (it is the parent of `-- COMMAND`), the exit
/// status the kernel recorded at the exit event, a zombie's status at the end or at attach.
fn exit(t: &TargetInfo, l: &Lifecycle) -> Option<TargetExit> {
    if let Some(reason) = &t.not_started {
        return Some(TargetExit::NeverStarted { reason: reason.clone() });
    }
    let root = t.pid;
    let exit_event = l.events.iter().find_map(|e| match e {
        LifeEvent::Exit { ts_ns, pid, status, .. } if *pid == root => Some((*ts_ns, *status)),
        _ => None,
    });
    let at_ns = exit_event.map(|e| e.0);
    let zombie_end = l.final_procs.iter().find(|p| p.pid == root && p.state == 'Z').and_then(|p| p.exit_status);
    let (info, at_ns) = if let Some(s) = t.wait_status.and_then(ExitInfo::from_wait_status) {
        (s, at_ns)
    } else if let Some(s) = exit_event.and_then(|e| e.1).or(zombie_end).and_then(ExitInfo::from_wait_status) {
        (s, at_ns)
    } else if let Some(s) = (t.attach_state == Some('Z')).then_some(t.attach_exit_status).flatten() {
        (ExitInfo::from_wait_status(s)?, None)
    } else {
        return None;
    };
    Some(match info {
        ExitInfo::Exited { code } => TargetExit::Exited { code, at_ns },
        ExitInfo::Killed { signal, core_dumped } => TargetExit::Killed {
            signal: signal_name(signal),
            signal_number: signal,
            core_dumped,
            killed_by: at_ns.and_then(|_| killer_of(l, root, signal)),
            at_ns,
        },
    })
}

#[cfg(test)]
mod tests;

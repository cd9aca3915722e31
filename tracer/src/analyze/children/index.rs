//! The lifecycle events indexed by the process they are about, and the per-process lookups
//! the ledger is built from.
use super::*;

/// A Signal event, borrowed.
#[derive(Clone, Copy)]
pub(super) struct Sig<'a> {
    pub(super) ts: u64,
    pub(super) sender_pid: u32,
    pub(super) sender_tid: u32,
    pub(super) sender_comm: &'a str,
    pub(super) signal: i32,
    pub(super) code: i32,
    pub(super) result: i32,
}

pub(super) struct Index<'a> {
    pub(super) l: &'a Lifecycle,
    /// Events by the pid they are about (Signal: its target; Wait: the child it returned;
    /// Pidfd: the process holding the fd), so per-child lookups don't rescan every event.
    pub(super) by_pid: HashMap<u32, Vec<&'a LifeEvent>>,
    pub(super) initial: HashMap<u32, &'a ProcSnapshot>,
    pub(super) fin: HashMap<u32, &'a ProcSnapshot>,
}

pub(super) fn subject(e: &LifeEvent) -> Option<u32> {
    use LifeEvent::*;
    match e {
        Fork { pid, .. } | Exec { pid, .. } | Exit { pid, .. } | SignalDeliver { pid, .. } => Some(*pid),
        Pidfd { pid, .. } | Free { pid, .. } | ExecFailed { pid, .. } => Some(*pid),
        Signal { target_pid, .. } => Some(*target_pid),
        Wait(w) => w.reaped_pid,
    }
}

impl<'a> Index<'a> {
    pub(super) fn new(l: &'a Lifecycle) -> Self {
        let mut by_pid: HashMap<u32, Vec<&LifeEvent>> = HashMap::new();
        for e in &l.events {
            if let Some(pid) = subject(e) {
                by_pid.entry(pid).or_default().push(e);
            }
        }
        let snaps = |v: &'a [ProcSnapshot]| v.iter().map(|p| (p.pid, p)).collect();
        Index { l, by_pid, initial: snaps(&l.initial), fin: snaps(&l.final_procs) }
    }

    pub(super) fn events(&self, pid: u32) -> impl Iterator<Item = &'a LifeEvent> + '_ {
        self.by_pid.get(&pid).into_iter().flatten().copied()
    }

    /// Earliest Fork: (ts, parent pid, parent comm).
    pub(super) fn fork_of(&self, pid: u32) -> Option<(u64, u32, &'a str)> {
        self.events(pid)
            .filter_map(|e| match e {
                LifeEvent::Fork { ts_ns, parent_pid, parent_comm, .. } => {
                    Some((*ts_ns, *parent_pid, parent_comm.as_str()))
                }
                _ => None,
            })
            .min_by_key(|f| f.0)
    }

    /// Latest Exec: (ts, filename, argv).
    pub(super) fn last_exec(&self, pid: u32) -> Option<(u64, &'a str, &'a [String])> {
        self.events(pid)
            .filter_map(|e| match e {
                LifeEvent::Exec { ts_ns, filename, argv, .. } => Some((*ts_ns, filename.as_str(), argv.as_slice())),
                _ => None,
            })
            .max_by_key(|x| x.0)
    }

    /// Earliest Exit: (ts, comm).
    pub(super) fn exit_of(&self, pid: u32) -> Option<(u64, &'a str)> {
        self.events(pid)
            .filter_map(|e| match e {
                LifeEvent::Exit { ts_ns, comm, .. } => Some((*ts_ns, comm.as_str())),
                _ => None,
            })
            .min_by_key(|x| x.0)
    }

    pub(super) fn free_of(&self, pid: u32) -> Option<u64> {
        self.events(pid)
            .filter_map(|e| match e {
                LifeEvent::Free { ts_ns, .. } => Some(*ts_ns),
                _ => None,
            })
            .min()
    }

    /// Completed waits that returned `pid` (reaping or WNOWAIT peeks).
    pub(super) fn returned_waits(&self, pid: u32) -> impl Iterator<Item = &'a WaitCall> + '_ {
        self.events(pid).filter_map(|e| match e {
            LifeEvent::Wait(w) => Some(w),
            _ => None,
        })
    }

    pub(super) fn reaping_wait(&self, pid: u32) -> Option<&'a WaitCall> {
        self.returned_waits(pid).filter(|w| w.options & WNOWAIT == 0).min_by_key(|w| wait_end(w))
    }

    pub(super) fn signals_to(&self, pid: u32) -> impl Iterator<Item = Sig<'a>> + '_ {
        self.events(pid).filter_map(|e| match e {
            LifeEvent::Signal { ts_ns, sender_pid, sender_tid, sender_comm, signal, code, result, .. } => Some(Sig {
                ts: *ts_ns,
                sender_pid: *sender_pid,
                sender_tid: *sender_tid,
                sender_comm,
                signal: *signal,
                code: *code,
                result: *result,
            }),
            _ => None,
        })
    }

    /// The pid a pidfd referred to in process `pid`: the latest Pidfd event for that fd at or
    /// before `ts` (fds are reused, so later or earlier mappings of the same number are not it).
    pub(super) fn pidfd_target(&self, pid: u32, fd: i32, ts: u64) -> Option<u32> {
        self.events(pid)
            .filter_map(|e| match e {
                LifeEvent::Pidfd { ts_ns, fd: f, target_pid, .. } if *f == fd && *ts_ns <= ts => {
                    Some((*ts_ns, *target_pid))
                }
                _ => None,
            })
            .max_by_key(|x| x.0)
            .map(|x| x.1)
    }
}

pub(super) fn wait_end(w: &WaitCall) -> u64 {
    w.end_ns.unwrap_or(w.start_ns)
}

//! Pid namespaces: wait4/waitid return (and take) pids as the waiter's namespace numbers them,
//! while the probes name every process by its host pid. In a container (`unshare -p -f`) bash
//! reaping "pid 3" means some host pid: this translates, from the `NSpid:` line of
//! /proc/PID/status (host pid first, innermost namespace last) read while each process lives.
use std::collections::{BTreeSet, HashMap};

use crate::lifecycle::{WaitCall, WaitTarget};

/// "NSpid:\t4242\t3" → [4242, 3].
pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let line = crate::procfs::status_field(status, "NSpid")?;
    let v: Vec<u32> = line.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    (!v.is_empty()).then_some(v)
}

fn read_nspid(pid: u32) -> Option<Vec<u32>> {
    parse_nspid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[derive(Default)]
pub struct PidNs {
    /// Host pid → its pid in each namespace, outermost first.
    nspids: HashMap<u32, Vec<u32>>,
    /// Host pid → parent host pid at fork.
    parent: HashMap<u32, u32>,
    exited: BTreeSet<u32>,
    reaped: BTreeSet<u32>,
}

impl PidNs {
    /// What /proc says of `pid` now (alive or a zombie), unless already known.
    fn learn(&mut self, pid: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.nspids.entry(pid) {
            if let Some(v) = read_nspid(pid) {
                e.insert(v);
            }
        }
    }

    pub fn on_fork(&mut self, child: u32, parent: u32) {
        self.parent.insert(child, parent);
        self.learn(parent);
        self.learn(child);
    }

    /// An exiting process is a zombie until reaped: its numbers are still readable.
    pub fn on_exit(&mut self, pid: u32) {
        self.exited.insert(pid);
        self.learn(pid);
    }

    #[cfg(test)]
    fn known(&mut self, pid: u32, nspid: &[u32]) {
        self.nspids.insert(pid, nspid.to_vec());
    }

    /// The host pid of the process `waiter`'s namespace (at `level`) calls `ns_pid`, among the
    /// waiter's children (pids repeat across sibling namespaces).
    fn host_pid(&self, waiter: u32, level: usize, ns_pid: u32) -> Option<u32> {
        self.parent
            .iter()
            .filter(|(_, p)| **p == waiter)
            .map(|(c, _)| *c)
            .find(|c| self.nspids.get(c).and_then(|v| v.get(level)) == Some(&ns_pid))
    }

    /// Rewrites a wait of a process inside a pid namespace to host pids. A reaped child whose
    /// numbers were never read (it exited before rtrace looked) is the waiter's only exited,
    /// unreaped child without them, if there is exactly one; otherwise unknown (None): never
    /// a pid that is not a real process.
    pub fn translate(&mut self, w: &mut WaitCall) {
        self.learn(w.pid);
        let level = self.nspids.get(&w.pid).map_or(0, |v| v.len() - 1);
        if level > 0 {
            if let Some(ns) = w.reaped_pid {
                w.reaped_pid = self.host_pid(w.pid, level, ns).or_else(|| {
                    let mut unnamed = self.parent.iter().filter(|(c, p)| {
                        **p == w.pid
                            && self.exited.contains(c)
                            && !self.reaped.contains(c)
                            && !self.nspids.contains_key(c)
                    });
                    match (unnamed.next(), unnamed.next()) {
                        (Some((c, _)), None) => Some(*c),
                        _ => None,
                    }
                });
            }
            if let WaitTarget::Pid { pid } = &mut w.target {
                if let Some(h) = self.host_pid(w.pid, level, *pid) {
                    *pid = h;
                }
            }
        }
        if w.options & 0x0100_0000 == 0 {
            self.reaped.extend(w.reaped_pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(pid: u32, target: WaitTarget, reaped: Option<u32>) -> WaitCall {
        WaitCall {
            pid,
            tid: pid,
            syscall: "wait4".into(),
            target,
            options: 0,
            start_ns: 1,
            end_ns: Some(2),
            ret: reaped.map(i64::from),
            reaped_pid: reaped,
            exit: None,
        }
    }

    #[test]
    fn parses_nspid() {
        assert_eq!(parse_nspid("Name:\tbash\nNSpid:\t4242\t1\nNSsid:\t0\n"), Some(vec![4242, 1]));
        assert_eq!(parse_nspid("NSpid:\t77\n"), Some(vec![77]));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
    }

    /// `unshare -p -f bash -c 'sleep 0.5 & true & sleep 1; wait'`: bash (host 500, pid 1 inside)
    /// reaps its children by their namespace pids 2, 3, 4.
    #[test]
    fn namespace_pids_become_host_pids() {
        let mut ns = PidNs::default();
        ns.known(500, &[500, 1]);
        for (host, inner) in [(501, 2), (502, 3), (503, 4)] {
            ns.parent.insert(host, 500);
            ns.known(host, &[host, inner]);
        }
        // A sibling container's pid 3 is not bash's child.
        ns.parent.insert(900, 899);
        ns.known(900, &[900, 3]);
        let mut w = wait(500, WaitTarget::AnyChild, Some(3));
        ns.translate(&mut w);
        assert_eq!(w.reaped_pid, Some(502));
        let mut w = wait(500, WaitTarget::Pid { pid: 4 }, Some(4));
        ns.translate(&mut w);
        assert_eq!((w.reaped_pid, w.target), (Some(503), WaitTarget::Pid { pid: 503 }));
        // A waiter in the host namespace is left alone.
        ns.known(400, &[400]);
        let mut w = wait(400, WaitTarget::AnyChild, Some(500));
        ns.translate(&mut w);
        assert_eq!(w.reaped_pid, Some(500));
    }

    /// `true &` exits before its numbers are read: the only exited, unreaped child without
    /// them is it; with two such, unknown rather than a phantom pid.
    #[test]
    fn unread_child_by_elimination_or_unknown() {
        let mut ns = PidNs::default();
        ns.known(500, &[500, 1]);
        ns.parent.insert(501, 500);
        ns.known(501, &[501, 2]);
        ns.parent.insert(502, 500);
        ns.exited.insert(502);
        let mut w = wait(500, WaitTarget::AnyChild, Some(3));
        ns.translate(&mut w);
        assert_eq!(w.reaped_pid, Some(502));
        ns.parent.insert(503, 500);
        ns.parent.insert(504, 500);
        ns.exited.extend([503, 504]);
        let mut w = wait(500, WaitTarget::AnyChild, Some(4));
        ns.translate(&mut w);
        assert_eq!(w.reaped_pid, None);
    }
}

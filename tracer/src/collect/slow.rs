//! The slowest individual syscalls, as the kernel sends them (rare: see tracer-ebpf
//! syscalls.rs), with the fd or pidfd they used resolved from /proc on arrival, while the
//! process still has it open.
use tracer_common::syscall::{Inflight, SlowCall};

use crate::{analyze::sysargs, collect::fds};

/// A slow call as received, stacks still as ids (read from the stack maps at the end).
pub struct Received {
    pub call: SlowCall,
    pub fd_desc: Option<String>,
    pub pidfd_pid: Option<u32>,
    pub in_flight: bool,
}

pub struct SlowStore {
    top: usize,
    threshold_ns: Option<u64>,
    calls: Vec<Received>,
}

/// What userspace resolves for one call: the fd argument's description, the pid behind a
/// waitid(P_PIDFD) pidfd.
pub fn resolve(tgid: u32, nr: i32, args: &[u64; 6]) -> (Option<String>, Option<u32>) {
    let Some(name) = syscalls::Sysno::new(nr as usize).map(|s| s.name()) else { return (None, None) };
    let fd_desc = sysargs::fd_arg(name).and_then(|i| fds::describe_fd(tgid, args[i] as i32));
    const P_PIDFD: u64 = 3;
    let pidfd_pid = (name == "waitid" && args[0] == P_PIDFD).then(|| fds::pidfd_pid(tgid, args[1] as i32)).flatten();
    (fd_desc, pidfd_pid)
}

impl SlowStore {
    pub fn new(top: usize, threshold_ns: Option<u64>) -> Self {
        Self { top, threshold_ns, calls: Vec::new() }
    }

    pub fn add(&mut self, call: SlowCall) {
        let (fd_desc, pidfd_pid) = resolve(call.tgid, call.nr, &call.args);
        self.calls.push(Received { call, fd_desc, pidfd_pid, in_flight: false });
        // Keep memory bounded: the top K and whatever is above the threshold.
        if self.calls.len() > 4 * self.top + 64 {
            self.prune();
        }
    }

    /// A call still in progress at the end, with its duration so far.
    pub fn add_in_flight(&mut self, tid: u32, inf: &Inflight, duration_ns: u64) {
        // The arguments are read from the saved registers when the call blocks; a call that is
        // still running on a CPU at the end has none recorded.
        let args = if inf.blocked != 0 { inf.args } else { [0; 6] };
        let (fd_desc, pidfd_pid) = if inf.blocked != 0 { resolve(inf.tgid, inf.nr, &args) } else { (None, None) };
        let call = SlowCall {
            kind: 0,
            tgid: inf.tgid,
            tid,
            nr: inf.nr,
            start_ns: inf.ts,
            duration_ns,
            ret: 0,
            // Stacks are recorded only for calls that blocked (older ones may be left over).
            user_stack_id: if inf.blocked != 0 { inf.user_stack_id } else { tracer_common::cpu::NO_STACK },
            kernel_stack_id: if inf.blocked != 0 { inf.kernel_stack_id } else { tracer_common::cpu::NO_STACK },
            args,
            leaf: inf.leaf,
            extra: inf.extra,
        };
        self.calls.push(Received { call, fd_desc, pidfd_pid, in_flight: true });
    }

    fn prune(&mut self) {
        self.calls.sort_by_key(|c| std::cmp::Reverse(c.call.duration_ns));
        let mut rank = 0;
        let (top, threshold) = (self.top, self.threshold_ns);
        self.calls.retain(|c| {
            let keep = rank < top || threshold.is_some_and(|t| c.call.duration_ns >= t);
            rank += 1;
            keep
        });
    }

    /// The kept calls, slowest first.
    pub fn into_calls(mut self) -> Vec<Received> {
        self.prune();
        self.calls
    }
}

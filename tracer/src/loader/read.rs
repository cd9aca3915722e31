//! Reading what the probes gathered: counters, the aggregation maps, the thread table, stacks,
//! and the task iterator's register dump.
use super::*;

/// One stats entry summed over CPUs.
fn sum_cpus<'a>(per_cpu: impl Iterator<Item = &'a SysStats>) -> SysStats {
    let mut sum =
        SysStats { count: 0, errors: 0, total_ns: 0, max_ns: 0, hist: [0; tracer_common::syscall::HIST_BUCKETS] };
    for v in per_cpu {
        sum.count += v.count;
        sum.errors += v.errors;
        sum.total_ns += v.total_ns;
        sum.max_ns = sum.max_ns.max(v.max_ns);
        for (a, b) in sum.hist.iter_mut().zip(v.hist.iter()) {
            *a += b;
        }
    }
    sum
}

impl Probes {
    /// Sum over CPUs of one counter.
    pub fn counter(&self, index: u32) -> u64 {
        let Ok(map) = self.map("COUNTERS") else { return 0 };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else { return 0 };
        arr.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    pub fn counters(&self) -> [u64; counters::COUNT as usize] {
        let mut out = [0; counters::COUNT as usize];
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.counter(i as u32);
        }
        out
    }

    pub fn cpu_counts(&self) -> Result<Vec<(CpuKey, u64)>> {
        batch::entries(self.map("CPU_COUNTS")?)
    }

    pub fn offcpu(&self) -> Result<Vec<(OffKey, OffVal)>> {
        batch::entries(self.map("OFFCPU")?)
    }

    pub fn wakeups(&self) -> Result<Vec<(WakeKey, OffVal)>> {
        batch::entries(self.map("WAKEUPS")?)
    }

    /// Per-(process, syscall) stats, summed over CPUs.
    pub fn syscall_stats(&self) -> Result<Vec<(SysKey, SysStats)>> {
        let mut out = self.read_syscall_stats(|_| true)?;
        let root: PerCpuArray<_, SysStats> = PerCpuArray::try_from(self.map("ROOT_STATS")?)?;
        for nr in 0..root.len() {
            let sum = sum_cpus(root.get(&nr, 0)?.iter());
            if sum.count > 0 {
                out.push((SysKey { tgid: self.root_tgid, nr }, sum));
            }
        }
        Ok(out)
    }

    /// Takes the stats of the processes `gone` says have exited out of the kernel map: a CLI
    /// that runs thousands of short children would otherwise fill it, and every later call
    /// would be lost.
    pub fn harvest_syscall_stats(&mut self, mut gone: impl FnMut(u32) -> bool) -> Result<Vec<(SysKey, SysStats)>> {
        let out = self.read_syscall_stats(|k| gone(k.tgid))?;
        let mut map: PerCpuHashMap<_, SysKey, SysStats> = PerCpuHashMap::try_from(self.map_mut("SYSCALL_STATS")?)?;
        for (k, _) in &out {
            let _ = map.remove(k);
        }
        Ok(out)
    }

    fn read_syscall_stats(&self, mut want: impl FnMut(&SysKey) -> bool) -> Result<Vec<(SysKey, SysStats)>> {
        let map: PerCpuHashMap<_, SysKey, SysStats> = PerCpuHashMap::try_from(self.map("SYSCALL_STATS")?)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let (k, per_cpu) = entry?;
            if !want(&k) {
                continue;
            }
            let sum = sum_cpus(per_cpu.iter());
            out.push((k, sum));
        }
        Ok(out)
    }

    /// The saved user registers of every tracked thread now, by tid (see rt_task_regs). Empty
    /// if the iterator cannot run (the walks from /proc then guess the first frame).
    pub fn task_regs(&mut self) -> std::collections::HashMap<u32, TaskRegs> {
        let mut read = || -> Result<std::collections::HashMap<u32, TaskRegs>> {
            use std::io::Read;
            let iter: &mut aya::programs::Iter = self.program_mut("rt_task_regs")?.try_into()?;
            let link = iter.attach()?;
            let mut file = iter.take_link(link)?.into_file()?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let size = std::mem::size_of::<TaskRegs>();
            Ok(bytes
                .chunks_exact(size)
                .map(|c| {
                    // SAFETY: the iterator writes whole TaskRegs records.
                    let r: TaskRegs = unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) };
                    (r.tid, r)
                })
                .collect())
        };
        read().unwrap_or_default()
    }

    /// Whether the syscall probes measure latency (not --no-syscalls).
    pub fn syscall_latency(&self) -> bool {
        self.syscalls
    }

    /// Syscalls in progress now, by thread.
    ///
    /// The arguments of a blocked call are read from /proc (the saved registers the kernel
    /// shows there); the probes do not copy them at every block.
    pub fn syscalls_in_flight(&self) -> Result<Vec<(u32, Inflight)>> {
        let mut out: Vec<(u32, Inflight)> =
            self.threads()?.into_iter().filter(|t| t.sys.active != 0).map(|t| (t.tid, t.sys)).collect();
        for (tid, inf) in out.iter_mut().filter(|(_, i)| i.blocked != 0) {
            let text = std::fs::read_to_string(format!("/proc/{}/task/{tid}/syscall", inf.tgid)).unwrap_or_default();
            match crate::collect::parse_syscall(&text) {
                Some((nr, args, _, _)) if nr == inf.nr as i64 => inf.args = args,
                // Returned meanwhile: whatever `args` holds belongs to an earlier call.
                _ => inf.args = [0; 6],
            }
        }
        Ok(out)
    }

    /// (tgid, tid) of threads blocked now whose stacks were deferred (see OffStart), sorted.
    pub fn deferred_in_flight(&self) -> Result<Vec<(u32, u32)>> {
        // One pass over the thread table (syscalls_in_flight would also read each blocked
        // call's arguments from /proc, which this does not need).
        let mut out: Vec<(u32, u32)> = self
            .threads()?
            .into_iter()
            .filter(|t| {
                let off = t.off.ts != 0 && t.off.user_stack_id == DEFERRED_STACK;
                let sys = t.sys.active != 0 && t.sys.blocked != 0 && t.sys.user_stack_id < 0;
                off || sys
            })
            .map(|t| (t.sys.tgid, t.tid))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Threads switched out and not yet back: still blocked.
    /// Per program with any, the runs the kernel skipped because a BPF program was already
    /// running on that CPU (bpf_prog_info.recursion_misses): each a lost event. Read before
    /// detach (the programs' fds go with it).
    pub fn recursion_misses(&self) -> std::collections::BTreeMap<String, u64> {
        use std::os::fd::{AsFd, AsRawFd};
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let fd = prog.fd().ok()?.as_fd().as_raw_fd();
                let misses = prog_info(fd)?.recursion_misses;
                (misses > 0).then(|| (name.to_owned(), misses))
            })
            .collect()
    }

    /// CLOCK_MONOTONIC minus the off-CPU clock (see tracer_common::sched::ClockSync).
    pub fn offcpu_clock_offset(&self) -> Result<i64> {
        let map: Array<_, ClockSync> = Array::try_from(self.map("CLOCK_SYNC")?)?;
        Ok(map.get(&0, 0)?.offset_ns as i64)
    }

    pub fn off_in_flight(&self) -> Result<Vec<(u32, OffStart)>> {
        Ok(self.threads()?.into_iter().filter(|t| t.off.ts != 0).map(|t| (t.tid, t.off)).collect())
    }

    /// All stacks of the named stack table (USER_STACKS / KERNEL_STACKS): id → frames, leaf first.
    pub fn stacks(&self, name: &str) -> Result<std::collections::HashMap<i32, crate::capture::Addrs>> {
        let mut out = std::collections::HashMap::new();
        batch::visit(self.map(name)?, |id: u32, rec: &StackRec| {
            out.insert(id as i32, frames_of(rec));
        })?;
        Ok(out)
    }

    /// Every stack of the named stack table, each deleted as it is read (batch::take): `f` gets
    /// id and frames. Returns how many were taken.
    pub fn take_stacks(&self, name: &str, mut f: impl FnMut(i32, crate::capture::Addrs)) -> Result<u64> {
        batch::take(self.map(name)?, |id: u32, rec: &StackRec| f(id as i32, frames_of(rec)))
    }
}

/// A stack record's frames, leaf first.
fn frames_of(rec: &StackRec) -> crate::capture::Addrs {
    rec.ips[..(rec.len as usize).min(rec.ips.len())].into()
}

/// BPF_OBJ_GET_INFO_BY_FD for a program (aya's ProgramInfo does not expose recursion_misses).
fn prog_info(fd: std::os::fd::RawFd) -> Option<aya_obj::generated::bpf_prog_info> {
    /// The `info` member of union bpf_attr.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: plain data; the kernel fills at most info_len bytes of it.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr =
        InfoAttr { bpf_fd: fd as u32, info_len: std::mem::size_of_val(&info) as u32, info: &raw mut info as u64 };
    // SAFETY: a valid attr for this command, pointing at a buffer of info_len bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    (r == 0).then_some(info)
}

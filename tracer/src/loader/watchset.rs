//! The kernel side of a watch set (collect/roots.rs): the map entries of forgotten or folded
//! processes removed, so that one probe set can follow a daemon's watched processes for as
//! long as it runs (roots are tracked with `track`, whose bit is set atomically: bits.rs).
use super::*;

impl Probes {
    /// Removes what the maps hold of `pids` (a forgotten root's processes, or folded ones, all
    /// gone): their sample counts, blocks, wakeups, syscall stats left and unwind modes, and the
    /// TRACKED entries the kernel never removed (a root that exited before it was tracked has
    /// no free to untrack it; its pid, reused, would be traced).
    /// Returns the stack-copy ids their blocks referenced (theirs alone: a copy is one block's).
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) -> Result<Vec<i32>> {
        let mut tracked: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACKED")?)?;
        let mut untracked = Vec::new();
        for &p in pids {
            // Removed here only if the kernel did not (it does at sched_process_free): then
            // its bit is cleared here too, never by the kernel.
            if tracked.remove(&p).is_ok() {
                untracked.push(p);
            }
        }
        for p in untracked {
            self.bits.clear(p);
        }
        fn purge<K: aya::Pod, V: aya::Pod>(m: &mut aya::maps::Map, gone: impl Fn(&K) -> bool) -> Result<Vec<K>> {
            let mut map: HashMap<_, K, V> = HashMap::try_from(m)?;
            let keys: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| gone(k)).collect();
            for k in &keys {
                let _ = map.remove(k);
            }
            Ok(keys)
        }
        let copy = |id: i32| id >= 0 && id & tracer_common::ustack::COPY_ID_BIT != 0;
        purge::<CpuKey, u64>(self.map_mut("CPU_COUNTS")?, |k| pids.contains(&k.tgid))?;
        let off = purge::<OffKey, OffVal>(self.map_mut("OFFCPU")?, |k| pids.contains(&k.tgid))?;
        let wakes = purge::<WakeKey, OffVal>(self.map_mut("WAKEUPS")?, |k| pids.contains(&k.tgid))?;
        let copies: Vec<i32> = off
            .iter()
            .map(|k| k.user_stack_id)
            .chain(wakes.iter().map(|k| k.user_stack_id))
            .filter(|&id| copy(id))
            .collect();
        purge::<u32, u8>(self.map_mut("UNWIND_MODE")?, |k| pids.contains(k))?;
        purge::<u32, u64>(self.map_mut("USTACK_DROPS")?, |k| pids.contains(k))?;
        if pids.contains(&self.root_tgid) {
            // The session's first root had the per-CPU array of its own (syscalls.rs): zeroed,
            // for whichever process gets its pid next (a new root would inherit its counts).
            let mut root: PerCpuArray<_, SysStats> = PerCpuArray::try_from(self.map_mut("ROOT_STATS")?)?;
            let zero = SysStats {
                count: 0,
                errors: 0,
                total_ns: 0,
                max_ns: 0,
                hist: [0; tracer_common::syscall::HIST_BUCKETS],
            };
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
            for nr in 0..root.len() {
                root.set(nr, aya::maps::PerCpuValues::try_from(vec![zero; cpus])?, 0)?;
            }
        }
        self.harvest_syscall_stats(|t| pids.contains(&t))?;
        Ok(copies)
    }
}

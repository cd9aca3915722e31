//! The kernel side of a watch set (collect/roots.rs): roots tracked while the programs run,
//! and the map entries of a forgotten root's processes removed, so that one probe set can
//! follow a daemon's watched processes for as long as it runs.
use super::*;

impl Probes {
    /// `track` for a session already attached. The programs change TRACKED_BITS meanwhile
    /// (atomic adds at fork and exit) and `track`'s read-modify-write of a word can overwrite
    /// one of them in the few µs between its read and its write: every pid of that word that
    /// TRACKED holds gets its bit back (a lost bit would hide that process's calls, and its
    /// removal at exit would then borrow from the neighbouring bits).
    pub fn track_live(&mut self, tgid: u32, kind: u32) -> Result<()> {
        self.track(tgid, kind)?;
        let word = tgid / 64;
        let tracked: HashMap<_, u32, u32> = HashMap::try_from(self.map("TRACKED")?)?;
        let want = (0..64u32).filter(|i| tracked.get(&(word * 64 + i), 0).is_ok()).fold(0u64, |w, i| w | 1 << i);
        let mut bits: Array<_, u64> = Array::try_from(self.map_mut("TRACKED_BITS")?)?;
        if word < bits.len() {
            let w = bits.get(&word, 0)?;
            if w | want != w {
                bits.set(word, w | want, 0)?;
            }
        }
        Ok(())
    }

    /// Removes what the maps hold of `pids` (a forgotten root's processes, all gone): their
    /// sample counts, blocks, wakeups, syscall stats left and unwind modes.
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) -> Result<()> {
        fn purge<K: aya::Pod, V: aya::Pod>(m: &mut aya::maps::Map, gone: impl Fn(&K) -> bool) -> Result<()> {
            let mut map: HashMap<_, K, V> = HashMap::try_from(m)?;
            let keys: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| gone(k)).collect();
            for k in keys {
                let _ = map.remove(&k);
            }
            Ok(())
        }
        purge::<CpuKey, u64>(self.map_mut("CPU_COUNTS")?, |k| pids.contains(&k.tgid))?;
        purge::<OffKey, OffVal>(self.map_mut("OFFCPU")?, |k| pids.contains(&k.tgid))?;
        purge::<WakeKey, OffVal>(self.map_mut("WAKEUPS")?, |k| pids.contains(&k.tgid))?;
        purge::<u32, u8>(self.map_mut("UNWIND_MODE")?, |k| pids.contains(k))?;
        purge::<u32, u64>(self.map_mut("USTACK_DROPS")?, |k| pids.contains(k))?;
        let mut stats: PerCpuHashMap<_, SysKey, SysStats> = PerCpuHashMap::try_from(self.map_mut("SYSCALL_STATS")?)?;
        let keys: Vec<SysKey> = stats.keys().filter_map(Result::ok).filter(|k| pids.contains(&k.tgid)).collect();
        for k in keys {
            let _ = stats.remove(&k);
        }
        Ok(())
    }
}

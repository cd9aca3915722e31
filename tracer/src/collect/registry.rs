//! What we know about every tracked process, captured while it is alive: name, command line
//! and executable mappings (re-read after exec and periodically, since the dynamic loader maps
//! libraries after exec). This is what lets a child that exits mid-session still symbolize.
use std::collections::{BTreeMap, HashMap};

use crate::{
    capture::{Mapping, ProcessInfo},
    procfs,
};

#[derive(Default)]
pub struct Registry {
    procs: BTreeMap<u32, Entry>,
    build_ids: HashMap<String, Option<String>>,
}

struct Entry {
    info: ProcessInfo,
    alive: bool,
    /// Re-read the mappings at these instants: the dynamic loader maps libraries in the first
    /// milliseconds after exec, and a short-lived process may be gone by the periodic refresh.
    pending: Vec<std::time::Instant>,
}

/// Delays after exec (or first sight) at which mappings are re-read.
const EARLY_REREADS_MS: [u64; 5] = [2, 10, 40, 120, 300];

impl Registry {
    /// Records a process we have just learned about (or re-reads it after exec).
    pub fn snapshot(&mut self, pid: u32, exec: bool) {
        let maps = procfs::maps(pid);
        let comm = procfs::comm(pid);
        let cmdline = procfs::cmdline(pid);
        let new = !self.procs.contains_key(&pid);
        let entry = self.procs.entry(pid).or_insert_with(|| Entry {
            info: ProcessInfo { pid, ..Default::default() },
            alive: true,
            pending: Vec::new(),
        });
        if exec || new {
            let now = std::time::Instant::now();
            entry.pending = EARLY_REREADS_MS.iter().map(|&ms| now + std::time::Duration::from_millis(ms)).collect();
        }
        if let Some(c) = comm {
            entry.info.comm = c;
        }
        if !cmdline.is_empty() {
            entry.info.cmdline = cmdline;
        }
        let Some(maps) = maps else { return };
        if exec {
            // A new program image: the old mappings no longer describe this pid.
            entry.info.maps.clear();
        }
        for mut m in maps {
            if !entry.info.maps.iter().any(|o| o.start == m.start && o.end == m.end && o.path == m.path) {
                m.build_id = build_id(&mut self.build_ids, &m);
                entry.info.maps.push(m);
            }
        }
        entry.info.maps.sort();
    }

    pub fn maps(&self, pid: u32) -> Vec<Mapping> {
        self.procs.get(&pid).map(|e| e.info.maps.clone()).unwrap_or_default()
    }

    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Processes known to have exited.
    pub fn exited(&self) -> std::collections::BTreeSet<u32> {
        self.procs.iter().filter(|(_, e)| !e.alive).map(|(&p, _)| p).collect()
    }

    pub fn mark_exited(&mut self, pid: u32) {
        if let Some(e) = self.procs.get_mut(&pid) {
            e.alive = false;
        }
    }

    /// Re-reads the processes whose early re-read time has come.
    pub fn early_rereads(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<u32> = self
            .procs
            .iter_mut()
            .filter(|(_, e)| e.alive && e.pending.first().is_some_and(|&t| t <= now))
            .map(|(&p, e)| {
                e.pending.retain(|&t| t > now);
                p
            })
            .collect();
        for pid in due {
            self.snapshot(pid, false);
        }
    }

    /// The next early re-read instant, if any.
    pub fn next_reread(&self) -> Option<std::time::Instant> {
        self.procs.values().filter(|e| e.alive).filter_map(|e| e.pending.first().copied()).min()
    }

    /// Re-reads live processes; marks the ones that have gone.
    pub fn refresh(&mut self) {
        let live: Vec<u32> = self.procs.iter().filter(|(_, e)| e.alive).map(|(&p, _)| p).collect();
        for pid in live {
            if procfs::is_alive(pid) {
                self.snapshot(pid, false);
            } else {
                self.mark_exited(pid);
            }
        }
    }

    /// Whether any known process is still alive (checks /proc for those not known dead).
    pub fn any_alive(&mut self) -> bool {
        let mut any = false;
        for (&pid, e) in self.procs.iter_mut() {
            if e.alive {
                e.alive = procfs::is_alive(pid);
                any |= e.alive;
            }
        }
        any
    }

    pub fn into_processes(self) -> BTreeMap<u32, ProcessInfo> {
        self.procs.into_iter().map(|(p, e)| (p, e.info)).collect()
    }
}

fn build_id(cache: &mut HashMap<String, Option<String>>, m: &Mapping) -> Option<String> {
    if !m.path.starts_with('/') {
        return None;
    }
    cache
        .entry(m.path.clone())
        .or_insert_with(|| {
            let id = blazesym::helper::read_elf_build_id(&m.path).ok().flatten()?;
            Some(id.iter().map(|b| format!("{b:02x}")).collect())
        })
        .clone()
}

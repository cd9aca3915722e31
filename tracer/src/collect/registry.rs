//! What we know about every tracked process, captured while it is alive: name, command line
//! and executable mappings (re-read after exec and periodically, since the dynamic loader maps
//! libraries after exec). This is what lets a child that exits mid-session still symbolize.
//! Two things have no file to read at the end, so they are taken here too: mapped files that
//! were deleted (held open through /proc/PID/map_files) and the vDSO (read from the process).
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::{FileExt, MetadataExt},
    sync::Arc,
};

use crate::{
    capture::{Capture, HeldFiles, Mapping, ProcessInfo, VdsoSymbol},
    procfs,
};

#[derive(Default)]
pub struct Registry {
    procs: BTreeMap<u32, Entry>,
    build_ids: HashMap<String, Option<String>>,
    held: HeldFiles,
    /// Deleted files already held, by (device, inode): one open file per inode, however many
    /// processes map it.
    held_inodes: HashMap<(u64, u64), (Arc<std::fs::File>, String)>,
    vdso: Vec<VdsoSymbol>,
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
        let mut fresh = Vec::new();
        for m in maps {
            if !entry.info.maps.iter().any(|o| o.start == m.start && o.end == m.end && o.path == m.path) {
                fresh.push(m);
            }
        }
        for mut m in fresh {
            let read_path = if m.path.ends_with(" (deleted)") { self.hold_deleted(pid, &m) } else { None };
            m.build_id = build_id(&mut self.build_ids, read_path.as_deref().unwrap_or(&m.path));
            if m.path == "[vdso]" && self.vdso.is_empty() {
                self.vdso = read_vdso(pid, &m);
            }
            if let Some(e) = self.procs.get_mut(&pid) {
                // The file was deleted since the last reading: its path no longer reads it (or
                // reads a newer build), so the entry under the old name goes.
                if let Some(stem) = m.path.strip_suffix(" (deleted)") {
                    e.info.maps.retain(|o| !(o.start == m.start && o.end == m.end && o.path == stem));
                }
                e.info.maps.push(m);
            }
        }
        if let Some(e) = self.procs.get_mut(&pid) {
            e.info.maps.sort();
        }
    }

    /// Opens a deleted file through /proc/PID/map_files (the mapping keeps its inode alive
    /// only as long as the process lives), once per inode; returns a path that reads it.
    fn hold_deleted(&mut self, pid: u32, m: &Mapping) -> Option<String> {
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        let file = std::fs::File::open(link).ok()?;
        let meta = file.metadata().ok()?;
        let (file, path) = self
            .held_inodes
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| {
                use std::os::fd::AsRawFd;
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                (Arc::new(file), path)
            })
            .clone();
        self.held.by_mapping.insert((pid, m.path.clone()), (file, path.clone()));
        Some(path)
    }

    pub fn maps(&self, pid: u32) -> Vec<Mapping> {
        self.procs.get(&pid).map(|e| e.info.maps.clone()).unwrap_or_default()
    }

    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Known and not known to have exited.
    pub fn alive(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|e| e.alive)
    }

    /// Processes known to have exited.
    pub fn exited(&self) -> std::collections::BTreeSet<u32> {
        self.procs.iter().filter(|(_, e)| !e.alive).map(|(&p, _)| p).collect()
    }

    /// A new process has `pid` (a fork event): alive again if an earlier one with that pid
    /// exited during the session, so that its stats are not taken while it runs.
    pub fn forked(&mut self, pid: u32) {
        if let Some(e) = self.procs.get_mut(&pid) {
            e.alive = true;
        }
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

    /// Forgets processes of a watch set's root that is gone (collect/roots.rs), and the
    /// deleted files only they held open.
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) {
        self.procs.retain(|p, _| !pids.contains(p));
        self.held.by_mapping.retain(|(p, _), _| !pids.contains(p));
        // Held once here and once per mapping that reads it: only here now, not needed.
        self.held_inodes.retain(|_, (f, _)| Arc::strong_count(f) > 1);
    }

    /// What `fill` gives, copied, for a session that goes on (watch mode's periodic profiles).
    pub fn peek(&self, capture: &mut Capture) {
        capture.processes = self.procs.iter().map(|(p, e)| (*p, e.info.clone())).collect();
        capture.held_files = self.held.clone();
        capture.vdso_symbols = self.vdso.clone();
    }

    /// Moves what was learned into the capture: processes, held files, vDSO functions.
    pub fn fill(self, capture: &mut Capture) {
        capture.processes = self.procs.into_iter().map(|(p, e)| (p, e.info)).collect();
        capture.held_files = self.held;
        capture.vdso_symbols = self.vdso;
    }
}

fn build_id(cache: &mut HashMap<String, Option<String>>, path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    cache
        .entry(path.to_owned())
        .or_insert_with(|| {
            let id = blazesym::helper::read_elf_build_id(path).ok().flatten()?;
            Some(id.iter().map(|b| format!("{b:02x}")).collect())
        })
        .clone()
}

/// The vDSO's functions, from the image the kernel mapped into `pid` (a read of its memory,
/// as /proc/PID/mem allows root; nothing is written).
fn read_vdso(pid: u32, m: &Mapping) -> Vec<VdsoSymbol> {
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else { return Vec::new() };
    // The image is a few pages; more than 1 MiB would not be a vDSO.
    let len = (m.end - m.start).min(1 << 20) as usize;
    let mut image = vec![0u8; len];
    if mem.read_exact_at(&mut image, m.start).is_err() {
        return Vec::new();
    }
    crate::symbolize::vdso::symbols(&image)
}

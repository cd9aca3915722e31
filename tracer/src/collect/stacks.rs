//! The kernel's stack tables over a session. USER_STACKS and KERNEL_STACKS are fixed-size hash
//! maps keyed by a hash of the frames, preallocated because perf-event programs run in NMI
//! context (tracer-ebpf cpu.rs). A `go build -a` of a small module (~370 processes) needs
//! ~22,000 distinct user stacks against the table's 16,384: a third of its CPU samples and
//! ~6,000 off-CPU blocks lost their user stack. So when a table is half full, its entries move
//! here, read and deleted by one batch call (loader/batch.rs `take`), and the probes store the
//! stacks they see again anew; the drain reads what is left on top (`finish`). The kernel
//! memory stays 16 MiB, and a session keeps every distinct stack it saw.
//!
//! Not in watch mode: a daemon's copy would grow without bound (its tables fill as before,
//! every loss counted).
use std::collections::HashMap;

use anyhow::Result;
use tracer_common::{
    counters,
    limits::{KERNEL_STACK_ENTRIES, USER_STACK_ENTRIES},
};

use crate::{capture::Addrs, loader::Probes};

/// One stack table: what moved out of it so far.
struct Table {
    name: &'static str,
    /// The counter of entries the probes stored (new ones only).
    stored: u32,
    capacity: u32,
    /// Entries deleted from the kernel map by the moves so far.
    taken: u64,
    stacks: HashMap<i32, Addrs>,
    /// Ids that came back standing for other frames (two stacks with one hash).
    conflicts: u64,
}

impl Table {
    fn new(name: &'static str, stored: u32, capacity: u32) -> Self {
        Table { name, stored, capacity, taken: 0, stacks: HashMap::new(), conflicts: 0 }
    }

    /// Moves the table's entries here when it is at least half full (the probes' count of
    /// stores, less the entries taken: a rare store whose count an NMI lost only delays it).
    fn tick(&mut self, probes: &Probes) -> Result<()> {
        let in_kernel = probes.counter(self.stored).saturating_sub(self.taken);
        if in_kernel < u64::from(self.capacity / 2) {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let n = probes.take_stacks(self.name, |id, frames| self.keep(id, frames))?;
        self.taken += n;
        log::debug!("{}: moved {n} stacks in {:?} ({} kept)", self.name, t.elapsed(), self.stacks.len());
        Ok(())
    }

    fn keep(&mut self, id: i32, frames: Addrs) {
        match self.stacks.get(&id) {
            // Stored again after a move: the same frames, already kept.
            Some(had) if *had == frames => {}
            // The first one stays: the references taken before this move were to it.
            Some(_) => self.conflicts += 1,
            None => {
                self.stacks.insert(id, frames);
            }
        }
    }

    /// Everything kept, with what the kernel map holds now.
    fn finish(mut self, probes: &Probes) -> Result<(HashMap<i32, Addrs>, u64, u64)> {
        if self.taken == 0 {
            return Ok((probes.stacks(self.name)?, 0, 0));
        }
        for (id, frames) in probes.stacks(self.name)? {
            self.keep(id, frames);
        }
        Ok((self.stacks, self.taken, self.conflicts))
    }
}

/// The user and kernel stack tables of a session.
pub struct StackTables {
    user: Table,
    kernel: Table,
    /// Whether entries move during the session (not in watch mode).
    moves: bool,
}

/// What `StackTables::finish` gives the drain.
pub struct Stacks {
    pub user: HashMap<i32, Addrs>,
    pub kernel: HashMap<i32, Addrs>,
    /// Entries moved during the session, and ids that came back with other frames.
    pub harvested: u64,
    pub conflicts: u64,
}

impl StackTables {
    /// `moves`: whether entries move out during the session (a report's session: yes; a watch
    /// set's: no, see above).
    pub fn new(moves: bool) -> Self {
        StackTables {
            user: Table::new("USER_STACKS", counters::USER_STACKS_STORED, USER_STACK_ENTRIES),
            kernel: Table::new("KERNEL_STACKS", counters::KERNEL_STACKS_STORED, KERNEL_STACK_ENTRIES),
            moves,
        }
    }

    /// At every tick of the session loop (100 ms: a table fills in seconds, not in a tick). A
    /// failed move leaves the table as it was (its stacks are read at the end).
    pub fn tick(&mut self, probes: &Probes) {
        if !self.moves {
            return;
        }
        for t in [&mut self.user, &mut self.kernel] {
            if let Err(e) = t.tick(probes) {
                log::warn!("reading the stack table {}: {e:#}", t.name);
            }
        }
    }

    /// After the programs are detached: every stack the session stored.
    pub fn finish(self, probes: &Probes) -> Result<Stacks> {
        let (user, taken_user, conflicts_user) = self.user.finish(probes)?;
        let (kernel, taken_kernel, conflicts_kernel) = self.kernel.finish(probes)?;
        Ok(Stacks { user, kernel, harvested: taken_user + taken_kernel, conflicts: conflicts_user + conflicts_kernel })
    }
}

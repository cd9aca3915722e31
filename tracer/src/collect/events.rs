//! The EVENTS ring while the session runs: lifecycle records (fork, exec, exit, a process
//! skipped at exec), slow calls and exec argv, each handed to the stage that keeps it (the
//! registry's maps, the ledger, the slow-call store, the Go view, the stack-copy reader).
use tracer_common::{
    process::{
        ExecArgs, ExecFailed, LifeEvent, EVENT_EXEC, EVENT_EXEC_ARGS, EVENT_EXEC_FAILED, EVENT_EXIT, EVENT_FORK,
        EVENT_SKIPPED, EVENT_SLOW_CALL,
    },
    syscall::SlowCall,
};

use super::{go, life, slow, ustacks, Registry};

/// Every record in the ring now.
pub(super) fn handle_events(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    registry: &mut Registry,
    slow: &mut slow::SlowStore,
    life: &mut life::LifeCollector,
    mut go: Option<&mut go::GoSession>,
    ustacks: &mut ustacks::Ustacks,
) {
    while let Some(item) = ring.next() {
        // Every record starts with its kind, which says which struct it is.
        let Some(kind) = item.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])) else { continue };
        match kind {
            EVENT_SLOW_CALL => {
                let Some(call) = record::<SlowCall>(&item) else { continue };
                // Alive now: make sure its mappings are known for the call's stack.
                registry.snapshot(call.tgid, false);
                slow.add(call);
            }
            EVENT_EXEC_ARGS => {
                if let Some(args) = record::<ExecArgs>(&item) {
                    life.on_exec_args(&args);
                }
            }
            EVENT_EXEC_FAILED => {
                if let Some(f) = record::<ExecFailed>(&item) {
                    life.on_exec_failed(&f);
                }
            }
            _ => {
                let Some(ev) = record::<LifeEvent>(&item) else { continue };
                match ev.kind {
                    EVENT_FORK => {
                        // A pid seen exit earlier in the session may be a new process's now.
                        registry.forked(ev.tgid);
                        registry.snapshot(ev.tgid, false);
                        ustacks.on_fork(ev.tgid, ev.other);
                    }
                    EVENT_EXEC => {
                        registry.snapshot(ev.tgid, true);
                        ustacks.on_exec(ev.tgid, ev.ts_ns);
                        if let Some(g) = go.as_deref_mut() {
                            g.seen(ev.tgid);
                        }
                    }
                    EVENT_SKIPPED => {
                        // No longer followed: as good as gone for the session (its maps are
                        // not read again).
                        registry.mark_exited(ev.tgid);
                        ustacks.on_exit(ev.tgid);
                        if let Some(g) = go.as_deref_mut() {
                            g.exited(ev.tgid);
                        }
                        life.on_skipped(&ev);
                        continue;
                    }
                    EVENT_EXIT => {
                        registry.mark_exited(ev.tgid);
                        ustacks.on_exit(ev.tgid);
                        if let Some(g) = go.as_deref_mut() {
                            g.exited(ev.tgid);
                        }
                    }
                    _ => {}
                }
                life.on_event(&ev);
            }
        }
    }
}

/// The record in a ring-buffer item, if it is long enough for a `T`: the kernel side writes
/// a whole `T` (plain data) for the kind the item starts with. read_unaligned copes with any
/// alignment of the ring buffer slot.
pub(super) fn record<T: aya::Pod>(item: &[u8]) -> Option<T> {
    // SAFETY: the length is checked and T is plain data (any bytes are a valid T).
    (item.len() >= std::mem::size_of::<T>()).then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
}

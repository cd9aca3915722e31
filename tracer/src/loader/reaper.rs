//! Links and probe sets dropped off the session's thread. Detaching a uprobe or a
//! perf-attached tracepoint waits in the kernel for RCU grace periods: 50-80 ms per link on
//! this VM, so the four Go uprobes of a process that exited held the session loop 0.2 s (once
//! per Go process of a go build, and again for the target at the end), and the lifecycle
//! tracepoints and the probe set's maps 0.4-0.8 s between a build's end and its report. Each
//! batch is dropped on a thread of its own (waits that run at once share grace periods);
//! `join_all` waits for them all, and rtrace calls it before it exits, so every link is
//! detached by then (the kernel would close them at exit anyway).
use std::{
    sync::{Mutex, PoisonError},
    thread::JoinHandle,
};

static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Drops `x` on a new thread (here, when no thread can be started).
pub fn later<T: Send + 'static>(x: T) {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    pending.retain(|h| !h.is_finished());
    // A failed spawn drops the closure, and `x` with it, here.
    if let Ok(h) = std::thread::Builder::new().name("rtrace-detach".into()).spawn(move || drop(x)) {
        pending.push(h);
    }
}

/// Waits until everything handed over so far is dropped.
pub fn join_all() {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    for h in pending {
        let _ = h.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    struct Slow(Arc<AtomicU32>);

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Batches are dropped at once, not one after another, and all of them by `join_all`.
    #[test]
    fn drops_in_parallel_and_joins() {
        let done = Arc::new(AtomicU32::new(0));
        let started = std::time::Instant::now();
        for _ in 0..8 {
            later(Slow(done.clone()));
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(50), "handed over without waiting");
        join_all();
        assert_eq!(done.load(Ordering::SeqCst), 8);
        assert!(started.elapsed() < std::time::Duration::from_millis(400), "{:?}", started.elapsed());
    }
}

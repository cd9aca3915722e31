//! Kernel names on a thread of their own. Reading and indexing kallsyms takes ~60 ms of a
//! build's report; the thread starts (`prewarm`) when the session's loop ends, so the table is
//! ready by the time the drain and the capture are done. blazesym's symbolizer cannot move
//! between threads, so the thread keeps it and answers lookups over a channel.
use std::sync::{
    mpsc::{channel, Receiver, Sender},
    Mutex, PoisonError,
};

use blazesym::{
    symbolize::{
        source::{Kernel, Source},
        Input, Symbolized, Symbolizer,
    },
    MaybeDefault,
};

type Request = (Vec<u64>, Sender<Vec<Option<String>>>);

/// A handle on a kernel-name thread; dropping it ends the thread and waits for it, so no
/// kallsyms read outlives its user (an idle `rtrace serve` after a request whose analysis
/// asked no kernel name spent the rest of the read, ~50 ms of CPU, after answering).
pub struct KernelNames {
    requests: Option<Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KernelNames {
    fn drop(&mut self) {
        // The channel closed first: the thread ends once its read is done.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The one `prewarm` started, until a resolver takes it.
static WARM: Mutex<Option<KernelNames>> = Mutex::new(None);

/// Starts a kernel-name thread now, loading kallsyms at once, for the next resolver to take.
pub fn prewarm() {
    let names = KernelNames::spawn();
    *WARM.lock().unwrap_or_else(PoisonError::into_inner) = Some(names);
}

impl KernelNames {
    /// The prewarmed thread if there is one, else a new one.
    pub fn take() -> Self {
        WARM.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_else(Self::spawn)
    }

    fn spawn() -> Self {
        let (requests, rx) = channel::<Request>();
        // The spawner's priority (threads start without it: SCHED_RESET_ON_FORK, see
        // priority.rs): against a thousand busy threads of the target, a thread without it
        // waited 23 s to read kallsyms.
        let priority = crate::priority::current();
        let spawned = std::thread::Builder::new().name("rtrace-kallsyms".into()).spawn(move || {
            crate::priority::raise_thread(priority);
            serve(rx)
        });
        if spawned.is_err() {
            log::debug!("no thread for kernel names: kernel frames stay unnamed");
        }
        KernelNames { requests: Some(requests), thread: spawned.ok() }
    }

    /// The names of kernel addresses (None: no symbol, or the thread is gone).
    pub fn names(&self, addrs: &[u64]) -> Vec<Option<String>> {
        let (tx, rx) = channel();
        let Some(requests) = &self.requests else { return vec![None; addrs.len()] };
        if requests.send((addrs.to_vec(), tx)).is_err() {
            return vec![None; addrs.len()];
        }
        rx.recv().unwrap_or_else(|_| vec![None; addrs.len()])
    }
}

fn serve(rx: Receiver<Request>) {
    let symbolizer = Symbolizer::builder().enable_demangling(true).build();
    // kallsyms holds the live addresses already; vmlinux discovery is slow and rarely there.
    let source = || Source::Kernel(Kernel { vmlinux: MaybeDefault::None, debug_syms: false, ..Kernel::default() });
    // The first lookup reads kallsyms: now, before anyone asks.
    let _ = symbolizer.symbolize(&source(), Input::AbsAddr(&[0]));
    for (addrs, reply) in rx {
        let names = match symbolizer.symbolize(&source(), Input::AbsAddr(&addrs)) {
            Ok(syms) => syms
                .into_iter()
                .map(|s| match s {
                    Symbolized::Sym(sym) => Some(sym.name.into_owned()),
                    Symbolized::Unknown(_) => None,
                })
                .collect(),
            Err(_) => vec![None; addrs.len()],
        };
        let _ = reply.send(names);
    }
}

//! Go's M:N scheduling seen from a thread: which goroutine parked, and where its thread waits.
//!
//! When a goroutine blocks (a channel receive, time.Sleep, a mutex), the runtime switches to
//! the thread's scheduler stack (`runtime.mcall` → `park_m` → `schedule`), and if nothing else
//! can run, the thread itself sleeps: in `runtime.stopm` (an idle M, on a futex) or in
//! `runtime.netpoll` (the M that waits for timers and I/O, in epoll_wait). Go links the
//! scheduler's frames to the goroutine's (frame pointers through mcall), so the walked stack
//! holds both: `main.main → chanrecv1 → mcall → park_m → schedule → findRunnable → stopm →
//! … futex`. The thread's off-CPU time is then the time it had nothing to run after that
//! goroutine parked — what a Go user reads as "my program waits on this channel" when that
//! goroutine is the one holding everything up, and a thread idling in the runtime otherwise.
//! This module names both halves, so the report does not present an idle runtime thread as
//! if `runtime.futex` were the program's own wait.
use serde::{Deserialize, Serialize};

use crate::symbolize::{is_plumbing, Frame, FrameKind};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoPark {
    /// The goroutine's innermost own function (its entry function when it runs only runtime
    /// code, e.g. the GC's background workers).
    pub goroutine: String,
    /// Where it entered the runtime to park (runtime.chanrecv1, time.Sleep, sync.(*Mutex).Lock…),
    /// when that is a different function.
    pub parked_in: Option<String>,
    /// Where the thread then waited: runtime.stopm (idle M), runtime.netpoll (timers and I/O),
    /// runtime.stoplockedm, or runtime.schedule.
    pub thread_waits_in: String,
}

/// The scheduler functions a parked thread can wait in, innermost first.
const WAIT_POINTS: [&str; 4] = ["runtime.netpoll", "runtime.stopm", "runtime.stoplockedm", "runtime.startlockedm"];

/// `frames` root first. None unless the stack crosses runtime.mcall into runtime.park_m.
pub fn go_park(frames: &[Frame]) -> Option<GoPark> {
    let user: Vec<&Frame> = frames.iter().filter(|f| f.kind == FrameKind::User).collect();
    let mcall = user.iter().position(|f| &*f.function == "runtime.mcall")?;
    if user.get(mcall + 1).is_none_or(|f| &*f.function != "runtime.park_m") {
        return None;
    }
    let (goroutine_part, sched_part) = (&user[..mcall], &user[mcall + 1..]);
    // The goroutine's frames start after runtime.goexit (its return address on every
    // goroutine stack); a frame of its own code, else its entry function.
    let start = goroutine_part.iter().position(|f| &*f.function == "runtime.goexit").map_or(0, |i| i + 1);
    let goroutine_part = &goroutine_part[start..];
    // The program's own code first (main.main, not time.Sleep), then any non-runtime frame.
    let own = goroutine_part
        .iter()
        .rposition(|f| is_program_code(&f.function))
        .or_else(|| goroutine_part.iter().rposition(|f| !is_plumbing(f)));
    let (goroutine, next) = match own {
        Some(i) => (goroutine_part[i].function.clone(), goroutine_part.get(i + 1)),
        None => (goroutine_part.first()?.function.clone(), None),
    };
    // runtime.epollwait is called by runtime.netpoll alone, whose frame a frame-pointer walk
    // loses when the thread is caught in the assembly stub (preempted at its syscall).
    fn named(f: &Frame) -> &str {
        if &*f.function == "runtime.epollwait" {
            "runtime.netpoll"
        } else {
            &f.function
        }
    }
    let thread_waits_in = WAIT_POINTS
        .iter()
        .find(|w| sched_part.iter().any(|f| named(f) == **w))
        .map_or("runtime.schedule", |w| w)
        .to_owned();
    Some(GoPark { goroutine: goroutine.to_string(), parked_in: next.map(|f| f.function.to_string()), thread_waits_in })
}

/// Whether a Go function belongs to the program rather than the standard library: package
/// main, or an import path whose first element has a dot (github.com/…); the standard
/// library's never does (time, os/exec, net/http).
fn is_program_code(function: &str) -> bool {
    match function.split_once('/') {
        Some((first, _)) => first.contains('.'),
        None => function.starts_with("main."),
    }
}

impl GoPark {
    /// "main.main → runtime.chanrecv1 (goroutine parked; its thread idle in runtime.stopm)".
    pub fn label(&self) -> String {
        let what = match &self.parked_in {
            Some(p) => format!("{} → {p}", self.goroutine),
            None => self.goroutine.clone(),
        };
        let thread = match self.thread_waits_in.as_str() {
            "runtime.netpoll" => "its thread waits for timers and I/O in runtime.netpoll".to_owned(),
            "runtime.stopm" => "its thread idle in runtime.stopm".to_owned(),
            other => format!("its thread waits in {other}"),
        };
        format!("{what} (goroutine parked; {thread})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        let mut v = vec![Frame::process("go_block")];
        for n in names {
            let kind = if n.ends_with("_[k]") { FrameKind::Kernel } else { FrameKind::User };
            v.push(Frame { kind, function: n.trim_end_matches("_[k]").into(), module: "go_block".into(), offset: 0 });
        }
        v
    }

    #[test]
    fn channel_receive_on_an_idle_thread() {
        let f = frames(&[
            "runtime.main",
            "main.main",
            "runtime.chanrecv1",
            "runtime.chanrecv",
            "runtime.gopark",
            "runtime.mcall",
            "runtime.park_m",
            "runtime.schedule",
            "runtime.findRunnable",
            "runtime.stopm",
            "runtime.mPark",
            "runtime.notesleep",
            "runtime.futexsleep",
            "runtime.futex",
            "do_syscall_64_[k]",
        ]);
        let p = go_park(&f).unwrap();
        assert_eq!(
            p,
            GoPark {
                goroutine: "main.main".into(),
                parked_in: Some("runtime.chanrecv1".into()),
                thread_waits_in: "runtime.stopm".into()
            }
        );
        assert_eq!(p.label(), "main.main → runtime.chanrecv1 (goroutine parked; its thread idle in runtime.stopm)");
    }

    #[test]
    fn sleep_waits_in_netpoll_and_runtime_goroutines_name_their_entry() {
        let f = frames(&[
            "runtime.goexit",
            "main.main.func1",
            "time.Sleep",
            "runtime.mcall",
            "runtime.park_m",
            "runtime.schedule",
            "runtime.findRunnable",
            "runtime.netpoll",
            "runtime.epollwait",
        ]);
        let p = go_park(&f).unwrap();
        assert_eq!((p.goroutine.as_str(), p.parked_in.as_deref()), ("main.main.func1", Some("time.Sleep")));
        assert_eq!(p.thread_waits_in, "runtime.netpoll");
        // Caught in epollwait's stub (a preemption at its syscall), netpoll's frame is lost.
        let f = frames(&[
            "runtime.main",
            "main.main",
            "runtime.chanrecv1",
            "runtime.chanrecv",
            "runtime.mcall",
            "runtime.park_m",
            "runtime.schedule",
            "runtime.findRunnable",
            "runtime.epollwait",
        ]);
        assert_eq!(go_park(&f).unwrap().thread_waits_in, "runtime.netpoll");
        let f = frames(&[
            "runtime.goexit",
            "runtime.gcenable.func2",
            "runtime.bgscavenge",
            "runtime.goparkunlock",
            "runtime.mcall",
            "runtime.park_m",
            "runtime.schedule",
            "runtime.startlockedm",
            "runtime.stopm",
            "runtime.futex",
        ]);
        let p = go_park(&f).unwrap();
        assert_eq!((p.goroutine.as_str(), p.parked_in), ("runtime.gcenable.func2", None));
        assert_eq!(p.thread_waits_in, "runtime.stopm");
    }

    #[test]
    fn standard_library_goroutine() {
        let f = frames(&[
            "runtime.goexit",
            "os/exec.(*Cmd).watchCtx.func1",
            "runtime.chansend1",
            "runtime.chansend",
            "runtime.mcall",
            "runtime.park_m",
            "runtime.schedule",
            "runtime.findRunnable",
            "runtime.stopm",
            "runtime.futex",
        ]);
        let p = go_park(&f).unwrap();
        assert_eq!(
            (p.goroutine.as_str(), p.parked_in.as_deref()),
            ("os/exec.(*Cmd).watchCtx.func1", Some("runtime.chansend1"))
        );
        assert!(is_program_code("github.com/spf13/cobra.(*Command).Execute"));
        assert!(!is_program_code("net/http.(*Client).Do"));
    }

    #[test]
    fn not_a_park() {
        assert_eq!(go_park(&frames(&["main", "blocking_read", "read", "ksys_read_[k]"])), None);
        // mcall without park_m (another mcall user): not a park.
        assert_eq!(go_park(&frames(&["main.main", "runtime.mcall", "runtime.goexit0"])), None);
    }
}

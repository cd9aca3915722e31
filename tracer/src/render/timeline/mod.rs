//! timeline.pftrace: the session in time order, as a Perfetto protobuf trace (open it at
//! ui.perfetto.dev; the file stays local: drag it in). What `go tool trace` shows from inside a
//! Go program, for the processes rtrace traced from outside:
//! - a process track per traced process (the target first, then its descendants in fork
//!   order) with slices `alive` (fork or attach → exit) and `zombie` (exit → reap), each closed
//!   at the session end; instants for exec, signals, wait calls and findings (processes.rs);
//! - a "syscalls" track per thread with the slow calls and their decoded arguments
//!   (syscalls.rs);
//! - for Go processes: goroutine and heap counters and GC pause slices (go.rs);
//! - with --timeline, on each thread's own track: running/sleep/disk/runqueue slices, wakeup
//!   flows from the waker and the on-CPU samples with their stacks (sched.rs).
//!
//! Every time is put on one clock: session time (ns since the probes were attached) plus
//! CLOCK_MONOTONIC at that moment, which is what the trace declares as its clock; the Go
//! runtime's GC pause ends, in CLOCK_REALTIME, are moved onto it in go.rs. Built from the
//! analysis (the ledger, findings, decoded calls) and the capture (every lifecycle event, the Go
//! series), both only read.
use std::io::Write;

use anyhow::Result;
use prost::Message;

use crate::{capture::Capture, report::Analysis};

mod builder;
mod go;
mod processes;
pub mod proto;
mod sched;
mod syscalls;
#[cfg(test)]
mod tests;

use builder::{arg, Builder, Slice, SESSION_END};
use proto::{Trace, TrackDescriptor};

/// The whole trace.
pub fn render(capture: &Capture, analysis: &Analysis) -> Trace {
    let end_ns = match capture.lifecycle.end_ns {
        0 => capture.session.duration_ms.saturating_mul(1_000_000),
        n => n,
    };
    let mut b = Builder::new(capture.session.start_mono_ns, end_ns);
    session_track(&mut b, analysis);
    let mut tracks = processes::render(&mut b, capture, analysis);
    syscalls::render(&mut b, capture, analysis, &mut tracks);
    go::render(&mut b, capture, &mut tracks);
    sched::render(&mut b, capture, analysis, &mut tracks);
    b.finish()
}

pub fn write(capture: &Capture, analysis: &Analysis, w: &mut dyn Write) -> Result<()> {
    w.write_all(&render(capture, analysis).encode_to_vec())?;
    Ok(())
}

/// One slice over the whole session on a track of its own: the frame every other time is read
/// against (and what "to the session end" means in the file).
fn session_track(b: &mut Builder, analysis: &Analysis) {
    let r = &analysis.report;
    let t = b.track(TrackDescriptor { name: Some("rtrace session".into()), ..Default::default() });
    let ended_by = serde_json::to_value(r.session.ended_by).ok().and_then(|v| v.as_str().map(str::to_owned));
    let args = vec![
        arg("target_pid", r.target.pid),
        arg("target", r.target.cmdline.join(" ")),
        arg("ended_by", ended_by.unwrap_or_default()),
    ];
    b.slice(t, Slice { begin: 0, end: SESSION_END, name: "session".into(), args });
}

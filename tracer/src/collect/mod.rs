//! The session loop: waits for the end (duration, Ctrl-C/SIGTERM, or the traced tree exiting)
//! while following process lifecycle events, then drains the kernel maps into a `Capture`.
mod drain;
mod registry;

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};
use tracer_common::{
    counters,
    process::{ProcEvent, EVENT_EXEC, EVENT_EXIT, EVENT_FORK},
};

pub use registry::Registry;

use crate::{
    capture::{Capture, EndedBy, SessionInfo, TargetInfo},
    loader::Probes,
    spawn::HeldChild,
};

pub struct SessionParams {
    pub target: TargetInfo,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub quiet: bool,
    pub attach_ms: u64,
    pub min_block_us: Option<u64>,
}

/// How often we check liveness, refresh mappings and update the countdown.
const TICK: Duration = Duration::from_millis(100);
/// How often live processes' mappings are re-read (libraries loaded after exec, dlopen).
const REFRESH: Duration = Duration::from_millis(500);

pub async fn run(
    mut probes: Probes,
    mut held: Option<HeldChild>,
    mut registry: Registry,
    params: SessionParams,
) -> Result<Capture> {
    let start = Instant::now();
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd exists.
    let mut events = unsafe { AsyncFd::register(probes.take_events()?) }.map_err(|e| anyhow::anyhow!("polling the events ring buffer: {e}"))?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = params.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)));
    tokio::pin!(sleep);
    let mut tick = tokio::time::interval(TICK);
    let mut last_refresh = Instant::now();
    let countdown = !params.quiet && std::io::stderr().is_terminal();

    let ended_by = loop {
        tokio::select! {
            _ = &mut sleep, if deadline.is_some() => break EndedBy::Duration,
            _ = sigint.recv() => break EndedBy::Interrupt,
            _ = sigterm.recv() => break EndedBy::Interrupt,
            guard = events.readable_mut() => {
                let mut guard = guard?;
                handle_events(guard.get_inner_mut(), &mut registry);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if let Some(h) = held.as_mut() {
                    h.try_reap();
                }
                if last_refresh.elapsed() >= REFRESH {
                    registry.refresh();
                    last_refresh = Instant::now();
                }
                if !registry.any_alive() {
                    break EndedBy::TargetExit;
                }
                if countdown {
                    let left = params.duration.map(|d| d.saturating_sub(start.elapsed()));
                    let samples = probes.counter(counters::CPU_SAMPLES);
                    let left = left.map(|l| format!("{}s left, ", l.as_secs())).unwrap_or_default();
                    eprint!("\r\x1b[Krtrace: tracing pid {} — {left}{samples} samples (Ctrl-C to stop)", params.target.pid);
                }
            }
        }
    };
    let duration_ms = start.elapsed().as_millis() as u64;
    if countdown {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    probes.detach();
    handle_events(events.get_mut(), &mut registry);
    if let Some(h) = held.as_mut() {
        h.try_reap();
    }

    let mut capture = drain::drain(&probes)?;
    // Wakers may be processes we do not trace: their maps are needed to name their frames.
    for w in &capture.wakeups {
        if w.waker_pid != 0 && !registry.knows(w.waker_pid) {
            registry.snapshot(w.waker_pid, false);
        }
    }
    capture.target = params.target;
    capture.session = SessionInfo {
        duration_ms,
        ended_by,
        sample_frequency_hz: params.frequency_hz,
        clock: probes.clock,
        attach_ms: params.attach_ms,
        min_block_us: params.min_block_us,
    };
    capture.processes = registry.into_processes();
    Ok(capture)
}

fn handle_events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, registry: &mut Registry) {
    while let Some(item) = ring.next() {
        if item.len() < std::mem::size_of::<ProcEvent>() {
            continue;
        }
        // SAFETY: the kernel side writes exactly a ProcEvent; read_unaligned copes with any
        // alignment of the ring buffer slot.
        let ev: ProcEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        match ev.kind {
            EVENT_FORK => registry.snapshot(ev.tgid, false),
            EVENT_EXEC => registry.snapshot(ev.tgid, true),
            EVENT_EXIT => registry.mark_exited(ev.tgid),
            _ => {}
        }
    }
}

//! The session loop: waits for the end (duration, Ctrl-C/SIGTERM, or the traced tree exiting)
//! while following process lifecycle events, then drains the kernel maps into a `Capture`.
mod drain;
mod events;
pub mod fds;
mod go;
pub use go::GoLive;
mod life;
pub mod live;
mod pidns;
mod preexisting;
mod terminal;
mod timeline;
pub use crate::procfs::parse_syscall;
mod registry;
mod roots;
mod slow;
mod stacks;
mod starved;
pub mod ustacks;

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Result;
use events::record;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};
use tracer_common::counters;

pub use registry::Registry;

use crate::{
    capture::{Capture, EndedBy, SessionInfo, TargetInfo},
    loader::Probes,
    spawn::HeldChild,
};

/// What a session's loop needs: the options it was started with, and what the session learnt
/// while attaching (the target as found, the attach time, the descendants and unwind modes).
pub struct SessionParams {
    pub opts: crate::options::SessionOptions,
    pub target: TargetInfo,
    pub attach_ms: u64,
    /// Descendants of the target found in /proc at attach.
    pub existing: Vec<u32>,
    /// Descendants found at attach that a non-root caller's session leaves out.
    pub skipped: Vec<crate::lifecycle::Skipped>,
    /// The unwind modes decided at attach (ustacks::decide).
    pub unwind_modes: Vec<(u32, u8)>,
    /// A session that runs until `live.stop` and publishes its readings meanwhile (watch mode).
    pub live: Option<live::Live>,
}

/// How often we check liveness, refresh mappings and update the countdown.
const TICK: Duration = Duration::from_millis(100);
/// How often live processes' mappings are re-read (libraries loaded after exec, dlopen).
const REFRESH: Duration = Duration::from_millis(500);

pub async fn run(
    mut probes: Probes,
    mut held: Option<HeldChild>,
    mut registry: Registry,
    mut params: SessionParams,
) -> Result<Capture> {
    let mut live = params.live.take();
    let mut last_publish = Instant::now();
    let start = Instant::now();
    let start_mono = drain::monotonic_ns();
    let mut life = life::LifeCollector::new(params.target.pid, start_mono, &params.existing);
    for s in std::mem::take(&mut params.skipped) {
        life.skipped_at_attach(s);
    }
    // Threads already blocked in a syscall: no probe will see that call start.
    let roots: Vec<u32> = std::iter::once(params.target.pid).chain(params.existing.iter().copied()).collect();
    let mut pre = preexisting::scan(&roots, &probes.task_regs(), |pid| registry.maps(pid));
    let run_times = starved::read(&roots);
    // Stack copies: read as they come, so that each is unwound while its process is alive.
    let mut ustacks = ustacks::Ustacks::new(params.opts.unwind, &params.unwind_modes, params.opts.ustack_bytes);
    ustacks.unwind_blocked(&mut pre);
    let mut slow = slow::SlowStore::new(
        params.opts.syscalls.map(|s| s.slow_top).unwrap_or(0),
        params.opts.syscalls.and_then(|s| s.slow_threshold).map(|d| d.as_nanos() as u64),
    );
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd exists.
    let mut events = unsafe { AsyncFd::register(probes.take_events()?) }
        .map_err(|e| anyhow::anyhow!("polling the events ring buffer: {e}"))?;
    // SAFETY: as for `events`.
    let mut ustack_ring = unsafe { AsyncFd::register(probes.take_ustacks()?) }
        .map_err(|e| anyhow::anyhow!("polling the user-stack ring buffer: {e}"))?;
    // --timeline's records: read on every tick (they come without a wakeup).
    let mut timeline = match params.opts.timeline {
        Some(cap) => Some((timeline::Reader::new(cap), probes.take_timeline()?)),
        None => None,
    };
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    // A dropped ssh session: end like Ctrl-C, with the report written (unless under nohup).
    let mut sighup =
        if terminal::hangup_ignored() { None } else { Some(tokio::signal::unix::signal(SignalKind::hangup())?) };
    let deadline = params.opts.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep = tokio::time::sleep_until(
        deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    tokio::pin!(sleep);
    // The Go view: the target and its descendants at attach, then each exec.
    let mut gos = go::GoSession::new(params.opts.go, start_mono);
    for &pid in &roots {
        gos.seen(pid);
    }
    gos.tick(&mut probes);
    let mut tick = tokio::time::interval(TICK);
    let mut harvested_stats = Vec::new();
    let mut stack_tables = stacks::StackTables::new(live.is_none());
    let mut folds = live::Folds::default();
    // The first tick refreshes and harvests at once: children that exited while the probes
    // were being attached leave the stats map now rather than half a second later.
    let mut last_refresh = Instant::now().checked_sub(REFRESH).unwrap_or_else(Instant::now);
    let countdown = !params.opts.quiet && std::io::stderr().is_terminal();

    // For `cargo xtask bench`: rtrace's CPU while it traces, without the one-time work at
    // attach (above) and at the end (below).
    let timings = std::env::var_os("RTRACE_TIMINGS").is_some();
    if timings {
        eprintln!("rtrace-timings: loop_start cpu_us={}", crate::clock::self_cpu_us());
    }
    let ended_by = loop {
        let reread_at = registry.next_reread().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tokio::time::sleep_until(reread_at.unwrap_or_else(tokio::time::Instant::now)), if reread_at.is_some() => {
                registry.early_rereads();
            }
            _ = &mut sleep, if deadline.is_some() => break EndedBy::Duration,
            _ = sigint.recv() => break EndedBy::Interrupt,
            _ = sigterm.recv() => break EndedBy::Interrupt,
            _ = async { sighup.as_mut().expect("checked").recv().await }, if sighup.is_some() => break EndedBy::Hangup,
            guard = events.readable_mut() => {
                let mut guard = guard?;
                events::handle_events(guard.get_inner_mut(), &mut registry, &mut slow, &mut life, Some(&mut gos), &mut ustacks);
                guard.clear_ready();
                ustacks.sync(Some(&mut probes));
            }
            guard = ustack_ring.readable_mut() => {
                let mut guard = guard?;
                ustacks.read(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if let Some(h) = held.as_mut() {
                    h.try_reap();
                }
                gos.tick(&mut probes);
                if let Some(l) = live.as_mut() {
                    if l.stopped() {
                        break EndedBy::Interrupt;
                    }
                    let mut parts = live::Parts {
                        probes: &mut probes,
                        registry: &mut registry,
                        life: &mut life,
                        gos: &mut gos,
                        ustacks: &mut ustacks,
                        harvested: &mut harvested_stats,
                        folds: &mut folds,
                    };
                    for root in l.adopt.try_iter().collect::<Vec<_>>() {
                        if let Err(e) = live::adopt(root, &mut parts, params.opts.unwind) {
                            log::warn!("rtrace serve --watch: adopting pid {root}: {e:#}");
                        }
                    }
                    if last_publish.elapsed() >= l.every {
                        publish(l, &mut parts, &params, start, start_mono);
                        last_publish = Instant::now();
                    }
                }
                // Copies are announced at most every 2 ms (tracer-ebpf ustack.rs): the last
                // ones of a burst are read here.
                ustacks.read(ustack_ring.get_mut());
                ustacks.sync(Some(&mut probes));
                stack_tables.tick(&probes);
                if let Some((r, ring)) = timeline.as_mut() {
                    r.read(ring);
                }
                if last_refresh.elapsed() >= REFRESH {
                    registry.refresh();
                    if params.opts.syscalls.is_some() {
                        let exited = harvest(&mut probes, &registry)?;
                        if live.is_some() {
                            live::fold_exited(&mut harvested_stats, exited, |p| life.owners.of(p));
                        } else {
                            harvested_stats.extend(exited);
                        }
                    }
                    // A child died: who still holds the pipes it shared with the target?
                    if life.wants_pipe_scan() {
                        life.scan_pipes();
                    }
                    last_refresh = Instant::now();
                }
                // A watch set goes on when every root has gone: new ones come.
                if !registry.any_alive() && live.is_none() {
                    break EndedBy::TargetExit;
                }
                if countdown {
                    let left = params.opts.duration.map(|d| d.saturating_sub(start.elapsed()));
                    let samples = probes.counter(counters::CPU_SAMPLES);
                    // Not eprint!: it panics once the terminal is gone (a hangup).
                    let _ = write!(std::io::stderr(), "\r\x1b[K{}", terminal::line(params.target.pid, left, samples));
                }
            }
        }
    };
    if timings {
        eprintln!(
            "rtrace-timings: loop_end cpu_us={} mono_ms={}",
            crate::clock::self_cpu_us(),
            crate::clock::monotonic_ns() / 1_000_000
        );
    }
    // A report follows (not a watch set's): its kernel names load meanwhile (symbolize/kernel.rs).
    if live.is_none() {
        crate::symbolize::kernel::prewarm();
    }
    let duration_ms = start.elapsed().as_millis() as u64;
    let run_times_end = starved::read(&roots);
    life.snapshot_end(drain::monotonic_ns());
    // Threads the probes saw enter a call since attach left their pre-attach call (the thread
    // table read first: a call entered after it changes what /proc shows next).
    let entered: std::collections::BTreeSet<u32> = probes.syscalls_in_flight()?.iter().map(|(tid, _)| *tid).collect();
    let still: Vec<preexisting::Blocked> =
        pre.into_iter().filter(|b| preexisting::still_blocked(b, entered.contains(&b.tid))).collect();
    // Threads blocked now whose stacks the probes deferred: read while they are still blocked.
    let mut deferred =
        preexisting::scan_threads(&probes.deferred_in_flight()?, &probes.task_regs(), |pid| registry.maps(pid));
    ustacks.unwind_blocked(&mut deferred);
    if countdown {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    // The Go view's last readings, while the processes are alive and the uprobes attached.
    // Copies taken so far, while their processes are alive (the Go readings take a while).
    ustacks.read(ustack_ring.get_mut());
    let (go_records, go_unread) = gos.finish(&mut probes);
    if live.is_none() {
        crate::goruntime::cache::forget();
    }
    let recursion_misses = probes.recursion_misses();
    let detach_mono = drain::monotonic_ns();
    // The loop ends with TargetExit only once every followed process has gone.
    probes.detach(matches!(ended_by, EndedBy::TargetExit));
    events::handle_events(events.get_mut(), &mut registry, &mut slow, &mut life, None, &mut ustacks);
    // The ring to its end before the maps are read: every copy a map references was written
    // before the programs were detached.
    ustacks.read(ustack_ring.get_mut());
    ustacks.sync(None);
    let timeline = timeline.map(|(mut r, mut ring)| {
        r.read(&mut ring);
        r
    });
    let root_exited = registry.exited().contains(&params.target.pid);
    let wait_status = held.as_mut().and_then(|h| h.final_status(root_exited));

    for (tid, inf) in probes.syscalls_in_flight()? {
        if crate::analyze::syscalls::is_wait(inf.nr) {
            life.wait_in_flight(inf.tgid, tid, inf.nr, &inf.args, inf.ts, inf.blocked != 0);
        }
    }
    // Waits blocked since before attach count from attach (they are at least that long).
    for b in still.iter().filter(|b| crate::analyze::syscalls::is_wait(b.nr as i32)) {
        // Not if it returned between that check and detach: the probes saw it return (a
        // completed wait with an unknown start).
        let returned = life
            .life
            .events
            .iter()
            .any(|e| matches!(e, crate::lifecycle::LifeEvent::Wait(w) if w.tid == b.tid && w.start_ns == 0));
        if !returned && !life.life.waits_in_flight.iter().any(|w| w.tid == b.tid) {
            // Start unknown (0): at least the whole session.
            life.wait_in_flight(b.tgid, b.tid, b.nr as i32, &b.args, 0, true);
        }
    }
    life.started_after_end(&still.iter().map(|b| b.tid).collect());
    let lost = probes.counter(counters::EVENTS_DROPPED);
    let lifecycle = life.finish(lost);
    if std::env::var_os("RTRACE_USTACK_STATS").is_some() {
        // For the tests and `cargo xtask bench`: what the kernel sent and what arrived.
        eprintln!(
            "rtrace-ustacks: cpu_samples={} sent={} dropped={} copy_failed={} records={} malformed={} {}",
            probes.counter(counters::CPU_SAMPLES),
            probes.counter(counters::USTACK_COPIES),
            probes.counter(counters::USTACK_DROPPED),
            probes.counter(counters::USTACK_COPY_FAILED),
            ustacks.records,
            ustacks.malformed,
            ustacks.seen
        );
    }
    let mut capture =
        drain::drain(&probes, slow, (start_mono, detach_mono), harvested_stats, &ustacks, timeline, stack_tables)?;
    capture.accounting.bpf_recursion_misses = recursion_misses;
    capture.lifecycle = lifecycle;
    capture.go = go_records;
    capture.accounting.go_unread = go_unread;
    fill_deferred(&mut capture, &deferred);
    add_preexisting(
        &mut capture,
        &still,
        duration_ms * 1_000_000,
        params.opts.syscalls.is_some(),
        params.opts.min_block.is_some(),
    );
    add_never_ran(&mut capture, (&run_times, &run_times_end), duration_ms * 1_000_000, params.opts.min_block.is_some());
    // Wakers may be processes we do not trace: their maps are needed to name their frames.
    for w in &capture.wakeups {
        if w.waker_pid != 0 && !registry.knows(w.waker_pid) {
            registry.snapshot(w.waker_pid, false);
        }
    }
    capture.session = session_info(&params, &probes, Duration::from_millis(duration_ms), ended_by, start_mono);
    capture.target = TargetInfo { wait_status, ..params.target };
    registry.fill(&mut capture);
    // Its links detached and its maps closed while the report is made (loader/reaper.rs).
    crate::loader::reaper::later(probes);
    Ok(capture)
}

/// A watch set's reading: published, then the roots whose trees are gone forgotten.
fn publish(l: &mut live::Live, parts: &mut live::Parts<'_>, params: &SessionParams, start: Instant, start_mono: u64) {
    let (kinds, t0) = ((params.opts.frequency_hz, params.opts.min_block.is_some()), Instant::now());
    let go = parts.gos.live();
    let due = l.profile_due();
    let profile = |p: &live::Parts<'_>| {
        let info = session_info(params, p.probes, start.elapsed(), EndedBy::Interrupt, start_mono);
        live::profile(p.probes, p.ustacks, p.registry, info)
            .map_err(|e| log::warn!("reading a live session's profiles: {e:#}"))
            .ok()
    };
    match live::snapshot(parts, kinds, go, (due, l.profile_every.is_some()), profile) {
        Ok(reading) => {
            let ended: Vec<u32> = reading.roots.iter().filter(|r| r.ended).map(|r| r.root).collect();
            (l.publish)(reading);
            for root in ended {
                live::forget(root, parts);
            }
        }
        Err(e) => log::warn!("reading a live session: {e:#}"),
    }
    log::debug!("live snapshot read and published in {:?}", t0.elapsed());
}

/// Takes the syscall stats of exited processes out of the kernel map, making room: of those
/// known to have exited, and of tracked ones the registry never learnt of (their fork and
/// exit events were dropped from a full ring) that /proc says are gone. Keys of the latter
/// were never harvested before (issue #15): 8-10k of the map's 16,384 stayed for the whole
/// session and every later burst of children overflowed the rest.
fn harvest(
    probes: &mut Probes,
    registry: &Registry,
) -> Result<Vec<(tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)>> {
    let exited = registry.exited();
    // One /proc read per unknown process, however many keys it has.
    let mut unknown = std::collections::HashMap::new();
    probes.harvest_syscall_stats(|tgid| {
        exited.contains(&tgid)
            || (!registry.knows(tgid) && *unknown.entry(tgid).or_insert_with(|| !crate::procfs::is_alive(tgid)))
    })
}

/// The session's facts as the capture records them, `elapsed` after attach.
fn session_info(
    params: &SessionParams,
    probes: &Probes,
    elapsed: Duration,
    ended_by: EndedBy,
    start_mono: u64,
) -> SessionInfo {
    SessionInfo {
        duration_ms: elapsed.as_millis() as u64,
        ended_by,
        sample_frequency_hz: params.opts.frequency_hz,
        clock: probes.clock,
        attach_ms: params.attach_ms,
        min_block_us: params.opts.min_block.map(|d| d.as_micros() as u64),
        slow_top: params.opts.syscalls.map(|s| s.slow_top),
        arch: std::env::consts::ARCH.to_owned(),
        slow_reap_ms: params.opts.slow_reap.as_millis() as u64,
        wait_stall_ms: params.opts.wait_stall.as_millis() as u64,
        start_mono_ns: start_mono,
        start_realtime_ns: crate::clock::realtime_at(start_mono),
        ustack_bytes: Some(params.opts.ustack_bytes),
    }
}

/// Threads that never ran during the session (starved.rs): off CPU in their state for the
/// whole of it, since before attach.
fn add_never_ran(
    capture: &mut Capture,
    (at, end): (&starved::RunTimes, &starved::RunTimes),
    session_ns: u64,
    offcpu: bool,
) {
    if !offcpu {
        return;
    }
    let recorded: std::collections::BTreeSet<u32> = capture.offcpu.iter().map(|o| o.tid).collect();
    for n in starved::never_ran(at, end, &recorded) {
        capture.offcpu.push(crate::capture::RawOff {
            tgid: n.tgid,
            tid: n.tid,
            state: n.state,
            total_ns: session_ns,
            count: 1,
            max_ns: session_ns,
            in_flight: true,
            before_attach: true,
            ..Default::default()
        });
    }
}

/// In-flight blocks and calls without stacks (deferred by the probes) get those read from /proc.
fn fill_deferred(capture: &mut Capture, blocked: &[preexisting::Blocked]) {
    for b in blocked {
        for o in capture.offcpu.iter_mut().filter(|o| o.in_flight && o.tid == b.tid && o.user.is_empty()) {
            o.user = b.user.as_slice().into();
            o.leaf = b.leaf;
            if o.kernel.is_empty() {
                o.kernel_names = b.kernel_names.clone();
            }
        }
        for c in capture.slow_calls.iter_mut().filter(|c| c.in_flight && c.tid == b.tid && c.user.is_empty()) {
            c.user = b.user.clone();
            c.leaf = b.leaf;
            if c.kernel.is_empty() {
                c.kernel_names = b.kernel_names.clone();
            }
        }
    }
}

/// Calls blocked since before attach and still blocked: in flight for the whole session, at
/// least. Skipped when the probes saw the thread make a new call (then their data is better).
fn add_preexisting(
    capture: &mut Capture,
    blocked: &[preexisting::Blocked],
    session_ns: u64,
    syscalls: bool,
    offcpu: bool,
) {
    let seen: std::collections::BTreeSet<u32> =
        capture.slow_calls.iter().filter(|c| c.in_flight).map(|c| c.tid).collect();
    for b in blocked.iter().filter(|b| !seen.contains(&b.tid)) {
        let (fd_desc, pidfd_pid) = slow::resolve(b.tgid, b.nr as i32, &b.args);
        if syscalls {
            capture.slow_calls.push(crate::capture::RawSlowCall {
                tgid: b.tgid,
                tid: b.tid,
                nr: b.nr as i32,
                start_ns: 0,
                duration_ns: session_ns,
                ret: 0,
                user: b.user.clone(),
                leaf: b.leaf,
                args: b.args,
                fd_desc,
                pidfd_pid,
                in_flight: true,
                before_attach: true,
                kernel_names: b.kernel_names.clone(),
                ..Default::default()
            });
        }
        if offcpu && !capture.offcpu.iter().any(|o| o.tid == b.tid && o.in_flight) {
            capture.offcpu.push(crate::capture::RawOff {
                tgid: b.tgid,
                tid: b.tid,
                user: b.user.as_slice().into(),
                leaf: b.leaf,
                state: if b.state == 'D' { crate::capture::OffState::Disk } else { crate::capture::OffState::Sleep },
                total_ns: session_ns,
                count: 1,
                max_ns: session_ns,
                in_flight: true,
                before_attach: true,
                kernel_names: b.kernel_names.clone(),
                ..Default::default()
            });
        }
    }
    capture.slow_calls.sort_by_key(|c| std::cmp::Reverse(c.duration_ns));
}

/// Bytes up to the first NUL (kernel comm and path buffers).
pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

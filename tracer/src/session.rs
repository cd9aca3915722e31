//! One tracing session from validated config to written report:
//! preflight → (spawn held) → load + attach → collect → detach → symbolize/analyze → render.
use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use tracer_common::target::{EXISTING_DESCENDANT, ROOT};

use crate::{
    analyze::target::TargetExit,
    capture::{Capture, TargetInfo},
    collect::{self, Registry, SessionParams},
    error::UsageError,
    loader::{Options, Probes},
    options::{Config, SessionOptions, Target},
    procfs,
    render::output,
    report, spawn,
    symbolize::BlazeResolver,
};

/// Checks what rtrace needs from the system, before touching anything.
pub fn preflight() -> Result<(), UsageError> {
    crate::privileges::check_session(&crate::tracefs::format_path("sched", "sched_process_exec"))?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(UsageError::NoBtf);
    }
    for w in crate::privileges::warnings() {
        eprintln!("rtrace: warning: {w}");
    }
    Ok(())
}

/// Creates `dir` if needed and proves it writable, and holding nothing but an earlier report
/// (and `input`, a capture being re-rendered there).
pub fn ensure_writable(dir: &Path, input: Option<&Path>) -> Result<(), UsageError> {
    let err = |e: std::io::Error| UsageError::OutputNotWritable { path: dir.to_owned(), reason: e.to_string() };
    if let Some(entry) = output::foreign_entry(dir, input) {
        return Err(UsageError::OutputNotReport { path: dir.to_owned(), entry });
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".rtrace-write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Traces; returns rtrace's exit status: in `-- COMMAND` mode the command's own when it exited
/// during the session (128+N for a signal), else 0.
pub fn trace(cfg: Config) -> Result<u8> {
    // -v or RTRACE_LOG=debug: the eBPF programs' rare anomalies, logged on stderr (see the loader).
    // Silent without it; aya's own output (every relocation at debug) only when asked for by
    // name (RTRACE_LOG=aya=debug,aya_obj=debug).
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
        .filter_module("aya", log::LevelFilter::Off)
        .filter_module("aya_obj", log::LevelFilter::Off)
        .parse_filters(if cfg.verbose { "debug" } else { "" })
        .parse_env(env_logger::Env::new().filter("RTRACE_LOG"))
        .try_init();
    preflight()?;
    // Now (after the privilege check, so an unprivileged user gets that error alone):
    // everything after this would wait behind a busy target (see priority.rs). The child
    // `-- CMD` starts with the user's priority (SCHED_RESET_ON_FORK).
    let priority = crate::priority::raise();
    if let Some(dir) = &cfg.output {
        ensure_writable(dir, None)?;
    } else {
        // The default directory is created in the current one once the pid is known.
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let probe = cwd.join(format!(".rtrace-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| UsageError::OutputNotWritable { path: cwd.clone(), reason: e.to_string() })?;
        let _ = std::fs::remove_file(probe);
    }
    let opts = &cfg.session;
    let mut dir = PathBuf::new();
    let capture = run(opts, &format!("{priority:?}"), |pid| {
        dir = cfg.output.clone().unwrap_or_else(|| output::default_dir(pid));
        ensure_writable(&dir, None)
    })?;
    let t1 = Instant::now();
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        eprintln!(
            "rtrace-timings: session_end cpu_us={} mono_ms={}",
            crate::clock::self_cpu_us(),
            crate::clock::monotonic_ns() / 1_000_000
        );
    }
    let analysis = write_report(&dir, &capture, opts.quiet)?;
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        // since_exit_ms: from the target's exit as the kernel stamped it (the end a user sees
        // of a traced build), through the drain and detach, to the last file written.
        let exit_at = match analysis.report.target.exit {
            Some(TargetExit::Exited { at_ns: Some(at), .. } | TargetExit::Killed { at_ns: Some(at), .. }) => Some(at),
            _ => None,
        };
        let since_exit = exit_at
            .map(|at| crate::clock::monotonic_ns().saturating_sub(capture.session.start_mono_ns + at) / 1_000_000);
        eprintln!(
            "rtrace-timings: report_ms={} since_exit_ms={} cpu_us={} peak_rss_kb={}",
            t1.elapsed().as_millis(),
            since_exit.map_or(-1, |ms| ms as i64),
            crate::clock::self_cpu_us(),
            peak_rss_kb()
        );
    }
    if let Some(to) = &cfg.pyroscope {
        push_at_end(to, &analysis, cfg.service_name.clone(), opts.quiet);
    }
    let exit = analysis.report.target.exit;
    match (&opts.target, exit) {
        (_, Some(TargetExit::NeverStarted { reason })) => Err(UsageError::NeverStarted(reason).into()),
        (Target::Command { .. }, Some(e)) => Ok(e.status().unwrap_or(0)),
        _ => Ok(0),
    }
}

/// `--pyroscope`: the session's profiles, pushed once the report is written (a failed push
/// loses nothing: the report is on disk; it is said on stderr, and the exit status stays).
fn push_at_end(to: &crate::push::Endpoint, analysis: &report::Analysis, service: Option<String>, quiet: bool) {
    use crate::{push::PushStats, render::pyroscope};
    let t = &analysis.report.target;
    let who = pyroscope::Identity {
        service_name: service.unwrap_or_else(|| t.comm.clone()),
        pid: t.pid,
        host: pyroscope::hostname(),
    };
    let Some(body) = pyroscope::request(analysis, &who) else {
        eprintln!("rtrace: nothing to push to {} (no sample, no block)", to.authority);
        return;
    };
    let pusher = match crate::push::Pusher::start(to.clone()) {
        Ok(p) => p,
        Err(e) => return eprintln!("rtrace: warning: pushing to {}: {e:#}", to.authority),
    };
    pusher.push(body);
    let stats = pusher.finish(std::time::Duration::from_secs(15));
    if PushStats::get(&stats.sent) == 1 {
        if !quiet {
            eprintln!("rtrace: profiles pushed to {} (service_name {})", to.authority, who.service_name);
        }
    } else {
        let why = stats.last_error.lock().map(|e| e.clone()).ok().flatten().unwrap_or_default();
        eprintln!("rtrace: warning: the profiles were not pushed to {}: {why}", to.authority);
    }
}

/// One session, the CLI's and the daemon's alike (the caller has run `preflight`): spawn the
/// command held or take the pid, load and attach, collect until the end, detach; returns the
/// capture (not yet symbolized). `on_pid` runs once the target's pid is known, before anything
/// is loaded (the CLI checks its report directory there). `priority`: how the caller's
/// priority was raised, for the benchmark's timing line.
pub fn run(
    opts: &SessionOptions,
    priority: &str,
    on_pid: impl FnOnce(u32) -> Result<(), UsageError>,
) -> Result<Capture> {
    run_live(opts, priority, on_pid, None)
}

/// `run` for a session that goes on until `live.stop`, publishing its readings (watch mode).
pub fn run_live(
    opts: &SessionOptions,
    priority: &str,
    on_pid: impl FnOnce(u32) -> Result<(), UsageError>,
    live: Option<collect::live::Live>,
) -> Result<Capture> {
    if let Target::Pid(p) = opts.target {
        if let Some(w) = crate::privileges::check_target(p)? {
            eprintln!("rtrace: warning: {w}");
        }
    }
    let t0 = Instant::now();
    let mut held = match &opts.target {
        Target::Command { program, argv } => Some(spawn::spawn_held(program, argv)?),
        Target::Pid(_) => None,
    };
    let pid = match (&opts.target, &held) {
        (Target::Pid(p), _) => *p,
        (_, Some(h)) => h.pid,
        _ => unreachable!(),
    };
    on_pid(pid)?;
    let mut probes = Probes::load(&Options {
        // In a watch set, the first root (live::forget clears its stats when it is forgotten).
        root_tgid: pid,
        follow_children: opts.follow_children,
        min_block_ns: opts.min_block.map(|d| d.as_nanos() as u64),
        syscalls: opts.syscalls,
        floor: opts.bench_floor,
        ustack_bytes: opts.ustack_bytes,
        ustack_ring_bytes: opts.ustack_ring_bytes,
        timeline: opts.timeline.is_some(),
        owner: opts.owner,
    })?;
    let mut registry = Registry::default();
    probes.track(pid, ROOT)?;
    // Tracked now: if it is still the process authorized, the pid cannot be reused under us.
    if let Some(start) = opts.expect_start {
        if procfs::stat(pid).map(|s| s.start_time) != Some(start) {
            return Err(UsageError::NoSuchPid(pid).into());
        }
    }
    registry.snapshot(pid, false);
    // rtrace is never its own target: when it runs under the target (`bash -c 'rtrace --pid
    // $$'`, `--pid 1`), it and the processes between (sudo) are left out.
    let chain = rtrace_chain(pid, procfs::state_and_ppid);
    let existing: Vec<u32> = if opts.follow_children { procfs::descendants(pid) } else { Vec::new() };
    let existing: Vec<u32> = existing.into_iter().filter(|p| !chain.contains(p)).collect();
    // A non-root caller's session: only the descendants it could inspect itself.
    let (existing, skipped) = match opts.owner {
        Some(owner) => procfs::split_foreign(pid, existing, owner),
        None => (existing, Vec::new()),
    };
    // Children started before we attached: task_newtask will never fire for them.
    for &d in &existing {
        probes.track(d, EXISTING_DESCENDANT)?;
        registry.snapshot(d, false);
    }
    // How their user stacks are taken, decided before the first one is (collect::ustacks).
    // A held command still runs rtrace's own image: its mode is its program's, decided now
    // (its exec is applied a loop turn later; until then a Go program's samples would be
    // copies).
    let held_program = match &opts.target {
        Target::Command { program, .. } => Some(program.as_path()),
        _ => None,
    };
    let unwind_modes: Vec<(u32, u8)> = std::iter::once(pid)
        .chain(existing.iter().copied())
        .filter_map(|p| {
            let exe = held_program.filter(|_| p == pid);
            Some((p, collect::ustacks::decide(&mut probes, p, exe, opts.unwind)?))
        })
        .collect();
    probes.attach(opts.frequency_hz)?;
    let attach_ms = t0.elapsed().as_millis() as u64;
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        // For `cargo xtask bench`: it starts the measured work once probes are attached.
        eprintln!(
            "rtrace-timings: attached attach_ms={attach_ms} cpu_us={} priority={priority}",
            crate::clock::self_cpu_us()
        );
    }
    let target = match (&opts.target, held.as_mut()) {
        (Target::Command { argv, .. }, Some(h)) => {
            let comm = Path::new(&argv[0])
                .file_name()
                .map(|s| s.to_string_lossy().chars().take(15).collect())
                .unwrap_or_default();
            let not_started = h.release();
            TargetInfo { pid, comm, cmdline: argv.clone(), not_started, ..Default::default() }
        }
        _ => attach_info(pid),
    };
    for line in crate::analyze::target::report(&target, &Default::default()).status_lines() {
        if target.not_started.is_none() {
            let _ = writeln!(std::io::stderr(), "rtrace: warning: {line}");
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if let Some(logger) = probes.take_logger() {
        // The eBPF side's rare-anomaly records (RTRACE_LOG=debug), printed as they come.
        runtime.spawn(async move {
            // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd exists.
            let registered =
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
            let Ok(mut fd) = registered else { return };
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }
    let params = SessionParams { opts: opts.clone(), target, attach_ms, existing, skipped, unwind_modes, live };
    let mut capture = runtime.block_on(collect::run(probes, held, registry, params))?;
    capture.lifecycle.rtrace_chain = chain;
    Ok(capture)
}

/// rtrace's own process and its ancestors up to (not including) `target`, innermost first;
/// empty when rtrace does not run under the target.
fn rtrace_chain(target: u32, parent: impl Fn(u32) -> Option<(char, u32)>) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut p = std::process::id();
    // The depth bound only guards against a /proc loop while processes are reparented.
    for _ in 0..4096 {
        if p == target {
            return chain;
        }
        chain.push(p);
        match parent(p) {
            Some((_, pp)) if pp != 0 && pp != p => p = pp,
            _ => break,
        }
    }
    Vec::new()
}

/// `--pid`: what /proc says of the target at attach (a stopped or zombie one is said so).
fn attach_info(pid: u32) -> TargetInfo {
    let st = procfs::stat(pid);
    let state = st.as_ref().map(|s| s.state).filter(|s| matches!(s, 'T' | 't' | 'Z'));
    TargetInfo {
        pid,
        comm: procfs::comm(pid).unwrap_or_default(),
        cmdline: procfs::cmdline(pid),
        attach_state: state,
        attach_exit_status: st.as_ref().filter(|_| state == Some('Z')).and_then(|s| s.exit_status),
        attach_ppid: st.as_ref().filter(|_| state == Some('Z')).map(|s| s.ppid),
        ..Default::default()
    }
}

/// rtrace's own peak resident memory so far (VmHWM; `time -v` would count the target's
/// children too), for the benchmark's timing lines.
pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    procfs::status_field(&status, "VmHWM").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

pub fn write_report(dir: &Path, capture: &Capture, quiet: bool) -> Result<report::Analysis> {
    // A build's report takes a moment: say what is going on, on a terminal only.
    let progress = |msg: &str| {
        use std::io::IsTerminal;
        if !quiet && std::io::stderr().is_terminal() {
            // A terminal gone meanwhile (ssh dropped) is not a reason to lose the report.
            let _ = write!(std::io::stderr(), "\r\x1b[K{msg}");
        }
    };
    let stacks = capture.cpu_samples.len() + capture.offcpu.len() + 2 * capture.wakeups.len();
    progress(&format!("rtrace: symbolizing {stacks} stacks of {} processes…", capture.processes.len()));
    // capture.json needs no analysis: it is written on a second thread meanwhile (a build's
    // is tens of MB, a fifth of the time to the report).
    let (analysis, text) = std::thread::scope(|scope| -> Result<_> {
        let priority = crate::priority::current();
        let saved = scope.spawn(move || {
            crate::priority::raise_thread(priority);
            output::write_capture(dir, capture)
        });
        let analysis = report::analyze(capture, &mut BlazeResolver::default());
        progress(&format!("rtrace: writing {}…", dir.display()));
        let text = output::write_analysis(dir, capture, &analysis);
        saved.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((analysis, text?))
    })?;
    progress("");
    if !quiet {
        // The files are written already; a closed stdout (`rtrace … | head`) is not an error.
        let _ = std::io::stdout().write_all(text.as_bytes());
        // Last, where the eye lands when the summary has scrolled by.
        let _ = writeln!(std::io::stdout(), "\nopen {}", dir.join("report.html").display());
    }
    Ok(analysis)
}

/// `rtrace report capture.json`: re-renders a saved capture (no root needed).
pub fn replay(capture_path: &Path, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    let bad = |reason: String| UsageError::BadCapture { path: capture_path.to_owned(), reason };
    // The text is dropped once parsed: a build's capture is tens of MB.
    let capture: Capture = {
        let text = std::fs::read(capture_path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?
    };
    let dir = out.unwrap_or_else(|| capture_path.parent().map(Path::to_owned).unwrap_or_default());
    // The capture itself may sit in the directory it is re-rendered into.
    ensure_writable(&dir, Some(capture_path))?;
    write_report(&dir, &capture, quiet).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::rtrace_chain;

    #[test]
    fn the_chain_from_rtrace_up_to_the_target() {
        let me = std::process::id();
        // target 10 → sudo 20 → rtrace (me)
        let tree = move |p: u32| match p {
            p if p == me => Some(('S', 20)),
            20 => Some(('S', 10)),
            10 => Some(('S', 1)),
            _ => None,
        };
        assert_eq!(rtrace_chain(10, tree), [me, 20]);
        assert_eq!(rtrace_chain(1, tree), [me, 20, 10]);
        // Not under the target: nothing is left out.
        assert!(rtrace_chain(30, tree).is_empty());
    }
}

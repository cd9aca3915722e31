//! One tracing session from validated config to written report:
//! preflight → (spawn held) → load + attach → collect → detach → symbolize/analyze → render.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use tracer_common::target::{EXISTING_DESCENDANT, ROOT};

use crate::{
    capture::{Capture, TargetInfo},
    cli::{Config, Target},
    collect::{self, Registry, SessionParams},
    error::UsageError,
    loader::{Options, Probes},
    procfs,
    render::output,
    report, spawn,
    symbolize::BlazeResolver,
};

/// Checks what rtrace needs from the system, before touching anything.
pub fn preflight() -> Result<(), UsageError> {
    if !privileged() {
        return Err(UsageError::NotPrivileged);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(UsageError::NoBtf);
    }
    if !crate::tracefs::format_path("sched", "sched_process_exec").exists() {
        return Err(UsageError::NoTracefs);
    }
    Ok(())
}

/// root, or both CAP_BPF (39) and CAP_PERFMON (38) effective.
fn privileged() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    cap_eff & (1 << 38) != 0 && cap_eff & (1 << 39) != 0
}

/// Creates `dir` if needed and proves it writable.
pub fn ensure_writable(dir: &Path) -> Result<(), UsageError> {
    let err = |e: std::io::Error| UsageError::OutputNotWritable { path: dir.to_owned(), reason: e.to_string() };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".rtrace-write-test");
    std::fs::write(&probe, b"").map_err(err)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

pub fn trace(cfg: Config) -> Result<()> {
    // RTRACE_LOG=debug: the eBPF programs' rare anomalies, logged on stderr (see the loader).
    // Silent without it; aya's own output (every relocation at debug) only when asked for by
    // name (RTRACE_LOG=aya=debug,aya_obj=debug).
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
        .filter_module("aya", log::LevelFilter::Off)
        .filter_module("aya_obj", log::LevelFilter::Off)
        .parse_env(env_logger::Env::new().filter("RTRACE_LOG"))
        .try_init();
    preflight()?;
    // Now (after the privilege check, so an unprivileged user gets that error alone):
    // everything after this would wait behind a busy target (see priority.rs). The child
    // `-- CMD` starts with the user's priority (SCHED_RESET_ON_FORK).
    let priority = crate::priority::raise();
    if let Some(dir) = &cfg.output {
        ensure_writable(dir)?;
    } else {
        // The default directory is created in the current one once the pid is known.
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let probe = cwd.join(format!(".rtrace-write-test-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| UsageError::OutputNotWritable { path: cwd.clone(), reason: e.to_string() })?;
        let _ = std::fs::remove_file(probe);
    }

    let t0 = Instant::now();
    let mut held = match &cfg.target {
        Target::Command { program, argv } => Some(spawn::spawn_held(program, argv)?),
        Target::Pid(_) => None,
    };
    let pid = match (&cfg.target, &held) {
        (Target::Pid(p), _) => *p,
        (_, Some(h)) => h.pid,
        _ => unreachable!(),
    };
    let dir: PathBuf = cfg.output.clone().unwrap_or_else(|| output::default_dir(pid));
    ensure_writable(&dir)?;

    let mut probes = Probes::load(&Options {
        root_tgid: pid,
        follow_children: cfg.follow_children,
        min_block_ns: cfg.min_block.map(|d| d.as_nanos() as u64),
        syscalls: cfg.syscalls,
        floor: cfg.bench_floor,
    })?;
    let mut registry = Registry::default();
    probes.track(pid, ROOT)?;
    registry.snapshot(pid, false);
    let existing = if cfg.follow_children { procfs::descendants(pid) } else { Vec::new() };
    // Children started before we attached: task_newtask will never fire for them.
    for &d in &existing {
        probes.track(d, EXISTING_DESCENDANT)?;
        registry.snapshot(d, false);
    }
    probes.attach(cfg.frequency_hz)?;
    let attach_ms = t0.elapsed().as_millis() as u64;
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        // For `cargo xtask bench`: it starts the measured work once probes are attached.
        eprintln!("rtrace-timings: attached attach_ms={attach_ms} cpu_us={} priority={priority:?}", self_cpu_us());
    }
    let target = match (&cfg.target, held.as_mut()) {
        (Target::Command { argv, .. }, Some(h)) => {
            let comm = Path::new(&argv[0])
                .file_name()
                .map(|s| s.to_string_lossy().chars().take(15).collect())
                .unwrap_or_default();
            h.release();
            TargetInfo { pid, comm, cmdline: argv.clone() }
        }
        _ => TargetInfo { pid, comm: procfs::comm(pid).unwrap_or_default(), cmdline: procfs::cmdline(pid) },
    };

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
    let params = SessionParams {
        target,
        duration: cfg.duration,
        frequency_hz: cfg.frequency_hz,
        quiet: cfg.quiet,
        attach_ms,
        min_block_us: cfg.min_block.map(|d| d.as_micros() as u64),
        syscalls: cfg.syscalls,
        existing,
        slow_reap: cfg.slow_reap,
        wait_stall: cfg.wait_stall,
    };
    let capture = runtime.block_on(collect::run(probes, held, registry, params))?;
    let t1 = Instant::now();
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        eprintln!("rtrace-timings: session_end cpu_us={}", self_cpu_us());
    }
    write_report(&dir, &capture, cfg.quiet)?;
    if std::env::var_os("RTRACE_TIMINGS").is_some() {
        eprintln!("rtrace-timings: report_ms={} cpu_us={}", t1.elapsed().as_millis(), self_cpu_us());
    }
    Ok(())
}

/// rtrace's own CPU time so far (user + system), for the benchmark's timing lines.
fn self_cpu_us() -> u64 {
    // SAFETY: getrusage with a valid out-pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}

pub fn write_report(dir: &Path, capture: &Capture, quiet: bool) -> Result<()> {
    let analysis = report::analyze(capture, &mut BlazeResolver::default());
    let text = output::write_all(dir, capture, &analysis)?;
    if !quiet {
        // The files are written already; a closed stdout (`rtrace … | head`) is not an error.
        use std::io::Write;
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
    Ok(())
}

/// `rtrace report capture.json`: re-renders a saved capture (no root needed).
pub fn replay(capture_path: &Path, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    let bad = |reason: String| UsageError::BadCapture { path: capture_path.to_owned(), reason };
    let text = std::fs::read_to_string(capture_path).map_err(|e| bad(e.to_string()))?;
    let capture: Capture = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let dir = out.unwrap_or_else(|| capture_path.parent().map(Path::to_owned).unwrap_or_default());
    ensure_writable(&dir)?;
    write_report(&dir, &capture, quiet)
}

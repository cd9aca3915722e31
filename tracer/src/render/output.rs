//! Writes every output file of a report directory. The one place that decides where bytes go.
//! Each file is written to a temporary name in the directory, synced and renamed over the old
//! one: a failure (a full disk) leaves the earlier complete file, never a partial one, and
//! `rtrace report DIR/capture.json` reads its input whole before replacing it.
use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    capture::Capture,
    render::{flamegraph, goroutine_pprof, goroutines_txt, html, json, pprof, profiles, text, timeline},
    report::Analysis,
};

/// The files of a report directory, with what each holds (listed in report.txt).
pub const FILES: &[(&str, &str)] = &[
    ("report.html", "open this first: findings, children, flame graphs, histograms in one page"),
    ("report.txt", "this summary"),
    ("report.json", "everything above, machine-readable (schema_version 1)"),
    ("cpu.svg", "on-CPU flame graph (open in a browser)"),
    ("cpu.folded", "on-CPU folded stacks (flamegraph.pl / inferno / speedscope input)"),
    ("cpu.pb.gz", "on-CPU pprof profile: go tool pprof -top cpu.pb.gz"),
    ("offcpu.svg", "off-CPU flame graph: where threads wait, by state (µs)"),
    ("offcpu.folded", "off-CPU folded stacks, microseconds, state as leaf frame"),
    ("offcpu.pb.gz", "off-CPU pprof profile: go tool pprof -top offcpu.pb.gz"),
    ("wakeups.folded", "blocked stack -- waker stack (offwaketime format), microseconds"),
    ("wall.svg", "on-CPU and off-CPU time in one flame graph (µs)"),
    ("goroutine.pb.gz", "goroutines of the Go processes (last snapshot): go tool pprof -top goroutine.pb.gz"),
    ("goroutines.txt", "goroutine dump of the Go processes, grouped by identical stack"),
    ("heap.pb.gz", "Go heap profile as of the last GC (in use, allocated): go tool pprof -top heap.pb.gz"),
    ("timeline.pftrace", "the session in time order (Perfetto): drag it into ui.perfetto.dev"),
    ("capture.json", "raw capture; re-render with: rtrace report capture.json"),
];

/// The files written for this report (off-CPU files only when off-CPU was traced).
pub fn files_for(analysis: &Analysis) -> Vec<(&'static str, &'static str)> {
    let off = ["offcpu.svg", "offcpu.folded", "offcpu.pb.gz", "wakeups.folded", "wall.svg"];
    let go = ["goroutine.pb.gz", "goroutines.txt"];
    FILES
        .iter()
        .copied()
        .filter(|(n, _)| analysis.report.offcpu.is_some() || !off.contains(n))
        .filter(|(n, _)| goroutines(analysis) || !go.contains(n))
        .filter(|(n, _)| *n != "heap.pb.gz" || heap_of(analysis).is_some())
        .collect()
}

/// Whether a Go process's goroutines were read (the goroutine files are written).
fn goroutines(analysis: &Analysis) -> bool {
    analysis.report.go.iter().any(|g| g.unavailable.is_none())
}

/// The Go process whose heap profile heap.pb.gz holds: the target's, else the first one's.
fn heap_of(analysis: &Analysis) -> Option<&crate::analyze::go::GoReport> {
    let go = &analysis.report.go;
    let has = |g: &&crate::analyze::go::GoReport| g.heap.rate.is_some();
    go.iter().filter(has).find(|g| g.pid == analysis.report.target.pid).or_else(|| go.iter().find(has))
}

/// Temporary files of a write in progress start with this (and a report directory may hold
/// them: a killed rtrace leaves one behind).
pub const TEMP_PREFIX: &str = ".rtrace-";

/// Writes `dir/name` atomically: `fill` writes into a temporary file beside it, which replaces
/// `name` only once complete and synced. On any error the temporary file is removed, the old
/// `name` (if any) is untouched, and the error names the file.
pub fn write_file(dir: &Path, name: &str, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let path = dir.join(name);
    let ctx = || format!("writing {}", path.display());
    let tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).suffix(".tmp").tempfile_in(dir).with_context(ctx)?;
    let mut w = BufWriter::new(tmp);
    fill(&mut w).with_context(ctx)?;
    let tmp = w.into_inner().map_err(|e| e.into_error()).with_context(ctx)?;
    tmp.as_file().sync_all().with_context(ctx)?;
    tmp.persist(&path).map_err(|e| e.error).with_context(ctx)?;
    Ok(())
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> Result<()> {
    write_file(dir, name, |w| {
        for line in lines {
            writeln!(w, "{line}")?;
        }
        Ok(())
    })
}

/// A report directory may be reused only if it is empty, holds an earlier report (its
/// report.json or capture.json), or holds `input`, the capture being re-rendered beside itself:
/// `-o .` in a source tree must not mix a report into it. Other files beside an earlier report
/// are left alone (only report files are ever replaced or removed). Returns, for a directory
/// that is none of these, its first entry.
pub fn foreign_entry(dir: &Path, input: Option<&Path>) -> Option<String> {
    if input.is_some_and(|p| p.parent() == Some(dir)) {
        return None;
    }
    let names: Vec<String> =
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.iter().any(|n| n == "report.json" || n == "capture.json") {
        return None;
    }
    let mut foreign: Vec<String> =
        names.into_iter().filter(|n| !FILES.iter().any(|(f, _)| f == n) && !n.starts_with(TEMP_PREFIX)).collect();
    foreign.sort();
    foreign.into_iter().next()
}

/// Removes report files an earlier run left that this one did not write (off-CPU files after a
/// run with --no-offcpu), so the directory never mixes two sessions.
fn remove_stale(dir: &Path, written: &[(&str, &str)]) -> Result<()> {
    for (name, _) in FILES.iter().filter(|f| !written.iter().any(|w| w.0 == f.0)) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing the stale {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes all files; returns the text report.
pub fn write_all(dir: &Path, capture: &Capture, analysis: &Analysis) -> Result<String> {
    write_capture(dir, capture)?;
    write_analysis(dir, capture, analysis)
}

/// capture.json (it needs no analysis: a session writes it while the analysis runs).
pub fn write_capture(dir: &Path, capture: &Capture) -> Result<()> {
    write_file(dir, "capture.json", |w| Ok(serde_json::to_writer(w, capture)?))
}

/// Every file but capture.json; returns the text report. The capture is read for what the
/// timeline shows that the analysis sums up (every lifecycle event, the Go series).
pub fn write_analysis(dir: &Path, capture: &Capture, analysis: &Analysis) -> Result<String> {
    let r = &analysis.report;
    let time_nanos = profiles::start_nanos(analysis);
    let duration_nanos = r.session.duration_ms as i64 * 1_000_000;
    let files = files_for(analysis);
    let offcpu = r.offcpu.is_some();
    // Three threads (a build's report is ~0.5 s of CPU, on machines of two cores or more):
    // the off-CPU wakeups and profile; the flame graphs (inferno over tens of thousands of
    // lines) and report.html that embeds them; and the rest here.
    // Folded once the wakeups' thread has started; they outlive the threads that read them.
    let (mut folded, mut off) = (Vec::new(), Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let priority = crate::priority::current();
        let wakeups = scope.spawn(move || {
            crate::priority::raise_thread(priority);
            match offcpu {
                true => write_wakeups(dir, analysis, time_nanos),
                false => Ok(()),
            }
        });
        let (folded, off) = (&mut folded, &mut off);
        *folded = analysis.cpu.folded();
        if offcpu {
            *off = analysis.offcpu.folded();
        }
        let (cpu_lines, off_lines, files): (&[String], &[String], _) = (folded, off, &files);
        let flames = scope.spawn(move || {
            crate::priority::raise_thread(priority);
            let flames = flamegraph::Flames::render(analysis, cpu_lines, off_lines)?;
            write_file(dir, "cpu.svg", |w| Ok(w.write_all(&flames.cpu)?))?;
            for (name, svg) in [("offcpu.svg", &flames.offcpu), ("wall.svg", &flames.wall)] {
                if let Some(svg) = svg {
                    write_file(dir, name, |w| Ok(w.write_all(svg)?))?;
                }
            }
            write_file(dir, "report.html", |w| html::render(analysis, &flames, html::Links::Directory(files), w))
        });
        write_lines(dir, "cpu.folded", cpu_lines)?;
        if offcpu {
            write_lines(dir, "offcpu.folded", off_lines)?;
        }
        write_file(dir, "cpu.pb.gz", |w| pprof::write_gz(&profiles::cpu(analysis, time_nanos), w))?;
        if goroutines(analysis) {
            let p = goroutine_pprof::profile(&r.go, time_nanos, duration_nanos);
            write_file(dir, "goroutine.pb.gz", |w| pprof::write_gz(&p, w))?;
            let txt = goroutines_txt::render(&r.go);
            write_file(dir, "goroutines.txt", |w| Ok(w.write_all(txt.as_bytes())?))?;
        }
        if let Some(g) = heap_of(analysis) {
            let comment = format!("rtrace: Go heap profile of pid {} ({}), read from its memory", g.pid, g.go_version);
            if let Some(p) = crate::render::heap_pprof::profile(&g.heap, time_nanos, comment) {
                write_file(dir, "heap.pb.gz", |w| pprof::write_gz(&p, w))?;
            }
        }
        write_file(dir, "timeline.pftrace", |w| timeline::write(capture, analysis, w))?;
        write_file(dir, "report.json", |w| json::render(r, w))?;
        wakeups.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        flames.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let txt = text::render(r, dir, &files);
    write_file(dir, "report.txt", |w| Ok(w.write_all(txt.as_bytes())?))?;
    remove_stale(dir, &files)?;
    Ok(txt)
}

/// wakeups.folded and offcpu.pb.gz (offcpu.folded is written with the on-CPU files).
fn write_wakeups(dir: &Path, analysis: &Analysis, time_nanos: i64) -> Result<()> {
    write_lines(dir, "wakeups.folded", &analysis.offcpu.wakeups_folded())?;
    write_file(dir, "offcpu.pb.gz", |w| pprof::write_gz(&profiles::offcpu(analysis, time_nanos), w))
}

/// The default report directory: ./rtrace-<pid>-<YYYYmmdd-HHMMSS> (local time).
pub fn default_dir(pid: u32) -> PathBuf {
    // SAFETY: localtime_r with valid pointers.
    let stamp = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    };
    PathBuf::from(format!("rtrace-{pid}-{stamp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_write_keeps_the_earlier_file_and_leaves_no_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "cpu.folded", |w| Ok(w.write_all(b"main;work 7\n")?)).unwrap();
        // Fails mid-way, as a full disk would: some bytes written, then an error.
        let err = write_file(dir.path(), "cpu.folded", |w| {
            w.write_all(b"main;other 1\n")?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into())
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with(&format!("writing {}: ", dir.path().join("cpu.folded").display())), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        assert_eq!(std::fs::read_to_string(dir.path().join("cpu.folded")).unwrap(), "main;work 7\n");
        assert_eq!(names(dir.path()), ["cpu.folded"], "no temporary file left");
    }

    #[test]
    fn stale_files_of_an_earlier_run_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["offcpu.svg", "wall.svg", "cpu.svg"] {
            std::fs::write(dir.path().join(f), "old").unwrap();
        }
        // This run (--no-offcpu) wrote cpu.svg only.
        remove_stale(dir.path(), &[("cpu.svg", "")]).unwrap();
        assert_eq!(names(dir.path()), ["cpu.svg"]);
    }

    #[test]
    fn only_an_empty_or_report_directory_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(foreign_entry(dir.path(), None), None);
        // A source tree: refused, naming a file.
        std::fs::write(dir.path().join("main.rs"), "").unwrap();
        std::fs::write(dir.path().join("cpu.svg"), "").unwrap();
        std::fs::write(dir.path().join(".rtrace-x1.tmp"), "").unwrap();
        assert_eq!(foreign_entry(dir.path(), None).as_deref(), Some("main.rs"));
        // A capture re-rendered where it lies.
        let saved = dir.path().join("saved.json");
        assert_eq!(foreign_entry(dir.path(), Some(&saved)), None);
        // An earlier report, with a file of the user's beside it: reused, the file left alone.
        std::fs::write(dir.path().join("report.json"), "{}").unwrap();
        assert_eq!(foreign_entry(dir.path(), None), None);
        // Not there yet: nothing in the way.
        assert_eq!(foreign_entry(&dir.path().join("new"), None), None);
    }
}

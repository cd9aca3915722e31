//! Writes every output file of a report directory. The one place that decides where bytes go.
use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use inferno::flamegraph::{color::BasicPalette, Palette};

use crate::{
    capture::Capture,
    render::{flamegraph, json, pprof, text},
    report::Analysis,
};

/// The files of a report directory, with what each holds (listed in report.txt).
pub const FILES: &[(&str, &str)] = &[
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
    ("capture.json", "raw capture; re-render with: rtrace report capture.json"),
];

/// The files written for this report (off-CPU files only when off-CPU was traced).
pub fn files_for(analysis: &Analysis) -> Vec<(&'static str, &'static str)> {
    let off = ["offcpu.svg", "offcpu.folded", "offcpu.pb.gz", "wakeups.folded", "wall.svg"];
    FILES.iter().copied().filter(|(n, _)| analysis.report.offcpu.is_some() || !off.contains(n)).collect()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> Result<()> {
    let mut w = create(dir, name)?;
    for line in lines {
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

fn write_svg(dir: &Path, name: &str, lines: &[String], style: flamegraph::Style<'_>) -> Result<()> {
    let mut w = create(dir, name)?;
    flamegraph::render(lines, style, &mut w)?;
    w.flush()?;
    Ok(())
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>> {
    let path = dir.join(name);
    Ok(BufWriter::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?))
}

/// Writes all files; returns the text report.
pub fn write_all(dir: &Path, capture: &Capture, analysis: &Analysis) -> Result<String> {
    let r = &analysis.report;
    let secs = r.session.duration_ms as f64 / 1000.0;

    let mut w = create(dir, "capture.json")?;
    serde_json::to_writer(&mut w, capture)?;
    w.flush()?;

    let folded = analysis.cpu.folded();
    write_lines(dir, "cpu.folded", &folded)?;
    let title = format!(
        "rtrace on-CPU: {} (pid {}), {secs:.1} s at {} Hz",
        r.target.comm, r.target.pid, r.session.sample_frequency_hz
    );
    write_svg(
        dir,
        "cpu.svg",
        &folded,
        flamegraph::Style { title, count_name: "samples", palette: Palette::Basic(BasicPalette::Hot) },
    )?;

    let period = 1_000_000_000 / r.session.sample_frequency_hz.max(1) as i64;
    let stacks: Vec<_> =
        analysis.cpu.stacks.iter().map(|(f, c)| (f.clone(), vec![*c as i64, *c as i64 * period])).collect();
    let spec = pprof::Spec {
        sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
        period_type: ("cpu", "nanoseconds"),
        period,
        time_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64 - r.session.duration_ms as i64 * 1_000_000)
            .unwrap_or(0),
        duration_nanos: r.session.duration_ms as i64 * 1_000_000,
        comment: format!("rtrace: pid {} ({})", r.target.pid, r.target.comm),
    };
    let mut w = create(dir, "cpu.pb.gz")?;
    pprof::write_gz(&pprof::build(&stacks, &spec), &mut w)?;
    w.flush()?;

    if r.offcpu.is_some() {
        write_offcpu(dir, analysis, spec.time_nanos)?;
    }

    let mut w = create(dir, "report.json")?;
    json::render(r, &mut w)?;
    w.flush()?;

    let txt = text::render(r, dir, &files_for(analysis));
    std::fs::write(dir.join("report.txt"), &txt).context("writing report.txt")?;
    Ok(txt)
}

fn write_offcpu(dir: &Path, analysis: &Analysis, time_nanos: i64) -> Result<()> {
    let r = &analysis.report;
    let secs = r.session.duration_ms as f64 / 1000.0;
    let who = format!("{} (pid {}), {secs:.1} s", r.target.comm, r.target.pid);
    let off = analysis.offcpu.folded();
    write_lines(dir, "offcpu.folded", &off)?;
    let style = |title: String, palette| flamegraph::Style { title, count_name: "us", palette };
    write_svg(dir, "offcpu.svg", &off, style(format!("rtrace off-CPU: {who}"), Palette::Basic(BasicPalette::Blue)))?;
    write_lines(dir, "wakeups.folded", &analysis.offcpu.wakeups_folded())?;
    let wall = crate::analyze::offcpu::wall_folded(&analysis.cpu, &analysis.offcpu, r.session.sample_frequency_hz);
    write_svg(
        dir,
        "wall.svg",
        &wall,
        style(format!("rtrace wall clock (on-CPU + off-CPU): {who}"), Palette::Basic(BasicPalette::Aqua)),
    )?;

    let stacks: Vec<_> = analysis
        .offcpu
        .entries
        .iter()
        .map(|e| {
            let mut f = e.frames.clone();
            f.push(crate::analyze::offcpu::state_frame(e.state));
            (f, vec![e.total_ns as i64, e.count as i64])
        })
        .collect();
    let spec = pprof::Spec {
        sample_types: &[("offcpu", "nanoseconds"), ("blocks", "count")],
        period_type: ("offcpu", "nanoseconds"),
        period: 1,
        time_nanos,
        duration_nanos: r.session.duration_ms as i64 * 1_000_000,
        comment: format!("rtrace off-CPU: pid {} ({})", r.target.pid, r.target.comm),
    };
    let mut w = create(dir, "offcpu.pb.gz")?;
    pprof::write_gz(&pprof::build(&stacks, &spec), &mut w)?;
    w.flush()?;
    Ok(())
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

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
    ("capture.json", "raw capture; re-render with: rtrace report capture.json"),
];

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
    let mut w = create(dir, "cpu.folded")?;
    for line in &folded {
        writeln!(w, "{line}")?;
    }
    w.flush()?;

    let mut w = create(dir, "cpu.svg")?;
    let title = format!("rtrace on-CPU: {} (pid {}), {secs:.1} s at {} Hz", r.target.comm, r.target.pid, r.session.sample_frequency_hz);
    flamegraph::render(&folded, flamegraph::Style { title, count_name: "samples", palette: Palette::Basic(BasicPalette::Hot) }, &mut w)?;
    w.flush()?;

    let period = 1_000_000_000 / r.session.sample_frequency_hz.max(1) as i64;
    let stacks: Vec<_> = analysis.cpu.stacks.iter().map(|(f, c)| (f.clone(), vec![*c as i64, *c as i64 * period])).collect();
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

    let mut w = create(dir, "report.json")?;
    json::render(r, &mut w)?;
    w.flush()?;

    let txt = text::render(r, dir, FILES);
    std::fs::write(dir.join("report.txt"), &txt).context("writing report.txt")?;
    Ok(txt)
}

/// The default report directory: ./rtrace-<pid>-<YYYYmmdd-HHMMSS> (local time).
pub fn default_dir(pid: u32) -> PathBuf {
    // SAFETY: localtime_r with valid pointers.
    let stamp = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!("{:04}{:02}{:02}-{:02}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
    };
    PathBuf::from(format!("rtrace-{pid}-{stamp}"))
}

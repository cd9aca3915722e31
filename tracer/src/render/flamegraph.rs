//! Flame graph SVGs through inferno, from folded lines, and the session's three (cpu,
//! off-CPU, wall): rendered once, written as files by output.rs and embedded in report.html.
use std::io::Write;

use anyhow::Result;
use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use crate::report::Analysis;

/// The session's flame graph SVGs; the off-CPU and wall ones only when off-CPU was traced.
pub struct Flames {
    pub cpu: Vec<u8>,
    pub offcpu: Option<Vec<u8>>,
    pub wall: Option<Vec<u8>>,
}

impl Flames {
    /// Renders all three from the analysis and its folded lines (`cpu`: cpu.folded's, `offcpu`:
    /// offcpu.folded's; the caller has them already when it writes those files).
    pub fn render(analysis: &Analysis, cpu_lines: &[String], off_lines: &[String]) -> Result<Flames> {
        let r = &analysis.report;
        let secs = r.session.duration_ms as f64 / 1000.0;
        let who = format!("{} (pid {}), {secs:.1} s", r.target.comm, r.target.pid);
        let svg = |lines: &[String], style: Style<'_>| -> Result<Vec<u8>> {
            let mut out = Vec::new();
            render(lines.iter().map(String::as_str), style, &mut out)?;
            Ok(out)
        };
        let cpu = svg(
            cpu_lines,
            Style {
                title: format!("rtrace on-CPU: {who} at {} Hz", r.session.sample_frequency_hz),
                count_name: "samples",
                palette: Palette::Basic(BasicPalette::Hot),
            },
        )?;
        if r.offcpu.is_none() {
            return Ok(Flames { cpu, offcpu: None, wall: None });
        }
        let us = |title: String, palette| Style { title, count_name: "us", palette };
        let offcpu = svg(off_lines, us(format!("rtrace off-CPU: {who}"), Palette::Basic(BasicPalette::Blue)))?;
        // offcpu.folded's lines are wall.svg's off-CPU part as they are: not folded again.
        let on = crate::analyze::offcpu::wall_on_cpu(cpu_lines, r.session.sample_frequency_hz);
        let mut wall = Vec::new();
        render(
            crate::analyze::offcpu::wall_lines(&on, off_lines),
            us(format!("rtrace wall clock (on-CPU + off-CPU): {who}"), Palette::Basic(BasicPalette::Aqua)),
            &mut wall,
        )?;
        Ok(Flames { cpu, offcpu: Some(offcpu), wall: Some(wall) })
    }
}

pub struct Style<'a> {
    pub title: String,
    pub count_name: &'a str,
    pub palette: Palette,
}

pub fn render<'a>(lines: impl Iterator<Item = &'a str>, style: Style<'_>, out: &mut dyn Write) -> Result<()> {
    let mut lines = lines.peekable();
    let mut opts = Options::default();
    opts.title = style.title;
    opts.count_name = style.count_name.to_owned();
    opts.colors = style.palette;
    // inferno refuses an empty profile; the user still gets a valid SVG that says so.
    if lines.peek().is_none() {
        let title = opts.title.replace('&', "&amp;").replace('<', "&lt;");
        write!(
            out,
            r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="80" xmlns="http://www.w3.org/2000/svg">
<text x="600" y="24" text-anchor="middle" font-size="17" font-family="Verdana">{title}</text>
<text x="600" y="56" text-anchor="middle" font-size="14" font-family="Verdana">no samples</text>
</svg>
"#
        )?;
        return Ok(());
    }
    flamegraph::from_lines(&mut opts, lines, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_svg_with_title_and_frames() {
        let lines = ["prog;main;leaf 95".to_owned(), "prog;main;other_[k] 5".to_owned()];
        let mut out = Vec::new();
        let style =
            Style { title: "rtrace: prog (pid 1), 2.0 s".into(), count_name: "samples", palette: Palette::default() };
        render(lines.iter().map(String::as_str), style, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("rtrace: prog (pid 1), 2.0 s"));
        assert!(svg.contains("leaf (95 samples, 95.00%)"));
    }

    #[test]
    fn empty_profile_is_a_valid_svg() {
        let mut out = Vec::new();
        let style = Style { title: "t <x>".into(), count_name: "samples", palette: Palette::default() };
        render(std::iter::empty(), style, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("no samples") && svg.contains("t &lt;x>"));
    }
}

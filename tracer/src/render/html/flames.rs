//! report.html's "Flame graphs" section: the session's inferno SVGs (cpu, off-CPU, wall), the
//! same bytes as cpu.svg, offcpu.svg and wall.svg, each in an `<iframe srcdoc>`. A document of
//! its own keeps each graph's script working (click to zoom, search, Ctrl-F) without the three
//! clashing: inferno's script declares globals (`frames`, `details`, `init` …) and finds its
//! elements by id, so three inline copies in one page would drive one another's elements. A
//! srcdoc frame is of the page's own origin and needs no file or URL beside the page. Its height
//! is the SVG's own, so nothing scrolls inside it, on screen or on paper.
use std::{fmt::Write as _, io::Write};

use super::{esc, esc_write};
use crate::{render::flamegraph::Flames, report::Analysis};

/// The `height="N"` of the SVG's root element (inferno writes pixels).
pub(super) fn svg_height(svg: &str) -> Option<u32> {
    let tag = &svg[svg.find("<svg")?..];
    let tag = &tag[..tag.find('>')?];
    let rest = &tag[tag.find(" height=\"")? + " height=\"".len()..];
    rest[..rest.find('"')?].parse().ok()
}

/// One graph's frame: the SVG (its XML prolog and doctype dropped: the frame's document is
/// HTML, where an `<svg>` element is SVG) in a page with no margin. The page so far (`s`) goes
/// to `out` first and the SVG is escaped straight into it: a build's graphs are ~7 MB, ~10
/// escaped, and the page held them twice over.
fn embed(s: &mut String, out: &mut dyn Write, (id, title): (&str, &str), svg: &[u8]) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(svg);
    let body = &text[text.find("<svg").unwrap_or(0)..];
    // Inferno's own default, should a graph ever come without a height.
    let height = svg_height(body).unwrap_or(600);
    let _ = write!(
        s,
        "<iframe class=\"flame\" id=\"flame-{id}\" title=\"{}\" scrolling=\"no\" style=\"height:{}px\" srcdoc=\"",
        esc(title),
        height + 2,
    );
    // The frame's document, escaped as the attribute's value.
    let head = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>html,body{{margin:0;overflow:hidden;background:#fff}}svg{{display:block;width:100%}}</style>\
         </head><body>",
        esc(title)
    );
    s.push_str(&esc(&head));
    out.write_all(s.as_bytes())?;
    s.clear();
    esc_write(out, body)?;
    s.push_str(&esc("</body></html>"));
    s.push_str("\"></iframe>\n");
    Ok(())
}

/// The section, into `s` but for the graphs, which go to `out` (see `embed`).
pub(super) fn section(
    s: &mut String,
    out: &mut dyn Write,
    analysis: &Analysis,
    flames: &Flames,
    with_files: bool,
) -> std::io::Result<()> {
    let r = &analysis.report;
    s.push_str(
        "<section id=\"flames\">\n<h2>Flame graphs</h2>\n<p class=\"meta\">Each box is a function, as wide as \
         its share; callers below, callees above. Click a box to zoom in, \"Reset Zoom\" to go back, \
         Ctrl-F (or \"Search\") to highlight a function.</p>\n",
    );
    let alone = |file: &str| {
        if with_files {
            format!(" <a href=\"{file}\">{file} alone</a>")
        } else {
            String::new()
        }
    };
    let hz = r.session.sample_frequency_hz;
    let _ = writeln!(
        s,
        "<h3 id=\"flame-cpu-title\">On-CPU — {} samples at {hz} Hz{}</h3>",
        r.cpu.total_samples,
        alone("cpu.svg")
    );
    if analysis.cpu.stacks.is_empty() {
        let _ = writeln!(
            s,
            "<p class=\"empty\">No on-CPU samples: the traced processes hardly ran on a CPU (at {hz} Hz one \
             sample stands for {} ms of CPU time).</p>",
            1000 / hz.max(1)
        );
    } else {
        embed(s, out, ("cpu", "on-CPU flame graph"), &flames.cpu)?;
    }

    s.push_str("<h3 id=\"flame-offcpu-title\">Off-CPU — where threads waited, by state (µs)");
    match (&r.offcpu, &flames.offcpu) {
        (Some(off), Some(svg)) => {
            let _ = writeln!(s, "{}</h3>", alone("offcpu.svg"));
            if analysis.offcpu.entries.is_empty() {
                let _ = writeln!(
                    s,
                    "<p class=\"empty\">No blocking recorded: no thread was off CPU longer than {} µs.</p>",
                    off.min_block_us
                );
            } else {
                embed(s, out, ("offcpu", "off-CPU flame graph"), svg)?;
            }
        }
        _ => s.push_str("</h3>\n<p class=\"empty\">Off-CPU time was not traced (--no-offcpu).</p>\n"),
    }

    s.push_str("<h3 id=\"flame-wall-title\">Wall clock — on-CPU and off-CPU time together (µs)");
    match &flames.wall {
        Some(svg) => {
            let _ = writeln!(s, "{}</h3>", alone("wall.svg"));
            if analysis.cpu.stacks.is_empty() && analysis.offcpu.entries.is_empty() {
                s.push_str("<p class=\"empty\">Nothing ran or waited long enough to be recorded.</p>\n");
            } else {
                embed(s, out, ("wall", "wall-clock flame graph"), svg)?;
            }
        }
        None => {
            s.push_str("</h3>\n<p class=\"empty\">The wall clock needs off-CPU time, not traced (--no-offcpu).</p>\n")
        }
    }
    s.push_str("</section>\n");
    Ok(())
}

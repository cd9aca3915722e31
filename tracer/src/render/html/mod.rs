//! report.html: the one page to open first — the findings, the children as a Gantt chart, the
//! three flame graphs (interactive), syscall latency histograms, the goroutine groups and links
//! to the other files of the report directory. Self-contained: every style, script and image is
//! in the file and nothing is fetched (a report copied off a machine must open anywhere, and a
//! report must not call home), so the page is hand-written here, no template engine, no CDN.
//! Pure: analysis in, bytes out; output.rs and `rtrace serve` decide where they go.
mod flames;
mod gantt;
mod sections;
#[cfg(test)]
mod tests;

use std::{fmt::Write as _, io::Write};

use anyhow::Result;

use crate::{
    analyze::children::{Finding, Severity},
    render::{flamegraph::Flames, text},
    report::Analysis,
};

/// What the page links to.
pub enum Links<'a> {
    /// The report directory's files, as output.rs writes them (relative links: the page sits
    /// among them).
    Directory(&'a [(&'a str, &'a str)]),
    /// Served by `rtrace serve` for one session: there is no directory beside it.
    Served,
}

/// HTML-escapes text and attribute values (double- or single-quoted).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `esc`, written to `out` (a flame graph's SVG is megabytes: no escaped copy of it).
fn esc_write(out: &mut dyn Write, s: &str) -> std::io::Result<()> {
    let mut rest = s.as_bytes();
    while let Some(i) = rest.iter().position(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')) {
        out.write_all(&rest[..i])?;
        out.write_all(match rest[i] {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            _ => b"&#39;",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_all(rest)
}

/// Seconds since attach, as the ledger in report.txt shows them.
fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

pub fn render(analysis: &Analysis, flames: &Flames, links: Links<'_>, out: &mut dyn Write) -> Result<()> {
    let r = &analysis.report;
    // All but the flame graphs, which go straight to `out` (flames.rs).
    let mut s = String::with_capacity(256 * 1024);
    let t = &r.target;
    let title = format!("rtrace report: pid {} ({})", t.pid, t.comm);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    s.push_str(
        "<nav><a href=\"#findings\">Findings</a><a href=\"#children\">Children</a>\
         <a href=\"#flames\">Flame graphs</a><a href=\"#syscalls\">Syscalls</a>\
         <a href=\"#goroutines\">Goroutines</a><a href=\"#files\">Files</a></nav>\n",
    );
    header(&mut s, analysis, &title);
    findings(&mut s, &r.findings);
    gantt::section(&mut s, r, &analysis.signals);
    flames::section(&mut s, out, analysis, flames, matches!(links, Links::Directory(_)))?;
    sections::syscalls(&mut s, r);
    sections::goroutines(&mut s, r);
    files(&mut s, &links);
    s.push_str("</body>\n</html>\n");
    out.write_all(s.as_bytes())?;
    Ok(())
}

/// What report.txt's first lines say: the target, its fate, the session, what was lost.
fn header(s: &mut String, analysis: &Analysis, title: &str) {
    let r = &analysis.report;
    let t = &r.target;
    let _ = writeln!(s, "<header>\n<h1>{}</h1>", esc(title));
    let mut lines = Vec::new();
    if !t.cmdline.is_empty() {
        lines.push(format!("<code>{}</code>", esc(&t.cmdline.join(" "))));
    }
    if let Some(from) = &t.exec_from {
        lines.push(format!("(after an exec from <code>{}</code>)", esc(&from.join(" "))));
    }
    lines.extend(t.status_lines().iter().map(|l| esc(l)));
    lines.push(esc(&text::session_line(&r.session)));
    let a = &r.accounting;
    lines.push(format!("samples: {} on CPU; lost {}; without stack {}", a.cpu_samples, a.lost_samples, a.stack_errors));
    for l in &lines {
        let _ = writeln!(s, "<p class=\"meta\">{l}</p>");
    }
    let mut lost = String::new();
    text::losses(&mut lost, a);
    for l in lost.lines() {
        let _ = writeln!(s, "<p class=\"warning\">{}</p>", esc(l));
    }
    s.push_str("</header>\n");
}

fn severity(sev: Severity) -> &'static str {
    match sev {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

/// Each finding as report.txt gives it (severity, kind, the sentence), with its evidence: the
/// kind's own fields of report.json.
fn findings(s: &mut String, findings: &[Finding]) {
    s.push_str("<section id=\"findings\">\n");
    if findings.is_empty() {
        s.push_str(
            "<h2>Findings</h2>\n<p class=\"empty\">None: no zombie, stalled wait, killed child, held pipe, \
             goroutine leak or GC pressure was seen.</p>\n</section>\n",
        );
        return;
    }
    let _ = writeln!(s, "<h2>Findings ({})</h2>\n<ol class=\"findings\">", findings.len());
    for f in findings {
        let sev = severity(f.severity);
        let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let _ = write!(
            s,
            "<li class=\"finding {sev}\" data-kind=\"{kind}\"><span class=\"sev\">{}</span> \
             <code class=\"kind\">{kind}</code> <span class=\"summary\">{}</span>",
            sev.to_uppercase(),
            esc(&f.summary)
        );
        if !f.fields.is_empty() {
            s.push_str("<dl class=\"evidence\">");
            for (k, v) in &f.fields {
                let v = match v {
                    serde_json::Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                let _ = write!(s, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
            }
            s.push_str("</dl>");
        }
        s.push_str("</li>\n");
    }
    s.push_str("</ol>\n</section>\n");
}

fn files(s: &mut String, links: &Links<'_>) {
    s.push_str("<section id=\"files\">\n<h2>Files</h2>\n");
    match links {
        Links::Directory(files) => {
            s.push_str("<ul class=\"files\">\n");
            for (name, what) in files.iter().filter(|(n, _)| *n != "report.html") {
                let _ = writeln!(s, "<li><a href=\"{0}\">{0}</a> — {1}</li>", esc(name), esc(what));
            }
            s.push_str("</ul>\n");
        }
        Links::Served => s.push_str(
            "<p class=\"empty\">Served by rtrace serve for one session: there is no report directory \
             (the same session's profiles are at /pid/PID/debug/pprof/profile, offcpu, wall; \
             <code>rtrace -o DIR</code> writes every file).</p>\n",
        ),
    }
    s.push_str("</section>\n");
}

/// The page's only style sheet: system fonts (nothing to fetch), a width that reads on a
/// laptop, and a print layout where each section starts a page and no frame scrolls.
const STYLE: &str = r#"
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #dadce0; --high: #b3261e; --medium: #a05a00; --low: #3b6ea5;
  --alive: #4a8fd9; --zombie: #d64541; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
  margin: 0 auto; max-width: 1360px; padding: 0 24px 48px; }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 0; z-index: 2; }
nav a { margin-right: 18px; color: var(--low); text-decoration: none; font-weight: 600; }
h1 { font-size: 22px; margin: 18px 0 6px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
p { margin: 4px 0; }
.meta { color: var(--muted); }
.warning { color: var(--medium); }
.empty { color: var(--muted); font-style: italic; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 13px; }
ol.findings { list-style: none; padding: 0; margin: 0; }
.finding { border-left: 5px solid var(--low); background: #f8f9fa; padding: 8px 12px; margin: 8px 0; }
.finding.high { border-color: var(--high); } .finding.medium { border-color: var(--medium); }
.sev { display: inline-block; min-width: 62px; text-align: center; color: #fff; background: var(--low);
  font-size: 12px; font-weight: 700; border-radius: 3px; padding: 1px 6px; }
.high .sev { background: var(--high); } .medium .sev { background: var(--medium); }
dl.evidence { display: flex; flex-wrap: wrap; margin: 4px 0 0 2px; font-size: 12.5px; color: #3c4043; }
dl.evidence dt { font-family: ui-monospace, "DejaVu Sans Mono", monospace; color: var(--muted); }
dl.evidence dt::after { content: ":"; }
dl.evidence dd { margin: 0 16px 0 5px; overflow-wrap: anywhere; }
svg.gantt { width: 100%; height: auto; display: block; }
svg.gantt text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--fg); }
svg.gantt text.label { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
svg.gantt .stripe { fill: #f3f4f6; }
svg.gantt .grid { stroke: #e3e5e8; }
svg.gantt .alive { fill: var(--alive); }
svg.gantt .zombie { fill: var(--zombie); }
svg.gantt .exec { fill: #fff; stroke: #1d1d1f; stroke-width: 1.2; }
svg.gantt .signal { fill: #f2b705; stroke: #6b5200; }
svg.gantt .signal.ignored { fill: #fff; }
svg.gantt .exit { stroke-width: 3; stroke: #188038; }
svg.gantt .exit.failed { stroke: #a05a00; } svg.gantt .exit.killed { stroke: #1d1d1f; }
.legend { font-size: 13px; color: var(--muted); margin: 4px 0 8px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin: 0 4px 0 12px; vertical-align: middle; }
iframe.flame { width: 100%; border: 1px solid var(--line); display: block; }
.hists { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 12px; }
figure.hist { margin: 0; border: 1px solid var(--line); padding: 8px 10px; }
figure.hist figcaption { font-size: 13px; margin-bottom: 4px; }
svg.histogram { width: 100%; height: auto; display: block; }
svg.histogram .hbar { fill: var(--alive); }
svg.histogram .hbar.zero { fill: none; }
svg.histogram text { font: 10px system-ui, "DejaVu Sans", sans-serif; fill: var(--muted); }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eceef1; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
details summary { cursor: pointer; color: var(--low); }
details pre { margin: 4px 0; white-space: pre-wrap; }
ul.files { columns: 2; }
@media (max-width: 900px) { ul.files { columns: 1; } }
@media print {
  nav { display: none; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  section { break-before: page; }
  section#findings { break-before: auto; }
  .finding, figure.hist, tr, iframe.flame, svg.gantt { break-inside: avoid; }
  iframe.flame { overflow: hidden; }
  a { color: inherit; text-decoration: none; }
}
"#;

//! report.html over the golden capture (render/golden.rs) with a literal child-process ledger:
//! what the page says, in which order, and that it fetches nothing.
use super::*;
use crate::{
    lifecycle::{LifeEvent, Lifecycle, ProcSnapshot, WaitCall, WaitTarget},
    render::{golden::literal_capture, output::files_for},
    report,
};

const MS: u64 = 1_000_000;
const ROOT: u32 = 4242;

fn fork(ts_ns: u64, pid: u32) -> LifeEvent {
    LifeEvent::Fork { ts_ns, pid, parent_pid: ROOT, parent_tid: ROOT, parent_comm: "mycli".into() }
}
fn exit(ts_ns: u64, pid: u32, status: i32) -> LifeEvent {
    LifeEvent::Exit { ts_ns, pid, comm: "kid".into(), status: Some(status) }
}
fn signal(ts_ns: u64, target_pid: u32, signal: i32) -> LifeEvent {
    LifeEvent::Signal {
        ts_ns,
        sender_pid: ROOT,
        sender_tid: ROOT,
        sender_comm: "mycli".into(),
        target_pid,
        target_comm: "kid".into(),
        signal,
        code: 0,
        result: 0,
    }
}
fn reap(start_ns: u64, end_ns: u64, pid: u32, status: i32) -> LifeEvent {
    LifeEvent::Wait(WaitCall {
        pid: ROOT,
        tid: ROOT,
        syscall: "wait4".into(),
        target: WaitTarget::Pid { pid },
        options: 0,
        start_ns,
        end_ns: Some(end_ns),
        ret: Some(pid as i64),
        reaped_pid: Some(pid),
        exit: crate::lifecycle::ExitInfo::from_wait_status(status),
    })
}
fn snap(pid: u32, state: char) -> ProcSnapshot {
    ProcSnapshot { pid, ppid: ROOT, state, comm: "kid".into(), ..Default::default() }
}

/// The golden session (2 s) with six children: 5001 runs `sh -c true` and is reaped 100 ms
/// after exiting; 5002–5004 exit with 1, 2, 3 and are never reaped; 5005 gets SIGTERM, then
/// SIGKILL, and is reaped; 5006 still runs at the end.
fn analysis() -> report::Analysis {
    let (mut c, mut r) = literal_capture();
    let mut events = vec![
        fork(100 * MS, 5001),
        LifeEvent::Exec {
            ts_ns: 110 * MS,
            pid: 5001,
            filename: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
        },
        exit(500 * MS, 5001, 0),
        reap(550 * MS, 600 * MS, 5001, 0),
    ];
    for (i, pid) in [5002, 5003, 5004].into_iter().enumerate() {
        events.push(fork(200 * MS + i as u64, pid));
        events.push(exit(300 * MS, pid, (i as i32 + 1) << 8));
    }
    events.extend([
        fork(400 * MS, 5005),
        signal(1000 * MS, 5005, 15),
        signal(1200 * MS, 5005, 9),
        exit(1200 * MS, 5005, 9),
        reap(1200 * MS, 1250 * MS, 5005, 9),
        fork(1500 * MS, 5006),
    ]);
    c.lifecycle = Lifecycle {
        root_pid: ROOT,
        events,
        final_procs: vec![snap(5002, 'Z'), snap(5003, 'Z'), snap(5004, 'Z'), snap(5006, 'S')],
        end_ns: 2000 * MS,
        ..Default::default()
    };
    report::analyze(&c, &mut r)
}

fn page(a: &report::Analysis) -> String {
    let flames = crate::render::flamegraph::Flames::render(a, &a.cpu.folded(), &a.offcpu.folded()).unwrap();
    let files = files_for(a);
    let mut out = Vec::new();
    render(a, &flames, Links::Directory(&files), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The `<g class="gantt-row">` elements, in order: (pid, the row's markup).
fn rows(html: &str) -> Vec<(u32, &str)> {
    html.split("<g class=\"gantt-row\" data-pid=\"")
        .skip(1)
        .map(|r| {
            let r = &r[..r.find("</g>").unwrap()];
            (r[..r.find('"').unwrap()].parse().unwrap(), r)
        })
        .collect()
}

/// (class, data-from-ns, data-to-ns) of each bar of a row.
fn row_bars(row: &str) -> Vec<(&str, u64, u64)> {
    row.split("<rect class=\"bar ")
        .skip(1)
        .map(|b| {
            let attr = |name: &str| -> u64 {
                let v = &b[b.find(&format!("{name}=\"")).unwrap() + name.len() + 2..];
                v[..v.find('"').unwrap()].parse().unwrap()
            };
            (&b[..b.find('"').unwrap()], attr("data-from-ns"), attr("data-to-ns"))
        })
        .collect()
}

#[test]
fn html_findings_come_first_then_one_gantt_row_per_child() {
    let a = analysis();
    let html = page(&a);
    let kinds: Vec<_> = a.report.findings.iter().map(|f| f.kind).collect();
    use crate::analyze::children::FindingKind::*;
    assert_eq!(kinds, [ZombieChild, ZombieChild, ZombieChild, KilledBySignal], "{:#?}", a.report.findings);
    let gantt = html.find("<svg class=\"gantt\"").expect("a Gantt chart");
    for f in &a.report.findings {
        let at = html.find(&esc(&f.summary)).unwrap_or_else(|| panic!("{} not in the page", f.summary));
        assert!(at < gantt, "finding after the Gantt chart: {}", f.summary);
    }
    assert_eq!(html.matches("<li class=\"finding high\" data-kind=\"zombie_child\">").count(), 3);
    assert!(html.contains("<dt>parent_pid</dt><dd>4242</dd>"), "evidence: the finding's fields");

    let rows = rows(&html);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [5001, 5002, 5003, 5004, 5005, 5006]);
    let bars: Vec<Vec<(&str, u64, u64)>> = rows.iter().map(|r| row_bars(r.1)).collect();
    let end = 2000 * MS;
    assert_eq!(bars[0], [("alive", 100 * MS, 500 * MS), ("zombie", 500 * MS, 600 * MS)]);
    for (i, b) in bars[1..4].iter().enumerate() {
        assert_eq!(*b, [("alive", 200 * MS + i as u64, 300 * MS), ("zombie", 300 * MS, end)], "never reaped");
        assert!(rows[i + 1].1.contains("never reaped by its parent pid 4242"));
        let code = format!("<title>pid {} exit {} at 0.300s</title>", rows[i + 1].0, i + 1);
        assert!(rows[i + 1].1.contains(&code), "exit marker: {}", rows[i + 1].1);
    }
    assert_eq!(bars[4], [("alive", 400 * MS, 1200 * MS), ("zombie", 1200 * MS, 1250 * MS)]);
    assert_eq!(bars[5], [("alive", 1500 * MS, end)], "running at the end: no zombie");
    // Markers: the exec, both signals with their sender, the kill.
    assert!(rows[0].1.contains("<title>exec sh at 0.110s</title>"), "{}", rows[0].1);
    let signals: Vec<&str> = rows[4].1.split("<circle class=\"mark signal\"").skip(1).collect();
    assert_eq!(signals.len(), 2);
    assert!(signals[0].contains("<title>SIGTERM from pid 4242 (mycli, tid 4242) at 1.000s</title>"));
    assert!(signals[1].contains("<title>SIGKILL from pid 4242 (mycli, tid 4242) at 1.200s</title>"));
    assert!(rows[4].1.contains("class=\"mark exit killed\""));
    assert!(rows[4].1.contains("killed by SIGKILL (sent by pid 4242 mycli, tid 4242)"));
}

#[test]
fn html_sections_in_order_and_self_contained() {
    let html = page(&analysis());
    let at = |id: &str| html.find(&format!("<section id=\"{id}\">")).unwrap_or_else(|| panic!("no section {id}"));
    let order = ["findings", "children", "flames", "syscalls", "goroutines", "files"].map(at);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Nothing fetched: no external script, style sheet, image, font or frame source.
    for bad in ["src=\"http", "src='http", "url(http", "<link", "@import", "<script src", "src=\"//", "href=\"//"] {
        assert!(!html.contains(bad), "{bad} in the page");
    }
    // The only hrefs are the page's own anchors and the report directory's files.
    for href in html.split("href=\"").skip(1).map(|h| &h[..h.find('"').unwrap()]) {
        assert!(href.starts_with('#') || !href.contains(':'), "{href}");
    }
    // Three graphs, each in a frame of its own with its script and its height.
    for (id, frame) in ["cpu", "offcpu", "wall"].iter().zip(["main.hash", "pipe_read", "main.build"]) {
        let start = html.find(&format!("<iframe class=\"flame\" id=\"flame-{id}\"")).unwrap_or_else(|| panic!("{id}"));
        let iframe = &html[start..start + html[start..].find("</iframe>").unwrap()];
        assert!(iframe.contains("srcdoc=\"&lt;!DOCTYPE html&gt;"), "{id}");
        assert!(iframe.contains("&lt;script type=&quot;text/ecmascript&quot;&gt;"), "{id}: inferno's script");
        assert!(iframe.contains(frame), "{id}: {frame}");
        assert!(!iframe.contains("&lt;?xml"), "{id}: no XML prolog in an HTML frame");
        assert!(iframe.contains("scrolling=\"no\" style=\"height:"), "{id}");
    }
    // Links to every other file of the directory, none to itself.
    let files: Vec<&str> = html.split("<li><a href=\"").skip(1).map(|l| &l[..l.find('"').unwrap()]).collect();
    let expected: Vec<&str> = files_for(&analysis()).iter().map(|f| f.0).filter(|f| *f != "report.html").collect();
    assert_eq!(files, expected);
    assert!(html.contains("@media print"));
}

/// The golden capture's read: 3 calls in [4 µs, 8 µs) (bucket 12) and one of 1 s (bucket 29):
/// one bar per bucket from 12 to 29, the 16 between them empty.
#[test]
fn html_syscall_histogram_has_a_bar_per_bucket() {
    let a = analysis();
    let html = page(&a);
    let fig = &html[html.find("<figure class=\"hist\" data-syscall=\"read\">").expect("read's histogram")..];
    let fig = &fig[..fig.find("</figure>").unwrap()];
    let bars: Vec<(&str, &str)> = fig
        .split("data-bucket=\"")
        .skip(1)
        .map(|b| {
            let count = &b[b.find("data-count=\"").unwrap() + 12..];
            (&b[..b.find('"').unwrap()], &count[..count.find('"').unwrap()])
        })
        .collect();
    assert_eq!(bars.len(), 18, "{fig}");
    assert_eq!(bars.first(), Some(&("12", "3")));
    assert_eq!(bars.last(), Some(&("29", "1")));
    assert_eq!(bars.iter().filter(|b| b.1 == "0").count(), 16);
    assert!(fig.contains("<title>[4 µs, 8 µs): 3 calls</title>"), "{fig}");
    assert_eq!(html.matches("<figure class=\"hist\"").count(), 1, "one syscall, one histogram");
    assert_eq!(html.matches("<tr><td class=\"num\">1.00 s</td><td><code>read(").count(), 1, "the slowest call");
}

/// Sections with nothing to show say why.
#[test]
fn html_empty_sections_say_why() {
    let (mut c, mut r) = literal_capture();
    c.cpu_samples.clear();
    c.session.min_block_us = None;
    c.session.slow_top = None;
    let a = report::analyze(&c, &mut r);
    let flames = crate::render::flamegraph::Flames::render(&a, &[], &[]).unwrap();
    let mut out = Vec::new();
    render(&a, &flames, Links::Served, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    for why in [
        "None: no zombie, stalled wait",
        "No children were traced",
        "No on-CPU samples",
        "Off-CPU time was not traced (--no-offcpu)",
        "The wall clock needs off-CPU time",
        "Syscall latency was not traced (--no-syscalls)",
        "No Go process was traced",
        "Served by rtrace serve for one session",
    ] {
        assert!(html.contains(why), "{why}");
    }
    assert!(!html.contains("<iframe"), "no graph to embed");
    assert!(!html.contains("<svg class=\"gantt\""));
}

#[test]
fn html_escapes_text_and_attributes() {
    assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    assert_eq!(flames::svg_height(r#"<?xml?><svg version="1.1" width="1200" height="390" x="1">"#), Some(390));
    assert_eq!(flames::svg_height("<svg width=\"1\">"), None);
}

/// Processes that existed before attach: alive from the chart's start; a zombie at attach has
/// no alive bar, only its zombie bar from the start.
#[test]
fn html_gantt_bars_of_processes_from_before_attach() {
    let end = 2000 * MS;
    let mut c = analysis().report.children[0].clone();
    (c.forked_at_ns, c.exited_at_ns, c.reaped_at_ns, c.alive_at_end) = (None, None, None, true);
    assert_eq!(gantt::bars(&c, end), gantt::Bars { alive: Some((0, end)), zombie: None });
    (c.alive_at_end, c.zombie_at_attach, c.never_reaped) = (false, true, true);
    assert_eq!(gantt::bars(&c, end), gantt::Bars { alive: None, zombie: Some((0, end)) });
    // Reaped during the session: the zombie bar ends at the reap.
    (c.never_reaped, c.reaped_at_ns) = (false, Some(700 * MS));
    assert_eq!(gantt::bars(&c, end), gantt::Bars { alive: None, zombie: Some((0, 700 * MS)) });
}

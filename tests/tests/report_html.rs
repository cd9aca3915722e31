//! report.html opened in a real headless Chromium (Debian's `chromium`, installed by
//! `cargo xtask setup`; root required for the sessions): the DOM after the page's scripts ran
//! holds the findings, one Gantt row per child with its alive and zombie bars, and each flame
//! graph's frames, with inferno's click-to-zoom working inside its frame; a screenshot is taken;
//! and no request leaves the file (Chromium's own NetLog, with every host unresolvable).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::*;

/// Added to a copy of the page (probe.html): once the page and its frames have loaded and
/// inferno's scripts ran, it reads each flame graph's document (a srcdoc frame is of the page's
/// origin), clicks its narrowest box, and writes what it saw as JSON into `<pre id="probe">`,
/// which `--dump-dom` then prints with the rest of the DOM.
const PROBE: &str = r#"<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var result = {};
    document.querySelectorAll('iframe.flame').forEach(function (f) {
      var r = {functions: []};
      try {
        var d = f.contentDocument;
        var boxes = d.querySelectorAll('#frames > g');
        boxes.forEach(function (g) {
          r.functions.push(g.querySelector('title').textContent.replace(/ \([^(]*\)$/, ''));
        });
        // inferno's init() makes the graph fluid: it drops the width attribute.
        r.script_ran = !d.querySelector('svg').hasAttribute('width');
        var narrow = null, w = 100;
        boxes.forEach(function (g) {
          var x = parseFloat(g.querySelector('rect').getAttribute('width'));
          if (x > 0 && x <= w) { w = x; narrow = g; }
        });
        if (narrow) {
          r.zoomed = narrow.querySelector('title').textContent;
          r.before = w;
          narrow.querySelector('rect').dispatchEvent(new MouseEvent('click', {bubbles: true}));
          r.after = parseFloat(narrow.querySelector('rect').getAttribute('width'));
          r.unzoom_shown = !d.getElementById('unzoom').classList.contains('hide');
        }
      } catch (e) { r.error = String(e); }
      result[f.id] = r;
    });
    var pre = document.createElement('pre');
    pre.id = 'probe';
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  }, 300);
});
</script>"#;

/// Headless Chromium with a fresh profile, its own background traffic (updates, sync) off, and
/// every host name unresolvable: a page that needed the network would come out incomplete.
fn chromium(profile: &Path, args: &[&str], url: &Path) -> std::process::Output {
    let out = Command::new("timeout")
        .args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--no-first-run", "--disable-default-apps", "--disable-extensions"])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .args(args)
        .arg(format!("file://{}", url.display()))
        .output()
        .expect("running chromium (Debian's chromium: `cargo xtask setup` installs it)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The requests the page made (not the browser's own, whose initiator is "not an origin"),
/// from Chromium's NetLog.
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().unwrap();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start))
        .filter_map(|e| {
            let p = &e["params"];
            let url = p["url"].as_str()?;
            (p["initiator"] != "not an origin" && !url.starts_with("file:")).then(|| url.to_owned())
        })
        .collect()
}

/// What Chromium made of a report directory's page.
struct Opened {
    /// The DOM after the scripts ran.
    dom: String,
    /// The probe's findings, by frame id (flame-cpu, flame-offcpu, flame-wall).
    flames: Value,
    requests: Vec<String>,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&")
}

/// Opens DIR/report.html (as probe.html, the probe added) and takes a screenshot of the page
/// itself: DIR/report.png.
fn open(dir: &Path) -> Opened {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let probe = dir.join("probe.html");
    std::fs::write(&probe, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let profile = dir.join("chromium-profile");
    let netlog = dir.join("netlog.json");
    let budget = ["--virtual-time-budget=10000", "--dump-dom"];
    let out = chromium(&profile, &[&format!("--log-net-log={}", netlog.display()), budget[0], budget[1]], &probe);
    let dom = String::from_utf8(out.stdout).unwrap();
    let json = dom.split("<pre id=\"probe\">").nth(1).and_then(|p| p.split("</pre>").next());
    let flames =
        serde_json::from_str(&unescape(json.unwrap_or_else(|| panic!("the probe did not run: {dom}")))).unwrap();
    let png = dir.join("report.png");
    chromium(
        &profile,
        &["--window-size=1366,2400", &format!("--screenshot={}", png.display())],
        &dir.join("report.html"),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1366, "screenshot width");
    assert!(bytes.len() > 20_000, "a blank screenshot? {} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());
    Opened { dom, flames, requests: page_requests(&netlog) }
}

/// A flame graph's frame as the probe saw it: drawn by inferno's script, with `functions`
/// among its boxes, and a click on its narrowest box zoomed that box to the full width (from
/// under 90 % when `narrow`: a graph whose stacks all share one chain may have none).
fn check_flame(o: &Opened, id: &str, functions: &[&str], narrow: bool) {
    let f = &o.flames[id];
    assert!(f.is_object() && f.get("error").is_none(), "{id}: {f}");
    assert_eq!(f["script_ran"], true, "{id}: inferno's init() did not run: {f}");
    let have: Vec<&str> = f["functions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for want in functions {
        assert!(have.contains(want), "{id}: no box {want} in {have:?}");
    }
    assert!(!narrow || f["before"].as_f64().unwrap() < 90.0, "{id}: {f}");
    assert!(f["after"].as_f64().unwrap() > 99.9, "{id}: click did not zoom: {f}");
    assert_eq!(f["unzoom_shown"], true, "{id}: {f}");
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The `data-…-ns` value of the first bar of `class` in a row of the DOM.
fn bar(row: &str, class: &str, attr: &str) -> Option<u64> {
    let b = row.split(&format!("<rect class=\"bar {class}\"")).nth(1)?;
    let v = &b[b.find(&format!("{attr}=\""))? + attr.len() + 2..];
    v[..v.find('"')?].parse().ok()
}

/// The zombies fixture: 3 children that exit at once and are never reaped.
#[test]
fn zombies_report_html_in_chromium() {
    if !privileged("zombies_report_html_in_chromium") {
        return;
    }
    let bin = fixture("zombies");
    // Not -q: the summary on stdout ends with the page to open.
    let run = rtrace("report_html_zombies", &["-d", "1500ms", "--", bin.to_str().unwrap(), "3"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let stdout = run.stdout();
    let page: PathBuf = run.dir.join("report.html");
    assert!(stdout.trim_end().ends_with(&format!("\nopen {}", page.display())), "{stdout}");
    let mut zombies: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("zombie_pids="))
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    zombies.sort_unstable();
    let r = run.report();
    let target = r["target"]["pid"].as_u64().unwrap();
    let o = open(&run.dir);
    assert_eq!(o.requests, Vec::<String>::new(), "the page fetched something");

    // Findings first: each summary before the Gantt chart.
    let findings = r["findings"].as_array().unwrap();
    assert_eq!(findings.iter().filter(|f| f["kind"] == "zombie_child").count(), 3, "{findings:?}");
    assert_eq!(o.dom.matches("data-kind=\"zombie_child\"").count(), 3);
    let gantt = o.dom.find("<svg class=\"gantt\"").expect("a Gantt chart in the DOM");
    for f in findings {
        let at = o.dom.find(&esc(f["summary"].as_str().unwrap())).unwrap_or_else(|| panic!("{f} not in the DOM"));
        assert!(at < gantt, "{f} after the Gantt chart");
    }

    // One row per child of the ledger, in its order, each a zombie to the end.
    let ledger = r["children"].as_array().unwrap();
    let rows: Vec<&str> = o.dom.split("<g class=\"gantt-row\" data-pid=\"").skip(1).collect();
    let row_pids: Vec<u64> = rows.iter().map(|r| r[..r.find('"').unwrap()].parse().unwrap()).collect();
    assert_eq!(row_pids, ledger.iter().map(|c| c["pid"].as_u64().unwrap()).collect::<Vec<_>>());
    let mut sorted = row_pids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, zombies, "the rows are the fixture's three children");
    for (row, c) in rows.iter().zip(ledger) {
        let row = &row[..row.find("</g>").unwrap()];
        let exited = c["exited_at_ns"].as_u64().unwrap();
        assert_eq!(bar(row, "alive", "data-from-ns"), c["forked_at_ns"].as_u64(), "{row}");
        assert_eq!(bar(row, "alive", "data-to-ns"), Some(exited), "{row}");
        assert_eq!(bar(row, "zombie", "data-from-ns"), Some(exited), "{row}");
        let end = exited + c["zombie_age_ns"].as_u64().unwrap();
        assert_eq!(bar(row, "zombie", "data-to-ns"), Some(end), "zombie to the session's end: {row}");
        assert!(row.contains(&format!("never reaped by its parent pid {target}")), "{row}");
    }

    // The off-CPU and wall graphs: main sleeping, drawn and zoomable. (Too few on-CPU samples
    // of this idle fixture for a cpu graph: cpu_report_html_in_chromium has it.)
    // nanosleep's 200 ms beside sleep's 1.3 s: narrow boxes to zoom into.
    check_flame(&o, "flame-offcpu", &["zombies", "main", "[sleep]", "__GI___nanosleep", "__sleep"], true);
    check_flame(&o, "flame-wall", &["zombies", "main", "[sleep]", "__GI___nanosleep", "__sleep"], true);
    assert!(o.dom.contains("<figure class=\"hist\" data-syscall=\"clock_nanosleep\">"), "syscall histograms");
    assert!(o.dom.contains("<a href=\"report.json\">report.json</a>"));
    assert_no_rtrace_programs();
}

/// The cpu_chain fixture: the on-CPU graph has its call chain.
#[test]
fn cpu_report_html_in_chromium() {
    if !privileged("cpu_report_html_in_chromium") {
        return;
    }
    let bin = fixture("cpu_chain");
    let run = rtrace("report_html_cpu", &["-q", "--", bin.to_str().unwrap(), "1"]);
    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr());
    let o = open(&run.dir);
    assert_eq!(o.requests, Vec::<String>::new(), "the page fetched something");
    let chain = ["cpu_chain", "main", "outer", "middle", "leaf"];
    check_flame(&o, "flame-cpu", &chain, false);
    check_flame(&o, "flame-wall", &chain, false);
    assert!(o.dom.contains("No children were traced"), "the empty Children section says why");
    assert_no_rtrace_programs();
}

/// The request check itself: a page that loads an image from the network is caught.
#[test]
fn a_page_request_is_seen() {
    let dir = report_dir("report_html_control");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("control.html");
    std::fs::write(&page, "<html><body><img src=\"http://rtrace-control.invalid/x.png\"></body></html>").unwrap();
    let netlog = dir.join("netlog.json");
    let log = format!("--log-net-log={}", netlog.display());
    chromium(&dir.join("chromium-profile"), &[&log, "--virtual-time-budget=5000", "--dump-dom"], &page);
    assert_eq!(page_requests(&netlog), ["http://rtrace-control.invalid/x.png"]);
}

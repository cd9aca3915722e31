//! report.txt's Go sections: "Goroutines", "GC", "Heap", one block per Go process.
use std::fmt::Write;

use crate::analyze::go::GoReport;

pub fn sections(s: &mut String, go: &[GoReport]) {
    for g in go {
        let _ = writeln!(s, "\nGo runtime: pid {} ({})", g.pid, g.go_version);
        if let Some(u) = &g.unavailable {
            let _ = writeln!(s, "  {u}");
            continue;
        }
        goroutines(s, g);
        gc(s, g);
        heap(s, g);
    }
}

fn goroutines(s: &mut String, g: &GoReport) {
    let _ = writeln!(s, "  Goroutines: {}", g.goroutines.total);
}

fn gc(_s: &mut String, _g: &GoReport) {}

/// "Heap": the in-use totals and the functions holding the most, or why there is no profile.
fn heap(s: &mut String, g: &GoReport) {
    let h = &g.heap;
    if let Some(u) = &h.unavailable {
        let _ = writeln!(s, "  Heap: {u}");
        return;
    }
    let (Some(t), Some(rate)) = (h.totals, h.rate) else { return };
    let _ = writeln!(
        s,
        "  Heap (as of the last GC; sampled every {} allocated, estimated as pprof does): {} in use in {} objects, \
         {} allocated in all — heap.pb.gz",
        human_bytes(rate as i64),
        human_bytes(t.inuse_bytes),
        t.inuse_objects,
        human_bytes(t.alloc_bytes)
    );
    if h.top.is_empty() {
        return;
    }
    let _ = writeln!(s, "    {:>10}  {:>9}  function (called from)", "in use", "objects");
    for site in &h.top {
        let from =
            if site.called_from.is_empty() { String::new() } else { format!(" <- {}", site.called_from.join(" <- ")) };
        let _ = writeln!(
            s,
            "    {:>10}  {:>9}  {}{from}",
            human_bytes(site.values.inuse_bytes),
            site.values.inuse_objects,
            site.function
        );
    }
}

/// 1536 → "1.5 KiB".
fn human_bytes(b: i64) -> String {
    let f = b as f64;
    match b {
        ..=1023 => format!("{b} B"),
        1024..=1_048_575 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

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

fn heap(_s: &mut String, _g: &GoReport) {}

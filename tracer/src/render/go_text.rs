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

/// How many groups each Goroutines list shows.
const GROUPS: usize = 3;

fn goroutines(s: &mut String, g: &GoReport) {
    use crate::render::goroutines_txt::{bracket, duration};
    let r = &g.goroutines;
    let states: Vec<String> = r
        .by_state
        .iter()
        .map(|(state, n)| {
            let reasons: Vec<String> = r.by_wait_reason.iter().map(|(w, n)| format!("{w} {n}")).collect();
            if state == "waiting" && !reasons.is_empty() {
                format!("{state} {n} ({})", reasons.join(", "))
            } else {
                format!("{state} {n}")
            }
        })
        .collect();
    let runtime = if r.system > 0 { format!(" (and runtime goroutines: {})", r.system) } else { String::new() };
    let _ = writeln!(s, "  Goroutines: {} at {}: {}{runtime}", r.total, duration(r.at_ms), states.join(", "));
    let line = |s: &mut String, grp: &crate::analyze::goroutines::GoroutineGroup| {
        let func = where_(&grp.stack);
        let by = grp.created_by.as_ref().map(|c| format!(" (created by {})", c.function)).unwrap_or_default();
        let _ = writeln!(s, "    {:>6}  [{}]  {func}{by}", grp.count, bracket(grp));
    };
    if r.groups.is_empty() {
        return;
    }
    let _ = writeln!(s, "   largest groups:");
    for grp in r.groups.iter().take(GROUPS) {
        line(s, grp);
    }
    let mut blocked: Vec<_> = r.groups.iter().skip(GROUPS).filter(|g| g.blocked_ms.is_some()).collect();
    blocked.sort_by_key(|g| std::cmp::Reverse(g.blocked_ms));
    if !blocked.is_empty() {
        let _ = writeln!(s, "   longest blocked:");
        for grp in blocked.into_iter().take(GROUPS) {
            line(s, grp);
        }
    }
}

fn gc(_s: &mut String, _g: &GoReport) {}

fn heap(_s: &mut String, _g: &GoReport) {}

/// Whether a Go function is the standard library's: its package path's first element has no
/// dot ("os/exec", "net/http"; not "github.com/…") and it is not package main.
fn standard(function: &str) -> bool {
    let first = match function.split_once('/') {
        Some((first, _)) => first,
        None => function.split('.').next().unwrap_or_default(),
    };
    !first.contains('.') && first != "main"
}

/// The innermost frame of the program's own code, and when that is the standard library's, the
/// program's function that called into it: "os/exec.(*Cmd).Wait ← main.runChild".
fn where_(stack: &[crate::symbolize::Frame]) -> String {
    let Some(inner) = crate::symbolize::caller_function(stack).or_else(|| crate::symbolize::leaf_function(stack))
    else {
        return "[stack not read]".into();
    };
    let caller = standard(&inner)
        .then(|| {
            stack.iter().rev().find(|f| {
                f.kind == crate::symbolize::FrameKind::User
                    && !standard(&f.function)
                    && !crate::symbolize::is_plumbing(f)
            })
        })
        .flatten();
    match caller {
        Some(c) => format!("{inner} ← {}", c.function),
        None => inner,
    }
}

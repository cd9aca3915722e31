//! goroutines.txt: the goroutine dump of every Go process, as Go's `debug=2` dump prints it but
//! grouped: one block per group of identical goroutines (state, wait reason, stack, creation
//! site), with its count, how long it has been parked, its frames innermost first (the
//! runtime's unexported frames hidden, as Go hides them) and "created by". Frames read as Go
//! prints them — `function(...)` then `\tfile:line +0xoffset` — when the binary's line tables
//! were read (`GoroutineGroup::traceback`); otherwise names only.
use std::fmt::Write as _;

use crate::analyze::{
    go::GoReport,
    goroutines::{GoroutineGroup, GOIDS},
};

/// "3.1 s", "250 ms".
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

/// "chan receive, at least 3.1 s" (what Go prints in brackets, with the time rtrace saw).
pub fn bracket(g: &GoroutineGroup) -> String {
    let mut s = g.wait_reason.clone().unwrap_or_else(|| g.state.clone());
    if let Some(ms) = g.blocked_ms {
        let _ = write!(s, ", {}{}", if g.blocked_at_least { "at least " } else { "" }, duration(ms));
    }
    if g.forever {
        s.push_str(", forever");
    }
    s
}

/// Go's traceback rule (`showfuncinfo`): the runtime's unexported functions are hidden.
fn shown(name: &str) -> bool {
    match name.strip_prefix("runtime.") {
        Some(rest) => rest.starts_with(|c: char| c.is_ascii_uppercase()),
        None => true,
    }
}

pub fn render(go: &[GoReport]) -> String {
    let mut s = String::new();
    for r in go {
        let g = &r.goroutines;
        let _ = write!(s, "pid {} ({}): ", r.pid, r.go_version);
        if let Some(u) = &r.unavailable {
            let _ = writeln!(s, "{u}\n");
            continue;
        }
        let _ = writeln!(
            s,
            "{} goroutines in the snapshot at {} ({} snapshots; runtime goroutines not shown: {}{})\n",
            g.total,
            duration(g.at_ms),
            g.snapshots,
            g.system,
            if g.dropped > 0 { format!("; {} changed while read and were dropped", g.dropped) } else { String::new() }
        );
        for grp in &g.groups {
            group(&mut s, grp);
        }
    }
    s
}

fn group(s: &mut String, g: &GoroutineGroup) {
    if g.count == 1 {
        let _ = writeln!(s, "goroutine {} [{}]:", g.goids.first().copied().unwrap_or(0), bracket(g));
    } else {
        let _ = writeln!(s, "{} goroutines [{}]:", g.count, bracket(g));
    }
    if !g.traceback.is_empty() {
        traceback(s, g);
    } else {
        names_only(s, g);
    }
    if g.count > 1 {
        let ids: Vec<String> = g.goids.iter().map(u64::to_string).collect();
        let more = if g.count as usize > GOIDS { " …" } else { "" };
        let _ = writeln!(s, "# goroutines {}{more}", ids.join(" "));
    }
    s.push('\n');
}

/// Go's `debug=2` frames: "function(...)" and "\tfile:line +0xoff" (Go prints the argument
/// words of a physical frame where "..." stands; rtrace does not read them), then "created
/// by F in goroutine N" (Go ≥ 1.21; 1.19 records no parent) and its file:line.
fn traceback(s: &mut String, g: &GoroutineGroup) {
    let frames: Vec<_> = g.traceback.iter().rev().collect();
    let mut visible: Vec<_> = frames.iter().filter(|f| !f.hidden).collect();
    if visible.is_empty() {
        visible = frames.iter().collect();
    }
    for f in visible {
        let _ = writeln!(s, "{}(...)\n\t{}", f.function, f.location());
    }
    if let Some(c) = &g.created_by {
        let by = c.goid.map(|id| format!(" in goroutine {id}")).unwrap_or_default();
        match &c.at {
            Some(at) => {
                let _ = writeln!(s, "created by {}{by}\n\t{}", at.function, at.location());
            }
            None => {
                let _ = writeln!(s, "created by {}{by}", c.function);
            }
        }
    }
}

fn names_only(s: &mut String, g: &GoroutineGroup) {
    let names: Vec<&str> = g.frames.iter().rev().map(String::as_str).collect();
    let mut visible: Vec<&str> = names.iter().copied().filter(|n| shown(n)).collect();
    if visible.is_empty() {
        visible = names;
    }
    if visible.is_empty() {
        let _ = writeln!(s, "[stack not read]");
    }
    for n in visible {
        let _ = writeln!(s, "{n}");
    }
    if let Some(c) = &g.created_by {
        let by = c.goid.map(|id| format!(" in goroutine {id}")).unwrap_or_default();
        let _ = writeln!(s, "created by {}{by}", c.function);
    }
}

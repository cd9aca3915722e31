//! The Go runtime view end to end (root required), on every build it supports here: Go 1.19
//! and Go 1.27, plain and stripped (`-s -w`). Ground truth is the program's own goroutine
//! profile, written by the fixture while rtrace reads it from outside.
use std::collections::BTreeMap;

use serde_json::Value;
use tests::*;

/// The same from rtrace's report.json groups (frames root first), main's own group left out.
fn rtrace_groups(go: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for g in go["goroutines"]["groups"].as_array().unwrap() {
        let frames: Vec<&str> = g["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let Some(f) = frames.iter().rev().find(|f| f.starts_with("main.")) else { continue };
        if *f == "main.main" {
            continue;
        }
        *out.entry(f.to_string()).or_default() += g["count"].as_u64().unwrap();
    }
    out
}

fn go_of(r: &Value) -> &Value {
    let pid = &r["target"]["pid"];
    r["go"].as_array().unwrap_or_else(|| panic!("no go section: {r}")).iter().find(|g| &g["pid"] == pid).unwrap()
}

/// Goroutines counted per parked site equal the program's own goroutine profile, every frame
/// named; the Cmd.Wait goroutine is tied to its child in the wait_stall summary.
fn parked(go: Go, stripped: bool) {
    let exe = go_fixture_variant("go_parked", go, stripped);
    let dir = report_dir("go_parked_profile");
    std::fs::create_dir_all(&dir).unwrap();
    let own = dir.join("own-goroutine.txt");
    let run = rtrace_env(
        "go_parked",
        &["-q", "-d", "3s", "--", exe.to_str().unwrap(), "0", "6"],
        &[("GO_PARKED_PROFILE", own.to_str().unwrap())],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let r = run.report();
    let g = go_of(&r);
    assert!(g.get("unavailable").is_none(), "{g}");
    let own = goroutines_by_main(&std::fs::read_to_string(&own).unwrap());
    let expected: BTreeMap<String, u64> = [
        ("main.recvWorker", 3),
        ("main.selectWorker", 2),
        ("main.sleeper", 4),
        ("main.waiter", 5),
        ("main.runChild", 1),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_owned(), n))
    .collect();
    assert_eq!(own, expected, "the fixture's own profile");
    assert_eq!(rtrace_groups(g), own, "{}", g["goroutines"]);
    // Every frame of every group named (no [unknown]).
    for grp in g["goroutines"]["groups"].as_array().unwrap() {
        for f in grp["frames"].as_array().unwrap() {
            assert!(!f.as_str().unwrap().starts_with("[unknown]"), "{grp}");
        }
    }
    assert!(g["goroutines"]["snapshots"].as_u64().unwrap() >= 3, "attach, ~1/s, end: {}", g["goroutines"]);
    // The goroutine waiting in os/exec.(*Cmd).Wait is named in the wait's finding.
    let stall = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "wait_stall")
        .unwrap_or_else(|| panic!("no wait_stall: {}", r["findings"]));
    let s = stall["summary"].as_str().unwrap();
    assert!(
        s.contains("(main.runChild)")
            && s.contains("os/exec.(*Cmd).Wait")
            && s.contains("for child pid")
            && s.contains("(sleep "),
        "{s}"
    );
    // The files a user opens.
    let txt = std::fs::read_to_string(run.dir.join("goroutines.txt")).unwrap();
    assert!(txt.contains("5 goroutines [") && txt.contains("main.waiter"), "{txt}");
    let top = std::process::Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(run.dir.join("goroutine.pb.gz"))
        .output()
        .unwrap();
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    assert!(String::from_utf8_lossy(&top.stdout).contains("runtime.gopark"));
    assert_no_rtrace_programs();
}

/// The blocks of a goroutine dump (Go's `debug=2`, or rtrace's goroutines.txt): the goroutine
/// ids of each (Go's header, or rtrace's "goroutine N [" / "# goroutines …") and its other
/// lines, each frame's arguments written "(...)" (rtrace does not read them).
fn dump_blocks(text: &str) -> Vec<(Vec<u64>, Vec<String>)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut ids = Vec::new();
        let mut body = Vec::new();
        for l in block.lines() {
            if let Some(rest) = l.strip_prefix("goroutine ") {
                ids.extend(rest.split(' ').next().and_then(|n| n.parse::<u64>().ok()));
            } else if let Some(rest) = l.strip_prefix("# goroutines ") {
                ids.extend(rest.split(' ').filter_map(|n| n.parse::<u64>().ok()));
            } else if l.contains(" goroutines [") || l.starts_with("pid ") {
                continue;
            } else if l.starts_with('\t') || l.starts_with("created by ") || !l.ends_with(')') {
                body.push(l.to_owned());
            } else {
                let name = &l[..l.rfind('(').unwrap()];
                body.push(format!("{name}(...)"));
            }
        }
        if !ids.is_empty() {
            out.push((ids, body));
        }
    }
    out
}

/// goroutines.txt reads as Go's own `debug=2` dump: for every parked goroutine of the
/// fixture's own sites, the same functions (inlined calls included) at the same file:line and
/// offset, and the same "created by" function and file:line.
fn dump_lines(go: Go, stripped: bool) {
    let exe = go_fixture_variant("go_parked", go, stripped);
    let dir = report_dir("go_parked_dump");
    std::fs::create_dir_all(&dir).unwrap();
    let own = dir.join("own-debug2.txt");
    let run = rtrace_env(
        "go_parked_dump",
        &["-q", "--no-offcpu", "-d", "2s", "--", exe.to_str().unwrap(), "0", "5"],
        &[("GO_PARKED_DUMP", own.to_str().unwrap())],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let own: BTreeMap<u64, Vec<String>> =
        dump_blocks(&std::fs::read_to_string(&own).unwrap()).into_iter().map(|(ids, body)| (ids[0], body)).collect();
    let txt = std::fs::read_to_string(run.dir.join("goroutines.txt")).unwrap();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (ids, body) in dump_blocks(&txt) {
        // main (goroutine 1) was writing the profile when Go dumped it: not comparable.
        let Some(site) = body.iter().find(|l| l.starts_with("main.") && !l.starts_with("main.main(")) else {
            continue;
        };
        assert!(body.iter().any(|l| l.starts_with("\t") && l.contains("go_parked.go:")), "{txt}");
        for id in &ids {
            let theirs = own.get(id).unwrap_or_else(|| panic!("goroutine {id} not in Go's own dump"));
            assert_eq!(&body, theirs, "goroutine {id}:\n{txt}");
        }
        *seen.entry(site.clone()).or_default() += ids.len() as u64;
    }
    let want: BTreeMap<String, u64> =
        [("recvWorker", 3), ("selectWorker", 2), ("sleeper", 4), ("waiter", 5), ("runChild", 1)]
            .into_iter()
            .map(|(f, n)| (format!("main.{f}(...)"), n))
            .collect();
    assert_eq!(seen, want, "{txt}");
    // goroutine.pb.gz holds the same file:line (pprof's Function.filename and Line.line).
    let top = std::process::Command::new("go")
        .args(["tool", "pprof", "-lines", "-top"])
        .arg(run.dir.join("goroutine.pb.gz"))
        .output()
        .unwrap();
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    let top = String::from_utf8_lossy(&top.stdout);
    let recv = own.values().find(|b| b.first().is_some_and(|f| f == "main.recvWorker(...)")).unwrap();
    let at = recv[1].trim().split(' ').next().unwrap(); // "/…/go_parked.go:47"
    assert!(top.lines().any(|l| l.contains(&format!("main.recvWorker {at}"))), "{at}:\n{top}");
    assert_no_rtrace_programs();
}

/// A goroutine every 100 ms from main.leakLoop, never finishing: one goroutine_leak for that
/// site (not for the fixed pool), with what the program's own counter says it leaked.
fn leak(go: Go, stripped: bool) {
    let exe = go_fixture_variant("go_leak", go, stripped);
    let run = rtrace("go_leak", &["-q", "-d", "3s", "--", exe.to_str().unwrap()]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let r = run.report();
    let leaks: Vec<&Value> =
        r["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "goroutine_leak").collect();
    assert_eq!(leaks.len(), 1, "{}", r["findings"]);
    let s = leaks[0]["summary"].as_str().unwrap();
    assert!(s.contains("main.leakLoop") && s.contains("main.waitForReply") && s.contains("chan receive"), "{s}");
    assert_eq!(leaks[0]["severity"], "medium", "{s}");
    // The churn uprobes counted the creations at that one site: about 10 a second.
    let g = go_of(&r);
    let groups = rtrace_groups(g);
    let leaked = groups["main.waitForReply"];
    assert!((25..=45).contains(&leaked), "{groups:?}");
    assert_eq!(groups["main.poolWorker"], 8, "{groups:?}");
    assert_no_rtrace_programs();
}

/// --no-go: no Go section, no goroutine files.
fn no_go(go: Go, stripped: bool) {
    let exe = go_fixture_variant("go_parked", go, stripped);
    let run = rtrace("go_no_go", &["-q", "--no-go", "-d", "1s", "--", exe.to_str().unwrap(), "0", "3"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(run.report().get("go").is_none());
    assert!(!run.dir.join("goroutines.txt").exists() && !run.dir.join("goroutine.pb.gz").exists());
}

/// A copy of the stripped Go 1.19 fixture whose buildinfo claims another version.
fn relabelled(claim: &str) -> std::path::PathBuf {
    let exe = go_fixture_variant("go_parked", Go::Debian119, true);
    let mut bytes = std::fs::read(&exe).unwrap();
    let v = Command::new("go").args(["version"]).arg(&exe).output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout);
    let real = v.split_whitespace().nth(1).unwrap().to_owned(); // "go1.19.8"
    assert_eq!(real.len(), claim.len(), "same length, so the buildinfo stays well formed");
    // Every copy: .go.buildinfo's and runtime.buildVersion's.
    let ats: Vec<usize> =
        bytes.windows(real.len()).enumerate().filter(|(_, w)| *w == real.as_bytes()).map(|(i, _)| i).collect();
    assert!(!ats.is_empty());
    for at in ats {
        bytes[at..at + real.len()].copy_from_slice(claim.as_bytes());
    }
    let out = exe.with_file_name(format!("go_parked-claims-{claim}"));
    std::fs::write(&out, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

use std::process::Command;

/// An unknown version with no DWARF: said so, never guessed.
#[test]
fn unknown_version_is_unavailable() {
    if !privileged("unknown_version_is_unavailable") {
        return;
    }
    let exe = relabelled("go1.99.8");
    let run = rtrace("go_unknown", &["-q", "-d", "1s", "--", exe.to_str().unwrap(), "0", "3"]);
    let r = run.report();
    let g = go_of(&r);
    assert_eq!(g["unavailable"], "Go runtime view unavailable: Go 1.99 is not supported (1.19–1.27)", "{g}");
    let txt = std::fs::read_to_string(run.dir.join("report.txt")).unwrap();
    assert!(txt.contains("Go runtime view unavailable: Go 1.99 is not supported"), "{txt}");
    assert_no_rtrace_programs();
}

/// A known version whose table does not fit the binary (1.19 code claiming 1.23): validation
/// against the live process refuses it.
#[test]
fn wrong_offsets_fail_validation() {
    if !privileged("wrong_offsets_fail_validation") {
        return;
    }
    let exe = relabelled("go1.23.8");
    let run = rtrace("go_wrong_offsets", &["-q", "-d", "1s", "--", exe.to_str().unwrap(), "0", "3"]);
    let r = run.report();
    let g = go_of(&r);
    let why = g["unavailable"].as_str().unwrap_or_else(|| panic!("read with wrong offsets: {g}"));
    assert!(why.starts_with("Go runtime view unavailable: "), "{why}");
    assert_eq!(g["goroutines"]["total"], 0, "{g}");
    assert_no_rtrace_programs();
}

macro_rules! variants {
    ($($f:ident),*) => {
        mod go119 { use super::*; $(#[test] fn $f() { if privileged(stringify!($f)) { super::$f(Go::Debian119, false) } })* }
        mod go119_stripped { use super::*; $(#[test] fn $f() { if privileged(stringify!($f)) { super::$f(Go::Debian119, true) } })* }
        mod go127 { use super::*; $(#[test] fn $f() { if privileged(stringify!($f)) { super::$f(Go::Modern, false) } })* }
        mod go127_stripped { use super::*; $(#[test] fn $f() { if privileged(stringify!($f)) { super::$f(Go::Modern, true) } })* }
    };
}
variants!(parked, dump_lines, leak, no_go);

/// `cargo xtask bench go`'s snapshot part (ignored in the suite): rtrace's read of 10,000
/// parked goroutines, per snapshot, on the four builds, from the capture's own timings
/// (wall time of each read, µs; the budget is 20 ms of CPU).
#[test]
#[ignore]
fn snapshot_cost() {
    if !privileged("snapshot_cost") {
        return;
    }
    for (go, stripped) in GO_VARIANTS {
        let exe = go_fixture_variant("go_parked", go, stripped);
        let run =
            rtrace("go_snapshot_cost", &["-q", "--no-offcpu", "-d", "5s", "--", exe.to_str().unwrap(), "10000", "8"]);
        let c: Value = serde_json::from_str(&std::fs::read_to_string(run.dir.join("capture.json")).unwrap()).unwrap();
        let g = c["go"].as_array().unwrap().iter().find(|g| g["pid"] == c["target"]["pid"]).unwrap();
        let mut us: Vec<u64> =
            g["snapshots"].as_array().unwrap().iter().map(|s| s["read_us"].as_u64().unwrap()).collect();
        let live = g["snapshots"].as_array().unwrap().last().unwrap()["live"].as_u64().unwrap();
        us.sort();
        println!(
            "bench go snapshot: {go:?} stripped={stripped}: {live} goroutines, {} snapshots, read {} / {} / {} µs (min / median / max wall)",
            us.len(),
            us[0],
            us[us.len() / 2],
            us[us.len() - 1]
        );
        assert!(live >= 10_000, "{live}");
    }
    assert_no_rtrace_programs();
}

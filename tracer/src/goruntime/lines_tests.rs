//! The line-table decoder against `go tool addr2line` (Go's own reader of the same tables,
//! from the toolchain that built the binary) on the fixture builds, and the inline expansion
//! against a function whose inlined call is known.
use std::{io::Write, process::Command};

use super::*;
use crate::goruntime::binary;

fn go_tool(go: ::tests::Go) -> std::path::PathBuf {
    match go {
        ::tests::Go::Debian119 => "go".into(),
        ::tests::Go::Modern => ::tests::root_dir().join("target/go-modern/bin/go"),
    }
}

/// `go tool addr2line` of `pcs`: (function, file, line) per pc.
fn addr2line(go: ::tests::Go, exe: &std::path::Path, pcs: &[u64]) -> Vec<(String, String, i64)> {
    let mut child = Command::new(go_tool(go))
        .args(["tool", "addr2line"])
        .arg(exe)
        .env("GOTOOLCHAIN", "local")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("go tool addr2line");
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| {
            let (file, line) = c[1].rsplit_once(':').unwrap();
            (c[0].to_owned(), file.to_owned(), line.parse().unwrap_or_else(|_| panic!("{c:?}")))
        })
        .collect()
}

fn load(path: &std::path::Path) -> Lines {
    let data = binary::open(path.to_str().unwrap()).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    Lines::load(&bin).unwrap()
}

/// Every 29th function, at its entry, a third and two thirds in: the same file:line as
/// `go tool addr2line`, on the four builds.
#[test]
fn lines_equal_go_tool_addr2line() {
    // Not the PIE builds: Go 1.19's addr2line does not read their `.data.rel.ro.gopclntab`.
    for (go, stripped) in ::tests::GO_VARIANTS {
        let exe = ::tests::go_fixture_variant("go_parked", go, stripped);
        let l = load(&exe);
        let mut pcs = Vec::new();
        for w in l.funcs.windows(2).step_by(29) {
            let (a, b) = (l.text_start + u64::from(w[0].0), l.text_start + u64::from(w[1].0));
            pcs.extend([a, a + (b - a) / 3, a + 2 * (b - a) / 3]);
        }
        assert!(pcs.len() > 100, "{}", pcs.len());
        let want = addr2line(go, &exe, &pcs);
        let mut checked = 0;
        for (pc, (func, file, line)) in pcs.iter().zip(want) {
            if func == "?" {
                continue; // padding between functions
            }
            // Line -1: Go's tables give the pc no line (alignment padding after a function).
            let want = u32::try_from(line).ok().map(|line| (file, line));
            assert_eq!(l.line(*pc), want, "{pc:#x} in {func} ({go:?}, stripped {stripped})");
            checked += 1;
        }
        assert!(checked > 100, "{checked}");
    }
}

/// go_parked built as a PIE (`-buildmode=pie`), plain or stripped.
fn pie(go: ::tests::Go, stripped: bool) -> std::path::PathBuf {
    let root = ::tests::root_dir();
    let suffix = match go {
        ::tests::Go::Debian119 => "go119",
        ::tests::Go::Modern => "modern",
    };
    let out =
        root.join(format!("target/fixtures/lines-go_parked-{suffix}-pie{}", if stripped { "-stripped" } else { "" }));
    let mut c = Command::new(go_tool(go));
    c.args(["build", "-buildmode=pie"]);
    if stripped {
        c.arg("-ldflags=-s -w");
    }
    let ok = c
        .arg("-o")
        .arg(&out)
        .arg(root.join("tests/fixtures/go_parked.go"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", root.join(format!("target/go-cache-{suffix}")))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    out
}

/// The eight builds: each Go, plain and stripped, as an executable and as a PIE.
fn builds() -> Vec<(::tests::Go, bool, std::path::PathBuf)> {
    let mut v: Vec<_> =
        ::tests::GO_VARIANTS.iter().map(|&(go, s)| (go, s, ::tests::go_fixture_variant("go_parked", go, s))).collect();
    v.extend(::tests::GO_VARIANTS.iter().map(|&(go, s)| (go, s, pie(go, s))));
    v
}

/// `main.main` of go_parked holds `go recvWorker(never)`: the created-by line of that call's
/// return address is the `go` statement's line in go_parked.go.
#[test]
fn created_by_names_the_go_statement() {
    let src = std::fs::read_to_string(::tests::root_dir().join("tests/fixtures/go_parked.go")).unwrap();
    let want = 1 + src.lines().position(|l| l.trim() == "go recvWorker(never)").unwrap() as u32;
    for (go, stripped, exe) in builds() {
        let data = binary::open(exe.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let l = Lines::load(&bin).unwrap();
        assert!(l.has_inline(), "go:func.* not found ({go:?}, stripped {stripped})");
        let main = bin.func("main.main").unwrap();
        // The pcs in main.main whose line is the go statement; created_by of the last + 1
        // (a return address just past it) is that line.
        let at: Vec<u64> = (main.start..main.end).filter(|&pc| l.line(pc).is_some_and(|(_, n)| n == want)).collect();
        assert!(!at.is_empty(), "{go:?}");
        let c = l.created_by(at[0] + 1).unwrap();
        assert_eq!((c.function.as_str(), c.line, c.offset), ("main.main", want, Some(at[0] + 1 - main.start)));
        assert!(c.file.ends_with("tests/fixtures/go_parked.go"), "{}", c.file);
    }
}

/// At every pc of runtime.main: the inlined calls first, marked inlined and without offset,
/// then runtime.main itself with pc − entry; at some pc a call is inlined. (The frames Go
/// itself prints for the fixture's goroutines are compared in tests/go.rs `dump_lines`.)
/// The wrapper funcID found is the one of Go's own enum (`funcID_wrapper`: 21 in 1.19's
/// runtime/symtab.go, `FuncIDWrapper`: 23 in 1.27's internal/abi/symtab.go).
#[test]
fn inlined_calls_expand_to_their_callers() {
    for (go, stripped, exe) in builds() {
        let data = binary::open(exe.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let l = Lines::load(&bin).unwrap();
        let wrapper = match go {
            ::tests::Go::Debian119 => 21,
            ::tests::Go::Modern => 23,
        };
        assert_eq!(l.wrapper, Some(wrapper), "{go:?}");
        let f = bin.func("runtime.main").unwrap();
        let mut deepest = Vec::new();
        for pc in f.start + 1..f.end {
            let fr = l.frames(pc, true);
            assert_eq!(fr.last().unwrap().function, "runtime.main");
            assert_eq!(fr.last().unwrap().offset, Some(pc - f.start));
            assert!(fr[..fr.len() - 1].iter().all(|x| x.inlined && x.offset.is_none()));
            if fr.len() > deepest.len() {
                deepest = fr;
            }
        }
        // runtime.main inlines at least one call (e.g. runtime.lockOSThread, gcenable's callees).
        assert!(deepest.len() >= 2, "{go:?} stripped {stripped}: {deepest:?}");
        assert!(deepest[0].function != "runtime.main" && deepest[0].line > 0, "{deepest:?}");
    }
}

#[test]
fn go_hides_what_its_traceback_hides() {
    assert!(hidden("runtime.gopark", false));
    assert!(!hidden("runtime.Gosched", false));
    assert!(!hidden("runtime.(*Func).Name", false));
    assert!(hidden("runtime.(*mheap).alloc", false));
    assert!(hidden("runtime.(*frames).Next", false));
    assert!(!hidden("runtime.gopanic", false));
    assert!(hidden("runtime.gopanic", true));
    assert!(hidden("nodot", false));
    assert!(!hidden("sync.(*WaitGroup).Wait", false));
}

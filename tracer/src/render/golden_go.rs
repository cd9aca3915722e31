//! Golden-file tests of the Go outputs (goroutines.txt, report.txt's Go section, report.json's
//! `go`) and the goroutine profile, on the literal Go capture of analyze/goroutines_tests.
//! Regenerate with RTRACE_UPDATE_GOLDEN=1 after an intended change, and review the diff.
use std::{io::Read, path::Path};

use prost::Message;

use crate::{
    analyze::goroutines::tests::{go_capture, resolver},
    render::{go_text, goroutine_pprof, goroutines_txt, pprof::Profile},
    report,
};

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/go").join(name);
    if std::env::var_os("RTRACE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (RTRACE_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

/// The literal capture with four more single goroutines parked in chan receive for 0–3 s
/// and goroutine 1 in its syscall for 2.5 s (so report.txt lists the longest blocked beyond the
/// largest groups, and a goroutine in the standard library with the program's caller).
fn capture() -> crate::capture::Capture {
    let mut c = go_capture();
    let p = &mut c.go[0];
    // Goroutine 1 seen in its syscall since 0.5 s.
    p.last[0].parked_since_ns = Some(500_000_000);
    for i in 0..4u64 {
        let mut g = p.last[4].clone();
        g.goid = 30 + i;
        g.wait_reason = 14;
        g.gopc += 0x10 * (i + 1);
        g.parked_since_ns = Some((3 - i) * 1_000_000_000);
        g.parked_before_first = i == 3;
        p.last.push(g);
    }
    c
}

#[test]
fn golden_go_outputs() {
    let c = capture();
    let a = report::analyze(&c, &mut resolver());
    check("goroutines.txt", &goroutines_txt::render(&a.report.go));
    let mut s = String::new();
    go_text::sections(&mut s, &a.report.go, a.report.target.pid, 0);
    check("report.txt", &s);
    check("report.json", &(serde_json::to_string_pretty(&a.report.go).unwrap() + "\n"));
}

fn decoded(p: &Profile) -> Profile {
    let mut gz = Vec::new();
    crate::render::pprof::write_gz(p, &mut gz).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    Profile::decode(&raw[..]).unwrap()
}

/// One sample per distinct stack, its count, frames leaf first; runtime goroutines left out.
#[test]
fn goroutine_profile_counts_per_stack() {
    let a = report::analyze(&go_capture(), &mut resolver());
    let d = decoded(&goroutine_pprof::profile(&a.report.go, 1, 3_000_000_000));
    let s = |i: i64| d.string_table[i as usize].as_str();
    assert_eq!((s(d.sample_type[0].r#type), s(d.sample_type[0].unit)), ("goroutine", "count"));
    let pt = d.period_type.as_ref().unwrap();
    assert_eq!((s(pt.r#type), s(pt.unit), d.period), ("goroutine", "count", 1));
    let names = |sample: &crate::render::pprof::Sample| -> Vec<&str> {
        sample
            .location_id
            .iter()
            .map(|id| s(d.function[d.location[*id as usize - 1].line[0].function_id as usize - 1].name))
            .collect()
    };
    let mut got: Vec<(i64, Vec<&str>)> = d.sample.iter().map(|x| (x.value[0], names(x))).collect();
    got.sort();
    assert_eq!(
        got,
        [
            (1, vec!["runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.main.func1"]),
            (
                1,
                vec![
                    "syscall.Syscall6",
                    "os.(*Process).pidfdWait",
                    "os.(*Process).Wait",
                    "os/exec.(*Cmd).Wait",
                    "os/exec.(*Cmd).Run",
                    "main.runChild",
                    "main.main",
                    "runtime.main"
                ]
            ),
            (3, vec!["runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.worker"]),
        ]
    );
}

/// `go tool pprof -top` reads the file (Go 1.19 from Debian, as CI has it).
#[test]
fn go_tool_pprof_reads_the_goroutine_profile() {
    let go = Path::new("/usr/bin/go");
    assert!(go.exists(), "/usr/bin/go (Debian golang-go) is needed: cargo xtask setup installs it");
    let a = report::analyze(&go_capture(), &mut resolver());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("goroutine.pb.gz");
    let mut f = std::fs::File::create(&file).unwrap();
    crate::render::pprof::write_gz(&goroutine_pprof::profile(&a.report.go, 1, 3_000_000_000), &mut f).unwrap();
    drop(f);
    let out = std::process::Command::new(go)
        .args(["tool", "pprof", "-top"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("PPROF_TMPDIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Type: goroutine"), "{text}");
    // flat: 4 of the 5 goroutines in runtime.gopark, 1 in syscall.Syscall6.
    let line = |f: &str| {
        text.lines().find(|l| l.trim_end().ends_with(f)).map(|l| l.split_whitespace().next().unwrap().to_owned())
    };
    assert_eq!(line(" runtime.gopark").as_deref(), Some("4"), "{text}");
    assert_eq!(line(" syscall.Syscall6").as_deref(), Some("1"), "{text}");
}

/// Two Go processes: one profile, each sample labelled with its process's pid.
#[test]
fn goroutine_profile_labels_samples_by_pid_when_several_processes() {
    let a = report::analyze(&go_capture(), &mut resolver());
    let mut other = a.report.go[0].clone();
    other.pid = 200;
    let d = decoded(&goroutine_pprof::profile(&[a.report.go[0].clone(), other], 1, 1));
    let pid = d.string_table.iter().position(|s| s == "pid").expect("a pid label key") as i64;
    let by_pid = |p: i64| {
        d.sample.iter().filter(|s| s.label.iter().any(|l| l.key == pid && l.num == p)).map(|s| s.value[0]).sum::<i64>()
    };
    assert_eq!((by_pid(100), by_pid(200), d.sample.len()), (5, 5, 6));
    // One process: no label.
    let d = decoded(&goroutine_pprof::profile(&a.report.go, 1, 1));
    assert!(d.sample.iter().all(|s| s.label.is_empty()));
}

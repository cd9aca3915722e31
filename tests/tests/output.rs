//! The report directory (root required for the sessions): a re-render in place keeps its input
//! whole, a second run removes what it does not write, a directory that is not a report is
//! refused before anything starts.
use std::process::Command;

use tests::*;

#[test]
fn rerender_in_place_and_stale_files() {
    if !privileged("rerender_in_place_and_stale_files") {
        return;
    }
    let run = rtrace("output_rerender", &["-q", "--", "sh", "-c", "sleep 0.2"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let cap = run.dir.join("capture.json");
    let before: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cap).unwrap()).unwrap();
    let out = Command::new(rtrace_bin()).args(["report", "-q"]).arg(&cap).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cap).unwrap()).unwrap();
    assert_eq!(before, after, "re-rendering changed its own input");
    assert!(run.dir.join("offcpu.svg").exists());
    // pprof opens the off-CPU profile as time, not as a count of blocks.
    let top = Command::new("go").args(["tool", "pprof", "-top"]).arg(run.dir.join("offcpu.pb.gz")).output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.lines().any(|l| l == "Type: offcpu"), "{top}");
    let top = Command::new("go").args(["tool", "pprof", "-top"]).arg(run.dir.join("cpu.pb.gz")).output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).lines().any(|l| l == "Type: cpu"));
    // "without stack" counts samples only: off-CPU walks that failed (a sleeping shell's
    // exit has no user stack left) are counted apart.
    let a = &before["accounting"];
    let by_reason: u64 = a["stack_errors_by_reason"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(a["stack_errors"].as_u64(), Some(by_reason));
    assert!(a["stack_errors"].as_u64() <= a["cpu_samples"].as_u64(), "{a}");
    assert!(a.get("offcpu_stack_errors").is_some(), "{a}");

    // The same directory again, without off-CPU: no off-CPU file of the first run stays.
    let out = Command::new(rtrace_bin())
        .args(["-q", "--no-offcpu", "-o"])
        .arg(&run.dir)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&run.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let want = [
        "capture.json",
        "cpu.folded",
        "cpu.pb.gz",
        "cpu.svg",
        "report.html",
        "report.json",
        "report.txt",
        "timeline.pftrace",
    ];
    assert_eq!(names, want);
    assert_no_rtrace_programs();
}

#[test]
fn a_directory_that_is_not_a_report_is_refused() {
    // Checked after the privilege check: unprivileged, that one answers first.
    if !privileged("a_directory_that_is_not_a_report_is_refused") {
        return;
    }
    let dir = report_dir("output_foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.md"), "mine").unwrap();
    let marker = dir.join("ran");
    let out = Command::new(rtrace_bin())
        .arg("-o")
        .arg(&dir)
        .args(["--", "sh", "-c", &format!("touch {}", marker.display())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "rtrace: output directory {} is not an rtrace report (it holds \"notes.md\"); give a new or empty directory with -o DIR",
            dir.display()
        )
    );
    assert!(!marker.exists(), "the command ran");
    assert_eq!(std::fs::read_to_string(dir.join("notes.md")).unwrap(), "mine");
}

//! The build is reproducible: the eBPF crate's dependencies resolve to Cargo.lock's versions
//! under the pinned nightly that builds it (tracer/build.rs), so a new crate release cannot
//! change what a fresh machine builds.
use std::process::Command;

use tests::root_dir;

/// The pinned eBPF toolchain, as xtask's set-up installs it.
fn ebpf_toolchain() -> String {
    let setup = std::fs::read_to_string(root_dir().join("xtask/src/setup.rs")).unwrap();
    let line = setup.lines().find(|l| l.contains("pub const EBPF_TOOLCHAIN")).expect("EBPF_TOOLCHAIN in setup.rs");
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn ebpf_dependencies_resolve_from_the_lock_file() {
    let toolchain = ebpf_toolchain();
    let build_rs = std::fs::read_to_string(root_dir().join("tracer/build.rs")).unwrap();
    assert!(
        build_rs.contains(&format!("\"{toolchain}\"")),
        "tracer/build.rs and xtask/src/setup.rs pin different nightlies"
    );
    // --locked --offline: fails if the nightly's resolver would change Cargo.lock or needs a
    // crate the lock does not name.
    let out = Command::new("rustup")
        .args(["run", &toolchain, "cargo", "metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", "bpfel-unknown-none", "--manifest-path"])
        .arg(root_dir().join("tracer-ebpf/Cargo.toml"))
        .output()
        .expect("rustup (installed by cargo xtask setup)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = String::from_utf8_lossy(&out.stdout);
    assert!(meta.contains("\"name\":\"aya-ebpf\""), "aya-ebpf missing from the eBPF crate's metadata");
}

//! Builds the eBPF object (tracer-ebpf) for the bpf target with the pinned nightly whose LLVM
//! matches bpf-linker's (see README "Toolchain"), and leaves it in OUT_DIR for
//! `include_bytes_aligned!`. With RTRACE_SKIP_EBPF=1 (or AYA_BUILD_SKIP=1) an empty stub is
//! written instead, so userspace-only work and unit tests build without the BPF toolchain; the
//! loader rejects the stub with a clear message.
use std::{env, fs, path::PathBuf};

/// Keep in sync with xtask/src/setup.rs (EBPF_TOOLCHAIN).
const EBPF_TOOLCHAIN: &str = "nightly-2026-08-05";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RTRACE_SKIP_EBPF");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("tracer-ebpf");
    let skip =
        env::var("RTRACE_SKIP_EBPF").is_ok_and(|v| v == "1") || env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1");
    if skip {
        fs::write(&out, b"")?;
        return Ok(());
    }
    // aya-build watches the eBPF crate; the types it shares with us live in tracer-common, and
    // a change there (a counter index, a struct layout) must rebuild the object too.
    let common = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../tracer-common");
    println!("cargo:rerun-if-changed={}", common.display());
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../tracer-ebpf");
    let root = root.to_str().expect("utf-8 path").to_owned();
    // The nested build (the pinned nightly's cargo) resolves tracer-ebpf's crates from the
    // workspace's Cargo.lock, and build-std's from the toolchain's own library/Cargo.lock; it
    // has no --locked flag to pass, so a lock it rewrote would go unnoticed: compare.
    let lock = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../Cargo.lock");
    let before = fs::read(&lock).ok();
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: &root, ..Default::default() }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )?;
    if fs::read(&lock).ok() != before {
        anyhow::bail!(
            "the eBPF build ({EBPF_TOOLCHAIN}) changed {}: its crates must resolve to the versions locked there; \
             restore it (git checkout Cargo.lock) and pin the crate that moved in Cargo.toml",
            lock.display()
        );
    }
    Ok(())
}

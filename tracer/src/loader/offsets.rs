//! Kernel struct offsets the eBPF side reads through, found in the kernel's BTF: the
//! optional ones (u32::MAX when missing: the program then does without) and the credential
//! offsets an owner's session cannot do without.
use anyhow::{Context, Result};

/// The offsets tracer-ebpf's creds.rs reads a task's credentials with, for an owner's session
/// (none otherwise: each lookup walks the kernel's BTF). They must all be known, else
/// descendants could not be checked and the session is refused; mm_struct's flags (dumpable)
/// are optional.
pub(super) fn cred_offsets(vmlinux: &[u8], owner: bool) -> Result<Vec<(&'static str, u32)>> {
    let names = ["TASK_CRED_OFF", "CRED_UID_OFF", "CRED_CAP_EFF_OFF", "MM_FLAGS_OFF"];
    if !owner {
        return Ok(names.iter().map(|&n| (n, u32::MAX)).collect());
    }
    let off = |s: &str, m: &str| crate::btf::member_offset(vmlinux, s, m);
    let found = (|| -> Result<[u32; 3]> {
        let (task, uid, fsgid) = (off("task_struct", "cred")?, off("cred", "uid")?, off("cred", "fsgid")?);
        // uid, gid, suid, sgid, euid, egid, fsuid, fsgid: eight u32 in a row, read as one.
        anyhow::ensure!(fsgid == uid + 28, "struct cred's ids are not eight consecutive u32 on this kernel");
        Ok([task, uid, off("cred", "cap_effective")?])
    })()
    .context("a non-root caller's session checks each descendant's credentials at exec")?;
    let mm_flags = off("mm_struct", "flags").unwrap_or(u32::MAX);
    Ok(names.into_iter().zip(found.into_iter().chain([mm_flags])).collect())
}

/// task_struct.se.cfs_rq (the sched_entity is embedded; cfs_rq exists with
/// CONFIG_FAIR_GROUP_SCHED), or u32::MAX. Tests set RTRACE_OFFCPU_CLOCK=ktime to run the
/// fallback (bpf_ktime_get_ns at every switch) that kernels without it get.
pub(super) fn task_cfs_rq_offset(vmlinux: &[u8]) -> u32 {
    if std::env::var("RTRACE_OFFCPU_CLOCK").is_ok_and(|v| v == "ktime") {
        return u32::MAX;
    }
    let se = crate::btf::member_offset(vmlinux, "task_struct", "se");
    let cfs_rq = crate::btf::member_offset(vmlinux, "sched_entity", "cfs_rq");
    match (se, cfs_rq) {
        (Ok(a), Ok(b)) => a + b,
        _ => u32::MAX,
    }
}

/// mm_struct.arg_start, if arg_end follows it (the eBPF side reads both in one copy).
pub(super) fn arg_start_offset(vmlinux: &[u8]) -> u32 {
    let off = |m| crate::btf::member_offset(vmlinux, "mm_struct", m).ok();
    match (off("arg_start"), off("arg_end")) {
        (Some(s), Some(e)) if e == s + 8 => s,
        _ => u32::MAX,
    }
}

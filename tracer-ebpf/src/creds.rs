//! Sessions of a non-root caller (`rtrace serve --allow-group`): a descendant is followed only
//! while the caller could inspect it itself. Credentials change at exec alone (a setuid or
//! file-capability program, or one the caller may not read), and sched_process_exec fires
//! after the new ones are committed: there `foreign` compares them with the owner's, as the
//! kernel's PTRACE_MODE_READ_REALCREDS check does — every uid and gid slot the owner's, no
//! effective capability, dumpable — and the process leaves the tracked set (so do the
//! processes it starts). Failing closed: a credential that cannot be read counts as foreign.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::target::global;

/// The owner's uid and gid (u32::MAX: unrestricted, the default and root's sessions).
#[unsafe(no_mangle)]
static OWNER_UID: u32 = u32::MAX;
#[unsafe(no_mangle)]
static OWNER_GID: u32 = u32::MAX;
/// task_struct.cred, cred.uid (uid, gid, suid, sgid, euid, egid, fsuid, fsgid follow as eight
/// u32: the loader checks that layout), cred.cap_effective and mm_struct.flags (dumpable in its
/// low two bits), from the kernel's BTF; the loader refuses an owner without the first three.
#[unsafe(no_mangle)]
static TASK_CRED_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static CRED_UID_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static CRED_CAP_EFF_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static MM_FLAGS_OFF: u32 = u32::MAX;

/// Why a process left (tracer_common::process::EVENT_SKIPPED's `a`, bits).
pub use tracer_common::process::{SKIP_CAPS, SKIP_CREDS, SKIP_DUMPABLE};

/// SUID_DUMP_USER: the mm's dumpable value of a process its owner may inspect.
const DUMP_USER: u64 = 1;

/// None when current may stay traced; else why not (SKIP_* bits) and its effective uid.
#[inline(always)]
pub fn foreign(task_mm_off: u32) -> Option<(i64, u32)> {
    let (uid, gid) = (global(&OWNER_UID), global(&OWNER_GID));
    if uid == u32::MAX {
        return None;
    }
    let task = unsafe { bpf_get_current_task() } as usize;
    // SAFETY: kernel reads through the helper.
    let Ok(cred) = (unsafe { bpf_probe_read_kernel((task + global(&TASK_CRED_OFF) as usize) as *const usize) }) else {
        return Some((SKIP_CREDS, u32::MAX));
    };
    let Ok(ids) = (unsafe { bpf_probe_read_kernel((cred + global(&CRED_UID_OFF) as usize) as *const [u32; 8]) }) else {
        return Some((SKIP_CREDS, u32::MAX));
    };
    let mut why = 0;
    if ids[0] != uid || ids[2] != uid || ids[4] != uid || ids[6] != uid {
        why |= SKIP_CREDS;
    }
    if ids[1] != gid || ids[3] != gid || ids[5] != gid || ids[7] != gid {
        why |= SKIP_CREDS;
    }
    match unsafe { bpf_probe_read_kernel((cred + global(&CRED_CAP_EFF_OFF) as usize) as *const u64) } {
        Ok(0) => {}
        _ => why |= SKIP_CAPS,
    }
    let flags_off = global(&MM_FLAGS_OFF);
    if flags_off != u32::MAX && task_mm_off != u32::MAX {
        let mm = unsafe { bpf_probe_read_kernel((task + task_mm_off as usize) as *const usize) }.unwrap_or(0);
        let flags = unsafe { bpf_probe_read_kernel((mm + flags_off as usize) as *const u64) };
        if !matches!(flags, Ok(f) if f & 3 == DUMP_USER) {
            why |= SKIP_DUMPABLE;
        }
    }
    (why != 0).then_some((why, ids[4]))
}

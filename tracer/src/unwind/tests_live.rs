//! Tests of the unwinder's parts (load bias, maps lines, mode_for), of the live /proc source
//! on this process, and its cost per stack.
use std::path::Path;

use super::{
    modules::{bias, parse_maps, Load, ProcSource},
    snapshot::{c_snapshot, funcs, names, py_snapshot, unwinder},
    Outcome, Regs, Unwinder,
};

/// LLD lays text out with p_offset != p_vaddr: the bias comes from the PT_LOAD whose aligned
/// offset is the mapping's, not from `start - offset`. Non-PIE executables have bias 0.
#[test]
fn bias_of_lld_and_non_pie_layouts() {
    // rustc 1.95 + LLD: R at offset 0, RX at p_offset 0x3a5c0 / p_vaddr 0x3b5c0.
    let lld = [
        Load { offset: 0, vaddr: 0, filesz: 0x3a5c0, exec: false },
        Load { offset: 0x3a5c0, vaddr: 0x3b5c0, filesz: 0x8d000, exec: true },
    ];
    let start = 0x5555_5558_f000;
    assert_eq!(bias(&lld, start, 0x3a000), Some(start - 0x3b000));
    assert_ne!(bias(&lld, start, 0x3a000), Some(start - 0x3a000));
    // GNU ld non-PIE (python3.11): text at 0x41f000 from offset 0x1f000.
    let nopie = [
        Load { offset: 0, vaddr: 0x400000, filesz: 0x1e000, exec: false },
        Load { offset: 0x1f000, vaddr: 0x41f000, filesz: 0x2b0000, exec: true },
    ];
    assert_eq!(bias(&nopie, 0x41f000, 0x1f000), Some(0));
    assert_eq!(bias(&nopie, 0x41f000, 0x99_0000), None, "offset in no segment");
}

#[test]
fn maps_lines() {
    let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 123 /usr/bin/x
55d0c0a01000-55d0c0a05000 r-xp 00001000 fd:01 123 /usr/bin/x
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000002000-7f0000003000 r-xp 00002000 fd:01 456 /tmp/a b (deleted)
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]
";
    let m = parse_maps(text);
    let got: Vec<(u64, u64, &str)> = m.iter().map(|m| (m.offset, m.inode, m.path.as_str())).collect();
    assert_eq!(got, [(0, 0, "[vdso]"), (0x1000, 123, "/usr/bin/x"), (0, 0, ""), (0x2000, 456, "/tmp/a b (deleted)")]);
}

/// Auto: Go executables keep frame pointers (Go has no .eh_frame), the rest is DWARF.
#[test]
fn mode_for_go_and_c() {
    use super::{mode_for, Choice};
    use tracer_common::ustack::{MODE_DWARF, MODE_FP};
    let go = std::fs::canonicalize("/usr/bin/go").unwrap();
    let c = tests::nofp_fixture("unwind_snapshot");
    assert_eq!(mode_for(&go, Choice::Auto), MODE_FP);
    assert_eq!(mode_for(&c, Choice::Auto), MODE_DWARF);
    assert_eq!(mode_for(&c, Choice::Fp), MODE_FP);
    assert_eq!(mode_for(&go, Choice::Dwarf), MODE_DWARF);
    assert_eq!(mode_for(Path::new("/nonexistent"), Choice::Auto), MODE_DWARF);
}

/// Unwind cost per stack on snapshots (printed; `--nocapture` shows it), and the first stack
/// of a process (maps read, files mapped and parsed).
#[test]
fn unwind_cost_per_stack() {
    for (what, s) in
        [("C chain", c_snapshot("chain")), ("C recursion", c_snapshot("recurse")), ("python3", py_snapshot())]
    {
        let t = std::time::Instant::now();
        let (mut u, _, _) = unwinder(&s);
        let first = u.unwind(7, s.regs, &s.stack, s.cut);
        let setup = t.elapsed();
        assert_eq!(first.outcome, Some(Outcome::Complete), "{what}");
        let n = 5_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(u.unwind(7, s.regs, &s.stack, s.cut).addrs.len(), first.addrs.len());
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "unwind {what}: {per:.2} µs per stack ({} frames, {} bytes needed); first stack of a process \
             (maps, {} binaries mapped and parsed) {setup:?}",
            first.addrs.len(),
            first.bytes_needed,
            u.cached_binaries()
        );
    }
}

/// The collector owns the Unwinder on its own thread.
#[test]
fn unwinder_is_send() {
    fn send<T: Send>() {}
    send::<Unwinder>();
}

/// The live source on this very thread: the test binary (rustc + LLD), its libc, the thread's
/// anonymous stack mapping, down to the thread's root (clone3), Complete.
#[test]
fn live_self_unwind() {
    let (w, maps) = live_leaf();
    let n = names(&maps, &w.addrs);
    let f = funcs(&n);
    assert!(f[0].contains("live_leaf"), "{n:?}");
    assert!(f.iter().any(|x| x.contains("live_self_unwind")), "{n:?}");
    assert!(f.contains(&"start_thread"), "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete), "{n:?}");
}

#[inline(never)]
fn live_leaf() -> (super::Unwound, String) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads registers only.
    unsafe {
        std::arch::asm!("lea {0}, [rip]", "mov {1}, rsp", "mov {2}, rbp", out(reg) ip, out(reg) sp, out(reg) bp);
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let end = maps
        .lines()
        .filter_map(|l| {
            let (s, e) = l.split(' ').next()?.split_once('-')?;
            Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?))
        })
        .find(|&(s, e)| s <= sp && sp < e)
        .unwrap()
        .1;
    let len = (end - sp).min(64 * 1024);
    // SAFETY: [sp, end) is this thread's mapped stack; the bytes are copied at once.
    let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len as usize) }.to_vec();
    let mut u = Unwinder::new();
    let w = u.unwind(std::process::id(), Regs { ip, sp, bp }, &stack, len == 64 * 1024);
    (std::hint::black_box(w), maps)
}

/// A binary deleted while it runs is read through /proc/PID/map_files (root: map_files needs
/// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
#[test]
fn live_deleted_binary_opens_through_map_files() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED live_deleted_binary_opens_through_map_files: map_files needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("deleted_sleep");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let mut child = std::process::Command::new(&exe).arg("5").spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !super::LiveProc.maps(pid).unwrap_or_default().contains("deleted_sleep") {
        assert!(std::time::Instant::now() < deadline, "child never mapped its binary");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::remove_file(&exe).unwrap();
    let maps = parse_maps(&super::LiveProc.maps(pid).unwrap());
    let m = maps.iter().find(|m| m.path.ends_with("deleted_sleep (deleted)")).expect("deleted mapping");
    let f = super::LiveProc.open(pid, m);
    let _ = child.kill();
    let _ = child.wait();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(f.unwrap().metadata().unwrap().ino(), m.inode);
}

/// An ip in the vDSO (clock_gettime is where many on-CPU samples land): its module is read
/// from the process's memory and has CFI. The chain snapshot with a vDSO entry pushed on top
/// (as if leaf had just called it) unwinds through it to the same chain.
#[test]
fn vdso_frame_unwinds_from_process_memory() {
    use object::{Object, ObjectSymbol};
    let s = c_snapshot("chain");
    let image = object::File::parse(&s.vdso[..]).unwrap();
    let sym = image.dynamic_symbols().find(|x| x.name() == Ok("__vdso_clock_gettime")).expect("vDSO symbol");
    let entry = s.vdso_start + sym.address();
    let (mut u, _, _) = unwinder(&s);
    let full = u.unwind(7, s.regs, &s.stack, s.cut);
    let mut stack = s.regs.ip.to_le_bytes().to_vec();
    stack.extend_from_slice(&s.stack);
    let w = u.unwind(7, Regs { ip: entry, sp: s.regs.sp - 8, bp: s.regs.bp }, &stack, s.cut);
    assert_eq!(w.outcome, Some(Outcome::Complete));
    assert_eq!(w.addrs[0], entry);
    assert_eq!(w.addrs[1], s.regs.ip);
    assert_eq!(w.addrs[2..], full.addrs[1..]);
}

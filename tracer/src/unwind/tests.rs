//! Root-free tests of the unwinder: stacks fixtures snapshot of themselves (registers, stack
//! bytes, vDSO, /proc/self/maps) unwound with the binaries still on disk, then symbolized.
use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    frames::frame_pointer_walk,
    modules::{bias, parse_maps, Load, MapLine, ProcSource},
    Outcome, Regs, Unwinder,
};

/// A snapshot file written by tests/fixtures/unwind_snapshot.c (layout in its header).
#[derive(Clone)]
pub(super) struct Snapshot {
    pub regs: Regs,
    pub cut: bool,
    pub stack: Vec<u8>,
    pub vdso_start: u64,
    pub vdso: Vec<u8>,
    pub maps: String,
}

impl Snapshot {
    fn parse(b: &[u8]) -> Snapshot {
        assert_eq!(&b[..8], b"RTSNAP01", "not a snapshot");
        let mut at = 8;
        let mut u = || {
            let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            at += 8;
            v
        };
        let (ip, sp, bp, cut, len) = (u(), u(), u(), u(), u());
        let stack = b[at..at + len as usize].to_vec();
        at += len as usize;
        let mut u = || {
            let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            at += 8;
            v
        };
        let (vdso_start, vlen) = (u(), u());
        let vdso = b[at..at + vlen as usize].to_vec();
        at += vlen as usize;
        let mlen = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
        at += 8;
        let maps = String::from_utf8(b[at..at + mlen].to_vec()).unwrap();
        Snapshot { regs: Regs { ip, sp, bp }, cut: cut != 0, stack, vdso_start, vdso, maps }
    }
}

/// The snapshot's process as a ProcSource: its maps text, its vDSO, files from disk. Counts
/// the maps reads (`reads`), and serves `maps_override` instead once set.
struct SnapSource {
    snap: Snapshot,
    reads: Arc<Mutex<u32>>,
    maps_override: Arc<Mutex<Option<String>>>,
}

impl ProcSource for SnapSource {
    fn maps(&self, _pid: u32) -> io::Result<String> {
        *self.reads.lock().unwrap() += 1;
        Ok(self.maps_override.lock().unwrap().clone().unwrap_or_else(|| self.snap.maps.clone()))
    }
    fn read_mem(&self, _pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let o = addr.checked_sub(self.snap.vdso_start).ok_or(io::ErrorKind::NotFound)? as usize;
        self.snap.vdso.get(o..o + len).map(<[u8]>::to_vec).ok_or(io::ErrorKind::NotFound.into())
    }
    fn open(&self, _pid: u32, m: &MapLine) -> io::Result<std::fs::File> {
        std::fs::File::open(&m.path)
    }
}

fn unwinder(snap: &Snapshot) -> (Unwinder, Arc<Mutex<u32>>, Arc<Mutex<Option<String>>>) {
    let reads = Arc::new(Mutex::new(0));
    let over = Arc::new(Mutex::new(None));
    let src = SnapSource { snap: snap.clone(), reads: reads.clone(), maps_override: over.clone() };
    (Unwinder::with_source(Box::new(src)), reads, over)
}

/// Builds the fixture (no frame pointers), runs it, returns its snapshot.
fn take(exe: &Path, what: &str) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let mut cmd = std::process::Command::new(exe);
    if what != "-" {
        cmd.arg(what);
    }
    let st = cmd.arg(&out).status().unwrap();
    assert!(st.success(), "{} {what}: {st}", exe.display());
    Snapshot::parse(&std::fs::read(&out).unwrap())
}

fn c_snapshot(what: &str) -> Snapshot {
    take(&tests::nofp_fixture("unwind_snapshot"), what)
}

/// (function, module basename) of each address, ret − 1 looked up for return addresses.
fn names(maps: &str, addrs: &[u64]) -> Vec<(String, String)> {
    use blazesym::symbolize::{source::Elf, source::Source, Input, Symbolized, Symbolizer};
    let maps = parse_maps(maps);
    let sym = Symbolizer::new();
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let look = if i == 0 { a } else { a - 1 };
            let Some(m) = maps.iter().find(|m| m.start <= look && look < m.end) else {
                return ("?".into(), "?".into());
            };
            let module = Path::new(&m.path).file_name().map_or(m.path.clone(), |f| f.to_string_lossy().into_owned());
            if !m.path.starts_with('/') {
                return (m.path.clone(), module);
            }
            let src = Source::Elf(Elf::new(PathBuf::from(&m.path)));
            let off = look - m.start + m.offset;
            let name = match sym.symbolize_single(&src, Input::FileOffset(off)) {
                Ok(Symbolized::Sym(s)) => s.name.into_owned(),
                _ => format!("?+{off:#x}"),
            };
            (name, module)
        })
        .collect()
}

fn funcs(n: &[(String, String)]) -> Vec<&str> {
    n.iter().map(|(f, _)| f.as_str()).collect()
}

/// main → outer → middle → leaf of a `-O2 -fomit-frame-pointer` build comes out exactly, down
/// to libc's __libc_start_call_main, and the walk ends Complete at _start.
#[test]
fn c_chain_from_snapshot() {
    let s = c_snapshot("chain");
    let (mut u, reads, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    assert_eq!(funcs(&n)[..5], ["leaf", "middle", "outer", "main", "__libc_start_call_main"], "{n:?}");
    assert_eq!(n.last().unwrap().0, "_start", "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete), "{n:?}");
    assert!(w.bytes_needed > 200 && (w.bytes_needed as usize) <= s.stack.len(), "{}", w.bytes_needed);
    assert_eq!(*reads.lock().unwrap(), 1, "one maps read for a stack whose addresses are all known");
    // The control: the kernel's frame-pointer walk of the same bytes does not get the chain.
    let fp = names(&s.maps, &frame_pointer_walk(s.regs, &s.stack));
    assert!(funcs(&fp).get(1..4) != Some(&["middle", "outer", "main"][..]), "fixture has frame pointers: {fp:?}");
}

/// A comparator called back from libc's qsort keeps run_sort and main (what the
/// frame-pointer walk loses in 100 % of samples).
#[test]
fn c_qsort_callback_from_snapshot() {
    let s = c_snapshot("qsort");
    let (mut u, _, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    assert_eq!(n[0].0, "cmp", "{n:?}");
    let run_sort = n.iter().position(|(f, _)| f == "run_sort").unwrap_or_else(|| panic!("no run_sort: {n:?}"));
    assert!(run_sort >= 2, "{n:?}");
    assert!(n[1..run_sort].iter().all(|(_, m)| m == "libc.so.6"), "libc's qsort frames between: {n:?}");
    assert_eq!(funcs(&n)[run_sort..run_sort + 3], ["run_sort", "main", "__libc_start_call_main"], "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete));
    let fp = names(&s.maps, &frame_pointer_walk(s.regs, &s.stack));
    assert!(!funcs(&fp).contains(&"run_sort"), "fixture has frame pointers: {fp:?}");
}

/// A copy cut at the limit that holds too few bytes: CopyExhausted, and bytes_needed says
/// how many the unwind wanted; the same bytes not cut end at the stack's end.
#[test]
fn short_copy_is_copy_exhausted() {
    let s = c_snapshot("chain");
    let (mut u, _, _) = unwinder(&s);
    let full = u.unwind(7, s.regs, &s.stack, s.cut);
    let short = &s.stack[..256];
    let w = u.unwind(7, s.regs, short, true);
    assert_eq!(w.outcome, Some(Outcome::CopyExhausted));
    assert!(w.bytes_needed > 256, "{}", w.bytes_needed);
    assert_eq!(w.addrs[..], full.addrs[..w.addrs.len()], "the frames before the cut are the full unwind's");
    assert!(w.addrs.len() >= 2 && w.addrs.len() < full.addrs.len(), "{:?}", w.addrs);
    assert_eq!(u.unwind(7, s.regs, short, false).outcome, Some(Outcome::Complete));
}

/// An address in no mapping (the maps read before a dlopen) makes one more maps read, which
/// finds it; exec() drops the table so the next stack reads the maps again.
#[test]
fn unknown_address_rereads_maps_once() {
    let s = c_snapshot("chain");
    let (mut u, reads, over) = unwinder(&s);
    // The maps without libc: as if read before libc was mapped.
    let without: String = s.maps.lines().filter(|l| !l.contains("libc.so")).map(|l| format!("{l}\n")).collect();
    *over.lock().unwrap() = Some(without);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(w.outcome, Some(Outcome::NoModule));
    assert_eq!(w.addrs.len(), 5, "ip, middle, outer, main, then the return into libc: {:?}", w.addrs);
    assert_eq!(*reads.lock().unwrap(), 1, "just read: no second read at once");
    *over.lock().unwrap() = None;
    std::thread::sleep(super::REREAD_EVERY);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(w.outcome, Some(Outcome::Complete));
    assert_eq!(*reads.lock().unwrap(), 2);
    u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(*reads.lock().unwrap(), 2, "all known: no read");
    u.exec(7);
    u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(*reads.lock().unwrap(), 3, "exec: read again");
    // A second process mapping the same binaries shares their parsed tables.
    let before = u.cached_binaries();
    u.unwind(8, s.regs, &s.stack, s.cut);
    assert_eq!(u.cached_binaries(), before);
}

/// Unwind cost per stack on the chain snapshot (printed; `--nocapture` shows it), and the
/// first stack of a process (maps read, files mapped and parsed).
#[test]
fn unwind_cost_per_stack() {
    let s = c_snapshot("chain");
    let t = std::time::Instant::now();
    let (mut u, _, _) = unwinder(&s);
    u.unwind(7, s.regs, &s.stack, s.cut);
    let first = t.elapsed();
    let n = 20_000;
    let t = std::time::Instant::now();
    let mut frames = 0;
    for _ in 0..n {
        frames += u.unwind(7, s.regs, &s.stack, s.cut).addrs.len();
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("unwind: {per:.2} µs per stack ({} frames), first stack of a process {first:?}", frames / n);
    assert_eq!(frames / n, u.unwind(7, s.regs, &s.stack, s.cut).addrs.len());
}

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

/// A 40-deep recursion through frames of three sizes: every one of its 81 frames, in order.
#[test]
fn c_recursion_from_snapshot() {
    let s = c_snapshot("recurse");
    let (mut u, _, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    let mut want = vec!["bottom", "descend"];
    for k in 1..=40 {
        want.push(["small_frame", "mid_frame", "big_frame"][k % 3]);
        want.push("descend");
    }
    want.extend(["main", "__libc_start_call_main"]);
    assert_eq!(funcs(&n)[..want.len()], want[..], "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete));
    // The walk needs most of the ~10 KiB the recursion takes.
    assert!(w.bytes_needed > 8 * 1024, "{}", w.bytes_needed);
}

/// A signal handler's stack: through the kernel's signal frame (__restore_rt) back into the
/// interrupted function.
#[test]
fn c_signal_frame_from_snapshot() {
    let s = c_snapshot("signal");
    let (mut u, _, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    assert_eq!(funcs(&n)[..5], ["on_signal", "__restore_rt", "spin", "main", "__libc_start_call_main"], "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete));
}

/// The Rust release chain (LLD: p_offset != p_vaddr), exact, then std's start-up frames.
#[test]
fn rust_chain_from_snapshot() {
    let s = take(&tests::rust_fixture("nofp_snapshot"), "-");
    let (mut u, _, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    let f: Vec<String> = funcs(&n).iter().map(|f| f.rsplit_once("::h").map_or(*f, |(a, _)| a).to_owned()).collect();
    assert_eq!(
        f[..4],
        ["nofp_snapshot::leaf", "nofp_snapshot::middle", "nofp_snapshot::outer", "nofp_snapshot::main"],
        "{n:?}"
    );
    let main = f.iter().position(|x| x == "main").unwrap_or_else(|| panic!("no C main: {n:?}"));
    assert_eq!(f[main + 1], "__libc_start_call_main", "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete), "{n:?}");
    let fp = names(&s.maps, &frame_pointer_walk(s.regs, &s.stack));
    assert!(!funcs(&fp).iter().any(|x| x.contains("nofp_snapshot::outer")), "fixture has frame pointers: {fp:?}");
}

/// Debian's /usr/bin/python3 (3.11, non-PIE, no frame pointers; not a pyenv on PATH)
/// from a C function it called through ctypes (a dlopen'd library) inside json.dumps' C encoder: down to Py_BytesMain (which
/// python3.11's main calls as a tail call: no main frame) and libc's start.
#[test]
fn python_from_snapshot() {
    let lib = tests::c_fixture_with(
        "unwind_snapshot",
        "lib",
        &["-O2", "-fomit-frame-pointer", "-g", "-shared", "-fPIC", "-DSNAPSHOT_LIB"],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let script = "import ctypes, json, sys\n\
        lib = ctypes.CDLL(sys.argv[1])\n\
        lib.rt_snapshot.argtypes = [ctypes.c_char_p, ctypes.c_size_t]\n\
        def hook(o):\n    lib.rt_snapshot(sys.argv[2].encode(), 65536)\n    return 0\n\
        v = object()\n\
        for _ in range(10): v = [v]\n\
        json.dumps(v, default=hook)\n";
    let st = std::process::Command::new("/usr/bin/python3").arg("-c").arg(script).arg(&lib).arg(&out).status().unwrap();
    assert!(st.success());
    let s = Snapshot::parse(&std::fs::read(&out).unwrap());
    let (mut u, _, _) = unwinder(&s);
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    let n = names(&s.maps, &w.addrs);
    assert_eq!(n[0].0, "rt_snapshot", "{n:?}");
    let f = funcs(&n);
    // Debian strips the extensions' local symbols: _json's frames are counted by module, 12
    // (encoder_call, then encoder_listencode_obj for the 10 lists and the object).
    let json: Vec<&str> = n.iter().filter(|(_, m)| m.starts_with("_json.")).map(|(f, _)| f.as_str()).collect();
    assert_eq!(json.len(), 12, "{n:?}");
    assert!(json[1..11].iter().all(|f| *f == json[1]), "one recursive call site: {n:?}");
    assert_eq!(f.iter().filter(|x| **x == "_PyEval_EvalFrameDefault").count(), 2, "{n:?}");
    let main = f.iter().position(|x| *x == "Py_BytesMain").unwrap_or_else(|| panic!("no Py_BytesMain: {n:?}"));
    assert_eq!(f[main..], ["Py_BytesMain", "__libc_start_call_main", "__libc_start_main_impl", "_start"], "{n:?}");
    assert_eq!(w.outcome, Some(Outcome::Complete), "{n:?}");
    assert!(!n.iter().any(|(_, m)| m == "?"), "every frame in a module: {n:?}");
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
    assert!(f.iter().any(|x| *x == "start_thread"), "{n:?}");
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

//! Root-free tests of the unwinder on stacks fixtures snapshot of themselves (registers,
//! stack bytes, vDSO, /proc/self/maps), unwound with the binaries still on disk, then named:
//! exact chains for C, Rust (LLD) and Debian's python3, and the frame-pointer control.
use super::{
    frames::frame_pointer_walk,
    snapshot::{c_snapshot, funcs, names, py_snapshot, take, unwinder},
    Outcome,
};

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

/// An address in no mapping (the maps read before libc or a dlopen'd library was mapped) makes
/// one more maps read at once, which finds it — records come in batches, so a process's
/// first stacks are unwound microseconds apart; after FREE_REREADS such reads, at most one
/// per REREAD_EVERY. exec() drops the table so the next stack reads the maps again.
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
    assert_eq!(*reads.lock().unwrap(), 2, "read, and read again at once for the unknown address");
    *over.lock().unwrap() = None;
    let w = u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(w.outcome, Some(Outcome::Complete), "libc mapped since: found without waiting");
    assert_eq!(*reads.lock().unwrap(), 3);
    u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(*reads.lock().unwrap(), 3, "all known: no read");
    // Garbage that is in no mapping: free re-reads, then the rate limit.
    *over.lock().unwrap() = Some(s.maps.lines().filter(|l| !l.contains("libc.so")).map(|l| format!("{l}\n")).collect());
    u.exec(7, crate::clock::monotonic_ns());
    for _ in 0..20 {
        u.unwind(7, s.regs, &s.stack, s.cut);
    }
    let n = *reads.lock().unwrap();
    assert_eq!(
        n,
        3 + 1 + super::FREE_REREADS,
        "exec: read again; then {} free re-reads, then none within 20 ms",
        super::FREE_REREADS
    );
    *over.lock().unwrap() = None;
    std::thread::sleep(super::REREAD_EVERY);
    assert_eq!(u.unwind(7, s.regs, &s.stack, s.cut).outcome, Some(Outcome::Complete));
    assert_eq!(*reads.lock().unwrap(), n + 1);
    // A second process mapping the same binaries shares their parsed tables.
    let before = u.cached_binaries();
    u.unwind(8, s.regs, &s.stack, s.cut);
    assert_eq!(u.cached_binaries(), before);
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
    let s = py_snapshot();
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

/// A stack that repeats one return address (into main) walks frame after frame: the walk
/// stops at MAX_DEPTH frames, as the kernel's does, as a CFI error. Random bytes neither
/// panic nor run past the cap.
#[test]
fn loops_and_garbage_stop() {
    let s = c_snapshot("chain");
    let (mut u, _, _) = unwinder(&s);
    let full = u.unwind(7, s.regs, &s.stack, s.cut);
    let into_main = full.addrs[3];
    let looped: Vec<u8> = std::iter::repeat_n(into_main.to_le_bytes(), 2048).flatten().collect();
    let w = u.unwind(7, super::Regs { ip: into_main - 1, ..s.regs }, &looped, true);
    assert_eq!(w.addrs.len(), tracer_common::stack::MAX_DEPTH, "{:?}", w.addrs);
    assert_eq!(w.outcome, Some(Outcome::CfiError));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let garbage: Vec<u8> = (0..2048)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let w = u.unwind(7, super::Regs { ip: s.regs.ip, sp: s.regs.sp, bp: x }, &garbage, true);
        assert!(w.addrs.len() <= tracer_common::stack::MAX_DEPTH);
        assert_ne!(w.outcome, None);
    }
}

/// Where the process starts in the snapshot's mapping of the binary whose path ends in
/// `name`: its e_entry plus the mapping's load bias.
fn entry_of(maps: &str, name: &str) -> u64 {
    use object::Object;
    let m = super::modules::parse_maps(maps).into_iter().find(|m| m.path.ends_with(name)).unwrap();
    let data = std::fs::read(&m.path).unwrap();
    let file = object::File::parse(&data[..]).unwrap();
    let loads: Vec<super::modules::Load> = {
        use object::ObjectSegment;
        file.segments()
            .map(|s| super::modules::Load {
                offset: s.file_range().0,
                vaddr: s.address(),
                filesz: s.file_range().1,
                exec: matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0),
            })
            .collect()
    };
    file.entry() + super::modules::bias(&loads, m.start, m.offset).unwrap()
}

/// A stack taken while ld.so maps the libraries ends in ld.so's entry stub (`_start: mov
/// %rsp,%rdi; call _dl_start`, no CFI), and the very first stack of a new image is its entry
/// itself with argc above sp: both are the root, Complete, with nothing read above. (These
/// were counted as CFI errors or NoModule: 75 of 79 stacks of a short C program.)
#[test]
fn entry_stub_is_the_root() {
    let s = c_snapshot("chain");
    let (mut u, _, _) = unwinder(&s);
    let argc = 1u64.to_le_bytes().repeat(64);
    let sp = s.regs.sp;
    for (entry, what) in
        [(entry_of(&s.maps, "/ld-linux-x86-64.so.2"), "ld.so"), (entry_of(&s.maps, "/unwind_snapshot-nofp"), "exe")]
    {
        let w = u.unwind(7, super::Regs { ip: entry, sp, bp: 0 }, &argc, false);
        assert_eq!((w.outcome, &w.addrs[..]), (Some(Outcome::Complete), &[entry][..]), "{what}");
    }
    // main's return address replaced by one into ld.so's stub (as _dl_start's is, called from
    // ld.so's _start): the walk stops there, Complete, instead of failing to step a frame
    // without CFI.
    let full = u.unwind(7, s.regs, &s.stack, s.cut);
    let into_libc = full.addrs[4].to_le_bytes();
    let slot = s.stack.chunks_exact(8).position(|c| c == into_libc).unwrap() * 8;
    let ld = entry_of(&s.maps, "/ld-linux-x86-64.so.2");
    let mut stack = s.stack.clone();
    stack[slot..slot + 8].copy_from_slice(&(ld + 8).to_le_bytes());
    let w = u.unwind(7, s.regs, &stack, s.cut);
    assert_eq!(w.addrs[..4], full.addrs[..4]);
    assert_eq!((w.outcome, w.addrs.len(), w.addrs[4]), (Some(Outcome::Complete), 5, ld + 8), "{:x?}", w.addrs);
}

/// An exec applied after the new image's maps were read keeps them (the exec event and the
/// stacks come through different rings: a short program's later stacks, unwound after it
/// exited, would find no maps); an exec after the read drops them.
#[test]
fn exec_after_the_read_only_drops_older_maps() {
    let s = c_snapshot("chain");
    let (mut u, reads, _) = unwinder(&s);
    let before = crate::clock::monotonic_ns();
    u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(*reads.lock().unwrap(), 1);
    u.exec(7, before);
    u.unwind(7, s.regs, &s.stack, s.cut);
    assert_eq!(*reads.lock().unwrap(), 1, "the exec happened before this read: kept");
    u.exec(7, crate::clock::monotonic_ns());
    assert_eq!(u.unwind(7, s.regs, &s.stack, s.cut).outcome, Some(Outcome::Complete));
    assert_eq!(*reads.lock().unwrap(), 2, "an exec after the read: read again");
}

/// A stack of the image before an exec (unwound after it, with the new image's maps) and a
/// stack of a fork child whose maps are gone (or not its parent's code any more) are unwound
/// with the modules they ran: the old image's, the parent's. Not once the process has exited.
#[test]
fn stacks_of_the_image_before_exec_and_of_fork_children() {
    let s = c_snapshot("chain");
    let (mut u, _, over) = unwinder(&s);
    assert_eq!(u.unwind(7, s.regs, &s.stack, s.cut).outcome, Some(Outcome::Complete));
    u.fork(8, 7);
    u.exec(7, crate::clock::monotonic_ns());
    // The new image (and the child's maps, read late) hold none of the snapshot's code.
    *over.lock().unwrap() = Some(String::new());
    for pid in [7, 8] {
        let w = u.unwind(pid, s.regs, &s.stack, s.cut);
        let n = names(&s.maps, &w.addrs);
        assert_eq!(funcs(&n)[..4], ["leaf", "middle", "outer", "main"], "pid {pid}: {n:?}");
        assert_eq!(w.outcome, Some(Outcome::Complete), "pid {pid}: {n:?}");
    }
    u.exit(8);
    assert_eq!(u.unwind(8, s.regs, &s.stack, s.cut).outcome, Some(Outcome::NoModule));
    // A process nobody forked or exec'd has no earlier modules to fall back on.
    assert_eq!(u.unwind(9, s.regs, &s.stack, s.cut).outcome, Some(Outcome::NoModule));
}

//! Test-only: stack snapshots that fixtures take of themselves (tests/fixtures/
//! unwind_snapshot.c, nofp_snapshot.rs), served to the Unwinder as a ProcSource, and the
//! blazesym naming the tests compare against.
use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    modules::{parse_maps, MapLine, ProcSource},
    Regs, Unwinder,
};

/// A snapshot file written by tests/fixtures/unwind_snapshot.c (layout in its header).
#[derive(Clone)]
pub struct Snapshot {
    pub regs: Regs,
    pub cut: bool,
    pub stack: Vec<u8>,
    pub vdso_start: u64,
    pub vdso: Vec<u8>,
    pub maps: String,
}

impl Snapshot {
    pub fn parse(b: &[u8]) -> Snapshot {
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

/// Maps reads so far, and the maps text served instead of the snapshot's once set.
pub type Reads = Arc<Mutex<u32>>;
pub type MapsOverride = Arc<Mutex<Option<String>>>;

pub fn unwinder(snap: &Snapshot) -> (Unwinder, Reads, MapsOverride) {
    let reads = Arc::new(Mutex::new(0));
    let over = Arc::new(Mutex::new(None));
    let src = SnapSource { snap: snap.clone(), reads: reads.clone(), maps_override: over.clone() };
    (Unwinder::with_source(Box::new(src)), reads, over)
}

/// Builds the fixture (no frame pointers), runs it, returns its snapshot.
pub fn take(exe: &Path, what: &str) -> Snapshot {
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

pub fn c_snapshot(what: &str) -> Snapshot {
    take(&tests::nofp_fixture("unwind_snapshot"), what)
}

/// (function, module basename) of each address, ret − 1 looked up for return addresses.
pub fn names(maps: &str, addrs: &[u64]) -> Vec<(String, String)> {
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

pub fn funcs(n: &[(String, String)]) -> Vec<&str> {
    n.iter().map(|(f, _)| f.as_str()).collect()
}

/// Debian's python3 snapshotting itself inside json.dumps of 10 nested lists: a `default=`
/// hook calls rt_snapshot (unwind_snapshot.c built as a library) through ctypes.
pub fn py_snapshot() -> Snapshot {
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
    Snapshot::parse(&std::fs::read(&out).unwrap())
}

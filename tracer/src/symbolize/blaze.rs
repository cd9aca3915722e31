//! The real resolver: blazesym, Rust and C++ names demangled, inlined calls expanded; kernel
//! through kallsyms (on a thread of its own: symbolize/kernel.rs). A binary's tables live for
//! one `user` call: the symbolizer asks once per binary for all its offsets
//! (symbolize::Symbols), and keeping every binary of a build parsed at once (its DWARF, its Go
//! tables) was most of rtrace's peak memory.
use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer,
};

pub struct BlazeResolver {
    /// For the kernel (kallsyms is read once, on its own thread).
    kernel: super::kernel::KernelNames,
    /// Files opened to read code from (None: cannot be opened).
    files: std::collections::HashMap<String, Option<std::fs::File>>,
    /// rtrace's own executable (device, inode).
    own_exe: Option<(u64, u64)>,
}

impl Default for BlazeResolver {
    fn default() -> Self {
        Self {
            kernel: super::kernel::KernelNames::take(),
            files: Default::default(),
            own_exe: file_id("/proc/self/exe"),
        }
    }
}

fn file_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn elf_symbolizer() -> Symbolizer {
    Symbolizer::builder().enable_demangling(true).enable_inlined_fns(true).build()
}

impl BlazeResolver {
    /// Names from the Go runtime's table for offsets blazesym left unnamed (stripped Go).
    fn fill_from_go(&mut self, path: &str, offsets: &[u64], names: &mut [Vec<String>]) {
        if names.iter().all(|n| !n.is_empty()) {
            return;
        }
        let Some(t) = super::gopclntab::GoTable::load(path) else { return };
        for (off, n) in offsets.iter().zip(names.iter_mut()) {
            if n.is_empty() {
                if let Some(f) = t.lookup_file_offset(*off) {
                    n.push(f.to_owned());
                }
            }
        }
    }
}

impl super::Resolver for BlazeResolver {
    fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
        let mut elf = Elf::new(path);
        // rtrace's own frames (it wakes a target's thread when its /proc reads release the
        // target's mmap lock) are named from its ELF symbols: parsing its DWARF (it is built
        // with debug info) for those few frames was a quarter of a go build's report memory
        // (30 MB of 129 MB).
        elf.debug_syms = self.own_exe.is_none() || file_id(path) != self.own_exe;
        let src = Source::Elf(elf);
        let mut names: Vec<Vec<String>> = match elf_symbolizer().symbolize(&src, Input::FileOffset(offsets)) {
            Ok(syms) => syms
                .into_iter()
                .map(|s| match s {
                    Symbolized::Sym(sym) => {
                        let mut names = vec![sym.name.into_owned()];
                        names.extend(sym.inlined.iter().map(|i| i.name.to_string()));
                        names
                    }
                    Symbolized::Unknown(_) => Vec::new(),
                })
                .collect(),
            // Unreadable or not ELF (deleted, no permission): every frame stays [unknown] with
            // module and offset.
            Err(_) => vec![Vec::new(); offsets.len()],
        };
        self.fill_from_go(path, offsets, &mut names);
        names
    }

    fn code(&mut self, path: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = self.files.entry(path.to_owned()).or_insert_with(|| std::fs::File::open(path).ok()).as_ref()?;
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, offset).ok()?;
        Some(b)
    }

    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        self.kernel.names(addrs)
    }
}

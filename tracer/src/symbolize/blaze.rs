//! The real resolver: blazesym, one ELF resolver per binary (cached inside the Symbolizer),
//! Rust and C++ names demangled, inlined calls expanded; kernel through kallsyms.
use blazesym::{
    symbolize::{
        source::{Elf, Kernel, Source},
        Input, Symbolized, Symbolizer,
    },
    MaybeDefault,
};

pub struct BlazeResolver {
    symbolizer: Symbolizer,
}

impl Default for BlazeResolver {
    fn default() -> Self {
        Self { symbolizer: Symbolizer::builder().enable_demangling(true).enable_inlined_fns(true).build() }
    }
}

impl super::Resolver for BlazeResolver {
    fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
        let src = Source::Elf(Elf::new(path));
        match self.symbolizer.symbolize(&src, Input::FileOffset(offsets)) {
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
        }
    }

    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        let mut k = Kernel::default();
        // kallsyms holds the live addresses already; vmlinux discovery is slow and rarely there.
        k.vmlinux = MaybeDefault::None;
        k.debug_syms = false;
        let src = Source::Kernel(k);
        match self.symbolizer.symbolize(&src, Input::AbsAddr(addrs)) {
            Ok(syms) => syms
                .into_iter()
                .map(|s| match s {
                    Symbolized::Sym(sym) => Some(sym.name.into_owned()),
                    Symbolized::Unknown(_) => None,
                })
                .collect(),
            Err(_) => vec![None; addrs.len()],
        }
    }
}

//! A Go executable as a file: its version (`.go.buildinfo`), its functions by name
//! (`.gopclntab`, present even with `-s -w`), data symbols (`.symtab`, when not stripped),
//! section bytes by address, and whether it has DWARF. Transient: what the runtime reader
//! needs is resolved from it once per binary, then the file is dropped.
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// A Go release, from the buildinfo string (`go1.19.8`, `go1.25-20250209-RC00`,
/// `devel go1.28-abcdef`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub minor: u32,
    pub patch: u32,
    /// As the binary says it.
    pub raw: String,
}

impl GoVersion {
    /// Tolerant parse: the first `go1.N` in the string, then `.P` if present.
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let at = raw.find("go1.")?;
        let rest = &raw[at + 4..];
        let digits = |s: &str| -> Option<(u32, usize)> {
            let n = s.bytes().take_while(u8::is_ascii_digit).count();
            Some((s[..n].parse().ok()?, n))
        };
        let (minor, n) = digits(rest)?;
        let patch = rest[n..].strip_prefix('.').and_then(digits).map(|(p, _)| p).unwrap_or(0);
        Some(GoVersion { minor, patch, raw: raw.to_owned() })
    }
}

/// A function's code, link-time addresses `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    pub start: u64,
    pub end: u64,
}

pub struct GoBinary<'a> {
    pub file: object::File<'a, &'a object::read::ReadCache<std::fs::File>>,
    pub version: GoVersion,
    text_start: u64,
    /// (entry offset from text_start, name), sorted by entry; the last is the end sentinel.
    funcs: Vec<(u32, String)>,
}

/// Opens a file for `GoBinary::parse` (which borrows it).
pub fn open(path: &str) -> std::io::Result<object::read::ReadCache<std::fs::File>> {
    Ok(object::read::ReadCache::new(std::fs::File::open(path)?))
}

/// The version string in a `.go.buildinfo` section (Go 1.18+ layout: magic, pointer size,
/// flags with bit 1 set, then at 32 a varint-length-prefixed string).
pub fn buildinfo_version(d: &[u8]) -> Option<String> {
    if d.get(..14)? != b"\xff Go buildinf:" || d.get(15)? & 2 == 0 {
        return None;
    }
    let (len, n) = uvarint(d.get(32..)?)?;
    let s = d.get(32 + n..32 + n + len as usize)?;
    Some(String::from_utf8_lossy(s).into_owned())
}

fn uvarint(d: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in d.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl<'a> GoBinary<'a> {
    /// A Go executable, or why not: "not a Go executable" (no `.go.buildinfo`) or a reason
    /// naming what is missing.
    pub fn parse(data: &'a object::read::ReadCache<std::fs::File>) -> Result<GoBinary<'a>, String> {
        let file = object::File::parse(data).map_err(|e| format!("not an ELF file: {e}"))?;
        let bi = file.section_by_name(".go.buildinfo").ok_or("not a Go executable (no .go.buildinfo)")?;
        let raw = bi.data().ok().and_then(buildinfo_version).ok_or("unreadable .go.buildinfo")?;
        let version = GoVersion::parse(&raw).ok_or_else(|| format!("unrecognised Go version {raw:?}"))?;
        let pcln = crate::symbolize::gopclntab::section(&file).ok_or("no .gopclntab")?;
        let (text_start, funcs) =
            pcln.data().ok().and_then(crate::symbolize::gopclntab::parse).ok_or("unreadable .gopclntab")?;
        let text_start = crate::symbolize::gopclntab::text_start(text_start, &file);
        Ok(GoBinary { file, version, text_start, funcs })
    }

    /// Every function named `name` (the runtime has two entries for functions called from
    /// assembly: the ABIInternal body and an ABI0 wrapper).
    pub fn funcs_named(&self, name: &str) -> Vec<Func> {
        self.funcs
            .windows(2)
            .filter(|w| w[0].1 == name)
            .map(|w| Func { start: self.text_start + w[0].0 as u64, end: self.text_start + w[1].0 as u64 })
            .collect()
    }

    /// The function named `name`: its body (the largest entry of that name).
    pub fn func(&self, name: &str) -> Option<Func> {
        self.funcs_named(name).into_iter().max_by_key(|f| f.end - f.start)
    }

    /// The function containing `pc` (link-time address).
    pub fn func_name_at(&self, pc: u64) -> Option<&str> {
        let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let i = self.funcs.partition_point(|(e, _)| *e <= rel);
        (i > 0 && i < self.funcs.len()).then(|| self.funcs[i - 1].1.as_str())
    }

    /// The address `.gopclntab`'s entry offsets are relative to.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// A data or function symbol's address from `.symtab` (None when stripped).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address())
    }

    pub fn stripped(&self) -> bool {
        self.file.symbols().next().is_none()
    }

    pub fn has_dwarf(&self) -> bool {
        self.file.section_by_name(".debug_info").is_some() || self.file.section_by_name(".zdebug_info").is_some()
    }

    /// `len` bytes at link-time address `addr`, from the file's sections (initialised data
    /// only: `.bss` has no bytes in the file).
    pub fn bytes_at(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.file.sections().find_map(|s| {
            let off = addr.checked_sub(s.address())?;
            (off + len as u64 <= s.size() && s.file_range().is_some())
                .then(|| s.data_range(addr, len as u64).ok().flatten().map(<[u8]>::to_vec))?
        })
    }

    /// A section's link-time address and bytes, decompressed (Go compresses its DWARF with
    /// zlib, SHF_COMPRESSED; object's own decompression is a feature not built here).
    pub fn section(&self, name: &str) -> Option<(u64, std::borrow::Cow<'a, [u8]>)> {
        use std::io::Read;
        let s = self.file.section_by_name(name)?;
        let c = s.compressed_data().ok()?;
        let data = match c.format {
            object::CompressionFormat::None => std::borrow::Cow::Borrowed(c.data),
            object::CompressionFormat::Zlib => {
                let mut out = Vec::with_capacity(c.uncompressed_size as usize);
                flate2::read::ZlibDecoder::new(c.data).read_to_end(&mut out).ok()?;
                (out.len() as u64 == c.uncompressed_size).then_some(std::borrow::Cow::Owned(out))?
            }
            _ => return None,
        };
        Some((s.address(), data))
    }

    /// The lowest PT_LOAD address (a PIE's load bias is its mapped start minus this, page
    /// aligned).
    pub fn first_load_vaddr(&self) -> u64 {
        self.file.segments().map(|s| s.address()).min().unwrap_or(0)
    }

    /// Whether the executable is position-independent (ET_DYN).
    pub fn is_pie(&self) -> bool {
        self.file.kind() == object::ObjectKind::Dynamic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_the_wild() {
        let v = |s: &str| GoVersion::parse(s).map(|v| (v.minor, v.patch));
        assert_eq!(v("go1.19.8"), Some((19, 8)));
        assert_eq!(v("go1.27.3"), Some((27, 3)));
        assert_eq!(v("go1.25-20250209-RC00"), Some((25, 0)));
        assert_eq!(v("devel go1.28-abcdef Tue"), Some((28, 0)));
        assert_eq!(v("go2"), None);
    }

    #[test]
    fn buildinfo_layout() {
        let mut d = b"\xff Go buildinf:\x08\x02".to_vec();
        d.resize(32, 0);
        d.push(8);
        d.extend_from_slice(b"go1.27.3");
        assert_eq!(buildinfo_version(&d).as_deref(), Some("go1.27.3"));
        d[15] = 0; // the pre-1.18 pointer layout: not read
        assert_eq!(buildinfo_version(&d), None);
    }

    /// Go 1.26+ writes 0 for the pclntab header's textStart: function addresses are then
    /// relative to `.text` (they came out as small offsets, outside any section, before).
    #[test]
    fn modern_text_start() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/go-modern/lib/python3.11/site-packages/go/bin/go");
        let Ok(data) = open(path) else { return };
        let b = GoBinary::parse(&data).unwrap();
        assert!(b.version.minor >= 26, "{}", b.version.raw);
        let main = b.func("runtime.main").expect("runtime.main");
        let (text, code) = b.section(".text").unwrap();
        assert!(main.start >= text && main.end <= text + code.len() as u64, "{main:x?} outside .text at {text:#x}");
    }

    /// Debian's Go toolchain is itself a (stripped) Go 1.19 binary.
    #[test]
    fn reads_the_go_tool() {
        let Ok(path) = std::fs::canonicalize("/usr/bin/go") else { return };
        let data = open(path.to_str().unwrap()).unwrap();
        let b = GoBinary::parse(&data).unwrap();
        assert!(b.version.raw.starts_with("go1."), "{}", b.version.raw);
        let main = b.func("runtime.main").expect("runtime.main");
        assert!(main.end > main.start);
        assert_eq!(b.func_name_at(main.start + 1), Some("runtime.main"));
        // goexit1 has an ABI0 wrapper too: the body is the larger.
        let all = b.funcs_named("runtime.goexit1");
        assert_eq!(b.func("runtime.goexit1").map(|f| f.end - f.start), all.iter().map(|f| f.end - f.start).max());
    }
}

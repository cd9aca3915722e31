//! Stop-the-world reason names. Go 1.22+ passes a `stwReason` number to
//! startTheWorldWithSema; its names are the binary's own `runtime.stwReasonStrings` (a
//! `[N]string` in `.data`), read from `.symtab` when present, else found by its contents: the
//! bytes of "GC mark termination" (element 1) in `.rodata`, then a (pointer, 19) pair in
//! `.data` preceded by ("unknown", 7) and followed by ("GC sweep termination", 20). Reading the
//! table from the binary, not a built-in list, keeps the names right when releases add or
//! renumber reasons. Go ≤ 1.21 has no number: its reason is the `m.preemptoff` string the
//! callers of stopTheWorldWithSema set (`old_reason_name`).
use super::binary::GoBinary;

/// Most entries read; the runtime never passes a reason beyond its table, so reading past its
/// end (a stripped binary's table has no size) only adds names that are never looked up.
const MAX_REASONS: usize = 64;

/// `runtime.stwReasonStrings` of a Go 1.22+ binary, index = reason.
pub fn reason_strings(bin: &GoBinary) -> Result<Vec<String>, String> {
    if let Some((addr, size)) = symbol_with_size(bin, "runtime.stwReasonStrings") {
        let n = (size / 16).min(MAX_REASONS as u64) as usize;
        let table = bin.bytes_at(addr, n * 16).ok_or("runtime.stwReasonStrings is not in the file")?;
        let names = strings(bin, &table);
        if names.len() == n && names.first().map(String::as_str) == Some("unknown") {
            return Ok(names);
        }
        return Err("runtime.stwReasonStrings does not start with \"unknown\"".into());
    }
    let (ro_addr, ro) = bin.section(".rodata").ok_or("no .rodata")?;
    let (_, data) = bin.section(".data").ok_or("no .data")?;
    const KEY: &[u8] = b"GC mark termination";
    let mut from = 0;
    while let Some(i) = find(&ro[from..], KEY) {
        let ptr = ro_addr + (from + i) as u64;
        from += i + 1;
        let mut pair = [0u8; 16];
        pair[..8].copy_from_slice(&ptr.to_le_bytes());
        pair[8..].copy_from_slice(&(KEY.len() as u64).to_le_bytes());
        // Element 1, 8-aligned in .data.
        let mut at = 0;
        while let Some(j) = find(&data[at..], &pair) {
            let off = at + j;
            at = off + 1;
            if off % 8 != 0 || off < 16 {
                continue;
            }
            let end = (off - 16 + MAX_REASONS * 16).min(data.len());
            let names = strings(bin, &data[off - 16..end]);
            if names.len() >= 3 && names[0] == "unknown" && names[2] == "GC sweep termination" {
                return Ok(names);
            }
        }
    }
    Err("runtime.stwReasonStrings not found (no symbol, and no table holding \"GC mark termination\")".into())
}

/// The (ptr, len) strings at the start of `table`, up to the first that is not one.
fn strings(bin: &GoBinary, table: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for e in table.chunks_exact(16) {
        let ptr = u64::from_le_bytes(e[..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..].try_into().unwrap());
        if len == 0 || len > 64 {
            break;
        }
        match bin.bytes_at(ptr, len as usize).and_then(|b| String::from_utf8(b).ok()) {
            Some(s) if s.bytes().all(|c| (0x20..0x7f).contains(&c)) => out.push(s),
            _ => break,
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn symbol_with_size(bin: &GoBinary, name: &str) -> Option<(u64, u64)> {
    use object::{Object, ObjectSymbol};
    bin.file.symbols().find(|s| s.name() == Ok(name)).map(|s| (s.address(), s.size()))
}

/// A Go ≤ 1.21 stop's name from its `m.preemptoff` string. Go 1.19's callers (runtime
/// sources): `stopTheWorld(reason)` sets the reason it is given ("read mem stats",
/// "GOMAXPROCS", …); gcMarkDone sets "gcing" before the mark-termination stop; gcStart calls
/// stopTheWorldWithSema with preemptoff still "" (it returns early unless it is ""), the
/// sweep-termination stop. The GC ones get the names 1.22+ gives them.
pub fn old_reason_name(preemptoff: &str) -> String {
    match preemptoff {
        "" => "GC sweep termination".into(),
        "gcing" => "GC mark termination".into(),
        s => s.into(),
    }
}

/// The name of reason `n` in `names`, else `reason N`.
pub fn reason_name(names: &[String], n: u64) -> String {
    names.get(n as usize).cloned().unwrap_or_else(|| format!("reason {n}"))
}

/// Go 1.19's `runtime.m.preemptoff` offset (248 in its DWARF; tests/tests/go_uprobes.rs
/// `stw_counts_match_numgc` reads the reasons through it on the plain and stripped builds).
/// Other versions before 1.22: None (not measured here: no 1.20/1.21 toolchain), so their
/// stops are timed without a reason unless the caller has the offset from DWARF.
pub fn preemptoff_offset(minor: u32) -> Option<u32> {
    (minor == 19).then_some(248)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_names() {
        assert_eq!(old_reason_name(""), "GC sweep termination");
        assert_eq!(old_reason_name("gcing"), "GC mark termination");
        assert_eq!(old_reason_name("read mem stats"), "read mem stats");
        let names = vec!["unknown".to_string(), "GC mark termination".to_string()];
        assert_eq!(reason_name(&names, 1), "GC mark termination");
        assert_eq!(reason_name(&names, 7), "reason 7");
    }

    /// The Go 1.19 tool has no stwReasonStrings (added in 1.21): not found, with a reason.
    #[test]
    fn go_119_has_no_table() {
        let Ok(path) = std::fs::canonicalize("/usr/bin/go") else { return };
        let data = super::super::binary::open(path.to_str().unwrap()).unwrap();
        let b = GoBinary::parse(&data).unwrap();
        let e = reason_strings(&b).unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }
}

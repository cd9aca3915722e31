//! A function's stack-pointer delta at a pc, from `.gopclntab`'s `pcsp` tables — what Go's
//! own traceback uses. Needed for one case only: a goroutine in a system call on Go ≤ 1.22
//! saved its pc and sp (`syscallpc`/`syscallsp`) but not its frame pointer, so its first
//! frame is unwound by its frame size, and the frame-pointer chain continues from there.
use object::ObjectSection;

use super::binary::GoBinary;

#[derive(Clone, Debug)]
pub struct Pcsp {
    table: Vec<u8>,
    text_start: u64,
    quantum: u64,
    pctab: usize,
    /// (entry offset from text_start, offset of the `_func` in `table`), sorted by entry.
    funcs: Vec<(u32, usize)>,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// A pclntab varint (LEB128, at most 5 bytes for a u32) at `*at`, advancing it.
pub(super) fn uvarint(d: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        let b = *d.get(*at)?;
        *at += 1;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Pcsp {
    /// The pcsp tables of a Go 1.18+ 64-bit binary (None: another layout).
    pub fn load(bin: &GoBinary) -> Option<Pcsp> {
        let table = crate::symbolize::gopclntab::section(&bin.file)?.data().ok()?.to_vec();
        let magic = u32_at(&table, 0)?;
        if (magic != 0xffff_fff0 && magic != 0xffff_fff1) || *table.get(7)? != 8 {
            return None;
        }
        let quantum = u64::from(*table.get(6)?);
        let field = |i: usize| Some(u64::from_le_bytes(table.get(8 + i * 8..16 + i * 8)?.try_into().ok()?) as usize);
        let nfunc = field(0)?;
        let pctab = field(6)?;
        let pcln = field(7)?;
        let text_start = bin.text_start();
        let funcs = (0..nfunc)
            .map(|i| Some((u32_at(&table, pcln + i * 8)?, pcln + u32_at(&table, pcln + i * 8 + 4)? as usize)))
            .collect::<Option<Vec<_>>>()?;
        Some(Pcsp { table, text_start, quantum, pctab, funcs })
    }

    /// The SP delta (bytes below the return address) of the function containing `pc`
    /// (link-time address) at `pc`.
    pub fn delta(&self, pc: u64) -> Option<u64> {
        let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let i = self.funcs.partition_point(|(e, _)| *e <= rel).checked_sub(1)?;
        let (entry, func) = self.funcs[i];
        // _func: entryOff u32, nameOff i32, args i32, deferreturn u32, pcsp u32, …
        let off = u32_at(&self.table, func + 16)? as usize;
        if off == 0 {
            return None;
        }
        let d = &self.table;
        let mut at = self.pctab + off;
        let (mut val, mut cur, mut first) = (-1i64, self.text_start + u64::from(entry), true);
        // Bounded: a table has one pair per change of SP, far fewer than 1 << 16.
        for _ in 0..1 << 16 {
            let uv = uvarint(d, &mut at)?;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            val += i64::from(-((uv & 1) as i32) ^ (uv >> 1) as i32);
            cur += u64::from(uvarint(d, &mut at)?) * self.quantum;
            if pc < cur {
                return u64::try_from(val).ok();
            }
        }
        None
    }
}

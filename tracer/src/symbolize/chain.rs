//! Which skipped callers (return addresses found between sp and bp, see tracer_common::unwind)
//! are real. A frame-pointer walk skips the caller of a leaf that built no frame; the words
//! between sp and bp hold that caller's return address — and, when the leaf did build a frame,
//! only its locals, where stale return addresses of earlier calls are common. The checks here
//! decide from the code around each return address.

/// The call instruction before a return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `call rel32`: the absolute target.
    Direct(u64),
    /// Through a register or memory: the target is not in the instruction.
    Indirect,
}

/// Decodes the x86_64 call that ends right before `ret`, from the 8 bytes before it.
pub fn decode_call(before: &[u8], ret: u64) -> Option<Call> {
    let b: &[u8; 8] = before.try_into().ok()?;
    if b[3] == 0xE8 {
        // call rel32: relative to the return address.
        return Some(Call::Direct(ret.wrapping_add(i32::from_le_bytes([b[4], b[5], b[6], b[7]]) as i64 as u64)));
    }
    // call reg (r8-r15 have a REX prefix before the same two bytes); call [reg+disp8]; call
    // [rip+disp32] or [reg+disp32].
    let indirect = (b[6] == 0xFF && b[7] & 0xF8 == 0xD0)
        || (b[5] == 0xFF && b[6] & 0xF8 == 0x50)
        || (b[2] == 0xFF && (b[3] == 0x15 || b[3] & 0xF8 == 0x90));
    indirect.then_some(Call::Indirect)
}

/// The callee the probes' leaf scan records for a return address (LeafFix.callees): the call's
/// target for a direct call, 0 for an indirect one; None when no call precedes `ret`.
pub fn callee(before: &[u8], ret: u64) -> Option<u64> {
    match decode_call(before, ret)? {
        Call::Direct(target) => Some(target),
        Call::Indirect => Some(0),
    }
}

/// What the chain check needs to know about one stack.
pub struct ChainInput<'a> {
    /// Walked lookup addresses, leaf first (return addresses already at `ret - 1`).
    pub walked: &'a [u64],
    /// The raw walked frames (`walked[1] + 1` is the return address the walk resumed at).
    pub resume_ret: Option<u64>,
    pub rets: &'a [u64],
    pub callees: &'a [u64],
    /// The call before the return address the walk resumed at, when its code could be read.
    pub resume_call: Option<Call>,
}

/// The lookup addresses of a stack with the skipped callers inserted after the leaf when the
/// chain is consistent. `at` gives the file an address lies in and, if known, its function.
///
/// - When the frame the walk resumed in made a direct call, its target is where the skipped
///   chain must end: if that target is the leaf's own function, the leaf built its frame and
///   nothing was skipped (every candidate is a stale value in its locals); otherwise the
///   candidates are taken up to that function, and all dropped if they never reach it.
/// - Each candidate must follow a call into the function found so far (a direct call's target
///   is that function, or a stub in another module such as a PLT entry; an indirect call cannot
///   be checked and is accepted only for the first).
/// - Insertion stops at the first candidate that fails, has no symbol, or reaches the function
///   the walk resumes in.
pub fn with_skipped_callers<'n>(
    c: &ChainInput<'_>,
    at: &dyn Fn(u64) -> Option<(Option<&'n str>, &'n str)>,
) -> Vec<u64> {
    let fn_at = |a: u64| at(a).and_then(|(f, m)| Some((f?, m)));
    let mut out = c.walked.to_vec();
    if out.is_empty() || c.rets.first().is_none_or(|&r| r == 0) {
        return out;
    }
    let Some((leaf_fn, leaf_mod)) = fn_at(out[0]) else { return out };
    let resume = out.get(1).and_then(|&a| fn_at(a)).map(|(f, _)| f);
    let end = match c.resume_call {
        Some(Call::Direct(t)) => fn_at(t),
        _ => None,
    };
    if end.is_some_and(|(f, _)| f == leaf_fn) {
        return out;
    }
    let (mut expect_fn, mut expect_mod) = (leaf_fn, leaf_mod);
    let mut inserted = Vec::new();
    let mut reached = false;
    for (i, (&ret, &callee)) in c.rets.iter().zip(c.callees).enumerate() {
        if ret == 0 || Some(ret) == c.resume_ret {
            break;
        }
        // Past the first, a candidate may be a stale return address left in a caller's
        // locals by an earlier call: only a direct call into the function found so far counts.
        if i > 0 && callee == 0 {
            break;
        }
        let Some((f, module)) = fn_at(ret - 1) else { break };
        if callee != 0 {
            let ok = match fn_at(callee) {
                Some((cf, cmod)) => cf == expect_fn || cmod != expect_mod,
                None => at(callee).is_some_and(|(_, cmod)| cmod != expect_mod),
            };
            if !ok {
                break;
            }
        }
        if Some(f) == resume || f == expect_fn {
            break;
        }
        inserted.push(ret - 1);
        (expect_fn, expect_mod) = (f, module);
        // The resumed frame called f (or a PLT stub in its own module for f in another): done.
        if let Some((ef, emod)) = end {
            if ef == f || (emod != module && ef.ends_with("@plt")) {
                reached = true;
                break;
            }
        }
    }
    if end.is_some() && !reached {
        inserted.clear();
    }
    out.splice(1..1, inserted);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_calls() {
        // e8 rel32 = 0x10 → ret + 0x10
        assert_eq!(decode_call(&[0x90, 0x90, 0x90, 0xE8, 0x10, 0, 0, 0], 0x1000), Some(Call::Direct(0x1010)));
        // e8 rel32 = -0x100
        let rel = (-0x100i32).to_le_bytes();
        assert_eq!(decode_call(&[0, 0, 0, 0xE8, rel[0], rel[1], rel[2], rel[3]], 0x1000), Some(Call::Direct(0xf00)));
        // call *%rax (ff d0), call *0x8(%rbx) (ff 53 08), call *rip+disp32 (ff 15 …)
        assert_eq!(decode_call(&[0, 0, 0, 0, 0, 0, 0xFF, 0xD0], 0x1000), Some(Call::Indirect));
        assert_eq!(decode_call(&[0, 0, 0, 0, 0, 0xFF, 0x53, 0x08], 0x1000), Some(Call::Indirect));
        assert_eq!(decode_call(&[0, 0, 0xFF, 0x15, 1, 2, 3, 4], 0x1000), Some(Call::Indirect));
        assert_eq!(decode_call(&[0x90; 8], 0x1000), None);
        assert_eq!(decode_call(&[0x90; 4], 0x1000), None);
    }
}

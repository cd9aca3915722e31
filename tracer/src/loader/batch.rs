//! Whole hash maps read with BPF_MAP_LOOKUP_BATCH (Linux 5.6): thousands of entries per
//! syscall. aya reads a map entry by entry (get_next_key, then lookup: two syscalls and ~3 µs
//! each); the drain at a build's end reads ~80,000 entries (off-CPU blocks, wakeups, stacks),
//! and that was 250 ms between the build's exit and its report. aya has no batch operations;
//! this is the one syscall, on the map's own fd. A kernel without them (EINVAL, ENOTSUPP)
//! gets aya's walk.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Result};
use aya::{maps::Map, Pod};

/// BPF_MAP_LOOKUP_BATCH and BPF_MAP_LOOKUP_AND_DELETE_BATCH in enum bpf_cmd.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// ENOTSUPP (kernel-internal, 524): what an old kernel or a map type without batch ops says.
const ENOTSUPP: i32 = 524;
/// Entries per call: a hash map hands out whole buckets, and one bucket never holds this many.
const CHUNK: usize = 4096;

/// The `batch` member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of a hash (or LRU hash) map, as aya's `HashMap::iter` gives them.
pub fn entries<K: Pod, V: Pod>(map: &Map) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    visit(map, |k, v: &V| out.push((k, *v)))?;
    Ok(out)
}

/// Calls `f` with every (key, value) of a hash map, the value borrowed (a stack map's values
/// are 1 KiB each: 16 MB for a full USER_STACKS, not copied into a list first).
pub fn visit<K: Pod, V: Pod>(map: &Map, mut f: impl FnMut(K, &V)) -> Result<()> {
    let (Map::HashMap(data) | Map::LruHashMap(data)) = map else { bail!("not a hash map") };
    // aya checks the key and value sizes against the map's.
    let checked: aya::maps::HashMap<_, K, V> = aya::maps::HashMap::try_from(map)?;
    match batched(data.fd().as_fd().as_raw_fd(), BPF_MAP_LOOKUP_BATCH, &mut f) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(ENOTSUPP)) => {
            checked.iter().filter_map(Result::ok).for_each(|(k, v)| f(k, &v));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Like `visit`, and every entry handed to `f` is deleted from the map by the same syscall
/// (BPF_MAP_LOOKUP_AND_DELETE_BATCH, bucket by bucket under the bucket's lock): an entry a
/// program stores meanwhile stays for the next read, none is deleted unread. Returns how many
/// were taken. Without the batch call (EINVAL, ENOTSUPP: older kernels), nothing is taken.
pub fn take<K: Pod, V: Pod>(map: &Map, mut f: impl FnMut(K, &V)) -> Result<u64> {
    let (Map::HashMap(data) | Map::LruHashMap(data)) = map else { bail!("not a hash map") };
    let _: aya::maps::HashMap<_, K, V> = aya::maps::HashMap::try_from(map)?;
    let mut n = 0;
    let mut count = |k, v: &V| {
        n += 1;
        f(k, v)
    };
    match batched(data.fd().as_fd().as_raw_fd(), BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut count) {
        Ok(()) => Ok(n),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(ENOTSUPP)) && n == 0 => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn batched<K: Pod, V: Pod>(fd: i32, cmd: libc::c_long, f: &mut impl FnMut(K, &V)) -> std::io::Result<()> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut keys: Vec<u8> = vec![0; CHUNK * ks];
    let mut values: Vec<u8> = vec![0; CHUNK * vs];
    // A hash map's batch token is its next bucket (a u32).
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the map's sizes (aya
        // checked them) and at 8-byte tokens; the kernel writes no more than that.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut attr, std::mem::size_of::<BatchAttr>()) };
        let err = (r < 0).then(std::io::Error::last_os_error);
        if let Some(e) = &err {
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO)));
            }
        }
        for i in 0..attr.count as usize {
            // SAFETY: Pod types, read unaligned from the kernel's bytes.
            let k = unsafe { std::ptr::read_unaligned(keys[i * ks..].as_ptr().cast::<K>()) };
            // Values are read in place when aligned (vs is a multiple of V's alignment and the
            // buffer is a u64 vector), else copied.
            let at = values[i * vs..].as_ptr();
            if at.align_offset(std::mem::align_of::<V>()) == 0 {
                // SAFETY: aligned, in bounds, and any bytes are a valid Pod.
                f(k, unsafe { &*at.cast::<V>() });
            } else {
                // SAFETY: as above, unaligned read.
                f(k, &unsafe { std::ptr::read_unaligned(at.cast::<V>()) });
            }
        }
        // ENOENT: that was the last bucket.
        if err.is_some() {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

//! Reading L2 tables: several adjacent tables in one call, the words byte-swapped in place,
//! and a few reused windows for the sequential walks of `status` (map, read, NBD, diff).

use std::sync::{Arc, Mutex};

use super::cluster::L1E_OFFSET_MASK;
use super::{Qcow2, Result};
use crate::image::Error;

/// At most this many bytes of adjacent L2 tables are read in one call.
pub(super) const L2_BATCH_BYTES: u64 = 1 << 20;
/// Windows kept for `status`: one per concurrent sequential walk (the NBD plugin's
/// connections, diff's two halves) without thrashing.
const WINDOWS: usize = 4;

/// One L2 table's words (native endian), a part of a read that may hold several tables.
#[derive(Clone)]
pub struct L2Words {
    pub(super) buf: Arc<Vec<u64>>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl std::ops::Deref for L2Words {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Tables read for `status` into buffers that are reused: a walk over a whole disk reads
/// every table once and keeps none, so fresh memory (and its page faults) per table would be
/// its main cost.
#[derive(Default)]
pub(super) struct L2Windows {
    slots: Mutex<(u64, Vec<Window>)>,
}

struct Window {
    /// Host offset of the first table, number of tables.
    off: u64,
    tables: u64,
    last_use: u64,
    words: Vec<u64>,
}

impl L2Windows {
    pub(super) fn clear(&self) {
        self.slots.lock().unwrap().1.clear();
    }
}

impl Qcow2 {
    /// How many tables one read at `off` takes: this one and those of the L1 entries after
    /// `l1i` while each lies right after the previous in the file (as qemu-img convert and
    /// preallocation lay them out), at most L2_BATCH_BYTES.
    pub(super) fn l2_run(&self, off: u64, l1i: Option<usize>, stop: impl Fn(u64) -> bool) -> u64 {
        let cs = self.cluster_size();
        let mut n = 1u64;
        if let Some(i) = l1i {
            while (n + 1) * cs <= L2_BATCH_BYTES {
                match self.l1.get(i + n as usize) {
                    Some(&e) if e & L1E_OFFSET_MASK == off + n * cs && !stop(off + n * cs) => n += 1,
                    _ => break,
                }
            }
        }
        n
    }

    /// Read `tables` L2 tables at `off` into `words` (resized, its memory reused), native
    /// endian. A table the end of the file cuts short (or that lies past it) reads its
    /// missing part as zero, as qemu's reads past the end do; `open` warns about it.
    pub(super) fn read_l2_into(&self, off: u64, tables: u64, words: &mut Vec<u64>) -> Result<()> {
        let cs = self.cluster_size();
        if !off.is_multiple_of(cs) {
            return Err(Error::corrupt(format!("{}: L2 table offset 0x{:x} is not cluster aligned", self.file.name, off)));
        }
        words.clear();
        words.resize((tables * cs / 8) as usize, 0);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
        self.file.read_zero_fill(off, bytes)?;
        if self.any_l2_pending() {
            // a lazy write's entries not yet in the file (NBD before its FLUSH) lie over
            // the tables they belong to, as for every other L2 read (write.rs)
            for (k, t) in bytes.chunks_exact_mut(cs as usize).enumerate() {
                let t_off = off + k as u64 * cs;
                if self.l2_pending(t_off) {
                    self.read_l2_raw(t_off, t)?;
                }
            }
        }
        for w in words.iter_mut() {
            *w = u64::from_be(*w);
        }
        Ok(())
    }

    /// Run `f` on the words of the L2 table at `off` (the table of L1 entry `l1i`), from a
    /// reused window.
    pub(super) fn with_l2<R>(&self, off: u64, l1i: usize, f: impl FnOnce(&[u64]) -> R) -> Result<R> {
        let cs = self.cluster_size();
        let per = (cs / 8) as usize;
        let mut g = self.l2_windows.slots.lock().unwrap();
        let (tick, slots) = &mut *g;
        *tick += 1;
        let hit = slots.iter().position(|w| off >= w.off && off < w.off + w.tables * cs && (off - w.off).is_multiple_of(cs));
        let i = match hit {
            Some(i) => i,
            None => {
                let tables = self.l2_run(off, Some(l1i), |_| false);
                let i = if slots.len() < WINDOWS {
                    slots.push(Window { off, tables: 0, last_use: 0, words: Vec::new() });
                    slots.len() - 1
                } else {
                    (0..slots.len()).min_by_key(|&i| slots[i].last_use).unwrap()
                };
                let w = &mut slots[i];
                // a failed read leaves the window empty, not stale
                w.tables = 0;
                self.read_l2_into(off, tables, &mut w.words)?;
                w.off = off;
                w.tables = tables;
                i
            }
        };
        let w = &mut slots[i];
        w.last_use = *tick;
        let start = ((off - w.off) / cs) as usize * per;
        Ok(f(&w.words[start..start + per]))
    }
}

/// How many of `words` from the start satisfy `ok`; when zero words do, runs of them are
/// skipped eight words at a time (unallocated stretches of a sparse table).
pub(super) fn leading(words: &[u64], ok: impl Fn(u64) -> bool) -> usize {
    let mut i = 0;
    if ok(0) {
        for c in words.chunks_exact(8) {
            if c.iter().fold(0, |a, &w| a | w) != 0 {
                break;
            }
            i += 8;
        }
    }
    i + words[i..].iter().take_while(|&&w| ok(w)).count()
}

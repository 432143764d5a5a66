//! Writing a VHD: in place for fixed disks and allocated blocks; new blocks at the end of
//! the file otherwise (the footer moves past them first, so the file always ends in a
//! footer), their bitmaps and data next, the BAT entries last. In a differencing disk a
//! partly written sector whose bit is clear is completed from the parent before its bit is set.

use super::{bit, Vhd, BAT_UNUSED, SECTOR};
use crate::image::write::step;
use crate::image::{Error, Result};

pub type Below<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

impl Vhd {
    /// What qemu's vpc_open refuses, among what vdiskview opens: qemu takes the footer copy
    /// at offset 0 when it has the cookie, else the footer at the end, and refuses the image
    /// when that footer's checksum is wrong ("Incorrect header checksum").
    pub fn qemu_refusal(&self) -> Option<String> {
        let (f, which) = match (&self.footer_copy, &self.end_footer) {
            (Some(c), _) if c.cookie_ok() => (c, "the footer copy at offset 0"),
            (_, Some(e)) => (e, "the footer at the end of the file"),
            _ => (&self.footer, "the footer"),
        };
        (!f.checksum_ok()).then(|| {
            format!(
                "checksum 0x{:08x} of {} does not match the computed 0x{:08x} (qemu: Incorrect header checksum)",
                f.checksum,
                which,
                f.computed_checksum()
            )
        })
    }

    pub fn write(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        // before the first byte: what qemu validates at open for writing
        if let Some(why) = self.qemu_refusal() {
            return Err(Error::corrupt(format!("{}: refusing to write: {}", self.file.name, why)));
        }
        let Some(_) = self.block_size() else {
            // fixed: the guest disk is the start of the file
            let end_data = self.end_footer.as_ref().map(|f| f.offset).unwrap_or(0);
            if virt + data.len() as u64 > end_data {
                return Err(Error::corrupt(format!(
                    "{}: the write reaches past the data area of this fixed disk (0x{:x})",
                    self.file.name, end_data
                )));
            }
            self.file.write_at(virt, data)?;
            self.file.sync_final()?;
            step("vhd fixed data");
            return Ok(());
        };
        if self.end_footer.is_none() {
            return Err(Error::corrupt(format!(
                "{}: the footer at the end of the file is damaged; repair it before writing",
                self.file.name
            )));
        }
        self.write_blocks(virt, data, below)
    }

    /// A write call on a dynamic or differencing disk, in groups, each flushed before the
    /// next (one flush per group, not per block):
    ///  1. new blocks: the footer at the new end of the file, past all of them (the file
    ///     always ends in a valid footer); flush
    ///  2. their sector bitmaps (all present on a dynamic disk, as qemu marks them; all
    ///     clear on a differencing one) and all data, partial sectors completed from this
    ///     file or the parent; nothing points at a new block yet; flush
    ///  3. the BAT entries of the new blocks; flush
    ///  4. on a differencing disk, the bitmap bits of the sectors written; flush.
    ///
    /// A crash between groups leaves each block old (unreachable, or its sectors still in
    /// the parent) or new, the file ending in a footer. The last flush is
    /// [`crate::image::io::HostFile::sync_final`] (deferred on a lazy file).
    fn write_blocks(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        let bs = self.block_size().expect("dynamic");
        let h = self.header.as_ref().expect("dynamic");
        let (table_offset, max_entries) = (h.table_offset, h.max_table_entries as u64);
        let footer = self.end_footer.as_ref().expect("checked").clone();
        let diff = self.is_differencing();
        let fill = if diff { 0 } else { 0xff };
        struct Piece {
            block: u64,
            start: u64,
            at: u64,
            buf: Vec<u8>,
            bitmap: Option<Vec<u8>>,
        }
        let mut pieces = Vec::new();
        let mut new_blocks: Vec<(u64, u64)> = Vec::new();
        let mut next = footer.offset.next_multiple_of(SECTOR);
        let mut pos = 0usize;
        while pos < data.len() {
            let v = virt + pos as u64;
            let block = v / bs;
            let in_block = v % bs;
            let n = ((bs - in_block) as usize).min(data.len() - pos);
            let d = &data[pos..pos + n];
            let (start, bm) = match self.block_start(block)? {
                Some(s) => (s, self.bitmap(block)?.expect("allocated").as_ref().clone()),
                None => {
                    if block >= max_entries {
                        return Err(Error::corrupt(format!("block {} has no BAT entry", block)));
                    }
                    if next / SECTOR >= BAT_UNUSED as u64 {
                        return Err(Error::Invalid("the file is too large for another VHD block".into()));
                    }
                    let s = next;
                    next += self.bitmap_size + bs;
                    new_blocks.push((block, s));
                    (s, vec![fill; self.bitmap_size as usize])
                }
            };
            let is_new = new_blocks.last().is_some_and(|&(b, _)| b == block);
            // whole sectors to write: widen to sector bounds, completing partial sectors
            // whose bytes are not in this file yet from the parent (differencing) or zeros
            let first = in_block / SECTOR * SECTOR;
            let end = (in_block + n as u64).div_ceil(SECTOR) * SECTOR;
            let mut buf = vec![0u8; (end - first) as usize];
            for (i, s) in [(0usize, first / SECTOR), (buf.len() - SECTOR as usize, end / SECTOR - 1)] {
                let partial = (s == first / SECTOR && !in_block.is_multiple_of(SECTOR))
                    || (s == end / SECTOR - 1 && !(in_block + n as u64).is_multiple_of(SECTOR));
                if !partial {
                    continue;
                }
                let sector = &mut buf[i..i + SECTOR as usize];
                if bit(&bm, s) || !diff {
                    if !is_new {
                        self.file.read_zero_fill(start + self.bitmap_size + s * SECTOR, sector)?;
                    }
                } else {
                    below(block * bs + s * SECTOR, sector)?;
                }
            }
            let off = (in_block - first) as usize;
            buf[off..off + n].copy_from_slice(d);
            let mut new_bm = bm.clone();
            let mut changed = false;
            for s in first / SECTOR..end / SECTOR {
                if !bit(&new_bm, s) {
                    new_bm[(s / 8) as usize] |= 0x80 >> (s % 8);
                    changed = true;
                }
            }
            pieces.push(Piece { block, start, at: start + self.bitmap_size + first, buf, bitmap: changed.then_some(new_bm) });
            pos += n;
        }
        let groups = [!new_blocks.is_empty(), true, !new_blocks.is_empty(), pieces.iter().any(|p| p.bitmap.is_some())];
        let last = groups.iter().rposition(|&g| g).unwrap_or(1);
        let barrier = |me: &Self, g: usize, what: &str| -> Result<()> {
            if g == last {
                me.file.sync_final()?;
            } else {
                me.file.sync()?;
            }
            step(what);
            Ok(())
        };
        // 1. the footer past the new blocks
        if groups[0] {
            self.file.write_at(next, &footer.bytes)?;
            barrier(self, 0, "vhd footer moved")?;
        }
        // 2. bitmaps of the new blocks, all data
        for &(_, s) in &new_blocks {
            self.file.write_at(s, &vec![fill; self.bitmap_size as usize])?;
        }
        for p in &pieces {
            self.file.write_at(p.at, &p.buf)?;
        }
        barrier(self, 1, if new_blocks.is_empty() { "vhd block data" } else { "vhd bitmaps and block data" })?;
        // 3. the BAT entries
        if groups[2] {
            for &(block, s) in &new_blocks {
                self.file.write_at(table_offset + block * 4, &((s / SECTOR) as u32).to_be_bytes())?;
            }
            barrier(self, 2, "vhd bat entries")?;
            for &(block, s) in &new_blocks {
                self.bat[block as usize] = (s / SECTOR) as u32;
            }
            let mut moved = footer;
            moved.offset = next;
            self.end_footer = Some(moved);
        }
        // 4. the sectors' bits (differencing)
        if groups[3] {
            for p in &pieces {
                if let Some(bm) = &p.bitmap {
                    self.file.write_at(p.start, bm)?;
                }
            }
            barrier(self, 3, "vhd sector bitmap")?;
        }
        for p in &pieces {
            self.forget_bitmap(p.block);
        }
        Ok(())
    }

    fn forget_bitmap(&self, block: u64) {
        self.bitmaps.lock().unwrap().remove(&(block as u32));
    }
}

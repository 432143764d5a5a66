//! Writing a VHD: in place for fixed disks and allocated blocks; a new block at the end of
//! the file otherwise (the footer moves after it first, so the file always ends in a
//! footer), the BAT entry last. In a differencing disk a partly written sector whose bit is
//! clear is completed from the parent before its bit is set.

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
        let Some(bs) = self.block_size() else {
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
        let mut pos = 0usize;
        while pos < data.len() {
            let v = virt + pos as u64;
            let block = v / bs;
            let n = ((bs - v % bs) as usize).min(data.len() - pos);
            let last = pos + n == data.len();
            self.write_in_block(block, v % bs, &data[pos..pos + n], below, last)?;
            pos += n;
        }
        Ok(())
    }

    /// `last`: the last block of the write call, whose last flush is the final one
    /// ([`crate::image::io::HostFile::sync_final`]: deferred on a lazy file).
    fn write_in_block(&mut self, block: u64, in_block: u64, data: &[u8], below: Below, last: bool) -> Result<()> {
        let bs = self.block_size().expect("dynamic");
        let start = match self.block_start(block)? {
            Some(s) => s,
            None => self.allocate_block(block)?,
        };
        let diff = self.is_differencing();
        let mut bm = self.bitmap(block)?.expect("allocated").as_ref().clone();
        // whole sectors to write: widen to sector bounds, completing partial sectors whose
        // bytes are not in this file yet from the parent (differencing) or zeros
        let first = in_block / SECTOR * SECTOR;
        let end = (in_block + data.len() as u64).div_ceil(SECTOR) * SECTOR;
        let mut buf = vec![0u8; (end - first) as usize];
        let block_virt = block * bs;
        for (i, s) in [(0usize, first / SECTOR), (buf.len() - SECTOR as usize, end / SECTOR - 1)] {
            let partial = (s == first / SECTOR && !in_block.is_multiple_of(SECTOR))
                || (s == end / SECTOR - 1 && !(in_block + data.len() as u64).is_multiple_of(SECTOR));
            if !partial {
                continue;
            }
            let sector = &mut buf[i..i + SECTOR as usize];
            if bit(&bm, s) || !diff {
                self.file.read_zero_fill(start + self.bitmap_size + s * SECTOR, sector)?;
            } else {
                below(block_virt + s * SECTOR, sector)?;
            }
        }
        let off = (in_block - first) as usize;
        buf[off..off + data.len()].copy_from_slice(data);
        self.file.write_at(start + self.bitmap_size + first, &buf)?;
        let mut changed = false;
        for s in first / SECTOR..end / SECTOR {
            if !bit(&bm, s) {
                bm[(s / 8) as usize] |= 0x80 >> (s % 8);
                changed = true;
            }
        }
        if changed || !last {
            self.file.sync()?;
        } else {
            self.file.sync_final()?;
        }
        step("vhd block data");
        if changed {
            self.file.write_at(start, &bm)?;
            if last {
                self.file.sync_final()?;
            } else {
                self.file.sync()?;
            }
            step("vhd sector bitmap");
        }
        self.forget_bitmap(block);
        Ok(())
    }

    /// Put a new block where the footer is, the footer after it, then the BAT entry.
    fn allocate_block(&mut self, block: u64) -> Result<u64> {
        let bs = self.block_size().expect("dynamic");
        let h = self.header.as_ref().expect("dynamic");
        if block >= h.max_table_entries as u64 {
            return Err(Error::corrupt(format!("block {} has no BAT entry", block)));
        }
        let footer = self.end_footer.as_ref().expect("checked").clone();
        let start = footer.offset.next_multiple_of(SECTOR);
        if start / SECTOR >= BAT_UNUSED as u64 {
            return Err(Error::Invalid("the file is too large for another VHD block".into()));
        }
        let new_footer = start + self.bitmap_size + bs;
        // 1. the footer at the new end: the file ends in a valid footer from here on
        let mut fbytes = self.footer.bytes;
        if let Some(e) = &self.end_footer {
            fbytes = e.bytes;
        }
        self.file.write_at(new_footer, &fbytes)?;
        self.file.sync()?;
        step("vhd footer moved");
        // 2. the block's bitmap over the old footer: qemu marks a dynamic disk's new block
        //    all present; a differencing disk's sectors stay in the parent until written
        let fill = if self.is_differencing() { 0 } else { 0xff };
        self.file.write_at(start, &vec![fill; self.bitmap_size as usize])?;
        self.file.sync()?;
        step("vhd bitmap");
        // 3. the BAT entry
        let entry = (start / SECTOR) as u32;
        self.file.write_at(h.table_offset + block * 4, &entry.to_be_bytes())?;
        self.file.sync()?;
        step("vhd bat entry");
        self.bat[block as usize] = entry;
        let mut moved = footer;
        moved.offset = new_footer;
        self.end_footer = Some(moved);
        self.forget_bitmap(block);
        Ok(start)
    }

    fn forget_bitmap(&self, block: u64) {
        self.bitmaps.lock().unwrap().remove(&(block as u32));
    }
}

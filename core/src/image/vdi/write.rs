//! Writing a VDI as qemu does: in place for a static image and for allocated blocks; a new
//! block otherwise, numbered `blocks allocated` and written whole (zeros around the data, in
//! pieces of at most 1 MiB),
//! then the header's count, then the block map entry (qemu's order: a crash between leaves a
//! count that is too high, which `check` reports, never a block used twice).

use super::{is_allocated, Vdi};
use crate::image::write::step;
use crate::image::{Error, Result};

impl Vdi {
    pub fn write(&mut self, virt: u64, data: &[u8]) -> Result<()> {
        let bs = self.block_size();
        let mut pos = 0usize;
        while pos < data.len() {
            let v = virt + pos as u64;
            let block = v / bs;
            let in_block = v % bs;
            let n = ((bs - in_block) as usize).min(data.len() - pos);
            let piece = &data[pos..pos + n];
            let entry = *self
                .bmap
                .get(block as usize)
                .ok_or_else(|| Error::corrupt(format!("{}: block {} has no block map entry", self.file.name, block)))?;
            if is_allocated(entry) {
                self.file.write_at(self.block_offset(entry) + in_block, piece)?;
                self.file.sync()?;
                step("vdi data");
            } else {
                self.allocate_and_write(block, in_block, piece)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn allocate_and_write(&mut self, block: u64, in_block: u64, piece: &[u8]) -> Result<()> {
        let name = self.file.name.clone();
        let entry = self.header.blocks_allocated;
        if entry >= self.header.blocks_in_image || self.bmap.contains(&entry) {
            return Err(Error::corrupt(format!(
                "{}: cannot allocate block {}: the header counts {} allocated blocks of {}, or that block is in use (run check)",
                name, block, entry, self.header.blocks_in_image
            )));
        }
        // Written in pieces of at most 1 MiB (a header may claim blocks of up to 256 MiB);
        // a piece of zeros that lies past the end of the file is left a hole (it reads as
        // zeros, and qemu's map of a dynamic VDI does not look at the file's holes), one
        // inside the file is written (old bytes there must not show through). A 1 MiB block,
        // the only size qemu and VirtualBox make, is one piece: written whole, as qemu does.
        const PIECE: u64 = 1 << 20;
        let bs = self.block_size();
        let at = self.block_offset(entry);
        let file_end = self.file.len();
        let (p0, p1) = (in_block, in_block + piece.len() as u64);
        let mut buf = vec![0u8; PIECE.min(bs) as usize];
        let mut o = 0u64;
        while o < bs {
            let n = PIECE.min(bs - o);
            let (s0, s1) = (p0.max(o), p1.min(o + n));
            if s0 < s1 || at + o < file_end {
                let b = &mut buf[..n as usize];
                b.fill(0);
                if s0 < s1 {
                    b[(s0 - o) as usize..(s1 - o) as usize].copy_from_slice(&piece[(s0 - p0) as usize..(s1 - p0) as usize]);
                }
                self.file.write_at(at + o, b)?;
            }
            o += n;
        }
        self.file.extend_to(at + bs)?;
        self.file.sync()?;
        step("vdi new block");
        self.file.write_at(388, &(entry + 1).to_le_bytes())?;
        self.file.sync()?;
        step("vdi blocks allocated");
        self.file.write_at(self.header.offset_bmap as u64 + block * 4, &entry.to_le_bytes())?;
        self.file.sync()?;
        step("vdi block map entry");
        self.header.blocks_allocated = entry + 1;
        self.bmap[block as usize] = entry;
        self.reverse = std::sync::OnceLock::new();
        Ok(())
    }
}

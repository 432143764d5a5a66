//! Refcount table and refcount blocks.

use super::Qcow2;
use crate::image::region::Region;
use crate::image::{Error, Result};

impl Qcow2 {
    /// Refcount table entries (offsets of refcount blocks), bounded by the file size.
    pub fn refcount_table(&self) -> Result<Vec<u64>> {
        let h = &self.header;
        let bytes = h.refcount_table_clusters as u64 * self.cluster_size();
        if h.refcount_table_offset.checked_add(bytes).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(format!(
                "{}: refcount table at 0x{:x} ({} clusters) lies past the end of the file",
                self.file.name, h.refcount_table_offset, h.refcount_table_clusters
            )));
        }
        let mut buf = vec![0u8; bytes as usize];
        self.file.read_exact_at(h.refcount_table_offset, &mut buf, "refcount table")?;
        Ok(buf.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap()) & !0x1ff).collect())
    }

    /// Entries per refcount block.
    pub fn refcounts_per_block(&self) -> u64 {
        self.cluster_size() * 8 / self.header.refcount_bits() as u64
    }

    /// The refcount of host cluster `cluster` (0 where no refcount block covers it).
    pub fn refcount(&self, table: &[u64], cluster: u64) -> Result<u64> {
        let per = self.refcounts_per_block();
        let Some(&block) = table.get((cluster / per) as usize) else { return Ok(0) };
        if block == 0 {
            return Ok(0);
        }
        let bits = self.header.refcount_bits() as u64;
        let idx = cluster % per;
        let bit_off = idx * bits;
        let mut b = [0u8; 8];
        let nbytes = bits.div_ceil(8) as usize;
        self.file.read_exact_at(block + bit_off / 8, &mut b[..nbytes], "refcount block")?;
        Ok(if bits >= 8 {
            b[..nbytes].iter().fold(0u64, |a, &x| (a << 8) | x as u64)
        } else {
            ((b[0] >> (bit_off % 8)) as u64) & ((1 << bits) - 1)
        })
    }

    /// Every refcount of one refcount block, decoded (one read for the whole block).
    pub fn refcount_block(&self, block: u64) -> Result<Vec<u64>> {
        let cs = self.cluster_size() as usize;
        let mut buf = vec![0u8; cs];
        self.file.read_exact_at(block, &mut buf, "refcount block")?;
        let bits = self.header.refcount_bits() as usize;
        Ok(if bits >= 8 {
            buf.chunks_exact(bits / 8).map(|c| c.iter().fold(0u64, |a, &x| (a << 8) | x as u64)).collect()
        } else {
            let per_byte = 8 / bits;
            let mask = (1u16 << bits) as u8 - 1;
            buf.iter().flat_map(|&b| (0..per_byte).map(move |i| ((b >> (i * bits)) & mask) as u64)).collect()
        })
    }

    pub fn refcount_regions(&self) -> Vec<Region> {
        let h = &self.header;
        let mut out = Vec::new();
        let len = h.refcount_table_clusters as u64 * self.cluster_size();
        if h.refcount_table_offset < self.file.len() {
            out.push(Region::new(
                h.refcount_table_offset,
                len.min(self.file.len() - h.refcount_table_offset),
                "refcount-table",
                "refcount table",
            ));
        }
        if let Ok(t) = self.refcount_table() {
            for (i, &b) in t.iter().enumerate() {
                if b != 0 && b < self.file.len() {
                    out.push(Region::new(b, self.cluster_size(), "refcount-block", format!("refcount block {}", i)));
                }
            }
        }
        out
    }
}

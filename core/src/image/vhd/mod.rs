//! VHD (Virtual PC / Hyper-V "vpc"): fixed, dynamic and differencing disks.

pub mod check;
pub mod footer;
pub mod header;
pub mod write;
mod driver;
mod tables;

pub use driver::DRIVER;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use footer::{Footer, DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, FOOTER_SIZE};
use header::{DynHeader, HEADER_SIZE};

use super::chain::BackingRef;
use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::raw::passthrough_status;
use super::region::Region;
use super::{Error, Format, Result};

pub const BAT_UNUSED: u32 = 0xffff_ffff;
const SECTOR: u64 = 512;
/// Bitmaps kept in memory at once; a block's bitmap is at most 1 MiB for huge blocks.
const BITMAP_CACHE: usize = 256;

pub struct Vhd {
    pub file: HostFile,
    pub footer: Footer,
    /// The copy of the footer at offset 0 (dynamic and differencing disks).
    pub footer_copy: Option<Footer>,
    /// The footer at the end of the file, when it has the cookie.
    pub end_footer: Option<Footer>,
    pub header: Option<DynHeader>,
    pub bat: Vec<u32>,
    pub bitmap_size: u64,
    pub warnings: Vec<String>,
    virtual_size: u64,
    bitmaps: Mutex<HashMap<u32, Arc<Vec<u8>>>>,
}

impl Vhd {
    pub fn open(file: HostFile) -> Result<Vhd> {
        let mut warnings = Vec::new();
        let len = file.len();
        let found = footer::find_cookie(&file)?
            .ok_or_else(|| Error::corrupt(format!("{}: not a VHD: no 'conectix' footer", file.name)))?;
        let mut footer = Footer::read(&file, found)?;
        let mut footer_copy = None;
        let mut end_footer = None;
        if found == 0 && len == FOOTER_SIZE {
            // a zero-size fixed disk: the file is its footer, at the end and at offset 0
            end_footer = Some(footer.clone());
        } else if found == 0 {
            warnings.push("no valid footer at the end of the file; using the copy at offset 0".into());
            footer_copy = Some(footer.clone());
        } else {
            end_footer = Some(footer.clone());
            if len >= 2 * FOOTER_SIZE {
                let copy = Footer::read(&file, 0)?;
                if copy.cookie_ok() {
                    if !footer.checksum_ok() && copy.checksum_ok() {
                        warnings.push(format!(
                            "footer at 0x{:x} has a bad checksum (0x{:08x}, computed 0x{:08x}); using the copy at offset 0",
                            found,
                            footer.checksum,
                            footer.computed_checksum()
                        ));
                        footer = copy.clone();
                    }
                    footer_copy = Some(copy);
                }
            }
        }
        if !footer.checksum_ok() {
            warnings.push(format!(
                "footer checksum 0x{:08x} does not match the computed 0x{:08x}",
                footer.checksum,
                footer.computed_checksum()
            ));
        }
        let virtual_size = footer.virtual_size();
        let mut vhd = Vhd {
            file,
            footer,
            footer_copy,
            end_footer,
            header: None,
            bat: Vec::new(),
            bitmap_size: 0,
            warnings,
            virtual_size,
            bitmaps: Mutex::new(HashMap::new()),
        };
        match vhd.footer.disk_type {
            DISK_FIXED => {
                // the data ends where the footer starts (an old 511-byte footer too)
                let data_len = vhd.end_footer.as_ref().map_or(len.saturating_sub(FOOTER_SIZE), |f| f.offset);
                if virtual_size > data_len {
                    vhd.warnings.push(format!(
                        "fixed disk of 0x{:x} bytes but only 0x{:x} bytes of data in the file; the rest reads as zero",
                        virtual_size, data_len
                    ));
                }
                vhd.footer_copy = None;
            }
            DISK_DYNAMIC | DISK_DIFFERENCING => vhd.open_dynamic()?,
            t => {
                return Err(Error::Unsupported(format!(
                    "{}: VHD disk type {} ({}) is not supported",
                    vhd.file.name,
                    t,
                    vhd.footer.disk_type_name()
                )))
            }
        }
        // what qemu's vpc_open refuses: still readable here, but named (and never written)
        if let Some(why) = vhd.qemu_refusal() {
            vhd.warnings.push(format!("qemu would refuse this image: {}", why));
        }
        Ok(vhd)
    }

    fn open_dynamic(&mut self) -> Result<()> {
        let name = self.file.name.clone();
        let hoff = self.footer.data_offset;
        if hoff.checked_add(HEADER_SIZE).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(format!(
                "{}: dynamic disk header offset 0x{:x} lies past the end of the file (0x{:x})",
                name,
                hoff,
                self.file.len()
            )));
        }
        let h = DynHeader::read(&self.file, hoff).map_err(|e| Error::corrupt(format!("{}: {}", name, e)))?;
        if !h.checksum_ok() {
            self.warnings.push(format!(
                "dynamic disk header checksum 0x{:08x} does not match the computed 0x{:08x}",
                h.checksum,
                h.computed_checksum()
            ));
        }
        let bs = h.block_size as u64;
        if bs < SECTOR || !bs.is_power_of_two() {
            return Err(Error::corrupt(format!("{}: invalid block size {}", name, bs)));
        }
        let needed = self.virtual_size.div_ceil(bs);
        if (h.max_table_entries as u64) < needed {
            return Err(Error::corrupt(format!(
                "{}: block allocation table has {} entries, too few for a disk of {} bytes in blocks of {}",
                name, h.max_table_entries, self.virtual_size, bs
            )));
        }
        let bat_bytes = h.max_table_entries as u64 * 4;
        if h.table_offset.checked_add(bat_bytes).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(format!(
                "{}: block allocation table at 0x{:x} ({} entries) lies past the end of the file (0x{:x})",
                name,
                h.table_offset,
                h.max_table_entries,
                self.file.len()
            )));
        }
        let mut raw = vec![0u8; bat_bytes as usize];
        self.file.read_exact_at(h.table_offset, &mut raw, "block allocation table")?;
        self.bat = raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
        self.bitmap_size = (bs / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        if let Some(copy) = &self.footer_copy {
            if copy.bytes != self.footer.bytes {
                self.warnings.push("the footer copy at offset 0 differs from the footer at the end".into());
            }
        } else {
            self.warnings.push("no footer copy at offset 0".into());
        }
        self.header = Some(h);
        Ok(())
    }

    pub fn is_differencing(&self) -> bool {
        self.footer.disk_type == DISK_DIFFERENCING
    }

    pub fn is_fixed(&self) -> bool {
        self.footer.disk_type == DISK_FIXED
    }

    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    pub fn block_size(&self) -> Option<u64> {
        self.header.as_ref().map(|h| h.block_size as u64)
    }

    /// Number of blocks the disk uses (BAT entries beyond it are ignored).
    pub fn block_count(&self) -> u64 {
        self.block_size().map(|bs| self.virtual_size.div_ceil(bs)).unwrap_or(0)
    }

    /// File offset of a block's sector bitmap, checked against the file size.
    pub fn block_start(&self, block: u64) -> Result<Option<u64>> {
        let entry = self.bat.get(block as usize).copied().unwrap_or(BAT_UNUSED);
        if entry == BAT_UNUSED {
            return Ok(None);
        }
        let start = entry as u64 * SECTOR;
        if start + self.bitmap_size > self.file.len() {
            return Err(Error::corrupt(format!(
                "{}: BAT entry {} points to sector 0x{:x}, past the end of the file (0x{:x} bytes)",
                self.file.name,
                block,
                entry,
                self.file.len()
            )));
        }
        Ok(Some(start))
    }

    /// A block's sector bitmap (MSB of byte 0 = first sector).
    pub fn bitmap(&self, block: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(start) = self.block_start(block)? else { return Ok(None) };
        let key = block as u32;
        if let Some(b) = self.bitmaps.lock().unwrap().get(&key) {
            return Ok(Some(b.clone()));
        }
        let mut buf = vec![0u8; self.bitmap_size as usize];
        self.file.read_exact_at(start, &mut buf, "sector bitmap")?;
        let b = Arc::new(buf);
        let mut cache = self.bitmaps.lock().unwrap();
        if cache.len() >= BITMAP_CACHE {
            cache.clear();
        }
        cache.insert(key, b.clone());
        Ok(Some(b))
    }

    /// Sectors of a block whose bitmap bit is set.
    pub fn present_sectors(&self, block: u64) -> Result<Option<u64>> {
        let bs = self.block_size().unwrap_or(0);
        Ok(self.bitmap(block)?.map(|b| {
            // a word at a time: blocks of 2 GiB have 4 Mi sectors, and a damaged BAT may point
            // many blocks at one bitmap
            let sectors = bs / SECTOR;
            let whole = ((sectors / 8) as usize).min(b.len());
            let words = b[..whole].chunks_exact(8);
            let tail = words.remainder().iter().map(|x| x.count_ones() as u64).sum::<u64>();
            let full = words.map(|w| u64::from_ne_bytes(w.try_into().unwrap()).count_ones() as u64).sum::<u64>();
            let rest = (whole as u64 * 8..sectors).filter(|&s| bit(&b, s)).count() as u64;
            full + tail + rest
        }))
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        let Some(bs) = self.block_size() else {
            return Ok(passthrough_status(&self.file, virt, max, true));
        };
        let block = virt / bs;
        let in_block = virt % bs;
        let n = (bs - in_block).min(max);
        match self.block_start(block)? {
            None => {
                // extend over following unallocated blocks
                let mut len = n;
                let mut b = block + 1;
                while len < max && self.bat.get(b as usize).copied().unwrap_or(BAT_UNUSED) == BAT_UNUSED {
                    len = (len + bs).min(max);
                    b += 1;
                }
                let kind = if self.is_differencing() {
                    LayerKind::Unallocated { host: None }
                } else {
                    // qemu reports a dynamic disk's missing blocks as zero, present in this layer
                    LayerKind::Zero { host: None }
                };
                Ok(LayerExtent { len, kind })
            }
            Some(start) => {
                let host = start + self.bitmap_size + in_block;
                let data = LayerKind::Data { file: HostFileId::Image, host, passthrough: false };
                if !self.is_differencing() {
                    // qemu reads a dynamic disk's allocated block whole, whatever its bitmap says
                    return Ok(LayerExtent { len: n, kind: data });
                }
                let bm = self.bitmap(block)?.expect("allocated block has a bitmap");
                let first = in_block / SECTOR;
                let set = bit(&bm, first);
                let mut end = (first + 1) * SECTOR;
                while end < in_block + n && bit(&bm, end / SECTOR) == set {
                    end += SECTOR;
                }
                let len = (end - in_block).min(n);
                let kind = if set { data } else { LayerKind::Unallocated { host: None } };
                Ok(LayerExtent { len, kind })
            }
        }
    }

    pub fn parent_ref(&self) -> Option<BackingRef> {
        if !self.is_differencing() {
            return None;
        }
        let h = self.header.as_ref()?;
        let mut candidates: Vec<String> = Vec::new();
        for code in [b"W2ru", b"W2ku", b"Wi2r", b"Wi2k", b"MacX"] {
            for l in h.locators.iter().filter(|l| &l.code == code) {
                if let Some(p) = &l.path {
                    candidates.push(p.clone());
                }
            }
        }
        // Windows absolute paths cannot be opened here; try their file names beside the child.
        let basenames: Vec<String> = candidates
            .iter()
            .chain(std::iter::once(&h.parent_name))
            .filter_map(|p| p.rsplit(['/', '\\']).next().map(str::to_string))
            .filter(|b| !b.is_empty())
            .collect();
        for b in basenames {
            if !candidates.contains(&b) {
                candidates.push(b);
            }
        }
        Some(BackingRef { name: h.parent_name.clone(), candidates, format: Some(Format::Vhd) })
    }

    /// A differencing disk names its parent by unique id; say so when they differ.
    pub fn check_parent(&self, parent: &Vhd) -> Option<String> {
        let h = self.header.as_ref()?;
        if h.parent_unique_id != parent.footer.unique_id {
            return Some(format!(
                "parent unique id mismatch: the header expects {} but {} has {}",
                footer::uuid(&h.parent_unique_id),
                parent.file.name,
                footer::uuid(&parent.footer.unique_id)
            ));
        }
        None
    }

    /// Every structure of the file, in file order.
    pub fn regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        if let Some(copy) = &self.footer_copy {
            let mut r = Region::new(0, FOOTER_SIZE, "footer-copy", "footer copy");
            r.fields = copy.fields();
            out.push(r);
        }
        if let Some(h) = &self.header {
            let mut r = Region::new(h.offset, HEADER_SIZE, "dynamic-header", "dynamic disk header");
            r.fields = h.fields();
            out.push(r);
            for l in &h.locators {
                // data space is in sectors in the spec but in bytes in some writers
                let len = check::locator_space(l);
                if len > 0 && l.data_offset < self.file.len() {
                    out.push(Region::new(
                        l.data_offset,
                        len.min(self.file.len() - l.data_offset),
                        "parent-locator",
                        format!("parent locator {} ({}) data", l.index, super::region::ascii(&l.code)),
                    ));
                }
            }
            let bat_len = (self.bat.len() as u64 * 4).next_multiple_of(SECTOR);
            out.push(Region::new(h.table_offset, bat_len, "bat", "block allocation table"));
            let bs = h.block_size as u64;
            for block in 0..self.block_count() {
                let Ok(Some(start)) = self.block_start(block) else { continue };
                out.push(Region::new(start, self.bitmap_size, "bitmap", format!("block {} sector bitmap", block)));
                let mut d = Region::new(start + self.bitmap_size, bs, "data", format!("block {} data", block));
                d.virt = Some(block * bs);
                out.push(d);
            }
        } else {
            let data_end = self.end_footer.as_ref().map(|f| f.offset).unwrap_or(self.file.len());
            let mut d = Region::new(0, self.virtual_size.min(data_end), "data", "disk data");
            d.virt = Some(0);
            out.push(d);
        }
        if let Some(end) = &self.end_footer {
            let mut f = Region::new(end.offset, self.file.len() - end.offset, "footer", "footer");
            f.fields = end.fields();
            out.push(f);
        }
        out.sort_by_key(|r| r.start);
        out
    }

    /// One BAT entry as vhd-shell printed it.
    pub fn bat_line(&self, block: u64) -> String {
        let entry = self.bat.get(block as usize).copied().unwrap_or(BAT_UNUSED);
        if entry == BAT_UNUSED {
            return format!("Block#{:04} -> 0x{:08x} : block is not allocated", block, entry);
        }
        let start = entry as u64 * SECTOR;
        let data = start + self.bitmap_size;
        let bs = self.block_size().unwrap_or(0);
        let mut line = format!(
            "Block#{:04} -> 0x{:08x} : bitmap [0x{:08x}-0x{:08x}], data [0x{:08x}-0x{:08x}]",
            block,
            entry,
            start,
            data - 1,
            data,
            data + bs - 1
        );
        match self.present_sectors(block) {
            Ok(Some(n)) if n != bs / SECTOR => line.push_str(&format!(" ({}/{} sectors present)", n, bs / SECTOR)),
            Ok(_) => {}
            Err(e) => line.push_str(&format!(" (damaged: {})", e)),
        }
        line
    }
}

pub fn bit(bm: &[u8], sector: u64) -> bool {
    bm.get((sector / 8) as usize).is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
}

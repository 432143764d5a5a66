//! Persistent dirty bitmaps: the bitmaps header extension, the bitmap directory (name,
//! granularity, flags, type), each bitmap's table (all-zeroes, all-ones or a serialized
//! cluster per entry) and the dirty extents a bitmap describes, as `qemu-nbd -B` exports them.

use crate::image::bytes::{be16, be32, be64};
use super::header::{AUTOCLEAR_BITMAPS, EXT_BITMAPS};
use super::Qcow2;
use crate::image::region::{Field, Region};
use crate::image::{Error, Result};

/// qemu's limits (QCOW2_MAX_BITMAPS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE, BME_*).
pub const MAX_BITMAPS: u32 = 65535;
pub const MAX_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
pub const MAX_TABLE_SIZE: u32 = 0x0800_0000;
pub const MAX_PHYS_SIZE: u64 = 0x2000_0000;
pub const MIN_GRANULARITY_BITS: u8 = 9;
pub const MAX_GRANULARITY_BITS: u8 = 31;
pub const MAX_NAME_SIZE: u16 = 1023;
/// The fixed part of a bitmap directory entry.
pub const ENTRY_HEADER: u64 = 24;

pub const FLAG_IN_USE: u32 = 1 << 0;
pub const FLAG_AUTO: u32 = 1 << 1;
pub const FLAG_EXTRA_DATA_COMPATIBLE: u32 = 1 << 2;
pub const RESERVED_FLAGS: u32 = 0xffff_fffc;
/// Bitmap table entry: bits 1-8 and 56-63 reserved, bits 9-55 the offset, bit 0 all-ones.
pub const TABLE_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
pub const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const TABLE_ALL_ONES: u64 = 1;
pub const TYPE_DIRTY_TRACKING: u8 = 1;

/// The bitmaps header extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapsExt {
    /// File offset of the extension's data.
    pub offset: u64,
    pub nb_bitmaps: u32,
    pub reserved: u32,
    pub directory_size: u64,
    pub directory_offset: u64,
    /// The autoclear bit that says the extension is consistent; without it qemu ignores the
    /// bitmaps (a program without bitmap support wrote the image).
    pub consistent: bool,
}

/// One bitmap directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    pub index: usize,
    pub entry_offset: u64,
    pub entry_len: u64,
    pub name: String,
    pub table_offset: u64,
    pub table_size: u32,
    pub flags: u32,
    pub kind: u8,
    pub granularity_bits: u8,
    pub extra_data_size: u32,
    /// Why qemu would refuse this entry (its check_dir_entry), if it would.
    pub problem: Option<String>,
}

impl Bitmap {
    pub fn granularity(&self) -> u64 {
        1u64 << self.granularity_bits.min(63)
    }
    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }
    /// Enabled: qemu tracks writes into it (the `auto` flag).
    pub fn auto(&self) -> bool {
        self.flags & FLAG_AUTO != 0
    }
    /// The flag names qemu-img info prints, in its order.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.in_use() {
            v.push("in-use");
        }
        if self.auto() {
            v.push("auto");
        }
        v
    }
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TYPE_DIRTY_TRACKING => "dirty tracking",
            _ => "reserved",
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let o = self.entry_offset;
        let p = format!("bitmap[{}].", self.index);
        let f = |off: u64, len: u64, name: &str, value: String| Field { off: o + off, len, name: format!("{}{}", p, name), value };
        let mut flags = self.flag_names().join(", ");
        if self.flags & FLAG_EXTRA_DATA_COMPATIBLE != 0 {
            flags += if flags.is_empty() { "extra-data-compatible" } else { ", extra-data-compatible" };
        }
        let mut v = vec![
            f(0, 8, "bitmap_table_offset", format!("0x{:x}", self.table_offset)),
            f(8, 4, "bitmap_table_size", self.table_size.to_string()),
            f(12, 4, "flags", format!("0x{:x} ({})", self.flags, if flags.is_empty() { "none" } else { &flags })),
            f(16, 1, "type", format!("{} ({})", self.kind, self.kind_name())),
            f(17, 1, "granularity_bits", format!("{} ({} bytes)", self.granularity_bits, self.granularity())),
            f(18, 2, "name_size", self.name.len().to_string()),
            f(20, 4, "extra_data_size", self.extra_data_size.to_string()),
        ];
        if self.extra_data_size > 0 {
            v.push(f(ENTRY_HEADER, self.extra_data_size as u64, "extra_data", String::new()));
        }
        v.push(f(ENTRY_HEADER + self.extra_data_size as u64, self.name.len() as u64, "name", self.name.clone()));
        v.retain(|f| f.len > 0);
        v
    }
}

/// A run of the guest disk that a bitmap marks dirty or clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapExtent {
    pub start: u64,
    pub length: u64,
    pub dirty: bool,
}

/// The directory as parsed: the entries that could be read, and why parsing stopped or what
/// qemu would refuse, if anything.
#[derive(Clone, Debug, Default)]
pub struct BitmapDirectory {
    pub bitmaps: Vec<Bitmap>,
    pub error: Option<String>,
}


/// qemu's check_table_entry: `None` when the entry is valid.
pub fn table_entry_problem(entry: u64, cluster_size: u64) -> Option<&'static str> {
    if entry & TABLE_RESERVED_MASK != 0 {
        return Some("reserved bits set");
    }
    let off = entry & TABLE_OFFSET_MASK;
    if off != 0 {
        if entry & TABLE_ALL_ONES != 0 {
            return Some("the all-ones bit is set with an offset");
        }
        if !off.is_multiple_of(cluster_size) {
            return Some("the offset is not cluster aligned");
        }
    }
    None
}

impl Qcow2 {
    /// The bitmaps header extension, if the image has one of the right length.
    pub fn bitmaps_ext(&self) -> Option<BitmapsExt> {
        let e = self.header.extensions.iter().find(|e| e.kind == EXT_BITMAPS)?;
        if e.data.len() != 24 {
            return None;
        }
        Some(BitmapsExt {
            offset: e.offset + 8,
            nb_bitmaps: be32(&e.data, 0),
            reserved: be32(&e.data, 4),
            directory_size: be64(&e.data, 8),
            directory_offset: be64(&e.data, 16),
            consistent: self.header.autoclear & AUTOCLEAR_BITMAPS != 0,
        })
    }

    /// Problems with the extension itself that make qemu refuse to open the image.
    pub fn bitmaps_ext_problem(&self) -> Option<String> {
        let e = self.header.extensions.iter().find(|e| e.kind == EXT_BITMAPS)?;
        if e.data.len() != 24 {
            return Some(format!("bitmaps extension has {} bytes, not 24", e.data.len()));
        }
        let x = self.bitmaps_ext()?;
        if !x.consistent {
            return None;
        }
        if x.reserved != 0 {
            Some("bitmaps extension: reserved field is not zero".into())
        } else if x.nb_bitmaps > MAX_BITMAPS {
            Some(format!("bitmaps extension: {} bitmaps, more than qemu's maximum of {}", x.nb_bitmaps, MAX_BITMAPS))
        } else if x.nb_bitmaps == 0 {
            Some("bitmaps extension with zero bitmaps".into())
        } else if x.directory_offset % self.cluster_size() != 0 {
            Some(format!("bitmaps extension: bitmap directory offset 0x{:x} is not cluster aligned", x.directory_offset))
        } else if x.directory_size > MAX_DIRECTORY_SIZE {
            Some(format!("bitmaps extension: bitmap directory size {} exceeds the maximum of {}", x.directory_size, MAX_DIRECTORY_SIZE))
        } else {
            None
        }
    }

    /// The bitmap directory as qemu's bitmap_list_load reads it, keeping what could be read.
    /// Without a consistent bitmaps extension (autoclear bit clear) there are no bitmaps.
    pub fn bitmap_directory(&self) -> BitmapDirectory {
        let mut dir = BitmapDirectory::default();
        let Some(x) = self.bitmaps_ext() else {
            dir.error = self.bitmaps_ext_problem();
            return dir;
        };
        if !x.consistent {
            return dir;
        }
        if let Some(p) = self.bitmaps_ext_problem() {
            dir.error = Some(p);
            return dir;
        }
        let size = x.directory_size;
        if size == 0 {
            dir.error = Some("the bitmap directory size is zero".into());
            return dir;
        }
        if x.directory_offset.checked_add(size).is_none_or(|e| e > self.file.len()) {
            dir.error = Some(format!(
                "the bitmap directory at 0x{:x} ({} bytes) lies past the end of the file (0x{:x})",
                x.directory_offset,
                size,
                self.file.len()
            ));
            return dir;
        }
        let mut buf = vec![0u8; size as usize];
        if let Err(e) = self.file.read_exact_at(x.directory_offset, &mut buf, "bitmap directory") {
            dir.error = Some(e.to_string());
            return dir;
        }
        let cs = self.cluster_size();
        let mut pos = 0usize;
        while pos < buf.len() {
            if pos + ENTRY_HEADER as usize > buf.len() {
                dir.error = Some("broken bitmap directory (an entry runs past its end)".into());
                return dir;
            }
            if dir.bitmaps.len() as u32 >= x.nb_bitmaps {
                dir.error = Some("more bitmaps found than the header extension says".into());
                return dir;
            }
            let e = &buf[pos..];
            let name_size = be16(e, 18);
            let extra_data_size = be32(e, 20);
            let entry_len = (ENTRY_HEADER + name_size as u64 + extra_data_size as u64).next_multiple_of(8);
            if pos as u64 + entry_len > buf.len() as u64 {
                dir.error = Some("broken bitmap directory (an entry runs past its end)".into());
                return dir;
            }
            let name_at = ENTRY_HEADER as usize + extra_data_size as usize;
            let name = String::from_utf8_lossy(&e[name_at..name_at + name_size as usize]).into_owned();
            let mut bm = Bitmap {
                index: dir.bitmaps.len(),
                entry_offset: x.directory_offset + pos as u64,
                entry_len,
                name,
                table_offset: be64(e, 0),
                table_size: be32(e, 8),
                flags: be32(e, 12),
                kind: e[16],
                granularity_bits: e[17],
                extra_data_size,
                problem: None,
            };
            bm.problem = self.entry_problem(&bm);
            if dir.error.is_none() {
                if let Some(p) = &bm.problem {
                    dir.error = Some(format!("bitmap '{}' doesn't satisfy the constraints: {}", bm.name, p));
                }
            }
            dir.bitmaps.push(bm);
            pos += entry_len as usize;
        }
        if dir.error.is_none() && dir.bitmaps.len() as u32 != x.nb_bitmaps {
            dir.error = Some("less bitmaps found than the header extension says".into());
        }
        let _ = cs;
        dir
    }

    /// qemu's check_dir_entry (and its refusal of extra data).
    fn entry_problem(&self, bm: &Bitmap) -> Option<String> {
        let cs = self.cluster_size();
        let p = if bm.extra_data_size != 0 {
            "bitmap extra data is not supported".to_string()
        } else if bm.table_size == 0 {
            "its bitmap table is empty".into()
        } else if bm.table_offset == 0 || !bm.table_offset.is_multiple_of(cs) {
            format!("its bitmap table offset 0x{:x} is zero or not cluster aligned", bm.table_offset)
        } else if bm.table_size > MAX_TABLE_SIZE {
            format!("its bitmap table has {} entries, more than {}", bm.table_size, MAX_TABLE_SIZE)
        } else if !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&bm.granularity_bits) {
            format!("granularity bits {} out of the range {}-{}", bm.granularity_bits, MIN_GRANULARITY_BITS, MAX_GRANULARITY_BITS)
        } else if bm.flags & RESERVED_FLAGS != 0 {
            format!("reserved flags set (0x{:x})", bm.flags)
        } else if bm.name.len() > MAX_NAME_SIZE as usize {
            format!("name of {} bytes, more than {}", bm.name.len(), MAX_NAME_SIZE)
        } else if bm.kind != TYPE_DIRTY_TRACKING {
            format!("type {} is not a dirty tracking bitmap", bm.kind)
        } else {
            let phys = bm.table_size as u64 * cs;
            if phys > MAX_PHYS_SIZE {
                format!("its bitmap data ({} bytes) is larger than {}", phys, MAX_PHYS_SIZE)
            } else if !bm.in_use() && (self.header.size as u128) > ((phys as u128 * 8) << bm.granularity_bits) {
                format!("its bitmap table ({} entries) is too small for the disk", bm.table_size)
            } else {
                return None;
            }
        };
        Some(p)
    }

    /// The bitmaps, as qemu lists them: an error where qemu would refuse the directory.
    pub fn bitmaps(&self) -> Result<Vec<Bitmap>> {
        let dir = self.bitmap_directory();
        match dir.error {
            Some(e) => Err(Error::corrupt(format!("{}: {}", self.file.name, e))),
            None => Ok(dir.bitmaps),
        }
    }

    pub fn find_bitmap(&self, name: &str) -> Result<Bitmap> {
        let all = self.bitmaps()?;
        all.iter().find(|b| b.name == name).cloned().ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
            Error::Invalid(format!(
                "{}: no bitmap named '{}'{}",
                self.file.name,
                name,
                if names.is_empty() { " (the image has no bitmaps)".to_string() } else { format!("; there are: {}", names.join(", ")) }
            ))
        })
    }

    /// A bitmap's table, checked to lie in the file.
    pub fn bitmap_table(&self, bm: &Bitmap) -> Result<Vec<u64>> {
        let bytes = bm.table_size as u64 * 8;
        if bm.table_size > MAX_TABLE_SIZE || bm.table_offset.checked_add(bytes).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(format!(
                "{}: bitmap '{}': table at 0x{:x} ({} entries) lies past the end of the file",
                self.file.name, bm.name, bm.table_offset, bm.table_size
            )));
        }
        let mut raw = vec![0u8; bytes as usize];
        self.file.read_exact_at(bm.table_offset, &mut raw, "bitmap table")?;
        Ok(raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect())
    }

    /// Guest bytes covered by one bitmap table entry (one cluster of serialized bits).
    pub fn bitmap_cluster_coverage(&self, bm: &Bitmap) -> u64 {
        (self.cluster_size() * 8).saturating_mul(bm.granularity())
    }

    /// The dirty and clean runs of `[start, start+len)` of the guest disk, merged, as
    /// `qemu-nbd -B NAME` exports them (`qemu:dirty-bitmap:NAME`). Bits are serialized
    /// least significant first; table entries past the end of the table read as clean.
    pub fn bitmap_extents(&self, bm: &Bitmap, start: u64, len: u64) -> Result<Vec<BitmapExtent>> {
        let size = self.header.size;
        let end = start.saturating_add(len).min(size);
        let mut out: Vec<BitmapExtent> = Vec::new();
        if start >= end {
            return Ok(out);
        }
        if !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&bm.granularity_bits) {
            return Err(Error::corrupt(format!(
                "{}: bitmap '{}': granularity bits {} out of range",
                self.file.name, bm.name, bm.granularity_bits
            )));
        }
        let table = self.bitmap_table(bm)?;
        let cs = self.cluster_size();
        let g = bm.granularity();
        let cover = self.bitmap_cluster_coverage(bm);
        let push = |out: &mut Vec<BitmapExtent>, s: u64, e: u64, dirty: bool| {
            let (s, e) = (s.max(start), e.min(end));
            if s >= e {
                return;
            }
            match out.last_mut() {
                Some(l) if l.dirty == dirty && l.start + l.length == s => l.length += e - s,
                _ => out.push(BitmapExtent { start: s, length: e - s, dirty }),
            }
        };
        let mut buf = vec![0u8; cs as usize];
        let mut idx = start / cover;
        while idx * cover < end {
            let c_start = idx * cover;
            let c_end = c_start.saturating_add(cover);
            let entry = table.get(idx as usize).copied().unwrap_or(0);
            if let Some(p) = table_entry_problem(entry, cs) {
                return Err(Error::corrupt(format!(
                    "{}: bitmap '{}': table entry {} (0x{:016x}): {}",
                    self.file.name, bm.name, idx, entry, p
                )));
            }
            let off = entry & TABLE_OFFSET_MASK;
            if off == 0 {
                push(&mut out, c_start, c_end, entry & TABLE_ALL_ONES != 0);
            } else {
                self.file.read_zero_fill(off, &mut buf)?;
                // bits of this cluster that [start, end) needs
                let first_bit = (start.max(c_start) - c_start) / g;
                let last_bit = (end.min(c_end) - c_start).div_ceil(g);
                let mut bit = first_bit;
                while bit < last_bit {
                    let byte = buf[(bit / 8) as usize];
                    if bit.is_multiple_of(8) && bit + 8 <= last_bit && (byte == 0 || byte == 0xff) {
                        push(&mut out, c_start + bit * g, c_start + (bit + 8) * g, byte == 0xff);
                        bit += 8;
                        continue;
                    }
                    let dirty = byte & (1 << (bit % 8)) != 0;
                    push(&mut out, c_start + bit * g, c_start + (bit + 1) * g, dirty);
                    bit += 1;
                }
            }
            idx += 1;
        }
        Ok(out)
    }

    /// Dirty bytes of `[start, start+len)` (for heatmaps).
    pub fn bitmap_dirty_bytes(&self, bm: &Bitmap, start: u64, len: u64) -> Result<u64> {
        Ok(self.bitmap_extents(bm, start, len)?.iter().filter(|e| e.dirty).map(|e| e.length).sum())
    }

    /// Regions of the bitmap directory, the bitmap tables and their data clusters.
    pub fn bitmap_regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        let len = self.file.len();
        let cs = self.cluster_size();
        let Some(x) = self.bitmaps_ext() else { return out };
        if x.directory_size > 0 && x.directory_offset < len {
            let dir = if x.consistent { self.bitmap_directory() } else { BitmapDirectory::default() };
            let mut r = Region::new(
                x.directory_offset,
                x.directory_size.min(len - x.directory_offset),
                "bitmap-directory",
                if x.consistent { "bitmap directory".to_string() } else { "bitmap directory (inconsistent: autoclear bit clear)".into() },
            );
            r.fields = dir.bitmaps.iter().flat_map(|b| b.fields()).collect();
            out.push(r);
            for bm in &dir.bitmaps {
                let bytes = bm.table_size as u64 * 8;
                if bm.table_offset == 0 || bm.table_offset >= len || bytes == 0 {
                    continue;
                }
                let mut t = Region::new(bm.table_offset, bytes.min(len - bm.table_offset), "bitmap-table", format!("bitmap table of '{}'", bm.name));
                let Ok(table) = self.bitmap_table(bm) else {
                    out.push(t);
                    continue;
                };
                let cover = self.bitmap_cluster_coverage(bm);
                t.fields = table
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| Field {
                        off: bm.table_offset + i as u64 * 8,
                        len: 8,
                        name: format!("{}[{}]", bm.name, i),
                        value: match e & TABLE_OFFSET_MASK {
                            0 if e & TABLE_ALL_ONES != 0 => "all ones".into(),
                            0 => "all zeroes".into(),
                            o => format!("data at 0x{:x}", o),
                        },
                    })
                    .collect();
                out.push(t);
                for (i, &e) in table.iter().enumerate() {
                    let o = e & TABLE_OFFSET_MASK;
                    if o != 0 && o < len && table_entry_problem(e, cs).is_none() {
                        // a damaged granularity makes `cover` anything up to 2^63
                        let g0 = (i as u64).saturating_mul(cover);
                        let g1 = g0.saturating_add(cover).min(self.header.size.max(g0.saturating_add(1)));
                        out.push(Region::new(
                            o,
                            cs.min(len - o),
                            "bitmap-data",
                            format!("bitmap '{}' data for guest 0x{:x}-0x{:x}", bm.name, g0, g1 - 1),
                        ));
                    }
                }
            }
        }
        out
    }
}

//! A hosted sparse extent (`KDMV`): the header (or, for streamOptimized, the footer that takes
//! its place), the grain directory and its redundant copy, and the 512-entry grain tables
//! read on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::image::bytes::{le16, le32, le64};
use crate::image::io::HostFile;
use crate::image::region::{Field, FieldDef};
use crate::image::{Error, Result};

pub const SECTOR: u64 = 512;
pub const MAGIC: &[u8; 4] = b"KDMV";
pub const COWD_MAGIC: &[u8; 4] = b"COWD";
/// gdOffset of a streamOptimized header whose grain directory is found through the footer.
pub const GD_AT_END: u64 = u64::MAX;
pub const FLAG_NL_DETECT: u32 = 1 << 0;
pub const FLAG_RGD: u32 = 1 << 1;
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESSED: u32 = 1 << 16;
pub const FLAG_MARKERS: u32 = 1 << 17;
pub const COMPRESSION_DEFLATE: u16 = 1;
/// A grain table entry meaning "this grain reads as zero" (with FLAG_ZERO_GRAIN).
pub const GTE_ZEROED: u32 = 1;
/// Marker types of a streamOptimized extent.
pub const MARKER_EOS: u32 = 0;
pub const MARKER_GT: u32 = 1;
pub const MARKER_GD: u32 = 2;
pub const MARKER_FOOTER: u32 = 3;
/// Largest grain qemu accepts (1 GiB).
const MAX_GRAIN_SECTORS: u64 = 0x20_0000;
/// Largest grain directory qemu accepts.
const MAX_GD_ENTRIES: u64 = 32 * 1024 * 1024;
/// Grain tables kept in memory at once.
const GT_CACHE: usize = 1024;

pub const FIELDS: &[FieldDef] = &[
    FieldDef::new(0, 4, "Magic"),
    FieldDef::new(4, 4, "Version"),
    FieldDef::new(8, 4, "Flags"),
    FieldDef::new(12, 8, "Capacity"),
    FieldDef::new(20, 8, "Grain size"),
    FieldDef::new(28, 8, "Descriptor offset"),
    FieldDef::new(36, 8, "Descriptor size"),
    FieldDef::new(44, 4, "GTEs per GT"),
    FieldDef::new(48, 8, "Redundant GD offset"),
    FieldDef::new(56, 8, "GD offset"),
    FieldDef::new(64, 8, "Overhead"),
    FieldDef::new(72, 1, "Unclean shutdown"),
    FieldDef::new(73, 4, "Newline detection"),
    FieldDef::new(77, 2, "Compression"),
];

/// The sparse header's fields (all counts in sectors, as stored).
#[derive(Clone, Debug)]
pub struct SparseHeader {
    /// Where this copy lives (0, or the footer's offset).
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_sectors: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub unclean: bool,
    pub compression: u16,
    /// A VMDK3 (`COWD`, vmfsSparse) header: 4096-entry tables, the directory size stored.
    pub cowd: bool,
    /// COWD: the grain directory's entry count as stored.
    pub gd_entries: Option<u64>,
}

pub const COWD_FIELDS: &[FieldDef] = &[
    FieldDef::new(0, 4, "Magic"),
    FieldDef::new(4, 4, "Version"),
    FieldDef::new(8, 4, "Flags"),
    FieldDef::new(12, 4, "Capacity"),
    FieldDef::new(16, 4, "Grain size"),
    FieldDef::new(20, 4, "GD offset"),
    FieldDef::new(24, 4, "GD entries"),
    FieldDef::new(28, 4, "Next free sector"),
    FieldDef::new(32, 4, "Cylinders"),
    FieldDef::new(36, 4, "Heads"),
    FieldDef::new(40, 4, "Sectors per track"),
];

impl SparseHeader {
    pub fn parse(offset: u64, b: &[u8]) -> Result<SparseHeader> {
        if b.len() < 79 || &b[0..4] != MAGIC {
            return Err(Error::corrupt("not a VMDK sparse extent: no 'KDMV' magic"));
        }
        Ok(SparseHeader {
            offset,
            bytes: b[..512.min(b.len())].to_vec(),
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_sectors: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean: b[72] != 0,
            compression: le16(b, 77),
            cowd: false,
            gd_entries: None,
        })
    }

    /// A VMDK3 (`COWD`) header, in the same terms.
    pub fn parse_cowd(b: &[u8]) -> Result<SparseHeader> {
        if b.len() < 44 || &b[0..4] != COWD_MAGIC {
            return Err(Error::corrupt("not a VMDK3 sparse extent: no 'COWD' magic"));
        }
        Ok(SparseHeader {
            offset: 0,
            bytes: b[..512.min(b.len())].to_vec(),
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le32(b, 12) as u64,
            grain_sectors: le32(b, 16) as u64,
            desc_offset: 0,
            desc_size: 0,
            gtes_per_gt: 4096,
            rgd_offset: 0,
            gd_offset: le32(b, 20) as u64,
            overhead: 0,
            unclean: false,
            compression: 0,
            cowd: true,
            gd_entries: Some(le32(b, 24) as u64),
        })
    }

    pub fn read(file: &HostFile, offset: u64) -> Result<SparseHeader> {
        let mut b = vec![0u8; SECTOR as usize];
        file.read_exact_at(offset, &mut b, "VMDK sparse header")?;
        SparseHeader::parse(offset, &b)
    }

    pub fn compressed(&self) -> bool {
        self.compression == COMPRESSION_DEFLATE
    }

    pub fn flag_names(&self) -> String {
        let mut v = Vec::new();
        for (bit, name) in [
            (FLAG_NL_DETECT, "newline-detection"),
            (FLAG_RGD, "redundant-gd"),
            (FLAG_ZERO_GRAIN, "zeroed-grain"),
            (FLAG_COMPRESSED, "compressed"),
            (FLAG_MARKERS, "markers"),
        ] {
            if self.flags & bit != 0 {
                v.push(name);
            }
        }
        format!("0x{:08x} ({})", self.flags, if v.is_empty() { "none".into() } else { v.join(", ") })
    }

    pub fn fields(&self) -> Vec<Field> {
        if self.cowd {
            let b = &self.bytes;
            return COWD_FIELDS
                .iter()
                .map(|d| {
                    let v = le32(b, d.off);
                    let value = match d.off {
                        0 => "COWD".to_string(),
                        12 | 16 | 20 | 28 => format!("{} sectors (0x{:x})", v, v as u64 * SECTOR),
                        _ => v.to_string(),
                    };
                    let (off, len) = d.at(self.offset);
                    Field { off, len, name: d.name.into(), value }
                })
                .collect();
        }
        let sectors = |v: u64| {
            if v == GD_AT_END {
                "0xffffffffffffffff (at the end: see the footer)".to_string()
            } else {
                format!("{} sectors (0x{:x})", v, v.saturating_mul(SECTOR))
            }
        };
        let nl = &self.bytes[73..77];
        let vals = [
            "KDMV".to_string(),
            self.version.to_string(),
            self.flag_names(),
            format!("{} sectors ({} bytes)", self.capacity, self.capacity.saturating_mul(SECTOR)),
            format!("{} sectors ({} bytes)", self.grain_sectors, self.grain_sectors.saturating_mul(SECTOR)),
            sectors(self.desc_offset),
            format!("{} sectors", self.desc_size),
            self.gtes_per_gt.to_string(),
            sectors(self.rgd_offset),
            sectors(self.gd_offset),
            sectors(self.overhead),
            if self.unclean { "yes".into() } else { "no".into() },
            format!("{:02x} {:02x} {:02x} {:02x}", nl[0], nl[1], nl[2], nl[3]),
            match self.compression {
                0 => "0 (none)".into(),
                COMPRESSION_DEFLATE => "1 (deflate)".into(),
                c => format!("{} (unknown)", c),
            },
        ];
        FIELDS
            .iter()
            .zip(vals)
            .map(|(d, value)| {
                let (off, len) = d.at(self.offset);
                Field { off, len, name: d.name.into(), value }
            })
            .collect()
    }
}

/// What one grain table entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Unallocated,
    Zeroed,
    /// The grain's data (or, compressed, its marker) starts at this file offset.
    At(u64),
}

pub struct SparseExtent {
    /// The header in effect (the footer's copy for a streamOptimized extent).
    pub header: SparseHeader,
    /// The header at offset 0 when the footer took its place.
    pub first_header: Option<SparseHeader>,
    pub grain: u64,
    pub gtes_per_gt: u64,
    pub gd_offset: u64,
    pub gd: Vec<u32>,
    pub rgd_offset: Option<u64>,
    pub rgd: Option<Vec<u32>>,
    pub compressed: bool,
    pub markers: bool,
    pub zero_grain: bool,
    pub warnings: Vec<String>,
    gts: Mutex<HashMap<u32, Arc<Vec<u32>>>>,
    /// streamOptimized writes: the sector where this session's next compressed grain goes
    /// (0: not chosen yet).
    pub(super) stream_next: std::sync::atomic::AtomicU64,
}

fn read_u32s(file: &HostFile, off: u64, n: u64, what: &str) -> Result<Vec<u32>> {
    let bytes = n.checked_mul(4).filter(|&b| off.checked_add(b).is_some_and(|e| e <= file.len())).ok_or_else(|| {
        Error::corrupt(format!(
            "{}: {} at 0x{:x} ({} entries) lies past the end of the file (0x{:x} bytes)",
            file.name,
            what,
            off,
            n,
            file.len()
        ))
    })?;
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact_at(off, &mut raw, what)?;
    Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

impl SparseExtent {
    pub fn open(file: &HostFile) -> Result<SparseExtent> {
        let name = &file.name;
        let mut b = vec![0u8; SECTOR as usize];
        file.read_exact_at(0, &mut b, "VMDK sparse header")?;
        let first = if &b[..4] == COWD_MAGIC { SparseHeader::parse_cowd(&b) } else { SparseHeader::parse(0, &b) }
            .map_err(|e| Error::corrupt(format!("{}: {}", name, e)))?;
        let mut warnings = Vec::new();
        let (header, first_header) = if first.gd_offset == GD_AT_END && !first.cowd {
            // streamOptimized: footer marker, footer (a header copy), end-of-stream marker
            let len = file.len();
            if len < 3 * SECTOR + SECTOR {
                return Err(Error::corrupt(format!("{}: streamOptimized extent too short for its footer", name)));
            }
            let at = (len / SECTOR) * SECTOR - 3 * SECTOR;
            let mut b = vec![0u8; 3 * SECTOR as usize];
            file.read_exact_at(at, &mut b, "VMDK footer")?;
            let marker_ok = le32(&b, 8) == 0 && le32(&b, 12) == MARKER_FOOTER;
            let eos_ok = le64(&b, 1024) == 0 && le32(&b, 1032) == 0 && le32(&b, 1036) == MARKER_EOS;
            if !marker_ok || !eos_ok || &b[512..516] != MAGIC {
                return Err(Error::corrupt(format!(
                    "{}: invalid footer at 0x{:x} (the header says the grain directory is at the end)",
                    name,
                    at + SECTOR
                )));
            }
            (SparseHeader::parse(at + SECTOR, &b[512..1024])?, Some(first))
        } else {
            (first, None)
        };
        let h = &header;
        if h.version > 3 {
            return Err(Error::unsupported(format!("{}: VMDK sparse extent version {} is not supported", name, h.version)));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > 512 && !h.cowd {
            return Err(Error::corrupt(format!("{}: invalid grain table size {} (1 to 512 entries)", name, h.gtes_per_gt)));
        }
        if h.grain_sectors == 0 || h.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(Error::corrupt(format!("{}: invalid grain size of {} sectors", name, h.grain_sectors)));
        }
        let per_gt = h.gtes_per_gt as u64 * h.grain_sectors;
        let gd_entries = h.gd_entries.unwrap_or_else(|| h.capacity.div_ceil(per_gt));
        if gd_entries > MAX_GD_ENTRIES {
            return Err(Error::corrupt(format!("{}: grain directory of {} entries is too big", name, gd_entries)));
        }
        if h.overhead.saturating_mul(SECTOR) > file.len() {
            return Err(Error::corrupt(format!(
                "{}: file truncated, expecting at least {} bytes",
                name,
                h.overhead.saturating_mul(SECTOR)
            )));
        }
        let gd_offset = h.gd_offset.checked_mul(SECTOR).ok_or_else(|| Error::corrupt(format!("{}: invalid grain directory offset", name)))?;
        let gd = read_u32s(file, gd_offset, gd_entries, "grain directory")?;
        let (mut rgd_offset, mut rgd) = (None, None);
        if h.flags & FLAG_RGD != 0 && h.rgd_offset != 0 && !h.cowd {
            let off = h.rgd_offset.saturating_mul(SECTOR);
            match read_u32s(file, off, gd_entries, "redundant grain directory") {
                Ok(v) => {
                    rgd_offset = Some(off);
                    rgd = Some(v);
                }
                Err(e) => warnings.push(e.to_string()),
            }
        }
        if h.unclean {
            warnings.push("the unclean-shutdown flag is set".into());
        }
        Ok(SparseExtent {
            grain: h.grain_sectors * SECTOR,
            gtes_per_gt: h.gtes_per_gt as u64,
            gd_offset,
            gd,
            rgd_offset,
            rgd,
            compressed: h.compressed(),
            markers: h.flags & FLAG_MARKERS != 0 && !h.cowd,
            zero_grain: h.flags & FLAG_ZERO_GRAIN != 0 && !h.cowd,
            header,
            first_header,
            warnings,
            gts: Mutex::new(HashMap::new()),
            stream_next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.header.capacity.saturating_mul(SECTOR)
    }

    /// Bytes of guest data one grain table covers.
    pub fn gt_span(&self) -> u64 {
        self.gtes_per_gt * self.grain
    }

    pub fn gt_bytes(&self) -> u64 {
        self.gtes_per_gt * 4
    }

    /// A grain table by its sector offset. As qemu does, the part of a table past the end of
    /// the file reads as zero (unallocated).
    pub fn gt(&self, file: &HostFile, sector: u32) -> Result<Arc<Vec<u32>>> {
        if let Some(t) = self.gts.lock().unwrap().get(&sector) {
            return Ok(t.clone());
        }
        let mut raw = vec![0u8; self.gt_bytes() as usize];
        file.read_zero_fill(sector as u64 * SECTOR, &mut raw)?;
        let t: Arc<Vec<u32>> = Arc::new(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        let mut cache = self.gts.lock().unwrap();
        if cache.len() >= GT_CACHE {
            cache.clear();
        }
        cache.insert(sector, t.clone());
        Ok(t)
    }

    /// Drop a cached grain table after its entries were written.
    pub fn forget_gt(&self, sector: u32) {
        self.gts.lock().unwrap().remove(&sector);
    }

    /// The grain holding extent byte `rel`, and how many grains from it (within its grain
    /// table) share the answer: the rest of a table whose directory entry is empty, a run of
    /// unallocated or zeroed entries, or data grains stored one after the other.
    pub fn lookup(&self, file: &HostFile, rel: u64) -> Result<(Grain, u64)> {
        let g = rel / self.grain;
        let gdi = g / self.gtes_per_gt;
        let gti = g % self.gtes_per_gt;
        let Some(&gde) = self.gd.get(gdi as usize) else {
            return Err(Error::corrupt(format!("{}: grain {} lies beyond the grain directory", file.name, g)));
        };
        if gde == 0 {
            return Ok((Grain::Unallocated, self.gtes_per_gt - gti));
        }
        let gt = self.gt(file, gde)?;
        let first = self.classify(gt[gti as usize]);
        // the following entries of the same table that say the same (data: the next grains
        // of the file), so a caller walks a table in runs, not grain by grain
        let step = (self.grain / SECTOR) as u32;
        let mut n = 1u64;
        for (k, &gte) in gt[gti as usize + 1..].iter().enumerate() {
            let same = match first {
                Grain::At(_) if self.compressed => false,
                Grain::At(_) => gt[gti as usize].checked_add((k as u32 + 1).wrapping_mul(step)) == Some(gte),
                other => self.classify(gte) == other,
            };
            if !same {
                break;
            }
            n += 1;
        }
        Ok((first, n))
    }

    pub fn classify(&self, gte: u32) -> Grain {
        match gte {
            0 => Grain::Unallocated,
            GTE_ZEROED if self.zero_grain => Grain::Zeroed,
            s => Grain::At(s as u64 * SECTOR),
        }
    }

    /// A compressed grain's marker: (guest LBA, compressed size).
    pub fn marker(&self, file: &HostFile, at: u64) -> Result<(u64, u32)> {
        let mut b = [0u8; 12];
        file.read_exact_at(at, &mut b, "compressed grain marker")?;
        Ok((le64(&b, 0), le32(&b, 8)))
    }

    /// Decompress the grain at `at`: the whole grain (`self.grain` bytes at most).
    pub fn inflate(&self, file: &HostFile, at: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let (data_at, size) = if self.markers {
            let (_, size) = self.marker(file, at)?;
            (at + 12, size as u64)
        } else {
            (at, self.grain)
        };
        if size == 0 || size > 2 * self.grain {
            return Err(Error::damaged("grain", Some(at), format!("{}: compressed grain at 0x{:x} has an invalid size {}", file.name, at, size)));
        }
        // only the part inside the file is read (and allocated); past its end, zeros (qemu
        // reads past the end as zeros too)
        let stored = size.min(file.len().saturating_sub(data_at));
        let mut comp = vec![0u8; stored as usize];
        file.read_zero_fill(data_at, &mut comp)?;
        let input = std::io::Read::chain(&comp[..], std::io::repeat(0).take(size - stored));
        let mut out = Vec::with_capacity(self.grain.min(4 << 20) as usize);
        flate2::read::ZlibDecoder::new(input)
            .take(self.grain)
            .read_to_end(&mut out)
            .map_err(|e| Error::damaged("grain", Some(at), format!("{}: compressed grain at 0x{:x}: {}", file.name, at, e)))?;
        Ok(out)
    }
}

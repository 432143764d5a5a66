//! An ESXi seSparse extent (space-efficient sparse, the snapshot format of VMFS 6): a
//! constant header, a volatile header, a grain directory of 64-bit entries naming grain tables
//! by index, 4096-entry tables of 64-bit entries whose top nibble says unallocated, zero or
//! allocated (with the grain index scrambled over the rest). The format is not documented;
//! this follows what qemu accepts and nothing more (read-only, as in qemu).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::sparse::{Grain, SECTOR};
use crate::image::bytes::le64;
use crate::image::io::HostFile;
use crate::image::region::Field;
use crate::image::{Error, Result};

pub const CONST_MAGIC: u64 = 0xcafe_babe;
pub const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
const VERSION: u64 = 0x0000_0002_0000_0001;
const GT_CACHE: usize = 256;
const MAX_GD_ENTRIES: u64 = 32 * 1024 * 1024;

/// The constant header's fields, by offset (all 64-bit little-endian).
const NAMES: [&str; 26] = [
    "Magic",
    "Version",
    "Capacity (sectors)",
    "Grain size (sectors)",
    "Grain table size (sectors)",
    "Flags",
    "Reserved 1",
    "Reserved 2",
    "Reserved 3",
    "Reserved 4",
    "Volatile header offset",
    "Volatile header size",
    "Journal header offset",
    "Journal header size",
    "Journal offset",
    "Journal size",
    "Grain directory offset",
    "Grain directory size",
    "Grain tables offset",
    "Grain tables size",
    "Free bitmap offset",
    "Free bitmap size",
    "Backmap offset",
    "Backmap size",
    "Grains offset",
    "Grains size",
];

pub struct SeSparseExtent {
    pub bytes: Vec<u8>,
    pub capacity: u64,
    pub grain: u64,
    /// Entries per grain table (4096).
    pub gtes_per_gt: u64,
    pub gd_offset: u64,
    pub gd: Vec<u64>,
    /// Where grain tables start and grains start, in bytes.
    pub tables_offset: u64,
    pub grains_offset: u64,
    gts: Mutex<HashMap<u32, Arc<Vec<u64>>>>,
}

fn field(b: &[u8], i: usize) -> u64 {
    le64(b, i * 8)
}

impl SeSparseExtent {
    pub fn open(file: &HostFile) -> Result<SeSparseExtent> {
        let name = &file.name;
        let mut b = vec![0u8; SECTOR as usize];
        file.read_exact_at(0, &mut b, "seSparse constant header")?;
        let bad = |what: String| Err(Error::corrupt(format!("{}: seSparse extent: {}", name, what)));
        if field(&b, 0) != CONST_MAGIC {
            return bad(format!("bad constant header magic 0x{:016x}", field(&b, 0)));
        }
        if field(&b, 1) != VERSION {
            return Err(Error::unsupported(format!("{}: seSparse version 0x{:016x} is not supported", name, field(&b, 1))));
        }
        if field(&b, 3) != 8 || field(&b, 4) != 64 || field(&b, 5) != 0 || (6..10).any(|i| field(&b, i) != 0) || b[208..].iter().any(|&x| x != 0) {
            return Err(Error::unsupported(format!(
                "{}: seSparse extent with grain size {}, grain table size {}, flags 0x{:x} or reserved fields set is not supported",
                name,
                field(&b, 3),
                field(&b, 4),
                field(&b, 5)
            )));
        }
        let mut v = vec![0u8; SECTOR as usize];
        file.read_exact_at(field(&b, 10).saturating_mul(SECTOR), &mut v, "seSparse volatile header")?;
        if le64(&v, 0) != VOLATILE_MAGIC {
            return bad(format!("bad volatile header magic 0x{:016x}", le64(&v, 0)));
        }
        if le64(&v, 24) != 0 {
            return Err(Error::unsupported(format!("{}: seSparse extent is dirty (its journal needs replaying)", name)));
        }
        let capacity = field(&b, 2);
        let grain = field(&b, 3) * SECTOR;
        let gtes_per_gt = field(&b, 4) * SECTOR / 8;
        let gd_entries = field(&b, 17).saturating_mul(SECTOR) / 8;
        if gd_entries > MAX_GD_ENTRIES {
            return bad(format!("grain directory of {} entries is too big", gd_entries));
        }
        let gd_offset = field(&b, 16).saturating_mul(SECTOR);
        if gd_offset.checked_add(gd_entries * 8).is_none_or(|e| e > file.len()) {
            return bad(format!("grain directory at 0x{:x} lies past the end of the file (0x{:x})", gd_offset, file.len()));
        }
        let mut raw = vec![0u8; (gd_entries * 8) as usize];
        file.read_exact_at(gd_offset, &mut raw, "seSparse grain directory")?;
        let gd = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        Ok(SeSparseExtent {
            capacity: capacity.saturating_mul(SECTOR),
            grain,
            gtes_per_gt,
            gd_offset,
            gd,
            tables_offset: field(&b, 18).saturating_mul(SECTOR),
            grains_offset: field(&b, 24).saturating_mul(SECTOR),
            bytes: b,
            gts: Mutex::new(HashMap::new()),
        })
    }

    pub fn gt_bytes(&self) -> u64 {
        self.gtes_per_gt * 8
    }

    fn gt(&self, file: &HostFile, index: u32) -> Result<Arc<Vec<u64>>> {
        if let Some(t) = self.gts.lock().unwrap().get(&index) {
            return Ok(t.clone());
        }
        let at = self.tables_offset.saturating_add(index as u64 * self.gt_bytes());
        let mut raw = vec![0u8; self.gt_bytes() as usize];
        file.read_zero_fill(at, &mut raw)?;
        let t: Arc<Vec<u64>> = Arc::new(raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect());
        let mut cache = self.gts.lock().unwrap();
        if cache.len() >= GT_CACHE {
            cache.clear();
        }
        cache.insert(index, t.clone());
        Ok(t)
    }

    fn classify(&self, file: &HostFile, e: u64) -> Result<Grain> {
        Ok(match e >> 60 {
            0 if e == 0 => Grain::Unallocated,
            1 | 2 => Grain::Zeroed,
            3 => {
                let cluster = ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                let at = self.grains_offset.saturating_add(cluster.saturating_mul(self.grain));
                if at > i64::MAX as u64 {
                    return Err(Error::corrupt(format!("{}: seSparse grain table entry 0x{:016x} points beyond any file", file.name, e)));
                }
                Grain::At(at)
            }
            _ => return Err(Error::corrupt(format!("{}: invalid seSparse grain table entry 0x{:016x}", file.name, e))),
        })
    }

    /// Like [`super::sparse::SparseExtent::lookup`]: the grain at extent byte `rel` and how
    /// many grains from it in its table say the same.
    pub fn lookup(&self, file: &HostFile, rel: u64) -> Result<(Grain, u64)> {
        let g = rel / self.grain;
        let gdi = g / self.gtes_per_gt;
        let gti = (g % self.gtes_per_gt) as usize;
        let Some(&gde) = self.gd.get(gdi as usize) else {
            return Err(Error::corrupt(format!("{}: grain {} lies beyond the seSparse grain directory", file.name, g)));
        };
        if gde == 0 {
            return Ok((Grain::Unallocated, self.gtes_per_gt - gti as u64));
        }
        if gde & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
            return Err(Error::corrupt(format!("{}: invalid seSparse grain directory entry 0x{:016x}", file.name, gde)));
        }
        let gt = self.gt(file, gde as u32)?;
        let first = self.classify(file, gt[gti])?;
        let mut n = 1u64;
        for &e in &gt[gti + 1..] {
            let same = match (first, self.classify(file, e)) {
                (Grain::At(a), Ok(Grain::At(b))) => b == a + n * self.grain,
                (a, Ok(b)) => a == b,
                _ => false,
            };
            if !same {
                break;
            }
            n += 1;
        }
        Ok((first, n))
    }

    pub fn fields(&self) -> Vec<Field> {
        NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| Field { off: i as u64 * 8, len: 8, name: n.to_string(), value: format!("0x{:x}", field(&self.bytes, i)) })
            .collect()
    }
}

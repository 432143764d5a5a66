//! Images built byte by byte from the specifications (shared/specs/vhd-format.asciidoc,
//! shared/specs/qcow2.rst), independent of the parsers under test: nothing here calls into
//! the image model, so a parser bug cannot hide behind a shared helper.
//!
//! Each builder returns the file's bytes and a layout saying where it put every structure,
//! so tests can assert host offsets they computed themselves.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SECTOR: usize = 512;
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
pub fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Bytes that differ from sector to sector and from seed to seed (never all zero in a sector),
/// so a read from the wrong place shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let sector = (i / SECTOR) as u32;
            (((i % 251) as u32 + sector * 7 + seed as u32 * 31) % 255 + 1) as u8
        })
        .collect()
}

/// Write `bytes` as `name` in `dir`; the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

// ---------------------------------------------------------------------------------------
// VHD

pub const DISK_FIXED: u32 = 2;
pub const DISK_DYNAMIC: u32 = 3;
pub const DISK_DIFFERENCING: u32 = 4;

/// VHD checksum: the one's complement of the sum of all bytes, the 4-byte checksum field at
/// `field` counted as zero.
pub fn vhd_checksum(buf: &[u8], field: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            sum = sum.wrapping_add(b as u32);
        }
    }
    !sum
}

/// A 16-byte id from a seed.
pub fn uuid(seed: u8) -> [u8; 16] {
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = seed.wrapping_mul(17).wrapping_add(i as u8 * 13) ^ 0x5a;
    }
    u
}

/// The hard disk footer (spec "Hard Disk Footer Format"), checksum filled in.
pub struct VhdFooter {
    pub disk_type: u32,
    pub size: u64,
    /// Offset of the dynamic disk header; all ones for a fixed disk.
    pub data_offset: u64,
    pub creator_app: [u8; 4],
    /// Cylinders, heads, sectors per track.
    pub chs: (u16, u8, u8),
    pub unique_id: [u8; 16],
    pub timestamp: u32,
}

impl VhdFooter {
    pub fn new(disk_type: u32, size: u64, data_offset: u64) -> VhdFooter {
        VhdFooter {
            disk_type,
            size,
            data_offset,
            // qemu's creator: the size is current_size, not the CHS geometry
            creator_app: *b"qem2",
            chs: chs_of(size),
            unique_id: uuid(disk_type as u8),
            timestamp: 0x2a00_0000,
        }
    }

    pub fn bytes(&self) -> [u8; 512] {
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        put32(&mut f, 8, 2); // features: reserved bit always set
        put32(&mut f, 12, 0x0001_0000); // file format version 1.0
        put64(&mut f, 16, self.data_offset);
        put32(&mut f, 24, self.timestamp);
        f[28..32].copy_from_slice(&self.creator_app);
        put32(&mut f, 32, 0x0005_0003);
        f[36..40].copy_from_slice(b"Wi2k");
        put64(&mut f, 40, self.size);
        put64(&mut f, 48, self.size);
        put16(&mut f, 56, self.chs.0);
        f[58] = self.chs.1;
        f[59] = self.chs.2;
        put32(&mut f, 60, self.disk_type);
        f[68..84].copy_from_slice(&self.unique_id);
        let c = vhd_checksum(&f, 64);
        put32(&mut f, 64, c);
        f
    }
}

/// The spec's CHS algorithm (appendix "CHS Calculation").
pub fn chs_of(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// A fixed VHD: the data, then the footer.
pub fn fixed_vhd(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(&VhdFooter::new(DISK_FIXED, data.len() as u64, u64::MAX).bytes());
    out
}

#[derive(Clone, Debug)]
struct VhdBlock {
    bitmap: Vec<u8>,
    data: Vec<u8>,
}

/// Where a built dynamic or differencing VHD put its structures.
#[derive(Clone, Debug, Default)]
pub struct VhdLayout {
    pub header_offset: u64,
    pub bat_offset: u64,
    /// block → file offset of its sector bitmap (the data follows the bitmap)
    pub bitmap_offset: BTreeMap<u32, u64>,
    pub bitmap_bytes: u64,
    pub footer_offset: u64,
    pub file_size: u64,
}

impl VhdLayout {
    /// File offset of guest byte `virt`, when its block is allocated.
    pub fn host(&self, virt: u64, block_size: u64) -> Option<u64> {
        let b = (virt / block_size) as u32;
        self.bitmap_offset.get(&b).map(|bm| bm + self.bitmap_bytes + virt % block_size)
    }
}

/// A dynamic or differencing VHD (spec "Dynamic Disk Header Format", "Block Allocation
/// Table", "Data blocks"). File layout:
/// ```text
/// 0x000  footer copy
/// 0x200  dynamic disk header (1024)
/// 0x600  BAT, padded to a sector
///        parent locator data (differencing: W2ru, UTF-16LE)
///        blocks in allocation order: sector bitmap (padded to a sector) + data
///        footer
/// ```
#[derive(Clone, Debug)]
pub struct DynVhd {
    pub size: u64,
    pub block_size: u32,
    pub unique_id: [u8; 16],
    /// Differencing: the parent's unicode name, its unique id, and a W2ru locator path.
    pub parent: Option<(String, [u8; 16], Option<String>)>,
    /// BAT entries (in sectors) to store instead of the real ones: damage.
    pub bat_override: BTreeMap<u32, u32>,
    /// Extra BAT entries beyond those the disk needs.
    pub extra_bat_entries: u32,
    blocks: BTreeMap<u32, VhdBlock>,
    order: Vec<u32>,
}

impl DynVhd {
    pub fn dynamic(size: u64, block_size: u32) -> DynVhd {
        assert!(block_size as usize >= SECTOR && block_size.is_power_of_two());
        DynVhd {
            size,
            block_size,
            unique_id: uuid(3),
            parent: None,
            bat_override: BTreeMap::new(),
            extra_bat_entries: 0,
            blocks: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    pub fn differencing(size: u64, block_size: u32, parent_name: &str, parent_uid: [u8; 16]) -> DynVhd {
        let mut d = DynVhd::dynamic(size, block_size);
        d.unique_id = uuid(4);
        d.parent = Some((parent_name.to_string(), parent_uid, Some(format!(".\\{parent_name}"))));
        d
    }

    pub fn is_differencing(&self) -> bool {
        self.parent.is_some()
    }

    pub fn sectors_per_block(&self) -> u64 {
        self.block_size as u64 / SECTOR as u64
    }

    pub fn bitmap_bytes(&self) -> usize {
        (self.sectors_per_block().div_ceil(8) as usize).next_multiple_of(SECTOR)
    }

    pub fn entries(&self) -> u32 {
        self.size.div_ceil(self.block_size as u64) as u32
    }

    fn block(&mut self, idx: u32) -> &mut VhdBlock {
        assert!(idx < self.entries(), "block {idx} beyond the disk");
        if !self.blocks.contains_key(&idx) {
            let b = VhdBlock { bitmap: vec![0; self.bitmap_bytes()], data: vec![0; self.block_size as usize] };
            self.blocks.insert(idx, b);
            self.order.push(idx);
        }
        self.blocks.get_mut(&idx).unwrap()
    }

    /// Allocate a block (next in file order) with no sector marked present.
    pub fn allocate(&mut self, idx: u32) -> &mut Self {
        self.block(idx);
        self
    }

    fn put(&mut self, sector: u64, data: &[u8], mark: bool) -> &mut Self {
        assert_eq!(data.len() % SECTOR, 0, "whole sectors only");
        let spb = self.sectors_per_block();
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let s = sector + i as u64;
            let within = (s % spb) as usize;
            let b = self.block((s / spb) as u32);
            if mark {
                b.bitmap[within / 8] |= 0x80 >> (within % 8);
            }
            b.data[within * SECTOR..(within + 1) * SECTOR].copy_from_slice(chunk);
        }
        self
    }

    /// Store `data` at guest sector `sector` and mark exactly those sectors present.
    pub fn write_sectors(&mut self, sector: u64, data: &[u8]) -> &mut Self {
        self.put(sector, data, true)
    }

    /// Store `data` without marking the sectors present in the bitmap.
    pub fn write_hidden(&mut self, sector: u64, data: &[u8]) -> &mut Self {
        self.put(sector, data, false)
    }

    /// Whether guest sector `s` is marked present in this file.
    pub fn present(&self, s: u64) -> bool {
        let spb = self.sectors_per_block();
        let within = (s % spb) as usize;
        self.blocks.get(&((s / spb) as u32)).is_some_and(|b| b.bitmap[within / 8] & (0x80 >> (within % 8)) != 0)
    }

    pub fn allocated(&self, block: u32) -> bool {
        self.blocks.contains_key(&block)
    }

    /// The guest disk as a reader must see it. A dynamic disk's allocated block reads whole
    /// (qemu reads it whatever the bitmap says); a differencing disk's clear bits show `parent`.
    pub fn guest(&self, parent: Option<&[u8]>) -> Vec<u8> {
        let mut out = match parent {
            Some(p) => {
                let mut v = p.to_vec();
                v.resize(self.size as usize, 0);
                v
            }
            None => vec![0; self.size as usize],
        };
        let bs = self.block_size as usize;
        for (&idx, b) in &self.blocks {
            for s in 0..self.sectors_per_block() as usize {
                let virt = idx as usize * bs + s * SECTOR;
                if virt >= out.len() {
                    break;
                }
                let show = !self.is_differencing() || b.bitmap[s / 8] & (0x80 >> (s % 8)) != 0;
                if show {
                    let n = SECTOR.min(out.len() - virt);
                    out[virt..virt + n].copy_from_slice(&b.data[s * SECTOR..s * SECTOR + n]);
                }
            }
        }
        out
    }

    pub fn footer(&self) -> VhdFooter {
        let kind = if self.is_differencing() { DISK_DIFFERENCING } else { DISK_DYNAMIC };
        let mut f = VhdFooter::new(kind, self.size, 0x200);
        f.unique_id = self.unique_id;
        f
    }

    pub fn build(&self) -> (Vec<u8>, VhdLayout) {
        let header_offset = 0x200u64;
        let bat_offset = 0x600u64;
        let entries = self.entries() + self.extra_bat_entries;
        let bat_bytes = (entries as u64 * 4).next_multiple_of(SECTOR as u64);
        let mut cursor = bat_offset + bat_bytes;

        let mut locator: Option<(u64, Vec<u8>)> = None;
        if let Some((_, _, Some(path))) = &self.parent {
            let data: Vec<u8> = path.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            let space = (data.len() as u64).next_multiple_of(SECTOR as u64).max(SECTOR as u64);
            locator = Some((cursor, data));
            cursor += space;
        }

        let bm = self.bitmap_bytes() as u64;
        let mut bitmap_offset = BTreeMap::new();
        for &idx in &self.order {
            bitmap_offset.insert(idx, cursor);
            cursor += bm + self.block_size as u64;
        }
        let footer_offset = cursor;
        let file_size = footer_offset + 512;
        let mut out = vec![0u8; file_size as usize];

        let footer = self.footer().bytes();
        out[..512].copy_from_slice(&footer);
        out[footer_offset as usize..].copy_from_slice(&footer);

        // dynamic disk header
        let mut h = [0u8; 1024];
        h[0..8].copy_from_slice(b"cxsparse");
        put64(&mut h, 8, u64::MAX);
        put64(&mut h, 16, bat_offset);
        put32(&mut h, 24, 0x0001_0000);
        put32(&mut h, 28, entries);
        put32(&mut h, 32, self.block_size);
        if let Some((name, uid, _)) = &self.parent {
            h[40..56].copy_from_slice(uid);
            put32(&mut h, 56, 0x2a00_0000);
            let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
            assert!(units.len() <= 512);
            h[64..64 + units.len()].copy_from_slice(&units);
            if let Some((off, data)) = &locator {
                let e = 576;
                h[e..e + 4].copy_from_slice(b"W2ru");
                let space = (data.len() as u64).div_ceil(SECTOR as u64).max(1) as u32;
                put32(&mut h, e + 4, space); // data space, in sectors
                put32(&mut h, e + 8, data.len() as u32);
                put64(&mut h, e + 16, *off);
                out[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
        }
        let c = vhd_checksum(&h, 36);
        put32(&mut h, 36, c);
        out[header_offset as usize..header_offset as usize + 1024].copy_from_slice(&h);

        // BAT: unused entries are all ones
        for i in 0..entries {
            let e = match (self.bat_override.get(&i), bitmap_offset.get(&i)) {
                (Some(&o), _) => o,
                (None, Some(&off)) => (off / SECTOR as u64) as u32,
                (None, None) => u32::MAX,
            };
            put32(&mut out, (bat_offset + i as u64 * 4) as usize, e);
        }
        for j in entries as u64 * 4..bat_bytes {
            out[(bat_offset + j) as usize] = 0xff;
        }

        for (&idx, &off) in &bitmap_offset {
            let b = &self.blocks[&idx];
            let off = off as usize;
            out[off..off + b.bitmap.len()].copy_from_slice(&b.bitmap);
            let d = off + bm as usize;
            out[d..d + b.data.len()].copy_from_slice(&b.data);
        }
        let layout = VhdLayout { header_offset, bat_offset, bitmap_offset, bitmap_bytes: bm, footer_offset, file_size };
        (out, layout)
    }
}

// ---------------------------------------------------------------------------------------
// QCOW2

pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;

/// What one guest cluster's L2 entry says.
#[derive(Clone, Debug)]
pub enum Cluster {
    /// A normal data cluster with these bytes (a whole cluster).
    Data(Vec<u8>),
    /// The zero flag with no host cluster.
    Zero,
    /// The zero flag over an allocated host cluster holding these (stale) bytes.
    ZeroAlloc(Vec<u8>),
    /// Compressed with raw deflate (compression type 0) from these bytes (a whole cluster).
    Compressed(Vec<u8>),
    /// An L2 entry stored as given (damage); nothing is allocated for it.
    Raw(u64),
    /// Extended L2: an allocated cluster with these bytes and subcluster bitmaps (bit i of
    /// `alloc`: subcluster i holds data; of `zero`: it reads zero).
    Sub { data: Vec<u8>, alloc: u32, zero: u32 },
    /// Extended L2: an entry and its bitmap stored as given (damage).
    RawExt(u64, u64),
}

/// Where a built qcow2 put its structures.
#[derive(Clone, Debug, Default)]
pub struct Qcow2Layout {
    pub refcount_table: u64,
    pub refcount_block: u64,
    pub l1: u64,
    /// L1 index → L2 table offset
    pub l2: BTreeMap<u64, u64>,
    /// guest cluster index → host cluster offset (data and allocated zero clusters)
    pub host: BTreeMap<u64, u64>,
    /// guest cluster index → (host byte offset, sectors as the L2 entry counts them)
    pub compressed: BTreeMap<u64, (u64, u64)>,
    pub file_size: u64,
}

/// A qcow2 image (spec "Header", "Host cluster management", "Cluster mapping"). File layout,
/// in clusters: header (+ extensions and backing file name), refcount table, refcount block,
/// L1 table, L2 tables, data clusters in insertion order, then compressed clusters packed
/// byte after byte.
#[derive(Clone, Debug)]
pub struct Qcow2 {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    /// Backing file name and format (backing file format extension).
    pub backing: Option<(String, Option<String>)>,
    clusters: BTreeMap<u64, Cluster>,
    order: Vec<u64>,
    /// Damage: store these instead of the real values.
    pub l1_offset_override: Option<u64>,
    pub l1_entry_override: BTreeMap<u64, u64>,
    pub l1_size_override: Option<u32>,
    /// Damage: these bytes instead of the magic.
    pub magic: [u8; 4],
    pub incompatible: u64,
    /// Start the first compressed cluster this many bytes into its host cluster.
    pub compressed_skew: u64,
    /// Extended L2 entries (incompatible feature bit 4): 32 subclusters per cluster.
    pub extended_l2: bool,
}

impl Qcow2 {
    pub fn new(version: u32, cluster_bits: u32, size: u64) -> Qcow2 {
        Qcow2 {
            version,
            cluster_bits,
            size,
            backing: None,
            clusters: BTreeMap::new(),
            order: Vec::new(),
            l1_offset_override: None,
            l1_entry_override: BTreeMap::new(),
            l1_size_override: None,
            magic: *QCOW2_MAGIC,
            incompatible: 0,
            compressed_skew: 0,
            extended_l2: false,
        }
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended_l2 { 16 } else { 8 }
    }

    pub fn l1_size(&self) -> u64 {
        self.size.div_ceil(self.cluster_size() * self.l2_entries())
    }

    pub fn set(&mut self, guest_cluster: u64, c: Cluster) -> &mut Self {
        assert!(guest_cluster * self.cluster_size() < self.size);
        if let Cluster::Data(d) | Cluster::ZeroAlloc(d) | Cluster::Compressed(d) | Cluster::Sub { data: d, .. } = &c {
            assert_eq!(d.len() as u64, self.cluster_size(), "a whole cluster");
        }
        if self.clusters.insert(guest_cluster, c).is_none() {
            self.order.push(guest_cluster);
        }
        self
    }

    /// The guest disk: data and compressed clusters show their bytes, zero clusters zero,
    /// unallocated ones `backing` (zero past its end).
    pub fn guest(&self, backing: Option<&[u8]>) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        if let Some(b) = backing {
            let n = b.len().min(out.len());
            out[..n].copy_from_slice(&b[..n]);
        }
        let cs = self.cluster_size() as usize;
        for (&i, c) in &self.clusters {
            let at = i as usize * cs;
            let end = (at + cs).min(out.len());
            match c {
                Cluster::Data(d) | Cluster::Compressed(d) => out[at..end].copy_from_slice(&d[..end - at]),
                Cluster::Zero | Cluster::ZeroAlloc(_) => out[at..end].fill(0),
                Cluster::Raw(_) | Cluster::RawExt(..) => {}
                Cluster::Sub { data, alloc, zero } => {
                    let sc = cs / 32;
                    for i in 0..32 {
                        let (a, b) = (at + i * sc, at + (i + 1) * sc);
                        if zero & (1 << i) != 0 {
                            out[a..b].fill(0);
                        } else if alloc & (1 << i) != 0 {
                            out[a..b].copy_from_slice(&data[i * sc..(i + 1) * sc]);
                        }
                    }
                }
            }
        }
        out
    }

    pub fn build(&self) -> (Vec<u8>, Qcow2Layout) {
        let cs = self.cluster_size();
        let l1_size = self.l1_size();
        assert!(l1_size * 8 <= cs, "one L1 cluster is enough here");
        let mut next = 4 * cs; // header, refcount table, refcount block, L1
        let mut lay = Qcow2Layout { refcount_table: cs, refcount_block: 2 * cs, l1: 3 * cs, ..Default::default() };
        let per_l2 = self.l2_entries();
        let mut l1_used: Vec<u64> = self.order.iter().map(|g| g / per_l2).collect();
        l1_used.sort();
        l1_used.dedup();
        for i in l1_used {
            lay.l2.insert(i, next);
            next += cs;
        }
        // refcounts per host cluster
        let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
        for c in 0..next / cs {
            refs.insert(c, 1);
        }
        let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
        for &g in &self.order {
            if let Cluster::Data(d) | Cluster::ZeroAlloc(d) | Cluster::Sub { data: d, .. } = &self.clusters[&g] {
                lay.host.insert(g, next);
                refs.insert(next / cs, 1);
                data.push((next, d.clone()));
                next += cs;
            }
        }
        // compressed clusters, packed byte after byte
        let mut cpos = next + self.compressed_skew;
        let mut cdata: Vec<(u64, Vec<u8>)> = Vec::new();
        for &g in &self.order {
            if let Cluster::Compressed(d) = &self.clusters[&g] {
                let stream = deflate_raw(d);
                let off = cpos;
                let end = off + stream.len() as u64;
                let sectors = end.div_ceil(512) - off / 512;
                lay.compressed.insert(g, (off, sectors));
                // one reference per host cluster its sectors touch, as qemu counts
                let last = (off & !511) + sectors * 512 - 1;
                for c in off / cs..=last / cs {
                    *refs.entry(c).or_insert(0) += 1;
                }
                cdata.push((off, stream));
                cpos = end;
            }
        }
        let file_size = cpos.max(next).next_multiple_of(cs);
        lay.file_size = file_size;
        let mut out = vec![0u8; file_size as usize];

        // header
        out[0..4].copy_from_slice(&self.magic);
        put32(&mut out, 4, self.version);
        put32(&mut out, 20, self.cluster_bits);
        put64(&mut out, 24, self.size);
        put32(&mut out, 32, 0);
        put32(&mut out, 36, self.l1_size_override.unwrap_or(l1_size as u32));
        put64(&mut out, 40, self.l1_offset_override.unwrap_or(lay.l1));
        put64(&mut out, 48, lay.refcount_table);
        put32(&mut out, 56, 1);
        let header_len: u64 = if self.version >= 3 {
            put64(&mut out, 72, self.incompatible | if self.extended_l2 { 1 << 4 } else { 0 });
            put32(&mut out, 96, 4); // refcount_order: 16-bit refcounts
            put32(&mut out, 100, 104);
            104
        } else {
            72
        };
        let mut pos = header_len.next_multiple_of(8);
        if let Some((name, fmt)) = &self.backing {
            if let Some(f) = fmt {
                put32(&mut out, pos as usize, 0xe279_2aca);
                put32(&mut out, pos as usize + 4, f.len() as u32);
                out[pos as usize + 8..pos as usize + 8 + f.len()].copy_from_slice(f.as_bytes());
                pos += 8 + (f.len() as u64).next_multiple_of(8);
            }
            pos += 8; // end of extensions (type 0, length 0)
            put64(&mut out, 8, pos);
            put32(&mut out, 16, name.len() as u32);
            out[pos as usize..pos as usize + name.len()].copy_from_slice(name.as_bytes());
        }

        // refcount table and block (16-bit big-endian refcounts)
        put64(&mut out, lay.refcount_table as usize, lay.refcount_block);
        for (&c, &n) in &refs {
            if c * cs < file_size && n > 0 {
                put16(&mut out, (lay.refcount_block + c * 2) as usize, n as u16);
            }
        }
        // L1
        for (&i, &off) in &lay.l2 {
            put64(&mut out, (lay.l1 + i * 8) as usize, off | OFLAG_COPIED);
        }
        for (&i, &e) in &self.l1_entry_override {
            put64(&mut out, (lay.l1 + i * 8) as usize, e);
        }
        // L2
        let csize_shift = 62 - (self.cluster_bits - 8);
        let ext = self.extended_l2;
        let all: u64 = 0xffff_ffff;
        for (&g, c) in &self.clusters {
            let Some(&l2) = lay.l2.get(&(g / per_l2)) else { continue };
            // extended L2: the zero flag is a bitmap (high half), data an allocation bitmap
            let (e, bitmap) = match c {
                Cluster::Data(_) => (lay.host[&g] | OFLAG_COPIED, all),
                Cluster::ZeroAlloc(_) if ext => (lay.host[&g] | OFLAG_COPIED, all << 32),
                Cluster::Zero if ext => (0, all << 32),
                Cluster::Sub { alloc, zero, .. } => (lay.host[&g] | OFLAG_COPIED, (*zero as u64) << 32 | *alloc as u64),
                Cluster::RawExt(e, b) => (*e, *b),
                _ => (0, 0),
            };
            let e = match c {
                Cluster::Data(_) | Cluster::Sub { .. } | Cluster::RawExt(..) => e,
                Cluster::ZeroAlloc(_) | Cluster::Zero if ext => e,
                Cluster::ZeroAlloc(_) => lay.host[&g] | OFLAG_COPIED | OFLAG_ZERO,
                Cluster::Zero => OFLAG_ZERO,
                Cluster::Compressed(_) => {
                    let (off, sectors) = lay.compressed[&g];
                    OFLAG_COMPRESSED | ((sectors - 1) << csize_shift) | off
                }
                Cluster::Raw(e) => *e,
            };
            let esize = if ext { 16 } else { 8 };
            let at = (l2 + (g % per_l2) * esize) as usize;
            put64(&mut out, at, e);
            if ext {
                put64(&mut out, at + 8, bitmap);
            }
        }
        for (off, d) in data.iter().chain(cdata.iter()) {
            out[*off as usize..*off as usize + d.len()].copy_from_slice(d);
        }
        (out, lay)
    }
}

/// Raw deflate (no zlib header): qcow2 compression type 0.
pub fn deflate_raw(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

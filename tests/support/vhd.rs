//! A differencing-VHD writer, implemented from the VHD specification
//! (shared/specs/vhd-format.asciidoc, Microsoft's VHD spec 1.0), for tests:
//! qemu-img cannot create differencing VHDs.
//!
//! ```ignore
//! let mut d = DiffVhd::new(&parent, 2 * MIB as u32);
//! d.write_sectors(3, &data);          // sets bitmap bits only for these sectors
//! d.write(&dir.join("child.vhd"));
//! let guest = d.expected_bytes();     // what a reader must see
//! ```
//!
//! File layout produced (all offsets 512-aligned):
//! ```text
//! 0x000  footer copy (512)
//! 0x200  dynamic header (1024)
//! 0x600  BAT (max_table_entries * 4, padded to 512)
//! ...    parent locator data: W2ku (absolute path), W2ru (relative ".\name"),
//!        UTF-16LE, each padded to whole sectors
//! ...    blocks in allocation order: sector bitmap (padded to 512) + data
//! end    footer (512)
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{be32, be64, qemu_convert_raw};

pub const SECTOR: usize = 512;
/// Seconds between 1970-01-01 and 2000-01-01 (VHD epoch).
pub const VHD_EPOCH_OFFSET: u64 = 946_684_800;

pub const DISK_FIXED: u32 = 2;
pub const DISK_DYNAMIC: u32 = 3;
pub const DISK_DIFFERENCING: u32 = 4;

/// One's complement of the byte sum, with the 4-byte checksum field at
/// `csum_off` treated as zero.
pub fn vhd_checksum(buf: &[u8], csum_off: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, b) in buf.iter().enumerate() {
        if (csum_off..csum_off + 4).contains(&i) {
            continue;
        }
        sum = sum.wrapping_add(*b as u32);
    }
    !sum
}

/// The fields of a VHD footer that the builder needs.
#[derive(Debug, Clone)]
pub struct Footer {
    pub raw: [u8; 512],
    pub disk_type: u32,
    pub timestamp: u32,
    pub original_size: u64,
    pub current_size: u64,
    pub geometry: [u8; 4],
    pub unique_id: [u8; 16],
}

impl Footer {
    pub fn parse(b: &[u8]) -> Footer {
        assert!(b.len() >= 512);
        assert_eq!(&b[0..8], b"conectix", "not a VHD footer");
        let mut raw = [0u8; 512];
        raw.copy_from_slice(&b[..512]);
        Footer {
            disk_type: be32(b, 60),
            timestamp: be32(b, 24),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            geometry: b[56..60].try_into().unwrap(),
            unique_id: b[68..84].try_into().unwrap(),
            raw,
        }
    }

    /// Read the footer at the end of a VHD file.
    pub fn read(path: &Path) -> Footer {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(data.len() >= 512, "{} too short for a VHD", path.display());
        Footer::parse(&data[data.len() - 512..])
    }
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// 16 bytes derived deterministically from a string (FNV-1a based), shaped
/// like a version-4 UUID.
pub fn uuid_from(seed: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for half in 0..2u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (half.wrapping_mul(0x1000_0000_01b3));
        for b in seed.bytes().chain(std::iter::once(half as u8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out[half as usize * 8..half as usize * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// A relative Windows-style path from `from_dir` to `to` (`.\name`,
/// `..\dir\name`). Both must be absolute.
pub fn relative_windows_path(from_dir: &Path, to: &Path) -> String {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    if common == a.len() {
        parts.push(".".into());
    } else {
        for _ in common..a.len() {
            parts.push("..".into());
        }
    }
    for c in &b[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    parts.join("\\")
}

/// Deliberate defects, for error-path tests.
#[derive(Debug, Clone, Default)]
pub struct Corruptions {
    /// Store a parent unique id that does not match the parent's footer.
    pub wrong_parent_uid: bool,
    /// Point this block's BAT entry far past the end of the file.
    pub bat_past_eof: Option<u32>,
    /// Make the locators and parent name point at this file name (relative
    /// to the child's directory) instead of the real parent.
    pub locator_target: Option<String>,
    /// The parent is the child itself: locators name the child's own file and
    /// the parent unique id is the child's own unique id.
    pub self_loop: bool,
    /// Store this parent unique id (e.g. to build a loop whose ids agree).
    pub parent_uid_override: Option<[u8; 16]>,
}

#[derive(Debug, Clone)]
struct Block {
    bitmap: Vec<u8>,
    data: Vec<u8>,
}

/// Where things landed in the written file.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub file_size: u64,
    pub header_offset: u64,
    pub bat_offset: u64,
    pub bat_bytes: u64,
    /// (platform code, data offset, data length in bytes, data space field)
    pub locators: Vec<([u8; 4], u64, u32, u32)>,
    /// block index -> file offset of its sector bitmap
    pub block_bitmap_offset: BTreeMap<u32, u64>,
    pub bitmap_bytes: u64,
    pub footer_offset: u64,
}

/// A differencing VHD under construction.
#[derive(Debug, Clone)]
pub struct DiffVhd {
    pub parent: PathBuf,
    /// Our own model of the parent when it is itself differencing.
    parent_model: Option<Box<DiffVhd>>,
    pub parent_footer: Footer,
    pub block_size: u32,
    /// Current size (copied from the parent footer).
    pub size: u64,
    pub unique_id: Option<[u8; 16]>,
    pub timestamp: u32,
    /// Write the locator "platform data space" field in bytes instead of in
    /// 512-byte sectors (some writers do; the spec says sectors).
    pub locator_space_in_bytes: bool,
    /// Store the parent's full path as the parent unicode name (default: file name only).
    pub parent_name_full_path: bool,
    pub corrupt: Corruptions,
    blocks: BTreeMap<u32, Block>,
    order: Vec<u32>,
    /// Set by `write`.
    pub path: Option<PathBuf>,
    pub layout: Layout,
}

impl DiffVhd {
    /// A child of a fixed or dynamic VHD file.
    pub fn new(parent: &Path, block_size: u32) -> DiffVhd {
        let footer = Footer::read(parent);
        assert!(
            footer.disk_type == DISK_FIXED || footer.disk_type == DISK_DYNAMIC,
            "DiffVhd::new: {} is differencing; use DiffVhd::child_of(&model)",
            parent.display()
        );
        Self::with_parent(parent.to_path_buf(), footer, None, block_size)
    }

    /// A child of a differencing VHD that was built (and written) with this module.
    pub fn child_of(parent: &DiffVhd, block_size: u32) -> DiffVhd {
        let path = parent.path.clone().expect("parent DiffVhd must be written first");
        let footer = Footer::read(&path);
        assert_eq!(footer.disk_type, DISK_DIFFERENCING);
        Self::with_parent(path, footer, Some(Box::new(parent.clone())), block_size)
    }

    fn with_parent(parent: PathBuf, footer: Footer, model: Option<Box<DiffVhd>>, block_size: u32) -> DiffVhd {
        assert!(
            block_size as usize >= SECTOR && block_size.is_power_of_two(),
            "block size must be a power-of-two multiple of 512"
        );
        DiffVhd {
            parent,
            parent_model: model,
            size: footer.current_size,
            timestamp: footer.timestamp.wrapping_add(1),
            parent_footer: footer,
            block_size,
            unique_id: None,
            locator_space_in_bytes: false,
            parent_name_full_path: false,
            corrupt: Corruptions::default(),
            blocks: BTreeMap::new(),
            order: Vec::new(),
            path: None,
            layout: Layout::default(),
        }
    }

    pub fn sectors_per_block(&self) -> u64 {
        self.block_size as u64 / SECTOR as u64
    }

    pub fn bitmap_bytes(&self) -> usize {
        round_up(self.sectors_per_block().div_ceil(8), SECTOR as u64) as usize
    }

    pub fn max_table_entries(&self) -> u32 {
        self.size.div_ceil(self.block_size as u64) as u32
    }

    fn block_mut(&mut self, idx: u32) -> &mut Block {
        if !self.blocks.contains_key(&idx) {
            assert!(idx < self.max_table_entries(), "block {idx} beyond the disk");
            let b = Block {
                bitmap: vec![0; self.bitmap_bytes()],
                data: vec![0; self.block_size as usize],
            };
            self.blocks.insert(idx, b);
            self.order.push(idx);
        }
        self.blocks.get_mut(&idx).unwrap()
    }

    /// Allocate a block (in allocation order) without marking any sector.
    pub fn allocate_block(&mut self, idx: u32) -> &mut Self {
        self.block_mut(idx);
        self
    }

    /// Store `data` (a whole number of sectors) at guest sector `sector`,
    /// setting the bitmap bit of exactly those sectors.
    pub fn write_sectors(&mut self, sector: u64, data: &[u8]) -> &mut Self {
        assert_eq!(data.len() % SECTOR, 0, "write_sectors needs whole sectors");
        let spb = self.sectors_per_block();
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let s = sector + i as u64;
            assert!(s * (SECTOR as u64) < self.size, "sector {s} beyond the disk");
            let idx = (s / spb) as u32;
            let within = (s % spb) as usize;
            let b = self.block_mut(idx);
            b.bitmap[within / 8] |= 0x80 >> (within % 8);
            b.data[within * SECTOR..(within + 1) * SECTOR].copy_from_slice(chunk);
        }
        self
    }

    /// Like `write_sectors`, but without setting bitmap bits: the data is in
    /// the file yet a reader must ignore it (and use the parent).
    pub fn write_hidden(&mut self, sector: u64, data: &[u8]) -> &mut Self {
        assert_eq!(data.len() % SECTOR, 0);
        let spb = self.sectors_per_block();
        for (i, chunk) in data.chunks(SECTOR).enumerate() {
            let s = sector + i as u64;
            let idx = (s / spb) as u32;
            let within = (s % spb) as usize;
            let b = self.block_mut(idx);
            b.data[within * SECTOR..(within + 1) * SECTOR].copy_from_slice(chunk);
        }
        self
    }

    /// Is guest sector `s` stored in this child (bitmap bit set)?
    pub fn sector_in_child(&self, s: u64) -> bool {
        let spb = self.sectors_per_block();
        let idx = (s / spb) as u32;
        let within = (s % spb) as usize;
        match self.blocks.get(&idx) {
            Some(b) => b.bitmap[within / 8] & (0x80 >> (within % 8)) != 0,
            None => false,
        }
    }

    /// File offset of guest sector `s` in the written child, if the block is allocated.
    pub fn host_offset(&self, s: u64) -> Option<u64> {
        let spb = self.sectors_per_block();
        let idx = (s / spb) as u32;
        let within = s % spb;
        self.layout
            .block_bitmap_offset
            .get(&idx)
            .map(|bm| bm + self.layout.bitmap_bytes + within * SECTOR as u64)
    }

    /// Number of layers from this child down to the non-differencing base (inclusive).
    pub fn depth(&self) -> usize {
        1 + self.parent_model.as_ref().map(|p| p.depth()).unwrap_or(1)
    }

    /// Paths of the chain, child first.
    pub fn chain(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone().expect("written")];
        match &self.parent_model {
            Some(p) => v.extend(p.chain()),
            None => v.push(self.parent.clone()),
        }
        v
    }

    pub fn own_unique_id(&self, path: &Path) -> [u8; 16] {
        self.unique_id
            .unwrap_or_else(|| uuid_from(&format!("vdvw-diff:{}", path.display())))
    }

    /// Serialize the child to `path`.
    pub fn write(&mut self, path: &Path) -> &mut Self {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap().join(path)
        };
        let child_dir = path.parent().unwrap().to_path_buf();
        let uid = self.own_unique_id(&path);

        // Which file the locators name.
        let parent_abs: PathBuf = if self.corrupt.self_loop {
            path.clone()
        } else if let Some(name) = &self.corrupt.locator_target {
            child_dir.join(name)
        } else {
            std::fs::canonicalize(&self.parent).unwrap_or_else(|_| self.parent.clone())
        };
        let child_dir_c = std::fs::canonicalize(&child_dir).unwrap_or(child_dir.clone());
        let abs_str = parent_abs.to_string_lossy().into_owned();
        let rel_str = relative_windows_path(&child_dir_c, &parent_abs);
        let name_str = if self.parent_name_full_path {
            abs_str.clone()
        } else {
            parent_abs.file_name().unwrap().to_string_lossy().into_owned()
        };

        let bat_offset: u64 = 0x600;
        let entries = self.max_table_entries() as u64;
        let bat_bytes = round_up(entries * 4, SECTOR as u64);
        let mut cursor = bat_offset + bat_bytes;

        // Parent locators.
        let mut locators = Vec::new();
        for (code, text) in [(*b"W2ku", &abs_str), (*b"W2ru", &rel_str)] {
            let data = utf16le(text);
            let sectors = (data.len() as u64).div_ceil(SECTOR as u64).max(1);
            let space = if self.locator_space_in_bytes {
                (sectors * SECTOR as u64) as u32
            } else {
                sectors as u32
            };
            locators.push((code, cursor, data.len() as u32, space, data));
            cursor += sectors * SECTOR as u64;
        }

        // Blocks.
        let bm_bytes = self.bitmap_bytes() as u64;
        let mut block_off = BTreeMap::new();
        for idx in &self.order {
            block_off.insert(*idx, cursor);
            cursor += bm_bytes + self.block_size as u64;
        }
        let footer_offset = cursor;
        let file_size = footer_offset + 512;

        // Footer.
        let mut footer = [0u8; 512];
        footer[0..8].copy_from_slice(b"conectix");
        footer[8..12].copy_from_slice(&2u32.to_be_bytes());
        footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        footer[16..24].copy_from_slice(&512u64.to_be_bytes());
        footer[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        footer[28..32].copy_from_slice(b"vdvw");
        footer[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        footer[36..40].copy_from_slice(b"Wi2k");
        footer[40..48].copy_from_slice(&self.parent_footer.original_size.to_be_bytes());
        footer[48..56].copy_from_slice(&self.size.to_be_bytes());
        footer[56..60].copy_from_slice(&self.parent_footer.geometry);
        footer[60..64].copy_from_slice(&DISK_DIFFERENCING.to_be_bytes());
        footer[68..84].copy_from_slice(&uid);
        footer[84] = 0;
        let csum = vhd_checksum(&footer, 64);
        footer[64..68].copy_from_slice(&csum.to_be_bytes());

        // Dynamic header.
        let mut hdr = [0u8; 1024];
        hdr[0..8].copy_from_slice(b"cxsparse");
        hdr[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        hdr[16..24].copy_from_slice(&bat_offset.to_be_bytes());
        hdr[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        hdr[28..32].copy_from_slice(&(entries as u32).to_be_bytes());
        hdr[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        let mut puid = if self.corrupt.self_loop {
            uid
        } else {
            self.corrupt.parent_uid_override.unwrap_or(self.parent_footer.unique_id)
        };
        if self.corrupt.wrong_parent_uid {
            for b in puid.iter_mut() {
                *b ^= 0x5a;
            }
        }
        hdr[40..56].copy_from_slice(&puid);
        let ptime = if self.corrupt.self_loop { self.timestamp } else { self.parent_footer.timestamp };
        hdr[56..60].copy_from_slice(&ptime.to_be_bytes());
        let name = utf16be(&name_str);
        assert!(name.len() <= 512, "parent name too long");
        hdr[64..64 + name.len()].copy_from_slice(&name);
        for (i, (code, off, len, space, _)) in locators.iter().enumerate() {
            let e = 576 + i * 24;
            hdr[e..e + 4].copy_from_slice(code);
            hdr[e + 4..e + 8].copy_from_slice(&space.to_be_bytes());
            hdr[e + 8..e + 12].copy_from_slice(&len.to_be_bytes());
            hdr[e + 16..e + 24].copy_from_slice(&off.to_be_bytes());
        }
        let csum = vhd_checksum(&hdr, 36);
        hdr[36..40].copy_from_slice(&csum.to_be_bytes());

        // BAT.
        let mut bat = vec![0xffu8; bat_bytes as usize];
        for (idx, off) in &block_off {
            let mut sector = (*off / SECTOR as u64) as u32;
            if self.corrupt.bat_past_eof == Some(*idx) {
                sector = ((file_size + 64 * 1024 * 1024) / SECTOR as u64) as u32;
            }
            bat[*idx as usize * 4..*idx as usize * 4 + 4].copy_from_slice(&sector.to_be_bytes());
        }
        if let Some(idx) = self.corrupt.bat_past_eof {
            if !block_off.contains_key(&idx) {
                let sector = ((file_size + 64 * 1024 * 1024) / SECTOR as u64) as u32;
                bat[idx as usize * 4..idx as usize * 4 + 4].copy_from_slice(&sector.to_be_bytes());
            }
        }

        // Assemble.
        let mut out = vec![0u8; file_size as usize];
        out[0..512].copy_from_slice(&footer);
        out[512..1536].copy_from_slice(&hdr);
        out[bat_offset as usize..(bat_offset + bat_bytes) as usize].copy_from_slice(&bat);
        for (_, off, _, _, data) in &locators {
            out[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        for (idx, off) in &block_off {
            let b = &self.blocks[idx];
            let o = *off as usize;
            out[o..o + b.bitmap.len()].copy_from_slice(&b.bitmap);
            let d = o + bm_bytes as usize;
            out[d..d + b.data.len()].copy_from_slice(&b.data);
        }
        out[footer_offset as usize..].copy_from_slice(&footer);
        std::fs::write(&path, &out).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

        self.unique_id = Some(uid);
        self.path = Some(path);
        self.layout = Layout {
            file_size,
            header_offset: 512,
            bat_offset,
            bat_bytes,
            locators: locators.iter().map(|(c, o, l, s, _)| (*c, *o, *l, *s)).collect(),
            block_bitmap_offset: block_off,
            bitmap_bytes: bm_bytes,
            footer_offset,
        };
        self
    }

    /// The guest disk a correct reader must produce: child sectors whose
    /// bitmap bit is set, everything else from the parent chain.
    pub fn expected_bytes(&self) -> Vec<u8> {
        let mut disk = match &self.parent_model {
            Some(p) => p.expected_bytes(),
            None => qemu_convert_raw(&self.parent, "vpc"),
        };
        assert_eq!(
            disk.len() as u64,
            self.size,
            "parent {} guest size differs from the child's current size",
            self.parent.display()
        );
        let spb = self.sectors_per_block() as usize;
        for (idx, b) in &self.blocks {
            for within in 0..spb {
                if b.bitmap[within / 8] & (0x80 >> (within % 8)) != 0 {
                    let g = (*idx as usize * spb + within) * SECTOR;
                    if g + SECTOR <= disk.len() {
                        disk[g..g + SECTOR].copy_from_slice(&b.data[within * SECTOR..(within + 1) * SECTOR]);
                    }
                }
            }
        }
        disk
    }
}

/// Parsed dynamic-disk header fields (for tests that inspect qemu-made VHDs).
#[derive(Debug, Clone)]
pub struct DynHeader {
    pub table_offset: u64,
    pub max_entries: u32,
    pub block_size: u32,
}

pub fn read_dyn_header(file: &[u8]) -> DynHeader {
    let foot = Footer::parse(&file[0..512]);
    assert_ne!(foot.disk_type, DISK_FIXED);
    let h = be64(file, 16) as usize; // footer copy: data offset
    assert_eq!(&file[h..h + 8], b"cxsparse");
    DynHeader {
        table_offset: be64(file, h + 16),
        max_entries: be32(file, h + 28),
        block_size: be32(file, h + 32),
    }
}

/// BAT entries of a dynamic / differencing VHD image.
pub fn read_bat(file: &[u8]) -> Vec<u32> {
    let h = read_dyn_header(file);
    (0..h.max_entries as usize)
        .map(|i| be32(file, h.table_offset as usize + 4 * i))
        .collect()
}

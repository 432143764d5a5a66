//! VHDX (Hyper-V, [MS-VHDX]): fixed, dynamic and differencing disks, read and written
//! (writing: see `write.rs`).
//!
//! Layout: a file type identifier at 0, two headers (64 KiB, 128 KiB), two region tables
//! (192 KiB, 256 KiB) naming the BAT and the metadata region, a log that may hold metadata
//! updates not yet applied (replayed here in memory only), and payload blocks found through
//! the BAT. Everything is little-endian.

pub mod bat;
pub mod check;
pub mod header;
pub mod log;
pub mod metadata;
pub mod region;
mod driver;
mod tables;
mod write;

pub use driver::DRIVER;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::driver::BackingRef;
use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::region::{Field, Region};
use super::{Error, Format, Result};

use bat::{BatEntry, Geometry};
use header::{FileIdentifier, Header};
use log::Overlay;
use metadata::Metadata;
use region::RegionTable;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
pub const HEADER_SIZE: u64 = 4 * KIB;
pub const REGION_TABLE_SIZE: u64 = 64 * KIB;
/// The smallest file that can hold the identifier, both headers and both region tables.
pub const MIN_FILE_SIZE: u64 = 320 * KIB;
/// Bitmaps kept in memory at once.
const BITMAP_CACHE: usize = 256;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as [MS-VHDX] checksums use.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// CRC-32C of `data` with the 4-byte checksum field at `at` taken as zero.
pub fn crc32c_without(data: &[u8], at: usize) -> u32 {
    let mut copy = data.to_vec();
    copy[at..at + 4].fill(0);
    crc32c(&copy)
}

/// A GUID as stored: the first three fields little-endian, the last eight bytes as is.
pub type Guid = [u8; 16];

/// A GUID from its text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (compile time).
pub const fn guid(s: &str) -> Guid {
    let b = s.as_bytes();
    assert!(b.len() == 36);
    let mut hex = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < 36 {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        hex[n] = (nibble(b[i]) << 4) | nibble(b[i + 1]);
        n += 1;
        i += 2;
    }
    [
        hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9], hex[10], hex[11], hex[12],
        hex[13], hex[14], hex[15],
    ]
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

/// The text form of a stored GUID (upper case, as the specification writes them).
pub fn guid_str(g: &Guid) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

pub fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
pub fn guid_at(b: &[u8], off: usize) -> Guid {
    b[off..off + 16].try_into().unwrap()
}

/// UTF-16LE text up to the first NUL.
pub fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// Fields of a little-endian structure at `base`.
pub struct Fields {
    pub base: u64,
    pub list: Vec<Field>,
}

impl Fields {
    pub fn new(base: u64) -> Fields {
        Fields { base, list: Vec::new() }
    }
    pub fn push(&mut self, off: u64, len: u64, name: impl Into<String>, value: impl Into<String>) {
        self.list.push(Field { off: self.base + off, len, name: name.into(), value: value.into() });
    }
}

/// Whether `off..off+len` lies inside a file of `file_len` bytes.
pub fn within(off: u64, len: u64, file_len: u64) -> bool {
    off.checked_add(len).is_some_and(|e| e <= file_len)
}

pub struct Vhdx {
    pub file: HostFile,
    pub ident: FileIdentifier,
    /// Both headers as read (None when unreadable); `current` is the one in use.
    pub headers: [Option<Header>; 2],
    pub current: usize,
    /// The region table in use and which copy it is.
    pub regions: RegionTable,
    pub region_copy: usize,
    pub meta: Metadata,
    pub geo: Geometry,
    /// The BAT's file offset and the length of its region.
    pub bat_offset: u64,
    pub bat_region_len: u64,
    pub bat: Vec<u64>,
    pub log: log::LogScan,
    /// Sectors the replayed log rewrote (in memory only).
    pub overlay: Overlay,
    pub warnings: Vec<String>,
    format: Format,
    bitmaps: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// This process's write session (header update done, next log sequence number).
    session: write::Session,
}

impl Vhdx {
    pub fn open(file: HostFile) -> Result<Vhdx> {
        let name = file.name.clone();
        let len = file.len();
        let mut warnings = Vec::new();
        if len < MIN_FILE_SIZE {
            return Err(Error::corrupt(format!(
                "{}: the file ({} bytes) is too short for a VHDX (headers and region tables need {} bytes)",
                name, len, MIN_FILE_SIZE
            )));
        }
        let ident = FileIdentifier::read(&file)?;
        if !ident.signature_ok() {
            return Err(Error::corrupt(format!("{}: not a VHDX: no 'vhdxfile' signature at offset 0", name)));
        }
        let headers = [Header::read(&file, HEADER_OFFSETS[0]).ok(), Header::read(&file, HEADER_OFFSETS[1]).ok()];
        let current = header::pick_current(&headers).ok_or_else(|| {
            Error::corrupt(format!(
                "{}: neither VHDX header is valid ({}; {})",
                name,
                header::describe_problem(&headers[0], HEADER_OFFSETS[0]),
                header::describe_problem(&headers[1], HEADER_OFFSETS[1])
            ))
        })?;
        let other = 1 - current;
        if headers[other].as_ref().is_none_or(|h| !h.is_valid()) {
            warnings.push(format!(
                "header {} is damaged ({}); using header {}",
                other + 1,
                header::describe_problem(&headers[other], HEADER_OFFSETS[other]),
                current + 1
            ));
        }
        let h = headers[current].clone().unwrap();
        if h.version != 1 {
            return Err(Error::unsupported(format!("{}: VHDX version {} is not supported", name, h.version)));
        }
        // the log: replay in memory what was not yet applied
        let (log, overlay) = log::scan_and_replay(&file, &h, &mut warnings)?;
        // region tables
        let tables = [
            RegionTable::read(&file, &overlay, REGION_TABLE_OFFSETS[0]),
            RegionTable::read(&file, &overlay, REGION_TABLE_OFFSETS[1]),
        ];
        let region_copy = match (&tables[0], &tables[1]) {
            (Ok(a), _) if a.is_valid() => 0,
            (_, Ok(b)) if b.is_valid() => 1,
            _ => {
                return Err(Error::corrupt(format!(
                    "{}: neither VHDX region table is valid ({}; {})",
                    name,
                    region::describe_problem(&tables[0], REGION_TABLE_OFFSETS[0]),
                    region::describe_problem(&tables[1], REGION_TABLE_OFFSETS[1])
                )))
            }
        };
        if region_copy == 1 {
            warnings.push(format!(
                "region table 1 is damaged ({}); using region table 2",
                region::describe_problem(&tables[0], REGION_TABLE_OFFSETS[0])
            ));
        }
        let [t0, t1] = tables;
        let regions = if region_copy == 0 { t0.unwrap() } else { t1.unwrap() };
        let (bat_entry, meta_entry) = regions.known(&name, len)?;
        let meta = Metadata::read(&file, &overlay, meta_entry.offset, meta_entry.length as u64, &name)?;
        let geo = Geometry::new(&meta).map_err(|e| Error::corrupt(format!("{}: {}", name, e)))?;
        let needed = geo.total_entries();
        let bat_region_len = bat_entry.length as u64;
        if needed.checked_mul(8).is_none_or(|b| b > bat_region_len) {
            return Err(Error::corrupt(format!(
                "{}: the BAT region ({} bytes) is too small for the {} entries a disk of {} bytes in blocks of {} needs",
                name, bat_region_len, needed, meta.virtual_size, meta.block_size
            )));
        }
        let mut raw = vec![0u8; (needed * 8) as usize];
        log::read_at(&file, &overlay, bat_entry.offset, &mut raw, "block allocation table")?;
        let bat = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let format = Format::parse("vhdx").expect("the vhdx driver is registered");
        Ok(Vhdx {
            file,
            ident,
            headers,
            current,
            regions,
            region_copy,
            meta,
            geo,
            bat_offset: bat_entry.offset,
            bat_region_len,
            bat,
            log,
            overlay,
            warnings,
            format,
            bitmaps: Mutex::new(HashMap::new()),
            session: write::Session::default(),
        })
    }

    pub fn header(&self) -> &Header {
        self.headers[self.current].as_ref().expect("the current header was read")
    }

    pub fn is_differencing(&self) -> bool {
        self.meta.has_parent
    }

    pub fn is_fixed(&self) -> bool {
        self.meta.leave_blocks_allocated
    }

    pub fn block_size(&self) -> u64 {
        self.meta.block_size as u64
    }

    pub fn virtual_size(&self) -> u64 {
        self.meta.virtual_size
    }

    /// The BAT entry of payload block `block`.
    pub fn payload(&self, block: u64) -> BatEntry {
        BatEntry(self.bat.get(self.geo.payload_index(block) as usize).copied().unwrap_or(0))
    }

    /// The BAT entry of the sector bitmap of chunk `chunk`.
    pub fn bitmap_entry(&self, chunk: u64) -> BatEntry {
        BatEntry(self.bat.get(self.geo.bitmap_index(chunk) as usize).copied().unwrap_or(0))
    }

    /// The file offset of a present payload block, checked against the file size.
    pub fn block_host(&self, block: u64) -> Result<u64> {
        let e = self.payload(block);
        let off = e.offset();
        if !within(off, self.block_size(), self.file.len()) {
            return Err(Error::damaged(
                "bat",
                Some(self.bat_offset + self.geo.payload_index(block) * 8),
                format!(
                    "{}: BAT entry for block {} points to 0x{:x}, past the end of the file (0x{:x} bytes)",
                    self.file.name,
                    block,
                    off,
                    self.file.len()
                ),
            ));
        }
        Ok(off)
    }

    /// The part of a chunk's sector bitmap that covers payload block `block` (bit n = sector
    /// n of the block, least significant bit first), or None when the bitmap is not present.
    pub fn block_bitmap(&self, block: u64) -> Result<Option<Arc<Vec<u8>>>> {
        if let Some(b) = self.bitmaps.lock().unwrap().get(&block) {
            return Ok(Some(b.clone()));
        }
        let chunk = block / self.geo.chunk_ratio;
        let e = self.bitmap_entry(chunk);
        if e.state() != bat::SB_PRESENT {
            return Ok(None);
        }
        let per_block = self.geo.sectors_per_block() / 8;
        let start = e.offset() + (block % self.geo.chunk_ratio) * per_block;
        if !within(e.offset(), MIB, self.file.len()) {
            return Err(Error::damaged(
                "bat",
                Some(self.bat_offset + self.geo.bitmap_index(chunk) * 8),
                format!(
                    "{}: sector bitmap of chunk {} at 0x{:x} lies past the end of the file (0x{:x} bytes)",
                    self.file.name,
                    chunk,
                    e.offset(),
                    self.file.len()
                ),
            ));
        }
        let mut buf = vec![0u8; per_block as usize];
        self.file.read_exact_at(start, &mut buf, "sector bitmap")?;
        // with the bits lazy writes staged and not yet committed
        self.overlay_pending(start, &mut buf);
        let b = Arc::new(buf);
        let mut cache = self.bitmaps.lock().unwrap();
        if cache.len() >= BITMAP_CACHE {
            cache.clear();
        }
        cache.insert(block, b.clone());
        Ok(Some(b))
    }

    /// What is missing from this layer: zero for a disk without a parent, the parent's for
    /// a differencing disk.
    fn missing(&self) -> LayerKind {
        if self.is_differencing() {
            LayerKind::Unallocated { host: None }
        } else {
            LayerKind::Zero { host: None }
        }
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        let bs = self.block_size();
        let block = virt / bs;
        let in_block = virt % bs;
        let n = (bs - in_block).min(max);
        let e = self.payload(block);
        let kind_of = |e: BatEntry| match e.state() {
            bat::PAYLOAD_NOT_PRESENT | bat::PAYLOAD_UNDEFINED | bat::PAYLOAD_UNMAPPED => Some(self.missing()),
            bat::PAYLOAD_ZERO => Some(LayerKind::Zero { host: None }),
            _ => None,
        };
        match e.state() {
            bat::PAYLOAD_FULLY_PRESENT => {
                let host = self.block_host(block)? + in_block;
                Ok(LayerExtent { len: n, kind: LayerKind::Data { file: HostFileId::Image, host, passthrough: false } })
            }
            bat::PAYLOAD_PARTIALLY_PRESENT => {
                let host = self.block_host(block)? + in_block;
                let data = LayerKind::Data { file: HostFileId::Image, host, passthrough: false };
                if !self.is_differencing() {
                    return Ok(LayerExtent { len: n, kind: data });
                }
                let lss = self.meta.logical_sector_size as u64;
                let Some(bm) = self.block_bitmap(block)? else {
                    return Err(Error::damaged(
                        "bat",
                        Some(self.bat_offset + self.geo.bitmap_index(block / self.geo.chunk_ratio) * 8),
                        format!("{}: block {} is partially present but its chunk has no sector bitmap", self.file.name, block),
                    ));
                };
                let first = in_block / lss;
                let set = lsb_bit(&bm, first);
                let mut end = (first + 1) * lss;
                while end < in_block + n && lsb_bit(&bm, end / lss) == set {
                    end += lss;
                }
                let len = (end - in_block).min(n);
                let kind = if set { data } else { LayerKind::Unallocated { host: None } };
                Ok(LayerExtent { len, kind })
            }
            s => {
                let Some(kind) = kind_of(e) else {
                    return Err(Error::damaged(
                        "bat",
                        Some(self.bat_offset + self.geo.payload_index(block) * 8),
                        format!("{}: BAT entry for block {} has the invalid state {}", self.file.name, block, s),
                    ));
                };
                // extend over following blocks that say the same
                let mut len = n;
                let mut b = block + 1;
                while len < max && b < self.geo.data_blocks && kind_of(self.payload(b)) == Some(kind) {
                    len = (len + bs).min(max);
                    b += 1;
                }
                Ok(LayerExtent { len, kind })
            }
        }
    }

    pub fn parent_ref(&self) -> Option<BackingRef> {
        if !self.is_differencing() {
            return None;
        }
        let loc = self.meta.parent_locator.as_ref()?;
        let mut candidates: Vec<String> = Vec::new();
        for key in ["relative_path", "volume_path", "absolute_win32_path"] {
            if let Some(v) = loc.get(key) {
                let mut p = v.replace('\\', "/");
                if key == "relative_path" {
                    while let Some(rest) = p.strip_prefix("./") {
                        p = rest.to_string();
                    }
                }
                if !p.is_empty() && !candidates.contains(&p) {
                    candidates.push(p);
                }
            }
        }
        // Windows paths cannot be opened here; try their file names beside the child
        let basenames: Vec<String> =
            candidates.iter().filter_map(|p| p.rsplit('/').next().map(str::to_string)).filter(|b| !b.is_empty()).collect();
        for b in basenames {
            if !candidates.contains(&b) {
                candidates.push(b);
            }
        }
        let name = loc
            .get("relative_path")
            .or_else(|| loc.get("absolute_win32_path"))
            .or_else(|| loc.get("volume_path"))
            .cloned()
            .unwrap_or_default();
        Some(BackingRef { name, candidates, format: Some(self.format) })
    }

    /// A differencing disk names its parent's DataWriteGuid in `parent_linkage`.
    pub fn check_parent(&self, parent: &Vhdx) -> Option<String> {
        let want = self.meta.parent_locator.as_ref()?.get("parent_linkage")?.trim_matches(['{', '}']).to_ascii_uppercase();
        let have = guid_str(&parent.header().data_write_guid);
        let alt = self.meta.parent_locator.as_ref()?.get("parent_linkage2").map(|s| s.trim_matches(['{', '}']).to_ascii_uppercase());
        if want != have && alt.as_deref() != Some(have.as_str()) {
            return Some(format!(
                "parent linkage mismatch: the locator expects data write GUID {} but {} has {}",
                want, parent.file.name, have
            ));
        }
        None
    }

    pub fn regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        let mut r = Region::new(0, 64 * KIB, "file-identifier", "file type identifier");
        r.fields = self.ident.fields();
        out.push(r);
        for (i, h) in self.headers.iter().enumerate() {
            let mut r = Region::new(HEADER_OFFSETS[i], HEADER_SIZE, "header", format!("header {}", i + 1));
            if let Some(h) = h {
                r.fields = h.fields();
            }
            out.push(r);
        }
        for (i, off) in REGION_TABLE_OFFSETS.iter().enumerate() {
            let mut r = Region::new(*off, REGION_TABLE_SIZE, "region-table", format!("region table {}", i + 1));
            if i == self.region_copy {
                r.fields = self.regions.fields();
            }
            out.push(r);
        }
        let h = self.header();
        if h.log_length > 0 && within(h.log_offset, h.log_length as u64, self.file.len()) {
            out.push(Region::new(h.log_offset, h.log_length as u64, "log", "log"));
        }
        let mut m = Region::new(self.meta.offset, self.meta.length, "metadata", "metadata region");
        m.fields = self.meta.fields();
        out.push(m);
        out.push(Region::new(self.bat_offset, self.bat_region_len, "bat", "block allocation table"));
        let bs = self.block_size();
        let len = self.file.len();
        for block in 0..self.geo.data_blocks {
            let e = self.payload(block);
            if matches!(e.state(), bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT) && e.offset() < len {
                let mut d = Region::new(e.offset(), bs.min(len - e.offset()), "data", format!("block {} data", block));
                d.virt = Some(block * bs);
                out.push(d);
            }
        }
        if self.is_differencing() {
            for chunk in 0..self.geo.bitmap_entries() {
                let e = self.bitmap_entry(chunk);
                if e.state() == bat::SB_PRESENT && e.offset() < len {
                    out.push(Region::new(e.offset(), MIB.min(len - e.offset()), "bitmap", format!("chunk {} sector bitmap", chunk)));
                }
            }
        }
        out.sort_by_key(|r| r.start);
        out
    }
}

/// Bit `n` of a bitmap, least significant bit of byte 0 first.
pub fn lsb_bit(bm: &[u8], n: u64) -> bool {
    bm.get((n / 8) as usize).is_some_and(|b| b & (1 << (n % 8)) != 0)
}

#[cfg(test)]
mod tests;

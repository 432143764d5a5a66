//! The btrfs metadata: the superblock, the chunk map (logical → volume offset, bootstrapped
//! from the superblock's sys_chunk_array and completed from the chunk tree) and B-tree
//! search over checked tree blocks.
//!
//! Every number from the volume is bounded: node size 4-64 KiB, tree depth ≤ 8, item counts
//! by the node size, item data inside its node, chunk stripes inside the volume, and the
//! number of tree blocks one search reads by the volume's size over the node size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::super::VolumeReader;
use crate::guest::{Error, Result};
use crate::image::bytes::{le16, le32, le64};

pub const SUPER_OFFSET: u64 = 0x10000;
pub const SUPER_MIRROR: u64 = 0x400_0000;
pub const SUPER_SIZE: usize = 4096;
pub const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Tree block header size.
pub const HEADER: usize = 0x65;
pub const MAX_LEVEL: u8 = 7;

pub const INODE_ITEM: u8 = 1;
pub const DIR_ITEM: u8 = 84;
pub const DIR_INDEX: u8 = 96;
pub const EXTENT_DATA: u8 = 108;
pub const ROOT_ITEM: u8 = 132;
pub const CHUNK_ITEM: u8 = 228;

pub const FS_TREE_OBJECTID: u64 = 5;
pub const FIRST_FREE_OBJECTID: u64 = 256;

/// Block group profile bits that stripe data over devices (one device cannot use them with
/// more than one stripe).
const STRIPED: u64 = (1 << 3) | (1 << 6) | (1 << 7) | (1 << 8); // RAID0, RAID10, RAID5, RAID6

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Key {
        Key { objectid, ty, offset }
    }
    pub fn parse(b: &[u8], o: usize) -> Key {
        Key { objectid: le64(b, o), ty: b[o + 8], offset: le64(b, o + 9) }
    }
}

/// The superblock's numbers, checked.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// Volume offset it was read from.
    pub at: u64,
    pub raw: Vec<u8>,
    pub root: u64,
    pub chunk_root: u64,
    pub sectorsize: u32,
    pub nodesize: u32,
    pub sys_chunk_array_size: u32,
    pub csum_type: u16,
    pub root_level: u8,
    pub chunk_root_level: u8,
    pub devid: u64,
    pub label: Option<String>,
    pub metadata_uuid: [u8; 16],
}

pub fn uuid(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{:02x}", x)).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// crc32c as btrfs stores it (the standard Castagnoli CRC, little-endian in the first 4 bytes).
pub fn csum_ok(b: &[u8]) -> bool {
    crc32c::crc32c(&b[0x20..]) == le32(b, 0)
}

impl Superblock {
    /// Parse a 4 KiB superblock read at volume offset `at` of a volume of `vol_len` bytes.
    pub fn parse(b: &[u8], at: u64, vol_len: u64) -> std::result::Result<Superblock, String> {
        if b.len() < SUPER_SIZE {
            return Err("the volume is too small to hold a superblock".into());
        }
        if &b[0x40..0x48] != MAGIC {
            return Err("no _BHRfS_M magic".into());
        }
        let csum_type = le16(b, 0xc4);
        if csum_type == 0 && !csum_ok(&b[..SUPER_SIZE]) {
            return Err(format!("superblock checksum mismatch (crc32c 0x{:08x}, stored 0x{:08x})", crc32c::crc32c(&b[0x20..SUPER_SIZE]), le32(b, 0)));
        }
        if le64(b, 0x30) != at {
            return Err(format!("the superblock says it is at 0x{:x}, not 0x{:x}", le64(b, 0x30), at));
        }
        let sectorsize = le32(b, 0x90);
        let nodesize = le32(b, 0x94);
        if !sectorsize.is_power_of_two() || !(512..=65536).contains(&sectorsize) {
            return Err(format!("sector size {} is not a power of two from 512 to 65536", sectorsize));
        }
        if !nodesize.is_power_of_two() || !(4096..=65536).contains(&nodesize) {
            return Err(format!("node size {} is not a power of two from 4096 to 65536", nodesize));
        }
        let sys = le32(b, 0xa0);
        if sys > 2048 {
            return Err(format!("sys_chunk_array size {} is larger than its 2048 bytes", sys));
        }
        let root_level = b[0xc6];
        let chunk_root_level = b[0xc7];
        if root_level > MAX_LEVEL || chunk_root_level > MAX_LEVEL {
            return Err(format!("tree levels {}/{} are deeper than btrfs allows", root_level, chunk_root_level));
        }
        let num_devices = le64(b, 0x88);
        if num_devices != 1 {
            return Err(format!("{} devices: vdiskview reads single-device btrfs only", num_devices));
        }
        let _ = vol_len;
        let label_raw = &b[0x12b..0x22b];
        let end = label_raw.iter().position(|&c| c == 0).unwrap_or(label_raw.len());
        let label = String::from_utf8_lossy(&label_raw[..end]).to_string();
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[0x20..0x30]);
        let incompat = le64(b, 0xbc);
        let mut metadata_uuid = fsid;
        if incompat & (1 << 10) != 0 {
            metadata_uuid.copy_from_slice(&b[0x23b..0x24b]);
        }
        Ok(Superblock {
            at,
            raw: b[..SUPER_SIZE].to_vec(),
            root: le64(b, 0x50),
            chunk_root: le64(b, 0x58),
            sectorsize,
            nodesize,
            sys_chunk_array_size: sys,
            csum_type,
            root_level,
            chunk_root_level,
            devid: le64(b, 0xc9),
            label: (!label.is_empty()).then_some(label),
            metadata_uuid,
        })
    }
}

/// One chunk: `len` logical bytes from `logical` at volume offset `physical`.
#[derive(Clone, Copy, Debug)]
pub struct Chunk {
    pub logical: u64,
    pub len: u64,
    pub physical: u64,
    /// The second copy on this device (DUP metadata), if any.
    pub mirror: Option<u64>,
}

/// Parse a chunk item at `b[o..]` for the chunk at `logical`; the stripe on our device.
/// Returns the chunk and the item's size.
fn parse_chunk(b: &[u8], o: usize, logical: u64, devid: u64, vol_len: u64) -> std::result::Result<(Chunk, usize), String> {
    if o + 48 > b.len() {
        return Err("a chunk item runs past its bytes".into());
    }
    let len = le64(b, o);
    let ty = le64(b, o + 24);
    let num_stripes = le16(b, o + 44) as usize;
    let size = 48 + 32 * num_stripes;
    if num_stripes == 0 || o + size > b.len() {
        return Err(format!("the chunk at logical 0x{:x} has {} stripes in {} bytes", logical, num_stripes, b.len() - o));
    }
    if len == 0 || len > vol_len || logical.checked_add(len).is_none() {
        return Err(format!("the chunk at logical 0x{:x} has length 0x{:x}, more than the volume", logical, len));
    }
    if ty & STRIPED != 0 && num_stripes > 1 {
        return Err(format!("the chunk at logical 0x{:x} is striped (RAID0/10/5/6): vdiskview reads single-device btrfs only", logical));
    }
    let mut physical = None;
    let mut mirror = None;
    for i in 0..num_stripes {
        let s = o + 48 + 32 * i;
        if le64(b, s) == devid {
            let p = le64(b, s + 8);
            if physical.is_none() {
                physical = Some(p);
            } else if mirror.is_none() && p.checked_add(len).is_some_and(|e| e <= vol_len) {
                mirror = Some(p);
            }
        }
    }
    let Some(physical) = physical else {
        return Err(format!("the chunk at logical 0x{:x} has no stripe on device {}", logical, devid));
    };
    if physical.checked_add(len).is_none_or(|e| e > vol_len) {
        return Err(format!("the chunk at logical 0x{:x} (0x{:x} bytes at 0x{:x}) lies past the end of the volume", logical, len, physical));
    }
    Ok((Chunk { logical, len, physical, mirror }, size))
}

/// A tree block read and checked.
pub struct Node {
    /// Volume offset.
    pub physical: u64,
    pub level: u8,
    pub nritems: usize,
    pub b: Vec<u8>,
}

impl Node {
    pub fn key(&self, i: usize) -> Key {
        let o = HEADER + if self.level == 0 { 25 * i } else { 33 * i };
        Key::parse(&self.b, o)
    }
    /// Leaf: the data of item `i` and its offset in the node.
    pub fn item(&self, i: usize) -> (&[u8], usize) {
        let o = HEADER + 25 * i;
        let off = HEADER + le32(&self.b, o + 17) as usize;
        let size = le32(&self.b, o + 21) as usize;
        (&self.b[off..off + size], off)
    }
    /// Internal node: the child pointer `i`.
    pub fn child(&self, i: usize) -> u64 {
        le64(&self.b, HEADER + 33 * i + 17)
    }
}

/// An item found by a search: its key, data, and the volume offset of its data.
#[derive(Clone, Debug)]
pub struct Item {
    pub key: Key,
    pub data: Vec<u8>,
    pub physical: u64,
    /// The leaf holding it: logical address and volume offset.
    pub block_logical: u64,
    pub block: u64,
}

/// The metadata reader: the superblock, the chunk map and a small cache of tree blocks.
pub struct Meta {
    pub vol: VolumeReader,
    pub sb: Superblock,
    pub chunks: Vec<Chunk>,
    cache: RefCell<HashMap<u64, Rc<Node>>>,
    /// Tree blocks read from their second copy because the first was damaged.
    pub warnings: RefCell<Vec<String>>,
}

const CACHE_MAX: usize = 512;

impl Meta {
    pub fn open(vol: VolumeReader) -> std::result::Result<(Meta, Vec<String>), String> {
        let mut warnings = Vec::new();
        let mut b = vec![0u8; SUPER_SIZE];
        vol.read_exact(SUPER_OFFSET, &mut b).map_err(|e| e.to_string())?;
        let sb = match Superblock::parse(&b, SUPER_OFFSET, vol.len) {
            Ok(sb) => sb,
            Err(why) => {
                // the first mirror, at 64 MiB
                let mut m = vec![0u8; SUPER_SIZE];
                let mirror = if vol.len >= SUPER_MIRROR + SUPER_SIZE as u64 && vol.read_exact(SUPER_MIRROR, &mut m).is_ok() {
                    Superblock::parse(&m, SUPER_MIRROR, vol.len).ok()
                } else {
                    None
                };
                match mirror {
                    Some(sb) => {
                        warnings.push(format!("primary btrfs superblock is damaged ({}); using the copy at 64 MiB", why));
                        sb
                    }
                    None => return Err(why),
                }
            }
        };
        let mut meta = Meta { vol, sb, chunks: Vec::new(), cache: RefCell::new(HashMap::new()), warnings: RefCell::new(Vec::new()) };
        // bootstrap: the system chunks in the superblock
        let arr = meta.sb.raw[0x32b..0x32b + meta.sb.sys_chunk_array_size as usize].to_vec();
        let mut o = 0;
        while o < arr.len() {
            if o + 17 > arr.len() {
                return Err("sys_chunk_array ends inside a key".into());
            }
            let k = Key::parse(&arr, o);
            if k.ty != CHUNK_ITEM {
                return Err(format!("sys_chunk_array holds an item of type {}, not a chunk", k.ty));
            }
            let (c, size) = parse_chunk(&arr, o + 17, k.offset, meta.sb.devid, meta.vol.len)?;
            meta.chunks.push(c);
            o += 17 + size;
        }
        if meta.chunks.is_empty() {
            return Err("sys_chunk_array is empty".into());
        }
        // the chunk tree
        let items = meta
            .search(meta.sb.chunk_root, meta.sb.chunk_root_level, Key::new(256, CHUNK_ITEM, 0), Key::new(256, CHUNK_ITEM, u64::MAX))
            .map_err(|e| format!("chunk tree: {}", e))?;
        let mut chunks = Vec::new();
        for it in &items {
            let (c, _) = parse_chunk(&it.data, 0, it.key.offset, meta.sb.devid, meta.vol.len)?;
            chunks.push(c);
        }
        if !chunks.is_empty() {
            // keep the bootstrap chunks the tree lacks (it should not)
            for c in &meta.chunks {
                if !chunks.iter().any(|d| d.logical == c.logical) {
                    chunks.push(*c);
                }
            }
            meta.chunks = chunks;
        }
        meta.chunks.sort_by_key(|c| c.logical);
        meta.cache.borrow_mut().clear();
        Ok((meta, warnings))
    }

    /// The volume offset of logical `l` and the bytes left in its chunk.
    pub fn map(&self, l: u64) -> Result<(u64, u64)> {
        let i = self.chunks.partition_point(|c| c.logical <= l);
        if i > 0 {
            let c = &self.chunks[i - 1];
            if l - c.logical < c.len {
                return Ok((c.physical + (l - c.logical), c.len - (l - c.logical)));
            }
        }
        Err(Error::Damaged(format!("btrfs logical address 0x{:x} is in no chunk", l)))
    }

    /// Map `[l, l+len)` to volume ranges (split where chunks end).
    pub fn map_range(&self, mut l: u64, mut len: u64) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        while len > 0 {
            let (p, left) = self.map(l)?;
            let n = left.min(len);
            out.push((p, n));
            l += n;
            len -= n;
        }
        Ok(out)
    }

    /// The tree block at logical `l`, expected at `level`, checked.
    pub fn node(&self, l: u64, level: u8) -> Result<Rc<Node>> {
        if let Some(n) = self.cache.borrow().get(&l) {
            if n.level == level {
                return Ok(n.clone());
            }
        }
        let ns = self.sb.nodesize as u64;
        let (physical, left) = self.map(l)?;
        if left < ns {
            return Err(Error::Damaged(format!("btrfs tree block at 0x{:x} crosses the end of its chunk", l)));
        }
        let first = self.node_at(l, level, physical);
        let n = match first {
            Ok(n) => n,
            Err(e) => {
                // DUP metadata: the same block in the chunk's second copy
                let c = self.chunks[self.chunks.partition_point(|c| c.logical <= l) - 1];
                let Some(m) = c.mirror else { return Err(e) };
                match self.node_at(l, level, m + (l - c.logical)) {
                    Ok(n) => {
                        self.warnings.borrow_mut().push(format!("{}; read its second copy", e));
                        n
                    }
                    Err(_) => return Err(e),
                }
            }
        };
        let n = Rc::new(n);
        let mut c = self.cache.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(l, n.clone());
        Ok(n)
    }

    /// The tree block at logical `l` read from volume offset `physical`, checked.
    fn node_at(&self, l: u64, level: u8, physical: u64) -> Result<Node> {
        let ns = self.sb.nodesize as u64;
        let b = self.vol.read_vec(physical, ns)?;
        let bad = |why: String| Error::Damaged(format!("damaged btrfs tree block at logical 0x{:x} (volume offset 0x{:x}): {}", l, physical, why));
        if self.sb.csum_type == 0 && !csum_ok(&b) {
            return Err(bad("checksum mismatch".into()));
        }
        if le64(&b, 0x30) != l {
            return Err(bad(format!("it says it is at 0x{:x}", le64(&b, 0x30))));
        }
        if b[0x20..0x30] != self.sb.metadata_uuid {
            return Err(bad("it belongs to another filesystem (fsid)".into()));
        }
        let nlevel = b[0x64];
        if nlevel != level {
            return Err(bad(format!("level {} where {} was expected", nlevel, level)));
        }
        let nritems = le32(&b, 0x60) as usize;
        let per = if level == 0 { 25 } else { 33 };
        if nritems > (b.len() - HEADER) / per {
            return Err(bad(format!("{} items do not fit the node", nritems)));
        }
        if level > 0 && nritems == 0 {
            return Err(bad("an internal node without children".into()));
        }
        if level == 0 {
            for i in 0..nritems {
                let o = HEADER + 25 * i;
                let off = le32(&b, o + 17) as usize;
                let size = le32(&b, o + 21) as usize;
                if HEADER.checked_add(off).and_then(|s| s.checked_add(size)).is_none_or(|e| e > b.len()) || HEADER + off < HEADER + 25 * nritems {
                    return Err(bad(format!("item {} (0x{:x} bytes at 0x{:x}) lies outside the node's data", i, size, off)));
                }
            }
        }
        Ok(Node { physical, level, nritems, b })
    }

    /// All items with keys in `[min, max]` of the tree rooted at `root` (level `level`).
    pub fn search(&self, root: u64, level: u8, min: Key, max: Key) -> Result<Vec<Item>> {
        if level > MAX_LEVEL {
            return Err(Error::Damaged(format!("btrfs tree at 0x{:x} is {} levels deep", root, level)));
        }
        let mut out = Vec::new();
        let mut budget = (self.vol.len / self.sb.nodesize as u64).max(1);
        self.search_in(root, level, min, max, &mut out, &mut budget)?;
        Ok(out)
    }

    fn search_in(&self, l: u64, level: u8, min: Key, max: Key, out: &mut Vec<Item>, budget: &mut u64) -> Result<()> {
        if *budget == 0 {
            return Err(Error::Damaged("btrfs tree search visits more tree blocks than the volume holds (a loop)".into()));
        }
        *budget -= 1;
        let n = self.node(l, level)?;
        if level == 0 {
            for i in 0..n.nritems {
                let k = n.key(i);
                if k < min {
                    continue;
                }
                if k > max {
                    break;
                }
                let (d, off) = n.item(i);
                out.push(Item { key: k, data: d.to_vec(), physical: n.physical + off as u64, block_logical: l, block: n.physical });
            }
            return Ok(());
        }
        for i in 0..n.nritems {
            // child i covers [key(i), key(i+1))
            if i + 1 < n.nritems && n.key(i + 1) <= min {
                continue;
            }
            if n.key(i) > max {
                break;
            }
            self.search_in(n.child(i), level - 1, min, max, out, budget)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_rejects_nonsense() {
        let mut b = vec![0u8; SUPER_SIZE];
        assert!(Superblock::parse(&b, SUPER_OFFSET, 1 << 30).unwrap_err().contains("magic"));
        b[0x40..0x48].copy_from_slice(MAGIC);
        assert!(Superblock::parse(&b, SUPER_OFFSET, 1 << 30).unwrap_err().contains("checksum"));
    }

    #[test]
    fn chunk_bounds() {
        let mut b = vec![0u8; 80];
        b[0..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
        b[48..56].copy_from_slice(&1u64.to_le_bytes());
        b[56..64].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(parse_chunk(&b, 0, 0, 1, 4 << 20).is_ok());
        assert!(parse_chunk(&b, 0, 0, 1, 1 << 20).unwrap_err().contains("past the end"));
        assert!(parse_chunk(&b, 0, 0, 2, 4 << 20).unwrap_err().contains("no stripe"));
    }
}

//! ext2/3/4 inside the guest disk: listing and reading through the `ext4-view` crate, and a
//! small, bounded reader of our own for what ext4-view does not expose: a file's inode
//! number and its block map / extent tree, so a file's bytes can be located on the guest
//! disk and, through the image model, in the host files.
//!
//! ext4-view owns its reader (`Box<dyn Ext4Read>`), so [`ExtFs`] holds the image as an
//! `Rc<Image>`. The journal is not replayed by the locator (ext4-view only replays it for
//! filesystems that need recovery).

use crate::image::bytes::{le16, le32};
use std::io::Write;
use std::rc::Rc;

use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};

use super::{absolute, base_name, copy_runs, push_run, EntryInfo, FileMap, FileRun, Filesystem, FsDriver, VolumeReader};
use crate::guest::{read_in, Error, FsKind, Result, Volume};
use crate::image::region::{hex_bytes, Field, Region};
use crate::image::Image;

/// ext2/3/4 in the registry of filesystems.
pub static DRIVER: FsDriver = FsDriver {
    name: "ext2/3/4",
    kinds: &[FsKind::Ext2, FsKind::Ext3, FsKind::Ext4],
    open: |image, volume| Ok(Box::new(ExtFs::open(image, volume)?)),
    overlay,
};

/// Deepest extent tree we follow (ext4 allows 5 levels).
const MAX_EXTENT_DEPTH: u16 = 5;

/// Guest bytes `[start, start+len)` as a device for ext4-view.
pub struct GuestRange {
    pub image: Rc<Image>,
    pub start: u64,
    pub len: u64,
}

impl Ext4Read for GuestRange {
    fn read(&mut self, start_byte: u64, dst: &mut [u8]) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let n = read_in(&self.image, self.start, self.len, start_byte, dst).map_err(|e| e.to_string())?;
        if n != dst.len() {
            return Err(format!(
                "read of {} bytes at 0x{:x} goes past the end of the volume (0x{:x} bytes)",
                dst.len(),
                start_byte,
                self.len
            )
            .into());
        }
        Ok(())
    }
}

/// The superblock fields the locator needs, checked against the volume size.
#[derive(Clone, Debug)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u64,
    pub inodes_count: u64,
    pub inode_size: u64,
    pub desc_size: u64,
    pub groups: u64,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub label: Option<String>,
}


impl Superblock {
    /// Parse the 1024-byte superblock of a filesystem on a volume of `vol_len` bytes; the
    /// error text says what is damaged. Warnings for damage that does not stop reading.
    pub fn parse(b: &[u8], vol_len: u64, warnings: &mut Vec<String>) -> std::result::Result<Superblock, String> {
        if b.len() < 1024 {
            return Err("the volume is too small to hold an ext superblock".into());
        }
        if le16(b, 0x38) != 0xef53 {
            return Err("no ext magic number (0xEF53) in the superblock".into());
        }
        let log = le32(b, 0x18);
        if log > 6 {
            return Err(format!("block size 2^(10+{}) is out of range", log));
        }
        let block_size = 1024u64 << log;
        let incompat = le32(b, 0x60);
        let is64 = incompat & 0x80 != 0;
        let blocks_count = le32(b, 0x4) as u64 | if is64 { (le32(b, 0x150) as u64) << 32 } else { 0 };
        // ext4-view reads the high word whatever the features say, and sizes its table of
        // group descriptors by it: refuse what it would misread
        if !is64 && le32(b, 0x150) != 0 {
            return Err(format!("the block count's high word (0x{:x}) is set without the 64bit feature", le32(b, 0x150)));
        }
        let first_data_block = le32(b, 0x14) as u64;
        let blocks_per_group = le32(b, 0x20) as u64;
        let inodes_per_group = le32(b, 0x28) as u64;
        let inodes_count = le32(b, 0x0) as u64;
        if blocks_per_group == 0 || inodes_per_group == 0 {
            return Err("zero blocks or inodes per group".into());
        }
        if first_data_block >= blocks_count {
            return Err(format!("first data block {} is not below the block count {}", first_data_block, blocks_count));
        }
        let inode_size = if le32(b, 0x4c) == 0 { 128 } else { le16(b, 0x58) as u64 };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(format!("inode size {} is not a power of two between 128 and the block size", inode_size));
        }
        let desc_size = if is64 { le16(b, 0xfe) as u64 } else { 32 };
        if !(32..=1024).contains(&desc_size) || (is64 && desc_size < 64) {
            return Err(format!("group descriptor size {} is out of range", desc_size));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        // the group descriptor table follows the superblock's block; it must fit the volume
        let gdt_end = groups
            .checked_mul(desc_size)
            .and_then(|t| t.checked_add((first_data_block + 1) * block_size))
            .unwrap_or(u64::MAX);
        if gdt_end > vol_len {
            return Err(format!(
                "{} block groups (from {} blocks of {} bytes) do not fit the volume of {} bytes",
                groups, blocks_count, block_size, vol_len
            ));
        }
        if groups.checked_mul(inodes_per_group).is_none_or(|n| inodes_count > n) {
            return Err(format!("{} inodes do not fit {} groups of {}", inodes_count, groups, inodes_per_group));
        }
        if blocks_count.checked_mul(block_size).is_none() {
            return Err(format!("{} blocks of {} bytes overflow", blocks_count, block_size));
        }
        if blocks_count * block_size > vol_len {
            warnings.push(format!(
                "the filesystem ({} blocks of {} bytes) is larger than its volume ({} bytes)",
                blocks_count, block_size, vol_len
            ));
        }
        let end = b[0x78..0x88].iter().position(|&c| c == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&b[0x78..0x78 + end]).to_string();
        Ok(Superblock {
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            inode_size,
            desc_size,
            groups,
            feature_compat: le32(b, 0x5c),
            feature_incompat: incompat,
            feature_ro_compat: le32(b, 0x64),
            label: (!label.is_empty()).then_some(label),
        })
    }
}

/// An ext2/3/4 filesystem on a volume of the guest disk.
pub struct ExtFs {
    pub image: Rc<Image>,
    pub volume: Volume,
    pub sb: Superblock,
    pub fs: Ext4,
    pub warnings: Vec<String>,
}

fn fs_err(e: Ext4Error, path: &str) -> Error {
    match e {
        Ext4Error::NotFound => Error::NotFound(path.to_string()),
        Ext4Error::NotADirectory => Error::NotADirectory(path.to_string()),
        Ext4Error::IsADirectory => Error::IsADirectory(path.to_string()),
        Ext4Error::IsASpecialFile => Error::Invalid(format!("{}: not a regular file", path)),
        Ext4Error::NotAbsolute | Ext4Error::MalformedPath => Error::Invalid(format!("{}: not a valid path", path)),
        Ext4Error::PathTooLong => Error::Invalid(format!("{}: File name too long", path)),
        Ext4Error::TooManySymlinks => Error::Invalid(format!("{}: Too many levels of symbolic links", path)),
        Ext4Error::Encrypted => Error::Unsupported(format!("{}: the file is encrypted", path)),
        Ext4Error::Incompatible(i) => Error::Unsupported(format!("{}: unsupported ext filesystem: {}", path, i)),
        e => Error::Damaged(format!("{}: damaged filesystem: {}", path, e)),
    }
}

fn type_char(m: &Metadata) -> char {
    let t = m.file_type();
    if t.is_dir() {
        'd'
    } else if t.is_symlink() {
        'l'
    } else if t.is_char_dev() {
        'c'
    } else if t.is_block_dev() {
        'b'
    } else if t.is_fifo() {
        'p'
    } else if t.is_socket() {
        's'
    } else {
        '-'
    }
}

impl ExtFs {
    /// Open the ext filesystem on `volume`. Errors: unsupported filesystem (another kind, or
    /// ext features ext4-view cannot read), damaged superblock or group descriptors.
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<ExtFs> {
        let what = volume.describe();
        match &volume.fs {
            None => return Err(Error::NoFilesystem(format!("on {}", what))),
            Some(f) if !f.kind.is_ext() => {
                return Err(Error::Unsupported(format!(
                    "unsupported filesystem {} on {}: vdiskview reads ext2, ext3 and ext4",
                    f.kind.name(),
                    what
                )))
            }
            _ => {}
        }
        let mut b = vec![0u8; 1024];
        let n = read_in(&image, volume.start, volume.len, 1024, &mut b)?;
        let mut warnings = vec![];
        let sb = Superblock::parse(&b[..n], volume.len, &mut warnings)
            .map_err(|why| Error::Damaged(format!("damaged ext superblock on {}: {}", what, why)))?;
        let reader = GuestRange { image: image.clone(), start: volume.start, len: volume.len };
        let fs = Ext4::load(Box::new(reader)).map_err(|e| match e {
            Ext4Error::Incompatible(i) => {
                Error::Unsupported(format!("unsupported ext filesystem on {}: {}", what, i))
            }
            e => Error::Damaged(format!("damaged ext filesystem on {}: {}", what, e)),
        })?;
        Ok(ExtFs { image, volume: volume.clone(), sb, fs, warnings })
    }

    pub fn kind(&self) -> FsKind {
        self.volume.fs.as_ref().map(|f| f.kind).unwrap_or(FsKind::Ext2)
    }

    fn entry(&self, name: String, path: &str, m: &Metadata) -> EntryInfo {
        let tc = type_char(m);
        let link_target = if tc == 'l' {
            self.fs.read_link(path).ok().map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
        } else {
            None
        };
        EntryInfo {
            name,
            type_char: tc,
            mode: m.mode(),
            size: m.len(),
            mtime: m.modified().seconds(),
            uid: m.uid(),
            gid: m.gid(),
            link_target,
            streams: Vec::new(),
            attributes: String::new(),
        }
    }

    /// What `path` itself is (a symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<EntryInfo> {
        let path = absolute(path);
        let m = self.fs.symlink_metadata(path.as_str()).map_err(|e| fs_err(e, &path))?;
        Ok(self.entry(base_name(&path), &path, &m))
    }

    /// The entries of directory `path` (without `.` and `..`), sorted by name.
    pub fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let path = absolute(path);
        let rd = self.fs.read_dir(path.as_str()).map_err(|e| fs_err(e, &path))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| fs_err(e, &path))?;
            let name = ent.file_name();
            let name_bytes: &[u8] = name.as_ref();
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            let epath = ent.path();
            let epath = String::from_utf8_lossy(epath.as_ref()).into_owned();
            let m = ent.metadata().map_err(|e| fs_err(e, &epath))?;
            out.push(self.entry(name, &epath, &m));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Copy the file's bytes to `out`, a block at a time; returns the byte count.
    pub fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let path = absolute(path);
        let mut f = self.fs.open(path.as_str()).map_err(|e| fs_err(e, &path))?;
        let size = f.metadata().len();
        if let Ok((map, indirect_hole)) = self.file_map_full(&path) {
            if indirect_hole && map.size == size {
                return copy_runs(&VolumeReader::new(self.image.clone(), &self.volume), &map, out);
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while total < size {
            // fill the buffer from several block-sized reads, then write it once
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read_bytes(&mut buf[filled..]).map_err(|e| fs_err(e, &path))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            out.write_all(&buf[..filled]).map_err(Error::Write)?;
            total += filled as u64;
        }
        Ok(total)
    }

    /// The file's bytes in memory (for small files; `copy_to` streams).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.copy_to(path, &mut v)?;
        Ok(v)
    }

    // ---- the locator: our own small, bounded reader of inodes and block maps ----

    fn read_vol(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let n = read_in(&self.image, self.volume.start, self.volume.len, off, buf)?;
        if n != buf.len() {
            return Err(Error::Damaged(format!(
                "filesystem structure at 0x{:x} (0x{:x} bytes) is past the end of {}",
                off,
                buf.len(),
                self.volume.describe()
            )));
        }
        Ok(())
    }

    fn read_block(&self, block: u64, what: &str) -> Result<Vec<u8>> {
        if block >= self.sb.blocks_count || block == 0 {
            return Err(Error::Damaged(format!(
                "{} points at block {}, outside the filesystem (blocks 1-{})",
                what,
                block,
                self.sb.blocks_count.saturating_sub(1)
            )));
        }
        let mut b = vec![0u8; self.sb.block_size as usize];
        self.read_vol(block * self.sb.block_size, &mut b)?;
        Ok(b)
    }

    /// Where inode `ino` is in the volume, and its first 128 bytes.
    fn read_inode(&self, ino: u32) -> Result<(u64, [u8; 128])> {
        let sb = &self.sb;
        let ino64 = ino as u64;
        if ino == 0 || ino64 > sb.groups * sb.inodes_per_group {
            return Err(Error::Damaged(format!("inode number {} is out of range", ino)));
        }
        let group = (ino64 - 1) / sb.inodes_per_group;
        let index = (ino64 - 1) % sb.inodes_per_group;
        let gdt = (sb.first_data_block + 1) * sb.block_size;
        let mut d = vec![0u8; sb.desc_size as usize];
        self.read_vol(gdt + group * sb.desc_size, &mut d)?;
        let mut table = le32(&d, 8) as u64;
        if sb.desc_size >= 64 && sb.feature_incompat & 0x80 != 0 {
            table |= (le32(&d, 0x28) as u64) << 32;
        }
        if table == 0 || table >= sb.blocks_count {
            return Err(Error::Damaged(format!("inode table of group {} is at block {}, outside the filesystem", group, table)));
        }
        let off = table * sb.block_size + index * sb.inode_size;
        let mut raw = [0u8; 128];
        self.read_vol(off, &mut raw)?;
        Ok((off, raw))
    }

    /// The inode of `path`, walking directories from the root; `path` must hold no symlink
    /// (pass it through `canonicalize` first).
    fn lookup(&self, path: &str) -> Result<u32> {
        let mut ino = 2u32;
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            walked.push('/');
            walked.push_str(comp);
            let map = self.map_inode(ino)?;
            let mut found = None;
            'runs: for run in &map.runs {
                let Some(off) = run.fs_offset else { continue };
                let mut pos = 0;
                while pos < run.len {
                    let n = self.sb.block_size.min(run.len - pos);
                    let mut blk = vec![0u8; n as usize];
                    self.read_vol(off + pos, &mut blk)?;
                    if let Some(i) = find_entry(&blk, comp.as_bytes()) {
                        found = Some(i);
                        break 'runs;
                    }
                    pos += n;
                }
            }
            ino = found.ok_or_else(|| Error::NotFound(walked.clone()))?;
        }
        Ok(ino)
    }

    /// Where the bytes of inode `ino` are in the volume.
    pub fn map_inode(&self, ino: u32) -> Result<FileMap> {
        Ok(self.map_inode_full(ino)?.0)
    }

    /// The map, and whether a block-mapped (ext2/3) file has a hole where an indirect block
    /// would be: ext4-view 1.0 cannot read those (it reads "block 0"), so `copy_to` reads
    /// such files through the map instead.
    fn map_inode_full(&self, ino: u32) -> Result<(FileMap, bool)> {
        let (inode_offset, raw) = self.read_inode(ino)?;
        let mode = le16(&raw, 0);
        let size = le32(&raw, 4) as u64 | (le32(&raw, 0x6c) as u64) << 32;
        let flags = le32(&raw, 0x20);
        if size > 1 << 48 {
            return Err(Error::Damaged(format!("inode {} has a size of {} bytes, more than ext4 allows", ino, size)));
        }
        let i_block = &raw[0x28..0x64];
        let bs = self.sb.block_size;
        let ftype = mode & 0xf000;
        let mut blocks: Vec<(u64, u64, u64, bool)> = Vec::new();
        let mut indirect_hole = false;
        // regular files, directories and symlinks whose target is not in the inode
        let has_blocks = ftype == 0x8000 || ftype == 0x4000 || (ftype == 0xa000 && size >= 60);
        let nblocks = size.div_ceil(bs);
        if has_blocks {
            let mut budget = self.sb.blocks_count.saturating_mul(2).saturating_add(16);
            if flags & 0x80000 != 0 {
                self.walk_extents(i_block, None, 0, &mut budget, &mut blocks)?;
            } else {
                indirect_hole = self.walk_blockmap(i_block, nblocks, &mut budget, &mut blocks)?;
            }
        }
        blocks.sort_by_key(|b| b.0);
        // bytes: clip to the file size, fill holes, merge neighbours
        let mut runs: Vec<FileRun> = Vec::new();
        let mut pos = 0u64; // in blocks
        for (lb, count, pb, unwritten) in blocks {
            let end = lb.saturating_add(count).min(nblocks);
            let start = lb.max(pos);
            if start >= end {
                continue;
            }
            if start > pos {
                push_run(&mut runs, FileRun::hole(pos * bs, (start - pos) * bs));
            }
            let phys = pb + (start - lb);
            push_run(
                &mut runs,
                FileRun { logical: start * bs, len: (end - start) * bs, fs_offset: Some(phys * bs), unwritten, resident: false },
            );
            pos = end;
        }
        if pos < nblocks {
            push_run(&mut runs, FileRun::hole(pos * bs, (nblocks - pos) * bs));
        }
        // the last block holds only the file's tail
        if let Some(last) = runs.last_mut() {
            let end = last.logical + last.len;
            if end > size {
                last.len -= end - size;
            }
        }
        runs.retain(|r| r.len > 0);
        let map = FileMap {
            inode: ino as u64,
            inode_kind: "inode",
            size,
            inode_offset: Some(inode_offset),
            runs,
            notes: Vec::new(),
        };
        Ok((map, indirect_hole))
    }

    fn walk_extents(
        &self,
        node: &[u8],
        want_depth: Option<u16>,
        level: u16,
        budget: &mut u64,
        out: &mut Vec<(u64, u64, u64, bool)>,
    ) -> Result<()> {
        let bad = |why: String| Error::Damaged(format!("damaged extent tree: {}", why));
        if le16(node, 0) != 0xf30a {
            return Err(bad(format!("no extent header magic at level {}", level)));
        }
        let entries = le16(node, 2) as usize;
        let depth = le16(node, 6);
        if 12 + entries * 12 > node.len() {
            return Err(bad(format!("{} entries do not fit the node", entries)));
        }
        if depth > MAX_EXTENT_DEPTH || level > MAX_EXTENT_DEPTH || want_depth.is_some_and(|w| w != depth) {
            return Err(bad(format!("depth {} at level {}", depth, level)));
        }
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            *budget = budget.checked_sub(1).ok_or_else(|| bad("more entries than the filesystem has blocks".into()))?;
            if depth == 0 {
                let lb = le32(e, 0) as u64;
                let raw_len = le16(e, 4) as u64;
                let (len, unwritten) = if raw_len > 32768 { (raw_len - 32768, true) } else { (raw_len, false) };
                let pb = (le16(e, 6) as u64) << 32 | le32(e, 8) as u64;
                if len == 0 {
                    continue;
                }
                if pb == 0 || pb.checked_add(len).is_none_or(|end| end > self.sb.blocks_count) {
                    return Err(bad(format!("extent of {} blocks at block {} is outside the filesystem", len, pb)));
                }
                out.push((lb, len, pb, unwritten));
            } else {
                let child = (le16(e, 8) as u64) << 32 | le32(e, 4) as u64;
                let blk = self.read_block(child, "the extent tree")?;
                self.walk_extents(&blk, Some(depth - 1), level + 1, budget, out)?;
            }
        }
        Ok(())
    }

    /// ext2/3 block map: 12 direct pointers, then single, double and triple indirect blocks.
    /// Returns whether an indirect block pointer within the file is a hole.
    fn walk_blockmap(&self, i_block: &[u8], nblocks: u64, budget: &mut u64, out: &mut Vec<(u64, u64, u64, bool)>) -> Result<bool> {
        let mut hole = false;
        let per = self.sb.block_size / 4;
        for i in 0..12u64.min(nblocks) {
            let pb = le32(i_block, i as usize * 4) as u64;
            self.push_block(i, pb, out)?;
        }
        let mut base = 12u64;
        let mut span = per; // logical blocks under one pointer at this level
        for level in 1..=3u32 {
            if base >= nblocks {
                break;
            }
            let ptr = le32(i_block, (11 + level as usize) * 4) as u64;
            self.walk_indirect(ptr, level, base, nblocks, budget, &mut hole, out)?;
            base = base.saturating_add(span);
            span = span.saturating_mul(per);
        }
        Ok(hole)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_indirect(
        &self,
        ptr: u64,
        level: u32,
        base: u64,
        nblocks: u64,
        budget: &mut u64,
        hole: &mut bool,
        out: &mut Vec<(u64, u64, u64, bool)>,
    ) -> Result<()> {
        if base >= nblocks {
            return Ok(());
        }
        if ptr == 0 {
            *hole = true;
            return Ok(());
        }
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| Error::Damaged("damaged block map: more blocks than the filesystem has".into()))?;
        let blk = self.read_block(ptr, "the block map")?;
        let per = self.sb.block_size / 4;
        let span = per.saturating_pow(level - 1);
        for k in 0..per {
            let lb = base.saturating_add(k.saturating_mul(span));
            if lb >= nblocks {
                break;
            }
            let p = le32(&blk, k as usize * 4) as u64;
            if level == 1 {
                *budget = budget
                    .checked_sub(1)
                    .ok_or_else(|| Error::Damaged("damaged block map: more blocks than the filesystem has".into()))?;
                self.push_block(lb, p, out)?;
            } else {
                self.walk_indirect(p, level - 1, lb, nblocks, budget, hole, out)?;
            }
        }
        Ok(())
    }

    fn push_block(&self, lb: u64, pb: u64, out: &mut Vec<(u64, u64, u64, bool)>) -> Result<()> {
        if pb == 0 {
            return Ok(());
        }
        if pb >= self.sb.blocks_count {
            return Err(Error::Damaged(format!(
                "damaged block map: block {} of the file is at block {}, outside the filesystem",
                lb, pb
            )));
        }
        if let Some(last) = out.last_mut() {
            if last.0 + last.1 == lb && last.2 + last.1 == pb {
                last.1 += 1;
                return Ok(());
            }
        }
        out.push((lb, 1, pb, false));
        Ok(())
    }

    /// Where the file at `path` (symlinks followed) is in the volume.
    pub fn file_map(&self, path: &str) -> Result<FileMap> {
        Ok(self.file_map_full(path)?.0)
    }

    fn file_map_full(&self, path: &str) -> Result<(FileMap, bool)> {
        let path = absolute(path);
        let canon = self.fs.canonicalize(path.as_str()).map_err(|e| fs_err(e, &path))?;
        let canon = String::from_utf8_lossy(canon.as_ref()).into_owned();
        let ino = self.lookup(&canon).map_err(|e| match e {
            // ext4-view found it; our walk did not: the directory is odd, not the path wrong
            Error::NotFound(p) => Error::Damaged(format!("{}: the directory entry could not be found by the locator", p)),
            e => e,
        })?;
        self.map_inode_full(ino)
    }
}

impl Filesystem for ExtFs {
    fn kind(&self) -> FsKind {
        ExtFs::kind(self)
    }
    fn block_size(&self) -> u64 {
        self.sb.block_size
    }
    fn label(&self) -> Option<String> {
        self.sb.label.clone()
    }
    fn stat(&self, path: &str) -> Result<EntryInfo> {
        ExtFs::stat(self, path)
    }
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        ExtFs::read_dir(self, path)
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        ExtFs::copy_to(self, path, out)
    }
    fn file_map(&self, path: &str) -> Result<FileMap> {
        ExtFs::file_map(self, path)
    }
    fn regions(&self) -> Vec<Region> {
        overlay(&self.image, self.volume.start, self.volume.len, &self.volume.describe())
            .into_iter()
            .map(|mut r| {
                // volume offsets: GuestFs adds the volume's start back
                r.start -= self.volume.start;
                for f in &mut r.fields {
                    f.off -= self.volume.start;
                }
                r
            })
            .collect()
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

// the overlays compute offsets in u64
fn le16o(b: &[u8], o: usize) -> u64 {
    le16(b, o) as u64
}
fn le32o(b: &[u8], o: usize) -> u64 {
    le32(b, o) as u64
}

fn field(base: u64, off: usize, len: usize, name: &str, value: String) -> Field {
    Field { off: base + off as u64, len: len as u64, name: name.into(), value }
}

/// The ext superblock of the filesystem at `[start, start+len)` of the guest disk, with its
/// fields, at guest offsets.
pub fn overlay(img: &Image, start: u64, len: u64, what: &str) -> Vec<Region> {
    let at = start + 1024;
    let mut sb = [0u8; 1024];
    if len < 2048 || img.read(at, &mut sb).is_err() {
        return Vec::new();
    }
    let (le16, le32) = (le16o, le32o);
    let mut r = Region::new(at, 1024, "ext-superblock", format!("ext superblock of {}", what));
    r.virt = Some(at);
    let label_end = sb[0x78..0x88].iter().position(|&c| c == 0).unwrap_or(16);
    r.fields = vec![
        field(at, 0x00, 4, "s_inodes_count", le32(&sb, 0).to_string()),
        field(at, 0x04, 4, "s_blocks_count_lo", le32(&sb, 4).to_string()),
        field(at, 0x14, 4, "s_first_data_block", le32(&sb, 0x14).to_string()),
        field(at, 0x18, 4, "s_log_block_size", format!("{} ({} bytes)", le32(&sb, 0x18), 1024u64 << le32(&sb, 0x18).min(16))),
        field(at, 0x20, 4, "s_blocks_per_group", le32(&sb, 0x20).to_string()),
        field(at, 0x28, 4, "s_inodes_per_group", le32(&sb, 0x28).to_string()),
        field(at, 0x38, 2, "s_magic", format!("0x{:04x}{}", le16(&sb, 0x38), if le16(&sb, 0x38) == 0xef53 { " (ext)" } else { " (BAD)" })),
        field(at, 0x4c, 4, "s_rev_level", le32(&sb, 0x4c).to_string()),
        field(at, 0x58, 2, "s_inode_size", le16(&sb, 0x58).to_string()),
        field(at, 0x5c, 4, "s_feature_compat", format!("0x{:x}", le32(&sb, 0x5c))),
        field(at, 0x60, 4, "s_feature_incompat", format!("0x{:x}", le32(&sb, 0x60))),
        field(at, 0x64, 4, "s_feature_ro_compat", format!("0x{:x}", le32(&sb, 0x64))),
        field(at, 0x68, 16, "s_uuid", hex_bytes(&sb[0x68..0x78])),
        field(at, 0x78, 16, "s_volume_name", String::from_utf8_lossy(&sb[0x78..0x78 + label_end]).into_owned()),
        field(at, 0x150, 4, "s_blocks_count_hi", le32(&sb, 0x150).to_string()),
    ];
    vec![r]
}

/// The inode of the entry named `name` in one directory block (linear scan; htree interior
/// blocks look like empty entries, so this works for indexed directories too).
fn find_entry(blk: &[u8], name: &[u8]) -> Option<u32> {
    let mut pos = 0usize;
    while pos + 8 <= blk.len() {
        let ino = le32(blk, pos);
        let rec_len = le16(blk, pos + 4) as usize;
        let name_len = blk[pos + 6] as usize;
        if rec_len < 8 || pos + rec_len > blk.len() {
            return None;
        }
        if ino != 0 && name_len == name.len() && blk.get(pos + 8..pos + 8 + name_len) == Some(name) {
            return Some(ino);
        }
        pos += rec_len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_block_scan() {
        let mut b = vec![0u8; 1024];
        // "." -> 2, "hello" -> 12, rest of the block
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[4..6].copy_from_slice(&12u16.to_le_bytes());
        b[6] = 1;
        b[8] = b'.';
        b[12..16].copy_from_slice(&12u32.to_le_bytes());
        b[16..18].copy_from_slice(&(1024u16 - 12).to_le_bytes());
        b[18] = 5;
        b[20..25].copy_from_slice(b"hello");
        assert_eq!(find_entry(&b, b"hello"), Some(12));
        assert_eq!(find_entry(&b, b"hell"), None);
        // a zero rec_len stops the scan instead of looping
        b[16..18].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(find_entry(&b, b"hello"), None);
    }

    #[test]
    fn runs_merge() {
        let mut v = vec![];
        push_run(&mut v, FileRun::data(0, 4096, 8192));
        push_run(&mut v, FileRun::data(4096, 4096, 12288));
        push_run(&mut v, FileRun::hole(8192, 4096));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].len, 8192);
    }

    #[test]
    fn mode_string() {
        let e = EntryInfo {
            name: "x".into(),
            type_char: 'd',
            mode: 0o1755,
            size: 0,
            mtime: 0,
            uid: 0,
            gid: 0,
            link_target: None,
            streams: Vec::new(),
            attributes: String::new(),
        };
        assert_eq!(e.mode_string(), "drwxr-xr-t");
    }
}

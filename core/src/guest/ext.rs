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

use super::{read_in, Error, FsKind, Result, Volume};
use crate::image::{Extent, HostFileId, Image, LayerKind};

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

/// One entry of a directory listing (or the file `ls` was pointed at).
#[derive(Clone, Debug)]
pub struct EntryInfo {
    pub name: String,
    /// `ls -l`'s type letter: `-`, `d`, `l`, `c`, `b`, `p`, `s`.
    pub type_char: char,
    /// Permission bits (with setuid/setgid/sticky), as `st_mode & 0o7777`.
    pub mode: u16,
    pub size: u64,
    /// Modification time, seconds since 1970 (UTC).
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
    pub link_target: Option<String>,
}

impl EntryInfo {
    pub fn is_dir(&self) -> bool {
        self.type_char == 'd'
    }

    /// `drwxr-xr-x` as `ls -l` prints it.
    pub fn mode_string(&self) -> String {
        let m = self.mode;
        let mut s = String::with_capacity(10);
        s.push(self.type_char);
        for (shift, special, lower, upper) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
            let bits = (m >> shift) & 7;
            s.push(if bits & 4 != 0 { 'r' } else { '-' });
            s.push(if bits & 2 != 0 { 'w' } else { '-' });
            let x = bits & 1 != 0;
            s.push(match (m & special != 0, x) {
                (true, true) => lower,
                (true, false) => upper,
                (false, true) => 'x',
                (false, false) => '-',
            });
        }
        s
    }
}

/// A run of a file: `len` bytes from file offset `logical`, at byte `fs_offset` of the
/// volume, or a hole (`fs_offset: None`). `unwritten`: allocated but reads as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRun {
    pub logical: u64,
    pub len: u64,
    pub fs_offset: Option<u64>,
    pub unwritten: bool,
}

/// Where a file's bytes are in its filesystem.
#[derive(Clone, Debug)]
pub struct FileMap {
    pub inode: u32,
    pub size: u64,
    /// Byte offset of the inode itself in the volume.
    pub inode_offset: u64,
    /// Covers `[0, size)` in order, holes included.
    pub runs: Vec<FileRun>,
    /// A block-mapped (ext2/3) file with a hole where an indirect block would be:
    /// ext4-view 1.0 cannot read those (it reads "block 0"), so `copy_to` reads such files
    /// through this map instead.
    pub indirect_hole: bool,
}

/// One piece of a located file: a file range that lies in one image extent.
#[derive(Clone, Copy, Debug)]
pub struct FileExtent {
    pub logical: u64,
    pub len: u64,
    /// Guest offset; None for a hole in the file.
    pub virt: Option<u64>,
    /// How the image resolves these guest bytes (None for a hole).
    pub image: Option<Extent>,
    /// Allocated in the filesystem but not written (reads as zero).
    pub unwritten: bool,
}

impl FileExtent {
    /// `data`, `zero`, `unallocated`, `compressed` (the image's word), or `hole`/`unwritten`
    /// for what the filesystem says.
    pub fn kind_name(&self) -> &'static str {
        match &self.image {
            None => "hole",
            Some(_) if self.unwritten => "unwritten",
            Some(e) => e.kind_name(),
        }
    }

    /// Layer and host offset holding these bytes, where a host file holds them as they are.
    pub fn host(&self) -> Option<(usize, HostFileId, u64)> {
        let e = self.image.as_ref()?;
        match e.kind {
            LayerKind::Data { .. } | LayerKind::ZeroData { .. } => e.host_at(0).map(|(f, h)| (e.depth, f, h)),
            _ => None,
        }
    }
}

/// A file located on the guest disk and in the host files.
#[derive(Clone, Debug)]
pub struct Located {
    pub path: String,
    pub inode: u32,
    pub size: u64,
    pub inode_offset: u64,
    pub extents: Vec<FileExtent>,
}

/// An ext2/3/4 filesystem on a volume of the guest disk.
pub struct ExtFs {
    pub image: Rc<Image>,
    pub volume: Volume,
    pub sb: Superblock,
    pub fs: Ext4,
    pub warnings: Vec<String>,
}

/// The path as an absolute path (`test1.txt` -> `/test1.txt`).
pub fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{}", path)
    }
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
        }
    }

    /// What `path` itself is (a symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<EntryInfo> {
        let path = absolute(path);
        let m = self.fs.symlink_metadata(path.as_str()).map_err(|e| fs_err(e, &path))?;
        let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
        let name = if name.is_empty() { "/".to_string() } else { name };
        Ok(self.entry(name, &path, &m))
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
        if let Ok(map) = self.file_map(&path) {
            if map.indirect_hole && map.size == size {
                return self.copy_runs(&map, out);
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

    /// Copy a file's bytes by its map: holes and unwritten extents as zeros.
    fn copy_runs(&self, map: &FileMap, out: &mut dyn Write) -> Result<u64> {
        const CHUNK: u64 = 64 * 1024;
        let mut buf = vec![0u8; CHUNK as usize];
        for run in &map.runs {
            let mut pos = 0;
            while pos < run.len {
                let n = CHUNK.min(run.len - pos) as usize;
                match run.fs_offset {
                    Some(off) if !run.unwritten => self.read_vol(off + pos, &mut buf[..n])?,
                    _ => buf[..n].fill(0),
                }
                out.write_all(&buf[..n]).map_err(Error::Write)?;
                pos += n as u64;
            }
        }
        Ok(map.size)
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
                push_run(&mut runs, FileRun { logical: pos * bs, len: (start - pos) * bs, fs_offset: None, unwritten: false });
            }
            let phys = pb + (start - lb);
            push_run(
                &mut runs,
                FileRun { logical: start * bs, len: (end - start) * bs, fs_offset: Some(phys * bs), unwritten },
            );
            pos = end;
        }
        if pos < nblocks {
            push_run(&mut runs, FileRun { logical: pos * bs, len: (nblocks - pos) * bs, fs_offset: None, unwritten: false });
        }
        // the last block holds only the file's tail
        if let Some(last) = runs.last_mut() {
            let end = last.logical + last.len;
            if end > size {
                last.len -= end - size;
            }
        }
        runs.retain(|r| r.len > 0);
        Ok(FileMap { inode: ino, size, inode_offset, runs, indirect_hole })
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
        let path = absolute(path);
        let canon = self.fs.canonicalize(path.as_str()).map_err(|e| fs_err(e, &path))?;
        let canon = String::from_utf8_lossy(canon.as_ref()).into_owned();
        let ino = self.lookup(&canon).map_err(|e| match e {
            // ext4-view found it; our walk did not: the directory is odd, not the path wrong
            Error::NotFound(p) => Error::Damaged(format!("{}: the directory entry could not be found by the locator", p)),
            e => e,
        })?;
        self.map_inode(ino)
    }

    /// The file's extents: each file range that lies in one image extent, with its guest
    /// offset and, through the image model, the layer and host offset that hold it.
    pub fn locate(&self, path: &str) -> Result<Located> {
        let path = absolute(path);
        let map = self.file_map(&path)?;
        let mut extents = Vec::new();
        for run in &map.runs {
            let Some(off) = run.fs_offset else {
                extents.push(FileExtent { logical: run.logical, len: run.len, virt: None, image: None, unwritten: false });
                continue;
            };
            if off.checked_add(run.len).is_none_or(|e| e > self.volume.len) {
                return Err(Error::Damaged(format!(
                    "{}: bytes 0x{:x}-0x{:x} of the file lie past the end of {}",
                    path,
                    run.logical,
                    run.logical + run.len,
                    self.volume.describe()
                )));
            }
            let virt = self.volume.start + off;
            for e in self.image.extents(virt, run.len)? {
                extents.push(FileExtent {
                    logical: run.logical + (e.virt - virt),
                    len: e.len,
                    virt: Some(e.virt),
                    image: Some(e),
                    unwritten: run.unwritten,
                });
            }
        }
        Ok(Located { path, inode: map.inode, size: map.size, inode_offset: map.inode_offset, extents })
    }
}

fn push_run(runs: &mut Vec<FileRun>, r: FileRun) {
    if let Some(last) = runs.last_mut() {
        let joins = last.logical + last.len == r.logical
            && last.unwritten == r.unwritten
            && match (last.fs_offset, r.fs_offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a + last.len == b,
                _ => false,
            };
        if joins {
            last.len += r.len;
            return;
        }
    }
    runs.push(r);
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
        push_run(&mut v, FileRun { logical: 0, len: 4096, fs_offset: Some(8192), unwritten: false });
        push_run(&mut v, FileRun { logical: 4096, len: 4096, fs_offset: Some(12288), unwritten: false });
        push_run(&mut v, FileRun { logical: 8192, len: 4096, fs_offset: None, unwritten: false });
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
        };
        assert_eq!(e.mode_string(), "drwxr-xr-t");
    }
}

//! btrfs, single device, read-only: our own reader of the superblock, the chunk map, the root
//! tree, the FS tree (subvolume 5) and the other subvolumes (as directories), inodes,
//! directories and file extents (inline, regular, prealloc, holes, zlib/zstd/lzo compressed).
//!
//! Not a crate: of the Rust crates that read btrfs images, `btrfs-disk` (0.4) parses the
//! on-disk structures and `btrfs-core` (0.x) is a young from-scratch reader; both are new,
//! single-author 0.x crates, and `locate` needs what a content reader does not hand out (the
//! volume offset of every extent and of inline bytes in their tree block), with our bounds
//! (every loop and allocation by the volume's size, DUP metadata's second copy on damage) and
//! one-line errors. The read-only subset is small: `tree.rs` the superblock, chunk map and
//! tree search, `file.rs` the extents and decoding, `lzo.rs` LZO1X.

mod file;
mod lzo;
mod tree;

use std::io::Write;
use std::rc::Rc;

use super::{base_name, components, EntryInfo, FileMap, Filesystem, FsDriver, VolumeReader};
use crate::guest::{Error, FsKind, Result, Volume};
use crate::image::bytes::{le16, le32, le64};
use crate::image::region::{Field, Region};
use crate::image::Image;
use tree::{Key, Meta, DIR_INDEX, DIR_ITEM, FIRST_FREE_OBJECTID, FS_TREE_OBJECTID, INODE_ITEM, ROOT_ITEM};

/// btrfs in the registry of filesystems.
pub static DRIVER: FsDriver = FsDriver {
    name: "btrfs",
    kinds: &[FsKind::Btrfs],
    open: |image, volume| Ok(Box::new(BtrfsFs::open(image, volume)?)),
    overlay,
};

/// Most entries one directory may list (a bound on damaged item counts).
const MAX_ENTRIES: usize = 1 << 20;

/// A subvolume's tree: its root block and level, and its top directory.
#[derive(Clone, Copy, Debug)]
struct Root {
    id: u64,
    bytenr: u64,
    level: u8,
    dirid: u64,
}

/// An inode in a subvolume.
#[derive(Clone, Copy, Debug)]
struct Ino {
    root: Root,
    ino: u64,
}

/// An inode item's numbers.
#[derive(Clone, Debug)]
struct Inode {
    size: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u32,
    flags: u64,
    mtime: i64,
    /// Volume offset of the item.
    physical: u64,
}

/// A directory entry: name, where it points, its type byte.
#[derive(Clone, Debug)]
struct DirEnt {
    name: String,
    location: Key,
    ty: u8,
}

/// A btrfs filesystem on a volume of the guest disk.
pub struct BtrfsFs {
    meta: Meta,
    fs_root: Root,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl BtrfsFs {
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<BtrfsFs> {
        let vol = VolumeReader::new(image, volume);
        let damaged = |why: String| Error::Damaged(format!("damaged btrfs on {}: {}", volume.describe(), why));
        let (meta, mut warnings) = Meta::open(vol).map_err(damaged)?;
        if meta.sb.csum_type != 0 {
            let name = ["crc32c", "xxhash64", "sha256", "blake2b"].get(meta.sb.csum_type as usize).copied().unwrap_or("unknown");
            warnings.push(format!("btrfs checksums are {}: vdiskview verifies crc32c only, so tree blocks are read unverified", name));
        }
        let mut fs = BtrfsFs {
            meta,
            fs_root: Root { id: FS_TREE_OBJECTID, bytenr: 0, level: 0, dirid: FIRST_FREE_OBJECTID },
            warnings: std::cell::RefCell::new(warnings),
        };
        fs.fs_root = fs.root(FS_TREE_OBJECTID).map_err(|e| damaged(format!("the FS tree: {}", e)))?;
        Ok(fs)
    }

    /// The root item of subvolume `id` in the root tree.
    fn root(&self, id: u64) -> Result<Root> {
        let sb = &self.meta.sb;
        let items = self.meta.search(sb.root, sb.root_level, Key::new(id, ROOT_ITEM, 0), Key::new(id, ROOT_ITEM, u64::MAX))?;
        let Some(it) = items.last() else {
            return Err(Error::Damaged(format!("btrfs subvolume {} has no root item", id)));
        };
        if it.data.len() < 239 {
            return Err(Error::Damaged(format!("btrfs root item of subvolume {} is {} bytes, too short", id, it.data.len())));
        }
        let level = it.data[238];
        if level > tree::MAX_LEVEL {
            return Err(Error::Damaged(format!("btrfs subvolume {} has a tree {} levels deep", id, level)));
        }
        Ok(Root { id, bytenr: le64(&it.data, 176), level, dirid: le64(&it.data, 168).max(FIRST_FREE_OBJECTID) })
    }

    fn inode(&self, at: Ino) -> Result<Inode> {
        let items = self.meta.search(at.root.bytenr, at.root.level, Key::new(at.ino, INODE_ITEM, 0), Key::new(at.ino, INODE_ITEM, u64::MAX))?;
        let Some(it) = items.first() else {
            return Err(Error::Damaged(format!("btrfs inode {} of subvolume {} has no inode item", at.ino, at.root.id)));
        };
        let d = &it.data;
        if d.len() < 160 {
            return Err(Error::Damaged(format!("btrfs inode item {} is {} bytes, too short", at.ino, d.len())));
        }
        Ok(Inode {
            size: le64(d, 16),
            nlink: le32(d, 40),
            uid: le32(d, 44),
            gid: le32(d, 48),
            mode: le32(d, 52),
            flags: le64(d, 64),
            mtime: le64(d, 136) as i64,
            physical: it.physical,
        })
    }

    /// The entries of directory `dir` (DIR_INDEX items; DIR_ITEMs when there are none).
    fn entries(&self, dir: Ino) -> Result<Vec<DirEnt>> {
        let r = dir.root;
        let mut items = self.meta.search(r.bytenr, r.level, Key::new(dir.ino, DIR_INDEX, 0), Key::new(dir.ino, DIR_INDEX, u64::MAX))?;
        if items.is_empty() {
            items = self.meta.search(r.bytenr, r.level, Key::new(dir.ino, DIR_ITEM, 0), Key::new(dir.ino, DIR_ITEM, u64::MAX))?;
        }
        let mut out = Vec::new();
        for it in items {
            let d = &it.data;
            let mut o = 0;
            // a DIR_ITEM may pack several entries (hash collisions)
            while o + 30 <= d.len() {
                let location = Key::parse(d, o);
                let data_len = le16(d, o + 25) as usize;
                let name_len = le16(d, o + 27) as usize;
                let ty = d[o + 29];
                let end = o + 30 + name_len + data_len;
                if end > d.len() || name_len == 0 {
                    self.warnings.borrow_mut().push(format!("btrfs directory {}: a damaged entry was skipped", dir.ino));
                    break;
                }
                let name = String::from_utf8_lossy(&d[o + 30..o + 30 + name_len]).into_owned();
                out.push(DirEnt { name, location, ty });
                if out.len() > MAX_ENTRIES {
                    return Err(Error::Damaged(format!("btrfs directory {} has more than {} entries", dir.ino, MAX_ENTRIES)));
                }
                o = end;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// Where an entry leads: an inode of the same subvolume, or the top of another.
    fn follow(&self, dir: Ino, e: &DirEnt) -> Result<Ino> {
        if e.location.ty == ROOT_ITEM {
            let root = self.root(e.location.objectid)?;
            Ok(Ino { root, ino: root.dirid })
        } else if e.location.ty == INODE_ITEM {
            Ok(Ino { root: dir.root, ino: e.location.objectid })
        } else {
            Err(Error::Damaged(format!("btrfs entry {} points at an item of type {}", e.name, e.location.ty)))
        }
    }

    fn top(&self) -> Ino {
        Ino { root: self.fs_root, ino: self.fs_root.dirid }
    }

    /// The inode at `path` (symlinks not followed).
    fn lookup(&self, path: &str) -> Result<(Ino, Inode)> {
        let mut cur = self.top();
        let mut node = self.inode(cur)?;
        let mut walked = String::new();
        for comp in components(path) {
            if comp == ".." {
                return Err(Error::Invalid(format!("{}: `..` is not supported in paths", path)));
            }
            if node.mode & 0o170000 != 0o040000 {
                return Err(Error::NotADirectory(if walked.is_empty() { "/".into() } else { walked }));
            }
            walked.push('/');
            walked.push_str(comp);
            let ents = self.entries(cur)?;
            let e = ents.iter().find(|e| e.name == comp).ok_or_else(|| Error::NotFound(walked.clone()))?;
            cur = self.follow(cur, e)?;
            node = self.inode(cur)?;
        }
        Ok((cur, node))
    }

    fn info(&self, at: Ino, ino: &Inode, name: String) -> EntryInfo {
        let type_char = match ino.mode & 0o170000 {
            0o040000 => 'd',
            0o120000 => 'l',
            0o020000 => 'c',
            0o060000 => 'b',
            0o010000 => 'p',
            0o140000 => 's',
            _ => '-',
        };
        let mut e = EntryInfo::new(name, type_char, (ino.mode & 0o7777) as u16, ino.size, ino.mtime);
        e.uid = ino.uid;
        e.gid = ino.gid;
        if type_char == 'l' {
            e.link_target = self.read_small(at, ino).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
        }
        let mut attrs = Vec::new();
        if at.ino == at.root.dirid && at.root.id != FS_TREE_OBJECTID {
            attrs.push(format!("subvolume {}", at.root.id));
        }
        for (bit, n) in [(1u64, "nodatasum"), (2, "nodatacow"), (4, "readonly"), (8, "nocompress"), (0x800, "compress")] {
            if ino.flags & bit != 0 {
                attrs.push(n.to_string());
            }
        }
        let _ = ino.nlink;
        e.attributes = attrs.join(",");
        e
    }

    /// A small file's bytes (symlink targets), at most 64 KiB.
    fn read_small(&self, at: Ino, ino: &Inode) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let mut lim = LimitedWrite { out: &mut v, left: 65536 };
        file::copy(self, at, ino, &mut lim)?;
        Ok(v)
    }
}

struct LimitedWrite<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl Write for LimitedWrite<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.len() > self.left {
            return Err(std::io::Error::other("too long"));
        }
        self.left -= b.len();
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Filesystem for BtrfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }
    fn block_size(&self) -> u64 {
        self.meta.sb.sectorsize as u64
    }
    fn label(&self) -> Option<String> {
        self.meta.sb.label.clone()
    }
    fn stat(&self, path: &str) -> Result<EntryInfo> {
        let (at, ino) = self.lookup(path)?;
        Ok(self.info(at, &ino, base_name(path)))
    }
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let (at, ino) = self.lookup(path)?;
        if ino.mode & 0o170000 != 0o040000 {
            return Err(Error::NotADirectory(path.to_string()));
        }
        let mut out = Vec::new();
        for e in self.entries(at)? {
            let info = self.follow(at, &e).and_then(|t| Ok((t, self.inode(t)?)));
            match info {
                Ok((t, i)) => out.push(self.info(t, &i, e.name.clone())),
                Err(err) => {
                    self.warnings.borrow_mut().push(format!("{}/{}: {}", path.trim_end_matches('/'), e.name, err));
                    let tc = match e.ty {
                        2 => 'd',
                        7 => 'l',
                        _ => '-',
                    };
                    out.push(EntryInfo::new(e.name.clone(), tc, 0, 0, 0));
                }
            }
        }
        Ok(out)
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let (at, ino) = self.lookup(path)?;
        if ino.mode & 0o170000 == 0o040000 {
            return Err(Error::IsADirectory(path.to_string()));
        }
        file::copy(self, at, &ino, out)
    }
    fn file_map(&self, path: &str) -> Result<FileMap> {
        let (at, ino) = self.lookup(path)?;
        if ino.mode & 0o170000 == 0o040000 {
            return Err(Error::IsADirectory(path.to_string()));
        }
        file::map(self, at, &ino)
    }
    fn regions(&self) -> Vec<Region> {
        vec![super_region(&self.meta.sb.raw, self.meta.sb.at, &self.meta.vol.what)]
    }
    fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.borrow().clone();
        w.extend(self.meta.warnings.borrow().iter().cloned());
        w
    }
}

fn field(base: u64, off: usize, len: usize, name: &str, value: String) -> Field {
    Field { off: base + off as u64, len: len as u64, name: name.into(), value }
}

/// The superblock `b` (4 KiB) at `base` with its fields.
fn super_region(b: &[u8], base: u64, what: &str) -> Region {
    let mut r = Region::new(base, tree::SUPER_SIZE as u64, "btrfs-superblock", format!("btrfs superblock of {}", what));
    r.virt = Some(base);
    let x = |o: usize| format!("0x{:x}", le64(b, o));
    let d = |o: usize| le64(b, o).to_string();
    let label_end = b[0x12b..0x22b].iter().position(|&c| c == 0).unwrap_or(256);
    r.fields = vec![
        field(base, 0x00, 4, "checksum", format!("0x{:08x}", le32(b, 0))),
        field(base, 0x20, 16, "fsid", tree::uuid(&b[0x20..0x30])),
        field(base, 0x30, 8, "bytenr", x(0x30)),
        field(base, 0x38, 8, "flags", x(0x38)),
        field(base, 0x40, 8, "magic", String::from_utf8_lossy(&b[0x40..0x48]).into_owned()),
        field(base, 0x48, 8, "generation", d(0x48)),
        field(base, 0x50, 8, "root tree (logical)", x(0x50)),
        field(base, 0x58, 8, "chunk tree (logical)", x(0x58)),
        field(base, 0x60, 8, "log tree (logical)", x(0x60)),
        field(base, 0x70, 8, "total bytes", d(0x70)),
        field(base, 0x78, 8, "bytes used", d(0x78)),
        field(base, 0x80, 8, "root dir objectid", d(0x80)),
        field(base, 0x88, 8, "number of devices", d(0x88)),
        field(base, 0x90, 4, "sector size", le32(b, 0x90).to_string()),
        field(base, 0x94, 4, "node size", le32(b, 0x94).to_string()),
        field(base, 0x9c, 4, "stripe size", le32(b, 0x9c).to_string()),
        field(base, 0xa0, 4, "sys_chunk_array size", le32(b, 0xa0).to_string()),
        field(base, 0xa4, 8, "chunk root generation", d(0xa4)),
        field(base, 0xac, 8, "compat flags", x(0xac)),
        field(base, 0xb4, 8, "compat_ro flags", x(0xb4)),
        field(base, 0xbc, 8, "incompat flags", x(0xbc)),
        field(base, 0xc4, 2, "checksum type", match le16(b, 0xc4) { 0 => "crc32c".into(), 1 => "xxhash64".into(), 2 => "sha256".into(), 3 => "blake2b".into(), n => n.to_string() }),
        field(base, 0xc6, 1, "root level", b[0xc6].to_string()),
        field(base, 0xc7, 1, "chunk root level", b[0xc7].to_string()),
        field(base, 0xc8, 1, "log root level", b[0xc8].to_string()),
        field(base, 0xc9, 8, "device id", d(0xc9)),
        field(base, 0xd1, 8, "device total bytes", d(0xd1)),
        field(base, 0xd9, 8, "device bytes used", d(0xd9)),
        field(base, 0x10a, 16, "device uuid", tree::uuid(&b[0x10a..0x11a])),
        field(base, 0x12b, 256, "label", String::from_utf8_lossy(&b[0x12b..0x12b + label_end]).into_owned()),
        field(base, 0x22b, 8, "cache generation", d(0x22b)),
        field(base, 0x233, 8, "uuid tree generation", d(0x233)),
        field(base, 0x32b, 2048, "sys_chunk_array", format!("{} bytes", le32(b, 0xa0))),
    ];
    r
}

/// The btrfs superblock of the volume at `[start, start+len)`, at guest offsets.
fn overlay(img: &Image, start: u64, len: u64, what: &str) -> Vec<Region> {
    let mut b = vec![0u8; tree::SUPER_SIZE];
    if len < tree::SUPER_OFFSET + tree::SUPER_SIZE as u64 || img.read(start + tree::SUPER_OFFSET, &mut b).is_err() || &b[0x40..0x48] != tree::MAGIC {
        return Vec::new();
    }
    vec![super_region(&b, start + tree::SUPER_OFFSET, what)]
}

//! The filesystem interface: what `ls`, `cat`, `locate`, the TUI's Files view and the guest
//! overlays ask of any filesystem inside the guest disk, and the registry of filesystems.
//!
//! A filesystem is one module here that fills in a [`FsDriver`] (which probed kinds it reads,
//! how to open a volume, the overlay of its boot structures) and implements [`Filesystem`];
//! adding one touches its module and one line of [`FILESYSTEMS`], as formats do in
//! `image::driver::DRIVERS`.
//!
//! A filesystem answers in *volume* offsets (bytes from the start of its partition);
//! [`GuestFs`] turns those into guest offsets and, through the image model, into layers and
//! host offsets. Every offset and size a filesystem reads is untrusted: readers bound their
//! allocations and loops by the volume's size.

pub mod btrfs;
pub mod ext;
pub mod fat;
pub mod ntfs;

use std::io::Write;
use std::rc::Rc;

use super::{read_in, Error, FsKind, Result, Volume};
use crate::image::region::Region;
use crate::image::{Extent, HostFileId, Image, LayerKind};

/// The registered filesystems, asked in order by [`GuestFs::open`] and the overlays.
pub static FILESYSTEMS: &[&FsDriver] = &[&ext::DRIVER, &fat::DRIVER, &ntfs::DRIVER, &btrfs::DRIVER];

/// A filesystem reader: which probed kinds it reads and how to open one.
pub struct FsDriver {
    /// Human name for messages (`ext2/3/4`, `FAT12/16/32`, `NTFS`).
    pub name: &'static str,
    /// The kinds [`super::probe_fs`] reports that this driver reads.
    pub kinds: &'static [FsKind],
    /// Open the filesystem on a volume whose probe found one of `kinds`.
    pub open: fn(Rc<Image>, &Volume) -> Result<Box<dyn Filesystem>>,
    /// The boot structures of the filesystem at `[start, start+len)` of the guest disk as
    /// named regions (guest offsets), for the hex overlays; cheap (a sector or two), never fails.
    pub overlay: fn(&Image, u64, u64, &str) -> Vec<Region>,
}

/// The driver that reads `kind`, if any.
pub fn driver_for(kind: FsKind) -> Option<&'static FsDriver> {
    FILESYSTEMS.iter().copied().find(|d| d.kinds.contains(&kind))
}

/// "ext2/3/4, FAT12/16/32 and NTFS": what vdiskview reads, for messages.
pub fn readable_names() -> String {
    let names: Vec<&str> = FILESYSTEMS.iter().map(|d| d.name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {}", rest.join(", "), last),
        _ => names.join(""),
    }
}

/// A filesystem opened on a volume. Paths are absolute (`/dir/file`; a relative path is taken
/// from the root). All offsets are volume offsets.
pub trait Filesystem {
    fn kind(&self) -> FsKind;
    /// The allocation unit (ext block, FAT/NTFS cluster) in bytes.
    fn block_size(&self) -> u64;
    fn label(&self) -> Option<String> {
        None
    }
    /// What `path` itself is (a symlink is not followed).
    fn stat(&self, path: &str) -> Result<EntryInfo>;
    /// The entries of directory `path` (without `.` and `..`), sorted by name.
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>>;
    /// Copy the file's bytes (holes as zeros) to `out`; returns the byte count.
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64>;
    /// Where the file's bytes are in the volume: runs covering `[0, size)` in order.
    fn file_map(&self, path: &str) -> Result<FileMap>;
    /// Named structures of the opened volume (volume offsets), for the hex overlays.
    fn regions(&self) -> Vec<Region> {
        Vec::new()
    }
    /// Damage found on the way that did not stop reading.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One entry of a directory listing (or the file `ls` was pointed at).
#[derive(Clone, Debug)]
pub struct EntryInfo {
    pub name: String,
    /// `ls -l`'s type letter: `-`, `d`, `l`, `c`, `b`, `p`, `s`.
    pub type_char: char,
    /// Permission bits (with setuid/setgid/sticky), as `st_mode & 0o7777`; filesystems
    /// without Unix modes give what Linux shows by default (0755 dirs, 0644 files, read-only
    /// files without write bits).
    pub mode: u16,
    pub size: u64,
    /// Modification time, seconds since 1970 (UTC).
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
    pub link_target: Option<String>,
    /// Named data streams (NTFS alternate data streams) with their sizes; `cat` reads one as
    /// `path:name`.
    pub streams: Vec<(String, u64)>,
    /// Filesystem-specific attributes as text (`hidden,system`, `compressed`, named streams
    /// `:name`), empty when none.
    pub attributes: String,
}

impl EntryInfo {
    /// A plain entry: no owner, no link, no attributes.
    pub fn new(name: String, type_char: char, mode: u16, size: u64, mtime: i64) -> EntryInfo {
        EntryInfo { name, type_char, mode, size, mtime, uid: 0, gid: 0, link_target: None, streams: Vec::new(), attributes: String::new() }
    }

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
/// `resident`: the bytes sit inside a metadata record (NTFS resident data), not in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRun {
    pub logical: u64,
    pub len: u64,
    pub fs_offset: Option<u64>,
    pub unwritten: bool,
    pub resident: bool,
}

impl FileRun {
    pub fn data(logical: u64, len: u64, fs_offset: u64) -> FileRun {
        FileRun { logical, len, fs_offset: Some(fs_offset), unwritten: false, resident: false }
    }

    pub fn hole(logical: u64, len: u64) -> FileRun {
        FileRun { logical, len, fs_offset: None, unwritten: false, resident: false }
    }
}

/// Where a file's bytes are in its filesystem.
#[derive(Clone, Debug)]
pub struct FileMap {
    /// The file's number: ext inode, NTFS MFT record, FAT first cluster.
    pub inode: u64,
    /// What `inode` numbers: `inode`, `MFT record`, `first cluster`.
    pub inode_kind: &'static str,
    pub size: u64,
    /// Byte offset of the file's metadata (inode, MFT record, directory entry) in the volume.
    pub inode_offset: Option<u64>,
    /// Covers `[0, size)` in order, holes included.
    pub runs: Vec<FileRun>,
    /// What a reader should know about the bytes ("resident in MFT record 64").
    pub notes: Vec<String>,
}

/// Append a run, joining it to the last one where they continue each other.
pub fn push_run(runs: &mut Vec<FileRun>, r: FileRun) {
    if r.len == 0 {
        return;
    }
    if let Some(last) = runs.last_mut() {
        let joins = last.logical + last.len == r.logical
            && last.unwritten == r.unwritten
            && last.resident == r.resident
            && match (last.fs_offset, r.fs_offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a.checked_add(last.len) == Some(b),
                _ => false,
            };
        if joins {
            last.len += r.len;
            return;
        }
    }
    runs.push(r);
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
    /// The bytes sit inside a metadata record (NTFS resident data).
    pub resident: bool,
}

impl FileExtent {
    /// `data`, `zero`, `unallocated`, `compressed` (the image's word), or `hole`/`unwritten`/
    /// `resident` for what the filesystem says.
    pub fn kind_name(&self) -> &'static str {
        match &self.image {
            None => "hole",
            Some(_) if self.unwritten => "unwritten",
            Some(e) if self.resident && matches!(e.kind, LayerKind::Data { .. }) => "resident",
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
    pub inode: u64,
    pub inode_kind: &'static str,
    pub size: u64,
    /// Volume offset of the file's metadata, when it has one place.
    pub inode_offset: Option<u64>,
    pub extents: Vec<FileExtent>,
    pub notes: Vec<String>,
}

/// The path as an absolute path (`test1.txt` -> `/test1.txt`).
pub fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{}", path)
    }
}

/// The components of an absolute path, without empty ones and `.`.
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// The last component of `path` (`/` for the root).
pub fn base_name(path: &str) -> String {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
    if name.is_empty() {
        "/".to_string()
    } else {
        name
    }
}

/// Reads of a volume: guest bytes `[start, start+len)` through the image model.
#[derive(Clone)]
pub struct VolumeReader {
    pub image: Rc<Image>,
    pub start: u64,
    pub len: u64,
    pub what: String,
}

impl VolumeReader {
    pub fn new(image: Rc<Image>, volume: &Volume) -> VolumeReader {
        VolumeReader { image, start: volume.start, len: volume.len, what: volume.describe() }
    }

    /// Exactly `buf.len()` bytes at volume offset `off`, or a "past the end" error.
    pub fn read_exact(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let n = read_in(&self.image, self.start, self.len, off, buf)?;
        if n != buf.len() {
            return Err(Error::Damaged(format!(
                "filesystem structure at 0x{:x} (0x{:x} bytes) is past the end of {}",
                off,
                buf.len(),
                self.what
            )));
        }
        Ok(())
    }

    /// `len` bytes at `off` in a new buffer; `len` is checked against the volume first.
    pub fn read_vec(&self, off: u64, len: u64) -> Result<Vec<u8>> {
        if off.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::Damaged(format!(
                "filesystem structure at 0x{:x} (0x{:x} bytes) is past the end of {}",
                off, len, self.what
            )));
        }
        let mut b = vec![0u8; len as usize];
        self.read_exact(off, &mut b)?;
        Ok(b)
    }
}

/// The buffer size of the file copies (`cat`).
pub const STREAM_CHUNK: u64 = 128 << 10;

/// Copy a file's bytes by its map: holes and unwritten runs as zeros.
pub fn copy_runs(vol: &VolumeReader, map: &FileMap, out: &mut dyn Write) -> Result<u64> {
    // 128 KiB, as `read` streams: a buffer that stays in the CPU's L2 cache between the
    // copy from the page cache and the write (1 MiB made `cat` ~15% slower, measured)
    const CHUNK: u64 = STREAM_CHUNK;
    let mut buf = vec![0u8; CHUNK.min(map.size.max(1)) as usize];
    let mut total = 0;
    for run in &map.runs {
        let mut pos = 0;
        while pos < run.len {
            let n = (buf.len() as u64).min(run.len - pos) as usize;
            match run.fs_offset {
                Some(off) if !run.unwritten => vol.read_exact(off + pos, &mut buf[..n])?,
                _ => buf[..n].fill(0),
            }
            out.write_all(&buf[..n]).map_err(Error::Write)?;
            pos += n as u64;
            total += n as u64;
        }
    }
    Ok(total)
}

/// A filesystem opened on a volume of the guest disk, with the image it reads: what the CLI
/// and the TUI's Files view use, whatever the filesystem.
pub struct GuestFs {
    pub image: Rc<Image>,
    pub volume: Volume,
    pub fs: Box<dyn Filesystem>,
}

impl GuestFs {
    /// Open the filesystem the probe found on `volume` with the driver registered for it.
    /// Errors: no filesystem, a filesystem no driver reads, damaged structures.
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<GuestFs> {
        let what = volume.describe();
        let Some(info) = &volume.fs else {
            return Err(Error::NoFilesystem(format!("on {}", what)));
        };
        let Some(driver) = driver_for(info.kind) else {
            return Err(Error::Unsupported(format!(
                "unsupported filesystem {} on {}: vdiskview reads {}",
                info.kind.name(),
                what,
                readable_names()
            )));
        };
        let fs = (driver.open)(image.clone(), volume)?;
        Ok(GuestFs { image, volume: volume.clone(), fs })
    }

    pub fn kind(&self) -> FsKind {
        self.fs.kind()
    }

    pub fn block_size(&self) -> u64 {
        self.fs.block_size()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.fs.warnings()
    }

    pub fn stat(&self, path: &str) -> Result<EntryInfo> {
        self.fs.stat(&absolute(path))
    }

    pub fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        self.fs.read_dir(&absolute(path))
    }

    pub fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        self.fs.copy_to(&absolute(path), out)
    }

    /// The file's bytes in memory (for small files; `copy_to` streams).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.copy_to(path, &mut v)?;
        Ok(v)
    }

    pub fn file_map(&self, path: &str) -> Result<FileMap> {
        self.fs.file_map(&absolute(path))
    }

    /// The opened volume's named structures, at guest offsets.
    pub fn regions(&self) -> Vec<Region> {
        let base = self.volume.start;
        self.fs
            .regions()
            .into_iter()
            .map(|mut r| {
                r.start += base;
                r.virt = Some(r.start);
                for f in &mut r.fields {
                    f.off += base;
                }
                r
            })
            .collect()
    }

    /// The file's extents: each file range that lies in one image extent, with its guest
    /// offset and, through the image model, the layer and host offset that hold it.
    pub fn locate(&self, path: &str) -> Result<Located> {
        let path = absolute(path);
        let map = self.fs.file_map(&path)?;
        let mut extents = Vec::new();
        for run in &map.runs {
            let Some(off) = run.fs_offset else {
                extents.push(FileExtent {
                    logical: run.logical,
                    len: run.len,
                    virt: None,
                    image: None,
                    unwritten: false,
                    resident: false,
                });
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
                    resident: run.resident,
                });
            }
        }
        Ok(Located {
            path,
            inode: map.inode,
            inode_kind: map.inode_kind,
            size: map.size,
            inode_offset: map.inode_offset,
            extents,
            notes: map.notes,
        })
    }
}

/// The overlay of a filesystem whose boot structure is its first sector (FAT's BPB, NTFS's
/// boot sector): `boot_region` names its fields, at guest offsets.
pub fn first_sector_overlay(img: &Image, start: u64, len: u64, what: &str, boot_region: fn(&[u8; 512], u64, &str) -> Region) -> Vec<Region> {
    let mut b = [0u8; 512];
    if len < 512 || img.read(start, &mut b).is_err() {
        return Vec::new();
    }
    vec![boot_region(&b, start, what)]
}

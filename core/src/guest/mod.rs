//! Inside the guest disk: partition tables (MBR, GPT), filesystem probing, the filesystems
//! behind one interface ([`fs::Filesystem`]: ext2/3/4, FAT12/16/32, NTFS), and files mapped
//! back to guest and host offsets.
//!
//! Everything here reads guest bytes through [`Image::read`], so it works the same on every
//! format and through backing chains. Every size and offset read from the guest disk is
//! untrusted: reads are checked against the disk (or partition) size, loops are bounded.

pub mod fs;
pub mod partitions;
pub mod regions;

/// The names callers used before the filesystem interface: `ext::ExtFs` is now
/// [`fs::GuestFs`], any filesystem (what [`open_fs`] returns); the ext reader itself is
/// [`fs::ext::ExtFs`].
pub mod ext {
    pub use super::fs::{absolute, EntryInfo, FileExtent, FileMap, FileRun, Located};
    pub type ExtFs = super::fs::GuestFs;
}

use std::rc::Rc;

use crate::image::Image;

pub use fs::{EntryInfo, FileExtent, FileMap, FileRun, Filesystem, GuestFs, Located};
pub use partitions::{read_table, PartKind, PartType, Partition, PartitionTable, Scheme};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    /// No filesystem where one was looked for (the text says where).
    #[error("no filesystem found {0}")]
    NoFilesystem(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}: No such file or directory")]
    NotFound(String),
    #[error("{0}: Not a directory")]
    NotADirectory(String),
    #[error("{0}: Is a directory")]
    IsADirectory(String),
    /// Damaged on-disk structures (superblock, inode, extent tree, partition table).
    #[error("{0}")]
    Damaged(String),
    /// A bad request (no such partition, path not absolute, ...).
    #[error("{0}")]
    Invalid(String),
    /// Writing file bytes out failed (`Filesystem::copy_to`).
    #[error("{0}")]
    Write(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A filesystem recognised by its magic numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Fat12,
    Fat16,
    Fat32,
    ExFat,
    Ntfs,
    Xfs,
    Btrfs,
    Swap,
}

impl FsKind {
    /// The name blkid gives it (FAT variants as `vfat`'s version in [`FsKind::detail`]).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::ExFat => "exfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Swap => "swap",
        }
    }

    pub fn is_ext(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
    }
}

/// What [`probe_fs`] found at the start of a byte range of the guest disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    /// Volume label, when the filesystem has one and it is not empty.
    pub label: Option<String>,
    pub uuid: Option<String>,
}

/// Read up to `buf.len()` guest bytes at `start + off`, within `[start, start+len)`; returns
/// how many were read (fewer at the end of the range, none past it).
pub(crate) fn read_in(img: &Image, start: u64, len: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
    if off >= len {
        return Ok(0);
    }
    let n = (buf.len() as u64).min(len - off) as usize;
    let virt = start.checked_add(off).ok_or_else(|| Error::Damaged("offset overflows".into()))?;
    let end = virt.checked_add(n as u64).ok_or_else(|| Error::Damaged("offset overflows".into()))?;
    if end > img.virtual_size() {
        return Err(Error::Damaged(format!(
            "0x{:x} bytes at guest offset 0x{:x} go past the end of the disk (0x{:x})",
            n,
            virt,
            img.virtual_size()
        )));
    }
    img.read(virt, &mut buf[..n])?;
    Ok(n)
}

/// Look for a filesystem at the start of `[start, start+len)` of the guest disk: ext2/3/4,
/// FAT, exFAT, NTFS, XFS, btrfs, Linux swap. Reads a few sectors; never fails on odd bytes.
pub fn probe_fs(img: &Image, start: u64, len: u64) -> Result<Option<FsInfo>> {
    let len = len.min(img.virtual_size().saturating_sub(start));
    let mut head = [0u8; 4096];
    let n = read_in(img, start, len, 0, &mut head)?;
    let head = &head[..n];
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    // ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38 in it
    if head.len() >= 2048 && at(1024 + 0x38, &[0x53, 0xef]) {
        let sb = &head[1024..2048];
        let le32 = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
        let (compat, incompat, ro) = (le32(0x5c), le32(0x60), le32(0x64));
        // extents, 64bit, flex_bg, mmp, csum_seed, inline data / huge_file, gdt_csum,
        // dir_nlink, extra_isize, metadata_csum
        let kind = if incompat & (0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x8000) != 0
            || ro & (0x8 | 0x10 | 0x20 | 0x40 | 0x400) != 0
        {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        return Ok(Some(FsInfo { kind, label: text_label(&sb[0x78..0x88]), uuid: Some(uuid_be(&sb[0x68..0x78])) }));
    }
    if at(0, b"XFSB") {
        return Ok(Some(FsInfo { kind: FsKind::Xfs, label: head.get(108..120).and_then(text_label), uuid: None }));
    }
    if at(3, b"NTFS    ") {
        return Ok(Some(FsInfo { kind: FsKind::Ntfs, label: None, uuid: None }));
    }
    if at(3, b"EXFAT   ") {
        return Ok(Some(FsInfo { kind: FsKind::ExFat, label: None, uuid: None }));
    }
    if at(510, &[0x55, 0xaa]) {
        if at(0x52, b"FAT32   ") {
            return Ok(Some(FsInfo { kind: FsKind::Fat32, label: head.get(0x47..0x52).and_then(text_label), uuid: None }));
        }
        for (magic, kind) in [(&b"FAT12   "[..], FsKind::Fat12), (b"FAT16   ", FsKind::Fat16), (b"FAT     ", FsKind::Fat16)] {
            if at(0x36, magic) {
                return Ok(Some(FsInfo { kind, label: head.get(0x2b..0x36).and_then(text_label), uuid: None }));
            }
        }
    }
    if head.len() == 4096 && (at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE")) {
        return Ok(Some(FsInfo { kind: FsKind::Swap, label: head.get(1024 + 28..1024 + 44).and_then(text_label), uuid: None }));
    }
    // btrfs: the superblock at 64 KiB (magic at 0x40, fsid at 0x20, label at 0x12b)
    let mut b = [0u8; 0x22b];
    if read_in(img, start, len, 0x10000, &mut b)? == b.len() && &b[0x40..0x48] == b"_BHRfS_M" {
        return Ok(Some(FsInfo { kind: FsKind::Btrfs, label: text_label(&b[0x12b..0x22b]), uuid: Some(uuid_be(&b[0x20..0x30])) }));
    }
    Ok(None)
}

/// A NUL- or space-padded label; None when empty.
fn text_label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// A UUID stored as 16 bytes in order (ext superblock), as lower-case text.
fn uuid_be(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{:02x}", x)).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The byte range a filesystem command works on: a partition or the whole disk.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Partition index as [`read_table`] numbers it; None for the whole disk.
    pub partition: Option<u32>,
    pub start: u64,
    pub len: u64,
    pub fs: Option<FsInfo>,
}

impl Volume {
    /// "partition 2" or "the whole disk", for messages.
    pub fn describe(&self) -> String {
        match self.partition {
            Some(n) => format!("partition {}", n),
            None => "the whole disk".to_string(),
        }
    }
}

/// Choose the volume a filesystem command works on. `partition`: `Some(0)` is the whole disk,
/// `Some(n)` partition n; `None` picks the first partition that holds a filesystem vdiskview
/// reads (or else any filesystem, which then is reported as unsupported), or the whole disk
/// when there is no partition table.
pub fn select_volume(img: &Image, table: &PartitionTable, partition: Option<u32>) -> Result<Volume> {
    let size = img.virtual_size();
    let whole = |img: &Image| -> Result<Volume> {
        Ok(Volume { partition: None, start: 0, len: size, fs: probe_fs(img, 0, size)? })
    };
    match partition {
        Some(0) => {
            let v = whole(img)?;
            if v.fs.is_none() {
                return Err(Error::NoFilesystem("on the whole disk".into()));
            }
            Ok(v)
        }
        Some(n) => {
            let p = table.partitions.iter().find(|p| p.index == n).ok_or_else(|| {
                let have: Vec<String> = table.partitions.iter().map(|p| p.index.to_string()).collect();
                Error::Invalid(if have.is_empty() {
                    format!("no partition {}: the disk has no partitions", n)
                } else {
                    format!("no partition {}: the disk has partitions {}", n, have.join(", "))
                })
            })?;
            if p.kind == PartKind::Extended {
                return Err(Error::NoFilesystem(format!(
                    "in partition {}: it is an extended partition (a container of logical partitions)",
                    n
                )));
            }
            let (start, len) = p.readable_range(size);
            let fs = p.fs.clone();
            if fs.is_none() {
                return Err(Error::NoFilesystem(format!("in partition {}", n)));
            }
            Ok(Volume { partition: Some(n), start, len, fs })
        }
        None => {
            if table.scheme.is_none() {
                let v = whole(img)?;
                if v.fs.is_none() {
                    return Err(Error::NoFilesystem("on the disk (it has no partition table either)".into()));
                }
                return Ok(v);
            }
            let pick = table
                .partitions
                .iter()
                .find(|p| p.fs.as_ref().is_some_and(|f| fs::driver_for(f.kind).is_some()))
                .or_else(|| table.partitions.iter().find(|p| p.fs.is_some()));
            match pick {
                Some(p) => {
                    let (start, len) = p.readable_range(size);
                    Ok(Volume { partition: Some(p.index), start, len, fs: p.fs.clone() })
                }
                None => Err(Error::NoFilesystem(format!(
                    "on any partition of the disk ({} partition table, {} partition{})",
                    table.scheme.map(|s| s.name()).unwrap_or("no"),
                    table.partitions.len(),
                    if table.partitions.len() == 1 { "" } else { "s" }
                ))),
            }
        }
    }
}

/// Open the filesystem a command works on, whatever its kind: on partition `partition`
/// (0 = the whole disk), or as [`select_volume`] chooses.
pub fn open_fs(image: Rc<Image>, partition: Option<u32>) -> Result<GuestFs> {
    let table = read_table(&image)?;
    let vol = select_volume(&image, &table, partition)?;
    GuestFs::open(image, &vol)
}

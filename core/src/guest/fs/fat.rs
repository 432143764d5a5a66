//! FAT12/16/32: our own small reader of the BPB, the FAT, directories (with VFAT long names)
//! and cluster chains, so `locate` can give each run of clusters.
//!
//! Not the `fatfs` crate: its released version (0.3) does not expose a file's first cluster or
//! its chain, which `locate` needs, and it wants a `Read + Write + Seek` device; the format is
//! small enough that reading it ourselves is shorter than working around that.
//!
//! Every number from the volume is bounded: the BPB's layout must fit the volume, a cluster
//! chain is followed at most once per cluster (a loop is damage), a directory is at most the
//! 65536 entries FAT allows.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use super::{base_name, components, copy_runs, push_run, EntryInfo, FileMap, FileRun, Filesystem, FsDriver, VolumeReader};
use crate::guest::{Error, FsKind, Result, Volume};
use crate::image::bytes::{le16, le32};
use crate::image::region::{Field, Region};
use crate::image::Image;

/// FAT12/16/32 in the registry of filesystems.
pub static DRIVER: FsDriver = FsDriver {
    name: "FAT12/16/32",
    kinds: &[FsKind::Fat12, FsKind::Fat16, FsKind::Fat32],
    open: |image, volume| Ok(Box::new(FatFs::open(image, volume)?)),
    overlay,
};

/// Most entries a FAT directory may hold (the spec's limit).
const MAX_DIR_ENTRIES: u64 = 65536;

/// The BPB's numbers, checked against the volume.
#[derive(Clone, Debug)]
pub struct Bpb {
    pub kind: FsKind,
    pub bytes_per_sector: u64,
    pub cluster_size: u64,
    /// Volume offset of the first FAT.
    pub fat_offset: u64,
    /// Bytes per FAT.
    pub fat_size: u64,
    pub num_fats: u64,
    /// FAT12/16: the fixed root directory (offset, bytes); FAT32: unused.
    pub root_dir: (u64, u64),
    /// FAT32: the root directory's first cluster.
    pub root_cluster: u32,
    /// Volume offset of cluster 2.
    pub data_offset: u64,
    /// Number of data clusters (clusters 2 ..= count + 1).
    pub clusters: u64,
    pub label: Option<String>,
}

impl Bpb {
    /// Parse the boot sector of a FAT volume of `vol_len` bytes; the error says what is wrong.
    pub fn parse(b: &[u8], vol_len: u64) -> std::result::Result<Bpb, String> {
        if b.len() < 512 {
            return Err("the volume is too small to hold a boot sector".into());
        }
        let bps = le16(b, 0x0b) as u64;
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(format!("bytes per sector {} is not 512, 1024, 2048 or 4096", bps));
        }
        let spc = b[0x0d] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            return Err(format!("sectors per cluster {} is not a power of two", spc));
        }
        let reserved = le16(b, 0x0e) as u64;
        if reserved == 0 {
            return Err("zero reserved sectors".into());
        }
        let num_fats = b[0x10] as u64;
        if num_fats == 0 {
            return Err("zero FATs".into());
        }
        let root_entries = le16(b, 0x11) as u64;
        let total = match le16(b, 0x13) {
            0 => le32(b, 0x20) as u64,
            n => n as u64,
        };
        let fat_sectors = match le16(b, 0x16) {
            0 => le32(b, 0x24) as u64,
            n => n as u64,
        };
        if fat_sectors == 0 {
            return Err("zero sectors per FAT".into());
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let meta = reserved + num_fats * fat_sectors + root_sectors;
        if total <= meta {
            return Err(format!("{} sectors do not hold the {} sectors of FATs and root directory", total, meta));
        }
        if total.saturating_mul(bps) > vol_len.saturating_add(bps * spc) {
            // a little slack: mkfs rounds; more than a cluster is a wrong count
            if meta * bps > vol_len {
                return Err(format!("the FATs and root directory ({} sectors) do not fit the volume of {} bytes", meta, vol_len));
            }
        }
        let clusters = (total - meta) / spc;
        let fat32 = le16(b, 0x16) == 0;
        let kind = if clusters < 4085 {
            FsKind::Fat12
        } else if clusters < 65525 {
            FsKind::Fat16
        } else {
            FsKind::Fat32
        };
        if fat32 != (kind == FsKind::Fat32) && !(fat32 && root_entries == 0) {
            return Err(format!("{} clusters make a {} but the BPB has the other layout", clusters, kind.name()));
        }
        // FAT32 layout even with few clusters (mkfs.fat -F 32 on a small volume)
        let kind = if fat32 { FsKind::Fat32 } else { kind };
        let entry_bits = match kind {
            FsKind::Fat12 => 12,
            FsKind::Fat16 => 16,
            _ => 32,
        };
        if (clusters + 2) * entry_bits / 8 > fat_sectors * bps {
            return Err(format!("{} clusters do not fit a FAT of {} sectors", clusters, fat_sectors));
        }
        let fat_offset = reserved * bps;
        let root_dir = ((reserved + num_fats * fat_sectors) * bps, root_sectors * bps);
        let data_offset = meta * bps;
        if data_offset > vol_len {
            return Err(format!("the data area at 0x{:x} is past the end of the volume", data_offset));
        }
        let root_cluster = if kind == FsKind::Fat32 { le32(b, 0x2c) } else { 0 };
        if kind == FsKind::Fat32 && (root_cluster < 2 || root_cluster as u64 >= clusters + 2) {
            return Err(format!("the root directory's cluster {} is outside the volume", root_cluster));
        }
        let label_at = if kind == FsKind::Fat32 { 0x47 } else { 0x2b };
        let label = text(&b[label_at..label_at + 11]);
        let label = label.filter(|l| l != "NO NAME");
        Ok(Bpb {
            kind,
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            fat_offset,
            fat_size: fat_sectors * bps,
            num_fats,
            root_dir,
            root_cluster,
            data_offset,
            clusters,
            label,
        })
    }
}

fn text(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string();
    (!s.is_empty()).then_some(s)
}

/// One directory entry as read: its name, the 32-byte short entry and where that sits.
#[derive(Clone, Debug)]
struct DirEnt {
    name: String,
    short: String,
    attr: u8,
    first_cluster: u32,
    size: u64,
    mtime: i64,
    /// Volume offset of the short entry.
    offset: Option<u64>,
}

impl DirEnt {
    fn is_dir(&self) -> bool {
        self.attr & 0x10 != 0
    }

    fn info(&self, name: String) -> EntryInfo {
        let dir = self.is_dir();
        let ro = self.attr & 0x01 != 0;
        let mode = match (dir, ro) {
            (true, _) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        let mut e = EntryInfo::new(name, if dir { 'd' } else { '-' }, mode, if dir { 0 } else { self.size }, self.mtime);
        let mut attrs = vec![];
        for (bit, n) in [(0x01, "readonly"), (0x02, "hidden"), (0x04, "system"), (0x20, "archive")] {
            if self.attr & bit != 0 {
                attrs.push(n);
            }
        }
        e.attributes = attrs.join(",");
        e
    }
}

/// A FAT12/16/32 filesystem on a volume of the guest disk.
pub struct FatFs {
    pub vol: VolumeReader,
    pub bpb: Bpb,
    /// The first FAT, read when first needed (bounded by the BPB, which fits the volume).
    fat: RefCell<Option<Rc<Vec<u8>>>>,
    warnings: RefCell<Vec<String>>,
}

impl FatFs {
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<FatFs> {
        let vol = VolumeReader::new(image, volume);
        let mut b = vec![0u8; 512];
        vol.read_exact(0, &mut b)
            .map_err(|e| Error::Damaged(format!("damaged FAT boot sector on {}: {}", volume.describe(), e)))?;
        let bpb = Bpb::parse(&b, volume.len)
            .map_err(|why| Error::Damaged(format!("damaged FAT boot sector on {}: {}", volume.describe(), why)))?;
        Ok(FatFs { vol, bpb, fat: RefCell::new(None), warnings: RefCell::new(Vec::new()) })
    }

    fn fat(&self) -> Result<Rc<Vec<u8>>> {
        if let Some(f) = &*self.fat.borrow() {
            return Ok(f.clone());
        }
        let bits = match self.bpb.kind {
            FsKind::Fat12 => 12,
            FsKind::Fat16 => 16,
            _ => 32,
        };
        let len = ((self.bpb.clusters + 2) * bits).div_ceil(8).min(self.bpb.fat_size);
        let f = Rc::new(self.vol.read_vec(self.bpb.fat_offset, len)?);
        *self.fat.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    /// The FAT entry of cluster `c` (masked to the FAT's width).
    fn next(&self, fat: &[u8], c: u32) -> Option<u32> {
        let c = c as usize;
        match self.bpb.kind {
            FsKind::Fat12 => {
                let o = c + c / 2;
                let v = *fat.get(o)? as u32 | (*fat.get(o + 1)? as u32) << 8;
                Some(if c & 1 == 1 { v >> 4 } else { v & 0xfff })
            }
            FsKind::Fat16 => Some(le16(fat.get(c * 2..c * 2 + 2)?, 0) as u32),
            _ => Some(le32(fat.get(c * 4..c * 4 + 4)?, 0) & 0x0fff_ffff),
        }
    }

    fn is_end(&self, v: u32) -> bool {
        match self.bpb.kind {
            FsKind::Fat12 => v >= 0xff8,
            FsKind::Fat16 => v >= 0xfff8,
            _ => v >= 0x0fff_fff8,
        }
    }

    /// The clusters of the chain from `first`, as runs (first cluster, count); at most
    /// `max_clusters` clusters are followed (`None`: until the end of the chain).
    fn chain(&self, first: u32, max_clusters: Option<u64>) -> Result<Vec<(u32, u64)>> {
        let fat = self.fat()?;
        let limit = self.bpb.clusters + 2;
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut c = first;
        let mut steps = 0u64;
        loop {
            if (c as u64) < 2 || c as u64 >= limit {
                return Err(Error::Damaged(format!(
                    "damaged FAT: a cluster chain from cluster {} reaches cluster {}, outside the volume (2-{})",
                    first,
                    c,
                    limit - 1
                )));
            }
            steps += 1;
            if steps > self.bpb.clusters {
                return Err(Error::Damaged(format!("damaged FAT: the cluster chain from cluster {} loops", first)));
            }
            match runs.last_mut() {
                Some(last) if last.0 as u64 + last.1 == c as u64 => last.1 += 1,
                _ => runs.push((c, 1)),
            }
            if max_clusters.is_some_and(|m| steps >= m) {
                break;
            }
            let n = self.next(&fat, c).unwrap_or(0);
            if self.is_end(n) {
                break;
            }
            if n == 0 || (self.bpb.kind == FsKind::Fat12 && n == 0xff7) || (self.bpb.kind == FsKind::Fat16 && n == 0xfff7) || n == 0x0fff_fff7 {
                return Err(Error::Damaged(format!(
                    "damaged FAT: the cluster chain from cluster {} runs into a {} cluster after cluster {}",
                    first,
                    if n == 0 { "free" } else { "bad" },
                    c
                )));
            }
            c = n;
        }
        Ok(runs)
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.bpb.data_offset + (c as u64 - 2) * self.bpb.cluster_size
    }

    /// The raw bytes of a directory: the fixed root (FAT12/16) or a cluster chain, with the
    /// volume offset of each byte's cluster start (for the entries' offsets).
    fn dir_bytes(&self, first_cluster: u32) -> Result<(Vec<u8>, Vec<(u64, u64)>)> {
        let cap = MAX_DIR_ENTRIES * 32;
        if first_cluster == 0 {
            // the root of FAT12/16 (FAT32's root has its own cluster)
            if self.bpb.kind == FsKind::Fat32 {
                return self.dir_bytes(self.bpb.root_cluster);
            }
            let (off, len) = self.bpb.root_dir;
            let len = len.min(cap);
            return Ok((self.vol.read_vec(off, len)?, vec![(off, len)]));
        }
        let max = cap.div_ceil(self.bpb.cluster_size);
        let runs = self.chain(first_cluster, Some(max))?;
        let mut bytes = Vec::new();
        let mut places = Vec::new();
        for (c, n) in runs {
            let off = self.cluster_offset(c);
            let len = n * self.bpb.cluster_size;
            bytes.extend(self.vol.read_vec(off, len)?);
            places.push((off, len));
        }
        Ok((bytes, places))
    }

    /// The entries of the directory starting at `first_cluster` (0: the root), `.`/`..` and
    /// the volume label left out.
    fn entries(&self, first_cluster: u32) -> Result<Vec<DirEnt>> {
        let (bytes, places) = self.dir_bytes(first_cluster)?;
        let place = |pos: u64| -> Option<u64> {
            let mut base = 0;
            for &(off, len) in &places {
                if pos < base + len {
                    return Some(off + pos - base);
                }
                base += len;
            }
            None
        };
        let mut out = Vec::new();
        let mut lfn: Vec<(u8, [u16; 13])> = Vec::new();
        let mut lfn_sum = None;
        for (i, e) in bytes.chunks_exact(32).enumerate() {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 {
                lfn.clear();
                continue;
            }
            let attr = e[11];
            if attr & 0x3f == 0x0f {
                // a long-name piece: 13 UCS-2 characters, the last piece first
                let seq = e[0];
                if seq & 0x40 != 0 {
                    lfn.clear();
                    lfn_sum = Some(e[13]);
                }
                let mut part = [0u16; 13];
                let offs = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                for (k, &o) in offs.iter().enumerate() {
                    part[k] = le16(e, o);
                }
                lfn.push((seq & 0x1f, part));
                continue;
            }
            if attr & 0x08 != 0 {
                lfn.clear();
                continue; // volume label
            }
            let short = short_name(e);
            let sum = e[..11].iter().fold(0u8, |s, &c| (s >> 1 | (s & 1) << 7).wrapping_add(c));
            let long = if !lfn.is_empty() && lfn_sum == Some(sum) {
                let mut parts = std::mem::take(&mut lfn);
                parts.sort_by_key(|p| p.0);
                let units: Vec<u16> =
                    parts.iter().flat_map(|p| p.1.iter().copied()).take_while(|&u| u != 0 && u != 0xffff).collect();
                Some(String::from_utf16_lossy(&units))
            } else {
                None
            };
            lfn.clear();
            if short == "." || short == ".." {
                continue;
            }
            let first = (le16(e, 0x14) as u32) << 16 | le16(e, 0x1a) as u32;
            out.push(DirEnt {
                name: long.unwrap_or_else(|| short.clone()),
                short,
                attr,
                first_cluster: if self.bpb.kind == FsKind::Fat32 { first } else { first & 0xffff },
                size: le32(e, 0x1c) as u64,
                mtime: dos_time(le16(e, 0x18), le16(e, 0x16)),
                offset: place(i as u64 * 32),
            });
        }
        Ok(out)
    }

    /// The entry at `path`: None for the root.
    fn lookup(&self, path: &str) -> Result<Option<DirEnt>> {
        let mut cur: Option<DirEnt> = None;
        let mut walked = String::new();
        for comp in components(path) {
            if comp == ".." {
                return Err(Error::Invalid(format!("{}: `..` is not supported in paths", path)));
            }
            if let Some(c) = &cur {
                if !c.is_dir() {
                    return Err(Error::NotADirectory(walked));
                }
            }
            walked.push('/');
            walked.push_str(comp);
            let dir = cur.as_ref().map(|c| c.first_cluster).unwrap_or(0);
            let ents = self.entries(dir)?;
            let found = ents
                .iter()
                .find(|e| e.name == comp)
                .or_else(|| ents.iter().find(|e| e.name.eq_ignore_ascii_case(comp) || e.short.eq_ignore_ascii_case(comp)))
                .cloned();
            cur = Some(found.ok_or_else(|| Error::NotFound(walked.clone()))?);
        }
        Ok(cur)
    }

    fn map(&self, path: &str) -> Result<FileMap> {
        let ent = self.lookup(path)?;
        let Some(ent) = ent else { return Err(Error::IsADirectory(path.to_string())) };
        if ent.is_dir() {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let cs = self.bpb.cluster_size;
        let mut runs = Vec::new();
        if ent.size > 0 {
            if ent.first_cluster == 0 {
                return Err(Error::Damaged(format!("{}: a file of {} bytes with no clusters", path, ent.size)));
            }
            let need = ent.size.div_ceil(cs);
            let chain = self.chain(ent.first_cluster, Some(need))?;
            let got: u64 = chain.iter().map(|r| r.1).sum();
            let mut pos = 0u64;
            for (c, n) in chain {
                let len = (n * cs).min(ent.size - pos);
                push_run(&mut runs, FileRun::data(pos, len, self.cluster_offset(c)));
                pos += len;
            }
            if got < need {
                self.warnings.borrow_mut().push(format!(
                    "{}: the cluster chain holds {} of the file's {} bytes; the rest reads as zeros",
                    path, pos, ent.size
                ));
                push_run(&mut runs, FileRun::hole(pos, ent.size - pos));
            }
        }
        Ok(FileMap {
            inode: ent.first_cluster as u64,
            inode_kind: "first cluster",
            size: ent.size,
            inode_offset: ent.offset,
            runs,
            notes: Vec::new(),
        })
    }
}

/// `NAME.EXT` from a short entry, lower-cased where the NT case bits say so (as Linux shows it).
fn short_name(e: &[u8]) -> String {
    let mut base: Vec<u8> = e[0..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xe5;
    }
    let lower_base = e[12] & 0x08 != 0;
    let lower_ext = e[12] & 0x10 != 0;
    let conv = |b: &[u8], lower: bool| -> String {
        let s: String = b.iter().map(|&c| if c < 0x80 { c as char } else { char::from_u32(c as u32).unwrap_or('?') }).collect();
        let s = s.trim_end().to_string();
        if lower {
            s.to_ascii_lowercase()
        } else {
            s
        }
    };
    let base = conv(&base, lower_base);
    let ext = conv(&e[8..11], lower_ext);
    if ext.is_empty() {
        base
    } else {
        format!("{}.{}", base, ext)
    }
}

/// Seconds since 1970 from a DOS date and time (taken as UTC).
fn dos_time(date: u16, time: u16) -> i64 {
    let y = 1980 + (date >> 9) as i64;
    let m = ((date >> 5) & 15).clamp(1, 12) as i64;
    let d = (date & 31).max(1) as i64;
    // days from civil (Howard Hinnant)
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + (time >> 11) as i64 * 3600 + ((time >> 5) & 63) as i64 * 60 + (time & 31) as i64 * 2
}

impl Filesystem for FatFs {
    fn kind(&self) -> FsKind {
        self.bpb.kind
    }
    fn block_size(&self) -> u64 {
        self.bpb.cluster_size
    }
    fn label(&self) -> Option<String> {
        self.bpb.label.clone()
    }
    fn stat(&self, path: &str) -> Result<EntryInfo> {
        Ok(match self.lookup(path)? {
            None => EntryInfo::new("/".into(), 'd', 0o755, 0, 0),
            Some(e) => e.info(base_name(path)),
        })
    }
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let first = match self.lookup(path)? {
            None => 0,
            Some(e) if e.is_dir() => {
                if e.first_cluster == 0 {
                    // ".." of a top-level folder points at 0, the root; a folder itself never does
                    return Err(Error::Damaged(format!("{}: a directory with no clusters", path)));
                }
                e.first_cluster
            }
            Some(_) => return Err(Error::NotADirectory(path.to_string())),
        };
        let mut out: Vec<EntryInfo> = self.entries(first)?.into_iter().map(|e| e.info(e.name.clone())).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let map = self.map(path)?;
        copy_runs(&self.vol, &map, out)
    }
    fn file_map(&self, path: &str) -> Result<FileMap> {
        self.map(path)
    }
    fn regions(&self) -> Vec<Region> {
        let mut b = [0u8; 512];
        if self.vol.read_exact(0, &mut b).is_err() {
            return Vec::new();
        }
        let mut v = vec![boot_region(&b, 0, &self.vol.what)];
        let b = &self.bpb;
        for i in 0..b.num_fats.min(4) {
            let mut r = Region::new(b.fat_offset + i * b.fat_size, b.fat_size, "fat", format!("FAT #{}", i + 1));
            r.virt = Some(r.start);
            v.push(r);
        }
        if b.root_dir.1 > 0 {
            v.push(Region::new(b.root_dir.0, b.root_dir.1, "fat-root-dir", "root directory"));
        }
        v
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
}

fn field(base: u64, off: usize, len: usize, name: &str, value: String) -> Field {
    Field { off: base + off as u64, len: len as u64, name: name.into(), value }
}

/// The boot sector `b` with its BPB fields, the sector at `base`.
fn boot_region(b: &[u8; 512], base: u64, what: &str) -> Region {
    let fat32 = le16(b, 0x16) == 0;
    let mut r = Region::new(base, 512, "fat-boot-sector", format!("FAT boot sector of {}", what));
    r.virt = Some(base);
    let mut f = vec![
        field(base, 0x03, 8, "OEM name", String::from_utf8_lossy(&b[3..11]).into_owned()),
        field(base, 0x0b, 2, "bytes per sector", le16(b, 0x0b).to_string()),
        field(base, 0x0d, 1, "sectors per cluster", b[0x0d].to_string()),
        field(base, 0x0e, 2, "reserved sectors", le16(b, 0x0e).to_string()),
        field(base, 0x10, 1, "number of FATs", b[0x10].to_string()),
        field(base, 0x11, 2, "root entries", le16(b, 0x11).to_string()),
        field(base, 0x13, 2, "total sectors (16)", le16(b, 0x13).to_string()),
        field(base, 0x15, 1, "media", format!("0x{:02x}", b[0x15])),
        field(base, 0x16, 2, "sectors per FAT (16)", le16(b, 0x16).to_string()),
        field(base, 0x1c, 4, "hidden sectors", le32(b, 0x1c).to_string()),
        field(base, 0x20, 4, "total sectors (32)", le32(b, 0x20).to_string()),
    ];
    if fat32 {
        f.push(field(base, 0x24, 4, "sectors per FAT (32)", le32(b, 0x24).to_string()));
        f.push(field(base, 0x2c, 4, "root cluster", le32(b, 0x2c).to_string()));
        f.push(field(base, 0x30, 2, "FSInfo sector", le16(b, 0x30).to_string()));
        f.push(field(base, 0x43, 4, "volume ID", format!("{:08X}", le32(b, 0x43))));
        f.push(field(base, 0x47, 11, "volume label", String::from_utf8_lossy(&b[0x47..0x52]).into_owned()));
        f.push(field(base, 0x52, 8, "filesystem type", String::from_utf8_lossy(&b[0x52..0x5a]).into_owned()));
    } else {
        f.push(field(base, 0x27, 4, "volume ID", format!("{:08X}", le32(b, 0x27))));
        f.push(field(base, 0x2b, 11, "volume label", String::from_utf8_lossy(&b[0x2b..0x36]).into_owned()));
        f.push(field(base, 0x36, 8, "filesystem type", String::from_utf8_lossy(&b[0x36..0x3e]).into_owned()));
    }
    f.push(field(base, 0x1fe, 2, "signature", format!("{:02x}{:02x}", b[0x1fe], b[0x1ff])));
    r.fields = f;
    r
}

/// The FAT boot sector of the volume at `[start, start+len)`, at guest offsets.
fn overlay(img: &Image, start: u64, len: u64, what: &str) -> Vec<Region> {
    super::first_sector_overlay(img, start, len, what, boot_region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times() {
        // 2024-01-01 00:00:00
        assert_eq!(dos_time((44 << 9) | (1 << 5) | 1, 0), 1704067200);
        // 1980-01-01 12:34:56
        assert_eq!(dos_time((1 << 5) | 1, (12 << 11) | (34 << 5) | 28), 315532800 + 12 * 3600 + 34 * 60 + 56);
    }

    #[test]
    fn short_names() {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(b"README  TXT");
        assert_eq!(short_name(&e), "README.TXT");
        e[12] = 0x18;
        assert_eq!(short_name(&e), "readme.txt");
        e[..11].copy_from_slice(b"DIR        ");
        assert_eq!(short_name(&e), "dir");
    }

    #[test]
    fn bpb_rejects_nonsense() {
        let mut b = vec![0u8; 512];
        assert!(Bpb::parse(&b, 1 << 20).unwrap_err().contains("bytes per sector"));
        b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        b[0x0d] = 3;
        assert!(Bpb::parse(&b, 1 << 20).unwrap_err().contains("sectors per cluster"));
    }
}

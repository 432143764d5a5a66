//! NTFS, our own reader: the boot sector, $MFT records with fixups checked ([`mft`]: the
//! $MFT's own runs and every file's attributes followed through $ATTRIBUTE_LIST into
//! extension records), directories through $INDEX_ROOT / $INDEX_ALLOCATION ([`index`]),
//! $DATA resident, non-resident, sparse and LZNT1-compressed ([`lznt1`]), named streams, the
//! map of a file's bytes for `locate` (data runs, or "resident in MFT record N"), the overlays.
//!
//! We read NTFS ourselves rather than through the `ntfs` crate because the crate took the
//! $MFT's runs from record 0 alone: an $MFT continued in an extension record (thousands of
//! files on a fragmented volume) made records past the first runs unreadable.
//!
//! Encrypted (EFS) $DATA is refused with a clear message: its bytes are ciphertext.

mod index;
pub mod lznt1;
mod mft;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use index::DirEntry;
use mft::{damaged, Attribute, Geometry, MetaCache, Mft, NonResident, AT_DATA, AT_FILE_NAME, AT_STANDARD_INFORMATION, AT_VOLUME_NAME};

use super::{base_name, components, push_run, EntryInfo, FileMap, FileRun, Filesystem, FsDriver, VolumeReader};
use crate::guest::{Error, FsKind, Result, Volume};
use crate::image::bytes::{le16, le32, le64};
use crate::image::region::{Field, Region};
use crate::image::Image;

/// NTFS in the registry of filesystems.
pub static DRIVER: FsDriver = FsDriver {
    name: "NTFS",
    kinds: &[FsKind::Ntfs],
    open: |image, volume| Ok(Box::new(NtfsFs::open(image, volume)?)),
    overlay,
};

/// Records below this are the filesystem's own ($MFT … $Extend); `ntfsls` hides them too.
const FIRST_USER_RECORD: u64 = 16;
/// The root directory's MFT record.
const ROOT_RECORD: u64 = 5;
/// Most directory levels a path may walk.
const MAX_DEPTH: usize = 1024;

/// An NTFS filesystem on a volume of the guest disk.
pub struct NtfsFs {
    pub vol: VolumeReader,
    mft: Mft,
    label: Option<String>,
    /// Entries left out of a listing because their record is damaged.
    warnings: RefCell<Vec<String>>,
}

/// Seconds since 1970 from NTFS time (100 ns units since 1601).
fn unix_time(t: u64) -> i64 {
    (t / 10_000_000) as i64 - 11_644_473_600
}

/// A path's last component split into name and stream (`file:stream`).
fn split_stream(path: &str) -> (String, String) {
    let comps = components(path);
    let Some(last) = comps.last() else { return ("/".into(), String::new()) };
    match last.split_once(':') {
        Some((name, stream)) => {
            let mut p: Vec<&str> = comps[..comps.len() - 1].to_vec();
            p.push(name);
            (format!("/{}", p.join("/")), stream.to_string())
        }
        None => (format!("/{}", comps.join("/")), String::new()),
    }
}

/// A file opened: its base record number, whether it is a directory, its attributes.
struct File {
    record: u64,
    record_offset: u64,
    dir: bool,
    attrs: Vec<Attribute>,
}

impl File {
    fn data(&self, stream: &str) -> Option<&Attribute> {
        self.attrs.iter().find(|a| a.ty == AT_DATA && a.name.eq_ignore_ascii_case(stream))
    }
}

impl NtfsFs {
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<NtfsFs> {
        let vol = VolumeReader::new(image, volume);
        let what = volume.describe();
        let mut boot = [0u8; 512];
        vol.read_exact(0, &mut boot)?;
        let geo = Geometry::parse(&boot, volume.len).map_err(|e| Error::Damaged(format!("damaged NTFS boot sector on {}: {}", what, e)))?;
        if geo.size > volume.len {
            return Err(Error::Damaged(format!(
                "damaged NTFS boot sector on {}: the filesystem ({} bytes) is larger than its volume ({} bytes)",
                what, geo.size, volume.len
            )));
        }
        let mft = Mft::open(MetaCache::new(vol.clone()), geo).map_err(|e| on(e, &what))?;
        let mut fs = NtfsFs { vol, mft, label: None, warnings: RefCell::new(Vec::new()) };
        // $Volume (record 3) holds the label; a damaged one costs only the label
        fs.label = fs.mft.file(3).ok().and_then(|(_, attrs)| {
            let a = attrs.into_iter().find(|a| a.ty == AT_VOLUME_NAME)?;
            let (v, _) = a.resident?;
            Some(mft::utf16(&v)).filter(|s| !s.is_empty())
        });
        // the root must open: a volume whose root is damaged is reported at once
        fs.file(ROOT_RECORD).map_err(|e| on(e, &what))?;
        Ok(fs)
    }

    fn file(&self, record: u64) -> Result<File> {
        let (rec, attrs) = self.mft.file(record)?;
        Ok(File { record, record_offset: rec.offset(), dir: rec.is_directory(), attrs })
    }

    fn dir_entries(&self, dir: &File) -> Result<Vec<DirEntry>> {
        index::entries(&self.mft, dir.record, &dir.attrs)
    }

    /// The file at `path` (no stream part).
    fn find(&self, path: &str) -> Result<File> {
        let mut file = self.file(ROOT_RECORD)?;
        let mut walked = String::new();
        for (depth, comp) in components(path).into_iter().enumerate() {
            if !file.dir {
                return Err(Error::NotADirectory(walked));
            }
            if depth > MAX_DEPTH {
                return Err(damaged(format!("{}: more than {} levels", path, MAX_DEPTH)));
            }
            walked.push('/');
            walked.push_str(comp);
            let entries = self.dir_entries(&file)?;
            // the exact name first; then as Windows finds names, ignoring case
            let hit = entries.iter().find(|e| e.name == comp).or_else(|| {
                let up = comp.to_uppercase();
                entries.iter().find(|e| e.name.to_uppercase() == up)
            });
            let Some(hit) = hit else { return Err(Error::NotFound(walked)) };
            file = self.file(hit.record)?;
        }
        Ok(file)
    }

    /// Size, times and attributes of a file; its named streams.
    fn info(&self, file: &File, name: String) -> EntryInfo {
        let si = file.attrs.iter().find(|a| a.ty == AT_STANDARD_INFORMATION).and_then(|a| a.resident.as_ref()).map(|r| &r.0);
        let (mtime, flags) = match si {
            Some(v) if v.len() >= 36 => (unix_time(le64(v, 8)), le32(v, 32)),
            // no $STANDARD_INFORMATION: the times of a $FILE_NAME
            _ => match file.attrs.iter().find(|a| a.ty == AT_FILE_NAME).and_then(|a| a.resident.as_ref()) {
                Some((v, _)) if v.len() >= 60 => (unix_time(le64(v, 16)), le32(v, 56)),
                _ => (0, 0),
            },
        };
        let mut size = 0;
        let mut streams = Vec::new();
        let mut attrs = Vec::new();
        for a in file.attrs.iter().filter(|a| a.ty == AT_DATA) {
            if a.name.is_empty() {
                size = a.size();
                if a.flags & mft::FLAG_COMPRESSED != 0 {
                    attrs.push("compressed");
                }
                if a.flags & mft::FLAG_SPARSE != 0 {
                    attrs.push("sparse");
                }
            } else {
                streams.push((a.name.clone(), a.size()));
            }
        }
        for (bit, n) in [(0x1u32, "readonly"), (0x2, "hidden"), (0x4, "system"), (0x4000, "encrypted")] {
            if flags & bit != 0 {
                attrs.push(n);
            }
        }
        let ro = flags & 1 != 0;
        let dir = file.dir;
        let mode = if dir { 0o755 } else if ro { 0o444 } else { 0o644 };
        let mut e = EntryInfo::new(name, if dir { 'd' } else { '-' }, mode, if dir { 0 } else { size }, mtime);
        e.attributes = attrs.join(",");
        e.streams = streams;
        e
    }

    /// The file and its $DATA attribute (`stream` "" for the unnamed one), checked readable.
    fn data_attr(&self, path: &str) -> Result<(File, Attribute)> {
        let (fpath, stream) = split_stream(path);
        let file = self.find(&fpath)?;
        if file.dir && stream.is_empty() {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let a = file.data(&stream).cloned().ok_or_else(|| {
            if stream.is_empty() {
                Error::Invalid(format!("{}: the file has no data stream", path))
            } else {
                Error::NotFound(path.to_string())
            }
        })?;
        if a.flags & mft::FLAG_ENCRYPTED != 0 {
            return Err(Error::Unsupported(format!("{}: the file is encrypted (EFS)", path)));
        }
        let size = a.size();
        if size > self.vol.len.saturating_mul(64) {
            return Err(damaged(format!("{}: a data size of {} bytes on a volume of {}", path, size, self.vol.len)));
        }
        if let Some(nr) = &a.non_resident {
            let covered = nr.runs.last().map(|r| (r.vcn + r.len).saturating_mul(self.mft.geo.cluster_size)).unwrap_or(0);
            if covered < size {
                return Err(damaged(format!("{}: the data runs cover {} of the file's {} bytes", path, covered, size)));
            }
        }
        Ok((file, a))
    }

    /// The compression unit of a compressed attribute, in bytes, checked.
    fn unit_size(&self, nr: &NonResident, path: &str) -> Result<u64> {
        let cs = self.mft.geo.cluster_size;
        if nr.compression_unit == 0 || nr.compression_unit > 8 || (cs << nr.compression_unit) > 2 << 20 {
            return Err(damaged(format!("{}: a compression unit of 2^{} clusters of {} bytes", path, nr.compression_unit, cs)));
        }
        Ok(cs << nr.compression_unit)
    }

    fn data_map(&self, path: &str) -> Result<FileMap> {
        let (file, a) = self.data_attr(path)?;
        self.map_of(&file, &a, path)
    }

    /// The map of attribute `a` (a $DATA of `file`).
    fn map_of(&self, file: &File, a: &Attribute, path: &str) -> Result<FileMap> {
        let size = a.size();
        let mut runs = Vec::new();
        let mut notes = Vec::new();
        let cs = self.mft.geo.cluster_size;
        match (&a.resident, &a.non_resident) {
            (Some((v, pieces)), _) => {
                let mut logical = 0;
                for &(off, len) in pieces {
                    push_run(&mut runs, FileRun { logical, len, fs_offset: Some(off), unwritten: false, resident: true });
                    logical += len;
                }
                // the last two bytes of each 512-byte block of a record hold the update
                // sequence number on disk; the real bytes are in the record's array
                let mut on_disk = vec![0u8; v.len()];
                let mut at = 0;
                for &(off, len) in pieces {
                    self.vol.read_exact(off, &mut on_disk[at..at + len as usize])?;
                    at += len as usize;
                }
                if &on_disk != v {
                    notes.push("some bytes of the resident data sit at a block end of the record, where the disk holds the update sequence number (fixup); they are read from the record's update sequence array".to_string());
                }
                let rec = self.mft.record(a.record)?;
                notes.insert(
                    0,
                    format!(
                        "resident in MFT record {} (the record at volume offset 0x{:x}, the bytes at 0x{:x})",
                        a.record,
                        rec.offset(),
                        pieces.first().map(|p| p.0).unwrap_or(0)
                    ),
                );
            }
            (_, Some(nr)) => {
                for r in &nr.runs {
                    let logical = r.vcn * cs;
                    if logical >= size {
                        break;
                    }
                    let len = (r.len * cs).min(size - logical);
                    match r.lcn {
                        Some(l) => push_run(&mut runs, FileRun::data(logical, len, l * cs)),
                        None => push_run(&mut runs, FileRun::hole(logical, len)),
                    }
                }
                if a.flags & mft::FLAG_COMPRESSED != 0 {
                    let unit = self.unit_size(nr, path)?;
                    notes.push(format!(
                        "NTFS-compressed (LZNT1) in units of {} bytes: a unit stored in fewer clusters holds compressed bytes, so these runs are where the stored clusters lie, by cluster number, not the file's bytes",
                        unit
                    ));
                } else if nr.initialized_size < size {
                    notes.push(format!("bytes from {} on are not initialized and read as zeros", nr.initialized_size));
                }
            }
            _ => return Err(damaged(format!("{}: a $DATA attribute without a value", path))),
        }
        Ok(FileMap { inode: file.record, inode_kind: "MFT record", size, inode_offset: Some(file.record_offset), runs, notes })
    }

    /// Stream a compressed attribute's file bytes: each unit decompressed, stored as is, or zeros.
    fn copy_compressed(&self, nr: &NonResident, size: u64, path: &str, out: &mut dyn Write) -> Result<u64> {
        let cs = self.mft.geo.cluster_size;
        let unit = self.unit_size(nr, path)?;
        let unit_clusters = unit / cs;
        let mut plain = vec![0u8; unit as usize];
        let mut pos = 0u64;
        while pos < size {
            let n = unit.min(size - pos);
            // the unit's clusters: stored ones first, then (if compressed) a sparse tail
            let vcn0 = pos / cs;
            let mut stored = 0u64;
            let mut sparse = 0u64;
            let first = nr.runs.partition_point(|r| r.vcn + r.len <= vcn0);
            for r in nr.runs[first..].iter().take_while(|r| r.vcn < vcn0 + unit_clusters) {
                let s = r.vcn.max(vcn0);
                let e = (r.vcn + r.len).min(vcn0 + unit_clusters);
                if r.lcn.is_some() {
                    stored += e - s;
                } else {
                    sparse += e - s;
                }
            }
            if stored == 0 {
                plain.fill(0);
            } else if sparse == 0 || stored == unit_clusters {
                let k = n.min(stored * cs) as usize;
                plain[..k].copy_from_slice(&self.mft.read_clusters(nr, pos, k as u64)?);
                plain[k..].fill(0);
            } else {
                let src = self.mft.read_clusters(nr, pos, stored * cs)?;
                plain.fill(0);
                lznt1::decompress(&src, &mut plain).map_err(|e| Error::Damaged(format!("{}: {}", path, e)))?;
            }
            // past the initialized size the file reads as zeros
            let init = nr.initialized_size.saturating_sub(pos).min(n) as usize;
            plain[init..n as usize].fill(0);
            out.write_all(&plain[..n as usize]).map_err(Error::Write)?;
            pos += n;
        }
        Ok(size)
    }
}

/// An error while opening, said of the volume.
fn on(e: Error, what: &str) -> Error {
    match e {
        Error::Damaged(m) => Error::Damaged(format!("{} (on {})", m, what)),
        e => e,
    }
}

impl Filesystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }
    fn block_size(&self) -> u64 {
        self.mft.geo.cluster_size
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn stat(&self, path: &str) -> Result<EntryInfo> {
        let (fpath, stream) = split_stream(path);
        let file = self.find(&fpath)?;
        let mut e = self.info(&file, base_name(path));
        if !stream.is_empty() {
            let s = e.streams.iter().find(|s| s.0.eq_ignore_ascii_case(&stream)).ok_or_else(|| Error::NotFound(path.to_string()))?;
            e.size = s.1;
            e.type_char = '-';
            e.streams.clear();
        }
        Ok(e)
    }
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let dir = self.find(path)?;
        if !dir.dir {
            return Err(Error::NotADirectory(path.to_string()));
        }
        let mut out = Vec::new();
        for e in self.dir_entries(&dir)? {
            // an 8.3 alias is the same file again under its short name
            if e.namespace == 2 || e.record < FIRST_USER_RECORD {
                continue;
            }
            // a damaged record costs its entry, not the listing
            match self.file(e.record) {
                Ok(file) => out.push(self.info(&file, e.name)),
                Err(err) => {
                    let mut w = self.warnings.borrow_mut();
                    if w.len() < 100 {
                        w.push(format!("{}/{} (MFT record {}) left out: {}", path.trim_end_matches('/'), e.name, e.record, err));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let (file, a) = self.data_attr(path)?;
        let size = a.size();
        match (&a.resident, &a.non_resident) {
            // resident bytes as read from the record (fixups applied)
            (Some((v, _)), _) => {
                out.write_all(v).map_err(Error::Write)?;
                Ok(v.len() as u64)
            }
            (_, Some(nr)) if a.flags & mft::FLAG_COMPRESSED != 0 => self.copy_compressed(nr, size, path, out),
            (_, Some(nr)) => {
                let mut map = self.map_of(&file, &a, path)?;
                // past the initialized size the bytes read as zeros, whatever the clusters hold
                let init = nr.initialized_size.min(size);
                let mut runs = Vec::new();
                for r in map.runs.drain(..) {
                    if r.logical + r.len <= init || r.fs_offset.is_none() {
                        runs.push(r);
                    } else if r.logical >= init {
                        runs.push(FileRun::hole(r.logical, r.len));
                    } else {
                        let k = init - r.logical;
                        runs.push(FileRun { len: k, ..r });
                        runs.push(FileRun::hole(init, r.len - k));
                    }
                }
                map.runs = runs;
                super::copy_runs(&self.vol, &map, out)
            }
            _ => Err(damaged(format!("{}: a $DATA attribute without a value", path))),
        }
    }
    fn file_map(&self, path: &str) -> Result<FileMap> {
        self.data_map(path)
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }
    fn regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        let mut b = [0u8; 512];
        if self.vol.read_exact(0, &mut b).is_ok() {
            out.push(boot_region(&b, 0, &self.vol.what));
        }
        // the first records of $MFT: headers and attributes by name, as on disk
        let rs = self.mft.geo.record_size;
        for n in 0..FIRST_USER_RECORD.min(self.mft.records) {
            let Ok(rec) = self.mft.record(n) else { break };
            let Ok(raw) = self.vol.read_vec(rec.offset(), rs) else { break };
            if rec.pieces.len() == 1 {
                out.extend(record_regions(&raw, rec.offset(), n));
            }
        }
        out
    }
}

fn field(base: u64, off: usize, len: usize, name: &str, value: String) -> Field {
    Field { off: base + off as u64, len: len as u64, name: name.into(), value }
}

/// The NTFS boot sector with its BPB fields, the sector at `base`.
fn boot_region(b: &[u8; 512], base: u64, what: &str) -> Region {
    let mut r = Region::new(base, 512, "ntfs-boot-sector", format!("NTFS boot sector of {}", what));
    r.virt = Some(base);
    let clusters_per = |v: u8| -> String {
        if v < 0x80 {
            format!("{} cluster(s)", v)
        } else {
            format!("{} bytes", 1u64 << (256 - v as u32).min(40))
        }
    };
    r.fields = vec![
        field(base, 0x03, 8, "OEM ID", String::from_utf8_lossy(&b[3..11]).into_owned()),
        field(base, 0x0b, 2, "bytes per sector", le16(b, 0x0b).to_string()),
        field(base, 0x0d, 1, "sectors per cluster", b[0x0d].to_string()),
        field(base, 0x15, 1, "media", format!("0x{:02x}", b[0x15])),
        field(base, 0x28, 8, "total sectors", le64(b, 0x28).to_string()),
        field(base, 0x30, 8, "$MFT cluster", le64(b, 0x30).to_string()),
        field(base, 0x38, 8, "$MFTMirr cluster", le64(b, 0x38).to_string()),
        field(base, 0x40, 1, "file record size", clusters_per(b[0x40])),
        field(base, 0x44, 1, "index record size", clusters_per(b[0x44])),
        field(base, 0x48, 8, "serial number", format!("{:016X}", le64(b, 0x48))),
        field(base, 0x1fe, 2, "signature", format!("{:02x}{:02x}", b[0x1fe], b[0x1ff])),
    ];
    r
}

const SYSTEM_FILES: [&str; 16] = [
    "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "root directory", "$Bitmap", "$Boot", "$BadClus", "$Secure",
    "$UpCase", "$Extend", "reserved", "reserved", "reserved", "reserved",
];

fn attr_name(t: u32) -> &'static str {
    match t {
        0x10 => "$STANDARD_INFORMATION",
        0x20 => "$ATTRIBUTE_LIST",
        0x30 => "$FILE_NAME",
        0x40 => "$OBJECT_ID",
        0x50 => "$SECURITY_DESCRIPTOR",
        0x60 => "$VOLUME_NAME",
        0x70 => "$VOLUME_INFORMATION",
        0x80 => "$DATA",
        0x90 => "$INDEX_ROOT",
        0xa0 => "$INDEX_ALLOCATION",
        0xb0 => "$BITMAP",
        0xc0 => "$REPARSE_POINT",
        0x100 => "$LOGGED_UTILITY_STREAM",
        _ => "attribute",
    }
}

/// An MFT record's header and its attributes (raw bytes as on disk, before fixups: the header
/// and attribute headers are what the hex view shows), the record at volume offset `at`.
fn record_regions(rec: &[u8], at: u64, n: u64) -> Vec<Region> {
    let mut out = Vec::new();
    if rec.len() < 48 || &rec[0..4] != b"FILE" {
        return out;
    }
    let name = SYSTEM_FILES.get(n as usize).copied().unwrap_or("file");
    let mut r = Region::new(at, 48, "ntfs-mft-record", format!("MFT record {} ({}) header", n, name));
    r.virt = Some(at);
    r.fields = vec![
        field(at, 0x00, 4, "signature", "FILE".into()),
        field(at, 0x04, 2, "update sequence offset", le16(rec, 4).to_string()),
        field(at, 0x06, 2, "update sequence count", le16(rec, 6).to_string()),
        field(at, 0x08, 8, "$LogFile sequence number", le64(rec, 8).to_string()),
        field(at, 0x10, 2, "sequence number", le16(rec, 0x10).to_string()),
        field(at, 0x12, 2, "hard link count", le16(rec, 0x12).to_string()),
        field(at, 0x14, 2, "first attribute offset", le16(rec, 0x14).to_string()),
        field(at, 0x16, 2, "flags", format!("0x{:x}", le16(rec, 0x16))),
        field(at, 0x18, 4, "used size", le32(rec, 0x18).to_string()),
        field(at, 0x1c, 4, "allocated size", le32(rec, 0x1c).to_string()),
        field(at, 0x20, 8, "base record", (le64(rec, 0x20) & 0xffff_ffff_ffff).to_string()),
        field(at, 0x28, 2, "next attribute id", le16(rec, 0x28).to_string()),
    ];
    out.push(r);
    let mut off = le16(rec, 0x14) as usize;
    for _ in 0..64 {
        if off + 16 > rec.len() {
            break;
        }
        let t = le32(rec, off);
        if t == 0xffff_ffff {
            break;
        }
        let len = le32(rec, off + 4) as usize;
        if len < 16 || off + len > rec.len() {
            break;
        }
        let base = at + off as u64;
        let mut a = Region::new(base, len as u64, "ntfs-attribute", format!("MFT record {} {}", n, attr_name(t)));
        a.virt = Some(base);
        a.fields = vec![
            field(base, 0, 4, "type", format!("0x{:x} ({})", t, attr_name(t))),
            field(base, 4, 4, "length", len.to_string()),
            field(base, 8, 1, "non-resident", rec[off + 8].to_string()),
            field(base, 9, 1, "name length", rec[off + 9].to_string()),
            field(base, 12, 2, "flags", format!("0x{:x}", le16(rec, off + 12))),
        ];
        out.push(a);
        off += len;
    }
    out
}

/// The NTFS boot sector of the volume at `[start, start+len)`, at guest offsets.
fn overlay(img: &Image, start: u64, len: u64, what: &str) -> Vec<Region> {
    super::first_sector_overlay(img, start, len, what, boot_region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_in_paths() {
        assert_eq!(split_stream("/dir/file:alt"), ("/dir/file".to_string(), "alt".to_string()));
        assert_eq!(split_stream("/dir/file"), ("/dir/file".to_string(), String::new()));
        assert_eq!(split_stream("/"), ("/".to_string(), String::new()));
    }

    #[test]
    fn times() {
        assert_eq!(unix_time(116_444_736_000_000_000), 0);
    }
}

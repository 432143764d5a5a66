//! NTFS through the `ntfs` crate (boot sector, $MFT records with fixups checked, $INDEX_ROOT /
//! $INDEX_ALLOCATION directories, $DATA runs resident, non-resident and sparse, named
//! streams), with our own pieces for what it does not give: the map of a file's bytes for
//! `locate` (from its data runs, or "resident in MFT record N"), a read cache, the overlays.
//!
//! Compressed (LZNT1) and encrypted $DATA are refused with a clear message: the crate would
//! hand back the stored bytes, not the file's.

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileNamespace, NtfsStandardInformation};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};

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
/// Most entries one directory listing returns (a damaged index could loop).
const MAX_ENTRIES: usize = 1_000_000;

/// The volume as `Read + Seek` for the crate, with a small cache of 64 KiB chunks (the crate
/// reads headers a few bytes at a time).
pub struct Reader {
    vol: VolumeReader,
    pos: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

const CHUNK: u64 = 64 * 1024;

impl Reader {
    fn new(vol: VolumeReader) -> Reader {
        Reader { vol, pos: 0, chunks: Vec::new() }
    }

    fn chunk(&mut self, idx: u64) -> std::io::Result<&[u8]> {
        if let Some(i) = self.chunks.iter().position(|c| c.0 == idx) {
            let c = self.chunks.remove(i);
            self.chunks.push(c);
        } else {
            let off = idx * CHUNK;
            let len = CHUNK.min(self.vol.len.saturating_sub(off));
            let mut b = vec![0u8; len as usize];
            self.vol.read_exact(off, &mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
            if self.chunks.len() >= 32 {
                self.chunks.remove(0);
            }
            self.chunks.push((idx, b));
        }
        Ok(&self.chunks.last().unwrap().1)
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.vol.len || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.vol.len - self.pos) as usize;
        if n as u64 >= CHUNK {
            // big reads (file data) go straight through
            self.vol.read_exact(self.pos, &mut buf[..n]).map_err(|e| std::io::Error::other(e.to_string()))?;
            self.pos += n as u64;
            return Ok(n);
        }
        let idx = self.pos / CHUNK;
        let at = (self.pos % CHUNK) as usize;
        let c = self.chunk(idx)?;
        let n = n.min(c.len() - at);
        buf[..n].copy_from_slice(&c[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Reader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.vol.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// An NTFS filesystem on a volume of the guest disk.
pub struct NtfsFs {
    pub vol: VolumeReader,
    pub ntfs: Ntfs,
    reader: RefCell<Reader>,
    label: Option<String>,
}

fn damaged(e: NtfsError) -> Error {
    Error::Damaged(format!("damaged NTFS: {}", e))
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

impl NtfsFs {
    pub fn open(image: Rc<Image>, volume: &Volume) -> Result<NtfsFs> {
        let vol = VolumeReader::new(image, volume);
        let what = volume.describe();
        let mut r = Reader::new(vol.clone());
        let mut ntfs = Ntfs::new(&mut r).map_err(|e| Error::Damaged(format!("damaged NTFS boot sector on {}: {}", what, e)))?;
        if ntfs.size() > volume.len {
            return Err(Error::Damaged(format!(
                "damaged NTFS boot sector on {}: the filesystem ({} bytes) is larger than its volume ({} bytes)",
                what,
                ntfs.size(),
                volume.len
            )));
        }
        ntfs.read_upcase_table(&mut r).map_err(|e| Error::Damaged(format!("damaged NTFS on {}: $UpCase: {}", what, e)))?;
        let label = match ntfs.volume_name(&mut r) {
            Some(Ok(n)) => Some(n.name().to_string_lossy()).filter(|s| !s.is_empty()),
            _ => None,
        };
        Ok(NtfsFs { vol, ntfs, reader: RefCell::new(r), label })
    }

    /// The file record at `path` (no stream part).
    fn find<'n>(&'n self, r: &mut Reader, path: &str) -> Result<NtfsFile<'n>> {
        let mut file = self.ntfs.root_directory(r).map_err(damaged)?;
        let mut walked = String::new();
        for comp in components(path) {
            if !file.is_directory() {
                return Err(Error::NotADirectory(walked));
            }
            walked.push('/');
            walked.push_str(comp);
            let next = {
                let index = file.directory_index(r).map_err(damaged)?;
                let mut finder = index.finder();
                let entry = NtfsFileNameIndex::find(&mut finder, &self.ntfs, r, comp)
                    .ok_or_else(|| Error::NotFound(walked.clone()))?
                    .map_err(damaged)?;
                entry.to_file(&self.ntfs, r).map_err(damaged)?
            };
            file = next;
        }
        Ok(file)
    }

    /// Size, times and attributes of a file record; its named streams.
    fn info(&self, r: &mut Reader, file: &NtfsFile, name: String) -> Result<EntryInfo> {
        let dir = file.is_directory();
        let si: Option<NtfsStandardInformation> = file.info().ok();
        let mtime = si.as_ref().map(|s| unix_time(s.modification_time().nt_timestamp())).unwrap_or(0);
        let flags = si.as_ref().map(|s| s.file_attributes().bits()).unwrap_or(0);
        let mut size = 0;
        let mut streams = Vec::new();
        let mut attrs = Vec::new();
        let mut it = file.attributes();
        let mut n = 0;
        while let Some(item) = it.next(r) {
            n += 1;
            if n > 4096 {
                break;
            }
            let Ok(item) = item else { break };
            let Ok(a) = item.to_attribute() else { continue };
            if a.ty().ok() != Some(NtfsAttributeType::Data) {
                continue;
            }
            let aname = a.name().map(|n| n.to_string_lossy()).unwrap_or_default();
            if aname.is_empty() {
                size = a.value_length();
                if a.flags().contains(NtfsAttributeFlags::COMPRESSED) {
                    attrs.push("compressed");
                }
                if a.flags().contains(NtfsAttributeFlags::SPARSE) {
                    attrs.push("sparse");
                }
            } else {
                streams.push((aname, a.value_length()));
            }
        }
        for (bit, n) in [(0x1u32, "readonly"), (0x2, "hidden"), (0x4, "system"), (0x4000, "encrypted")] {
            if flags & bit != 0 {
                attrs.push(n);
            }
        }
        let ro = flags & 1 != 0;
        let mode = if dir { 0o755 } else if ro { 0o444 } else { 0o644 };
        let mut e = EntryInfo::new(name, if dir { 'd' } else { '-' }, mode, if dir { 0 } else { size }, mtime);
        e.attributes = attrs.join(",");
        e.streams = streams;
        Ok(e)
    }

    /// The file's $DATA attribute (`stream` "" for the unnamed one), checked readable, and
    /// its length.
    fn data_map(&self, r: &mut Reader, path: &str) -> Result<FileMap> {
        let (fpath, stream) = split_stream(path);
        let file = self.find(r, &fpath)?;
        if file.is_directory() && stream.is_empty() {
            return Err(Error::IsADirectory(path.to_string()));
        }
        let item = file
            .data(r, &stream)
            .ok_or_else(|| {
                if stream.is_empty() {
                    Error::Invalid(format!("{}: the file has no data stream", path))
                } else {
                    Error::NotFound(path.to_string())
                }
            })?
            .map_err(damaged)?;
        let a = item.to_attribute().map_err(damaged)?;
        if a.flags().contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(Error::Unsupported(format!(
                "{}: the file is NTFS-compressed (LZNT1); vdiskview does not decompress it yet",
                path
            )));
        }
        if a.flags().contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(Error::Unsupported(format!("{}: the file is encrypted (EFS)", path)));
        }
        let size = a.value_length();
        if size > self.vol.len.saturating_mul(64) {
            return Err(Error::Damaged(format!("{}: a data size of {} bytes on a volume of {}", path, size, self.vol.len)));
        }
        let record = file.file_record_number();
        let record_offset = file.position().value().map(|p| p.get());
        let mut runs = Vec::new();
        let mut notes = Vec::new();
        match a.value(r).map_err(damaged)? {
            ntfs::attribute_value::NtfsAttributeValue::Resident(v) => {
                // the crate gives the attribute's position for a resident value; the value
                // starts `value offset` (a u16 at 0x14 of the attribute header) further on
                let attr_pos = a.position().value().map(|p| p.get()).unwrap_or(0);
                let mut h = [0u8; 2];
                self.vol.read_exact(attr_pos + 0x14, &mut h)?;
                let pos = attr_pos + u16::from_le_bytes(h) as u64;
                let rec_end = record_offset.unwrap_or(0) + self.ntfs.file_record_size() as u64;
                if pos + size > rec_end {
                    return Err(Error::Damaged(format!("{}: resident data past the end of MFT record {}", path, record)));
                }
                // the last two bytes of each sector of a record hold the update sequence number
                // on disk; the real bytes are in the record's update sequence array
                let on_disk = self.vol.read_vec(pos, size)?;
                if on_disk != v.data() {
                    notes.push(format!(
                        "some bytes of the resident data sit at a sector end of the record, where the disk holds the update sequence number (fixup); they are read from the record's update sequence array"
                    ));
                }
                if size > 0 {
                    push_run(&mut runs, FileRun { logical: 0, len: size, fs_offset: Some(pos), unwritten: false, resident: true });
                }
                notes.insert(
                    0,
                    format!(
                    "resident in MFT record {} (the record at volume offset 0x{:x}, the bytes at 0x{:x})",
                    record,
                    record_offset.unwrap_or(0),
                    pos
                ),
                );
            }
            ntfs::attribute_value::NtfsAttributeValue::NonResident(v) => {
                let mut logical = 0u64;
                for run in v.data_runs() {
                    if logical >= size {
                        break;
                    }
                    let run = run.map_err(damaged)?;
                    let len = run.allocated_size().min(size - logical);
                    match run.data_position().value() {
                        Some(p) => push_run(&mut runs, FileRun::data(logical, len, p.get())),
                        None => push_run(&mut runs, FileRun::hole(logical, len)),
                    }
                    logical += len;
                }
                if logical < size {
                    return Err(Error::Damaged(format!(
                        "{}: the data runs cover {} of the file's {} bytes",
                        path, logical, size
                    )));
                }
            }
            ntfs::attribute_value::NtfsAttributeValue::AttributeListNonResident(_) => {
                return Err(Error::Unsupported(format!(
                    "{}: the file's data runs are spread over several MFT records (an attribute list); locate does not follow those yet",
                    path
                )));
            }
        }
        Ok(FileMap { inode: record, inode_kind: "MFT record", size, inode_offset: record_offset, runs, notes })
    }
}

impl Filesystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }
    fn block_size(&self) -> u64 {
        self.ntfs.cluster_size() as u64
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn stat(&self, path: &str) -> Result<EntryInfo> {
        let r = &mut *self.reader.borrow_mut();
        let (fpath, stream) = split_stream(path);
        let file = self.find(r, &fpath)?;
        let mut e = self.info(r, &file, base_name(path))?;
        if !stream.is_empty() {
            let s = e.streams.iter().find(|s| s.0.eq_ignore_ascii_case(&stream)).ok_or_else(|| Error::NotFound(path.to_string()))?;
            e.size = s.1;
            e.type_char = '-';
            e.streams.clear();
        }
        Ok(e)
    }
    fn read_dir(&self, path: &str) -> Result<Vec<EntryInfo>> {
        let r = &mut *self.reader.borrow_mut();
        let dir = self.find(r, path)?;
        if !dir.is_directory() {
            return Err(Error::NotADirectory(path.to_string()));
        }
        let index = dir.directory_index(r).map_err(damaged)?;
        let mut entries = index.entries();
        let mut found: Vec<(String, u64)> = Vec::new();
        while let Some(e) = entries.next(r) {
            let e = e.map_err(damaged)?;
            let Some(key) = e.key() else { continue };
            let key = key.map_err(damaged)?;
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let rec = e.file_reference().file_record_number();
            if rec < FIRST_USER_RECORD {
                continue;
            }
            found.push((key.name().to_string_lossy(), rec));
            if found.len() > MAX_ENTRIES {
                return Err(Error::Damaged(format!("{}: more than {} directory entries", path, MAX_ENTRIES)));
            }
        }
        drop(entries);
        let mut out = Vec::new();
        for (name, rec) in found {
            let file = self.ntfs.file(r, rec).map_err(damaged)?;
            out.push(self.info(r, &file, name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let map = {
            let r = &mut *self.reader.borrow_mut();
            self.data_map(r, path)?
        };
        // resident bytes come from the record as the crate read it (fixups applied)
        if map.runs.iter().any(|r| r.resident) {
            let r = &mut *self.reader.borrow_mut();
            let (fpath, stream) = split_stream(path);
            let file = self.find(r, &fpath)?;
            let item = file.data(r, &stream).ok_or_else(|| Error::NotFound(path.to_string()))?.map_err(damaged)?;
            let a = item.to_attribute().map_err(damaged)?;
            let mut v = a.value(r).map_err(damaged)?;
            let mut buf = vec![0u8; map.size as usize];
            v.read_exact(r, &mut buf).map_err(damaged)?;
            out.write_all(&buf).map_err(Error::Write)?;
            return Ok(map.size);
        }
        super::copy_runs(&self.vol, &map, out)
    }
    fn file_map(&self, path: &str) -> Result<FileMap> {
        let r = &mut *self.reader.borrow_mut();
        self.data_map(r, path)
    }
    fn regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        let mut b = [0u8; 512];
        if self.vol.read_exact(0, &mut b).is_ok() {
            out.push(boot_region(&b, 0, &self.vol.what));
        }
        // the first records of $MFT: headers and attributes by name
        let rs = self.ntfs.file_record_size() as u64;
        if let Some(mft) = self.ntfs.mft_position().value() {
            for n in 0..FIRST_USER_RECORD {
                let at = mft.get() + n * rs;
                let Ok(rec) = self.vol.read_vec(at, rs) else { break };
                out.extend(record_regions(&rec, at, n));
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

//! Our own NTFS layer below the directory and file logic: the boot sector, the $MFT's data
//! runs (continued through its $ATTRIBUTE_LIST into extension records), MFT records with
//! their fixups checked, and a file's attributes gathered from its base and extension records.
//!
//! Every offset and size comes from the volume and is checked before use: record and cluster
//! sizes are bounded powers of two, clusters lie inside the volume, attributes inside their
//! record, and every loop is bounded by what the volume can hold.

use std::cell::RefCell;

use super::super::VolumeReader;
use crate::guest::{Error, Result};
use crate::image::bytes::{le16, le32, le64};

/// Record numbers are the low 48 bits of a file reference (the high 16 are a sequence number).
pub const REF_MASK: u64 = 0xffff_ffff_ffff;

pub const AT_STANDARD_INFORMATION: u32 = 0x10;
pub const AT_ATTRIBUTE_LIST: u32 = 0x20;
pub const AT_FILE_NAME: u32 = 0x30;
pub const AT_VOLUME_NAME: u32 = 0x60;
pub const AT_DATA: u32 = 0x80;
pub const AT_INDEX_ROOT: u32 = 0x90;
pub const AT_INDEX_ALLOCATION: u32 = 0xa0;

pub const FLAG_COMPRESSED: u16 = 0x0001;
pub const FLAG_ENCRYPTED: u16 = 0x4000;
pub const FLAG_SPARSE: u16 = 0x8000;

/// Most extension records one file may have (Windows stops far below).
const MAX_EXTENSIONS: usize = 4096;
/// Most bytes an attribute list may have: its entries are 32+ bytes, one per attribute piece.
const MAX_ATTRIBUTE_LIST: u64 = 4 << 20;

pub fn damaged(msg: impl std::fmt::Display) -> Error {
    Error::Damaged(format!("damaged NTFS: {}", msg))
}

/// The boot sector's geometry, checked.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub cluster_size: u64,
    pub total_clusters: u64,
    pub mft_lcn: u64,
    pub record_size: u64,
    /// Bytes the boot sector says the filesystem covers.
    pub size: u64,
}

/// A size given in clusters (positive) or as a power of two (negative, `2^-v` bytes).
fn clusters_or_power(v: u8, cluster: u64) -> Option<u64> {
    let v = v as i8;
    if v < 0 {
        let shift = -(v as i32) as u32;
        (shift <= 24).then(|| 1u64 << shift)
    } else {
        (v as u64).checked_mul(cluster)
    }
}

impl Geometry {
    /// The geometry of boot sector `b`, or what is wrong with it.
    pub fn parse(b: &[u8], volume_len: u64) -> std::result::Result<Geometry, String> {
        if b.len() < 512 || &b[3..11] != b"NTFS    " {
            return Err("no NTFS signature".into());
        }
        let sector_size = le16(b, 0x0b) as u64;
        if !sector_size.is_power_of_two() || !(256..=4096).contains(&sector_size) {
            return Err(format!("{} bytes per sector", sector_size));
        }
        // above 0x80 the count is a negative power of two (2 MiB clusters and up)
        let spc = match b[0x0d] {
            v if v <= 0x80 => v as u64,
            v => 1u64 << (256 - v as u32).min(31),
        };
        if spc == 0 || !spc.is_power_of_two() {
            return Err(format!("{} sectors per cluster", b[0x0d]));
        }
        let cluster_size = sector_size * spc;
        if cluster_size > 2 << 20 {
            return Err(format!("clusters of {} bytes", cluster_size));
        }
        let total_sectors = le64(b, 0x28);
        let size = total_sectors.checked_mul(sector_size).ok_or_else(|| format!("{} sectors", total_sectors))?;
        let record_size = clusters_or_power(b[0x40], cluster_size).unwrap_or(0);
        if !record_size.is_power_of_two() || !(512..=65536).contains(&record_size) {
            return Err(format!("file records of {} bytes", record_size));
        }
        let index_block_size = clusters_or_power(b[0x44], cluster_size).unwrap_or(0);
        if !index_block_size.is_power_of_two() || !(512..=65536).contains(&index_block_size) {
            return Err(format!("index records of {} bytes", index_block_size));
        }
        let total_clusters = size.min(volume_len) / cluster_size;
        let mft_lcn = le64(b, 0x30);
        if mft_lcn.checked_mul(cluster_size).and_then(|o| o.checked_add(record_size)).is_none_or(|e| e > size.min(volume_len)) {
            return Err(format!("the $MFT at cluster {} is past the end of the volume", mft_lcn));
        }
        Ok(Geometry { cluster_size, total_clusters, mft_lcn, record_size, size })
    }
}

/// A run of an attribute's clusters: `len` clusters from VCN `vcn`, at `lcn` or sparse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub vcn: u64,
    pub len: u64,
    pub lcn: Option<u64>,
}

/// Most clusters an attribute may span: 2^40 clusters of up to 2 MiB stay below 2^62 bytes.
const MAX_VCN: u64 = 1 << 40;

/// Decode a mapping pairs array (data runs) starting at VCN `vcn`; each cluster checked
/// against `total_clusters`.
pub fn decode_runs(b: &[u8], mut vcn: u64, total_clusters: u64) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut lcn: i64 = 0;
    let mut i = 0;
    while i < b.len() && b[i] != 0 {
        let h = b[i];
        let (ln, on) = ((h & 0xf) as usize, (h >> 4) as usize);
        if ln == 0 || ln > 8 || on > 8 || i + 1 + ln + on > b.len() {
            return Err(damaged(format!("a data run header 0x{:02x}", h)));
        }
        let mut len = 0u64;
        for k in 0..ln {
            len |= (b[i + 1 + k] as u64) << (8 * k);
        }
        let lcn_here = if on == 0 {
            None
        } else {
            let mut d = 0u64;
            for k in 0..on {
                d |= (b[i + 1 + ln + k] as u64) << (8 * k);
            }
            // sign-extend the delta
            let d = if on < 8 && d & (1 << (8 * on - 1)) != 0 { d | (!0u64 << (8 * on)) } else { d } as i64;
            lcn = lcn.checked_add(d).ok_or_else(|| damaged("a data run's cluster overflows"))?;
            if lcn < 0 || (lcn as u64).checked_add(len).is_none_or(|e| e > total_clusters) {
                return Err(damaged(format!("a data run of {} clusters at cluster {} is past the end of the volume", len, lcn)));
            }
            Some(lcn as u64)
        };
        if len == 0 {
            return Err(damaged("a data run of no clusters"));
        }
        runs.push(Run { vcn, len, lcn: lcn_here });
        // a VCN times a cluster size (at most 2 MiB) must stay a byte offset
        vcn = vcn.checked_add(len).filter(|&v| v <= MAX_VCN).ok_or_else(|| damaged("data runs past any file size"))?;
        i += 1 + ln + on;
    }
    Ok(runs)
}

/// A non-resident attribute's clusters and sizes.
#[derive(Clone, Debug)]
pub struct NonResident {
    pub runs: Vec<Run>,
    /// Log2 of the compression unit in clusters (4: units of 16 clusters), 0 if uncompressed.
    pub compression_unit: u8,
    pub allocated_size: u64,
    pub data_size: u64,
    pub initialized_size: u64,
}

/// A resident value (fixups applied) and its pieces in the volume: (volume offset, length).
pub type Resident = (Vec<u8>, Vec<(u64, u64)>);

/// One attribute (the pieces of a non-resident one in several records joined).
#[derive(Clone, Debug)]
pub struct Attribute {
    pub ty: u32,
    pub name: String,
    pub flags: u16,
    /// The value of a resident attribute (fixups applied) and the volume offset of each
    /// piece of it (several when the record spans non-adjacent clusters).
    pub resident: Option<Resident>,
    pub non_resident: Option<NonResident>,
    /// VCN the piece starts at (for joining pieces of an attribute list).
    lowest_vcn: u64,
    /// The record this attribute (its first piece) is in.
    pub record: u64,
}

impl Attribute {
    /// Length of the attribute's value.
    pub fn size(&self) -> u64 {
        match (&self.resident, &self.non_resident) {
            (Some((v, _)), _) => v.len() as u64,
            (_, Some(n)) => n.data_size,
            _ => 0,
        }
    }
}

/// An MFT record read and fixed up, with where its bytes are in the volume.
pub struct Record {
    pub number: u64,
    pub bytes: Vec<u8>,
    /// (offset in the record, volume offset, length): the record's pieces in the volume.
    pub pieces: Vec<(u64, u64, u64)>,
}

impl Record {
    pub fn flags(&self) -> u16 {
        le16(&self.bytes, 0x16)
    }
    pub fn in_use(&self) -> bool {
        self.flags() & 1 != 0
    }
    pub fn is_directory(&self) -> bool {
        self.flags() & 2 != 0
    }
    pub fn base(&self) -> u64 {
        le64(&self.bytes, 0x20) & REF_MASK
    }
    /// Volume offset of the record's first byte.
    pub fn offset(&self) -> u64 {
        self.pieces.first().map(|p| p.1).unwrap_or(0)
    }

    /// Volume pieces of record bytes `[off, off+len)`: (volume offset, length).
    pub fn volume_pieces(&self, off: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(ro, vo, l) in &self.pieces {
            let s = off.max(ro);
            let e = (off + len).min(ro + l);
            if s < e {
                out.push((vo + (s - ro), e - s));
            }
        }
        out
    }

    /// The attributes in this record, in order (pieces, not joined).
    pub fn attributes(&self, total_clusters: u64) -> Result<Vec<Attribute>> {
        let b = &self.bytes;
        let rec = self.number;
        let used = (le32(b, 0x18) as usize).min(b.len());
        let mut off = le16(b, 0x14) as usize;
        let mut out = Vec::new();
        while off + 8 <= used {
            let ty = le32(b, off);
            if ty == 0xffff_ffff {
                break;
            }
            let len = le32(b, off + 4) as usize;
            if len < 24 || !len.is_multiple_of(8) || off + len > used {
                return Err(damaged(format!("MFT record {}: an attribute of {} bytes at 0x{:x}", rec, len, off)));
            }
            let a = &b[off..off + len];
            let name_len = a[9] as usize;
            let name_off = le16(a, 10) as usize;
            if name_off + 2 * name_len > len {
                return Err(damaged(format!("MFT record {}: an attribute name past its attribute", rec)));
            }
            let name = utf16(&a[name_off..name_off + 2 * name_len]);
            let flags = le16(a, 12);
            let mut attr = Attribute { ty, name, flags, resident: None, non_resident: None, lowest_vcn: 0, record: rec };
            if a[8] == 0 {
                let vlen = le32(a, 0x10) as usize;
                let voff = le16(a, 0x14) as usize;
                if voff.checked_add(vlen).is_none_or(|e| e > len) {
                    return Err(damaged(format!("MFT record {}: a resident value past its attribute", rec)));
                }
                let at = (off + voff) as u64;
                attr.resident = Some((a[voff..voff + vlen].to_vec(), self.volume_pieces(at, vlen as u64)));
            } else {
                if len < 64 {
                    return Err(damaged(format!("MFT record {}: a non-resident attribute of {} bytes", rec, len)));
                }
                let lowest = le64(a, 0x10);
                let runs_off = le16(a, 0x20) as usize;
                if runs_off >= len {
                    return Err(damaged(format!("MFT record {}: data runs past their attribute", rec)));
                }
                let runs = decode_runs(&a[runs_off..], lowest, total_clusters)?;
                attr.lowest_vcn = lowest;
                attr.non_resident = Some(NonResident {
                    runs,
                    compression_unit: a[0x22],
                    allocated_size: le64(a, 0x28),
                    data_size: le64(a, 0x30),
                    initialized_size: le64(a, 0x38),
                });
            }
            out.push(attr);
            off += len;
            if out.len() > 4096 {
                break;
            }
        }
        Ok(out)
    }
}

/// Little-endian UTF-16 as a String (unpaired surrogates replaced).
pub fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// Check and undo a multi-sector record's update sequence (the last two bytes of each
/// 512-byte block hold the update sequence number on disk; the real bytes are in the array).
pub fn apply_fixups(b: &mut [u8], magic: &[u8; 4], what: &str) -> Result<()> {
    if b.len() < 48 || &b[0..4] != magic {
        return Err(damaged(format!("{}: no {} signature", what, String::from_utf8_lossy(magic))));
    }
    let usa_off = le16(b, 4) as usize;
    let usa_count = le16(b, 6) as usize;
    let blocks = b.len() / 512;
    if usa_count != blocks + 1 || usa_off + 2 * usa_count > b.len() || usa_off < 8 {
        return Err(damaged(format!("{}: an update sequence of {} at 0x{:x}", what, usa_count, usa_off)));
    }
    let usn = [b[usa_off], b[usa_off + 1]];
    for i in 1..usa_count {
        let end = i * 512;
        if b[end - 2..end] != usn {
            return Err(damaged(format!("{}: the update sequence number does not match at the end of block {} (a torn write)", what, i)));
        }
        let fix = [b[usa_off + 2 * i], b[usa_off + 2 * i + 1]];
        b[end - 2..end].copy_from_slice(&fix);
    }
    Ok(())
}

/// Metadata reads with a small cache of 64 KiB chunks (records and index blocks are read a
/// few KiB at a time, many from the same chunk).
pub struct MetaCache {
    pub vol: VolumeReader,
    chunks: RefCell<Vec<(u64, Vec<u8>)>>,
}

const CHUNK: u64 = 64 * 1024;

impl MetaCache {
    pub fn new(vol: VolumeReader) -> MetaCache {
        MetaCache { vol, chunks: RefCell::new(Vec::new()) }
    }

    /// `buf.len()` bytes at volume offset `off`.
    pub fn read(&self, mut off: u64, buf: &mut [u8]) -> Result<()> {
        if off.checked_add(buf.len() as u64).is_none_or(|e| e > self.vol.len) {
            return Err(damaged(format!("0x{:x} bytes at 0x{:x} are past the end of {}", buf.len(), off, self.vol.what)));
        }
        let mut done = 0;
        let mut chunks = self.chunks.borrow_mut();
        while done < buf.len() {
            let idx = off / CHUNK;
            let i = match chunks.iter().position(|c| c.0 == idx) {
                Some(i) => i,
                None => {
                    let start = idx * CHUNK;
                    let len = CHUNK.min(self.vol.len - start);
                    let mut b = vec![0u8; len as usize];
                    self.vol.read_exact(start, &mut b)?;
                    if chunks.len() >= 64 {
                        chunks.remove(0);
                    }
                    chunks.push((idx, b));
                    chunks.len() - 1
                }
            };
            let c = &chunks[i].1;
            let at = (off - idx * CHUNK) as usize;
            let n = (c.len() - at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&c[at..at + n]);
            done += n;
            off += n as u64;
        }
        Ok(())
    }
}

/// The volume pieces of bytes `[off, off+len)` of a non-resident attribute with `runs`:
/// (volume offset or None for sparse, length).
pub fn map_range(runs: &[Run], cluster: u64, off: u64, len: u64) -> Result<Vec<(Option<u64>, u64)>> {
    let mut out = Vec::new();
    let end = off.checked_add(len).ok_or_else(|| damaged("a range overflows"))?;
    let mut pos = off;
    // runs are in VCN order; find the first one that holds `off`
    let start = runs.partition_point(|r| (r.vcn + r.len) * cluster <= off);
    for r in &runs[start..] {
        if pos >= end {
            break;
        }
        let rs = r.vcn * cluster;
        let re = (r.vcn + r.len) * cluster;
        if rs > pos {
            return Err(damaged(format!("no data run holds byte 0x{:x}", pos)));
        }
        let n = re.min(end) - pos;
        out.push((r.lcn.map(|l| l * cluster + (pos - rs)), n));
        pos += n;
    }
    if pos < end {
        return Err(damaged(format!("no data run holds byte 0x{:x}", pos)));
    }
    Ok(out)
}

/// The $MFT: where its records are, and how to read one.
pub struct Mft {
    pub geo: Geometry,
    pub meta: MetaCache,
    /// $MFT's own data runs, all of them (base and extension records).
    pub runs: Vec<Run>,
    pub records: u64,
}

impl Mft {
    /// Read $MFT's runs: record 0's unnamed $DATA, then the pieces its $ATTRIBUTE_LIST names
    /// in extension records (each found through the runs known so far, in VCN order).
    pub fn open(meta: MetaCache, geo: Geometry) -> Result<Mft> {
        let rs = geo.record_size;
        let mut bytes = vec![0u8; rs as usize];
        let at = geo.mft_lcn * geo.cluster_size;
        meta.read(at, &mut bytes)?;
        apply_fixups(&mut bytes, b"FILE", "MFT record 0 ($MFT)")?;
        let rec0 = Record { number: 0, bytes, pieces: vec![(0, at, rs)] };
        let attrs = rec0.attributes(geo.total_clusters)?;
        let mut mft = Mft { geo, meta, runs: Vec::new(), records: 0 };
        let first = attrs
            .iter()
            .find(|a| a.ty == AT_DATA && a.name.is_empty() && a.lowest_vcn == 0)
            .and_then(|a| a.non_resident.clone())
            .ok_or_else(|| damaged("MFT record 0 ($MFT) has no non-resident $DATA"))?;
        mft.runs = first.runs.clone();
        mft.records = first.data_size / rs;
        if first.data_size > geo.size {
            return Err(damaged(format!("an $MFT of {} bytes on a volume of {}", first.data_size, geo.size)));
        }
        if let Some(list) = attrs.iter().find(|a| a.ty == AT_ATTRIBUTE_LIST) {
            let list = mft.attribute_value(list, MAX_ATTRIBUTE_LIST)?;
            let mut pieces: Vec<(u64, u64)> = parse_attribute_list(&list)?
                .into_iter()
                .filter(|e| e.ty == AT_DATA && e.name.is_empty() && e.record != 0)
                .map(|e| (e.lowest_vcn, e.record))
                .collect();
            pieces.sort();
            pieces.dedup();
            for (vcn, recno) in pieces {
                let rec = mft.record(recno)?;
                if rec.base() != 0 {
                    return Err(damaged(format!("MFT record {} holds part of $MFT but names record {} as its base", recno, rec.base())));
                }
                let a = rec
                    .attributes(geo.total_clusters)?
                    .into_iter()
                    .find(|a| a.ty == AT_DATA && a.name.is_empty() && a.lowest_vcn == vcn)
                    .and_then(|a| a.non_resident)
                    .ok_or_else(|| damaged(format!("MFT record {} lacks the $MFT data runs from VCN {}", recno, vcn)))?;
                let next = mft.runs.last().map(|r| r.vcn + r.len).unwrap_or(0);
                if vcn != next {
                    return Err(damaged(format!("$MFT's data runs jump from VCN {} to {} (MFT record {})", next, vcn, recno)));
                }
                mft.runs.extend(a.runs);
            }
        }
        let covered = mft.runs.last().map(|r| (r.vcn + r.len) * geo.cluster_size).unwrap_or(0);
        if covered < mft.records * rs {
            // a damaged list: keep the records the runs reach
            mft.records = covered / rs;
        }
        Ok(mft)
    }

    /// MFT record `n`, fixed up (not checked for being in use).
    pub fn record(&self, n: u64) -> Result<Record> {
        if n >= self.records {
            return Err(damaged(format!("MFT record {} is past the end of $MFT ({} records)", n, self.records)));
        }
        let rs = self.geo.record_size;
        let mut bytes = vec![0u8; rs as usize];
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for (vo, len) in map_range(&self.runs, self.geo.cluster_size, n * rs, rs)? {
            let vo = vo.ok_or_else(|| damaged(format!("MFT record {} lies in a hole of $MFT", n)))?;
            self.meta.read(vo, &mut bytes[at as usize..(at + len) as usize])?;
            pieces.push((at, vo, len));
            at += len;
        }
        apply_fixups(&mut bytes, b"FILE", &format!("MFT record {}", n))?;
        Ok(Record { number: n, bytes, pieces })
    }

    /// The value of an attribute, at most `max` bytes (a larger one is damage here).
    pub fn attribute_value(&self, a: &Attribute, max: u64) -> Result<Vec<u8>> {
        if let Some((v, _)) = &a.resident {
            return Ok(v.clone());
        }
        let nr = a.non_resident.as_ref().ok_or_else(|| damaged("an attribute without a value"))?;
        if nr.data_size > max || nr.data_size > self.geo.size {
            return Err(damaged(format!("an attribute 0x{:x} of {} bytes", a.ty, nr.data_size)));
        }
        self.read_non_resident(nr, 0, nr.data_size)
    }

    /// Bytes `[off, off+len)` of a non-resident value (sparse and uninitialized bytes zero).
    pub fn read_non_resident(&self, nr: &NonResident, off: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = self.read_clusters(nr, off, len)?;
        let init = nr.initialized_size.saturating_sub(off).min(len) as usize;
        out[init..].fill(0);
        Ok(out)
    }

    /// Bytes `[off, off+len)` of an attribute's clusters as stored (sparse ones zero): what a
    /// compressed attribute's units hold, where the initialized size counts the file's bytes.
    pub fn read_clusters(&self, nr: &NonResident, off: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        let mut at = 0usize;
        for (vo, n) in map_range(&nr.runs, self.geo.cluster_size, off, len)? {
            if let Some(vo) = vo {
                self.meta.read(vo, &mut out[at..at + n as usize])?;
            }
            at += n as usize;
        }
        Ok(out)
    }

    /// All attributes of the file whose base record is `n`: its own and, through its
    /// $ATTRIBUTE_LIST, those in its extension records; pieces of one non-resident attribute
    /// joined in VCN order. Also returns the base record.
    pub fn file(&self, n: u64) -> Result<(Record, Vec<Attribute>)> {
        let rec = self.record(n)?;
        if !rec.in_use() {
            return Err(damaged(format!("MFT record {} is not in use", n)));
        }
        if rec.base() != 0 {
            return Err(damaged(format!("MFT record {} is an extension of record {}, not a file", n, rec.base())));
        }
        let tc = self.geo.total_clusters;
        let mut attrs = rec.attributes(tc)?;
        if let Some(i) = attrs.iter().position(|a| a.ty == AT_ATTRIBUTE_LIST) {
            let list = self.attribute_value(&attrs[i], MAX_ATTRIBUTE_LIST)?;
            let mut others: Vec<u64> = parse_attribute_list(&list)?.into_iter().map(|e| e.record).filter(|&r| r != n).collect();
            others.sort();
            others.dedup();
            if others.len() > MAX_EXTENSIONS {
                return Err(damaged(format!("MFT record {}: {} extension records", n, others.len())));
            }
            for x in others {
                let ext = self.record(x)?;
                if !ext.in_use() || ext.base() != n {
                    return Err(damaged(format!("MFT record {} is listed as an extension of record {} but is not one", x, n)));
                }
                attrs.extend(ext.attributes(tc)?);
            }
        }
        Ok((rec, join_pieces(attrs)?))
    }
}

/// Join the pieces of each non-resident attribute (same type and name) in VCN order; the
/// sizes are the first piece's.
fn join_pieces(attrs: Vec<Attribute>) -> Result<Vec<Attribute>> {
    let mut out: Vec<Attribute> = Vec::new();
    let mut rest: Vec<Attribute> = Vec::new();
    for a in attrs {
        if a.non_resident.is_some() && a.lowest_vcn > 0 {
            rest.push(a);
        } else {
            out.push(a);
        }
    }
    rest.sort_by_key(|a| a.lowest_vcn);
    for a in rest {
        let Some(head) = out.iter_mut().find(|h| h.ty == a.ty && h.name == a.name && h.non_resident.is_some()) else {
            return Err(damaged(format!("a piece of attribute 0x{:x} from VCN {} without its first piece", a.ty, a.lowest_vcn)));
        };
        let hn = head.non_resident.as_mut().unwrap();
        let next = hn.runs.last().map(|r| r.vcn + r.len).unwrap_or(0);
        if a.lowest_vcn != next {
            return Err(damaged(format!("attribute 0x{:x}: its data runs jump from VCN {} to {}", a.ty, next, a.lowest_vcn)));
        }
        hn.runs.extend(a.non_resident.unwrap().runs);
    }
    Ok(out)
}

/// An entry of an $ATTRIBUTE_LIST: which record holds which attribute piece.
pub struct ListEntry {
    pub ty: u32,
    pub name: String,
    pub lowest_vcn: u64,
    pub record: u64,
}

pub fn parse_attribute_list(b: &[u8]) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 26 <= b.len() {
        let len = le16(b, off + 4) as usize;
        if len < 26 || off + len > b.len() {
            return Err(damaged(format!("an attribute list entry of {} bytes", len)));
        }
        let name_len = b[off + 6] as usize;
        let name_off = b[off + 7] as usize;
        if name_off + 2 * name_len > len {
            return Err(damaged("an attribute list name past its entry"));
        }
        out.push(ListEntry {
            ty: le32(b, off),
            name: utf16(&b[off + name_off..off + name_off + 2 * name_len]),
            lowest_vcn: le64(b, off + 8),
            record: le64(b, off + 0x10) & REF_MASK,
        });
        off += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_decode() {
        // 0x21: 1 length byte, 2 offset bytes; then a sparse run; then a negative delta
        let b = [0x21, 0x10, 0x00, 0x01, 0x01, 0x08, 0x11, 0x04, 0xf0, 0x00];
        let runs = decode_runs(&b, 0, 1 << 20).unwrap();
        assert_eq!(
            runs,
            vec![
                Run { vcn: 0, len: 16, lcn: Some(256) },
                Run { vcn: 16, len: 8, lcn: None },
                Run { vcn: 24, len: 4, lcn: Some(240) }
            ]
        );
        assert!(decode_runs(&b, 0, 100).is_err(), "clusters past the volume");
        assert!(decode_runs(&[0x91, 1], 0, 100).is_err(), "a header with 9 offset bytes");
        // a sparse run of 2^56 clusters: past any file size
        assert!(decode_runs(&[0x08, 0, 0, 0, 0, 0, 0, 0, 1], 0, 100).is_err());
    }

    #[test]
    fn fixups() {
        let mut b = vec![0u8; 1024];
        b[0..4].copy_from_slice(b"FILE");
        b[4] = 0x30;
        b[6] = 3;
        b[0x30..0x36].copy_from_slice(&[7, 7, 1, 2, 3, 4]);
        b[510..512].copy_from_slice(&[7, 7]);
        b[1022..1024].copy_from_slice(&[7, 7]);
        apply_fixups(&mut b.clone(), b"FILE", "t").unwrap();
        let mut f = b.clone();
        apply_fixups(&mut f, b"FILE", "t").unwrap();
        assert_eq!(&f[510..512], &[1, 2]);
        assert_eq!(&f[1022..1024], &[3, 4]);
        b[1023] = 0;
        assert!(apply_fixups(&mut b, b"FILE", "t").is_err());
    }
}

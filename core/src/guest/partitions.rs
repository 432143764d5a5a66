//! Partition tables over the guest disk: MBR (primary, extended, logical) and GPT
//! (protective MBR, primary and backup headers, entries, CRC verdicts).
//!
//! Partitions are numbered as Linux numbers them: MBR primaries 1–4 by slot, logical
//! partitions from 5 in chain order; GPT entries by slot + 1 (unused slots skipped).

use crate::image::bytes::{le16, le32, le64};
use std::collections::HashSet;

use super::{probe_fs, read_in, FsInfo, FsKind, Result};
use crate::image::Image;

/// Sector size assumed for MBR and tried first for GPT (4096 is tried when LBA 1 at 512 has
/// no GPT header).
pub const SECTOR: u64 = 512;
/// Most logical partitions followed in an extended partition's chain.
pub const MAX_LOGICAL: usize = 256;
/// Largest GPT entry array read (bytes).
pub const MAX_GPT_ARRAY: u64 = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Mbr,
    Gpt,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Mbr => "mbr",
            Scheme::Gpt => "gpt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Primary,
    Extended,
    Logical,
    Gpt,
}

impl PartKind {
    pub fn name(self) -> &'static str {
        match self {
            PartKind::Primary => "primary",
            PartKind::Extended => "extended",
            PartKind::Logical => "logical",
            PartKind::Gpt => "gpt",
        }
    }
}

/// A GUID as stored on disk (mixed endian: three little-endian fields, then 8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10..].iter().map(|x| format!("{:02X}", x)).collect::<String>()
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartType {
    Mbr(u8),
    Gpt(Guid),
}

impl PartType {
    /// `0x83` for MBR, the GUID for GPT.
    pub fn id(&self) -> String {
        match self {
            PartType::Mbr(t) => format!("0x{:02x}", t),
            PartType::Gpt(g) => g.to_string(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            PartType::Mbr(t) => mbr_type_name(*t),
            PartType::Gpt(g) => gpt_type_name(&g.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Partition {
    pub index: u32,
    pub scheme: Scheme,
    pub kind: PartKind,
    pub type_id: PartType,
    /// Byte offset on the guest disk, and length in bytes, as the table says.
    pub start: u64,
    pub size: u64,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID.
    pub guid: Option<Guid>,
    /// MBR boot flag (0x80); GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
    /// GPT attribute bits.
    pub attributes: u64,
    /// Guest offset of the table entry that describes this partition.
    pub entry_offset: u64,
    /// The filesystem found at its start, if any.
    pub fs: Option<FsInfo>,
    /// What is wrong with this entry (extends past the end of the disk, ...).
    pub problems: Vec<String>,
}

impl Partition {
    /// The part of the partition that lies on a disk of `disk_size` bytes.
    pub fn readable_range(&self, disk_size: u64) -> (u64, u64) {
        let start = self.start.min(disk_size);
        let end = self.start.saturating_add(self.size).min(disk_size);
        (start, end - start)
    }
}

#[derive(Clone, Debug)]
pub struct MbrEntry {
    pub slot: usize,
    pub status: u8,
    pub ptype: u8,
    pub lba_start: u32,
    pub sectors: u32,
}

#[derive(Clone, Debug)]
pub struct Mbr {
    pub disk_signature: u32,
    /// The four slots, empty ones included.
    pub entries: Vec<MbrEntry>,
    /// A slot of type 0xEE: the MBR only protects a GPT.
    pub protective: bool,
}

/// One GPT header and what its CRCs say.
#[derive(Clone, Debug)]
pub struct GptHeader {
    /// Guest offset of the header.
    pub offset: u64,
    pub revision: u32,
    pub header_size: u32,
    pub header_crc: u32,
    pub header_crc_ok: bool,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    /// None when the entry array could not be read (out of bounds, absurd size).
    pub entries_crc_ok: Option<bool>,
    /// Why this header cannot be used, if so.
    pub problem: Option<String>,
}

impl GptHeader {
    pub fn valid(&self) -> bool {
        self.header_crc_ok && self.entries_crc_ok == Some(true) && self.problem.is_none()
    }
}

#[derive(Clone, Debug)]
pub struct Gpt {
    pub sector_size: u64,
    pub primary: Option<GptHeader>,
    pub backup: Option<GptHeader>,
    /// Which header the partitions were read from: "primary" or "backup".
    pub used: &'static str,
}

#[derive(Clone, Debug)]
pub struct PartitionTable {
    pub disk_size: u64,
    pub scheme: Option<Scheme>,
    pub mbr: Option<Mbr>,
    pub gpt: Option<Gpt>,
    pub partitions: Vec<Partition>,
    /// With no partition table: the filesystem that starts at sector 0, if any.
    pub whole_disk: Option<FsInfo>,
    /// Damage found that did not stop the table from being read.
    pub warnings: Vec<String>,
}


/// Read exactly `buf.len()` guest bytes at `off`; false when they are not all on the disk.
fn read_full(img: &Image, off: u64, buf: &mut [u8]) -> Result<bool> {
    let size = img.virtual_size();
    Ok(read_in(img, 0, size, off, buf)? == buf.len())
}

fn parse_mbr(sector: &[u8]) -> Option<Mbr> {
    if le16(sector, 510) != 0xaa55 {
        return None;
    }
    let mut entries = Vec::new();
    for slot in 0..4 {
        let e = &sector[446 + 16 * slot..446 + 16 * (slot + 1)];
        entries.push(MbrEntry { slot, status: e[0], ptype: e[4], lba_start: le32(e, 8), sectors: le32(e, 12) });
    }
    // a boot sector of a filesystem also ends in 55 AA; a real MBR has 0x00/0x80 status bytes
    if entries.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return None;
    }
    let protective = entries.iter().any(|e| e.ptype == 0xee);
    Some(Mbr { disk_signature: le32(sector, 440), entries, protective })
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Read the partition table of the guest disk, and probe each partition for a filesystem.
/// A disk without one gives `scheme: None` and no partitions; damage becomes warnings and
/// per-partition problems, not errors, as far as the table can be read.
pub fn read_table(img: &Image) -> Result<PartitionTable> {
    let disk_size = img.virtual_size();
    let mut t = PartitionTable { disk_size, scheme: None, mbr: None, gpt: None, partitions: vec![], whole_disk: None, warnings: vec![] };
    let mut sector = [0u8; 512];
    if !read_full(img, 0, &mut sector)? {
        return Ok(t);
    }
    let mbr = parse_mbr(&sector);
    // a filesystem that starts at sector 0 (FAT, NTFS, exFAT) is not a partition table
    let whole_fs = probe_fs(img, 0, disk_size)?;
    let boot_sector_fs = whole_fs.as_ref().is_some_and(|f| {
        matches!(f.kind, FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 | FsKind::Ntfs | FsKind::ExFat)
    });
    if boot_sector_fs {
        t.whole_disk = whole_fs;
        return Ok(t);
    }
    let protective = mbr.as_ref().is_some_and(|m| m.protective);
    let gpt = if protective || mbr.is_none() { read_gpt(img, &mut t.warnings)? } else { None };
    match (gpt, mbr) {
        (Some((g, parts)), m) => {
            if m.is_none() {
                t.warnings.push("GPT without a protective MBR".into());
            }
            t.scheme = Some(Scheme::Gpt);
            t.mbr = m;
            t.gpt = Some(g);
            t.partitions = parts;
        }
        (None, Some(m)) => {
            if m.protective {
                t.warnings.push("the MBR protects a GPT, but no GPT header could be read; showing the MBR".into());
            }
            t.scheme = Some(Scheme::Mbr);
            t.partitions = mbr_partitions(img, &m, &mut t.warnings)?;
            t.mbr = Some(m);
        }
        (None, None) => t.whole_disk = whole_fs,
    }
    for p in &mut t.partitions {
        if p.start >= disk_size {
            p.problems.push(format!("starts past the end of the disk (0x{:x})", disk_size));
        } else if p.start.saturating_add(p.size) > disk_size {
            p.problems.push(format!("extends past the end of the disk (0x{:x})", disk_size));
        }
        if p.kind != PartKind::Extended && p.start < disk_size && p.size > 0 {
            let (start, len) = p.readable_range(disk_size);
            p.fs = probe_fs(img, start, len)?;
        }
    }
    Ok(t)
}

fn mbr_partitions(img: &Image, m: &Mbr, warnings: &mut Vec<String>) -> Result<Vec<Partition>> {
    let mut out = Vec::new();
    let mut extended: Option<(u64, u64)> = None;
    for e in &m.entries {
        if e.ptype == 0 || e.sectors == 0 {
            continue;
        }
        let kind = if is_extended(e.ptype) { PartKind::Extended } else { PartKind::Primary };
        let start = e.lba_start as u64 * SECTOR;
        let size = e.sectors as u64 * SECTOR;
        if kind == PartKind::Extended {
            if extended.is_none() {
                extended = Some((e.lba_start as u64, e.sectors as u64));
            } else {
                warnings.push(format!("more than one extended partition; only the first is followed (slot {})", e.slot + 1));
            }
        }
        out.push(Partition {
            index: e.slot as u32 + 1,
            scheme: Scheme::Mbr,
            kind,
            type_id: PartType::Mbr(e.ptype),
            start,
            size,
            name: None,
            guid: None,
            bootable: e.status == 0x80,
            attributes: 0,
            entry_offset: 446 + 16 * e.slot as u64,
            fs: None,
            problems: vec![],
        });
    }
    if let Some((ext_lba, ext_sectors)) = extended {
        logical_partitions(img, ext_lba, ext_sectors, &mut out, warnings)?;
    }
    Ok(out)
}

/// Follow the chain of extended boot records inside the extended partition.
fn logical_partitions(
    img: &Image,
    ext_lba: u64,
    ext_sectors: u64,
    out: &mut Vec<Partition>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut ebr_lba = ext_lba;
    let mut seen = HashSet::new();
    let mut index = 5u32;
    for _ in 0..MAX_LOGICAL {
        if !seen.insert(ebr_lba) {
            warnings.push(format!("the chain of extended boot records loops back to sector {}", ebr_lba));
            return Ok(());
        }
        let mut s = [0u8; 512];
        let off = ebr_lba * SECTOR;
        if !read_full(img, off, &mut s)? {
            warnings.push(format!("extended boot record at sector {} is past the end of the disk", ebr_lba));
            return Ok(());
        }
        if le16(&s, 510) != 0xaa55 {
            // an empty extended partition has a blank first EBR
            if ebr_lba != ext_lba || s.iter().any(|&b| b != 0) {
                warnings.push(format!("extended boot record at sector {} has no 55 AA signature", ebr_lba));
            }
            return Ok(());
        }
        let e0 = &s[446..462];
        let e1 = &s[462..478];
        let (t0, start0, n0) = (e0[4], le32(e0, 8) as u64, le32(e0, 12) as u64);
        if t0 != 0 && n0 > 0 {
            let lba = ebr_lba + start0;
            let mut problems = vec![];
            if lba + n0 > ext_lba + ext_sectors {
                problems.push("extends past the end of its extended partition".to_string());
            }
            out.push(Partition {
                index,
                scheme: Scheme::Mbr,
                kind: PartKind::Logical,
                type_id: PartType::Mbr(t0),
                start: lba * SECTOR,
                size: n0 * SECTOR,
                name: None,
                guid: None,
                bootable: e0[0] == 0x80,
                attributes: 0,
                entry_offset: off + 446,
                fs: None,
                problems,
            });
            index += 1;
        }
        let (t1, next) = (e1[4], le32(e1, 8) as u64);
        if !is_extended(t1) || next == 0 {
            return Ok(());
        }
        if next >= ext_sectors {
            warnings.push(format!(
                "extended boot record at sector {} points past its extended partition (sector {})",
                ebr_lba,
                ext_lba + next
            ));
            return Ok(());
        }
        ebr_lba = ext_lba + next;
    }
    warnings.push(format!("more than {} logical partitions; the rest are not shown", MAX_LOGICAL));
    Ok(())
}

/// Read one GPT header at `lba` (sector size `ss`) and check its CRCs. None when there is no
/// "EFI PART" signature there.
fn read_gpt_header(img: &Image, lba: u64, ss: u64) -> Result<Option<(GptHeader, Vec<u8>)>> {
    let Some(offset) = lba.checked_mul(ss) else { return Ok(None) };
    let mut hb = vec![0u8; ss as usize];
    if !read_full(img, offset, &mut hb)? || &hb[..8] != b"EFI PART" {
        return Ok(None);
    }
    let header_size = le32(&hb, 12);
    let mut h = GptHeader {
        offset,
        revision: le32(&hb, 8),
        header_size,
        header_crc: le32(&hb, 16),
        header_crc_ok: false,
        my_lba: le64(&hb, 24),
        alternate_lba: le64(&hb, 32),
        first_usable: le64(&hb, 40),
        last_usable: le64(&hb, 48),
        disk_guid: Guid(hb[56..72].try_into().unwrap()),
        entries_lba: le64(&hb, 72),
        num_entries: le32(&hb, 80),
        entry_size: le32(&hb, 84),
        entries_crc: le32(&hb, 88),
        entries_crc_ok: None,
        problem: None,
    };
    if !(92..=ss as u32).contains(&header_size) {
        h.problem = Some(format!("header size {} is not between 92 and {}", header_size, ss));
        return Ok(Some((h, vec![])));
    }
    let mut crc_buf = hb[..header_size as usize].to_vec();
    crc_buf[16..20].fill(0);
    h.header_crc_ok = crc32fast::hash(&crc_buf) == h.header_crc;
    if h.my_lba != lba {
        h.problem = Some(format!("header says it is at LBA {}, but it was found at LBA {}", h.my_lba, lba));
    }
    let es = h.entry_size as u64;
    let total = es * h.num_entries as u64;
    if es < 128 || !es.is_multiple_of(8) || es > 4096 {
        h.problem = Some(format!("partition entry size {} is not a multiple of 8 between 128 and 4096", es));
        return Ok(Some((h, vec![])));
    }
    if total > MAX_GPT_ARRAY {
        h.problem = Some(format!("partition entry array of {} bytes is larger than {} bytes", total, MAX_GPT_ARRAY));
        return Ok(Some((h, vec![])));
    }
    let Some(eoff) = h.entries_lba.checked_mul(ss).filter(|o| o.checked_add(total).is_some_and(|e| e <= img.virtual_size()))
    else {
        h.problem = Some(format!("partition entry array at LBA {} is past the end of the disk", h.entries_lba));
        return Ok(Some((h, vec![])));
    };
    let mut arr = vec![0u8; total as usize];
    img.read(eoff, &mut arr)?;
    h.entries_crc_ok = Some(crc32fast::hash(&arr) == h.entries_crc);
    Ok(Some((h, arr)))
}

fn gpt_partitions(h: &GptHeader, arr: &[u8], ss: u64) -> Vec<Partition> {
    let es = h.entry_size as usize;
    let base = h.entries_lba * ss;
    let mut out = Vec::new();
    for i in 0..h.num_entries as usize {
        let Some(e) = arr.get(i * es..i * es + 128) else { break };
        let ptype = Guid(e[0..16].try_into().unwrap());
        if ptype.is_zero() {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        let attributes = le64(e, 48);
        let units: Vec<u16> = (0..36).map(|k| le16(e, 56 + 2 * k)).take_while(|&u| u != 0).collect();
        let name = String::from_utf16_lossy(&units);
        let mut problems = vec![];
        let (start, size) = if last < first {
            problems.push(format!("last LBA {} is before first LBA {}", last, first));
            (first.saturating_mul(ss), 0)
        } else {
            (first.saturating_mul(ss), (last - first).saturating_add(1).saturating_mul(ss))
        };
        if first < h.first_usable || last > h.last_usable {
            problems.push(format!("outside the usable LBAs {}-{}", h.first_usable, h.last_usable));
        }
        out.push(Partition {
            index: i as u32 + 1,
            scheme: Scheme::Gpt,
            kind: PartKind::Gpt,
            type_id: PartType::Gpt(ptype),
            start,
            size,
            name: (!name.is_empty()).then_some(name),
            guid: Some(Guid(e[16..32].try_into().unwrap())),
            bootable: attributes & 4 != 0,
            attributes,
            entry_offset: base + (i * es) as u64,
            fs: None,
            problems,
        });
    }
    out
}

fn read_gpt(img: &Image, warnings: &mut Vec<String>) -> Result<Option<(Gpt, Vec<Partition>)>> {
    for ss in [SECTOR, 4096] {
        let Some((primary, parr)) = read_gpt_header(img, 1, ss)? else { continue };
        let last_lba = (img.virtual_size() / ss).saturating_sub(1);
        // the backup: where the primary says, else the last sector
        let mut backup = None;
        for lba in [primary.alternate_lba, last_lba] {
            if lba > 1 && lba <= last_lba {
                if let Some(b) = read_gpt_header(img, lba, ss)? {
                    backup = Some(b);
                    break;
                }
            }
        }
        let describe = |h: &GptHeader| -> String {
            let mut why = vec![];
            if !h.header_crc_ok {
                why.push("header CRC mismatch".to_string());
            }
            match h.entries_crc_ok {
                Some(false) => why.push("entry array CRC mismatch".into()),
                None if h.problem.is_none() => why.push("entry array unreadable".into()),
                _ => {}
            }
            if let Some(p) = &h.problem {
                why.push(p.clone());
            }
            why.join(", ")
        };
        let (used, parts) = if primary.valid() {
            ("primary", gpt_partitions(&primary, &parr, ss))
        } else if let Some((b, barr)) = backup.as_ref().filter(|(b, _)| b.valid()) {
            warnings.push(format!("primary GPT header is damaged ({}); using the backup", describe(&primary)));
            ("backup", gpt_partitions(b, barr, ss))
        } else {
            warnings.push(format!("primary GPT header is damaged ({}); its entries are shown as they are", describe(&primary)));
            ("primary", gpt_partitions(&primary, &parr, ss))
        };
        match &backup {
            None => warnings.push("no backup GPT header found".into()),
            Some((b, _)) if !b.valid() => warnings.push(format!("backup GPT header is damaged ({})", describe(b))),
            _ => {}
        }
        let gpt = Gpt { sector_size: ss, primary: Some(primary), backup: backup.map(|(b, _)| b), used };
        return Ok(Some((gpt, parts)));
    }
    Ok(None)
}

/// fdisk's names for MBR partition ids.
pub fn mbr_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "Empty",
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x11 => "Hidden FAT12",
        0x12 => "Compaq diagnostics",
        0x14 => "Hidden FAT16 <32M",
        0x16 => "Hidden FAT16",
        0x17 => "Hidden HPFS/NTFS",
        0x1b => "Hidden W95 FAT32",
        0x1c => "Hidden W95 FAT32 (LBA)",
        0x1e => "Hidden W95 FAT16 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x42 => "SFS",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xaf => "HFS / HFS+",
        0xda => "Non-FS data",
        0xde => "Dell Utility",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfb => "VMware VMFS",
        0xfd => "Linux raid autodetect",
        _ => "unknown",
    }
}

/// Names of well-known GPT partition type GUIDs (upper-case text form).
pub fn gpt_type_name(guid: &str) -> &'static str {
    match guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "024DEE41-33E7-11D3-9D69-0008C781F39F" => "MBR partition scheme",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM-64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8" => "Linux server data",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "8DA63339-0007-60C0-C436-083AC8230908" => "Linux reserved",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "7FFEC5C9-2D00-49B7-8941-3EA10A5586B7" => "Linux dm-crypt",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "Microsoft LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "Microsoft LDM data",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS/HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC" => "Apple APFS",
        "83BD6B9D-7F41-11DC-BE0B-001560B84F0F" => "FreeBSD boot",
        "516E7CB4-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD data",
        "516E7CB5-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD swap",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD ZFS",
        "6A898CC3-1DD2-11B2-99A6-080020736631" => "Solaris /usr & Apple ZFS",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_is_mixed_endian() {
        // Linux filesystem data as stored on disk
        let g = Guid([
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
        ]);
        assert_eq!(g.to_string(), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!(PartType::Gpt(g).name(), "Linux filesystem");
    }

    #[test]
    fn fat_boot_sector_is_not_an_mbr() {
        let mut s = [0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        s[446] = 0x3c; // boot code, not a status byte
        assert!(parse_mbr(&s).is_none());
        s[446] = 0x80;
        s[446 + 4] = 0x83;
        let m = parse_mbr(&s).unwrap();
        assert_eq!(m.entries[0].ptype, 0x83);
        assert!(!m.protective);
    }
}

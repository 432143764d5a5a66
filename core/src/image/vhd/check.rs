//! Consistency check of a VHD, covering what blktap's `vhd-util check` covers: the footer
//! (cookie, checksum, version, type) and its backup copy, the dynamic disk header (cookie,
//! checksum, version, block size, table size), BAT entries past the end of the file, blocks
//! that overlap each other or the metadata, and for differencing disks the parent locators
//! and the parent's unique id. It reads the file itself, so it works on VHDs too damaged to
//! open.

use std::path::Path;

use super::footer::{self, Footer, COOKIE, DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, FOOTER_SIZE};
use super::header::{self, DynHeader, HEADER_SIZE};
use super::{Vhd, BAT_UNUSED};
use crate::image::check::{CheckReport, Finding, Severity};
use crate::image::io::HostFile;
use crate::image::{combine_path, Format};

const SECTOR: u64 = 512;
const VERSION: u32 = 0x0001_0000;
const FEATURE_RESERVED: u32 = 0x2;
const NO_OFFSET: u64 = u64::MAX;

/// The bytes a parent locator reserves: its data space counts 512-byte sectors in the
/// specification, but some writers store bytes; a space smaller than the data it holds can
/// only be sectors.
pub fn locator_space(l: &super::header::Locator) -> u64 {
    let (space, len) = (l.data_space as u64, l.data_len as u64);
    if space >= len && space >= SECTOR {
        space
    } else {
        space * SECTOR
    }
}

/// A named byte range of the file, for overlap checks.
#[derive(Clone, Debug)]
struct Area {
    start: u64,
    end: u64,
    structure: &'static str,
    name: String,
}

fn corrupt(r: &mut CheckReport, structure: &'static str, off: u64, len: u64, msg: String) {
    r.push(Finding::new(Severity::Corruption, structure, msg).at(off, len));
}

/// A finding placed on a field of the structure's field table.
fn corrupt_at(r: &mut CheckReport, structure: &'static str, (off, len): (u64, u64), msg: String) {
    corrupt(r, structure, off, len, msg);
}

fn warn_at(r: &mut CheckReport, structure: &'static str, (off, len): (u64, u64), msg: String) {
    warn(r, structure, off, len, msg);
}

fn warn(r: &mut CheckReport, structure: &'static str, off: u64, len: u64, msg: String) {
    r.push(Finding::new(Severity::Warning, structure, msg).at(off, len));
}

/// Footer checks that do not depend on which copy it is. `label` is "footer" or
/// "backup footer".
fn footer_fields(r: &mut CheckReport, f: &Footer, structure: &'static str, label: &str) {
    let o = f.offset;
    if f.version != VERSION {
        corrupt_at(r, structure, footer::field::VERSION.at(o), format!("{} at 0x{:x}: invalid file format version {}", label, o, footer::version(f.version)));
    }
    if !matches!(f.disk_type, DISK_FIXED | DISK_DYNAMIC | DISK_DIFFERENCING) {
        corrupt_at(r, structure, footer::field::DISK_TYPE.at(o), format!("{} at 0x{:x}: invalid disk type {} ({})", label, o, f.disk_type, f.disk_type_name()));
    }
    if f.features & FEATURE_RESERVED == 0 {
        warn_at(r, structure, footer::field::FEATURES.at(o), format!("{} at 0x{:x}: the reserved feature bit (0x2) is clear (features 0x{:08x})", label, o, f.features));
    }
    if f.features & !(FEATURE_RESERVED | 1) != 0 {
        warn_at(r, structure, footer::field::FEATURES.at(o), format!("{} at 0x{:x}: unknown feature bits set (features 0x{:08x})", label, o, f.features));
    }
    if f.disk_type == DISK_FIXED && f.data_offset != NO_OFFSET {
        warn_at(r, structure, footer::field::DATA_OFFSET.at(o), format!("{} at 0x{:x}: a fixed disk's data offset should be 0xffffffffffffffff, not 0x{:x}", label, o, f.data_offset));
    }
    if f.chs_size() > f.current_size {
        warn(
            r,
            structure,
            o + 56,
            4,
            format!("{} at 0x{:x}: the CHS geometry ({} bytes) is larger than the disk ({} bytes)", label, o, f.chs_size(), f.current_size),
        );
    }
    if f.saved_state > 1 {
        warn_at(r, structure, footer::field::SAVED_STATE.at(o), format!("{} at 0x{:x}: saved state flag {} is neither 0 nor 1", label, o, f.saved_state));
    }
}

/// Check a VHD file, opening it as far as it opens (the parent checks need it open).
pub fn check_file(file: HostFile) -> CheckReport {
    let mut r = CheckReport::new(&file.name, Format::Vhd);
    let diff = structure_checks(&file, &mut r);
    if diff {
        match Vhd::open(file) {
            Ok(v) => parent_checks(&v, &mut r),
            Err(e) => r.push(Finding::new(Severity::Corruption, "dynamic-header", format!("the parent cannot be checked: the disk does not open ({})", e))),
        }
    }
    r
}

/// Check a VHD; `vhd` is the same file opened, for the parent checks of a differencing disk.
pub fn check(file: &HostFile, vhd: Option<&Vhd>) -> CheckReport {
    let mut r = CheckReport::new(&file.name, Format::Vhd);
    if structure_checks(file, &mut r) {
        if let Some(v) = vhd {
            parent_checks(v, &mut r);
        }
    }
    r
}

/// Everything but the parent. Returns whether the disk is a differencing disk whose header
/// could be read.
fn structure_checks(file: &HostFile, r: &mut CheckReport) -> bool {
    let len = file.len();
    if len < FOOTER_SIZE {
        corrupt(r, "footer", 0, len, format!("the file ({} bytes) is too short to hold a VHD footer", len));
        return false;
    }
    // the primary footer: the last 512 bytes (or 511, as old Virtual PC wrote)
    let mut primary_at = len - FOOTER_SIZE;
    let mut primary = Footer::read(file, primary_at).ok();
    if primary.as_ref().is_none_or(|f| !f.cookie_ok()) && len % SECTOR == 511 {
        if let Ok(f) = Footer::read(file, len - 511) {
            if f.cookie_ok() {
                primary_at = len - 511;
                primary = Some(f);
            }
        }
    }
    let primary = primary.filter(|f| f.cookie_ok());
    let copy = Footer::read(file, 0).ok().filter(|f| f.cookie_ok());
    let (f, data_end) = match (&primary, &copy) {
        (Some(p), _) => {
            if !p.checksum_ok() {
                corrupt(
                    r,
                    "footer",
                    primary_at + 64,
                    4,
                    format!("footer at 0x{:x}: bad checksum 0x{:08x}, computed 0x{:08x}", primary_at, p.checksum, p.computed_checksum()),
                );
            }
            footer_fields(r, p, "footer", "footer");
            // a damaged primary with a good backup: the backup is what the disk is read by
            let use_copy = !p.checksum_ok() && copy.as_ref().is_some_and(|c| c.checksum_ok() && c.disk_type != DISK_FIXED);
            (if use_copy { copy.clone().unwrap() } else { p.clone() }, primary_at)
        }
        (None, Some(c)) => {
            corrupt(
                r,
                "footer",
                len - FOOTER_SIZE,
                FOOTER_SIZE,
                format!(
                    "the primary footer at 0x{:x} is destroyed (no 'conectix' cookie); the backup copy at offset 0 is used",
                    len - FOOTER_SIZE
                ),
            );
            (c.clone(), len - FOOTER_SIZE)
        }
        (None, None) => {
            corrupt(
                r,
                "footer",
                len - FOOTER_SIZE,
                FOOTER_SIZE,
                "no VHD footer: neither the end of the file nor offset 0 holds the 'conectix' cookie".into(),
            );
            return false;
        }
    };
    if f.disk_type == DISK_FIXED {
        let data_len = data_end;
        if f.current_size > data_len {
            corrupt(
                r,
                "data",
                0,
                data_len,
                format!("fixed disk of {} bytes, but the file holds only {} bytes of data before its footer", f.current_size, data_len),
            );
        } else if f.current_size < data_len {
            warn(r, "data", f.current_size, data_len - f.current_size, format!("{} bytes between the disk's data and the footer", data_len - f.current_size));
        }
        return false;
    }
    if !matches!(f.disk_type, DISK_DYNAMIC | DISK_DIFFERENCING) {
        return false;
    }
    // the backup copy at offset 0
    match &copy {
        None => corrupt(r, "footer-copy", 0, FOOTER_SIZE, "the backup footer copy at offset 0 is missing (no 'conectix' cookie)".into()),
        Some(c) => {
            if !c.checksum_ok() {
                corrupt(r, "footer-copy", 64, 4, format!("backup footer at 0x0: bad checksum 0x{:08x}, computed 0x{:08x}", c.checksum, c.computed_checksum()));
            }
            match &primary {
                Some(p) if p.bytes != c.bytes => {
                    let differ: Vec<String> = p
                        .fields()
                        .iter()
                        .filter(|a| {
                            let (s, e) = ((a.off - p.offset) as usize, (a.off - p.offset + a.len) as usize);
                            p.bytes[s..e] != c.bytes[s..e]
                        })
                        .map(|a| a.name.clone())
                        .collect();
                    corrupt(r, "footer-copy", 0, FOOTER_SIZE, format!("the primary footer and its backup copy at offset 0 differ ({})", differ.join(", ")));
                }
                Some(_) => {}
                None => footer_fields(r, c, "footer-copy", "backup footer"),
            }
        }
    }
    // the dynamic disk header
    let hoff = f.data_offset;
    if hoff % SECTOR != 0 || hoff.checked_add(HEADER_SIZE).is_none_or(|e| e > data_end) {
        corrupt_at(r, "footer", footer::field::DATA_OFFSET.at(f.offset), format!("the dynamic disk header offset 0x{:x} is unaligned or past the end of the file (0x{:x})", hoff, len));
        return false;
    }
    let h = match DynHeader::read(file, hoff) {
        Ok(h) => h,
        Err(e) => {
            corrupt(r, "dynamic-header", hoff, HEADER_SIZE, format!("dynamic disk header: {}", e));
            return false;
        }
    };
    if !h.checksum_ok() {
        corrupt(
            r,
            "dynamic-header",
            hoff + 36,
            4,
            format!("dynamic disk header at 0x{:x}: bad checksum 0x{:08x}, computed 0x{:08x}", hoff, h.checksum, h.computed_checksum()),
        );
    }
    if h.version != VERSION {
        corrupt_at(r, "dynamic-header", header::field::VERSION.at(hoff), format!("dynamic disk header: invalid version {}", footer::version(h.version)));
    }
    let next = u64::from_be_bytes(h.bytes[8..16].try_into().unwrap());
    if next != NO_OFFSET {
        warn_at(r, "dynamic-header", header::field::DATA_OFFSET.at(hoff), format!("dynamic disk header: data offset should be 0xffffffffffffffff, not 0x{:x}", next));
    }
    let bs = h.block_size as u64;
    let size = f.virtual_size();
    if bs < SECTOR || !bs.is_power_of_two() {
        corrupt_at(r, "dynamic-header", header::field::BLOCK_SIZE.at(hoff), format!("dynamic disk header: invalid block size {} (a power of two of at least 512 bytes)", bs));
        return false;
    }
    let needed = size.div_ceil(bs);
    if (h.max_table_entries as u64) < needed {
        corrupt(
            r,
            "dynamic-header",
            hoff + 28,
            4,
            format!("dynamic disk header: {} BAT entries are too few for a disk of {} bytes in blocks of {} (needs {})", h.max_table_entries, size, bs, needed),
        );
    }
    let bat_bytes = (h.max_table_entries as u64 * 4).next_multiple_of(SECTOR);
    let toff = h.table_offset;
    if toff % SECTOR != 0 || toff.checked_add(h.max_table_entries as u64 * 4).is_none_or(|e| e > data_end) {
        corrupt(
            r,
            "dynamic-header",
            hoff + 16,
            8,
            format!("the block allocation table at 0x{:x} ({} entries) is unaligned or runs past the end of the file (0x{:x})", toff, h.max_table_entries, len),
        );
        return f.disk_type == DISK_DIFFERENCING;
    }
    let bitmap_size = (bs / SECTOR).div_ceil(8).next_multiple_of(SECTOR);

    // metadata areas
    let mut meta = vec![
        Area { start: 0, end: FOOTER_SIZE, structure: "footer-copy", name: "footer copy".into() },
        Area { start: hoff, end: hoff + HEADER_SIZE, structure: "dynamic-header", name: "dynamic disk header".into() },
        Area { start: toff, end: toff + bat_bytes, structure: "bat", name: "block allocation table".into() },
        Area { start: data_end, end: len, structure: "footer", name: "footer".into() },
    ];
    if f.disk_type == DISK_DIFFERENCING {
        for l in &h.locators {
            let space = locator_space(l);
            if space > 0 {
                meta.push(Area {
                    start: l.data_offset,
                    end: l.data_offset.saturating_add(space),
                    structure: "parent-locator",
                    name: format!("parent locator {} ({}) data", l.index, crate::image::region::ascii(&l.code)),
                });
            }
        }
    }
    for (i, a) in meta.iter().enumerate() {
        for b in &meta[i + 1..] {
            if a.start < b.end && b.start < a.end && a.end > a.start && b.end > b.start {
                corrupt(
                    r,
                    b.structure,
                    b.start,
                    b.end - b.start,
                    format!("the {} [0x{:x}-0x{:x}) overlaps the {} [0x{:x}-0x{:x})", b.name, b.start, b.end, a.name, a.start, a.end),
                );
            }
        }
    }

    // BAT entries
    let mut raw = vec![0u8; (h.max_table_entries as u64 * 4) as usize];
    if file.read_exact_at(toff, &mut raw, "block allocation table").is_err() {
        r.push(Finding::new(Severity::CheckError, "bat", "the block allocation table cannot be read").at(toff, bat_bytes));
        return f.disk_type == DISK_DIFFERENCING;
    }
    let block_count = needed;
    let mut blocks: Vec<(u64, u64, u64)> = Vec::new(); // (start, end, block)
    for (i, c) in raw.chunks_exact(4).enumerate() {
        let e = u32::from_be_bytes(c.try_into().unwrap());
        if e == BAT_UNUSED {
            continue;
        }
        let i = i as u64;
        let at = toff + i * 4;
        let start = e as u64 * SECTOR;
        let end = start + bitmap_size + bs;
        if i >= block_count {
            warn(r, "bat", at, 4, format!("BAT entry {} is beyond the disk's last block ({}) but points to sector 0x{:x}", i, block_count.saturating_sub(1), e));
        }
        if end > data_end {
            corrupt(
                r,
                "bat",
                at,
                4,
                format!(
                    "BAT entry {} points to sector 0x{:x}: block [0x{:x}-0x{:x}) runs past the end of the file's data (0x{:x})",
                    i, e, start, end, data_end
                ),
            );
            continue;
        }
        for a in &meta {
            if start < a.end && a.start < end && a.end > a.start {
                corrupt(
                    r,
                    "bat",
                    at,
                    4,
                    format!("BAT entry {}: block [0x{:x}-0x{:x}) overlaps the {} [0x{:x}-0x{:x})", i, start, end, a.name, a.start, a.end),
                );
            }
        }
        blocks.push((start, end, i));
    }
    blocks.sort();
    let mut far: Option<(u64, u64, u64)> = None; // the block reaching farthest so far
    for &(s, e, b) in &blocks {
        if let Some((fs, fe, fb)) = far {
            if s < fe {
                let msg = if s == fs {
                    format!("BAT entries {} and {} both point to sector 0x{:x}: one block named twice", fb, b, s / SECTOR)
                } else {
                    format!("blocks {} [0x{:x}-0x{:x}) and {} [0x{:x}-0x{:x}) overlap", fb, fs, fe, b, s, e)
                };
                corrupt(r, "bat", toff + b * 4, 4, msg);
            }
        }
        if far.is_none_or(|(_, fe, _)| e > fe) {
            far = Some((s, e, b));
        }
    }
    f.disk_type == DISK_DIFFERENCING
}

/// A differencing disk's parent: named, its locators readable, found, with the unique id the
/// child expects.
fn parent_checks(v: &Vhd, r: &mut CheckReport) {
    let Some(h) = &v.header else { return };
    let hoff = h.offset;
    let len = v.file.len();
    if h.parent_name.is_empty() && h.locators.is_empty() {
        corrupt_at(r, "dynamic-header", header::field::PARENT_NAME.at(hoff), "differencing disk without a parent name or parent locators".into());
    }
    for l in &h.locators {
        let at = hoff + 576 + l.index as u64 * 24;
        let code = crate::image::region::ascii(&l.code);
        let known = matches!(&l.code, b"W2ru" | b"W2ku" | b"Wi2r" | b"Wi2k" | b"MacX" | b"Mac ");
        if !known {
            warn(r, "dynamic-header", at, 24, format!("parent locator {}: unknown platform code '{}'", l.index, code));
            continue;
        }
        if l.data_len == 0 {
            continue;
        }
        if l.data_offset % SECTOR != 0 || l.data_offset.checked_add(l.data_len as u64).is_none_or(|e| e > len) {
            corrupt(
                r,
                "parent-locator",
                at,
                24,
                format!("parent locator {} ({}): its {} bytes at 0x{:x} are unaligned or run past the end of the file", l.index, code, l.data_len, l.data_offset),
            );
            continue;
        }
        let space = locator_space(l);
        if (l.data_len as u64) > space {
            warn(r, "parent-locator", at, 24, format!("parent locator {} ({}): {} bytes of data in a space of {}", l.index, code, l.data_len, space));
        }
        if &l.code != b"Mac " && l.path.is_none() {
            corrupt(r, "parent-locator", l.data_offset, l.data_len as u64, format!("parent locator {} ({}): its path cannot be decoded", l.index, code));
        }
    }
    let Some(backing) = v.parent_ref() else { return };
    let child = &v.file.name;
    let found = backing.candidates.iter().map(|c| combine_path(child, c)).find(|p| Path::new(p).is_file());
    let Some(path) = found else {
        corrupt(
            r,
            "parent-locator",
            hoff + 64,
            512,
            format!("parent '{}' not found (tried {})", backing.name, backing.candidates.join(", ")),
        );
        return;
    };
    let parent = match HostFile::open(Path::new(&path), path.clone()) {
        Ok(p) => p,
        Err(e) => {
            corrupt_at(r, "parent-locator", header::field::PARENT_NAME.at(hoff), format!("parent {}: {}", path, e));
            return;
        }
    };
    let pf = match footer::find_cookie(&parent).ok().flatten().and_then(|o| Footer::read(&parent, o).ok()) {
        Some(f) => f,
        None => {
            corrupt_at(r, "parent-locator", header::field::PARENT_NAME.at(hoff), format!("parent {} is not a VHD (no footer)", path));
            return;
        }
    };
    if pf.unique_id != h.parent_unique_id {
        corrupt_at(
            r,
            "dynamic-header",
            header::field::PARENT_UNIQUE_ID.at(hoff),
            format!(
                "parent unique id mismatch: the header expects {} but {} has {}",
                footer::uuid(&h.parent_unique_id),
                path,
                footer::uuid(&pf.unique_id)
            ),
        );
    }
    if pf.timestamp != h.parent_timestamp {
        warn_at(
            r,
            "dynamic-header",
            header::field::PARENT_TIMESTAMP.at(hoff),
            format!("parent time stamp {} differs from the {} that {} records", h.parent_timestamp, pf.timestamp, path),
        );
    }
    if pf.virtual_size() != v.virtual_size() {
        warn_at(
            r,
            "footer",
            footer::field::CURRENT_SIZE.at(v.footer.offset),
            format!("the parent {} is {} bytes, the child {}", path, pf.virtual_size(), v.virtual_size()),
        );
    }
    let _ = COOKIE;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::vhd::header::Locator;

    fn loc(space: u32, len: u32) -> Locator {
        Locator { index: 0, code: *b"W2ku", data_space: space, data_len: len, data_offset: 0x800, path: None }
    }

    #[test]
    fn locator_space_in_sectors_or_bytes() {
        assert_eq!(locator_space(&loc(1, 70)), 512, "one sector, as the spec counts");
        assert_eq!(locator_space(&loc(2, 600)), 1024);
        assert_eq!(locator_space(&loc(512, 70)), 512, "bytes, as Hyper-V writes");
        assert_eq!(locator_space(&loc(4096, 200)), 4096);
        assert_eq!(locator_space(&loc(0, 0)), 0);
    }
}

//! Consistency check of a VHDX: the file type identifier, both headers, both region tables,
//! the metadata, the log, and every BAT entry (state, offset inside the file, blocks that
//! overlap each other or the metadata). It reads the file itself, so it reports on files too
//! damaged to open.

use super::bat::{self, BatEntry};
use super::header::{self, Header};
use super::log::Overlay;
use super::region::{self as vregion, RegionTable};
use super::{within, Vhdx, HEADER_OFFSETS, HEADER_SIZE, MIB, MIN_FILE_SIZE, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE};
use crate::image::check::{CheckReport, Finding, Severity};
use crate::image::io::HostFile;

fn corrupt(r: &mut CheckReport, structure: &'static str, off: u64, len: u64, msg: String) {
    r.push(Finding::new(Severity::Corruption, structure, msg).at(off, len));
}

fn warn(r: &mut CheckReport, structure: &'static str, off: u64, len: u64, msg: String) {
    r.push(Finding::new(Severity::Warning, structure, msg).at(off, len));
}

/// Check a VHDX file, opening it as far as it opens.
pub fn check_file(file: HostFile) -> CheckReport {
    let mut r = CheckReport::new(&file.name, crate::image::Format::parse("vhdx").expect("vhdx is registered"));
    if !structure_checks(&file, &mut r) {
        return r;
    }
    match Vhdx::open(file) {
        Ok(v) => layer_checks(&v, &mut r),
        Err(e) => r.push(Finding::new(Severity::Corruption, "metadata", format!("the disk does not open: {}", e))),
    }
    r
}

/// Check an opened VHDX.
pub fn check(file: &HostFile, v: Option<&Vhdx>) -> CheckReport {
    let mut r = CheckReport::new(&file.name, crate::image::Format::parse("vhdx").expect("vhdx is registered"));
    if structure_checks(file, &mut r) {
        if let Some(v) = v {
            layer_checks(v, &mut r);
        }
    }
    r
}

/// The fixed structures. Returns whether the file is worth opening.
fn structure_checks(file: &HostFile, r: &mut CheckReport) -> bool {
    let len = file.len();
    if len < MIN_FILE_SIZE {
        corrupt(r, "header", 0, len, format!("the file ({} bytes) is too short for a VHDX ({} bytes at least)", len, MIN_FILE_SIZE));
        return false;
    }
    match super::header::FileIdentifier::read(file) {
        Ok(id) if id.signature_ok() => {}
        _ => {
            corrupt(r, "file-identifier", 0, 8, "no 'vhdxfile' signature at offset 0".into());
            return false;
        }
    }
    let headers = [Header::read(file, HEADER_OFFSETS[0]).ok(), Header::read(file, HEADER_OFFSETS[1]).ok()];
    for (i, h) in headers.iter().enumerate() {
        let off = HEADER_OFFSETS[i];
        match h {
            Some(h) if h.is_valid() => {
                if h.version != 1 {
                    corrupt(r, "header", off + 66, 2, format!("header {} at 0x{:x}: version {} (1 expected)", i + 1, off, h.version));
                }
                if h.log_version != 0 {
                    warn(r, "header", off + 64, 2, format!("header {} at 0x{:x}: log version {} (0 expected)", i + 1, off, h.log_version));
                }
            }
            _ => corrupt(r, "header", off, HEADER_SIZE, format!("header {}: {}", i + 1, header::describe_problem(h, off))),
        }
    }
    let Some(cur) = header::pick_current(&headers) else {
        return false;
    };
    if let [Some(a), Some(b)] = &headers {
        if a.is_valid() && b.is_valid() && a.sequence_number == b.sequence_number {
            warn(r, "header", HEADER_OFFSETS[0] + 8, 8, format!("both headers have the sequence number {}", a.sequence_number));
        }
    }
    let h = headers[cur].as_ref().unwrap();
    if h.log_active() {
        warn(
            r,
            "log",
            h.log_offset,
            h.log_length as u64,
            match super::log::scan_and_replay(file, h, &mut Vec::new()) {
                // a crash between the header update and the log write: nothing to replay
                Ok((scan, _)) if !scan.replayed && scan.problem.as_deref().is_some_and(|p| p.contains("no valid active sequence")) => format!(
                    "the header names log {} but the log holds no valid entry of it: nothing to replay",
                    super::guid_str(&h.log_guid)
                ),
                _ => format!("the header names log {}: the log needs replay (it is replayed in memory only)", super::guid_str(&h.log_guid)),
            },
        );
    }
    let overlay = Overlay::default();
    let mut any = false;
    for (i, off) in REGION_TABLE_OFFSETS.iter().enumerate() {
        let t = RegionTable::read(file, &overlay, *off);
        match &t {
            Ok(t) if t.is_valid() => any = true,
            _ => corrupt(r, "region-table", *off, REGION_TABLE_SIZE, format!("region table {}: {}", i + 1, vregion::describe_problem(&t, *off))),
        }
    }
    any
}

struct Area {
    start: u64,
    end: u64,
    name: String,
}

fn layer_checks(v: &Vhdx, r: &mut CheckReport) {
    let len = v.file.len();
    for p in &v.meta.problems {
        corrupt(r, "metadata", v.meta.offset, v.meta.length, p.clone());
    }
    if !matches!(v.meta.physical_sector_size, 512 | 4096) {
        warn(r, "metadata", v.meta.offset, v.meta.length, format!("physical sector size {} (512 or 4096 expected)", v.meta.physical_sector_size));
    }
    let h = v.header();
    let mut areas = vec![
        Area { start: 0, end: MIB, name: "headers and region tables".into() },
        Area { start: v.meta.offset, end: v.meta.offset + v.meta.length, name: "metadata region".into() },
        Area { start: v.bat_offset, end: v.bat_offset + v.bat_region_len, name: "BAT".into() },
    ];
    if h.log_length > 0 && within(h.log_offset, h.log_length as u64, len) {
        areas.push(Area { start: h.log_offset, end: h.log_offset + h.log_length as u64, name: "log".into() });
    }
    let bs = v.block_size();
    for (i, &raw) in v.bat.iter().enumerate() {
        let e = BatEntry(raw);
        let at = v.bat_offset + i as u64 * 8;
        if e.reserved() != 0 {
            warn(r, "bat", at, 8, format!("BAT entry {}: reserved bits set (0x{:016x})", i, raw));
        }
        match v.geo.classify(i as u64) {
            Ok(block) => {
                if block >= v.geo.data_blocks {
                    continue;
                }
                let virt = Some(block * bs);
                match e.state() {
                    bat::PAYLOAD_NOT_PRESENT | bat::PAYLOAD_UNDEFINED | bat::PAYLOAD_ZERO | bat::PAYLOAD_UNMAPPED => {}
                    bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT => {
                        if e.state() == bat::PAYLOAD_PARTIALLY_PRESENT && !v.is_differencing() {
                            r.push(
                                Finding::new(Severity::Corruption, "bat", format!("block {}: PARTIALLY_PRESENT in a disk without a parent", block))
                                    .at(at, 8)
                                    .virt(virt),
                            );
                        }
                        if e.offset() < MIB {
                            r.push(
                                Finding::new(Severity::Corruption, "bat", format!("block {}: data offset 0x{:x} lies in the headers", block, e.offset()))
                                    .at(at, 8)
                                    .virt(virt),
                            );
                        } else if !within(e.offset(), bs, len) {
                            r.push(
                                Finding::new(
                                    Severity::Corruption,
                                    "bat",
                                    format!("block {}: data at 0x{:x} lies past the end of the file (0x{:x} bytes)", block, e.offset(), len),
                                )
                                .at(at, 8)
                                .virt(virt),
                            );
                        } else {
                            areas.push(Area { start: e.offset(), end: e.offset() + bs, name: format!("block {} data", block) });
                        }
                    }
                    s => r.push(
                        Finding::new(Severity::Corruption, "bat", format!("block {}: invalid payload state {}", block, s)).at(at, 8).virt(virt),
                    ),
                }
            }
            Err(chunk) => match e.state() {
                bat::SB_NOT_PRESENT => {}
                bat::SB_PRESENT => {
                    if !v.is_differencing() {
                        warn(r, "bat", at, 8, format!("chunk {}: a sector bitmap in a disk without a parent", chunk));
                    }
                    if e.offset() < MIB || !within(e.offset(), MIB, len) {
                        corrupt(r, "bat", at, 8, format!("chunk {}: sector bitmap at 0x{:x} lies outside the file's data (0x{:x} bytes)", chunk, e.offset(), len));
                    } else {
                        areas.push(Area { start: e.offset(), end: e.offset() + MIB, name: format!("chunk {} sector bitmap", chunk) });
                    }
                }
                s => corrupt(r, "bat", at, 8, format!("chunk {}: invalid sector bitmap state {}", chunk, s)),
            },
        }
    }
    areas.sort_by_key(|a| (a.start, a.end));
    let mut reach: Option<&Area> = None;
    for a in &areas {
        if let Some(p) = reach {
            if a.start < p.end {
                corrupt(r, "data", a.start, a.end - a.start, format!("{} [0x{:x}-0x{:x}) overlaps {} [0x{:x}-0x{:x})", a.name, a.start, a.end, p.name, p.start, p.end));
            }
        }
        if reach.is_none_or(|p| a.end > p.end) {
            reach = Some(a);
        }
    }
}

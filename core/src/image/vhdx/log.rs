//! The log: a circular buffer of entries ("loge") holding metadata updates. When the header
//! names a log (non-zero LogGuid) and the log holds a valid active sequence, its descriptors
//! are replayed into an in-memory overlay so the metadata and BAT read as they would after
//! replay; the file itself is never written.

use std::collections::BTreeMap;

use super::header::Header;
use super::{crc32c_without, guid_at, le32, le64, within, Guid, KIB, MIB};
use crate::image::io::HostFile;
use crate::image::{Error, Result};

pub const SECTOR: u64 = 4 * KIB;
pub const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
pub const ZERO_SIGNATURE: &[u8; 4] = b"zero";
pub const DESC_SIGNATURE: &[u8; 4] = b"desc";
pub const DATA_SIGNATURE: &[u8; 4] = b"data";
pub const REPLAYED: &str = "log replayed in memory (the file is unchanged)";

/// Sectors rewritten by the replayed log: zeroed ranges, then whole 4 KiB sectors (a sector
/// in `sectors` is newer than any zero range covering it).
#[derive(Default, Debug)]
pub struct Overlay {
    pub zeros: Vec<(u64, u64)>,
    pub sectors: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.zeros.is_empty() && self.sectors.is_empty()
    }

    pub fn zero(&mut self, start: u64, end: u64) {
        let gone: Vec<u64> = self.sectors.range(start..end).map(|(k, _)| *k).collect();
        for k in gone {
            self.sectors.remove(&k);
        }
        self.zeros.push((start, end));
    }

    pub fn patch(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        for &(s, e) in &self.zeros {
            let (a, b) = (s.max(off), e.min(end));
            if a < b {
                buf[(a - off) as usize..(b - off) as usize].fill(0);
            }
        }
        for (&s, data) in self.sectors.range(off.saturating_sub(SECTOR - 1)..end) {
            let e = s + SECTOR;
            let (a, b) = (s.max(off), e.min(end));
            if a < b {
                buf[(a - off) as usize..(b - off) as usize].copy_from_slice(&data[(a - s) as usize..(b - s) as usize]);
            }
        }
    }
}

/// Read file bytes as the replayed log left them.
pub fn read_at(file: &HostFile, overlay: &Overlay, off: u64, buf: &mut [u8], what: &str) -> Result<()> {
    file.read_exact_at(off, buf, what)?;
    if !overlay.is_empty() {
        overlay.patch(off, buf);
    }
    Ok(())
}

/// A data or zero descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Descriptor {
    Zero { file_offset: u64, length: u64 },
    /// `data`: the whole 4 KiB sector, with the leading and trailing bytes put back.
    Data { file_offset: u64, data: Box<[u8]> },
}

#[derive(Clone, Debug)]
pub struct LogEntry {
    /// Offset in the log.
    pub offset: u64,
    pub sequence: u64,
    pub length: u64,
    pub tail: u64,
    pub log_guid: Guid,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub descriptors: Vec<Descriptor>,
}

/// What the log holds.
#[derive(Default, Debug)]
pub struct LogScan {
    /// Valid entries found, in log order.
    pub entries: Vec<LogEntry>,
    /// Sequence numbers of the active sequence's tail and head, when one was found.
    pub active: Option<(u64, u64)>,
    pub replayed: bool,
    /// Why the log could not be used.
    pub problem: Option<String>,
}

/// Read `len` bytes at `pos` in the circular log.
fn read_log(file: &HostFile, log_off: u64, log_len: u64, pos: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    let mut done = 0u64;
    while done < len {
        let p = (pos + done) % log_len;
        let n = (log_len - p).min(len - done);
        file.read_exact_at(log_off + p, &mut out[done as usize..(done + n) as usize], "VHDX log")?;
        done += n;
    }
    Ok(out)
}

/// Parse the entry at `pos`, if it is a valid one.
/// `budget`: bytes the scan may still read (a damaged log whose every sector claims to start a
/// log-sized entry would otherwise cost the log's size squared).
pub fn parse_entry(file: &HostFile, log_off: u64, log_len: u64, pos: u64, want_guid: Option<&Guid>, budget: &mut u64) -> Option<LogEntry> {
    let h = read_log(file, log_off, log_len, pos, SECTOR).ok()?;
    if &h[..4] != ENTRY_SIGNATURE {
        return None;
    }
    let length = le32(&h, 8) as u64;
    if length < SECTOR || !length.is_multiple_of(SECTOR) || length > log_len {
        return None;
    }
    let count = le32(&h, 24) as u64;
    let desc_sectors = (64 + 32 * count).div_ceil(SECTOR);
    if desc_sectors > length / SECTOR {
        return None;
    }
    let log_guid = guid_at(&h, 32);
    if want_guid.is_some_and(|g| *g != log_guid) {
        return None;
    }
    if length > *budget {
        *budget = 0;
        return None;
    }
    *budget -= length;
    let b = if length == SECTOR { h } else { read_log(file, log_off, log_len, pos, length).ok()? };
    if le32(&b, 4) != crc32c_without(&b, 4) {
        return None;
    }
    let sequence = le64(&b, 16);
    let mut descriptors = Vec::new();
    let mut data_sector = desc_sectors;
    for i in 0..count as usize {
        let d = &b[64 + i * 32..64 + i * 32 + 32];
        if le64(d, 24) != sequence {
            return None;
        }
        let file_offset = le64(d, 16);
        if !file_offset.is_multiple_of(SECTOR) {
            return None;
        }
        match &d[..4] {
            s if s == ZERO_SIGNATURE => {
                let length = le64(d, 8);
                if !length.is_multiple_of(SECTOR) {
                    return None;
                }
                descriptors.push(Descriptor::Zero { file_offset, length });
            }
            s if s == DESC_SIGNATURE => {
                let so = (data_sector * SECTOR) as usize;
                if so as u64 + SECTOR > length {
                    return None;
                }
                let s = &b[so..so + SECTOR as usize];
                let seq_ok = le32(s, 4) as u64 == sequence >> 32 && le32(s, 4092) as u64 == sequence & 0xffff_ffff;
                if &s[..4] != DATA_SIGNATURE || !seq_ok {
                    return None;
                }
                let mut data = vec![0u8; SECTOR as usize].into_boxed_slice();
                data[..8].copy_from_slice(&d[8..16]);
                data[8..4092].copy_from_slice(&s[8..4092]);
                data[4092..].copy_from_slice(&d[4..8]);
                descriptors.push(Descriptor::Data { file_offset, data });
                data_sector += 1;
            }
            _ => return None,
        }
    }
    Some(LogEntry {
        offset: pos,
        sequence,
        length,
        tail: le32(&b, 12) as u64,
        log_guid,
        flushed_file_offset: le64(&b, 48),
        last_file_offset: le64(&b, 56),
        descriptors,
    })
}

/// The active sequence: the run of entries with consecutive sequence numbers ending at the
/// highest one, from the tail its head names.
pub fn active_sequence(entries: &[LogEntry], log_len: u64) -> Option<Vec<&LogEntry>> {
    let by_off: BTreeMap<u64, &LogEntry> = entries.iter().map(|e| (e.offset, e)).collect();
    let next = |e: &LogEntry| by_off.get(&((e.offset + e.length) % log_len)).copied().filter(|n| Some(n.sequence) == e.sequence.checked_add(1));
    let has_pred: std::collections::HashSet<u64> = entries.iter().filter_map(next).map(|n| n.offset).collect();
    let mut best: Option<Vec<&LogEntry>> = None;
    for start in entries.iter().filter(|e| !has_pred.contains(&e.offset)) {
        let mut run = vec![start];
        while let Some(n) = next(run[run.len() - 1]) {
            if run.len() as u64 > log_len / SECTOR {
                break;
            }
            run.push(n);
        }
        let head_seq = run[run.len() - 1].sequence;
        if best.as_ref().is_none_or(|b| b[b.len() - 1].sequence < head_seq) {
            best = Some(run);
        }
    }
    let run = best?;
    let head = run[run.len() - 1];
    let from = run.iter().position(|e| e.offset == head.tail)?;
    Some(run[from..].to_vec())
}

/// Scan the log the header names and replay its active sequence in memory.
pub fn scan_and_replay(file: &HostFile, h: &Header, warnings: &mut Vec<String>) -> Result<(LogScan, Overlay)> {
    let mut scan = LogScan::default();
    let mut overlay = Overlay::default();
    let (off, len) = (h.log_offset, h.log_length as u64);
    if len == 0 {
        if h.log_active() {
            scan.problem = Some("the header names a log but its length is 0".into());
            warnings.push(format!("{}; nothing to replay", scan.problem.as_ref().unwrap()));
        }
        return Ok((scan, overlay));
    }
    if off % MIB != 0 || len % MIB != 0 || !within(off, len, file.len()) {
        let msg = format!("the log at 0x{:x} ({} bytes) is misplaced or lies past the end of the file", off, len);
        if h.log_active() {
            return Err(Error::damaged("log", Some(off), format!("{}: {}, and it needs replay", file.name, msg)));
        }
        scan.problem = Some(msg);
        return Ok((scan, overlay));
    }
    let want = h.log_active().then_some(&h.log_guid);
    let mut pos = 0;
    let mut budget = len.saturating_mul(4).max(64 * MIB);
    while pos < len {
        if budget == 0 {
            let msg = "the log holds too many damaged entries to scan".to_string();
            warnings.push(format!("{}; scanning stopped at log offset 0x{:x}", msg, pos));
            scan.problem = Some(msg);
            break;
        }
        match parse_entry(file, off, len, pos, want, &mut budget) {
            Some(e) => {
                pos += e.length.max(SECTOR);
                scan.entries.push(e);
            }
            None => pos += SECTOR,
        }
    }
    if !h.log_active() || scan.problem.is_some() {
        // a partly scanned log may hide the newest sequence: replay nothing rather than
        // something stale
        return Ok((scan, overlay));
    }
    let Some(active) = active_sequence(&scan.entries, len) else {
        scan.problem = Some("the header's log GUID is set but the log holds no valid active sequence".into());
        warnings.push(format!("{}; nothing to replay", scan.problem.as_ref().unwrap()));
        return Ok((scan, overlay));
    };
    scan.active = Some((active[0].sequence, active[active.len() - 1].sequence));
    let mut sectors = 0u64;
    for e in &active {
        for d in &e.descriptors {
            match d {
                Descriptor::Zero { file_offset, length } => {
                    overlay.zero(*file_offset, file_offset.saturating_add(*length));
                    sectors += length / SECTOR;
                }
                Descriptor::Data { file_offset, data } => {
                    overlay.sectors.insert(*file_offset, data.clone());
                    sectors += 1;
                }
            }
        }
    }
    scan.replayed = true;
    warnings.push(format!(
        "{}: {} entries (sequence {} to {}), {} sectors",
        REPLAYED,
        active.len(),
        active[0].sequence,
        active[active.len() - 1].sequence,
        sectors
    ));
    Ok((scan, overlay))
}

//! Writing a VHDX ([MS-VHDX] 2.2.2, 2.3, 3.1), in qemu's order (block/vhdx.c, vhdx-log.c).
//!
//! - Before the first write of a session: a log that needs replay is replayed on disk (its
//!   sectors written in place, flushed), then the headers are updated — a new FileWriteGuid
//!   and DataWriteGuid, the sequence number incremented, the log GUID cleared — by the
//!   two-header protocol: the non-current header is written and flushed, then the other.
//! - A write into a FULLY_PRESENT block goes in place.
//! - A NOT_PRESENT / ZERO / UNDEFINED / UNMAPPED block gets a new block at the end of the
//!   file (1 MiB aligned), only its written sectors written (the rest is past the old end
//!   of the file, a hole that reads zero); it is FULLY_PRESENT.
//!   In a differencing disk, unless the write covers the whole block (or the block was
//!   ZERO), the new block is PARTIALLY_PRESENT: partial logical sectors completed from the
//!   parent, the chunk's sector bitmap block allocated (1 MiB of zeros at the end, flushed)
//!   when it has none, and the block's bits set for the written sectors only.
//! - A PARTIALLY_PRESENT block of a differencing disk is written in place (partial logical
//!   sectors not yet in the file completed from the parent), then its sector-bitmap bits set.
//! - Data (new blocks and in place) is written for the whole write call without a flush;
//!   then the metadata (the 4 KiB BAT sectors, sector-bitmap sectors) goes through the log:
//!   a new log GUID in the headers (its flush makes the data durable first), one log entry
//!   with a data descriptor per sector, flushed; then the sectors in place, flushed; then
//!   the log GUID cleared again (qemu's vhdx_log_reset). On a lazy file (the NBD plugin)
//!   the staged sectors wait in memory for [`Vhdx::flush`] instead.
//!
//! A crash leaves at worst a leaked block, or a log entry that the next writer (vdiskview,
//! qemu, Hyper-V) replays and every reader of vdiskview replays in memory.

use std::collections::BTreeMap;

use super::bat;
use super::header::Header;
use super::log::{DATA_SIGNATURE, DESC_SIGNATURE, ENTRY_SIGNATURE, SECTOR};
use super::{crc32c, lsb_bit, Guid, Vhdx, HEADER_OFFSETS, HEADER_SIZE, MIB};
use crate::image::write::step;
use crate::image::{Error, Result};

pub type Below<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

/// Sectors per log entry: a 1 MiB log holds 255 sectors; stay well under.
const MAX_ENTRY_SECTORS: usize = 64;

/// A random (version 4) GUID.
pub fn new_guid() -> Result<Guid> {
    let mut g = [0u8; 16];
    let mut got = 0usize;
    while got < g.len() {
        // SAFETY: a valid buffer of the given length.
        let r = unsafe { libc::getrandom(g[got..].as_mut_ptr() as *mut libc::c_void, g.len() - got, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("getrandom", e));
        }
        got += r as usize;
    }
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Ok(g)
}

/// Where a write session stands.
#[derive(Default, Debug)]
pub struct Session {
    /// The headers carry this session's FileWriteGuid and DataWriteGuid.
    pub started: bool,
    /// The next log entry's sequence number.
    pub sequence: u64,
    /// Metadata sectors (file offset → new 4 KiB) staged for the log, not yet committed.
    /// A write commits them before it returns unless the file is lazy (the NBD plugin):
    /// then they wait for [`Vhdx::flush`] (NBD FLUSH, FUA, close, the plugin's timer), the
    /// BAT in memory and [`Vhdx::overlay_pending`] showing them to reads meanwhile.
    pub pending: BTreeMap<u64, Vec<u8>>,
}

impl Vhdx {
    /// Why this image cannot be written, if it cannot.
    fn write_refusal(&self) -> Option<String> {
        if self.header().log_active() && !self.log.replayed {
            if let Some(p) = &self.log.problem {
                if !p.contains("no valid active sequence") {
                    return Some(format!("the log cannot be replayed ({})", p));
                }
            }
        }
        if self.header().log_version != 0 {
            return Some(format!("log version {} is not supported", self.header().log_version));
        }
        let h = self.header();
        if h.log_length == 0 || !h.log_offset.is_multiple_of(MIB) || !(h.log_length as u64).is_multiple_of(MIB) {
            return Some(format!("the log (0x{:x}, {} bytes) is not usable", h.log_offset, h.log_length));
        }
        None
    }

    pub fn write(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        if let Some(why) = self.write_refusal() {
            return Err(Error::corrupt(format!("{}: refusing to write: {}", self.file.name, why)));
        }
        // everything the write will touch is checked before the first byte changes
        self.precheck(virt, data.len() as u64)?;
        if !self.session.started {
            self.start_session()?;
        }
        let bs = self.block_size();
        // metadata sectors to update through the log: file offset -> new 4 KiB (with those
        // earlier lazy writes left)
        let mut pending = std::mem::take(&mut self.session.pending);
        let mut pos = 0usize;
        let mut r = Ok(());
        while pos < data.len() {
            let v = virt + pos as u64;
            let block = v / bs;
            let n = ((bs - v % bs) as usize).min(data.len() - pos);
            r = self.write_in_block(block, v % bs, &data[pos..pos + n], below, &mut pending);
            if r.is_err() {
                break;
            }
            pos += n;
            if pending.len() >= MAX_ENTRY_SECTORS {
                r = self.commit(&pending);
                if r.is_ok() {
                    pending.clear();
                }
                if r.is_err() {
                    break;
                }
            }
        }
        // (what is staged stays staged on an error: the BAT in memory already says it)
        self.session.pending = pending;
        r?;
        if self.file.lazy() {
            return Ok(());
        }
        self.flush()
    }

    /// Make every write so far durable: the data of all blocks written (new ones and in
    /// place) and then, through the log, the metadata sectors staged for them. The data
    /// needs no flush of its own: the header update that starts a log commit is flushed
    /// before the log entry is written, so data is durable before any BAT entry or sector
    /// bitmap bit that exposes it.
    pub fn flush(&mut self) -> Result<()> {
        if self.session.pending.is_empty() {
            self.file.sync()?;
            step("vhdx data");
            return Ok(());
        }
        let pending = std::mem::take(&mut self.session.pending);
        let r = self.commit(&pending);
        if r.is_err() {
            // committed again, whole, by the next flush (a log entry replays idempotently)
            self.session.pending = pending;
        }
        r
    }

    /// Lay the staged metadata sectors over `buf`, read from the file at `off`.
    pub(crate) fn overlay_pending(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        for (&sec, data) in self.session.pending.range(off.saturating_sub(SECTOR - 1)..end) {
            let lo = sec.max(off);
            let hi = (sec + SECTOR).min(end);
            if lo < hi {
                buf[(lo - off) as usize..(hi - off) as usize].copy_from_slice(&data[(lo - sec) as usize..(hi - sec) as usize]);
            }
        }
    }

    /// Refuse, before anything is written, a write through a damaged BAT entry: an invalid
    /// state, a block past the end of the file, a partially present block without a sector
    /// bitmap.
    fn precheck(&self, virt: u64, len: u64) -> Result<()> {
        let bs = self.block_size();
        if len == 0 {
            return Ok(());
        }
        for block in virt / bs..=(virt + len - 1) / bs {
            let e = self.payload(block);
            match e.state() {
                bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT => {
                    let host = self.block_host(block).map_err(|e| refusing(&self.file.name, e))?;
                    if let Some(what) = self.metadata_at(host, bs) {
                        return Err(Error::damaged(
                            "bat",
                            Some(self.bat_offset + self.geo.payload_index(block) * 8),
                            format!(
                                "{}: refusing to write: BAT entry for block {} points to 0x{:x}, into the {}",
                                self.file.name, block, host, what
                            ),
                        ));
                    }
                    if e.state() == bat::PAYLOAD_PARTIALLY_PRESENT && self.is_differencing() {
                        let chunk = block / self.geo.chunk_ratio;
                        let bm = self.bitmap_entry(chunk);
                        if bm.state() == bat::SB_PRESENT {
                            if let Some(what) = self.metadata_at(bm.offset(), MIB) {
                                return Err(Error::damaged(
                                    "bat",
                                    Some(self.bat_offset + self.geo.bitmap_index(chunk) * 8),
                                    format!(
                                        "{}: refusing to write: the sector bitmap of chunk {} points to 0x{:x}, into the {}",
                                        self.file.name, chunk, bm.offset(), what
                                    ),
                                ));
                            }
                        }
                        if self.block_bitmap(block).map_err(|e| refusing(&self.file.name, e))?.is_none() {
                            return Err(Error::damaged(
                                "bat",
                                Some(self.bat_offset + self.geo.bitmap_index(chunk) * 8),
                                format!(
                                    "{}: refusing to write: block {} is partially present but its chunk has no sector bitmap",
                                    self.file.name, block
                                ),
                            ));
                        }
                    }
                }
                bat::PAYLOAD_NOT_PRESENT | bat::PAYLOAD_UNDEFINED | bat::PAYLOAD_ZERO | bat::PAYLOAD_UNMAPPED => {}
                s => {
                    return Err(Error::damaged(
                        "bat",
                        Some(self.bat_offset + self.geo.payload_index(block) * 8),
                        format!("{}: refusing to write: BAT entry for block {} has the invalid state {}", self.file.name, block, s),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The metadata structure `off..off+len` would overwrite, if any: the headers and region
    /// tables (the first MiB), the log, the metadata region, the BAT.
    fn metadata_at(&self, off: u64, len: u64) -> Option<&'static str> {
        let h = self.header();
        let areas = [
            (0, MIB, "headers and region tables"),
            (h.log_offset, h.log_length as u64, "log"),
            (self.meta.offset, self.meta.length, "metadata region"),
            (self.bat_offset, self.bat_region_len, "block allocation table"),
        ];
        let end = off.saturating_add(len);
        areas.iter().find(|&&(s, l, _)| l > 0 && off < s.saturating_add(l) && s < end).map(|a| a.2)
    }

    fn write_in_block(&mut self, block: u64, in_block: u64, data: &[u8], below: Below, pending: &mut BTreeMap<u64, Vec<u8>>) -> Result<()> {
        let bs = self.block_size();
        let e = self.payload(block);
        let partial = e.state() == bat::PAYLOAD_PARTIALLY_PRESENT && self.is_differencing();
        match e.state() {
            bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT if !partial => {
                let host = self.block_host(block)?;
                self.file.write_at(host + in_block, data)?;
                Ok(())
            }
            bat::PAYLOAD_PARTIALLY_PRESENT => self.write_partial(block, in_block, data, below, pending),
            bat::PAYLOAD_NOT_PRESENT | bat::PAYLOAD_UNDEFINED | bat::PAYLOAD_ZERO | bat::PAYLOAD_UNMAPPED => {
                let block_virt = block * bs;
                let lss = self.meta.logical_sector_size as u64;
                // a differencing disk keeps what the write does not cover in the parent: a
                // partially present block with only the written sectors' bits set (a block
                // written whole, or a ZERO block, is fully present)
                let whole = in_block == 0 && data.len() as u64 >= bs.min(self.virtual_size() - block_virt);
                let sparse = self.is_differencing() && e.state() != bat::PAYLOAD_ZERO && !whole;
                let first = in_block / lss * lss;
                let end = (in_block + data.len() as u64).div_ceil(lss) * lss;
                let mut buf = vec![0u8; bs as usize];
                if sparse {
                    // partial logical sectors completed from the parent
                    for s in [first / lss, end / lss - 1] {
                        let at = (s * lss) as usize;
                        below(block_virt + s * lss, &mut buf[at..at + lss as usize])?;
                    }
                    self.ensure_sector_bitmap(block / self.geo.chunk_ratio, pending)?;
                }
                buf[in_block as usize..in_block as usize + data.len()].copy_from_slice(data);
                let start = self.file.len().next_multiple_of(MIB);
                if start / MIB >= 1 << 44 {
                    return Err(Error::Invalid("the file is too large for another VHDX block".into()));
                }
                // only the written sectors: the block lies past the end of the file, where
                // the rest reads as zero (a hole, as qemu leaves it); the last byte written
                // so the file covers the whole block. No flush: see `flush`.
                let (lo, hi) = if sparse { (first, end) } else { (in_block / lss * lss, (in_block + data.len() as u64).div_ceil(lss) * lss) };
                let hi = hi.min(bs);
                self.file.write_at(start + lo, &buf[lo as usize..hi as usize])?;
                if hi < bs {
                    self.file.write_at(start + bs - 1, &[0])?;
                }
                let idx = self.geo.payload_index(block);
                let state = if sparse { bat::PAYLOAD_PARTIALLY_PRESENT } else { bat::PAYLOAD_FULLY_PRESENT };
                self.stage_bat(idx, (start / MIB) << 20 | state, pending)?;
                if sparse {
                    self.stage_bits(block, first / lss, end / lss, true, pending)?;
                }
                Ok(())
            }
            s => Err(Error::damaged(
                "bat",
                Some(self.bat_offset + self.geo.payload_index(block) * 8),
                format!("{}: refusing to write: BAT entry for block {} has the invalid state {}", self.file.name, block, s),
            )),
        }
    }

    /// A PARTIALLY_PRESENT block of a differencing disk: the data in place (partial logical
    /// sectors whose bit is clear completed from the parent), then the bits.
    fn write_partial(&mut self, block: u64, in_block: u64, data: &[u8], below: Below, pending: &mut BTreeMap<u64, Vec<u8>>) -> Result<()> {
        let bs = self.block_size();
        let lss = self.meta.logical_sector_size as u64;
        let host = self.block_host(block)?;
        let Some(bm) = self.block_bitmap(block)? else {
            return Err(Error::damaged(
                "bat",
                Some(self.bat_offset + self.geo.bitmap_index(block / self.geo.chunk_ratio) * 8),
                format!("{}: refusing to write: block {} is partially present but its chunk has no sector bitmap", self.file.name, block),
            ));
        };
        let first = in_block / lss * lss;
        let end = (in_block + data.len() as u64).div_ceil(lss) * lss;
        let mut buf = vec![0u8; (end - first) as usize];
        for s in [first / lss, end / lss - 1] {
            let at = (s * lss - first) as usize;
            let sector = &mut buf[at..at + lss as usize];
            if lsb_bit(&bm, s) {
                self.file.read_zero_fill(host + s * lss, sector)?;
            } else {
                below(block * bs + s * lss, sector)?;
            }
        }
        let off = (in_block - first) as usize;
        buf[off..off + data.len()].copy_from_slice(data);
        self.file.write_at(host + first, &buf)?;
        if (first / lss..end / lss).all(|s| lsb_bit(&bm, s)) {
            return Ok(());
        }
        self.stage_bits(block, first / lss, end / lss, false, pending)
    }

    /// A new sector bitmap block for `chunk` when it has none: 1 MiB of zeros at the end of
    /// the file, flushed; its BAT entry goes through the log with the rest.
    fn ensure_sector_bitmap(&mut self, chunk: u64, pending: &mut BTreeMap<u64, Vec<u8>>) -> Result<()> {
        if self.bitmap_entry(chunk).state() == bat::SB_PRESENT {
            return Ok(());
        }
        let start = self.file.len().next_multiple_of(MIB);
        self.file.write_at(start, &vec![0u8; MIB as usize])?;
        self.file.sync()?;
        step("vhdx new sector bitmap block");
        self.stage_bat(self.geo.bitmap_index(chunk), (start / MIB) << 20 | bat::SB_PRESENT, pending)
    }

    /// Set the bits of sectors `s0..s1` of `block` in its chunk's sector bitmap (pending, for
    /// the log); `fresh`: clear the block's other bits first (a new block).
    fn stage_bits(&mut self, block: u64, s0: u64, s1: u64, fresh: bool, pending: &mut BTreeMap<u64, Vec<u8>>) -> Result<()> {
        let chunk = block / self.geo.chunk_ratio;
        let per_block = self.geo.sectors_per_block() / 8;
        let base = self.bitmap_entry(chunk).offset() + (block % self.geo.chunk_ratio) * per_block;
        if fresh {
            let mut off = base;
            while off < base + per_block {
                let sec = off / SECTOR * SECTOR;
                let n = (sec + SECTOR).min(base + per_block) - off;
                let cur = self.pending_sector(sec, pending)?;
                cur[(off - sec) as usize..(off - sec + n) as usize].fill(0);
                off += n;
            }
        }
        for s in s0..s1 {
            let byte_off = base + s / 8;
            let sec = byte_off / SECTOR * SECTOR;
            let cur = self.pending_sector(sec, pending)?;
            cur[(byte_off - sec) as usize] |= 1 << (s % 8);
        }
        self.bitmaps.lock().unwrap().remove(&block);
        Ok(())
    }

    /// The 4 KiB sector at `sec` as it will be after the pending updates.
    fn pending_sector<'a>(&self, sec: u64, pending: &'a mut BTreeMap<u64, Vec<u8>>) -> Result<&'a mut Vec<u8>> {
        match pending.entry(sec) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(v) => {
                let mut b = vec![0u8; SECTOR as usize];
                self.file.read_zero_fill(sec, &mut b)?;
                Ok(v.insert(b))
            }
        }
    }

    fn stage_bat(&mut self, idx: u64, value: u64, pending: &mut BTreeMap<u64, Vec<u8>>) -> Result<()> {
        let off = self.bat_offset + idx * 8;
        let sec = off / SECTOR * SECTOR;
        // the BAT sector as the model has it (the file may hold an older one only if a log
        // was replayed in memory, and that was written out when the session started)
        let cur = self.pending_sector(sec, pending)?;
        cur[(off - sec) as usize..(off - sec) as usize + 8].copy_from_slice(&value.to_le_bytes());
        self.bat[idx as usize] = value;
        Ok(())
    }

    /// Replay a pending log on disk, then the session's header update.
    fn start_session(&mut self) -> Result<()> {
        self.replay_on_disk()?;
        let file_guid = new_guid()?;
        let data_guid = new_guid()?;
        self.update_headers(|h| {
            h.file_write_guid = file_guid;
            h.data_write_guid = data_guid;
            h.log_guid = [0; 16];
        })?;
        self.session.started = true;
        Ok(())
    }

    /// `check --repair` (qemu-img check -r, which replays the log when it opens the image for
    /// writing): the pending log replayed on disk, then the headers name no log (a new
    /// FileWriteGuid; the DataWriteGuid stays, the guest data is what it was).
    pub fn repair_log(&mut self) -> Result<Vec<String>> {
        if !self.header().log_active() {
            return Ok(Vec::new());
        }
        if let Some(why) = self.write_refusal() {
            return Err(Error::corrupt(format!("{}: refusing to repair: {}", self.file.name, why)));
        }
        let mut lines = Vec::new();
        if let Some((tail, head)) = self.log.active.filter(|_| self.log.replayed) {
            lines.push(format!("Replaying the log (entries with sequence numbers {} to {}) on disk", tail, head));
        } else {
            lines.push("Clearing the log GUID of a log that holds no entry of it".to_string());
        }
        self.replay_on_disk()?;
        let file_guid = new_guid()?;
        self.update_headers(|h| {
            h.file_write_guid = file_guid;
            h.log_guid = [0; 16];
        })?;
        Ok(lines)
    }

    /// Write what the replayed log holds (the in-memory overlay) into the file, flushed.
    fn replay_on_disk(&mut self) -> Result<()> {
        let max_seq = self.log.entries.iter().map(|e| e.sequence).max().unwrap_or(0);
        self.session.sequence = self.session.sequence.max(max_seq.saturating_add(1)).max(1);
        if !self.log.replayed {
            return Ok(());
        }
        // the overlay's zero ranges, then its sectors (newer than any zero range)
        for &(s, e) in &self.overlay.zeros {
            let mut at = s;
            while at < e {
                let n = (e - at).min(MIB);
                self.file.write_at(at, &vec![0u8; n as usize])?;
                at += n;
            }
        }
        for (off, data) in &self.overlay.sectors {
            self.file.write_at(*off, data)?;
        }
        // the file is at least as long as the head entry says ([MS-VHDX] 2.3.3)
        let head = self.log.active.map(|(_, head)| head);
        let last = self.log.entries.iter().filter(|e| Some(e.sequence) == head).map(|e| e.last_file_offset).max().unwrap_or(0);
        if last > self.file.len() && last <= self.file.len().saturating_add(1 << 40) {
            self.file.write_at(last - 1, &[0])?;
        }
        self.file.sync()?;
        step("vhdx log replayed");
        self.overlay = Default::default();
        self.log.replayed = false;
        self.warnings.retain(|w| !w.starts_with(super::log::REPLAYED));
        self.warnings.push("the log was replayed on disk".into());
        Ok(())
    }

    /// qemu's vhdx_update_headers: the update applied twice, each time to the non-current
    /// header with the sequence number incremented, flushed before the next.
    fn update_headers(&mut self, f: impl Fn(&mut Header)) -> Result<()> {
        for _ in 0..2 {
            let cur = self.current;
            let other = 1 - cur;
            let mut b = vec![0u8; HEADER_SIZE as usize];
            self.file.read_exact_at(HEADER_OFFSETS[cur], &mut b, "VHDX header")?;
            let mut h = self.header().clone();
            f(&mut h);
            h.sequence_number += 1;
            b[8..16].copy_from_slice(&h.sequence_number.to_le_bytes());
            b[16..32].copy_from_slice(&h.file_write_guid);
            b[32..48].copy_from_slice(&h.data_write_guid);
            b[48..64].copy_from_slice(&h.log_guid);
            b[4..8].fill(0);
            let c = crc32c(&b);
            b[4..8].copy_from_slice(&c.to_le_bytes());
            self.file.write_at(HEADER_OFFSETS[other], &b)?;
            self.file.sync()?;
            step("vhdx header");
            self.headers[other] = Some(Header::parse(HEADER_OFFSETS[other], &b));
            self.current = other;
        }
        Ok(())
    }

    /// Write metadata sectors through the log: new log GUID, the entry (flushed), the
    /// sectors in place (flushed), the log GUID cleared.
    fn commit(&mut self, sectors: &BTreeMap<u64, Vec<u8>>) -> Result<()> {
        let log_guid = new_guid()?;
        self.update_headers(|h| h.log_guid = log_guid)?;
        let seq = self.session.sequence;
        self.session.sequence += 1;
        let count = sectors.len();
        let desc_sectors = (64 + 32 * count as u64).div_ceil(SECTOR);
        let length = (desc_sectors + count as u64) * SECTOR;
        let h = self.header().clone();
        if length > h.log_length as u64 {
            return Err(Error::Invalid(format!("{}: the log ({} bytes) is too small for {} sectors", self.file.name, h.log_length, count)));
        }
        let file_end = self.file.len();
        let mut e = vec![0u8; length as usize];
        e[..4].copy_from_slice(ENTRY_SIGNATURE);
        e[8..12].copy_from_slice(&(length as u32).to_le_bytes());
        e[12..16].copy_from_slice(&0u32.to_le_bytes()); // tail: this entry, at log offset 0
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&(count as u32).to_le_bytes());
        e[32..48].copy_from_slice(&log_guid);
        e[48..56].copy_from_slice(&file_end.to_le_bytes());
        e[56..64].copy_from_slice(&file_end.to_le_bytes());
        for (i, (off, data)) in sectors.iter().enumerate() {
            let d = 64 + 32 * i;
            e[d..d + 4].copy_from_slice(DESC_SIGNATURE);
            e[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
            e[d + 8..d + 16].copy_from_slice(&data[..8]);
            e[d + 16..d + 24].copy_from_slice(&off.to_le_bytes());
            e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
            let so = ((desc_sectors + i as u64) * SECTOR) as usize;
            let s = &mut e[so..so + SECTOR as usize];
            s[..4].copy_from_slice(DATA_SIGNATURE);
            s[4..8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
            s[8..4092].copy_from_slice(&data[8..4092]);
            s[4092..].copy_from_slice(&(seq as u32).to_le_bytes());
        }
        let c = crc32c(&e);
        e[4..8].copy_from_slice(&c.to_le_bytes());
        self.file.write_at(h.log_offset, &e)?;
        self.file.sync()?;
        step("vhdx log entry");
        for (off, data) in sectors {
            self.file.write_at(*off, data)?;
        }
        self.file.sync()?;
        step("vhdx metadata in place");
        self.update_headers(|h| h.log_guid = [0; 16])?;
        Ok(())
    }
}

impl Drop for Vhdx {
    /// A lazy image dropped without a flush still commits what it staged (errors can only
    /// be dropped here; the plugin flushes explicitly at close).
    fn drop(&mut self) {
        if !self.session.pending.is_empty() {
            let _ = self.flush();
        }
    }
}

/// An error found before writing, worded as a refusal.
fn refusing(name: &str, e: Error) -> Error {
    let msg = e.to_string();
    let msg = msg.strip_prefix(&format!("{}: ", name)).unwrap_or(&msg).to_string();
    Error::corrupt(format!("{}: refusing to write: {}", name, msg))
}

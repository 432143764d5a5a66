//! Consistency check of a qcow2 image, as `qemu-img check` does it (qcow2_check_refcounts:
//! count every reference to every host cluster from the header, the active and the snapshot
//! L1/L2 tables, the snapshot table, the refcount structures, the encryption header and the
//! bitmaps; compare with the refcounts on disk; check the COPIED flags), and the role of every
//! host cluster that walk finds, for a host-file view.
//!
//! Reads past the end of the file read zeros, as qemu's do; every table read is bounded by
//! the file's size.

use crate::image::bytes::be64;
use crate::image::driver::Progress;
use std::collections::HashMap;

use super::bitmap::{table_entry_problem, TABLE_OFFSET_MASK};
use super::cluster::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use super::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::snapshot::{self, MAX_L1_BYTES};
use super::Qcow2;
use crate::image::check::{CheckReport, Finding, Qcow2Stats, Severity};
use crate::image::{Format, Result};

const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
const REFT_RESERVED_MASK: u64 = 0x1ff;
/// qemu's QCOW_MAX_REFTABLE_SIZE.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;

/// What a host cluster holds, as the check's walk finds it (the first structure that claims
/// it names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ClusterRole {
    /// Neither referenced nor counted.
    Free,
    Header,
    /// The active L1 table.
    L1,
    /// A snapshot's L1 table.
    SnapshotL1,
    /// An L2 table of the active L1 table.
    L2,
    /// An L2 table only snapshots point at.
    SnapshotL2,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
    BitmapDirectory,
    BitmapTable,
    BitmapData,
    CryptoHeader,
    /// Guest data (of the active disk or of a snapshot).
    Data,
    /// Holds (part of) compressed clusters.
    Compressed,
    /// Counted by its refcount but referenced by nothing.
    Leaked,
}

impl ClusterRole {
    pub fn name(self) -> &'static str {
        match self {
            ClusterRole::Free => "free",
            ClusterRole::Header => "header",
            ClusterRole::L1 => "L1 table",
            ClusterRole::SnapshotL1 => "snapshot L1 table",
            ClusterRole::L2 => "L2 table",
            ClusterRole::SnapshotL2 => "snapshot L2 table",
            ClusterRole::RefcountTable => "refcount table",
            ClusterRole::RefcountBlock => "refcount block",
            ClusterRole::SnapshotTable => "snapshot table",
            ClusterRole::BitmapDirectory => "bitmap directory",
            ClusterRole::BitmapTable => "bitmap table",
            ClusterRole::BitmapData => "bitmap data",
            ClusterRole::CryptoHeader => "encryption header",
            ClusterRole::Data => "data",
            ClusterRole::Compressed => "compressed data",
            ClusterRole::Leaked => "unreferenced",
        }
    }

    /// The structure name regions use for it (`Region::structure`), for colours and findings.
    pub fn structure(self) -> &'static str {
        match self {
            ClusterRole::Free => "free",
            ClusterRole::Header => "header",
            ClusterRole::L1 | ClusterRole::SnapshotL1 => "l1",
            ClusterRole::L2 | ClusterRole::SnapshotL2 => "l2",
            ClusterRole::RefcountTable => "refcount-table",
            ClusterRole::RefcountBlock => "refcount-block",
            ClusterRole::SnapshotTable => "snapshot-table",
            ClusterRole::BitmapDirectory => "bitmap-directory",
            ClusterRole::BitmapTable => "bitmap-table",
            ClusterRole::BitmapData => "bitmap-data",
            ClusterRole::CryptoHeader => "crypto-header",
            ClusterRole::Data => "data",
            ClusterRole::Compressed => "compressed",
            ClusterRole::Leaked => "leaked",
        }
    }
}

/// Every host cluster of the file: its role, its refcount on disk and the references the walk
/// counted. Clusters whose refcount and references differ are damaged (or leaked).
#[derive(Clone, Debug, Default)]
pub struct HostMap {
    pub cluster_size: u64,
    pub roles: Vec<ClusterRole>,
    /// The refcount on disk (0 where no refcount block covers the cluster or it is unreadable).
    pub refcounts: Vec<u64>,
    pub references: Vec<u32>,
}

impl HostMap {
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    pub fn role(&self, cluster: u64) -> ClusterRole {
        self.roles.get(cluster as usize).copied().unwrap_or(ClusterRole::Free)
    }

    /// The refcount on disk disagrees with the references found.
    pub fn mismatch(&self, cluster: u64) -> bool {
        let i = cluster as usize;
        i < self.len() && self.refcounts[i] != self.references[i] as u64
    }

    /// Clusters per role, for legends.
    pub fn counts(&self) -> HashMap<ClusterRole, u64> {
        let mut m = HashMap::new();
        for r in &self.roles {
            *m.entry(*r).or_insert(0) += 1;
        }
        m
    }
}

/// The check's state: references counted so far, roles, findings and figures.
struct Walk<'a> {
    q: &'a Qcow2,
    cs: u64,
    file_len: u64,
    refcount_max: u64,
    refs: Vec<u32>,
    roles: Vec<ClusterRole>,
    report: CheckReport,
    stats: Qcow2Stats,
    /// Asked between L1 entries and refcount blocks; false stops the walk.
    progress: Progress<'a>,
    cancelled: bool,
}


impl<'a> Walk<'a> {
    /// Read `len` bytes at `off`, zeros past the end of the file (qemu's reads), without
    /// allocating more than the file holds: returns the bytes that exist.
    fn read_table(&mut self, off: u64, len: u64, what: &str) -> Option<Vec<u8>> {
        let avail = self.file_len.saturating_sub(off).min(len);
        let mut buf = vec![0u8; avail as usize];
        match self.q.file.read_zero_fill(off, &mut buf) {
            Ok(()) => Some(buf),
            Err(e) => {
                self.report.push(Finding::new(Severity::CheckError, "free", format!("I/O error reading the {}: {}", what, e)).at(off, len));
                None
            }
        }
    }

    /// The words of the L2 table at `off`, zeros past the end of the file: from the image's
    /// L2 cache when the offset is aligned (so `oflag_copied` finds the tables the walk read),
    /// else read here (an unaligned offset is a finding, but qemu still reads the table).
    fn l2_table(&mut self, off: u64, l1i: Option<usize>) -> Option<L2Table> {
        if off.is_multiple_of(self.cs) {
            return match self.q.l2_words(off, l1i) {
                Ok(w) => Some(L2Table::Cached(w)),
                Err(e) => {
                    self.report.push(Finding::new(Severity::CheckError, "free", format!("I/O error reading the L2 table: {}", e)).at(off, self.cs));
                    None
                }
            };
        }
        let raw = self.read_table(off, self.cs, "L2 table")?;
        let mut words: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        words.resize((self.cs / 8) as usize, 0);
        Some(L2Table::Read(words))
    }

    /// qemu's qcow2_inc_refcounts_imrt: one more reference to every cluster of the range.
    fn inc(&mut self, off: u64, size: u64, role: ClusterRole) {
        if size == 0 {
            return;
        }
        let end = off.checked_add(size);
        if end.is_none_or(|e| e >= self.file_len.saturating_add(self.cs)) {
            self.report.push(
                Finding::new(
                    Severity::Corruption,
                    role.structure(),
                    format!(
                        "{} at 0x{:x} (0x{:x} bytes) exceeds the end of the file (0x{:x}) by one cluster or more \
                         (qemu: counting reference for region exceeding the end of the file)",
                        role.name(),
                        off,
                        size,
                        self.file_len
                    ),
                )
                .at(off, size),
            );
            return;
        }
        let first = off / self.cs;
        let last = (off + size - 1) / self.cs;
        for k in first..=last {
            let k = k as usize;
            if k >= self.refs.len() {
                self.refs.resize(k + 1, 0);
                self.roles.resize(k + 1, ClusterRole::Free);
            }
            if self.refs[k] as u64 >= self.refcount_max {
                self.report.push(
                    Finding::new(
                        Severity::Corruption,
                        role.structure(),
                        format!("refcount overflow of cluster {} (0x{:x}): more references than {}-bit refcounts hold", k, k as u64 * self.cs, self.q.header.refcount_bits()),
                    )
                    .at(k as u64 * self.cs, self.cs),
                );
                continue;
            }
            self.refs[k] += 1;
            if self.roles[k] == ClusterRole::Free {
                self.roles[k] = role;
            }
        }
    }

    fn corruption(&mut self, structure: &'static str, off: u64, len: u64, virt: Option<u64>, msg: String) {
        self.report.push(Finding::new(Severity::Corruption, structure, msg).at(off, len).virt(virt));
    }

    /// qemu's check_refcounts_l1. `label` names the table in findings; `base` is the file
    /// offset of the table for placing its entries.
    fn l1(&mut self, l1_off: u64, l1_size: u32, active: bool, label: &str) {
        if l1_size == 0 {
            return;
        }
        let bytes = l1_size as u64 * 8;
        self.inc(l1_off, bytes, if active { ClusterRole::L1 } else { ClusterRole::SnapshotL1 });
        let Some(raw) = self.read_table(l1_off, bytes, label) else { return };
        let per = self.q.geo.l2_entries();
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().unwrap());
            if e == 0 {
                continue;
            }
            if active && !(self.progress)(i as u64, l1_size as u64) {
                self.cancelled = true;
                return;
            }
            let at = l1_off + i as u64 * 8;
            if e & L1E_RESERVED_MASK != 0 {
                self.corruption("l1", at, 8, None, format!("{} entry {} (0x{:016x}) has reserved bits set", label, i, e));
            }
            let l2 = e & L1E_OFFSET_MASK;
            self.inc(l2, self.cs, if active { ClusterRole::L2 } else { ClusterRole::SnapshotL2 });
            if !l2.is_multiple_of(self.cs) {
                self.corruption("l1", at, 8, None, format!("{} entry {}: L2 table offset 0x{:x} is not cluster aligned; L1 entry corrupted", label, i, l2));
            }
            let base_virt = active.then(|| i as u64 * per * self.cs);
            self.l2(l2, active, base_virt, label, i);
        }
    }

    /// qemu's check_refcounts_l2.
    fn l2(&mut self, l2_off: u64, active: bool, base_virt: Option<u64>, label: &str, l1_index: usize) {
        let cs = self.cs;
        let Some(table) = self.l2_table(l2_off, active.then_some(l1_index)) else { return };
        let ext = self.q.geo.extended;
        let esize = if ext { 16 } else { 8 };
        let has_data_file = self.q.geo.has_data_file;
        let mut next_contiguous = 0u64;
        let n = cs as usize / esize;
        for i in 0..n {
            let o = i * esize;
            let (entry, bitmap) = if ext { (table[2 * i], table[2 * i + 1]) } else { (table[i], 0) };
            if entry == 0 && bitmap == 0 {
                continue; // unallocated (also past the end of the file)
            }
            let at = l2_off + o as u64;
            let virt = base_virt.map(|b| b + i as u64 * cs);
            let place = || format!("{} L1[{}] L2[{}]", label, l1_index, i);
            let compressed = entry & OFLAG_COMPRESSED != 0;
            if !compressed && entry & L2E_STD_RESERVED_MASK != 0 {
                self.corruption("l2", at, esize as u64, virt, format!("{}: L2 entry 0x{:016x} has reserved bits set", place(), entry));
            }
            if compressed {
                let mut entry = entry;
                if entry & OFLAG_COPIED != 0 {
                    let (coff, _) = self.q.geo.compressed(entry);
                    self.corruption("l2", at, esize as u64, virt, format!("{}: compressed cluster at 0x{:x} has the copied flag set, which it never may", place(), coff));
                    entry &= !OFLAG_COPIED;
                }
                if has_data_file {
                    self.corruption("l2", at, esize as u64, virt, format!("{}: compressed cluster in an image with an external data file (entry 0x{:016x})", place(), entry));
                    continue;
                }
                if bitmap != 0 {
                    self.corruption("l2", at, esize as u64, virt, format!("{}: compressed cluster with a non-zero subcluster bitmap (entry 0x{:016x})", place(), entry));
                    continue;
                }
                let (coff, csize) = self.q.geo.compressed(entry);
                self.inc(coff, csize, ClusterRole::Compressed);
                if active {
                    self.stats.allocated_clusters += 1;
                    self.stats.compressed_clusters += 1;
                    self.stats.fragmented_clusters += 1;
                }
                continue;
            }
            let off = entry & L2E_OFFSET_MASK;
            let zero_flag = !ext && entry & OFLAG_ZERO != 0;
            let allocated = off != 0 || (has_data_file && entry & OFLAG_COPIED != 0);
            if zero_flag && off == 0 {
                continue; // ZERO_PLAIN
            }
            if !allocated {
                if bitmap & L2_BITMAP_ALL_ALLOC != 0 {
                    self.corruption("l2", at, esize as u64, virt, format!("{}: unallocated cluster has a non-zero subcluster allocation bitmap", place()));
                }
                continue;
            }
            // NORMAL or ZERO_ALLOC
            if (bitmap >> 32) & bitmap != 0 {
                self.corruption("l2", at, esize as u64, virt, format!("{}: cluster at 0x{:x} has a corrupted subcluster allocation bitmap", place(), off));
            }
            if !off.is_multiple_of(cs) {
                let data = if ext { bitmap & L2_BITMAP_ALL_ALLOC != 0 } else { !zero_flag };
                let what = if data { "data cluster" } else { "preallocated zero cluster" };
                self.corruption("l2", at, esize as u64, virt, format!("{}: {} offset 0x{:x} is not cluster aligned; L2 entry corrupted", place(), what, off));
            }
            if active {
                self.stats.allocated_clusters += 1;
                if next_contiguous != 0 && off != next_contiguous {
                    self.stats.fragmented_clusters += 1;
                }
                next_contiguous = off + cs;
            }
            if !has_data_file {
                self.inc(off, cs, ClusterRole::Data);
            }
        }
    }

    /// The snapshot table and the snapshots' L1/L2 tables (qemu's check_read_snapshot_table
    /// and the snapshot part of calculate_refcounts).
    fn snapshots(&mut self) {
        let h = &self.q.header;
        // qemu's check_read_snapshot_table validates the offset and count first, even of an
        // empty table: a failure ends the check (qemu-img check: "Check failed", exit 1)
        if let Err((big, why)) = super::validate::validate_table(
            self.cs,
            h.snapshots_offset,
            h.nb_snapshots as u64,
            snapshot::ENTRY_HEADER,
            snapshot::ENTRY_HEADER * snapshot::MAX_SNAPSHOTS as u64,
        ) {
            let msg = if big {
                format!(
                    "snapshot table too large: {} snapshots (nb_snapshots), at most {} (qemu-img check -r all removes the {} overhanging ones)",
                    h.nb_snapshots,
                    snapshot::MAX_SNAPSHOTS,
                    h.nb_snapshots - snapshot::MAX_SNAPSHOTS
                )
            } else {
                format!("snapshot table offset invalid: snapshots_offset 0x{:x} is {}", h.snapshots_offset, why)
            };
            let len = (h.nb_snapshots as u64 * snapshot::ENTRY_HEADER).max(1);
            self.report.push(Finding::new(Severity::CheckError, "snapshot-table", msg).at(h.snapshots_offset, len));
            return;
        }
        if h.nb_snapshots == 0 {
            return;
        }
        let table = match snapshot::read_table(&self.q.file, self.cs, h.snapshots_offset, h.nb_snapshots) {
            Ok(t) => t,
            Err(e) => {
                let len = (h.nb_snapshots as u64 * snapshot::ENTRY_HEADER).min(self.file_len.saturating_sub(h.snapshots_offset)).max(1);
                self.report.push(
                    Finding::new(Severity::CheckError, "snapshot-table", format!("failed to read the snapshot table: {}", e)).at(h.snapshots_offset, len),
                );
                return;
            }
        };
        if self.q.geo.has_data_file {
            self.corruption("snapshot-table", table.offset, table.size, None, format!("{} snapshots in an image with an external data file", table.snapshots.len()));
        }
        // v3 entries must carry extra data up to disk_size (qemu: "snapshot table entry N is
        // incomplete", one corruption each)
        if h.version >= 3 {
            for sn in table.snapshots.iter().filter(|sn| sn.extra_data_size < 16) {
                self.corruption(
                    "snapshot-table",
                    sn.entry_offset,
                    sn.entry_len.max(1),
                    None,
                    format!(
                        "snapshot table entry {} is incomplete: {} bytes of extra data, version 3 images must include extra data at least up to byte 55",
                        sn.index, sn.extra_data_size
                    ),
                );
            }
        }
        for sn in &table.snapshots {
            let label = format!("snapshot {} ({})", sn.id, sn.name);
            if !sn.l1_table_offset.is_multiple_of(self.cs) {
                self.corruption(
                    "snapshot-table",
                    sn.entry_offset,
                    8,
                    None,
                    format!("{}: L1 table offset 0x{:x} is not cluster aligned; snapshot table entry corrupted", label, sn.l1_table_offset),
                );
                continue;
            }
            if sn.l1_bytes() > MAX_L1_BYTES {
                self.corruption(
                    "snapshot-table",
                    sn.entry_offset + 8,
                    4,
                    None,
                    format!("{}: L1 table of {} entries is too large; snapshot table entry corrupted", label, sn.l1_size),
                );
                continue;
            }
            self.l1(sn.l1_table_offset, sn.l1_size, false, &format!("{} L1 table", label));
        }
        self.inc(table.offset, table.size, ClusterRole::SnapshotTable);
    }

    /// qemu's qcow2_check_bitmaps_refcounts.
    fn bitmaps(&mut self) {
        let q = self.q;
        let Some(x) = q.bitmaps_ext() else {
            if let Some(p) = q.bitmaps_ext_problem() {
                self.report.push(Finding::new(Severity::Warning, "header-extension", p));
            }
            return;
        };
        if !x.consistent {
            self.report.push(
                Finding::new(
                    Severity::Warning,
                    "bitmap-directory",
                    "the bitmaps extension is ignored: its autoclear bit is clear (a program without bitmap support wrote the image), \
                     so its clusters count as leaked",
                )
                .at(x.directory_offset, x.directory_size),
            );
            return;
        }
        if x.nb_bitmaps == 0 {
            return;
        }
        self.inc(x.directory_offset, x.directory_size, ClusterRole::BitmapDirectory);
        let dir = q.bitmap_directory();
        if let Some(e) = dir.error {
            self.corruption("bitmap-directory", x.directory_offset, x.directory_size, None, format!("bitmap directory: {}", e));
            self.report.push(Finding::new(Severity::CheckError, "bitmap-directory", "the bitmap check stopped at the broken bitmap directory").at(x.directory_offset, x.directory_size));
            return;
        }
        for bm in &dir.bitmaps {
            let bytes = bm.table_size as u64 * 8;
            self.inc(bm.table_offset, bytes, ClusterRole::BitmapTable);
            let Some(raw) = self.read_table(bm.table_offset, bytes, "bitmap table") else { return };
            let bad = raw
                .chunks_exact(8)
                .enumerate()
                .find_map(|(i, c)| table_entry_problem(u64::from_be_bytes(c.try_into().unwrap()), self.cs).map(|p| (i, p)));
            if let Some((i, p)) = bad {
                let at = bm.table_offset + i as u64 * 8;
                self.corruption("bitmap-table", at, 8, None, format!("bitmap '{}' table entry {}: {}", bm.name, i, p));
                self.report.push(Finding::new(Severity::CheckError, "bitmap-table", format!("the bitmap check stopped at bitmap '{}'", bm.name)).at(at, 8));
                return;
            }
            for c in raw.chunks_exact(8) {
                let off = u64::from_be_bytes(c.try_into().unwrap()) & TABLE_OFFSET_MASK;
                if off != 0 {
                    self.inc(off, self.cs, ClusterRole::BitmapData);
                }
            }
        }
    }

    /// qemu's check_refblocks; returns the refcount table entries (raw).
    fn refblocks(&mut self, table: &[u64]) {
        let rt_off = self.q.header.refcount_table_offset;
        for (i, &e) in table.iter().enumerate() {
            let at = rt_off + i as u64 * 8;
            let off = e & REFT_OFFSET_MASK;
            if e & REFT_RESERVED_MASK != 0 {
                self.corruption("refcount-table", at, 8, None, format!("refcount table entry {} (0x{:016x}) has reserved bits set", i, e));
                continue;
            }
            if !off.is_multiple_of(self.cs) {
                self.corruption("refcount-table", at, 8, None, format!("refcount block {} at 0x{:x} is not cluster aligned; refcount table entry corrupted", i, off));
                continue;
            }
            let cluster = off / self.cs;
            if cluster >= self.refs.len() as u64 {
                self.corruption("refcount-table", at, 8, None, format!("refcount block {} at 0x{:x} is outside the image (0x{:x} bytes)", i, off, self.file_len));
                continue;
            }
            if off != 0 {
                self.inc(off, self.cs, ClusterRole::RefcountBlock);
                let r = self.refs[cluster as usize];
                if r != 1 {
                    self.corruption("refcount-block", off, self.cs, None, format!("refcount block {} at 0x{:x} is referenced {} times (refcount={})", i, off, r, r));
                }
            }
        }
    }
}

/// Refcounts as the file stores them, block by block, zeros past the end of the file.
struct OnDisk<'a> {
    q: &'a Qcow2,
    table: Vec<u64>,
    per_block: u64,
    cache: HashMap<u64, std::rc::Rc<Vec<u64>>>,
    /// The block read last: most lookups run through one block after another.
    last: Option<(u64, std::rc::Rc<Vec<u64>>)>,
}

impl<'a> OnDisk<'a> {
    /// qemu's qcow2_get_refcount; `Err` for an unaligned refcount block (qemu: -EIO).
    fn get(&mut self, cluster: u64) -> std::result::Result<u64, String> {
        let ti = cluster / self.per_block;
        let Some(&e) = self.table.get(ti as usize) else { return Ok(0) };
        let block = e & REFT_OFFSET_MASK;
        if block == 0 {
            return Ok(0);
        }
        let cs = self.q.cluster_size();
        if !block.is_multiple_of(cs) {
            return Err(format!("refcount block offset 0x{:x} is unaligned (refcount table index {})", block, ti));
        }
        if block > i64::MAX as u64 - cs {
            return Err(format!("refcount block offset 0x{:x} is out of range", block));
        }
        let idx = (cluster % self.per_block) as usize;
        if let Some((b, counts)) = &self.last {
            if *b == block {
                return Ok(counts[idx]);
            }
        }
        let counts = match self.cache.get(&block) {
            Some(c) => c.clone(),
            None => {
                // decoded blocks kept: enough that the compare and the COPIED pass read each
                // block once on images of a few GiB even with 512-byte clusters
                if self.cache.len() as u64 * self.per_block * 8 > DECODED_REFCOUNT_BYTES {
                    self.cache.clear();
                }
                let c = std::rc::Rc::new(self.decode(block));
                self.cache.insert(block, c.clone());
                c
            }
        };
        let v = counts[idx];
        self.last = Some((block, counts));
        Ok(v)
    }

    fn decode(&self, block: u64) -> Vec<u64> {
        let cs = self.q.cluster_size() as usize;
        let mut buf = vec![0u8; cs];
        if block < self.q.file.len() {
            let _ = self.q.file.read_zero_fill(block, &mut buf);
        }
        let bits = self.q.header.refcount_bits() as usize;
        if bits >= 8 {
            buf.chunks_exact(bits / 8).map(|c| c.iter().fold(0u64, |a, &x| (a << 8) | x as u64)).collect()
        } else {
            let per_byte = 8 / bits;
            let mask = ((1u16 << bits) - 1) as u8;
            buf.iter().flat_map(|&b| (0..per_byte).map(move |i| ((b >> (i * bits)) & mask) as u64)).collect()
        }
    }
}

/// Bytes of decoded refcount blocks the walk keeps.
const DECODED_REFCOUNT_BYTES: u64 = 32 << 20;

/// An L2 table's words for the walk.
enum L2Table {
    Cached(super::L2Words),
    Read(Vec<u64>),
}

impl std::ops::Deref for L2Table {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            L2Table::Cached(w) => w,
            L2Table::Read(v) => v,
        }
    }
}

/// Walk the whole image: the report (findings and qemu-img check's counts) and the role of
/// every host cluster.
pub fn walk(q: &Qcow2) -> Result<(CheckReport, HostMap)> {
    walk_with(q, &|_, _| true)
}

/// The walk, reporting progress (active L1 entries done of all) to `progress`, which stops it
/// by answering false: the result is then `Error::Cancelled`.
pub fn walk_with<'a>(q: &'a Qcow2, progress: Progress<'a>) -> Result<(CheckReport, HostMap)> {
    let cs = q.cluster_size();
    let file_len = q.file.len();
    let nb_clusters = file_len.div_ceil(cs);
    let h = &q.header;
    let bits = h.refcount_bits();
    let mut w = Walk {
        q,
        cs,
        file_len,
        refcount_max: if bits >= 32 { u32::MAX as u64 } else { (1u64 << bits) - 1 },
        refs: vec![0; nb_clusters as usize],
        roles: vec![ClusterRole::Free; nb_clusters as usize],
        report: CheckReport::new(&q.file.name, Format::Qcow2),
        stats: Qcow2Stats::default(),
        progress,
        cancelled: false,
    };
    if h.incompatible & INCOMPAT_CORRUPT != 0 {
        w.report.push(Finding::new(Severity::Warning, "header", "the image is marked corrupt (incompatible feature bit 1): qemu refuses to write it").at(72, 8));
    }
    if h.incompatible & INCOMPAT_DIRTY != 0 {
        w.report.push(
            Finding::new(
                Severity::Warning,
                "header",
                "the image is dirty (lazy refcounts, not closed cleanly): its refcounts are stale until qemu repairs them on the next read-write open",
            )
            .at(72, 8),
        );
    }
    w.stats.total_clusters = (h.size / 512 * 512).div_ceil(cs);

    // header fields qemu refuses even when it opens the image for a check ("Could not open",
    // exit 1): nothing else is reported
    let fatal: Vec<_> = q.header_problems().into_iter().filter(|p| super::validate::CHECK_OPEN_FAILS.contains(&p.field)).collect();
    if !fatal.is_empty() {
        for p in fatal {
            w.report.push(Finding::new(Severity::CheckError, "header", format!("{} (qemu cannot open the image)", p)).at(0, h.header_length as u64));
        }
        let report = w.report;
        let map = HostMap { cluster_size: cs, roles: w.roles, refcounts: vec![0; nb_clusters as usize], references: w.refs };
        return Ok((report, map));
    }

    // the refcount table (qemu loads it at open, up to 8 MiB)
    let rt_bytes = h.refcount_table_clusters as u64 * cs;
    let mut rt: Vec<u64> = Vec::new();
    // qemu validates the table at open, in check mode too: an invalid one fails the open
    // ("Could not open …", exit 1) before anything is counted, so nothing else is reported
    if let Err((big, why)) = super::validate::validate_table(cs, h.refcount_table_offset, h.refcount_table_clusters as u64, cs, MAX_REFTABLE_BYTES) {
        let msg = if big {
            format!("the refcount table ({} clusters, refcount_table_clusters) is {}", h.refcount_table_clusters, why)
        } else {
            format!("the refcount table offset 0x{:x} (refcount_table_offset) is {}", h.refcount_table_offset, why)
        };
        w.report.push(Finding::new(Severity::CheckError, "refcount-table", msg).at(h.refcount_table_offset, rt_bytes.max(1)));
        let report = w.report;
        let map = HostMap { cluster_size: cs, roles: w.roles, refcounts: vec![0; nb_clusters as usize], references: w.refs };
        return Ok((report, map));
    } else if let Some(raw) = w.read_table(h.refcount_table_offset, rt_bytes, "refcount table") {
        rt = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        // entries past the end of the file read as zero: no block
    }

    // header, active L1 (and its L2 tables and data), snapshots, refcount structures,
    // encryption header, bitmaps, refcount blocks: qemu's calculate_refcounts
    w.inc(0, cs, ClusterRole::Header);
    w.l1(h.l1_table_offset, h.l1_size, true, "active L1 table");
    if w.cancelled {
        return Err(crate::image::Error::Cancelled);
    }
    w.snapshots();
    w.inc(h.refcount_table_offset, rt_bytes, ClusterRole::RefcountTable);
    if h.crypt_method == 2 {
        if let Some(e) = h.extensions.iter().find(|e| e.kind == super::header::EXT_CRYPTO && e.data.len() >= 16) {
            w.inc(be64(&e.data, 0), be64(&e.data, 8), ClusterRole::CryptoHeader);
        }
    }
    w.bitmaps();
    w.refblocks(&rt);

    // compare with the refcounts on disk: qemu's compare_refcounts
    let mut disk = OnDisk { q, table: rt, per_block: q.refcounts_per_block(), cache: HashMap::new(), last: None };
    let n = w.refs.len();
    let mut refcounts = vec![0u64; n];
    let mut highest = 0u64;
    let mut mismatches = Vec::new();
    for (i, slot) in refcounts.iter_mut().enumerate() {
        let r1 = match disk.get(i as u64) {
            Ok(r) => r,
            Err(e) => {
                w.report.push(Finding::new(Severity::CheckError, "refcount-table", format!("can't get the refcount of cluster {}: {}", i, e)).at(i as u64 * cs, cs));
                continue;
            }
        };
        *slot = r1;
        let r2 = w.refs[i] as u64;
        if r1 > 0 || r2 > 0 {
            highest = i as u64;
        }
        if r1 != r2 {
            mismatches.push((i, r1, r2));
        }
    }
    // the guest offsets a damaged data cluster serves, for placing the findings
    let wanted: std::collections::HashSet<u64> =
        mismatches.iter().filter(|m| w.roles[m.0] == ClusterRole::Data).map(|m| m.0 as u64).collect();
    let guest = guest_refs(q, &wanted);
    for (i, r1, r2) in mismatches {
        let role = if w.roles[i] == ClusterRole::Free { ClusterRole::Leaked } else { w.roles[i] };
        let off = i as u64 * cs;
        let virts = guest.get(&(i as u64)).cloned().unwrap_or_default();
        let sev = if r1 < r2 { Severity::Corruption } else { Severity::Leak };
        let what = if r1 < r2 { "ERROR" } else { "Leaked" };
        let serves = if virts.is_empty() {
            String::new()
        } else {
            let more = if virts.len() >= MAX_GUEST_REFS { " and more" } else { "" };
            format!(", guest {}{}", virts.iter().map(|v| format!("0x{:x}", v)).collect::<Vec<_>>().join(" and "), more)
        };
        w.report.push(
            Finding::new(
                sev,
                role.structure(),
                format!("{} cluster {} refcount={} reference={} ({} cluster at 0x{:x}{})", what, i, r1, r2, role.name(), off, serves),
            )
            .at(off, cs)
            .virt(virts.first().copied()),
        );
    }

    // the COPIED flags of the active tables: qemu's check_oflag_copied
    oflag_copied(q, &mut w, &mut disk);

    w.stats.image_end_offset = (highest + 1) * cs;
    let mut roles = w.roles;
    for (i, r) in roles.iter_mut().enumerate() {
        if *r == ClusterRole::Free && refcounts[i] > 0 {
            *r = ClusterRole::Leaked;
        }
    }
    let mut report = w.report;
    report.qcow2 = Some(w.stats);
    let map = HostMap { cluster_size: cs, roles, refcounts, references: w.refs };
    Ok((report, map))
}

/// Guest offsets named per damaged cluster, at most.
const MAX_GUEST_REFS: usize = 8;

/// Host cluster -> the guest offsets of the active L1/L2 tables that map to it (the first
/// [`MAX_GUEST_REFS`]), for the clusters in `wanted` only.
fn guest_refs(q: &Qcow2, wanted: &std::collections::HashSet<u64>) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let cs = q.cluster_size();
    let h = &q.header;
    let avail = q.file.len().saturating_sub(h.l1_table_offset).min(h.l1_size as u64 * 8);
    let mut l1 = vec![0u8; avail as usize];
    if q.file.read_zero_fill(h.l1_table_offset, &mut l1).is_err() {
        return out;
    }
    let per = q.geo.l2_entries();
    for (i, c) in l1.chunks_exact(8).enumerate() {
        let l2 = u64::from_be_bytes(c.try_into().unwrap()) & L1E_OFFSET_MASK;
        if l2 == 0 || !l2.is_multiple_of(cs) || l2 >= q.file.len() {
            continue;
        }
        let Ok(t) = q.l2_table(l2) else { continue };
        for (j, e) in t.iter().enumerate() {
            if e.entry & OFLAG_COMPRESSED != 0 {
                continue;
            }
            let off = e.entry & L2E_OFFSET_MASK;
            if off != 0 && wanted.contains(&(off / cs)) {
                // a damaged L1/L2 can map one cluster at millions of guest offsets: name a few
                let v = out.entry(off / cs).or_default();
                if v.len() < MAX_GUEST_REFS {
                    v.push((i as u64 * per + j as u64) * cs);
                }
            }
        }
    }
    out
}

fn oflag_copied(q: &Qcow2, w: &mut Walk, disk: &mut OnDisk) {
    let cs = q.cluster_size();
    let h = &q.header;
    let Some(l1) = w.read_table(h.l1_table_offset, h.l1_size as u64 * 8, "active L1 table") else { return };
    let per = q.geo.l2_entries();
    let esize = if q.geo.extended { 16 } else { 8 };
    let has_data_file = q.geo.has_data_file;
    for (i, c) in l1.chunks_exact(8).enumerate() {
        let e = u64::from_be_bytes(c.try_into().unwrap());
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        let Ok(rc) = disk.get(l2 / cs) else { continue };
        if (rc == 1) != (e & OFLAG_COPIED != 0) {
            w.corruption(
                "l1",
                h.l1_table_offset + i as u64 * 8,
                8,
                None,
                format!("ERROR OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", i, e, rc),
            );
        }
        let Some(table) = w.l2_table(l2, Some(i)) else { return };
        for (j, ent) in table.chunks_exact(esize / 8).enumerate() {
            let entry = ent[0];
            if entry & OFLAG_COMPRESSED != 0 {
                continue;
            }
            let off = entry & L2E_OFFSET_MASK;
            let zero_plain = !q.geo.extended && entry & OFLAG_ZERO != 0 && off == 0;
            let normal = off != 0 || (has_data_file && entry & OFLAG_COPIED != 0);
            if zero_plain || !normal {
                continue;
            }
            let rc = if has_data_file {
                1
            } else {
                match disk.get(off / cs) {
                    Ok(r) => r,
                    Err(_) => continue,
                }
            };
            if (rc == 1) != (entry & OFLAG_COPIED != 0) {
                let virt = (i as u64 * per + j as u64) * cs;
                w.corruption(
                    "l2",
                    l2 + (j * esize) as u64,
                    esize as u64,
                    Some(virt),
                    format!("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={} (guest 0x{:x})", entry, rc, virt),
                );
            }
        }
    }
}

/// qemu-img check on this image file.
pub fn check(q: &Qcow2) -> Result<CheckReport> {
    Ok(walk(q)?.0)
}

impl Qcow2 {
    /// The role, refcount and references of every host cluster (the check's walk).
    pub fn host_map(&self) -> Result<HostMap> {
        Ok(walk(self)?.1)
    }

    /// [`Qcow2::host_map`] with progress and cancel.
    pub fn host_map_with(&self, progress: Progress) -> Result<HostMap> {
        Ok(walk_with(self, progress)?.1)
    }
}

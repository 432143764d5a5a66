//! Writing a qcow2 image, as qemu orders it: a new cluster's refcount is recorded before
//! anything points at it, its data is written before the L2 entry that maps it, a new L2
//! table before the L1 entry, and what a write replaces (a compressed cluster, a cluster or
//! L2 table shared with a snapshot) is released last. A crash between steps leaks at most.
//!
//! In place where the top layer owns the cluster (OFLAG_COPIED); otherwise a new cluster at
//! the end of the file holding the cluster's whole current content (copy-on-write from a
//! backing file, a compressed cluster, zeros) with the new bytes over it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::cluster::{Sub, L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use super::header::{EXT_BITMAPS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::Qcow2;
use crate::image::mapping::{HostFileId, LayerKind};
use crate::image::write::step;
use crate::image::{Error, Result};

pub type Below<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

/// One cluster of a write, planned before anything is written.
enum Planned<'a> {
    /// Bytes at `host` of a cluster this layer owns, with the L2 entry to set after (a
    /// zero cluster or zero/unallocated subclusters completed).
    InPlace { host: u64, bytes: Cow<'a, [u8]>, l2: Option<(usize, usize, u64, u64)> },
    /// A new cluster with the whole content; `old` is the entry it replaces.
    New { cluster_virt: u64, bytes: Cow<'a, [u8]>, old: Option<u64>, l1i: usize, l2i: usize },
}

#[derive(Default)]
pub(crate) struct WriteState {
    /// The refcount table, as last written.
    table: Option<Vec<u64>>,
    /// First cluster past everything allocated so far.
    next_free: u64,
    /// While a write counts its new clusters: refcount blocks created and written, whose
    /// refcount table entries (index, offset) wait for one flush after all of them.
    pending_blocks: Option<Vec<(usize, u64)>>,
    /// Metadata written to memory only, waiting for [`Qcow2::commit_pending`].
    pending: Pending,
}

/// The metadata groups of writes not yet written to the file: on a lazy file (the NBD
/// plugin) they wait for the client's FLUSH, a FUA write, a close or the plugin's timer, as
/// qemu's write-back metadata cache waits; otherwise every write commits them before it
/// returns. Planning and reads see them: `l1` already holds the new L1 entries, and L2
/// tables are read through [`Qcow2::read_l2_raw`], which lays the pending entries over the
/// bytes on disk. The refcounts and data of the new clusters are in the file already (not
/// flushed): nothing on disk points at them until the L2 group is written, after a flush.
#[derive(Default)]
pub(crate) struct Pending {
    /// L2 table offset → its entries to write.
    l2: BTreeMap<u64, PendingL2>,
    /// L1 index → the value to write (new L2 tables).
    l1: BTreeMap<usize, u64>,
    /// L2 tables (shared with a snapshot) this layer no longer references.
    old_tables: Vec<u64>,
    /// L2 entries whose clusters (compressed, shared) this layer no longer references.
    releases: Vec<u64>,
    /// L2 entries held, to bound the memory a long run of lazy writes takes.
    entries: usize,
}

struct PendingL2 {
    /// A new table: what it starts as (0: zeros, else the offset of the shared table it
    /// copies), written whole; `None`: a table on disk, of which only the entries' span is
    /// written.
    new_from: Option<u64>,
    /// index → (entry, extended-L2 bitmap)
    entries: BTreeMap<usize, (u64, u64)>,
}

impl Drop for Qcow2 {
    /// A lazy image dropped without a flush still writes what it holds (errors can only
    /// be dropped here; the plugin flushes explicitly at close).
    fn drop(&mut self) {
        if self.has_pending() {
            let _ = self.commit_pending();
        }
    }
}

/// Pending L2 entries past which even a lazy write commits them before returning.
const MAX_PENDING_ENTRIES: usize = 1 << 18;

impl Qcow2 {
    /// Why this image must not be written, if it must not.
    pub fn write_refusal(&self) -> Option<String> {
        let h = &self.header;
        // what qemu validates at open: header fields, then the snapshot table's entries
        if let Some(p) = self.header_problems().into_iter().next() {
            return Some(format!("{} (qemu refuses to open the image)", p));
        }
        if let Some(p) = self.table_problems().into_iter().next() {
            return Some(p.to_string());
        }
        if let Some(e) = &self.data_file_error {
            return Some(format!("incompatible_features bit 2 (external data file): {}", e));
        }
        if h.incompatible & INCOMPAT_CORRUPT != 0 {
            return Some(
                "incompatible_features bit 1 (corrupt) is set: the image is marked corrupt; run qemu-img check -r all first".into(),
            );
        }
        if h.incompatible & INCOMPAT_DIRTY != 0 {
            return Some(
                "incompatible_features bit 0 (dirty) is set: lazy refcounts not written back; run qemu-img check -r all first"
                    .into(),
            );
        }
        if self.encrypted() {
            return Some("the image is encrypted; vdiskview does not encrypt".into());
        }
        if let Some(name) = self.enabled_bitmap() {
            return Some(format!(
                "the image has an enabled persistent dirty bitmap '{}' that a write would leave stale; \
                 disable or remove it (qemu-img bitmap --disable/--remove) first",
                name
            ));
        }
        None
    }

    /// The metadata a write must never land on: (file offset, length, what), as qemu's
    /// overlap checks know it (header, active L1, refcount table and blocks, snapshot table
    /// and the snapshots' L1 tables; the active L2 tables when `with_l2`).
    fn metadata_ranges(&self, with_l2: bool) -> Vec<(u64, u64, String)> {
        let h = &self.header;
        let cs = self.cluster_size();
        let mut out = vec![(0, cs, "the qcow2 header".to_string())];
        out.push((h.l1_table_offset, h.l1_size as u64 * 8, "the active L1 table".into()));
        out.push((h.refcount_table_offset, h.refcount_table_clusters as u64 * cs, "the refcount table".into()));
        if let Ok(t) = self.refcount_table() {
            for (i, &b) in t.iter().enumerate() {
                if b != 0 {
                    out.push((b, cs, format!("refcount block {}", i)));
                }
            }
        }
        if let Ok(t) = self.snapshot_table() {
            if t.size > 0 {
                out.push((t.offset, t.size, "the snapshot table".into()));
            }
            for sn in &t.snapshots {
                out.push((sn.l1_table_offset, sn.l1_bytes(), format!("the L1 table of snapshot {}", sn.id)));
            }
        }
        if with_l2 {
            for (i, off) in self.l2_tables() {
                out.push((off, cs, format!("the L2 table of L1[{}]", i)));
            }
        }
        out.retain(|r| r.1 > 0);
        out
    }

    /// What in the metadata the cluster at `off` overlaps, if anything.
    fn overlaps(ranges: &[(u64, u64, String)], off: u64, len: u64) -> Option<&str> {
        ranges.iter().find(|(s, l, _)| off < s.saturating_add(*l) && *s < off.saturating_add(len)).map(|r| r.2.as_str())
    }

    /// Walk the tables a write of `len` bytes at `virt` goes through before anything is
    /// written: an L2 table or data cluster it would write in place must be inside the file
    /// and must not overlap other metadata (qemu stops such a write with "Preventing invalid
    /// write on metadata" and marks the image corrupt; vdiskview refuses and changes nothing).
    fn write_preflight(&self, virt: u64, len: u64) -> Option<String> {
        if len == 0 {
            return None;
        }
        let cs = self.cluster_size();
        let per = self.geo.l2_entries();
        let meta = self.metadata_ranges(false);
        let meta_l2 = self.metadata_ranges(true);
        let first = virt / cs;
        let last = (virt + len - 1) / cs;
        let mut c = first;
        while c <= last {
            let l1i = (c / per) as usize;
            let l1e = self.l1.get(l1i).copied().unwrap_or(0);
            let l2 = l1e & L1E_OFFSET_MASK;
            if l2 == 0 {
                c = (l1i as u64 + 1) * per;
                continue;
            }
            if !l2.is_multiple_of(cs) {
                return Some(format!("L1[{}] = 0x{:016x}: its L2 table offset 0x{:x} is not cluster aligned", l1i, l1e, l2));
            }
            // (a new table still pending lies past the end until it is written)
            let pending = self.wstate.pending.l2.contains_key(&l2);
            if !pending && l2.saturating_add(cs) > self.file.len() {
                return Some(format!(
                    "L1[{}] = 0x{:016x}: its L2 table at 0x{:x} runs past the end of the file (0x{:x} bytes)",
                    l1i,
                    l1e,
                    l2,
                    self.file.len()
                ));
            }
            if let Some(what) = Self::overlaps(&meta, l2, cs) {
                return Some(format!("L1[{}] = 0x{:016x}: its L2 table at 0x{:x} overlaps {}", l1i, l1e, l2, what));
            }
            let end = ((l1i as u64 + 1) * per).min(last + 1);
            let Ok(table) = self.l2_table(l2) else { return Some(format!("the L2 table at 0x{:x} cannot be read", l2)) };
            while c < end {
                let e = table[(c % per) as usize].entry;
                let host = e & L2E_OFFSET_MASK;
                if self.data_file.is_none() && e & OFLAG_COMPRESSED == 0 && e & OFLAG_COPIED != 0 && host != 0 {
                    if let Some(what) = Self::overlaps(&meta_l2, host, cs) {
                        return Some(format!(
                            "guest offset 0x{:x} maps to the data cluster at 0x{:x} (L2 entry 0x{:016x}), which overlaps {}",
                            c * cs,
                            host,
                            e,
                            what
                        ));
                    }
                }
                c += 1;
            }
        }
        None
    }

    /// The name of an enabled ("auto") persistent bitmap, from the bitmap directory.
    fn enabled_bitmap(&self) -> Option<String> {
        let ext = self.header.extensions.iter().find(|e| e.kind == EXT_BITMAPS && e.data.len() >= 24)?;
        let nb = u32::from_be_bytes(ext.data[0..4].try_into().unwrap()) as usize;
        let size = u64::from_be_bytes(ext.data[8..16].try_into().unwrap());
        let off = u64::from_be_bytes(ext.data[16..24].try_into().unwrap());
        if size > self.file.len() || size > 64 << 20 {
            return Some("(unreadable bitmap directory)".into());
        }
        let mut dir = vec![0u8; size as usize];
        if self.file.read_exact_at(off, &mut dir, "bitmap directory").is_err() {
            return Some("(unreadable bitmap directory)".into());
        }
        let mut p = 0usize;
        for _ in 0..nb {
            if p + 24 > dir.len() {
                break;
            }
            let flags = u32::from_be_bytes(dir[p + 12..p + 16].try_into().unwrap());
            let name_size = u16::from_be_bytes(dir[p + 18..p + 20].try_into().unwrap()) as usize;
            let extra = u32::from_be_bytes(dir[p + 20..p + 24].try_into().unwrap()) as usize;
            let name_at = p + 24 + extra;
            let name = dir.get(name_at..name_at + name_size).map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
            if flags & 2 != 0 {
                return Some(name);
            }
            p = (name_at + name_size).next_multiple_of(8);
        }
        None
    }

    pub fn write(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        if let Some(why) = self.write_refusal() {
            return Err(Error::Unsupported(format!("{}: refusing to write: {}", self.file.name, why)));
        }
        if let Some(why) = self.write_preflight(virt, data.len() as u64) {
            return Err(Error::corrupt(format!("{}: refusing to write: {}", self.file.name, why)));
        }
        let r = self.write_batched(virt, data, below);
        if r.is_err() {
            // what was counted in memory may not be on disk: read the refcount table again
            self.wstate.table = None;
            self.wstate.pending_blocks = None;
        }
        self.invalidate_caches();
        r
    }

    /// Make every write so far durable: what lazy writes hold in memory written in its
    /// order ([`Qcow2::commit_pending`]), every file flushed.
    pub fn flush(&mut self) -> Result<()> {
        let r = self.commit_pending();
        if r.is_err() {
            self.wstate.table = None;
        }
        r
    }

    fn data_host(&self) -> &crate::image::io::HostFile {
        self.data_file.as_ref().unwrap_or(&self.file)
    }

    /// The cluster's whole current guest content, as this layer and the ones below show it.
    fn current_cluster(&self, cluster_virt: u64, below: Below) -> Result<Vec<u8>> {
        let cs = self.cluster_size();
        let mut buf = vec![0u8; cs as usize];
        let end = (cluster_virt + cs).min(self.virtual_size());
        let mut pos = cluster_virt;
        while pos < end {
            let e = self.status(pos, end - pos)?;
            let out = &mut buf[(pos - cluster_virt) as usize..(pos - cluster_virt + e.len) as usize];
            match e.kind {
                LayerKind::Data { file, host, .. } => {
                    let f = if file == HostFileId::DataFile { self.data_host() } else { &self.file };
                    f.read_zero_fill(host, out)?;
                }
                LayerKind::Zero { .. } | LayerKind::ZeroData { .. } => out.fill(0),
                LayerKind::Unallocated { .. } => below(pos, out)?,
                LayerKind::Compressed { host, csize, cluster_virt: cv } => self.read_compressed(host, csize, cv, pos - cv, out)?,
                LayerKind::Opaque => return Err(Error::Unsupported("encrypted data".into())),
            }
            pos += e.len;
        }
        Ok(buf)
    }

    /// What one cluster of a write needs, decided before anything is written.
    fn plan_cluster<'a>(&self, cluster_virt: u64, off: u64, data: &'a [u8], below: Below) -> Result<Planned<'a>> {
        let cs = self.cluster_size();
        let per = self.geo.l2_entries();
        let l1i = (cluster_virt / cs / per) as usize;
        let l2i = (cluster_virt / cs % per) as usize;
        let entry = self.l2_entry(cluster_virt)?;
        let owned = |e: u64| e & OFLAG_COPIED != 0 && e & OFLAG_COMPRESSED == 0;
        let l2_owned = self.l1.get(l1i).is_some_and(|&e| e & OFLAG_COPIED != 0);
        if let Some(e) = entry {
            let host = e.entry & L2E_OFFSET_MASK;
            let allocated = host != 0 || (self.data_file.is_some() && e.entry & OFLAG_COPIED != 0);
            if allocated && owned(e.entry) && l2_owned {
                return self.plan_owned(cluster_virt, off, data, e, host, l1i, l2i, below);
            }
        }
        // a new cluster holding the whole current content with the new bytes over it
        let bytes = if off == 0 && data.len() as u64 == cs {
            Cow::Borrowed(data)
        } else {
            let mut content = self.current_cluster(cluster_virt, below)?;
            content[off as usize..off as usize + data.len()].copy_from_slice(data);
            Cow::Owned(content)
        };
        Ok(Planned::New { cluster_virt, bytes, old: entry.map(|e| e.entry), l1i, l2i })
    }

    /// A cluster this layer owns: data in place; zero and unallocated subclusters (or a
    /// zero cluster) completed, then their flags cleared.
    #[allow(clippy::too_many_arguments)]
    fn plan_owned<'a>(
        &self,
        cluster_virt: u64,
        off: u64,
        data: &'a [u8],
        e: super::cluster::L2Entry,
        host: u64,
        l1i: usize,
        l2i: usize,
        below: Below,
    ) -> Result<Planned<'a>> {
        // a damaged entry pointing past the end of the file: reading it is an error, and
        // writing through it would grow the file to wherever it points
        if host >= self.data_host().len() {
            return Err(Error::corrupt(format!(
                "{}: guest offset 0x{:x} maps to 0x{:x}, past the end of {} (0x{:x} bytes); not writing through it",
                self.file.name,
                cluster_virt,
                host,
                self.data_host().name,
                self.data_host().len()
            )));
        }
        let scs = self.geo.subcluster_size();
        let first = off / scs;
        let last = (off + data.len() as u64 - 1) / scs;
        let all_normal = (first..=last).all(|sc| matches!(self.geo.classify(e, sc as u32), Sub::Normal(_)));
        if all_normal {
            return Ok(Planned::InPlace { host: host + off, bytes: Cow::Borrowed(data), l2: None });
        }
        // widen to whole subclusters (the whole cluster without extended L2), their
        // current content under the new bytes
        let mut content = self.current_cluster(cluster_virt, below)?;
        content[off as usize..off as usize + data.len()].copy_from_slice(data);
        if self.geo.extended {
            let (lo, hi) = (first * scs, (last + 1) * scs);
            let mut alloc = e.bitmap & 0xffff_ffff;
            let mut zero = e.bitmap >> 32;
            for sc in first..=last {
                alloc |= 1 << sc;
                zero &= !(1 << sc);
            }
            let bytes = Cow::Owned(content[lo as usize..hi as usize].to_vec());
            Ok(Planned::InPlace { host: host + lo, bytes, l2: Some((l1i, l2i, e.entry, alloc | (zero << 32))) })
        } else {
            // a zero cluster with its own host cluster: all of it written, then the flag cleared
            Ok(Planned::InPlace { host, bytes: Cow::Owned(content), l2: Some((l1i, l2i, e.entry & !OFLAG_ZERO, 0)) })
        }
    }

    /// One write call in qemu's dependency order, one flush per group instead of per
    /// cluster:
    ///  1. the refcounts of every new cluster and new L2 table (new refcount blocks first,
    ///     then one flush, then their refcount table entries; a refcount table growth with
    ///     its own ordered flushes), and all data, new clusters and in place: nothing points
    ///     at a new cluster yet, so its count and its data need no order between them; flush
    ///  2. (the same group)
    ///  3. all L2 entries: in place in tables this layer owns, and the new tables whole
    ///     (copies of shared ones, or zeros); flush
    ///  4. the L1 entries of the new tables; flush
    ///  5. the releases (replaced compressed or shared clusters, shared L2 tables); flush.
    ///
    /// Each group only depends on groups before it, so a crash between any two flushes
    /// leaves every cluster old or new and at worst leaked clusters (counted, unreferenced).
    /// Groups 1–2 are written here; 3–5 go into memory ([`Pending`]) and are written with
    /// their flushes by [`Qcow2::commit_pending`]: before this returns, or, on a lazy file
    /// (NBD without FUA), when the client flushes. A lazy write makes no flush at all; its
    /// groups 3–5 join those of the writes after it (they too depend only on data and
    /// refcounts, all flushed first).
    fn write_batched(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        let cs = self.cluster_size();
        // plan every cluster before writing anything
        let mut plans = Vec::with_capacity((data.len() as u64 / cs + 2) as usize);
        let mut pos = 0usize;
        while pos < data.len() {
            let v = virt + pos as u64;
            let n = ((cs - v % cs) as usize).min(data.len() - pos);
            plans.push(self.plan_cluster(v / cs * cs, v % cs, &data[pos..pos + n], below)?);
            pos += n;
        }
        // L2 tables this write must create (a copy of a shared one, or a first one)
        let mut new_tables: BTreeMap<usize, u64> = BTreeMap::new();
        for p in &plans {
            let l1i = match p {
                Planned::New { l1i, .. } => *l1i,
                Planned::InPlace { l2: Some((l1i, ..)), .. } => *l1i,
                Planned::InPlace { l2: None, .. } => continue,
            };
            let l1e = self.l1[l1i];
            if !(l1e & L1E_OFFSET_MASK != 0 && l1e & OFLAG_COPIED != 0) {
                new_tables.insert(l1i, 0);
            }
        }
        let no_refcounts = self.data_file.is_some();
        let has_new = plans.iter().any(|p| matches!(p, Planned::New { .. }));
        let releases: Vec<u64> = plans
            .iter()
            .filter_map(|p| match p {
                Planned::New { old: Some(o), .. } if !no_refcounts && (o & OFLAG_COMPRESSED != 0 || o & L2E_OFFSET_MASK != 0) => Some(*o),
                _ => None,
            })
            .collect();
        let refcount_group = (has_new && !no_refcounts) || !new_tables.is_empty();

        // 1. refcounts
        let mut hosts: Vec<u64> = Vec::with_capacity(plans.len());
        if refcount_group {
            // new refcount blocks: written (zeros and the counts that fall in them) as they
            // are needed, nothing points at them yet; one flush, then their refcount table
            // entries, then the flush that ends the group
            self.wstate.pending_blocks = Some(Vec::new());
            let r = self.count_new(&plans, &mut hosts, &mut new_tables);
            let pending = self.wstate.pending_blocks.take().unwrap_or_default();
            r?;
            if !pending.is_empty() {
                self.file.sync()?;
                step("qcow2 new refcount blocks");
                for (ti, at) in pending {
                    self.file.write_at(self.header.refcount_table_offset + ti as u64 * 8, &at.to_be_bytes())?;
                }
            }
            // no flush here: the refcounts and the data of the new clusters are one group
        } else {
            for p in &plans {
                if let Planned::New { cluster_virt, .. } = p {
                    hosts.push(*cluster_virt);
                }
            }
        }

        // 2. data (the flush that ends the group is the first of commit_pending)
        {
            let dh = self.data_host();
            let mut hi = hosts.iter();
            for p in &plans {
                match p {
                    Planned::InPlace { host, bytes, .. } => dh.write_at(*host, bytes)?,
                    Planned::New { bytes, .. } => dh.write_at(*hi.next().expect("one host per new cluster"), bytes)?,
                }
            }
        }

        // 3.–5. L2 entries, L1 entries of the new tables, releases: into memory (nothing
        // below can fail), written by commit_pending
        let bitmap_new = if self.geo.extended { 0xffff_ffffu64 } else { 0 };
        let mut hi = hosts.iter();
        for p in &plans {
            let (l1i, l2i, value, bitmap) = match p {
                Planned::InPlace { l2: Some((l1i, l2i, value, bitmap)), .. } => (*l1i, *l2i, *value, *bitmap),
                Planned::InPlace { l2: None, .. } => continue,
                Planned::New { l1i, l2i, .. } => {
                    (*l1i, *l2i, *hi.next().expect("one host per new cluster") | OFLAG_COPIED, bitmap_new)
                }
            };
            let old = self.l1[l1i] & L1E_OFFSET_MASK;
            let (table, new_from) = match new_tables.get(&l1i) {
                Some(&t) => (t, Some(old)),
                None => (old, None),
            };
            let pending = &mut self.wstate.pending;
            let t = pending.l2.entry(table).or_insert_with(|| PendingL2 { new_from, entries: BTreeMap::new() });
            if t.entries.insert(l2i, (value, bitmap)).is_none() {
                pending.entries += 1;
            }
        }
        for (&l1i, &t) in &new_tables {
            let old = self.l1[l1i] & L1E_OFFSET_MASK;
            if old != 0 {
                self.wstate.pending.old_tables.push(old);
            }
            self.wstate.pending.l1.insert(l1i, t | OFLAG_COPIED);
            self.l1[l1i] = t | OFLAG_COPIED;
        }
        self.wstate.pending.releases.extend(releases);

        if self.file.lazy() && self.data_host().lazy() && self.wstate.pending.entries < MAX_PENDING_ENTRIES {
            return Ok(());
        }
        self.commit_pending()
    }

    /// Write what the writes so far hold in memory, in qemu's order, each group after a
    /// flush of the ones before: the refcounts and data of the new clusters (already in the
    /// file) flushed; the L2 entries, in place in tables this layer owns and the new tables
    /// whole (copies of shared ones, or zeros), flush; the L1 entries of the new tables,
    /// flush; the releases, flush. A group left empty is skipped with its flush. Each group
    /// only depends on the ones before it, so a crash between any two flushes leaves every
    /// cluster old or new and at worst leaked clusters. On an error what is not yet written
    /// stays pending (but releases are dropped rather than made twice: a leak).
    pub(crate) fn commit_pending(&mut self) -> Result<()> {
        let cs = self.cluster_size();
        let esize: u64 = if self.geo.extended { 16 } else { 8 };
        self.data_host().sync()?;
        self.file.sync()?;
        step("qcow2 refcounts and data");

        if !self.wstate.pending.l2.is_empty() {
            for (&table, t) in &self.wstate.pending.l2 {
                let (at, mut buf, base) = if let Some(from) = t.new_from {
                    let mut whole = vec![0u8; cs as usize];
                    if from != 0 {
                        self.file.read_exact_at(from, &mut whole, "L2 table")?;
                    }
                    (table, whole, 0usize)
                } else {
                    // the span of the table the entries cover, read and patched
                    let lo = *t.entries.keys().next().expect("a pending table has entries");
                    let hi = *t.entries.keys().next_back().expect("a pending table has entries");
                    let mut span = vec![0u8; (hi - lo + 1) * esize as usize];
                    self.file.read_exact_at(table + lo as u64 * esize, &mut span, "L2 table")?;
                    (table + lo as u64 * esize, span, lo)
                };
                self.patch_l2(&mut buf, base, &t.entries);
                self.file.write_at(at, &buf)?;
            }
            self.file.sync()?;
            let p = &mut self.wstate.pending;
            p.l2.clear();
            p.entries = 0;
            step("qcow2 l2 entries");
        }

        if !self.wstate.pending.l1.is_empty() {
            for (&l1i, &value) in &self.wstate.pending.l1 {
                self.file.write_at(self.header.l1_table_offset + l1i as u64 * 8, &value.to_be_bytes())?;
            }
            self.file.sync()?;
            self.wstate.pending.l1.clear();
            step("qcow2 l1 entries");
        }

        let old_tables = std::mem::take(&mut self.wstate.pending.old_tables);
        let releases = std::mem::take(&mut self.wstate.pending.releases);
        if !old_tables.is_empty() || !releases.is_empty() {
            for old in old_tables {
                self.add_refcount(old / cs, -1)?;
            }
            for old in releases {
                self.release_refs(old)?;
            }
            self.file.sync()?;
            step("qcow2 releases");
        }
        Ok(())
    }

    /// Whether writes wait in memory for [`Qcow2::commit_pending`].
    pub(crate) fn has_pending(&self) -> bool {
        let p = &self.wstate.pending;
        !(p.l2.is_empty() && p.l1.is_empty() && p.old_tables.is_empty() && p.releases.is_empty())
    }

    /// Set `entries` (index → entry, bitmap) in `buf`, raw L2 bytes from index `base` on.
    fn patch_l2(&self, buf: &mut [u8], base: usize, entries: &BTreeMap<usize, (u64, u64)>) {
        let esize = if self.geo.extended { 16 } else { 8 };
        for (&l2i, &(value, bitmap)) in entries {
            let i = (l2i - base) * esize;
            buf[i..i + 8].copy_from_slice(&value.to_be_bytes());
            if self.geo.extended {
                buf[i + 8..i + 16].copy_from_slice(&bitmap.to_be_bytes());
            }
        }
    }

    /// The raw bytes of the L2 table at `off` (`buf`: one cluster) as the writes so far
    /// left it: the file's, with the entries still pending laid over them. Past the end of
    /// the file reads as zero (see [`Qcow2::l2_table`]).
    /// Whether a lazy write holds entries of the L2 table at `off` not yet in the file.
    pub(crate) fn l2_pending(&self, off: u64) -> bool {
        self.wstate.pending.l2.contains_key(&off)
    }

    /// Whether any L2 entries are waiting (the common case, none, skips the per-table check).
    pub(crate) fn any_l2_pending(&self) -> bool {
        !self.wstate.pending.l2.is_empty()
    }

    pub(crate) fn read_l2_raw(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let Some(t) = self.wstate.pending.l2.get(&off) else { return self.file.read_zero_fill(off, buf) };
        match t.new_from {
            Some(0) => buf.fill(0),
            Some(from) => self.file.read_zero_fill(from, buf)?,
            None => self.file.read_zero_fill(off, buf)?,
        }
        self.patch_l2(buf, 0, &t.entries);
        Ok(())
    }

    /// Reserve and count the write's new clusters (their host offsets into `hosts`, in plan
    /// order) and its new L2 tables (into `new_tables`). No flush.
    fn count_new(&mut self, plans: &[Planned], hosts: &mut Vec<u64>, new_tables: &mut BTreeMap<usize, u64>) -> Result<()> {
        let cs = self.cluster_size();
        let no_refcounts = self.data_file.is_some();
        for p in plans {
            if let Planned::New { cluster_virt, .. } = p {
                if no_refcounts {
                    // external data files map guest clusters 1:1 and carry no refcounts
                    hosts.push(*cluster_virt);
                } else {
                    let c = self.alloc(1)?;
                    self.add_refcount(c / cs, 1)?;
                    hosts.push(c);
                }
            }
        }
        let l1is: Vec<usize> = new_tables.keys().copied().collect();
        for l1i in l1is {
            let t = self.alloc(1)?;
            self.add_refcount(t / cs, 1)?;
            new_tables.insert(l1i, t);
        }
        Ok(())
    }

    /// Drop this layer's reference to what an L2 entry pointed at before a write replaced it
    /// (no flush: the caller's group ends with one).
    fn release_refs(&mut self, old: u64) -> Result<()> {
        let cs = self.cluster_size();
        if self.data_file.is_some() {
            return Ok(());
        }
        let clusters: Vec<u64> = if old & OFLAG_COMPRESSED != 0 {
            let (host, csize) = self.geo.compressed(old);
            let start = host & !511;
            let end = host + csize;
            (start / cs..end.div_ceil(cs)).collect()
        } else {
            let host = old & L2E_OFFSET_MASK;
            if host == 0 {
                return Ok(());
            }
            vec![host / cs]
        };
        for c in clusters {
            self.add_refcount(c, -1)?;
        }
        Ok(())
    }

    /// Reserve `n` clusters at the end of the file. Clusters past the end that already have
    /// a refcount are skipped: a crash after a refcount update and before the write that
    /// follows leaves them counted (leaked), and handing one out again would count it twice
    /// (qemu's allocator skips them the same way, looking for refcount 0).
    fn alloc(&mut self, n: u64) -> Result<u64> {
        let cs = self.cluster_size();
        let end = self.file.len().next_multiple_of(cs);
        let mut at = self.wstate.next_free.max(end);
        self.ensure_table()?;
        let table = self.wstate.table.as_deref().expect("loaded");
        // crashes leak a few clusters each; a long run of them is damage, not leaks
        const MAX_SKIP: u64 = 1 << 16;
        // (counted as clusters skipped: a batched write reserves many clusters before it
        // writes any, so the distance from the end of the file says nothing)
        let mut skipped = 0u64;
        'search: loop {
            if skipped > MAX_SKIP {
                return Err(Error::corrupt(format!(
                    "{}: more than {} clusters past the end of the file have refcounts; the refcounts look damaged (qemu-img check -r all)",
                    self.file.name, MAX_SKIP
                )));
            }
            for c in at / cs..at / cs + n {
                if self.refcount(table, c)? != 0 {
                    skipped += c + 1 - at / cs;
                    at = (c + 1) * cs;
                    continue 'search;
                }
            }
            break;
        }
        self.wstate.next_free = at + n * cs;
        Ok(at)
    }

    fn table(&mut self) -> Result<Vec<u64>> {
        self.ensure_table()?;
        Ok(self.wstate.table.clone().unwrap())
    }

    /// The refcount table loaded into `wstate.table` (read once; not copied per cluster).
    fn ensure_table(&mut self) -> Result<()> {
        if self.wstate.table.is_none() {
            self.wstate.table = Some(self.refcount_table()?);
        }
        Ok(())
    }

    /// Add `delta` to the refcount of host cluster `cluster`, creating the refcount block (and
    /// growing the refcount table) when none covers it.
    pub(crate) fn add_refcount(&mut self, cluster: u64, delta: i64) -> Result<()> {
        let per = self.refcounts_per_block();
        let ti = (cluster / per) as usize;
        self.ensure_table()?;
        if ti >= self.wstate.table.as_ref().expect("loaded").len() {
            self.grow_refcount_table(ti + 1)?;
            self.ensure_table()?;
        }
        let entry = self.wstate.table.as_ref().expect("loaded")[ti];
        let block = if entry == 0 { self.new_refcount_block(ti)? } else { entry };
        let bits = self.header.refcount_bits() as u64;
        let idx = cluster % per;
        let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let nbytes = bits.div_ceil(8) as usize;
        let at = block + idx * bits / 8;
        let mut b = [0u8; 8];
        self.file.read_exact_at(at, &mut b[..nbytes], "refcount block")?;
        let (old, new_bytes) = if bits >= 8 {
            let old = b[..nbytes].iter().fold(0u64, |a, &x| (a << 8) | x as u64);
            let new = old.checked_add_signed(delta).filter(|&v| v <= max).ok_or_else(|| {
                Error::corrupt(format!("refcount of cluster {} would leave its range ({} {:+})", cluster, old, delta))
            })?;
            (old, new.to_be_bytes()[8 - nbytes..].to_vec())
        } else {
            let shift = (idx * bits) % 8;
            let mask = (max as u8) << shift;
            let old = ((b[0] & mask) >> shift) as u64;
            let new = old.checked_add_signed(delta).filter(|&v| v <= max).ok_or_else(|| {
                Error::corrupt(format!("refcount of cluster {} would leave its range ({} {:+})", cluster, old, delta))
            })?;
            (old, vec![(b[0] & !mask) | ((new as u8) << shift)])
        };
        let _ = old;
        self.file.write_at(at, &new_bytes)
    }

    /// A zeroed refcount block for table index `ti`, counting itself when it covers itself.
    /// One that lands in another block's range is counted there first, before the table
    /// points at it (qemu's order: a crash in between leaks it, never leaves it uncounted).
    fn new_refcount_block(&mut self, ti: usize) -> Result<u64> {
        let cs = self.cluster_size();
        let per = self.refcounts_per_block();
        let at = self.alloc(1)?;
        let own = at / cs;
        let covers_itself = own / per == ti as u64;
        if !covers_itself {
            self.add_refcount(own, 1)?;
            if self.wstate.pending_blocks.is_none() {
                self.file.sync()?;
                step("qcow2 refcount of new refcount block");
            }
        }
        self.file.write_at(at, &vec![0u8; cs as usize])?;
        self.wstate.table.as_mut().expect("loaded")[ti] = at;
        if covers_itself {
            self.add_refcount(own, 1)?;
        }
        if let Some(pending) = self.wstate.pending_blocks.as_mut() {
            // a batched write: the table entry after one flush for every new block
            pending.push((ti, at));
            return Ok(at);
        }
        self.file.sync()?;
        step("qcow2 new refcount block");
        self.file.write_at(self.header.refcount_table_offset + ti as u64 * 8, &at.to_be_bytes())?;
        self.file.sync()?;
        step("qcow2 refcount table entry");
        Ok(at)
    }

    /// Move the refcount table to the end of the file with room for `need` entries: the new
    /// table and the refcount blocks that count it are written first, the header switched
    /// after, the old table released last.
    fn grow_refcount_table(&mut self, need: usize) -> Result<()> {
        let cs = self.cluster_size();
        let per = self.refcounts_per_block();
        let old = self.table()?;
        let entries_per_cluster = (cs / 8) as usize;
        // room for growth and for the blocks that count the table itself
        let want = (need.max(old.len()) * 2).max(entries_per_cluster);
        let table_clusters = want.div_ceil(entries_per_cluster) as u64;
        let table_at = self.alloc(table_clusters)?;
        let mut table = old.clone();
        table.resize(table_clusters as usize * entries_per_cluster, 0);
        // refcount blocks for the table's clusters that no block covers yet, placed after it
        let mut counts: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut pending: Vec<u64> = (table_at / cs..table_at / cs + table_clusters).collect();
        while let Some(c) = pending.pop() {
            let ti = (c / per) as usize;
            if ti >= table.len() {
                return Err(Error::Unsupported("refcount table growth beyond one step".into()));
            }
            if table[ti] == 0 {
                let b = self.alloc(1)?;
                table[ti] = b;
                counts.insert(b, 0);
                pending.push(b / cs);
            }
            *counts.entry(u64::MAX - c).or_insert(0) += 1;
        }
        // write the new blocks with their counts; counts in existing blocks go through them
        let bits = self.header.refcount_bits() as u64;
        let mut blocks: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        for (&b, _) in counts.iter().filter(|(k, _)| **k < u64::MAX / 2) {
            blocks.insert(b, vec![0u8; cs as usize]);
        }
        let counted: Vec<u64> = counts.keys().filter(|k| **k >= u64::MAX / 2).map(|k| u64::MAX - k).collect();
        for c in counted {
            let block = table[(c / per) as usize];
            if let Some(buf) = blocks.get_mut(&block) {
                let idx = c % per;
                if bits >= 8 {
                    let nbytes = (bits / 8) as usize;
                    let at = (idx * bits / 8) as usize;
                    buf[at + nbytes - 1] = 1;
                } else {
                    let bit = idx * bits;
                    buf[(bit / 8) as usize] |= 1 << (bit % 8);
                }
            } else {
                // an existing block: the old table reaches it too, so this is safe now
                self.wstate.table = Some(old.clone());
                self.add_refcount(c, 1)?;
            }
        }
        for (b, buf) in &blocks {
            self.file.write_at(*b, buf)?;
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_at(table_at, &bytes)?;
        self.file.sync()?;
        step("qcow2 new refcount table");
        // switch the header: refcount_table_offset (48) and refcount_table_clusters (56)
        self.file.write_at(48, &table_at.to_be_bytes())?;
        self.file.write_at(56, &(table_clusters as u32).to_be_bytes())?;
        self.file.sync()?;
        step("qcow2 header points at the new refcount table");
        let old_off = self.header.refcount_table_offset;
        let old_clusters = self.header.refcount_table_clusters as u64;
        self.header.refcount_table_offset = table_at;
        self.header.refcount_table_clusters = table_clusters as u32;
        self.wstate.table = Some(table);
        for c in old_off / cs..old_off / cs + old_clusters {
            self.add_refcount(c, -1)?;
        }
        self.file.sync()?;
        step("qcow2 release old refcount table");
        Ok(())
    }
}

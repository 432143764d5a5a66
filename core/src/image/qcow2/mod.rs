//! QCOW2 v2/v3: header and extensions, L1/L2 mapping with zero, compressed and extended-L2
//! clusters, external data files, refcounts.

pub mod bitmap;
pub mod check;
pub mod cluster;
pub mod compress;
pub mod header;
pub mod refcount;
pub mod repair;
pub mod snapshot;
pub mod validate;
pub mod write;
mod driver;
mod l2read;
mod tables;

pub use l2read::L2Words;
use l2read::leading;

pub use driver::{snapshot_json, snapshot_table_text, DRIVER};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cluster::{Geometry, L2Entry, Sub, L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_KNOWN};

use super::chain::BackingRef;
use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::region::Region;
use super::{combine_path, Error, Format, Result};

/// Bytes of L2 tables kept in memory.
const L2_CACHE_BYTES: usize = 32 << 20;
pub struct Qcow2 {
    pub file: HostFile,
    pub data_file: Option<HostFile>,
    pub header: Header,
    pub geo: Geometry,
    pub l1: Vec<u64>,
    pub warnings: Vec<String>,
    /// Why the external data file the header asks for is not open, when it is not.
    pub data_file_error: Option<String>,
    /// The snapshot whose L1 table `l1` holds, when one was selected (read-only views).
    pub snapshot: Option<snapshot::Snapshot>,
    /// L2 tables by host offset, as native-endian words (bytes counted, tables).
    l2_cache: Mutex<(usize, HashMap<u64, L2Words>)>,
    /// Reused windows of L2 tables for `status`.
    l2_windows: l2read::L2Windows,
    last_cluster: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// Whether the image looks metadata-preallocated, decided on first use as qemu does.
    prealloc: std::sync::OnceLock<bool>,
    /// host cluster → (guest cluster offset, compressed?), built on first reverse lookup.
    reverse: std::sync::OnceLock<Vec<(u64, u64, u64, bool)>>,
    /// Allocation state of a writing session.
    pub(crate) wstate: write::WriteState,
}

impl Qcow2 {
    pub fn open(file: HostFile) -> Result<Qcow2> {
        let header = Header::read(&file)?;
        let name = file.name.clone();
        let mut warnings = Vec::new();
        let unknown = header.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> =
                (0..64).filter(|b| unknown & (1 << b) != 0).map(|b| header.feature_name(0, b)).collect();
            return Err(Error::Unsupported(format!(
                "{}: incompatible_features: unsupported qcow2 incompatible feature(s): {}",
                name,
                names.join(", ")
            )));
        }
        if header.incompatible & INCOMPAT_CORRUPT != 0 {
            warnings.push("the image is marked corrupt (incompatible feature bit 1)".into());
        }
        if header.incompatible & INCOMPAT_DIRTY != 0 {
            warnings.push("the image is dirty: refcounts may be stale (lazy refcounts)".into());
        }
        if header.compression_type > 1 {
            return Err(Error::Unsupported(format!(
                "{}: unknown compression type {}",
                name, header.compression_type
            )));
        }
        // a missing (or unnamed) external data file: the image still opens, as with a missing
        // backing file, with a warning; guest data cannot be read and nothing is written
        let mut data_file_error = None;
        let data_file = if header.incompatible & INCOMPAT_DATA_FILE != 0 {
            match header.data_file.clone() {
                None => {
                    data_file_error = Some("the image needs an external data file but names none".to_string());
                    None
                }
                Some(df) => {
                    let path = combine_path(&name, &df);
                    match HostFile::open_mode(std::path::Path::new(&path), path.clone(), file.writable()) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            data_file_error = Some(format!("external data file '{}' cannot be opened: {}", df, e));
                            None
                        }
                    }
                }
            }
        } else {
            None
        };
        if let Some(e) = &data_file_error {
            warnings.push(format!("{}; guest data cannot be read", e));
        }
        let geo = Geometry {
            cluster_bits: header.cluster_bits,
            extended: header.extended_l2(),
            has_data_file: header.incompatible & INCOMPAT_DATA_FILE != 0,
        };
        let cs = geo.cluster_size();
        // qemu's qcow2_validate_table of the active L1 table, with the field named
        if let Err((big, why)) = validate::validate_table(cs, header.l1_table_offset, header.l1_size as u64, 8, snapshot::MAX_L1_BYTES) {
            return Err(Error::corrupt(if big {
                format!("{}: l1_size {}: the active L1 table is {}", name, header.l1_size, why)
            } else {
                format!("{}: l1_table_offset 0x{:x}: the active L1 table offset is {}", name, header.l1_table_offset, why)
            }));
        }
        let l2_cover = cs * geo.l2_entries();
        let needed = header.size.div_ceil(l2_cover);
        if (header.l1_size as u64) < needed {
            return Err(Error::corrupt(format!(
                "{}: l1_size {}: the L1 table is too small for a disk of {} bytes (needs {} entries)",
                name, header.l1_size, header.size, needed
            )));
        }
        let l1_bytes = header.l1_size as u64 * 8;
        if header.l1_size > 0
            && (header.l1_table_offset % cs != 0
                || header.l1_table_offset.checked_add(l1_bytes).is_none_or(|e| e > file.len()))
        {
            return Err(Error::corrupt(format!(
                "{}: l1_table_offset 0x{:x}: the L1 table ({} entries) lies past the end of the file (0x{:x})",
                name,
                header.l1_table_offset,
                header.l1_size,
                file.len()
            )));
        }
        // only the entries the disk uses matter; the rest may be garbage
        let used = needed.min(header.l1_size as u64) as usize;
        let mut raw = vec![0u8; used * 8];
        file.read_exact_at(header.l1_table_offset, &mut raw, "L1 table")?;
        let l1 = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        let mut q = Qcow2 {
            file,
            data_file,
            header,
            geo,
            l1,
            warnings,
            data_file_error,
            l2_cache: Mutex::new((0, HashMap::new())),
            l2_windows: Default::default(),
            last_cluster: Mutex::new(None),
            prealloc: std::sync::OnceLock::new(),
            reverse: std::sync::OnceLock::new(),
            snapshot: None,
            wstate: Default::default(),
        };
        // what qemu would refuse to open: still readable here, but named (and never written)
        let problems: Vec<String> = q.header_problems().into_iter().map(|p| format!("qemu would refuse this image: {}", p)).collect();
        q.warnings.extend(problems);
        let problems: Vec<String> = q.table_problems().into_iter().map(|p| p.to_string()).collect();
        q.warnings.extend(problems);
        for i in q.incomplete_snapshots() {
            q.warnings.push(format!(
                "snapshot table entry {} is incomplete: a version 3 image must include extra data at least up to byte 55 (disk_size)",
                i
            ));
        }
        let short = q.short_l2_tables();
        q.warnings.extend(short);
        Ok(q)
    }

    pub fn virtual_size(&self) -> u64 {
        self.snapshot.as_ref().and_then(|s| s.disk_size).unwrap_or(self.header.size)
    }

    pub fn cluster_size(&self) -> u64 {
        self.geo.cluster_size()
    }

    /// Guest bytes one L1 entry (one L2 table) maps.
    pub fn l1_span(&self) -> u64 {
        self.cluster_size() * self.geo.l2_entries()
    }

    pub fn encrypted(&self) -> bool {
        self.header.crypt_method != 0
    }

    /// Drop everything cached from the file (after a write).
    pub(crate) fn invalidate_caches(&mut self) {
        *self.l2_cache.lock().unwrap() = (0, HashMap::new());
        self.l2_windows.clear();
        *self.last_cluster.lock().unwrap() = None;
        self.reverse = std::sync::OnceLock::new();
    }

    pub(crate) fn host_id(&self) -> HostFileId {
        if self.geo.has_data_file {
            HostFileId::DataFile
        } else {
            HostFileId::Image
        }
    }

    /// The L2 table at `off` as entries (a copy: for walks over whole tables).
    pub fn l2_table(&self, off: u64) -> Result<Arc<Vec<L2Entry>>> {
        let w = self.l2_words(off, None)?;
        let entries: Vec<L2Entry> = if self.geo.extended {
            w.chunks_exact(2).map(|p| L2Entry { entry: p[0], bitmap: p[1] }).collect()
        } else {
            w.iter().map(|&e| L2Entry { entry: e, bitmap: 0 }).collect()
        };
        Ok(Arc::new(entries))
    }

    /// The words of the L2 table at `off` (entry, or entry and bitmap with extended L2),
    /// read once and cached. `l1i`, the L1 index that points at it, lets one read take the
    /// tables of the following L1 entries too when they follow it in the file.
    pub fn l2_words(&self, off: u64, l1i: Option<usize>) -> Result<L2Words> {
        if let Some(t) = self.l2_cache.lock().unwrap().1.get(&off) {
            return Ok(t.clone());
        }
        let cs = self.cluster_size();
        let n = {
            let cache = self.l2_cache.lock().unwrap();
            self.l2_run(off, l1i, |o| cache.1.contains_key(&o))
        };
        let mut words = Vec::new();
        self.read_l2_into(off, n, &mut words)?;
        let per = (cs / 8) as usize;
        let buf = Arc::new(words);
        let mut cache = self.l2_cache.lock().unwrap();
        let bytes = (n * cs) as usize;
        if cache.0 + bytes > L2_CACHE_BYTES {
            cache.1.clear();
            cache.0 = 0;
        }
        cache.0 += bytes;
        for k in 0..n as usize {
            cache.1.insert(off + k as u64 * cs, L2Words { buf: buf.clone(), start: k * per, len: per });
        }
        Ok(L2Words { buf, start: 0, len: per })
    }

    /// Warnings for the active L2 tables the end of the file cuts short or that lie past it
    /// (they read as zero there, as in qemu), the first few.
    fn short_l2_tables(&self) -> Vec<String> {
        let cs = self.cluster_size();
        let len = self.file.len();
        let short: Vec<(usize, u64)> = self.l2_tables().into_iter().filter(|&(_, off)| off.saturating_add(cs) > len).collect();
        let mut out: Vec<String> = short
            .iter()
            .take(4)
            .map(|&(i, off)| {
                let how = if off >= len { "lies past the end of the file" } else { "is cut short by the end of the file" };
                format!(
                    "L1[{}] points at an L2 table at 0x{:x} that {} (0x{:x} bytes): its missing entries read as unallocated",
                    i, off, how, len
                )
            })
            .collect();
        if short.len() > 4 {
            out.push(format!("{} more L2 tables lie (partly) past the end of the file", short.len() - 4));
        }
        out
    }

    /// The L2 table offset for guest offset `virt`, if its L1 entry points at one.
    pub fn l2_offset(&self, virt: u64) -> Option<u64> {
        let l2_cover = self.cluster_size() * self.geo.l2_entries();
        let e = self.l1.get((virt / l2_cover) as usize).copied().unwrap_or(0) & L1E_OFFSET_MASK;
        (e != 0).then_some(e)
    }

    /// The L2 entry of the cluster holding `virt`.
    pub fn l2_entry(&self, virt: u64) -> Result<Option<L2Entry>> {
        let Some(l2) = self.l2_offset(virt) else { return Ok(None) };
        let t = self.l2_words(l2, None)?;
        let idx = ((virt / self.cluster_size()) % self.geo.l2_entries()) as usize;
        Ok(Some(if self.geo.extended {
            L2Entry { entry: t[2 * idx], bitmap: t[2 * idx + 1] }
        } else {
            L2Entry { entry: t[idx], bitmap: 0 }
        }))
    }

    fn layer_kind(&self, sub: Sub, in_cluster: u64, cluster_virt: u64, virt: u64) -> Result<LayerKind> {
        let id = self.host_id();
        let crypt = self.encrypted();
        let aligned = |off: u64| -> Result<u64> {
            if !off.is_multiple_of(self.cluster_size()) {
                Err(Error::corrupt(format!(
                    "{}: cluster offset 0x{:x} for guest offset 0x{:x} is not cluster aligned",
                    self.file.name, off, virt
                )))
            } else {
                Ok(off)
            }
        };
        Ok(match sub {
            Sub::Normal(_) if crypt => LayerKind::Opaque,
            Sub::Normal(off) => LayerKind::Data { file: id, host: aligned(off)? + in_cluster, passthrough: false },
            Sub::ZeroPlain => LayerKind::Zero { host: None },
            Sub::ZeroAlloc(_) if crypt => LayerKind::Zero { host: None },
            Sub::ZeroAlloc(off) => LayerKind::Zero { host: Some((id, aligned(off)? + in_cluster)) },
            Sub::UnallocPlain => LayerKind::Unallocated { host: None },
            Sub::UnallocAlloc(_) if crypt => LayerKind::Unallocated { host: None },
            Sub::UnallocAlloc(off) => LayerKind::Unallocated { host: Some((id, aligned(off)? + in_cluster)) },
            Sub::Compressed { host, csize } => {
                if self.geo.has_data_file {
                    return Err(Error::corrupt(format!(
                        "{}: compressed cluster at guest offset 0x{:x} in an image with an external data file",
                        self.file.name, virt
                    )));
                }
                LayerKind::Compressed { host, csize, cluster_virt }
            }
            Sub::Invalid => {
                return Err(Error::corrupt(format!(
                    "{}: invalid subcluster bitmap for guest offset 0x{:x}",
                    self.file.name, virt
                )))
            }
        })
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        let cs = self.cluster_size();
        let l2_cover = cs * self.geo.l2_entries();
        if virt / l2_cover >= self.l1.len() as u64 {
            // past the end of a snapshot's shorter L1 table: unallocated to the end, in one
            return Ok(LayerExtent { len: max, kind: LayerKind::Unallocated { host: None } });
        }
        let table_end = (virt / l2_cover + 1) * l2_cover;
        let limit = max.min(table_end - virt);
        let Some(l2) = self.l2_offset(virt) else {
            return Ok(LayerExtent { len: limit, kind: LayerKind::Unallocated { host: None } });
        };
        let ext = self.with_l2(l2, (virt / l2_cover) as usize, |table| {
            if !self.geo.extended && !self.encrypted() {
                self.status_plain(table, virt, limit)
            } else {
                self.status_walk(table, virt, limit)
            }
        })??;
        Ok(self.refine_by_holes(ext))
    }

    /// `status` cluster by cluster (subcluster by subcluster with extended L2).
    fn status_walk(&self, table: &[u64], virt: u64, limit: u64) -> Result<LayerExtent> {
        let cs = self.cluster_size();
        let scs = self.geo.subcluster_size();
        let end = virt + limit;
        let mut pos = virt;
        let mut first: Option<LayerKind> = None;
        while pos < end {
            let cluster_virt = pos / cs * cs;
            let i = ((pos / cs) % self.geo.l2_entries()) as usize;
            let e = if self.geo.extended {
                L2Entry { entry: table[2 * i], bitmap: table[2 * i + 1] }
            } else {
                L2Entry { entry: table[i], bitmap: 0 }
            };
            let sc = ((pos % cs) / scs) as u32;
            let sub = self.geo.classify(e, sc);
            let kind = self.layer_kind(sub, pos % cs, cluster_virt, pos)?;
            let next = match sub {
                Sub::Compressed { .. } => cluster_virt + cs,
                _ => (pos / scs + 1) * scs,
            }
            .min(end);
            match first {
                None => first = Some(kind),
                Some(k0) => {
                    let expect = super::mapping::skip(LayerExtent { len: u64::MAX, kind: k0 }, pos - virt).kind;
                    let same = match (k0, kind) {
                        (LayerKind::Compressed { .. }, _) => false,
                        _ => expect == kind,
                    };
                    if !same {
                        break;
                    }
                }
            }
            pos = next;
        }
        Ok(LayerExtent { len: pos - virt, kind: first.expect("at least one cluster") })
    }

    /// `status` for tables without subclusters and images without encryption (nearly all):
    /// the run of clusters that continue the first one, found by comparing raw entries
    /// (runs of unallocated entries eight words at a time) instead of classifying each.
    fn status_plain(&self, t: &[u64], virt: u64, limit: u64) -> Result<LayerExtent> {
        let cs = self.cluster_size();
        let i0 = ((virt / cs) % self.geo.l2_entries()) as usize;
        let cluster_virt = virt / cs * cs;
        let sub = self.geo.classify(L2Entry { entry: t[i0], bitmap: 0 }, 0);
        let kind = self.layer_kind(sub, virt % cs, cluster_virt, virt)?;
        let end = virt + limit;
        // one past the table index of the range's last cluster (the range ends inside the table)
        let last = i0 + (end - cluster_virt).div_ceil(cs) as usize;
        let rest = &t[i0 + 1..last];
        let copied = if self.geo.has_data_file { OFLAG_COPIED } else { 0 };
        let flags = OFLAG_ZERO | OFLAG_COMPRESSED;
        let run = match sub {
            Sub::Compressed { .. } => 0,
            Sub::UnallocPlain => leading(rest, |w| w & (L2E_OFFSET_MASK | flags | copied) == 0),
            Sub::ZeroPlain => leading(rest, |w| w & (L2E_OFFSET_MASK | flags) == OFLAG_ZERO),
            Sub::Normal(off) | Sub::ZeroAlloc(off) => {
                let flag = if matches!(sub, Sub::Normal(_)) { 0 } else { OFLAG_ZERO };
                let mut k = 0;
                let mut next = off;
                while k < rest.len() {
                    next += cs;
                    let w = rest[k];
                    if w & flags != flag || w & L2E_OFFSET_MASK != next {
                        break;
                    }
                    k += 1;
                }
                k
            }
            Sub::UnallocAlloc(_) | Sub::Invalid => 0,
        };
        let stop = i0 + 1 + run;
        let run_end = cluster_virt + (stop - i0) as u64 * cs;
        if stop < last {
            // the entry that ends the run is classified as the per-cluster walk would, so a
            // damaged entry right after a run fails the same way
            let e = L2Entry { entry: t[stop], bitmap: 0 };
            self.layer_kind(self.geo.classify(e, 0), 0, run_end, run_end)?;
        }
        Ok(LayerExtent { len: run_end.min(end) - virt, kind })
    }

    /// qemu's qcow2_detect_metadata_preallocation: more clusters with a refcount than the
    /// file really occupies on disk means preallocated metadata over holes, and qemu then asks
    /// the host file which data clusters are holes.
    fn metadata_preallocated(&self) -> bool {
        *self.prealloc.get_or_init(|| {
            let cs = self.cluster_size();
            let real_clusters = self.file.allocated_size() / cs;
            let threshold = (real_clusters * 10 / 9).max(real_clusters + 2);
            let Ok(table) = self.refcount_table() else { return false };
            let end = self.file.len().next_multiple_of(512).div_ceil(cs);
            let per = self.refcounts_per_block();
            let mut count = 0;
            for (i, &block) in table.iter().enumerate() {
                let first = i as u64 * per;
                if first >= end || count >= threshold {
                    break;
                }
                if block == 0 {
                    continue;
                }
                let Ok(counts) = self.refcount_block(block) else { continue };
                let n = (end - first).min(per) as usize;
                count += counts.iter().take(n).filter(|&&c| c != 0).count() as u64;
            }
            count >= threshold
        })
    }

    /// Refine a data extent by the host file's holes (metadata-preallocated images only).
    fn refine_by_holes(&self, ext: LayerExtent) -> LayerExtent {
        let LayerKind::Data { file: id, host, .. } = ext.kind else { return ext };
        if !self.metadata_preallocated() {
            return ext;
        }
        let Some(f) = (match id {
            HostFileId::Image => Some(&self.file),
            HostFileId::DataFile => self.data_file.as_ref(),
            HostFileId::Extent(_) => None,
        }) else {
            return ext;
        };
        let (data, run) = f.data_run(host, ext.len);
        if host >= f.len() || !data {
            let len = if host >= f.len() { ext.len } else { run.min(ext.len) };
            return LayerExtent { len, kind: LayerKind::ZeroData { file: id, host } };
        }
        LayerExtent { len: run.min(ext.len), kind: ext.kind }
    }

    pub fn read_compressed(&self, host: u64, csize: u64, cluster_virt: u64, delta: u64, buf: &mut [u8]) -> Result<()> {
        let _ = cluster_virt;
        let cs = self.cluster_size() as usize;
        let cached = self.last_cluster.lock().unwrap().as_ref().filter(|(h, _)| *h == host).map(|(_, d)| d.clone());
        let data = match cached {
            Some(d) => d,
            None => {
                if host >= self.file.len() {
                    return Err(Error::corrupt(format!(
                        "{}: compressed cluster at 0x{:x} lies past the end of the file",
                        self.file.name, host
                    )));
                }
                let mut input = vec![0u8; csize as usize];
                self.file.read_zero_fill(host, &mut input)?;
                let mut out = vec![0u8; cs];
                compress::decompress(self.header.compression_type, &input, &mut out).map_err(|e| {
                    Error::corrupt(format!("{}: compressed cluster at 0x{:x}: {}", self.file.name, host, e))
                })?;
                let d = Arc::new(out);
                *self.last_cluster.lock().unwrap() = Some((host, d.clone()));
                d
            }
        };
        let start = delta as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    pub fn backing_ref(&self) -> Option<BackingRef> {
        // an invalid backing file offset (qemu refuses the image): no backing file to follow;
        // the header problem is among the warnings
        if self.header.backing_file_offset > self.cluster_size() {
            return None;
        }
        let name = self.header.backing_file.clone()?;
        let format = self.header.backing_format.as_deref().and_then(Format::parse);
        Some(BackingRef { candidates: vec![name.clone()], name, format })
    }

    /// Offsets of the L2 tables the active L1 table points at, in L1 order, each once.
    pub fn l2_tables(&self) -> Vec<(usize, u64)> {
        let mut seen = std::collections::HashSet::new();
        self.l1
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| {
                let off = e & L1E_OFFSET_MASK;
                (off != 0 && seen.insert(off)).then_some((i, off))
            })
            .collect()
    }

    /// The metadata structures of the file (not the data clusters).
    pub fn regions(&self) -> Vec<Region> {
        let cs = self.cluster_size();
        let h = &self.header;
        let mut out = h.regions();
        let (l1_off, l1_size) = self.l1_location();
        let l1_name = match &self.snapshot {
            Some(sn) => format!("L1 table of snapshot {} ({})", sn.id, sn.name),
            None => "L1 table".to_string(),
        };
        let mut l1 = Region::new(l1_off, l1_size as u64 * 8, "l1", l1_name);
        l1.fields = self
            .l1
            .iter()
            .enumerate()
            .filter(|(_, &e)| e != 0)
            .map(|(i, &e)| super::region::Field {
                off: l1_off + i as u64 * 8,
                len: 8,
                name: format!("L1[{}]", i),
                value: format!("0x{:016x}", e),
            })
            .collect();
        out.push(l1);
        for (i, off) in self.l2_tables() {
            if off < self.file.len() {
                out.push(Region::new(off, cs, "l2", format!("L2 table for L1[{}]", i)));
            }
        }
        out.extend(self.refcount_regions());
        let known: std::collections::HashSet<u64> = out.iter().map(|r| r.start).collect();
        out.extend(self.snapshot_regions(&known));
        out.extend(self.bitmap_regions());
        for e in &h.extensions {
            // the bitmap directory comes from bitmap_regions
            if e.data.len() >= 16 && e.kind == header::EXT_CRYPTO {
                let off = u64::from_be_bytes(e.data[0..8].try_into().unwrap());
                let len = u64::from_be_bytes(e.data[8..16].try_into().unwrap());
                if off < self.file.len() && len > 0 {
                    out.push(Region::new(off, len.min(self.file.len() - off), "crypto-header", "encryption header"));
                }
            }
        }
        out.sort_by_key(|r| r.start);
        out
    }

    /// The data cluster (or compressed cluster) holding host offset `off` of the image (or
    /// data) file, with the guest offset it serves: a reverse map of the L2 tables, built once.
    pub fn data_at(&self, off: u64, file: HostFileId) -> Result<Option<Region>> {
        if file != self.host_id() {
            return Ok(None);
        }
        let cs = self.cluster_size();
        let rev = self.reverse.get_or_init(|| self.build_reverse());
        // entries are (host start, length, guest cluster, compressed), sorted by host start
        let i = rev.partition_point(|e| e.0 <= off);
        for e in rev[..i].iter().rev().take(4) {
            if off >= e.0 && off < e.0 + e.1 {
                let (what, name) = if e.3 {
                    ("compressed", format!("compressed cluster {}", e.2 / cs))
                } else {
                    ("data", format!("cluster {} data", e.2 / cs))
                };
                let mut r = Region::new(e.0, e.1, what, name);
                // compressed bytes do not map linearly to guest bytes
                r.virt = (!e.3).then_some(e.2);
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn build_reverse(&self) -> Vec<(u64, u64, u64, bool)> {
        let cs = self.cluster_size();
        let per = self.geo.l2_entries();
        let mut out = Vec::new();
        for (l1i, l2off) in self.l2_tables() {
            let Ok(t) = self.l2_table(l2off) else { continue };
            for (j, e) in t.iter().enumerate() {
                let cluster_virt = (l1i as u64 * per + j as u64) * cs;
                if cluster_virt >= self.virtual_size() {
                    break;
                }
                match self.geo.classify(*e, 0) {
                    Sub::Compressed { host, csize } => out.push((host, csize, cluster_virt, true)),
                    _ => {
                        let host = e.entry & cluster::L2E_OFFSET_MASK;
                        let allocated = host != 0 || (self.geo.has_data_file && e.entry & cluster::OFLAG_COPIED != 0);
                        if allocated {
                            out.push((host, cs, cluster_virt, false));
                        }
                    }
                }
            }
        }
        out.sort_by_key(|e| e.0);
        out
    }
}

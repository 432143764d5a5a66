//! What differs between two guest disks: every differing guest range, merged into runs, with
//! what each side's extent is there. Two chains (or two views of one chain: with and without
//! its top layer, a snapshot and the active disk) are walked extent by extent; ranges that
//! read zero on both sides, or that both sides map to the same bytes of the same host file,
//! are equal without reading; a range that reads zero on one side is checked for zeros on
//! the other; everything else is read in large chunks and compared.

use std::collections::HashMap;

use serde::Serialize;

use super::chain::{read_extent_in, resolve_in, LayerInfo};
use super::mapping::{Extent, HostFileId, LayerKind};
use super::{Error, Result};

/// Bytes read from each side at once.
const CHUNK: u64 = 4 << 20;
/// Disks at least this large are compared in two halves on two threads.
const PARALLEL_FROM: u64 = 64 << 20;

/// A guest disk to compare: the layers of a chain, top first (a suffix of an image's layers
/// is the chain without its top).
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub layers: &'a [LayerInfo],
}

impl<'a> Side<'a> {
    pub fn new(layers: &'a [LayerInfo]) -> Result<Side<'a>> {
        if layers.is_empty() {
            return Err(Error::Invalid("nothing to compare: a chain without layers".into()));
        }
        Ok(Side { layers })
    }

    pub fn size(&self) -> u64 {
        self.layers[0].layer.virtual_size()
    }
}

/// What one side holds at the start of a differing run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SideExtent {
    /// data, zero, unallocated, compressed, or beyond-end (past this side's disk size).
    pub kind: &'static str,
    pub layer: Option<usize>,
    pub filename: Option<String>,
    pub host_offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Run {
    pub start: u64,
    pub length: u64,
    pub a: SideExtent,
    pub b: SideExtent,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffReport {
    pub equal: bool,
    pub size_a: u64,
    pub size_b: u64,
    pub differing_bytes: u64,
    /// The first differing byte's 512-byte sector, as `qemu-img compare` reports it.
    pub first_difference: Option<u64>,
    pub runs: Vec<Run>,
    /// Bytes actually read from each side (the rest was decided from the mappings).
    pub bytes_read: u64,
}

/// Progress: called with (guest bytes done, total); returning false cancels the diff.
pub type Progress<'p> = &'p mut dyn FnMut(u64, u64) -> bool;

/// Where an extent's bytes are, as a key two sides can share: (file identity, host offset).
type HostKey = ((u64, u64), u64);

struct Walker<'a> {
    side: Side<'a>,
    ids: HashMap<(usize, HostFileId), Option<(u64, u64)>>,
}

impl<'a> Walker<'a> {
    fn new(side: Side<'a>) -> Walker<'a> {
        Walker { side, ids: HashMap::new() }
    }

    /// The extent at `pos`, at most `max` long; past the disk's end a zero extent.
    fn at(&self, pos: u64, max: u64) -> Result<Option<Extent>> {
        let size = self.side.size();
        if pos >= size {
            return Ok(None);
        }
        Ok(Some(resolve_in(self.side.layers, pos, max.min(size - pos))?))
    }

    fn host_key(&mut self, e: &Extent) -> Option<HostKey> {
        // only plain data: a compressed cluster's bytes are not the guest bytes
        let LayerKind::Data { file, host, .. } = e.kind else { return None };
        let layers = self.side.layers;
        let id = *self.ids.entry((e.depth, file)).or_insert_with(|| layers[e.depth].layer.host(file)?.identity());
        Some((id?, host))
    }

    fn describe(&self, e: Option<&Extent>) -> SideExtent {
        let Some(e) = e else {
            return SideExtent { kind: "beyond-end", layer: None, filename: None, host_offset: None };
        };
        let li = &self.side.layers[e.depth];
        SideExtent {
            kind: e.kind_name(),
            layer: Some(e.depth),
            filename: Some(li.name.clone()),
            host_offset: e.host_at(0).map(|(_, h)| h),
        }
    }

    fn read(&self, e: Option<&Extent>, buf: &mut [u8]) -> Result<()> {
        match e {
            None => {
                buf.fill(0);
                Ok(())
            }
            Some(e) => read_extent_in(self.side.layers, e, buf),
        }
    }
}

/// Reads as zero without reading (past the end of a disk, zero and unallocated extents).
fn reads_zero(e: Option<&Extent>) -> bool {
    e.is_none_or(|e| e.kind.reads_zero())
}

/// The byte ranges of `0..n` where `hit(i)` holds, relative to 0. Blocks for which
/// `block_clear(range)` says no byte hits are skipped whole (a memcmp or a zero check), so
/// the byte-by-byte test runs only inside blocks that hold a hit.
fn ranges_where(n: usize, block_clear: impl Fn(std::ops::Range<usize>) -> bool, hit: impl Fn(usize) -> bool, out: &mut Vec<(u64, u64)>) {
    const BLOCK: usize = 4096;
    let mut open: Option<usize> = None;
    let close = |s: usize, e: usize, out: &mut Vec<(u64, u64)>| out.push((s as u64, (e - s) as u64));
    let mut i = 0;
    while i < n {
        let end = (i + BLOCK).min(n);
        if block_clear(i..end) {
            if let Some(s) = open.take() {
                close(s, i, out);
            }
        } else {
            for j in i..end {
                match (hit(j), open) {
                    (true, None) => open = Some(j),
                    (false, Some(s)) => {
                        close(s, j, out);
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        i = end;
    }
    if let Some(s) = open {
        close(s, n, out);
    }
}

/// The differing byte ranges of two equal-length buffers, relative to their start.
fn differing(a: &[u8], b: &[u8], out: &mut Vec<(u64, u64)>) {
    ranges_where(a.len(), |r| a[r.clone()] == b[r], |j| a[j] != b[j], out)
}

/// The non-zero byte ranges of a buffer, relative to its start.
fn nonzero(a: &[u8], out: &mut Vec<(u64, u64)>) {
    ranges_where(a.len(), |r| a[r].iter().all(|&x| x == 0), |j| a[j] != 0, out)
}

/// The differing runs of `[start, size)` and the bytes read for them.
fn diff_range(a: Side, b: Side, start: u64, size: u64, progress: Progress) -> Result<(Vec<Run>, u64)> {
    let mut wa = Walker::new(a);
    let mut wb = Walker::new(b);
    let mut runs: Vec<Run> = Vec::new();
    let mut bytes_read = 0u64;
    let mut buf_a = Vec::new();
    let mut buf_b = Vec::new();
    let mut ranges = Vec::new();
    let mut pos = start;
    while pos < size {
        if !progress(pos, size) {
            return Err(Error::Cancelled);
        }
        let ea = wa.at(pos, size - pos)?;
        let eb = wb.at(pos, size - pos)?;
        let len_a = ea.map_or(size - pos, |e| e.len);
        let len_b = eb.map_or(size - pos, |e| e.len);
        let len = len_a.min(len_b);
        let (za, zb) = (reads_zero(ea.as_ref()), reads_zero(eb.as_ref()));
        let same_bytes = match (wa.host_key_opt(ea.as_ref()), wb.host_key_opt(eb.as_ref())) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        };
        if (za && zb) || same_bytes {
            pos += len;
            continue;
        }
        // compare in chunks; an extent read piecewise is advanced with Image::advance
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(CHUNK);
            let sa = ea.map(|e| super::Image::advance(&e, off));
            let sb = eb.map(|e| super::Image::advance(&e, off));
            ranges.clear();
            if za || zb {
                // one side reads zero: only the other side is read
                let (w, e) = if za { (&wb, sb.as_ref()) } else { (&wa, sa.as_ref()) };
                buf_a.resize(n as usize, 0);
                w.read(e, &mut buf_a)?;
                bytes_read += n;
                nonzero(&buf_a, &mut ranges);
            } else {
                buf_a.resize(n as usize, 0);
                buf_b.resize(n as usize, 0);
                wa.read(sa.as_ref(), &mut buf_a)?;
                wb.read(sb.as_ref(), &mut buf_b)?;
                bytes_read += 2 * n;
                differing(&buf_a, &buf_b, &mut ranges);
            }
            for &(s, l) in &ranges {
                let start = pos + off + s;
                let da = wa.describe(ea.as_ref());
                let db = wb.describe(eb.as_ref());
                match runs.last_mut() {
                    // one run while both sides stay in the same extents and the bytes touch
                    Some(r) if r.start + r.length == start && r.a.layer == da.layer && r.b.layer == db.layer && r.a.kind == da.kind && r.b.kind == db.kind => {
                        r.length += l
                    }
                    _ => runs.push(Run { start, length: l, a: with_offset(da, start - pos), b: with_offset(db, start - pos) }),
                }
            }
            off += n;
            if !progress(pos + off, size) {
                return Err(Error::Cancelled);
            }
        }
        pos += len;
    }
    Ok((runs, bytes_read))
}

/// Compare two guest disks over the larger of their sizes (the shorter one reads zero past
/// its end, as `qemu-img compare` does). Two halves are compared on two threads when there is
/// enough to share; `progress` sees the first half's (done, total).
pub fn diff(a: Side, b: Side, progress: Progress) -> Result<DiffReport> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (size_a, size_b) = (a.size(), b.size());
    let size = size_a.max(size_b);
    let mid = if size >= PARALLEL_FROM { size / 2 / CHUNK * CHUNK } else { size };
    let stop = AtomicBool::new(false);
    let (first, second) = std::thread::scope(|sc| {
        let other = (mid < size).then(|| sc.spawn(|| diff_range(a, b, mid, size, &mut |_, _| !stop.load(Ordering::Relaxed))));
        let first = diff_range(a, b, 0, mid, &mut |d, _| {
            let go = progress(d, mid);
            if !go {
                stop.store(true, Ordering::Relaxed);
            }
            go
        });
        if first.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let second = other.map(|h| h.join().unwrap_or_else(|_| Err(Error::Invalid("the diff thread failed".into()))));
        (first, second)
    });
    let (mut runs, mut bytes_read) = first?;
    if let Some(second) = second {
        let (more, n) = second?;
        bytes_read += n;
        let mut more = more.into_iter();
        // a run cut at the middle is one run
        if let (Some(last), Some(next)) = (runs.last_mut(), more.as_slice().first()) {
            if last.start + last.length == next.start && last.a.kind == next.a.kind && last.b.kind == next.b.kind && last.a.layer == next.a.layer && last.b.layer == next.b.layer {
                last.length += next.length;
                more.next();
            }
        }
        runs.extend(more);
    }
    let differing_bytes = runs.iter().map(|r| r.length).sum();
    let first_difference = runs.first().map(|r| r.start / 512 * 512);
    Ok(DiffReport { equal: runs.is_empty(), size_a, size_b, differing_bytes, first_difference, runs, bytes_read })
}

/// A side's description at `delta` bytes into the extent it describes.
fn with_offset(mut d: SideExtent, delta: u64) -> SideExtent {
    if let Some(h) = d.host_offset.as_mut() {
        *h += delta;
    }
    d
}

impl Walker<'_> {
    fn host_key_opt(&mut self, e: Option<&Extent>) -> Option<HostKey> {
        e.and_then(|e| self.host_key(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_ranges_are_byte_exact() {
        let a = vec![0u8; 10000];
        let mut b = a.clone();
        b[5] = 1;
        b[6] = 1;
        b[4095] = 2;
        b[4096] = 2;
        b[9999] = 3;
        let mut out = Vec::new();
        differing(&a, &b, &mut out);
        assert_eq!(out, vec![(5, 2), (4095, 2), (9999, 1)]);
        out.clear();
        nonzero(&b, &mut out);
        assert_eq!(out, vec![(5, 2), (4095, 2), (9999, 1)]);
    }
}

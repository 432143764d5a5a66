//! Writing a VMDK as qemu does: in place for flat extents and allocated grains; a new grain
//! at the end of its extent file otherwise (the whole grain: the layers below, or zeros for a
//! zeroed grain, around the new bytes), then its grain table entry and the redundant table's,
//! then, once per session, a new CID in the descriptor so delta disks made over this one see
//! that it changed.
//!
//! streamOptimized (compressed) extents are written as qemu writes them (block/vmdk.c,
//! `vmdk_pwritev` / `vmdk_write_extent`): only whole grains (or the last, short grain of the
//! extent up to its end), never a grain already written (qemu: "Could not write to allocated
//! cluster for streamOptimized"), each grain deflated (zlib, default level) behind a 12-byte
//! marker (guest LBA, compressed size) appended to the file, then its grain table entries.
//! Grain tables and directory stay where they are: qemu's streamOptimized files (made by
//! `qemu-img create` or `convert`) keep them in place, not at the end. A file whose header
//! says "grain directory at the end" (VMware's, read through its footer) is refused: qemu
//! appends after its end-of-stream marker there and can no longer open the file ("Invalid
//! footer").

use super::sparse::{Grain, SECTOR};
use super::{ExtentKind, Vmdk};
use crate::image::mapping::HostFileId;
use crate::image::write::step;
use crate::image::{Error, Result};

pub type Below<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

impl Vmdk {
    pub fn write(&mut self, virt: u64, data: &[u8], below: Below) -> Result<()> {
        // a write into a streamOptimized extent is checked whole before any byte is written
        // (qemu writes the grains before a refused one, then fails)
        self.check_stream_write(virt, data.len() as u64)?;
        let mut pos = 0usize;
        while pos < data.len() {
            let v = virt + pos as u64;
            let i = self.extents.partition_point(|e| e.start + e.size <= v);
            let e = self.extents.get(i).ok_or_else(|| Error::Invalid(format!("guest offset 0x{:x} is past the last extent", v)))?;
            let rel = v - e.start;
            let room = e.size - rel;
            if e.access != "RW" {
                // qemu drops RDONLY and NOACCESS extents from the disk altogether; vdiskview
                // keeps them in place (readable) and never writes them
                return Err(Error::unsupported(format!(
                    "{}: guest 0x{:x} lies in a {} extent ({}), which vdiskview does not write",
                    self.file.name,
                    v,
                    e.access,
                    e.desc_name.as_deref().unwrap_or("no file")
                )));
            }
            let (n, id) = match &e.kind {
                ExtentKind::SeSparse(_) => {
                    return Err(Error::unsupported(format!("{}: seSparse extents are read-only in vdiskview (as in qemu)", self.file.name)))
                }
                ExtentKind::Zero => {
                    return Err(Error::unsupported(format!("{}: guest 0x{:x} lies in a ZERO extent, which stores nothing", self.file.name, v)))
                }
                ExtentKind::Flat { offset } => {
                    let n = (room as usize).min(data.len() - pos);
                    let id = e.file.expect("flat file");
                    let f = self.host_file(id).expect("extent file");
                    f.write_at(offset + rel, &data[pos..pos + n])?;
                    f.sync()?;
                    step("vmdk flat data");
                    (n, id)
                }
                ExtentKind::Sparse(sp) if sp.compressed => {
                    let grain = sp.grain;
                    let n = (grain.min(room) as usize).min(data.len() - pos);
                    let id = e.file.expect("sparse file");
                    self.write_stream_grain(i, id, v, rel, &data[pos..pos + n])?;
                    (n, id)
                }
                ExtentKind::Sparse(sp) if sp.header.version == 3 && !sp.header.cowd => {
                    // version 3 added changed-block tracking, which a writer must keep up to date
                    return Err(Error::unsupported(format!(
                        "{}: an uncompressed version 3 sparse extent (changed-block tracking) is read-only, as in qemu (\"VMDK version 3 must be read only\")",
                        self.file.name
                    )));
                }
                ExtentKind::Sparse(sp) => {
                    let grain = sp.grain;
                    let in_grain = rel % grain;
                    let n = ((grain - in_grain).min(room) as usize).min(data.len() - pos);
                    let id = e.file.expect("sparse file");
                    self.write_grain(i, id, v, rel, &data[pos..pos + n], below)?;
                    (n, id)
                }
            };
            let _ = id;
            pos += n;
        }
        // grains moved or were added: the file-offset index is built again when next asked
        self.reverse = std::sync::OnceLock::new();
        if !self.cid_updated {
            self.update_cid()?;
            self.cid_updated = true;
        }
        Ok(())
    }

    fn write_grain(&mut self, ext: usize, id: HostFileId, virt: u64, rel: u64, piece: &[u8], below: Below) -> Result<()> {
        let e = &self.extents[ext];
        let ExtentKind::Sparse(sp) = &e.kind else { unreachable!() };
        let f = self.host_file(id).expect("extent file");
        let grain = sp.grain;
        let in_grain = rel % grain;
        let g = rel / grain;
        let gdi = (g / sp.gtes_per_gt) as usize;
        let gti = g % sp.gtes_per_gt;
        let gde = *sp.gd.get(gdi).ok_or_else(|| Error::corrupt(format!("{}: grain {} is beyond the grain directory", f.name, g)))?;
        if gde == 0 {
            return Err(Error::unsupported(format!(
                "{}: grain directory entry {} has no grain table; vdiskview (like qemu) does not allocate grain tables",
                f.name, gdi
            )));
        }
        let (state, _) = sp.lookup(f, rel)?;
        if let Grain::At(at) = state {
            if at >= f.len() || at < sp.header.overhead.saturating_mul(SECTOR) {
                return Err(Error::corrupt(format!(
                    "{}: the grain for guest 0x{:x} is at 0x{:x}, outside the file's grain area; not writing there",
                    f.name, virt, at
                )));
            }
            f.write_at(at + in_grain, piece)?;
            f.sync()?;
            step("vmdk grain data");
            return Ok(());
        }
        // a new grain at the end of the file, rounded up to the grain size as qemu does
        let at = f.len().div_ceil(SECTOR).div_ceil(grain / SECTOR) * grain;
        if at / SECTOR > u32::MAX as u64 {
            return Err(Error::Invalid(format!("{}: the extent file is too large for another grain", f.name)));
        }
        let grain_virt = virt - in_grain;
        // the grain is written in pieces of at most 1 MiB (a grain may be up to 1 GiB), and
        // only as far as the extent reaches; the file is then made a whole grain long past
        // the grain's start (a hole), so the next grain lands where qemu would put it
        const PIECE: u64 = 1 << 20;
        let fill = grain.min(e.size - (rel - in_grain));
        let mut buf = vec![0u8; PIECE.min(fill) as usize];
        let (p0, p1) = (in_grain, in_grain + piece.len() as u64);
        let mut o = 0u64;
        while o < fill {
            let n = PIECE.min(fill - o);
            let b = &mut buf[..n as usize];
            b.fill(0);
            if state == Grain::Unallocated {
                below(grain_virt + o, b)?;
            }
            let (s0, s1) = (p0.max(o), p1.min(o + n));
            if s0 < s1 {
                b[(s0 - o) as usize..(s1 - o) as usize].copy_from_slice(&piece[(s0 - p0) as usize..(s1 - p0) as usize]);
            }
            f.write_at(at + o, b)?;
            o += n;
        }
        f.extend_to(at + grain)?;
        f.sync()?;
        step("vmdk new grain");
        let entry = ((at / SECTOR) as u32).to_le_bytes();
        f.write_at(gde as u64 * SECTOR + gti * 4, &entry)?;
        if let Some(rgde) = sp.rgd.as_ref().and_then(|r| r.get(gdi)).copied().filter(|&r| r != 0) {
            f.write_at(rgde as u64 * SECTOR + gti * 4, &entry)?;
        }
        f.sync()?;
        step("vmdk grain table entry");
        sp.forget_gt(gde);
        Ok(())
    }

    /// Refuse a write into a streamOptimized extent that qemu refuses (or that would break
    /// the file), before anything is written.
    fn check_stream_write(&self, virt: u64, len: u64) -> Result<()> {
        let end = virt.saturating_add(len);
        let mut v = virt;
        while v < end {
            let Some(e) = self.extent_at(v) else { return Ok(()) };
            let next = (e.start + e.size).min(end);
            let sp = match &e.kind {
                ExtentKind::Sparse(sp) if sp.compressed => sp,
                _ => {
                    v = next;
                    continue;
                }
            };
            let f = self.host_file(e.file.expect("sparse file")).expect("extent file");
            let name = &f.name;
            if sp.first_header.is_some() {
                return Err(Error::unsupported(format!(
                    "{}: this streamOptimized extent keeps its grain directory at the end (found through its footer); \
                     vdiskview does not write it (qemu appends after the end-of-stream marker and can then no longer open the file)",
                    name
                )));
            }
            if !sp.markers {
                return Err(Error::unsupported(format!("{}: compressed extent without grain markers: qemu does not write it either", name)));
            }
            let grain = sp.grain;
            let mut rel = v - e.start;
            let rel_end = next - e.start;
            while rel < rel_end {
                let g_end = (rel / grain * grain + grain).min(e.size);
                if rel % grain != 0 || (rel_end < g_end) {
                    return Err(Error::Invalid(format!(
                        "{}: a streamOptimized extent is written in whole grains only ({} bytes at a multiple of {}); \
                         guest 0x{:x}-0x{:x} covers part of the grain at guest 0x{:x} (qemu refuses this too: EINVAL)",
                        name,
                        grain,
                        grain,
                        virt,
                        end,
                        e.start + rel / grain * grain
                    )));
                }
                let g = rel / grain;
                let gdi = (g / sp.gtes_per_gt) as usize;
                if sp.gd.get(gdi).copied().unwrap_or(0) == 0 {
                    return Err(Error::unsupported(format!(
                        "{}: grain directory entry {} has no grain table; vdiskview (like qemu) does not allocate grain tables",
                        name, gdi
                    )));
                }
                if let (Grain::At(_), _) = sp.lookup(f, rel)? {
                    return Err(Error::unsupported(format!(
                        "{}: the grain at guest 0x{:x} of this streamOptimized extent is already written; \
                         a compressed grain is never rewritten (qemu refuses too: \"Could not write to allocated cluster for streamOptimized\")",
                        name,
                        e.start + g * grain
                    )));
                }
                rel = g_end;
            }
            v = next;
        }
        Ok(())
    }

    /// Append one whole grain, deflated behind its marker, to a streamOptimized extent and
    /// point its grain table entries at it.
    ///
    /// Order (qemu's): the compressed grain first, flushed, then the grain table entry and the
    /// redundant table's, flushed. A crash before the entries leaves unreferenced bytes at the
    /// end of the file, which no reader looks at; the tables never point at a grain not yet
    /// on disk. Like qemu, the first grain of a session goes at the file's end rounded up to a
    /// grain, the following ones right after the previous one's compressed bytes, and the file
    /// is made a whole grain long past each new grain's start (a hole: qemu writes zeros there
    /// before the compressed bytes), so both tools lay out a session's grains alike.
    fn write_stream_grain(&mut self, ext: usize, id: HostFileId, virt: u64, rel: u64, piece: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let e = &self.extents[ext];
        let ExtentKind::Sparse(sp) = &e.kind else { unreachable!() };
        let f = self.host_file(id).expect("extent file");
        let grain = sp.grain;
        let grain_sectors = grain / SECTOR;
        let g = rel / grain;
        let gdi = (g / sp.gtes_per_gt) as usize;
        let gti = g % sp.gtes_per_gt;
        let gde = sp.gd.get(gdi).copied().filter(|&d| d != 0).ok_or_else(|| Error::corrupt(format!("{}: no grain table for grain {}", f.name, g)))?;
        let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(piece.len() / 2 + 64), flate2::Compression::default());
        z.write_all(piece).map_err(|e| Error::io(format!("{}: compress", f.name), e))?;
        let comp = z.finish().map_err(|e| Error::io(format!("{}: compress", f.name), e))?;
        let mut rec = Vec::with_capacity(12 + comp.len());
        rec.extend_from_slice(&(virt / SECTOR).to_le_bytes());
        rec.extend_from_slice(&(comp.len() as u32).to_le_bytes());
        rec.extend_from_slice(&comp);
        let mut sector = sp.stream_next.load(Ordering::Acquire);
        if sector == 0 {
            sector = f.len().div_ceil(SECTOR).div_ceil(grain_sectors) * grain_sectors;
        }
        let at = sector * SECTOR;
        if sector > u32::MAX as u64 {
            return Err(Error::Invalid(format!("{}: the extent file is too large for another grain", f.name)));
        }
        f.extend_to(at + grain)?;
        f.write_at(at, &rec)?;
        f.sync()?;
        step("vmdk compressed grain");
        sp.stream_next.store((at + rec.len() as u64).div_ceil(SECTOR), Ordering::Release);
        let entry = (sector as u32).to_le_bytes();
        f.write_at(gde as u64 * SECTOR + gti * 4, &entry)?;
        if let Some(rgde) = sp.rgd.as_ref().and_then(|r| r.get(gdi)).copied().filter(|&r| r != 0) {
            f.write_at(rgde as u64 * SECTOR + gti * 4, &entry)?;
        }
        f.sync()?;
        step("vmdk grain table entry");
        sp.forget_gt(gde);
        Ok(())
    }

    /// A new CID in the descriptor (same width, in place), as qemu writes on a session's first
    /// write.
    fn update_cid(&mut self) -> Result<()> {
        let Some((base, _)) = self.desc_at else { return Ok(()) };
        let mut at = 0usize;
        for line in self.desc_text.split_inclusive('\n') {
            let t = line.trim_end();
            if let Some(v) = t.strip_prefix("CID=") {
                let w = v.len();
                if (1..=8).contains(&w) && v.chars().all(|c| c.is_ascii_hexdigit()) {
                    // same width as the old value (qemu writes it unpadded), so it fits in place
                    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
                    let mut x = nanos ^ (self.cid as u64).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
                    x ^= x >> 29;
                    let bits = 4 * w as u32;
                    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
                    let top = if w > 1 { 1u32 << (bits - 4) } else { 1 };
                    let mut cid = ((x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as u32 & mask) | top;
                    if cid == self.cid {
                        cid = (cid ^ 1) | top;
                    }
                    if cid == super::descriptor::NO_PARENT_CID {
                        cid ^= 2;
                    }
                    let text = format!("{:0w$x}", cid, w = w);
                    self.file.write_at(base + (at + 4) as u64, text.as_bytes())?;
                    self.file.sync()?;
                    step("vmdk cid");
                    self.desc_text.replace_range(at + 4..at + 4 + w, &text);
                    self.cid = cid;
                }
                return Ok(());
            }
            at += line.len();
        }
        Ok(())
    }
}

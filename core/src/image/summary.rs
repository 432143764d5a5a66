//! Per-block/cluster summaries of the guest disk for grids, heatmaps and `n`/`N` navigation:
//! computed from the chain's extents on demand, so their cost follows what is shown, not
//! the size of the image.

use super::chain::Image;
use super::mapping::LayerKind;
use super::vhd;
use super::Result;

/// What one block (VHD) or cluster (QCOW2) of the guest disk is, as a grid cell shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// No layer holds it: reads zero.
    Unallocated,
    /// Data of layer `depth`, all of the unit.
    Data { depth: usize },
    /// Partly data of the top layer, partly from below (a VHD block with a partial bitmap, a
    /// qcow2 cluster with some subclusters allocated).
    Partial,
    Zero { depth: usize },
    Compressed { depth: usize },
    /// Top-layer data shared with a snapshot (refcount > 1: a write copies it first).
    Shared,
    /// Several lower layers, or data and zeros mixed below the top.
    Mixed { depth: usize },
}

impl UnitKind {
    pub fn name(&self) -> String {
        match self {
            UnitKind::Unallocated => "unallocated".into(),
            UnitKind::Data { depth: 0 } => "allocated".into(),
            UnitKind::Data { depth } => format!("from backing file (depth {})", depth),
            UnitKind::Partial => "partially allocated".into(),
            UnitKind::Shared => "allocated, shared with a snapshot".into(),
            UnitKind::Zero { .. } => "zero".into(),
            UnitKind::Compressed { .. } => "compressed".into(),
            UnitKind::Mixed { .. } => "mixed".into(),
        }
    }
}

impl Image {
    /// The grid's unit: the top layer's block or cluster size, 1 MiB for raw and fixed VHD.
    pub fn unit_size(&self) -> u64 {
        self.top().cluster_size().unwrap_or(1 << 20)
    }

    pub fn unit_count(&self) -> u64 {
        self.virtual_size().div_ceil(self.unit_size())
    }

    /// Name of the unit for people: "block" (VHD), "cluster" (QCOW2), "MiB" (raw).
    pub fn unit_name(&self) -> &'static str {
        self.top().unit_name()
    }

    pub fn unit_of(&self, virt: u64) -> u64 {
        virt / self.unit_size()
    }

    pub fn unit_start(&self, unit: u64) -> u64 {
        unit.saturating_mul(self.unit_size())
    }

    pub fn unit_kind(&self, unit: u64) -> Result<UnitKind> {
        let start = self.unit_start(unit);
        let class = |e: &super::Extent| match e.kind {
            LayerKind::Data { .. } | LayerKind::Opaque | LayerKind::ZeroData { .. } => 0,
            // a dynamic VHD's missing block reads zero (qemu calls it zero), but it is not
            // allocated: the grid shows the BAT as it is
            LayerKind::Zero { host: None } if self.layers[e.depth].layer.zero_means_unallocated() => 2,
            LayerKind::Zero { .. } => 1,
            LayerKind::Unallocated { .. } => 2,
            LayerKind::Compressed { .. } => 3,
        };
        // The extents are streamed, not collected: one unit of a damaged image can hold
        // millions (a 2 GiB VHD block whose bitmap alternates). Stop once the answer is known,
        // or after MAX_UNIT_EXTENTS with what was seen.
        const MAX_UNIT_EXTENTS: usize = 4096;
        let end = start.saturating_add(self.unit_size()).min(self.virtual_size());
        let (mut pos, mut n) = (start, 0);
        let mut first: Option<super::Extent> = None;
        let (mut same, mut top_data, mut min_depth) = (true, false, usize::MAX);
        while pos < end && n < MAX_UNIT_EXTENTS {
            let e = self.resolve(pos, end - pos)?;
            pos += e.len;
            n += 1;
            top_data |= e.depth == 0 && class(&e) == 0;
            min_depth = min_depth.min(e.depth);
            match &first {
                None => first = Some(e),
                Some(f) => same &= e.depth == f.depth && class(&e) == class(f),
            }
            if !same && top_data {
                return Ok(UnitKind::Partial);
            }
        }
        let Some(first) = first else { return Ok(UnitKind::Unallocated) };
        let first = &first;
        if same {
            return Ok(match class(first) {
                0 if first.depth == 0 && self.shared_cluster(start)? => UnitKind::Shared,
                0 => UnitKind::Data { depth: first.depth },
                1 => UnitKind::Zero { depth: first.depth },
                2 => UnitKind::Unallocated,
                _ => UnitKind::Compressed { depth: first.depth },
            });
        }
        if top_data {
            return Ok(UnitKind::Partial);
        }
        Ok(UnitKind::Mixed { depth: min_depth })
    }

    /// Top-layer data shared with a snapshot (a write copies it first).
    fn shared_cluster(&self, virt: u64) -> Result<bool> {
        self.top().shared_with_snapshot(virt)
    }

    /// The next guest offset after `virt` (or before it, `forward == false`) where data of
    /// the top layer begins a new run; skips unallocated runs whole.
    pub fn next_allocated(&self, virt: u64, forward: bool) -> Result<Option<u64>> {
        let size = self.virtual_size();
        let unit = self.unit_size();
        if forward {
            let mut pos = (self.unit_of(virt) + 1).saturating_mul(unit);
            while pos < size {
                let e = self.resolve(pos, size - pos)?;
                if e.depth == 0 && e.kind.holds_data() {
                    return Ok(Some(pos / unit * unit));
                }
                pos += e.len;
            }
            Ok(None)
        } else {
            // The last unit before virt's that holds top-layer data (what the grid shows as
            // allocated, partial, shared or compressed). Windows of units, doubling, are walked
            // backwards, each forwards by extents: an unallocated run is one extent, so the
            // cost follows the metadata, not the count of units (2^31 on a sparse 1 TiB disk
            // of 512-byte clusters).
            let mut hi = self.unit_of(virt);
            let mut span = 64u64;
            while hi > 0 {
                let lo = hi.saturating_sub(span);
                let end = self.unit_start(hi).min(size);
                let mut pos = self.unit_start(lo);
                let mut last = None;
                while pos < end {
                    let e = self.resolve(pos, end - pos)?;
                    if e.depth == 0 && e.kind.holds_data() {
                        last = Some(self.unit_of(pos + e.len - 1));
                    }
                    pos += e.len;
                }
                if let Some(u) = last {
                    return Ok(Some(self.unit_start(u)));
                }
                hi = lo;
                span = span.saturating_mul(2);
            }
            Ok(None)
        }
    }

    /// Guest offset → host offset in the file of the layer holding it, where there is one.
    pub fn to_file(&self, virt: u64) -> Result<Option<(usize, u64)>> {
        if virt >= self.virtual_size() {
            return Ok(None);
        }
        let e = self.resolve(virt, 1)?;
        Ok(match e.host_at(0) {
            Some((super::HostFileId::Image, h)) => Some((e.depth, h)),
            _ => None,
        })
    }

    /// Host offset in layer `layer`'s image file → the guest offset it holds, if it is data.
    pub fn to_virt(&self, layer: usize, off: u64) -> Result<Option<u64>> {
        let r = self.locate_host(layer, off)?;
        Ok(r.virt.map(|v| v + (off - r.start)))
    }

    /// Sector bitmap of a VHD block of the top layer: (bits, sectors per block).
    pub fn vhd_bitmap(&self, block: u64) -> Result<Option<(std::sync::Arc<Vec<u8>>, u64)>> {
        match self.top().downcast_ref::<vhd::Vhd>() {
            Some(v) if v.block_size().is_some() => {
                let sectors = v.block_size().unwrap_or(0) / 512;
                Ok(v.bitmap(block)?.map(|b| (b, sectors)))
            }
            _ => Ok(None),
        }
    }

    pub fn vhd_bit(bm: &[u8], sector: u64) -> bool {
        vhd::bit(bm, sector)
    }
}

//! Layers top→base: following backing files and differencing parents, loop detection, and the
//! chain-wide answer for a guest range (`resolve`) that map, read and every view use.

use std::collections::HashSet;
use std::path::Path;

use super::io::HostFile;
use super::region::Region;
use super::mapping::{skip, Extent, LayerExtent, LayerKind};
use super::driver::FormatLayer;
pub use super::driver::BackingRef;
use super::{combine_path, probe, Error, Format, OpenOptions, Result};

/// Deepest chain we follow; deeper is reported as damage rather than walked forever.
pub const MAX_CHAIN_DEPTH: usize = 256;

/// One opened file of a chain, in its own format, behind the driver boundary.
pub type Layer = Box<dyn FormatLayer>;

pub struct LayerInfo {
    /// The file name as qemu would print it: the top as given, a backing file combined with
    /// the folder of the image naming it.
    pub name: String,
    pub layer: Layer,
    /// How the layer above names this one, if any.
    pub named_as: Option<String>,
}

pub struct Image {
    pub layers: Vec<LayerInfo>,
    /// Problems found while opening that did not stop it (mismatched parent ids, fallbacks).
    pub warnings: Vec<String>,
    /// Set when the chain could not be followed and `OpenOptions::lenient` let it open anyway.
    pub chain_error: Option<String>,
    /// The top file's structures, computed on first use.
    top_regions: std::sync::OnceLock<Vec<Region>>,
}

pub(crate) fn open_layer(path: &Path, name: String, format: Option<Format>) -> Result<Layer> {
    open_layer_mode(path, name, format, false)
}

fn open_layer_mode(path: &Path, name: String, format: Option<Format>, write: bool) -> Result<Layer> {
    let file = HostFile::open_mode(path, name, write)?;
    if write {
        file.lock_for_write()?;
    }
    let format = match format {
        Some(f) => f,
        None => probe(&file)?,
    };
    let layer = format.driver().open(file)?;
    if write {
        // an external data file is written too: take its lock as well
        for f in layer.host_files().into_iter().skip(1) {
            f.lock_for_write()?;
        }
    }
    Ok(layer)
}

/// Parse a layer's file again (after its bytes were patched by hand), on a duplicate of its
/// descriptor so qemu's locks stay held.
pub(crate) fn reparse(layer: &Layer) -> Result<Layer> {
    let file = layer.file().dup()?;
    layer.format().driver().open(file)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub fn open_chain(path: &Path, opts: &OpenOptions) -> Result<Image> {
    let top_name = path.to_string_lossy().into_owned();
    let top = open_layer_mode(path, top_name.clone(), opts.format, opts.write)?;
    let mut warnings: Vec<String> = top.warnings().iter().map(|w| format!("{}: {}", top_name, w)).collect();
    let mut seen = HashSet::new();
    if let Some(id) = identity(path) {
        seen.insert(id);
    }
    let mut layers = vec![LayerInfo { name: top_name, layer: top, named_as: None }];
    let mut chain_error = None;
    if !opts.no_backing {
        if let Err(e) = follow(&mut layers, &mut seen, &mut warnings) {
            if opts.lenient {
                chain_error = Some(e.to_string());
            } else {
                return Err(e);
            }
        }
    }
    Ok(Image { layers, warnings, chain_error, top_regions: std::sync::OnceLock::new() })
}

fn follow(layers: &mut Vec<LayerInfo>, seen: &mut HashSet<(u64, u64)>, warnings: &mut Vec<String>) -> Result<()> {
    loop {
        let last = layers.last().expect("chain has a top");
        let Some(backing) = last.layer.backing() else { return Ok(()) };
        if layers.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::Chain(format!("backing chain deeper than {} files", MAX_CHAIN_DEPTH)));
        }
        let child_name = last.name.clone();
        let found = backing
            .candidates
            .iter()
            .map(|c| combine_path(&child_name, c))
            .find(|p| Path::new(p).exists());
        let Some(name) = found else {
            return Err(Error::Chain(format!(
                "{}: backing file '{}' not found{}",
                child_name,
                backing.name,
                if backing.candidates.len() > 1 {
                    format!(" (tried {})", backing.candidates.join(", "))
                } else {
                    String::new()
                }
            )));
        };
        let path = Path::new(&name);
        if let Some(id) = identity(path) {
            if !seen.insert(id) {
                return Err(Error::Chain(format!(
                    "{}: backing file '{}' makes a loop in the backing chain",
                    child_name, name
                )));
            }
        }
        let layer = open_layer(path, name.clone(), backing.format)
            .map_err(|e| Error::Chain(format!("{}: backing file: {}", child_name, e)))?;
        warnings.extend(layer.warnings().iter().map(|w| format!("{}: {}", name, w)));
        if let Some(w) = last.layer.check_parent(&*layer) {
            warnings.push(format!("{}: {}", child_name, w));
        }
        layers.push(LayerInfo { name, layer, named_as: Some(backing.name) });
    }
}

impl Image {
    pub fn top(&self) -> &Layer {
        &self.layers[0].layer
    }

    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }

    pub fn format(&self) -> Format {
        self.top().format()
    }

    /// The chain's answer for guest bytes from `virt`, for a run of at most `max` bytes, with
    /// the same layering rules as qemu's block status: a layer that does not hold a range
    /// passes it to the one below; a range beyond the end of the layer below reads as zero.
    pub fn resolve(&self, virt: u64, max: u64) -> Result<Extent> {
        resolve_in(&self.layers, virt, max)
    }

    /// Every extent of `[virt, virt+len)` in order, as the chain resolves them.
    pub fn extents(&self, virt: u64, len: u64) -> Result<Vec<Extent>> {
        let end = virt.saturating_add(len).min(self.virtual_size());
        let mut out = Vec::new();
        let mut pos = virt;
        while pos < end {
            let e = self.resolve(pos, end - pos)?;
            pos += e.len;
            out.push(e);
        }
        Ok(out)
    }

    /// Read guest bytes through the chain.
    pub fn read(&self, virt: u64, buf: &mut [u8]) -> Result<()> {
        read_in(&self.layers, virt, buf)
    }

    /// Read the bytes of one resolved extent (or its first `buf.len()` bytes).
    pub fn read_extent(&self, e: &Extent, buf: &mut [u8]) -> Result<()> {
        read_extent_in(&self.layers, e, buf)
    }

    /// Read host bytes of layer `layer` (file space), zero past the end.
    pub fn read_host(&self, layer: usize, off: u64, buf: &mut [u8]) -> Result<()> {
        let l = self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("no layer {}", layer)))?;
        let f = l.layer.file();
        if off.checked_add(buf.len() as u64).is_none_or(|e| e > f.len()) {
            return Err(Error::Invalid(format!(
                "read of 0x{:x} bytes at file offset 0x{:x} goes past the end of {} (0x{:x})",
                buf.len(),
                off,
                l.name,
                f.len()
            )));
        }
        f.read_zero_fill(off, buf)
    }

    /// The structure of layer `layer`'s image file that holds host offset `off`: metadata
    /// first, then (qcow2) the data cluster mapped there; `free` where nothing claims it.
    pub fn locate_host(&self, layer: usize, off: u64) -> Result<Region> {
        let l = &self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("no layer {}", layer)))?.layer;
        let len = l.file().len();
        if off >= len {
            return Err(Error::Invalid(format!("file offset 0x{:x} is past the end of the file (0x{:x})", off, len)));
        }
        let owned;
        let regions: &[Region] = if layer == 0 {
            self.top_regions.get_or_init(|| l.regions())
        } else {
            owned = l.regions();
            &owned
        };
        // regions are sorted by start and do not nest: the last one starting at or before off
        let i = regions.partition_point(|r| r.start <= off);
        if let Some(r) = regions[..i].iter().rev().take(8).find(|r| r.contains(off)) {
            return Ok(r.clone());
        }
        if let Some(r) = l.data_region_at(off)? {
            return Ok(r);
        }
        let start = regions[..i].iter().map(|r| r.start + r.len).filter(|&e| e <= off).max().unwrap_or(0);
        let end = regions.get(i).map(|r| r.start).unwrap_or(len);
        Ok(Region::new(start, end - start, "free", "unused space"))
    }

    /// The file name qemu prints for the host file of an extent.
    pub fn host_name(&self, e: &Extent) -> Option<&str> {
        let (id, _) = e.host_at(0)?;
        Some(self.layers[e.depth].layer.host(id)?.name.as_str())
    }

    /// Forget what was computed from the top file (after a write).
    pub fn invalidate(&mut self) {
        self.top_regions = std::sync::OnceLock::new();
    }

    /// Trim an extent to start `delta` bytes later.
    pub fn advance(e: &Extent, delta: u64) -> Extent {
        let le = skip(LayerExtent { len: e.len, kind: e.kind }, delta);
        Extent { virt: e.virt + delta, len: le.len, depth: e.depth, kind: le.kind }
    }
}

pub fn resolve_in(layers: &[LayerInfo], virt: u64, max: u64) -> Result<Extent> {
    let size = layers[0].layer.virtual_size();
    if virt >= size || max == 0 {
        return Err(Error::Invalid(format!("guest offset 0x{:x} is past the end of the disk (0x{:x})", virt, size)));
    }
    let mut len = max.min(size - virt);
    let mut depth = 0;
    loop {
        let layer = &layers[depth].layer;
        let lsize = layer.virtual_size();
        let ext = if virt >= lsize {
            LayerExtent { len, kind: LayerKind::Unallocated { host: None } }
        } else {
            layer.status(virt, len.min(lsize - virt))?
        };
        debug_assert!(ext.len > 0 && ext.len <= len);
        match ext.kind {
            LayerKind::Unallocated { .. } if depth + 1 < layers.len() => {
                if virt >= layers[depth + 1].layer.virtual_size() {
                    return Ok(Extent { virt, len: ext.len, depth, kind: ext.kind });
                }
                len = ext.len;
                depth += 1;
            }
            _ => return Ok(Extent { virt, len: ext.len, depth, kind: ext.kind }),
        }
    }
}


/// Read guest bytes through a chain of layers.
pub fn read_in(layers: &[LayerInfo], virt: u64, buf: &mut [u8]) -> Result<()> {
    let size = layers[0].layer.virtual_size();
    let end = virt.checked_add(buf.len() as u64).filter(|&e| e <= size).ok_or_else(|| {
        Error::Invalid(format!(
            "read of 0x{:x} bytes at 0x{:x} goes past the end of the disk (0x{:x})",
            buf.len(),
            virt,
            size
        ))
    })?;
    if let Some(l) = layers.iter().find(|l| l.layer.encrypted()) {
        return Err(Error::Unsupported(format!(
            "{} is encrypted; vdiskview does not decrypt guest data (map, info and tables still work)",
            l.name
        )));
    }
    let mut pos = virt;
    while pos < end {
        let e = resolve_in(layers, pos, end - pos)?;
        let out = &mut buf[(pos - virt) as usize..(pos - virt + e.len) as usize];
        read_extent_in(layers, &e, out)?;
        pos += e.len;
    }
    Ok(())
}

/// Read the bytes of one resolved extent (or its first `buf.len()` bytes).
pub fn read_extent_in(layers: &[LayerInfo], e: &Extent, buf: &mut [u8]) -> Result<()> {
    let layer = &layers[e.depth].layer;
    match e.kind {
        LayerKind::Data { file, host, .. } => {
            let f = layer.host(file).ok_or_else(|| Error::corrupt("data in a missing file"))?;
            if host >= f.len() && !buf.is_empty() {
                // qemu reads zeros here; a data cluster wholly past the end is damage
                return Err(Error::corrupt(format!(
                    "{}: guest offset 0x{:x} maps to 0x{:x}, past the end of {} (0x{:x} bytes)",
                    layers[e.depth].name,
                    e.virt,
                    host,
                    f.name,
                    f.len()
                )));
            }
            f.read_zero_fill(host, buf)
        }
        LayerKind::Zero { .. } | LayerKind::Unallocated { .. } | LayerKind::ZeroData { .. } => {
            buf.fill(0);
            Ok(())
        }
        LayerKind::Compressed { host, csize, cluster_virt } => {
            layer.read_compressed(host, csize, cluster_virt, e.virt - cluster_virt, buf)
        }
        LayerKind::Opaque => Err(Error::Unsupported(format!(
            "{} is encrypted; vdiskview does not decrypt guest data",
            layers[e.depth].name
        ))),
    }
}


/// Read guest bytes as the layers below a writer see them: zero past their end or where
/// there is no layer at all. Copy-on-write fills partial clusters and sectors from here.
pub fn read_below(layers: &[LayerInfo], virt: u64, buf: &mut [u8]) -> Result<()> {
    buf.fill(0);
    let Some(first) = layers.first() else { return Ok(()) };
    let size = first.layer.virtual_size();
    if virt >= size {
        return Ok(());
    }
    let n = (size - virt).min(buf.len() as u64) as usize;
    read_in(layers, virt, &mut buf[..n])
}

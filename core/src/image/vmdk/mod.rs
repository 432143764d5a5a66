//! VMDK (VMware): monolithicSparse, monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs,
//! streamOptimized, and delta disks over their parent (`parentFileNameHint`).
//!
//! A layer is a descriptor (embedded in a sparse extent or a text file of its own) and the
//! extents it names, each a hosted sparse extent, a flat range of a file, or zeros. Extent
//! files other than the image are the layer's host files `HostFileId::Extent(i)`.

pub mod check;
pub mod descriptor;
pub mod sesparse;
pub mod sparse;
mod driver;
mod tables;
mod write;

pub use driver::DRIVER;

use std::path::Path;

use descriptor::{Descriptor, NO_PARENT_CID};
use sparse::{Grain, SparseExtent, SECTOR};

use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::{combine_path, Error, Result};

/// What an extent is made of.
pub enum ExtentKind {
    /// Guest bytes stored plainly from `offset` of the extent file (FLAT, VMFS).
    Flat { offset: u64 },
    /// A hosted sparse extent (`KDMV`).
    Sparse(Box<SparseExtent>),
    /// An ESXi seSparse extent (read-only).
    SeSparse(Box<sesparse::SeSparseExtent>),
    /// Reads as zero, stored nowhere.
    Zero,
}

pub struct Extent {
    /// The type as the descriptor names it ("" for a monolithic sparse file, as qemu prints).
    pub type_name: String,
    pub access: String,
    /// Where its bytes are (none for ZERO).
    pub file: Option<HostFileId>,
    /// The file name as the descriptor wrote it.
    pub desc_name: Option<String>,
    /// First guest byte and length in bytes.
    pub start: u64,
    pub size: u64,
    pub kind: ExtentKind,
}

impl Extent {
    pub fn is_flat(&self) -> bool {
        !matches!(self.kind, ExtentKind::Sparse(_) | ExtentKind::SeSparse(_))
    }
    /// The grain size of a sparse extent.
    pub fn grain(&self) -> Option<u64> {
        match &self.kind {
            ExtentKind::Sparse(s) => Some(s.grain),
            ExtentKind::SeSparse(s) => Some(s.grain),
            _ => None,
        }
    }
    pub fn compressed(&self) -> bool {
        self.sparse().is_some_and(|s| s.compressed)
    }
    pub fn sparse(&self) -> Option<&SparseExtent> {
        match &self.kind {
            ExtentKind::Sparse(s) => Some(s),
            _ => None,
        }
    }
}

pub struct Vmdk {
    pub file: HostFile,
    pub extent_files: Vec<HostFile>,
    pub desc: Descriptor,
    pub desc_text: String,
    /// Where the descriptor text is in the image file, and how long it may be.
    pub desc_at: Option<(u64, u64)>,
    pub create_type: String,
    pub cid: u32,
    pub parent_cid: u32,
    pub extents: Vec<Extent>,
    pub virtual_size: u64,
    pub warnings: Vec<String>,
    /// The CID was renewed by a write of this session.
    pub cid_updated: bool,
    /// The grains stored in the image file, by file offset (built on the first lookup).
    pub(crate) reverse: std::sync::OnceLock<Vec<driver::GrainAt>>,
}

fn read_text(file: &HostFile, off: u64, max: u64) -> Result<String> {
    let n = file.len().saturating_sub(off).min(max).min(descriptor::MAX_DESCRIPTOR);
    let mut b = vec![0u8; n as usize];
    file.read_exact_at(off, &mut b, "VMDK descriptor")?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Ok(String::from_utf8_lossy(&b[..end]).into_owned())
}

impl Vmdk {
    pub fn open(file: HostFile) -> Result<Vmdk> {
        if file.len() < 4 {
            return Err(Error::corrupt(format!("{}: file is too small to be a VMDK image", file.name)));
        }
        let mut magic = [0u8; 4];
        file.read_exact_at(0, &mut magic, "VMDK magic")?;
        if &magic == sparse::MAGIC || &magic == sparse::COWD_MAGIC {
            Self::open_monolithic(file)
        } else {
            Self::open_descriptor_file(file)
        }
    }

    fn open_monolithic(file: HostFile) -> Result<Vmdk> {
        let sp = SparseExtent::open(&file)?;
        let h = &sp.header;
        let mut warnings = sp.warnings.clone();
        // the embedded descriptor (qemu reads it at sector 1 whatever the header says)
        let (desc_off, desc_len) = if h.cowd {
            (0, 0)
        } else if h.desc_offset != 0 && h.desc_size != 0 {
            (h.desc_offset.saturating_mul(SECTOR), h.desc_size.saturating_mul(SECTOR))
        } else {
            (SECTOR, 20 * SECTOR)
        };
        let (desc_text, desc_at) = if desc_len == 0 {
            (String::new(), None)
        } else if desc_off < file.len() {
            (read_text(&file, desc_off, desc_len)?, Some((desc_off, desc_len.min(file.len() - desc_off))))
        } else {
            warnings.push(format!("embedded descriptor at 0x{:x} lies past the end of the file", desc_off));
            (String::new(), None)
        };
        let desc = match Descriptor::parse(&desc_text) {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("embedded descriptor: {}", e));
                Descriptor::default()
            }
        };
        let create_type = if sp.header.cowd {
            "vmfsSparse".to_string()
        } else if sp.compressed {
            "streamOptimized".to_string()
        } else {
            desc.create_type.clone().unwrap_or_else(|| "monolithicSparse".into())
        };
        let size = sp.capacity();
        let extent = Extent {
            type_name: String::new(),
            access: "RW".into(),
            file: Some(HostFileId::Image),
            desc_name: None,
            start: 0,
            size,
            kind: ExtentKind::Sparse(Box::new(sp)),
        };
        Ok(Vmdk {
            cid: desc.cid.unwrap_or(0),
            parent_cid: desc.parent_cid.unwrap_or(NO_PARENT_CID),
            file,
            extent_files: Vec::new(),
            desc,
            desc_text,
            desc_at,
            create_type,
            extents: vec![extent],
            virtual_size: size,
            warnings,
            cid_updated: false,
            reverse: std::sync::OnceLock::new(),
        })
    }

    fn open_descriptor_file(file: HostFile) -> Result<Vmdk> {
        let text = read_text(&file, 0, descriptor::MAX_DESCRIPTOR)?;
        let desc = Descriptor::parse(&text).map_err(|e| Error::corrupt(format!("{}: {}", file.name, e)))?;
        let Some(ct) = desc.create_type.clone() else {
            return Err(Error::corrupt(format!(
                "{}: not a VMDK image: neither a sparse extent ('KDMV') nor a descriptor with a createType",
                file.name
            )));
        };
        if desc.extents.is_empty() {
            return Err(Error::corrupt(format!("{}: the VMDK descriptor names no extents", file.name)));
        }
        let mut extent_files: Vec<HostFile> = Vec::new();
        let mut extents = Vec::new();
        let mut warnings = Vec::new();
        let mut start = 0u64;
        let mut create_type = ct;
        for line in &desc.extents {
            let size = line
                .sectors
                .checked_mul(SECTOR)
                .filter(|s| start.checked_add(*s).is_some_and(|e| e <= i64::MAX as u64))
                .ok_or_else(|| Error::corrupt(format!("{}: extent of {} sectors is too big", file.name, line.sectors)))?;
            if size == 0 {
                continue;
            }
            let mut open_file = |fname: &str| -> Result<HostFileId> {
                let name = combine_path(&file.name, fname);
                let f = HostFile::open_mode(Path::new(&name), name.clone(), file.writable())
                    .map_err(|e| Error::Chain(format!("{}: extent file: {}", file.name, e)))?;
                extent_files.push(f);
                Ok(HostFileId::Extent(extent_files.len() as u32 - 1))
            };
            let (id, kind) = match line.kind.as_str() {
                "FLAT" | "VMFS" | "VMFSRAW" | "VMFSRDM" => {
                    let id = open_file(line.file.as_deref().unwrap_or_default())?;
                    let offset = line
                        .offset
                        .checked_mul(SECTOR)
                        .filter(|o| o.checked_add(size).is_some_and(|e| e <= i64::MAX as u64))
                        .ok_or_else(|| Error::corrupt(format!("{}: flat extent offset of {} sectors is too big", file.name, line.offset)))?;
                    (Some(id), ExtentKind::Flat { offset })
                }
                "SPARSE" | "VMFSSPARSE" => {
                    let id = open_file(line.file.as_deref().unwrap_or_default())?;
                    let HostFileId::Extent(i) = id else { unreachable!() };
                    let f = &extent_files[i as usize];
                    let mut magic = [0u8; 4];
                    f.read_exact_at(0, &mut magic, "VMDK extent magic")?;
                    if &magic != sparse::MAGIC && &magic != sparse::COWD_MAGIC {
                        return Err(Error::unsupported(format!("{}: extent {} is neither a hosted sparse (KDMV) nor a VMFS sparse (COWD) extent", file.name, f.name)));
                    }
                    let sp = SparseExtent::open(f)?;
                    if sp.compressed {
                        create_type = "streamOptimized".into();
                    }
                    warnings.extend(sp.warnings.iter().map(|w| format!("{}: {}", f.name, w)));
                    if sp.capacity() != size {
                        warnings.push(format!(
                            "extent {} holds {} bytes but the descriptor gives it {}",
                            f.name,
                            sp.capacity(),
                            size
                        ));
                    }
                    (Some(id), ExtentKind::Sparse(Box::new(sp)))
                }
                "ZERO" => (None, ExtentKind::Zero),
                "SESPARSE" => {
                    let id = open_file(line.file.as_deref().unwrap_or_default())?;
                    let HostFileId::Extent(i) = id else { unreachable!() };
                    let se = sesparse::SeSparseExtent::open(&extent_files[i as usize])?;
                    (Some(id), ExtentKind::SeSparse(Box::new(se)))
                }
                t => return Err(Error::unsupported(format!("{}: unsupported VMDK extent type '{}'", file.name, t))),
            };
            extents.push(Extent {
                type_name: line.kind.clone(),
                access: line.access.clone(),
                file: id,
                desc_name: line.file.clone(),
                start,
                size,
                kind,
            });
            start += size;
        }
        if extents.is_empty() {
            return Err(Error::corrupt(format!("{}: the VMDK descriptor's extents are all empty", file.name)));
        }
        let desc_at = Some((0, file.len()));
        Ok(Vmdk {
            cid: desc.cid.unwrap_or(0),
            parent_cid: desc.parent_cid.unwrap_or(NO_PARENT_CID),
            file,
            extent_files,
            desc_text: text,
            desc,
            desc_at,
            create_type,
            extents,
            virtual_size: start,
            warnings,
            cid_updated: false,
            reverse: std::sync::OnceLock::new(),
        })
    }

    pub fn host_file(&self, id: HostFileId) -> Option<&HostFile> {
        match id {
            HostFileId::Image => Some(&self.file),
            HostFileId::Extent(i) => self.extent_files.get(i as usize),
            HostFileId::DataFile => None,
        }
    }

    /// The extent holding guest byte `virt`.
    pub fn extent_at(&self, virt: u64) -> Option<&Extent> {
        let i = self.extents.partition_point(|e| e.start + e.size <= virt);
        self.extents.get(i).filter(|e| virt >= e.start)
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        let e = self
            .extent_at(virt)
            .ok_or_else(|| Error::Invalid(format!("guest offset 0x{:x} is past the last extent", virt)))?;
        let rel = virt - e.start;
        let avail = (e.size - rel).min(max);
        match &e.kind {
            ExtentKind::Zero => Ok(LayerExtent { len: avail, kind: LayerKind::Zero { host: None } }),
            ExtentKind::Flat { offset } => {
                let id = e.file.expect("a flat extent has a file");
                let f = self.host_file(id).expect("extent file");
                let host = offset + rel;
                // qemu asks the file beneath (BDRV_BLOCK_RECURSE): holes are data reading zero
                let (data, len) = f.data_run(host, avail);
                let kind = if data {
                    LayerKind::Data { file: id, host, passthrough: true }
                } else {
                    LayerKind::ZeroData { file: id, host }
                };
                Ok(LayerExtent { len: len.max(1).min(avail), kind })
            }
            ExtentKind::SeSparse(se) => {
                let id = e.file.expect("a sparse extent has a file");
                let f = self.host_file(id).expect("extent file");
                let grain = se.grain;
                let in_grain = rel % grain;
                let (first, n) = se.lookup(f, rel)?;
                let len = (n * grain - in_grain).min(avail);
                let kind = match first {
                    Grain::Unallocated => LayerKind::Unallocated { host: None },
                    Grain::Zeroed => LayerKind::Zero { host: None },
                    Grain::At(at) => LayerKind::Data { file: id, host: at + in_grain, passthrough: false },
                };
                let len = extend_run(first, grain, in_grain, len, avail, |o| se.lookup(f, rel + o))?;
                Ok(LayerExtent { len, kind })
            }
            ExtentKind::Sparse(sp) => {
                let id = e.file.expect("a sparse extent has a file");
                let f = self.host_file(id).expect("extent file");
                let grain = sp.grain;
                let in_grain = rel % grain;
                let (first, n) = sp.lookup(f, rel)?;
                let len = (n * grain - in_grain).min(avail);
                let kind = match first {
                    Grain::Unallocated => LayerKind::Unallocated { host: None },
                    Grain::Zeroed => LayerKind::Zero { host: None },
                    Grain::At(at) if sp.compressed => {
                        let len = (grain - in_grain).min(avail);
                        let csize = if sp.markers { sp.marker(f, at).map(|(_, s)| s as u64 + 12).unwrap_or(0) } else { grain };
                        return Ok(LayerExtent {
                            len,
                            kind: LayerKind::Compressed { host: at, csize, cluster_virt: virt - in_grain },
                        });
                    }
                    Grain::At(at) => LayerKind::Data { file: id, host: at + in_grain, passthrough: false },
                };
                let len = extend_run(first, grain, in_grain, len, avail, |o| sp.lookup(f, rel + o))?;
                Ok(LayerExtent { len, kind })
            }
        }
    }

    /// Read from a compressed grain of the extent holding `cluster_virt`.
    pub fn read_compressed(&self, host: u64, cluster_virt: u64, delta: u64, buf: &mut [u8]) -> Result<()> {
        let e = self.extent_at(cluster_virt).ok_or_else(|| Error::corrupt("compressed grain outside every extent"))?;
        let sp = e.sparse().ok_or_else(|| Error::corrupt("compressed grain in a flat extent"))?;
        let f = self.host_file(e.file.expect("sparse extent file")).expect("extent file");
        let data = sp.inflate(f, host)?;
        let end = delta as usize + buf.len();
        if end > data.len() {
            return Err(Error::damaged(
                "grain",
                Some(host),
                format!("{}: compressed grain at 0x{:x} holds {} bytes, fewer than the {} needed", f.name, host, data.len(), end),
            ));
        }
        buf.copy_from_slice(&data[delta as usize..end]);
        Ok(())
    }

    pub fn parent_hint(&self) -> Option<&str> {
        self.desc.parent_hint.as_deref().filter(|p| !p.is_empty())
    }

    /// qemu's cluster size: the grain of the first extent when every extent is alike.
    pub fn cluster_size(&self) -> Option<u64> {
        let first = self.extents.first()?;
        let alike = self
            .extents
            .iter()
            .all(|e| e.is_flat() == first.is_flat() && e.compressed() == first.compressed() && e.grain() == first.grain());
        if !alike {
            return None;
        }
        first.grain()
    }
}

/// Extend a run of `len` bytes that starts `in_grain` into a grain saying `first` over the
/// following grains that say the same (data: contiguous in the file), up to `avail` bytes.
/// `lookup(offset)` gives the grain at `offset` bytes from the run's start and how many grains
/// from there say the same.
fn extend_run(first: Grain, grain: u64, in_grain: u64, mut len: u64, avail: u64, lookup: impl Fn(u64) -> Result<(Grain, u64)>) -> Result<u64> {
    while len < avail {
        let (g, n) = lookup(len)?;
        let same = match (first, g) {
            (Grain::At(a), Grain::At(b)) => b == a + in_grain + len,
            (a, b) => a == b,
        };
        if !same {
            break;
        }
        len = (len + n * grain).min(avail);
    }
    Ok(len)
}

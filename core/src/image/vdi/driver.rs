//! VDI behind the format-driver boundary: probing, and what the rest of vdiskview may ask of
//! an opened VDI (map, regions, info keys, tables, check). Writes are not supported yet.

use std::any::Any;
use std::io::Write;

use serde_json::json;

use super::header::{uuid, HEADER_SIZE, SIGNATURE};
use super::{is_allocated, Vdi};
use crate::image::bytes::le32;
use crate::image::check::CheckReport;
use crate::image::driver::{Format, FormatDriver, FormatLayer, LayerInfoKeys};
use crate::image::io::HostFile;
use crate::image::mapping::{HostFileId, LayerExtent};
use crate::image::region::Region;
use crate::image::Result;

pub struct Driver;
pub static DRIVER: Driver = Driver;

/// The data block stored at file offset `off`, as a region: the block map read backwards
/// (an index of (file block, disk block) built on first use).
fn data_region_at(v: &Vdi, off: u64) -> Option<Region> {
    let data = v.header.offset_data as u64;
    let bs = v.block_size();
    let len = v.file.len();
    if off < data || off >= len {
        return None;
    }
    let entry = (off - data) / bs;
    let rev = v.reverse.get_or_init(|| {
        let mut r: Vec<(u32, u32)> = v.bmap.iter().enumerate().filter(|(_, &e)| is_allocated(e)).map(|(i, &e)| (e, i as u32)).collect();
        r.sort_unstable();
        r
    });
    let i = rev.partition_point(|&(e, _)| (e as u64) < entry);
    // a damaged map may name a file block twice: the first disk block that names it
    let &(e, block) = rev.get(i).filter(|&&(e, _)| e as u64 == entry)?;
    let at = v.block_offset(e);
    let mut d = Region::new(at, bs.min(len - at), "data", format!("block {} data", block));
    d.virt = Some(block as u64 * bs);
    Some(d)
}

impl FormatDriver for Driver {
    fn name(&self) -> &'static str {
        "vdi"
    }
    fn qemu_name(&self) -> &'static str {
        "vdi"
    }
    /// The signature after the 64-byte text, as qemu probes.
    fn probe(&self, file: &HostFile) -> Result<bool> {
        if file.len() < 68 {
            return Ok(false);
        }
        let mut b = [0u8; 68];
        file.read_exact_at(0, &mut b, "VDI probe")?;
        Ok(le32(&b, 64) == SIGNATURE)
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        Ok(Box::new(Vdi::open(file)?))
    }
}

impl FormatLayer for Vdi {
    fn format(&self) -> Format {
        Format::Vdi
    }
    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Vdi::status(self, virt, max)
    }
    fn host(&self, id: HostFileId) -> Option<&HostFile> {
        (id == HostFileId::Image).then_some(&self.file)
    }
    fn cluster_size(&self) -> Option<u64> {
        Some(self.block_size())
    }
    fn unit_name(&self) -> &'static str {
        "block"
    }
    fn table_name(&self) -> &'static str {
        "Block map"
    }
    fn unit_is_block(&self) -> bool {
        true
    }
    fn zero_means_unallocated(&self) -> bool {
        true
    }
    fn regions(&self) -> Vec<Region> {
        regions(self)
    }
    fn data_region_at(&self, off: u64) -> Result<Option<Region>> {
        Ok(data_region_at(self, off))
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn info(&self, _name: &str) -> LayerInfoKeys {
        let h = &self.header;
        let mut k = LayerInfoKeys {
            extra: Some((
            "vdi",
            json!({
                "image-type": h.type_name(),
                "version": format!("{}.{}", h.version >> 16, h.version & 0xffff),
                "description": h.description,
                "block-map-offset": h.offset_bmap,
                "data-offset": h.offset_data,
                "disk-size": h.disk_size,
                "block-size": h.block_size,
                "block-extra": h.block_extra,
                "blocks-in-image": h.blocks_in_image,
                "blocks-allocated": h.blocks_allocated,
                "geometry": {"cylinders": h.cylinders, "heads": h.heads, "sectors": h.sectors, "sector-size": h.sector_size},
                "uuid-create": uuid(&h.uuid_create),
                "uuid-modify": uuid(&h.uuid_modify),
                "uuid-link": uuid(&h.uuid_link),
                "uuid-parent": uuid(&h.uuid_parent),
            }),
            )),
            ..Default::default()
        };
        k.extra_human = h
            .fields()
            .into_iter()
            .filter(|f| f.name != "Text" && !f.value.is_empty())
            .map(|f| format!("{}: {}", f.name, f.value))
            .chain(std::iter::once(format!("Allocated blocks: {} of {}", self.allocated_blocks(), self.bmap.len())))
            .collect();
        k
    }
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()> {
        super::tables::write_tables(out, self)
    }
    fn check(&self, name: &str) -> Result<CheckReport> {
        Ok(super::check::check(self, name))
    }
    fn write(&mut self, virt: u64, data: &[u8], _below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()> {
        Vdi::write(self, virt, data)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn regions(v: &Vdi) -> Vec<Region> {
    let h = &v.header;
    let mut out = Vec::new();
    let mut r = Region::new(0, HEADER_SIZE, "header", "VDI header");
    r.fields = h.fields();
    out.push(r);
    out.push(Region::new(h.offset_bmap as u64, (v.bmap.len() as u64 * 4).next_multiple_of(512), "block-map", "block map"));
    // the data blocks are found on demand (data_region_at)
    out.sort_by_key(|r| r.start);
    let mut kept: Vec<Region> = Vec::with_capacity(out.len());
    for r in out {
        if kept.last().is_some_and(|p: &Region| r.start < p.start + p.len) {
            continue;
        }
        kept.push(r);
    }
    kept
}

//! VHD behind the format-driver boundary: probing, and what the rest of vdiskview may ask of
//! an opened VHD (map, regions, info keys, tables, check, write, sector bitmaps).

use std::any::Any;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::{footer, Vhd, BAT_UNUSED};
use crate::image::check::CheckReport;
use crate::image::driver::{BackingRef, Format, FormatDriver, FormatLayer, LayerInfoKeys};
use crate::image::io::HostFile;
use crate::image::mapping::{HostFileId, LayerExtent};
use crate::image::region::{ascii, Region};
use crate::image::Result;

pub struct Driver;
pub static DRIVER: Driver = Driver;

impl FormatDriver for Driver {
    fn name(&self) -> &'static str {
        "vhd"
    }
    fn qemu_name(&self) -> &'static str {
        "vpc"
    }
    /// A footer at the end (512 or the old 511 bytes) or its copy at offset 0.
    fn probe(&self, file: &HostFile) -> Result<bool> {
        Ok(footer::find_cookie(file)?.is_some())
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        Ok(Box::new(Vhd::open(file)?))
    }
    /// A VHD is checked even when it is too damaged to open.
    fn check_file(&self, file: HostFile) -> Result<CheckReport> {
        Ok(super::check::check_file(file))
    }
}

impl FormatLayer for Vhd {
    fn format(&self) -> Format {
        Format::Vhd
    }
    fn virtual_size(&self) -> u64 {
        Vhd::virtual_size(self)
    }
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Vhd::status(self, virt, max)
    }
    fn host(&self, id: HostFileId) -> Option<&HostFile> {
        (id == HostFileId::Image).then_some(&self.file)
    }
    fn cluster_size(&self) -> Option<u64> {
        self.block_size()
    }
    fn unit_name(&self) -> &'static str {
        if self.block_size().is_some() {
            "block"
        } else {
            "MiB"
        }
    }
    fn table_name(&self) -> &'static str {
        if self.block_size().is_some() {
            "BAT"
        } else {
            "Map"
        }
    }
    fn unit_is_block(&self) -> bool {
        true
    }
    fn backing(&self) -> Option<BackingRef> {
        self.parent_ref()
    }
    fn regions(&self) -> Vec<Region> {
        Vhd::regions(self)
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn zero_means_unallocated(&self) -> bool {
        true
    }
    fn check_parent(&self, parent: &dyn FormatLayer) -> Option<String> {
        let parent = parent.as_any().downcast_ref::<Vhd>()?;
        Vhd::check_parent(self, parent)
    }
    fn info(&self, _name: &str) -> LayerInfoKeys {
        let mut k = LayerInfoKeys::default();
        // qemu does not follow a differencing disk's parent; we do, and say which it is
        if let Some(p) = self.parent_ref() {
            k.backing_filename = Some(p.name);
            k.backing_format = Some("vpc".into());
            k.backing_full_from_chain = true;
        }
        k.extra = Some(("vhd", vhd_json(self)));
        k.extra_human = human_lines(self);
        k
    }
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()> {
        super::tables::write_tables(out, self)
    }
    fn check(&self, _name: &str) -> Result<CheckReport> {
        Ok(super::check::check(&self.file, Some(self)))
    }
    fn write(&mut self, virt: u64, data: &[u8], below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()> {
        Vhd::write(self, virt, data, below)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn allocated_blocks(v: &Vhd) -> usize {
    v.bat.iter().take(v.block_count() as usize).filter(|&&e| e != BAT_UNUSED).count()
}

/// `info --output json`'s `vdiskview.layers[i].vhd`.
fn vhd_json(v: &Vhd) -> Value {
    let f = &v.footer;
    let mut m = Map::new();
    m.insert("disk-type".into(), json!(f.disk_type_name()));
    m.insert("current-size".into(), json!(f.current_size));
    m.insert("original-size".into(), json!(f.original_size));
    m.insert("geometry".into(), json!({"cylinders": f.cylinders, "heads": f.heads, "sectors": f.sectors}));
    m.insert("creator-application".into(), json!(ascii(&f.creator_app)));
    m.insert("unique-id".into(), json!(footer::uuid(&f.unique_id)));
    m.insert("footer-checksum-ok".into(), json!(f.checksum_ok()));
    if let Some(h) = &v.header {
        m.insert("block-size".into(), json!(h.block_size));
        m.insert("max-table-entries".into(), json!(h.max_table_entries));
        m.insert("table-offset".into(), json!(h.table_offset));
        m.insert("header-checksum-ok".into(), json!(h.checksum_ok()));
        m.insert("allocated-blocks".into(), json!(allocated_blocks(v)));
        if v.is_differencing() {
            m.insert("parent-name".into(), json!(h.parent_name));
            m.insert("parent-unique-id".into(), json!(footer::uuid(&h.parent_unique_id)));
            let locs: Vec<Value> = h
                .locators
                .iter()
                .map(|l| json!({"platform": ascii(&l.code), "path": l.path, "offset": l.data_offset, "length": l.data_len}))
                .collect();
            m.insert("parent-locators".into(), json!(locs));
        }
    }
    Value::Object(m)
}

/// `info`'s "VHD:" section: every footer and header field with a value.
fn human_lines(v: &Vhd) -> Vec<String> {
    let mut s = Vec::new();
    for f in v.footer.fields() {
        if !f.value.is_empty() {
            s.push(format!("{}: {}", f.name, f.value));
        }
    }
    if let Some(h) = &v.header {
        for f in h.fields() {
            if f.value.is_empty() || f.value == "unused" {
                continue;
            }
            if !v.is_differencing() && f.name.starts_with("Parent") {
                continue;
            }
            s.push(format!("{}: {}", f.name, f.value));
        }
        s.push(format!("Allocated blocks: {} of {}", allocated_blocks(v), v.block_count()));
    }
    s
}

//! VHDX behind the format-driver boundary: probing, and what the rest of vdiskview may ask
//! of an opened VHDX (map, regions, info keys, tables, check, write).

use std::any::Any;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::{bat, guid_str, header, Vhdx};
use crate::image::check::{CheckReport, RepairMode, RepairReport};
use crate::image::driver::{BackingRef, Format, FormatDriver, FormatLayer, LayerInfoKeys};
use crate::image::io::HostFile;
use crate::image::mapping::{HostFileId, LayerExtent};
use crate::image::region::{human_size, Region};
use crate::image::Result;

pub struct Driver;
pub static DRIVER: Driver = Driver;

impl FormatDriver for Driver {
    fn name(&self) -> &'static str {
        "vhdx"
    }
    fn qemu_name(&self) -> &'static str {
        "vhdx"
    }
    /// The file type identifier's signature at offset 0.
    fn probe(&self, file: &HostFile) -> Result<bool> {
        if file.len() < 8 {
            return Ok(false);
        }
        let mut b = [0u8; 8];
        file.read_exact_at(0, &mut b, "VHDX signature")?;
        Ok(&b == header::FILE_SIGNATURE)
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        Ok(Box::new(Vhdx::open(file)?))
    }
    /// A VHDX is checked even when it is too damaged to open.
    fn check_file(&self, file: HostFile) -> Result<CheckReport> {
        Ok(super::check::check_file(file))
    }
}

impl FormatLayer for Vhdx {
    fn format(&self) -> Format {
        self.format
    }
    fn virtual_size(&self) -> u64 {
        Vhdx::virtual_size(self)
    }
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Vhdx::status(self, virt, max)
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
        "BAT"
    }
    fn unit_is_block(&self) -> bool {
        true
    }
    fn backing(&self) -> Option<BackingRef> {
        self.parent_ref()
    }
    fn regions(&self) -> Vec<Region> {
        Vhdx::regions(self)
    }
    fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        w.extend(self.meta.problems.iter().cloned());
        w
    }
    fn zero_means_unallocated(&self) -> bool {
        true
    }
    fn check_parent(&self, parent: &dyn FormatLayer) -> Option<String> {
        let parent = parent.as_any().downcast_ref::<Vhdx>()?;
        Vhdx::check_parent(self, parent)
    }
    fn info(&self, _name: &str) -> LayerInfoKeys {
        let mut k = LayerInfoKeys::default();
        // qemu prints no format-specific block for vhdx; it does not open differencing
        // disks, we do and say which parent it is
        if let Some(p) = self.parent_ref() {
            k.backing_filename = Some(p.name);
            k.backing_format = Some("vhdx".into());
            k.backing_full_from_chain = true;
        }
        k.extra = Some(("vhdx", vhdx_json(self)));
        k.extra_human = human_lines(self);
        k
    }
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()> {
        super::tables::write_tables(out, self)
    }
    fn check(&self, _name: &str) -> Result<CheckReport> {
        Ok(super::check::check(&self.file, Some(self)))
    }
    /// qemu-img check -r replays a pending log (any mode: qemu replays when it opens the
    /// image for writing); the BAT and metadata need no other repair here.
    fn repair(&mut self, name: &str, _mode: RepairMode) -> Result<RepairReport> {
        let lines = self.repair_log()?;
        let after = super::check::check(&self.file, Some(self));
        let _ = name;
        Ok(RepairReport { leaks_fixed: 0, corruptions_fixed: if lines.is_empty() { 0 } else { 1 }, lines, after })
    }
    fn write(&mut self, virt: u64, data: &[u8], below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()> {
        Vhdx::write(self, virt, data, below)
    }
    fn flush(&mut self) -> Result<()> {
        Vhdx::flush(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub fn disk_type(v: &Vhdx) -> &'static str {
    if v.is_differencing() {
        "differencing"
    } else if v.is_fixed() {
        "fixed"
    } else {
        "dynamic"
    }
}

/// Payload blocks by state.
pub fn block_counts(v: &Vhdx) -> Map<String, Value> {
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for b in 0..v.geo.data_blocks {
        *counts.entry(bat::payload_state_name(v.payload(b).state())).or_default() += 1;
    }
    counts.into_iter().map(|(k, n)| (k.to_string(), json!(n))).collect()
}

/// `info --output json`'s `vdiskview.layers[i].vhdx`.
fn vhdx_json(v: &Vhdx) -> Value {
    let h = v.header();
    let m = &v.meta;
    let mut o = Map::new();
    o.insert("disk-type".into(), json!(disk_type(v)));
    o.insert("creator".into(), json!(v.ident.creator));
    o.insert("block-size".into(), json!(m.block_size));
    o.insert("logical-sector-size".into(), json!(m.logical_sector_size));
    o.insert("physical-sector-size".into(), json!(m.physical_sector_size));
    o.insert("virtual-disk-id".into(), json!(guid_str(&m.disk_id)));
    o.insert("leave-blocks-allocated".into(), json!(m.leave_blocks_allocated));
    o.insert("has-parent".into(), json!(m.has_parent));
    o.insert("chunk-ratio".into(), json!(v.geo.chunk_ratio));
    o.insert("current-header".into(), json!(v.current + 1));
    o.insert("sequence-number".into(), json!(h.sequence_number));
    o.insert("file-write-guid".into(), json!(guid_str(&h.file_write_guid)));
    o.insert("data-write-guid".into(), json!(guid_str(&h.data_write_guid)));
    o.insert("log-guid".into(), json!(guid_str(&h.log_guid)));
    o.insert("log-offset".into(), json!(h.log_offset));
    o.insert("log-length".into(), json!(h.log_length));
    o.insert("log-replayed".into(), json!(v.log.replayed));
    o.insert("bat-offset".into(), json!(v.bat_offset));
    o.insert("bat-entries".into(), json!(v.bat.len()));
    o.insert("metadata-offset".into(), json!(m.offset));
    o.insert("blocks".into(), Value::Object(block_counts(v)));
    if let Some(p) = &m.parent_locator {
        let kv: Map<String, Value> = p.entries.iter().map(|(k, val)| (k.clone(), json!(val))).collect();
        o.insert("parent-locator".into(), Value::Object(kv));
    }
    Value::Object(o)
}

/// `info`'s "VHDX:" section.
fn human_lines(v: &Vhdx) -> Vec<String> {
    let h = v.header();
    let m = &v.meta;
    let mut s = vec![
        format!("Disk type: {}", disk_type(v)),
        format!("Creator: {}", v.ident.creator),
        format!("Block size: {} ({})", m.block_size, human_size(m.block_size as u64)),
        format!("Logical sector size: {}", m.logical_sector_size),
        format!("Physical sector size: {}", m.physical_sector_size),
        format!("Virtual disk id: {}", guid_str(&m.disk_id)),
        format!("Current header: {} (sequence {})", v.current + 1, h.sequence_number),
        format!("Log GUID: {}{}", guid_str(&h.log_guid), if v.log.replayed { " (replayed in memory)" } else { "" }),
        format!("BAT: 0x{:x}, {} entries, chunk ratio {}", v.bat_offset, v.bat.len(), v.geo.chunk_ratio),
    ];
    let counts: Vec<String> = block_counts(v).iter().map(|(k, n)| format!("{} {}", n, k)).collect();
    s.push(format!("Blocks: {}", counts.join(", ")));
    if let Some(p) = &m.parent_locator {
        for (k, val) in &p.entries {
            s.push(format!("Parent {}: {}", k, val));
        }
    }
    s
}

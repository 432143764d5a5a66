//! QCOW2 behind the format-driver boundary: probing, and what the rest of vdiskview may ask
//! of an opened qcow2 (map, regions, info keys, tables, check, write, snapshots).

use std::any::Any;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::header::{AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::snapshot::Snapshot;
use super::Qcow2;
use crate::image::check::CheckReport;
use crate::image::driver::{BackingRef, Format, FormatDriver, FormatLayer, LayerInfoKeys, Progress};
use crate::image::io::HostFile;
use crate::image::mapping::{HostFileId, LayerExtent};
use crate::image::region::{human_size, Region};
use crate::image::Result;

pub struct Driver;
pub static DRIVER: Driver = Driver;

impl FormatDriver for Driver {
    fn name(&self) -> &'static str {
        "qcow2"
    }
    fn qemu_name(&self) -> &'static str {
        "qcow2"
    }
    fn probe(&self, file: &HostFile) -> Result<bool> {
        if file.len() < 4 {
            return Ok(false);
        }
        let mut magic = [0u8; 4];
        file.read_exact_at(0, &mut magic, "magic")?;
        Ok(&magic == b"QFI\xfb")
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        Ok(Box::new(Qcow2::open(file)?))
    }
}

impl FormatLayer for Qcow2 {
    fn format(&self) -> Format {
        Format::Qcow2
    }
    fn virtual_size(&self) -> u64 {
        Qcow2::virtual_size(self)
    }
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Qcow2::status(self, virt, max)
    }
    fn host(&self, id: HostFileId) -> Option<&HostFile> {
        match id {
            HostFileId::Image => Some(&self.file),
            HostFileId::DataFile => self.data_file.as_ref(),
            HostFileId::Extent(_) => None,
        }
    }
    fn cluster_size(&self) -> Option<u64> {
        Some(Qcow2::cluster_size(self))
    }
    fn unit_name(&self) -> &'static str {
        "cluster"
    }
    fn table_name(&self) -> &'static str {
        "L2"
    }
    fn backing(&self) -> Option<BackingRef> {
        self.backing_ref()
    }
    fn regions(&self) -> Vec<Region> {
        Qcow2::regions(self)
    }
    fn data_region_at(&self, off: u64) -> Result<Option<Region>> {
        self.data_at(off, HostFileId::Image)
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn encrypted(&self) -> bool {
        Qcow2::encrypted(self)
    }
    fn read_compressed(&self, host: u64, csize: u64, cluster_virt: u64, delta: u64, buf: &mut [u8]) -> Result<()> {
        Qcow2::read_compressed(self, host, csize, cluster_virt, delta, buf)
    }
    /// A data cluster whose L2 entry lacks OFLAG_COPIED: its refcount is above one, shared
    /// with a snapshot.
    fn shared_with_snapshot(&self, virt: u64) -> Result<bool> {
        if self.geo.has_data_file {
            return Ok(false);
        }
        Ok(self.l2_entry(virt)?.is_some_and(|e| {
            e.entry & super::cluster::OFLAG_COPIED == 0 && e.entry & super::cluster::L2E_OFFSET_MASK != 0
        }))
    }
    fn select_snapshot(&mut self, name: &str) -> Result<()> {
        Qcow2::select_snapshot(self, name)
    }
    fn info(&self, name: &str) -> LayerInfoKeys {
        info_keys(self, name)
    }
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()> {
        super::tables::write_tables(out, self)
    }
    fn check(&self, _name: &str) -> Result<CheckReport> {
        super::check::check(self)
    }
    fn check_with(&self, _name: &str, progress: Progress) -> Result<CheckReport> {
        Ok(super::check::walk_with(self, progress)?.0)
    }
    fn write(&mut self, virt: u64, data: &[u8], below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()> {
        Qcow2::write(self, virt, data, below)
    }
    fn flush(&mut self) -> Result<()> {
        Qcow2::flush(self)
    }
    fn repair(&mut self, _name: &str, mode: crate::image::check::RepairMode) -> Result<crate::image::check::RepairReport> {
        Qcow2::repair(self, mode)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn info_keys(q: &Qcow2, _name: &str) -> LayerInfoKeys {
    let mut k = LayerInfoKeys::default();
    let h = &q.header;
    if let Ok(sns) = q.snapshots() {
        if !sns.is_empty() {
            k.snapshots = Some(Value::Array(sns.iter().map(snapshot_json).collect()));
            k.human_after_header = format!("Snapshot list:\n{}", snapshot_table_text(&sns));
        }
    }
    k.dirty = h.incompatible & INCOMPAT_DIRTY != 0;
    k.encrypted = q.encrypted();
    let mut d = Map::new();
    if h.version == 2 {
        d.insert("compat".into(), json!("0.10"));
        d.insert("compression-type".into(), json!(h.compression_name()));
        d.insert("refcount-bits".into(), json!(h.refcount_bits()));
    } else {
        d.insert("compat".into(), json!("1.1"));
        d.insert("compression-type".into(), json!(h.compression_name()));
        d.insert("lazy-refcounts".into(), json!(h.compatible & COMPAT_LAZY_REFCOUNTS != 0));
        if let Ok(bms) = q.bitmaps() {
            if !bms.is_empty() {
                let list: Vec<Value> = bms
                    .iter()
                    .map(|b| json!({"flags": b.flag_names(), "name": b.name, "granularity": b.granularity()}))
                    .collect();
                d.insert("bitmaps".into(), json!(list));
            }
        }
        d.insert("refcount-bits".into(), json!(h.refcount_bits()));
        if let Some(df) = &h.data_file {
            d.insert("data-file".into(), json!(df));
            d.insert("data-file-raw".into(), json!(h.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0));
        }
        d.insert("corrupt".into(), json!(h.incompatible & INCOMPAT_CORRUPT != 0));
        d.insert("extended-l2".into(), json!(h.extended_l2()));
    }
    k.format_specific = Some(json!({ "type": "qcow2", "data": d }));
    if let Some(b) = &h.backing_file {
        k.backing_filename = Some(b.clone());
        k.backing_format = h.backing_format.clone();
    }
    // bitmap metadata qemu would refuse (the snapshot table's problems are among the
    // layer's warnings, as every header problem qemu refuses at open)
    if let Err(e) = q.bitmaps() {
        k.problems.push(format!("bitmaps: {}", e));
    }
    k
}

/// One entry of qemu-img info's `snapshots`, with qemu's keys (`icount` only when recorded).
pub fn snapshot_json(sn: &Snapshot) -> Value {
    let mut m = Map::new();
    if let Some(ic) = sn.icount {
        m.insert("icount".into(), json!(ic));
    }
    m.insert("vm-clock-nsec".into(), json!(sn.vm_clock_subsec()));
    m.insert("name".into(), json!(sn.name));
    m.insert("date-sec".into(), json!(sn.date_sec));
    m.insert("date-nsec".into(), json!(sn.date_nsec));
    m.insert("vm-clock-sec".into(), json!(sn.vm_clock_sec()));
    m.insert("id".into(), json!(sn.id));
    m.insert("vm-state-size".into(), json!(sn.vm_state_size));
    Value::Object(m)
}

/// qemu-img's snapshot list (dates in UTC, where qemu uses local time).
pub fn snapshot_table_text(sns: &[Snapshot]) -> String {
    let mut s = format!("{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n", "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT");
    for sn in sns {
        let secs = sn.vm_clock_sec();
        let clock = format!("{:04}:{:02}:{:02}.{:03}", secs / 3600, (secs / 60) % 60, secs % 60, sn.vm_clock_subsec() / 1_000_000);
        s += &format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            sn.id,
            sn.name,
            human_size(sn.vm_state_size),
            super::snapshot::utc(sn.date_sec as i64),
            clock,
            sn.icount.map(|i| i.to_string()).unwrap_or_default()
        );
    }
    s
}

//! Raw images: the guest disk is the file.

use std::any::Any;
use std::io::Write;

use super::driver::{Format, FormatDriver, FormatLayer, LayerInfoKeys};
use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::region::Region;
use super::Result;

pub struct Driver;
pub static DRIVER: Driver = Driver;

impl FormatDriver for Driver {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn qemu_name(&self) -> &'static str {
        "raw"
    }
    /// Anything is a raw image; probing asks the other formats first.
    fn probe(&self, _file: &HostFile) -> Result<bool> {
        Ok(true)
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        Ok(Box::new(Raw::open(file)))
    }
}

impl FormatLayer for Raw {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn virtual_size(&self) -> u64 {
        Raw::virtual_size(self)
    }
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Raw::status(self, virt, max)
    }
    fn host(&self, id: HostFileId) -> Option<&HostFile> {
        (id == HostFileId::Image).then_some(&self.file)
    }
    fn regions(&self) -> Vec<Region> {
        let mut d = Region::new(0, self.file.len(), "data", "disk data");
        d.virt = Some(0);
        vec![d]
    }
    fn info(&self, _name: &str) -> LayerInfoKeys {
        LayerInfoKeys::default()
    }
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "raw image: {} bytes, no metadata", self.file.len())
    }
    fn write(&mut self, virt: u64, data: &[u8], _below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()> {
        self.file.write_at(virt, data)?;
        self.file.sync_final()?;
        super::write::step("raw data");
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub struct Raw {
    pub file: HostFile,
}

impl Raw {
    pub fn open(file: HostFile) -> Raw {
        Raw { file }
    }

    pub fn virtual_size(&self) -> u64 {
        self.file.len()
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        Ok(passthrough_status(&self.file, virt, max, false))
    }
}

/// Status of a range stored 1:1 in a host file (raw, fixed VHD): data or hole, as the host
/// file's SEEK_DATA/SEEK_HOLE say. qemu reports a raw file's holes as zero, and a fixed VHD's
/// as data that reads zero (`hole_is_data`).
pub fn passthrough_status(file: &HostFile, host: u64, max: u64, hole_is_data: bool) -> LayerExtent {
    let (data, len) = file.data_run(host, max);
    let kind = if data {
        LayerKind::Data { file: HostFileId::Image, host, passthrough: true }
    } else if hole_is_data {
        LayerKind::ZeroData { file: HostFileId::Image, host }
    } else {
        LayerKind::Zero { host: Some((HostFileId::Image, host)) }
    };
    LayerExtent { len: len.max(1).min(max), kind }
}

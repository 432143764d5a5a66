//! Raw images: the guest disk is the file.

use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::Result;

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

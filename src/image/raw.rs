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
        Ok(passthrough_status(&self.file, virt, virt, max))
    }
}

/// Status of a range stored 1:1 in a host file (raw, fixed VHD): data or hole, as the host
/// file's SEEK_DATA/SEEK_HOLE say. qemu reports holes as zero with their offset.
pub fn passthrough_status(file: &HostFile, virt: u64, host: u64, max: u64) -> LayerExtent {
    let _ = virt;
    let (data, len) = file.data_run(host, max);
    let kind = if data {
        LayerKind::Data { file: HostFileId::Image, host, passthrough: true }
    } else {
        LayerKind::Zero { host: Some((HostFileId::Image, host)) }
    };
    LayerExtent { len: len.max(1).min(max), kind }
}

//! VDI (VirtualBox): static and dynamic images, version 1.1. A block map names, for each
//! block of the disk, the block in the file that holds it (0xffffffff: not allocated;
//! 0xfffffffe: discarded, reads as zero).

pub mod check;
pub mod header;
mod driver;
mod tables;
mod write;

pub use driver::DRIVER;

use header::{VdiHeader, HEADER_SIZE, SIGNATURE, TYPE_DYNAMIC, TYPE_STATIC, VERSION_1_1};

use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent, LayerKind};
use super::{Error, Result};

pub const UNALLOCATED: u32 = 0xffff_ffff;
pub const DISCARDED: u32 = 0xffff_fffe;
const SECTOR: u64 = 512;
/// qemu's limit on the block count (a 512 MiB block map).
const MAX_BLOCKS: u64 = 0x3fff_ffff / 4 * 4;

pub fn is_allocated(entry: u32) -> bool {
    entry < DISCARDED
}

pub struct Vdi {
    pub file: HostFile,
    pub header: VdiHeader,
    pub bmap: Vec<u32>,
    pub virtual_size: u64,
    pub warnings: Vec<String>,
    /// (file block, disk block) of every allocated block, sorted (built on first use).
    pub(crate) reverse: std::sync::OnceLock<Vec<(u32, u32)>>,
}

impl Vdi {
    pub fn open(file: HostFile) -> Result<Vdi> {
        let name = file.name.clone();
        if file.len() < HEADER_SIZE {
            return Err(Error::corrupt(format!("{}: file too short for a VDI header", name)));
        }
        let mut b = vec![0u8; HEADER_SIZE as usize];
        file.read_exact_at(0, &mut b, "VDI header")?;
        let h = VdiHeader::parse(&b);
        let unsupported = |what: String| Err(Error::unsupported(format!("{}: unsupported VDI image ({})", name, what)));
        if h.signature != SIGNATURE {
            return Err(Error::corrupt(format!("{}: not a VDI image: bad signature 0x{:08x}", name, h.signature)));
        }
        if h.version != VERSION_1_1 {
            return unsupported(format!("version {}.{}", h.version >> 16, h.version & 0xffff));
        }
        if h.image_type != TYPE_DYNAMIC && h.image_type != TYPE_STATIC {
            return unsupported(format!("image type {} ({})", h.image_type, h.type_name()));
        }
        if !(h.offset_bmap as u64).is_multiple_of(SECTOR) || !(h.offset_data as u64).is_multiple_of(SECTOR) {
            return unsupported("block map or data offset not sector aligned".into());
        }
        if h.sector_size as u64 != SECTOR {
            return unsupported(format!("sector size {} is not {}", h.sector_size, SECTOR));
        }
        let bs = h.block_size as u64;
        if bs < SECTOR || !bs.is_power_of_two() || bs > 1 << 28 {
            return unsupported(format!("block size {}", bs));
        }
        let disk_size = h.disk_size.next_multiple_of(SECTOR);
        if disk_size > h.blocks_in_image as u64 * bs {
            return unsupported("disk size is larger than blocks_in_image * block_size".into());
        }
        if h.uuid_link != [0; 16] {
            return unsupported("non-NULL link UUID".into());
        }
        if h.uuid_parent != [0; 16] {
            return unsupported("non-NULL parent UUID".into());
        }
        if h.blocks_in_image as u64 > MAX_BLOCKS {
            return unsupported(format!("too many blocks {}", h.blocks_in_image));
        }
        let bmap_bytes = h.blocks_in_image as u64 * 4;
        if (h.offset_bmap as u64).checked_add(bmap_bytes).is_none_or(|e| e > file.len()) {
            return Err(Error::corrupt(format!(
                "{}: block map at 0x{:x} ({} entries) lies past the end of the file (0x{:x} bytes)",
                name,
                h.offset_bmap,
                h.blocks_in_image,
                file.len()
            )));
        }
        let mut raw = vec![0u8; bmap_bytes as usize];
        file.read_exact_at(h.offset_bmap as u64, &mut raw, "VDI block map")?;
        let bmap = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut warnings = Vec::new();
        if !h.disk_size.is_multiple_of(SECTOR) {
            warnings.push(format!("odd disk size {} rounded up to {}", h.disk_size, disk_size));
        }
        Ok(Vdi { file, header: h, bmap, virtual_size: disk_size, warnings, reverse: std::sync::OnceLock::new() })
    }

    pub fn block_size(&self) -> u64 {
        self.header.block_size as u64
    }

    pub fn is_static(&self) -> bool {
        self.header.image_type == TYPE_STATIC
    }

    /// File offset of block `entry`'s data.
    pub fn block_offset(&self, entry: u32) -> u64 {
        self.header.offset_data as u64 + entry as u64 * self.block_size()
    }

    pub fn status(&self, virt: u64, max: u64) -> Result<LayerExtent> {
        let bs = self.block_size();
        let block = virt / bs;
        let in_block = virt % bs;
        let n = (bs - in_block).min(max);
        let entry = self.bmap.get(block as usize).copied().unwrap_or(UNALLOCATED);
        if !is_allocated(entry) {
            // qemu: not allocated reads as zero in this layer (VDI has no backing file)
            let mut len = n;
            let mut b = block + 1;
            while len < max && !is_allocated(self.bmap.get(b as usize).copied().unwrap_or(UNALLOCATED)) {
                len = (len + bs).min(max);
                b += 1;
            }
            return Ok(LayerExtent { len, kind: LayerKind::Zero { host: None } });
        }
        let host = self.block_offset(entry) + in_block;
        if self.is_static() {
            // qemu asks the file beneath (BDRV_BLOCK_RECURSE): holes are data reading zero
            let (data, len) = self.file.data_run(host, n);
            let kind = if data {
                LayerKind::Data { file: HostFileId::Image, host, passthrough: true }
            } else {
                LayerKind::ZeroData { file: HostFileId::Image, host }
            };
            return Ok(LayerExtent { len: len.max(1).min(n), kind });
        }
        // extend over blocks stored one after the other
        let mut len = n;
        let mut b = block + 1;
        while len < max {
            let next = self.bmap.get(b as usize).copied().unwrap_or(UNALLOCATED);
            if !is_allocated(next) || self.block_offset(next) != host + len {
                break;
            }
            len = (len + bs).min(max);
            b += 1;
        }
        Ok(LayerExtent { len, kind: LayerKind::Data { file: HostFileId::Image, host, passthrough: false } })
    }

    /// Blocks of the disk with data in the file.
    pub fn allocated_blocks(&self) -> usize {
        self.bmap.iter().filter(|&&e| is_allocated(e)).count()
    }
}

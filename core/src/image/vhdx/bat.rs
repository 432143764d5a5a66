//! The block allocation table: payload entries, with a sector-bitmap entry after every
//! `chunk_ratio` of them.

use super::metadata::Metadata;
use super::MIB;

pub const PAYLOAD_NOT_PRESENT: u64 = 0;
pub const PAYLOAD_UNDEFINED: u64 = 1;
pub const PAYLOAD_ZERO: u64 = 2;
pub const PAYLOAD_UNMAPPED: u64 = 3;
pub const PAYLOAD_FULLY_PRESENT: u64 = 6;
pub const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
pub const SB_NOT_PRESENT: u64 = 0;
pub const SB_PRESENT: u64 = 6;

/// One BAT entry: state in bits 0-2, file offset in MiB in bits 20-63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatEntry(pub u64);

impl BatEntry {
    pub fn state(self) -> u64 {
        self.0 & 7
    }
    pub fn offset(self) -> u64 {
        (self.0 >> 20) * MIB
    }
    pub fn reserved(self) -> u64 {
        (self.0 >> 3) & 0x1_ffff
    }
}

pub fn payload_state_name(s: u64) -> &'static str {
    match s {
        PAYLOAD_NOT_PRESENT => "NOT_PRESENT",
        PAYLOAD_UNDEFINED => "UNDEFINED",
        PAYLOAD_ZERO => "ZERO",
        PAYLOAD_UNMAPPED => "UNMAPPED",
        PAYLOAD_FULLY_PRESENT => "FULLY_PRESENT",
        PAYLOAD_PARTIALLY_PRESENT => "PARTIALLY_PRESENT",
        _ => "invalid",
    }
}

/// The shape of a disk's BAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u64,
    pub logical_sector_size: u64,
    pub chunk_ratio: u64,
    pub data_blocks: u64,
    pub differencing: bool,
}

impl Geometry {
    /// Validates what the BAT math depends on.
    pub fn new(m: &Metadata) -> Result<Geometry, String> {
        Geometry::from_parts(m.virtual_size, m.block_size as u64, m.logical_sector_size as u64, m.has_parent)
    }

    pub fn from_parts(vsize: u64, bs: u64, lss: u64, differencing: bool) -> Result<Geometry, String> {
        if !(MIB..=256 * MIB).contains(&bs) || !bs.is_power_of_two() {
            return Err(format!("invalid block size {} (a power of two from 1 MiB to 256 MiB)", bs));
        }
        if lss != 512 && lss != 4096 {
            return Err(format!("invalid logical sector size {} (512 or 4096)", lss));
        }
        if vsize == 0 || vsize > 64 << 40 || !vsize.is_multiple_of(lss) {
            return Err(format!("invalid virtual disk size {} (a multiple of the {}-byte sector, at most 64 TiB)", vsize, lss));
        }
        let chunk_ratio = (1u64 << 23) * lss / bs;
        Ok(Geometry { block_size: bs, logical_sector_size: lss, chunk_ratio, data_blocks: vsize.div_ceil(bs), differencing })
    }

    /// Sector-bitmap entries the BAT holds.
    pub fn bitmap_entries(&self) -> u64 {
        self.data_blocks.div_ceil(self.chunk_ratio)
    }

    /// Entries the BAT must hold.
    pub fn total_entries(&self) -> u64 {
        if self.differencing {
            self.bitmap_entries() * (self.chunk_ratio + 1)
        } else {
            self.data_blocks + (self.data_blocks - 1) / self.chunk_ratio
        }
    }

    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    pub fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    pub fn sectors_per_block(&self) -> u64 {
        self.block_size / self.logical_sector_size
    }

    /// What a BAT index holds: Ok(payload block) or Err(chunk of a sector bitmap).
    pub fn classify(&self, index: u64) -> std::result::Result<u64, u64> {
        let per = self.chunk_ratio + 1;
        if index % per == self.chunk_ratio {
            Err(index / per)
        } else {
            Ok(index / per * self.chunk_ratio + index % per)
        }
    }
}

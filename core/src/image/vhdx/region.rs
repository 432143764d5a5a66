//! The region table (two copies, 192 KiB and 256 KiB): where the BAT and the metadata are.

use super::log::{read_at, Overlay};
use super::{crc32c_without, guid, guid_at, guid_str, le32, le64, within, Fields, Guid, MIB, REGION_TABLE_SIZE};
use crate::image::io::HostFile;
use crate::image::region::Field;
use crate::image::{Error, Result};

pub const SIGNATURE: &[u8; 4] = b"regi";
pub const BAT_GUID: Guid = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
pub const METADATA_GUID: Guid = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
pub const MAX_ENTRIES: u32 = 2047;

#[derive(Clone, Debug)]
pub struct RegionEntry {
    pub guid: Guid,
    pub offset: u64,
    pub length: u32,
    pub required: bool,
}

impl RegionEntry {
    pub fn name(&self) -> String {
        if self.guid == BAT_GUID {
            "BAT".into()
        } else if self.guid == METADATA_GUID {
            "metadata".into()
        } else {
            format!("unknown region {}", guid_str(&self.guid))
        }
    }
}

#[derive(Clone, Debug)]
pub struct RegionTable {
    pub offset: u64,
    pub signature: [u8; 4],
    pub checksum: u32,
    pub computed_checksum: u32,
    pub entry_count: u32,
    pub entries: Vec<RegionEntry>,
}

impl RegionTable {
    pub fn read(file: &HostFile, overlay: &Overlay, offset: u64) -> Result<RegionTable> {
        let mut b = vec![0u8; REGION_TABLE_SIZE as usize];
        read_at(file, overlay, offset, &mut b, "VHDX region table")?;
        Ok(RegionTable::parse(offset, &b))
    }

    pub fn parse(offset: u64, b: &[u8]) -> RegionTable {
        let entry_count = le32(b, 8);
        let entries = (0..entry_count.min(MAX_ENTRIES) as usize)
            .map(|i| {
                let o = 16 + i * 32;
                RegionEntry { guid: guid_at(b, o), offset: le64(b, o + 16), length: le32(b, o + 24), required: le32(b, o + 28) & 1 != 0 }
            })
            .collect();
        RegionTable {
            offset,
            signature: b[..4].try_into().unwrap(),
            checksum: le32(b, 4),
            computed_checksum: crc32c_without(b, 4),
            entry_count,
            entries,
        }
    }

    pub fn is_valid(&self) -> bool {
        &self.signature == SIGNATURE && self.checksum == self.computed_checksum && self.entry_count <= MAX_ENTRIES
    }

    /// The BAT and metadata entries, checked against the file; unknown required regions
    /// are refused by name.
    pub fn known(&self, name: &str, file_len: u64) -> Result<(RegionEntry, RegionEntry)> {
        let (mut bat, mut meta) = (None, None);
        for e in &self.entries {
            if e.guid == BAT_GUID {
                bat = Some(e.clone());
            } else if e.guid == METADATA_GUID {
                meta = Some(e.clone());
            } else if e.required {
                return Err(Error::unsupported(format!("{}: the VHDX requires the {}, which is not supported", name, e.name())));
            } else {
                continue;
            }
            if e.offset % MIB != 0 || e.offset < MIB || e.length == 0 || !within(e.offset, e.length as u64, file_len) {
                return Err(Error::corrupt(format!(
                    "{}: the {} region at 0x{:x} ({} bytes) is misplaced or lies past the end of the file (0x{:x} bytes)",
                    name,
                    e.name(),
                    e.offset,
                    e.length,
                    file_len
                )));
            }
        }
        match (bat, meta) {
            (Some(b), Some(m)) => Ok((b, m)),
            (None, _) => Err(Error::corrupt(format!("{}: the region table has no BAT region", name))),
            (_, None) => Err(Error::corrupt(format!("{}: the region table has no metadata region", name))),
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Fields::new(self.offset);
        f.push(0, 4, "Signature", crate::image::region::ascii(&self.signature));
        let ok = if self.checksum == self.computed_checksum { "ok".into() } else { format!("bad, computed 0x{:08x}", self.computed_checksum) };
        f.push(4, 4, "Checksum", format!("0x{:08x} ({})", self.checksum, ok));
        f.push(8, 4, "Entry count", self.entry_count.to_string());
        for (i, e) in self.entries.iter().enumerate() {
            let o = 16 + i as u64 * 32;
            f.push(o, 16, format!("Entry {} GUID", i), format!("{} ({})", guid_str(&e.guid), e.name()));
            f.push(o + 16, 8, format!("Entry {} file offset", i), format!("0x{:x}", e.offset));
            f.push(o + 24, 4, format!("Entry {} length", i), format!("{} (0x{:x})", e.length, e.length));
            f.push(o + 28, 4, format!("Entry {} required", i), e.required.to_string());
        }
        f.list
    }
}

/// Why a region table is not valid, for messages.
pub fn describe_problem(t: &Result<RegionTable>, offset: u64) -> String {
    match t {
        Err(e) => format!("region table at 0x{:x} cannot be read: {}", offset, e),
        Ok(t) if &t.signature != SIGNATURE => {
            format!("region table at 0x{:x} has no 'regi' signature", offset)
        }
        Ok(t) if t.checksum != t.computed_checksum => format!(
            "region table at 0x{:x} has a bad checksum 0x{:08x}, computed 0x{:08x}",
            offset, t.checksum, t.computed_checksum
        ),
        Ok(t) if t.entry_count > MAX_ENTRIES => format!("region table at 0x{:x} has {} entries (at most {})", offset, t.entry_count, MAX_ENTRIES),
        Ok(_) => format!("region table at 0x{:x} is valid", offset),
    }
}

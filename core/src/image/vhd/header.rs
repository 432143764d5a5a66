//! The dynamic disk header (1024 bytes) and its parent locators.

use super::footer::{checksum, timestamp, uuid, version};
use crate::image::io::HostFile;
use crate::image::region::{ascii, Field, FieldReader};
use crate::image::{Error, Result};

pub const COOKIE: &[u8; 8] = b"cxsparse";
pub const HEADER_SIZE: u64 = 1024;
/// Parent locator data we are willing to read (paths are short; this bounds hostile lengths).
const MAX_LOCATOR_DATA: u32 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Locator {
    pub index: usize,
    pub code: [u8; 4],
    pub data_space: u32,
    pub data_len: u32,
    pub data_offset: u64,
    /// The decoded path, where the code names a path format we know and the bytes were readable.
    pub path: Option<String>,
}

/// The dynamic disk header's fields (spec: "Dynamic Disk Header Format"); the eight parent
/// locator entries of 24 bytes each start at `LOCATORS`.
pub mod field {
    use crate::image::region::FieldDef;
    pub const COOKIE: FieldDef = FieldDef::new(0, 8, "Cookie");
    pub const DATA_OFFSET: FieldDef = FieldDef::new(8, 8, "Data offset");
    pub const TABLE_OFFSET: FieldDef = FieldDef::new(16, 8, "Table offset");
    pub const VERSION: FieldDef = FieldDef::new(24, 4, "Header version");
    pub const MAX_TABLE_ENTRIES: FieldDef = FieldDef::new(28, 4, "Max table entries");
    pub const BLOCK_SIZE: FieldDef = FieldDef::new(32, 4, "Block size");
    pub const CHECKSUM: FieldDef = FieldDef::new(36, 4, "Checksum");
    pub const PARENT_UNIQUE_ID: FieldDef = FieldDef::new(40, 16, "Parent unique ID");
    pub const PARENT_TIMESTAMP: FieldDef = FieldDef::new(56, 4, "Parent time stamp");
    pub const RESERVED1: FieldDef = FieldDef::new(60, 4, "Reserved");
    pub const PARENT_NAME: FieldDef = FieldDef::new(64, 512, "Parent unicode name");
    pub const LOCATORS: FieldDef = FieldDef::new(576, 192, "Parent locators");
    pub const RESERVED2: FieldDef = FieldDef::new(768, 256, "Reserved");
    pub const LOCATOR_SIZE: usize = 24;
}

#[derive(Clone, Debug)]
pub struct DynHeader {
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub table_offset: u64,
    pub version: u32,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub checksum: u32,
    pub parent_unique_id: [u8; 16],
    pub parent_timestamp: u32,
    pub parent_name: String,
    pub locators: Vec<Locator>,
}

impl DynHeader {
    pub fn read(file: &HostFile, off: u64) -> Result<DynHeader> {
        let mut bytes = vec![0u8; HEADER_SIZE as usize];
        file.read_exact_at(off, &mut bytes, "VHD dynamic disk header")?;
        if &bytes[..8] != COOKIE {
            return Err(Error::corrupt(format!(
                "no dynamic disk header at 0x{:x} (cookie '{}', expected 'cxsparse')",
                off,
                ascii(&bytes[..8])
            )));
        }
        let r = FieldReader::new(off, &bytes);
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(r.raw(field::PARENT_UNIQUE_ID.off, 16));
        let name_units: Vec<u16> = r.raw(field::PARENT_NAME.off, field::PARENT_NAME.len).chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        let parent_name = utf16_string(&name_units);
        let mut locators = Vec::new();
        for i in 0..8 {
            let b = field::LOCATORS.off + i * field::LOCATOR_SIZE;
            let mut code = [0u8; 4];
            code.copy_from_slice(r.raw(b, 4));
            if code == [0; 4] {
                continue;
            }
            let mut loc = Locator {
                index: i,
                code,
                data_space: r.u32(b + 4),
                data_len: r.u32(b + 8),
                data_offset: r.u64(b + 16),
                path: None,
            };
            loc.path = read_locator_path(file, &loc);
            locators.push(loc);
        }
        Ok(DynHeader {
            offset: off,
            table_offset: r.u64(field::TABLE_OFFSET.off),
            version: r.u32(field::VERSION.off),
            max_table_entries: r.u32(field::MAX_TABLE_ENTRIES.off),
            block_size: r.u32(field::BLOCK_SIZE.off),
            checksum: r.u32(field::CHECKSUM.off),
            parent_unique_id,
            parent_timestamp: r.u32(field::PARENT_TIMESTAMP.off),
            parent_name,
            locators,
            bytes,
        })
    }

    pub fn computed_checksum(&self) -> u32 {
        checksum(&self.bytes, field::CHECKSUM.off)
    }

    pub fn checksum_ok(&self) -> bool {
        self.computed_checksum() == self.checksum
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut r = FieldReader::new(self.offset, &self.bytes);
        r.field(field::COOKIE, ascii(&self.bytes[..8]));
        r.field(field::DATA_OFFSET, format!("0x{:016x}", r.u64(field::DATA_OFFSET.off)));
        r.field(field::TABLE_OFFSET, format!("0x{:016x}", self.table_offset));
        r.field(field::VERSION, version(self.version));
        r.field(field::MAX_TABLE_ENTRIES, self.max_table_entries.to_string());
        r.field(field::BLOCK_SIZE, self.block_size.to_string());
        let verdict = if self.checksum_ok() {
            "ok".to_string()
        } else {
            format!("BAD, computed 0x{:08x}", self.computed_checksum())
        };
        r.field(field::CHECKSUM, format!("0x{:08x} ({})", self.checksum, verdict));
        r.field(field::PARENT_UNIQUE_ID, uuid(&self.parent_unique_id));
        r.field(field::PARENT_TIMESTAMP, timestamp(self.parent_timestamp));
        r.field(field::RESERVED1, String::new());
        r.field(field::PARENT_NAME, self.parent_name.clone());
        for i in 0..8 {
            let b = field::LOCATORS.off + i * field::LOCATOR_SIZE;
            let code = r.raw(b, 4);
            let value = match self.locators.iter().find(|l| l.index == i) {
                None => "unused".to_string(),
                Some(l) => format!(
                    "{} space {} len {} at 0x{:x}{}",
                    ascii(code),
                    l.data_space,
                    l.data_len,
                    l.data_offset,
                    l.path.as_ref().map(|p| format!(" -> {}", p)).unwrap_or_default()
                ),
            };
            r.push(b, field::LOCATOR_SIZE, &format!("Parent locator {}", i), value);
        }
        r.field(field::RESERVED2, String::new());
        r.fields
    }
}

fn utf16_string(units: &[u16]) -> String {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

/// Decode a locator's path: W2ru/W2ku/Wi2r/Wi2k hold UTF-16LE Windows paths; MacX a UTF-8
/// file URL. The result uses '/' separators.
fn read_locator_path(file: &HostFile, loc: &Locator) -> Option<String> {
    if loc.data_len == 0 || loc.data_len > MAX_LOCATOR_DATA {
        return None;
    }
    let mut buf = vec![0u8; loc.data_len as usize];
    file.read_exact_at(loc.data_offset, &mut buf, "parent locator data").ok()?;
    let s = match &loc.code {
        b"W2ru" | b"W2ku" | b"Wi2r" | b"Wi2k" => {
            let units: Vec<u16> = buf.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            utf16_string(&units).replace('\\', "/")
        }
        b"MacX" => {
            let s = String::from_utf8_lossy(&buf).trim_end_matches('\0').to_string();
            let s = s.strip_prefix("file://").unwrap_or(&s).to_string();
            let s = s.strip_prefix("localhost").unwrap_or(&s).to_string();
            percent_decode(&s)
        }
        _ => return None,
    };
    let s = s.strip_prefix("./").unwrap_or(&s).to_string();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

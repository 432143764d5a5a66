//! The file type identifier (offset 0) and the two headers (64 KiB and 128 KiB).

use super::{crc32c_without, guid_at, guid_str, le16, le32, le64, utf16, Fields, Guid, HEADER_SIZE};
use crate::image::io::HostFile;
use crate::image::region::Field;
use crate::image::Result;

pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";

pub struct FileIdentifier {
    pub signature: [u8; 8],
    /// The creator: UTF-16 text, 512 bytes.
    pub creator: String,
}

impl FileIdentifier {
    pub fn read(file: &HostFile) -> Result<FileIdentifier> {
        let mut b = [0u8; 520];
        file.read_exact_at(0, &mut b, "VHDX file type identifier")?;
        Ok(FileIdentifier { signature: b[..8].try_into().unwrap(), creator: utf16(&b[8..520]) })
    }

    pub fn signature_ok(&self) -> bool {
        &self.signature == FILE_SIGNATURE
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Fields::new(0);
        f.push(0, 8, "Signature", crate::image::region::ascii(&self.signature));
        f.push(8, 512, "Creator", self.creator.clone());
        f.list
    }
}

#[derive(Clone, Debug)]
pub struct Header {
    pub offset: u64,
    pub signature: [u8; 4],
    pub checksum: u32,
    pub computed_checksum: u32,
    pub sequence_number: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    pub fn read(file: &HostFile, offset: u64) -> Result<Header> {
        let mut b = vec![0u8; HEADER_SIZE as usize];
        file.read_exact_at(offset, &mut b, "VHDX header")?;
        Ok(Header::parse(offset, &b))
    }

    pub fn parse(offset: u64, b: &[u8]) -> Header {
        Header {
            offset,
            signature: b[..4].try_into().unwrap(),
            checksum: le32(b, 4),
            computed_checksum: crc32c_without(&b[..HEADER_SIZE as usize], 4),
            sequence_number: le64(b, 8),
            file_write_guid: guid_at(b, 16),
            data_write_guid: guid_at(b, 32),
            log_guid: guid_at(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        }
    }

    pub fn signature_ok(&self) -> bool {
        &self.signature == HEADER_SIGNATURE
    }

    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum
    }

    pub fn is_valid(&self) -> bool {
        self.signature_ok() && self.checksum_ok()
    }

    pub fn log_active(&self) -> bool {
        self.log_guid != [0u8; 16]
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Fields::new(self.offset);
        f.push(0, 4, "Signature", crate::image::region::ascii(&self.signature));
        let ok = if self.checksum_ok() { "ok".to_string() } else { format!("bad, computed 0x{:08x}", self.computed_checksum) };
        f.push(4, 4, "Checksum", format!("0x{:08x} ({})", self.checksum, ok));
        f.push(8, 8, "Sequence number", self.sequence_number.to_string());
        f.push(16, 16, "File write GUID", guid_str(&self.file_write_guid));
        f.push(32, 16, "Data write GUID", guid_str(&self.data_write_guid));
        f.push(48, 16, "Log GUID", guid_str(&self.log_guid));
        f.push(64, 2, "Log version", self.log_version.to_string());
        f.push(66, 2, "Version", self.version.to_string());
        f.push(68, 4, "Log length", format!("{} (0x{:x})", self.log_length, self.log_length));
        f.push(72, 8, "Log offset", format!("0x{:x}", self.log_offset));
        f.list
    }
}

/// The current header: the valid one with the higher sequence number.
pub fn pick_current(h: &[Option<Header>; 2]) -> Option<usize> {
    let ok = |i: usize| h[i].as_ref().filter(|h| h.is_valid());
    match (ok(0), ok(1)) {
        (Some(a), Some(b)) => Some(if b.sequence_number > a.sequence_number { 1 } else { 0 }),
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (None, None) => None,
    }
}

/// Why a header is not valid, for messages.
pub fn describe_problem(h: &Option<Header>, offset: u64) -> String {
    match h {
        None => format!("header at 0x{:x} cannot be read", offset),
        Some(h) if !h.signature_ok() => {
            format!("header at 0x{:x} has no 'head' signature ({})", offset, crate::image::region::ascii(&h.signature))
        }
        Some(h) if !h.checksum_ok() => {
            format!("header at 0x{:x} has a bad checksum 0x{:08x}, computed 0x{:08x}", offset, h.checksum, h.computed_checksum)
        }
        Some(_) => format!("header at 0x{:x} is valid", offset),
    }
}

//! The VHD footer (512 bytes at the end, copied at offset 0 in dynamic images).

use crate::image::io::HostFile;
use crate::image::region::{ascii, hex_bytes, Field, FieldReader};
use crate::image::Result;

pub const COOKIE: &[u8; 8] = b"conectix";
pub const FOOTER_SIZE: u64 = 512;
pub const DISK_FIXED: u32 = 2;
pub const DISK_DYNAMIC: u32 = 3;
pub const DISK_DIFFERENCING: u32 = 4;
/// The largest CHS geometry; qemu then trusts `current_size` instead of the geometry.
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;

/// The footer's fields (spec: "Hard Disk Footer Format").
pub mod field {
    use crate::image::region::FieldDef;
    pub const COOKIE: FieldDef = FieldDef::new(0, 8, "Cookie");
    pub const FEATURES: FieldDef = FieldDef::new(8, 4, "Features");
    pub const VERSION: FieldDef = FieldDef::new(12, 4, "File format version");
    pub const DATA_OFFSET: FieldDef = FieldDef::new(16, 8, "Data offset");
    pub const TIMESTAMP: FieldDef = FieldDef::new(24, 4, "Time stamp");
    pub const CREATOR_APP: FieldDef = FieldDef::new(28, 4, "Creator application");
    pub const CREATOR_VERSION: FieldDef = FieldDef::new(32, 4, "Creator version");
    pub const CREATOR_OS: FieldDef = FieldDef::new(36, 4, "Creator host OS");
    pub const ORIGINAL_SIZE: FieldDef = FieldDef::new(40, 8, "Original size");
    pub const CURRENT_SIZE: FieldDef = FieldDef::new(48, 8, "Current size");
    pub const GEOMETRY: FieldDef = FieldDef::new(56, 4, "Disk geometry");
    pub const DISK_TYPE: FieldDef = FieldDef::new(60, 4, "Disk type");
    pub const CHECKSUM: FieldDef = FieldDef::new(64, 4, "Checksum");
    pub const UNIQUE_ID: FieldDef = FieldDef::new(68, 16, "Unique ID");
    pub const SAVED_STATE: FieldDef = FieldDef::new(84, 1, "Saved state");
    pub const RESERVED: FieldDef = FieldDef::new(85, 427, "Reserved");
}

#[derive(Clone, Debug)]
pub struct Footer {
    /// Where it was read from.
    pub offset: u64,
    pub bytes: [u8; 512],
    pub features: u32,
    pub version: u32,
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: u32,
    pub original_size: u64,
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
    pub disk_type: u32,
    pub checksum: u32,
    pub unique_id: [u8; 16],
    pub saved_state: u8,
}

/// One's complement of the byte sum, skipping the 4-byte checksum field at `skip`.
pub fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let sum: u32 = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(b as u32));
    !sum
}

/// Where a footer cookie is: the end of the file (512-byte or old 511-byte footer), else the
/// copy at offset 0. Returns the offset of the footer found.
pub fn find_cookie(file: &HostFile) -> Result<Option<u64>> {
    let len = file.len();
    let mut cookie = [0u8; 8];
    let mut candidates = vec![];
    if len >= FOOTER_SIZE {
        candidates.push(len - FOOTER_SIZE);
    }
    if len >= 511 && len % 512 == 511 {
        candidates.push(len - 511);
    }
    if len >= FOOTER_SIZE {
        candidates.push(0);
    }
    for off in candidates {
        file.read_exact_at(off, &mut cookie, "VHD footer cookie")?;
        if &cookie == COOKIE {
            return Ok(Some(off));
        }
    }
    Ok(None)
}

impl Footer {
    pub fn read(file: &HostFile, off: u64) -> Result<Footer> {
        let mut bytes = [0u8; 512];
        let avail = (file.len() - off).min(512) as usize;
        file.read_exact_at(off, &mut bytes[..avail], "VHD footer")?;
        Ok(Footer::parse(off, bytes))
    }

    pub fn parse(offset: u64, bytes: [u8; 512]) -> Footer {
        let r = FieldReader::new(offset, &bytes);
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(r.raw(field::CREATOR_APP.off, 4));
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(r.raw(field::UNIQUE_ID.off, 16));
        let geo = field::GEOMETRY.off;
        Footer {
            offset,
            features: r.u32(field::FEATURES.off),
            version: r.u32(field::VERSION.off),
            data_offset: r.u64(field::DATA_OFFSET.off),
            timestamp: r.u32(field::TIMESTAMP.off),
            creator_app,
            creator_version: r.u32(field::CREATOR_VERSION.off),
            creator_os: r.u32(field::CREATOR_OS.off),
            original_size: r.u64(field::ORIGINAL_SIZE.off),
            current_size: r.u64(field::CURRENT_SIZE.off),
            cylinders: r.u16(geo),
            heads: r.u8(geo + 2),
            sectors: r.u8(geo + 3),
            disk_type: r.u32(field::DISK_TYPE.off),
            checksum: r.u32(field::CHECKSUM.off),
            unique_id,
            saved_state: r.u8(field::SAVED_STATE.off),
            bytes,
        }
    }

    pub fn cookie_ok(&self) -> bool {
        &self.bytes[..8] == COOKIE
    }

    pub fn computed_checksum(&self) -> u32 {
        checksum(&self.bytes, field::CHECKSUM.off)
    }

    pub fn checksum_ok(&self) -> bool {
        self.computed_checksum() == self.checksum
    }

    pub fn chs_size(&self) -> u64 {
        self.cylinders as u64 * self.heads as u64 * self.sectors as u64 * 512
    }

    /// The disk size as qemu computes it: Virtual PC and qemu's own old images use the CHS
    /// geometry; Hyper-V, Disk2vhd, XenServer and newer qemu use `current_size`.
    pub fn virtual_size(&self) -> u64 {
        let app = &self.creator_app;
        let use_chs = app != b"win " && app != b"qem2" && app != b"d2v " && app != b"CTXS" && app != b"tap\0";
        if !use_chs || self.chs_size() / 512 == MAX_GEOMETRY {
            self.current_size
        } else {
            self.chs_size()
        }
    }

    pub fn disk_type_name(&self) -> &'static str {
        match self.disk_type {
            DISK_FIXED => "fixed",
            DISK_DYNAMIC => "dynamic",
            DISK_DIFFERENCING => "differencing",
            0 => "none",
            1 => "reserved (deprecated)",
            _ => "unknown",
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut r = FieldReader::new(self.offset, &self.bytes);
        r.field(field::COOKIE, ascii(&self.bytes[..8]));
        r.field(field::FEATURES, format!("0x{:08x}", self.features));
        r.field(field::VERSION, version(self.version));
        r.field(field::DATA_OFFSET, format!("0x{:016x}", self.data_offset));
        r.field(field::TIMESTAMP, timestamp(self.timestamp));
        r.field(field::CREATOR_APP, ascii(&self.creator_app));
        r.field(field::CREATOR_VERSION, version(self.creator_version));
        r.field(field::CREATOR_OS, ascii(r.raw(field::CREATOR_OS.off, 4)));
        r.field(field::ORIGINAL_SIZE, self.original_size.to_string());
        r.field(field::CURRENT_SIZE, self.current_size.to_string());
        r.field(field::GEOMETRY,
            format!("{}/{}/{} (C/H/S, {} bytes)", self.cylinders, self.heads, self.sectors, self.chs_size()),
        );
        r.field(field::DISK_TYPE, format!("{} ({})", self.disk_type, self.disk_type_name()));
        let verdict = if self.checksum_ok() {
            "ok".to_string()
        } else {
            format!("BAD, computed 0x{:08x}", self.computed_checksum())
        };
        r.field(field::CHECKSUM, format!("0x{:08x} ({})", self.checksum, verdict));
        r.field(field::UNIQUE_ID, uuid(&self.unique_id));
        r.field(field::SAVED_STATE, self.saved_state.to_string());
        r.field(field::RESERVED, String::new());
        r.fields
    }
}

pub fn version(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

/// VHD time stamps count seconds from 2000-01-01 00:00:00 UTC.
pub fn timestamp(t: u32) -> String {
    const EPOCH_2000: i64 = 946_684_800;
    format!("{} ({} UTC)", t, crate::image::region::utc(EPOCH_2000 + t as i64))
}

pub fn uuid(b: &[u8; 16]) -> String {
    let h = hex_bytes(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

//! The VDI pre-header and header (v1.1), little-endian, in the first 512 bytes.

use crate::image::bytes::{le32, le64};
use crate::image::region::{Field, FieldDef};

pub const SIGNATURE: u32 = 0xbeda_107f;
pub const VERSION_1_1: u32 = 0x0001_0001;
pub const HEADER_SIZE: u64 = 512;
pub const TYPE_DYNAMIC: u32 = 1;
pub const TYPE_STATIC: u32 = 2;

pub const FIELDS: &[FieldDef] = &[
    FieldDef::new(0, 64, "Text"),
    FieldDef::new(64, 4, "Signature"),
    FieldDef::new(68, 4, "Version"),
    FieldDef::new(72, 4, "Header size"),
    FieldDef::new(76, 4, "Image type"),
    FieldDef::new(80, 4, "Image flags"),
    FieldDef::new(84, 256, "Description"),
    FieldDef::new(340, 4, "Block map offset"),
    FieldDef::new(344, 4, "Data offset"),
    FieldDef::new(348, 4, "Cylinders"),
    FieldDef::new(352, 4, "Heads"),
    FieldDef::new(356, 4, "Sectors"),
    FieldDef::new(360, 4, "Sector size"),
    FieldDef::new(368, 8, "Disk size"),
    FieldDef::new(376, 4, "Block size"),
    FieldDef::new(380, 4, "Block extra data"),
    FieldDef::new(384, 4, "Blocks in image"),
    FieldDef::new(388, 4, "Blocks allocated"),
    FieldDef::new(392, 16, "Creation UUID"),
    FieldDef::new(408, 16, "Modification UUID"),
    FieldDef::new(424, 16, "Link UUID"),
    FieldDef::new(440, 16, "Parent UUID"),
];

#[derive(Clone, Debug)]
pub struct VdiHeader {
    pub bytes: Vec<u8>,
    pub text: String,
    pub signature: u32,
    pub version: u32,
    pub header_size: u32,
    pub image_type: u32,
    pub image_flags: u32,
    pub description: String,
    pub offset_bmap: u32,
    pub offset_data: u32,
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
    pub sector_size: u32,
    pub disk_size: u64,
    pub block_size: u32,
    pub block_extra: u32,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
    pub uuid_create: [u8; 16],
    pub uuid_modify: [u8; 16],
    pub uuid_link: [u8; 16],
    pub uuid_parent: [u8; 16],
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn uuid16(b: &[u8]) -> [u8; 16] {
    b[..16].try_into().expect("16 bytes")
}

/// A UUID as VirtualBox stores it (the first three groups little-endian).
pub fn uuid(u: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
    )
}

impl VdiHeader {
    /// Parse the first 512 bytes (the caller checked there are that many).
    pub fn parse(b: &[u8]) -> VdiHeader {
        VdiHeader {
            bytes: b[..HEADER_SIZE as usize].to_vec(),
            text: cstr(&b[0..64]),
            signature: le32(b, 64),
            version: le32(b, 68),
            header_size: le32(b, 72),
            image_type: le32(b, 76),
            image_flags: le32(b, 80),
            description: cstr(&b[84..340]),
            offset_bmap: le32(b, 340),
            offset_data: le32(b, 344),
            cylinders: le32(b, 348),
            heads: le32(b, 352),
            sectors: le32(b, 356),
            sector_size: le32(b, 360),
            disk_size: le64(b, 368),
            block_size: le32(b, 376),
            block_extra: le32(b, 380),
            blocks_in_image: le32(b, 384),
            blocks_allocated: le32(b, 388),
            uuid_create: uuid16(&b[392..]),
            uuid_modify: uuid16(&b[408..]),
            uuid_link: uuid16(&b[424..]),
            uuid_parent: uuid16(&b[440..]),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.image_type {
            TYPE_DYNAMIC => "dynamic",
            TYPE_STATIC => "static",
            3 => "undo",
            4 => "differencing",
            _ => "unknown",
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let vals = [
            format!("{:?}", self.text.trim_end_matches('\n')),
            format!("0x{:08x}{}", self.signature, if self.signature == SIGNATURE { "" } else { " (bad)" }),
            format!("{}.{}", self.version >> 16, self.version & 0xffff),
            self.header_size.to_string(),
            format!("{} ({})", self.image_type, self.type_name()),
            format!("0x{:08x}", self.image_flags),
            format!("{:?}", self.description),
            format!("0x{:x}", self.offset_bmap),
            format!("0x{:x}", self.offset_data),
            self.cylinders.to_string(),
            self.heads.to_string(),
            self.sectors.to_string(),
            self.sector_size.to_string(),
            format!("{} bytes", self.disk_size),
            format!("{} bytes", self.block_size),
            self.block_extra.to_string(),
            self.blocks_in_image.to_string(),
            self.blocks_allocated.to_string(),
            uuid(&self.uuid_create),
            uuid(&self.uuid_modify),
            uuid(&self.uuid_link),
            uuid(&self.uuid_parent),
        ];
        FIELDS
            .iter()
            .zip(vals)
            .map(|(d, value)| {
                let (off, len) = d.at(0);
                Field { off, len, name: d.name.into(), value }
            })
            .collect()
    }
}

//! The metadata region: its table and the items vdiskview reads (file parameters, virtual
//! disk size and id, sector sizes, parent locator).

use super::log::{read_at, Overlay};
use super::{guid, guid_at, guid_str, le16, le32, le64, utf16, Fields, Guid, KIB};
use crate::image::io::HostFile;
use crate::image::region::Field;
use crate::image::{Error, Result};

pub const SIGNATURE: &[u8; 8] = b"metadata";
pub const TABLE_SIZE: u64 = 64 * KIB;
pub const MAX_ENTRIES: u16 = 2047;

pub const FILE_PARAMETERS: Guid = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
pub const VIRTUAL_DISK_SIZE: Guid = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
pub const VIRTUAL_DISK_ID: Guid = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
pub const LOGICAL_SECTOR_SIZE: Guid = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
pub const PHYSICAL_SECTOR_SIZE: Guid = guid("CDA348C7-445D-4471-9CC9-E9885251C556");
pub const PARENT_LOCATOR: Guid = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// The locator type of a VHDX parent.
pub const VHDX_PARENT_LOCATOR_TYPE: Guid = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913");

pub fn item_name(g: &Guid) -> String {
    match *g {
        FILE_PARAMETERS => "file parameters".into(),
        VIRTUAL_DISK_SIZE => "virtual disk size".into(),
        VIRTUAL_DISK_ID => "virtual disk id".into(),
        LOGICAL_SECTOR_SIZE => "logical sector size".into(),
        PHYSICAL_SECTOR_SIZE => "physical sector size".into(),
        PARENT_LOCATOR => "parent locator".into(),
        _ => format!("unknown item {}", guid_str(g)),
    }
}

#[derive(Clone, Debug)]
pub struct MetaEntry {
    pub item: Guid,
    /// Offset from the start of the metadata region.
    pub offset: u32,
    pub length: u32,
    pub is_user: bool,
    pub is_virtual_disk: bool,
    pub is_required: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ParentLocator {
    pub locator_type: Guid,
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn parse(b: &[u8]) -> std::result::Result<ParentLocator, String> {
        if b.len() < 20 {
            return Err(format!("the parent locator is too short ({} bytes)", b.len()));
        }
        let count = le16(b, 18) as usize;
        if 20 + count * 12 > b.len() {
            return Err(format!("the parent locator's {} entries do not fit in its {} bytes", count, b.len()));
        }
        let mut entries = Vec::new();
        for i in 0..count {
            let o = 20 + i * 12;
            let (ko, vo) = (le32(b, o) as usize, le32(b, o + 4) as usize);
            let (kl, vl) = (le16(b, o + 8) as usize, le16(b, o + 10) as usize);
            let (Some(k), Some(v)) = (b.get(ko..ko.saturating_add(kl)), b.get(vo..vo.saturating_add(vl))) else {
                return Err(format!("parent locator entry {} lies outside the locator", i));
            };
            entries.push((utf16(k), utf16(v)));
        }
        Ok(ParentLocator { locator_type: guid_at(b, 0), entries })
    }
}

#[derive(Clone, Debug)]
pub struct Metadata {
    /// The metadata region in the file.
    pub offset: u64,
    pub length: u64,
    pub signature: [u8; 8],
    pub entries: Vec<MetaEntry>,
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub disk_id: Guid,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub parent_locator: Option<ParentLocator>,
    /// Items that were odd but not fatal.
    pub problems: Vec<String>,
}

impl Metadata {
    pub fn read(file: &HostFile, overlay: &Overlay, offset: u64, length: u64, name: &str) -> Result<Metadata> {
        let bad = |m: String| Error::damaged("metadata", Some(offset), format!("{}: {}", name, m));
        if length < TABLE_SIZE {
            return Err(bad(format!("the metadata region ({} bytes) is smaller than its 64 KiB table", length)));
        }
        let mut t = vec![0u8; TABLE_SIZE as usize];
        read_at(file, overlay, offset, &mut t, "VHDX metadata table")?;
        let signature: [u8; 8] = t[..8].try_into().unwrap();
        if &signature != SIGNATURE {
            return Err(bad("the metadata table has no 'metadata' signature".into()));
        }
        let count = le16(&t, 10);
        if count > MAX_ENTRIES {
            return Err(bad(format!("the metadata table has {} entries (at most {})", count, MAX_ENTRIES)));
        }
        let entries: Vec<MetaEntry> = (0..count as usize)
            .map(|i| {
                let o = 32 + i * 32;
                let flags = le32(&t, o + 24);
                MetaEntry {
                    item: guid_at(&t, o),
                    offset: le32(&t, o + 16),
                    length: le32(&t, o + 20),
                    is_user: flags & 1 != 0,
                    is_virtual_disk: flags & 2 != 0,
                    is_required: flags & 4 != 0,
                }
            })
            .collect();
        let mut m = Metadata {
            offset,
            length,
            signature,
            entries: entries.clone(),
            block_size: 0,
            leave_blocks_allocated: false,
            has_parent: false,
            virtual_size: 0,
            disk_id: [0; 16],
            logical_sector_size: 0,
            physical_sector_size: 0,
            parent_locator: None,
            problems: Vec::new(),
        };
        let item = |e: &MetaEntry, min: u64| -> Result<Vec<u8>> {
            let (o, l) = (e.offset as u64, e.length as u64);
            if l < min || (l > 0 && o < TABLE_SIZE) || o.checked_add(l).is_none_or(|end| end > length) {
                return Err(bad(format!(
                    "the {} item (offset 0x{:x}, {} bytes) does not lie inside the metadata region ({} bytes)",
                    item_name(&e.item),
                    o,
                    l,
                    length
                )));
            }
            let mut b = vec![0u8; l as usize];
            read_at(file, overlay, offset + o, &mut b, "VHDX metadata item")?;
            Ok(b)
        };
        let mut seen = Vec::new();
        for e in &entries {
            if e.is_user {
                continue;
            }
            seen.push(e.item);
            match e.item {
                FILE_PARAMETERS => {
                    let b = item(e, 8)?;
                    m.block_size = le32(&b, 0);
                    let flags = le32(&b, 4);
                    m.leave_blocks_allocated = flags & 1 != 0;
                    m.has_parent = flags & 2 != 0;
                }
                VIRTUAL_DISK_SIZE => m.virtual_size = le64(&item(e, 8)?, 0),
                VIRTUAL_DISK_ID => m.disk_id = guid_at(&item(e, 16)?, 0),
                LOGICAL_SECTOR_SIZE => m.logical_sector_size = le32(&item(e, 4)?, 0),
                PHYSICAL_SECTOR_SIZE => m.physical_sector_size = le32(&item(e, 4)?, 0),
                PARENT_LOCATOR => match ParentLocator::parse(&item(e, 0)?) {
                    Ok(p) => m.parent_locator = Some(p),
                    Err(msg) => m.problems.push(msg),
                },
                g if e.is_required => {
                    return Err(Error::unsupported(format!(
                        "{}: the VHDX requires the metadata item {}, which is not supported",
                        name,
                        guid_str(&g)
                    )))
                }
                _ => {}
            }
        }
        for (g, what) in [
            (FILE_PARAMETERS, "file parameters"),
            (VIRTUAL_DISK_SIZE, "virtual disk size"),
            (LOGICAL_SECTOR_SIZE, "logical sector size"),
        ] {
            if !seen.contains(&g) {
                return Err(bad(format!("the metadata has no {} item", what)));
            }
        }
        if m.has_parent && m.parent_locator.is_none() {
            m.problems.push("the disk has a parent but no usable parent locator".into());
        }
        Ok(m)
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Fields::new(self.offset);
        f.push(0, 8, "Signature", crate::image::region::ascii(&self.signature));
        f.push(10, 2, "Entry count", self.entries.len().to_string());
        for (i, e) in self.entries.iter().enumerate() {
            let o = 32 + i as u64 * 32;
            let mut flags = Vec::new();
            if e.is_user {
                flags.push("user");
            }
            if e.is_virtual_disk {
                flags.push("virtual-disk");
            }
            if e.is_required {
                flags.push("required");
            }
            f.push(
                o,
                32,
                format!("Item {}", i),
                format!("{} at +0x{:x}, {} bytes [{}]", item_name(&e.item), e.offset, e.length, flags.join(",")),
            );
        }
        for e in &self.entries {
            let o = e.offset as u64;
            match e.item {
                FILE_PARAMETERS => {
                    f.push(o, 4, "Block size", format!("{} ({})", self.block_size, crate::image::region::human_size(self.block_size as u64)));
                    f.push(o + 4, 4, "Leave blocks allocated", self.leave_blocks_allocated.to_string());
                    f.push(o + 4, 4, "Has parent", self.has_parent.to_string());
                }
                VIRTUAL_DISK_SIZE => f.push(o, 8, "Virtual disk size", self.virtual_size.to_string()),
                VIRTUAL_DISK_ID => f.push(o, 16, "Virtual disk id", guid_str(&self.disk_id)),
                LOGICAL_SECTOR_SIZE => f.push(o, 4, "Logical sector size", self.logical_sector_size.to_string()),
                PHYSICAL_SECTOR_SIZE => f.push(o, 4, "Physical sector size", self.physical_sector_size.to_string()),
                PARENT_LOCATOR => {
                    if let Some(p) = &self.parent_locator {
                        f.push(o, 16, "Parent locator type", guid_str(&p.locator_type));
                        for (k, v) in &p.entries {
                            f.push(o + 20, e.length.saturating_sub(20) as u64, format!("Parent {}", k), v.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        f.list
    }
}

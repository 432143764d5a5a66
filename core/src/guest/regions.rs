//! Guest-space overlays: the partition table (MBR, GPT headers and entry arrays) and each
//! ext superblock as named regions with fields, so the hex view in guest space names them as
//! it names the image's own structures in file space.

use super::partitions::{read_table, Scheme};
use crate::image::region::{hex_bytes, Field, Region};
use crate::image::Image;

// the overlays compute offsets in u64
fn le16(b: &[u8], o: usize) -> u64 {
    crate::image::bytes::le16(b, o) as u64
}
fn le32(b: &[u8], o: usize) -> u64 {
    crate::image::bytes::le32(b, o) as u64
}

fn field(base: u64, off: usize, len: usize, name: &str, value: String) -> Field {
    Field { off: base + off as u64, len: len as u64, name: name.into(), value }
}

/// The guest disk's structures, sorted by guest offset; empty when nothing is recognised.
pub fn guest_regions(img: &Image) -> Vec<Region> {
    let mut out = Vec::new();
    let Ok(table) = read_table(img) else { return out };
    let mut sector = [0u8; 512];
    if table.scheme.is_some() && img.read(0, &mut sector).is_ok() {
        let mut r = Region::new(0, 512, "mbr", if table.scheme == Some(Scheme::Gpt) { "protective MBR" } else { "MBR" });
        r.virt = Some(0);
        r.fields.push(field(0, 0, 440, "boot code", String::new()));
        r.fields.push(field(0, 440, 4, "disk signature", format!("0x{:08x}", le32(&sector, 440))));
        for i in 0..4 {
            let o = 446 + i * 16;
            let e = &sector[o..o + 16];
            let value = if e[4] == 0 {
                "empty".to_string()
            } else {
                format!("type 0x{:02x}, start LBA {}, {} sectors{}", e[4], le32(e, 8), le32(e, 12), if e[0] == 0x80 { ", boot" } else { "" })
            };
            r.fields.push(field(0, o, 16, &format!("partition entry {}", i + 1), value));
        }
        r.fields.push(field(0, 510, 2, "signature", format!("{:02x}{:02x}", sector[510], sector[511])));
        out.push(r);
    }
    if let Some(g) = &table.gpt {
        for h in [&g.primary, &g.backup].into_iter().flatten() {
            let mut r = Region::new(h.offset, g.sector_size, "gpt-header", format!("GPT header ({})", if h.offset < 4096 { "primary" } else { "backup" }));
            r.virt = Some(h.offset);
            let b = h.offset;
            let crc = |ok: bool| if ok { "ok" } else { "BAD" };
            r.fields = vec![
                field(b, 0, 8, "signature", "EFI PART".into()),
                field(b, 8, 4, "revision", format!("0x{:08x}", h.revision)),
                field(b, 12, 4, "header size", h.header_size.to_string()),
                field(b, 16, 4, "header CRC32", format!("0x{:08x} ({})", h.header_crc, crc(h.header_crc_ok))),
                field(b, 24, 8, "my LBA", h.my_lba.to_string()),
                field(b, 32, 8, "alternate LBA", h.alternate_lba.to_string()),
                field(b, 40, 8, "first usable LBA", h.first_usable.to_string()),
                field(b, 48, 8, "last usable LBA", h.last_usable.to_string()),
                field(b, 56, 16, "disk GUID", hex_bytes(&h.disk_guid.0)),
                field(b, 72, 8, "entries LBA", h.entries_lba.to_string()),
                field(b, 80, 4, "number of entries", h.num_entries.to_string()),
                field(b, 84, 4, "entry size", h.entry_size.to_string()),
                field(
                    b,
                    88,
                    4,
                    "entries CRC32",
                    format!("0x{:08x} ({})", h.entries_crc, h.entries_crc_ok.map(crc).unwrap_or("unreadable")),
                ),
            ];
            out.push(r);
            let len = (h.num_entries as u64).saturating_mul(h.entry_size as u64).min(1 << 20);
            let start = h.entries_lba.saturating_mul(g.sector_size);
            if len > 0 && start < img.virtual_size() {
                let mut e = Region::new(start, len.min(img.virtual_size() - start), "gpt-entries", "GPT partition entries");
                e.virt = Some(start);
                out.push(e);
            }
        }
    }
    // extended-partition boot records of logical partitions
    for p in &table.partitions {
        if p.entry_offset >= 512 && table.scheme == Some(Scheme::Mbr) && out.iter().all(|r: &Region| !r.contains(p.entry_offset)) {
            let ebr = p.entry_offset / 512 * 512;
            let mut r = Region::new(ebr, 512, "mbr", "extended boot record");
            r.virt = Some(ebr);
            out.push(r);
        }
    }
    for p in &table.partitions {
        let Some(fs) = &p.fs else { continue };
        if !fs.kind.is_ext() {
            continue;
        }
        let at = p.start + 1024;
        let mut sb = [0u8; 1024];
        if img.read(at, &mut sb).is_err() {
            continue;
        }
        let mut r = Region::new(at, 1024, "ext-superblock", format!("ext superblock of partition {}", p.index));
        r.virt = Some(at);
        let label_end = sb[0x78..0x88].iter().position(|&c| c == 0).unwrap_or(16);
        r.fields = vec![
            field(at, 0x00, 4, "s_inodes_count", le32(&sb, 0).to_string()),
            field(at, 0x04, 4, "s_blocks_count_lo", le32(&sb, 4).to_string()),
            field(at, 0x14, 4, "s_first_data_block", le32(&sb, 0x14).to_string()),
            field(at, 0x18, 4, "s_log_block_size", format!("{} ({} bytes)", le32(&sb, 0x18), 1024u64 << le32(&sb, 0x18).min(16))),
            field(at, 0x20, 4, "s_blocks_per_group", le32(&sb, 0x20).to_string()),
            field(at, 0x28, 4, "s_inodes_per_group", le32(&sb, 0x28).to_string()),
            field(at, 0x38, 2, "s_magic", format!("0x{:04x}{}", le16(&sb, 0x38), if le16(&sb, 0x38) == 0xef53 { " (ext)" } else { " (BAD)" })),
            field(at, 0x4c, 4, "s_rev_level", le32(&sb, 0x4c).to_string()),
            field(at, 0x58, 2, "s_inode_size", le16(&sb, 0x58).to_string()),
            field(at, 0x5c, 4, "s_feature_compat", format!("0x{:x}", le32(&sb, 0x5c))),
            field(at, 0x60, 4, "s_feature_incompat", format!("0x{:x}", le32(&sb, 0x60))),
            field(at, 0x64, 4, "s_feature_ro_compat", format!("0x{:x}", le32(&sb, 0x64))),
            field(at, 0x68, 16, "s_uuid", hex_bytes(&sb[0x68..0x78])),
            field(at, 0x78, 16, "s_volume_name", String::from_utf8_lossy(&sb[0x78..0x78 + label_end]).into_owned()),
            field(at, 0x150, 4, "s_blocks_count_hi", le32(&sb, 0x150).to_string()),
        ];
        out.push(r);
    }
    out.sort_by_key(|r| r.start);
    out
}

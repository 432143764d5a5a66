//! Guest-space overlays: the partition table (MBR, GPT headers and entry arrays) and each
//! filesystem's boot structures (from its driver's overlay) as named regions with fields, so the hex view in guest space names them as
//! it names the image's own structures in file space.

use super::partitions::{read_table, Scheme};
use crate::image::region::{hex_bytes, Field, Region};
use crate::image::Image;

// the overlays compute offsets in u64
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
    // each filesystem's boot structures, from the driver that reads it
    for p in &table.partitions {
        let Some(fs) = &p.fs else { continue };
        let Some(driver) = super::fs::driver_for(fs.kind) else { continue };
        let (start, len) = p.readable_range(table.disk_size);
        out.extend((driver.overlay)(img, start, len, &format!("partition {}", p.index)));
    }
    out.sort_by_key(|r| r.start);
    out
}

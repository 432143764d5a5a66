//! `check` for VDI, as qemu-img check counts: every allocated block map entry must name a
//! block below `blocks in image` that no other entry names, and the allocated count must
//! equal the header's. Blocks whose data lies past the end of the file are a warning (qemu
//! reads them as zero and does not count them).

use super::{is_allocated, Vdi, UNALLOCATED};
use crate::image::check::{CheckReport, Finding, Severity};
use crate::image::Format;

pub fn check(v: &Vdi, name: &str) -> CheckReport {
    let mut r = CheckReport::new(name, Format::Vdi);
    let h = &v.header;
    let n = h.blocks_in_image;
    let mut owner = vec![UNALLOCATED; v.bmap.len()];
    let mut allocated = 0u32;
    let bs = v.block_size();
    let entry_at = |i: usize| h.offset_bmap as u64 + i as u64 * 4;
    for (block, &e) in v.bmap.iter().enumerate() {
        if !is_allocated(e) {
            continue;
        }
        if e < n {
            allocated += 1;
            let o = &mut owner[e as usize];
            if !is_allocated(*o) {
                *o = block as u32;
            } else {
                r.push(
                    Finding::new(Severity::Corruption, "block-map", format!("block index {} also used by {}", *o, e))
                        .at(entry_at(block), 4)
                        .virt(Some(block as u64 * bs)),
                );
            }
            let at = v.block_offset(e);
            if at >= v.file.len() {
                r.push(
                    Finding::new(
                        Severity::Warning,
                        "data",
                        format!("block {} is stored at 0x{:x}, past the end of the file (0x{:x}); it reads as zero", block, at, v.file.len()),
                    )
                    .at(entry_at(block), 4)
                    .virt(Some(block as u64 * bs)),
                );
            }
        } else {
            r.push(
                Finding::new(Severity::Corruption, "block-map", format!("block index {} too large, is {}", block, e))
                    .at(entry_at(block), 4)
                    .virt(Some(block as u64 * bs)),
            );
        }
    }
    if allocated != h.blocks_allocated {
        r.push(
            Finding::new(
                Severity::Corruption,
                "header",
                format!("allocated blocks mismatch, is {}, should be {}", allocated, h.blocks_allocated),
            )
            .at(388, 4),
        );
    }
    r
}

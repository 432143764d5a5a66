//! `vdiskview tables` for a VDI: the header fields and one line per block map entry.

use std::io::Write;

use super::{Vdi, DISCARDED, UNALLOCATED};
use crate::image::region::write_fields;

pub fn write_tables(out: &mut dyn Write, v: &Vdi) -> std::io::Result<()> {
    writeln!(out, "VDI header (file offset 0x0):")?;
    write_fields(out, &v.header.fields())?;
    writeln!(out)?;
    writeln!(out, "Block map (file offset 0x{:x}, {} entries):", v.header.offset_bmap, v.bmap.len())?;
    let bs = v.block_size();
    for (i, &e) in v.bmap.iter().enumerate() {
        match e {
            UNALLOCATED => writeln!(out, "Block#{:04} -> 0x{:08x} : not allocated", i, e)?,
            DISCARDED => writeln!(out, "Block#{:04} -> 0x{:08x} : zero (discarded)", i, e)?,
            _ => {
                let at = v.block_offset(e);
                writeln!(out, "Block#{:04} -> 0x{:08x} : data [0x{:x}-0x{:x}]", i, e, at, at + bs - 1)?
            }
        }
    }
    Ok(())
}

//! `vdiskview tables` for a VHD: the listing vhd-shell printed.

use std::io::Write;

use super::Vhd;
use crate::image::region::write_fields;

/// vhd-shell's listing: footer, dynamic header, one line per BAT entry.
pub fn write_tables(out: &mut dyn Write, v: &Vhd) -> std::io::Result<()> {
    writeln!(out, "VHD footer (file offset 0x{:x}):", v.footer.offset)?;
    write_fields(out, &v.footer.fields())?;
    let Some(h) = &v.header else { return Ok(()) };
    writeln!(out)?;
    writeln!(out, "Dynamic disk header (file offset 0x{:x}):", h.offset)?;
    write_fields(out, &h.fields())?;
    writeln!(out)?;
    writeln!(
        out,
        "Block allocation table (file offset 0x{:x}, {} entries, {} used by the disk):",
        h.table_offset,
        h.max_table_entries,
        v.block_count()
    )?;
    for b in 0..v.block_count() {
        writeln!(out, "{}", v.bat_line(b))?;
    }
    Ok(())
}


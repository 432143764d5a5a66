//! `vdiskview tables` for a VHDX: identifier, headers, region table, metadata items, log
//! entries and one line per BAT entry.

use std::io::Write;

use super::bat::{self, BatEntry};
use super::log::Descriptor;
use super::{guid_str, Vhdx, HEADER_OFFSETS};
use crate::image::region::write_fields;

pub fn write_tables(out: &mut dyn Write, v: &Vhdx) -> std::io::Result<()> {
    writeln!(out, "VHDX file type identifier (file offset 0x0):")?;
    write_fields(out, &v.ident.fields())?;
    for (i, h) in v.headers.iter().enumerate() {
        writeln!(out)?;
        let cur = if i == v.current { ", current" } else { "" };
        writeln!(out, "Header {} (file offset 0x{:x}{}):", i + 1, HEADER_OFFSETS[i], cur)?;
        match h {
            Some(h) => write_fields(out, &h.fields())?,
            None => writeln!(out, "(unreadable)")?,
        }
    }
    writeln!(out)?;
    writeln!(out, "Region table {} (file offset 0x{:x}):", v.region_copy + 1, v.regions.offset)?;
    write_fields(out, &v.regions.fields())?;
    writeln!(out)?;
    writeln!(out, "Metadata (file offset 0x{:x}, {} bytes):", v.meta.offset, v.meta.length)?;
    write_fields(out, &v.meta.fields())?;
    writeln!(out)?;
    let h = v.header();
    writeln!(out, "Log (file offset 0x{:x}, {} bytes, {} valid entries):", h.log_offset, h.log_length, v.log.entries.len())?;
    for e in &v.log.entries {
        let (mut data, mut zero) = (0, 0);
        for d in &e.descriptors {
            match d {
                Descriptor::Data { .. } => data += 1,
                Descriptor::Zero { .. } => zero += 1,
            }
        }
        writeln!(
            out,
            "Entry @0x{:x}: sequence {}, {} bytes, tail 0x{:x}, {} data + {} zero descriptors, log GUID {}",
            e.offset,
            e.sequence,
            e.length,
            e.tail,
            data,
            zero,
            guid_str(&e.log_guid)
        )?;
    }
    if let Some((t, hd)) = v.log.active {
        writeln!(out, "Active sequence {} to {}{}", t, hd, if v.log.replayed { " (replayed in memory)" } else { "" })?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Block allocation table (file offset 0x{:x}, {} entries, {} payload blocks, chunk ratio {}):",
        v.bat_offset,
        v.bat.len(),
        v.geo.data_blocks,
        v.geo.chunk_ratio
    )?;
    for (i, &raw) in v.bat.iter().enumerate() {
        writeln!(out, "{}", bat_line(v, i as u64, BatEntry(raw)))?;
    }
    Ok(())
}

/// One BAT entry in the spirit of vhd-shell's `Block#0000 -> …` lines.
pub fn bat_line(v: &Vhdx, index: u64, e: BatEntry) -> String {
    let bs = v.block_size();
    match v.geo.classify(index) {
        Ok(block) => {
            let state = bat::payload_state_name(e.state());
            if matches!(e.state(), bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT) {
                format!(
                    "Block#{:04} -> 0x{:016x} : {} data [0x{:08x}-0x{:08x}]",
                    block,
                    e.0,
                    state,
                    e.offset(),
                    e.offset() + bs - 1
                )
            } else {
                format!("Block#{:04} -> 0x{:016x} : {}", block, e.0, state)
            }
        }
        Err(chunk) => {
            if e.state() == bat::SB_PRESENT {
                format!("Bitmap#{:04} -> 0x{:016x} : sector bitmap [0x{:08x}-0x{:08x}]", chunk, e.0, e.offset(), e.offset() + super::MIB - 1)
            } else {
                format!("Bitmap#{:04} -> 0x{:016x} : sector bitmap {}", chunk, e.0, if e.state() == 0 { "NOT_PRESENT" } else { "invalid" })
            }
        }
    }
}

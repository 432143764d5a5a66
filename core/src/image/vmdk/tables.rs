//! `vdiskview tables` for a VMDK: the descriptor text, each sparse extent's header fields,
//! its grain directory and every non-empty grain table.

use std::io::Write;

use super::sparse::{Grain, SECTOR};
use super::{ExtentKind, Vmdk};
use crate::image::region::write_fields;

pub fn write_tables(out: &mut dyn Write, v: &Vmdk) -> std::io::Result<()> {
    match v.desc_at {
        Some((off, _)) => writeln!(out, "Descriptor ({} at 0x{:x}):", v.file.name, off)?,
        None => writeln!(out, "Descriptor: none")?,
    }
    for line in v.desc_text.lines() {
        writeln!(out, "    {}", line)?;
    }
    for (i, e) in v.extents.iter().enumerate() {
        let fname = e.file.and_then(|id| v.host_file(id)).map(|f| f.name.as_str()).unwrap_or("-");
        writeln!(out)?;
        writeln!(
            out,
            "Extent {}: {} {}, guest 0x{:x}-0x{:x}, file {}",
            i,
            e.access,
            if e.type_name.is_empty() { "SPARSE" } else { &e.type_name },
            e.start,
            (e.start + e.size).saturating_sub(1),
            fname
        )?;
        let sp = match &e.kind {
            ExtentKind::Sparse(sp) => sp,
            ExtentKind::Flat { offset } => {
                writeln!(out, "    flat data from file offset 0x{:x}", offset)?;
                continue;
            }
            ExtentKind::Zero => continue,
            ExtentKind::SeSparse(se) => {
                writeln!(out, "seSparse constant header (file offset 0x0):")?;
                write_fields(out, &se.fields())?;
                writeln!(out, "Grain directory (file offset 0x{:x}, {} entries):", se.gd_offset, se.gd.len())?;
                for (j, &g) in se.gd.iter().enumerate().filter(|(_, g)| **g != 0) {
                    writeln!(out, "GD#{:04} -> 0x{:016x}", j, g)?;
                }
                continue;
            }
        };
        let f = v.host_file(e.file.expect("sparse file")).expect("extent file");
        if let Some(h) = &sp.first_header {
            writeln!(out, "Sparse header (file offset 0x{:x}):", h.offset)?;
            write_fields(out, &h.fields())?;
        }
        writeln!(
            out,
            "{} (file offset 0x{:x}):",
            if sp.first_header.is_some() { "Footer" } else { "Sparse header" },
            sp.header.offset
        )?;
        write_fields(out, &sp.header.fields())?;
        writeln!(out)?;
        writeln!(out, "Grain directory (file offset 0x{:x}, {} entries):", sp.gd_offset, sp.gd.len())?;
        for (j, &g) in sp.gd.iter().enumerate() {
            let rg = sp.rgd.as_ref().and_then(|r| r.get(j)).copied();
            let extra = match rg {
                Some(r) => format!("  (redundant: 0x{:08x})", r),
                None => String::new(),
            };
            if g == 0 {
                if rg.is_some_and(|r| r != 0) {
                    writeln!(out, "GD#{:04} -> 0x{:08x} : no grain table{}", j, g, extra)?;
                }
                continue;
            }
            writeln!(
                out,
                "GD#{:04} -> 0x{:08x} : grain table at 0x{:x}, guest 0x{:x}-0x{:x}{}",
                j,
                g,
                g as u64 * SECTOR,
                e.start + j as u64 * sp.gt_span(),
                e.start + (j as u64 + 1) * sp.gt_span() - 1,
                extra
            )?;
        }
        for (j, &g) in sp.gd.iter().enumerate() {
            if g == 0 {
                continue;
            }
            writeln!(out)?;
            writeln!(out, "Grain table #{} (file offset 0x{:x}):", j, g as u64 * SECTOR)?;
            let gt = match sp.gt(f, g) {
                Ok(t) => t,
                Err(err) => {
                    writeln!(out, "    unreadable: {}", err)?;
                    continue;
                }
            };
            for (k, &gte) in gt.iter().enumerate() {
                let virt = e.start + (j as u64 * sp.gtes_per_gt + k as u64) * sp.grain;
                match sp.classify(gte) {
                    Grain::Unallocated => continue,
                    Grain::Zeroed => writeln!(out, "GT#{:03} -> 0x{:08x} : guest 0x{:x}: zeroed grain", k, gte, virt)?,
                    Grain::At(at) if sp.compressed => {
                        let m = sp.marker(f, at).map(|(lba, s)| format!("marker LBA 0x{:x}, {} compressed bytes", lba, s));
                        writeln!(
                            out,
                            "GT#{:03} -> 0x{:08x} : guest 0x{:x}: compressed grain at 0x{:x} ({})",
                            k,
                            gte,
                            virt,
                            at,
                            m.unwrap_or_else(|e| e.to_string())
                        )?
                    }
                    Grain::At(at) => writeln!(out, "GT#{:03} -> 0x{:08x} : guest 0x{:x}: data [0x{:x}-0x{:x}]", k, gte, virt, at, at + sp.grain - 1)?,
                }
            }
        }
    }
    Ok(())
}

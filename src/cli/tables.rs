//! `vdiskview tables`: the on-disk structures as text. For a VHD the listing vhd-shell
//! printed: footer, dynamic header, one line per BAT entry. For a QCOW2: header, extensions,
//! L1 entries with their non-empty L2 entries, refcount table.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::open;
use crate::image::chain::Layer;
use crate::image::qcow2::cluster::{Sub, L1E_OFFSET_MASK};
use crate::image::qcow2::Qcow2;
use crate::image::region::Field;
use crate::image::vhd::Vhd;
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, mut out: &mut dyn Write) -> Result<ExitCode> {
    let img = open(path, &OpenOptions { no_backing: true, ..opts.clone() })?;
    match img.top() {
        Layer::Vhd(v) => vhd(&mut out, v)?,
        Layer::Qcow2(q) => qcow2(&mut out, q)?,
        Layer::Raw(r) => writeln!(out, "raw image: {} bytes, no metadata", r.file.len())?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn fields(out: &mut impl Write, fs: &[Field]) -> Result<()> {
    for f in fs.iter().filter(|f| !f.value.is_empty()) {
        writeln!(out, "{} : {}", f.name, f.value)?;
    }
    Ok(())
}

fn vhd(out: &mut impl Write, v: &Vhd) -> Result<()> {
    writeln!(out, "VHD footer (file offset 0x{:x}):", v.footer.offset)?;
    fields(out, &v.footer.fields())?;
    let Some(h) = &v.header else { return Ok(()) };
    writeln!(out)?;
    writeln!(out, "Dynamic disk header (file offset 0x{:x}):", h.offset)?;
    fields(out, &h.fields())?;
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

fn describe(q: &Qcow2, sub: Sub) -> String {
    match sub {
        Sub::Normal(o) => format!("data at 0x{:x}", o),
        Sub::ZeroPlain => "zero".into(),
        Sub::ZeroAlloc(o) => format!("zero, allocated at 0x{:x}", o),
        Sub::UnallocPlain => "unallocated".into(),
        Sub::UnallocAlloc(o) => format!("unallocated, allocated at 0x{:x}", o),
        Sub::Compressed { host, csize } => {
            format!("compressed at 0x{:x}, {} bytes ({})", host, csize, q.header.compression_name())
        }
        Sub::Invalid => "INVALID subcluster bitmap".into(),
    }
}

fn qcow2(out: &mut impl Write, q: &Qcow2) -> Result<()> {
    let h = &q.header;
    writeln!(out, "QCOW2 header (file offset 0x0, {} bytes):", h.header_length)?;
    fields(out, &h.fields())?;
    for e in &h.extensions {
        writeln!(out, "Header extension 0x{:08x} ({}) at 0x{:x}, {} bytes", e.kind, e.name(), e.offset, e.data.len())?;
    }
    if let Some(b) = &h.backing_file {
        writeln!(out, "Backing file : {}", b)?;
    }
    if let Some(b) = &h.backing_format {
        writeln!(out, "Backing file format : {}", b)?;
    }
    if let Some(d) = &h.data_file {
        writeln!(out, "External data file : {}", d)?;
    }
    for (k, b, n) in &h.feature_names {
        let kind = ["incompatible", "compatible", "autoclear"].get(*k as usize).copied().unwrap_or("unknown");
        writeln!(out, "Feature : {} bit {} = {}", kind, b, n)?;
    }
    writeln!(out)?;
    let cs = q.cluster_size();
    let per = q.geo.l2_entries();
    writeln!(
        out,
        "L1 table (file offset 0x{:x}, {} entries, each L2 table maps {} bytes):",
        h.l1_table_offset,
        h.l1_size,
        cs * per
    )?;
    for (i, &e) in q.l1.iter().enumerate() {
        let off = e & L1E_OFFSET_MASK;
        if e == 0 {
            continue;
        }
        writeln!(out, "L1[{}] = 0x{:016x} -> L2 table at 0x{:x}{}", i, e, off, if e >> 63 != 0 { " (copied)" } else { "" })?;
        let t = match q.l2_table(off) {
            Ok(t) => t,
            Err(err) => {
                writeln!(out, "    damaged: {}", err)?;
                continue;
            }
        };
        for (j, le) in t.iter().enumerate() {
            if le.entry == 0 && le.bitmap == 0 {
                continue;
            }
            let virt = (i as u64 * per + j as u64) * cs;
            let mut line = format!("    L2[{}] guest 0x{:x}: 0x{:016x}", j, virt, le.entry);
            if q.geo.extended {
                line += &format!(" bitmap 0x{:016x}", le.bitmap);
                let kinds: Vec<String> = (0..32).map(|sc| describe(q, q.geo.classify(*le, sc))).collect();
                if kinds.iter().all(|k| *k == kinds[0]) {
                    line += &format!(" : {}", kinds[0]);
                } else {
                    line += &format!(
                        " : subclusters {}",
                        (0..32).map(|sc| short(q.geo.classify(*le, sc))).collect::<String>()
                    );
                }
            } else {
                line += &format!(" : {}", describe(q, q.geo.classify(*le, 0)));
            }
            if le.entry >> 63 != 0 {
                line += " (copied)";
            }
            writeln!(out, "{}", line)?;
        }
    }
    writeln!(out)?;
    match q.refcount_table() {
        Ok(t) => {
            writeln!(
                out,
                "Refcount table (file offset 0x{:x}, {} entries, {}-bit refcounts, {} per block):",
                h.refcount_table_offset,
                t.len(),
                h.refcount_bits(),
                q.refcounts_per_block()
            )?;
            for (i, &b) in t.iter().enumerate().filter(|(_, &b)| b != 0) {
                writeln!(out, "Refcount[{}] -> refcount block at 0x{:x}", i, b)?;
            }
        }
        Err(e) => writeln!(out, "Refcount table damaged: {}", e)?,
    }
    if h.nb_snapshots > 0 {
        writeln!(out)?;
        match q.snapshot_table() {
            Ok(t) => {
                writeln!(out, "Snapshot table (file offset 0x{:x}, {} bytes, {} snapshots):", t.offset, t.size, t.snapshots.len())?;
                for sn in &t.snapshots {
                    writeln!(
                        out,
                        "Snapshot[{}] at 0x{:x}: id {} name '{}' : L1 table at 0x{:x} ({} entries), disk {} bytes, VM state {} bytes, \
                         date {} UTC (+{} ns), VM clock {} ns, icount {}, extra data {} bytes",
                        sn.index,
                        sn.entry_offset,
                        sn.id,
                        sn.name,
                        sn.l1_table_offset,
                        sn.l1_size,
                        sn.disk_size.map(|d| d.to_string()).unwrap_or_else(|| "(not recorded)".into()),
                        sn.vm_state_size,
                        crate::image::qcow2::snapshot::utc(sn.date_sec as i64),
                        sn.date_nsec,
                        sn.vm_clock_nsec,
                        sn.icount.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                        sn.extra_data_size
                    )?;
                    match q.snapshot_l1(sn) {
                        Ok(l1) => {
                            for (i, &e) in l1.iter().enumerate().filter(|(_, &e)| e != 0) {
                                writeln!(out, "    L1[{}] = 0x{:016x} -> L2 table at 0x{:x}", i, e, e & L1E_OFFSET_MASK)?;
                            }
                        }
                        Err(e) => writeln!(out, "    damaged: {}", e)?,
                    }
                }
            }
            Err(e) => writeln!(out, "Snapshot table ({} snapshots at 0x{:x}) damaged: {}", h.nb_snapshots, h.snapshots_offset, e)?,
        }
    }
    if let Some(x) = q.bitmaps_ext() {
        writeln!(out)?;
        writeln!(
            out,
            "Bitmap directory (file offset 0x{:x}, {} bytes, {} bitmaps{}):",
            x.directory_offset,
            x.directory_size,
            x.nb_bitmaps,
            if x.consistent { "" } else { ", ignored: the autoclear bit is clear" }
        )?;
        let dir = q.bitmap_directory();
        for b in &dir.bitmaps {
            let flags = b.flag_names().join(", ");
            writeln!(
                out,
                "Bitmap[{}] at 0x{:x}: '{}' granularity {} flags 0x{:x} ({}) type {} ({}) : table at 0x{:x} ({} entries){}",
                b.index,
                b.entry_offset,
                b.name,
                b.granularity(),
                b.flags,
                if flags.is_empty() { "disabled" } else { &flags },
                b.kind,
                b.kind_name(),
                b.table_offset,
                b.table_size,
                b.problem.as_ref().map(|p| format!(" INVALID: {}", p)).unwrap_or_default()
            )?;
            match q.bitmap_table(b) {
                Ok(t) => {
                    for (i, &e) in t.iter().enumerate() {
                        let what = match e & crate::image::qcow2::bitmap::TABLE_OFFSET_MASK {
                            0 if e & 1 != 0 => "all ones".to_string(),
                            0 => "all zeroes".to_string(),
                            o => format!("data at 0x{:x}", o),
                        };
                        writeln!(out, "    {}[{}] = 0x{:016x} : {}", b.name, i, e, what)?;
                    }
                }
                Err(e) => writeln!(out, "    damaged: {}", e)?,
            }
        }
        if let Some(e) = &dir.error {
            writeln!(out, "Bitmap directory damaged: {}", e)?;
        }
    }
    Ok(())
}

/// One character per subcluster: D data, Z zero, . unallocated, C compressed, ! invalid.
fn short(s: Sub) -> char {
    match s {
        Sub::Normal(_) => 'D',
        Sub::ZeroPlain | Sub::ZeroAlloc(_) => 'Z',
        Sub::UnallocPlain | Sub::UnallocAlloc(_) => '.',
        Sub::Compressed { .. } => 'C',
        Sub::Invalid => '!',
    }
}

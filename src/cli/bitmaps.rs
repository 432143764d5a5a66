//! `vdiskview bitmaps`: the persistent dirty bitmaps of a qcow2 image, and with a NAME the
//! dirty and clean runs of that bitmap over the whole disk, as `qemu-nbd -B NAME` exports them
//! (what `nbdinfo --map=qemu:dirty-bitmap:NAME` prints).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{open, Output};
use crate::image::qcow2::bitmap::Bitmap;
use crate::image::qcow2::Qcow2;
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, name: Option<&str>, force: bool, output: Output) -> Result<ExitCode> {
    let img = open(path, &OpenOptions { no_backing: true, ..opts.clone() })?;
    let Some(q) = img.top().downcast_ref::<Qcow2>() else {
        bail!("{}: {} images have no persistent dirty bitmaps", path.display(), img.format().qemu_name());
    };
    if let Some(x) = q.bitmaps_ext() {
        if !x.consistent {
            eprintln!(
                "vdiskview: warning: {}: the bitmaps extension's autoclear bit is clear: a program without bitmap support \
                 wrote the image, so qemu ignores its {} bitmap(s)",
                path.display(),
                x.nb_bitmaps
            );
        }
    }
    let mut out: Vec<u8> = Vec::new();
    match name {
        None => list(&mut out, q, output)?,
        Some(n) => extents(&mut out, q, n, force, output)?,
    }
    super::check::emit(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

fn bitmap_json(q: &Qcow2, b: &Bitmap) -> Value {
    let dirty = q.bitmap_dirty_bytes(b, 0, q.header.size).ok();
    json!({
        "name": b.name,
        "granularity": b.granularity(),
        "flags": b.flag_names(),
        "type": b.kind_name(),
        "table-offset": b.table_offset,
        "table-size": b.table_size,
        "directory-entry-offset": b.entry_offset,
        "dirty-bytes": dirty,
    })
}

fn list(out: &mut impl Write, q: &Qcow2, output: Output) -> Result<()> {
    let all = q.bitmaps()?;
    match output {
        Output::Json => {
            let v: Vec<Value> = all.iter().map(|b| bitmap_json(q, b)).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Output::Human => {
            if all.is_empty() {
                writeln!(out, "no bitmaps")?;
                return Ok(());
            }
            writeln!(out, "{:<20} {:>11} {:<12} {:>18} {:>10} {:>14}", "NAME", "GRANULARITY", "FLAGS", "TABLE", "ENTRIES", "DIRTY")?;
            for b in &all {
                let flags = b.flag_names().join(",");
                let dirty = match q.bitmap_dirty_bytes(b, 0, q.header.size) {
                    Ok(d) => d.to_string(),
                    Err(_) => "damaged".into(),
                };
                writeln!(
                    out,
                    "{:<20} {:>11} {:<12} {:>18} {:>10} {:>14}",
                    b.name,
                    b.granularity(),
                    if flags.is_empty() { "-".to_string() } else { flags },
                    format!("0x{:x}", b.table_offset),
                    b.table_size,
                    dirty
                )?;
            }
        }
    }
    Ok(())
}

fn extents(out: &mut impl Write, q: &Qcow2, name: &str, force: bool, output: Output) -> Result<()> {
    let b = q.find_bitmap(name)?;
    if b.in_use() {
        // qemu-nbd -B refuses an inconsistent bitmap ("Bitmap '…' is inconsistent and cannot
        // be used"); shown only when asked
        if !force {
            bail!(
                "bitmap '{}' is in use (not saved cleanly, flag in_use): it may be inconsistent and qemu-nbd refuses to export it; \
                 --force shows it anyway",
                name
            );
        }
        eprintln!("vdiskview: warning: bitmap '{}' is in use (not saved cleanly): it may be inconsistent; qemu would not export it", name);
    }
    let ext = q.bitmap_extents(&b, 0, q.header.size)?;
    match output {
        Output::Json => {
            let v: Vec<Value> = ext.iter().map(|e| json!({"start": e.start, "length": e.length, "dirty": e.dirty})).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Output::Human => {
            for e in &ext {
                writeln!(out, "{:>10}  {:>10}    {}  {}", e.start, e.length, e.dirty as u8, if e.dirty { "dirty" } else { "clean" })?;
            }
        }
    }
    Ok(())
}

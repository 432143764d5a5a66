//! `vdiskview bitmaps`: the persistent dirty bitmaps of a qcow2 image, and with a NAME the
//! dirty and clean runs of that bitmap over the whole disk, as `qemu-nbd -B NAME` exports them
//! (what `nbdinfo --map=qemu:dirty-bitmap:NAME` prints).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::{open, Output};
use crate::image::qcow2::bitmap::Bitmap;
use crate::image::qcow2::Qcow2;
use crate::image::diff::{diff, Side};
use crate::image::OpenOptions;

pub fn run(
    path: &Path,
    opts: &OpenOptions,
    name: Option<&str>,
    force: bool,
    verify_against: Option<&str>,
    output: Output,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    if let Some(old) = verify_against {
        let Some(name) = name else { bail!("--verify-against needs the bitmap's NAME") };
        return verify(path, opts, name, old, output, out);
    }
    let img = open(path, &OpenOptions { no_backing: true, ..opts.clone() })?;
    let Some(q) = img.top().downcast_ref::<Qcow2>() else {
        bail!("{}: {} images have no persistent dirty bitmaps", path.display(), img.format().qemu_name());
    };
    if let Some(x) = q.bitmaps_ext() {
        if !x.consistent {
            crate::warnln!(
                "vdiskview: warning: {}: the bitmaps extension's autoclear bit is clear: a program without bitmap support \
                 wrote the image, so qemu ignores its {} bitmap(s)",
                path.display(),
                x.nb_bitmaps
            );
        }
    }
    match name {
        None => list(out, q, output)?,
        Some(n) => extents(out, q, n, force, output)?,
    }
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

fn list(out: &mut dyn Write, q: &Qcow2, output: Output) -> Result<()> {
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

fn extents(out: &mut dyn Write, q: &Qcow2, name: &str, force: bool, output: Output) -> Result<()> {
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
        crate::warnln!("vdiskview: warning: bitmap '{}' is in use (not saved cleanly): it may be inconsistent; qemu would not export it", name);
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

/// What `--verify-against` found: the changes a bitmap misses, and its dirty share that did
/// not change.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Verification {
    bitmap: String,
    granularity: u64,
    dirty_bytes: u64,
    changed_bytes: u64,
    /// Changed bytes inside clean granules: an incremental backup from this bitmap would
    /// miss them.
    missed_bytes: u64,
    /// Dirty bytes whose content did not change.
    dirty_unchanged_bytes: u64,
    missed: Vec<Range>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    length: u64,
}

/// The parts of `a` (sorted, disjoint) that lie outside every range of `b` (sorted, disjoint).
fn minus(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut j = 0;
    for r in a {
        let (mut s, e) = (r.start, r.start + r.length);
        while j < b.len() && b[j].start + b[j].length <= s {
            j += 1;
        }
        let mut k = j;
        while s < e {
            match b.get(k) {
                Some(x) if x.start < e => {
                    if x.start > s {
                        out.push(Range { start: s, length: x.start - s });
                    }
                    s = s.max(x.start + x.length);
                    k += 1;
                }
                _ => {
                    out.push(Range { start: s, length: e - s });
                    s = e;
                }
            }
        }
    }
    out
}

/// Check bitmap NAME of the image against OLD, the disk as it was when the bitmap was created
/// or cleared (an internal snapshot's name, or an image file): every changed byte must be in
/// a dirty granule.
fn verify(path: &Path, opts: &OpenOptions, name: &str, old: &str, output: Output, w: &mut dyn Write) -> Result<ExitCode> {
    let ro = OpenOptions { write: false, ..opts.clone() };
    let img = open(path, &ro)?;
    let Some(q) = img.top().downcast_ref::<Qcow2>() else {
        bail!("{}: {} images have no persistent dirty bitmaps", path.display(), img.format().qemu_name());
    };
    let b = q.find_bitmap(name)?;
    let size = q.header.size;
    let dirty: Vec<Range> = q
        .bitmap_extents(&b, 0, size)?
        .into_iter()
        .filter(|e| e.dirty)
        .map(|e| Range { start: e.start, length: e.length })
        .collect();
    let old_img = if Path::new(old).exists() {
        open(Path::new(old), &OpenOptions { format: None, ..ro.clone() })?
    } else {
        open(path, &OpenOptions { snapshot: Some(old.to_string()), ..ro.clone() })?
    };
    let report = diff(Side::new(&old_img.layers)?, Side::new(&img.layers)?, &mut |_, _| true)?;
    let changed: Vec<Range> = report.runs.iter().map(|r| Range { start: r.start, length: r.length }).collect();
    let missed = minus(&changed, &dirty);
    let sum = |v: &[Range]| v.iter().map(|r| r.length).sum::<u64>();
    let v = Verification {
        bitmap: name.to_string(),
        granularity: b.granularity(),
        dirty_bytes: sum(&dirty),
        changed_bytes: sum(&changed),
        missed_bytes: sum(&missed),
        dirty_unchanged_bytes: sum(&minus(&dirty, &changed)),
        missed,
    };
    let mut out = String::new();
    match output {
        Output::Json => out = serde_json::to_string_pretty(&v)? + "\n",
        Output::Human => {
            out += &format!(
                "bitmap '{}' (granularity {}): {} dirty bytes, {} changed bytes, {} dirty but unchanged\n",
                v.bitmap, v.granularity, v.dirty_bytes, v.changed_bytes, v.dirty_unchanged_bytes
            );
            if v.missed.is_empty() {
                out += "every change is in a dirty granule\n";
            } else {
                out += &format!("{} changed bytes in clean granules (an incremental backup would miss them):\n", v.missed_bytes);
                for r in &v.missed {
                    out += &format!("    0x{:x}+0x{:x}\n", r.start, r.length);
                }
            }
        }
    }
    w.write_all(out.as_bytes())?;
    Ok(ExitCode::from(if v.missed.is_empty() { 0 } else { 1 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_keeps_what_is_outside() {
        let r = |start, length| Range { start, length };
        assert_eq!(minus(&[r(0, 100)], &[r(10, 10), r(50, 60)]), vec![r(0, 10), r(20, 30)]);
        assert_eq!(minus(&[r(0, 10), r(20, 10)], &[]), vec![r(0, 10), r(20, 10)]);
        assert_eq!(minus(&[r(5, 5)], &[r(0, 100)]), vec![]);
    }
}

//! `vdiskview dump`: a hexdump whose rows name what they lie in — the host structure and
//! field (file space) or the layer and kind of the guest range (guest space).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{offset, open};
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, off: &str, length: &str, file: bool, out: &mut dyn Write) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let start = offset(off)?;
    let len = offset(length)?;
    let size = if file { img.top().file().len() } else { img.virtual_size() };
    if start >= size && len > 0 {
        bail!("offset 0x{:x} is past the end (0x{:x} bytes)", start, size);
    }
    let end = start.saturating_add(len).min(size);
    let width = if size > u32::MAX as u64 { 12 } else { 8 };
    let mut row = start / 16 * 16;
    let mut last_label = String::new();
    while row < end {
        let lo = row.max(start);
        let hi = (row + 16).min(end);
        let mut bytes = vec![0u8; (hi - lo) as usize];
        let label = if file {
            img.read_host(0, lo, &mut bytes)?;
            let r = img.locate_host(0, lo)?;
            match r.field_at(lo) {
                Some(f) => format!("{} / {}", r.name, f.name),
                None => r.name.clone(),
            }
        } else {
            img.read(lo, &mut bytes)?;
            let e = img.resolve(lo, 1)?;
            match e.host_at(0) {
                Some((_, h)) => format!("{} L{} @0x{:x}", e.kind_name(), e.depth, h),
                None => format!("{} L{}", e.kind_name(), e.depth),
            }
        };
        let mut hex = String::new();
        let mut asc = String::new();
        for i in 0..16u64 {
            let a = row + i;
            if a >= lo && a < hi {
                let b = bytes[(a - lo) as usize];
                hex += &format!("{:02x} ", b);
                asc.push(if (0x20..0x7f).contains(&b) { b as char } else { '.' });
            } else {
                hex += "   ";
                asc.push(' ');
            }
            if i == 7 {
                hex.push(' ');
            }
        }
        // name a structure once per run of rows, like a listing's section header
        let shown = if file && label == last_label { String::new() } else { label.clone() };
        writeln!(out, "{:0w$x}  {} |{}|  {}", row, hex, asc, shown, w = width)?;
        last_label = label;
        row += 16;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

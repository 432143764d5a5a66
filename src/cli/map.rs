//! `vdiskview map`: qemu-img map's output, entry for entry: the same block-status flags, the
//! same merging, the same formatting.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{open, Output};
use crate::image::{Extent, Image, OpenOptions};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    pub depth: usize,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    pub offset: Option<u64>,
    pub filename: Option<String>,
}

impl MapEntry {
    pub fn from_extent(img: &Image, e: &Extent) -> MapEntry {
        let crate::image::mapping::Status { present, zero, data, compressed, .. } = e.kind.status();
        let offset = e.host_at(0).map(|(_, h)| h);
        MapEntry {
            start: e.virt,
            length: e.len,
            depth: e.depth,
            present,
            zero,
            data,
            compressed,
            offset,
            filename: offset.and(img.host_name(e).map(str::to_string)),
        }
    }

    /// qemu-img's entry_mergeable.
    fn mergeable(&self, next: &MapEntry) -> bool {
        if self.length == 0 {
            return false;
        }
        if self.zero != next.zero
            || self.data != next.data
            || self.compressed != next.compressed
            || self.depth != next.depth
            || self.present != next.present
            || self.filename.is_some() != next.filename.is_some()
            || self.offset.is_some() != next.offset.is_some()
        {
            return false;
        }
        if self.filename.is_some() && self.filename != next.filename {
            return false;
        }
        if let (Some(a), Some(b)) = (self.offset, next.offset) {
            if a + self.length != b {
                return false;
            }
        }
        true
    }
}

/// The map of the whole guest disk, merged as qemu-img merges it; `human` applies qemu's
/// human-format coalescing of zero and unallocated ranges.
pub fn entries(img: &Image, human: bool, mut sink: impl FnMut(&MapEntry, bool) -> Result<()>) -> Result<()> {
    let length = img.virtual_size();
    let mut curr = MapEntry {
        start: 0,
        length: 0,
        depth: 0,
        present: false,
        zero: false,
        data: false,
        compressed: false,
        offset: None,
        filename: None,
    };
    while curr.start + curr.length < length {
        let off = curr.start + curr.length;
        let e = img.resolve(off, length - off)?;
        let mut next = MapEntry::from_extent(img, &e);
        if curr.mergeable(&next) {
            curr.length += next.length;
            continue;
        }
        if curr.length > 0 {
            sink(&curr, true)?;
            if human && (!next.data || next.zero) {
                // qemu-img ignores the distinction between 0, ZERO and ZERO|DATA here
                next.data = false;
                next.zero = true;
            }
        }
        curr = next;
    }
    sink(&curr, false)
}

pub fn run(path: &Path, opts: &OpenOptions, output: Output, out: &mut dyn Write) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let human = output == Output::Human;
    if human {
        writeln!(out, "{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to")?;
    } else {
        write!(out, "[")?;
    }
    let res = entries(&img, human, |e, more| {
        if human {
            if e.data && e.offset.is_none() {
                bail!("File contains external, encrypted or compressed clusters.");
            }
            if e.data && !e.zero {
                writeln!(
                    out,
                    "{:<16}{:<16}{:<16}{}",
                    hex(e.start),
                    hex(e.length),
                    hex(e.offset.unwrap_or(0)),
                    e.filename.as_deref().unwrap_or("")
                )?;
            }
        } else {
            write!(
                out,
                "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
                e.start, e.length, e.depth, e.present, e.zero, e.data, e.compressed
            )?;
            if let Some(o) = e.offset {
                write!(out, ", \"offset\": {}", o)?;
            }
            write!(out, "}}")?;
            if more {
                writeln!(out, ",")?;
            }
        }
        Ok(())
    });
    if !human && res.is_ok() {
        writeln!(out, "]")?;
    }
    out.flush()?;
    res?;
    Ok(ExitCode::SUCCESS)
}

/// C's `%#x`: `0x` prefix except for zero.
fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{:#x}", v)
    }
}

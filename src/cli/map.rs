//! `vdiskview map`: qemu-img map's output, entry for entry: the same block-status flags, the
//! same merging, the same formatting.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{open, Output};
use crate::image::{Extent, Image, OpenOptions};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry<'a> {
    pub start: u64,
    pub length: u64,
    pub depth: usize,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    pub offset: Option<u64>,
    pub filename: Option<&'a str>,
}

impl<'a> MapEntry<'a> {
    pub fn from_extent(img: &'a Image, e: &Extent) -> MapEntry<'a> {
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
            filename: offset.and(img.host_name(e)),
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
pub fn entries<'a>(img: &'a Image, human: bool, mut sink: impl FnMut(&MapEntry<'a>, bool) -> Result<()>) -> Result<()> {
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
    // entries are formatted into one buffer, written out in large pieces: a fragmented disk
    // has hundreds of thousands of them
    let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK + 512);
    if human {
        buf.extend_from_slice(format!("{:<16}{:<16}{:<16}File\n", "Offset", "Length", "Mapped to").as_bytes());
    } else {
        buf.push(b'[');
    }
    let res = entries(&img, human, |e, more| {
        if human {
            if e.data && e.offset.is_none() {
                bail!("File contains external, encrypted or compressed clusters.");
            }
            if e.data && !e.zero {
                for v in [e.start, e.length, e.offset.unwrap_or(0)] {
                    pad16(&mut buf, |b| hex(b, v));
                }
                buf.extend_from_slice(e.filename.unwrap_or("").as_bytes());
                buf.push(b'\n');
            }
        } else {
            buf.extend_from_slice(b"{ \"start\": ");
            dec(&mut buf, e.start);
            buf.extend_from_slice(b", \"length\": ");
            dec(&mut buf, e.length);
            buf.extend_from_slice(b", \"depth\": ");
            dec(&mut buf, e.depth as u64);
            for (name, v) in [("present", e.present), ("zero", e.zero), ("data", e.data), ("compressed", e.compressed)] {
                buf.extend_from_slice(b", \"");
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(if v { b"\": true" } else { b"\": false" });
            }
            if let Some(o) = e.offset {
                buf.extend_from_slice(b", \"offset\": ");
                dec(&mut buf, o);
            }
            buf.push(b'}');
            if more {
                buf.extend_from_slice(b",\n");
            }
        }
        if buf.len() >= OUT_CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(())
    });
    if !human && res.is_ok() {
        buf.extend_from_slice(b"]\n");
    }
    out.write_all(&buf)?;
    out.flush()?;
    res?;
    Ok(ExitCode::SUCCESS)
}

/// Output is handed on in pieces of about this size.
const OUT_CHUNK: usize = 64 << 10;

/// `v` in decimal.
fn dec(buf: &mut Vec<u8>, mut v: u64) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&d[i..]);
}

/// C's `%#x`: `0x` prefix except for zero.
fn hex(buf: &mut Vec<u8>, v: u64) {
    if v == 0 {
        buf.push(b'0');
        return;
    }
    buf.extend_from_slice(b"0x");
    let digits = (64 - v.leading_zeros()).div_ceil(4);
    for k in (0..digits).rev() {
        buf.push(b"0123456789abcdef"[((v >> (4 * k)) & 0xf) as usize]);
    }
}

/// What `f` appends, left-aligned in 16 columns (C's `%-16s`).
fn pad16(buf: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    f(buf);
    let n = buf.len() - at;
    buf.resize(buf.len() + 16usize.saturating_sub(n), b' ');
}

//! `vdiskview read`: raw bytes of the guest disk (through the chain) or of the host file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{offset, open};
use crate::image::OpenOptions;

const CHUNK: u64 = 4 << 20;

pub fn run(path: &Path, opts: &OpenOptions, off: &str, length: Option<&str>, file: bool) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let start = offset(off)?;
    let size = if file { img.top().file().len() } else { img.virtual_size() };
    if start > size {
        bail!("offset 0x{:x} is past the end of the {} (0x{:x} bytes)", start, if file { "file" } else { "disk" }, size);
    }
    let len = match length {
        Some(l) => offset(l)?,
        None => size - start,
    };
    if start.checked_add(len).is_none_or(|e| e > size) {
        bail!(
            "0x{:x} bytes at 0x{:x} go past the end of the {} (0x{:x} bytes)",
            len,
            start,
            if file { "file" } else { "disk" },
            size
        );
    }
    // Straight to fd 1: Rust's stdout is line-buffered and would scan every chunk for
    // newlines (82% of the time of a sparse read, measured with perf).
    let _lock = std::io::stdout().lock();
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut out = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1) });
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut pos = start;
    while pos < start + len {
        let n = CHUNK.min(start + len - pos) as usize;
        if file {
            img.read_host(0, pos, &mut buf[..n])?;
        } else {
            img.read(pos, &mut buf[..n])?;
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
        pos += n as u64;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

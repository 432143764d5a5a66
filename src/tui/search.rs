//! `/` search: bytes given as hex pairs ("de ad be ef") or as text, forward from the cursor
//! in the current space, in chunks, as a job (see jobs.rs): cancellable, with progress.

use super::jobs::Ctx;
use super::state::Space;
use crate::image::Image;

const CHUNK: u64 = 1 << 20;

/// Hex when written `0xdeadbeef` or as separate byte pairs `de ad be ef`; text otherwise.
pub fn pattern(text: &str) -> Result<Vec<u8>, String> {
    let hex = |t: &str| -> Option<Vec<u8>> {
        (t.len().is_multiple_of(2) && !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap()).collect())
    };
    if let Some(b) = text.trim().strip_prefix("0x").and_then(hex) {
        return Ok(b);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() > 1 && words.iter().all(|w| w.len() == 2) {
        if let Some(b) = hex(&words.concat()) {
            return Ok(b);
        }
    }
    if text.is_empty() {
        return Err("empty search".into());
    }
    Ok(text.as_bytes().to_vec())
}

/// Forward from `from` to the end of the space, a chunk at a time (overlapping by the
/// pattern's length so a match across chunks is found); the cancel flag is looked at and
/// progress reported between chunks. `Ok(None)`: not found (or cancelled).
pub fn search(img: &Image, space: Space, layer: usize, from: u64, pat: &[u8], ctx: &Ctx) -> Result<Option<u64>, String> {
    if pat.is_empty() {
        return Err("empty search".into());
    }
    let size = match space {
        Space::Virt => img.virtual_size(),
        Space::File => img.layers.get(layer).ok_or("no such layer")?.layer.file().len(),
    };
    let start = from.min(size);
    let mut pos = start;
    let mut buf = vec![0u8; (CHUNK + pat.len() as u64) as usize];
    while pos < size {
        if ctx.cancelled() {
            return Ok(None);
        }
        (ctx.progress)(pos - start, size - start);
        let n = (CHUNK + pat.len() as u64).min(size - pos) as usize;
        let r = match space {
            Space::Virt => img.read(pos, &mut buf[..n]),
            Space::File => img.read_host(layer, pos, &mut buf[..n]),
        };
        r.map_err(|e| e.to_string())?;
        if let Some(i) = buf[..n].windows(pat.len()).position(|w| w == pat) {
            return Ok(Some(pos + i as u64));
        }
        pos += CHUNK;
    }
    Ok(None)
}

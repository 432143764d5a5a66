//! Search like a pager's: `/` forward and `?` backward from the cursor in the current space,
//! `n`/`N` repeat, wrapping round the end once. A pattern is hex pairs (`de ad be ef`,
//! `0xdeadbeef`) with `??` for any byte, or text (case-insensitive unless toggled). The scan
//! runs in chunks as a job (see jobs.rs): cancellable, with progress.

use super::jobs::Ctx;
use super::state::Space;
use crate::image::Image;

const CHUNK: u64 = 1 << 20;

/// What to look for: bytes with a mask (`false`: any byte), and whether ASCII letters match
/// either case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub bytes: Vec<u8>,
    pub mask: Vec<bool>,
    pub icase: bool,
}

impl Pattern {
    pub fn exact(bytes: &[u8]) -> Pattern {
        Pattern { bytes: bytes.to_vec(), mask: vec![true; bytes.len()], icase: false }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the pattern matches at the start of `w` (as long as the pattern).
    pub fn matches(&self, w: &[u8]) -> bool {
        w.len() >= self.bytes.len()
            && self.bytes.iter().zip(&self.mask).zip(w).all(|((&p, &m), &b)| !m || p == b || (self.icase && p.eq_ignore_ascii_case(&b)))
    }

    /// Offsets in `hay` where a match starts.
    pub fn find_all<'a>(&'a self, hay: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let n = self.len().max(1);
        (0..hay.len().saturating_sub(n - 1)).filter(move |&i| self.matches(&hay[i..]))
    }
}

/// Hex when written `0xdeadbeef` or as separate byte pairs `de ad ?? ef` (`??` any byte);
/// text otherwise, matched without regard to case when `icase`.
pub fn parse(text: &str, icase: bool) -> Result<Pattern, String> {
    let hex = |t: &str| -> Option<Vec<u8>> {
        (t.len().is_multiple_of(2) && !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap()).collect())
    };
    if let Some(b) = text.trim().strip_prefix("0x").and_then(hex) {
        return Ok(Pattern::exact(&b));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let pair = |w: &&str| w.len() == 2 && (*w == "??" || w.chars().all(|c| c.is_ascii_hexdigit()));
    if words.len() > 1 && words.iter().all(pair) {
        if words.iter().all(|w| *w == "??") {
            return Err("a pattern of only ?? matches everything".into());
        }
        let bytes = words.iter().map(|w| u8::from_str_radix(w, 16).unwrap_or(0)).collect();
        let mask = words.iter().map(|w| *w != "??").collect();
        return Ok(Pattern { bytes, mask, icase: false });
    }
    if text.is_empty() {
        return Err("empty search".into());
    }
    Ok(Pattern { bytes: text.as_bytes().to_vec(), mask: vec![true; text.len()], icase })
}

/// The pattern as the old `/` took it: exact bytes (hex, or text as typed).
pub fn pattern(text: &str) -> Result<Vec<u8>, String> {
    parse(text, false).map(|p| p.bytes)
}

fn space_len(img: &Image, space: Space, layer: usize) -> Result<u64, String> {
    Ok(match space {
        Space::Virt => img.virtual_size(),
        Space::File => img.layers.get(layer).ok_or("no such layer")?.layer.file().len(),
    })
}

fn read(img: &Image, space: Space, layer: usize, off: u64, buf: &mut [u8]) -> Result<(), String> {
    match space {
        Space::Virt => img.read(off, buf),
        Space::File => img.read_host(layer, off, buf),
    }
    .map_err(|e| e.to_string())
}

/// The first (forward) or last (backward) match starting in `[start, end)`, a chunk at a
/// time (chunks overlap by the pattern's length); `done` counts the bytes scanned for the
/// progress report. `Ok(None)` also when cancelled.
#[allow(clippy::too_many_arguments)]
fn find_in(img: &Image, space: Space, layer: usize, size: u64, start: u64, end: u64, pat: &Pattern, backward: bool, ctx: &Ctx, done: &mut u64) -> Result<Option<u64>, String> {
    let extra = pat.len() as u64 - 1;
    let mut buf = vec![0u8; (CHUNK + extra) as usize];
    // forward: [lo, hi) moves up from start; backward: down from end
    let (mut lo, mut hi) = if backward { (end.saturating_sub(CHUNK).max(start), end) } else { (start, (start + CHUNK).min(end)) };
    while lo < hi {
        if ctx.cancelled() {
            return Ok(None);
        }
        (ctx.progress)(*done, size);
        let n = ((hi + extra).min(size) - lo) as usize;
        read(img, space, layer, lo, &mut buf[..n])?;
        let starts = (hi - lo) as usize;
        let hit = if backward {
            (0..starts).rev().find(|&i| pat.matches(&buf[i..n]))
        } else {
            (0..starts).find(|&i| pat.matches(&buf[i..n]))
        };
        if let Some(i) = hit {
            return Ok(Some(lo + i as u64));
        }
        *done += hi - lo;
        if backward {
            hi = lo;
            lo = hi.saturating_sub(CHUNK).max(start);
        } else {
            lo = hi;
            hi = (lo + CHUNK).min(end);
        }
    }
    Ok(None)
}

/// From `from` (forward: matches starting at `from` or later; backward: before `from`) to the
/// end of the space, then once round from the other end. `Ok(Some((offset, wrapped)))`.
pub fn search(img: &Image, space: Space, layer: usize, from: u64, pat: &Pattern, backward: bool, ctx: &Ctx) -> Result<Option<(u64, bool)>, String> {
    if pat.is_empty() {
        return Err("empty search".into());
    }
    let size = space_len(img, space, layer)?;
    let from = from.min(size);
    let mut done = 0;
    let (first, second) = if backward { ((0, from), (from, size)) } else { ((from, size), (0, from)) };
    if let Some(o) = find_in(img, space, layer, size, first.0, first.1, pat, backward, ctx, &mut done)? {
        return Ok(Some((o, false)));
    }
    if ctx.cancelled() {
        return Ok(None);
    }
    Ok(find_in(img, space, layer, size, second.0, second.1, pat, backward, ctx, &mut done)?.map(|o| (o, true)))
}

//! `/` search: bytes given as hex pairs ("de ad be ef") or as text, forward from the cursor
//! in the current space, in bounded chunks.

use super::state::{AppState, Space};
use super::update::space_size;
use crate::image::Image;

const CHUNK: u64 = 1 << 20;
/// How far one search looks before giving up, so a key press never hangs on a huge image.
const LIMIT: u64 = 1 << 30;

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

pub fn search(st: &AppState, img: &Image, text: &str) -> Result<Option<u64>, String> {
    let pat = pattern(text)?;
    let size = space_size(st, img);
    let mut pos = st.cursor + 1;
    let stop = size.min(pos.saturating_add(LIMIT));
    let mut buf = vec![0u8; (CHUNK + pat.len() as u64) as usize];
    while pos < stop {
        let n = (CHUNK + pat.len() as u64).min(size - pos) as usize;
        let r = match st.space {
            Space::Virt => img.read(pos, &mut buf[..n]),
            Space::File => img.read_host(st.file_layer, pos, &mut buf[..n]),
        };
        r.map_err(|e| e.to_string())?;
        if let Some(i) = buf[..n].windows(pat.len()).position(|w| w == pat.as_slice()) {
            return Ok(Some(pos + i as u64));
        }
        pos += CHUNK;
    }
    Ok(None)
}

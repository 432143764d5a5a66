//! LZNT1, the compression of NTFS-compressed files: a compression unit (16 clusters) stored in
//! fewer clusters holds a sequence of chunks, each decompressing to (at most) 4096 bytes.
//! A chunk has a 16-bit header (bit 15: compressed; low 12 bits: stored size - 1); a
//! compressed chunk is groups of a flag byte and 8 tokens: a literal byte, or a 16-bit
//! back-reference whose split between offset and length bits depends on how far into the
//! 4096-byte chunk the output is.

use crate::guest::{Error, Result};

const CHUNK: usize = 4096;

fn bad(msg: &str) -> Error {
    Error::Damaged(format!("damaged NTFS-compressed data (LZNT1): {}", msg))
}

/// Decompress `src` into `out` (the unit's buffer, whose length bounds the output); returns
/// the bytes written. Chunk `i` is placed at `i * 4096`; a chunk that decompresses short
/// leaves zeros up to the next.
pub fn decompress(src: &[u8], out: &mut [u8]) -> Result<usize> {
    let mut s = 0usize;
    let mut chunk_start = 0usize;
    let mut written = 0usize;
    while s + 2 <= src.len() && chunk_start < out.len() {
        let h = u16::from_le_bytes([src[s], src[s + 1]]);
        if h == 0 {
            break;
        }
        let size = (h & 0x0fff) as usize + 1;
        s += 2;
        if s + size > src.len() {
            return Err(bad("a chunk past the end of the compression unit"));
        }
        let data = &src[s..s + size];
        s += size;
        let limit = (chunk_start + CHUNK).min(out.len());
        let end = if h & 0x8000 == 0 {
            // stored as is
            let n = data.len().min(limit - chunk_start);
            out[chunk_start..chunk_start + n].copy_from_slice(&data[..n]);
            chunk_start + n
        } else {
            chunk(data, out, chunk_start, limit)?
        };
        written = written.max(end);
        chunk_start += CHUNK;
    }
    Ok(written)
}

/// One compressed chunk into `out[start..limit]`; returns the end of its output.
fn chunk(data: &[u8], out: &mut [u8], start: usize, limit: usize) -> Result<usize> {
    let mut d = start;
    let mut i = 0usize;
    while i < data.len() {
        let flags = data[i];
        i += 1;
        for bit in 0..8 {
            if i >= data.len() || d >= limit {
                return Ok(d);
            }
            if flags >> bit & 1 == 0 {
                out[d] = data[i];
                d += 1;
                i += 1;
                continue;
            }
            if i + 2 > data.len() {
                return Err(bad("a back-reference cut short"));
            }
            let t = u16::from_le_bytes([data[i], data[i + 1]]) as usize;
            i += 2;
            let pos = d - start;
            if pos == 0 {
                return Err(bad("a back-reference at the start of a chunk"));
            }
            // offset bits: 4 while 16 or fewer bytes are out, one more each doubling
            let mut len_bits = 12u32;
            let mut p = pos - 1;
            while p >= 0x10 {
                p >>= 1;
                len_bits -= 1;
            }
            let back = (t >> len_bits) + 1;
            let len = (t & ((1 << len_bits) - 1)) + 3;
            if back > pos {
                return Err(bad("a back-reference before the start of its chunk"));
            }
            for _ in 0..len {
                if d >= limit {
                    return Ok(d);
                }
                out[d] = out[d - back];
                d += 1;
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_backref() {
        // "abc" then a back-reference of 3 back, 6 long: "abcabcabc"
        // flags 0b1000: tokens 0..2 literals, token 3 a reference; at pos 3 the offset has
        // 4 bits and the length 12: back-1 = 2, len-3 = 3 -> (2 << 12) | 3
        let t: u16 = (2 << 12) | 3;
        let body = [0b1000u8, b'a', b'b', b'c', t as u8, (t >> 8) as u8];
        let mut src = vec![];
        let h: u16 = 0x8000 | 0x3000 | (body.len() as u16 - 1);
        src.extend_from_slice(&h.to_le_bytes());
        src.extend_from_slice(&body);
        let mut out = vec![0u8; 64];
        let n = decompress(&src, &mut out).unwrap();
        assert_eq!(&out[..n], b"abcabcabc");
    }

    #[test]
    fn damage_is_an_error() {
        // a reference as the first token
        let src = [0x02, 0xb0, 0x01, 0x00, 0x10];
        assert!(decompress(&src, &mut [0u8; 4096]).is_err());
        // a chunk longer than the input
        assert!(decompress(&[0xff, 0xbf, 0], &mut [0u8; 4096]).is_err());
    }
}

//! LZO1X decompression and btrfs's framing of it, our own (no well-kept small Rust crate
//! decodes LZO1X; this follows the published prose description of the stream, "LZO stream
//! format as understood by Linux's LZO decompressor").
//!
//! btrfs frames an lzo extent as: LE32 total length (with itself), then segments of LE32
//! length + an LZO1X stream that decodes to at most one sector (4 KiB); a segment header
//! never straddles a 4 KiB boundary (fewer than 4 bytes left: skip to the next sector).
//! Every read and every back-reference is checked; output is bounded by the caller.

const SECTOR: usize = 4096;

fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Decode a btrfs lzo-compressed extent (regular or inline) into at most `ram` bytes.
pub fn decompress_btrfs(src: &[u8], ram: u64) -> std::result::Result<Vec<u8>, String> {
    let total = le32(src, 0).ok_or("lzo: no length header")? as usize;
    if total < 4 || total > src.len() {
        return Err(format!("lzo: total length {} does not fit the {} stored bytes", total, src.len()));
    }
    let ram = ram as usize;
    let mut out = Vec::with_capacity(ram.min(16 << 20));
    let mut pos = 4;
    while pos < total && out.len() < ram {
        let left = SECTOR - pos % SECTOR;
        if left < 4 {
            pos += left;
            if pos >= total {
                break;
            }
        }
        let seg = le32(src, pos).ok_or("lzo: segment header past the end")? as usize;
        pos += 4;
        if seg == 0 || pos + seg > total {
            return Err(format!("lzo: a segment of {} bytes at {} runs past the extent's {} bytes", seg, pos - 4, total));
        }
        let limit = (ram - out.len()).min(SECTOR);
        lzo1x_decompress(&src[pos..pos + seg], &mut out, limit)?;
        pos += seg;
    }
    Ok(out)
}

/// Decode one LZO1X stream, appending at most `limit` bytes to `out`; back-references reach
/// only into this stream's own output (each btrfs segment is a stream of its own).
pub fn lzo1x_decompress(src: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), String> {
    let base = out.len();
    let end = base + limit;
    let mut ip = 0usize;
    let byte = |ip: &mut usize| -> std::result::Result<usize, String> {
        let b = *src.get(*ip).ok_or("lzo: stream ends inside an instruction")?;
        *ip += 1;
        Ok(b as usize)
    };
    // a length with the zero-byte extension: `bits` low bits of `t`, `mask` when all zero
    let long_len = |ip: &mut usize, t: usize, mask: usize| -> std::result::Result<usize, String> {
        let l = t & mask;
        if l != 0 {
            return Ok(l);
        }
        let mut n = mask;
        loop {
            let b = *src.get(*ip).ok_or("lzo: stream ends inside a length")?;
            *ip += 1;
            if b != 0 {
                return Ok(n + b as usize);
            }
            n += 255;
            if n > 1 << 24 {
                return Err("lzo: length run too long".into());
            }
        }
    };
    let literals = |ip: &mut usize, out: &mut Vec<u8>, n: usize| -> std::result::Result<(), String> {
        let s = src.get(*ip..*ip + n).ok_or("lzo: literals run past the stream")?;
        if out.len() + n > end {
            return Err("lzo: the stream decodes to more than a sector".into());
        }
        out.extend_from_slice(s);
        *ip += n;
        Ok(())
    };
    let copy = |out: &mut Vec<u8>, dist: usize, len: usize| -> std::result::Result<(), String> {
        if dist == 0 || dist > out.len() - base {
            return Err(format!("lzo: a back-reference {} bytes back, before the start", dist));
        }
        if out.len() + len > end {
            return Err("lzo: the stream decodes to more than a sector".into());
        }
        let from = out.len() - dist;
        for k in 0..len {
            let b = out[from + k];
            out.push(b);
        }
        Ok(())
    };
    let mut state;
    let first = *src.first().ok_or("lzo: empty stream")? as usize;
    if first == 17 {
        return Err("lzo: a versioned (LZO-RLE) stream".into());
    }
    if first > 17 {
        ip = 1;
        let n = first - 17;
        literals(&mut ip, out, n)?;
        state = if n <= 3 { n } else { 4 };
    } else {
        state = 0;
    }
    loop {
        let t = byte(&mut ip)?;
        let s;
        if t < 16 {
            if state == 0 {
                let n = 3 + long_len(&mut ip, t, 15)?;
                literals(&mut ip, out, n)?;
                state = 4;
                continue;
            }
            let h = byte(&mut ip)?;
            s = t & 3;
            if state < 4 {
                copy(out, (h << 2) + ((t >> 2) & 3) + 1, 2)?;
            } else {
                copy(out, (h << 2) + ((t >> 2) & 3) + 2049, 3)?;
            }
        } else if t < 32 {
            let len = 2 + long_len(&mut ip, t, 7)?;
            let d = byte(&mut ip)? | byte(&mut ip)? << 8;
            s = d & 3;
            let dist = 16384 + ((t & 8) << 11) + (d >> 2);
            if dist == 16384 {
                return if ip == src.len() || src[ip..].iter().all(|&b| b == 0) {
                    Ok(())
                } else {
                    Err("lzo: bytes after the end of the stream".into())
                };
            }
            copy(out, dist, len)?;
        } else if t < 64 {
            let len = 2 + long_len(&mut ip, t, 31)?;
            let d = byte(&mut ip)? | byte(&mut ip)? << 8;
            s = d & 3;
            copy(out, (d >> 2) + 1, len)?;
        } else {
            let h = byte(&mut ip)?;
            s = t & 3;
            let dist = (h << 3) + ((t >> 2) & 7) + 1;
            let len = if t < 128 { 3 + ((t >> 5) & 1) } else { 5 + ((t >> 5) & 3) };
            copy(out, dist, len)?;
        }
        if s > 0 {
            literals(&mut ip, out, s)?;
        }
        state = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((8 + stream.len()) as u32).to_le_bytes());
        v.extend_from_slice(&(stream.len() as u32).to_le_bytes());
        v.extend_from_slice(stream);
        v
    }

    #[test]
    fn literals_and_matches() {
        // "hello world": a first-byte literal run and the end marker
        let mut s = vec![17 + 11];
        s.extend_from_slice(b"hello world");
        s.extend_from_slice(&[0x11, 0, 0]);
        assert_eq!(decompress_btrfs(&frame(&s), 100).unwrap(), b"hello world");
        // "abc" then a 9-byte copy from 3 back (001LLLLL, L = 7, D = 2)
        let s = [20, b'a', b'b', b'c', 0x27, 0x08, 0x00, 0x11, 0, 0];
        assert_eq!(decompress_btrfs(&frame(&s), 100).unwrap(), b"abcabcabcabc");
        // 01LDDDSS: "abcd" then 3 bytes from 4 back (D = 3, H = 0) and one trailing literal
        let s = [21, b'a', b'b', b'c', b'd', 0x40 | (3 << 2) | 1, 0, b'z', 0x11, 0, 0];
        assert_eq!(decompress_btrfs(&frame(&s), 100).unwrap(), b"abcdabcz");
        // a long literal run after a match with state 0 (0000LLLL, L = 0: 15 + 2 + 3 = 20)
        let mut s = vec![20, b'x', b'y', b'z', 0x40 | (2 << 2), 0, 0x00, 2];
        s.extend_from_slice(b"0123456789abcdefghij");
        s.extend_from_slice(&[0x11, 0, 0]);
        assert_eq!(decompress_btrfs(&frame(&s), 100).unwrap(), b"xyzxyz0123456789abcdefghij");
    }

    #[test]
    fn damage_is_an_error() {
        assert!(decompress_btrfs(&[], 10).is_err());
        assert!(decompress_btrfs(&frame(&[20, b'a']), 10).is_err());
        // a back-reference before the start
        assert!(decompress_btrfs(&frame(&[18, b'a', 0x27, 0x40, 0x00, 0x11, 0, 0]), 100).is_err());
        // more than asked for
        let mut s = vec![17 + 11];
        s.extend_from_slice(b"hello world");
        s.extend_from_slice(&[0x11, 0, 0]);
        assert!(decompress_btrfs(&frame(&s), 5).is_err());
    }
}

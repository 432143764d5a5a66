//! Compressed clusters: raw deflate (zlib compression type) or zstd, decompressed into exactly
//! one cluster; output is bounded by the cluster size whatever the input claims.

use std::io::Read;

use crate::image::{Error, Result};

pub fn decompress(kind: u8, input: &[u8], out: &mut [u8]) -> Result<()> {
    match kind {
        0 => inflate(input, out),
        1 => unzstd(input, out),
        k => Err(Error::Unsupported(format!("compression type {} is not supported", k))),
    }
}

fn inflate(input: &[u8], out: &mut [u8]) -> Result<()> {
    let mut d = flate2::Decompress::new(false);
    let status = d
        .decompress(input, out, flate2::FlushDecompress::Finish)
        .map_err(|e| Error::corrupt(format!("compressed cluster does not inflate: {}", e)))?;
    // qemu accepts a stream that fills the cluster, ended or not
    if (d.total_out() as usize) < out.len() {
        return Err(Error::corrupt(format!(
            "compressed cluster inflates to {} bytes, not a whole cluster of {} ({:?})",
            d.total_out(),
            out.len(),
            status
        )));
    }
    Ok(())
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<()> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| Error::corrupt(format!("zstd: {}", e)))?
        .single_frame();
    dec.read_exact(out)
        .map_err(|e| Error::corrupt(format!("compressed cluster does not decompress as zstd: {}", e)))
}

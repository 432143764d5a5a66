//! Compressed clusters: deflate or zstd into exactly one cluster. Input: [type][cluster bits][data].
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::qcow2::compress::decompress;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = data[0] % 3;
    let bits = 9 + (data[1] % 13) as u32;
    let mut out = vec![0u8; 1 << bits];
    let _ = decompress(kind, &data[2..], &mut out);
});

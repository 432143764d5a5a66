//! NTFS compression (LZNT1): one compression unit's stored bytes into a unit buffer.
//! Input: [unit size: 512 << (byte % 8)][compressed bytes].
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::guest::fs::ntfs::lznt1::decompress;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mut out = vec![0u8; 512 << (data[0] % 8)];
    if let Ok(n) = decompress(&data[1..], &mut out) {
        assert!(n <= out.len());
    }
});

//! Offset expressions: numbers, suffixes, + - * /, parentheses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(v) = vdiskview_core::image::expr::parse(s) {
            // a value parses back to itself
            assert_eq!(vdiskview_core::image::expr::parse(&v.to_string()), Ok(v));
        }
    }
});

//! A whole VHDX file (fixed, dynamic, differencing, with a log): open, map, read, tables,
//! check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::Format;

fuzz_target!(|data: &[u8]| {
    let format = Format::parse("vhdx").expect("vhdx is registered");
    let path = vdiskview_fuzz::image_file(data);
    if let Ok(img) = vdiskview_fuzz::open(&path, format) {
        vdiskview_fuzz::exercise(&img);
    }
    let _ = vdiskview_core::image::check::check_path(&path, Some(format));
});

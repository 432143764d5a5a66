//! A whole VDI file (pre-header, header, block map): open, map, read, tables, check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::Format;

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vdi) {
        vdiskview_fuzz::exercise(&img);
    }
    let _ = vdiskview_core::image::check::check_path(&path, Some(Format::Vdi));
});

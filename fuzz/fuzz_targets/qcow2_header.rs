//! The qcow2 header (v2/v3) and its extensions, decoded field by field.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::io::HostFile;
use vdiskview_core::image::qcow2::header::Header;

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    let Ok(file) = HostFile::open(&path, "fuzz".into()) else { return };
    if let Ok(h) = Header::read(&file) {
        let _ = h.fields();
        let _ = h.regions();
        let _ = h.compression_name();
        let _ = h.refcount_bits();
        let _ = h.feature_name(0, 3);
        for e in &h.extensions {
            let _ = e.name();
        }
    }
});

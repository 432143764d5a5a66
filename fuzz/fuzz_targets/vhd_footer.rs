//! The VHD footer: 512 bytes decoded field by field, checksum, size by CHS or current_size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::vhd::footer::Footer;

fuzz_target!(|data: &[u8]| {
    let mut b = [0u8; 512];
    let n = data.len().min(512);
    b[..n].copy_from_slice(&data[..n]);
    let f = Footer::parse(data.len() as u64, b);
    let _ = f.cookie_ok();
    let _ = f.checksum_ok();
    let _ = f.virtual_size();
    let _ = f.chs_size();
    let _ = f.disk_type_name();
    for field in f.fields() {
        assert!(field.off >= f.offset && field.off + field.len <= f.offset + 512);
    }
});

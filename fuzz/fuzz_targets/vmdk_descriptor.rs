//! The VMDK descriptor parser and probe on arbitrary text: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::vmdk::descriptor::{looks_like_descriptor, Descriptor};

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_descriptor(data);
    if let Ok(d) = Descriptor::parse(&String::from_utf8_lossy(data)) {
        let _ = d.total_bytes();
        let _ = d.ddb("ddb.adapterType");
    }
});

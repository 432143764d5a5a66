//! MBR (with extended boot record chains) and GPT (both headers, entry arrays, CRCs), the
//! filesystem probe of each partition, and an ext filesystem's root directory: the input is
//! the guest disk, read as a raw image.
#![no_main]
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use vdiskview_core::guest;
use vdiskview_core::image::Format;

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    let Ok(img) = vdiskview_fuzz::open(&path, Format::Raw) else { return };
    if let Ok(t) = guest::partitions::read_table(&img) {
        for p in &t.partitions {
            let _ = p.type_id.id();
            let _ = p.type_id.name();
            let _ = p.readable_range(t.disk_size);
        }
        let _ = guest::select_volume(&img, &t, None);
    }
    let img = Rc::new(img);
    if let Ok(fs) = guest::open_fs(img, None) {
        if let Ok(entries) = fs.read_dir("/") {
            for e in entries.iter().take(8) {
                let p = format!("/{}", e.name);
                let _ = fs.stat(&p);
                let _ = fs.file_map(&p);
            }
        }
    }
});

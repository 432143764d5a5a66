//! A monolithic VMDK file (hosted sparse header + embedded descriptor, or streamOptimized with markers and footer): open, map, read, tables, check; then, opened for writing, a whole grain (a compressed one in a streamOptimized file) and a partial one written, and the result opened again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::{self, Format, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vmdk) {
        vdiskview_fuzz::exercise(&img);
    }
    let _ = vdiskview_core::image::check::check_path(&path, Some(Format::Vmdk));
    // writes: bounded (the disk may claim terabytes; a grain is at most 1 MiB here)
    let opts = OpenOptions { format: Some(Format::Vmdk), no_backing: true, write: true, ..Default::default() };
    if let Ok(mut img) = image::open(&path, &opts) {
        let size = img.virtual_size();
        let grain = img.top().cluster_size().unwrap_or(64 << 10).min(1 << 20);
        for (virt, len) in [(0, grain), (size / 2 / grain * grain, grain), (size / 3, 512)] {
            let len = len.min(size.saturating_sub(virt));
            if len > 0 {
                let _ = img.write(virt, &vec![0x5a; len as usize]);
            }
        }
    }
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vmdk) {
        let mut b = vec![0u8; 4096];
        let _ = img.read(0, &mut b);
    }
});

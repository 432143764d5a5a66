//! A whole VDI file (pre-header, header, block map): open, map, read, tables, check; then, opened for writing, a whole block and a partial one written (new blocks allocated in 1 MiB pieces, however large the header says a block is), and the result opened again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::{self, Format, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vdi) {
        vdiskview_fuzz::exercise(&img);
    }
    let _ = vdiskview_core::image::check::check_path(&path, Some(Format::Vdi));
    // writes: bounded (the disk may claim terabytes; at most 1 MiB is written per call here)
    let opts = OpenOptions { format: Some(Format::Vdi), no_backing: true, write: true, ..Default::default() };
    if let Ok(mut img) = image::open(&path, &opts) {
        let size = img.virtual_size();
        let block = img.top().cluster_size().unwrap_or(1 << 20).min(1 << 20);
        for (virt, len) in [(0, block), (size / 2 / block * block, block), (size / 3, 512)] {
            let len = len.min(size.saturating_sub(virt));
            if len > 0 {
                let _ = img.write(virt, &vec![0x5a; len as usize]);
            }
        }
    }
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vdi) {
        let mut b = vec![0u8; 4096];
        let _ = img.read(0, &mut b);
    }
});

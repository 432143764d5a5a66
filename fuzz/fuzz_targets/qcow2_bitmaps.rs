//! The bitmaps extension, the bitmap directory, the bitmap tables and their data. The input is
//! [nb_bitmaps, 2 bytes][directory size, 4 bytes][the file from 0x200 on], behind a valid v3
//! header (512-byte clusters, 1 MiB disk, the L1 table at 0x200) with a consistent bitmaps
//! extension pointing at a directory at 0x400.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::Format;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let nb = u16::from_be_bytes([data[0], data[1]]) as u32;
    let dir_size = u32::from_be_bytes(data[2..6].try_into().unwrap()) as u64;
    let mut file = vdiskview_fuzz::qcow2_template(1 << 20, 0, 0, Some((nb, dir_size, 0x400)));
    file.extend_from_slice(&data[6..]);
    let path = vdiskview_fuzz::image_file(&file);
    let Ok(img) = vdiskview_fuzz::open(&path, Format::Qcow2) else { return };
    if let Some(q) = img.top().downcast_ref::<vdiskview_core::image::qcow2::Qcow2>() {
        let _ = q.bitmaps_ext_problem();
        let dir = q.bitmap_directory();
        for bm in &dir.bitmaps {
            let _ = bm.fields();
            let _ = bm.flag_names();
            let _ = q.bitmap_table(bm);
            let _ = q.bitmap_extents(bm, 0, q.virtual_size());
            let _ = q.bitmap_dirty_bytes(bm, 4096, 100_000);
            let _ = q.find_bitmap(&bm.name);
        }
        let _ = q.bitmap_regions();
    }
    vdiskview_fuzz::exercise(&img);
});

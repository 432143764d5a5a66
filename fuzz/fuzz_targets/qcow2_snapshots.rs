//! The snapshot table and the snapshots' L1 tables. The input is [nb_snapshots, 2 bytes]
//! [the file from 0x200 on], behind a valid v3 header (512-byte clusters, 1 MiB disk, the L1
//! table at 0x200, the snapshot table at 0x400).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::io::HostFile;
use vdiskview_core::image::qcow2::snapshot::read_table;
use vdiskview_core::image::{Format, OpenOptions};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let nb = u16::from_be_bytes([data[0], data[1]]) as u32;
    let mut file = vdiskview_fuzz::qcow2_template(1 << 20, nb, 0x400, None);
    file.extend_from_slice(&data[2..]);
    let path = vdiskview_fuzz::image_file(&file);
    if let Ok(f) = HostFile::open(&path, "fuzz".into()) {
        for (cs, off, n) in [(512, 0x400, nb), (512, 0x200, nb.wrapping_add(1)), (4096, 0, nb)] {
            if let Ok(t) = read_table(&f, cs, off, n) {
                for s in &t.snapshots {
                    let _ = s.fields();
                }
            }
        }
    }
    let Ok(img) = vdiskview_fuzz::open(&path, Format::Qcow2) else { return };
    vdiskview_fuzz::exercise(&img);
    let ids: Vec<String> = match img.top().downcast_ref::<vdiskview_core::image::qcow2::Qcow2>() {
        Some(q) => q.snapshots().map(|v| v.iter().take(4).map(|s| s.id.clone()).collect()).unwrap_or_default(),
        _ => vec![],
    };
    drop(img);
    for id in ids {
        let opts = OpenOptions { format: Some(Format::Qcow2), no_backing: true, snapshot: Some(id), ..Default::default() };
        if let Ok(img) = vdiskview_core::image::open(&path, &opts) {
            vdiskview_fuzz::exercise(&img);
        }
    }
});

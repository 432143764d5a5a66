//! The btrfs reader on a whole-disk volume: open, list the root and one level below, stat,
//! map and read each entry (bounded): the input is the guest disk, read as a raw image.
#![no_main]
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use vdiskview_core::guest::fs::GuestFs;
use vdiskview_core::guest::{FsInfo, FsKind, Volume};
use vdiskview_core::image::Format;

fuzz_target!(|data: &[u8]| {
    let path = vdiskview_fuzz::image_file(data);
    let Ok(img) = vdiskview_fuzz::open(&path, Format::Raw) else { return };
    let len = img.virtual_size();
    let vol = Volume {
        partition: None,
        start: 0,
        len,
        fs: Some(FsInfo { kind: FsKind::Btrfs, label: None, uuid: None }),
    };
    let Ok(fs) = GuestFs::open(Rc::new(img), &vol) else { return };
    let _ = fs.regions();
    let Ok(entries) = fs.read_dir("/") else { return };
    for e in entries.iter().take(8) {
        let p = format!("/{}", e.name);
        let _ = fs.stat(&p);
        let _ = fs.locate(&p);
        if e.is_dir() {
            if let Ok(sub) = fs.read_dir(&p) {
                for s in sub.iter().take(4) {
                    let _ = fs.locate(&format!("{}/{}", p, s.name));
                }
            }
        } else if e.size < 1 << 20 {
            let _ = fs.read(&p);
        }
        for (s, _) in e.streams.iter().take(2) {
            let _ = fs.read(&format!("{}:{}", p, s));
        }
    }
});

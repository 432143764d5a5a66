//! Pure unit tests of the image model: images built in memory per the specifications, no qemu.
//! `cargo test -p vdiskview-core --lib` runs them in seconds.
//!
//! They go through the public entry points only (`image::open`, `Image::resolve`,
//! `Image::extents`, `Image::read`, `image::probe`, `check::check_image`), so the format
//! modules can be reorganised under them. `build` makes the bytes, from the specs alone.

mod build;
mod probe;
mod qcow2;
mod raw;
mod vdi;
mod vhd;
mod vmdk;

use std::path::Path;

use crate::image::{self, Error, Extent, Image, LayerKind, OpenOptions};

pub(super) fn open_with(path: &Path, opts: &OpenOptions) -> Image {
    match image::open(path, opts) {
        Ok(img) => img,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

pub(super) fn open(path: &Path) -> Image {
    open_with(path, &OpenOptions::default())
}

/// The error opening `path` gives; a panic if it opens.
pub(super) fn open_err(path: &Path, opts: &OpenOptions) -> Error {
    match image::open(path, opts) {
        Ok(_) => panic!("{} opened, but it is damaged", path.display()),
        Err(e) => e,
    }
}

/// The whole guest disk, read in one call.
pub(super) fn read_all(img: &Image) -> Vec<u8> {
    let mut buf = vec![0u8; img.virtual_size() as usize];
    img.read(0, &mut buf).unwrap_or_else(|e| panic!("read: {e}"));
    buf
}

/// Every extent of the disk as (virt, len, depth, kind).
pub(super) fn map(img: &Image) -> Vec<(u64, u64, usize, LayerKind)> {
    img.extents(0, img.virtual_size())
        .unwrap_or_else(|e| panic!("extents: {e}"))
        .into_iter()
        .map(|e: Extent| (e.virt, e.len, e.depth, e.kind))
        .collect()
}

/// Compare two byte strings and name the first difference (a plain assert_eq! on megabytes
/// prints megabytes).
#[track_caller]
pub(super) fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at 0x{i:x}: got 0x{:02x}, want 0x{:02x}", got[i], want[i]);
    }
}

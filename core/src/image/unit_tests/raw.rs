//! Raw images: the guest disk is the file, holes and all.

use super::build::*;
use super::{assert_bytes, map, open, read_all};
use crate::image::{Format, HostFileId, LayerKind};

/// Whether the filesystem under `path` reports `off` as inside a hole (SEEK_DATA moves on).
fn is_hole(path: &std::path::Path, off: u64) -> bool {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor we own.
    let d = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    d < 0 || d as u64 > off
}

#[test]
fn raw_maps_guest_offsets_to_the_same_file_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let guest = pattern(30, 300 * 1024 + 17); // not a multiple of a sector
    let path = write_file(dir.path(), "disk.img", &guest);
    let img = open(&path);
    assert_eq!(img.format(), Format::Raw);
    assert_eq!(img.virtual_size(), guest.len() as u64);
    assert_eq!(img.top().cluster_size(), None);
    assert!(img.top().backing().is_none());
    let m = map(&img);
    assert_eq!(m.iter().map(|e| e.1).sum::<u64>(), guest.len() as u64);
    for (virt, len, depth, kind) in m {
        assert_eq!(depth, 0);
        assert!(len > 0);
        assert_eq!(kind, LayerKind::Data { file: HostFileId::Image, host: virt, passthrough: true });
    }
    assert_bytes(&read_all(&img), &guest, "raw guest");
    let mut b = [0u8; 1];
    img.read(guest.len() as u64 - 1, &mut b).unwrap();
    assert_eq!(b[0], guest[guest.len() - 1]);
    assert!(img.read(guest.len() as u64, &mut b).is_err(), "past the end");
    assert!(img.resolve(guest.len() as u64, 1).is_err());
    // extents are clamped to the disk
    let ex = img.extents(guest.len() as u64 - 10, 1000).unwrap();
    assert_eq!(ex.iter().map(|e| e.len).sum::<u64>(), 10);
}

#[test]
fn raw_holes_are_zero_where_the_filesystem_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let head = pattern(31, 64 * 1024);
    std::fs::write(&path, &head).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4 * MIB).unwrap();
    drop(f);
    let img = open(&path);
    assert_eq!(img.virtual_size(), 4 * MIB);
    let e = img.resolve(2 * MIB, MIB).unwrap();
    if is_hole(&path, 2 * MIB) {
        assert_eq!(e.kind, LayerKind::Zero { host: Some((HostFileId::Image, 2 * MIB)) });
    } else {
        assert_eq!(e.kind, LayerKind::Data { file: HostFileId::Image, host: 2 * MIB, passthrough: true });
    }
    let all = read_all(&img);
    assert_bytes(&all[..head.len()], &head, "data before the hole");
    assert!(all[head.len()..].iter().all(|&b| b == 0), "the hole reads zero");
}

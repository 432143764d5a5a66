//! Probing: qcow2 magic first, a VHD cookie at the end (512 or the old 511-byte footer) or
//! its copy at offset 0, raw otherwise.

use super::build::*;
use super::{assert_bytes, open, read_all};
use crate::image::io::HostFile;
use crate::image::{probe, Format};

fn probe_bytes(bytes: &[u8]) -> Format {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "x", bytes);
    let f = HostFile::open(&p, "x".into()).unwrap();
    probe(&f).unwrap_or_else(|e| panic!("probe: {e}"))
}

#[test]
fn qcow2_magic_is_qcow2() {
    let (bytes, _) = Qcow2::new(3, 16, MIB).build();
    assert_eq!(probe_bytes(&bytes), Format::Qcow2);
    // the magic alone decides, even on a file too short for a header
    assert_eq!(probe_bytes(b"QFI\xfb"), Format::Qcow2);
    assert_eq!(probe_bytes(b"QFI\xfa\0\0\0\x03"), Format::Raw);
}

#[test]
fn vhd_cookie_at_the_end_is_vhd() {
    assert_eq!(probe_bytes(&fixed_vhd(&pattern(1, 8192))), Format::Vhd);
    let (dynamic, _) = DynVhd::dynamic(4 * MIB, 2 * MIB as u32).build();
    assert_eq!(probe_bytes(&dynamic), Format::Vhd);
    // only the copy at offset 0 left (the end overwritten)
    let mut b = dynamic.clone();
    let n = b.len();
    b[n - 512..n - 504].copy_from_slice(b"xxxxxxxx");
    assert_eq!(probe_bytes(&b), Format::Vhd);
}

#[test]
fn old_511_byte_footer_is_vhd_and_opens() {
    // Virtual PC before 2004 wrote a footer of 511 bytes (no last reserved byte)
    let dir = tempfile::tempdir().unwrap();
    let guest = pattern(2, 64 * 1024);
    let mut bytes = guest.clone();
    let f = VhdFooter::new(DISK_FIXED, guest.len() as u64, u64::MAX).bytes();
    assert_eq!(f[511], 0, "the checksum does not depend on the byte left out");
    bytes.extend_from_slice(&f[..511]);
    assert_eq!(bytes.len() % 512, 511);
    assert_eq!(probe_bytes(&bytes), Format::Vhd);
    let img = open(&write_file(dir.path(), "old.vhd", &bytes));
    assert_eq!(img.format(), Format::Vhd);
    assert_eq!(img.virtual_size(), guest.len() as u64);
    assert!(
        !img.warnings.iter().any(|w| w.contains("checksum")),
        "the 511-byte footer's checksum is good: {:?}",
        img.warnings
    );
    assert_bytes(&read_all(&img), &guest, "guest of a VHD with a 511-byte footer");
}

#[test]
fn old_511_byte_footer_has_no_spurious_size_warning() {
    let dir = tempfile::tempdir().unwrap();
    let guest = pattern(2, 64 * 1024);
    let mut bytes = guest.clone();
    bytes.extend_from_slice(&VhdFooter::new(DISK_FIXED, guest.len() as u64, u64::MAX).bytes()[..511]);
    let img = open(&write_file(dir.path(), "old.vhd", &bytes));
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
}

#[test]
fn anything_else_is_raw() {
    assert_eq!(probe_bytes(&[]), Format::Raw);
    assert_eq!(probe_bytes(b"QF"), Format::Raw);
    assert_eq!(probe_bytes(&pattern(3, 1 << 20)), Format::Raw);
    // a cookie in the middle is data, not a footer
    let mut b = vec![0u8; 4096];
    b[1024..1032].copy_from_slice(b"conectix");
    assert_eq!(probe_bytes(&b), Format::Raw);
    // a cookie one byte off the end's footer position
    let mut b = vec![0u8; 4096];
    b[4096 - 513..4096 - 505].copy_from_slice(b"conectix");
    assert_eq!(probe_bytes(&b), Format::Raw);
    // an image of zeros
    assert_eq!(probe_bytes(&vec![0u8; 1 << 16]), Format::Raw);
}

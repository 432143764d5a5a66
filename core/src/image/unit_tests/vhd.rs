//! VHD: fixed, dynamic and differencing disks built per the spec; mapping, reading and the
//! damage a reader must name rather than trip over.

use super::build::*;
use super::{assert_bytes, map, open, open_err, open_with, read_all};
use crate::image::check::{check_image, Severity};
use crate::image::{Error, Format, HostFileId, LayerKind, OpenOptions};

fn data(host: u64) -> LayerKind {
    LayerKind::Data { file: HostFileId::Image, host, passthrough: false }
}

#[test]
fn footer_checksum_is_ones_complement_of_byte_sum() {
    // hand check of the builder's checksum on a tiny buffer: 1 + 2 + 3 = 6, !6
    let mut b = [0u8; 16];
    b[0] = 1;
    b[1] = 2;
    b[15] = 3;
    b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // the field itself is not summed
    assert_eq!(vhd_checksum(&b, 4), !6u32);
    assert_eq!(vhd_checksum(&b, 4), 0xffff_fff9);
}

#[test]
fn fixed_vhd_maps_guest_bytes_one_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let guest = pattern(1, 1024 * 1024);
    let path = write_file(dir.path(), "fixed.vhd", &fixed_vhd(&guest));
    let img = open(&path);
    assert_eq!(img.format(), Format::Vhd);
    assert_eq!(img.virtual_size(), guest.len() as u64);
    assert_eq!(img.layers.len(), 1);
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    assert_eq!(img.top().cluster_size(), None, "a fixed disk has no blocks");
    for virt in [0u64, 512, 0x1234, guest.len() as u64 - 1] {
        let e = img.resolve(virt, 4096).unwrap();
        assert_eq!(e.virt, virt);
        assert_eq!(e.depth, 0);
        assert_eq!(e.host_at(0), Some((HostFileId::Image, virt)), "at 0x{virt:x}");
        assert!(matches!(e.kind, LayerKind::Data { passthrough: true, .. }), "{:?}", e.kind);
    }
    assert_bytes(&read_all(&img), &guest, "fixed VHD guest");
    let mut b = [0u8; 700];
    img.read(1000, &mut b).unwrap();
    assert_bytes(&b, &guest[1000..1700], "unaligned read");
    // the footer is not guest data
    let mut past = [0u8; 1];
    assert!(img.read(guest.len() as u64, &mut past).is_err());
    assert!(img.resolve(guest.len() as u64, 1).is_err());
}

#[test]
fn fixed_vhd_from_virtual_pc_takes_its_size_from_the_geometry() {
    // creators other than qemu/Hyper-V/... are sized by CHS, as qemu does
    let dir = tempfile::tempdir().unwrap();
    let guest = pattern(2, 600 * 1024);
    let mut f = VhdFooter::new(DISK_FIXED, guest.len() as u64, u64::MAX);
    f.creator_app = *b"vpc ";
    f.chs = (10, 4, 17); // 680 sectors: 340 KiB, less than current_size
    let chs_bytes = 10 * 4 * 17 * 512u64;
    let mut bytes = guest.clone();
    bytes.extend_from_slice(&f.bytes());
    let path = write_file(dir.path(), "vpc.vhd", &bytes);
    let img = open(&path);
    assert_eq!(img.virtual_size(), chs_bytes);
    assert_ne!(chs_bytes, guest.len() as u64);
}

/// A dynamic disk of four 2 MiB blocks: block 0 whole, block 1 not allocated, block 2 with
/// a partial sector bitmap (allocated first in the file), block 3 not allocated.
fn dynamic_disk() -> DynVhd {
    let bs = 2 * MIB as u32;
    let mut d = DynVhd::dynamic(8 * MIB, bs);
    let spb = d.sectors_per_block();
    d.write_sectors(2 * spb + 3, &pattern(5, 8 * SECTOR)); // sectors 3..11 of block 2
    d.write_sectors(2 * spb + 100, &pattern(6, SECTOR));
    d.write_sectors(0, &pattern(7, bs as usize));
    d
}

#[test]
fn dynamic_vhd_maps_allocated_blocks_through_the_bat() {
    let dir = tempfile::tempdir().unwrap();
    let d = dynamic_disk();
    let (bytes, lay) = d.build();
    let path = write_file(dir.path(), "dyn.vhd", &bytes);
    let img = open(&path);
    let bs = d.block_size as u64;
    assert_eq!(img.format(), Format::Vhd);
    assert_eq!(img.virtual_size(), 8 * MIB);
    assert_eq!(img.top().cluster_size(), Some(bs));
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    // block 2 came first in the file: host offsets come from the BAT, not from the order
    assert!(lay.bitmap_offset[&2] < lay.bitmap_offset[&0]);
    assert_eq!(lay.bitmap_bytes, 512, "4096 sectors: 512 bytes of bitmap");
    let b0 = lay.bitmap_offset[&0] + 512;
    let b2 = lay.bitmap_offset[&2] + 512;
    assert_eq!(
        map(&img),
        vec![
            (0, bs, 0, data(b0)),
            (bs, bs, 0, LayerKind::Zero { host: None }),
            // a dynamic disk's allocated block reads whole, whatever its bitmap says (qemu)
            (2 * bs, bs, 0, data(b2)),
            (3 * bs, bs, 0, LayerKind::Zero { host: None }),
        ]
    );
    // a present sector of the partial block, mid-run
    let virt = 2 * bs + 5 * 512 + 17;
    let e = img.resolve(virt, 512).unwrap();
    assert_eq!(e.host_at(0), Some((HostFileId::Image, b2 + 5 * 512 + 17)));
    assert_eq!(e.len, 512);
    assert_eq!(lay.host(virt, bs), Some(b2 + 5 * 512 + 17));
    // runs stop at the block's end
    assert_eq!(img.resolve(bs - 512, 4 * bs).unwrap().len, 512);
    // two unallocated blocks in a row make one run, up to the allocated one
    let (bytes2, _) = {
        let mut d2 = DynVhd::dynamic(8 * MIB, bs as u32);
        d2.write_sectors(3 * bs / 512, &pattern(1, 512));
        d2.build()
    };
    let p2 = write_file(dir.path(), "dyn2.vhd", &bytes2);
    let img2 = open(&p2);
    let e = img2.resolve(100, 8 * MIB).unwrap();
    assert_eq!((e.len, e.kind), (3 * bs - 100, LayerKind::Zero { host: None }));

    assert_bytes(&read_all(&img), &d.guest(None), "dynamic VHD guest");
    let mut b = vec![0u8; 3000];
    img.read(2 * bs + 2 * 512 + 7, &mut b).unwrap();
    assert_bytes(&b, &d.guest(None)[(2 * bs + 2 * 512 + 7) as usize..][..3000], "read across present/absent sectors");
    let r = check_image(&img).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

#[test]
fn dynamic_vhd_reads_an_allocated_block_whole_like_qemu() {
    // bytes in sectors whose bitmap bit is clear: the spec calls them sparse, qemu (and so
    // vdiskview) reads them as stored
    let dir = tempfile::tempdir().unwrap();
    let mut d = DynVhd::dynamic(4 * MIB, 2 * MIB as u32);
    d.write_sectors(0, &pattern(1, SECTOR));
    d.write_hidden(1, &pattern(2, SECTOR));
    let (bytes, _) = d.build();
    let img = open(&write_file(dir.path(), "h.vhd", &bytes));
    let mut b = vec![0u8; 1024];
    img.read(0, &mut b).unwrap();
    assert_bytes(&b[..512], &pattern(1, SECTOR), "present sector");
    assert_bytes(&b[512..], &pattern(2, SECTOR), "sector with a clear bit");
}

/// A dynamic parent and a differencing child over it, written as parent.vhd and child.vhd.
fn chain(dir: &std::path::Path) -> (DynVhd, DynVhd, Vec<u8>) {
    let bs = MIB as u32; // 1 MiB blocks: 2048 sectors, 256 bytes of bitmap padded to 512
    let mut parent = DynVhd::dynamic(4 * MIB, bs);
    parent.write_sectors(0, &pattern(10, bs as usize)); // block 0
    parent.write_sectors(3 * 2048, &pattern(11, bs as usize)); // block 3
    let (pbytes, _) = parent.build();
    write_file(dir, "parent.vhd", &pbytes);
    let mut child = DynVhd::differencing(4 * MIB, bs, "parent.vhd", parent.unique_id);
    child.write_sectors(8, &pattern(20, 8 * SECTOR)); // block 0: sectors 8..16
    child.write_hidden(20, &pattern(21, 4 * SECTOR)); // block 0: bits clear → parent
    child.write_sectors(2 * 2048 + 1, &pattern(22, SECTOR)); // block 2, parent has none
    child.allocate(3); // block 3 allocated, no sector present → parent
    let guest = child.guest(Some(&parent.guest(None)));
    (parent, child, guest)
}

#[test]
fn differencing_vhd_takes_clear_bits_from_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, child, guest) = chain(dir.path());
    let (cbytes, lay) = child.build();
    let path = write_file(dir.path(), "child.vhd", &cbytes);
    let img = open(&path);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[1].layer.format(), Format::Vhd);
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    assert!(img.chain_error.is_none());
    let bs = MIB;
    let (_, play) = parent.build();
    let p0 = play.bitmap_offset[&0] + 512;
    let c0 = lay.bitmap_offset[&0] + 512;
    let c2 = lay.bitmap_offset[&2] + 512;
    assert_eq!(lay.bitmap_bytes, 512);

    // sectors 0..8 of block 0: bits clear → the parent's block 0
    let e = img.resolve(0, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (8 * 512, 1, data(p0)));
    // 8..16 present in the child
    let e = img.resolve(8 * 512, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (8 * 512, 0, data(c0 + 8 * 512)));
    // 16.. clear again, including the hidden bytes at 20..24
    let e = img.resolve(16 * 512, bs).unwrap();
    assert_eq!((e.depth, e.kind), (1, data(p0 + 16 * 512)));
    assert_eq!(e.len, bs - 16 * 512);
    // block 1: in neither (a dynamic parent says zero)
    let e = img.resolve(bs + 5, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (bs - 5, 1, LayerKind::Zero { host: None }));
    // block 2: one sector in the child, the rest in neither
    let e = img.resolve(2 * bs + 512, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (512, 0, data(c2 + 512)));
    let e = img.resolve(2 * bs, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (512, 1, LayerKind::Zero { host: None }));
    // block 3: allocated in the child with no sector present → all from the parent
    let e = img.resolve(3 * bs, bs).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (bs, 1, data(play.bitmap_offset[&3] + 512)));

    assert_bytes(&read_all(&img), &guest, "differencing guest");
    let mut b = vec![0u8; 24 * 512];
    img.read(0, &mut b).unwrap();
    assert_bytes(&b[16 * 512..], &pattern(10, bs as usize)[16 * 512..24 * 512], "hidden sectors read from the parent");

    // the child alone: clear bits are unallocated
    let alone = open_with(&path, &OpenOptions { no_backing: true, ..Default::default() });
    assert_eq!(alone.layers.len(), 1);
    assert_eq!(alone.resolve(0, 512).unwrap().kind, LayerKind::Unallocated { host: None });
    let r = check_image(&img).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

#[test]
fn differencing_vhd_names_a_wrong_parent_id_and_a_missing_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut child, _) = chain(dir.path());
    child.parent.as_mut().unwrap().1 = uuid(99);
    let path = write_file(dir.path(), "child.vhd", &child.build().0);
    let img = open(&path);
    assert!(img.warnings.iter().any(|w| w.contains("parent unique id mismatch")), "{:?}", img.warnings);

    std::fs::remove_file(dir.path().join("parent.vhd")).unwrap();
    match open_err(&path, &OpenOptions::default()) {
        Error::Chain(m) => assert!(m.contains("parent.vhd") && m.contains("not found"), "{m}"),
        e => panic!("want a chain error, got {e:?}"),
    }
    let lenient = open_with(&path, &OpenOptions { lenient: true, ..Default::default() });
    assert_eq!(lenient.layers.len(), 1);
    assert!(lenient.chain_error.as_deref().is_some_and(|m| m.contains("parent.vhd")));
}

// ---------------------------------------------------------------------------------------
// damage

#[test]
fn bat_entry_past_eof_is_an_error_for_that_block_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = dynamic_disk();
    d.bat_override.insert(1, 0x0100_0000); // sector 16 Mi: 8 GiB into a 6 MiB file
    let path = write_file(dir.path(), "bad.vhd", &d.build().0);
    let img = open(&path);
    let bs = d.block_size as u64;
    let err = img.resolve(bs + 512, 512).unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err:?}");
    assert!(err.to_string().contains("past the end"), "{err}");
    let mut b = [0u8; 512];
    assert!(img.read(bs, &mut b).is_err());
    // the other blocks still map and read
    assert_eq!(img.resolve(0, 512).unwrap().depth, 0);
    img.read(2 * bs + 3 * 512, &mut b).unwrap();
    assert_bytes(&b, &pattern(5, SECTOR), "block 2 beside the damaged one");
    let r = check_image(&img).unwrap();
    assert!(
        r.findings.iter().any(|f| f.severity == Severity::Corruption && f.structure == "bat" && f.host_offset == Some(0x600 + 4)),
        "{:?}",
        r.findings
    );
}

#[test]
fn dynamic_header_past_eof_bad_cookie_and_bad_block_size_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dynamic_disk();
    let (good, lay) = d.build();

    // footer (and its copy) pointing the dynamic header past the end
    let mut bytes = good.clone();
    let mut f = d.footer();
    f.data_offset = 1 << 40;
    let fb = f.bytes();
    bytes[..512].copy_from_slice(&fb);
    bytes[lay.footer_offset as usize..].copy_from_slice(&fb);
    let p = write_file(dir.path(), "far.vhd", &bytes);
    let e = open_err(&p, &OpenOptions::default());
    assert!(matches!(e, Error::Damaged { .. }) && e.to_string().contains("past the end"), "{e:?}");

    // a truncated file: the dynamic header is cut off
    let p = write_file(dir.path(), "cut.vhd", &good[..0x400]);
    let e = open_err(&p, &OpenOptions { format: Some(Format::Vhd), ..Default::default() });
    assert!(matches!(e, Error::Damaged { .. }) && e.to_string().contains("past the end"), "{e:?}");
    // cut after the BAT: it opens through the footer copy, and the lost blocks are errors
    let p = write_file(dir.path(), "cut2.vhd", &good[..0x800]);
    let img = open_with(&p, &OpenOptions { format: Some(Format::Vhd), ..Default::default() });
    assert!(img.warnings.iter().any(|w| w.contains("offset 0")), "{:?}", img.warnings);
    let e = img.resolve(0, 512).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    assert!(img.resolve(4 * MIB + 1, 512).is_err(), "block 2 is lost too");
    assert_eq!(img.resolve(2 * MIB, 512).unwrap().kind, LayerKind::Zero { host: None }, "block 1 was never allocated");

    // a header cookie that is not cxsparse
    let mut bytes = good.clone();
    bytes[0x200..0x208].copy_from_slice(b"cxspars!");
    let p = write_file(dir.path(), "cookie.vhd", &bytes);
    let e = open_err(&p, &OpenOptions::default());
    assert!(e.to_string().contains("cxsparse"), "{e}");

    // a block size that is not a power of two (header checksum fixed up)
    let mut bytes = good.clone();
    put32(&mut bytes, 0x200 + 32, 3 * 512);
    let c = vhd_checksum(&bytes[0x200..0x600], 36);
    put32(&mut bytes, 0x200 + 36, c);
    let p = write_file(dir.path(), "bs.vhd", &bytes);
    let e = open_err(&p, &OpenOptions::default());
    assert!(e.to_string().contains("block size"), "{e}");

    // too few BAT entries for the disk
    let mut bytes = good;
    put32(&mut bytes, 0x200 + 28, 2);
    let c = vhd_checksum(&bytes[0x200..0x600], 36);
    put32(&mut bytes, 0x200 + 36, c);
    let p = write_file(dir.path(), "few.vhd", &bytes);
    let e = open_err(&p, &OpenOptions::default());
    assert!(e.to_string().contains("too few"), "{e}");
}

#[test]
fn bad_footer_checksum_is_a_warning_and_the_copy_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dynamic_disk();
    let (mut bytes, lay) = d.build();
    bytes[lay.footer_offset as usize + 100] ^= 0x40; // reserved byte: only the checksum notices
    let img = open(&write_file(dir.path(), "sum.vhd", &bytes));
    assert!(img.warnings.iter().any(|w| w.contains("checksum")), "{:?}", img.warnings);
    assert_bytes(&read_all(&img), &d.guest(None), "guest with a bad end footer");

    // both footers bad: still opens, with a warning
    bytes[100] ^= 0x40;
    let img = open(&write_file(dir.path(), "sum2.vhd", &bytes));
    assert!(img.warnings.iter().any(|w| w.contains("does not match")), "{:?}", img.warnings);

    // the dynamic header's checksum
    let (mut bytes, _) = d.build();
    bytes[0x200 + 1000] ^= 1;
    let img = open(&write_file(dir.path(), "hsum.vhd", &bytes));
    assert!(img.warnings.iter().any(|w| w.contains("dynamic disk header checksum")), "{:?}", img.warnings);
}

#[test]
fn footer_only_at_offset_zero_is_used_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dynamic_disk();
    let (mut bytes, lay) = d.build();
    bytes[lay.footer_offset as usize..lay.footer_offset as usize + 8].copy_from_slice(b"garbage!");
    let img = open(&write_file(dir.path(), "copy.vhd", &bytes));
    assert_eq!(img.format(), Format::Vhd);
    assert!(img.warnings.iter().any(|w| w.contains("offset 0")), "{:?}", img.warnings);
    assert_bytes(&read_all(&img), &d.guest(None), "guest through the footer copy");
}

#[test]
fn unknown_disk_type_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = pattern(1, 64 * 1024);
    bytes.extend_from_slice(&VhdFooter::new(7, 64 * 1024, u64::MAX).bytes());
    let e = open_err(&write_file(dir.path(), "t7.vhd", &bytes), &OpenOptions::default());
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
}

#[test]
fn no_cookie_anywhere_is_not_a_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dynamic_disk();
    let (mut bytes, lay) = d.build();
    bytes[..8].copy_from_slice(b"conectiX");
    bytes[lay.footer_offset as usize..lay.footer_offset as usize + 8].copy_from_slice(b"conectiX");
    let p = write_file(dir.path(), "nocookie.vhd", &bytes);
    // probed as raw: the whole file is the disk
    let img = open(&p);
    assert_eq!(img.format(), Format::Raw);
    assert_eq!(img.virtual_size(), lay.file_size);
    let e = open_err(&p, &OpenOptions { format: Some(Format::Vhd), ..Default::default() });
    assert!(matches!(e, Error::Damaged { .. }) && e.to_string().contains("conectix"), "{e:?}");
    // a file shorter than a footer
    let p = write_file(dir.path(), "tiny.vhd", b"conectix");
    let e = open_err(&p, &OpenOptions { format: Some(Format::Vhd), ..Default::default() });
    assert!(e.to_string().contains("not a VHD"), "{e}");
}

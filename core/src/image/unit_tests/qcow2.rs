//! QCOW2 v2/v3 built per the spec: every L2 entry kind, compressed clusters, a raw backing
//! file, and damage that must be an error, not a panic.

use super::build::*;
use super::{assert_bytes, map, open, open_err, open_with, read_all};
use crate::image::check::check_image;
use crate::image::{Error, Format, HostFileId, LayerKind, OpenOptions};

const CB: u32 = 16; // 64 KiB clusters
const CS: u64 = 1 << CB;

fn data(host: u64) -> LayerKind {
    LayerKind::Data { file: HostFileId::Image, host, passthrough: false }
}

/// A 1 MiB v3 image: c0 data, c1 zero flag, c2 unallocated, c3 compressed, c4 zero flag
/// over an allocated cluster, c5 c6 data in adjacent host clusters, c8 compressed at an
/// offset that is not sector aligned.
fn every_kind() -> Qcow2 {
    let mut q = Qcow2::new(3, CB, 16 * CS);
    q.compressed_skew = 0x1000;
    q.set(0, Cluster::Data(pattern(1, CS as usize)))
        .set(1, Cluster::Zero)
        .set(3, Cluster::Compressed(pattern(3, CS as usize)))
        .set(4, Cluster::ZeroAlloc(pattern(4, CS as usize)))
        .set(5, Cluster::Data(pattern(5, CS as usize)))
        .set(6, Cluster::Data(pattern(6, CS as usize)))
        .set(8, Cluster::Compressed(pattern(8, CS as usize)));
    q
}

#[test]
fn v3_maps_every_l2_entry_kind() {
    let dir = tempfile::tempdir().unwrap();
    let q = every_kind();
    let (bytes, lay) = q.build();
    let path = write_file(dir.path(), "k.qcow2", &bytes);
    let img = open(&path);
    assert_eq!(img.format(), Format::Qcow2);
    assert_eq!(img.virtual_size(), 16 * CS);
    assert_eq!(img.top().cluster_size(), Some(CS));
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    // the second compressed cluster follows the first byte after byte: not sector aligned
    let (c3_off, c3_sectors) = lay.compressed[&3];
    let (c8_off, c8_sectors) = lay.compressed[&8];
    assert_eq!(c3_off % CS, 0x1000);
    assert_ne!(c8_off % 512, 0, "the builder should have packed c8 unaligned");
    assert_eq!(lay.host[&6], lay.host[&5] + CS);
    let csize = |off: u64, sectors: u64| sectors * 512 - (off & 511);
    assert_eq!(
        map(&img),
        vec![
            (0, CS, 0, data(lay.host[&0])),
            (CS, CS, 0, LayerKind::Zero { host: None }),
            (2 * CS, CS, 0, LayerKind::Unallocated { host: None }),
            (3 * CS, CS, 0, LayerKind::Compressed { host: c3_off, csize: csize(c3_off, c3_sectors), cluster_virt: 3 * CS }),
            (4 * CS, CS, 0, LayerKind::Zero { host: Some((HostFileId::Image, lay.host[&4])) }),
            // adjacent host clusters make one extent
            (5 * CS, 2 * CS, 0, data(lay.host[&5])),
            (7 * CS, CS, 0, LayerKind::Unallocated { host: None }),
            (8 * CS, CS, 0, LayerKind::Compressed { host: c8_off, csize: csize(c8_off, c8_sectors), cluster_virt: 8 * CS }),
            (9 * CS, 7 * CS, 0, LayerKind::Unallocated { host: None }),
        ]
    );
    // inside a cluster: host offsets move with the guest offset
    let e = img.resolve(6 * CS + 100, CS).unwrap();
    assert_eq!((e.len, e.kind), (CS - 100, data(lay.host[&6] + 100)));
    let e = img.resolve(4 * CS + 7, 10).unwrap();
    assert_eq!(e.host_at(0), Some((HostFileId::Image, lay.host[&4] + 7)));
    // a compressed extent always names its whole cluster
    let e = img.resolve(3 * CS + 4096, CS).unwrap();
    assert_eq!(e.len, CS - 4096);
    assert!(matches!(e.kind, LayerKind::Compressed { cluster_virt, .. } if cluster_virt == 3 * CS), "{:?}", e.kind);

    let guest = q.guest(None);
    assert_bytes(&read_all(&img), &guest, "qcow2 v3 guest");
    // the stale bytes under the allocated zero cluster do not show
    assert!(guest[4 * CS as usize..5 * CS as usize].iter().all(|&b| b == 0));
    // partial reads inside compressed clusters, and across kinds
    for (off, len) in [(3 * CS + 1000, 5000u64), (8 * CS + CS - 3, 6), (2 * CS + 10, 2 * CS), (CS - 1, 3 * CS)] {
        let mut b = vec![0u8; len as usize];
        img.read(off, &mut b).unwrap();
        assert_bytes(&b, &guest[off as usize..(off + len) as usize], &format!("read 0x{off:x}+0x{len:x}"));
    }
    let r = check_image(&img).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    let stats = r.qcow2.expect("qcow2 figures");
    assert_eq!(stats.compressed_clusters, 2);
    // the same walk with progress: reported, and stopped when asked
    let seen = std::cell::Cell::new(0u64);
    let counting = |done: u64, total: u64| {
        assert!(done < total.max(1));
        seen.set(seen.get() + 1);
        true
    };
    let r2 = crate::image::check::check_image_with(&img, &counting).unwrap();
    assert!(seen.get() > 0 && r2.is_clean());
    let stop = |_: u64, _: u64| false;
    assert!(matches!(crate::image::check::check_image_with(&img, &stop), Err(crate::image::Error::Cancelled)));
}

#[test]
fn v3_with_a_raw_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    // the backing file is 4 clusters and a half; the overlay 16 clusters
    let base = pattern(40, (4 * CS + CS / 2) as usize);
    write_file(dir.path(), "base.raw", &base);
    let mut q = Qcow2::new(3, CB, 16 * CS);
    q.backing = Some(("base.raw".into(), Some("raw".into())));
    q.set(0, Cluster::Data(pattern(41, CS as usize))).set(1, Cluster::Zero).set(6, Cluster::Data(pattern(42, CS as usize)));
    let (bytes, lay) = q.build();
    let path = write_file(dir.path(), "top.qcow2", &bytes);
    let img = open(&path);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[1].layer.format(), Format::Raw);
    assert_eq!(img.layers[0].named_as, None);
    assert_eq!(img.layers[1].named_as.as_deref(), Some("base.raw"));
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);

    assert_eq!(img.resolve(0, CS).unwrap().kind, data(lay.host[&0]));
    // the zero flag hides the backing file
    let e = img.resolve(CS, CS).unwrap();
    assert_eq!((e.depth, e.kind), (0, LayerKind::Zero { host: None }));
    // unallocated: the backing file's bytes at the same offset
    let e = img.resolve(2 * CS + 5, 2 * CS).unwrap();
    assert_eq!(e.depth, 1);
    assert_eq!(e.host_at(0), Some((HostFileId::Image, 2 * CS + 5)));
    assert!(matches!(e.kind, LayerKind::Data { passthrough: true, .. } | LayerKind::ZeroData { .. }), "{:?}", e.kind);
    // past the end of the backing file: unallocated, reads zero
    let e = img.resolve(5 * CS, CS).unwrap();
    assert_eq!(e.kind, LayerKind::Unallocated { host: None });
    assert_eq!(e.len, CS);

    let guest = q.guest(Some(&base));
    assert_bytes(&read_all(&img), &guest, "overlay over raw");
    assert_bytes(&guest[2 * CS as usize..4 * CS as usize], &base[2 * CS as usize..4 * CS as usize], "builder: backing shows");
    // the base ends mid-cluster: the rest of that cluster reads zero
    let mut b = vec![0u8; CS as usize];
    img.read(4 * CS, &mut b).unwrap();
    assert_bytes(&b[..(CS / 2) as usize], &base[4 * CS as usize..], "the base's last half cluster");
    assert!(b[(CS / 2) as usize..].iter().all(|&x| x == 0), "past the base's end");

    let alone = open_with(&path, &OpenOptions { no_backing: true, ..Default::default() });
    assert_eq!(alone.layers.len(), 1);
    let mut b = vec![1u8; 512];
    alone.read(2 * CS, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));

    std::fs::remove_file(dir.path().join("base.raw")).unwrap();
    match open_err(&path, &OpenOptions::default()) {
        Error::Chain(m) => assert!(m.contains("base.raw"), "{m}"),
        e => panic!("want a chain error, got {e:?}"),
    }
    let lenient = open_with(&path, &OpenOptions { lenient: true, ..Default::default() });
    assert!(lenient.chain_error.is_some());
}

#[test]
fn v2_over_a_v3_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = Qcow2::new(3, CB, 8 * CS);
    base.set(1, Cluster::Data(pattern(50, CS as usize))).set(2, Cluster::Data(pattern(51, CS as usize)));
    let (bb, blay) = base.build();
    write_file(dir.path(), "base.qcow2", &bb);
    let mut q = Qcow2::new(2, CB, 8 * CS);
    q.backing = Some(("base.qcow2".into(), None)); // probed
    q.set(2, Cluster::Data(pattern(52, CS as usize))).set(7, Cluster::Data(pattern(53, CS as usize)));
    let (bytes, lay) = q.build();
    let path = write_file(dir.path(), "v2.qcow2", &bytes);
    assert_eq!(u32::from_be_bytes(bytes[4..8].try_into().unwrap()), 2);
    let img = open(&path);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[1].layer.format(), Format::Qcow2);
    assert_eq!(
        map(&img),
        vec![
            (0, CS, 1, LayerKind::Unallocated { host: None }),
            (CS, CS, 1, data(blay.host[&1])),
            (2 * CS, CS, 0, data(lay.host[&2])),
            // the chain's bottom layer answers for ranges no layer holds
            (3 * CS, 4 * CS, 1, LayerKind::Unallocated { host: None }),
            (7 * CS, CS, 0, data(lay.host[&7])),
        ]
    );
    let guest = q.guest(Some(&base.guest(None)));
    assert_bytes(&read_all(&img), &guest, "v2 over v3");
    let r = check_image(&img).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

#[test]
fn small_clusters_and_several_l2_tables() {
    // 512-byte clusters: one L2 table maps 64 clusters (32 KiB), so 96 KiB needs three
    let dir = tempfile::tempdir().unwrap();
    let mut q = Qcow2::new(3, 9, 96 * KIB);
    q.set(0, Cluster::Data(pattern(60, 512))).set(64, Cluster::Data(pattern(61, 512))).set(191, Cluster::Data(pattern(62, 512)));
    let (bytes, lay) = q.build();
    assert_eq!(lay.l2.len(), 3);
    let img = open(&write_file(dir.path(), "small.qcow2", &bytes));
    let e = img.resolve(512, 96 * KIB).unwrap();
    assert_eq!((e.len, e.kind), (63 * 512, LayerKind::Unallocated { host: None }), "a run stops at the L2 table's end");
    assert_eq!(img.resolve(64 * 512 + 3, 1).unwrap().kind, data(lay.host[&64] + 3));
    assert_eq!(img.resolve(191 * 512, 512).unwrap().kind, data(lay.host[&191]));
    assert_bytes(&read_all(&img), &q.guest(None), "512-byte clusters");
}

// ---------------------------------------------------------------------------------------
// damage

#[test]
fn l1_table_past_eof_or_unaligned_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = every_kind();
    q.l1_offset_override = Some(1 << 40);
    let e = open_err(&write_file(dir.path(), "l1.qcow2", &q.build().0), &OpenOptions::default());
    assert!(matches!(e, Error::Damaged { .. }) && e.to_string().contains("L1 table"), "{e:?}");
    q.l1_offset_override = Some(3 * CS + 8);
    let e = open_err(&write_file(dir.path(), "l1a.qcow2", &q.build().0), &OpenOptions::default());
    assert!(e.to_string().contains("aligned"), "{e}");
    q.l1_offset_override = None;
    q.l1_size_override = Some(0);
    let e = open_err(&write_file(dir.path(), "l1s.qcow2", &q.build().0), &OpenOptions::default());
    assert!(e.to_string().contains("too small") && e.to_string().contains("l1_size"), "{e}");
}

#[test]
fn l2_table_past_eof_reads_as_unallocated_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    // two L2 tables (512-byte clusters); the second L1 entry points past the end
    let mut q = Qcow2::new(3, 9, 64 * KIB);
    q.set(1, Cluster::Data(pattern(70, 512))).set(70, Cluster::Data(pattern(71, 512)));
    q.l1_entry_override.insert(1, OFLAG_COPIED | (1 << 30));
    let (bytes, lay) = q.build();
    let img = open(&write_file(dir.path(), "l2.qcow2", &bytes));
    // qemu reads the missing table as zeros: unallocated, with a warning at open
    assert!(img.warnings.iter().any(|w| w.contains("L1[1]") && w.contains("past the end")), "{:?}", img.warnings);
    assert!(matches!(img.resolve(70 * 512, 512).unwrap().kind, LayerKind::Unallocated { .. }));
    let mut b = vec![1u8; 512];
    img.read(64 * 512, &mut b).unwrap();
    assert_bytes(&b, &[0u8; 512], "a cluster under the L2 table past the end");
    assert!(img.extents(0, 64 * KIB).is_ok());
    assert_eq!(img.resolve(512, 512).unwrap().kind, data(lay.host[&1]));
    img.read(512, &mut b).unwrap();
    assert_bytes(&b, &pattern(70, 512), "cluster under the good L2 table");
    let r = check_image(&img).unwrap();
    assert!(!r.is_clean(), "a check must see the L2 table past the end");
}

#[test]
fn data_cluster_past_eof_maps_but_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = every_kind();
    q.set(10, Cluster::Raw(OFLAG_COPIED | (1 << 32)));
    let img = open(&write_file(dir.path(), "d.qcow2", &q.build().0));
    assert_eq!(img.resolve(10 * CS, CS).unwrap().kind, data(1 << 32));
    let mut b = vec![0u8; 100];
    let e = img.read(10 * CS, &mut b).unwrap_err();
    assert!(matches!(e, Error::Damaged { .. }) && e.to_string().contains("past the end"), "{e:?}");
    let r = check_image(&img).unwrap();
    assert!(r.corruptions > 0, "{:?}", r.findings);
}

#[test]
fn unaligned_data_cluster_offset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = every_kind();
    q.set(10, Cluster::Raw(OFLAG_COPIED | (5 * CS + 512)));
    let img = open(&write_file(dir.path(), "u.qcow2", &q.build().0));
    let e = img.resolve(10 * CS, CS).unwrap_err();
    assert!(e.to_string().contains("not cluster aligned"), "{e}");
}

#[test]
fn compressed_garbage_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = every_kind();
    let (mut bytes, lay) = q.build();
    let (off, _) = lay.compressed[&3];
    for b in &mut bytes[off as usize..off as usize + 64] {
        *b = 0xff; // an invalid deflate block type
    }
    let img = open(&write_file(dir.path(), "z.qcow2", &bytes));
    let mut b = vec![0u8; 512];
    let e = img.read(3 * CS, &mut b).unwrap_err();
    assert!(matches!(e, Error::Damaged { .. }), "{e:?}");
    // the other compressed cluster is intact
    img.read(8 * CS, &mut b).unwrap();
    assert_bytes(&b, &pattern(8, 512), "the intact compressed cluster");
    // a stream that ends before a whole cluster
    q = Qcow2::new(3, CB, 4 * CS);
    q.set(0, Cluster::Compressed(pattern(9, CS as usize)));
    let (mut bytes, lay) = q.build();
    let (off, _) = lay.compressed[&0];
    let short = deflate_raw(&pattern(9, 1000));
    bytes[off as usize..off as usize + short.len()].copy_from_slice(&short);
    let img = open(&write_file(dir.path(), "short.qcow2", &bytes));
    let e = img.read(0, &mut b).unwrap_err();
    assert!(e.to_string().contains("whole cluster"), "{e}");
}

#[test]
fn header_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = every_kind().build();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..60].to_vec(), "truncated"),
        ("v3 header cut", good[..90].to_vec(), "v3 header"),
        ("version 4", { let mut b = good.clone(); put32(&mut b, 4, 4); b }, "version 4"),
        ("cluster bits 30", { let mut b = good.clone(); put32(&mut b, 20, 30); b }, "cluster size"),
        ("header length", { let mut b = good.clone(); put32(&mut b, 100, 50); b }, "header_length"),
        ("refcount order", { let mut b = good.clone(); put32(&mut b, 96, 7); b }, "refcount_order"),
        ("unknown incompatible bit", { let mut b = good.clone(); put64(&mut b, 72, 1 << 40); b }, "incompatible"),
    ];
    for (what, bytes, want) in cases {
        let p = write_file(dir.path(), "h.qcow2", &bytes);
        let e = open_err(&p, &OpenOptions::default());
        assert!(e.to_string().contains(want), "{what}: {e}");
    }
}

#[test]
fn bad_magic_with_format_forced_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = every_kind();
    q.magic = *b"QFI\xfa";
    let p = write_file(dir.path(), "m.qcow2", &q.build().0);
    // probing does not call it qcow2
    let f = crate::image::io::HostFile::open(&p, "m".into()).unwrap();
    assert_eq!(crate::image::probe(&f).unwrap(), Format::Raw);
    let e = open_err(&p, &OpenOptions { format: Some(Format::Qcow2), ..Default::default() });
    assert!(e.to_string().contains("magic") || e.to_string().contains("not"), "{e}");
}

#[test]
fn extended_l2_subclusters_over_a_raw_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = pattern(80, (4 * CS) as usize);
    write_file(dir.path(), "base.raw", &base);
    let sc = CS / 32; // 2 KiB subclusters
    let mut q = Qcow2::new(3, CB, 4 * CS);
    q.extended_l2 = true;
    q.backing = Some(("base.raw".into(), Some("raw".into())));
    // cluster 0: subclusters 0 and 2 data, 3 zero, the rest from the backing file
    q.set(0, Cluster::Sub { data: pattern(81, CS as usize), alloc: 0b0101, zero: 0b1000 })
        .set(1, Cluster::Zero)
        .set(2, Cluster::Data(pattern(82, CS as usize)));
    let (bytes, lay) = q.build();
    let img = open(&write_file(dir.path(), "el2.qcow2", &bytes));
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    let h = lay.host[&0];
    let raw_at = |virt: u64| LayerKind::Data { file: HostFileId::Image, host: virt, passthrough: true };
    let e = img.resolve(0, CS).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (sc, 0, data(h)));
    let e = img.resolve(sc, CS).unwrap();
    assert_eq!((e.len, e.depth), (sc, 1), "an unallocated subcluster of an allocated cluster: the backing file");
    assert!(matches!(e.kind, LayerKind::Data { host, .. } | LayerKind::ZeroData { host, .. } if host == sc), "{:?}", e.kind);
    let e = img.resolve(2 * sc, CS).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (sc, 0, data(h + 2 * sc)));
    let e = img.resolve(3 * sc, CS).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (sc, 0, LayerKind::Zero { host: Some((HostFileId::Image, h + 3 * sc)) }));
    let e = img.resolve(4 * sc + 1, CS).unwrap();
    assert_eq!(e.depth, 1);
    if matches!(e.kind, LayerKind::Data { .. }) {
        assert_eq!(e.kind, raw_at(4 * sc + 1));
    }
    let e = img.resolve(CS, CS).unwrap();
    assert_eq!((e.len, e.depth, e.kind), (CS, 0, LayerKind::Zero { host: None }));
    assert_eq!(img.resolve(2 * CS + 5, CS).unwrap().kind, data(lay.host[&2] + 5));
    assert_bytes(&read_all(&img), &q.guest(Some(&base)), "extended L2 guest");

    // a subcluster both allocated and zero is invalid
    q.set(3, Cluster::RawExt(0, 1 | 1 << 32));
    let img = open(&write_file(dir.path(), "bad.qcow2", &q.build().0));
    let e = img.resolve(3 * CS, CS).unwrap_err();
    assert!(e.to_string().contains("invalid subcluster bitmap"), "{e}");
}

/// A lazy write (the NBD plugin's mode) keeps its L2 entries in memory until `flush`: map,
/// block status and reads must see them before, and the file must hold the same after.
#[test]
fn lazy_writes_are_seen_by_the_map_before_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = every_kind().build();
    let path = write_file(dir.path(), "lazy.qcow2", &bytes);
    let mut img = open_with(&path, &OpenOptions { write: true, ..Default::default() });
    img.set_lazy_flush(true);
    let before = map(&img);
    // c2 and c7 were unallocated, c9 past everything written
    for c in [2u64, 7, 9] {
        img.write(c * CS, &pattern(0x40 + c as u8, CS as usize)).unwrap();
    }
    let pending = map(&img);
    assert_ne!(pending, before);
    for c in [2u64, 7, 9] {
        let e = pending.iter().find(|e| e.0 <= c * CS && c * CS < e.0 + e.1).unwrap();
        assert!(matches!(e.3, LayerKind::Data { .. }), "cluster {c} before the flush: {:?}", e.3);
    }
    let content = read_all(&img);
    img.flush().unwrap();
    drop(img);
    let img = open(&path);
    assert_eq!(map(&img), pending, "the map after the flush, reopened");
    assert_bytes(&read_all(&img), &content, "content after the flush");
}

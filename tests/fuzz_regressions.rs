//! Every crash the fuzz targets (fuzz/) and the damaged-image test (tests/damaged.rs) found,
//! kept as a small test: the input is built here from a minimal image made in code, with
//! the field that broke the parser set as it was. Each case runs the library call that
//! failed and the commands of the real binary over the image: no panic, no signal, no hang.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;
use vdiskview::image::{self, Format, OpenOptions};

const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Minimal images

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

/// A consistent qcow2 v3 image with 512-byte clusters and a 64 KiB disk whose first cluster
/// holds data:
/// 0x000 header | 0x200 L1 | 0x400 refcount table | 0x600 L2 | 0x800 refcount block |
/// 0xa00 data.
fn qcow2() -> Vec<u8> {
    let mut b = vec![0u8; 0xc00];
    b[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut b, 4, 3);
    put32(&mut b, 20, 9);
    put64(&mut b, 24, 64 << 10);
    put32(&mut b, 36, 2);
    put64(&mut b, 40, 0x200);
    put64(&mut b, 48, 0x400);
    put32(&mut b, 56, 1);
    put32(&mut b, 96, 4);
    put32(&mut b, 100, 104);
    put64(&mut b, 0x200, 1 << 63 | 0x600);
    put64(&mut b, 0x400, 0x800);
    put64(&mut b, 0x600, 1 << 63 | 0xa00);
    for c in 0..6 {
        b[0x800 + 2 * c + 1] = 1;
    }
    b[0xa00..].fill(0x5a);
    b
}

fn vhd_checksum(b: &[u8], skip: usize) -> u32 {
    !b.iter().enumerate().filter(|(i, _)| !(skip..skip + 4).contains(i)).fold(0u32, |a, (_, &x)| a.wrapping_add(x as u32))
}

/// A VHD footer for a disk of `size` bytes of type `disk_type`, checksummed.
fn vhd_footer(disk_type: u32, size: u64, data_offset: u64) -> Vec<u8> {
    vhd_footer_id(disk_type, size, data_offset, [7; 16])
}

fn vhd_footer_id(disk_type: u32, size: u64, data_offset: u64, unique_id: [u8; 16]) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    put32(&mut f, 8, 2);
    put32(&mut f, 12, 0x1_0000);
    put64(&mut f, 16, data_offset);
    f[28..32].copy_from_slice(b"qem2");
    put64(&mut f, 40, size);
    put64(&mut f, 48, size);
    f[56..60].copy_from_slice(&[0xff, 0xff, 0x10, 0xff]);
    put32(&mut f, 60, disk_type);
    f[68..84].copy_from_slice(&unique_id);
    let c = vhd_checksum(&f, 64);
    put32(&mut f, 64, c);
    f
}

/// A dynamic VHD: footer copy | header at 0x200 | BAT at 0x600 (`bat`, padded to a sector) |
/// `body` | footer. BAT entries count sectors from the start of the file.
fn vhd(size: u64, block_size: u32, bat: &[u32], body: &[u8]) -> Vec<u8> {
    vhd_child(size, block_size, bat, body, None)
}

/// `vhd`, or with `parent = Some(name)` a differencing disk whose parent is the dynamic disk
/// `name` beside it (unique id [7; 16], as `vhd` makes them).
fn vhd_child(size: u64, block_size: u32, bat: &[u32], body: &[u8], parent: Option<&str>) -> Vec<u8> {
    let f = match parent {
        None => vhd_footer(3, size, 0x200),
        Some(_) => vhd_footer_id(4, size, 0x200, [8; 16]),
    };
    let mut b = f.clone();
    let mut h = vec![0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    put64(&mut h, 8, u64::MAX);
    put64(&mut h, 16, 0x600);
    put32(&mut h, 24, 0x1_0000);
    put32(&mut h, 28, bat.len() as u32);
    put32(&mut h, 32, block_size);
    if let Some(name) = parent {
        h[40..56].copy_from_slice(&[7; 16]);
        for (i, u) in name.encode_utf16().enumerate() {
            h[64 + 2 * i..66 + 2 * i].copy_from_slice(&u.to_be_bytes());
        }
    }
    let c = vhd_checksum(&h, 36);
    put32(&mut h, 36, c);
    b.extend_from_slice(&h);
    for e in bat {
        b.extend_from_slice(&e.to_be_bytes());
    }
    b.resize(b.len().next_multiple_of(512), 0xff);
    b.extend_from_slice(body);
    b.extend_from_slice(&f);
    b
}

/// A dynamic VHD of 64 KiB in 4 KiB blocks, block 0 allocated (bitmap at 0x800, data at 0xa00).
fn vhd_dynamic() -> Vec<u8> {
    let mut bat = vec![u32::MAX; 16];
    bat[0] = 0x800 / 512;
    let mut body = vec![0xff; 512];
    body.extend_from_slice(&[0x5a; 4096]);
    vhd(64 << 10, 4096, &bat, &body)
}

// ---------------------------------------------------------------------------------------
// Running it

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every command of the damaged-image test over `path`: each ends in time, without a panic
/// or a signal, and says what went wrong when it fails.
#[track_caller]
fn survives(path: &Path) {
    survives_but(path, &[]);
}

/// `survives`, leaving out the commands named in `skip`.
#[track_caller]
fn survives_but(path: &Path, skip: &[&str]) {
    let p = s(path);
    let runs: &[&[&str]] = &[
        &["info", p],
        &["info", "--output", "json", p],
        &["map", "--output=json", p],
        &["map", p],
        &["read", "--length", "4K", p],
        &["tables", p],
        &["check", p],
        &["check", "--output", "json", p],
        &["render", p, "--size", "100x30", "--format", "text"],
    ];
    for args in runs.iter().filter(|a| !skip.contains(&a[0])) {
        let out = vdiskview_timeout(args, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("vdiskview {}", args.join(" "));
        assert!(out.status.code().is_some(), "{what}: killed by a signal; stderr: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{what}: panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        let check_findings = args[0] == "check" && matches!(out.status.code(), Some(2 | 3));
        if !out.status.success() && !check_findings {
            assert!(
                stderr.lines().any(|l| l.starts_with("vdiskview: ") && !l.starts_with("vdiskview: warning:")),
                "{what}: exit {:?} without an error: {stderr}",
                out.status.code()
            );
        }
    }
}

fn open(path: &Path, format: Format) -> image::Result<image::Image> {
    image::open(path, &OpenOptions { format: Some(format), no_backing: true, ..Default::default() })
}

#[test]
fn minimal_images_are_sound() {
    let dir = workspace();
    let q = write(dir.path(), "q.qcow2", &qcow2());
    let img = open(&q, Format::Qcow2).unwrap();
    let mut buf = vec![0u8; 1024];
    img.read(0, &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0x5a) && buf[512..].iter().all(|&b| b == 0));
    let r = image::check::check_path(&q, None).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    let v = write(dir.path(), "v.vhd", &vhd_dynamic());
    let img = open(&v, Format::Vhd).unwrap();
    assert!(img.warnings.is_empty(), "{:?}", img.warnings);
    img.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
    survives(&q);
    survives(&v);
}

/// damaged.rs: refcount_table_offset (or the bitmap directory's offset or size) of all ones
/// made a check finding whose end, offset + length, overflowed when `check` printed it.
#[test]
fn check_finding_at_the_end_of_the_address_space() {
    let dir = workspace();
    let mut b = qcow2();
    put64(&mut b, 48, u64::MAX);
    let p = write(dir.path(), "rt-huge.qcow2", &b);
    let r = image::check::check_path(&p, None).unwrap();
    assert!(!r.is_clean());
    for f in &r.findings {
        if let (Some(o), Some(l)) = (f.host_offset, f.host_len) {
            assert!(o.checked_add(l).is_some(), "finding past the address space: {f:?}");
        }
    }
    survives(&p);
}

/// A BAT whose 256 entries all point at one block of 2 GiB (a 512 KiB sector bitmap): `tables`
/// counted each block's present sectors bit by bit, 4 Mi bits per block, and ran for minutes
/// over a file of 520 KiB.
#[test]
fn many_huge_blocks_sharing_one_bitmap() {
    let dir = workspace();
    let n = 256u64;
    let bat_sectors = (n * 4).div_ceil(512);
    let bat = vec![(3 + bat_sectors) as u32; n as usize];
    let body = vec![0xaa; 512 << 10];
    let p = write(dir.path(), "aliased.vhd", &vhd(n << 31, 1 << 31, &bat, &body));
    let img = open(&p, Format::Vhd).unwrap();
    let Some(v) = img.top().downcast_ref::<image::vhd::Vhd>() else { panic!("not a VHD") };
    assert_eq!(v.present_sectors(5).unwrap(), Some(1 << 21));
    let t = std::time::Instant::now();
    let out = vdiskview_timeout(&["tables", s(&p)], LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Block#0255") && text.contains("(2097152/4194304 sectors present)"), "{text}");
    eprintln!("tables over {n} aliased 2 GiB blocks: {:?}", t.elapsed());
    survives(&p);
}

/// A differencing disk whose 16 BAT entries all point at one 2 GiB block with an alternating
/// sector bitmap: 4 Mi extents per block. The grid's cell for a unit (and the TUI's density
/// overview, over every unit) collected all of a unit's extents before classifying it, and
/// `render` ran for minutes over a file of 520 KiB. (`map` prints those 64 Mi extents, as it
/// must, so it is left out here.)
#[test]
fn units_of_alternating_sectors_are_classified_without_collecting_them() {
    let dir = workspace();
    let n = 16u64;
    write(dir.path(), "parent.vhd", &vhd(n << 31, 1 << 31, &vec![u32::MAX; n as usize], &[]));
    let bat = vec![4u32; n as usize];
    let body = vec![0xaa; 512 << 10];
    let p = write(dir.path(), "child.vhd", &vhd_child(n << 31, 1 << 31, &bat, &body, Some("parent.vhd")));
    let img = image::open(&p, &OpenOptions::default()).unwrap();
    assert_eq!(img.layers.len(), 2);
    let t = std::time::Instant::now();
    for u in 0..n {
        assert_eq!(img.unit_kind(u).unwrap(), vdiskview::image::summary::UnitKind::Partial);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "unit_kind took {:?}", t.elapsed());
    survives_but(&p, &["map"]);
}

/// 1024 L1 entries all point at one L2 table whose 512 entries all point at one data
/// cluster: half a million references to it. `check` kept a finding for every reference past what
/// a 16-bit refcount holds and named all million guest offsets in one message; it took 5.9 GB
/// (over 64 Ki L1 entries) before it was killed. Findings are now capped, the overflow still
/// counted, and a damaged cluster names a few guest offsets.
#[test]
fn check_of_half_a_million_references_to_one_cluster() {
    let dir = workspace();
    let (cs, n) = (4096u64, 1024u64);
    let l1 = cs;
    let l2 = l1 + n * 8;
    let (data, rt, rb) = (l2 + cs, l2 + 2 * cs, l2 + 3 * cs);
    let mut b = vec![0u8; (rb + cs) as usize];
    b[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut b, 4, 3);
    put32(&mut b, 20, 12);
    put64(&mut b, 24, n * 512 * cs);
    put32(&mut b, 36, n as u32);
    put64(&mut b, 40, l1);
    put64(&mut b, 48, rt);
    put32(&mut b, 56, 1);
    put32(&mut b, 96, 4);
    put32(&mut b, 100, 104);
    for i in 0..n {
        put64(&mut b, (l1 + 8 * i) as usize, 1 << 63 | l2);
    }
    for i in 0..512 {
        put64(&mut b, (l2 + 8 * i) as usize, 1 << 63 | data);
    }
    put64(&mut b, rt as usize, rb);
    for c in 0..=rb / cs {
        put16(&mut b, (rb + 2 * c) as usize, 1);
    }
    let p = write(dir.path(), "many-refs.qcow2", &b);
    let r = image::check::check_path(&p, None).unwrap();
    assert!(r.corruptions > 400_000, "corruptions counted: {}", r.corruptions);
    assert!(r.findings.len() <= image::check::MAX_FINDINGS, "{} findings kept", r.findings.len());
    let longest = r.findings.iter().map(|f| f.message.len()).max().unwrap();
    assert!(longest < 1024, "a finding of {longest} bytes");
    // map and tables print a line per reference (as qemu-img map would): half a million
    survives_but(&p, &["map", "tables"]);
}

/// The minimal qcow2 with one snapshot (id "1", name "s") whose L1 table is the active one and
/// whose extra data records `disk_size`; the snapshot table is at 0xc00.
fn qcow2_with_snapshot(disk_size: u64) -> Vec<u8> {
    let mut b = qcow2();
    put32(&mut b, 60, 1);
    put64(&mut b, 64, 0xc00);
    let mut e = vec![0u8; 40];
    put64(&mut e, 0, 0x200);
    put32(&mut e, 8, 2);
    e[13] = 1; // id_str_size
    e[15] = 1; // name_size
    put32(&mut e, 36, 16); // extra_data_size
    let mut extra = vec![0u8; 16];
    put64(&mut extra, 8, disk_size);
    e.extend_from_slice(&extra);
    e.extend_from_slice(b"1s");
    b.extend_from_slice(&e);
    b.resize(b.len().next_multiple_of(512), 0);
    b
}

/// fuzz qcow2_snapshots (crash-679ef695): a snapshot recording a disk of 2^63 bytes.
/// Opening it padded its L1 table with zeros up to what such a disk needs, 2^48 entries, and
/// `map` would then have walked the padding one L2 table's span at a time.
#[test]
fn snapshot_of_a_disk_of_two_to_the_63() {
    let dir = workspace();
    let p = write(dir.path(), "big-snapshot.qcow2", &qcow2_with_snapshot(0x7fff_ffff_ffff_fffe));
    let opts = OpenOptions { snapshot: Some("1".into()), ..Default::default() };
    let img = image::open(&p, &opts).unwrap();
    assert_eq!(img.virtual_size(), 0x7fff_ffff_ffff_fffe);
    let exts = img.extents(0, u64::MAX).unwrap();
    assert!(exts.len() <= 4, "{} extents: {:?}", exts.len(), &exts[..exts.len().min(4)]);
    let mut buf = vec![0u8; 4096];
    img.read(0, &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 0x5a));
    img.read(img.virtual_size() - 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    for args in [
        vec!["read", "--snapshot", "1", "--length", "4K", s(&p)],
        vec!["read", "--snapshot", "s", "--offset", "0x7fffffffff000000", "--length", "1M", s(&p)],
        vec!["info", "--output", "json", s(&p)],
    ] {
        let out = vdiskview_timeout(&args, LIMIT);
        assert!(out.status.success(), "vdiskview {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    survives(&p);
}

/// fuzz qcow2_snapshots (a slow unit): going back to the previous allocated unit (the TUI's
/// `N`) classified every unit on the way, one at a time: 4 Mi units on a sparse 2 GiB disk of
/// 512-byte clusters whose only data is at its start, 2^31 on a snapshot's 1 TiB disk.
#[test]
fn previous_allocated_unit_on_a_large_sparse_disk() {
    let dir = workspace();
    let n = 65536u64; // L1 entries, 32 KiB of disk each
    let l1_bytes = n * 8;
    let (l2, rt) = (0x200 + l1_bytes, 0x200 + l1_bytes + 0x400);
    let mut b = qcow2();
    put64(&mut b, 24, n << 15);
    put32(&mut b, 36, n as u32);
    put64(&mut b, 48, 0); // no refcounts: not what this is about
    put32(&mut b, 56, 0);
    let data = b[0xa00..0xc00].to_vec();
    b.truncate(0x200);
    b.resize((rt + 0x200) as usize, 0);
    put64(&mut b, 0x200, 1 << 63 | l2);
    put64(&mut b, l2 as usize, 1 << 63 | (l2 + 0x200));
    b[(l2 + 0x200) as usize..(l2 + 0x400) as usize].copy_from_slice(&data);
    let p = write(dir.path(), "sparse-2g.qcow2", &b);
    let img = open(&p, Format::Qcow2).unwrap();
    assert_eq!(img.unit_count(), 4 << 20);
    let t = std::time::Instant::now();
    assert_eq!(img.next_allocated(img.virtual_size() - 1, false).unwrap(), Some(0));
    assert_eq!(img.next_allocated(0, false).unwrap(), None);
    assert_eq!(img.next_allocated(0, true).unwrap(), None);
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    // the fuzz case: a snapshot recording a 1 TiB disk, 2^31 units past its L1 table
    let p = write(dir.path(), "tib-snapshot.qcow2", &qcow2_with_snapshot(1 << 40));
    let img = image::open(&p, &OpenOptions { snapshot: Some("1".into()), ..Default::default() }).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(img.next_allocated(img.virtual_size() - 1, false).unwrap(), Some(0));
    assert_eq!(img.next_allocated(0, true).unwrap(), None);
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
}

/// The windowed search back gives what classifying every unit back would, on a qemu-made
/// image with data, zeros, compressed clusters and subclusters, over a backing file.
#[test]
fn previous_allocated_unit_agrees_with_the_grid() {
    let dir = workspace();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&base), "1M"]);
    qemu_io("qcow2", &base, &["write -P 1 0 64k", "write -P 2 700k 8k"]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-o", "cluster_size=32k,extended_l2=on", "-b", "base.qcow2", "-F", "qcow2", s(&top), "4M",
    ]);
    qemu_io("qcow2", &top, &["write -P 3 1k 1k", "write -z 64k 32k", "write -c -P 4 256k 32k", "write -P 5 1M 2k", "write -P 6 4032k 64k"]);
    let img = image::open(&top, &OpenOptions::default()).unwrap();
    use vdiskview::image::summary::UnitKind;
    let brute = |u: u64| -> Option<u64> {
        (0..u).rev().find(|&v| {
            matches!(img.unit_kind(v).unwrap(), UnitKind::Data { depth: 0 } | UnitKind::Partial | UnitKind::Shared | UnitKind::Compressed { depth: 0 })
        })
        .map(|v| img.unit_start(v))
    };
    for u in 0..img.unit_count() {
        for virt in [img.unit_start(u), img.unit_start(u) + 5000] {
            assert_eq!(img.next_allocated(virt, false).unwrap(), brute(u), "back from 0x{virt:x}");
        }
    }
}

/// fuzz partitions (crash-0e734055): an ext2 superblock (no 64bit feature) with garbage in
/// the block count's high word. vdiskview's own check ignored that word, ext4-view did not,
/// and sized its table of group descriptors by it: a 32 GiB allocation (an abort under a
/// 4 GiB address-space limit).
#[test]
fn ext2_block_count_high_word_without_64bit() {
    let dir = workspace();
    let p = dir.path().join("ext2.raw");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let out = std::process::Command::new("mke2fs").args(["-q", "-F", "-t", "ext2", "-b", "1024", s(&p)]).output().unwrap();
    assert!(out.status.success(), "mke2fs: {}", String::from_utf8_lossy(&out.stderr));
    let ok = vdiskview_timeout(&["ls", s(&p)], LIMIT);
    assert!(ok.status.success(), "ls of the intact filesystem: {}", String::from_utf8_lossy(&ok.stderr));
    patch_file(&p, 0x400 + 0x150, &0x3ffu32.to_le_bytes());
    let img = open(&p, Format::Raw).unwrap();
    let err = vdiskview::guest::open_fs(std::rc::Rc::new(img), None).err().expect("a damaged superblock");
    assert!(err.to_string().contains("high word"), "{err}");
    // under the damaged-image test's 4 GiB of address space (the table asked for 32 GiB)
    let out = run_with_timeout(
        std::process::Command::new("prlimit").args(["--as=4294967296", "--", vdiskview_bin(), "ls", s(&p)]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "ls: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("vdiskview: "));
}

/// fuzz qcow2_bitmaps (crash-02b7d421): a bitmap whose granularity is 2^60 bytes. Its regions
/// placed the data of table entry 1 at guest offset 1 × (4096 × 2^60), which overflowed.
#[test]
fn bitmap_data_region_with_a_granularity_of_two_to_the_60() {
    let dir = workspace();
    let mut b = qcow2();
    put64(&mut b, 88, 1); // autoclear: bitmaps consistent
    put32(&mut b, 104, 0x2385_2875);
    put32(&mut b, 108, 24);
    put32(&mut b, 112, 1); // nb_bitmaps
    put64(&mut b, 120, 32); // directory size
    put64(&mut b, 128, 0xc00); // directory offset
    b.resize(0x1000, 0);
    put64(&mut b, 0xc00, 0xe00); // table offset
    put32(&mut b, 0xc08, 2); // table size
    b[0xc10] = 1; // type: dirty tracking
    b[0xc11] = 60; // granularity bits
    b[0xc13] = 1; // name size
    b[0xc18] = b'b';
    put64(&mut b, 0xe08, 0xa00); // entry 1: data at 0xa00
    let p = write(dir.path(), "granularity-60.qcow2", &b);
    let img = open(&p, Format::Qcow2).unwrap();
    let regions = img.top().regions();
    assert!(regions.iter().any(|r| r.structure == "bitmap-data"), "{regions:?}");
    survives(&p);
    for args in [vec!["bitmaps", s(&p)], vec!["where", s(&p), "0xa00", "--file"], vec!["dump", s(&p), "--offset", "0xc00", "--length", "1K", "--file"]] {
        let out = vdiskview_timeout(&args, LIMIT);
        assert_ne!(out.status.code(), Some(101), "vdiskview {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.code().is_some(), "vdiskview {}: killed", args.join(" "));
    }
}

/// vmdk_image (writes): a sparse extent whose header claims 256 MiB grains over a 4 MiB disk.
/// A new grain was built in one buffer of the whole grain (the fuzz allocator's runaway
/// guard); it is now written in 1 MiB pieces, only as far as the extent reaches, the rest of
/// the grain left a hole. qemu-io's write of the same bytes reads the same.
#[test]
fn vmdk_write_into_a_quarter_gib_grain() {
    use std::os::unix::fs::MetadataExt;
    let dir = workspace();
    let (q, v) = (dir.path().join("q.vmdk"), dir.path().join("v.vmdk"));
    qemu_img(&["create", "-q", "-f", "vmdk", s(&q), "4M"]);
    let mut b = std::fs::read(&q).unwrap();
    b[20..28].copy_from_slice(&0x80000u64.to_le_bytes());
    std::fs::write(&q, &b).unwrap();
    std::fs::write(&v, &b).unwrap();
    qemu_io("vmdk", &q, &["write -P 7 1M 4k"]);
    vdiskview_ok(&["write", s(&v), "--offset", "1M", "--length", "4k", "--pattern", "7"]);
    qemu_img(&["compare", "-f", "vmdk", "-F", "vmdk", s(&q), s(&v)]);
    let m = std::fs::metadata(&v).unwrap();
    assert_eq!(m.len(), std::fs::metadata(&q).unwrap().len(), "the file ends where qemu's does");
    assert!(m.blocks() * 512 < 64 << 20, "{} bytes allocated for a 4 MiB disk", m.blocks() * 512);
    survives(&v);
}

/// vdi_image (writes): a VDI header claiming 256 MiB blocks (the largest vdiskview opens;
/// qemu opens only 1 MiB) over a 4 MiB disk. A new block was built in one buffer of the whole
/// block and written whole; it is now written in 1 MiB pieces, zeros past the end of the file
/// left a hole. The guest bytes read back equal a raw image qemu-io wrote the same bytes into.
#[test]
fn vdi_write_into_a_quarter_gib_block() {
    use std::os::unix::fs::MetadataExt;
    let dir = workspace();
    let (v, raw) = (dir.path().join("v.vdi"), dir.path().join("r.raw"));
    qemu_img(&["create", "-q", "-f", "vdi", s(&v), "4M"]);
    let mut b = std::fs::read(&v).unwrap();
    b[376..380].copy_from_slice(&(256u32 << 20).to_le_bytes());
    std::fs::write(&v, &b).unwrap();
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "4M"]);
    qemu_io("raw", &raw, &["write -P 7 1M 4k", "write -P 9 3M 64k"]);
    vdiskview_ok(&["write", s(&v), "--offset", "1M", "--length", "4k", "--pattern", "7"]);
    vdiskview_ok(&["write", s(&v), "--offset", "3M", "--length", "64k", "--pattern", "9"]);
    let got = vdiskview_ok(&["read", s(&v)]);
    assert!(got == std::fs::read(&raw).unwrap(), "the guest bytes differ from qemu-io's raw image");
    let m = std::fs::metadata(&v).unwrap();
    let data_off = u32::from_le_bytes(b[344..348].try_into().unwrap()) as u64;
    assert_eq!(m.len(), data_off + (256 << 20), "the file ends a whole block past the data offset");
    assert!(m.blocks() * 512 < 64 << 20, "{} bytes allocated for a 4 MiB disk", m.blocks() * 512);
    survives(&v);
}

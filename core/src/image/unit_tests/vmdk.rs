//! VMDK built by hand from the spec ("Virtual Disk Format 1.1"), in the shapes VMware's own
//! tools write: a monolithicSparse with zeroed grains and a redundant directory, a
//! streamOptimized whose directory is found through the footer (markers, compressed grains),
//! and a descriptor file naming a sparse, a flat and a zero extent.

use std::io::Write;

use super::build::write_file;
use super::{assert_bytes, map, open, read_all};
use crate::image::check::check_image;
use crate::image::{HostFileId, LayerKind};

const S: u64 = 512;
/// Grains of 8 sectors (4 KiB), 64 grains (256 KiB), one 512-entry grain table.
const GRAIN: u64 = 8 * S;
const CAP_SECTORS: u64 = 512;

fn header(flags: u32, gd: u64, rgd: u64, overhead: u64, compression: u16, desc: (u64, u64)) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&(if compression == 1 { 3u32 } else { 1u32 }).to_le_bytes());
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&CAP_SECTORS.to_le_bytes());
    h[20..28].copy_from_slice(&(GRAIN / S).to_le_bytes());
    h[28..36].copy_from_slice(&desc.0.to_le_bytes());
    h[36..44].copy_from_slice(&desc.1.to_le_bytes());
    h[44..48].copy_from_slice(&512u32.to_le_bytes());
    h[48..56].copy_from_slice(&rgd.to_le_bytes());
    h[56..64].copy_from_slice(&gd.to_le_bytes());
    h[64..72].copy_from_slice(&overhead.to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&compression.to_le_bytes());
    h
}

fn put(b: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if b.len() < end {
        b.resize(end, 0);
    }
    b[off as usize..end].copy_from_slice(data);
}

fn gt(entries: &[(usize, u32)]) -> Vec<u8> {
    let mut t = vec![0u8; 512 * 4];
    for &(i, v) in entries {
        t[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    t
}

const DESC: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=12345678\nparentCID=ffffffff\n\
isNativeSnapshot=\"no\"\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 512 SPARSE \"m.vmdk\"\n\n\
# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.uuid.image = \"6f1c7a2e-1d7b-4e0b-9d7a-2c3b4d5e6f70\"\n";

/// monolithicSparse: header, descriptor (sector 1), RGD (2) + RGT (3-6), GD (7) + GT (8-11),
/// grains from sector 16: grain 0 data, grain 1 zeroed, grains 2-3 stored one after the other.
fn monolithic() -> (Vec<u8>, Vec<u8>) {
    let mut b = header(0b111, 7, 2, 16, 0, (1, 1));
    put(&mut b, S, DESC.as_bytes());
    let entries = [(0, 16u32), (1, 1), (2, 24), (3, 32)];
    put(&mut b, 2 * S, &3u32.to_le_bytes());
    put(&mut b, 3 * S, &gt(&entries));
    put(&mut b, 7 * S, &8u32.to_le_bytes());
    put(&mut b, 8 * S, &gt(&entries));
    let mut guest = vec![0u8; (CAP_SECTORS * S) as usize];
    for (g, sector, fill) in [(0u64, 16u64, 0xa1u8), (2, 24, 0xb2), (3, 32, 0xc3)] {
        let data = vec![fill; GRAIN as usize];
        put(&mut b, sector * S, &data);
        guest[(g * GRAIN) as usize..((g + 1) * GRAIN) as usize].copy_from_slice(&data);
    }
    (b, guest)
}

#[test]
fn monolithic_sparse_map_read_and_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, guest) = monolithic();
    let p = write_file(dir.path(), "m.vmdk", &bytes);
    let img = open(&p);
    assert_eq!(img.format().name(), "vmdk");
    assert_eq!(img.virtual_size(), CAP_SECTORS * S);
    let data = |host| LayerKind::Data { file: HostFileId::Image, host, passthrough: false };
    assert_eq!(
        map(&img),
        vec![
            (0, GRAIN, 0, data(16 * S)),
            (GRAIN, GRAIN, 0, LayerKind::Zero { host: None }),
            (2 * GRAIN, 2 * GRAIN, 0, data(24 * S)),
            (4 * GRAIN, CAP_SECTORS * S - 4 * GRAIN, 0, LayerKind::Unallocated { host: None }),
        ]
    );
    assert_bytes(&read_all(&img), &guest, "read");
    let k = img.top().info("m.vmdk");
    let fs = k.format_specific.unwrap();
    assert_eq!(fs["data"]["cid"], 0x12345678);
    assert_eq!(fs["data"]["create-type"], "monolithicSparse");
    assert_eq!(fs["data"]["extents"][0]["format"], "");
    let extra = k.extra.unwrap().1;
    assert_eq!(extra["ddb"]["ddb.adapterType"], "lsilogic");
    assert!(check_image(&img).unwrap().is_clean());
    // the Header pane's structures: the header's fields and the descriptor's lines
    let regions = img.top().regions();
    assert!(regions.iter().any(|r| r.structure == "header" && r.fields.iter().any(|f| f.name == "Grain size")));
    assert!(regions.iter().any(|r| r.structure == "descriptor" && r.fields.iter().any(|f| f.name == "CID" && f.value == "12345678")));
}

#[test]
fn grain_directories_that_disagree_are_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = monolithic();
    put(&mut bytes, 2 * S, &0u32.to_le_bytes());
    let p = write_file(dir.path(), "m.vmdk", &bytes);
    let r = check_image(&open(&p)).unwrap();
    assert!(r.is_clean(), "qemu does not count it");
    assert!(r.findings.iter().any(|f| f.message.contains("disagree")), "{:?}", r.findings);
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// streamOptimized as VMware writes it: the header says "directory at the end"; compressed
/// grains with their markers, a GT marker and table, a GD marker and directory, the footer
/// marker, the footer, the end-of-stream marker.
#[test]
fn stream_optimized_with_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (b, guest) = stream();
    let p = write_file(dir.path(), "so.vmdk", &b);
    let img = open(&p);
    assert_bytes(&read_all(&img), &guest, "read");
    let m = map(&img);
    assert!(matches!(m[0].3, LayerKind::Compressed { cluster_virt: 0, .. }), "{:?}", m);
    assert!(matches!(m[2].3, LayerKind::Compressed { cluster_virt, .. } if cluster_virt == 5 * GRAIN), "{:?}", m);
    assert_eq!(img.top().info("so.vmdk").format_specific.unwrap()["data"]["create-type"], "streamOptimized");
    let names: Vec<String> = img.top().regions().iter().filter(|r| r.structure == "marker").map(|r| r.name.clone()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(check_image(&img).unwrap().findings.is_empty());
}

fn stream() -> (Vec<u8>, Vec<u8>) {
    let flags = 1 | (1 << 16) | (1 << 17);
    let mut b = header(flags, u64::MAX, 0, 2, 1, (1, 1));
    let mut desc = DESC.replace("monolithicSparse", "streamOptimized");
    desc.truncate(512);
    put(&mut b, S, desc.as_bytes());
    let mut guest = vec![0u8; (CAP_SECTORS * S) as usize];
    let mut sector = 2u64;
    let mut entries = Vec::new();
    for (g, fill) in [(0u64, 0x11u8), (5, 0x55)] {
        let data: Vec<u8> = (0..GRAIN).map(|i| fill ^ (i as u8 & 7)).collect();
        guest[(g * GRAIN) as usize..((g + 1) * GRAIN) as usize].copy_from_slice(&data);
        let z = deflate(&data);
        let mut m = (g * GRAIN / S).to_le_bytes().to_vec();
        m.extend_from_slice(&(z.len() as u32).to_le_bytes());
        m.extend_from_slice(&z);
        put(&mut b, sector * S, &m);
        entries.push((g as usize, sector as u32));
        sector += (m.len() as u64).div_ceil(S);
    }
    let marker = |val: u64, kind: u32| {
        let mut m = vec![0u8; 512];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        m
    };
    put(&mut b, sector * S, &marker(4, 1));
    let gt_at = sector + 1;
    put(&mut b, gt_at * S, &gt(&entries));
    sector = gt_at + 4;
    put(&mut b, sector * S, &marker(1, 2));
    let gd_at = sector + 1;
    put(&mut b, gd_at * S, &(gt_at as u32).to_le_bytes());
    sector = gd_at + 1;
    put(&mut b, sector * S, &marker(1, 3));
    put(&mut b, (sector + 1) * S, &header(flags, gd_at, 0, 2, 1, (1, 1)));
    put(&mut b, (sector + 2) * S, &marker(0, 0));
    (b, guest)
}

/// Random byte changes in the metadata of both shapes (a small fuzz run that needs no
/// cargo-fuzz): open, map, read, regions, tables and check answer or fail, never panic.
#[test]
fn mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (name, base) in [("m.vmdk", monolithic().0), ("so.vmdk", stream().0)] {
        for _ in 0..400 {
            let mut b = base.clone();
            for _ in 0..1 + rnd() % 6 {
                // mostly the header, descriptor, directories and tables; sometimes anywhere
                let limit = if rnd() % 4 == 0 { b.len() } else { (12 * S as usize).min(b.len()) };
                let i = (rnd() % limit as u64) as usize;
                b[i] = match rnd() % 3 {
                    0 => 0xff,
                    1 => 0,
                    _ => rnd() as u8,
                };
            }
            if rnd() % 8 == 0 {
                let n = (rnd() % b.len() as u64) as usize;
                b.truncate(n);
            }
            let p = write_file(dir.path(), name, &b);
            let Ok(img) = crate::image::open(&p, &Default::default()) else { continue };
            let size = img.virtual_size().min(4 << 20);
            if let Ok(ext) = img.extents(0, size) {
                for e in ext {
                    let mut buf = vec![0u8; e.len.min(1 << 16) as usize];
                    let _ = img.read_extent(&e, &mut buf);
                }
            }
            let _ = img.top().regions();
            let _ = img.top().tables(&mut std::io::sink());
            let _ = check_image(&img);
            let _ = img.top().info(name);
        }
    }
}

/// A descriptor file with a sparse, a flat and a zero extent, beside it.
#[test]
fn descriptor_with_sparse_flat_and_zero_extents() {
    let dir = tempfile::tempdir().unwrap();
    let (sparse, sparse_guest) = monolithic();
    write_file(dir.path(), "m.vmdk", &sparse);
    let flat: Vec<u8> = (0..(8 * S + 4 * S)).map(|i| (i % 251) as u8).collect();
    write_file(dir.path(), "f.vmdk", &flat);
    let desc = "version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n\
RW 512 SPARSE \"m.vmdk\"\nRW 8 FLAT \"f.vmdk\" 4\nRW 16 ZERO\n";
    let p = write_file(dir.path(), "d.vmdk", desc.as_bytes());
    let img = open(&p);
    assert_eq!(img.virtual_size(), (512 + 8 + 16) * S);
    let mut want = sparse_guest;
    want.extend_from_slice(&flat[(4 * S) as usize..]);
    want.extend_from_slice(&[0u8; 16 * 512]);
    assert_bytes(&read_all(&img), &want, "read");
    let e = img.resolve(512 * S + 10, 100).unwrap();
    assert_eq!(e.host_at(0), Some((HostFileId::Extent(1), 4 * S + 10)));
    assert_eq!(img.host_name(&e), Some(format!("{}/f.vmdk", dir.path().display())).as_deref());
    let e = img.resolve(520 * S, 100).unwrap();
    assert_eq!(e.kind, LayerKind::Zero { host: None });
    let fs = img.top().info("d.vmdk").format_specific.unwrap();
    let formats: Vec<&str> = fs["data"]["extents"].as_array().unwrap().iter().map(|x| x["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["SPARSE", "FLAT", "ZERO"]);
    // qemu skips ZERO extents: info says its disk differs
    let problems = img.top().info("d.vmdk").problems;
    assert!(problems.iter().any(|p| p.contains("ZERO")), "{problems:?}");
}

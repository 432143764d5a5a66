//! `vdiskview map` must print exactly what `qemu-img map` prints, in JSON
//! (compared as parsed JSON) and in human form (compared as text).
mod support;

use support::images::{build, TestImage};
use support::*;

fn check_map(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    check_map_image(&img);
}

fn check_map_image(img: &TestImage) {
    let path = s(&img.path);

    // JSON
    let expected = qemu_map_json(&img.path, img.fmt);
    let actual = vdiskview_json(&["map", "--output", "json", path]);
    assert_json_eq(&actual, &expected, &format!("{}: map --output json {path}", img.kind));

    // Human
    let q = qemu_map_human(&img.path, img.fmt);
    let v = vdiskview(&["map", path]);
    if img.compressed {
        assert!(
            !q.status.success(),
            "{}: expected qemu-img map to refuse compressed clusters",
            img.kind
        );
        assert!(
            !v.status.success(),
            "{}: vdiskview map (human) must fail on compressed clusters like qemu-img; stdout:\n{}",
            img.kind,
            String::from_utf8_lossy(&v.stdout)
        );
        assert_ne!(v.status.code(), Some(101), "{}: panicked: {}", img.kind, String::from_utf8_lossy(&v.stderr));
        let stderr = String::from_utf8_lossy(&v.stderr);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", img.kind);
    } else {
        assert!(q.status.success(), "qemu-img map failed: {}", String::from_utf8_lossy(&q.stderr));
        assert!(
            v.status.success(),
            "{}: vdiskview map {path} failed: {}",
            img.kind,
            String::from_utf8_lossy(&v.stderr)
        );
        let qt = String::from_utf8(q.stdout).unwrap();
        let vt = String::from_utf8(v.stdout).unwrap();
        assert_eq!(vt, qt, "{}: vdiskview map {path} (human) differs from qemu-img map", img.kind);
    }
}

macro_rules! map_tests {
    ($($name:ident => $kind:expr,)*) => {
        $( #[test] fn $name() { check_map($kind); } )*
    };
}

map_tests! {
    qcow2_v3_c512 => "qcow2-v3-c512",
    qcow2_v3_c4k => "qcow2-v3-c4k",
    qcow2_v3_c64k => "qcow2-v3-c64k",
    qcow2_v3_c2m => "qcow2-v3-c2m",
    qcow2_v2_c512 => "qcow2-v2-c512",
    qcow2_v2_c4k => "qcow2-v2-c4k",
    qcow2_v2_c64k => "qcow2-v2-c64k",
    qcow2_v2_c2m => "qcow2-v2-c2m",
    qcow2_v3_c64k_1g_sparse => "qcow2-v3-c64k-1g",
    qcow2_compressed_zlib => "qcow2-zlib",
    qcow2_compressed_zstd => "qcow2-zstd",
    qcow2_compressed_zlib_c4k => "qcow2-zlib-c4k",
    qcow2_extended_l2 => "qcow2-extl2-c64k",
    qcow2_extended_l2_over_backing => "qcow2-extl2-c32k-backing",
    qcow2_backing_chain_3_deep => "qcow2-chain3",
    qcow2_raw_backing => "qcow2-raw-backing",
    qcow2_external_data_file_raw => "qcow2-datafile-raw",
    qcow2_external_data_file => "qcow2-datafile",
    vhd_dynamic => "vhd-dynamic",
    vhd_dynamic_256m => "vhd-dynamic-256m",
    vhd_fixed => "vhd-fixed",
    raw_sparse => "raw-sparse",
    raw_qemu_created => "raw-qemu",
    raw_empty => "raw-empty",
}

/// The committed demo image.
#[test]
fn demo_image() {
    let img = TestImage {
        kind: "demo.vhd",
        path: demo_vhd(),
        fmt: "vpc",
        compressed: false,
        size: 8 * MIB,
        cluster: 2 * MIB,
        chain: vec![demo_vhd()],
    };
    check_map_image(&img);
}

/// Relative and absolute spellings of the same image give the same filenames
/// as qemu-img (it prints the path as given / as resolved for backing files).
#[test]
fn chain_relative_path_spelling() {
    let dir = workspace();
    let img = build("qcow2-chain3", dir.path());
    let run_in = |prog: &str, args: &[&str]| {
        run_with_timeout(
            std::process::Command::new(prog).args(args).current_dir(dir.path()),
            DEFAULT_TIMEOUT,
        )
    };
    let q = run_in("qemu-img", &["map", "-f", "qcow2", "top.qcow2"]);
    assert!(q.status.success());
    let v = run_in(vdiskview_bin(), &["map", "top.qcow2"]);
    assert!(v.status.success(), "vdiskview map top.qcow2 (cwd {}): {}", dir.path().display(), String::from_utf8_lossy(&v.stderr));
    assert_eq!(String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&q.stdout));
    let _ = img;
}

/// A qcow2 whose L2 tables lie next to each other in the file (the whole disk zeroed first,
/// which allocates every L2 table and no data, then data written in places): vdiskview reads
/// such tables many at a time, at most 1 MiB (256 tables of 4 KiB; this image has a run of
/// 320). map must still print qemu-img map's bytes exactly, JSON and human.
#[test]
fn qcow2_adjacent_l2_tables_byte_for_byte() {
    let dir = workspace();
    let path = dir.path().join("adjacent.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&path), "640M"]);
    qemu_io(
        "qcow2",
        &path,
        &["write -z 0 640M", "write -P 3 1000000 70000", "write -P 4 400M 1M", "write -P 5 639M 4096", "write -z 400M 8192"],
    );
    let l1 = {
        let b = std::fs::read(&path).unwrap();
        let (off, n) = (be64(&b, 40) as usize, be32(&b, 36) as usize);
        (0..n).map(|i| be64(&b, off + 8 * i) & 0x00ff_ffff_ffff_fe00).collect::<Vec<_>>()
    };
    let (mut run, mut longest) = (1, 1);
    for w in l1.windows(2) {
        run = if w[1] == w[0] + 4096 { run + 1 } else { 1 };
        longest = longest.max(run);
    }
    assert!(longest > 256, "the image should have a run of adjacent L2 tables longer than one read (longest: {longest})");

    let q = qemu_img(&["map", "--output=json", "-f", "qcow2", s(&path)]);
    let v = String::from_utf8(vdiskview_ok(&["map", "--output", "json", s(&path)])).unwrap();
    assert_eq!(v, q, "map --output json differs from qemu-img map");
    let q = qemu_map_human(&path, "qcow2");
    assert!(q.status.success());
    let v = vdiskview_ok(&["map", s(&path)]);
    assert_eq!(String::from_utf8(v).unwrap(), String::from_utf8(q.stdout).unwrap(), "map (human) differs from qemu-img map");
}

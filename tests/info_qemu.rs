//! `vdiskview info --output json` uses qemu-img info's keys and values.
mod support;

use serde_json::Value;
use support::images::{build, TestImage};
use support::*;

const TOP_KEYS: &[&str] = &[
    "virtual-size",
    "format",
    "cluster-size",
    "actual-size",
    "dirty-flag",
    "backing-filename",
    "backing-filename-format",
    "full-backing-filename",
];

const QCOW2_DATA_KEYS: &[&str] = &[
    "compat",
    "compression-type",
    "lazy-refcounts",
    "refcount-bits",
    "corrupt",
    "extended-l2",
];

fn check_info_image(img: &TestImage) {
    let path = s(&img.path);
    let q = qemu_info_json(&img.path, img.fmt);
    let v = vdiskview_json(&["info", "--output", "json", path]);
    let what = format!("{}: vdiskview info --output json {path}", img.kind);
    compare_info(&v, &q, &what);

    // extras: the chain of layers
    let layers = v
        .pointer("/vdiskview/layers")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what}: missing vdiskview.layers:\n{}", pretty(&v)));
    let chain = qemu_info_chain_json(&img.path, img.fmt);
    let chain = chain.as_array().unwrap();
    assert_eq!(
        layers.len(),
        chain.len(),
        "{what}: vdiskview.layers should list {} layers like qemu-img info --backing-chain:\n{}",
        chain.len(),
        pretty(&v)
    );
    for (i, (l, q)) in layers.iter().zip(chain).enumerate() {
        let lf = l["filename"].as_str().unwrap_or_else(|| panic!("{what}: layers[{i}].filename"));
        let qf = q["filename"].as_str().unwrap();
        assert!(
            lf == qf || same_file(lf, std::path::Path::new(qf)),
            "{what}: layers[{i}].filename {lf} vs qemu {qf}"
        );
        assert_eq!(l["format"], q["format"], "{what}: layers[{i}].format");
        assert_eq!(l["virtual-size"], q["virtual-size"], "{what}: layers[{i}].virtual-size");
    }
    assert!(
        v.pointer("/vdiskview/warnings").map(Value::is_array).unwrap_or(false),
        "{what}: vdiskview.warnings must be an array:\n{}",
        pretty(&v)
    );
}

fn compare_info(v: &Value, q: &Value, what: &str) {
    for key in TOP_KEYS {
        match q.get(*key) {
            Some(qv) => assert_eq!(
                v.get(*key),
                Some(qv),
                "{what}: key {key:?}\nvdiskview:\n{}\nqemu-img:\n{}",
                pretty(v),
                pretty(q)
            ),
            None => {
                // qemu has no such key (e.g. no backing file): vdiskview must
                // not invent a backing file.
                if key.contains("backing") {
                    let x = v.get(*key).unwrap_or(&Value::Null);
                    assert!(x.is_null(), "{what}: unexpected {key:?} = {x}");
                }
            }
        }
    }
    if let Some(qfs) = q.get("format-specific") {
        if qfs["type"] == "qcow2" {
            let vfs = v
                .get("format-specific")
                .unwrap_or_else(|| panic!("{what}: missing format-specific:\n{}", pretty(v)));
            assert_eq!(vfs["type"], qfs["type"], "{what}: format-specific.type");
            for key in QCOW2_DATA_KEYS {
                if let Some(qv) = qfs["data"].get(*key) {
                    assert_eq!(
                        vfs["data"].get(*key),
                        Some(qv),
                        "{what}: format-specific.data.{key}\nvdiskview:\n{}\nqemu-img:\n{}",
                        pretty(v),
                        pretty(q)
                    );
                }
            }
        }
    }
}

fn check_info(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    check_info_image(&img);
}

macro_rules! info_tests {
    ($($name:ident => $kind:expr,)*) => {
        $( #[test] fn $name() { check_info($kind); } )*
    };
}

info_tests! {
    qcow2_v3_c512 => "qcow2-v3-c512",
    qcow2_v3_c64k => "qcow2-v3-c64k",
    qcow2_v3_c2m => "qcow2-v3-c2m",
    qcow2_v2_c4k => "qcow2-v2-c4k",
    qcow2_v2_c64k => "qcow2-v2-c64k",
    qcow2_v3_1g => "qcow2-v3-c64k-1g",
    qcow2_zlib => "qcow2-zlib",
    qcow2_zstd => "qcow2-zstd",
    qcow2_extended_l2 => "qcow2-extl2-c64k",
    qcow2_extended_l2_over_backing => "qcow2-extl2-c32k-backing",
    qcow2_chain3 => "qcow2-chain3",
    qcow2_raw_backing => "qcow2-raw-backing",
    qcow2_data_file_raw => "qcow2-datafile-raw",
    qcow2_data_file => "qcow2-datafile",
    vhd_dynamic => "vhd-dynamic",
    vhd_dynamic_256m => "vhd-dynamic-256m",
    vhd_fixed => "vhd-fixed",
    raw_sparse => "raw-sparse",
    raw_empty => "raw-empty",
}

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
    check_info_image(&img);
    let v = vdiskview_json(&["info", "--output", "json", s(&demo_vhd())]);
    assert_eq!(v["virtual-size"], 8390656);
    assert_eq!(v["cluster-size"], 2097152);
    assert_eq!(v["format"], "vpc");
}

#[test]
fn lazy_refcounts_and_refcount_bits() {
    let dir = workspace();
    let path = dir.path().join("lazy.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on,refcount_bits=64,cluster_size=8192",
        s(&path),
        "3M",
    ]);
    qemu_io("qcow2", &path, &["write -P 1 0 1M"]);
    let q = qemu_info_json(&path, "qcow2");
    let v = vdiskview_json(&["info", "--output", "json", s(&path)]);
    compare_info(&v, &q, "lazy_refcounts=on,refcount_bits=64");
    assert_eq!(v["format-specific"]["data"]["lazy-refcounts"], true);
    assert_eq!(v["format-specific"]["data"]["refcount-bits"], 64);
}

/// `--format raw` forces the raw driver, like `qemu-img info -f raw`.
#[test]
fn forced_raw_format() {
    let dir = workspace();
    let img = build("qcow2-v3-c64k", dir.path());
    let q = qemu_info_json(&img.path, "raw");
    let v = vdiskview_json(&["info", "--output", "json", "--format", "raw", s(&img.path)]);
    assert_eq!(v["format"], "raw");
    assert_eq!(v["virtual-size"], q["virtual-size"]);
    assert_eq!(v["actual-size"], q["actual-size"]);
}

/// `--format vhd` on a fixed VHD gives qemu's `-f vpc` view.
#[test]
fn forced_vhd_format() {
    let dir = workspace();
    let img = build("vhd-fixed", dir.path());
    let q = qemu_info_json(&img.path, "vpc");
    let v = vdiskview_json(&["info", "--output", "json", "--format", "vhd", s(&img.path)]);
    compare_info(&v, &q, "info --format vhd fixed.vhd");
}

/// Forcing a format the file is not must fail cleanly.
#[test]
fn forced_wrong_format_fails() {
    let dir = workspace();
    let img = build("raw-sparse", dir.path());
    let out = vdiskview(&["info", "--format", "qcow2", s(&img.path)]);
    assert_clean_error(&out, "info --format qcow2 on a raw file");
}

/// Human output exists and mentions the format and the virtual size.
#[test]
fn human_output_smoke() {
    let dir = workspace();
    let img = build("qcow2-chain3", dir.path());
    let text = vdiskview_text(&["info", s(&img.path)]);
    assert!(text.contains("qcow2"), "{text}");
    assert!(text.contains("8388608") || text.contains("8 MiB"), "{text}");
    assert!(text.contains("mid.qcow2"), "human info should name the backing file:\n{text}");
}

//! `vdiskview read` must produce the same guest bytes as
//! `qemu-img convert -O raw`, for whole disks and for `--offset/--length`
//! windows; `read --file` returns the image file's own bytes.
mod support;

use support::images::{build, TestImage};
use support::*;

fn read_all(img: &TestImage) -> Vec<u8> {
    vdiskview_ok(&["read", s(&img.path)])
}

fn check_read(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    assert!(img.small());
    let expected = qemu_convert_raw(&img.path, img.fmt);
    let actual = read_all(&img);
    assert_bytes_eq(&actual, &expected, &format!("{kind}: vdiskview read {}", img.path.display()));
}

macro_rules! read_tests {
    ($($name:ident => $kind:expr,)*) => {
        $( #[test] fn $name() { check_read($kind); } )*
    };
}

read_tests! {
    qcow2_v3_c512 => "qcow2-v3-c512",
    qcow2_v3_c4k => "qcow2-v3-c4k",
    qcow2_v3_c64k => "qcow2-v3-c64k",
    qcow2_v3_c2m => "qcow2-v3-c2m",
    qcow2_v2_c512 => "qcow2-v2-c512",
    qcow2_v2_c4k => "qcow2-v2-c4k",
    qcow2_v2_c64k => "qcow2-v2-c64k",
    qcow2_v2_c2m => "qcow2-v2-c2m",
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
    vhd_fixed => "vhd-fixed",
    raw_sparse => "raw-sparse",
    raw_qemu_created => "raw-qemu",
    raw_empty => "raw-empty",
}

#[test]
fn demo_vhd_reads_like_qemu() {
    let expected = qemu_convert_raw(&demo_vhd(), "vpc");
    let actual = vdiskview_ok(&["read", s(&demo_vhd())]);
    assert_bytes_eq(&actual, &expected, "read assets/demo.vhd");
    // the ext2 file test1.txt is somewhere in there
    let needle = b"Hello, Sailor!\n";
    assert!(actual.windows(needle.len()).any(|w| w == needle));
}

/// (offset expression, offset value, length expression, length value).
/// `None` = option not given: offset 0 / to the end of the disk.
type Window = (Option<String>, u64, Option<String>, Option<u64>);

fn windows_for(c: u64, size: u64) -> Vec<Window> {
    let w = |o: Option<&str>, ov: u64, l: Option<&str>, lv: Option<u64>| {
        (o.map(str::to_string), ov, l.map(str::to_string), lv)
    };
    let mut v = vec![
        w(Some("0x200+512*3"), 0x200 + 512 * 3, Some("4K"), Some(4096)),
        w(Some("4K"), 4096, Some("1M"), Some(MIB)),
        w(Some("1M"), MIB, Some("0x1000"), Some(4096)),
        w(Some("0"), 0, Some("1"), Some(1)),
        w(None, 0, Some("100"), Some(100)),
        w(Some("4660"), 4660, Some("3000"), Some(3000)),
        w(Some(&format!("{}", size - 1000)), size - 1000, None, None),
        w(Some(&format!("{:#x}", size - 512)), size - 512, Some("512"), Some(512)),
    ];
    if c > 0 {
        // windows crossing cluster / block boundaries
        for k in [1u64, 3, 5, 9] {
            let b = k * c;
            if b + 4096 < size {
                v.push(w(Some(&format!("{}", b - 100)), b - 100, Some("200"), Some(200)));
                v.push(w(Some(&format!("{:#x}+1", b - 8)), b - 7, Some(&format!("{}", c + 14)), Some(c + 14)));
            }
        }
    }
    v
}

fn check_windows(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    let full = qemu_convert_raw(&img.path, img.fmt);
    let size = full.len() as u64;
    for (o, ov, l, lv) in windows_for(img.cluster, size) {
        let mut args = vec!["read".to_string(), s(&img.path).to_string()];
        if let Some(o) = &o {
            args.push("--offset".into());
            args.push(o.clone());
        }
        if let Some(l) = &l {
            args.push("--length".into());
            args.push(l.clone());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let end = match lv {
            Some(n) => (ov + n).min(size),
            None => size,
        };
        let expected = &full[ov as usize..end as usize];
        let actual = vdiskview_ok(&argv);
        assert_bytes_eq(&actual, expected, &format!("{kind}: vdiskview {}", argv.join(" ")));
    }
}

#[test]
fn windows_qcow2_c4k() {
    check_windows("qcow2-v3-c4k");
}

#[test]
fn windows_qcow2_c512() {
    check_windows("qcow2-v3-c512");
}

#[test]
fn windows_qcow2_c2m() {
    check_windows("qcow2-v3-c2m");
}

#[test]
fn windows_qcow2_chain() {
    check_windows("qcow2-chain3");
}

#[test]
fn windows_qcow2_zstd() {
    check_windows("qcow2-zstd");
}

#[test]
fn windows_qcow2_extended_l2() {
    check_windows("qcow2-extl2-c32k-backing");
}

#[test]
fn windows_vhd_dynamic() {
    check_windows("vhd-dynamic");
}

#[test]
fn windows_vhd_fixed() {
    check_windows("vhd-fixed");
}

#[test]
fn windows_raw() {
    check_windows("raw-sparse");
}

/// `read --file` returns bytes of the image file itself, not the guest.
fn check_read_file(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    let file = std::fs::read(&img.path).unwrap();
    let actual = vdiskview_ok(&["read", s(&img.path), "--file"]);
    assert_bytes_eq(&actual, &file, &format!("{kind}: read --file"));

    let len = file.len() as u64;
    let cases: Vec<(String, u64, String, u64)> = vec![
        ("0".into(), 0, "512".into(), 512),
        ("0x200".into(), 0x200, "1K".into(), 1024),
        ("0x200+512*3".into(), 0x800, "0x40".into(), 0x40),
        (format!("{}", len - 512), len - 512, "512".into(), 512),
    ];
    for (o, ov, l, lv) in cases {
        let actual = vdiskview_ok(&["read", s(&img.path), "--file", "--offset", &o, "--length", &l]);
        let end = (ov + lv).min(len) as usize;
        assert_bytes_eq(
            &actual,
            &file[ov as usize..end],
            &format!("{kind}: read --file --offset {o} --length {l}"),
        );
    }
}

#[test]
fn read_file_qcow2() {
    check_read_file("qcow2-v3-c64k");
}

#[test]
fn read_file_vhd_dynamic() {
    check_read_file("vhd-dynamic");
}

#[test]
fn read_file_demo() {
    let file = std::fs::read(demo_vhd()).unwrap();
    let bat = vdiskview_ok(&["read", s(&demo_vhd()), "--file", "--offset", "0x600", "--length", "512"]);
    assert_bytes_eq(&bat, &file[0x600..0x800], "demo BAT via read --file");
}

/// `dump` is the hex view of the same bytes: it must at least run and show
/// something for a window.
#[test]
fn dump_smoke() {
    let out = vdiskview_text(&["dump", s(&demo_vhd()), "--offset", "0x1be", "--length", "64"]);
    assert!(!out.trim().is_empty());
    let out = vdiskview_text(&["dump", s(&demo_vhd()), "--file", "--length", "16"]);
    // the footer copy starts with "conectix" = 63 6f 6e 65 63 74 69 78
    let lower = out.to_lowercase().replace(' ', "");
    assert!(
        lower.contains("636f6e6563746978") || out.contains("conectix"),
        "dump --file of the first 16 bytes should show the 'conectix' cookie:\n{out}"
    );
}

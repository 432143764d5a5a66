//! Broken and hostile inputs: every failure is exit 1 with a single stderr
//! line `vdiskview: ...`, never a panic, never a hang (10 s limit).
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::images::build;
use support::vhd::read_dyn_header;
use support::*;

const LIMIT: Duration = Duration::from_secs(10);

fn expect_clean_failure(args: &[&str], what: &str) -> String {
    let out = vdiskview_timeout(args, LIMIT);
    assert_clean_error(&out, &format!("{what} (vdiskview {})", args.join(" ")));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_file() {
    let dir = workspace();
    let p = dir.path().join("does-not-exist.qcow2");
    for cmd in ["info", "map", "read", "tables", "dump"] {
        expect_clean_failure(&[cmd, s(&p)], "missing file");
    }
    expect_clean_failure(&["where", s(&p), "0"], "missing file");
}

#[test]
fn directory_instead_of_file() {
    let dir = workspace();
    expect_clean_failure(&["read", s(dir.path())], "a directory");
}

/// An empty file is a raw image of size 0, not an error.
#[test]
fn empty_file_is_raw_of_size_zero() {
    let dir = workspace();
    let p = dir.path().join("empty.img");
    std::fs::write(&p, b"").unwrap();
    let v = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_eq!(v["format"], "raw", "{v}");
    assert_eq!(v["virtual-size"], 0, "{v}");
    let out = vdiskview_timeout(&["read", s(&p)], LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}

fn qcow2_image(dir: &Path) -> PathBuf {
    let p = dir.join("img.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "4M"]);
    qemu_io("qcow2", &p, &["write -P 0x61 0 64k", "write -P 0x62 1M 64k"]);
    p
}

#[test]
fn truncated_qcow2_header() {
    let dir = workspace();
    let p = qcow2_image(dir.path());
    for len in [4u64, 20, 50, 71] {
        let t = dir.path().join(format!("trunc{len}.qcow2"));
        std::fs::copy(&p, &t).unwrap();
        std::fs::OpenOptions::new().write(true).open(&t).unwrap().set_len(len).unwrap();
        // --format qcow2: must not silently fall back to raw
        expect_clean_failure(&["info", "--format", "qcow2", s(&t)], "truncated qcow2 header");
        expect_clean_failure(&["read", s(&t)], "truncated qcow2 header");
    }
}

#[test]
fn qcow2_truncated_after_metadata() {
    // header intact but the L1/L2 tables and data cut off
    let dir = workspace();
    let p = qcow2_image(dir.path());
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(4096).unwrap();
    expect_clean_failure(&["read", s(&p)], "qcow2 truncated after the header");
}

#[test]
fn qcow2_l1_table_past_eof() {
    let dir = workspace();
    let p = qcow2_image(dir.path());
    // l1_table_offset (header bytes 40..48) -> 1 TiB, cluster-aligned
    patch_file(&p, 40, &(1u64 << 40).to_be_bytes());
    expect_clean_failure(&["read", s(&p)], "L1 table past EOF");
    expect_clean_failure(&["map", s(&p)], "L1 table past EOF");
}

#[test]
fn qcow2_l2_entry_past_eof() {
    let dir = workspace();
    let p = qcow2_image(dir.path());
    let f = std::fs::read(&p).unwrap();
    let l1 = be64(&f, 40);
    let l2 = be64(&f, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    let e = be64(&f, l2 as usize);
    assert!(e & 0x00ff_ffff_ffff_fe00 != 0);
    // point guest cluster 0 at 1 TiB (keep the COPIED flag)
    let bad = (e & (1 << 63)) | (1u64 << 40);
    patch_file(&p, l2, &bad.to_be_bytes());
    expect_clean_failure(&["read", s(&p)], "L2 entry past EOF");
}

#[test]
fn vhd_bat_entry_past_eof() {
    let dir = workspace();
    let img = build("vhd-dynamic", dir.path());
    let f = std::fs::read(&img.path).unwrap();
    let h = read_dyn_header(&f);
    let first_allocated = (0..h.max_entries as u64)
        .find(|i| be32(&f, (h.table_offset + 4 * i) as usize) != 0xffff_ffff)
        .unwrap();
    // sector 0x0100_0000 = file offset 8 GiB
    patch_file(&img.path, h.table_offset + 4 * first_allocated, &0x0100_0000u32.to_be_bytes());
    expect_clean_failure(&["read", s(&img.path)], "BAT entry past EOF");
}

#[test]
fn vhd_dynamic_header_garbage() {
    let dir = workspace();
    let img = build("vhd-dynamic", dir.path());
    // destroy the "cxsparse" cookie
    patch_file(&img.path, 0x200, b"garbage!");
    expect_clean_failure(&["read", s(&img.path)], "bad dynamic header cookie");
}

/// A qcow2 whose backing file is itself.
#[test]
fn qcow2_backing_self_loop() {
    let dir = workspace();
    let p = dir.path().join("self.qcow2");
    // qemu-img refuses "-b self.qcow2" for self.qcow2 itself; create with a
    // same-length name and patch the name in the header.
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "selX.qcow2", "-F", "qcow2", s(&p), "1M"]);
    patch_backing_name(&p, b"selX.qcow2", b"self.qcow2");
    for cmd in ["read", "map"] {
        let e = expect_clean_failure(&[cmd, s(&p)], "qcow2 backing loop");
        assert!(e.to_lowercase().contains("loop"), "message should mention the loop: {e}");
    }
    assert_info_reports_loop(&p, LIMIT);
}

/// a.qcow2 -> b.qcow2 -> a.qcow2
#[test]
fn qcow2_backing_two_image_loop() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "1M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", s(&b), "1M"]);
    qemu_img(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "-f", "qcow2", s(&a)]);
    for cmd in ["read", "map"] {
        let e = expect_clean_failure(&[cmd, s(&b)], "qcow2 two-image backing loop");
        assert!(e.to_lowercase().contains("loop"), "message should mention the loop: {e}");
    }
    assert_info_reports_loop(&b, LIMIT);
}

fn patch_backing_name(p: &Path, old: &[u8], new: &[u8]) {
    let f = std::fs::read(p).unwrap();
    let off = be64(&f, 8);
    let len = be32(&f, 16) as u64;
    assert_eq!(&f[off as usize..(off + len) as usize], old);
    patch_file(p, off, new);
}

#[test]
fn qcow2_missing_backing_file() {
    let dir = workspace();
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&top)]);
    std::fs::remove_file(&base).unwrap();
    expect_clean_failure(&["read", s(&top)], "missing backing file");
    expect_clean_failure(&["map", s(&top)], "missing backing file");
}

#[test]
fn encrypted_qcow2_is_refused() {
    let dir = workspace();
    let p = dir.path().join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=abc",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        s(&p),
        "1M",
    ]);
    let msg = expect_clean_failure(&["read", s(&p)], "encrypted qcow2");
    assert!(msg.to_lowercase().contains("encrypt"), "message should mention encryption: {msg}");
}

#[test]
fn bad_offset_expressions() {
    let demo = demo_vhd();
    for bad in ["banana", "0x", "1Q", "--5", "0x200+", "99999999999999999999999"] {
        let out = vdiskview_timeout(&["read", s(&demo), "--offset", bad, "--length", "1"], LIMIT);
        assert!(!out.status.success(), "--offset {bad} should be rejected");
        assert_ne!(out.status.code(), Some(101), "--offset {bad} panicked");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn random_garbage_with_forced_formats() {
    let dir = workspace();
    let p = dir.path().join("garbage.bin");
    std::fs::write(&p, pattern_bytes(99, 1 << 20)).unwrap();
    for fmt in ["qcow2", "vhd"] {
        expect_clean_failure(&["info", "--format", fmt, s(&p)], "garbage forced format");
    }
}

/// qcow2 magic followed by garbage: must fail cleanly (or be read), never panic/hang.
#[test]
fn qcow2_magic_with_garbage_header() {
    let dir = workspace();
    for seed in 0..8u64 {
        let p = dir.path().join(format!("g{seed}.qcow2"));
        let mut b = pattern_bytes(seed, 64 * 1024);
        b[0..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&(2 + (seed as u32 % 2)).to_be_bytes());
        std::fs::write(&p, &b).unwrap();
        for cmd in ["info", "map", "read", "tables"] {
            let out = vdiskview_timeout(&[cmd, s(&p)], LIMIT);
            if !out.status.success() {
                assert_clean_error(&out, &format!("{cmd} on garbage qcow2 seed {seed}"));
            }
        }
    }
}

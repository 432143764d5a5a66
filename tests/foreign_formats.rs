//! Formats vdiskview recognises but does not read: a file of each opens with a one-line error
//! naming its format (exit code 1, nothing on stdout), never as a raw disk; `--format raw`
//! still forces the raw view.
mod support;

use std::path::{Path, PathBuf};

use support::*;

fn assert_named(path: &Path, title: &str) {
    for cmd in [&["info"][..], &["map"], &["read"], &["info", "--output", "json"], &["check"]] {
        let mut args = cmd.to_vec();
        args.push(s(path));
        let out = vdiskview(&args);
        let what = format!("{args:?}");
        assert_clean_error(&out, &what);
        assert!(out.stdout.is_empty(), "{what}: stdout must be empty: {}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("this is a {title} image")), "{what}: {err}");
        assert!(err.contains("vdiskview reads") && err.contains("VMDK") && err.contains("raw"), "{what}: {err}");
    }
    // forced raw still works
    let v = vdiskview_json(&["info", "--format", "raw", "--output", "json", s(path)]);
    assert_eq!(v["format"], "raw");
}

fn qemu_made(dir: &Path, fmt: &str, extra: &[&str]) -> PathBuf {
    let p = dir.join(format!("x.{fmt}"));
    let mut args = vec!["create", "-q", "-f", fmt];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[s(&p), "16M"]);
    qemu_img(&args);
    p
}

fn hand_made(dir: &Path, name: &str, head: &[u8], tail: Option<&[u8]>) -> PathBuf {
    let mut b = vec![0u8; 1 << 20];
    b[..head.len()].copy_from_slice(head);
    if let Some(t) = tail {
        let n = b.len();
        b[n - 512..n - 512 + t.len()].copy_from_slice(t);
    }
    let p = dir.join(name);
    std::fs::write(&p, &b).unwrap();
    p
}

#[test]
fn qed() {
    let dir = workspace();
    assert_named(&qemu_made(dir.path(), "qed", &[]), "QED");
}

#[test]
fn parallels() {
    let dir = workspace();
    assert_named(&qemu_made(dir.path(), "parallels", &[]), "Parallels");
}

#[test]
fn luks() {
    let dir = workspace();
    let p = qemu_made(dir.path(), "luks", &["--object", "secret,id=s0,data=pw", "-o", "key-secret=s0,iter-time=10"]);
    assert_named(&p, "LUKS");
}

#[test]
fn dmg_koly_trailer() {
    let dir = workspace();
    let mut koly = b"koly".to_vec();
    koly.extend_from_slice(&4u32.to_be_bytes());
    koly.extend_from_slice(&512u32.to_be_bytes());
    assert_named(&hand_made(dir.path(), "x.dmg", b"", Some(&koly)), "DMG (Apple disk image)");
}

#[test]
fn bochs() {
    let dir = workspace();
    let mut h = vec![0u8; 64];
    h[..22].copy_from_slice(b"Bochs Virtual HD Image");
    h[32..39].copy_from_slice(b"Redolog");
    h[48..55].copy_from_slice(b"Growing");
    h[64 - 4..].copy_from_slice(&0x20000u32.to_le_bytes());
    assert_named(&hand_made(dir.path(), "x.bochs", &h, None), "bochs");
}

#[test]
fn cloop() {
    let dir = workspace();
    let h = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
    assert_named(&hand_made(dir.path(), "x.cloop", h, None), "cloop");
}

/// A raw disk that only looks like something (a partition table, text) stays raw.
#[test]
fn plain_raw_stays_raw() {
    let dir = workspace();
    let p = hand_made(dir.path(), "plain.img", b"hello, not an image\n", None);
    let v = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_eq!(v["format"], "raw");
}

//! Differencing VHDs (built by tests/support/vhd.rs from the spec, since
//! qemu-img cannot make them): reading, mapping, info and error handling.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::vhd::{DiffVhd, SECTOR};
use support::*;

const MB2: u32 = 2 * 1024 * 1024;

/// A qemu-made dynamic VHD (8 MiB) with some data, including a partially
/// written block and unallocated blocks.
fn dynamic_parent(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&path), "8M"]);
    let pat = pattern_file(dir, 11, 128 * 1024);
    let p = s(&pat);
    qemu_io(
        "vpc",
        &path,
        &[
            &format!("write -s {p} 0 100000"),
            "write -P 0x44 2M 64k",
            &format!("write -s {p} 7M 4k"),
        ],
    );
    path
}

fn fixed_parent(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&path), "8M"]);
    let pat = pattern_file(dir, 12, 128 * 1024);
    let p = s(&pat);
    qemu_io(
        "vpc",
        &path,
        &[&format!("write -s {p} 4096 65536"), "write -P 0x55 5M 1M"],
    );
    path
}

fn sectors(seed: u64, n: usize) -> Vec<u8> {
    pattern_bytes(seed, n * SECTOR)
}

/// Partial bitmaps, unaligned runs, runs crossing a block boundary, the first
/// and last sector of a block, and a block allocated only in the child
/// (block 1 = 2..4 MiB of the 8 MiB parent is partly unallocated there;
/// block 3 is unallocated in the parent).
fn scribble(d: &mut DiffVhd, seed: u64) {
    let spb = d.sectors_per_block();
    d.write_sectors(3, &sectors(seed, 5));
    d.write_sectors(100, &sectors(seed + 1, 1));
    d.write_sectors(spb - 2, &sectors(seed + 2, 4)); // crosses block 0 -> 1
    d.write_sectors(spb + 300, &sectors(seed + 3, 17));
    if 3 * spb + 10 < d.size / SECTOR as u64 {
        d.write_sectors(3 * spb + 7, &sectors(seed + 4, 3));
    }
    let last = d.size / SECTOR as u64 - 1;
    d.write_sectors(last, &sectors(seed + 5, 1));
}

fn read_guest(path: &Path) -> Vec<u8> {
    vdiskview_ok(&["read", s(path)])
}

/// Map extents: sorted, contiguous, covering the disk; depth 0 exactly for
/// sectors stored in the child; offsets of child data match the layout.
fn check_map(d: &DiffVhd) {
    let path = d.path.clone().unwrap();
    let m = vdiskview_json(&["map", "--output", "json", s(&path)]);
    let ext = m.as_array().unwrap_or_else(|| panic!("map json must be an array: {m}"));
    let mut pos = 0u64;
    for e in ext {
        let start = e["start"].as_u64().unwrap_or_else(|| panic!("start in {e}"));
        let len = e["length"].as_u64().unwrap_or_else(|| panic!("length in {e}"));
        let depth = e["depth"].as_u64().unwrap_or_else(|| panic!("depth in {e}"));
        assert_eq!(start, pos, "map extents must be contiguous: gap/overlap before {e}\n{}", pretty(&m));
        assert!(len > 0, "empty extent {e}");
        assert_eq!(start % SECTOR as u64, 0, "{e}");
        assert_eq!(len % SECTOR as u64, 0, "{e}");
        for sct in start / 512..(start + len) / 512 {
            let in_child = d.sector_in_child(sct);
            if in_child {
                assert_eq!(depth, 0, "sector {sct} is in the child, extent {e}");
                assert_eq!(e["data"], true, "sector {sct}: child data extent {e}");
            } else {
                assert!(depth >= 1, "sector {sct} is not in the child (bitmap bit clear), extent {e}");
            }
        }
        if depth == 0 {
            if let Some(off) = e.get("offset").and_then(Value::as_u64) {
                assert_eq!(
                    Some(off),
                    d.host_offset(start / 512),
                    "host offset of extent {e}"
                );
            }
        }
        pos = start + len;
    }
    assert_eq!(pos, d.size, "map must cover the whole disk");
}

/// info lists the chain of layers, child first.
fn check_info(d: &DiffVhd) {
    let path = d.path.clone().unwrap();
    let v = vdiskview_json(&["info", "--output", "json", s(&path)]);
    assert_eq!(v["format"], "vpc", "{}", pretty(&v));
    assert_eq!(v["virtual-size"], d.size, "{}", pretty(&v));
    let layers = v
        .pointer("/vdiskview/layers")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("missing vdiskview.layers:\n{}", pretty(&v)));
    let chain = d.chain();
    assert_eq!(layers.len(), chain.len(), "layers:\n{}", pretty(&v));
    for (l, p) in layers.iter().zip(&chain) {
        let f = l["filename"].as_str().unwrap();
        assert!(same_file(f, p), "layer filename {f} should be {}", p.display());
        assert_eq!(l["format"], "vpc");
    }
    let warnings = v.pointer("/vdiskview/warnings").and_then(Value::as_array);
    assert!(
        warnings.map(|w| w.is_empty()).unwrap_or(true),
        "a healthy chain should have no warnings:\n{}",
        pretty(&v)
    );
}

fn check_all(d: &DiffVhd) {
    let path = d.path.clone().unwrap();
    let expected = d.expected_bytes();
    assert_bytes_eq(&read_guest(&path), &expected, &format!("vdiskview read {}", path.display()));
    check_map(d);
    check_info(d);
}

#[test]
fn diff_over_dynamic_parent() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 1);
    d.write(&dir.path().join("child.vhd"));
    check_all(&d);
}

#[test]
fn diff_over_fixed_parent() {
    let dir = workspace();
    let parent = fixed_parent(dir.path(), "parent-fixed.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 2);
    d.write(&dir.path().join("child.vhd"));
    check_all(&d);
}

#[test]
fn diff_chain_three_deep() {
    let dir = workspace();
    let base = dynamic_parent(dir.path(), "base.vhd");
    let mut d1 = DiffVhd::new(&base, MB2);
    scribble(&mut d1, 10);
    d1.write_sectors(5000, &sectors(30, 64));
    d1.write(&dir.path().join("diff1.vhd"));
    let mut d2 = DiffVhd::child_of(&d1, MB2);
    scribble(&mut d2, 20); // overlaps some of d1's sectors, not all
    d2.write_sectors(5010, &sectors(31, 3));
    d2.write(&dir.path().join("diff2.vhd"));
    let mut d3 = DiffVhd::child_of(&d2, MB2);
    d3.write_sectors(4, &sectors(40, 1));
    d3.write_sectors(5020, &sectors(41, 1));
    d3.write(&dir.path().join("diff3.vhd"));
    assert_eq!(d3.chain().len(), 4);
    check_all(&d3);
    check_all(&d2);
}

/// Child block size different from the parent's; small blocks (4 KiB: the
/// bitmap is one byte padded to a sector).
#[test]
fn diff_other_block_sizes() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "p.vhd");
    for (bs, name) in [(4096u32, "c4k.vhd"), (512 * 1024, "c512k.vhd"), (1 << 21, "c2m.vhd")] {
        let mut d = DiffVhd::new(&parent, bs);
        scribble(&mut d, bs as u64);
        d.write(&dir.path().join(name));
        check_all(&d);
    }
    // a 512 KiB-block child of a 4 KiB-block diff
    let mut a = DiffVhd::new(&parent, 4096);
    scribble(&mut a, 77);
    a.write(&dir.path().join("a.vhd"));
    let mut b = DiffVhd::child_of(&a, 512 * 1024);
    scribble(&mut b, 78);
    b.write(&dir.path().join("b.vhd"));
    check_all(&b);
}

/// Data stored in an allocated block but whose bitmap bit is clear must not
/// be returned: the parent's bytes are.
#[test]
fn bitmap_bits_are_honoured() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    d.write_hidden(0, &vec![0xEE; 64 * SECTOR]);
    d.write_sectors(8, &sectors(5, 2));
    d.allocate_block(2); // allocated, no bits set: all from parent
    d.write_hidden(2 * 4096 + 1, &vec![0xDD; SECTOR]);
    d.write(&dir.path().join("child.vhd"));
    check_all(&d);
}

/// The platform data space field written in bytes (as some writers do)
/// instead of sectors must not break parent lookup.
#[test]
fn locator_space_in_bytes() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    d.locator_space_in_bytes = true;
    scribble(&mut d, 3);
    d.write(&dir.path().join("child.vhd"));
    check_all(&d);
}

/// After moving the pair to another directory (the absolute W2ku locator is
/// stale), the relative W2ru locator still finds the parent.
#[test]
fn relocated_pair_uses_relative_locator() {
    let dir = workspace();
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    let parent = dynamic_parent(&old, "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 4);
    d.write(&old.join("child.vhd"));
    let expected = d.expected_bytes();
    std::fs::rename(old.join("parent.vhd"), new.join("parent.vhd")).unwrap();
    std::fs::rename(old.join("child.vhd"), new.join("child.vhd")).unwrap();
    std::fs::remove_dir_all(&old).unwrap();
    let got = read_guest(&new.join("child.vhd"));
    assert_bytes_eq(&got, &expected, "read after moving child+parent");
}

/// A child in a subdirectory: W2ru is `..\parent.vhd`.
#[test]
fn child_in_subdirectory() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let sub = dir.path().join("snapshots");
    std::fs::create_dir_all(&sub).unwrap();
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 6);
    d.write(&sub.join("child.vhd"));
    check_all(&d);
}

#[test]
fn where_in_diff_child_and_parent() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    d.write_sectors(3, &sectors(8, 1));
    d.write(&dir.path().join("child.vhd"));
    let child = d.path.clone().unwrap();

    let w = vdiskview_json(&["where", s(&child), "0x600", "--output", "json"]);
    assert_eq!(w["virtual"], 0x600, "{w}");
    assert_eq!(w["layer"], 0, "{w}");
    assert_eq!(w["kind"], "data", "{w}");
    assert_eq!(w["host-offset"].as_u64(), d.host_offset(3), "{w}");
    assert_eq!(w["block"], 0, "{w}");
    assert!(same_file(w["filename"].as_str().unwrap(), &child), "{w}");

    // sector 4 comes from the parent (qemu-made, block 0 allocated there)
    let w = vdiskview_json(&["where", s(&child), "0x800", "--output", "json"]);
    assert_eq!(w["layer"], 1, "{w}");
    assert!(same_file(w["filename"].as_str().unwrap(), &parent), "{w}");
    assert_eq!(w["kind"], "data", "{w}");

    // file view of the child
    let w = vdiskview_json(&["where", s(&child), "0x600", "--file", "--output", "json"]);
    assert_eq!(w["structure"], "bat", "{w}");
    let (_, loc_off, _, _) = d.layout.locators[0];
    let w = vdiskview_json(&["where", s(&child), &format!("{loc_off:#x}"), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "parent-locator", "{w}");
    let bm = d.layout.block_bitmap_offset[&0];
    let w = vdiskview_json(&["where", s(&child), &format!("{bm:#x}"), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "bitmap", "{w}");
    let host = d.host_offset(3).unwrap();
    let w = vdiskview_json(&["where", s(&child), &format!("{host:#x}"), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "data", "{w}");
    assert_eq!(w["virtual"], 0x600, "{w}");
}

// ---------------------------------------------------------------- errors

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn wrong_parent_unique_id_is_reported() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 9);
    d.corrupt.wrong_parent_uid = true;
    d.write(&dir.path().join("child.vhd"));
    let child = d.path.clone().unwrap();

    let read = vdiskview_timeout(&["read", s(&child)], LIMIT);
    let mut reported = String::from_utf8_lossy(&read.stderr).into_owned();
    if read.status.success() {
        assert_bytes_eq(&read.stdout, &d.expected_bytes(), "read despite the unique id mismatch");
    } else {
        assert_clean_error(&read, "read with a parent unique id mismatch");
    }
    for args in [
        vec!["info", "--output", "json", s(&child)],
        vec!["info", s(&child)],
    ] {
        let o = vdiskview_timeout(&args, LIMIT);
        assert_ne!(o.status.code(), Some(101), "{}", String::from_utf8_lossy(&o.stderr));
        reported.push_str(&String::from_utf8_lossy(&o.stdout));
        reported.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    let low = reported.to_lowercase();
    assert!(
        low.contains("unique id") || low.contains("mismatch"),
        "the parent unique id mismatch must be reported (stderr of read, or info output); got:\n{reported}"
    );
}

#[test]
fn missing_parent_fails_cleanly() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 12);
    d.write(&dir.path().join("child.vhd"));
    let child = d.path.clone().unwrap();
    std::fs::remove_file(&parent).unwrap();
    for cmd in ["read", "map"] {
        let o = vdiskview_timeout(&[cmd, s(&child)], LIMIT);
        assert_clean_error(&o, &format!("{cmd} with the parent deleted"));
    }
}

#[test]
fn locator_to_missing_file_fails_cleanly() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 13);
    d.corrupt.locator_target = Some("no-such-parent.vhd".into());
    d.write(&dir.path().join("child.vhd"));
    let child = d.path.clone().unwrap();
    for cmd in ["read", "map"] {
        let o = vdiskview_timeout(&[cmd, s(&child)], LIMIT);
        assert_clean_error(&o, &format!("{cmd} with locators naming a missing file"));
    }
}

#[test]
fn self_loop_is_detected() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 14);
    d.corrupt.self_loop = true;
    d.write(&dir.path().join("loop.vhd"));
    let child = d.path.clone().unwrap();
    for args in [vec!["read", s(&child)], vec!["map", s(&child)]] {
        let o = vdiskview_timeout(&args, LIMIT);
        assert_clean_error(&o, &format!("{} on a self-referencing diff VHD", args[0]));
        let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(e.contains("loop"), "message should mention the loop: {e}");
    }
    assert_info_reports_loop(&child, LIMIT);
}

/// a.vhd -> b.vhd -> a.vhd
#[test]
fn two_image_loop_is_detected() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut a = DiffVhd::new(&parent, MB2);
    a.write_sectors(1, &sectors(1, 1));
    a.write(&dir.path().join("a.vhd"));
    let mut b = DiffVhd::child_of(&a, MB2);
    b.write_sectors(2, &sectors(2, 1));
    b.write(&dir.path().join("b.vhd"));
    // rewrite a.vhd with b.vhd as its "parent" (same uid as b)
    let mut a2 = DiffVhd::new(&parent, MB2);
    a2.unique_id = a.unique_id;
    a2.write_sectors(1, &sectors(1, 1));
    a2.corrupt.locator_target = Some("b.vhd".into());
    a2.corrupt.parent_uid_override = b.unique_id;
    a2.write(&dir.path().join("a.vhd"));
    let b = dir.path().join("b.vhd");
    for cmd in ["read", "map"] {
        let o = vdiskview_timeout(&[cmd, s(&b)], LIMIT);
        assert_clean_error(&o, &format!("{cmd} on a two-image loop"));
        let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(e.contains("loop"), "message should mention the loop: {e}");
    }
    assert_info_reports_loop(&b, LIMIT);
}

#[test]
fn bat_entry_past_eof_in_child() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 15);
    d.corrupt.bat_past_eof = Some(1);
    d.write(&dir.path().join("child.vhd"));
    let o = vdiskview_timeout(&["read", s(&d.path.clone().unwrap())], LIMIT);
    assert_clean_error(&o, "read of a diff VHD whose BAT points past the end");
}

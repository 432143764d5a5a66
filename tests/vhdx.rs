//! VHDX, read side: images made by qemu-img/qemu-io, checked against qemu's own answers
//! (`qemu-img convert -O raw`, `qemu-img info`), plus damaged copies that must never panic.
mod support;

use std::path::{Path, PathBuf};

use support::*;

/// Make a VHDX with qemu-img and write patterns into it with qemu-io.
fn make(dir: &Path, name: &str, subformat: &str, block_size: &str, size: &str, writes: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let opts = format!("subformat={subformat},block_size={block_size}");
    qemu_img(&["create", "-q", "-f", "vhdx", "-o", &opts, s(&p), size]);
    qemu_io("vhdx", &p, writes);
    p
}

const WRITES: &[&str] = &[
    "write -P 0x5a 0 64k",
    "write -P 0x11 1M 3M",
    "write -P 0x22 9000k 2048k",
    "write -P 0x33 20M 512",
    "write -z 1536k 256k",
];

fn assert_reads_like_qemu(p: &Path, what: &str) {
    let expected = qemu_convert_raw(p, "vhdx");
    let actual = vdiskview_ok(&["read", s(p)]);
    assert_bytes_eq(&actual, &expected, what);
}

macro_rules! read_tests {
    ($($name:ident => ($sub:expr, $bs:expr, $size:expr),)*) => {
        $( #[test] fn $name() {
            let dir = workspace();
            let p = make(dir.path(), "t.vhdx", $sub, $bs, $size, WRITES);
            assert_reads_like_qemu(&p, concat!(stringify!($name), ": vdiskview read"));
            let c = vdiskview(&["check", s(&p)]);
            assert_eq!(c.status.code(), Some(0), "check of a clean image: {}", String::from_utf8_lossy(&c.stdout));
        } )*
    };
}

read_tests! {
    read_dynamic_1m => ("dynamic", "1M", "64M"),
    read_dynamic_8m => ("dynamic", "8M", "64M"),
    read_dynamic_32m => ("dynamic", "32M", "100M"),
    read_dynamic_odd_size => ("dynamic", "8M", "33555456"),
    read_fixed_1m => ("fixed", "1M", "24M"),
    read_fixed_8m => ("fixed", "8M", "32M"),
    read_dynamic_256m => ("dynamic", "256M", "40M"),
    read_dynamic_not_present_blocks => ("dynamic", "1M,block_state_zero=off", "40M"),
    read_dynamic_4m_log => ("dynamic", "2M,log_size=4M", "40M"),
}

#[test]
fn empty_dynamic_reads_zero_and_maps_zero() {
    let dir = workspace();
    let p = make(dir.path(), "e.vhdx", "dynamic", "1M", "16M", &[]);
    assert_reads_like_qemu(&p, "empty dynamic");
    let map = vdiskview_json(&["map", "--output", "json", s(&p)]);
    for e in map.as_array().unwrap() {
        assert_eq!(e["data"], false, "{e}");
        assert_eq!(e["zero"], true, "{e}");
    }
}

#[test]
fn info_matches_qemu() {
    let dir = workspace();
    for (sub, bs) in [("dynamic", "1M"), ("dynamic", "32M"), ("fixed", "8M")] {
        let p = make(dir.path(), &format!("{sub}{bs}.vhdx"), sub, bs, "32M", &["write -P 1 0 4k"]);
        let ours = vdiskview_json(&["info", "--output", "json", s(&p)]);
        let theirs = qemu_info_json(&p, "vhdx");
        assert_eq!(ours["format"], "vhdx");
        assert_eq!(ours["virtual-size"], theirs["virtual-size"], "{sub} {bs}");
        assert_eq!(ours["cluster-size"], theirs["cluster-size"], "{sub} {bs}");
        assert_eq!(ours.get("format-specific"), theirs.get("format-specific"), "{sub} {bs}");
    }
}

/// The map entry covering guest offset `off`.
fn map_at(map: &serde_json::Value, off: u64) -> serde_json::Value {
    map.as_array()
        .unwrap()
        .iter()
        .find(|e| {
            let (st, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            off >= st && off < st + len
        })
        .unwrap_or_else(|| panic!("no map entry at {off}"))
        .clone()
}

#[test]
fn map_marks_written_blocks_data_and_the_rest_zero() {
    let dir = workspace();
    let p = make(dir.path(), "m.vhdx", "dynamic", "1M", "64M", &["write -P 0x5a 1M 64k", "write -P 0x11 10M 3M"]);
    let map = vdiskview_json(&["map", "--output", "json", s(&p)]);
    for off in [MIB, MIB + 100, 10 * MIB, 12 * MIB + 5] {
        let e = map_at(&map, off);
        assert_eq!(e["data"], true, "at {off}: {e}");
        assert!(e["offset"].as_u64().is_some(), "at {off}: {e}");
    }
    for off in [0, 2 * MIB, 9 * MIB, 13 * MIB, 63 * MIB] {
        let e = map_at(&map, off);
        assert_eq!(e["data"], false, "at {off}: {e}");
        assert_eq!(e["zero"], true, "at {off}: {e}");
    }
    // the guest bytes at a data entry's offset are the image file's bytes there
    let e = map_at(&map, MIB);
    let file = std::fs::read(&p).unwrap();
    let host = e["offset"].as_u64().unwrap() + (MIB - e["start"].as_u64().unwrap());
    assert!(file[host as usize..host as usize + 65536].iter().all(|&b| b == 0x5a));
}

#[test]
fn tables_list_headers_regions_metadata_and_bat() {
    let dir = workspace();
    let p = make(dir.path(), "t.vhdx", "dynamic", "1M", "8M", &["write -P 1 2M 4k"]);
    let t = vdiskview_text(&["tables", s(&p)]);
    for want in ["Header 1", "Header 2", "Region table", "metadata", "Block size : 1048576", "Block#0000 -> ", "Block#0002 -> ", "FULLY_PRESENT"] {
        assert!(t.contains(want), "tables lack {want:?}:\n{t}");
    }
    assert_eq!(t.lines().filter(|l| l.starts_with("Block#")).count(), 8);
}

// --- damaged images ---------------------------------------------------------------

fn flip(p: &Path, off: u64) {
    let b = std::fs::read(p).unwrap()[off as usize];
    patch_file(p, off, &[b ^ 0xff]);
}

/// Every command exits 0, 1 or 2 (never a panic or a signal), with at most one stderr
/// line that is an error.
fn assert_no_panic(p: &Path, what: &str) {
    for args in [&["read", s(p)][..], &["info", s(p)], &["map", "--output", "json", s(p)], &["check", s(p)], &["tables", s(p)]] {
        let out = vdiskview(args);
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(matches!(code, Some(0..=3)), "{what}: {args:?} exit {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{what}: {args:?}: {err}");
        let errors = err.lines().filter(|l| !l.starts_with("vdiskview: warning")).count();
        assert!(errors <= 1, "{what}: {args:?}: stderr has {errors} error lines: {err}");
    }
}

#[test]
fn one_damaged_header_falls_back_with_a_warning() {
    let dir = workspace();
    let p = make(dir.path(), "h.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M"]);
    let expected = qemu_convert_raw(&p, "vhdx");
    for hoff in [64 * KIB, 128 * KIB] {
        let q = dir.path().join(format!("h{hoff}.vhdx"));
        std::fs::copy(&p, &q).unwrap();
        flip(&q, hoff + 200);
        let out = vdiskview(&["read", s(&q)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_bytes_eq(&out.stdout, &expected, "read with one damaged header");
        let info = vdiskview_json(&["info", "--output", "json", s(&q)]);
        let text = info.to_string();
        assert!(text.contains("damaged") && text.contains("using header"), "no fallback warning in {text}");
        let c = vdiskview(&["check", s(&q)]);
        assert_eq!(c.status.code(), Some(2), "check names the damaged header");
        assert!(String::from_utf8_lossy(&c.stdout).contains("bad checksum"));
    }
}

#[test]
fn both_headers_damaged_is_a_clean_error() {
    let dir = workspace();
    let p = make(dir.path(), "b.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M"]);
    flip(&p, 64 * KIB + 8);
    flip(&p, 128 * KIB + 8);
    let out = vdiskview(&["read", s(&p)]);
    assert_clean_error(&out, "both headers damaged");
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither VHDX header is valid"));
    assert_no_panic(&p, "both headers damaged");
}

#[test]
fn both_region_tables_damaged_is_a_clean_error() {
    let dir = workspace();
    let p = make(dir.path(), "r.vhdx", "dynamic", "1M", "16M", &[]);
    flip(&p, 192 * KIB + 20);
    flip(&p, 256 * KIB + 20);
    assert_clean_error(&vdiskview(&["read", s(&p)]), "both region tables damaged");
    assert_no_panic(&p, "both region tables damaged");
}

/// The BAT's file offset, from `info --output json`.
fn bat_offset(p: &Path) -> u64 {
    let info = vdiskview_json(&["info", "--output", "json", s(p)]);
    let text = info.to_string();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn find(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => m.get("bat-offset").and_then(|x| x.as_u64()).or_else(|| m.values().find_map(find)),
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).expect("bat-offset in info json")
}

#[test]
fn bat_entry_past_eof_is_an_error_not_a_panic() {
    let dir = workspace();
    let p = make(dir.path(), "e.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M"]);
    let bat = bat_offset(&p);
    // block 3: FULLY_PRESENT at 4 TiB
    let entry: u64 = ((4u64 << 40) / MIB) << 20 | 6;
    patch_file(&p, bat + 3 * 8, &entry.to_le_bytes());
    assert_clean_error(&vdiskview(&["read", s(&p)]), "BAT entry past EOF");
    let c = vdiskview(&["check", s(&p)]);
    assert_eq!(c.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&c.stdout).contains("past the end of the file"));
    // an invalid state
    patch_file(&p, bat + 3 * 8, &5u64.to_le_bytes());
    assert_no_panic(&p, "invalid BAT state");
}

#[test]
fn truncated_files_never_panic() {
    let dir = workspace();
    let p = make(dir.path(), "t.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 2M"]);
    let full = std::fs::read(&p).unwrap();
    for len in [0usize, 8, 1000, 70_000, 200_000, 300_000, 400_000, 1 << 20, 2 << 20, (3 << 20) + 5, full.len() - 4096] {
        let q = dir.path().join(format!("t{len}.vhdx"));
        std::fs::write(&q, &full[..len.min(full.len())]).unwrap();
        let out = vdiskview(&["read", "--format", "vhdx", s(&q)]);
        assert_ne!(out.status.code(), Some(101), "len {len}: {}", String::from_utf8_lossy(&out.stderr));
        assert_no_panic(&q, &format!("truncated to {len}"));
    }
}

// --- the log ------------------------------------------------------------------------

/// CRC-32C, to re-seal a patched header.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn pending_log_is_replayed_in_memory() {
    let dir = workspace();
    // qemu updates the BAT through the log: its last entry holds the final BAT sector
    let p = make(dir.path(), "l.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M", "write -P 0x55 7M 4k"]);
    let expected = qemu_convert_raw(&p, "vhdx");
    let bat = bat_offset(&p);
    let mut f = std::fs::read(&p).unwrap();
    // the current header, and its log
    let seq = |o: usize| u64::from_le_bytes(f[o + 8..o + 16].try_into().unwrap());
    let h = if seq(128 * 1024) > seq(64 * 1024) { 128 * 1024 } else { 64 * 1024 };
    let log_off = u64::from_le_bytes(f[h + 72..h + 80].try_into().unwrap()) as usize;
    let log_len = u32::from_le_bytes(f[h + 68..h + 72].try_into().unwrap()) as usize;
    // the valid entry with the highest sequence number
    let mut best: Option<(u64, usize)> = None;
    let mut o = 0;
    while o < log_len {
        let e = &f[log_off + o..];
        if &e[..4] == b"loge" {
            let s = u64::from_le_bytes(e[16..24].try_into().unwrap());
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, o));
            }
        }
        o += 4096;
    }
    let (_, eo) = best.expect("qemu left log entries");
    let guid: [u8; 16] = f[log_off + eo + 32..log_off + eo + 48].try_into().unwrap();
    // the BAT on disk loses its allocations; the log still has them
    f[bat as usize..bat as usize + 4096].fill(0);
    f[h + 48..h + 64].copy_from_slice(&guid);
    f[h + 4..h + 8].fill(0);
    let c = crc32c(&f[h..h + 4096]);
    f[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&p, &f).unwrap();
    let out = vdiskview(&["read", s(&p)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_bytes_eq(&out.stdout, &expected, "read after in-memory log replay");
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]).to_string();
    assert!(info.contains("log replayed in memory (the file is unchanged)"), "{info}");
    assert_eq!(std::fs::read(&p).unwrap(), f, "the file is unchanged");
}

// --- differencing ---------------------------------------------------------------------

/// A number from `info --output json`'s vhdx block.
fn info_u64(p: &Path, key: &str) -> u64 {
    let v = vdiskview_json(&["info", "--output", "json", s(p)]);
    fn find(v: &serde_json::Value, key: &str) -> Option<u64> {
        match v {
            serde_json::Value::Object(m) => m.get(key).and_then(|x| x.as_u64()).or_else(|| m.values().find_map(|x| find(x, key))),
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
            _ => None,
        }
    }
    find(&v, key).unwrap_or_else(|| panic!("{key} in info json"))
}

fn utf16le(t: &str) -> Vec<u8> {
    t.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// qemu cannot make a differencing VHDX: turn a qemu-made dynamic one into one, by the
/// specification (HasParent, a parent locator, the differencing BAT layout with a sector
/// bitmap), with block 3 fully present and block 5 partially present.
fn make_differencing(child: &Path, parent_name: &str) {
    let meta = info_u64(child, "metadata-offset") as usize;
    let bat = info_u64(child, "bat-offset") as usize;
    let mut f = std::fs::read(child).unwrap();
    const FILE_PARAMS: [u8; 16] = [0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B];
    const PARENT_LOCATOR: [u8; 16] = [0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C];
    const VHDX_LOCATOR: [u8; 16] = [0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13];
    let count = u16::from_le_bytes([f[meta + 10], f[meta + 11]]) as usize;
    for i in 0..count {
        let e = meta + 32 + i * 32;
        if f[e..e + 16] == FILE_PARAMS {
            let item = meta + u32::from_le_bytes(f[e + 16..e + 20].try_into().unwrap()) as usize;
            f[item + 4] |= 2; // HasParent
        }
    }
    // the parent locator item at +0x20000 of the metadata region
    let (key, value) = (utf16le("relative_path"), utf16le(&format!(".\\{parent_name}")));
    let mut loc = VHDX_LOCATOR.to_vec();
    loc.extend_from_slice(&0u16.to_le_bytes());
    loc.extend_from_slice(&1u16.to_le_bytes());
    let ko = 20 + 12;
    let vo = ko + key.len();
    loc.extend_from_slice(&(ko as u32).to_le_bytes());
    loc.extend_from_slice(&(vo as u32).to_le_bytes());
    loc.extend_from_slice(&(key.len() as u16).to_le_bytes());
    loc.extend_from_slice(&(value.len() as u16).to_le_bytes());
    loc.extend_from_slice(&key);
    loc.extend_from_slice(&value);
    f[meta + 0x20000..meta + 0x20000 + loc.len()].copy_from_slice(&loc);
    let e = meta + 32 + count * 32;
    f[e..e + 16].copy_from_slice(&PARENT_LOCATOR);
    f[e + 16..e + 20].copy_from_slice(&0x20000u32.to_le_bytes());
    f[e + 20..e + 24].copy_from_slice(&(loc.len() as u32).to_le_bytes());
    f[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes()); // required
    f[meta + 10..meta + 12].copy_from_slice(&((count + 1) as u16).to_le_bytes());
    // BAT: 1 MiB blocks, 512-byte sectors: chunk ratio 4096, the bitmap entry at 4096
    let entry = |i: usize, f: &Vec<u8>| u64::from_le_bytes(f[bat + i * 8..bat + i * 8 + 8].try_into().unwrap());
    let (b3, b5) = (entry(3, &f), entry(5, &f));
    assert_eq!((b3 & 7, b5 & 7), (6, 6), "qemu allocated blocks 3 and 5");
    f[bat..bat + 4097 * 8].fill(0);
    f[bat + 3 * 8..bat + 4 * 8].copy_from_slice(&b3.to_le_bytes());
    f[bat + 5 * 8..bat + 6 * 8].copy_from_slice(&((b5 & !7) | 7).to_le_bytes());
    let bm_off = (f.len() as u64).next_multiple_of(MIB);
    f.resize(bm_off as usize + MIB as usize, 0);
    f[bat + 4096 * 8..bat + 4097 * 8].copy_from_slice(&((bm_off / MIB) << 20 | 6).to_le_bytes());
    // block 5's part of the bitmap: 2048 sectors = 256 bytes; sectors 0-7 and 100
    let part = bm_off as usize + 5 * 256;
    f[part] = 0xff;
    f[part + 12] |= 1 << 4;
    std::fs::write(child, &f).unwrap();
}

#[test]
fn differencing_reads_through_its_parent() {
    let dir = workspace();
    let parent = make(dir.path(), "parent.vhdx", "dynamic", "1M", "16M", &["write -P 0x11 0 16M"]);
    let child = make(dir.path(), "child.vhdx", "dynamic", "1M", "16M", &["write -P 0x22 3M 1M", "write -P 0x33 5M 1M"]);
    make_differencing(&child, "parent.vhdx");
    let mut expected = qemu_convert_raw(&parent, "vhdx");
    let m = MIB as usize;
    expected[3 * m..4 * m].fill(0x22);
    expected[5 * m..5 * m + 4096].fill(0x33);
    expected[5 * m + 100 * 512..5 * m + 101 * 512].fill(0x33);
    let out = vdiskview(&["read", s(&child)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_bytes_eq(&out.stdout, &expected, "differencing VHDX over its parent");
    let info = vdiskview_json(&["info", "--output", "json", s(&child)]);
    assert_eq!(info["backing-filename"], ".\\parent.vhdx", "{info}");
    let map = vdiskview_json(&["map", "--output", "json", s(&child)]);
    assert_eq!(map_at(&map, 3 * MIB)["depth"], 0);
    assert_eq!(map_at(&map, 5 * MIB)["depth"], 0);
    assert_eq!(map_at(&map, 5 * MIB + 4096)["depth"], 1);
    assert_eq!(map_at(&map, 0)["depth"], 1);
    let c = vdiskview(&["check", s(&child)]);
    assert_eq!(c.status.code(), Some(0), "{}", String::from_utf8_lossy(&c.stdout));
    assert_no_panic(&child, "differencing");
}

#[test]
fn log_guid_without_a_log_opens_with_a_warning() {
    let dir = workspace();
    let p = make(dir.path(), "g.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M"]);
    let expected = qemu_convert_raw(&p, "vhdx");
    let mut f = std::fs::read(&p).unwrap();
    let seq = |f: &Vec<u8>, o: usize| u64::from_le_bytes(f[o + 8..o + 16].try_into().unwrap());
    let h = if seq(&f, 128 * 1024) > seq(&f, 64 * 1024) { 128 * 1024 } else { 64 * 1024 };
    f[h + 48..h + 64].copy_from_slice(&[0xab; 16]);
    f[h + 4..h + 8].fill(0);
    let c = crc32c(&f[h..h + 4096]);
    f[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&p, &f).unwrap();
    assert_reads_like_qemu_data(&p, &expected);
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]).to_string();
    assert!(info.contains("no valid active sequence"), "{info}");
    // garbage in the log itself
    let log_off = u64::from_le_bytes(f[h + 72..h + 80].try_into().unwrap()) as usize;
    for (i, b) in f[log_off..log_off + 65536].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    f[log_off..log_off + 4].copy_from_slice(b"loge");
    std::fs::write(&p, &f).unwrap();
    assert_no_panic(&p, "garbage log");
}

fn assert_reads_like_qemu_data(p: &Path, expected: &[u8]) {
    let out = vdiskview(&["read", s(p)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_bytes_eq(&out.stdout, expected, "read");
}

// --- writing ----------------------------------------------------------------------------

fn qemu_check_output(p: &Path) -> (i32, String) {
    let out = qemu_img_output(&["check", "-f", "vhdx", s(p)]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[track_caller]
fn assert_qemu_check_clean(p: &Path, what: &str) {
    let (code, text) = qemu_check_output(p);
    assert_eq!(code, 0, "{what}: qemu-img check -f vhdx:\n{text}");
}

#[track_caller]
fn assert_qemu_compare_equal(a: &Path, b: &Path, what: &str) {
    let out = qemu_img_output(&["compare", "-f", "vhdx", "-F", "vhdx", s(a), s(b)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: qemu-img compare:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vdv_write(p: &Path, off: u64, len: u64, byte: u8) -> std::process::Output {
    vdiskview(&["write", s(p), "--offset", &off.to_string(), "--pattern", &byte.to_string(), "--length", &len.to_string()])
}

#[track_caller]
fn vdv_write_ok(p: &Path, off: u64, len: u64, byte: u8) {
    let out = vdv_write(p, off, len, byte);
    assert!(out.status.success(), "vdiskview write {off} {len} {byte}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Deterministic "random" writes: unaligned offsets and lengths, block-crossing runs,
/// whole blocks, overwrites of earlier writes.
fn random_writes(size: u64, bs: u64, n: usize, seed: u64) -> Vec<(u64, u64, u8)> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for i in 0..n {
        let r = next();
        let len = match i % 4 {
            0 => 1 + r % 5000,
            1 => 1 + r % (3 * bs / 2),
            2 => bs,
            _ => 512 * (1 + r % 64),
        }
        .min(size);
        let off = match i % 4 {
            2 => (next() % (size / bs).max(1)) * bs,
            // across a block boundary
            1 => ((next() % (size / bs).max(1)).max(1) * bs).saturating_sub(len / 2),
            _ => next() % (size - len),
        }
        .min(size - len);
        out.push((off, len, (0x40 + i as u8 * 7) | 1));
    }
    out
}

/// The same random writes by vdiskview on copy A and by qemu-io on copy B: qemu sees equal
/// disks, qemu-img check passes, qemu writes A afterwards, vdiskview reads what qemu reads.
fn writes_match_qemu_io(sub: &str, bs: &str, size: &str, pre: &[&str], seed: u64) {
    let dir = workspace();
    let a = make(dir.path(), "a.vhdx", sub, bs, size, pre);
    writes_match_qemu_io_on(&a, &format!("{sub} {bs} {size}"), seed);
}

fn writes_match_qemu_io_on(a: &Path, what: &str, seed: u64) {
    let a = a.to_path_buf();
    let b = a.with_file_name("b.vhdx");
    std::fs::copy(&a, &b).unwrap();
    let vsize = info_u64(&a, "block-size");
    let size_bytes = vdiskview_json(&["info", "--output", "json", s(&a)])["virtual-size"].as_u64().unwrap();
    let writes = random_writes(size_bytes, vsize, 16, seed);
    let mut cmds = Vec::new();
    for &(off, len, byte) in &writes {
        vdv_write_ok(&a, off, len, byte);
        cmds.push(format!("write -P {byte} {off} {len}"));
    }
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("vhdx", &b, &cmds);
    assert_qemu_check_clean(&a, &what);
    assert_qemu_compare_equal(&a, &b, &what);
    assert_reads_like_qemu(&a, &what);
    let c = vdiskview(&["check", s(&a)]);
    assert_eq!(c.status.code(), Some(0), "{what}: vdiskview check: {}", String::from_utf8_lossy(&c.stdout));
    // qemu takes the result for writing too, and vdiskview then reads qemu's writes
    qemu_io("vhdx", &a, &["write -P 0x99 100k 3M"]);
    qemu_io("vhdx", &b, &["write -P 0x99 100k 3M"]);
    assert_qemu_compare_equal(&a, &b, &format!("{what}, qemu wrote after vdiskview"));
    assert_reads_like_qemu(&a, &format!("{what}, qemu wrote after vdiskview"));
    // and vdiskview writes after qemu
    vdv_write_ok(&a, 5000, 70000, 0x12);
    qemu_io("vhdx", &b, &["write -P 0x12 5000 70000"]);
    assert_qemu_compare_equal(&a, &b, &format!("{what}, vdiskview wrote after qemu"));
    assert_qemu_check_clean(&a, &what);
}

#[test]
fn write_dynamic_1m_matches_qemu_io() {
    writes_match_qemu_io("dynamic", "1M", "64M", WRITES, 1);
}

#[test]
fn write_dynamic_8m_matches_qemu_io() {
    writes_match_qemu_io("dynamic", "8M", "64M", WRITES, 2);
}

#[test]
fn write_dynamic_32m_matches_qemu_io() {
    writes_match_qemu_io("dynamic", "32M", "100M", WRITES, 3);
}

#[test]
fn write_dynamic_256m_matches_qemu_io() {
    writes_match_qemu_io("dynamic", "256M", "40M", WRITES, 8);
}

#[test]
fn write_dynamic_empty_and_not_present_blocks_match_qemu_io() {
    writes_match_qemu_io("dynamic", "1M,block_state_zero=off", "40M", &[], 4);
    writes_match_qemu_io("dynamic", "2M,log_size=4M", "40M", &[], 5);
}

#[test]
fn write_fixed_matches_qemu_io() {
    writes_match_qemu_io("fixed", "8M", "32M", WRITES, 6);
    writes_match_qemu_io("fixed", "1M", "24M", &[], 7);
}

/// 4096-byte logical sectors (qemu neither makes nor opens them): the
/// metadata item patched in a qemu-made image whose BAT layout does not depend on it.
#[test]
fn write_4k_logical_sectors_matches_qemu_io() {
    const LOGICAL_SECTOR_SIZE: [u8; 16] = [0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F];
    let dir = workspace();
    let a = make(dir.path(), "a.vhdx", "dynamic", "1M", "16M", &["write -P 0x5a 0 64k", "write -P 0x11 5M 1M"]);
    let meta = info_u64(&a, "metadata-offset") as usize;
    let f = std::fs::read(&a).unwrap();
    let count = u16::from_le_bytes([f[meta + 10], f[meta + 11]]) as usize;
    let e = (0..count).map(|i| meta + 32 + i * 32).find(|&e| f[e..e + 16] == LOGICAL_SECTOR_SIZE).expect("logical sector size item");
    let item = meta + u32::from_le_bytes(f[e + 16..e + 20].try_into().unwrap()) as usize;
    patch_file(&a, item as u64, &4096u32.to_le_bytes());
    assert_eq!(info_u64(&a, "logical-sector-size"), 4096);
    // qemu refuses them ("Operation not supported"): the oracle is the model
    let mut expected = vdiskview_ok(&["read", s(&a)]);
    for (off, len, byte) in random_writes(16 * MIB, MIB, 16, 9) {
        vdv_write_ok(&a, off, len, byte);
        expected[off as usize..(off + len) as usize].fill(byte);
    }
    assert_bytes_eq(&vdiskview_ok(&["read", s(&a)]), &expected, "4096-byte logical sectors");
    let c = vdiskview(&["check", s(&a)]);
    assert_eq!(c.status.code(), Some(0), "{}", String::from_utf8_lossy(&c.stdout));
}

/// The session's header update: both headers valid, sequence up, new file and data write
/// GUIDs, no log GUID.
#[test]
fn write_updates_headers_by_the_two_header_protocol() {
    let dir = workspace();
    let p = make(dir.path(), "h.vhdx", "dynamic", "1M", "8M", &["write -P 1 0 4k"]);
    let before = vdiskview_json(&["info", "--output", "json", s(&p)]);
    let v0 = before["vdiskview"]["layers"][0]["vhdx"].clone();
    vdv_write_ok(&p, 100, 10, 7); // in place
    vdv_write_ok(&p, 3 * MIB, 10, 8); // a new block through the log
    let after = vdiskview_json(&["info", "--output", "json", s(&p)]);
    let v1 = after["vdiskview"]["layers"][0]["vhdx"].clone();
    assert!(v1["sequence-number"].as_u64() > v0["sequence-number"].as_u64(), "{v0}\n{v1}");
    assert_ne!(v1["file-write-guid"], v0["file-write-guid"]);
    assert_ne!(v1["data-write-guid"], v0["data-write-guid"]);
    assert_eq!(v1["log-guid"], "00000000-0000-0000-0000-000000000000");
    let f = std::fs::read(&p).unwrap();
    for h in [64 * 1024usize, 128 * 1024] {
        assert_eq!(&f[h..h + 4], b"head");
        let mut copy = f[h..h + 4096].to_vec();
        let want = u32::from_le_bytes(copy[4..8].try_into().unwrap());
        copy[4..8].fill(0);
        assert_eq!(crc32c(&copy), want, "header at 0x{h:x}");
    }
    let info = after.to_string();
    assert!(!info.contains("warning") || !info.contains("damaged"), "{info}");
    assert_qemu_check_clean(&p, "after header updates");
}

/// A differencing VHDX (qemu cannot open one): a new block takes the parent's bytes around
/// the write and is fully present; a partially present block gets its bytes in place and
/// its sector-bitmap bits (partial sectors completed from the parent); the parent is
/// untouched.
#[test]
fn write_differencing_new_and_partially_present_blocks() {
    let dir = workspace();
    let parent = make(dir.path(), "parent.vhdx", "dynamic", "1M", "16M", &["write -P 0x11 0 16M"]);
    let child = make(dir.path(), "child.vhdx", "dynamic", "1M", "16M", &["write -P 0x22 3M 1M", "write -P 0x33 5M 1M"]);
    make_differencing(&child, "parent.vhdx");
    let parent_before = std::fs::read(&parent).unwrap();
    let mut expected = vdiskview_ok(&["read", s(&child)]);
    let writes: &[(u64, u64, u8)] = &[
        (7 * MIB + 1000, 3000, 0xa1),        // a new block, parent around it
        (5 * MIB + 4096 + 100, 700, 0xa2),   // partially present: clear sectors 8, 9 partly
        (5 * MIB + 100 * 512 + 3, 10, 0xa3), // a set sector, in place
        (4 * MIB - 300, 600, 0xa4),          // fully present block 3 into new block 4
        (5 * MIB + MIB - 10, 20, 0xa5),      // partially present block 5 into new block 6
        (9 * MIB, MIB, 0xa6),                // a whole new block: fully present
        (12 * MIB + 3, 5, 0xa7),             // sector 0 of a new block, partly
    ];
    for &(off, len, byte) in writes {
        vdv_write_ok(&child, off, len, byte);
        expected[off as usize..(off + len) as usize].fill(byte);
        assert_bytes_eq(&vdiskview_ok(&["read", s(&child)]), &expected, &format!("differencing after write at 0x{off:x}"));
    }
    let c = vdiskview(&["check", s(&child)]);
    assert_eq!(c.status.code(), Some(0), "{}", String::from_utf8_lossy(&c.stdout));
    assert_eq!(std::fs::read(&parent).unwrap(), parent_before, "the parent changed");
    let map = vdiskview_json(&["map", "--output", "json", s(&child)]);
    assert_eq!(map_at(&map, 7 * MIB + 1024)["depth"], 0, "the written sectors of the new block are in the child");
    assert_eq!(map_at(&map, 7 * MIB)["depth"], 1, "the new block's unwritten sectors stay in the parent");
    assert_eq!(map_at(&map, 7 * MIB + 8192)["depth"], 1, "the new block's unwritten sectors stay in the parent");
    assert_eq!(map_at(&map, 9 * MIB + 1000)["depth"], 0, "a block written whole");
    assert_eq!(map_at(&map, 12 * MIB)["depth"], 0);
    assert_eq!(map_at(&map, 12 * MIB + 512)["depth"], 1);
    let t = vdiskview_text(&["tables", s(&child)]);
    assert!(t.contains("PARTIALLY_PRESENT") && t.contains("FULLY_PRESENT"), "{t}");
    assert_eq!(map_at(&map, 5 * MIB + 4096)["depth"], 0, "sector 8 of block 5 is in the child now");
    assert_eq!(map_at(&map, 5 * MIB + 20 * 512)["depth"], 1, "sector 20 of block 5 is still the parent's");
}

/// A log that needs replay is replayed on disk before the first write (qemu then opens
/// the file read-only without complaint and reads the same).
/// A qemu-made image whose BAT sector on disk lost its allocations, with the header naming
/// the log whose newest entry still holds them: a log that needs replay. Returns the path
/// and the guest bytes after replay.
fn make_pending_log(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = make(dir, "l.vhdx", "dynamic", "1M", "16M", &["write -P 0x44 3M 1M", "write -P 0x55 7M 4k"]);
    let expected = qemu_convert_raw(&p, "vhdx");
    let bat = bat_offset(&p);
    let mut f = std::fs::read(&p).unwrap();
    let seq = |f: &Vec<u8>, o: usize| u64::from_le_bytes(f[o + 8..o + 16].try_into().unwrap());
    let h = if seq(&f, 128 * 1024) > seq(&f, 64 * 1024) { 128 * 1024 } else { 64 * 1024 };
    let log_off = u64::from_le_bytes(f[h + 72..h + 80].try_into().unwrap()) as usize;
    let log_len = u32::from_le_bytes(f[h + 68..h + 72].try_into().unwrap()) as usize;
    let mut best: Option<(u64, usize)> = None;
    for o in (0..log_len).step_by(4096) {
        let e = &f[log_off + o..];
        if &e[..4] == b"loge" {
            let s = u64::from_le_bytes(e[16..24].try_into().unwrap());
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, o));
            }
        }
    }
    let (_, eo) = best.expect("qemu left log entries");
    let guid: [u8; 16] = f[log_off + eo + 32..log_off + eo + 48].try_into().unwrap();
    f[bat as usize..bat as usize + 4096].fill(0);
    f[h + 48..h + 64].copy_from_slice(&guid);
    f[h + 4..h + 8].fill(0);
    let c = crc32c(&f[h..h + 4096]);
    f[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&p, &f).unwrap();
    (p, expected)
}

#[test]
fn write_replays_a_pending_log_first() {
    let dir = workspace();
    let (p, mut expected) = make_pending_log(dir.path());
    let (code, text) = qemu_check_output(&p);
    assert_ne!(code, 0, "qemu should refuse a log needing replay read-only: {text}");
    // the reference: qemu's own replay, then qemu's write
    let q = dir.path().join("q.vhdx");
    std::fs::copy(&p, &q).unwrap();
    qemu_img(&["check", "-q", "-r", "all", "-f", "vhdx", s(&q)]);
    qemu_io("vhdx", &q, &["write -P 0x66 3146240 100"]);
    vdv_write_ok(&p, 3 * MIB + 512, 100, 0x66);
    expected[3 * MIB as usize + 512..3 * MIB as usize + 612].fill(0x66);
    assert_qemu_check_clean(&p, "after the replay and the write");
    assert_qemu_compare_equal(&p, &q, "replayed by vdiskview vs by qemu");
    assert_bytes_eq(&qemu_convert_raw(&p, "vhdx"), &expected, "qemu reads the replayed state and the write");
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]).to_string();
    assert!(!info.contains("replayed in memory"), "{info}");
}

/// `check --repair all` replays a pending log on disk as `qemu-img check -r all` does: qemu
/// then opens it read-only, sees the same disk, and the data write GUID is kept; a clean
/// image is left byte-identical.
#[test]
fn check_repair_replays_the_log_like_qemu() {
    let dir = workspace();
    let (p, expected) = make_pending_log(dir.path());
    let q = dir.path().join("q.vhdx");
    std::fs::copy(&p, &q).unwrap();
    qemu_img(&["check", "-q", "-r", "all", "-f", "vhdx", s(&q)]);
    let guid_before = vdiskview_json(&["info", "--output", "json", s(&p)])["vdiskview"]["layers"][0]["vhdx"]["data-write-guid"].clone();
    let out = vdiskview(&["check", "--repair", "all", s(&p)]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Replaying the log"), "{text}");
    assert_qemu_check_clean(&p, "after check --repair all");
    assert_qemu_compare_equal(&p, &q, "repaired by vdiskview vs by qemu");
    assert_bytes_eq(&qemu_convert_raw(&p, "vhdx"), &expected, "qemu reads the replayed state");
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_eq!(info["vdiskview"]["layers"][0]["vhdx"]["data-write-guid"], guid_before);
    assert_eq!(info["vdiskview"]["layers"][0]["vhdx"]["log-guid"], "00000000-0000-0000-0000-000000000000");
    // nothing to repair: the file is left alone
    let before = std::fs::read(&p).unwrap();
    let out = vdiskview(&["check", "--repair", "all", s(&p)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&p).unwrap(), before, "a clean image changed");
}

/// A read-only open refuses to write; the file is byte-identical.
#[test]
fn write_refused_on_a_read_only_open() {
    let dir = workspace();
    let p = make(dir.path(), "ro.vhdx", "dynamic", "1M", "8M", &["write -P 1 0 4k"]);
    let before = std::fs::read(&p).unwrap();
    let mut img = vdiskview_core::image::open(&p, &vdiskview_core::image::OpenOptions::default()).unwrap();
    let e = img.write(0, &[1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    let e = img.write(3 * MIB, &[1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    drop(img);
    assert_eq!(std::fs::read(&p).unwrap(), before, "the file changed");
}

/// Images vdiskview reads but will not write: the refusal names why, before any byte
/// changes (the session's header update included).
#[test]
fn write_refusals_leave_the_file_byte_identical() {
    let dir = workspace();
    let base = make(dir.path(), "base.vhdx", "dynamic", "1M", "8M", &["write -P 1 0 4k", "write -P 2 2M 4k"]);
    let refuse = |p: &Path, off: u64, want: &str| {
        let before = std::fs::read(p).unwrap();
        let out = vdv_write(p, off, 100, 0x77);
        assert_clean_error(&out, want);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("refusing to write") && msg.contains(want), "{want}: {msg}");
        assert_eq!(std::fs::read(p).unwrap(), before, "{want}: the file changed");
    };
    // a BAT entry with an invalid state (4)
    let p = dir.path().join("state.vhdx");
    std::fs::copy(&base, &p).unwrap();
    let bat = bat_offset(&p);
    let e = u64::from_le_bytes(std::fs::read(&p).unwrap()[bat as usize + 16..bat as usize + 24].try_into().unwrap());
    patch_file(&p, bat + 16, &((e & !7) | 4).to_le_bytes());
    refuse(&p, 2 * MIB + 10, "invalid state 4");
    // a block past the end of the file
    let p = dir.path().join("eof.vhdx");
    std::fs::copy(&base, &p).unwrap();
    patch_file(&p, bat + 16, &((1u64 << 30) << 20 | 6).to_le_bytes());
    refuse(&p, 2 * MIB + 10, "past the end of the file");
    // a block pointing into the BAT, the log, the headers
    for (i, target) in [(0, bat), (1, MIB), (2, 0)].into_iter() {
        let p = dir.path().join(format!("over{i}.vhdx"));
        std::fs::copy(&base, &p).unwrap();
        patch_file(&p, bat + 16, &((target / MIB) << 20 | 6).to_le_bytes());
        refuse(&p, 2 * MIB + 10, "refusing to write: BAT entry for block 2 points to");
    }
    // a log version other than 0, in the current header
    let p = dir.path().join("logver.vhdx");
    std::fs::copy(&base, &p).unwrap();
    let mut f = std::fs::read(&p).unwrap();
    let seq = |f: &Vec<u8>, o: usize| u64::from_le_bytes(f[o + 8..o + 16].try_into().unwrap());
    let h = if seq(&f, 128 * 1024) > seq(&f, 64 * 1024) { 128 * 1024 } else { 64 * 1024 };
    f[h + 64] = 1;
    f[h + 4..h + 8].fill(0);
    let c = crc32c(&f[h..h + 4096]);
    f[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&p, &f).unwrap();
    refuse(&p, 0, "log version 1");
}

/// qemu-nbd serving the image (read-write or read-only) holds qemu's lock: the write is
/// refused naming the lock and the file is byte-identical.
#[test]
fn write_refused_under_qemu_nbd_lock() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = workspace();
    let p = make(dir.path(), "nbd.vhdx", "dynamic", "1M", "8M", &["write -P 1 0 4k"]);
    for extra in [&[][..], &["--read-only"][..]] {
        let before = std::fs::read(&p).unwrap();
        let sock = dir.path().join("nbd.sock");
        let _ = std::fs::remove_file(&sock);
        let mut child = Command::new("qemu-nbd")
            .args(["-k", s(&sock), "-f", "vhdx"])
            .args(extra)
            .arg(s(&p))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-nbd");
        // qemu-nbd listens before it opens the image: wait for its lock byte 203 ("resize
        // not shared") in /proc/locks
        let t = Instant::now();
        while !(sock.exists() && locked_bytes(&p).contains(&203)) {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("qemu-nbd exited ({st})");
            }
            assert!(t.elapsed() < Duration::from_secs(30), "qemu-nbd did not lock the image");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = vdv_write(&p, 3 * MIB, 4096, 0x99);
        let msg = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = child.kill();
        let _ = child.wait();
        assert_clean_error(&out, &format!("served by qemu-nbd {extra:?}"));
        assert!(msg.contains("in use") && msg.contains("lock"), "{msg}");
        assert_eq!(std::fs::read(&p).unwrap(), before, "qemu-nbd {extra:?}: the file changed");
    }
    // with qemu-nbd gone the write goes through
    vdv_write_ok(&p, 3 * MIB, 4096, 0x99);
    assert_qemu_check_clean(&p, "after qemu-nbd");
}

/// The bytes of `img` some process holds an OFD lock on (from /proc/locks).
fn locked_bytes(img: &Path) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let ino = format!(":{}", std::fs::metadata(img).unwrap().ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut out = std::collections::BTreeSet::new();
    for l in locks.lines().filter(|l| l.contains("OFDLCK")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(i) = f.iter().position(|x| x.ends_with(&ino)) else { continue };
        let (Some(start), Some(end)) = (f.get(i + 1).and_then(|x| x.parse::<u64>().ok()), f.get(i + 2)) else {
            continue;
        };
        let end = if *end == "EOF" { start } else { end.parse().unwrap_or(start) };
        out.extend(start..=end.min(start + 1024));
    }
    out
}

/// Crash sweep: with VDISKVIEW_FAILPOINT=k the write aborts after its k-th durable step;
/// for every k the image passes `qemu-img check` (or holds a log entry qemu replays, after
/// which check passes and qemu reads what vdiskview reads), each block of the guest is all
/// old or all new, and the same write again completes.
fn crash_sweep(img: &Path, off: u64, len: u64, unit: u64, qemu_opens: bool, frozen: &[PathBuf]) -> u64 {
    use std::os::unix::process::ExitStatusExt;
    let frozen_before: Vec<Vec<u8>> = frozen.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let old = vdiskview_ok(&["read", s(img)]);
    let mut new = old.clone();
    new[off as usize..(off + len) as usize].fill(0xe7);
    let work = img.with_file_name("work.vhdx");
    let mut replays = 0;
    let mut k = 1u64;
    let steps = loop {
        assert!(k < 200, "the write did not complete");
        std::fs::copy(img, &work).unwrap();
        let out = std::process::Command::new(vdiskview_bin())
            .args(["write", s(&work), "--offset", &off.to_string(), "--pattern", "0xe7", "--length", &len.to_string()])
            .env("VDISKVIEW_FAILPOINT", k.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let ctx = format!("crash at step {k} ({})", stderr.trim());
        if qemu_opens {
            let (code, text) = qemu_check_output(&work);
            if code != 0 {
                assert!(text.contains("log that needs to be replayed"), "{ctx}: qemu-img check:\n{text}");
                replays += 1;
                let q = img.with_file_name("replayed.vhdx");
                std::fs::copy(&work, &q).unwrap();
                qemu_img(&["check", "-q", "-r", "all", "-f", "vhdx", s(&q)]);
                assert_qemu_check_clean(&q, &format!("{ctx}, replayed by qemu"));
                assert_bytes_eq(&qemu_convert_raw(&q, "vhdx"), &vdiskview_ok(&["read", s(&work)]), &format!("{ctx}: qemu's replay vs ours"));
            }
        }
        let c = vdiskview(&["check", s(&work)]);
        assert_eq!(c.status.code(), Some(0), "{ctx}: vdiskview check: {}", String::from_utf8_lossy(&c.stdout));
        let got = vdiskview_ok(&["read", s(&work)]);
        for st in (0..got.len()).step_by(unit as usize) {
            let e = (st + unit as usize).min(got.len());
            assert!(got[st..e] == old[st..e] || got[st..e] == new[st..e], "{ctx}: bytes 0x{st:x}..0x{e:x} are neither old nor new");
        }
        if out.status.success() {
            assert_bytes_eq(&got, &new, "completed write");
            if qemu_opens {
                assert_qemu_check_clean(&work, "completed write");
            }
            break k - 1;
        }
        assert_eq!(out.status.signal(), Some(6), "{ctx}: expected the failpoint's abort");
        let again = vdiskview(&["write", s(&work), "--offset", &off.to_string(), "--pattern", "0xe7", "--length", &len.to_string()]);
        assert!(again.status.success(), "{ctx}: the write again: {}", String::from_utf8_lossy(&again.stderr));
        assert_bytes_eq(&vdiskview_ok(&["read", s(&work)]), &new, &format!("{ctx}, then the write again"));
        if qemu_opens {
            assert_qemu_check_clean(&work, &format!("{ctx}, then the write again"));
        }
        k += 1;
    };
    for (p, b) in frozen.iter().zip(&frozen_before) {
        assert!(std::fs::read(p).unwrap() == *b, "{} changed", p.display());
    }
    eprintln!("{steps} durable steps, {replays} crashes left a log for qemu to replay");
    steps
}

#[test]
fn crash_sweep_dynamic_in_place_and_new_blocks() {
    let dir = workspace();
    let p = make(dir.path(), "c.vhdx", "dynamic", "1M", "16M", &["write -P 0x5a 0 64k", "write -P 0x11 2M 1M"]);
    // block 2 in place, blocks 3 and 4 new: session headers (2), log GUID (2, the first
    // flush also makes the data of all three blocks durable), entry, BAT, reset (2)
    let steps = crash_sweep(&p, 3 * MIB - 1000, MIB + 3000, MIB, true, &[]);
    assert_eq!(steps, 8, "{steps} steps");
}

/// A differencing child whose chunk has no sector bitmap block yet: block 3 fully present,
/// nothing else; the first partial write allocates the sector bitmap block.
#[test]
fn write_differencing_allocates_the_sector_bitmap_block() {
    let dir = workspace();
    let parent = make(dir.path(), "parent.vhdx", "dynamic", "1M", "16M", &["write -P 0x11 0 16M"]);
    let child = make(dir.path(), "child.vhdx", "dynamic", "1M", "16M", &["write -P 0x22 3M 1M", "write -P 0x33 5M 1M"]);
    make_differencing(&child, "parent.vhdx");
    let bat = bat_offset(&child);
    patch_file(&child, bat + 5 * 8, &[0; 8]);
    patch_file(&child, bat + 4096 * 8, &[0; 8]);
    let mut expected = qemu_convert_raw(&parent, "vhdx");
    expected[3 * MIB as usize..4 * MIB as usize].fill(0x22);
    assert_bytes_eq(&vdiskview_ok(&["read", s(&child)]), &expected, "child without a sector bitmap");
    let len_before = std::fs::metadata(&child).unwrap().len();
    for (off, len, byte) in [(6 * MIB + 700, 2000u64, 0xb1u8), (6 * MIB + 9000, 100, 0xb2), (11 * MIB - 1, 2, 0xb3)] {
        vdv_write_ok(&child, off, len, byte);
        expected[off as usize..(off + len) as usize].fill(byte);
        assert_bytes_eq(&vdiskview_ok(&["read", s(&child)]), &expected, &format!("after the write at 0x{off:x}"));
    }
    // one sector bitmap block and three data blocks
    assert_eq!(std::fs::metadata(&child).unwrap().len(), len_before.next_multiple_of(MIB) + 4 * MIB);
    let c = vdiskview(&["check", s(&child)]);
    assert_eq!(c.status.code(), Some(0), "{}", String::from_utf8_lossy(&c.stdout));
    let t = vdiskview_text(&["tables", s(&child)]);
    assert!(t.contains("PARTIALLY_PRESENT"), "{t}");
}

/// A log that needs replay: replayed on disk (a step of its own), then the write.
#[test]
fn crash_sweep_pending_log_then_new_block() {
    let dir = workspace();
    let (p, _) = make_pending_log(dir.path());
    let steps = crash_sweep(&p, 9 * MIB - 100, 200, MIB, true, &[]);
    assert_eq!(steps, 9, "replay, session headers (2), log GUID and data (2), entry, BAT, reset (2): {steps} steps");
}

/// A fixed VHDX: the session's headers, then the data in place.
#[test]
fn crash_sweep_fixed() {
    let dir = workspace();
    let p = make(dir.path(), "f.vhdx", "fixed", "1M", "8M", &["write -P 0x21 0 8M"]);
    let steps = crash_sweep(&p, MIB - 100, 200, MIB, true, &[]);
    assert_eq!(steps, 3, "two headers, then the data of both blocks (one flush)");
}

#[test]
fn crash_sweep_differencing() {
    let dir = workspace();
    let parent = make(dir.path(), "parent.vhdx", "dynamic", "1M", "16M", &["write -P 0x11 0 16M"]);
    let child = make(dir.path(), "child.vhdx", "dynamic", "1M", "16M", &["write -P 0x22 3M 1M", "write -P 0x33 5M 1M"]);
    make_differencing(&child, "parent.vhdx");
    // block 5 partially present (bits set through the log), block 6 new, partially present
    let steps = crash_sweep(&child, 6 * MIB - 5000, 6000, 512, false, &[parent.clone()]);
    assert_eq!(steps, 8, "session headers (2), log GUID and data (2), entry, BAT and bits, reset (2): {steps} steps");
    // no sector bitmap block yet: it is allocated first
    let bat = bat_offset(&child);
    patch_file(&child, bat + 5 * 8, &[0; 8]);
    patch_file(&child, bat + 4096 * 8, &[0; 8]);
    let steps = crash_sweep(&child, 7 * MIB + 100, 3000, 512, false, &[parent.clone()]);
    assert_eq!(steps, 9, "session headers (2), the sector bitmap block, log GUID and data (2), entry, BAT and bits, reset (2): {steps} steps");
}

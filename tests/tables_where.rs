//! `vdiskview tables` (metadata listing) and `vdiskview where` (guest offset
//! -> file offset, and file offset -> structure).
mod support;

use std::path::Path;

use serde_json::Value;
use support::images::build;
use support::vhd::{read_bat, read_dyn_header};
use support::*;

/// The BAT lines `tables` must print, computed from the BAT bytes.
fn expected_bat_lines(file: &[u8]) -> Vec<String> {
    let h = read_dyn_header(file);
    let bitmap = (h.block_size as u64 / 512).div_ceil(8).div_ceil(512) * 512;
    read_bat(file)
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            if e == 0xffff_ffff {
                format!("Block#{i:04} -> 0xffffffff : block is not allocated")
            } else {
                let bm = e as u64 * 512;
                let d = bm + bitmap;
                format!(
                    "Block#{i:04} -> 0x{e:08x} : bitmap [0x{bm:08x}-0x{:08x}], data [0x{d:08x}-0x{:08x}]",
                    bm + bitmap - 1,
                    d + h.block_size as u64 - 1
                )
            }
        })
        .collect()
}

fn check_vhd_tables(path: &Path) {
    let file = std::fs::read(path).unwrap();
    let out = vdiskview_text(&["tables", s(path)]);
    let h = read_dyn_header(&file);
    assert!(
        out.contains(&format!("Block size : {}", h.block_size)),
        "tables output lacks 'Block size : {}':\n{out}",
        h.block_size
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    for want in expected_bat_lines(&file) {
        assert!(lines.contains(&want.as_str()), "tables output lacks the line\n  {want}\nin:\n{out}");
    }
}

#[test]
fn demo_bat_layout_is_qemus() {
    // the committed image must keep the layout the docs and tests rely on
    let file = std::fs::read(demo_vhd()).unwrap();
    assert_eq!(&file[0..8], b"conectix");
    assert_eq!(&file[0x200..0x208], b"cxsparse");
    let h = read_dyn_header(&file);
    assert_eq!(h.table_offset, 0x600);
    assert_eq!(h.block_size, 2 * 1024 * 1024);
    assert_eq!(be32(&file, 0x600), 4, "block 0 bitmap at sector 4 = 0x800, data at 0xa00");
    assert_eq!(be32(&file, 0x604), 0xffff_ffff);
    let lines = expected_bat_lines(&file);
    assert_eq!(
        lines[0],
        "Block#0000 -> 0x00000004 : bitmap [0x00000800-0x000009ff], data [0x00000a00-0x002009ff]"
    );
    assert_eq!(lines[1], "Block#0001 -> 0xffffffff : block is not allocated");
}

#[test]
fn tables_demo_vhd() {
    let out = vdiskview_text(&["tables", s(&demo_vhd())]);
    assert!(out.contains("Block size : 2097152"), "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(lines.contains(
        &"Block#0000 -> 0x00000004 : bitmap [0x00000800-0x000009ff], data [0x00000a00-0x002009ff]"
    ), "{out}");
    assert!(lines.contains(&"Block#0001 -> 0xffffffff : block is not allocated"), "{out}");
    check_vhd_tables(&demo_vhd());
}

#[test]
fn tables_vhd_dynamic_out_of_order_blocks() {
    let dir = workspace();
    let img = build("vhd-dynamic", dir.path());
    check_vhd_tables(&img.path);
}

#[test]
fn where_demo_guest_offset() {
    let demo = demo_vhd();
    let w = vdiskview_json(&["where", s(&demo), "0x1000", "--output", "json"]);
    assert_eq!(w["virtual"], 4096, "{w}");
    assert_eq!(w["layer"], 0, "{w}");
    assert_eq!(w["kind"], "data", "{w}");
    assert_eq!(w["host-offset"], 6656, "{w}");
    assert_eq!(w["block"], 0, "{w}");
    let f = w["filename"].as_str().unwrap_or_else(|| panic!("filename in {w}"));
    assert!(same_file(f, &demo), "{w}");

    let human = vdiskview_text(&["where", s(&demo), "0x1000"]);
    assert!(human.contains("0x1a00"), "human where output should show 0x1a00:\n{human}");

    // same thing with other spellings of the offset
    for spelling in ["4096", "4K", "0x200+512*7"] {
        let w = vdiskview_json(&["where", s(&demo), spelling, "--output", "json"]);
        assert_eq!(w["host-offset"], 6656, "where {spelling}: {w}");
    }

    // block 1 is not allocated
    let w = vdiskview_json(&["where", s(&demo), "0x200000", "--output", "json"]);
    assert!(
        w["kind"] == "unallocated" || w["kind"] == "zero",
        "unallocated VHD block: {w}"
    );
    assert!(w["host-offset"].is_null(), "{w}");
    assert_eq!(w["block"], 1, "{w}");
}

#[test]
fn where_demo_file_offset() {
    let demo = demo_vhd();
    let len = std::fs::metadata(&demo).unwrap().len();
    let w = vdiskview_json(&["where", s(&demo), "0x1a00", "--file", "--output", "json"]);
    assert_eq!(w["virtual"], 4096, "{w}");
    assert_eq!(w["structure"], "data", "{w}");
    assert_eq!(w["host-offset"], 0x1a00, "{w}");

    let cases: &[(u64, &str)] = &[
        (0, "footer-copy"),
        (0x1ff, "footer-copy"),
        (0x200, "dynamic-header"),
        (0x5ff, "dynamic-header"),
        (0x600, "bat"),
        (0x604, "bat"),
        (0x800, "bitmap"),
        (0x9ff, "bitmap"),
        (0xa00, "data"),
        (len - 512, "footer"),
        (len - 1, "footer"),
    ];
    for &(off, want) in cases {
        let w = vdiskview_json(&["where", s(&demo), &format!("{off:#x}"), "--file", "--output", "json"]);
        assert_eq!(w["structure"], want, "where --file {off:#x}: {w}");
        if want != "data" {
            assert!(w["virtual"].is_null(), "where --file {off:#x}: metadata has no guest offset: {w}");
        }
    }
    let w = vdiskview_json(&["where", s(&demo), "0xa00", "--file", "--output", "json"]);
    assert_eq!(w["virtual"], 0, "{w}");

    let human = vdiskview_text(&["where", s(&demo), "0x600", "--file"]);
    assert!(human.to_lowercase().contains("bat"), "{human}");
}

// ------------------------------------------------------------------ qcow2

struct Qcow2Layout {
    cluster: u64,
    l1_offset: u64,
    l1_size: u64,
    refcount_table: u64,
    header_length: u64,
    /// (l1 index, l2 table offset)
    l2_tables: Vec<(u64, u64)>,
    /// (guest offset, host offset) of standard (uncompressed) data clusters
    data: Vec<(u64, u64)>,
    refcount_blocks: Vec<u64>,
    /// host clusters with refcount 0 inside the file
    free: Vec<u64>,
}

fn qcow2_layout(path: &Path) -> Qcow2Layout {
    let f = std::fs::read(path).unwrap();
    assert_eq!(&f[0..4], b"QFI\xfb");
    let version = be32(&f, 4);
    let cluster_bits = be32(&f, 20);
    let cluster = 1u64 << cluster_bits;
    let l1_size = be32(&f, 36) as u64;
    let l1_offset = be64(&f, 40);
    let refcount_table = be64(&f, 48);
    let rt_clusters = be32(&f, 56) as u64;
    let (header_length, refcount_order) = if version >= 3 {
        (be32(&f, 100) as u64, be32(&f, 96))
    } else {
        (72, 4)
    };
    let mask = 0x00ff_ffff_ffff_fe00u64;
    let mut l2_tables = vec![];
    let mut data = vec![];
    let l2_entries = cluster / 8; // no extended L2 in these tests
    for i in 0..l1_size {
        let e = be64(&f, (l1_offset + 8 * i) as usize) & mask;
        if e == 0 {
            continue;
        }
        l2_tables.push((i, e));
        for j in 0..l2_entries {
            let l2e = be64(&f, (e + 8 * j) as usize);
            if l2e & (1 << 62) != 0 {
                continue; // compressed
            }
            let host = l2e & mask;
            if host != 0 && l2e & 1 == 0 {
                data.push(((i * l2_entries + j) * cluster, host));
            }
        }
    }
    let mut refcount_blocks = vec![];
    let mut refcounts = vec![0u64; f.len().div_ceil(cluster as usize)];
    let bits = 1u64 << refcount_order;
    let per_block = cluster * 8 / bits;
    for i in 0..rt_clusters * cluster / 8 {
        let e = be64(&f, (refcount_table + 8 * i) as usize) & !0x1ff;
        if e == 0 {
            continue;
        }
        refcount_blocks.push(e);
        for k in 0..per_block {
            let idx = i * per_block + k;
            if idx as usize >= refcounts.len() {
                break;
            }
            let bit = k * bits;
            let byte = (e + bit / 8) as usize;
            let v = match bits {
                16 => be16(&f, byte) as u64,
                8 => f[byte] as u64,
                32 => be32(&f, byte) as u64,
                64 => be64(&f, byte),
                _ => panic!("refcount bits {bits} not handled in the test"),
            };
            refcounts[idx as usize] = v;
        }
    }
    let free = refcounts
        .iter()
        .enumerate()
        .filter(|(_, &r)| r == 0)
        .map(|(i, _)| i as u64 * cluster)
        .filter(|&o| o + cluster <= f.len() as u64)
        .collect();
    Qcow2Layout {
        cluster,
        l1_offset,
        l1_size,
        refcount_table,
        header_length,
        l2_tables,
        data,
        refcount_blocks,
        free,
    }
}

fn mentions(text: &str, n: u64) -> bool {
    hex_numbers(text).contains(&n) || text.split(|c: char| !c.is_ascii_digit()).any(|t| t == n.to_string())
}

#[test]
fn tables_qcow2_lists_l1_and_l2() {
    let dir = workspace();
    let img = build("qcow2-v3-c4k", dir.path());
    let lay = qcow2_layout(&img.path);
    assert!(lay.l2_tables.len() >= 2, "the c4k image should have several L2 tables");
    let out = vdiskview_text(&["tables", s(&img.path)]);
    let low = out.to_lowercase();
    assert!(low.contains("l1"), "tables should list the L1 table:\n{out}");
    assert!(low.contains("l2"), "tables should list L2 tables:\n{out}");
    assert!(mentions(&out, lay.l1_offset), "L1 offset {:#x} not shown", lay.l1_offset);
    for (i, l2) in &lay.l2_tables {
        assert!(mentions(&out, *l2), "L1[{i}] -> L2 at {l2:#x} not shown in:\n{out}");
    }
    for (g, h) in &lay.data {
        assert!(mentions(&out, *h), "L2 entry for guest {g:#x} -> {h:#x} not shown");
    }
}

/// `where` on qcow2 agrees with qemu-img map for every extent.
fn check_where_against_qemu_map(path: &Path, cluster: u64, chain: &[std::path::PathBuf]) {
    let map = qemu_map_json(path, "qcow2");
    for e in map.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        let depth = e["depth"].as_u64().unwrap();
        for probe in [start, start + len / 2 + 1, start + len - 1] {
            let w = vdiskview_json(&["where", s(path), &probe.to_string(), "--output", "json"]);
            let ctx = format!("where {probe:#x} (qemu extent {e}): {w}");
            assert_eq!(w["virtual"], probe, "{ctx}");
            if e["compressed"] == true {
                assert_eq!(w["kind"], "compressed", "{ctx}");
                assert_eq!(w["layer"], depth, "{ctx}");
            } else if e["data"] == true {
                assert_eq!(w["kind"], "data", "{ctx}");
                assert_eq!(w["layer"], depth, "{ctx}");
                let off = e["offset"].as_u64().unwrap() + (probe - start);
                assert_eq!(w["host-offset"], off, "{ctx}");
                let f = w["filename"].as_str().unwrap();
                assert!(same_file(f, &chain[depth as usize]), "{ctx}");
                if depth == 0 {
                    assert_eq!(w["cluster"], probe / cluster, "{ctx}");
                }
            } else if e["present"] == true {
                assert_eq!(w["kind"], "zero", "{ctx}");
                assert_eq!(w["layer"], depth, "{ctx}");
            } else {
                assert_eq!(w["kind"], "unallocated", "{ctx}");
                assert!(w["host-offset"].is_null(), "{ctx}");
            }
        }
    }
}

#[test]
fn where_qcow2_matches_map() {
    let dir = workspace();
    let img = build("qcow2-v3-c64k", dir.path());
    check_where_against_qemu_map(&img.path, img.cluster, &img.chain);
}

#[test]
fn where_qcow2_chain_matches_map() {
    let dir = workspace();
    let img = build("qcow2-chain3", dir.path());
    check_where_against_qemu_map(&img.path, img.cluster, &img.chain);
}

#[test]
fn where_qcow2_compressed_matches_map() {
    let dir = workspace();
    let img = build("qcow2-zstd", dir.path());
    check_where_against_qemu_map(&img.path, img.cluster, &img.chain);
}

#[test]
fn where_qcow2_file_offsets() {
    let dir = workspace();
    let img = build("qcow2-v3-c64k", dir.path());
    let lay = qcow2_layout(&img.path);
    let p = s(&img.path);
    let file_view = |off: u64| -> Value {
        vdiskview_json(&["where", p, &format!("{off:#x}"), "--file", "--output", "json"])
    };
    let w = file_view(0);
    assert_eq!(w["structure"], "header", "{w}");
    let w = file_view(lay.header_length);
    assert_eq!(w["structure"], "header-extension", "{w}");
    let w = file_view(lay.l1_offset);
    assert_eq!(w["structure"], "l1", "{w}");
    let w = file_view(lay.l1_offset + 8 * (lay.l1_size - 1));
    assert_eq!(w["structure"], "l1", "{w}");
    for (_, l2) in &lay.l2_tables {
        let w = file_view(*l2 + 16);
        assert_eq!(w["structure"], "l2", "{w}");
    }
    let w = file_view(lay.refcount_table);
    assert_eq!(w["structure"], "refcount-table", "{w}");
    for rb in &lay.refcount_blocks {
        let w = file_view(*rb);
        assert_eq!(w["structure"], "refcount-block", "{w}");
    }
    assert!(!lay.data.is_empty());
    for (g, h) in &lay.data {
        let w = file_view(h + 5);
        assert_eq!(w["structure"], "data", "{w}");
        assert_eq!(w["virtual"], g + 5, "{w}");
        assert_eq!(w["host-offset"], h + 5, "{w}");
    }
    for fr in &lay.free {
        let w = file_view(*fr);
        assert_eq!(w["structure"], "free", "cluster {fr:#x} has refcount 0: {w}");
    }
    let _ = lay.cluster;
}

#[test]
fn where_qcow2_compressed_file_offset() {
    let dir = workspace();
    let img = build("qcow2-zlib", dir.path());
    let f = std::fs::read(&img.path).unwrap();
    let l1 = be64(&f, 40);
    let l2 = be64(&f, l1 as usize) & 0x00ff_ffff_ffff_fe00;
    // guest cluster 0 was written with `write -c` but holds incompressible
    // data, so qemu stored it uncompressed; cluster 2 (a constant pattern) is
    // compressed
    let e = be64(&f, l2 as usize + 2 * 8);
    assert!(e & (1 << 62) != 0, "cluster 2 should be compressed");
    let e0 = be64(&f, l2 as usize);
    assert!(e0 & (1 << 62) == 0, "cluster 0 should be stored uncompressed");
    let cluster_bits = be32(&f, 20);
    let x = 62 - (cluster_bits - 8);
    let host = e & ((1u64 << x) - 1);
    let w = vdiskview_json(&["where", s(&img.path), &format!("{:#x}", host + 1), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "compressed", "{w}");
    let w = vdiskview_json(&["where", s(&img.path), &format!("{:#x}", 2 * img.cluster + 0x10), "--output", "json"]);
    assert_eq!(w["kind"], "compressed", "{w}");
    assert_eq!(w["cluster"], 2, "{w}");
    let w = vdiskview_json(&["where", s(&img.path), "0x10", "--output", "json"]);
    assert_eq!(w["kind"], "data", "{w}");
    assert_eq!(w["cluster"], 0, "{w}");
}

//! A catalogue of qemu-made test images, shared by the map/read/info tests.
//! `build(KIND, dir)` creates one image (and its backing / data files) inside
//! `dir` with qemu-img and qemu-io, and describes it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::{pattern_file, qemu_img, qemu_img_in, qemu_io, s, KIB, MIB};

#[derive(Debug, Clone)]
pub struct TestImage {
    pub kind: &'static str,
    /// The image to open (top of the chain).
    pub path: PathBuf,
    /// qemu's `-f` value for `path`: `qcow2`, `vpc` or `raw`.
    pub fmt: &'static str,
    /// Has compressed clusters: `qemu-img map` (human) refuses such images.
    pub compressed: bool,
    /// Virtual size we asked for (qemu's actual size may be rounded, e.g. VHD CHS).
    pub size: u64,
    /// Cluster / block size (0 for raw).
    pub cluster: u64,
    /// Every file of the chain, top first (not including external data files).
    pub chain: Vec<PathBuf>,
}

impl TestImage {
    /// Small enough to `read` the whole guest disk in a test.
    pub fn small(&self) -> bool {
        self.size <= 64 * MIB
    }
}

/// Every image kind `build` knows.
pub const ALL_KINDS: &[&str] = &[
    "qcow2-v3-c512",
    "qcow2-v3-c4k",
    "qcow2-v3-c64k",
    "qcow2-v3-c2m",
    "qcow2-v2-c512",
    "qcow2-v2-c4k",
    "qcow2-v2-c64k",
    "qcow2-v2-c2m",
    "qcow2-v3-c64k-1g",
    "qcow2-zlib",
    "qcow2-zstd",
    "qcow2-zlib-c4k",
    "qcow2-extl2-c64k",
    "qcow2-extl2-c32k-backing",
    "qcow2-chain3",
    "qcow2-raw-backing",
    "qcow2-datafile-raw",
    "qcow2-datafile",
    "vhd-dynamic",
    "vhd-dynamic-256m",
    "vhd-fixed",
    "raw-sparse",
    "raw-qemu",
    "raw-empty",
];

fn fmt_size(n: u64) -> String {
    n.to_string()
}

/// Scattered writes for a plain qcow2 of cluster size `c` and virtual size
/// `size`: unaligned pattern writes crossing cluster boundaries, whole
/// clusters, zero writes over data and over nothing, discards, the last
/// cluster, and (for small clusters) more than one L2 table.
fn scattered(c: u64, size: u64, pat: &Path) -> Vec<String> {
    let p = s(pat);
    let mut v = vec![
        format!("write -s {p} 4660 3000"),
        format!("write -P 0xab {} {}", 3 * c, c),
        format!("write -s {p} {} 200", 5 * c - 100),
        format!("write -z {} {}", 3 * c, c),
        format!("write -P 0xcd {} {}", 8 * c, 2 * c),
        format!("discard {} {}", 9 * c, c),
        format!("write -z {} {}", 12 * c, c),
        format!("write -s {p} {} 5000", size / 2 + 777),
        format!("write -P 0xee {} {}", size - c, c),
    ];
    if c <= 4 * KIB {
        v.push(format!("write -s {p} {} {}", size * 3 / 4 - c / 2, 3 * c));
        v.push(format!("write -P 0x5a {} 1", size * 5 / 8 + 3));
    }
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn qcow2(dir: &Path, name: &str, opts: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.push("-o");
        args.push(opts);
    }
    let sz = fmt_size(size);
    args.push(s(&path));
    args.push(&sz);
    qemu_img_in(dir, &args);
    path
}

fn qcow2_backed(dir: &Path, name: &str, opts: &str, backing: &str, bfmt: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let sz = fmt_size(size);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", backing, "-F", bfmt];
    if !opts.is_empty() {
        args.push("-o");
        args.push(opts);
    }
    args.push(s(&path));
    args.push(&sz);
    qemu_img_in(dir, &args);
    path
}

/// Build the image `kind` inside `dir`.
pub fn build(kind: &str, dir: &Path) -> TestImage {
    let pat = pattern_file(dir, 7, 128 * 1024);
    let kind: &'static str = ALL_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .unwrap_or_else(|| panic!("unknown image kind {kind}"));
    let simple = |fmt: &'static str, path: PathBuf, size: u64, cluster: u64, compressed: bool| TestImage {
        kind,
        chain: vec![path.clone()],
        path,
        fmt,
        compressed,
        size,
        cluster,
    };
    match kind {
        "qcow2-v3-c512" | "qcow2-v3-c4k" | "qcow2-v3-c64k" | "qcow2-v3-c2m" | "qcow2-v2-c512"
        | "qcow2-v2-c4k" | "qcow2-v2-c64k" | "qcow2-v2-c2m" => {
            let compat = if kind.contains("-v2-") { "0.10" } else { "1.1" };
            let c = match kind.rsplit('-').next().unwrap() {
                "c512" => 512,
                "c4k" => 4 * KIB,
                "c64k" => 64 * KIB,
                "c2m" => 2 * MIB,
                _ => unreachable!(),
            };
            let size = (8 * MIB).max(16 * c);
            let path = qcow2(dir, "img.qcow2", &format!("compat={compat},cluster_size={c}"), size);
            qemu_io("qcow2", &path, &refs(&scattered(c, size, &pat)));
            simple("qcow2", path, size, c, false)
        }
        "qcow2-v3-c64k-1g" => {
            let size = 1024 * MIB;
            let path = qcow2(dir, "big.qcow2", "cluster_size=65536", size);
            let p = s(&pat);
            qemu_io(
                "qcow2",
                &path,
                &[
                    &format!("write -s {p} 0 100000"),
                    // crosses the 512 MiB boundary covered by the first L2 table
                    &format!("write -P 0x42 {} {}", 512 * MIB - 64 * KIB, 128 * KIB),
                    &format!("write -z {} {}", 700 * MIB, 64 * KIB),
                    &format!("write -P 0x43 {} 4096", size - 4096),
                ],
            );
            simple("qcow2", path, size, 64 * KIB, false)
        }
        "qcow2-zlib" | "qcow2-zstd" | "qcow2-zlib-c4k" => {
            let (opts, c) = match kind {
                "qcow2-zlib" => ("compression_type=zlib".to_string(), 64 * KIB),
                "qcow2-zstd" => ("compression_type=zstd".to_string(), 64 * KIB),
                _ => ("compression_type=zlib,cluster_size=4096".to_string(), 4 * KIB),
            };
            let size = 4 * MIB;
            let path = qcow2(dir, "comp.qcow2", &opts, size);
            let p = s(&pat);
            qemu_io(
                "qcow2",
                &path,
                &[
                    &format!("write -c -s {p} 0 {c}"),
                    &format!("write -c -P 0x12 {} {}", 2 * c, 2 * c),
                    &format!("write -P 0x13 {} {}", 8 * c, c),
                    &format!("write -c -P 0x14 {} {}", 10 * c, c),
                    &format!("write -z {} {}", 12 * c, c),
                    &format!("write -c -s {p} {} {}", 14 * c, c),
                    &format!("write -c -P 0x15 {} {}", size - c, c),
                ],
            );
            simple("qcow2", path, size, c, true)
        }
        "qcow2-extl2-c64k" => {
            let size = 4 * MIB;
            let path = qcow2(dir, "el2.qcow2", "extended_l2=on,cluster_size=65536", size);
            let p = s(&pat);
            qemu_io(
                "qcow2",
                &path,
                &[
                    &format!("write -s {p} 0 2048"),
                    "write -P 0x22 8k 4k",
                    "write -z 16k 2k",
                    &format!("write -s {p} {} 5000", 64 * KIB + 3000),
                    "write -P 0x23 192k 64k",
                    "discard 194k 2k",
                    "write -z 256k 64k",
                    "write -P 0x24 1022k 4k",
                    &format!("write -P 0x25 {} 2k", size - 2 * KIB),
                ],
            );
            simple("qcow2", path, size, 64 * KIB, false)
        }
        "qcow2-extl2-c32k-backing" => {
            let size = 4 * MIB;
            let base = qcow2(dir, "el2base.qcow2", "cluster_size=65536", size);
            let p = s(&pat);
            qemu_io(
                "qcow2",
                &base,
                &[&format!("write -s {p} 0 100000"), "write -P 0x61 1M 256k"],
            );
            let top = qcow2_backed(
                dir,
                "el2top.qcow2",
                "extended_l2=on,cluster_size=32768",
                "el2base.qcow2",
                "qcow2",
                size,
            );
            qemu_io(
                "qcow2",
                &top,
                &[
                    "write -P 0x71 1k 1k",
                    "write -P 0x72 40k 3k",
                    "write -z 70k 2k",
                    "write -P 0x73 1100k 1",
                    "write -z 1200k 32k",
                    "write -P 0x74 3M 1k",
                ],
            );
            TestImage {
                kind,
                path: top.clone(),
                fmt: "qcow2",
                compressed: false,
                size,
                cluster: 32 * KIB,
                chain: vec![top, base],
            }
        }
        "qcow2-chain3" => {
            let p = s(&pat);
            let base = qcow2(dir, "base.qcow2", "cluster_size=65536", 4 * MIB);
            qemu_io(
                "qcow2",
                &base,
                &[
                    &format!("write -s {p} 0 128k"),
                    "write -P 0x11 1M 64k",
                    "write -P 0x12 3M 512k",
                ],
            );
            let mid = qcow2_backed(dir, "mid.qcow2", "cluster_size=4096", "base.qcow2", "qcow2", 6 * MIB);
            qemu_io(
                "qcow2",
                &mid,
                &[
                    "write -P 0x21 64k 4k",
                    "write -z 1M 8k",
                    &format!("write -s {p} {} 300", 4 * MIB + 100),
                    "discard 3M 64k",
                    "write -P 0x22 3200k 4k",
                ],
            );
            let top = qcow2_backed(dir, "top.qcow2", "cluster_size=65536", "mid.qcow2", "qcow2", 8 * MIB);
            qemu_io(
                "qcow2",
                &top,
                &[
                    "write -P 0x31 0 512",
                    &format!("write -s {p} 5M 64k"),
                    "write -z 3584k 64k",
                    "write -P 0x33 7172k 4k",
                    "write -z 1M 64k",
                ],
            );
            TestImage {
                kind,
                path: top.clone(),
                fmt: "qcow2",
                compressed: false,
                size: 8 * MIB,
                cluster: 64 * KIB,
                chain: vec![top, mid, base],
            }
        }
        "qcow2-raw-backing" => {
            let raw = dir.join("backing.raw");
            make_sparse_raw(&raw, 2 * MIB, &[(70000, 7), (20 * 64 * KIB, 2 * 64 * KIB), (2 * MIB - 512, 512)]);
            let top = qcow2_backed(dir, "over-raw.qcow2", "", "backing.raw", "raw", 4 * MIB);
            qemu_io(
                "qcow2",
                &top,
                &["write -P 5 1M 64k", "write -z 1280k 64k", "write -P 6 3M 512"],
            );
            TestImage {
                kind,
                path: top.clone(),
                fmt: "qcow2",
                compressed: false,
                size: 4 * MIB,
                cluster: 64 * KIB,
                chain: vec![top, raw],
            }
        }
        "qcow2-datafile-raw" | "qcow2-datafile" => {
            let raw_on = kind == "qcow2-datafile-raw";
            let path = qcow2(
                dir,
                "meta.qcow2",
                // absolute: qemu 10 opens a relative data_file relative to the
                // *working directory*, not to the image's directory
                &format!(
                    "data_file={},data_file_raw={}",
                    s(&dir.join("data.raw")),
                    if raw_on { "on" } else { "off" }
                ),
                4 * MIB,
            );
            let p = s(&pat);
            qemu_io(
                "qcow2",
                &path,
                &[
                    "write -P 7 64k 64k",
                    &format!("write -s {p} 2M 5000"),
                    "write -z 1M 64k",
                ],
            );
            simple("qcow2", path, 4 * MIB, 64 * KIB, false)
        }
        "vhd-dynamic" | "vhd-fixed" => {
            let sub = if kind == "vhd-dynamic" { "dynamic" } else { "fixed" };
            let path = dir.join(format!("{sub}.vhd"));
            qemu_img(&["create", "-q", "-f", "vpc", "-o", &format!("subformat={sub}"), s(&path), "8M"]);
            vhd_writes(&path, &pat);
            simple("vpc", path, 8 * MIB, if sub == "dynamic" { 2 * MIB } else { 0 }, false)
        }
        "vhd-dynamic-256m" => {
            let path = dir.join("big.vhd");
            qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&path), "256M"]);
            qemu_io(
                "vpc",
                &path,
                &["write -P 1 100M 4k", "write -P 2 0 512", "write -P 3 255M 64k", "write -P 4 50M 3M"],
            );
            simple("vpc", path, 256 * MIB, 2 * MIB, false)
        }
        "raw-sparse" => {
            let path = dir.join("sparse.raw");
            make_sparse_raw(
                &path,
                8 * MIB,
                &[(0, 4096), (70000, 3), (MIB, 64 * KIB), (3 * MIB + 4096, 8192), (8 * MIB - 100, 100)],
            );
            simple("raw", path, 8 * MIB, 0, false)
        }
        "raw-qemu" => {
            let path = dir.join("qemu.raw");
            qemu_img(&["create", "-q", "-f", "raw", s(&path), "4M"]);
            qemu_io("raw", &path, &["write -P 9 1M 4k", "write -P 10 3M 1k"]);
            simple("raw", path, 4 * MIB, 0, false)
        }
        "raw-empty" => {
            let path = dir.join("empty.img");
            std::fs::write(&path, b"").unwrap();
            simple("raw", path, 0, 0, false)
        }
        _ => unreachable!(),
    }
}

fn vhd_writes(path: &Path, pat: &Path) {
    let p = s(pat);
    qemu_io(
        "vpc",
        path,
        &[
            &format!("write -s {p} 3M 4k"),
            "write -P 0x32 64k 512",
            "write -z 6M 64k",
            &format!("write -s {p} {} 2000", 2 * MIB - 1000),
            "write -P 0x77 8M 2k",
        ],
    );
}

/// A sparse raw file of `size` bytes with pattern data at the given (offset, len) runs.
pub fn make_sparse_raw(path: &Path, size: u64, runs: &[(u64, u64)]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, &(off, len)) in runs.iter().enumerate() {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&super::pattern_bytes(100 + i as u64, len as usize)).unwrap();
    }
    f.sync_all().unwrap();
}

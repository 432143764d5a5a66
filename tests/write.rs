//! The write engine against qemu: random write sequences on every kind of image, each write
//! done by `vdiskview write --pattern` on copy A and by `qemu-io -c "write -P ..."` on copy
//! B; after every write `qemu-img check A` is clean (qcow2) and VHD footer copies stay
//! equal, and `qemu-img compare A B` says identical after each of the first writes, every
//! few writes and at the end; backing files and snapshots never change. Differencing VHDs
//! (qemu reads them without their parent) are compared with our own expected bytes instead.
//! Also: `write --file` changes exactly the bytes asked, refusals, stdin input.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::images::{build, TestImage};
use support::vhd::{DiffVhd, SECTOR};
use support::*;

// ---------------------------------------------------------------------------------------
// a tiny seeded PRNG and the write plans it draws

/// xorshift64*: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// A non-zero pattern byte (so a write is never mistaken for a hole).
    fn byte(&mut self) -> u8 {
        1 + self.below(255) as u8
    }
}

#[derive(Clone, Copy, Debug)]
struct W {
    off: u64,
    len: u64,
    byte: u8,
}

impl std::fmt::Display for W {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "write -P 0x{:02x} {} {}", self.byte, self.off, self.len)
    }
}

/// Guest ranges worth aiming at: every extent of `qemu-img map` (data, zero, compressed,
/// from a backing file at some depth, unallocated).
fn map_targets(path: &Path, fmt: &str) -> Vec<(u64, u64)> {
    let m = qemu_map_json(path, fmt);
    m.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect()
}

/// `n` writes over a disk of `size` bytes with allocation unit `unit` (cluster or block):
/// unaligned, tiny, cluster-crossing, whole clusters, at the very end, aimed at map
/// extents, and over earlier writes (in place).
fn plan(rng: &mut Rng, size: u64, unit: u64, targets: &[(u64, u64)], n: usize) -> Vec<W> {
    let unit = if unit == 0 { 64 * KIB } else { unit };
    let maxlen = (3 * unit).clamp(4 * KIB, 256 * KIB);
    let units = size.div_ceil(unit);
    let mut v: Vec<W> = Vec::new();
    while v.len() < n {
        let (off, len) = match rng.below(9) {
            0 => (rng.below(size), rng.range(1, maxlen)),
            1 => (rng.below(size), rng.range(1, 700)),
            2 if units > 1 => {
                // crossing a unit boundary, unaligned on both sides
                let k = rng.range(1, units - 1) * unit;
                let before = rng.range(1, unit.min(4 * KIB));
                (k - before, before + rng.range(1, unit.min(4 * KIB)))
            }
            3 => {
                let k = rng.below(units);
                (k * unit, unit * rng.range(1, 2))
            }
            4 => {
                let len = rng.range(1, maxlen.min(size));
                (size - len, len)
            }
            5 | 6 if !targets.is_empty() => {
                let (s, l) = targets[rng.below(targets.len() as u64) as usize];
                // the start of the extent, or anywhere in it
                let off = if rng.below(2) == 0 { s } else { s + rng.below(l) };
                (off, rng.range(1, maxlen))
            }
            7 if !v.is_empty() => {
                let w = v[rng.below(v.len() as u64) as usize];
                (w.off + rng.below(w.len), rng.range(1, w.len))
            }
            _ => (rng.below(size) / 512 * 512, 512 * rng.range(1, 16)),
        };
        let off = off.min(size - 1);
        let len = len.clamp(1, size - off);
        v.push(W { off, len, byte: rng.byte() });
    }
    v
}

fn apply(model: &mut [u8], w: &W) {
    model[w.off as usize..(w.off + w.len) as usize].fill(w.byte);
}

// ---------------------------------------------------------------------------------------
// running writes

/// Time spent in vdiskview writes and in qemu-io writes (one process per write: the
/// single-write qemu-io runs only), for the report.
#[derive(Default)]
struct Timing {
    ours: Duration,
    qemu: Duration,
    writes: u32,
    single: u32,
}

impl Timing {
    fn report(&self, what: &str) {
        if self.writes > 0 {
            eprintln!(
                "{what}: {} writes, vdiskview {:.1} ms/write, qemu-io {:.1} ms/write",
                self.writes,
                self.ours.as_secs_f64() * 1000.0 / self.writes as f64,
                self.qemu.as_secs_f64() * 1000.0 / self.single.max(1) as f64
            );
        }
    }
}

fn vdv_write(path: &Path, w: &W) -> Duration {
    let t = Instant::now();
    let out = vdiskview(&[
        "write",
        s(path),
        "--offset",
        &w.off.to_string(),
        "--pattern",
        &w.byte.to_string(),
        "--length",
        &w.len.to_string(),
    ]);
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "vdiskview {w} on {} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn qemu_write(fmt: &str, path: &Path, w: &W) -> Duration {
    let t = Instant::now();
    qemu_io(fmt, path, &[&w.to_string()]);
    t.elapsed()
}

/// `qemu-img check` must be clean: no corruption and no leak.
#[track_caller]
fn check_clean(path: &Path, context: &str) {
    let out = qemu_img_output(&["check", "-f", "qcow2", s(path)]);
    assert!(
        out.status.success(),
        "qemu-img check {} after {context}: exit {}\n{}{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img compare` says the guest disks are identical.
#[track_caller]
fn compare(fmt: &str, a: &Path, b: &Path, context: &str) {
    let out = qemu_img_output(&["compare", "-f", fmt, "-F", fmt, s(a), s(b)]);
    assert!(
        out.status.success(),
        "qemu-img compare {} {} after {context}: exit {}\n{}{}",
        a.display(),
        b.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn virtual_size(path: &Path, fmt: &str) -> u64 {
    qemu_info_json(path, fmt)["virtual-size"].as_u64().unwrap()
}

/// A dynamic or differencing VHD: the footer copy at offset 0 equals the footer at the
/// end, byte for byte.
#[track_caller]
fn footer_copies_equal(path: &Path, context: &str) {
    let f = read_file(path);
    assert!(f.len() >= 1024);
    assert_eq!(
        f[..512],
        f[f.len() - 512..],
        "{}: footer copy at 0 differs from the footer at the end after {context}",
        path.display()
    );
}

fn is_dynamic_vhd(path: &Path) -> bool {
    let f = read_file(path);
    f.len() >= 512 && &f[..8] == b"conectix"
}

/// Apply `writes` to A with vdiskview and to B with qemu-io. After each write A must pass
/// `qemu-img check` (qcow2) or keep equal footer copies (dynamic VHD); the guest disks are
/// compared after each of the first writes, then after every few (qemu-io takes those in
/// one run), and at the end.
fn run_sequence(a: &TestImage, b: &TestImage, writes: &[W], t: &mut Timing) {
    const SINGLE: usize = 4;
    const BATCH: usize = 5;
    let fmt = a.fmt;
    let dynamic_vhd = fmt == "vpc" && is_dynamic_vhd(&a.path);
    let mut i = 0;
    while i < writes.len() {
        let n = if i < SINGLE { 1 } else { BATCH.min(writes.len() - i) };
        let batch = &writes[i..i + n];
        let context = |j: usize| {
            let done: Vec<String> = writes[..=j].iter().map(|w| w.to_string()).collect();
            format!("write #{j} ({}) of {}; writes so far:\n  {}", writes[j], a.kind, done.join("\n  "))
        };
        for (j, w) in batch.iter().enumerate() {
            t.ours += vdv_write(&a.path, w);
            if fmt == "qcow2" {
                check_clean(&a.path, &context(i + j));
            }
            if dynamic_vhd {
                footer_copies_equal(&a.path, &context(i + j));
            }
        }
        let cmds: Vec<String> = batch.iter().map(|w| w.to_string()).collect();
        let start = Instant::now();
        qemu_io(fmt, &b.path, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
        if n == 1 {
            t.qemu += start.elapsed();
            t.single += 1;
        }
        t.writes += n as u32;
        compare(fmt, &a.path, &b.path, &context(i + n - 1));
        i += n;
    }
}

/// Build `kind` twice, run `n` random writes (seed) against qemu-io, then compare the whole
/// guest disk as vdiskview reads it, and check the backing files did not change.
fn random_vs_qemu(kind: &str, seed: u64, n: usize) {
    let da = workspace();
    let db = workspace();
    let a = build(kind, da.path());
    let b = build(kind, db.path());
    let size = virtual_size(&a.path, a.fmt);
    let backing_before: Vec<Vec<u8>> = a.chain[1..].iter().map(|p| read_file(p)).collect();
    let mut rng = Rng::new(seed);
    let targets = map_targets(&a.path, a.fmt);
    let writes = plan(&mut rng, size, a.cluster, &targets, n);
    let mut t = Timing::default();
    run_sequence(&a, &b, &writes, &mut t);
    t.report(kind);
    for (p, before) in a.chain[1..].iter().zip(&backing_before) {
        assert!(read_file(p) == *before, "{kind}: backing file {} changed", p.display());
    }
    if size <= 64 * MIB {
        let ours = vdiskview_ok(&["read", s(&a.path)]);
        let theirs = qemu_convert_raw(&b.path, b.fmt);
        assert_bytes_eq(&ours, &theirs, &format!("{kind}: vdiskview read of A vs qemu's B"));
    }
    if a.fmt == "qcow2" {
        // qemu can go on writing what we wrote
        let w = W { off: size / 3, len: 3 * a.cluster + 5, byte: 0xa5 };
        let w = W { len: w.len.min(size - w.off), ..w };
        qemu_write("qcow2", &a.path, &w);
        qemu_write("qcow2", &b.path, &w);
        check_clean(&a.path, "qemu-io's write after ours");
        compare(a.fmt, &a.path, &b.path, "qemu-io's write after ours");
    }
}

macro_rules! random_tests {
    ($($name:ident: $kind:expr, $seed:expr, $n:expr;)*) => {
        $( #[test] fn $name() { random_vs_qemu($kind, $seed, $n); } )*
    };
}

random_tests! {
    random_qcow2_v3_c512: "qcow2-v3-c512", 1, 30;
    random_qcow2_v3_c4k: "qcow2-v3-c4k", 2, 20;
    random_qcow2_v3_c64k: "qcow2-v3-c64k", 3, 25;
    random_qcow2_v3_c2m: "qcow2-v3-c2m", 4, 15;
    random_qcow2_v2_c512: "qcow2-v2-c512", 5, 30;
    random_qcow2_v2_c4k: "qcow2-v2-c4k", 6, 20;
    random_qcow2_v2_c64k: "qcow2-v2-c64k", 7, 20;
    random_qcow2_v2_c2m: "qcow2-v2-c2m", 8, 15;
    random_qcow2_1g: "qcow2-v3-c64k-1g", 9, 20;
    random_qcow2_zlib: "qcow2-zlib", 10, 30;
    random_qcow2_zstd: "qcow2-zstd", 11, 25;
    random_qcow2_zlib_c4k: "qcow2-zlib-c4k", 12, 35;
    random_qcow2_extl2: "qcow2-extl2-c64k", 13, 40;
    random_qcow2_extl2_backing: "qcow2-extl2-c32k-backing", 14, 40;
    random_qcow2_chain3: "qcow2-chain3", 15, 40;
    random_qcow2_raw_backing: "qcow2-raw-backing", 16, 30;
    random_qcow2_datafile: "qcow2-datafile", 17, 25;
    random_qcow2_datafile_raw: "qcow2-datafile-raw", 18, 25;
    random_vhd_dynamic: "vhd-dynamic", 19, 35;
    random_vhd_fixed: "vhd-fixed", 20, 20;
    random_raw_sparse: "raw-sparse", 21, 20;
    random_raw_qemu: "raw-qemu", 22, 20;
}

// ---------------------------------------------------------------------------------------
// more image shapes than the shared catalogue has

fn qcow2_create(dir: &Path, name: &str, opts: &str, size: &str, backing: Option<(&str, &str)>) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some((b, f)) = backing {
        args.extend(["-b", b, "-F", f]);
    }
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.push(s(&path));
    args.push(size);
    qemu_img_in(dir, &args);
    path
}

/// Build one of the shapes below in `dir` (deterministically: A and B are built alike).
fn custom(kind: &'static str, dir: &Path) -> TestImage {
    let pat = pattern_file(dir, 5, 128 * 1024);
    let p = s(&pat);
    let img = |path: PathBuf, fmt: &'static str, cluster: u64, chain: Vec<PathBuf>| TestImage {
        kind,
        size: virtual_size(&path, fmt),
        path,
        fmt,
        compressed: false,
        cluster,
        chain,
    };
    let common = |path: &Path, c: u64| {
        qemu_io(
            "qcow2",
            path,
            &[
                &format!("write -s {p} 1000 9000"),
                &format!("write -P 0x31 {} {}", 5 * c, 3 * c),
                &format!("write -z {} {}", 6 * c, c),
                &format!("discard {} {}", 7 * c, c),
                "write -P 0x32 2M 100k",
            ],
        )
    };
    match kind {
        // every refcount width, sub-byte ones included
        "rc1" | "rc2" | "rc4" | "rc8" | "rc32" | "rc64" => {
            let bits = &kind[2..];
            let path = qcow2_create(dir, "rc.qcow2", &format!("cluster_size=4096,refcount_bits={bits}"), "4M", None);
            common(&path, 4096);
            img(path.clone(), "qcow2", 4096, vec![path])
        }
        // a virtual size that ends inside a cluster
        "odd-size" => {
            let path = qcow2_create(dir, "odd.qcow2", "", "5000000", None);
            common(&path, 65536);
            qemu_io("qcow2", &path, &["write -P 0x33 4999000 1000"]);
            img(path.clone(), "qcow2", 65536, vec![path])
        }
        // extended L2 with compressed clusters, zero and unallocated subclusters, over a
        // backing file
        "extl2-compressed-backing" => {
            let base = qcow2_create(dir, "base.qcow2", "cluster_size=65536", "4M", None);
            qemu_io("qcow2", &base, &[&format!("write -s {p} 0 128k"), "write -P 0x41 1M 512k"]);
            let top = qcow2_create(dir, "top.qcow2", "extended_l2=on,cluster_size=65536", "4M", Some(("base.qcow2", "qcow2")));
            qemu_io(
                "qcow2",
                &top,
                &[
                    "write -c -P 0x51 64k 64k",
                    "write -c -P 0x52 1M 128k",
                    "write -P 0x53 1100k 3k",
                    "write -z 1200k 4k",
                    "write -P 0x54 2M 64k",
                    "discard 2052k 4k",
                    "write -z 3M 64k",
                ],
            );
            img(top.clone(), "qcow2", 65536, vec![top, base])
        }
        // extended L2 at both ends: 512-byte subclusters (16 KiB clusters) and 64 KiB ones
        // (2 MiB clusters), over a backing file with data everywhere
        "extl2-c16k" | "extl2-c2m" => {
            let c = if kind == "extl2-c16k" { 16 * KIB } else { 2 * MIB };
            let base = qcow2_create(dir, "base.qcow2", "", "8M", None);
            qemu_io("qcow2", &base, &[&format!("write -s {p} 0 128k"), "write -P 0x45 128k 8064k"]);
            let top = qcow2_create(dir, "top.qcow2", &format!("extended_l2=on,cluster_size={c}"), "8M", Some(("base.qcow2", "qcow2")));
            qemu_io(
                "qcow2",
                &top,
                &[
                    "write -P 0x55 1000 700",
                    "write -z 20k 1k",
                    &format!("write -P 0x56 {} 70k", 2 * c - 3000),
                    "write -z 4M 96k",
                    "discard 4M 32k",
                    &format!("write -c -P 0x57 {} {}", if c < MIB { 8 * c } else { 3 * c }, c),
                ],
            );
            img(top.clone(), "qcow2", c, vec![top, base])
        }
        "extl2-datafile" => {
            let df = dir.join("data.raw");
            let path = qcow2_create(dir, "meta.qcow2", &format!("extended_l2=on,data_file={}", s(&df)), "4M", None);
            qemu_io("qcow2", &path, &["write -P 7 64k 70k", "write -z 1M 10k", "write -P 8 3M 2k"]);
            img(path.clone(), "qcow2", 65536, vec![path])
        }
        // a v2 image with 512-byte clusters over a v3 base
        "v2-c512-over-v3" => {
            let base = qcow2_create(dir, "base.qcow2", "cluster_size=65536", "4M", None);
            qemu_io("qcow2", &base, &[&format!("write -s {p} 0 100k"), "write -P 0x61 3M 1M"]);
            let top = qcow2_create(dir, "top.qcow2", "compat=0.10,cluster_size=512", "4M", Some(("base.qcow2", "qcow2")));
            qemu_io("qcow2", &top, &["write -P 0x62 1000 3000", "write -P 0x63 3500k 10k"]);
            img(top.clone(), "qcow2", 512, vec![top, base])
        }
        // a qcow2 over a dynamic VHD, smaller than the top
        "over-vpc" => {
            let base = dir.join("base.vhd");
            qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&base), "2M"]);
            qemu_io("vpc", &base, &[&format!("write -s {p} 0 128k"), "write -P 0x71 1M 300k"]);
            let top = qcow2_create(dir, "top.qcow2", "cluster_size=65536", "4M", Some(("base.vhd", "vpc")));
            qemu_io("qcow2", &top, &["write -P 0x72 64k 1000"]);
            img(top.clone(), "qcow2", 65536, vec![top, base])
        }
        "prealloc-metadata" | "prealloc-falloc" | "lazy-refcounts" => {
            let opts = match kind {
                "prealloc-metadata" => "preallocation=metadata",
                "prealloc-falloc" => "preallocation=falloc,cluster_size=4096",
                _ => "lazy_refcounts=on",
            };
            let path = qcow2_create(dir, "pre.qcow2", opts, "4M", None);
            common(&path, 65536);
            img(path.clone(), "qcow2", 65536, vec![path])
        }
        // a VHD whose last block ends inside the disk's last 2 MiB
        "vhd-odd" => {
            let path = dir.join("odd.vhd");
            qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", s(&path), "4999680"]);
            qemu_io("vpc", &path, &["write -P 1 0 5000", "write -P 2 4999000 680"]);
            img(path.clone(), "vpc", 2 * MIB, vec![path])
        }
        "vhd-256m" => {
            let path = dir.join("big.vhd");
            qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&path), "256M"]);
            qemu_io("vpc", &path, &["write -P 1 100M 4k", "write -P 3 255M 64k"]);
            img(path.clone(), "vpc", 2 * MIB, vec![path])
        }
        _ => panic!("unknown custom image {kind}"),
    }
}

fn random_custom(kind: &'static str, seed: u64, n: usize) {
    let da = workspace();
    let db = workspace();
    let a = custom(kind, da.path());
    let b = custom(kind, db.path());
    let backing_before: Vec<Vec<u8>> = a.chain[1..].iter().map(|p| read_file(p)).collect();
    let mut rng = Rng::new(seed);
    let targets = map_targets(&a.path, a.fmt);
    let writes = plan(&mut rng, a.size, a.cluster, &targets, n);
    let mut t = Timing::default();
    run_sequence(&a, &b, &writes, &mut t);
    t.report(kind);
    for (p, before) in a.chain[1..].iter().zip(&backing_before) {
        assert!(read_file(p) == *before, "{kind}: backing file {} changed", p.display());
    }
    if a.size <= 64 * MIB {
        let ours = vdiskview_ok(&["read", s(&a.path)]);
        assert_bytes_eq(&ours, &qemu_convert_raw(&b.path, b.fmt), &format!("{kind}: vdiskview read of A vs qemu's B"));
    }
}

macro_rules! custom_tests {
    ($($name:ident: $kind:expr, $seed:expr, $n:expr;)*) => {
        $( #[test] fn $name() { random_custom($kind, $seed, $n); } )*
    };
}

custom_tests! {
    random_refcount_bits_1: "rc1", 51, 20;
    random_refcount_bits_2: "rc2", 52, 20;
    random_refcount_bits_4: "rc4", 53, 20;
    random_refcount_bits_8: "rc8", 54, 20;
    random_refcount_bits_32: "rc32", 55, 20;
    random_refcount_bits_64: "rc64", 56, 20;
    random_odd_size: "odd-size", 57, 25;
    random_extl2_compressed_backing: "extl2-compressed-backing", 58, 35;
    random_extl2_datafile: "extl2-datafile", 59, 25;
    random_extl2_c16k: "extl2-c16k", 67, 30;
    random_extl2_c2m: "extl2-c2m", 68, 15;
    random_v2_c512_over_v3: "v2-c512-over-v3", 60, 25;
    random_over_vpc: "over-vpc", 61, 25;
    random_prealloc_metadata: "prealloc-metadata", 62, 20;
    random_prealloc_falloc: "prealloc-falloc", 63, 20;
    random_lazy_refcounts: "lazy-refcounts", 64, 20;
    random_vhd_odd_size: "vhd-odd", 65, 25;
    random_vhd_256m: "vhd-256m", 66, 12;
}

/// The refcount table fills up (512-byte clusters, 64-bit refcounts: one table cluster
/// covers 2 MiB of file) and must move: qemu-io fills both copies to just below what the
/// table covers (vdiskview's per-cluster flushes make big fills slow), then our writes
/// cross it, against qemu-io's, clean after each.
#[test]
fn refcount_table_growth() {
    let da = workspace();
    let db = workspace();
    let mk = |dir: &Path| {
        let path = qcow2_create(dir, "grow.qcow2", "cluster_size=512,refcount_bits=64", "6M", None);
        TestImage { kind: "grow", size: 6 * MIB, path: path.clone(), fmt: "qcow2", compressed: false, cluster: 512, chain: vec![path] }
    };
    let (a, b) = (mk(da.path()), mk(db.path()));
    let header = |p: &Path| {
        let h = read_file(p);
        (be64(&h, 48), be32(&h, 56))
    };
    let cs = 512u64;
    let covered = |p: &Path| header(p).1 as u64 * (cs / 8) * (cs * 8 / 64) * cs;
    let mut filled = 0u64;
    loop {
        let left = covered(&a.path) - std::fs::metadata(&a.path).unwrap().len();
        if left <= 24 * cs {
            break;
        }
        let chunk = (left / 2).next_multiple_of(cs);
        let cmd = format!("write -P 0x5a {filled} {chunk}");
        qemu_io("qcow2", &a.path, &[&cmd]);
        qemu_io("qcow2", &b.path, &[&cmd]);
        filled += chunk;
    }
    check_clean(&a.path, "qemu's fill");
    let before = header(&a.path);
    let mut rng = Rng::new(70);
    let mut writes = Vec::new();
    let mut off = filled;
    while writes.len() < 16 {
        let len = rng.range(1, 8 * KIB);
        writes.push(W { off: off + rng.below(3000), len, byte: rng.byte() });
        off += len + 3000 + rng.below(16 * KIB);
    }
    // and over what qemu wrote
    writes.extend(plan(&mut rng, filled, cs, &[], 6));
    let mut t = Timing::default();
    run_sequence(&a, &b, &writes, &mut t);
    t.report("refcount table growth");
    assert_ne!(header(&a.path), before, "the refcount table should have moved");
}

/// A second seed on the images with the most kinds of cluster, for more paths per run.
#[test]
fn random_more_seeds() {
    random_vs_qemu("qcow2-zlib-c4k", 101, 20);
    random_vs_qemu("qcow2-extl2-c64k", 102, 20);
}

// ---------------------------------------------------------------------------------------
// snapshots

/// The guest disk of snapshot `name`.
fn snapshot_content(path: &Path, name: &str) -> Vec<u8> {
    let dir = workspace();
    let out = dir.path().join("snap.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", "-l", &format!("snapshot.name={name}"), s(path), s(&out)]);
    read_file(&out)
}

/// Writes into clusters and L2 tables shared with internal snapshots copy them; the
/// snapshots keep their content; qemu can take a snapshot of what we wrote.
fn snapshots_vs_qemu(kind: &str, seed: u64) {
    let da = workspace();
    let db = workspace();
    let a = build(kind, da.path());
    let b = build(kind, db.path());
    for img in [&a, &b] {
        qemu_img(&["snapshot", "-c", "s1", s(&img.path)]);
    }
    let s1 = snapshot_content(&a.path, "s1");
    let size = virtual_size(&a.path, "qcow2");
    let mut rng = Rng::new(seed);
    let targets = map_targets(&a.path, "qcow2");
    let mut t = Timing::default();
    let first = plan(&mut rng, size, a.cluster, &targets, 15);
    run_sequence(&a, &b, &first, &mut t);
    assert_bytes_eq(&snapshot_content(&a.path, "s1"), &s1, &format!("{kind}: snapshot s1 after our writes"));
    // a second snapshot over our writes, by qemu, then more writes
    for img in [&a, &b] {
        qemu_img(&["snapshot", "-c", "s2", s(&img.path)]);
    }
    check_clean(&a.path, "qemu-img snapshot -c s2");
    let s2 = snapshot_content(&a.path, "s2");
    assert_bytes_eq(&s2, &snapshot_content(&b.path, "s2"), &format!("{kind}: snapshot s2, ours vs qemu's"));
    let second = plan(&mut rng, size, a.cluster, &targets, 15);
    run_sequence(&a, &b, &second, &mut t);
    t.report(&format!("{kind} with snapshots"));
    assert_bytes_eq(&snapshot_content(&a.path, "s1"), &s1, &format!("{kind}: snapshot s1 at the end"));
    assert_bytes_eq(&snapshot_content(&a.path, "s2"), &s2, &format!("{kind}: snapshot s2 at the end"));
    // deleting a snapshot drops its references: a refcount we got wrong shows up here
    let active = qemu_convert_raw(&a.path, "qcow2");
    qemu_img(&["snapshot", "-d", "s2", s(&a.path)]);
    check_clean(&a.path, "qemu-img snapshot -d s2");
    assert_bytes_eq(&qemu_convert_raw(&a.path, "qcow2"), &active, &format!("{kind}: active disk after deleting s2"));
    // more of our writes on what qemu left, then revert to s1: s1 back, a clean image
    let third = plan(&mut rng, size, a.cluster, &targets, 5);
    run_sequence(&a, &b, &third, &mut t);
    qemu_img(&["snapshot", "-a", "s1", s(&a.path)]);
    check_clean(&a.path, "qemu-img snapshot -a s1");
    assert_bytes_eq(&qemu_convert_raw(&a.path, "qcow2"), &s1, &format!("{kind}: reverted to s1"));
    qemu_img(&["snapshot", "-d", "s1", s(&a.path)]);
    check_clean(&a.path, "qemu-img snapshot -d s1");
}

#[test]
fn snapshots_c64k() {
    snapshots_vs_qemu("qcow2-v3-c64k", 31);
}

#[test]
fn snapshots_v2_c512() {
    snapshots_vs_qemu("qcow2-v2-c512", 32);
}

#[test]
fn snapshots_compressed() {
    snapshots_vs_qemu("qcow2-zstd", 33);
}

#[test]
fn snapshots_extended_l2() {
    snapshots_vs_qemu("qcow2-extl2-c64k", 34);
}

// ---------------------------------------------------------------------------------------
// differencing VHDs: the child changes, the parents never

const MB2: u32 = 2 * 1024 * 1024;

fn dynamic_parent(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&path), "8M"]);
    let pat = pattern_file(dir, 11, 128 * 1024);
    let p = s(&pat);
    qemu_io("vpc", &path, &[&format!("write -s {p} 0 100000"), "write -P 0x44 2M 64k", &format!("write -s {p} 7M 4k")]);
    path
}

fn fixed_parent(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&path), "8M"]);
    qemu_io("vpc", &path, &["write -P 0x55 5M 1M", "write -P 0x56 4096 65536"]);
    path
}

/// Partial bitmaps: runs of sectors, a run crossing blocks, the last sector, hidden data
/// (in the file, bit clear: the parent shows).
fn scribble(d: &mut DiffVhd, seed: u64) {
    let spb = d.sectors_per_block();
    let sec = |k: u64, n: usize| pattern_bytes(seed + k, n * SECTOR);
    d.write_sectors(3, &sec(0, 5));
    d.write_sectors(100, &sec(1, 1));
    d.write_hidden(101, &sec(9, 2));
    d.write_sectors(spb - 2, &sec(2, 4));
    d.write_sectors(spb + 300, &sec(3, 17));
    let last = d.size / SECTOR as u64 - 1;
    d.write_sectors(last, &sec(5, 1));
}

/// Random writes on the top of a differencing chain; after each, the guest disk is the
/// expected bytes, the footer copies agree, and no parent file changed by a byte.
fn diff_sequence(top: &DiffVhd, parents: &[PathBuf], seed: u64, n: usize) {
    let path = top.path.clone().unwrap();
    let parent_bytes: Vec<Vec<u8>> = parents.iter().map(|p| read_file(p)).collect();
    let mut model = top.expected_bytes();
    assert_bytes_eq(&vdiskview_ok(&["read", s(&path)]), &model, "differencing VHD before any write");
    let size = model.len() as u64;
    let mut rng = Rng::new(seed);
    // aim at sectors in the child, hidden ones, and the parent's data
    let targets = vec![(3 * 512, 5 * 512), (100 * 512, 3 * 512), (2 * MIB - 1024, 2048), (0, 100000), (2 * MIB, 64 * KIB), (7 * MIB, 4096)];
    let writes = plan(&mut rng, size, top.block_size as u64, &targets, n);
    let mut t = Timing::default();
    for (i, w) in writes.iter().enumerate() {
        let context = format!("write #{i} ({w}); writes: {:?}", &writes[..=i]);
        t.ours += vdv_write(&path, w);
        t.writes += 1;
        apply(&mut model, w);
        footer_copies_equal(&path, &context);
        let got = vdiskview_ok(&["read", s(&path), "--offset", &w.off.saturating_sub(4096).to_string(), "--length", &(w.len + 8192).min(size - w.off.saturating_sub(4096)).to_string()]);
        let lo = w.off.saturating_sub(4096) as usize;
        assert_bytes_eq(&got, &model[lo..lo + got.len()], &format!("around {context}"));
    }
    t.report("differencing VHD");
    assert_bytes_eq(&vdiskview_ok(&["read", s(&path)]), &model, "differencing VHD after all writes");
    for (p, before) in parents.iter().zip(&parent_bytes) {
        assert!(read_file(p) == *before, "parent {} changed", p.display());
    }
    // the child is still a VHD qemu opens (it reads it without the parent)
    qemu_convert_raw(&path, "vpc");
}

#[test]
fn diff_vhd_over_dynamic() {
    let dir = workspace();
    let parent = dynamic_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, MB2);
    scribble(&mut d, 1);
    d.write(&dir.path().join("child.vhd"));
    diff_sequence(&d, &[parent], 41, 30);
}

#[test]
fn diff_vhd_over_fixed_small_blocks() {
    let dir = workspace();
    let parent = fixed_parent(dir.path(), "parent.vhd");
    let mut d = DiffVhd::new(&parent, 64 * 1024);
    scribble(&mut d, 2);
    d.write(&dir.path().join("child.vhd"));
    diff_sequence(&d, &[parent], 42, 30);
}

#[test]
fn diff_vhd_chain_three_deep() {
    let dir = workspace();
    let base = dynamic_parent(dir.path(), "base.vhd");
    let mut d1 = DiffVhd::new(&base, MB2);
    scribble(&mut d1, 10);
    d1.write(&dir.path().join("d1.vhd"));
    let mut d2 = DiffVhd::child_of(&d1, 512 * 1024);
    scribble(&mut d2, 20);
    d2.write_sectors(5000, &pattern_bytes(3, 7 * SECTOR));
    d2.write(&dir.path().join("d2.vhd"));
    let parents = vec![d1.path.clone().unwrap(), base];
    diff_sequence(&d2, &parents, 43, 30);
}

// ---------------------------------------------------------------------------------------
// write --file, refusals

/// `write --file` changes exactly the bytes asked; the rest of the file is byte-identical.
#[test]
fn write_file_changes_exactly_those_bytes() {
    let dir = workspace();
    for kind in ["qcow2-v3-c64k", "vhd-dynamic", "vhd-fixed", "raw-qemu"] {
        let img = build(kind, &subdir(dir.path(), kind));
        let before = read_file(&img.path);
        // a host offset holding guest data (so the image still parses), unaligned
        let m = vdiskview_json(&["map", "--output", "json", s(&img.path)]);
        let data = m.as_array().unwrap().iter().find(|e| e["data"] == true && e.get("offset").is_some()).unwrap().clone();
        let host = data["offset"].as_u64().unwrap() + 3;
        let len = 1000u64.min(data["length"].as_u64().unwrap() - 3);
        let out = vdiskview(&["write", s(&img.path), "--file", "--offset", &host.to_string(), "--pattern", "0xc3", "--length", &len.to_string()]);
        assert!(out.status.success(), "{kind}: write --file: {}", String::from_utf8_lossy(&out.stderr));
        let after = read_file(&img.path);
        assert_eq!(after.len(), before.len(), "{kind}: write --file changed the file length");
        let mut expected = before.clone();
        expected[host as usize..(host + len) as usize].fill(0xc3);
        assert_bytes_eq(&after, &expected, &format!("{kind}: whole file after write --file"));
        // from stdin-less --input too
        let input = dir.path().join(format!("{kind}.in"));
        std::fs::write(&input, b"hello").unwrap();
        vdiskview_ok(&["write", s(&img.path), "--file", "--offset", &host.to_string(), "--input", s(&input)]);
        expected[host as usize..host as usize + 5].copy_from_slice(b"hello");
        assert_bytes_eq(&read_file(&img.path), &expected, &format!("{kind}: whole file after write --file --input"));
        // past the end of the file: refused, nothing written
        let flen = after.len() as u64;
        let out = vdiskview(&["write", s(&img.path), "--file", "--offset", &(flen - 2).to_string(), "--pattern", "1", "--length", "4"]);
        assert_clean_error(&out, &format!("{kind}: write --file past the end"));
        assert_bytes_eq(&read_file(&img.path), &expected, &format!("{kind}: refused write --file"));
    }
}

fn subdir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes past the end of the disk, on read-only files and on images a write would damage
/// (an enabled persistent bitmap, a dirty or corrupt flag) are refused; the file is left
/// untouched.
#[test]
fn refusals_leave_the_image_untouched() {
    let dir = workspace();
    let img = build("qcow2-v3-c64k", dir.path());
    let size = virtual_size(&img.path, "qcow2");
    let before = read_file(&img.path);
    let refuse = |args: &[&str], what: &str, path: &Path, before: &[u8]| {
        let out = vdiskview(args);
        // opening may warn first (a dirty image): the refusal is the last line
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: exit code; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("vdiskview: ") && !last.contains("warning"), "{what}: {stderr}");
        assert!(read_file(path) == before, "{what}: the file changed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let p = s(&img.path);
    refuse(&["write", p, "--offset", &(size - 1).to_string(), "--pattern", "1", "--length", "2"], "past the end", &img.path, &before);
    refuse(&["write", p, "--offset", &size.to_string(), "--pattern", "1", "--length", "1"], "at the end", &img.path, &before);
    refuse(&["write", p, "--offset", "0", "--pattern", "256", "--length", "1"], "pattern not a byte", &img.path, &before);
    // a zero-length write changes nothing and succeeds
    vdiskview_ok(&["write", p, "--offset", "0", "--pattern", "1", "--length", "0"]);
    assert!(read_file(&img.path) == before, "a zero-length write changed the file");

    // an enabled persistent dirty bitmap would go stale
    let bm = dir.path().join("bitmap.qcow2");
    std::fs::copy(&img.path, &bm).unwrap();
    qemu_img(&["bitmap", "--add", s(&bm), "dirty0"]);
    let bm_before = read_file(&bm);
    let msg = refuse(&["write", s(&bm), "--offset", "0", "--pattern", "1", "--length", "1"], "enabled bitmap", &bm, &bm_before);
    assert!(msg.contains("bitmap"), "{msg}");
    // once disabled, writes go through and qemu-img check stays clean
    qemu_img(&["bitmap", "--disable", s(&bm), "dirty0"]);
    vdiskview_ok(&["write", s(&bm), "--offset", "100", "--pattern", "1", "--length", "70000"]);
    check_clean(&bm, "a write on an image with a disabled bitmap");

    // dirty and corrupt flags (incompatible features bits 0 and 1, at 72..80)
    for (bit, what) in [(1u8, "dirty"), (2u8, "corrupt")] {
        let f = dir.path().join(format!("{what}.qcow2"));
        std::fs::copy(&img.path, &f).unwrap();
        patch_file(&f, 79, &[bit]);
        let fb = read_file(&f);
        let msg = refuse(&["write", s(&f), "--offset", "0", "--pattern", "1", "--length", "1"], what, &f, &fb);
        assert!(msg.contains(what), "{msg}");
    }

    // a damaged L2 entry pointing far past the end of the file: not written through (the
    // file would grow to wherever it points)
    let far = dir.path().join("far.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&far), "4M"]);
    qemu_io("qcow2", &far, &["write -P 1 0 64k"]);
    let fb = read_file(&far);
    let l1 = be64(&fb, 40) as usize;
    let l2 = (be64(&fb, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    patch_file(&far, l2 as u64, &(0x8000_0000_1000_0000u64).to_be_bytes());
    let fb = read_file(&far);
    let msg = refuse(&["write", s(&far), "--offset", "100", "--pattern", "1", "--length", "10"], "L2 entry past the end", &far, &fb);
    assert!(msg.contains("past the end"), "{msg}");

    // a read-only file
    let ro = dir.path().join("ro.qcow2");
    std::fs::copy(&img.path, &ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm).unwrap();
    if Command::new("id").arg("-u").output().map(|o| o.stdout != b"0\n").unwrap_or(true) {
        refuse(&["write", s(&ro), "--offset", "0", "--pattern", "1", "--length", "1"], "read-only file", &ro, &before);
    }
}

/// `--input -` takes the bytes from stdin; `--length` cuts them.
#[test]
fn write_from_stdin_and_file() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = workspace();
    let a = build("qcow2-v3-c4k", &subdir(dir.path(), "a"));
    let b = build("qcow2-v3-c4k", &subdir(dir.path(), "b"));
    let data = pattern_bytes(99, 20000);
    let mut child = Command::new(vdiskview_bin())
        .args(["write", s(&a.path), "--offset", "12345", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pf = dir.path().join("in.bin");
    std::fs::write(&pf, &data).unwrap();
    vdiskview_ok(&["write", s(&a.path), "--offset", "3M+7", "--input", s(&pf), "--length", "5000"]);
    qemu_io("qcow2", &b.path, &[&format!("write -s {} 12345 20000", s(&pf)), &format!("write -s {} {} 5000", s(&pf), 3 * MIB + 7)]);
    check_clean(&a.path, "writes from stdin and a file");
    compare("qcow2", &a.path, &b.path, "writes from stdin and a file");
}

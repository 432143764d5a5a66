//! VMDK against qemu: every subformat qemu makes, written with qemu-io or converted from real
//! content; `map` (JSON and human), `read`, `info` keys and `check` exit codes must equal
//! qemu's. Damaged files never panic.
mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

const SIZE: &str = "64M";

/// Scattered writes: partial grains, whole grains, a run across a grain table boundary.
const WRITES: &[&str] = &[
    "write -P 0x5a 100k 200k",
    "write -P 0x11 10M 64k",
    "write -P 0x22 32704k 256k",
    "write -P 0x33 63M 1M",
    "write -P 0x44 5000 3000",
];

fn qemu_io_quiet(path: &Path, cmds: &[&str]) {
    let mut args: Vec<String> = vec!["-f".into(), "vmdk".into()];
    for c in cmds {
        args.push("-c".into());
        args.push(c.to_string());
    }
    args.push(s(path).into());
    let out = run_with_timeout(std::process::Command::new("qemu-io").args(&args), DEFAULT_TIMEOUT);
    assert!(out.status.success(), "qemu-io failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("failed"), "qemu-io: {stdout}");
}

fn create(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let p = dir.join(name);
    qemu_img_in(dir, &["create", "-q", "-f", "vmdk", "-o", opts, name, SIZE]);
    p
}

/// map (JSON and human), read and info against qemu.
fn compare_all(path: &Path) {
    let p = s(path);
    let expected = qemu_map_json(path, "vmdk");
    let actual = vdiskview_json(&["map", "--output", "json", p]);
    assert_json_eq(&actual, &expected, &format!("map --output json {p}"));

    let q = qemu_map_human(path, "vmdk");
    let v = vdiskview(&["map", p]);
    if q.status.success() {
        assert!(v.status.success(), "vdiskview map {p}: {}", String::from_utf8_lossy(&v.stderr));
        assert_eq!(String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&q.stdout), "map {p} (human)");
    } else {
        assert_clean_error(&v, &format!("map {p} (human, compressed)"));
    }

    let raw = qemu_convert_raw(path, "vmdk");
    let ours = vdiskview_ok(&["read", p]);
    assert_bytes_eq(&ours, &raw, &format!("read {p}"));

    let qi = qemu_info_json(path, "vmdk");
    let vi = vdiskview_json(&["info", "--output", "json", p]);
    for key in [
        "virtual-size",
        "format",
        "cluster-size",
        "actual-size",
        "dirty-flag",
        "backing-filename",
        "backing-filename-format",
        "full-backing-filename",
        "format-specific",
    ] {
        assert_eq!(vi.get(key), qi.get(key), "info {p}: key {key}\nvdiskview:\n{}\nqemu:\n{}", pretty(&vi), pretty(&qi));
    }
}

fn check_exit(path: &Path) {
    let q = qemu_img_output(&["check", "-f", "vmdk", s(path)]);
    let v = vdiskview(&["check", s(path)]);
    assert_eq!(v.status.code(), q.status.code(), "check {}: {}", path.display(), String::from_utf8_lossy(&v.stdout));
}

fn subformat(sub: &str, write: bool) {
    let dir = workspace();
    let p = create(dir.path(), &format!("{sub}.vmdk"), &format!("subformat={sub}"));
    compare_all(&p);
    if write {
        qemu_io_quiet(&p, WRITES);
        compare_all(&p);
    }
    check_exit(&p);
}

#[test]
fn monolithic_sparse() {
    subformat("monolithicSparse", true);
}

#[test]
fn monolithic_flat() {
    subformat("monolithicFlat", true);
}

#[test]
fn two_gb_max_extent_sparse() {
    subformat("twoGbMaxExtentSparse", true);
}

#[test]
fn two_gb_max_extent_flat() {
    subformat("twoGbMaxExtentFlat", true);
}

#[test]
fn stream_optimized_empty() {
    subformat("streamOptimized", false);
}

/// Several extents: a disk bigger than 2 GiB split by qemu into 2 GiB files.
#[test]
fn two_gb_max_extent_several_files() {
    let dir = workspace();
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let name = format!("{sub}-5g.vmdk");
        qemu_img_in(dir.path(), &["create", "-q", "-f", "vmdk", "-o", &format!("subformat={sub}"), &name, "5G"]);
        let p = dir.path().join(&name);
        qemu_io_quiet(&p, &["write -P 0x61 2047M 2M", "write -P 0x62 4100M 64k", "write -P 0x63 0 4k"]);
        compare_all(&p);
        let info = vdiskview_json(&["info", "--output", "json", s(&p)]);
        assert_eq!(info["format-specific"]["data"]["extents"].as_array().unwrap().len(), 3);
    }
}

fn converted(sub: &str) {
    let dir = workspace();
    let mut content = pattern_bytes(7, 3 << 20);
    content[1 << 20..(1 << 20) + 300_000].fill(0);
    let raw = dir.path().join("src.raw");
    std::fs::write(&raw, &content).unwrap();
    // a sparse tail: 8 MiB disk
    std::fs::OpenOptions::new().write(true).open(&raw).unwrap().set_len(8 << 20).unwrap();
    let p = dir.path().join("conv.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", &format!("subformat={sub}"), s(&raw), s(&p)]);
    compare_all(&p);
    check_exit(&p);
}

#[test]
fn converted_stream_optimized() {
    converted("streamOptimized");
}

#[test]
fn converted_monolithic_sparse() {
    converted("monolithicSparse");
}

#[test]
fn converted_two_gb_flat() {
    converted("twoGbMaxExtentFlat");
}

#[test]
fn zeroed_grains_and_options() {
    let dir = workspace();
    let p = create(dir.path(), "z.vmdk", "zeroed_grain=on,adapter_type=lsilogic,hwversion=6");
    qemu_io_quiet(&p, &["write -P 0x5a 0 1M", "write -z 128k 256k", "write -z 20M 2M", "write -P 1 21M 64k"]);
    compare_all(&p);
    check_exit(&p);
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]);
    let ddb = &info["vdiskview"]["layers"][0]["vmdk"]["ddb"];
    assert_eq!(ddb["ddb.adapterType"], "lsilogic", "{}", pretty(&info));
    assert_eq!(ddb["ddb.virtualHWVersion"], "6");
}

#[test]
fn snapshot_chain() {
    let dir = workspace();
    let base = create(dir.path(), "base.vmdk", "subformat=monolithicSparse");
    qemu_io_quiet(&base, &["write -P 0x10 0 4M", "write -P 0x11 30M 1M"]);
    qemu_img_in(dir.path(), &["create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk"]);
    let mid = dir.path().join("mid.vmdk");
    qemu_io_quiet(&mid, &["write -P 0x20 1M 100k", "write -P 0x21 40M 64k"]);
    qemu_img_in(dir.path(), &["create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk"]);
    let top = dir.path().join("top.vmdk");
    qemu_io_quiet(&top, &["write -P 0x30 2M 4k"]);
    compare_all(&mid);
    compare_all(&top);
    let info = vdiskview_json(&["info", "--output", "json", s(&top)]);
    assert_eq!(info["vdiskview"]["layers"].as_array().unwrap().len(), 3);
    assert!(info["vdiskview"]["warnings"].as_array().unwrap().is_empty(), "{}", pretty(&info));

    // the parent changes after the delta was made: its CID moves on, the child's parentCID not
    qemu_io_quiet(&base, &["write -P 0x12 50M 64k"]);
    let info = vdiskview_json(&["info", "--output", "json", s(&mid)]);
    let w = info["vdiskview"]["warnings"].to_string();
    assert!(w.contains("parentCID") && w.contains("does not match"), "{}", pretty(&info));
}

/// A VMware-style streamOptimized file whose header says "grain directory at the end": the
/// footer (a header copy after a footer marker, before the end-of-stream marker) gives it.
#[test]
fn stream_optimized_footer() {
    let dir = workspace();
    let raw = dir.path().join("src.raw");
    let mut content = pattern_bytes(3, 2 << 20);
    content.resize(4 << 20, 0);
    std::fs::write(&raw, &content).unwrap();
    let p = dir.path().join("f.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", s(&raw), s(&p)]);
    footer_gd_at_end(&p, &p);
    compare_all(&p);
    assert_bytes_eq(&vdiskview_ok(&["read", s(&p)]), &content, "read of the footer image");
    // a garbled footer marker: a clean error, as qemu refuses it too
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1536 + 12] = 7;
    std::fs::write(&p, &b).unwrap();
    assert!(!qemu_img_output(&["info", "-f", "vmdk", s(&p)]).status.success());
    let out = vdiskview(&["info", s(&p)]);
    assert_clean_error(&out, "garbled footer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("footer"));
}

#[test]
fn check_grain_past_eof_fails_like_qemu() {
    let dir = workspace();
    let p = create(dir.path(), "d.vmdk", "subformat=monolithicSparse");
    qemu_io_quiet(&p, &["write -P 1 0 128k"]);
    let mut b = std::fs::read(&p).unwrap();
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize * 512;
    let gt = u32::from_le_bytes(b[gd..gd + 4].try_into().unwrap()) as usize * 512;
    b[gt + 4..gt + 8].copy_from_slice(&0x10_0000u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    check_exit(&p);
    let v = vdiskview(&["check", s(&p)]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("points after EOF"));
}

/// Damaged files: truncations and garbage header fields give errors or answers, never a panic,
/// and in bounded time.
#[test]
fn damaged_never_panic() {
    let dir = workspace();
    let p = create(dir.path(), "good.vmdk", "subformat=monolithicSparse");
    qemu_io_quiet(&p, &["write -P 1 0 1M", "write -P 2 40M 64k"]);
    let good = std::fs::read(&p).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [3usize, 100, 512, 1024, 0x3c00, 0x4000, 0x10000, good.len() - 1000] {
        cases.push((format!("truncated at {cut}"), good[..cut.min(good.len())].to_vec()));
    }
    let fields: &[(usize, usize)] = &[(4, 4), (8, 4), (12, 8), (20, 8), (28, 8), (36, 8), (44, 4), (48, 8), (56, 8), (64, 8), (77, 2)];
    for &(off, len) in fields {
        for val in [0u64, 1, 0xffff_ffff, u64::MAX, 0x7fff_ffff_ffff] {
            let mut b = good.clone();
            b[off..off + len].copy_from_slice(&val.to_le_bytes()[..len]);
            cases.push((format!("header field at {off} = {val:#x}"), b));
        }
    }
    // every grain directory entry past the end of the file
    let mut b = good.clone();
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize * 512;
    for i in 0..2 {
        b[gd + 4 * i..gd + 4 * i + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    }
    cases.push(("GD past EOF".into(), b));
    // garbage descriptor
    let mut b = good.clone();
    for (i, x) in b[512..1536].iter_mut().enumerate() {
        *x = (i * 37 % 251) as u8;
    }
    cases.push(("garbage descriptor".into(), b));
    for (what, bytes) in cases {
        let f = dir.path().join("bad.vmdk");
        std::fs::write(&f, &bytes).unwrap();
        assert_commands_survive(&f, &what);
    }
}

/// A descriptor whose extent file is missing: one clean error.
#[test]
fn missing_extent_file() {
    let dir = workspace();
    let p = create(dir.path(), "m.vmdk", "subformat=twoGbMaxExtentFlat");
    std::fs::remove_file(dir.path().join("m-f001.vmdk")).unwrap();
    let out = vdiskview(&["info", s(&p)]);
    assert_clean_error(&out, "missing extent");
    assert!(String::from_utf8_lossy(&out.stderr).contains("m-f001.vmdk"));
}

#[test]
fn tables_lists_descriptor_header_and_tables() {
    let dir = workspace();
    let p = create(dir.path(), "t.vmdk", "subformat=monolithicSparse");
    qemu_io_quiet(&p, &["write -P 1 64k 64k"]);
    let t = vdiskview_text(&["tables", s(&p)]);
    for needle in ["createType=\"monolithicSparse\"", "Magic : KDMV", "Grain directory", "GT#001", "redundant"] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
    let _: Value = vdiskview_json(&["info", "--output", "json", s(&p)]);
}

/// `write` allocates grains as qemu-io does: `qemu-img compare` identical, the same map
/// (grains at the same offsets), `qemu-img check` clean, a parent untouched; the CID moves on.
#[test]
fn write_like_qemu_io() {
    let writes: &[(u8, u64, u64)] = &[(0x5a, 100 << 10, 200 << 10), (0x11, 10 << 20, 64 << 10), (0x22, 3000, 5000), (0x33, 15 << 20, 1 << 20)];
    for kind in ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "zeroed", "child"] {
        let root = workspace();
        let (qd, vd) = (root.path().join("q"), root.path().join("v"));
        for d in [&qd, &vd] {
            std::fs::create_dir(d).unwrap();
            match kind {
                "zeroed" => {
                    qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "a.vmdk", "16M"]);
                    qemu_io_quiet(&d.join("a.vmdk"), &["write -z 0 4M"]);
                }
                "child" => {
                    qemu_img_in(d, &["create", "-q", "-f", "vmdk", "p.vmdk", "16M"]);
                    qemu_io_quiet(&d.join("p.vmdk"), &["write -P 7 0 16M"]);
                    qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-b", "p.vmdk", "-F", "vmdk", "a.vmdk"]);
                }
                sub => {
                    qemu_img_in(d, &["create", "-q", "-f", "vmdk", "-o", &format!("subformat={sub}"), "a.vmdk", "16M"]);
                }
            }
        }
        let (qa, va) = (qd.join("a.vmdk"), vd.join("a.vmdk"));
        let parent_before = std::fs::read(vd.join("p.vmdk")).ok();
        let cid_before = vdiskview_json(&["info", "--output", "json", s(&va)])["format-specific"]["data"]["cid"].clone();
        for &(pat, off, len) in writes {
            qemu_io_quiet(&qa, &[&format!("write -P {pat} {off} {len}")]);
            vdiskview_ok(&["write", "--offset", &off.to_string(), "--pattern", &pat.to_string(), "--length", &len.to_string(), s(&va)]);
        }
        qemu_img(&["compare", "-f", "vmdk", "-F", "vmdk", s(&qa), s(&va)]);
        let q = qemu_img_output(&["check", "-f", "vmdk", s(&va)]);
        assert!(q.status.success(), "{kind}: {}", String::from_utf8_lossy(&q.stdout));
        assert_json_eq(&qemu_map_json(&va, "vmdk"), &qemu_map_json(&qa, "vmdk"), &format!("{kind}: map after writes"));
        compare_all(&va);
        let cid_after = vdiskview_json(&["info", "--output", "json", s(&va)])["format-specific"]["data"]["cid"].clone();
        assert_ne!(cid_before, cid_after, "{kind}: the CID must change on write");
        if kind == "child" {
            assert!(parent_before == std::fs::read(vd.join("p.vmdk")).ok(), "{kind}: the parent was written");
        }
    }
}

/// streamOptimized writes as qemu-io makes them: whole grains appended compressed, the same
/// guest content (`qemu-img compare`), `qemu-img check` clean, read by `qemu-img convert`; what
/// qemu refuses (a grain written before, part of a grain) refused too, before anything is
/// written; a footer image (grain directory at the end) refused, where qemu breaks it.
#[test]
fn stream_optimized_write_like_qemu_io() {
    let root = workspace();
    let (qa, va) = (root.path().join("q.vmdk"), root.path().join("v.vmdk"));
    for p in [&qa, &va] {
        qemu_img(&["create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", s(p), "16M"]);
    }
    // one grain, three grains in one write, the last grains of the disk, two grains after a
    // gap in the file (a new session starts at the next grain boundary)
    let writes: &[(u8, u64, u64)] = &[(0x21, 64 << 10, 64 << 10), (0x22, 1 << 20, 192 << 10), (0x23, 15 << 20, 1 << 20), (0x24, (8 << 20) - (64 << 10), 128 << 10)];
    for (i, &(pat, off, len)) in writes.iter().enumerate() {
        qemu_io_quiet(&qa, &[&format!("write -P {pat} {off} {len}")]);
        vdiskview_ok(&["write", "--offset", &off.to_string(), "--pattern", &pat.to_string(), "--length", &len.to_string(), s(&va)]);
        if i == 0 {
            // pseudo-random bytes: a grain that deflate barely shrinks
            let data = pattern_bytes(9, 64 << 10);
            let src = root.path().join("rand.bin");
            std::fs::write(&src, &data).unwrap();
            qemu_io_quiet(&qa, &[&format!("write -s {} 4M 64k", s(&src))]);
            vdiskview_ok(&["write", "--offset", "4M", "--input", s(&src), s(&va)]);
        }
    }
    qemu_img(&["compare", "-f", "vmdk", "-F", "vmdk", s(&qa), s(&va)]);
    let q = qemu_img_output(&["check", "-f", "vmdk", s(&va)]);
    assert!(q.status.success(), "qemu-img check after our writes: {}", String::from_utf8_lossy(&q.stdout));
    assert_json_eq(&qemu_map_json(&va, "vmdk"), &qemu_map_json(&qa, "vmdk"), "map after writes");
    compare_all(&va);
    // the same layout as qemu's: both files end at the same offset
    assert_eq!(std::fs::metadata(&va).unwrap().len(), std::fs::metadata(&qa).unwrap().len(), "file length after the same writes");

    // refusals: qemu's and ours, nothing written by ours
    for (what, off, len) in [("a grain written before", 64u64 << 10, 64u64 << 10), ("part of a grain", 10 << 20, 512), ("a run ending in a written grain", 0, 128 << 10)] {
        let q = run_with_timeout(
            std::process::Command::new("qemu-io").args(["-f", "vmdk", "-c", &format!("write -P 1 {off} {len}"), s(&qa)]),
            DEFAULT_TIMEOUT,
        );
        let qtext = format!("{}{}", String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&q.stderr));
        assert!(qtext.contains("failed"), "qemu-io should refuse {what}: {qtext}");
        let before = std::fs::read(&va).unwrap();
        let out = vdiskview(&["write", "--offset", &off.to_string(), "--pattern", "1", "--length", &len.to_string(), s(&va)]);
        assert_clean_error(&out, what);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("streamOptimized") && err.contains("qemu refuses"), "{what}: {err}");
        assert!(std::fs::read(&va).unwrap() == before, "{what}: the refused write changed the file");
    }
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&va), s(&root.path().join("out.raw"))]);

    // a VMware-style file with its grain directory at the end: refused, unchanged
    let f = root.path().join("f.vmdk");
    footer_gd_at_end(&va, &f);
    let b = std::fs::read(&f).unwrap();
    compare_all(&f);
    let out = vdiskview(&["write", "--offset", "8M", "--pattern", "1", "--length", "64k", s(&f)]);
    assert_clean_error(&out, "write to a footer streamOptimized file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("footer"));
    assert!(std::fs::read(&f).unwrap() == b, "the refused write changed the footer file");
}

/// A streamOptimized write stopped after each of its durable steps: qemu still opens the
/// image, `qemu-img check` is clean, and each grain reads either old or new.
#[test]
fn stream_optimized_write_crash() {
    let root = workspace();
    let img = root.path().join("s.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", s(&img), "8M"]);
    qemu_io_quiet(&img, &["write -P 0x31 0 64k"]);
    let old = qemu_convert_raw(&img, "vmdk");
    let (off, len) = (1usize << 20, 128usize << 10);
    let mut new = old.clone();
    new[off..off + len].fill(0x77);
    let work = root.path().join("w.vmdk");
    let mut k = 1;
    loop {
        assert!(k < 50, "the write did not complete");
        std::fs::copy(&img, &work).unwrap();
        let out = run_with_timeout(
            std::process::Command::new(vdiskview_bin())
                .args(["write", s(&work), "--offset", &off.to_string(), "--pattern", "0x77", "--length", &len.to_string()])
                .env("VDISKVIEW_FAILPOINT", k.to_string()),
            DEFAULT_TIMEOUT,
        );
        let q = qemu_img_output(&["check", "-f", "vmdk", s(&work)]);
        assert!(q.status.success(), "crash at step {k}: qemu-img check: {}", String::from_utf8_lossy(&q.stdout));
        let got = qemu_convert_raw(&work, "vmdk");
        for g in (0..got.len()).step_by(64 << 10) {
            let r = g..g + (64 << 10);
            assert!(got[r.clone()] == old[r.clone()] || got[r.clone()] == new[r.clone()], "crash at step {k}: grain at 0x{g:x} is neither old nor new");
        }
        if out.status.success() {
            assert_bytes_eq(&got, &new, "completed write");
            break;
        }
        k += 1;
    }
    // grain, entry (twice) and the CID: at least the two ordered steps of each grain
    assert!(k > 4, "only {} durable steps", k - 1);
}

/// A qcow2 overlay over a multi-file VMDK: the chain mixes formats as qemu's does.
#[test]
fn qcow2_over_vmdk() {
    let dir = workspace();
    let base = create(dir.path(), "base.vmdk", "subformat=twoGbMaxExtentSparse");
    qemu_io_quiet(&base, &["write -P 0x10 0 4M", "write -P 0x11 30M 1M"]);
    qemu_img_in(dir.path(), &["create", "-q", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk", "top.qcow2"]);
    let top = dir.path().join("top.qcow2");
    qemu_io("qcow2", &top, &["write -P 3 1M 64k"]);
    let p = s(&top);
    assert_json_eq(&vdiskview_json(&["map", "--output", "json", p]), &qemu_map_json(&top, "qcow2"), "map qcow2 over vmdk");
    assert_eq!(
        String::from_utf8_lossy(&vdiskview_ok(&["map", p])),
        String::from_utf8_lossy(&qemu_map_human(&top, "qcow2").stdout),
        "human map qcow2 over vmdk"
    );
    assert_bytes_eq(&vdiskview_ok(&["read", p]), &qemu_convert_raw(&top, "qcow2"), "read qcow2 over vmdk");
}

/// An ESXi seSparse extent (qemu-img cannot make one: built by hand in the layout qemu reads)
/// behind a descriptor: map, read and info equal qemu's.
#[test]
fn se_sparse_extent() {
    let dir = workspace();
    let enc = |c: u64| (3u64 << 60) | ((c & 0xfff) << 48) | (c >> 12);
    let mut h = [0u64; 26];
    // magic, version, capacity, grain 8 sectors, tables of 64 sectors; volatile header at 1;
    // directory at 2 (1 sector); tables from 3; grains from 192
    h[0] = 0xcafe_babe;
    h[1] = 0x0000_0002_0000_0001;
    h[2] = 65536;
    h[3] = 8;
    h[4] = 64;
    h[10] = 1;
    h[11] = 1;
    h[16] = 2;
    h[17] = 1;
    h[18] = 3;
    h[19] = 128;
    h[24] = 192;
    h[25] = 64;
    let mut b: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.resize(512, 0);
    let mut v = vec![0u8; 512];
    v[..8].copy_from_slice(&0xcafe_cafeu64.to_le_bytes());
    b.extend_from_slice(&v);
    let mut gd = vec![0u8; 512];
    gd[..8].copy_from_slice(&0x1000_0000_0000_0000u64.to_le_bytes());
    gd[8..16].copy_from_slice(&0x1000_0000_0000_0001u64.to_le_bytes());
    b.extend_from_slice(&gd);
    let mut gt0 = vec![0u64; 4096];
    gt0[0] = enc(0);
    gt0[1] = enc(1);
    gt0[2] = enc(2);
    gt0[5] = 0x2000_0000_0000_0000;
    gt0[6] = 0x1000_0000_0000_0000;
    gt0[4095] = enc(3);
    let mut gt1 = vec![0u64; 4096];
    gt1[10] = enc(4);
    for t in [gt0, gt1] {
        b.extend(t.iter().flat_map(|x| x.to_le_bytes()));
    }
    b.resize(192 * 512, 0);
    for c in 0..5u8 {
        b.extend(std::iter::repeat_n(0x40 + c, 4096));
    }
    std::fs::write(dir.path().join("se-sesparse.vmdk"), &b).unwrap();
    // (no blank line right before the extent line: qemu's sscanf would read it twice)
    let desc = "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"seSparse\"\n\n\
# Extent description\nRW 65536 SESPARSE \"se-sesparse.vmdk\"\n";
    let p = dir.path().join("se.vmdk");
    std::fs::write(&p, desc).unwrap();
    compare_all(&p);
    let out = vdiskview(&["write", "--offset", "0", "--pattern", "1", "--length", "512", s(&p)]);
    assert_clean_error(&out, "write to seSparse");
}

/// A VMFS sparse (`COWD`, the ESXi snapshot delta format before seSparse) extent behind a
/// vmfsSparse descriptor, built by hand: map, read and info equal qemu's.
#[test]
fn vmfs_sparse_cowd_extent() {
    let dir = workspace();
    let mut b = vec![0u8; 512];
    b[..4].copy_from_slice(b"COWD");
    // version, flags, capacity 8192 sectors, grains of 1 sector, directory at sector 4 with 2
    // entries, next free sector
    for (i, v) in [1u32, 3, 8192, 1, 4, 2, 104].iter().enumerate() {
        b[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    b.resize(4 * 512, 0);
    let mut gd = vec![0u8; 512];
    gd[..4].copy_from_slice(&5u32.to_le_bytes());
    gd[4..8].copy_from_slice(&37u32.to_le_bytes());
    b.extend_from_slice(&gd);
    let mut gt0 = vec![0u32; 4096];
    gt0[0] = 100;
    gt0[1] = 101;
    gt0[100] = 102;
    let mut gt1 = vec![0u32; 4096];
    gt1[5] = 103;
    for t in [gt0, gt1] {
        b.extend(t.iter().flat_map(|x| x.to_le_bytes()));
    }
    b.resize(100 * 512, 0);
    for c in 0..4u8 {
        b.extend(std::iter::repeat_n(0x60 + c, 512));
    }
    std::fs::write(dir.path().join("d-delta.vmdk"), &b).unwrap();
    let desc = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\n\n\
# Extent description\nRW 8192 VMFSSPARSE \"d-delta.vmdk\"\n";
    let p = dir.path().join("d.vmdk");
    std::fs::write(&p, desc).unwrap();
    compare_all(&p);
    check_exit(&p);
    let t = vdiskview_text(&["tables", s(&p)]);
    assert!(t.contains("Magic : COWD") && t.contains("GD entries : 2"), "{t}");
}

/// Descriptor files with hostile extent lines: errors or answers, never a panic.
#[test]
fn damaged_descriptors_never_panic() {
    let dir = workspace();
    std::fs::write(dir.path().join("x.bin"), vec![7u8; 4096]).unwrap();
    let head = "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n# e\n";
    let lines = [
        "RW 18446744073709551615 FLAT \"x.bin\" 0",
        "RW 100 FLAT \"x.bin\" 18446744073709551615",
        "RW 100 FLAT \"x.bin\" 36028797018963968",
        "RW 9223372036854775807 FLAT \"x.bin\" 0\nRW 9223372036854775807 FLAT \"x.bin\" 0",
        "RW 100 SPARSE \"x.bin\"",
        "RW 100 SESPARSE \"x.bin\"",
        "RW 100 VMFSSPARSE \"missing.bin\"",
        "RW 100 FLAT \"x.bin\" 2000\nRW 0 FLAT \"x.bin\" 0\nRW 8 ZERO",
        "RW 100 WEIRD \"x.bin\"",
        "RW 100 FLAT \"../../../../../../dev/null\" 0",
        "RW 100 FLAT \"x.bin\"",
    ];
    for l in lines {
        let p = dir.path().join("d.vmdk");
        std::fs::write(&p, format!("{head}{l}\n")).unwrap();
        assert_commands_survive(&p, &format!("{l:?}"));
    }
}

/// ZERO, RDONLY and NOACCESS extents. qemu drops every extent line that is not `RW` with a
/// quoted file name (its `vmdk_parse_extents`), so the extents after them move down and the
/// disk shrinks; vdiskview keeps each extent at its place in the descriptor (ZERO reads as
/// zero, RDONLY and NOACCESS read their file) and refuses to write the non-RW ones. The RW
/// extents read the same bytes in both, at their own offsets.
#[test]
fn zero_rdonly_noaccess_extents() {
    let dir = workspace();
    const M: usize = 1 << 20;
    for (i, c) in ["a", "b", "c", "d"].iter().enumerate() {
        std::fs::write(dir.path().join(format!("{c}.bin")), pattern_bytes(40 + i as u64, M)).unwrap();
    }
    let p = dir.path().join("z.vmdk");
    std::fs::write(
        &p,
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n# Extents\n\
         RW 2048 FLAT \"a.bin\" 0\nRW 2048 ZERO\nRDONLY 2048 FLAT \"b.bin\" 0\nNOACCESS 2048 FLAT \"c.bin\" 0\nRW 2048 FLAT \"d.bin\" 0\n",
    )
    .unwrap();
    let file = |c: &str| std::fs::read(dir.path().join(format!("{c}.bin"))).unwrap();
    // qemu: a and d only, d right after a
    let q = qemu_convert_raw(&p, "vmdk");
    assert_eq!(q.len(), 2 * M, "qemu drops the ZERO, RDONLY and NOACCESS extents");
    assert_bytes_eq(&q[M..], &file("d"), "qemu reads d.bin right after a.bin");
    // vdiskview: every extent in place
    let ours = vdiskview_ok(&["read", s(&p)]);
    assert_eq!(ours.len(), 5 * M);
    assert_bytes_eq(&ours[..M], &q[..M], "the first RW extent, as qemu reads it");
    assert!(ours[M..2 * M].iter().all(|&b| b == 0), "the ZERO extent reads as zero");
    assert_bytes_eq(&ours[2 * M..3 * M], &file("b"), "the RDONLY extent");
    assert_bytes_eq(&ours[3 * M..4 * M], &file("c"), "the NOACCESS extent");
    assert_bytes_eq(&ours[4 * M..], &q[M..], "the last RW extent, as qemu reads it at 1 MiB");
    let map = vdiskview_json(&["map", "--output", "json", s(&p)]);
    assert_eq!(map[1]["zero"], Value::Bool(true), "{}", pretty(&map));
    assert_eq!(map[1]["data"], Value::Bool(false), "{}", pretty(&map));
    let info = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_eq!(info["virtual-size"], 5 * M as u64);
    let ext = &info["vdiskview"]["layers"][0]["vmdk"]["extents"];
    assert_eq!(ext[2]["access"], "RDONLY", "{}", pretty(&info));
    assert_eq!(ext[3]["access"], "NOACCESS", "{}", pretty(&info));
    // writes: RW extents only
    for (off, what) in [(M + 4096, "ZERO"), (2 * M, "RDONLY"), (3 * M + 512, "NOACCESS")] {
        let before: Vec<Vec<u8>> = ["b", "c"].iter().map(|c| file(c)).collect();
        let out = vdiskview(&["write", "--offset", &off.to_string(), "--pattern", "1", "--length", "512", s(&p)]);
        assert_clean_error(&out, what);
        assert!(String::from_utf8_lossy(&out.stderr).contains(what), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(["b", "c"].iter().map(|c| file(c)).collect::<Vec<_>>() == before, "{what}: an extent file changed");
    }
    vdiskview_ok(&["write", "--offset", &(4 * M).to_string(), "--pattern", "0x5e", "--length", "512", s(&p)]);
    assert!(file("d")[..512].iter().all(|&b| b == 0x5e));
}

/// `where --file` finds the grain at a file offset on demand (no list of every grain): for
/// each data run of qemu's map, a byte inside it names the guest byte qemu maps there; a
/// grain table and the header are named as such; a streamOptimized grain is "compressed".
#[test]
fn where_file_offset_finds_grains() {
    let dir = workspace();
    let p = create(dir.path(), "w.vmdk", "subformat=monolithicSparse");
    qemu_io_quiet(&p, WRITES);
    assert_where_file_finds_data_and_header(&p, "vmdk");
    let gt = vdiskview_json(&["info", "--output", "json", s(&p)])["vdiskview"]["layers"][0]["vmdk"]["extents"][0]["gd-offset"].as_u64().unwrap();
    let w = vdiskview_json(&["where", s(&p), &format!("{:#x}", gt), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "gd", "{w}");

    let so = create(dir.path(), "so.vmdk", "subformat=streamOptimized");
    qemu_io_quiet(&so, &["write -P 3 1M 64k"]);
    let len = std::fs::metadata(&so).unwrap().len();
    // the grain qemu appended: the first one past the (grain-aligned) metadata
    let w = vdiskview_json(&["where", s(&so), "0x10005", "--file", "--output", "json"]);
    assert_eq!(w["structure"], "compressed", "file of {len} bytes: {w}");
}

/// Damaged streamOptimized files and a write of one whole grain: vdiskview never panics,
/// writes only where qemu-io writes too (stricter is allowed, looser is not), leaves a
/// refused file byte-identical, and after a write it made, `qemu-img check` finds no more
/// than it found before. `where --file` over the whole file never panics either.
#[test]
fn stream_optimized_damaged_writes() {
    let dir = workspace();
    let p = create(dir.path(), "good.vmdk", "subformat=streamOptimized");
    qemu_io_quiet(&p, &["write -P 1 0 64k", "write -P 2 1M 64k"]);
    let good = std::fs::read(&p).unwrap();
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let gd = le64(&good, 56) as usize * 512;
    let rgd = le64(&good, 48) as usize * 512;
    let gt = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let poke = |off: usize, v: &[u8]| {
        let mut b = good.clone();
        b[off..off + v.len()].copy_from_slice(v);
        b
    };
    cases.push(("GD entry 0 cleared".into(), poke(gd, &0u32.to_le_bytes())));
    cases.push(("GD entry 0 past EOF".into(), poke(gd, &0x7fff_0000u32.to_le_bytes())));
    cases.push(("GD entry 0 on the descriptor".into(), poke(gd, &1u32.to_le_bytes())));
    cases.push(("RGD entry 0 past EOF".into(), poke(rgd, &0x7fff_0000u32.to_le_bytes())));
    cases.push(("GT entry of the target grain past EOF".into(), poke(gt + 4 * 32, &0x00ff_ff00u32.to_le_bytes())));
    cases.push(("GT entry of the target grain = 1".into(), poke(gt + 4 * 32, &1u32.to_le_bytes())));
    cases.push(("marker flag cleared".into(), poke(10, &[0])));
    cases.push(("compression 0".into(), poke(77, &[0, 0])));
    cases.push(("grain size 0".into(), poke(20, &0u64.to_le_bytes())));
    cases.push(("gtes per gt 4096".into(), poke(44, &4096u32.to_le_bytes())));
    cases.push(("truncated in the grain area".into(), good[..good.len() - 700].to_vec()));
    cases.push(("truncated in the tables".into(), good[..gt + 100].to_vec()));
    let mut wrote = Vec::new();
    for (what, bytes) in cases {
        let (q, v) = (dir.path().join("q.vmdk"), dir.path().join("v.vmdk"));
        std::fs::write(&q, &bytes).unwrap();
        std::fs::write(&v, &bytes).unwrap();
        let check_before = qemu_img_output(&["check", "-f", "vmdk", s(&v)]).status.code();
        let qo = run_with_timeout(std::process::Command::new("qemu-io").args(["-f", "vmdk", "-c", "write -P 9 2M 64k", s(&q)]), DEFAULT_TIMEOUT);
        let qtext = format!("{}{}", String::from_utf8_lossy(&qo.stdout), String::from_utf8_lossy(&qo.stderr));
        let qemu_wrote = qo.status.success() && qtext.contains("wrote");
        let out = vdiskview(&["write", "--offset", "2M", "--pattern", "9", "--length", "64k", s(&v)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{what}: panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        if out.status.success() {
            assert!(qemu_wrote, "{what}: vdiskview wrote where qemu-io refused ({qtext})");
            let after = qemu_img_output(&["check", "-f", "vmdk", s(&v)]).status.code();
            assert!(after <= check_before || check_before.is_none(), "{what}: check {check_before:?} before, {after:?} after our write");
            qemu_img(&["compare", "-f", "vmdk", "-F", "vmdk", s(&q), s(&v)]);
            wrote.push(what.clone());
        } else {
            assert_clean_error(&out, &what);
            assert!(std::fs::read(&v).unwrap() == bytes, "{what}: the refused write changed the file");
        }
        let len = bytes.len() as u64;
        for off in [0, 0x200, gd as u64, gt as u64, 0x10000, 0x10005, len.saturating_sub(1)] {
            let o = vdiskview(&["where", s(&v), &format!("{off:#x}"), "--file"]);
            assert_ne!(o.status.code(), Some(101), "{what}: where --file {off:#x} panicked");
        }
    }
    eprintln!("written despite the damage (as qemu-io does): {wrote:?}");
    assert!(wrote.len() >= 2, "the damage that leaves writes possible was not written: {wrote:?}");
}

/// `dst` = the streamOptimized `src` as VMware writes it: the header's GD offset says "at the
/// end" (GD_AT_END) and a footer marker, a copy of the header and the end-of-stream marker
/// follow what qemu wrote (the specification's footer).
fn footer_gd_at_end(src: &Path, dst: &Path) {
    let mut b = std::fs::read(src).unwrap();
    let header = b[..512].to_vec();
    b.resize(b.len().div_ceil(512) * 512, 0);
    let mut marker = vec![0u8; 512];
    marker[12..16].copy_from_slice(&3u32.to_le_bytes()); // MARKER_FOOTER
    b.extend_from_slice(&marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]); // MARKER_EOS
    b[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // gdOffset = GD_AT_END
    std::fs::write(dst, &b).unwrap();
}

//! Damaged headers, made the way qemu's own test suite makes them (fields poked into a fresh
//! `qemu-img create -f qcow2 x.qcow2 64M`), with qemu as the oracle:
//!
//! - `vdiskview write IMAGE --offset 0 --length 512 --pattern 0x2a` fails with a one-line
//!   error naming the field, and leaves the file byte-identical, whenever
//!   `qemu-io -f qcow2 -c 'write 0 512'` fails (and in the few classes where vdiskview is
//!   stricter than qemu on purpose, see `Class::stricter`);
//! - `check` exits as `qemu-img check` does, with the same corruption/leak/check-error counts
//!   where qemu gets far enough to count;
//! - `map --output json` and `read` equal `qemu-img map`/`convert` wherever qemu can read;
//! - `info`, `map` and `read` print a warning naming the problem (or, where vdiskview cannot
//!   open the image at all, fail with an error naming the field).
//!
//! The VHD equivalents follow: a footer checksum qemu's vpc_open refuses.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// One class of damage.
struct Class {
    name: &'static str,
    /// Bytes to poke: (file offset, bytes). Computed from the fresh image (after `setup`).
    pokes: fn(&Path) -> Vec<(u64, Vec<u8>)>,
    /// Run on the fresh image before the pokes.
    setup: fn(&Path),
    /// What the refusal and the warnings must name.
    field: &'static str,
    /// vdiskview opens the image (read-only): info/map/read work and warn. When false,
    /// vdiskview fails to open it, as qemu does, with an error naming the field.
    opens: bool,
    /// info/map/read warn (false: the damage shows only when the data is read).
    warns: bool,
    /// vdiskview refuses the write although qemu-io writes (documented in README).
    stricter: bool,
    /// `read` differs from qemu on purpose (a data cluster past the end of the file: an
    /// error, documented in README).
    read_differs: bool,
}

fn none(_: &Path) {}

fn at(off: u64, bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    vec![(off, bytes.to_vec())]
}

fn classes() -> Vec<Class> {
    let c = |name, pokes, field, opens, stricter| Class {
        name,
        pokes,
        setup: none,
        field,
        opens,
        warns: opens,
        stricter,
        read_differs: false,
    };
    vec![
        c("refcount_table_clusters = 0", |_| at(56, &[0, 0, 0, 0]), "refcount_table_clusters", true, false),
        c("refcount table offset unaligned", |_| at(48, &0x1234_5678_90ab_cdefu64.to_be_bytes()), "refcount_table_offset", true, false),
        c("refcount table offset past 2^63", |_| at(48, &0x7fff_ffff_ffff_0000u64.to_be_bytes()), "refcount_table_offset", true, false),
        c("refcount table too large", |_| at(56, &0x1000u32.to_be_bytes()), "refcount_table_clusters", true, false),
        c("refcount table past the end", |_| at(48, &0x10_0000u64.to_be_bytes()), "refcount_table_offset", true, false),
        c("nb_snapshots huge", |_| at(60, &[0xff; 4]), "nb_snapshots", true, false),
        c("snapshots_offset unaligned", |_| at(64, &0x1234_5678_90ab_cdefu64.to_be_bytes()), "snapshots_offset", true, false),
        c(
            "snapshot table past the end",
            |_| vec![(60, 1u32.to_be_bytes().to_vec()), (64, 0x10_0000u64.to_be_bytes().to_vec())],
            "snapshots_offset",
            true,
            true,
        ),
        Class {
            name: "v3 snapshot entry with too little extra data",
            setup: |p| {
                qemu_img(&["snapshot", "-c", "s1", s(p)]);
            },
            pokes: |p| {
                let b = std::fs::read(p).unwrap();
                at(be64(&b, 64) + 36, &8u32.to_be_bytes())
            },
            field: "incomplete",
            opens: true,
            warns: true,
            stricter: false,
            read_differs: false,
        },
        c("L2 table cut short by the end of the file", |_| at(196608, &0x8000_0000_0003_0000u64.to_be_bytes()), "L1[0]", true, false),
        c("L2 table past the end of the file", |_| at(196608, &0x8000_0000_0010_0000u64.to_be_bytes()), "L1[0]", true, true),
        c("corrupt bit", |_| at(79, &[2]), "corrupt", true, false),
        c("dirty bit", |_| at(79, &[1]), "dirty", true, true),
        c("data-file-raw without a data file", |_| at(95, &[2]), "autoclear_features", true, false),
        c("backing file offset past the first cluster", |_| at(8, &0x2_0000u64.to_be_bytes()), "backing_file_offset", true, false),
        c("unknown encryption method", |_| at(32, &3u32.to_be_bytes()), "crypt_method", true, false),
        c("unknown incompatible feature", |_| at(79, &[0x80]), "incompatible_features", false, false),
        c("L1 table offset unaligned", |_| at(40, &0x3_0100u64.to_be_bytes()), "l1_table_offset", false, false),
        c("L1 table too large", |_| at(36, &0x0200_0000u32.to_be_bytes()), "l1_size", false, false),
        c("header extension too large", |_| at(116, &[0xff; 4]), "header extension", false, false),
        Class {
            name: "data cluster past the end of the file",
            setup: |p| {
                qemu_io("qcow2", p, &["write -P 0x11 0 64k"]);
                // the data cluster is the last one: cut it off
                let len = std::fs::metadata(p).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(len - 65536).unwrap();
            },
            pokes: |_| Vec::new(),
            field: "past the end",
            opens: true,
            warns: false,
            stricter: true,
            read_differs: true,
        },
    ]
}

fn run(prog: &str, args: &[&str]) -> Output {
    run_with_timeout(Command::new(prog).args(args), Duration::from_secs(120))
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn copy(src: &Path, name: &str) -> PathBuf {
    let p = src.with_file_name(name);
    std::fs::copy(src, &p).unwrap();
    p
}

/// corruptions, leaks, check-errors of a check's JSON (0 when absent).
fn counts(v: &Value) -> (u64, u64, u64) {
    let g = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    (g("corruptions"), g("leaks"), g("check-errors"))
}

fn one_class(c: &Class) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |m: String| failures.push(format!("{}: {}", c.name, m));
    let dir = workspace();
    let img = dir.path().join("x.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "64M"]);
    (c.setup)(&img);
    for (off, bytes) in (c.pokes)(&img) {
        patch_file(&img, off, &bytes);
    }
    let before = std::fs::read(&img).unwrap();

    // the write: qemu-io on a copy is the oracle
    let q = copy(&img, "q.qcow2");
    let qio = run("qemu-io", &["-f", "qcow2", "-c", "write 0 512", s(&q)]);
    let qemu_writes = qio.status.success();
    let w = copy(&img, "w.qcow2");
    let out = vdiskview(&["write", s(&w), "--offset", "0", "--length", "512", "--pattern", "0x2a"]);
    let err = text(&out.stderr);
    if !qemu_writes || c.stricter {
        if out.status.success() {
            fail(format!("write succeeded where it must be refused (qemu-io: {})", text(&qio.stdout) + &text(&qio.stderr)));
        } else {
            let last = err.lines().last().unwrap_or("");
            if !last.starts_with("vdiskview: ") || !last.contains(c.field) || out.status.code() != Some(1) {
                fail(format!("the refusal must be one line naming {:?}, exit 1; got {:?}: {}", c.field, out.status.code(), err));
            }
            if std::fs::read(&w).unwrap() != before {
                fail("a refused write changed the file".into());
            }
        }
        if c.stricter && !qemu_writes {
            fail("marked stricter than qemu, but qemu-io refuses too".into());
        }
    } else if !out.status.success() {
        fail(format!("qemu-io writes, vdiskview refuses: {}", err));
    }

    // check: qemu-img check's exit status and counts
    let qc = run("qemu-img", &["check", "--output", "json", "-f", "qcow2", s(&img)]);
    let vc = vdiskview(&["check", "--output", "json", s(&img)]);
    if qc.status.code() != vc.status.code() {
        fail(format!(
            "check exits {:?}, qemu-img check {:?} ({})",
            vc.status.code(),
            qc.status.code(),
            text(&qc.stderr).trim()
        ));
    }
    if let Ok(qj) = serde_json::from_slice::<Value>(&qc.stdout) {
        match serde_json::from_slice::<Value>(&vc.stdout) {
            Ok(vj) if counts(&vj) == counts(&qj) => {}
            Ok(vj) => fail(format!("check counts {:?}, qemu's {:?}", counts(&vj), counts(&qj))),
            Err(_) => fail(format!("check printed no JSON: {}", text(&vc.stderr))),
        }
    }
    if std::fs::read(&img).unwrap() != before {
        fail("check changed the file".into());
    }

    // map and read where qemu reads; warnings
    let qm = run("qemu-img", &["map", "--output", "json", "-f", "qcow2", s(&img)]);
    let info = vdiskview(&["info", s(&img)]);
    let map = vdiskview(&["map", "--output", "json", s(&img)]);
    let read = vdiskview(&["read", s(&img)]);
    if !c.opens {
        for (what, o) in [("info", &info), ("map", &map), ("read", &read)] {
            let e = text(&o.stderr);
            if o.status.success() || !e.contains(c.field) {
                fail(format!("{} must fail naming {:?}: {}", what, c.field, e));
            }
        }
        if qm.status.success() {
            fail("qemu-img map opens what vdiskview does not".into());
        }
        return failures;
    }
    for (what, o) in [("info", &info), ("map", &map), ("read", &read)] {
        let e = text(&o.stderr);
        if c.warns && !(e.contains("warning") && e.contains(c.field)) {
            fail(format!("{} prints no warning naming {:?}: {}", what, c.field, e));
        }
    }
    if !info.status.success() {
        fail(format!("info fails: {}", text(&info.stderr)));
    }
    if qm.status.success() {
        let qj: Value = serde_json::from_slice(&qm.stdout).unwrap();
        match serde_json::from_slice::<Value>(&map.stdout) {
            Ok(vj) if vj == qj => {}
            _ => fail(format!("map differs from qemu-img map:\n{}\nqemu:\n{}\n{}", text(&map.stdout), text(&qm.stdout), text(&map.stderr))),
        }
        if c.read_differs {
            if read.status.success() {
                fail("read succeeds, but README documents an error".into());
            }
        } else {
            let raw = dir.path().join("x.raw");
            let conv = run("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", s(&img), s(&raw)]);
            assert!(conv.status.success(), "{}: qemu-img convert: {}", c.name, text(&conv.stderr));
            if !read.status.success() || read.stdout != std::fs::read(&raw).unwrap() {
                fail(format!("read differs from qemu-img convert: {}", text(&read.stderr)));
            }
        }
    } else if !map.status.success() {
        fail(format!("map fails where it must read what it can: {}", text(&map.stderr)));
    }
    failures
}

#[test]
fn damaged_qcow2_headers_like_qemu() {
    let mut failures = Vec::new();
    let all = classes();
    for c in &all {
        failures.extend(one_class(c));
    }
    assert!(failures.is_empty(), "{} of {} classes differ from qemu:\n{}", failures.len(), all.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// VHD

/// A dynamic VHD with some data, its length.
fn dynamic_vhd(dir: &Path) -> (PathBuf, u64) {
    let p = dir.join("d.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", s(&p), "4M"]);
    qemu_io("vpc", &p, &["write -P 0x21 4k 8k"]);
    let len = std::fs::metadata(&p).unwrap().len();
    (p, len)
}

/// Write 512 bytes at 0 with qemu-io and vdiskview; both refuse (the file unchanged, the
/// error naming `field`) or both write.
fn vhd_write_like_qemu(img: &Path, field: &str) -> Result<(), String> {
    let before = std::fs::read(img).unwrap();
    let q = copy(img, "q.vhd");
    let qio = run("qemu-io", &["-f", "vpc", "-c", "write 0 512", s(&q)]);
    let w = copy(img, "w.vhd");
    let out = vdiskview(&["write", s(&w), "--offset", "0", "--length", "512", "--pattern", "0x2a"]);
    let err = text(&out.stderr);
    match (qio.status.success(), out.status.success()) {
        (true, true) => Ok(()),
        (false, false) => {
            let last = err.lines().last().unwrap_or("");
            if !last.contains(field) {
                return Err(format!("the refusal does not name {:?}: {}", field, err));
            }
            if std::fs::read(&w).unwrap() != before {
                return Err("a refused write changed the file".into());
            }
            let info = vdiskview(&["info", s(img)]);
            if !text(&info.stderr).contains("warning") || !text(&info.stderr).contains(field) {
                return Err(format!("info does not warn: {}", text(&info.stderr)));
            }
            Ok(())
        }
        (q, v) => Err(format!("qemu-io writes: {}, vdiskview writes: {} ({})", q, v, err)),
    }
}

#[test]
fn damaged_vhd_footers_like_qemu() {
    let dir = workspace();
    let (base, len) = dynamic_vhd(dir.path());
    let mut failures = Vec::new();
    // (name, pokes): a footer byte changed without fixing its checksum
    let cases: Vec<(&str, Vec<u64>)> = vec![
        ("end footer checksum wrong, copy fine", vec![len - 512 + 24]),
        ("copy at 0 checksum wrong", vec![24]),
        ("both checksums wrong", vec![24, len - 512 + 24]),
    ];
    for (name, pokes) in cases {
        let img = copy(&base, "x.vhd");
        for off in pokes {
            patch_file(&img, off, &[0x01]);
        }
        if let Err(e) = vhd_write_like_qemu(&img, "checksum") {
            failures.push(format!("{}: {}", name, e));
        }
    }
    // a fixed disk: the footer at the end is the only one
    let fx = dir.path().join("f.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&fx), "1M"]);
    let flen = std::fs::metadata(&fx).unwrap().len();
    patch_file(&fx, flen - 512 + 24, &[0x01]);
    if let Err(e) = vhd_write_like_qemu(&fx, "checksum") {
        failures.push(format!("fixed, footer checksum wrong: {}", e));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A zero-size fixed VHD is only its footer: no "no valid footer" warning.
#[test]
fn zero_size_fixed_vhd_has_no_false_warning() {
    let dir = workspace();
    let p = dir.path().join("z.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&p), "0"]);
    let out = vdiskview(&["info", s(&p)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"), "false warning: {}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("Warnings"), "false warning: {}", text(&out.stdout));
}

// ---------------------------------------------------------------------------------------
// Missing pieces

/// A qcow2 whose external data file is missing: `info` works and warns (as for a missing
/// backing file), reading guest data fails, and a write is refused with the file unchanged.
#[test]
fn missing_external_data_file() {
    let dir = workspace();
    let p = dir.path().join("d.qcow2");
    let raw = dir.path().join("d.raw");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&raw)), s(&p), "4M"]);
    qemu_io("qcow2", &p, &["write -P 1 0 64k"]);
    std::fs::remove_file(&raw).unwrap();
    let out = vdiskview(&["info", s(&p)]);
    assert!(out.status.success(), "info: {}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(e.contains("warning") && e.contains("d.raw"), "info warns naming the data file: {e}");
    let j = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_eq!(j["format-specific"]["data"]["data-file"], s(&raw));
    let before = std::fs::read(&p).unwrap();
    let out = vdiskview(&["write", s(&p), "--offset", "0", "--length", "512", "--pattern", "0x2a"]);
    assert!(!out.status.success());
    let last = text(&out.stderr).lines().last().unwrap_or("").to_string();
    assert!(last.contains("external data file"), "{last}");
    assert_eq!(std::fs::read(&p).unwrap(), before, "a refused write changed the file");
    let out = vdiskview(&["read", s(&p), "--length", "512"]);
    assert!(!out.status.success(), "guest data of a missing data file cannot be read");
}

// ---------------------------------------------------------------------------------------
// check --repair, with qemu-img check -r on a copy as the oracle

/// A 64M image with data in guest clusters 0 and 2 (host: L2 at 0x40000, data from 0x50000);
/// refcounts are 16-bit, the refcount block at 0x20000.
fn repair_base(dir: &Path) -> PathBuf {
    let p = dir.join("r.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "64M"]);
    qemu_io("qcow2", &p, &["write -P 5 0 64k", "write -P 6 128k 64k"]);
    p
}

fn refcount_at(cluster: u64) -> u64 {
    0x20000 + cluster * 2
}

fn check_json(prog_vdv: bool, p: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args: Vec<&str> = vec!["check", "--output", "json"];
    args.extend_from_slice(extra);
    args.push(s(p));
    let out = if prog_vdv { vdiskview(&args) } else { run("qemu-img", &args) };
    (out.status.code(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn guest(p: &Path) -> Vec<u8> {
    qemu_convert_raw(p, "qcow2")
}

/// Repair a copy with qemu-img check -r MODE and one with vdiskview: same exit status, same
/// counts fixed, the same bytes, qemu-img check clean afterwards, guest content unchanged.
fn repair_like_qemu(img: &Path, mode: &str) -> Result<(), String> {
    let content = guest(img);
    let q = copy(img, "rq.qcow2");
    let v = copy(img, "rv.qcow2");
    let (qrc, qj) = check_json(false, &q, &["-r", mode]);
    let (vrc, vj) = check_json(true, &v, &["--repair", mode]);
    if qrc != vrc {
        return Err(format!("check -r {mode} exits {vrc:?}, qemu-img {qrc:?}: {vj}"));
    }
    for k in ["leaks-fixed", "corruptions-fixed", "corruptions", "leaks", "check-errors"] {
        if qj.get(k) != vj.get(k) {
            return Err(format!("{k}: {:?}, qemu-img {:?}", vj.get(k), qj.get(k)));
        }
    }
    let (after, _) = check_json(false, &v, &[]);
    let (qafter, _) = check_json(false, &q, &[]);
    if after != qafter {
        return Err(format!("qemu-img check after the repair: {after:?}, after qemu's own {qafter:?}"));
    }
    if guest(&v) != content {
        return Err("the repair changed the guest content".into());
    }
    if std::fs::read(&v).unwrap() != std::fs::read(&q).unwrap() {
        return Err("the repaired image differs from qemu's repair".into());
    }
    Ok(())
}

#[test]
fn repair_leaks_like_qemu() {
    let dir = workspace();
    let p = repair_base(dir.path());
    // a leak: the header cluster counted twice, and a cluster past the data counted once
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len + 65536).unwrap();
    patch_file(&p, refcount_at(0), &2u16.to_be_bytes());
    patch_file(&p, refcount_at(len / 65536), &1u16.to_be_bytes());
    let (rc, _) = check_json(false, &p, &[]);
    assert_eq!(rc, Some(3), "the base image has leaks");
    for mode in ["leaks", "all"] {
        if let Err(e) = repair_like_qemu(&p, mode) {
            panic!("-r {mode}: {e}");
        }
    }
}

#[test]
fn repair_all_refcounts_and_copied_flags_like_qemu() {
    let dir = workspace();
    let p = repair_base(dir.path());
    // the data cluster of guest cluster 0 counted too low (0x50000 is host cluster 5), after a
    // snapshot made it shared: refcount 2 -> 1
    qemu_img(&["snapshot", "-c", "s", s(&p)]);
    patch_file(&p, refcount_at(5), &1u16.to_be_bytes());
    let (rc, _) = check_json(false, &p, &[]);
    assert_eq!(rc, Some(2));
    repair_like_qemu(&p, "all").unwrap_or_else(|e| panic!("refcount too low: {e}"));
    // leaks mode leaves the corruption, as qemu's does
    repair_like_qemu(&p, "leaks").unwrap_or_else(|e| panic!("refcount too low, -r leaks: {e}"));

    // OFLAG_COPIED missing on an exclusively owned data cluster (L2 entry 2 at 0x40010)
    let p = repair_base(&dir.path().join("sub").tap_mkdir());
    let b = std::fs::read(&p).unwrap();
    let e = be64(&b, 0x40010);
    patch_file(&p, 0x40010, &(e & !(1u64 << 63)).to_be_bytes());
    let (rc, _) = check_json(false, &p, &[]);
    assert_eq!(rc, Some(2));
    repair_like_qemu(&p, "all").unwrap_or_else(|e| panic!("OFLAG_COPIED: {e}"));
}

trait MkDir {
    fn tap_mkdir(self) -> PathBuf;
}

impl MkDir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// A crash at every durable step of a repair leaves the image no worse: no more
/// corruptions than before, the guest content unchanged; run to the end, it is clean.
#[test]
fn repair_crash_at_every_step_is_no_worse() {
    let dir = workspace();
    let p = repair_base(dir.path());
    qemu_img(&["snapshot", "-c", "s", s(&p)]);
    patch_file(&p, refcount_at(5), &1u16.to_be_bytes());
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len + 65536).unwrap();
    patch_file(&p, refcount_at(len / 65536), &1u16.to_be_bytes());
    let content = guest(&p);
    let (_, before) = check_json(false, &p, &[]);
    let corrupt_before = before["corruptions"].as_u64().unwrap_or(0);
    let mut k = 1;
    loop {
        let c = copy(&p, "crash.qcow2");
        let out = run_with_timeout(
            Command::new(vdiskview_bin()).args(["check", "--repair", "all", s(&c)]).env("VDISKVIEW_FAILPOINT", k.to_string()),
            Duration::from_secs(60),
        );
        let (rc, j) = check_json(false, &c, &[]);
        assert_eq!(guest(&c), content, "step {k}: guest content changed");
        if out.status.code().is_some() {
            // ran to the end: clean
            assert_eq!(rc, Some(0), "step {k}: not clean after the repair: {j}");
            break;
        }
        let corrupt = j["corruptions"].as_u64().unwrap_or(0);
        assert!(corrupt <= corrupt_before, "step {k}: {corrupt} corruptions after a crash, {corrupt_before} before");
        assert_ne!(rc, Some(1), "step {k}: the check fails after a crash: {j}");
        k += 1;
        assert!(k < 20, "too many steps");
    }
    assert!(k > 1, "the failpoints never fired (test-hooks feature?)");
}

/// What vdiskview does not repair is refused, and the file stays byte-identical.
#[test]
fn repair_refusals_leave_the_image_untouched() {
    let dir = workspace();
    // refcount_table_clusters = 0: qemu rebuilds the refcount structure; vdiskview refuses
    let p = dir.path().join("x.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "64M"]);
    patch_file(&p, 56, &[0, 0, 0, 0]);
    let before = std::fs::read(&p).unwrap();
    let out = vdiskview(&["check", "--repair", "all", s(&p)]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refcount_table_clusters"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&p).unwrap(), before);
    // a used cluster with refcount 0 (the L1 table's, host cluster 3)
    let p = repair_base(&dir.path().join("b").tap_mkdir());
    patch_file(&p, refcount_at(3), &0u16.to_be_bytes());
    let before = std::fs::read(&p).unwrap();
    let out = vdiskview(&["check", "--repair", "all", s(&p)]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refcount 0"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

/// A clean image marked corrupt or dirty: the repair marks it clean and consistent, as qemu's.
#[test]
fn repair_clears_corrupt_and_dirty_like_qemu() {
    for (bit, what) in [(2u8, "corrupt"), (1u8, "dirty")] {
        let dir = workspace();
        let p = repair_base(dir.path());
        patch_file(&p, 79, &[bit]);
        for mode in ["leaks", "all"] {
            repair_like_qemu(&p, mode).unwrap_or_else(|e| panic!("{what}, -r {mode}: {e}"));
        }
    }
}

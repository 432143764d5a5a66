//! `vdiskview check`, judged against `qemu-img check` on clean qcow2 images of every kind
//! (compressed, snapshots, chains, external data files, refcount widths) and on qemu-made
//! images damaged by editing their bytes (a leaked cluster, a zero refcount under a used
//! cluster, two L2 entries naming one cluster, …); and on VHDs (fixed, dynamic, differencing),
//! clean and damaged (bad checksums, a destroyed primary footer, two BAT entries naming one
//! block, a BAT entry past the end, a wrong parent id).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::images::build;
use support::vhd::{DiffVhd, SECTOR};
use support::*;

/// `qemu-img check --output=json` and its exit status.
fn qemu_check(path: &Path, fmt: &str) -> (Value, i32) {
    let out = qemu_img_output(&["check", "--output=json", "-f", fmt, s(path)]);
    let code = out.status.code().expect("qemu-img check exit code");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("qemu-img check json ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (v, code)
}

/// `vdiskview check --output json`: qemu's keys, the findings, the exit status.
fn ours(path: &Path) -> (Value, Vec<Value>, i32) {
    let out = vdiskview(&["check", "--output", "json", s(path)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "check panicked: {stderr}");
    let code = out.status.code().expect("exit code");
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check json ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    let extra = v.as_object_mut().unwrap().remove("vdiskview").expect("vdiskview key");
    let findings = extra["findings"].as_array().cloned().unwrap_or_default();
    (v, findings, code)
}

/// qemu prints the file name as given; so do we.
#[track_caller]
fn assert_check_equals_qemu(path: &Path) -> (Value, Vec<Value>, i32) {
    let (q, qcode) = qemu_check(path, "qcow2");
    let (v, findings, code) = ours(path);
    assert_json_eq(&v, &q, &format!("check {}", path.display()));
    assert_eq!(code, qcode, "exit code of check {} (findings {findings:?})", path.display());
    (v, findings, code)
}

fn check_kind(kind: &str) {
    let dir = workspace();
    let img = build(kind, dir.path());
    let (_, findings, code) = assert_check_equals_qemu(&img.path);
    assert_eq!(code, 0, "{kind} is clean");
    assert!(findings.iter().all(|f| f["severity"] == "warning"), "{kind}: {findings:?}");
    let h = vdiskview_text(&["check", s(&img.path)]);
    assert!(h.contains("No errors were found on the image."), "{h}");
}

macro_rules! clean_kinds {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $( #[test] fn $name() { check_kind($kind); } )*
    };
}

clean_kinds! {
    clean_v3_c512 => "qcow2-v3-c512",
    clean_v3_c4k => "qcow2-v3-c4k",
    clean_v3_c2m => "qcow2-v3-c2m",
    clean_v2_c64k => "qcow2-v2-c64k",
    clean_v2_c512 => "qcow2-v2-c512",
    clean_1g => "qcow2-v3-c64k-1g",
    clean_compressed_zlib => "qcow2-zlib",
    clean_compressed_zstd => "qcow2-zstd",
    clean_compressed_c4k => "qcow2-zlib-c4k",
    clean_extended_l2 => "qcow2-extl2-c64k",
    clean_chain_extended_l2_over_qcow2 => "qcow2-extl2-c32k-backing",
    clean_chain3 => "qcow2-chain3",
    clean_over_raw_backing => "qcow2-raw-backing",
    clean_data_file => "qcow2-datafile",
    clean_data_file_raw => "qcow2-datafile-raw",
}

/// Snapshots, bitmaps and writes between them.
fn snapshots_image(dir: &Path, opts: &str) -> PathBuf {
    let p = dir.join("snap.qcow2");
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(&p), "32M"]);
    qemu_img(&args);
    qemu_io("qcow2", &p, &["write -P 1 0 1M", "write -c -P 2 4M 128k", "write -P 3 9M 64k"]);
    qemu_img(&["snapshot", "-c", "one", s(&p)]);
    qemu_io("qcow2", &p, &["write -P 4 512k 1M", "discard 9M 64k"]);
    qemu_img(&["snapshot", "-c", "two", s(&p)]);
    qemu_img(&["bitmap", "--add", s(&p), "bm"]);
    qemu_io("qcow2", &p, &["write -P 5 20M 100k", "write -z 4M 64k"]);
    qemu_img(&["snapshot", "-d", "one", s(&p)]);
    qemu_img(&["snapshot", "-c", "three", s(&p)]);
    p
}

#[test]
fn clean_snapshots_and_bitmaps() {
    let dir = workspace();
    let p = snapshots_image(dir.path(), "");
    let (v, _, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 0);
    assert!(v["compressed-clusters"].as_u64().unwrap_or(0) > 0, "compressed clusters counted: {v}");
}

#[test]
fn clean_refcount_widths() {
    // 1- and 2-bit refcounts cannot count a snapshot's extra references: no snapshots there
    for bits in ["1", "2"] {
        let dir = workspace();
        let p = dir.path().join("narrow.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("refcount_bits={bits}"), s(&p), "32M"]);
        qemu_io("qcow2", &p, &["write -P 1 0 1M", "write -c -P 2 4M 64k", "write -z 6M 64k", "discard 512k 64k"]);
        let (_, _, code) = assert_check_equals_qemu(&p);
        assert_eq!(code, 0, "refcount_bits={bits}");
    }
    for bits in ["8", "32", "64"] {
        let dir = workspace();
        let p = snapshots_image(dir.path(), &format!("refcount_bits={bits}"));
        let (_, _, code) = assert_check_equals_qemu(&p);
        assert_eq!(code, 0, "refcount_bits={bits}");
    }
}

#[test]
fn dirty_lazy_refcounts_image_equals_qemu() {
    // qemu-io's abort leaves a lazy-refcounts image dirty, its refcounts never written
    let dir = workspace();
    let p = dir.path().join("lazy.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", s(&p), "16M"]);
    let _ = run_with_timeout(
        std::process::Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 4M 64k", "-c", "abort", s(&p)]),
        Duration::from_secs(60),
    );
    let (v, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2, "{v}");
    finding_with(&findings, "warning", "dirty");
}

/// Where the damage helpers find things in a qcow2 file.
struct Layout {
    cs: u64,
    l1: u64,
    reftable: u64,
    refbits: u32,
}

fn layout(p: &Path) -> Layout {
    let b = std::fs::read(p).unwrap();
    Layout {
        cs: 1 << be32(&b, 20),
        l1: be64(&b, 40),
        reftable: be64(&b, 48),
        refbits: if be32(&b, 4) >= 3 { 1 << be32(&b, 96) } else { 16 },
    }
}

fn read_u64(p: &Path, off: u64) -> u64 {
    let b = std::fs::read(p).unwrap();
    be64(&b, off as usize)
}

/// Set the 16-bit refcount of `cluster` (the first refcount block covers it).
fn set_refcount16(p: &Path, l: &Layout, cluster: u64, value: u16) {
    assert_eq!(l.refbits, 16);
    let block = read_u64(p, l.reftable) & !0x1ff;
    patch_file(p, block + cluster * 2, &value.to_be_bytes());
}

/// A plain image with data in the first L2 table.
fn plain(dir: &Path) -> PathBuf {
    let p = dir.join("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "16M"]);
    qemu_io("qcow2", &p, &["write -P 1 0 128k", "write -P 2 1M 64k", "write -P 3 10M 64k"]);
    p
}

fn l2_of_first(p: &Path, l: &Layout) -> u64 {
    read_u64(p, l.l1) & 0x00ff_ffff_ffff_fe00
}

#[track_caller]
fn finding_with<'a>(findings: &'a [Value], severity: &str, text: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["severity"] == severity && f["message"].as_str().unwrap_or("").contains(text))
        .unwrap_or_else(|| panic!("no {severity} finding containing {text:?} in {findings:#?}"))
}

#[test]
fn damaged_leaked_cluster() {
    let dir = workspace();
    let p = plain(dir.path());
    let l = layout(&p);
    let len = std::fs::metadata(&p).unwrap().len();
    let n = len.div_ceil(l.cs);
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len((n + 1) * l.cs).unwrap();
    set_refcount16(&p, &l, n, 1);
    let (v, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 3, "leaks only");
    assert_eq!(v["leaks"], 1);
    let f = finding_with(&findings, "leak", &format!("cluster {n} refcount=1 reference=0"));
    assert_eq!(f["host-offset"].as_u64(), Some(n * l.cs));
    assert_eq!(f["structure"], "leaked");
    let h = String::from_utf8_lossy(&vdiskview(&["check", s(&p)]).stdout).to_string();
    assert!(h.contains("1 leaked clusters were found on the image."), "{h}");
}

#[test]
fn damaged_zero_refcount_under_used_cluster() {
    let dir = workspace();
    let p = plain(dir.path());
    let l = layout(&p);
    let l2 = l2_of_first(&p, &l);
    let data = read_u64(&p, l2) & 0x00ff_ffff_ffff_fe00;
    set_refcount16(&p, &l, data / l.cs, 0);
    let (v, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2);
    assert_eq!(v["corruptions"], 2, "the refcount and the COPIED flag");
    let f = finding_with(&findings, "corruption", &format!("cluster {} refcount=0 reference=1", data / l.cs));
    assert_eq!(f["host-offset"].as_u64(), Some(data));
    assert_eq!(f["virtual"].as_u64(), Some(0), "the data cluster of guest offset 0");
    assert_eq!(f["structure"], "data");
    let f = finding_with(&findings, "corruption", "OFLAG_COPIED data cluster");
    assert_eq!(f["host-offset"].as_u64(), Some(l2), "placed at the L2 entry");
}

#[test]
fn damaged_two_l2_entries_name_one_cluster() {
    let dir = workspace();
    let p = plain(dir.path());
    let l = layout(&p);
    let l2 = l2_of_first(&p, &l);
    let e0 = read_u64(&p, l2);
    let e1 = read_u64(&p, l2 + 8);
    patch_file(&p, l2 + 8, &e0.to_be_bytes());
    let (v, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2);
    assert_eq!((v["corruptions"].as_u64(), v["leaks"].as_u64()), (Some(1), Some(1)));
    let c0 = (e0 & 0x00ff_ffff_ffff_fe00) / l.cs;
    let c1 = (e1 & 0x00ff_ffff_ffff_fe00) / l.cs;
    let f = finding_with(&findings, "corruption", &format!("cluster {c0} refcount=1 reference=2"));
    assert_eq!(f["host-offset"].as_u64(), Some(c0 * l.cs));
    finding_with(&findings, "leak", &format!("cluster {c1} refcount=1 reference=0"));
}

#[test]
fn damaged_snapshot_only_cluster_and_l1_copied_flag() {
    // drop the refcount of an L2 table the active L1 shares with a snapshot: refcount 2 -> 1
    // makes a corruption (reference 2) and the active L1 entry's COPIED flag becomes wrong
    let dir = workspace();
    let p = snapshots_image(dir.path(), "");
    let l = layout(&p);
    let l2 = l2_of_first(&p, &l);
    set_refcount16(&p, &l, l2 / l.cs, 1);
    let (_, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2);
    assert!(findings.iter().any(|f| f["structure"] == "l2" || f["structure"] == "l1"), "{findings:#?}");
}

#[test]
fn damaged_l2_entry_past_the_end_and_unaligned_tables() {
    let dir = workspace();
    // an L2 entry far past the end of the file
    let p = plain(dir.path());
    let l = layout(&p);
    let l2 = l2_of_first(&p, &l);
    patch_file(&p, l2 + 16 * 8, &(0x8000_0000_0000_0000u64 | (1 << 40)).to_be_bytes());
    let (_, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2);
    finding_with(&findings, "corruption", "exceeds the end of the file");
    // an L1 entry naming an unaligned L2 table
    let p2 = dir.path().join("unaligned.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p2), "16M"]);
    qemu_io("qcow2", &p2, &["write -P 1 0 64k"]);
    let l = layout(&p2);
    let e = read_u64(&p2, l.l1);
    patch_file(&p2, l.l1, &(e + 512).to_be_bytes());
    let (qv, qcode) = qemu_check(&p2, "qcow2");
    let (v, findings, code) = ours(&p2);
    assert_json_eq(&v, &qv, "unaligned L2 table");
    assert_eq!(code, qcode);
    finding_with(&findings, "corruption", "not cluster aligned");
}

#[test]
fn damaged_refcount_block_outside_the_image() {
    let dir = workspace();
    let p = plain(dir.path());
    let l = layout(&p);
    // a second refcount table entry pointing far past the end
    patch_file(&p, l.reftable + 8, &(1u64 << 40).to_be_bytes());
    let (_, findings, code) = assert_check_equals_qemu(&p);
    assert_eq!(code, 2);
    let f = finding_with(&findings, "corruption", "refcount block 1");
    assert_eq!(f["host-offset"].as_u64(), Some(l.reftable + 8));
}

#[test]
fn raw_and_missing_files_are_clean_errors() {
    let dir = workspace();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    assert_clean_error(&vdiskview(&["check", s(&raw)]), "check of a raw image");
    assert_clean_error(&vdiskview(&["check", s(&dir.path().join("nope"))]), "check of a missing file");
}

// ---- VHD ----

fn vhd_check(path: &Path) -> (Value, Vec<Value>, i32) {
    let (v, findings, code) = ours(path);
    assert_eq!(v["format"], "vpc");
    assert!(code == 0 || code == 2, "VHD check exits 0 or 2, not {code}: {findings:#?}");
    (v, findings, code)
}

#[track_caller]
fn assert_vhd_clean(path: &Path) {
    let (v, findings, code) = vhd_check(path);
    let bad: Vec<&Value> = findings.iter().filter(|f| f["severity"] != "warning").collect();
    assert!(bad.is_empty() && code == 0 && v.get("corruptions").is_none(), "{} should be clean: {findings:#?}", path.display());
    assert!(vdiskview_text(&["check", s(path)]).contains("No errors were found on the image."));
}

#[track_caller]
fn assert_vhd_damaged(path: &Path, structure: &str, text: &str) -> Value {
    let (v, findings, code) = vhd_check(path);
    assert_eq!(code, 2, "{} is damaged: {findings:#?}", path.display());
    assert!(v["corruptions"].as_u64().unwrap_or(0) >= 1);
    let f = findings
        .iter()
        .find(|f| f["severity"] == "corruption" && f["structure"] == structure && f["message"].as_str().unwrap().contains(text))
        .unwrap_or_else(|| panic!("{}: no {structure} corruption saying {text:?}: {findings:#?}", path.display()));
    assert!(f["host-offset"].is_u64(), "placed: {f}");
    f.clone()
}

fn qemu_vhd(dir: &Path, sub: &str, size: &str) -> PathBuf {
    let p = dir.join(format!("{sub}.vhd"));
    qemu_img(&["create", "-q", "-f", "vpc", "-o", &format!("subformat={sub}"), s(&p), size]);
    qemu_io("vpc", &p, &["write -P 1 0 3M", "write -P 2 5M 4k", "write -P 3 40M 1M"]);
    p
}

struct VhdLayout {
    len: u64,
    header: u64,
    bat: u64,
    used: Vec<(u64, u32)>,
}

fn vhd_layout(p: &Path) -> VhdLayout {
    let b = std::fs::read(p).unwrap();
    let bat = support::vhd::read_bat(&b);
    let h = support::vhd::read_dyn_header(&b);
    VhdLayout {
        len: b.len() as u64,
        header: be64(&b, 16),
        bat: h.table_offset,
        used: bat.iter().enumerate().filter(|(_, &e)| e != u32::MAX).map(|(i, &e)| (i as u64, e)).collect(),
    }
}

#[test]
fn vhd_clean_fixed_dynamic_differencing() {
    let dir = workspace();
    assert_vhd_clean(&qemu_vhd(dir.path(), "fixed", "48M"));
    let dynamic = qemu_vhd(dir.path(), "dynamic", "48M");
    assert_vhd_clean(&dynamic);
    let mut d = DiffVhd::new(&dynamic, 2 * 1024 * 1024);
    d.write_sectors(3, &pattern_bytes(1, 5 * SECTOR)).write_sectors(9000, &pattern_bytes(2, SECTOR));
    d.write(&dir.path().join("child.vhd"));
    assert_vhd_clean(d.path.as_ref().unwrap());
    let mut g = DiffVhd::child_of(&d, 512 * 1024);
    g.write_sectors(100, &pattern_bytes(3, 3 * SECTOR));
    g.write(&dir.path().join("grandchild.vhd"));
    assert_vhd_clean(g.path.as_ref().unwrap());
    // the demo image too
    assert_vhd_clean(&demo_vhd());
}

#[test]
fn vhd_bad_footer_checksum() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let l = vhd_layout(&p);
    let b = std::fs::read(&p).unwrap();
    let sum = be32(&b, (l.len - 512 + 64) as usize);
    patch_file(&p, l.len - 512 + 64, &(sum ^ 0x0101).to_be_bytes());
    let f = assert_vhd_damaged(&p, "footer", "checksum");
    assert_eq!(f["host-offset"].as_u64(), Some(l.len - 512 + 64));
    // a fixed disk too
    let fx = qemu_vhd(dir.path(), "fixed", "48M");
    let len = std::fs::metadata(&fx).unwrap().len();
    patch_file(&fx, len - 512 + 40, &[0x7f]);
    assert_vhd_damaged(&fx, "footer", "checksum");
}

#[test]
fn vhd_bad_dynamic_header_checksum() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let l = vhd_layout(&p);
    patch_file(&p, l.header + 36, &[0, 0, 0, 1]);
    assert_vhd_damaged(&p, "dynamic-header", "checksum");
}

#[test]
fn vhd_destroyed_primary_footer_reads_through_the_backup() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let want = qemu_convert_raw(&p, "vpc");
    let l = vhd_layout(&p);
    patch_file(&p, l.len - 512, &[0xa5; 512]);
    let f = assert_vhd_damaged(&p, "footer", "primary footer");
    assert_eq!(f["host-offset"].as_u64(), Some(l.len - 512));
    let got = vdiskview_ok(&["read", s(&p)]);
    assert_bytes_eq(&got, &want, "read through the backup footer");
}

#[test]
fn vhd_two_bat_entries_name_one_block() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let l = vhd_layout(&p);
    assert!(l.used.len() >= 3, "{:?}", l.used);
    let (b0, s0) = l.used[0];
    let (b1, _) = l.used[1];
    patch_file(&p, l.bat + b1 * 4, &s0.to_be_bytes());
    let f = assert_vhd_damaged(&p, "bat", "both point to sector");
    assert!(f["message"].as_str().unwrap().contains(&format!("{b0} and {b1}")), "{f}");
    assert_eq!(f["host-offset"].as_u64(), Some(l.bat + b1 * 4));
}

#[test]
fn vhd_bat_entry_past_the_end() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let l = vhd_layout(&p);
    let (b, _) = l.used[2];
    patch_file(&p, l.bat + b * 4, &(((l.len + (64 << 20)) / 512) as u32).to_be_bytes());
    let f = assert_vhd_damaged(&p, "bat", "past the end");
    assert_eq!(f["host-offset"].as_u64(), Some(l.bat + b * 4));
}

#[test]
fn vhd_block_overlapping_metadata() {
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let l = vhd_layout(&p);
    let (b, _) = l.used[1];
    patch_file(&p, l.bat + b * 4, &((l.bat / 512) as u32).to_be_bytes());
    assert_vhd_damaged(&p, "bat", "overlaps the block allocation table");
}

#[test]
fn vhd_differencing_parent_problems() {
    let dir = workspace();
    let parent = qemu_vhd(dir.path(), "dynamic", "48M");
    let mut d = DiffVhd::new(&parent, 2 * 1024 * 1024);
    d.corrupt.wrong_parent_uid = true;
    d.write_sectors(0, &pattern_bytes(4, SECTOR));
    d.write(&dir.path().join("wrong-uid.vhd"));
    assert_vhd_damaged(d.path.as_ref().unwrap(), "dynamic-header", "parent unique id");

    let mut m = DiffVhd::new(&parent, 2 * 1024 * 1024);
    m.corrupt.locator_target = Some("gone.vhd".into());
    m.write(&dir.path().join("missing-parent.vhd"));
    assert_vhd_damaged(m.path.as_ref().unwrap(), "parent-locator", "not found");

    // a locator whose data lies past the end of the file
    let mut x = DiffVhd::new(&parent, 2 * 1024 * 1024);
    x.write(&dir.path().join("locator.vhd"));
    let xp = x.path.clone().unwrap();
    let hoff = x.layout.header_offset;
    patch_file(&xp, hoff + 576 + 16, &(1u64 << 40).to_be_bytes());
    // keep the header checksum right so only the locator is wrong
    let b = std::fs::read(&xp).unwrap();
    let mut h = b[hoff as usize..hoff as usize + 1024].to_vec();
    h[36..40].fill(0);
    let sum = support::vhd::vhd_checksum(&h, 36);
    patch_file(&xp, hoff + 36, &sum.to_be_bytes());
    assert_vhd_damaged(&xp, "parent-locator", "past the end");
}

#[test]
fn vhd_damage_never_panics() {
    // every 4-byte word of the footer, header and BAT set to 0xffffffff in turn
    let dir = workspace();
    let p = qemu_vhd(dir.path(), "dynamic", "48M");
    let orig = std::fs::read(&p).unwrap();
    let l = vhd_layout(&p);
    let mut offs: Vec<u64> = (0..512).step_by(4).collect();
    offs.extend((0..1024).step_by(8).map(|o| l.header + o));
    offs.extend((0..16).map(|i| l.bat + i * 4));
    offs.extend((0..512).step_by(8).map(|o| l.len - 512 + o));
    for off in offs {
        std::fs::write(&p, &orig).unwrap();
        patch_file(&p, off, &[0xff; 4]);
        let out = vdiskview_timeout(&["check", "--output", "json", s(&p)], Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "patch at 0x{off:x}: {err}");
        assert!(matches!(out.status.code(), Some(0..=2)), "patch at 0x{off:x}: {:?} {err}", out.status);
    }
}

#[test]
fn check_time_on_a_1g_image_compared_with_qemu() {
    let dir = workspace();
    let img = build("qcow2-v3-c64k-1g", dir.path());
    let t = std::time::Instant::now();
    let (_, _, code) = ours(&img.path);
    let ours_t = t.elapsed();
    let t = std::time::Instant::now();
    let (_, qcode) = qemu_check(&img.path, "qcow2");
    let qemu_t = t.elapsed();
    assert_eq!((code, qcode), (0, 0));
    eprintln!("check of a 1 GiB qcow2: vdiskview {:?}, qemu-img {:?}", ours_t, qemu_t);
    assert!(ours_t < Duration::from_secs(20), "check took {ours_t:?}");
}

#[test]
fn clean_luks_encrypted_counts_its_encryption_header() {
    let dir = workspace();
    let p = dir.path().join("enc.qcow2");
    let secret = "secret,id=sec0,data=123456";
    qemu_img(&["create", "-q", "--object", secret, "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", s(&p), "16M"]);
    let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", s(&p));
    qemu_io_opts(&["--object", secret, "--image-opts"], Path::new(&opts), &["write -P 1 0 1M"]);
    let out = qemu_img_output(&["check", "--object", secret, "--output=json", "--image-opts", &opts]);
    let mut q: Value = serde_json::from_slice(&out.stdout).expect("qemu-img check json");
    q["filename"] = Value::String(s(&p).into());
    let (v, _, code) = ours(&p);
    assert_json_eq(&v, &q, "encrypted image");
    assert_eq!(code, out.status.code().unwrap());
    let img = vdiskview::image::open(&p, &Default::default()).unwrap();
    let Some(qc) = img.top().downcast_ref::<vdiskview::image::qcow2::Qcow2>() else { panic!() };
    let map = qc.host_map().unwrap();
    assert!(map.counts().get(&vdiskview::image::qcow2::check::ClusterRole::CryptoHeader).copied().unwrap_or(0) > 0);
}

/// The check reads adjacent L2 tables many at a time (the whole disk zeroed first allocates
/// every L2 table next to the last, and no data): findings and exit code stay qemu's.
#[test]
fn clean_adjacent_l2_tables() {
    let dir = workspace();
    let path = dir.path().join("adjacent.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&path), "640M"]);
    qemu_io("qcow2", &path, &["write -z 0 640M", "write -P 3 1000000 70000", "write -P 4 400M 1M"]);
    let (_, _, code) = assert_check_equals_qemu(&path);
    assert_eq!(code, 0);
}

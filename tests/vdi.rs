//! VDI against qemu: static and dynamic images, made empty, written with qemu-io and
//! converted from real content; `map` (JSON and human), `read`, `info` keys and `check`
//! (exit code and findings) must equal qemu's. Damaged files never panic.
mod support;

use std::path::{Path, PathBuf};

use support::*;

fn qemu_io_quiet(path: &Path, cmds: &[&str]) {
    let mut args: Vec<String> = vec!["-f".into(), "vdi".into()];
    for c in cmds {
        args.push("-c".into());
        args.push(c.to_string());
    }
    args.push(s(path).into());
    let out = run_with_timeout(std::process::Command::new("qemu-io").args(&args), DEFAULT_TIMEOUT);
    assert!(out.status.success(), "qemu-io failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("failed"), "qemu-io: {}", String::from_utf8_lossy(&out.stdout));
}

fn compare_all(path: &Path) {
    let p = s(path);
    let expected = qemu_map_json(path, "vdi");
    let actual = vdiskview_json(&["map", "--output", "json", p]);
    assert_json_eq(&actual, &expected, &format!("map --output json {p}"));
    let q = qemu_map_human(path, "vdi");
    let v = vdiskview(&["map", p]);
    assert!(v.status.success(), "vdiskview map {p}: {}", String::from_utf8_lossy(&v.stderr));
    assert_eq!(String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&q.stdout), "map {p} (human)");
    let raw = qemu_convert_raw(path, "vdi");
    assert_bytes_eq(&vdiskview_ok(&["read", p]), &raw, &format!("read {p}"));
    let qi = qemu_info_json(path, "vdi");
    let vi = vdiskview_json(&["info", "--output", "json", p]);
    for key in ["virtual-size", "format", "cluster-size", "actual-size", "dirty-flag", "backing-filename", "format-specific"] {
        assert_eq!(vi.get(key), qi.get(key), "info {p}: key {key}\nvdiskview:\n{}\nqemu:\n{}", pretty(&vi), pretty(&qi));
    }
    check_same(path);
}

fn check_same(path: &Path) {
    let q = qemu_img_output(&["check", "-f", "vdi", s(path)]);
    let v = vdiskview(&["check", s(path)]);
    assert_eq!(v.status.code(), q.status.code(), "check {}: {}", path.display(), String::from_utf8_lossy(&v.stdout));
    // qemu prints its findings on stderr ("ERROR: ..."): ours name the same things
    for line in String::from_utf8_lossy(&q.stderr).lines().filter(|l| l.starts_with("ERROR: ")) {
        let msg = &line["ERROR: ".len()..];
        assert!(String::from_utf8_lossy(&v.stdout).contains(msg), "check {}: missing {msg:?}", path.display());
    }
}

fn create(dir: &Path, name: &str, opts: &[&str], size: &str) -> PathBuf {
    let mut args = vec!["create", "-q", "-f", "vdi"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[name, size]);
    qemu_img_in(dir, &args);
    dir.join(name)
}

const WRITES: &[&str] = &["write -P 0x5a 100k 200k", "write -P 0x11 10M 64k", "write -z 20M 2M", "write -P 0x22 63M 1M", "write -P 0x44 5000 3000"];

#[test]
fn dynamic_empty_and_written() {
    let dir = workspace();
    let p = create(dir.path(), "d.vdi", &[], "64M");
    compare_all(&p);
    qemu_io_quiet(&p, WRITES);
    compare_all(&p);
}

#[test]
fn static_empty_and_written() {
    let dir = workspace();
    let p = create(dir.path(), "s.vdi", &["-o", "static=on"], "64M");
    compare_all(&p);
    qemu_io_quiet(&p, WRITES);
    compare_all(&p);
}

#[test]
fn converted_content() {
    let dir = workspace();
    let mut content = pattern_bytes(11, 5 << 20);
    content[2 << 20..3 << 20].fill(0);
    content.resize(9 << 20, 0);
    let raw = dir.path().join("src.raw");
    std::fs::write(&raw, &content).unwrap();
    for (name, opts) in [("c.vdi", "static=off"), ("cs.vdi", "static=on")] {
        let p = dir.path().join(name);
        qemu_img(&["convert", "-f", "raw", "-O", "vdi", "-o", opts, s(&raw), s(&p)]);
        compare_all(&p);
        assert_bytes_eq(&vdiskview_ok(&["read", s(&p)]), &content, name);
    }
}

#[test]
fn odd_size_and_discarded_blocks() {
    let dir = workspace();
    let p = create(dir.path(), "o.vdi", &[], "3M");
    qemu_io_quiet(&p, &["write -P 1 0 3M"]);
    let mut b = std::fs::read(&p).unwrap();
    let bmap = u32::from_le_bytes(b[340..344].try_into().unwrap()) as usize;
    // block 1 discarded (reads as zero), allocated count fixed up: still clean for qemu
    b[bmap + 4..bmap + 8].copy_from_slice(&0xffff_fffeu32.to_le_bytes());
    b[388..392].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    compare_all(&p);
}

#[test]
fn check_findings_like_qemu() {
    let dir = workspace();
    let p = create(dir.path(), "k.vdi", &[], "8M");
    qemu_io_quiet(&p, &["write -P 1 0 3M"]);
    let good = std::fs::read(&p).unwrap();
    let bmap = u32::from_le_bytes(good[340..344].try_into().unwrap()) as usize;
    // two blocks pointing at one
    let mut b = good.clone();
    b[bmap + 4..bmap + 8].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    check_same(&p);
    // an index too large, and a wrong allocated count
    let mut b = good.clone();
    b[bmap + 8..bmap + 12].copy_from_slice(&1000u32.to_le_bytes());
    b[388..392].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    check_same(&p);
    let v = vdiskview(&["check", s(&p)]);
    assert_eq!(v.status.code(), Some(2));
}

#[test]
fn damaged_never_panic() {
    let dir = workspace();
    let p = create(dir.path(), "g.vdi", &[], "16M");
    qemu_io_quiet(&p, &["write -P 1 0 2M", "write -P 2 9M 64k"]);
    let good = std::fs::read(&p).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [10usize, 70, 400, 512, 600, 1024, good.len() / 2] {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for off in (68..456).step_by(4) {
        for val in [0u32, 1, 0x8000_0000, 0xffff_ffff, 0x0001_0001] {
            let mut b = good.clone();
            b[off..off + 4].copy_from_slice(&val.to_le_bytes());
            cases.push((format!("field at {off} = {val:#x}"), b));
        }
    }
    let bmap = u32::from_le_bytes(good[340..344].try_into().unwrap()) as usize;
    let mut b = good.clone();
    for i in 0..16 {
        b[bmap + 4 * i..bmap + 4 * i + 4].copy_from_slice(&(0x7fff_0000u32 + i as u32).to_le_bytes());
    }
    cases.push(("block map past EOF".into(), b));
    for (what, bytes) in cases {
        let f = dir.path().join("bad.vdi");
        std::fs::write(&f, &bytes).unwrap();
        assert_commands_survive(&f, &what);
    }
}

#[test]
fn tables_list_header_and_block_map() {
    let dir = workspace();
    let p = create(dir.path(), "t.vdi", &[], "4M");
    qemu_io_quiet(&p, &["write -P 1 1M 4k"]);
    let t = vdiskview_text(&["tables", s(&p)]);
    for needle in ["Signature : 0xbeda107f", "Image type : 1 (dynamic)", "Block#0000 -> 0xffffffff : not allocated", "Block#0001 -> 0x00000000 : data"] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
}

/// `write` allocates as qemu-io does: the same file byte for byte, `qemu-img compare`
/// identical, `qemu-img check` clean.
#[test]
fn write_like_qemu_io() {
    let dir = workspace();
    for opts in ["static=off", "static=on"] {
        let a = create(dir.path(), "a.vdi", &["-o", opts], "16M");
        let b = dir.path().join("b.vdi");
        std::fs::copy(&a, &b).unwrap();
        for (pat, off, len) in [(0x5a, 100 << 10, 200 << 10), (0x11, 10 << 20, 64 << 10), (0x22, 3000, 5000), (0x33, 15 << 20, 1 << 20)] {
            qemu_io_quiet(&a, &[&format!("write -P {pat} {off} {len}")]);
            vdiskview_ok(&["write", "--offset", &off.to_string(), "--pattern", &pat.to_string(), "--length", &len.to_string(), s(&b)]);
        }
        qemu_img(&["compare", "-f", "vdi", "-F", "vdi", s(&a), s(&b)]);
        let q = qemu_img_output(&["check", "-f", "vdi", s(&b)]);
        assert!(q.status.success(), "{opts}: {}", String::from_utf8_lossy(&q.stdout));
        assert_bytes_eq(&std::fs::read(&b).unwrap(), &std::fs::read(&a).unwrap(), opts);
    }
}

/// A qcow2 overlay over a VDI.
#[test]
fn qcow2_over_vdi() {
    let dir = workspace();
    let base = create(dir.path(), "base.vdi", &[], "16M");
    qemu_io_quiet(&base, &["write -P 0x10 0 3M"]);
    qemu_img_in(dir.path(), &["create", "-q", "-f", "qcow2", "-b", "base.vdi", "-F", "vdi", "top.qcow2"]);
    let top = dir.path().join("top.qcow2");
    qemu_io("qcow2", &top, &["write -P 3 1M 64k"]);
    let p = s(&top);
    assert_json_eq(&vdiskview_json(&["map", "--output", "json", p]), &qemu_map_json(&top, "qcow2"), "map qcow2 over vdi");
    assert_bytes_eq(&vdiskview_ok(&["read", p]), &qemu_convert_raw(&top, "qcow2"), "read qcow2 over vdi");
}

/// `where --file` finds a data block by file offset on demand (the block map read
/// backwards): for each data run of qemu's map, bytes inside it name the guest byte qemu maps
/// there; the header and the block map are named as such.
#[test]
fn where_file_offset_finds_blocks() {
    let dir = workspace();
    let p = dir.path().join("w.vdi");
    qemu_img(&["create", "-q", "-f", "vdi", s(&p), "32M"]);
    // written out of order: file order differs from disk order
    qemu_io_quiet(&p, &["write -P 1 20M 4k", "write -P 2 1M 8k", "write -P 3 7M 1M", "write -P 4 31M 512"]);
    assert_where_file_finds_data_and_header(&p, "vdi");
    let bmap = vdiskview_json(&["info", "--output", "json", s(&p)])["vdiskview"]["layers"][0]["vdi"]["block-map-offset"].as_u64().unwrap();
    let w = vdiskview_json(&["where", s(&p), &format!("{:#x}", bmap + 4), "--file", "--output", "json"]);
    assert_eq!(w["structure"], "block-map", "{w}");
}

//! `vdiskview diff` against the brute-force truth: both disks converted to raw by qemu-img and
//! compared byte by byte; the first difference and the exit status against `qemu-img compare`.
mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

/// Differing byte ranges of two raw disks (the shorter one zero-extended), merged.
fn brute_force(a: &[u8], b: &[u8]) -> Vec<(u64, u64)> {
    let n = a.len().max(b.len());
    let at = |v: &[u8], i: usize| v.get(i).copied().unwrap_or(0);
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut i = 0;
    while i < n {
        if at(a, i) != at(b, i) {
            let s = i;
            while i < n && at(a, i) != at(b, i) {
                i += 1;
            }
            out.push((s as u64, (i - s) as u64));
        } else {
            i += 1;
        }
    }
    out
}

/// vdiskview's runs with adjacent ones joined (runs split where a side's extent changes).
fn joined_runs(v: &Value) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in v["runs"].as_array().expect("runs") {
        let (s, l) = (r["start"].as_u64().unwrap(), r["length"].as_u64().unwrap());
        match out.last_mut() {
            Some(last) if last.0 + last.1 == s => last.1 += l,
            _ => out.push((s, l)),
        }
    }
    out
}

/// `qemu-img compare`'s exit status and the offset of its "Content mismatch at offset N!".
fn qemu_compare(args: &[&str]) -> (i32, Option<u64>) {
    let out = qemu_img_output(&[&["compare"], args].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let off = text
        .split("Content mismatch at offset ")
        .nth(1)
        .and_then(|t| t.split('!').next())
        .and_then(|n| n.trim().parse().ok());
    (out.status.code().unwrap_or(-1), off)
}

fn diff_json(args: &[&str]) -> (i32, Value) {
    let out = vdiskview(&[&["diff"], args, &["--output", "json"]].concat());
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "vdiskview diff {:?}: exit {} stderr {}", args, code, String::from_utf8_lossy(&out.stderr));
    (code, serde_json::from_slice(&out.stdout).expect("diff JSON"))
}

#[track_caller]
fn check_pair(a: &Path, fa: &str, b: &Path, fb: &str) -> Value {
    let truth = brute_force(&qemu_convert_raw(a, fa), &qemu_convert_raw(b, fb));
    let (code, v) = diff_json(&[s(a), s(b)]);
    assert_eq!(joined_runs(&v), truth, "runs of {} vs {}", s(a), s(b));
    assert_eq!(v["differing-bytes"].as_u64().unwrap(), truth.iter().map(|r| r.1).sum::<u64>());
    assert_eq!(v["equal"].as_bool().unwrap(), truth.is_empty());
    let (qcode, qoff) = qemu_compare(&["-f", fa, "-F", fb, s(a), s(b)]);
    assert_eq!(code, qcode, "exit status as qemu-img compare");
    assert_eq!(v["first-difference"].as_u64(), qoff, "first difference as qemu-img compare");
    v
}

#[test]
fn before_and_after_random_writes() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "64M"]);
    let pat = pattern_file(dir.path(), 7, 300_000);
    qemu_io("qcow2", &a, &["write -P 0x11 0 1M", "write -z 4M 64k", &format!("write -s {} 8M 300000", s(&pat))]);
    let b = dir.path().join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    check_pair(&a, "qcow2", &b, "qcow2");
    // writes at odd offsets and lengths: byte-exact runs, some equal to what was there
    qemu_io(
        "qcow2",
        &b,
        &["write -P 0x22 1000 3000", "write -P 0x11 512k 4k", "write -P 0x33 20M 64k", "write -z 8M 4096", "write -P 0 40M 1M"],
    );
    let v = check_pair(&a, "qcow2", &b, "qcow2");
    assert!(v["runs"].as_array().unwrap().len() >= 3);
}

#[test]
fn chain_top_against_its_base_and_backing_flag() {
    let dir = workspace();
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "32M"]);
    qemu_io("qcow2", &base, &["write -P 1 0 2M"]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&base), "-F", "qcow2", s(&top)]);
    qemu_io("qcow2", &top, &["write -P 2 1M 64k", "write -P 1 1536k 64k", "write -z 3M 128k"]);
    // the chain's content against the base alone
    let v = check_pair(&base, "qcow2", &top, "qcow2");
    // --backing compares the same two contents without a second file
    let (code, w) = diff_json(&[s(&top), "--backing"]);
    assert_eq!(code, 1);
    assert_eq!(joined_runs(&w), joined_runs(&v));
    // only the top layer's ranges were read: less than what it allocates, times two
    assert!(w["bytes-read"].as_u64().unwrap() <= 2 * (64 + 64 + 128) * 1024, "{}", w["bytes-read"]);
    // a chain whose top holds nothing differs in nothing, read or not
    let empty = dir.path().join("empty.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&base), "-F", "qcow2", s(&empty)]);
    let (code, w) = diff_json(&[s(&empty), "--backing"]);
    assert_eq!((code, w["equal"].as_bool(), w["bytes-read"].as_u64()), (0, Some(true), Some(0)));
}

#[test]
fn snapshot_against_active_disk() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "16M"]);
    qemu_io("qcow2", &a, &["write -P 5 0 1M"]);
    qemu_img(&["snapshot", "-c", "s1", s(&a)]);
    qemu_io("qcow2", &a, &["write -P 6 256k 8k", "write -P 7 10M 4k"]);
    qemu_img(&["snapshot", "-c", "s2", s(&a)]);
    let snap = dir.path().join("s1.raw");
    qemu_img(&["convert", "-l", "snapshot.name=s1", "-O", "raw", s(&a), s(&snap)]);
    let truth = brute_force(&std::fs::read(&snap).unwrap(), &qemu_convert_raw(&a, "qcow2"));
    let (code, v) = diff_json(&[s(&a), "--snapshot", "s1"]);
    assert_eq!((code, joined_runs(&v)), (1, truth.clone()));
    let (code, v) = diff_json(&[s(&a), "--snapshot", "s1", "--snapshot", "s2"]);
    assert_eq!((code, joined_runs(&v)), (1, truth));
    // shared clusters were not read: two 4 KiB and 8 KiB changes, a cluster each side
    assert!(v["bytes-read"].as_u64().unwrap() <= 4 * 65536, "{}", v["bytes-read"]);
}

#[test]
fn formats_and_sizes_differ() {
    let dir = workspace();
    let q = dir.path().join("q.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&q), "20M"]);
    qemu_io("qcow2", &q, &["write -P 9 3M 1M"]);
    // same content as a dynamic VHD (its size is rounded up to the CHS geometry)
    let v = dir.path().join("v.vhd");
    qemu_img(&["convert", "-f", "qcow2", "-O", "vpc", s(&q), s(&v)]);
    let r = check_pair(&q, "qcow2", &v, "vpc");
    assert_eq!(r["equal"].as_bool(), Some(true));
    // a longer disk whose tail is not zero differs there
    let big = dir.path().join("big.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", s(&q), s(&big)]);
    qemu_img(&["resize", "-q", "-f", "raw", s(&big), "24M"]);
    qemu_io("raw", &big, &["write -P 3 22M 512"]);
    check_pair(&q, "qcow2", &big, "raw");
    // --strict: a size difference is a difference (qemu-img compare -s: exit 1)
    let out = vdiskview(&["diff", "--strict", s(&q), s(&big)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(qemu_compare(&["-s", "-f", "qcow2", "-F", "raw", s(&q), s(&big)]).0, 1);
}

#[test]
fn errors_exit_2() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "1M"]);
    for args in [
        vec!["diff", s(&a), "/nonexistent.qcow2"],
        vec!["diff", s(&a), "--backing"],
        vec!["diff", s(&a), "--snapshot", "nope"],
        vec!["diff", s(&a)],
    ] {
        let out = vdiskview(&args);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{:?}", args);
    }
}

/// A bitmap added when the copy was taken: writes while it is enabled are dirty; writes made
/// while it is disabled are what `--verify-against` must report, exactly.
#[test]
fn bitmap_verified_against_a_copy_and_a_snapshot() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "16M"]);
    qemu_io("qcow2", &a, &["write -P 1 0 4M"]);
    let old = dir.path().join("old.qcow2");
    std::fs::copy(&a, &old).unwrap();
    qemu_img(&["snapshot", "-c", "start", s(&a)]);
    qemu_img(&["bitmap", "--add", "-g", "64k", s(&a), "b0"]);
    qemu_io("qcow2", &a, &["write -P 2 1M 64k", "write -P 3 8M 4k"]);
    // an honest bitmap: nothing missed, exit 0
    for against in [s(&old), "start"] {
        let out = vdiskview(&["bitmaps", s(&a), "b0", "--verify-against", against, "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["missed"].as_array().map(|m| m.len()), Some(0));
        assert_eq!(v["changed-bytes"].as_u64(), Some(64 * 1024 + 4096));
        // the 4 KiB write dirtied a whole 64 KiB granule
        assert_eq!(v["dirty-unchanged-bytes"].as_u64(), Some(65536 - 4096));
    }
    qemu_img(&["bitmap", "--disable", s(&a), "b0"]);
    qemu_io("qcow2", &a, &["write -P 4 12M 8k", "write -P 5 1M 4k", "write -P 6 2M 100"]);
    for against in [s(&old), "start"] {
        let out = vdiskview(&["bitmaps", s(&a), "b0", "--verify-against", against, "--output", "json"]);
        assert_eq!(out.status.code(), Some(1));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let missed: Vec<(u64, u64)> =
            v["missed"].as_array().unwrap().iter().map(|r| (r["start"].as_u64().unwrap(), r["length"].as_u64().unwrap())).collect();
        // 1M+4k fell in a granule already dirty; the other two are missed, byte for byte
        assert_eq!(missed, vec![(2 << 20, 100), (12 << 20, 8192)]);
    }
}

/// The TUI (drawn headless by `render`): `--diff` marks the differing grid cells, names the
/// count in the status line, `}` goes to the first difference and `{` back to the previous one.
#[test]
fn tui_marks_differences_and_steps_through_them() {
    let dir = workspace();
    let a = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&a), "16M"]);
    qemu_io("qcow2", &a, &["write -P 1 0 4M"]);
    let b = dir.path().join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    qemu_io("qcow2", &b, &["write -P 2 1M 4k", "write -P 3 3M 512"]);
    let screen = |keys: &str| vdiskview_text(&["render", s(&b), "--diff", s(&a), "--size", "160x48", "--keys", keys]);
    let first = screen("");
    assert!(first.contains("≠≠"), "differing cells marked:\n{}", first);
    assert!(first.contains("2 diff(s)"), "{}", first);
    let next = screen("}");
    assert!(next.contains("guest 0x100000"), "}} goes to the first difference:\n{}", next.lines().last().unwrap_or(""));
    // the other side's bytes of the cursor's row, the differing ones bracketed
    assert!(next.contains("other 0x100000: [01]"), "{}", next.lines().last().unwrap_or(""));
    let second = screen("} }");
    assert!(second.contains("guest 0x300000"), "{}", second.lines().last().unwrap_or(""));
    let back = screen("} } {");
    assert!(back.contains("guest 0x100000"), "{}", back.lines().last().unwrap_or(""));
    // the same with the chain's backing: a top with no data differs in nothing
    let top = dir.path().join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&a), "-F", "qcow2", s(&top)]);
    let t = vdiskview_text(&["render", s(&top), "--diff-backing", "--size", "160x48"]);
    assert!(t.contains("no differences") && !t.contains("≠≠"), "{}", t);
}

//! Internal snapshots and persistent dirty bitmaps of qcow2 images, made by qemu-img
//! (`snapshot -c`, `bitmap --add/--disable`) and qemu-io writes, judged against qemu:
//! `qemu-img info --output=json` (snapshots, format-specific bitmaps), `qemu-img convert -l
//! snapshot.name=` (a snapshot's guest disk) and `qemu-nbd -B NAME` + `nbdinfo --map`
//! (a bitmap's dirty extents).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// qemu-nbd serving one image read-only on a unix socket in the test's directory; killed
/// when dropped, whatever the test's outcome.
struct Nbd {
    child: Child,
    socket: PathBuf,
}

impl Nbd {
    fn serve(dir: &Path, image: &Path, bitmap: &str) -> Nbd {
        let socket = dir.join(format!("nbd-{}.sock", bitmap));
        let child = Command::new("qemu-nbd")
            .args(["-r", "--persistent", "-f", "qcow2", "-k", s(&socket), "-B", bitmap, s(image)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-nbd");
        let mut nbd = Nbd { child, socket };
        let start = Instant::now();
        while !nbd.socket.exists() {
            if let Ok(Some(st)) = nbd.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = nbd.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("qemu-nbd exited ({st}) before serving: {err}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "qemu-nbd did not create {}", nbd.socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        nbd
    }

    /// `nbdinfo --json --map=qemu:dirty-bitmap:NAME`, merged into runs: [(start, length, dirty)].
    fn dirty_map(&self, bitmap: &str) -> Vec<(u64, u64, bool)> {
        let uri = format!("nbd+unix:///?socket={}", s(&self.socket));
        let out = run_with_timeout(
            Command::new("nbdinfo").args(["--json", &format!("--map=qemu:dirty-bitmap:{}", bitmap), &uri]),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "nbdinfo failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("nbdinfo json");
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        for e in v.as_array().expect("nbdinfo map array") {
            let (off, len) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            let dirty = e["type"].as_u64().unwrap() & 1 != 0;
            match runs.last_mut() {
                Some(l) if l.2 == dirty && l.0 + l.1 == off => l.1 += len,
                _ => runs.push((off, len, dirty)),
            }
        }
        runs
    }
}

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ours_map(image: &Path, bitmap: &str) -> Vec<(u64, u64, bool)> {
    let v = vdiskview_json(&["bitmaps", s(image), bitmap, "--output", "json"]);
    v.as_array()
        .expect("extents array")
        .iter()
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["dirty"].as_bool().unwrap()))
        .collect()
}

#[track_caller]
fn assert_map_matches_nbd(dir: &Path, image: &Path, bitmap: &str) -> Vec<(u64, u64, bool)> {
    let ours = ours_map(image, bitmap);
    let theirs = {
        let nbd = Nbd::serve(dir, image, bitmap);
        nbd.dirty_map(bitmap)
    };
    assert_eq!(ours, theirs, "dirty extents of bitmap {bitmap} in {}: vdiskview vs qemu-nbd -B", image.display());
    ours
}

/// An image with two snapshots (data changed between them) and two bitmaps, one disabled
/// after some writes, then more writes.
fn snap_and_bitmaps(dir: &Path) -> PathBuf {
    let p = dir.join("sb.qcow2");
    let pat = pattern_file(dir, 3, 300_000);
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "64M"]);
    qemu_io("qcow2", &p, &["write -P 0x11 0 1M", &format!("write -s {} 5M 300000", s(&pat))]);
    qemu_img(&["snapshot", "-c", "first", s(&p)]);
    qemu_io("qcow2", &p, &["write -P 0x22 512k 1M", "write -z 5M 64k"]);
    qemu_img(&["snapshot", "-c", "second snap", s(&p)]);
    qemu_img(&["bitmap", "--add", s(&p), "enabled"]);
    qemu_img(&["bitmap", "--add", "-g", "128k", s(&p), "disabled"]);
    qemu_io("qcow2", &p, &["write -P 0x33 3M 100k", "write -P 0x34 20M 4k"]);
    qemu_img(&["bitmap", "--disable", s(&p), "disabled"]);
    qemu_io("qcow2", &p, &["write -P 0x44 7M 300k", "write -P 0x45 65000k 100"]);
    p
}

#[test]
fn info_snapshots_and_bitmaps_equal_qemu() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let q = qemu_info_json(&p, "qcow2");
    let v = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert!(q["snapshots"].as_array().is_some_and(|a| a.len() == 2), "qemu lists two snapshots: {}", pretty(&q));
    assert_json_eq(&v["snapshots"], &q["snapshots"], "info snapshots");
    assert_json_eq(&v["format-specific"], &q["format-specific"], "info format-specific (bitmaps between lazy-refcounts and refcount-bits)");
    // qemu's key order inside format-specific.data
    let keys: Vec<&String> = v["format-specific"]["data"].as_object().unwrap().keys().collect();
    let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(pos("lazy-refcounts") < pos("bitmaps") && pos("bitmaps") < pos("refcount-bits"), "{keys:?}");
    // human output names the snapshots and bitmaps
    let h = vdiskview_text(&["info", s(&p)]);
    assert!(h.contains("Snapshot list:") && h.contains("second snap") && h.contains("name: disabled"), "{h}");
}

#[test]
fn info_snapshot_fields_patched_equal_qemu() {
    // VM clock, VM state size and a disabled icount (-1), which qemu leaves out of the JSON
    let dir = workspace();
    let p = dir.path().join("clock.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "8M"]);
    qemu_img(&["snapshot", "-c", "a", s(&p)]);
    qemu_img(&["snapshot", "-c", "b", s(&p)]);
    let bytes = std::fs::read(&p).unwrap();
    let table = be64(&bytes, 64) as usize;
    // first entry: vm_clock_nsec = 3723.456789012 s, extra data: icount = -1
    patch_file(&p, table as u64 + 24, &3_723_456_789_012u64.to_be_bytes());
    let extra = be32(&bytes, table + 36);
    assert!(extra >= 24, "qemu 10 writes icount in the extra data ({extra} bytes)");
    patch_file(&p, table as u64 + 40 + 16, &u64::MAX.to_be_bytes());
    let q = qemu_info_json(&p, "qcow2");
    let v = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert!(q["snapshots"][0].get("icount").is_none(), "qemu omits a disabled icount: {}", pretty(&q));
    assert_json_eq(&v["snapshots"], &q["snapshots"], "patched snapshot fields");
}

#[test]
fn read_snapshot_equals_qemu_convert() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let current = qemu_convert_raw(&p, "qcow2");
    for (sel, param) in [("first", "snapshot.name=first"), ("second snap", "snapshot.name=second snap"), ("1", "snapshot.id=1")] {
        let out = dir.path().join("snap.raw");
        let _ = std::fs::remove_file(&out);
        qemu_img(&["convert", "-f", "qcow2", "-O", "raw", "-l", param, s(&p), s(&out)]);
        let want = std::fs::read(&out).unwrap();
        let got = vdiskview_ok(&["read", s(&p), "--snapshot", sel]);
        assert_bytes_eq(&got, &want, &format!("read --snapshot {sel}"));
        assert_ne!(got, current, "snapshot {sel} differs from the current disk");
    }
    // a range of a snapshot, and the current disk is untouched by the option's absence
    let part = vdiskview_ok(&["read", s(&p), "--snapshot", "first", "--offset", "512k", "--length", "4k"]);
    assert!(part.iter().all(|&b| b == 0x11), "first snapshot holds 0x11 at 512k");
    let now = vdiskview_ok(&["read", s(&p), "--offset", "512k", "--length", "4k"]);
    assert!(now.iter().all(|&b| b == 0x22));
}

#[test]
fn read_snapshot_of_resized_image_has_the_snapshot_size() {
    let dir = workspace();
    let p = dir.path().join("grow.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "10M"]);
    qemu_io("qcow2", &p, &["write -P 1 9M 1M"]);
    qemu_img(&["snapshot", "-c", "small", s(&p)]);
    qemu_img(&["resize", "-q", s(&p), "20M"]);
    qemu_io("qcow2", &p, &["write -P 2 15M 1M", "write -P 3 9M 4k"]);
    let out = dir.path().join("small.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=small", s(&p), s(&out)]);
    let want = std::fs::read(&out).unwrap();
    let got = vdiskview_ok(&["read", s(&p), "--snapshot", "small"]);
    // qemu-img convert -l reads the snapshot at the image's current size (zeros past the
    // snapshot's end); the snapshot's own disk is the 10 MiB it recorded
    assert_eq!(got.len() as u64, 10 * MIB);
    assert_bytes_eq(&got, &want[..got.len()], "snapshot of the smaller disk");
    assert!(want[got.len()..].iter().all(|&b| b == 0));
}

#[test]
fn read_unknown_snapshot_and_snapshot_of_vhd_are_clean_errors() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let out = vdiskview(&["read", s(&p), "--snapshot", "nope"]);
    assert_clean_error(&out, "unknown snapshot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("second snap"), "names the snapshots there are: {err}");
    let v = dir.path().join("d.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", s(&v), "4M"]);
    assert_clean_error(&vdiskview(&["read", s(&v), "--snapshot", "x"]), "snapshot of a VHD");
}

#[test]
fn bitmap_extents_equal_qemu_nbd() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let en = assert_map_matches_nbd(dir.path(), &p, "enabled");
    let dis = assert_map_matches_nbd(dir.path(), &p, "disabled");
    // the enabled bitmap saw every write after its creation, the disabled one stopped
    let dirty_at = |m: &[(u64, u64, bool)], off: u64| m.iter().any(|&(s0, l, d)| d && off >= s0 && off < s0 + l);
    assert!(dirty_at(&en, 7 * MIB) && !dirty_at(&dis, 7 * MIB));
    assert!(dirty_at(&en, 3 * MIB) && dirty_at(&dis, 3 * MIB));
    assert!(!dirty_at(&en, 0), "written before the bitmap existed");
    // extents cover the disk exactly
    let total: u64 = en.iter().map(|e| e.1).sum();
    assert_eq!(total, 64 * MIB);
}

#[test]
fn bitmap_extents_several_table_entries_and_odd_disk_size() {
    // 512-byte clusters and granularity: one bitmap cluster covers 2 MiB, so a 7.5 MiB disk
    // (not a multiple of a bitmap cluster's coverage) has four table entries, some all-zero
    let dir = workspace();
    let p = dir.path().join("small-clusters.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", s(&p), &(7 * MIB + 512 * KIB + 1536).to_string()]);
    qemu_img(&["bitmap", "--add", "-g", "512", s(&p), "fine"]);
    qemu_img(&["bitmap", "--add", "-g", "64k", s(&p), "coarse"]);
    qemu_io(
        "qcow2",
        &p,
        &["write -P 1 1000 3000", "write -P 2 2M 512", &format!("write -P 3 {} 1536", 7 * MIB + 512 * KIB), "write -P 4 5M 700k"],
    );
    let fine = assert_map_matches_nbd(dir.path(), &p, "fine");
    assert_map_matches_nbd(dir.path(), &p, "coarse");
    assert_eq!(fine.last().map(|e| e.0 + e.1), Some(7 * MIB + 512 * KIB + 1536));
    let lst = vdiskview_json(&["bitmaps", s(&p), "--output", "json"]);
    let f = lst.as_array().unwrap().iter().find(|b| b["name"] == "fine").unwrap();
    assert_eq!(f["table-size"], json!(4), "{}", pretty(&lst));
    assert_eq!(f["granularity"], json!(512));
}

#[test]
fn bitmap_all_ones_table_entry_reads_as_qemu_reads_it() {
    // qemu never writes the all-ones flag itself; set it by hand and let qemu-nbd judge
    let dir = workspace();
    let p = dir.path().join("ones.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", s(&p), "8M"]);
    qemu_img(&["bitmap", "--add", "-g", "512", s(&p), "b"]);
    qemu_io("qcow2", &p, &["write -P 1 100k 4k"]);
    let bytes = std::fs::read(&p).unwrap();
    let v = vdiskview_json(&["bitmaps", s(&p), "--output", "json"]);
    let table = v[0]["table-offset"].as_u64().unwrap() as usize;
    assert_eq!(be64(&bytes, table + 8), 0, "entry 1 starts all-zero");
    patch_file(&p, table as u64 + 8, &1u64.to_be_bytes()); // entry 1: all ones
    let m = assert_map_matches_nbd(dir.path(), &p, "b");
    assert!(m.contains(&(2 * MIB, 2 * MIB, true)), "{m:?}");
}

#[test]
fn bitmap_flags_in_use_equal_qemu_info() {
    let dir = workspace();
    let p = dir.path().join("inuse.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "8M"]);
    qemu_img(&["bitmap", "--add", s(&p), "x"]);
    qemu_img(&["bitmap", "--add", s(&p), "y"]);
    qemu_img(&["bitmap", "--disable", s(&p), "y"]);
    let v = vdiskview_json(&["bitmaps", s(&p), "--output", "json"]);
    let dir_entry = v[0]["directory-entry-offset"].as_u64().unwrap();
    // set in_use on x (auto stays set)
    patch_file(&p, dir_entry + 12, &3u32.to_be_bytes());
    let q = qemu_info_json(&p, "qcow2");
    let ours = vdiskview_json(&["info", "--output", "json", s(&p)]);
    assert_json_eq(&ours["format-specific"]["data"]["bitmaps"], &q["format-specific"]["data"]["bitmaps"], "in-use flag");
    assert_eq!(q["format-specific"]["data"]["bitmaps"][0]["flags"], json!(["in-use", "auto"]));
    // qemu-nbd -B refuses an inconsistent bitmap: so does `bitmaps NAME`, unless forced
    let out = vdiskview(&["bitmaps", s(&p), "x"]);
    assert_clean_error(&out, "bitmaps of an in-use bitmap");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "names the in-use flag");
    let out = vdiskview(&["bitmaps", s(&p), "x", "--force"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "warns about an in-use bitmap");
}

#[test]
fn bitmaps_command_lists_and_refuses_unknown_names() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let h = vdiskview_text(&["bitmaps", s(&p)]);
    assert!(h.contains("enabled") && h.contains("disabled") && h.contains("131072") && h.contains("auto"), "{h}");
    let j = vdiskview_json(&["bitmaps", s(&p), "--output", "json"]);
    let names: Vec<&str> = j.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["enabled", "disabled"]);
    assert_eq!(j[0]["flags"], json!(["auto"]));
    assert_eq!(j[1]["flags"], json!([]));
    let hmap = vdiskview_text(&["bitmaps", s(&p), "enabled"]);
    assert!(hmap.lines().any(|l| l.trim_end().ends_with("dirty")), "{hmap}");
    let out = vdiskview(&["bitmaps", s(&p), "missing"]);
    assert_clean_error(&out, "unknown bitmap");
    assert!(String::from_utf8_lossy(&out.stderr).contains("enabled"));
    let plain = dir.path().join("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&plain), "1M"]);
    assert_eq!(vdiskview_json(&["bitmaps", s(&plain), "--output", "json"]), json!([]));
}

#[test]
fn tables_and_where_name_snapshot_and_bitmap_structures() {
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let t = vdiskview_text(&["tables", s(&p)]);
    assert!(t.contains("Snapshot table (file offset") && t.contains("name 'second snap'"), "{t}");
    assert!(t.contains("Bitmap directory (file offset") && t.contains("'disabled' granularity 131072"), "{t}");
    let bytes = std::fs::read(&p).unwrap();
    let sn_table = be64(&bytes, 64);
    let w = vdiskview_json(&["where", s(&p), &format!("0x{:x}", sn_table), "--file", "--output", "json"]);
    assert_eq!(w["structure"], json!("snapshot-table"), "{}", pretty(&w));
    let sn_l1 = be64(&bytes, sn_table as usize);
    let w = vdiskview_json(&["where", s(&p), &format!("0x{:x}", sn_l1), "--file", "--output", "json"]);
    assert_eq!(w["structure"], json!("l1"), "{}", pretty(&w));
    let j = vdiskview_json(&["bitmaps", s(&p), "--output", "json"]);
    let table = j[0]["table-offset"].as_u64().unwrap();
    let w = vdiskview_json(&["where", s(&p), &format!("0x{:x}", table), "--file", "--output", "json"]);
    assert_eq!(w["structure"], json!("bitmap-table"), "{}", pretty(&w));
}

#[test]
fn host_map_roles() {
    use vdiskview::image::qcow2::check::ClusterRole;
    let dir = workspace();
    let p = snap_and_bitmaps(dir.path());
    let img = vdiskview::image::open(&p, &Default::default()).unwrap();
    let Some(q) = img.top().downcast_ref::<vdiskview::image::qcow2::Qcow2>() else { panic!("qcow2") };
    let map = q.host_map().unwrap();
    let cs = q.cluster_size();
    let h = &q.header;
    assert_eq!(map.role(0), ClusterRole::Header);
    assert_eq!(map.role(h.l1_table_offset / cs), ClusterRole::L1);
    assert_eq!(map.role(h.refcount_table_offset / cs), ClusterRole::RefcountTable);
    assert_eq!(map.role(h.snapshots_offset / cs), ClusterRole::SnapshotTable);
    for sn in q.snapshots().unwrap() {
        assert_eq!(map.role(sn.l1_table_offset / cs), ClusterRole::SnapshotL1);
    }
    let x = q.bitmaps_ext().unwrap();
    assert_eq!(map.role(x.directory_offset / cs), ClusterRole::BitmapDirectory);
    for b in q.bitmaps().unwrap() {
        assert_eq!(map.role(b.table_offset / cs), ClusterRole::BitmapTable);
        for e in q.bitmap_table(&b).unwrap() {
            if e & vdiskview::image::qcow2::bitmap::TABLE_OFFSET_MASK != 0 {
                assert_eq!(map.role(e / cs), ClusterRole::BitmapData);
            }
        }
    }
    for (_, l2) in q.l2_tables() {
        assert_eq!(map.role(l2 / cs), ClusterRole::L2);
    }
    let data = q.l2_entry(0).unwrap().unwrap().entry & vdiskview::image::qcow2::cluster::L2E_OFFSET_MASK;
    assert_eq!(map.role(data / cs), ClusterRole::Data);
    let counts = map.counts();
    assert!(counts.get(&ClusterRole::SnapshotL2).copied().unwrap_or(0) >= 1, "the first snapshot kept its own L2 table: {counts:?}");
    assert!((0..map.len() as u64).all(|c| !map.mismatch(c)), "a clean image has no mismatches");
    assert!(!counts.contains_key(&ClusterRole::Leaked));
}

#[test]
fn hostile_snapshot_and_bitmap_metadata_never_panics() {
    let dir = workspace();
    let base = snap_and_bitmaps(dir.path());
    let bytes = std::fs::read(&base).unwrap();
    let table = be64(&bytes, 64);
    let v = vdiskview_json(&["bitmaps", s(&base), "--output", "json"]);
    let dir_entry = v[0]["directory-entry-offset"].as_u64().unwrap();
    let bm_table = v[0]["table-offset"].as_u64().unwrap();
    let ext = {
        // the bitmaps header extension: find its type tag after the header
        let tag = 0x2385_2875u32.to_be_bytes();
        let at = (104..4096).find(|&i| bytes[i..i + 4] == tag).expect("bitmaps extension");
        at as u64 + 8
    };
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("nb_snapshots huge", 60, u32::MAX.to_be_bytes().to_vec()),
        ("snapshots_offset past the end", 64, (1u64 << 50).to_be_bytes().to_vec()),
        ("snapshots_offset unaligned", 64, (table + 8).to_be_bytes().to_vec()),
        ("snapshot L1 size huge", table + 8, u32::MAX.to_be_bytes().to_vec()),
        ("snapshot L1 offset past the end", table, (1u64 << 40).to_be_bytes().to_vec()),
        ("snapshot extra data huge", table + 36, u32::MAX.to_be_bytes().to_vec()),
        ("snapshot name size huge", table + 14, u16::MAX.to_be_bytes().to_vec()),
        ("bitmap count huge", ext, u32::MAX.to_be_bytes().to_vec()),
        ("bitmap directory size huge", ext + 8, (1u64 << 40).to_be_bytes().to_vec()),
        ("bitmap directory offset past the end", ext + 16, (1u64 << 40).to_be_bytes().to_vec()),
        ("bitmap table size huge", dir_entry + 8, u32::MAX.to_be_bytes().to_vec()),
        ("bitmap table offset past the end", dir_entry, (1u64 << 40).to_be_bytes().to_vec()),
        ("bitmap granularity 63", dir_entry + 17, vec![63]),
        ("bitmap name size huge", dir_entry + 18, u16::MAX.to_be_bytes().to_vec()),
        ("bitmap table entry reserved bits", bm_table, u64::MAX.to_be_bytes().to_vec()),
    ];
    for (what, off, patch) in cases {
        let p = dir.path().join("hostile.qcow2");
        std::fs::write(&p, &bytes).unwrap();
        patch_file(&p, off, &patch);
        for args in [
            vec!["info", "--output", "json", s(&p)],
            vec!["info", s(&p)],
            vec!["tables", s(&p)],
            vec!["bitmaps", s(&p)],
            vec!["bitmaps", s(&p), "enabled"],
            vec!["read", s(&p), "--snapshot", "first", "--length", "64k"],
            vec!["check", s(&p)],
            vec!["check", "--output", "json", s(&p)],
            vec!["where", s(&p), "0x10000", "--file"],
        ] {
            let out = vdiskview_timeout(&args, Duration::from_secs(30));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{what}: vdiskview {args:?} panicked: {err}");
            let code = out.status.code().unwrap_or_else(|| panic!("{what}: {args:?} killed by a signal"));
            assert!(code <= 3, "{what}: {args:?} exit {code}: {err}");
            if code == 1 && args[0] != "check" {
                assert_clean_error(&out, &format!("{what}: {args:?}"));
            }
        }
    }
}

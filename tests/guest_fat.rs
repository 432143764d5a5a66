//! FAT12/16/32 inside the guest disk: volumes made by `mkfs.fat` and filled by `mmd`/`mcopy`
//! (long names, nested folders, multi-cluster and fragmented files), in MBR and GPT
//! partitions, in raw, dynamic VHD and QCOW2 images. `mdir`/`mtype` are the oracles for names
//! and content; every `locate` extent is read back at its guest and host offsets.
mod support;

use std::path::Path;
use std::time::Duration;

use support::guest::*;
use support::*;

fn ls(img: &Path, path: &str) -> Vec<String> {
    let mut v: Vec<String> = vdiskview_text(&["ls", s(img), path]).lines().map(String::from).collect();
    v.sort();
    v
}

/// Every file reads as mtype reads it; every folder lists what mdir lists; every locate
/// extent reads back.
#[track_caller]
fn check_volume(img: &Path, fs: &Path, files: &[(String, Vec<u8>)]) {
    for dir in ["/", "/Long Directory Name", "/Long Directory Name/sub dir", "/data"] {
        assert_eq!(ls(img, dir), mdir_names(fs, dir), "{} ls {dir}", s(img));
    }
    for (p, bytes) in files {
        let path = format!("/{p}");
        let got = vdiskview_ok(&["cat", s(img), &path]);
        assert_bytes_eq(&got, &mtype(fs, &path), &format!("{} cat {path} vs mtype", s(img)));
        assert_bytes_eq(&got, bytes, &format!("{} cat {path} vs source", s(img)));
        check_locate_reads_back(img, &path, bytes);
    }
}

#[test]
fn fat12_16_32_in_mbr_in_every_container() {
    let dir = workspace();
    let d = dir.path();
    for (bits, size, extra, ptype) in [
        (12u32, 8 * MIB, &[][..], "1"),
        (16, 16 * MIB, &[][..], "6"),
        (32, 40 * MIB, &["-s", "1"][..], "c"),
    ] {
        let sub = d.join(format!("f{bits}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (fs, files) = fat_volume(&sub, bits, size, extra);
        let raw = mbr_disk_with(&sub, "disk.raw", size + 2 * MIB, &fs, ptype);
        let parts = vdiskview_json(&["partitions", s(&raw), "--output=json"]);
        assert_eq!(parts["partitions"][0]["filesystem"], format!("fat{bits}"), "{}", pretty(&parts));
        for kind in ["raw", "vpc-dynamic", "qcow2"] {
            let img = convert(&raw, kind, &sub.join(format!("image.{kind}")));
            check_volume(&img, &fs, &files);
        }
        // the fragmented file has more than one run (on FAT32 mtools follows the FSInfo
        // next-free hint past the gap, so the file stays in one piece there)
        let v = check_locate_reads_back(&raw, "/frag.bin", &files.iter().find(|f| f.0 == "frag.bin").unwrap().1);
        if bits != 32 {
            assert!(v["extents"].as_array().unwrap().len() >= 2, "fat{bits}: frag.bin should be fragmented: {}", pretty(&v));
        }
        assert_eq!(v["filesystem"], format!("fat{bits}"));
    }
}

/// A FAT32 volume in a GPT partition, one FAT, 4 KiB clusters; `ls -l` shows sizes and
/// folders; case-insensitive lookups; the human locate names the cluster.
#[test]
fn fat32_gpt_one_fat() {
    let dir = workspace();
    let d = dir.path();
    // 4 KiB clusters: enough of them for a FAT32 that mtools accepts (65525 and more)
    let (fs, files) = fat_volume(d, 32, 320 * MIB, &["-f", "1", "-s", "8"]);
    let raw = gpt_disk_with(d, "gpt.raw", 336 * MIB, &fs);
    let img = convert(&raw, "qcow2", &d.join("gpt.qcow2"));
    check_volume(&img, &fs, &files);
    let long = vdiskview_text(&["ls", "-l", s(&img), "/"]);
    assert!(long.lines().any(|l| l.starts_with('d') && l.ends_with(" Long Directory Name")), "{long}");
    assert!(long.lines().any(|l| l.starts_with("-rw") && l.contains(" 102400 ") && l.ends_with(" BIG.TXT")), "{long}");
    assert_eq!(vdiskview_ok(&["cat", s(&img), "/big.txt"]), text_100k());
    assert_eq!(vdiskview_ok(&["cat", s(&img), "/long directory name/SHORT.TXT"]), b"short\n");
    let text = vdiskview_text(&["locate", s(&img), "/BIG.TXT"]);
    assert!(text.contains("first cluster") && text.contains("fat32"), "{text}");
}

#[test]
fn fat_errors_are_clean() {
    let dir = workspace();
    let d = dir.path();
    let (fs, _) = fat_volume(d, 16, 16 * MIB, &[]);
    let raw = mbr_disk_with(d, "disk.raw", 18 * MIB, &fs, "6");
    for (args, want) in [
        (vec!["cat", s(&raw), "/nope.txt"], "No such file or directory"),
        (vec!["cat", s(&raw), "/data"], "Is a directory"),
        (vec!["ls", s(&raw), "/hello.txt/x"], "Not a directory"),
    ] {
        let out = vdiskview(&args);
        assert_clean_error(&out, &args.join(" "));
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // damaged boot sectors: bytes per sector 0, sectors per cluster 3, no FATs
    for (off, bytes) in [(0x0bu64, &[0u8, 0][..]), (0x0d, &[3][..]), (0x10, &[0][..]), (0x16, &[0, 0][..])] {
        let bad = d.join(format!("bad-{off}.raw"));
        std::fs::copy(&raw, &bad).unwrap();
        patch_file(&bad, MIB + off, bytes);
        for cmd in ["ls", "cat", "locate"] {
            let out = vdiskview_timeout(&[cmd, s(&bad), "/hello.txt"], Duration::from_secs(20));
            assert_clean_error(&out, &format!("{cmd} {}", s(&bad)));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("damaged FAT boot sector"), "{cmd} {off:#x}: {err}");
        }
    }
    // a FAT whose chains loop or point outside: clean errors or success, never a hang
    let orig = std::fs::read(&raw).unwrap();
    let fat = MIB as usize + u16::from_le_bytes([orig[MIB as usize + 0x0e], orig[MIB as usize + 0x0f]]) as usize * 512;
    let noise = pattern_bytes(5, 4096);
    let bad = d.join("badfat.raw");
    let mut failures = 0;
    for seed in 0..16usize {
        let mut b = orig.clone();
        for k in 0..8 {
            let o = fat + 4 + (noise[seed * 8 + k] as usize * 7 + seed * 13) % 2048;
            b[o] ^= noise[seed * 16 + k] | 1;
        }
        std::fs::write(&bad, &b).unwrap();
        for args in [vec!["cat", s(&bad), "/data/pattern.bin"], vec!["locate", s(&bad), "/BIG.TXT"], vec!["ls", s(&bad), "/Long Directory Name/sub dir"]] {
            let out = vdiskview_timeout(&args, Duration::from_secs(20));
            if !out.status.success() {
                assert_clean_error(&out, &format!("seed {seed}: {}", args.join(" ")));
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "damage to the FAT should break something");
}

/// A qcow2 over a raw base holding the FAT volume (nothing written in the top): every byte
/// comes from the base layer, and locate says so.
#[test]
fn fat_behind_a_backing_file() {
    let dir = workspace();
    let d = dir.path();
    let (fs, files) = fat_volume(d, 16, 16 * MIB, &[]);
    let raw = mbr_disk_with(d, "base.raw", 18 * MIB, &fs, "6");
    let top = d.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&raw), "-F", "raw", s(&top)]);
    check_volume(&top, &fs, &files);
    let v = check_locate_reads_back(&top, "/BIG.TXT", &text_100k());
    assert!(v["extents"].as_array().unwrap().iter().all(|e| e["layer"] == 1), "{}", pretty(&v));
}

//! `vdiskview partitions`: MBR (primary, extended, logical) and GPT tables made by sfdisk and
//! sgdisk, compared with `sfdisk --json`, in raw, VHD and QCOW2 images; GPT CRC verdicts,
//! the backup header, and hostile tables.
mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::guest::*;
use support::*;

fn parts(img: &Path) -> Value {
    vdiskview_json(&["partitions", s(img), "--output=json"])
}

/// Every partition sfdisk sees is in our list with the same number, start, size and type.
#[track_caller]
fn assert_matches_sfdisk(ours: &Value, raw: &Path) {
    let theirs = sfdisk_json(raw);
    let tp = theirs["partitiontable"]["partitions"].as_array().unwrap();
    let op = ours["partitions"].as_array().unwrap();
    assert_eq!(op.len(), tp.len(), "ours:\n{}\nsfdisk:\n{}", pretty(ours), pretty(&theirs));
    let gpt = theirs["partitiontable"]["label"] == "gpt";
    for t in tp {
        let node = t["node"].as_str().unwrap();
        let idx: u64 = node.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        let p = op.iter().find(|p| p["index"] == idx).unwrap_or_else(|| panic!("no partition {idx}: {}", pretty(ours)));
        assert_eq!(p["start"], t["start"].as_u64().unwrap() * 512, "start of {idx}: {}", pretty(p));
        assert_eq!(p["size"], t["size"].as_u64().unwrap() * 512, "size of {idx}: {}", pretty(p));
        if gpt {
            assert_eq!(p["type"], t["type"], "{}", pretty(p));
            assert_eq!(p["guid"], t["uuid"], "{}", pretty(p));
            assert_eq!(p["name"], t["name"], "{}", pretty(p));
            assert_eq!(p["scheme"], "gpt");
        } else {
            let ty = u8::from_str_radix(t["type"].as_str().unwrap(), 16).unwrap();
            assert_eq!(p["type"], format!("0x{ty:02x}"), "{}", pretty(p));
            assert_eq!(p["bootable"], t["bootable"].as_bool().unwrap_or(false), "{}", pretty(p));
            assert_eq!(p["scheme"], "mbr");
        }
    }
}

const MBR_SCRIPT: &str = "label: dos\nlabel-id: 0xdeadbeef\nunit: sectors\n\n\
start=2048, size=8192, type=83, bootable\n\
start=10240, size=40960, type=5\n\
start=12288, size=8192, type=83\n\
start=22528, size=6144, type=82\n\
start=30720, size=4096, type=7\n\
start=51200, size=8192, type=c\n";

#[test]
fn mbr_primary_extended_logical() {
    let dir = workspace();
    let raw = sfdisk_disk(dir.path(), "mbr.raw", 64 * MIB, MBR_SCRIPT);
    // an ext2 filesystem in logical partition 5
    let tree = make_tree(dir.path(), "tree", 0);
    let fs = mkfs(dir.path(), "p5.ext2", "ext2", 4 * MIB, &tree, "logical5", &[]);
    dd_into(&fs, &raw, 12288 * 512);
    let v = parts(&raw);
    assert_eq!(v["scheme"], "mbr", "{}", pretty(&v));
    assert_eq!(v["mbr"]["disk-signature"], "0xdeadbeef");
    assert_eq!(v["disk-size"], 64 * MIB);
    assert_matches_sfdisk(&v, &raw);
    let kinds: Vec<(u64, &str)> =
        v["partitions"].as_array().unwrap().iter().map(|p| (p["index"].as_u64().unwrap(), p["kind"].as_str().unwrap())).collect();
    assert_eq!(kinds, vec![(1, "primary"), (2, "extended"), (3, "primary"), (5, "logical"), (6, "logical"), (7, "logical")]);
    let p5 = &v["partitions"][3];
    assert_eq!(p5["filesystem"], "ext2", "{}", pretty(p5));
    assert_eq!(p5["label"], "logical5");
    assert_eq!(p5["type-name"], "Linux");
    assert_eq!(v["partitions"][0]["filesystem"], Value::Null);
    assert_eq!(v["partitions"][4]["type-name"], "Linux swap / Solaris");
    // the filesystem commands find the logical partition's filesystem by themselves
    assert_eq!(vdiskview_ok(&["cat", s(&raw), "/test1.txt"]), HELLO);
    assert_eq!(vdiskview_ok(&["cat", s(&raw), "/test1.txt", "--partition", "5"]), HELLO);
    let out = vdiskview(&["cat", s(&raw), "/test1.txt", "--partition", "2"]);
    assert_clean_error(&out, "extended partition");
    assert!(String::from_utf8_lossy(&out.stderr).contains("extended partition"));
    // the same table through every format
    for kind in ["vpc-dynamic", "vpc-fixed", "qcow2"] {
        let img = convert(&raw, kind, &dir.path().join(format!("mbr.{kind}")));
        let w = parts(&img);
        assert_json_eq(&w["partitions"], &v["partitions"], kind);
    }
    let text = vdiskview_text(&["partitions", s(&raw)]);
    assert!(text.contains("MBR, disk signature 0xdeadbeef"), "{text}");
    assert!(text.contains("0x83 Linux") && text.contains("logical") && text.contains("ext2"), "{text}");
}

#[test]
fn gpt_two_partitions_with_crc_verdicts() {
    let dir = workspace();
    let (raw, _, _) = gpt_two_ext4(dir.path());
    for kind in ["raw", "qcow2", "vpc-dynamic"] {
        let img = if kind == "raw" { raw.clone() } else { convert(&raw, kind, &dir.path().join(format!("gpt.{kind}"))) };
        let v = parts(&img);
        assert_eq!(v["scheme"], "gpt", "{}", pretty(&v));
        assert_matches_sfdisk(&v, &raw);
        let p = v["partitions"].as_array().unwrap();
        assert_eq!(p[0]["start"], MIB);
        assert_eq!(p[0]["size"], 16 * MIB);
        assert_eq!(p[1]["start"], 17 * MIB);
        assert_eq!(p[1]["size"], 16 * MIB);
        assert_eq!(p[0]["type-name"], "Linux filesystem");
        assert_eq!(p[0]["filesystem"], "ext4");
        assert_eq!(p[0]["label"], "rootfs");
        assert_eq!(p[1]["label"], "datafs");
        let g = &v["gpt"];
        assert_eq!(g["used"], "primary");
        for h in ["primary", "backup"] {
            assert_eq!(g[h]["header-crc-ok"], true, "{h}: {}", pretty(g));
            assert_eq!(g[h]["entries-crc-ok"], true, "{h}: {}", pretty(g));
            assert_eq!(g[h]["valid"], true, "{h}: {}", pretty(g));
        }
        assert_eq!(g["primary"]["lba"], 1);
        assert_eq!(g["backup"]["lba"], 40 * MIB / 512 - 1);
        assert_eq!(g["primary"]["disk-guid"], sfdisk_json(&raw)["partitiontable"]["id"]);
        assert_eq!(v["mbr"]["protective"], true);
        assert_eq!(v["warnings"].as_array().unwrap().len(), 0, "{}", pretty(&v));
    }
    let text = vdiskview_text(&["partitions", s(&raw)]);
    for want in ["GPT", "header CRC ok, entries CRC ok", "Linux filesystem", "root", "data", "ext4", "rootfs"] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// A damaged primary header or entry array: the CRC verdicts say so, and the partitions
/// come from the backup.
#[test]
fn gpt_damaged_primary_uses_backup() {
    let dir = workspace();
    let (raw, _, _) = gpt_two_ext4(dir.path());
    let good = parts(&raw);
    // a byte of the disk GUID in the primary header, flipped (the GUID is random: a fixed
    // value is the byte already there once in 256 runs)
    let h = dir.path().join("bad-header.raw");
    std::fs::copy(&raw, &h).unwrap();
    let old = std::fs::read(&h).unwrap()[512 + 60];
    patch_file(&h, 512 + 60, &[!old]);
    // a character of partition 1's name in the primary entry array
    let e = dir.path().join("bad-entries.raw");
    std::fs::copy(&raw, &e).unwrap();
    patch_file(&e, 1024 + 56, b"X");
    for (img, hdr_ok, ent_ok) in [(&h, false, Some(true)), (&e, true, Some(false))] {
        let out = vdiskview(&["partitions", s(img), "--output=json"]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = &v["gpt"];
        assert_eq!(g["primary"]["header-crc-ok"], hdr_ok, "{}", pretty(g));
        if hdr_ok {
            assert_eq!(g["primary"]["entries-crc-ok"], ent_ok.unwrap(), "{}", pretty(g));
        }
        assert_eq!(g["primary"]["valid"], false);
        assert_eq!(g["backup"]["valid"], true);
        assert_eq!(g["used"], "backup");
        // the same partitions, described by the backup's entries near the end of the disk
        let strip = |v: &Value| {
            let mut v = v.clone();
            for p in v.as_array_mut().unwrap() {
                p.as_object_mut().unwrap().remove("entry-offset");
            }
            v
        };
        assert!(v["partitions"][0]["entry-offset"].as_u64().unwrap() > 39 * MIB, "{}", pretty(&v));
        assert_json_eq(&strip(&v["partitions"]), &strip(&good["partitions"]), "partitions from the backup");
        let w = v["warnings"].to_string();
        assert!(w.contains("primary GPT header is damaged"), "{w}");
        let text = vdiskview(&["partitions", s(img)]);
        assert!(String::from_utf8_lossy(&text.stdout).contains("BAD"));
        assert!(String::from_utf8_lossy(&text.stderr).contains("warning: primary GPT header is damaged"));
        // the filesystem commands still find the partitions
        assert_eq!(vdiskview_ok(&["cat", s(img), "/test1.txt"]), HELLO);
    }
    // both headers damaged: the primary's entries are shown, with warnings
    let both = dir.path().join("both.raw");
    std::fs::copy(&h, &both).unwrap();
    patch_file(&both, 40 * MIB - 512 + 60, b"\xff");
    let v = parts(&both);
    assert_eq!(v["gpt"]["backup"]["header-crc-ok"], false, "{}", pretty(&v));
    assert_eq!(v["partitions"].as_array().unwrap().len(), 2);
    assert!(v["warnings"].to_string().contains("backup GPT header is damaged"), "{}", pretty(&v));
}

#[test]
fn no_partition_table() {
    let dir = workspace();
    let zero = dir.path().join("zero.raw");
    std::fs::File::create(&zero).unwrap().set_len(4 * MIB).unwrap();
    let v = parts(&zero);
    assert_eq!(v["scheme"], Value::Null);
    assert_eq!(v["partitions"], serde_json::json!([]));
    assert!(vdiskview_text(&["partitions", s(&zero)]).contains("no partition table"));
    // an image smaller than a sector
    let tiny = dir.path().join("tiny.raw");
    std::fs::write(&tiny, b"abc").unwrap();
    assert_eq!(parts(&tiny)["scheme"], Value::Null);
}

#[test]
fn demo_image_partition() {
    let v = parts(&demo_vhd());
    assert_eq!(v["scheme"], "mbr");
    let p = &v["partitions"][0];
    assert_eq!(p["index"], 1);
    assert_eq!(p["start"], MIB);
    assert_eq!(p["size"], 7 * MIB);
    assert_eq!(p["type"], "0x83");
    assert_eq!(p["filesystem"], "ext2");
    assert_eq!(p["label"], "vdvw-demo");
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Hostile tables end in time with output or a clean error: an EBR chain that loops, a
/// partition past the end of the disk, a GPT claiming 4 billion entries.
#[test]
fn hostile_tables() {
    let dir = workspace();
    let limit = Duration::from_secs(10);
    // EBR chain: the second EBR points at itself
    let raw = sfdisk_disk(dir.path(), "loop.raw", 64 * MIB, MBR_SCRIPT);
    let bytes = std::fs::read(&raw).unwrap();
    let ext = 10240usize * 512;
    let next = le32(&bytes, ext + 462 + 8) as usize;
    let ebr2 = ext + next * 512;
    patch_file(&raw, (ebr2 + 462 + 8) as u64, &(next as u32).to_le_bytes());
    let out = vdiskview_timeout(&["partitions", s(&raw), "--output=json"], limit);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let idx: Vec<u64> = v["partitions"].as_array().unwrap().iter().map(|p| p["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, vec![1, 2, 3, 5, 6], "{}", pretty(&v));
    assert!(v["warnings"].to_string().contains("loops"), "{}", pretty(&v));

    // a primary partition running past the end of the disk
    let past = dir.path().join("past.raw");
    std::fs::File::create(&past).unwrap().set_len(4 * MIB).unwrap();
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&0xffff_0000u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    patch_file(&past, 0, &mbr);
    let out = vdiskview_timeout(&["partitions", s(&past), "--output=json"], limit);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["partitions"][0]["problems"].to_string().contains("past the end"), "{}", pretty(&v));
    let out = vdiskview_timeout(&["ls", s(&past)], limit);
    assert_clean_error(&out, "ls of a partition past the end");

    // GPT: absurd entry count and size, entries past the end
    let (graw, _, _) = gpt_two_ext4(dir.path());
    for (off, val, what) in [(80u64, 0xffff_ffffu32, "entries"), (84, 0x8000_0000, "entry size"), (72, 0x7fff_ffff, "entries LBA")] {
        let g = dir.path().join(format!("gpt-{off}.raw"));
        std::fs::copy(&graw, &g).unwrap();
        patch_file(&g, 512 + off, &val.to_le_bytes());
        let out = vdiskview_timeout(&["partitions", s(&g), "--output=json"], limit);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["gpt"]["primary"]["valid"], false, "{what}: {}", pretty(&v));
        assert_eq!(v["gpt"]["used"], "backup", "{what}: {}", pretty(&v));
        assert_eq!(v["partitions"].as_array().unwrap().len(), 2, "{what}");
        // the same damage in both headers: no partitions, no crash
        patch_file(&g, 40 * MIB - 512 + off, &val.to_le_bytes());
        let out = vdiskview_timeout(&["partitions", s(&g), "--output=json"], limit);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

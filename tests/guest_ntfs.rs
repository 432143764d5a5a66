//! NTFS inside the guest disk: volumes made by `mkntfs -Q` and filled by `ntfscp` (a
//! resident file, large files, a named stream, a file in a folder, a sparse file made by
//! `ntfstruncate`), in MBR and GPT partitions, in raw, dynamic VHD and QCOW2 images.
//! `ntfsls`/`ntfscat`/`ntfscluster` are the oracles; every `locate` extent is read back at
//! its guest and host offsets.
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

#[track_caller]
fn check_volume(img: &Path, fs: &Path, files: &[(String, Vec<u8>)]) {
    for dir in ["/", "/$Extend"] {
        assert_eq!(ls(img, dir), ntfsls_names(fs, dir), "{} ls {dir}", s(img));
    }
    for (p, bytes) in files {
        let path = format!("/{p}");
        let got = vdiskview_ok(&["cat", s(img), &path]);
        assert_bytes_eq(&got, &ntfscat(fs, &path), &format!("{} cat {path} vs ntfscat", s(img)));
        assert_bytes_eq(&got, bytes, &format!("{} cat {path} vs source", s(img)));
        check_locate_reads_back(img, &path, bytes);
    }
}

/// The clusters ntfscluster gives for a file's unnamed $DATA: (VCN, LCN or -1, length).
fn ntfscluster_runs(fs: &Path, name: &str) -> Vec<(u64, i64, u64)> {
    let out = tool("ntfscluster", &["-F", name, s(fs)], None);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut runs = vec![];
    let mut in_data = false;
    for l in text.lines() {
        if l.contains("0x80 - non-resident") {
            in_data = true;
            continue;
        }
        if in_data {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() == 3 {
                if let (Ok(v), Ok(lcn), Ok(n)) = (w[0].parse(), w[1].parse(), w[2].parse()) {
                    runs.push((v, lcn, n));
                    continue;
                }
            }
            if w.first() == Some(&"VCN") {
                continue;
            }
            if !runs.is_empty() {
                break;
            }
        }
    }
    runs
}

#[test]
fn ntfs_in_mbr_in_every_container() {
    let dir = workspace();
    let d = dir.path();
    let (fs, files) = ntfs_volume(d, "ntfs.fs", 24 * MIB, &[]);
    let raw = mbr_disk_with(d, "disk.raw", 26 * MIB, &fs, "7");
    let parts = vdiskview_json(&["partitions", s(&raw), "--output=json"]);
    assert_eq!(parts["partitions"][0]["filesystem"], "ntfs", "{}", pretty(&parts));
    for kind in ["raw", "vpc-dynamic", "qcow2"] {
        let img = convert(&raw, kind, &d.join(format!("image.{kind}")));
        check_volume(&img, &fs, &files);
        // the small file is resident: the report names the MFT record
        let v = vdiskview_json(&["locate", s(&img), "/tiny.txt", "--output=json"]);
        assert_eq!(v["extents"][0]["kind"], "resident", "{}", pretty(&v));
        assert!(v["notes"][0].as_str().unwrap().starts_with("resident in MFT record "), "{}", pretty(&v));
        let text = vdiskview_text(&["locate", s(&img), "/tiny.txt"]);
        assert!(text.contains("resident in MFT record"), "{text}");
        // the sparse file: data, then a hole
        let v = vdiskview_json(&["locate", s(&img), "/sparse.bin", "--output=json"]);
        let ext = v["extents"].as_array().unwrap();
        assert!(ext.iter().any(|e| e["kind"] == "hole"), "{}", pretty(&v));
    }
    // the clusters are ntfscluster's
    let cs = vdiskview_json(&["locate", s(&raw), "/pattern.bin", "--output=json"])["block-size"].as_u64().unwrap();
    let v = vdiskview_json(&["locate", s(&raw), "/pattern.bin", "--output=json"]);
    let ours: Vec<(u64, u64)> = v["extents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| ((e["virtual"].as_u64().unwrap() - MIB) / cs, e["length"].as_u64().unwrap().div_ceil(cs)))
        .collect();
    let theirs: Vec<(u64, u64)> = ntfscluster_runs(&fs, "pattern.bin").iter().map(|&(_, l, n)| (l as u64, n)).collect();
    assert_eq!(ours, theirs, "{}", pretty(&v));
    // ls -l lists the named stream
    let long = vdiskview_text(&["ls", "-l", s(&raw), "/"]);
    assert!(long.lines().any(|l| l.ends_with(" tiny.txt:alt")), "{long}");
}

/// NTFS in a GPT partition with 512-byte clusters and with 64 KiB clusters.
#[test]
fn ntfs_gpt_cluster_sizes() {
    let dir = workspace();
    let d = dir.path();
    for (c, size) in [("512", 24 * MIB), ("65536", 48 * MIB)] {
        let sub = d.join(format!("c{c}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (fs, files) = ntfs_volume(&sub, "ntfs.fs", size, &["-c", c]);
        let raw = gpt_disk_with(&sub, "gpt.raw", size + 2 * MIB, &fs);
        let img = convert(&raw, "vpc-dynamic", &sub.join("gpt.vhd"));
        check_volume(&img, &fs, &files);
        let v = vdiskview_json(&["locate", s(&img), "/big.txt", "--output=json"]);
        assert_eq!(v["block-size"], c.parse::<u64>().unwrap());
    }
}

#[test]
fn ntfs_errors_are_clean() {
    let dir = workspace();
    let d = dir.path();
    let (fs, _) = ntfs_volume(d, "ntfs.fs", 24 * MIB, &[]);
    let raw = mbr_disk_with(d, "disk.raw", 26 * MIB, &fs, "7");
    for (args, want) in [
        (vec!["cat", s(&raw), "/nope.txt"], "No such file or directory"),
        (vec!["cat", s(&raw), "/tiny.txt:nostream"], "No such file or directory"),
        (vec!["cat", s(&raw), "/$Extend"], "Is a directory"),
        (vec!["ls", s(&raw), "/tiny.txt/x"], "Not a directory"),
    ] {
        let out = vdiskview(&args);
        assert_clean_error(&out, &args.join(" "));
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    // damaged boot sectors: bytes per sector, sectors per cluster, $MFT cluster far away
    for (off, bytes) in [(0x0bu64, &[0u8, 0][..]), (0x0d, &[3][..]), (0x30, &[0xff; 8][..]), (0x40, &[0][..])] {
        let bad = d.join(format!("bad-{off}.raw"));
        std::fs::copy(&raw, &bad).unwrap();
        patch_file(&bad, MIB + off, bytes);
        for cmd in ["ls", "cat", "locate"] {
            let out = vdiskview_timeout(&[cmd, s(&bad), "/tiny.txt"], Duration::from_secs(20));
            assert_clean_error(&out, &format!("{cmd} {}", s(&bad)));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("damaged NTFS"), "{cmd} {off:#x}: {err}");
        }
    }
    // random damage in the first MFT records: clean errors or success, never a panic or hang
    let orig = std::fs::read(&raw).unwrap();
    let b0 = MIB as usize;
    let cs = orig[b0 + 0x0d] as usize * u16::from_le_bytes([orig[b0 + 0x0b], orig[b0 + 0x0c]]) as usize;
    let mft = b0 + u64::from_le_bytes(orig[b0 + 0x30..b0 + 0x38].try_into().unwrap()) as usize * cs;
    let noise = pattern_bytes(17, 8192);
    let bad = d.join("badmft.raw");
    let mut failures = 0;
    for seed in 0..24usize {
        let mut b = orig.clone();
        let rec = [0usize, 5, 64, 65][seed % 4];
        for k in 0..1 + seed % 3 {
            let o = mft + rec * 1024 + (noise[seed * 8 + k] as usize * 4 + seed) % 1024;
            b[o] ^= noise[seed * 16 + k] | 1;
        }
        std::fs::write(&bad, &b).unwrap();
        for args in [vec!["ls", s(&bad), "/", "-l"], vec!["cat", s(&bad), "/tiny.txt"], vec!["locate", s(&bad), "/big.txt"]] {
            let out = vdiskview_timeout(&args, Duration::from_secs(20));
            if !out.status.success() {
                assert_clean_error(&out, &format!("seed {seed}: {}", args.join(" ")));
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "damage to the MFT should break something");
    // one file's record damaged: the listing goes on without it, with a warning
    let ls_i = String::from_utf8_lossy(&tool("ntfsls", &["-i", s(&fs)], None).stdout).to_string();
    let rec: usize = ls_i.lines().find_map(|l| l.trim().strip_suffix(" pattern.bin")).unwrap().trim().parse().unwrap();
    std::fs::copy(&raw, &bad).unwrap();
    patch_file(&bad, (mft + rec * 1024) as u64, b"BAAD");
    let out = vdiskview(&["ls", s(&bad), "/"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut want = ntfsls_names(&fs, "/");
    want.retain(|n| n != "pattern.bin");
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    got.sort();
    assert_eq!(got, want);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pattern.bin") && err.contains("left out"), "{err}");
}

/// A qcow2 over a dynamic VHD base holding the NTFS volume: every byte comes from the base.
#[test]
fn ntfs_behind_a_backing_file() {
    let dir = workspace();
    let d = dir.path();
    let (fs, files) = ntfs_volume(d, "ntfs.fs", 24 * MIB, &[]);
    let raw = mbr_disk_with(d, "disk.raw", 26 * MIB, &fs, "7");
    let base = convert(&raw, "vpc-dynamic", &d.join("base.vhd"));
    let top = d.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&base), "-F", "vpc", s(&top)]);
    check_volume(&top, &fs, &files);
    let v = check_locate_reads_back(&top, "/pattern.bin", &files.iter().find(|f| f.0 == "pattern.bin").unwrap().1);
    assert!(v["extents"].as_array().unwrap().iter().all(|e| e["layer"] == 1), "{}", pretty(&v));
}

/// `mkntfs -s 4096`: 4096-byte sectors. mkntfs then makes MFT records of one sector (4096
/// bytes, never smaller than a sector) and, like Windows, still puts an update sequence entry
/// at the end of every 512-byte block of a record (usa count 9), so the fixups the reader
/// checks are 512-byte strided whatever the sector size. In an MBR partition (dynamic VHD)
/// and a GPT partition (QCOW2), with 4 KiB and 64 KiB clusters.
#[test]
fn ntfs_4096_byte_sectors() {
    let dir = workspace();
    let d = dir.path();
    for (c, size) in [("4096", 24 * MIB), ("65536", 48 * MIB)] {
        let sub = d.join(format!("c{c}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (fs, files) = ntfs_volume(&sub, "ntfs.fs", size, &["-s", "4096", "-c", c]);
        let b = std::fs::read(&fs).unwrap();
        assert_eq!(u16::from_le_bytes([b[0x0b], b[0x0c]]), 4096, "bytes per sector");
        let cs = 4096 * b[0x0d] as usize;
        let rec_size = if (b[0x40] as i8) < 0 { 1usize << -(b[0x40] as i8) } else { b[0x40] as usize * cs };
        assert_eq!(rec_size, 4096, "mkntfs makes 4096-byte MFT records with 4096-byte sectors");
        let mft = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) as usize * cs;
        assert_eq!(&b[mft..mft + 4], b"FILE");
        assert_eq!(u16::from_le_bytes([b[mft + 6], b[mft + 7]]), 9, "update sequence: the USN and 8 entries (512-byte strides)");
        let mbr = mbr_disk_with(&sub, "mbr.raw", size + 2 * MIB, &fs, "7");
        let gpt = gpt_disk_with(&sub, "gpt.raw", size + 2 * MIB, &fs);
        for img in [convert(&mbr, "vpc-dynamic", &sub.join("mbr.vhd")), convert(&gpt, "qcow2", &sub.join("gpt.qcow2"))] {
            check_volume(&img, &fs, &files);
            let v = vdiskview_json(&["locate", s(&img), "/big.txt", "--output=json"]);
            assert_eq!(v["block-size"], c.parse::<u64>().unwrap());
            let v = vdiskview_json(&["locate", s(&img), "/tiny.txt", "--output=json"]);
            assert_eq!(v["extents"][0]["kind"], "resident", "{}", pretty(&v));
        }
    }
}

/// An $MFT in many runs with thousands of files, made without mounting: the data zone is
/// filled first (a file as large as the free clusters past the MFT zone), so ntfs-3g puts the
/// new files' data and index blocks into the MFT zone between the MFT's extensions; then 4000
/// files by `ntfscp` (every 20th with 8000 bytes of non-resident data, the rest resident).
/// At some 210 runs record 0 is full: ntfs-3g makes an $ATTRIBUTE_LIST, moves $FILE_NAME out,
/// and from ~3700 files goes on with $DATA's runs in an extension record (ntfsinfo shows
/// both), so the last files' records are found only through the list. ntfscluster gives the $MFT runs; ls equals ntfsls, cat equals ntfscat, and
/// resident files in records of late runs are located at host offsets that hold their bytes.
/// Built in /dev/shm where it has room: 4000 runs of ntfscp are mostly syncs.
#[test]
fn ntfs_mft_continued_through_attribute_list() {
    // the volume, its sources and the disk images take ~250 MiB: /dev/shm only when it has
    // room (a container's is often 64 MiB)
    let shm_free = std::process::Command::new("df")
        .args(["--output=avail", "-B1", "/dev/shm"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    let dir = if shm_free > 1024 * MIB {
        tempfile::Builder::new().prefix("vdvw-test-").tempdir_in("/dev/shm").unwrap()
    } else {
        workspace()
    };
    let d = dir.path();
    let size = 64 * MIB;
    let fs = d.join("frag.fs");
    std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
    tool("mkntfs", &["-F", "-Q", "-q", "-L", "FRAG", s(&fs)], None);
    let info = String::from_utf8_lossy(&tool("ntfsinfo", &["-m", s(&fs)], None).stdout).to_string();
    let field = |name: &str| -> usize {
        info.lines().find_map(|l| l.trim().strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {info}")).trim().parse().unwrap()
    };
    let (zone_end, clusters) = (field("MFT Zone End:"), field("Volume Size in Clusters:"));
    let bitmap = tool("ntfscat", &[s(&fs), "$Bitmap"], None).stdout;
    let free_past_zone = (zone_end..clusters).filter(|&i| bitmap[i / 8] >> (i % 8) & 1 == 0).count();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("filler"), vec![b'F'; free_past_zone * 4096]).unwrap();
    tool("ntfscp", &["-q", s(&fs), s(&src.join("filler")), "filler.bin"], None);
    let n = 4000usize;
    let content = |i: usize| if i % 20 == 0 { pattern_bytes(i as u64, 8000) } else { format!("file {i}\n").into_bytes() };
    let name = |i: usize| if i % 20 == 0 { format!("d{i}.bin") } else { format!("f{i}.txt") };
    let local = src.join("one");
    for i in 1..=n {
        std::fs::write(&local, content(i)).unwrap();
        tool("ntfscp", &["-q", s(&fs), s(&local), &name(i)], None);
    }
    let mft_runs = ntfscluster_runs(&fs, "$MFT");
    eprintln!("$MFT $DATA runs: {}", mft_runs.len());
    assert!(mft_runs.len() >= 150, "the $MFT should be fragmented: {mft_runs:?}");
    let rec0 = String::from_utf8_lossy(&tool("ntfsinfo", &["-i", "0", s(&fs)], None).stdout).to_string();
    assert!(rec0.contains("Dumping attribute $ATTRIBUTE_LIST"), "$MFT should go on through an attribute list: {rec0}");
    // part of $DATA (the latest runs, where the last files' records are) in an extension record
    let ext = rec0.lines().find(|l| l.starts_with("Dumping attribute $DATA (0x80) from mft record ") && !l.ends_with("record 0 (0x0)"));
    assert!(ext.is_some(), "$MFT's data runs should go on in an extension record: {rec0}");
    let raw = gpt_disk_with(d, "gpt.raw", size + 2 * MIB, &fs);
    let img = convert(&raw, "qcow2", &d.join("gpt.qcow2"));
    let names = ntfsls_names(&fs, "/");
    assert_eq!(names.len(), n + 1);
    assert_eq!(ls(&raw, "/"), names, "ls / of the raw disk");
    assert_eq!(ls(&img, "/"), names, "ls / of the qcow2");
    // a sample of files, resident and not, and the last ones (in the extension's runs)
    for i in (1..=n).filter(|i| i % 100 == 0 || i % 397 == 1 || *i > n - 5) {
        let path = format!("/{}", name(i));
        let got = vdiskview_ok(&["cat", s(&img), &path]);
        assert_bytes_eq(&got, &content(i), &format!("cat {path}"));
        assert_bytes_eq(&got, &ntfscat(&fs, &path), &format!("cat {path} vs ntfscat"));
    }
    for i in [1, n / 2 + 1, n - 1] {
        let path = format!("/{}", name(i));
        let v = check_locate_reads_back(&img, &path, &content(i));
        assert_eq!(v["extents"][0]["kind"], "resident", "{}", pretty(&v));
    }
    // damage to the extension record that holds $MFT's later runs: a clean error
    let ext_rec: u64 = ext.unwrap().split("from mft record ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    let b = std::fs::read(&fs).unwrap();
    let mft = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) * 4096;
    drop(b);
    let bad = d.join("bad.raw");
    for (what, off, bytes) in [("signature", 0u64, &b"XXXX"[..]), ("update sequence", 0x1fe, &[0x55, 0xaa][..])] {
        std::fs::copy(&raw, &bad).unwrap();
        patch_file(&bad, MIB + mft + ext_rec * 1024 + off, bytes);
        let out = vdiskview_timeout(&["ls", s(&bad), "/"], Duration::from_secs(20));
        assert_clean_error(&out, what);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("MFT record {ext_rec}")), "{what}: {err}");
    }
}

/// NTFS-compressed files (LZNT1), made by the real tools without mounting: `mkntfs -C` marks
/// the root folder compressed, and ntfs-3g then compresses what `ntfscp` writes into it, in
/// units of 16 clusters (a unit that does not shrink is stored as is; a unit of zeros is
/// left sparse). Text (compressed units), random bytes (stored units), zeros (sparse units),
/// a mix across unit boundaries, and a small resident file; `cat` equals the source and
/// ntfscat, `locate` answers with a note.
#[test]
fn ntfs_compressed_files() {
    let dir = workspace();
    let d = dir.path();
    let fs = d.join("comp.fs");
    std::fs::File::create(&fs).unwrap().set_len(24 * MIB).unwrap();
    tool("mkntfs", &["-F", "-Q", "-q", "-C", "-L", "COMP", s(&fs)], None);
    let text = text_100k();
    let mut mixed = text[..70_000].to_vec();
    mixed.extend(pattern_bytes(3, 50_000));
    mixed.extend(vec![0u8; 200_000]);
    mixed.extend(&text[..33_333]);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("text.txt", text.repeat(3)),
        ("random.bin", pattern_bytes(5, 300_001)),
        ("zeros.bin", vec![0u8; 256 * 1024]),
        ("mixed.bin", mixed),
        ("small.txt", b"small and resident\n".to_vec()),
    ];
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, bytes) in &files {
        std::fs::write(src.join(name), bytes).unwrap();
        tool("ntfscp", &["-q", s(&fs), s(&src.join(name)), name], None);
    }
    let info = String::from_utf8_lossy(&tool("ntfsinfo", &["-F", "text.txt", s(&fs)], None).stdout).to_string();
    assert!(info.contains("Compression unit:\t 4"), "ntfs-3g should have compressed text.txt: {info}");
    let raw = gpt_disk_with(d, "gpt.raw", 26 * MIB, &fs);
    let img = convert(&raw, "qcow2", &d.join("gpt.qcow2"));
    assert_eq!(ls(&img, "/"), ntfsls_names(&fs, "/"));
    for (name, bytes) in &files {
        let path = format!("/{name}");
        let got = vdiskview_ok(&["cat", s(&img), &path]);
        assert_bytes_eq(&got, bytes, &format!("cat {path} vs source"));
        assert_bytes_eq(&got, &ntfscat(&fs, &path), &format!("cat {path} vs ntfscat"));
    }
    let v = vdiskview_json(&["locate", s(&img), "/text.txt", "--output=json"]);
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("LZNT1")), "{}", pretty(&v));
    // damaged compressed units: chunk headers and tokens overwritten; a clean error or other
    // bytes, never a panic or a hang
    let (_, lcn, _) = ntfscluster_runs(&fs, "text.txt")[0];
    let unit = MIB + lcn as u64 * 4096;
    let noise = pattern_bytes(23, 64);
    let bad = d.join("bad.raw");
    let mut errors = 0;
    for seed in 0..12usize {
        std::fs::copy(&raw, &bad).unwrap();
        let at = match seed % 3 {
            0 => unit,                                // the first chunk's header
            1 => unit + 2 + (noise[seed] as u64 % 64), // its first tokens
            _ => unit + (noise[seed] as u64) * 16,    // somewhere in the unit
        };
        patch_file(&bad, at, &[noise[seed * 2] | 0x80, noise[seed * 2 + 1]]);
        let out = vdiskview_timeout(&["cat", s(&bad), "/text.txt"], Duration::from_secs(20));
        if !out.status.success() {
            assert_clean_error(&out, &format!("seed {seed}"));
            errors += 1;
        } else {
            assert_eq!(out.stdout.len(), files[0].1.len(), "seed {seed}: the size stays the file's");
        }
    }
    eprintln!("{errors} of 12 damaged units gave an error");
}

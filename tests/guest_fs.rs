//! Files inside the guest disk: `ls`, `cat` and `locate` on ext2/3/4 made by mke2fs -d,
//! on MBR and GPT partitions and whole disks, in raw, VHD (fixed, dynamic) and QCOW2
//! images and through a backing chain. File contents are compared with the source files;
//! `locate`'s guest and host offsets are read back and must hold the file's bytes.
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::guest::*;
use support::*;

fn cat(img: &Path, path: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["cat", s(img), path];
    args.extend_from_slice(extra);
    vdiskview_ok(&args)
}

fn ls(img: &Path, path: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["ls", s(img), path];
    args.extend_from_slice(extra);
    vdiskview_text(&args).lines().map(String::from).collect()
}

fn locate(img: &Path, path: &str, extra: &[&str]) -> Value {
    let mut args = vec!["locate", s(img), path, "--output=json"];
    args.extend_from_slice(extra);
    vdiskview_json(&args)
}

/// `locate` must cover the file from 0 to its size in order; every extent's guest bytes
/// and, where it has one, the host bytes at `host-offset` in its layer's file must equal
/// the file's bytes; holes must be zeros in the file. Returns the extents.
#[track_caller]
fn check_locate(img: &Path, path: &str, expected: &[u8], extra: &[&str]) -> Vec<Value> {
    let v = locate(img, path, extra);
    assert_eq!(v["size"], expected.len() as u64, "{}", pretty(&v));
    let ext = v["extents"].as_array().unwrap().clone();
    let mut pos = 0u64;
    for e in &ext {
        let logical = e["logical"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        assert_eq!(logical, pos, "extents must be in order without gaps: {}", pretty(&v));
        assert!(len > 0, "{}", pretty(&v));
        let want = &expected[logical as usize..(logical + len) as usize];
        let what = format!("{} {} bytes 0x{:x}+0x{:x}", s(img), path, logical, len);
        match e["virtual"].as_u64() {
            None => {
                assert_eq!(e["kind"], "hole", "{}", pretty(e));
                assert!(want.iter().all(|&b| b == 0), "{what}: a hole where the file has data");
            }
            Some(virt) => {
                let got = vdiskview_ok(&["read", s(img), "--offset", &virt.to_string(), "--length", &len.to_string()]);
                assert_bytes_eq(&got, want, &format!("{what}: guest bytes at virtual 0x{virt:x}"));
            }
        }
        if let Some(host) = e["host-offset"].as_u64() {
            let file = e["filename"].as_str().unwrap();
            assert_eq!(e["host-file"].as_str(), Some(file), "{}", pretty(e));
            let got = vdiskview_ok(&["read", file, "--file", "--offset", &host.to_string(), "--length", &len.to_string()]);
            assert_bytes_eq(&got, want, &format!("{what}: host bytes at 0x{host:x} in {file}"));
        } else if e["kind"] == "data" {
            panic!("{what}: a data extent without a host offset: {}", pretty(e));
        }
        pos += len;
    }
    assert_eq!(pos, expected.len() as u64, "extents must cover the file: {}", pretty(&v));
    ext
}

/// Every file of the tree reads back exactly; `ls /` lists the tree's top level.
#[track_caller]
fn check_tree(img: &Path, extra: &[&str]) {
    assert_eq!(cat(img, "/test1.txt", extra), HELLO, "{}", s(img));
    assert_eq!(String::from_utf8(cat(img, "/test1.txt", extra)).unwrap().trim_end(), "Hello, Sailor!");
    for (p, bytes) in tree_files(0) {
        assert_bytes_eq(&cat(img, &format!("/{p}"), extra), &bytes, &format!("{} /{p}", s(img)));
    }
    assert_bytes_eq(&cat(img, "/data/sparse.bin", extra), &sparse_contents(), "sparse.bin");
    let names = ls(img, "/", extra);
    for want in ["test1.txt", "big.txt", "etc", "data", "emptydir", "empty.txt", "link-to-test1", "lost+found"] {
        assert!(names.iter().any(|n| n == want), "ls / of {} lacks {want}: {names:?}", s(img));
    }
    assert!(!names.iter().any(|n| n == "." || n == ".."), "{names:?}");
}

#[test]
fn mbr_ext2_in_every_format() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext2", &[]);
    for kind in KINDS {
        let img = convert(&raw, kind, &dir.path().join(format!("disk.{kind}")));
        check_tree(&img, &[]);
        check_locate(&img, "/test1.txt", HELLO, &[]);
        check_locate(&img, "/big.txt", &text_100k(), &[]);
    }
}

#[test]
fn locate_in_every_format_reads_back() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext4", &[]);
    let files = tree_files(0);
    let pattern = &files.iter().find(|f| f.0 == "data/pattern.bin").unwrap().1;
    for kind in KINDS.iter().chain(&["qcow2-c4k"]) {
        let img = convert(&raw, kind, &dir.path().join(format!("disk.{kind}")));
        check_locate(&img, "/data/pattern.bin", pattern, &[]);
        let ext = check_locate(&img, "/data/sparse.bin", &sparse_contents(), &[]);
        assert!(ext.iter().filter(|e| e["kind"] == "hole").count() >= 12, "{kind}: holes: {ext:?}");
        // the first bytes: the host offset and the guest offset both hold them
        let v = locate(&img, "/test1.txt", &[]);
        let e0 = &v["extents"][0];
        let host = e0["host-offset"].as_u64().expect("host-offset");
        let virt = e0["virtual"].as_u64().expect("virtual");
        let h = vdiskview_ok(&["read", s(&img), "--file", "--offset", &host.to_string(), "--length", "14"]);
        let g = vdiskview_ok(&["read", s(&img), "--offset", &virt.to_string(), "--length", "14"]);
        assert_eq!(h, b"Hello, Sailor!", "{kind}");
        assert_eq!(g, b"Hello, Sailor!", "{kind}");
        assert_eq!(e0["layer"], 0);
    }
}

/// ext2 with 1 KiB blocks: the 1.5 MiB file goes through single and double indirect blocks.
#[test]
fn ext2_block_map_with_indirect_blocks() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext2", &["-b", "1024"]);
    let img = convert(&raw, "vpc-dynamic", &dir.path().join("d.vhd"));
    check_tree(&img, &[]);
    let files = tree_files(0);
    for (p, bytes) in &files {
        check_locate(&img, &format!("/{p}"), bytes, &[]);
    }
    check_locate(&img, "/data/sparse.bin", &sparse_contents(), &[]);
}

#[test]
fn ext3_with_journal() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext3", &[]);
    let img = convert(&raw, "qcow2", &dir.path().join("d.qcow2"));
    check_tree(&img, &[]);
    let parts = vdiskview_json(&["partitions", s(&img), "--output=json"]);
    assert_eq!(parts["partitions"][0]["filesystem"], "ext3", "{}", pretty(&parts));
    check_locate(&img, "/big.txt", &text_100k(), &[]);
}

/// ext4 on the first of two GPT partitions in a QCOW2: /etc/passwd, the default partition,
/// and `--partition 2` for the other one.
#[test]
fn gpt_ext4_two_partitions_qcow2() {
    let dir = workspace();
    let (raw, t1, t2) = gpt_two_ext4(dir.path());
    let img = convert(&raw, "qcow2", &dir.path().join("gpt.qcow2"));
    let passwd = std::fs::read(t1.join("etc/passwd")).unwrap();
    assert_eq!(cat(&img, "/etc/passwd", &[]), passwd);
    assert_eq!(cat(&img, "/etc/passwd", &["--partition", "1"]), passwd);
    assert_eq!(cat(&img, "/etc/hostname", &[]), std::fs::read(t1.join("etc/hostname")).unwrap());
    assert_eq!(cat(&img, "/etc/hostname", &["--partition", "2"]), std::fs::read(t2.join("etc/hostname")).unwrap());
    check_tree(&img, &[]);
    check_locate(&img, "/etc/passwd", &passwd, &[]);
    let p2 = std::fs::read(t2.join("data/pattern.bin")).unwrap();
    let ext = check_locate(&img, "/data/pattern.bin", &p2, &["--partition", "2"]);
    assert!(ext[0]["virtual"].as_u64().unwrap() >= 17 * MIB, "partition 2 starts at 17 MiB: {ext:?}");
    // a partition that does not exist, or the whole disk (no filesystem at its start)
    let out = vdiskview(&["cat", s(&img), "/etc/passwd", "--partition", "3"]);
    assert_clean_error(&out, "no partition 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no partition 3"));
    let out = vdiskview(&["ls", s(&img), "/", "--partition", "0"]);
    assert_clean_error(&out, "whole disk");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no filesystem"));
}

/// A filesystem on the whole disk (no partition table) is found at offset 0.
#[test]
fn whole_disk_filesystem() {
    let dir = workspace();
    let tree = make_tree(dir.path(), "tree", 0);
    let fs = mkfs(dir.path(), "whole.img", "ext4", 20 * MIB, &tree, "whole", &[]);
    let parts = vdiskview_json(&["partitions", s(&fs), "--output=json"]);
    assert_eq!(parts["scheme"], Value::Null, "{}", pretty(&parts));
    assert_eq!(parts["partitions"].as_array().unwrap().len(), 0);
    assert_eq!(parts["whole-disk-filesystem"]["filesystem"], "ext4", "{}", pretty(&parts));
    assert_eq!(parts["whole-disk-filesystem"]["label"], "whole");
    assert!(vdiskview_text(&["partitions", s(&fs)]).contains("The whole disk holds a filesystem: ext4 (label whole)"));
    for kind in ["raw", "vpc-dynamic", "qcow2"] {
        let img = convert(&fs, kind, &dir.path().join(format!("whole.{kind}")));
        check_tree(&img, &[]);
        check_tree(&img, &["--partition", "0"]);
        let v = locate(&img, "/test1.txt", &[]);
        assert_eq!(v["partition"], Value::Null);
        check_locate(&img, "/big.txt", &text_100k(), &[]);
    }
}

/// A backing chain: the base holds the filesystem, the top only the blocks of the one file
/// that differs. `cat` reads through the chain; `locate` names the layer of each extent.
#[test]
fn backing_chain() {
    let dir = workspace();
    let d = dir.path();
    let (raw, tree) = mbr_ext_disk(d, "ext4", &[]);
    // the same filesystem with big.txt's bytes changed in place (same size)
    let mut changed = text_100k();
    changed[..16].copy_from_slice(b"CHANGED IN TOP!\n");
    std::fs::write(tree.join("big.txt"), &changed).unwrap();
    let fs2 = mkfs(d, "part2.ext4", "ext4", 16 * MIB, &tree, "vdvw-test", &[]);
    let raw2 = d.join("disk2.raw");
    std::fs::copy(&raw, &raw2).unwrap();
    dd_into(&fs2, &raw2, MIB);
    let base = convert(&raw, "qcow2", &d.join("base.qcow2"));
    let top = overlay(&base, "qcow2", &raw, &raw2, &d.join("top.qcow2"));
    assert_eq!(cat(&top, "/test1.txt", &[]), HELLO);
    assert_bytes_eq(&cat(&top, "/big.txt", &[]), &changed, "big.txt through the chain");
    assert_bytes_eq(&cat(&base, "/big.txt", &[]), &text_100k(), "big.txt in the base");
    let ext = check_locate(&top, "/big.txt", &changed, &[]);
    assert_eq!(ext[0]["layer"], 0, "the changed bytes are in the top: {ext:?}");
    assert!(same_file(ext[0]["filename"].as_str().unwrap(), &top));
    let ext = check_locate(&top, "/test1.txt", HELLO, &[]);
    assert_eq!(ext[0]["layer"], 1, "unchanged bytes are in the base: {ext:?}");
    assert!(same_file(ext[0]["filename"].as_str().unwrap(), &base));
    // a VHD over... a dynamic VHD as the base of a qcow2
    let vbase = convert(&raw, "vpc-dynamic", &d.join("base.vhd"));
    let vtop = d.join("vtop.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&vbase), "-F", "vpc", s(&vtop)]);
    check_tree(&vtop, &[]);
    let ext = check_locate(&vtop, "/big.txt", &text_100k(), &[]);
    assert!(ext.iter().all(|e| e["layer"] == 1), "{ext:?}");
}

/// `ls -l` gives type, mode, size and mtime; `ls` of a file shows the file; symlinks are
/// followed by cat and shown with their target by ls -l.
#[test]
fn ls_long_and_symlinks() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext4", &[]);
    let lines = ls(&raw, "/", &["-l"]);
    let line = |name: &str| lines.iter().find(|l| l.split_whitespace().nth(6) == Some(name)).cloned();
    let big = line("big.txt").unwrap_or_else(|| panic!("{lines:?}"));
    assert!(big.starts_with("-rw"), "{big}");
    assert!(big.contains(" 102400 "), "{big}");
    let etc = line("etc").unwrap_or_else(|| panic!("{lines:?}"));
    assert!(etc.starts_with('d'), "{etc}");
    let link = lines.iter().find(|l| l.contains("link-to-test1")).unwrap();
    assert!(link.starts_with('l') && link.ends_with("-> test1.txt"), "{link}");
    // the mtime column is a date
    let f: Vec<&str> = big.split_whitespace().collect();
    assert_eq!(f[4].len(), 10, "{big}");
    assert_eq!(&f[4][4..5], "-", "{big}");
    assert_eq!(cat(&raw, "/link-to-test1", &[]), HELLO);
    assert_eq!(ls(&raw, "/etc", &[]), vec!["hostname", "passwd"]);
    assert_eq!(ls(&raw, "/test1.txt", &[]), vec!["/test1.txt"]);
    assert_eq!(ls(&raw, "/emptydir", &[]), Vec::<String>::new());
    assert_eq!(ls(&raw, "/data/deep/er", &[]), vec!["nested.txt"]);
    // relative paths are taken from the root
    assert_eq!(cat(&raw, "test1.txt", &[]), HELLO);
    assert_eq!(cat(&raw, "/empty.txt", &[]), b"");
    let v = locate(&raw, "/empty.txt", &[]);
    assert_eq!(v["extents"].as_array().unwrap().len(), 0, "{}", pretty(&v));
    // human locate output names the columns
    let text = vdiskview_text(&["locate", s(&raw), "/big.txt"]);
    assert!(text.contains("host-offset") && text.contains("virtual"), "{text}");
}

#[test]
fn missing_paths_and_wrong_types_are_clean_errors() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext2", &[]);
    let img = convert(&raw, "vpc-dynamic", &dir.path().join("d.vhd"));
    for (args, want) in [
        (vec!["cat", s(&img), "/nope.txt"], "No such file or directory"),
        (vec!["cat", s(&img), "/etc/nope"], "No such file or directory"),
        (vec!["ls", s(&img), "/nope"], "No such file or directory"),
        (vec!["locate", s(&img), "/nope"], "No such file or directory"),
        (vec!["locate", s(&img), "/nope", "--output=json"], "No such file or directory"),
        (vec!["cat", s(&img), "/etc"], "Is a directory"),
        (vec!["cat", s(&img), "/test1.txt/x"], "Not a directory"),
    ] {
        let out = vdiskview(&args);
        assert_clean_error(&out, &args.join(" "));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{}: {err}", args.join(" "));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn no_or_unsupported_filesystem() {
    let dir = workspace();
    let d = dir.path();
    // partitioned, but nothing in the partition
    let blank = sfdisk_disk(d, "blank.raw", 8 * MIB, "label: dos\nstart=2048, type=83\n");
    let out = vdiskview(&["ls", s(&blank)]);
    assert_clean_error(&out, "blank partition");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no filesystem found"), "{}", String::from_utf8_lossy(&out.stderr));
    // no partition table and no filesystem
    let zero = d.join("zero.raw");
    std::fs::File::create(&zero).unwrap().set_len(4 * MIB).unwrap();
    let out = vdiskview(&["cat", s(&zero), "/x"]);
    assert_clean_error(&out, "zero disk");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no filesystem found"));
    // swap in the only partition: a filesystem we do not read
    let part = d.join("swap.part");
    std::fs::File::create(&part).unwrap().set_len(4 * MIB).unwrap();
    tool("mkswap", &["-q", s(&part)], None);
    let swap = sfdisk_disk(d, "swap.raw", 8 * MIB, "label: dos\nstart=2048, size=8192, type=82\n");
    dd_into(&part, &swap, MIB);
    let parts = vdiskview_json(&["partitions", s(&swap), "--output=json"]);
    assert_eq!(parts["partitions"][0]["filesystem"], "swap", "{}", pretty(&parts));
    let out = vdiskview(&["ls", s(&swap)]);
    assert_clean_error(&out, "swap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported filesystem swap"), "{err}");
}

/// A damaged superblock: a clean one-line error naming it, never a panic.
#[test]
fn damaged_superblock() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext2", &[]);
    let sb = MIB + 1024;
    // s_log_block_size = 40
    let bad = dir.path().join("bad-bs.raw");
    std::fs::copy(&raw, &bad).unwrap();
    patch_file(&bad, sb + 0x18, &40u32.to_le_bytes());
    // s_blocks_per_group = 0
    let bad2 = dir.path().join("bad-bpg.raw");
    std::fs::copy(&raw, &bad2).unwrap();
    patch_file(&bad2, sb + 0x20, &0u32.to_le_bytes());
    // a block count far larger than the disk
    let bad3 = dir.path().join("bad-count.raw");
    std::fs::copy(&raw, &bad3).unwrap();
    patch_file(&bad3, sb + 0x4, &0xffff_fff0u32.to_le_bytes());
    for img in [&bad, &bad2, &bad3] {
        for cmd in ["ls", "cat", "locate"] {
            let out = vdiskview_timeout(&[cmd, s(img), "/test1.txt"], Duration::from_secs(20));
            assert_clean_error(&out, &format!("{cmd} {}", s(img)));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("damaged"), "{cmd} {}: {err}", s(img));
        }
    }
}

/// Random damage to the filesystem's metadata (superblock, group descriptors, the first
/// inodes, the root directory): every command ends in time with success or a clean one-line
/// error.
#[test]
fn hostile_metadata_never_panics() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext4", &["-b", "1024", "-O", "^metadata_csum"]);
    let orig = std::fs::read(&raw).unwrap();
    let part = MIB as usize;
    let le32 = |o: usize| u32::from_le_bytes(orig[o..o + 4].try_into().unwrap()) as usize;
    // 1 KiB blocks: superblock at 1024, group descriptors at 2048; inode table of group 0
    let itable = part + le32(part + 2048 + 8) * 1024;
    // the root directory (inode 2, 256-byte inodes): its extent's first block
    let root_inode = itable + 256;
    let root_dir = part + le32(root_inode + 0x28 + 12 + 8) * 1024;
    let regions = [(part + 1024, 256), (part + 2048, 64), (itable, 16 * 256), (root_dir, 1024)];
    let bad = dir.path().join("bad.raw");
    let noise = pattern_bytes(99, 4096);
    let mut failures = 0;
    let mut runs = 0;
    for seed in 0..32usize {
        let mut bytes = orig.clone();
        let (start, len) = regions[seed % regions.len()];
        for k in 0..1 + seed % 4 {
            let r = &noise[(seed * 16 + k * 4) % 4000..][..4];
            let off = start + u32::from_le_bytes(r.try_into().unwrap()) as usize % len;
            bytes[off] ^= noise[(seed * 7 + k) % 4096] | 1;
        }
        std::fs::write(&bad, &bytes).unwrap();
        for args in [
            vec!["ls", s(&bad), "/", "-l"],
            vec!["cat", s(&bad), "/big.txt"],
            vec!["locate", s(&bad), "/data/pattern.bin", "--output=json"],
            vec!["ls", s(&bad), "/data/deep/er"],
        ] {
            let out = vdiskview_timeout(&args, Duration::from_secs(20));
            runs += 1;
            if !out.status.success() {
                assert_clean_error(&out, &format!("seed {seed}: {}", args.join(" ")));
                failures += 1;
            }
        }
    }
    eprintln!("{failures} clean failures in {runs} runs");
    assert!(failures > 0, "the damage should break something");
}

/// The bundled demo image: MBR + ext2 in a dynamic VHD.
#[test]
fn demo_image() {
    let demo = demo_vhd();
    assert_eq!(cat(&demo, "/test1.txt", &[]), HELLO);
    let names = ls(&demo, "/", &[]);
    for want in ["README.txt", "docs", "lost+found", "test1.txt"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
    let random = cat(&demo, "/docs/random.bin", &[]);
    assert_eq!(random.len(), 102400);
    check_locate(&demo, "/docs/random.bin", &random, &[]);
    check_locate(&demo, "/test1.txt", HELLO, &[]);
}

/// `cat` of the 100 KB text file is quick even in a debug build.
#[test]
fn cat_100k_is_quick() {
    let dir = workspace();
    let (raw, _) = mbr_ext_disk(dir.path(), "ext2", &[]);
    let img = convert(&raw, "vpc-dynamic", &dir.path().join("d.vhd"));
    let t = Instant::now();
    let got = cat(&img, "/big.txt", &[]);
    let took = t.elapsed();
    assert_bytes_eq(&got, &text_100k(), "big.txt");
    eprintln!("cat of 100 KiB from a dynamic VHD took {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

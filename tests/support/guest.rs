//! Guest disks for the partition and filesystem tests, made without root or mounts:
//! a source tree on the host, `mke2fs -d` into a filesystem file, `sfdisk`/`sgdisk` on a
//! raw disk file, `dd` of the filesystem into its partition, then `qemu-img convert` to
//! VHD (fixed, dynamic) or QCOW2, optionally over a backing file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{pattern_bytes, qemu_img, qemu_io, run_with_timeout, s, KIB, MIB};

/// `Hello, Sailor!` and a newline, as in the demo image.
pub const HELLO: &[u8] = b"Hello, Sailor!\n";
/// Fixed timestamp for mke2fs, so images are reproducible (2024-01-01T00:00:00Z).
pub const EPOCH: &str = "1704067200";

/// A system tool by name, looked up in PATH and in the sbin folders (mke2fs, sfdisk and
/// sgdisk live there, which a plain user's PATH may lack).
pub fn tool_path(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found (install qemu-utils, e2fsprogs, fdisk, gdisk: see .ci/run)");
}

/// Run a tool with optional standard input; panic with its stderr when it fails.
pub fn tool(name: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool_path(name));
    cmd.args(args).env("E2FSPROGS_FAKE_TIME", EPOCH).env("LC_ALL", "C");
    let out = match stdin {
        None => run_with_timeout(&mut cmd, Duration::from_secs(120)),
        Some(text) => {
            let path = std::env::temp_dir().join(format!("vdvw-stdin-{}-{}", std::process::id(), unique()));
            std::fs::write(&path, text).unwrap();
            let f = std::fs::File::open(&path).unwrap();
            let child = cmd
                .stdin(Stdio::from(f))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
            let out = child.wait_with_output().unwrap();
            let _ = std::fs::remove_file(&path);
            out
        }
    };
    if !out.status.success() {
        panic!(
            "{name} {} failed ({}):\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A 100 KiB text file: numbered lines.
pub fn text_100k() -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0;
    while v.len() < 100 * 1024 {
        v.extend_from_slice(format!("line {:05}: the quick brown fox jumps over the lazy dog\n", i).as_bytes());
        i += 1;
    }
    v.truncate(100 * 1024);
    v
}

/// The file tree every test filesystem holds (path relative to the root, bytes).
pub fn tree_files(variant: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("test1.txt", HELLO.to_vec()),
        ("big.txt", text_100k()),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nsailor:x:1000:1000::/home/sailor:/bin/sh\n".to_vec()),
        ("etc/hostname", format!("guest-{variant}\n").into_bytes()),
        ("data/pattern.bin", pattern_bytes(7 + variant, 1536 * 1024 + 123)),
        ("data/deep/er/nested.txt", b"nested\n".to_vec()),
        ("empty.txt", vec![]),
    ]
}

/// Write the source tree into `dir/name`: the files of `tree_files`, an empty folder, a
/// symlink, and a sparse file with many data runs (many extents on ext4).
pub fn make_tree(dir: &Path, name: &str, variant: u64) -> PathBuf {
    let root = dir.join(name);
    for (p, bytes) in tree_files(variant) {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, bytes).unwrap();
    }
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("test1.txt", root.join("link-to-test1")).unwrap();
    write_sparse(&root.join("data/sparse.bin"));
    root
}

/// A 4 MiB sparse file with 12 data runs of 8 KiB separated by holes.
pub fn sparse_contents() -> Vec<u8> {
    let mut v = vec![0u8; 4 * MIB as usize];
    for i in 0..12usize {
        let off = 64 * KIB as usize + i * 320 * KIB as usize;
        let run = pattern_bytes(100 + i as u64, 8 * KIB as usize);
        v[off..off + run.len()].copy_from_slice(&run);
    }
    v
}

fn write_sparse(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let v = sparse_contents();
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(v.len() as u64).unwrap();
    for i in 0..12usize {
        let off = 64 * KIB as usize + i * 320 * KIB as usize;
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        f.write_all(&v[off..off + 8 * KIB as usize]).unwrap();
    }
}

/// `mke2fs -t FSTYPE -d TREE` into a new file of `size` bytes. `extra` adds options
/// (e.g. `-b 1024`). Fixed UUID and hash seed: the same tree gives the same filesystem.
pub fn mkfs(dir: &Path, name: &str, fstype: &str, size: u64, tree: &Path, label: &str, extra: &[&str]) -> PathBuf {
    let fs = dir.join(name);
    std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
    let mut args = vec![
        "-q",
        "-F",
        "-t",
        fstype,
        "-L",
        label,
        "-U",
        "5ad1d0e5-0000-4000-8000-000000000001",
        "-E",
        "root_owner=0:0,hash_seed=5ad1d0e5-0000-4000-8000-000000000002",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-d", s(tree), s(&fs)]);
    tool("mke2fs", &args, None);
    fs
}

/// Copy `src` into `disk` at byte `offset` (dd conv=notrunc).
pub fn dd_into(src: &Path, disk: &Path, offset: u64) {
    assert_eq!(offset % 512, 0);
    tool(
        "dd",
        &[
            &format!("if={}", s(src)),
            &format!("of={}", s(disk)),
            "bs=512",
            &format!("seek={}", offset / 512),
            "conv=notrunc,sparse",
            "status=none",
        ],
        None,
    );
}

/// A raw disk of `size` bytes partitioned by `sfdisk` with `script`.
pub fn sfdisk_disk(dir: &Path, name: &str, size: u64, script: &str) -> PathBuf {
    let disk = dir.join(name);
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    tool("sfdisk", &["-q", "--no-reread", "--no-tell-kernel", s(&disk)], Some(script));
    disk
}

/// `sfdisk --json DISK`, parsed: the table as util-linux reads it.
pub fn sfdisk_json(disk: &Path) -> serde_json::Value {
    let out = tool("sfdisk", &["--json", s(disk)], None);
    serde_json::from_slice(&out.stdout).expect("sfdisk --json")
}

/// `qemu-img convert -f raw -O FMT [-o OPTS] RAW OUT`. `fmt`: `raw`, `vpc-dynamic`,
/// `vpc-fixed`, `qcow2`.
pub fn convert(raw: &Path, kind: &str, out: &Path) -> PathBuf {
    let (fmt, opts) = match kind {
        "raw" => ("raw", None),
        "vpc-dynamic" => ("vpc", Some("subformat=dynamic")),
        "vpc-fixed" => ("vpc", Some("subformat=fixed")),
        "qcow2" => ("qcow2", None),
        "qcow2-c4k" => ("qcow2", Some("cluster_size=4096")),
        k => panic!("unknown kind {k}"),
    };
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", fmt];
    if let Some(o) = opts {
        args.extend_from_slice(&["-o", o]);
    }
    args.extend_from_slice(&[s(raw), s(out)]);
    qemu_img(&args);
    out.to_path_buf()
}

/// The image kinds the "must hold" checks name.
pub const KINDS: &[&str] = &["raw", "vpc-dynamic", "vpc-fixed", "qcow2"];

/// A 24 MiB raw disk: MBR with one Linux partition at 1 MiB (16 MiB long) holding an
/// ext2 (or `fstype`) filesystem of the test tree. Returns (disk, tree root).
pub fn mbr_ext_disk(dir: &Path, fstype: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let tree = make_tree(dir, &format!("tree-{fstype}"), 0);
    let fs = mkfs(dir, &format!("part.{fstype}"), fstype, 16 * MIB, &tree, "vdvw-test", extra);
    let disk = sfdisk_disk(
        dir,
        &format!("mbr-{fstype}.raw"),
        24 * MIB,
        "label: dos\nlabel-id: 0x12345678\nunit: sectors\n\nstart=2048, size=32768, type=83\n",
    );
    dd_into(&fs, &disk, MIB);
    (disk, tree)
}

/// A 40 MiB raw disk: GPT (sgdisk) with two Linux partitions, `root` (ext4, test tree) at
/// 1 MiB and `data` (ext4, variant tree) after it. Returns (disk, tree of p1, tree of p2).
pub fn gpt_two_ext4(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let disk = dir.join("gpt.raw");
    std::fs::File::create(&disk).unwrap().set_len(40 * MIB).unwrap();
    tool(
        "sgdisk",
        &[
            "-n", "1:2048:+16M", "-t", "1:8300", "-c", "1:root",
            "-n", "2:0:+16M", "-t", "2:8300", "-c", "2:data",
            s(&disk),
        ],
        None,
    );
    let t1 = make_tree(dir, "tree-p1", 0);
    let t2 = make_tree(dir, "tree-p2", 2);
    let f1 = mkfs(dir, "p1.ext4", "ext4", 16 * MIB, &t1, "rootfs", &[]);
    let f2 = mkfs(dir, "p2.ext4", "ext4", 16 * MIB, &t2, "datafs", &[]);
    dd_into(&f1, &disk, MIB);
    dd_into(&f2, &disk, 17 * MIB);
    (disk, t1, t2)
}

/// A qcow2 (4 KiB clusters) over `base` (format `base_fmt`, the guest disk `old_raw`) that
/// holds only the 4 KiB chunks where `new_raw` differs: the top of a two-file chain whose
/// guest disk is `new_raw`.
pub fn overlay(base: &Path, base_fmt: &str, old_raw: &Path, new_raw: &Path, top: &Path) -> PathBuf {
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", s(base), "-F", base_fmt, s(top)]);
    let old = std::fs::read(old_raw).unwrap();
    let new = std::fs::read(new_raw).unwrap();
    assert_eq!(old.len(), new.len());
    let dir = top.parent().unwrap().join(format!("{}.chunks", top.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmds = vec![];
    for (i, (a, b)) in old.chunks(4096).zip(new.chunks(4096)).enumerate() {
        if a != b {
            let f = dir.join(format!("{i}.bin"));
            std::fs::write(&f, b).unwrap();
            cmds.push(format!("write -s {} {} {}", s(&f), i * 4096, b.len()));
        }
    }
    assert!(!cmds.is_empty(), "the two disks are the same");
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("qcow2", top, &refs);
    top.to_path_buf()
}

// ---- FAT and NTFS volumes (mkfs.fat + mtools, mkntfs + ntfscp), no mounting ----

/// A raw disk of `size` bytes with one MBR partition of type `ptype` at 1 MiB holding the
/// filesystem file `fs` (its whole length).
pub fn mbr_disk_with(dir: &Path, name: &str, size: u64, fs: &Path, ptype: &str) -> PathBuf {
    let sectors = std::fs::metadata(fs).unwrap().len() / 512;
    let disk = sfdisk_disk(
        dir,
        name,
        size,
        &format!("label: dos\nlabel-id: 0x12345678\nunit: sectors\n\nstart=2048, size={sectors}, type={ptype}\n"),
    );
    dd_into(fs, &disk, MIB);
    disk
}

/// A raw disk of `size` bytes with one GPT partition (Microsoft basic data) at 1 MiB holding
/// the filesystem file `fs`.
pub fn gpt_disk_with(dir: &Path, name: &str, size: u64, fs: &Path) -> PathBuf {
    let disk = dir.join(name);
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    let len = std::fs::metadata(fs).unwrap().len();
    tool("sgdisk", &["-n", &format!("1:2048:+{}K", len / 1024), "-t", "1:0700", "-c", "1:data", s(&disk)], None);
    dd_into(fs, &disk, MIB);
    disk
}

/// Files of the FAT test volumes: long names, nested directories, a multi-cluster file,
/// an 8.3 upper-case name, an empty file (paths from the root, bytes).
pub fn fat_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("hello.txt".into(), HELLO.to_vec()),
        ("A Long File Name with spaces.txt".into(), b"long names work\n".to_vec()),
        ("BIG.TXT".into(), text_100k()),
        ("Long Directory Name/sub dir/nested file.bin".into(), pattern_bytes(31, 300 * 1024 + 7)),
        ("Long Directory Name/short.txt".into(), b"short\n".to_vec()),
        ("data/pattern.bin".into(), pattern_bytes(7, 1536 * 1024 + 123)),
        ("empty.txt".into(), vec![]),
    ]
}

/// `mkfs.fat -F BITS` on a new file of `size` bytes (`extra` options: `-s 1`, `-f 1`), the
/// files of [`fat_files`] copied in with `mmd`/`mcopy`, and a fragmented file (`frag.bin`:
/// written after deleting a file between two others). Returns the volume and its files.
pub fn fat_volume(dir: &Path, bits: u32, size: u64, extra: &[&str]) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let fs = dir.join(format!("fat{bits}.fs"));
    std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
    let bits_s = bits.to_string();
    let mut args = vec!["-F", bits_s.as_str(), "-n", "VDVWFAT", "-i", "12345678"];
    args.extend_from_slice(extra);
    args.push(s(&fs));
    tool("mkfs.fat", &args, None);
    let src = dir.join(format!("fat{bits}-src"));
    let mut files = fat_files();
    let mut made = std::collections::BTreeSet::new();
    for (p, bytes) in &files {
        let local = src.join(p);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, bytes).unwrap();
        let mut d = String::new();
        for comp in p.split('/').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
            d.push('/');
            d.push_str(comp);
            if made.insert(d.clone()) {
                tool("mmd", &["-i", s(&fs), &format!("::{d}")], None);
            }
        }
        tool("mcopy", &["-i", s(&fs), s(&local), &format!("::/{p}")], None);
    }
    // fragmentation: a1 a2 a3, delete a2, then a file larger than the gap
    for (i, n) in ["a1.bin", "a2.bin", "a3.bin"].iter().enumerate() {
        let local = src.join(n);
        std::fs::write(&local, pattern_bytes(50 + i as u64, 20 * 1024)).unwrap();
        tool("mcopy", &["-i", s(&fs), s(&local), &format!("::/{n}")], None);
    }
    tool("mdel", &["-i", s(&fs), "::/a2.bin"], None);
    let frag = pattern_bytes(60, 64 * 1024 + 5);
    std::fs::write(src.join("frag.bin"), &frag).unwrap();
    tool("mcopy", &["-i", s(&fs), s(&src.join("frag.bin")), "::/frag.bin"], None);
    files.push(("frag.bin".into(), frag));
    files.push(("a1.bin".into(), pattern_bytes(50, 20 * 1024)));
    files.push(("a3.bin".into(), pattern_bytes(52, 20 * 1024)));
    (fs, files)
}

/// `mdir -b` of a folder of a FAT volume: the names it holds (mtools as the oracle).
pub fn mdir_names(fs: &Path, dir: &str) -> Vec<String> {
    let out = tool("mdir", &["-b", "-i", s(fs), &format!("::{dir}")], None);
    let prefix = if dir == "/" { "::/".to_string() } else { format!("::{dir}/") };
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "." && l != "..")
        .collect();
    v.sort();
    v
}

/// `mtype` of a file of a FAT volume: its bytes as mtools reads them.
pub fn mtype(fs: &Path, path: &str) -> Vec<u8> {
    tool("mtype", &["-i", s(fs), &format!("::{path}")], None).stdout
}

/// `mkntfs -F -Q` on a new file of `size` bytes (`extra`: `-c 512`, `-s 4096`), then with
/// `ntfscp`: a small resident file, a text file, a large file, a file with an alternate data
/// stream, a file inside the `$Extend` folder (ntfscp cannot make folders), and a sparse
/// file (`ntfstruncate` past its data). Returns the volume and its files (paths from the root).
pub fn ntfs_volume(dir: &Path, name: &str, size: u64, extra: &[&str]) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let fs = dir.join(name);
    std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
    let mut args = vec!["-F", "-Q", "-q", "-L", "VDVWNTFS"];
    args.extend_from_slice(extra);
    args.push(s(&fs));
    tool("mkntfs", &args, None);
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("tiny.txt".into(), HELLO.to_vec()),
        ("big.txt".into(), text_100k()),
        ("pattern.bin".into(), pattern_bytes(7, 1536 * 1024 + 123)),
        ("A long NTFS file name.dat".into(), pattern_bytes(9, 5000)),
        ("$Extend/inside.txt".into(), b"inside a folder\n".to_vec()),
        ("empty.txt".into(), vec![]),
    ];
    for (i, (p, bytes)) in files.iter().enumerate() {
        let local = src.join(format!("f{i}"));
        std::fs::write(&local, bytes).unwrap();
        tool("ntfscp", &["-q", s(&fs), s(&local), p], None);
    }
    // an alternate data stream on tiny.txt
    let ads = b"the stream's own bytes\n".to_vec();
    std::fs::write(src.join("ads"), &ads).unwrap();
    tool("ntfscp", &["-q", "-N", "alt", s(&fs), s(&src.join("ads")), "tiny.txt"], None);
    files.push(("tiny.txt:alt".into(), ads));
    // a sparse file: 64 KiB of data, then extended to 4 MiB without allocating
    let head = pattern_bytes(11, 64 * 1024);
    std::fs::write(src.join("sparse"), &head).unwrap();
    tool("ntfscp", &["-q", s(&fs), s(&src.join("sparse")), "sparse.bin"], None);
    let ls = tool("ntfsls", &["-i", s(&fs)], None);
    let rec = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?;
            (w.next()? == "sparse.bin").then(|| n.to_string())
        })
        .expect("sparse.bin's record");
    tool("ntfstruncate", &["-q", s(&fs), &rec, &(4 * MIB).to_string()], None);
    let mut sparse = head;
    sparse.resize(4 * MIB as usize, 0);
    files.push(("sparse.bin".into(), sparse));
    (fs, files)
}

/// `ntfsls` of a folder: the names it lists (ntfs-3g as the oracle).
pub fn ntfsls_names(fs: &Path, dir: &str) -> Vec<String> {
    let out = tool("ntfsls", &["-p", dir, s(fs)], None);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

/// `ntfscat` of a file (`path:stream` for a named stream).
pub fn ntfscat(fs: &Path, path: &str) -> Vec<u8> {
    let p = path.trim_start_matches('/');
    match p.split_once(':') {
        Some((f, stream)) => tool("ntfscat", &["-a", "0x80", "-n", stream, s(fs), f], None).stdout,
        None => tool("ntfscat", &[s(fs), p], None).stdout,
    }
}

/// `locate` must cover the file from 0 to its size in order; every extent's guest bytes and,
/// where it has one, the host bytes at `host-offset` (`read --file`) must equal the file's
/// bytes; holes must be zeros in the file. Returns the locate report.
#[track_caller]
pub fn check_locate_reads_back(img: &Path, path: &str, expected: &[u8]) -> serde_json::Value {
    let v = super::vdiskview_json(&["locate", s(img), path, "--output=json"]);
    assert_eq!(v["size"], expected.len() as u64, "{}", super::pretty(&v));
    let mut pos = 0u64;
    for e in v["extents"].as_array().unwrap() {
        let logical = e["logical"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        assert_eq!(logical, pos, "extents in order without gaps: {}", super::pretty(&v));
        let want = &expected[logical as usize..(logical + len) as usize];
        let what = format!("{} {} bytes 0x{:x}+0x{:x}", s(img), path, logical, len);
        match e["virtual"].as_u64() {
            None => {
                assert_eq!(e["kind"], "hole", "{}", super::pretty(e));
                assert!(want.iter().all(|&b| b == 0), "{what}: a hole where the file has data");
            }
            Some(virt) => {
                let got = super::vdiskview_ok(&["read", s(img), "--offset", &virt.to_string(), "--length", &len.to_string()]);
                super::assert_bytes_eq(&got, want, &format!("{what}: guest bytes at 0x{virt:x}"));
            }
        }
        if let Some(host) = e["host-offset"].as_u64() {
            let file = e["host-file"].as_str().unwrap();
            let got = super::vdiskview_ok(&["read", file, "--file", "--offset", &host.to_string(), "--length", &len.to_string()]);
            super::assert_bytes_eq(&got, want, &format!("{what}: host bytes at 0x{host:x} in {file}"));
        } else {
            assert!(e["kind"] != "data" && e["kind"] != "resident", "{what}: data without a host offset: {}", super::pretty(e));
        }
        pos += len;
    }
    assert_eq!(pos, expected.len() as u64, "extents cover the file: {}", super::pretty(&v));
    v
}

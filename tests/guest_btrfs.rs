//! btrfs inside the guest disk: volumes made by `mkfs.btrfs --rootdir` (a multi-extent file,
//! small inline files, nested directories, a symlink, an empty file and folder) in an MBR
//! partition inside raw, dynamic VHD and QCOW2 images — the original notes' case is the
//! qcow2 one. The source directory and `btrfs restore` are the oracles for names and content;
//! every `locate` extent is read back at its guest and host offsets. A hole is made by
//! turning one extent item into a hole (checksum recomputed); damaged superblocks and tree
//! blocks give one-line errors.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::guest::*;
use support::*;

fn ls(img: &Path, path: &str) -> Vec<String> {
    let mut v: Vec<String> = vdiskview_text(&["ls", s(img), path]).lines().map(String::from).collect();
    v.sort();
    v
}

/// The source tree: `make_tree`'s files (inline small files, a 1.5 MiB two-extent file, a
/// sparse file, a symlink, nested and empty folders) and a 3 MiB file of several extents.
fn btrfs_tree(dir: &Path) -> PathBuf {
    let tree = make_tree(dir, "tree", 3);
    std::fs::write(tree.join("data/large.bin"), pattern_bytes(77, 3 * MIB as usize + 4321)).unwrap();
    tree
}

/// `mkfs.btrfs --rootdir TREE` into a new file of `size` bytes.
fn btrfs_volume(dir: &Path, tree: &Path, size: u64, extra: &[&str]) -> PathBuf {
    let fs = dir.join("btrfs.img");
    std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
    let mut args = vec!["-q", "-f", "-L", "guestbtrfs", "-U", "5ad1d0e5-0000-4000-8000-0000000000b7"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--rootdir", s(tree), s(&fs)]);
    tool("mkfs.btrfs", &args, None);
    fs
}

/// Every file under `tree` (relative paths, bytes), every folder (relative paths).
fn walk(tree: &Path) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    let mut i = 0;
    while i < dirs.len() {
        let d = tree.join(&dirs[i]);
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = if dirs[i].is_empty() { e.file_name().to_string_lossy().into_owned() } else { format!("{}/{}", dirs[i], e.file_name().to_string_lossy()) };
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(rel);
            } else if t.is_file() {
                files.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
        i += 1;
    }
    (files, dirs)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Every folder lists the source's names; every file reads as the source (and as
/// `btrfs restore` restored it); every locate extent reads back.
#[track_caller]
fn check_volume(img: &Path, tree: &Path, restored: &Path) {
    let (files, dirs) = walk(tree);
    for d in &dirs {
        assert_eq!(ls(img, &format!("/{d}")), names(&tree.join(d)), "{} ls /{d}", s(img));
    }
    for (p, bytes) in &files {
        let path = format!("/{p}");
        let got = vdiskview_ok(&["cat", s(img), &path]);
        assert_bytes_eq(&got, bytes, &format!("{} cat {path} vs source", s(img)));
        assert_bytes_eq(&got, &std::fs::read(restored.join(p)).unwrap(), &format!("{} cat {path} vs btrfs restore", s(img)));
        check_locate_reads_back(img, &path, bytes);
    }
    let long = vdiskview_text(&["ls", "-l", s(img), "/"]);
    assert!(long.lines().any(|l| l.starts_with('l') && l.ends_with("link-to-test1 -> test1.txt")), "{long}");
    assert!(long.lines().any(|l| l.starts_with("drwxr-xr-x") && l.ends_with(" emptydir")), "{long}");
}

/// `btrfs restore` of the volume into a new folder (the oracle beside the source).
fn restore(fs: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("restored");
    std::fs::create_dir_all(&out).unwrap();
    tool("btrfs", &["restore", s(fs), s(&out)], None);
    out
}

#[test]
fn btrfs_in_mbr_in_raw_vhd_qcow2_gpt_and_backing() {
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let restored = restore(&fs, d);
    let raw = mbr_disk_with(d, "disk.raw", 162 * MIB, &fs, "83");
    let parts = vdiskview_json(&["partitions", s(&raw), "--output=json"]);
    assert_eq!(parts["partitions"][0]["filesystem"], "btrfs", "{}", pretty(&parts));
    assert_eq!(parts["partitions"][0]["label"], "guestbtrfs", "{}", pretty(&parts));
    for kind in ["qcow2", "raw", "vpc-dynamic"] {
        let img = convert(&raw, kind, &d.join(format!("image.{kind}")));
        check_volume(&img, &tree, &restored);
    }
    let img = d.join("image.qcow2");
    // the multi-extent file has several extents; an inline file says where its bytes sit
    let large = check_locate_reads_back(&img, "/data/large.bin", &std::fs::read(tree.join("data/large.bin")).unwrap());
    assert_eq!(large["filesystem"], "btrfs");
    let text = vdiskview_text(&["locate", s(&img), "/data/large.bin"]);
    assert!(text.contains("inode") && text.contains("btrfs"), "{text}");
    let small = vdiskview_text(&["locate", s(&img), "/test1.txt"]);
    assert!(small.contains("inline in tree block at volume offset 0x"), "{small}");
    let v = check_locate_reads_back(&img, "/test1.txt", HELLO);
    assert_eq!(v["extents"][0]["kind"], "resident", "{}", pretty(&v));
    // a GPT partition; a qcow2 over the raw disk as its backing file (every byte from layer 1)
    let gpt = gpt_disk_with(d, "gpt.raw", 162 * MIB, &fs);
    check_volume(&gpt, &tree, &restored);
    let top = d.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", s(&raw), "-F", "raw", s(&top)]);
    check_volume(&top, &tree, &restored);
    let v = check_locate_reads_back(&top, "/data/large.bin", &std::fs::read(tree.join("data/large.bin")).unwrap());
    assert!(v["extents"].as_array().unwrap().iter().all(|e| e["layer"] == 1), "{}", pretty(&v));
    // the TUI's Files view lists the top directory
    let frame = vdiskview_text(&["render", s(&img), "--size", "120x30", "--keys", "f", "--format", "text"]);
    assert!(frame.contains("Files") && frame.contains("big.txt") && frame.contains("emptydir/"), "{frame}");
    // stat of a file, the label
    let long = vdiskview_text(&["ls", "-l", s(&img), "/big.txt"]);
    assert!(long.contains(" 102400 ") && long.starts_with("-rw-r--r--"), "{long}");
}

/// A 4 KiB-per-sector crc32c (Castagnoli), as btrfs stores it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Change with `f` every leaf item whose key (objectid, type, offset) and data `pick`
/// chooses, in every copy of its leaf (metadata is DUP), checksums recomputed. Returns how
/// many items were patched.
fn patch_items(vol: &mut [u8], pick: &dyn Fn(u64, u8, u64, &[u8]) -> bool, f: &dyn Fn(&mut [u8])) -> usize {
    const NODE: usize = 16384;
    let mut patched = 0;
    for start in tree_blocks(vol) {
        let b = &vol[start..start + NODE];
        if b[0x64] != 0 {
            continue;
        }
        let n = le32(b, 0x60) as usize;
        if n > (NODE - 0x65) / 25 {
            continue;
        }
        let mut hits = Vec::new();
        for i in 0..n {
            let o = 0x65 + 25 * i;
            let (at, size) = (0x65 + le32(b, o + 17) as usize, le32(b, o + 21) as usize);
            if pick(le64(b, o), b[o + 8], le64(b, o + 9), &b[at..at + size]) {
                hits.push((at, size));
            }
        }
        if !hits.is_empty() {
            let blk = &mut vol[start..start + NODE];
            for &(at, size) in &hits {
                f(&mut blk[at..at + size]);
            }
            let c = crc32c(&blk[0x20..]);
            blk[0..4].copy_from_slice(&c.to_le_bytes());
            patched += hits.len();
        }
    }
    patched
}

/// Change the extent item (inode `ino`, file offset `off`) with `f`.
fn patch_extent_item(vol: &mut [u8], ino: u64, off: u64, f: &dyn Fn(&mut [u8])) -> usize {
    patch_items(vol, &|o, t, k, _| o == ino && t == 108 && k == off, f)
}

/// Turn the extent item into a hole (no disk bytes).
fn punch_extent(vol: &mut [u8], ino: u64, off: u64) -> usize {
    patch_extent_item(vol, ino, off, &|item: &mut [u8]| {
        assert_eq!(item[20], 1, "a regular extent");
        item[21..45].fill(0); // disk_bytenr, disk_num_bytes, offset
    })
}

/// The inode number of the entry `name` as btrfs-progs reads it (`dump-tree -t fs`).
fn dump_ino(fs: &Path, name: &str) -> u64 {
    let dump = String::from_utf8(tool("btrfs", &["inspect-internal", "dump-tree", "-t", "fs", s(fs)], None).stdout).unwrap();
    let lines: Vec<&str> = dump.lines().collect();
    let at = lines.iter().position(|l| l.trim() == format!("name: {name}")).unwrap_or_else(|| panic!("dump-tree lists {name}"));
    let loc = lines[..at].iter().rev().find(|l| l.contains("location key (")).unwrap();
    loc.split("location key (").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
}

/// A hole (an extent item with no disk bytes) reads as zeros, is listed as a hole by locate,
/// and the extents around it still read back.
#[test]
fn btrfs_hole_reads_as_zeros() {
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let ino = dump_ino(&fs, "large.bin");
    let mut vol = std::fs::read(&fs).unwrap();
    let n = punch_extent(&mut vol, ino, MIB);
    assert!(n >= 1, "the extent item at 1 MiB of inode {ino} was not found");
    std::fs::write(&fs, &vol).unwrap();
    let raw = mbr_disk_with(d, "disk.raw", 162 * MIB, &fs, "83");
    let img = convert(&raw, "qcow2", &d.join("hole.qcow2"));
    let mut want = std::fs::read(tree.join("data/large.bin")).unwrap();
    let hole_len = vdiskview_json(&["locate", s(&img), "/data/large.bin", "--output=json"])["extents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "hole")
        .expect("locate lists the hole")["length"]
        .as_u64()
        .unwrap();
    want[MIB as usize..(MIB + hole_len) as usize].fill(0);
    assert_bytes_eq(&vdiskview_ok(&["cat", s(&img), "/data/large.bin"]), &want, "cat with a hole");
    check_locate_reads_back(&img, "/data/large.bin", &want);
}

/// zlib- and zstd-compressed extents (mkfs.btrfs 6.2 has no --compress with --rootdir, so
/// two text files' extents are rewritten as the kernel writes compressed ones: the stream at
/// the extent's disk bytes, compression and disk_num_bytes in the item, checksum
/// recomputed) read back as the source; locate says they are compressed.
#[test]
fn btrfs_compressed_extents() {
    use std::io::Write;
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let zlib_text = text_100k();
    let zstd_text: Vec<u8> = text_100k().iter().rev().copied().collect();
    let lzo_text: Vec<u8> = text_100k().iter().map(|b| b.to_ascii_uppercase()).collect();
    std::fs::write(tree.join("zlib.txt"), &zlib_text).unwrap();
    std::fs::write(tree.join("zstd.txt"), &zstd_text).unwrap();
    std::fs::write(tree.join("lzo.txt"), &lzo_text).unwrap();
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let mut vol = std::fs::read(&fs).unwrap();
    for (name, method, data) in [("zlib.txt", 1u8, &zlib_text), ("zstd.txt", 3u8, &zstd_text), ("lzo.txt", 2u8, &lzo_text)] {
        let ino = dump_ino(&fs, name);
        let loc = vdiskview_json(&["locate", s(&fs), &format!("/{name}"), "--output=json"]);
        let phys = loc["extents"][0]["virtual"].as_u64().unwrap() as usize;
        let stream = if method == 1 {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(data).unwrap();
            z.finish().unwrap()
        } else if method == 3 {
            zstd::encode_all(&data[..], 3).unwrap()
        } else {
            lzo_btrfs(data)
        };
        let disk_len = stream.len().div_ceil(4096) * 4096;
        assert!(disk_len < data.len());
        vol[phys..phys + data.len()].fill(0);
        vol[phys..phys + stream.len()].copy_from_slice(&stream);
        let n = patch_extent_item(&mut vol, ino, 0, &|item: &mut [u8]| {
            assert_eq!(item[20], 1, "a regular extent");
            item[16] = method;
            item[29..37].copy_from_slice(&(disk_len as u64).to_le_bytes());
        });
        assert!(n >= 1, "{name}: extent item not found");
    }
    std::fs::write(&fs, &vol).unwrap();
    let raw = mbr_disk_with(d, "disk.raw", 162 * MIB, &fs, "83");
    let img = convert(&raw, "qcow2", &d.join("compressed.qcow2"));
    assert_bytes_eq(&vdiskview_ok(&["cat", s(&img), "/zlib.txt"]), &zlib_text, "zlib extent");
    assert_bytes_eq(&vdiskview_ok(&["cat", s(&img), "/zstd.txt"]), &zstd_text, "zstd extent");
    assert!(vdiskview_text(&["locate", s(&img), "/zlib.txt"]).contains("zlib-compressed"));
    assert!(vdiskview_text(&["locate", s(&img), "/zstd.txt"]).contains("zstd-compressed"));
    assert_bytes_eq(&vdiskview_ok(&["cat", s(&img), "/lzo.txt"]), &lzo_text, "lzo extent");
    // a damaged stream: one line
    let mut bad = std::fs::read(&raw).unwrap();
    let loc = vdiskview_json(&["locate", s(&raw), "/zlib.txt", "--output=json"]);
    let v = loc["extents"][0]["virtual"].as_u64().unwrap() as usize;
    bad[v + 2..v + 64].fill(0xa5);
    let badp = d.join("badstream.raw");
    std::fs::write(&badp, &bad).unwrap();
    let out = vdiskview(&["cat", s(&badp), "/zlib.txt"]);
    assert_clean_error(&out, "cat of a damaged zlib extent");
}

/// A small greedy LZO1X encoder (literal runs and `001LLLLL` matches within 16 KiB, the
/// instructions the kernel's lzo1x_1 compressor also emits) in btrfs's framing: LE32 total
/// length, then per 4 KiB of input a LE32 segment length and its stream, a segment header
/// never straddling a 4 KiB boundary.
fn lzo_btrfs(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    for chunk in data.chunks(4096) {
        let left = 4096 - out.len() % 4096;
        if left < 4 {
            out.resize(out.len() + left, 0);
        }
        let seg = lzo1x(chunk);
        out.extend_from_slice(&(seg.len() as u32).to_le_bytes());
        out.extend_from_slice(&seg);
    }
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_le_bytes());
    out
}

fn lzo1x(src: &[u8]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, mut n: usize) {
        while n > 255 {
            out.push(0);
            n -= 255;
        }
        out.push(n as u8);
    }
    let mut out = Vec::new();
    // where the last match's S bits are (None before the first match)
    let mut s_at: Option<usize> = None;
    let emit_literals = |out: &mut Vec<u8>, s_at: Option<usize>, lits: &[u8]| {
        let n = lits.len();
        if n == 0 {
            return;
        }
        match s_at {
            None if n <= 3 => out.push(17 + n as u8),
            Some(at) if n <= 3 => out[at] |= n as u8,
            _ => {
                // 0000LLLL after state 0 (the start, or a match with S = 0)
                if n - 3 <= 15 {
                    out.push((n - 3) as u8);
                } else {
                    out.push(0);
                    ext(out, n - 3 - 15);
                }
            }
        }
        out.extend_from_slice(lits);
    };
    let mut last: std::collections::HashMap<[u8; 3], usize> = std::collections::HashMap::new();
    let (mut i, mut lit) = (0usize, 0usize);
    while i + 3 <= src.len() {
        let key = [src[i], src[i + 1], src[i + 2]];
        let cand = last.insert(key, i).filter(|&p| i - p <= 16384);
        if let Some(p) = cand {
            let mut len = 3;
            while i + len < src.len() && src[p + len] == src[i + len] && len < 264 {
                len += 1;
            }
            emit_literals(&mut out, s_at, &src[lit..i]);
            if len - 2 <= 31 {
                out.push(0x20 | (len - 2) as u8);
            } else {
                out.push(0x20);
                ext(&mut out, len - 2 - 31);
            }
            let d = ((i - p - 1) << 2) as u16;
            s_at = Some(out.len());
            out.extend_from_slice(&d.to_le_bytes());
            i += len;
            lit = i;
        } else {
            i += 1;
        }
    }
    emit_literals(&mut out, s_at, &src[lit..]);
    out.extend_from_slice(&[0x11, 0, 0]);
    out
}

/// A subvolume is a directory entry whose location is a ROOT_ITEM. mkfs.btrfs 6.2 cannot make
/// one without mounting, so the top directory's entry `emptydir` (its DIR_ITEM and DIR_INDEX)
/// is pointed at subvolume 5's root item, as a snapshot of the top level would be: paths
/// through it read the top level's files, `ls -l` names the subvolume.
#[test]
fn btrfs_subvolume_entry_is_a_directory() {
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let mut vol = std::fs::read(&fs).unwrap();
    let n = patch_items(
        &mut vol,
        &|o, t, _, data| o == 256 && (t == 84 || t == 96) && data.len() >= 30 && &data[30..] == b"emptydir",
        &|item: &mut [u8]| {
            item[0..8].copy_from_slice(&5u64.to_le_bytes());
            item[8] = 132; // ROOT_ITEM
            item[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
        },
    );
    assert!(n >= 2, "DIR_ITEM and DIR_INDEX of emptydir: {n} patched");
    std::fs::write(&fs, &vol).unwrap();
    let raw = mbr_disk_with(d, "disk.raw", 162 * MIB, &fs, "83");
    let img = convert(&raw, "qcow2", &d.join("subvol.qcow2"));
    assert_eq!(ls(&img, "/emptydir"), names(&tree), "the subvolume lists the top level");
    assert_eq!(vdiskview_ok(&["cat", s(&img), "/emptydir/test1.txt"]), HELLO);
    assert_eq!(vdiskview_ok(&["cat", s(&img), "/emptydir/data/deep/er/nested.txt"]), b"nested\n");
    check_locate_reads_back(&img, "/emptydir/data/pattern.bin", &std::fs::read(tree.join("data/pattern.bin")).unwrap());
    let long = vdiskview_text(&["ls", "-l", s(&img), "/"]);
    assert!(long.lines().any(|l| l.starts_with('d') && l.ends_with(" emptydir")), "{long}");
}

/// Node sizes 4 KiB and 64 KiB, single metadata with DUP data, explicit hole items
/// (no-holes off), sha256 checksums (read unverified, with a warning): every file reads as
/// the source and as `btrfs restore` restores it, on the volume as a whole-disk raw image.
#[test]
fn btrfs_mkfs_variants() {
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    for (k, extra) in [&["-n", "4096"][..], &["-n", "65536"], &["-m", "single", "-d", "dup"], &["-O", "^no-holes"], &["--csum", "sha256"]].iter().enumerate() {
        let sub = d.join(format!("v{k}"));
        std::fs::create_dir_all(&sub).unwrap();
        let fs = btrfs_volume(&sub, &tree, 200 * MIB, extra);
        let restored = restore(&fs, &sub);
        for d in &walk(&tree).1 {
            assert_eq!(ls(&fs, &format!("/{d}")), names(&tree.join(d)), "{extra:?} ls /{d}");
        }
        for (p, bytes) in walk(&tree).0 {
            let got = vdiskview_ok(&["cat", s(&fs), &format!("/{p}")]);
            assert_bytes_eq(&got, &bytes, &format!("{extra:?} cat /{p}"));
            assert_bytes_eq(&got, &std::fs::read(restored.join(&p)).unwrap(), &format!("{extra:?} cat /{p} vs btrfs restore"));
        }
        check_locate_reads_back(&fs, "/data/large.bin", &std::fs::read(tree.join("data/large.bin")).unwrap());
    }
}

#[test]
fn btrfs_errors_are_clean() {
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let raw = mbr_disk_with(d, "disk.raw", 162 * MIB, &fs, "83");
    for (args, want) in [
        (vec!["cat", s(&raw), "/nope.txt"], "No such file or directory"),
        (vec!["cat", s(&raw), "/data"], "Is a directory"),
        (vec!["ls", s(&raw), "/test1.txt/x"], "Not a directory"),
    ] {
        let out = vdiskview(&args);
        assert_clean_error(&out, &args.join(" "));
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // a damaged primary superblock: the copy at 64 MiB is used
    let sb = MIB + 0x10000;
    let bad = d.join("bad-primary.raw");
    std::fs::copy(&raw, &bad).unwrap();
    patch_file(&bad, sb + 0x48, &[0xff]);
    assert_eq!(vdiskview_ok(&["cat", s(&bad), "/test1.txt"]), HELLO);
    // DUP metadata: one copy of every tree block damaged (first copies in one image, second
    // copies in the other): every file still reads, and the damaged first copies are named
    let orig = std::fs::read(&raw).unwrap();
    let blocks = tree_blocks(&orig[MIB as usize..]);
    let mut pairs = Vec::new();
    for (i, &a) in blocks.iter().enumerate() {
        let blk = &orig[MIB as usize + a..MIB as usize + a + 16384];
        if let Some(&b) = blocks[i + 1..].iter().find(|&&b| &orig[MIB as usize + b..MIB as usize + b + 16384] == blk) {
            pairs.push((a, b));
        }
    }
    assert!(pairs.len() >= 3, "DUP metadata: tree blocks in pairs ({} found)", pairs.len());
    let mut warned = 0;
    for side in 0..2 {
        let mut b = orig.clone();
        for &(x, y) in &pairs {
            let o = MIB as usize + if side == 0 { x } else { y } + 0x200;
            b[o] ^= 0x5a;
        }
        let bad = d.join(format!("dup-{side}.raw"));
        std::fs::write(&bad, &b).unwrap();
        for (p, want) in [("/test1.txt", HELLO.to_vec()), ("/data/deep/er/nested.txt", b"nested\n".to_vec())] {
            let out = vdiskview(&["cat", s(&bad), p]);
            assert!(out.status.success(), "side {side} {p}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.stdout, want);
            if String::from_utf8_lossy(&out.stderr).contains("read its second copy") {
                warned += 1;
            }
        }
    }
    assert!(warned > 0, "a damaged first copy should be reported");
    // both superblocks damaged: node size, sys_chunk_array, checksum
    for (off, bytes) in [(0x94u64, &[0x00u8, 0x30, 0, 0][..]), (0xa0, &[0xff, 0xff, 0, 0][..]), (0x50, &[1][..])] {
        let bad = d.join(format!("bad-{off}.raw"));
        std::fs::copy(&raw, &bad).unwrap();
        patch_file(&bad, sb + off, bytes);
        patch_file(&bad, MIB + 0x400_0000 + off, bytes);
        for cmd in ["ls", "cat", "locate"] {
            let out = vdiskview_timeout(&[cmd, s(&bad), "/test1.txt"], Duration::from_secs(20));
            assert_clean_error(&out, &format!("{cmd} {}", s(&bad)));
            assert!(String::from_utf8_lossy(&out.stderr).contains("damaged btrfs"), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // noise in tree blocks, checksums recomputed (so the parser, not the checksum, meets
    // it): clean errors or success, never a panic or a hang
    let orig = std::fs::read(&raw).unwrap();
    let blocks = tree_blocks(&orig[MIB as usize..]);
    assert!(blocks.len() >= 4, "tree blocks found: {}", blocks.len());
    let noise = pattern_bytes(9, 8192);
    let bad = d.join("noise.raw");
    let mut failures = 0;
    for seed in 0..16usize {
        let mut b = orig.clone();
        for k in 0..6 {
            let r = le32(&noise, (seed * 6 + k) * 4 % 8000) as usize;
            let blk = MIB as usize + blocks[r % blocks.len()];
            let o = blk + 0x60 + (r >> 8) % 0x400;
            b[o] ^= noise[(seed * 7 + k) % 8192] | 1;
            let c = crc32c(&b[blk + 0x20..blk + 16384]);
            b[blk..blk + 4].copy_from_slice(&c.to_le_bytes());
        }
        std::fs::write(&bad, &b).unwrap();
        for args in [vec!["cat", s(&bad), "/data/large.bin"], vec!["locate", s(&bad), "/big.txt"], vec!["ls", s(&bad), "/data/deep/er"]] {
            let out = vdiskview_timeout(&args, Duration::from_secs(20));
            if !out.status.success() {
                assert_clean_error(&out, &format!("seed {seed}: {}", args.join(" ")));
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "damage to the tree blocks should break something");
}

/// Offsets of the checksummed 16 KiB tree blocks of a volume.
fn tree_blocks(vol: &[u8]) -> Vec<usize> {
    const NODE: usize = 16384;
    (0..vol.len() - NODE)
        .step_by(NODE)
        .filter(|&o| &vol[o + 0x20..o + 0x30] != &[0u8; 16][..] && le32(vol, o) == crc32c(&vol[o + 0x20..o + NODE]))
        .collect()
}

/// Hundreds of tree blocks mutated in place (checksums recomputed, so the parser meets the
/// damage), each opened in this process through the library as the fuzz target does: every
/// call returns, none panics; the original bytes are put back after each case.
#[test]
fn btrfs_mutated_tree_blocks_never_panic() {
    use std::io::{Seek, SeekFrom, Write};
    use std::rc::Rc;
    use vdiskview::guest::fs::GuestFs;
    use vdiskview::guest::{FsInfo, FsKind, Volume};
    use vdiskview::image::{self, Format, OpenOptions};
    let dir = workspace();
    let d = dir.path();
    let tree = btrfs_tree(d);
    let fs = btrfs_volume(d, &tree, 160 * MIB, &[]);
    let orig = std::fs::read(&fs).unwrap();
    let blocks = tree_blocks(&orig);
    let noise = pattern_bytes(11, 1 << 16);
    let mut f = std::fs::OpenOptions::new().write(true).open(&fs).unwrap();
    let mut opened = 0;
    for case in 0..300usize {
        let r = u64::from_le_bytes(noise[(case * 8) % 60000..(case * 8) % 60000 + 8].try_into().unwrap()) as usize;
        let blk = blocks[r % blocks.len()];
        let mut b = orig[blk..blk + 16384].to_vec();
        // a few bytes in the header and item area, a few anywhere
        for k in 0..(1 + r % 4) {
            let o = if k % 2 == 0 { 0x20 + (r >> (8 + k * 5)) % 0x300 } else { 0x20 + (r >> (12 + k * 3)) % (16384 - 0x20) };
            b[o] ^= noise[(case * 13 + k) % (1 << 16)] | 1;
        }
        let c = crc32c(&b[0x20..]);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        f.seek(SeekFrom::Start(blk as u64)).unwrap();
        f.write_all(&b).unwrap();
        f.flush().unwrap();
        let img = image::open(&fs, &OpenOptions { format: Some(Format::Raw), no_backing: true, ..Default::default() }).unwrap();
        let len = img.virtual_size();
        let vol = Volume { partition: None, start: 0, len, fs: Some(FsInfo { kind: FsKind::Btrfs, label: None, uuid: None }) };
        if let Ok(g) = GuestFs::open(Rc::new(img), &vol) {
            opened += 1;
            let _ = g.regions();
            for p in ["/", "/data", "/data/deep/er", "/etc"] {
                let _ = g.read_dir(p);
            }
            for p in ["/test1.txt", "/big.txt", "/data/large.bin", "/data/sparse.bin", "/link-to-test1", "/etc/passwd"] {
                let _ = g.stat(p);
                let _ = g.locate(p);
                let mut sink = std::io::sink();
                let _ = g.copy_to(p, &mut sink);
            }
        }
        f.seek(SeekFrom::Start(blk as u64)).unwrap();
        f.write_all(&orig[blk..blk + 16384]).unwrap();
    }
    assert!(opened > 0, "some mutated volumes should still open");
}


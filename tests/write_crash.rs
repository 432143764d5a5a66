//! Crashes and locks. With `VDISKVIEW_FAILPOINT=k` vdiskview aborts right after the k-th
//! durable step of a write; for k = 1, 2, ... until the write completes, the crashed image
//! must pass `qemu-img check` (leaks allowed, corruption not), show the old or the new
//! bytes (per cluster / block), keep its snapshots, and take the same write again. Locks:
//! an image qemu-nbd serves is refused and left untouched; while vdiskview holds the write
//! lock, qemu is locked out.
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::vhd::{DiffVhd, SECTOR};
use support::*;

fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn qcow2_create(dir: &Path, name: &str, opts: &str, size: &str, backing: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some(b) = backing {
        args.extend(["-b", b, "-F", "qcow2"]);
    }
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.push(s(&path));
    args.push(size);
    qemu_img_in(dir, &args);
    path
}

fn write_args(path: &Path, off: u64, len: u64, byte: u8) -> Vec<String> {
    ["write", s(path), "--offset", &off.to_string(), "--pattern", &byte.to_string(), "--length", &len.to_string()]
        .iter()
        .map(|x| x.to_string())
        .collect()
}

fn run_vdv(args: &[String], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(vdiskview_bin());
    cmd.args(args).env("NO_COLOR", "1").env_remove("VDISKVIEW_FAILPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// `qemu-img check` after a crash: exit 0 (clean) or 3 (leaks only), never corruption.
#[track_caller]
fn check_no_corruption(path: &Path, context: &str) -> i32 {
    let out = qemu_img_output(&["check", "-f", "qcow2", s(path)]);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "qemu-img check {} {context}: exit {code}\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    code
}

fn snapshot_content(path: &Path, name: &str) -> Vec<u8> {
    let dir = workspace();
    let out = dir.path().join("snap.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", "-l", &format!("snapshot.name={name}"), s(path), s(&out)]);
    read_file(&out)
}

/// One crash scenario: an image (with its backing files beside it), a write, and what to
/// verify.
struct Scenario {
    name: &'static str,
    dir: tempfile::TempDir,
    /// The pristine image; each run works on a copy beside it (so relative backing names
    /// still resolve). Differencing VHDs: the parents stay where they are.
    image: PathBuf,
    fmt: &'static str,
    /// Compare old/new content per unit of this size (cluster or block).
    unit: u64,
    off: u64,
    len: u64,
    byte: u8,
    /// The whole guest disk before the write (vdiskview's view).
    old: Vec<u8>,
    snapshots: Vec<(String, Vec<u8>)>,
    /// Files that must never change (backing files, parents).
    frozen: Vec<PathBuf>,
}

impl Scenario {
    fn new(name: &'static str, dir: tempfile::TempDir, image: PathBuf, fmt: &'static str, unit: u64, off: u64, len: u64) -> Scenario {
        let old = vdiskview_ok(&["read", s(&image)]);
        if fmt == "qcow2" {
            assert_bytes_eq(&old, &qemu_convert_raw(&image, fmt), &format!("{name}: pristine image, ours vs qemu"));
        }
        Scenario { name, dir, image, fmt, unit, off, len, byte: 0xe7, old, snapshots: vec![], frozen: vec![] }
    }

    fn with_snapshots(mut self, names: &[&str]) -> Scenario {
        self.snapshots = names.iter().map(|n| (n.to_string(), snapshot_content(&self.image, n))).collect();
        self
    }

    fn with_frozen(mut self, files: Vec<PathBuf>) -> Scenario {
        self.frozen = files;
        self
    }

    fn new_content(&self) -> Vec<u8> {
        let mut v = self.old.clone();
        v[self.off as usize..(self.off + self.len) as usize].fill(self.byte);
        v
    }

    /// Every unit of the guest is either all old or all new; returns how many are new.
    #[track_caller]
    fn assert_old_or_new(&self, got: &[u8], context: &str) -> usize {
        let new = self.new_content();
        assert_eq!(got.len(), self.old.len(), "{context}: guest size");
        let mut n_new = 0;
        for start in (0..got.len()).step_by(self.unit as usize) {
            let end = (start + self.unit as usize).min(got.len());
            let (g, o, n) = (&got[start..end], &self.old[start..end], &new[start..end]);
            if g == n && g != o {
                n_new += 1;
            } else if g != o {
                let first = g.iter().zip(o).position(|(a, b)| a != b).unwrap() + start;
                panic!(
                    "{context}: guest bytes 0x{start:x}..0x{end:x} are neither the old nor the new content \
                     (first difference from old at 0x{first:x}: got {:02x}, old {:02x}, new {:02x})",
                    got[first], self.old[first], new[first]
                );
            }
        }
        n_new
    }

    fn verify_image(&self, work: &Path, context: &str) -> usize {
        if self.fmt == "qcow2" {
            check_no_corruption(work, context);
        }
        let ours = vdiskview_ok(&["read", s(work)]);
        let n_new = self.assert_old_or_new(&ours, &format!("{context} (vdiskview read)"));
        match self.fmt {
            "qcow2" => {
                let theirs = qemu_convert_raw(work, "qcow2");
                assert_bytes_eq(&theirs, &ours, &format!("{context}: qemu's guest vs ours"));
                for (name, content) in &self.snapshots {
                    assert_bytes_eq(&snapshot_content(work, name), content, &format!("{context}: snapshot {name}"));
                }
            }
            "vpc" => {
                // qemu still opens and reads it (a differencing child it reads without parent)
                qemu_convert_raw(work, "vpc");
                let f = read_file(work);
                if &f[..8] == b"conectix" {
                    // the footer copies may differ only if the end one moved; the end one is
                    // a valid footer either way (qemu opened it); the copy at 0 is untouched
                    assert_eq!(&f[f.len() - 512..f.len() - 512 + 8], b"conectix", "{context}: file ends in a footer");
                }
            }
            _ => {}
        }
        n_new
    }

    /// Run the write with every failpoint until it completes; returns the number of steps.
    fn sweep(&self) -> u64 {
        let frozen_before: Vec<Vec<u8>> = self.frozen.iter().map(|p| read_file(p)).collect();
        let ext = self.image.extension().and_then(|e| e.to_str()).unwrap_or("img");
        let work = self.image.with_file_name(format!("work.{ext}"));
        let mut aborted_new = 0;
        let mut k = 1u64;
        let t = Instant::now();
        let steps = loop {
            assert!(k < 2000, "{}: the write did not complete after {k} failpoints", self.name);
            std::fs::copy(&self.image, &work).unwrap();
            let args = write_args(&work, self.off, self.len, self.byte);
            let out = run_vdv(&args, &[("VDISKVIEW_FAILPOINT", k.to_string())]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let context = format!("{}: after a crash at step {k} ({})", self.name, stderr.trim());
            if out.status.success() {
                // the write completed: every step passed; the image is clean
                let n = self.verify_image(&work, &format!("{}: completed write", self.name));
                assert!(n > 0, "{}: the completed write shows no new bytes", self.name);
                if self.fmt == "qcow2" {
                    assert_eq!(check_no_corruption(&work, "completed write"), 0, "{}: a completed write must not leak", self.name);
                }
                assert_bytes_eq(&vdiskview_ok(&["read", s(&work)]), &self.new_content(), &format!("{}: completed write", self.name));
                break k - 1;
            }
            assert_eq!(out.status.signal(), Some(6), "{context}: expected SIGABRT from the failpoint, got {}", out.status);
            assert!(stderr.contains("failpoint"), "{context}: {stderr}");
            if self.verify_image(&work, &context) > 0 {
                aborted_new += 1;
            }
            // the same write again, on the crashed image: it completes, and the image is
            // still free of corruption (the crash may have leaked)
            let again = run_vdv(&args, &[]);
            assert!(again.status.success(), "{context}: the write again failed: {}", String::from_utf8_lossy(&again.stderr));
            if self.fmt == "qcow2" {
                check_no_corruption(&work, &format!("{context}, then the write again"));
            }
            assert_bytes_eq(&vdiskview_ok(&["read", s(&work)]), &self.new_content(), &format!("{context}, then the write again"));
            k += 1;
        };
        for (p, before) in self.frozen.iter().zip(&frozen_before) {
            assert!(read_file(p) == *before, "{}: {} changed", self.name, p.display());
        }
        eprintln!(
            "{}: {steps} durable steps ({} crashes already showed the new bytes), swept in {:.1} s",
            self.name,
            aborted_new,
            t.elapsed().as_secs_f64()
        );
        assert!(steps >= 1, "{}: no durable step", self.name);
        let _ = &self.dir;
        steps
    }
}

/// A new cluster and a new L2 table (4 KiB clusters: an L2 table covers 2 MiB).
#[test]
fn crash_qcow2_new_l2_table() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "img.qcow2", "cluster_size=4096", "8M", None);
    qemu_io("qcow2", &img, &["write -P 1 0 100k", "write -P 2 1M 8k"]);
    let sc = Scenario::new("qcow2 new L2 table", dir, img, "qcow2", 4096, 5 * MIB + 100, 3000);
    let steps = sc.sweep();
    // one flush per group of the write, not per cluster
    assert_eq!(steps, 3, "refcounts (data cluster and L2 table) and data, L2 table, L1 entry: {steps} steps");
}

/// One write over 200 clusters and five L2 tables (512-byte clusters: 32 KiB per table),
/// some clusters allocated (written in place), most new, three tables new: still one
/// durable step per group (refcounts and data, L2 tables, L1 entries), and a crash after any
/// of them leaves every cluster old or new.
#[test]
fn crash_qcow2_batched_many_clusters() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "many.qcow2", "cluster_size=512", "4M", None);
    qemu_io("qcow2", &img, &["write -P 0x91 40k 8k", "write -P 0x92 70k 1k"]);
    let sc = Scenario::new("qcow2 batched write over many clusters", dir, img, "qcow2", 512, 30 * 1024 + 100, 100 * 1024);
    let steps = sc.sweep();
    assert_eq!(steps, 3, "refcounts and data, L2 entries and tables, L1 entries: {steps} steps");
}

/// The same across clusters of a 512-byte-cluster v2 image, from a backing file, across
/// the boundary between two L2 tables (64 entries each: 32 KiB), both new.
#[test]
fn crash_qcow2_backing_two_clusters() {
    let dir = workspace();
    let base = qcow2_create(dir.path(), "base.qcow2", "", "4M", None);
    qemu_io("qcow2", &base, &["write -P 0x21 0 1M"]);
    let top = qcow2_create(dir.path(), "top.qcow2", "compat=0.10,cluster_size=512", "4M", Some("base.qcow2"));
    qemu_io("qcow2", &top, &["write -P 0x22 2000 100"]);
    let sc = Scenario::new("qcow2 v2 c512 COW from backing", dir, top, "qcow2", 512, 10 * 32768 - 300, 700).with_frozen(vec![base]);
    sc.sweep();
}

/// Copy-on-write of a compressed cluster; the compressed one is released last.
#[test]
fn crash_qcow2_compressed_cow() {
    for ctype in ["zlib", "zstd"] {
        let dir = workspace();
        let img = qcow2_create(dir.path(), "comp.qcow2", &format!("compression_type={ctype}"), "4M", None);
        let pat = pattern_file(dir.path(), 3, 128 * 1024);
        qemu_io("qcow2", &img, &[&format!("write -c -s {} 64k 64k", s(&pat)), "write -c -P 0x12 128k 64k", "write -c -P 0x13 1M 64k"]);
        let name = if ctype == "zlib" { "qcow2 zlib compressed COW" } else { "qcow2 zstd compressed COW" };
        let sc = Scenario::new(name, dir, img, "qcow2", 65536, 128 * 1024 + 500, 1000);
        let steps = sc.sweep();
        assert_eq!(steps, 3, "refcount and data, L2 entry, release: {steps} steps");
    }
}

/// A cluster and an L2 table shared with a snapshot: both copied, both released last;
/// the snapshot never changes.
#[test]
fn crash_qcow2_snapshot_shared_cow() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "snap.qcow2", "", "4M", None);
    qemu_io("qcow2", &img, &["write -P 0x31 0 256k", "write -P 0x32 2M 64k"]);
    qemu_img(&["snapshot", "-c", "s1", s(&img)]);
    let sc = Scenario::new("qcow2 snapshot-shared COW", dir, img, "qcow2", 65536, 64 * 1024 + 100, 5000).with_snapshots(&["s1"]);
    let steps = sc.sweep();
    assert_eq!(steps, 4, "refcounts (data cluster and L2 copy) and data, L2 copy, L1, releases (shared L2 table and data): {steps} steps");
}

/// Extended L2: a write into an unallocated subcluster of an allocated cluster (data in
/// place, then the bitmap), and a zero subcluster.
#[test]
fn crash_qcow2_extended_l2_subclusters() {
    let dir = workspace();
    let base = qcow2_create(dir.path(), "base.qcow2", "", "4M", None);
    qemu_io("qcow2", &base, &["write -P 0x41 0 1M"]);
    let top = qcow2_create(dir.path(), "el2.qcow2", "extended_l2=on", "4M", Some("base.qcow2"));
    qemu_io("qcow2", &top, &["write -P 0x42 0 2k", "write -z 8k 2k", "write -P 0x43 70k 1k"]);
    // 2k..10k: unallocated subclusters (backing data), a zero one, all in cluster 0
    let sc = Scenario::new("qcow2 extended L2 subclusters", dir, top, "qcow2", 2048, 3000, 7000).with_frozen(vec![base]);
    sc.sweep();
}

/// One write that needs several new refcount blocks (512-byte clusters, 64-bit refcounts:
/// a block covers 32 KiB of file): the blocks are written, then one flush, then all their
/// refcount table entries; a crash in between leaves them unreferenced, never a referenced
/// cluster uncounted.
#[test]
fn crash_qcow2_many_new_refcount_blocks() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "rbs.qcow2", "cluster_size=512,refcount_bits=64", "4M", None);
    qemu_io("qcow2", &img, &["write -P 0x95 0 4k"]);
    let sc = Scenario::new("qcow2 several new refcount blocks", dir, img, "qcow2", 512, 64 * 1024 + 300, 200 * 1024);
    let steps = sc.sweep();
    assert_eq!(steps, 4, "new refcount blocks, refcounts and data, L2 tables, L1 entries: {steps} steps");
}

/// Refcount table growth: 512-byte clusters, 64-bit refcounts (a table cluster covers
/// 2 MiB of file); the file is filled up to the last covered cluster first.
#[test]
fn crash_qcow2_refcount_table_growth() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "grow.qcow2", "cluster_size=512,refcount_bits=64", "8M", None);
    let cs = 512u64;
    let per = cs * 8 / 64;
    let coverage = |p: &Path| {
        let h = read_file(p);
        let entries = be32(&h, 56) as u64 * cs / 8;
        (entries * per * cs, h.len() as u64)
    };
    // qemu fills most of it, then one cluster at a time with vdiskview
    let mut guest = 0u64;
    loop {
        let (cover, len) = coverage(&img);
        let left = cover - len;
        if left <= 16 * cs {
            break;
        }
        let chunk = (left / 2).next_multiple_of(cs);
        qemu_io("qcow2", &img, &[&format!("write -P 0x51 {guest} {chunk}")]);
        guest += chunk;
    }
    loop {
        let (cover, len) = coverage(&img);
        if len.next_multiple_of(cs) >= cover {
            break;
        }
        vdiskview_ok(&write_args(&img, guest, cs, 0x52).iter().map(String::as_str).collect::<Vec<_>>());
        guest += cs;
    }
    check_no_corruption(&img, "filled to the end of the refcount table's coverage");
    let table_before = be64(&read_file(&img), 48);
    let sc = Scenario::new("qcow2 refcount table growth", dir, img.clone(), "qcow2", cs, guest + 100, 300);
    let steps = sc.sweep();
    let work = img.with_file_name("work.qcow2");
    assert_ne!(be64(&read_file(&work), 48), table_before, "the refcount table should have moved");
    assert!(steps >= 5, "new refcount table, header, old table released, refcounts and data, L2: {steps} steps");
}

/// A refcount block that cannot count itself (it lands in the range of the next block):
/// its own refcount must be recorded before the table points at it. The file is extended
/// with unreferenced space so that the next data cluster is the last one of a range no
/// block covers yet.
#[test]
fn crash_qcow2_refcount_block_elsewhere() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "rb.qcow2", "cluster_size=512,refcount_bits=64", "4M", None);
    qemu_io("qcow2", &img, &["write -P 0x61 0 20k"]);
    let cs = 512u64;
    let per = cs * 8 / 64;
    let len = std::fs::metadata(&img).unwrap().len().div_ceil(cs);
    // the last cluster of the next block's range
    let target = (len / per + 2) * per - 1;
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(target * cs).unwrap();
    check_no_corruption(&img, "trailing space");
    let sc = Scenario::new("qcow2 refcount block counted elsewhere", dir, img, "qcow2", cs, MIB + 10, 100);
    sc.sweep();
}

/// A zero cluster that keeps its host cluster (qemu's `write -z` over data): the whole
/// cluster written in place, then the zero flag cleared.
#[test]
fn crash_qcow2_zero_cluster_in_place() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "z.qcow2", "", "4M", None);
    qemu_io("qcow2", &img, &["write -P 0x71 0 64k", "write -P 0x72 1M 64k", "write -z 1M 64k"]);
    let sc = Scenario::new("qcow2 allocated zero cluster", dir, img, "qcow2", 65536, MIB + 1000, 2000);
    let steps = sc.sweep();
    assert_eq!(steps, 2, "data in place, then the L2 entry");
}

/// VHD block allocation: the footer moves, then the bitmap and the data (nothing points at
/// the block yet), then the BAT entry.
#[test]
fn crash_vhd_block_allocation() {
    let dir = workspace();
    let img = dir.path().join("dyn.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&img), "8M"]);
    qemu_io("vpc", &img, &["write -P 0x81 0 64k"]);
    let sc = Scenario::new("VHD block allocation", dir, img, "vpc", 2 * MIB, 4 * MIB + 1000, 3000);
    let steps = sc.sweep();
    assert_eq!(steps, 3, "footer, then bitmap and data, then the BAT entry: {steps} steps");
}

/// A differencing VHD: a new block (bitmap clear), partial sectors completed from the
/// parent, the bitmap bits set last; the parent never changes.
#[test]
fn crash_vhd_differencing() {
    let dir = workspace();
    let parent = dir.path().join("parent.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&parent), "8M"]);
    let pat = pattern_file(dir.path(), 9, 128 * 1024);
    qemu_io("vpc", &parent, &[&format!("write -s {} 0 128k", s(&pat)), &format!("write -s {} 4M 128k", s(&pat))]);
    let mut d = DiffVhd::new(&parent, 2 * MIB as u32);
    d.write_sectors(10, &pattern_bytes(1, 4 * SECTOR));
    d.write(&dir.path().join("child.vhd"));
    let child = d.path.clone().unwrap();
    // a new block (4 MiB..) and an allocated one (sectors around 10..14)
    let sc = Scenario::new("differencing VHD new block", dir, child.clone(), "vpc", 512, 4 * MIB + 1000, 3000).with_frozen(vec![parent.clone()]);
    let steps = sc.sweep();
    assert_eq!(steps, 4, "footer, bitmap and data, BAT, sector bitmap: {steps} steps");
    let sc = Scenario { off: 12 * 512 + 7, len: 2000, ..sc };
    sc.sweep();
}

// ---------------------------------------------------------------------------------------
// locks

/// A child process killed (and waited for) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bytes of `img` some process holds an OFD lock on (as /proc/locks lists them: id, kind,
/// mode, access, pid, dev:inode, start, end).
fn locked_bytes(img: &Path) -> BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let ino = format!(":{}", std::fs::metadata(img).unwrap().ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut out = BTreeSet::new();
    for l in locks.lines().filter(|l| l.contains("OFDLCK")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(i) = f.iter().position(|x| x.ends_with(&ino)) else { continue };
        let (Some(start), Some(end)) = (f.get(i + 1).and_then(|x| x.parse::<u64>().ok()), f.get(i + 2)) else {
            continue;
        };
        let end = if *end == "EOF" { start } else { end.parse().unwrap_or(start) };
        out.extend(start..=end.min(start + 1024));
    }
    out
}

/// The lock byte by which qemu says it does not share resize: every qemu-nbd holds it
/// (raw, vpc, qcow2, read-only or not; raw shares write, so 201 is not always there) and a
/// writer that finds it refuses. qemu takes its bytes one at a time in ascending order
/// (100+i for its permissions, then 200+i for what it does not share), so 203 is the last.
const QEMU_UNSHARED_RESIZE: u64 = 203;

/// `qemu-nbd -k SOCK -f FMT IMG` (plus `extra`), ready when the image is locked against
/// writers (qemu-nbd listens on its socket before it opens the image; a probing client would
/// make it exit when it disconnects).
fn serve(fmt: &str, img: &Path, sock: &Path, extra: &[&str]) -> Guard {
    let child = Command::new("qemu-nbd")
        .args(["-k", s(sock), "-f", fmt])
        .args(extra)
        .arg(s(img))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-nbd");
    let mut g = Guard(child);
    let t = Instant::now();
    loop {
        let held = locked_bytes(img);
        if sock.exists() && held.contains(&QEMU_UNSHARED_RESIZE) {
            break;
        }
        if let Ok(Some(st)) = g.0.try_wait() {
            panic!("qemu-nbd {} exited ({st}) before locking it", img.display());
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "qemu-nbd did not lock {} against writers within 30 s (lock bytes held: {held:?})",
            img.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    g
}

/// Read `child`'s stderr until a line contains `needle`, for at most `timeout`: the lines
/// read so far, or a panic naming what came instead. A thread keeps draining the pipe
/// afterwards, so the child never blocks on a full pipe.
fn wait_for_stderr_line(child: &mut Child, needle: &str, timeout: Duration, what: &str) -> String {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // once nobody listens, keep draining
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what}: no line with {needle:?} on stderr within {timeout:?}; got:\n{seen}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let st = child.wait().ok();
                panic!("{what}: stderr closed ({st:?}) before a line with {needle:?}; got:\n{seen}")
            }
        }
    }
}

fn lock_images(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let q = qcow2_create(dir, "img.qcow2", "", "4M", None);
    qemu_io("qcow2", &q, &["write -P 1 0 64k"]);
    let v = dir.join("img.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", s(&v), "4M"]);
    let r = dir.join("img.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&r), "4M"]);
    vec![("qcow2", q), ("vpc", v), ("raw", r)]
}

/// An image qemu-nbd serves (read-write or read-only) is refused with a message naming
/// the lock, and left untouched; reading it (no lock) still works.
#[test]
fn lock_qemu_nbd_refuses_write() {
    let dir = workspace();
    for (fmt, img) in lock_images(dir.path()) {
        for extra in [&[][..], &["--read-only"][..]] {
            let sock = dir.path().join(format!("{fmt}.sock"));
            let _ = std::fs::remove_file(&sock);
            let before = read_file(&img);
            let _nbd = serve(fmt, &img, &sock, extra);
            let out = vdiskview(&["write", s(&img), "--offset", "0", "--pattern", "0x99", "--length", "4096"]);
            let what = format!("{fmt} served by qemu-nbd {extra:?}");
            assert_clean_error(&out, &what);
            let msg = String::from_utf8_lossy(&out.stderr);
            assert!(msg.contains("in use") && msg.contains("lock"), "{what}: {msg}");
            assert!(read_file(&img) == before, "{what}: the image changed");
            // write --file too
            let out = vdiskview(&["write", s(&img), "--file", "--offset", "0", "--pattern", "0x99", "--length", "1"]);
            assert_clean_error(&out, &format!("{what}, write --file"));
            assert!(read_file(&img) == before, "{what}: the image changed");
            // read-only opens take no lock
            let guest = vdiskview_ok(&["read", s(&img), "--length", "4096"]);
            assert_eq!(guest.len(), 4096);
            vdiskview_ok(&["info", s(&img)]);
        }
        // once qemu-nbd is gone, the write goes through
        vdiskview_ok(&["write", s(&img), "--offset", "0", "--pattern", "0x99", "--length", "4096"]);
    }
}

/// vdiskview holding the write lock (VDISKVIEW_HOLD_LOCK_MS) keeps qemu out: qemu-io's
/// write and a plain qemu-img info fail with a lock error, a second vdiskview writer is
/// refused; `qemu-img info -U` (force share) still reads; afterwards qemu writes again.
#[test]
fn lock_vdiskview_locks_qemu_out() {
    let dir = workspace();
    let mut images = lock_images(dir.path());
    // a qcow2 with an external data file: the data file is locked too
    let df = dir.path().join("data.raw");
    let meta = qcow2_create(dir.path(), "meta.qcow2", &format!("data_file={}", s(&df)), "4M", None);
    images.push(("qcow2", meta));
    for (fmt, img) in images {
        let child = Command::new(vdiskview_bin())
            .args(["write", s(&img), "--offset", "512", "--pattern", "0x5c", "--length", "1000"])
            .env("VDISKVIEW_HOLD_LOCK_MS", "20000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the line comes once the lock is taken; polling it (not sleeping) is the wait
        let mut guard = Guard(child);
        let lines = wait_for_stderr_line(&mut guard.0, "holding the write lock", Duration::from_secs(60), fmt);
        assert!(lines.contains("holding the write lock"), "{fmt}: {lines}");

        let q = run_with_timeout(Command::new("qemu-io").args(["-f", fmt, "-c", "write 0 512", s(&img)]), Duration::from_secs(30));
        let text = format!("{}{}", String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&q.stderr));
        assert!(!q.status.success() && text.contains("lock"), "{fmt}: qemu-io wrote while vdiskview held the lock:\n{text}");
        if fmt != "raw" {
            // (qemu-img info opens a raw image without I/O, so without any permission)
            let q = qemu_img_output(&["info", "-f", fmt, s(&img)]);
            let text = String::from_utf8_lossy(&q.stderr);
            assert!(!q.status.success() && text.contains("lock"), "{fmt}: qemu-img info opened it:\n{text}");
        }
        qemu_img(&["info", "-U", "-f", fmt, s(&img)]);
        if s(&img).ends_with("meta.qcow2") {
            let q = run_with_timeout(Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 512", s(&df)]), Duration::from_secs(30));
            let text = format!("{}{}", String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&q.stderr));
            assert!(!q.status.success() && text.contains("lock"), "qemu-io wrote the data file while vdiskview held it:\n{text}");
        }
        let other = vdiskview(&["write", s(&img), "--offset", "0", "--pattern", "1", "--length", "1"]);
        assert_clean_error(&other, &format!("{fmt}: a second vdiskview writer"));
        drop(guard);
        // the lock went with the process
        qemu_io(fmt, &img, &["write -P 0x11 0 512"]);
    }
}

/// Writers starting at the same moment: at most one gets the lock (they take their lock
/// bytes first and look for others after, as qemu does), the others are refused cleanly.
#[test]
fn lock_concurrent_writers_exclude_each_other() {
    let dir = workspace();
    let img = qcow2_create(dir.path(), "race.qcow2", "", "4M", None);
    for round in 0..5 {
        let children: Vec<Child> = (0..6)
            .map(|i| {
                Command::new(vdiskview_bin())
                    .args(["write", s(&img), "--offset", &(i * 70000).to_string(), "--pattern", "7", "--length", "100"])
                    .env("VDISKVIEW_HOLD_LOCK_MS", "300")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut holders = 0;
        for c in children {
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("holding the write lock") {
                holders += 1;
                assert!(out.status.success(), "round {round}: the lock holder failed: {err}");
            } else {
                assert_eq!(out.status.code(), Some(1), "round {round}: {err}");
                assert!(err.contains("in use"), "round {round}: {err}");
            }
        }
        assert!(holders <= 1, "round {round}: {holders} writers held the write lock at once");
        check_no_corruption(&img, &format!("round {round}"));
    }
    // The window between looking and locking is microseconds; strace's fault injection
    // widens it (every fcntl returns 100 ms late), where strace is installed: checking
    // before taking let both of two writers through.
    if Command::new("strace").arg("-V").output().map(|o| o.status.success()).unwrap_or(false) {
        let children: Vec<Child> = (0..2)
            .map(|i| {
                Command::new("strace")
                    .args(["-f", "-o", "/dev/null", "-e", "trace=fcntl", "-e", "inject=fcntl:delay_exit=100000", vdiskview_bin()])
                    .args(["write", s(&img), "--offset", &(i * 70000).to_string(), "--pattern", "8", "--length", "100"])
                    .env("VDISKVIEW_HOLD_LOCK_MS", "1500")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let holders = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .filter(|o| String::from_utf8_lossy(&o.stderr).contains("holding the write lock"))
            .count();
        assert!(holders <= 1, "{holders} writers held the write lock at once (slowed down by strace)");
    }
}

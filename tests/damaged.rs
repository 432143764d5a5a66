//! Damaged images: hundreds of mutations of qemu-made VHD (fixed, dynamic, differencing) and
//! QCOW2 images (snapshots, compressed clusters, extended L2 with zstd, bitmaps, a backing
//! file, v2), each run through the real binary's `info`, `map --output=json`,
//! `read --length 1M`, `tables`, `check` and `render --size 100x30 --format text`.
//!
//! The mutations: every size, offset and count field that we can find in the file set to 0,
//! 1, all ones and past the end of the file (with the VHD checksums made right again, so the
//! parser believes the field); bit flips from a seeded PRNG in the first 4 KiB and anywhere;
//! truncation at random points. Each run must end within 10 s, under a 4 GiB address-space
//! limit, without a panic (exit 101, "panicked") or a signal, and a non-zero exit must come
//! with an error on stderr. Failing images are kept in $TMPDIR/vdiskview-damaged-failures/.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::vhd::{vhd_checksum, DiffVhd};
use support::*;

const TIME_LIMIT: Duration = Duration::from_secs(10);
const AS_LIMIT: u64 = 4 << 30;

/// A base image and what the mutations aim at.
struct Base {
    name: &'static str,
    path: PathBuf,
    vhd: bool,
}

/// One damaged image: its bytes and how they were made.
struct Mutant {
    what: String,
    bytes: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// The base images

fn bases(dir: &Path) -> Vec<Base> {
    let mut out = Vec::new();
    let mut b = |name: &'static str, path: PathBuf, vhd: bool| out.push(Base { name, path, vhd });

    let p = dir.join("vhd-fixed.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&p), "2M"]);
    qemu_io("vpc", &p, &["write -P 0x11 0 64k", "write -P 0x12 1536k 4k"]);
    b("vhd-fixed", p, true);

    let p = dir.join("vhd-dynamic.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", s(&p), "4M"]);
    qemu_io("vpc", &p, &["write -P 0x21 4k 8k", "write -P 0x22 1M 4k"]);
    b("vhd-dynamic", p, true);

    // the parent stays intact; the mutants of the child sit beside it and find it
    let parent = dir.join("parent.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", s(&parent), "4M"]);
    qemu_io("vpc", &parent, &["write -P 0x31 0 64k"]);
    let p = dir.join("vhd-diff.vhd");
    DiffVhd::new(&parent, 64 * 1024)
        .write_sectors(8, &pattern_bytes(1, 4096))
        .write_sectors(300, &pattern_bytes(2, 1024))
        .write_sectors(4000, &pattern_bytes(3, 512))
        .write(&p);
    b("vhd-diff", p, true);

    let p = dir.join("qcow2-snap.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&p), "4M"]);
    qemu_io("qcow2", &p, &["write -P 0x41 0 64k", "write -c -P 0x42 128k 4k", "write -z 192k 8k"]);
    qemu_img(&["snapshot", "-c", "first", s(&p)]);
    qemu_io("qcow2", &p, &["write -P 0x43 32k 64k", "discard 256k 4k"]);
    qemu_img(&["snapshot", "-c", "second", s(&p)]);
    qemu_img(&["bitmap", "--add", s(&p), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "64k", s(&p), "b1"]);
    qemu_io("qcow2", &p, &["write -P 0x44 1M 100k", "write -c -P 0x45 3M 4k"]);
    qemu_img(&["bitmap", "--disable", s(&p), "b1"]);
    qemu_io("qcow2", &p, &["write -P 0x46 2M 8k"]);
    b("qcow2-snap-bitmaps", p, false);

    let p = dir.join("qcow2-extl2.qcow2");
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-o", "cluster_size=32k,extended_l2=on,compression_type=zstd", s(&p), "4M",
    ]);
    qemu_io(
        "qcow2",
        &p,
        &["write -P 0x51 1k 2k", "write -z 8k 2k", "write -c -P 0x52 64k 32k", "write -P 0x53 1M 33k", "write -z 2M 32k"],
    );
    b("qcow2-extl2-zstd", p, false);

    let base = dir.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    qemu_io("qcow2", &base, &["write -P 0x61 0 1M"]);
    let p = dir.join("qcow2-backed.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "base.qcow2", "-F", "qcow2", s(&p), "4M"]);
    qemu_io("qcow2", &p, &["write -P 0x62 1000 3000", "write -P 0x63 600k 1k", "write -c -P 0x64 2M 512", "write -z 3M 4k"]);
    b("qcow2-backed", p, false);

    let p = dir.join("qcow2-v2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=16k", s(&p), "2M"]);
    qemu_io("qcow2", &p, &["write -P 0x71 0 40k", "write -c -P 0x72 1M 16k"]);
    qemu_img(&["snapshot", "-c", "v2snap", s(&p)]);
    qemu_io("qcow2", &p, &["write -P 0x73 16k 16k"]);
    b("qcow2-v2", p, false);
    out
}

// ---------------------------------------------------------------------------------------
// Where the fields are

/// A field to corrupt: file offset, width in bytes, the unit of its value (1 for bytes,
/// 512 for sectors, the cluster size for a count of clusters…), a name, and whether it lies in a
/// VHD structure whose checksum must be fixed afterwards.
#[derive(Clone)]
struct FieldAt {
    off: usize,
    width: usize,
    unit: u64,
    name: String,
    fix: Fix,
}

#[derive(Clone, Copy, PartialEq)]
enum Fix {
    None,
    /// A VHD footer: the one at the end and the copy at 0 (dynamic disks) get the same value.
    VhdFooter,
    /// The VHD dynamic header at this offset.
    VhdHeader(usize),
}

fn field(off: usize, width: usize, unit: u64, name: impl Into<String>, fix: Fix) -> FieldAt {
    FieldAt { off, width, unit, name: name.into(), fix }
}

fn vhd_fields(b: &[u8]) -> Vec<FieldAt> {
    let end = b.len() - 512;
    let mut v = vec![
        field(end + 16, 8, 1, "footer.data_offset", Fix::VhdFooter),
        field(end + 40, 8, 1, "footer.original_size", Fix::VhdFooter),
        field(end + 48, 8, 1, "footer.current_size", Fix::VhdFooter),
        field(end + 56, 2, 1, "footer.cylinders", Fix::VhdFooter),
        field(end + 60, 4, 1, "footer.disk_type", Fix::VhdFooter),
    ];
    let dynamic = be32(b, end + 60) != 2;
    if !dynamic {
        return v;
    }
    let h = be64(b, end + 16) as usize;
    let fx = Fix::VhdHeader(h);
    v.extend([
        field(h + 16, 8, 1, "header.table_offset", fx),
        field(h + 28, 4, 1, "header.max_table_entries", fx),
        field(h + 32, 4, 1, "header.block_size", fx),
    ]);
    for i in 0..8 {
        let l = h + 576 + 24 * i;
        if be32(b, l) != 0 {
            v.push(field(l + 4, 4, 512, format!("locator{i}.data_space"), fx));
            v.push(field(l + 8, 4, 1, format!("locator{i}.data_len"), fx));
            v.push(field(l + 16, 8, 1, format!("locator{i}.data_offset"), fx));
        }
    }
    let bat = be64(b, h + 16) as usize;
    let n = be32(b, h + 28) as usize;
    v.push(field(bat, 4, 512, "bat[0]", Fix::None));
    if let Some(i) = (1..n).find(|&i| be32(b, bat + 4 * i) != u32::MAX) {
        v.push(field(bat + 4 * i, 4, 512, format!("bat[{i}]"), Fix::None));
    }
    v
}

fn qcow2_fields(b: &[u8]) -> Vec<FieldAt> {
    let cs = 1u64 << be32(b, 20);
    let f = |off: usize, width: usize, unit: u64, name: &str| field(off, width, unit, name, Fix::None);
    let mut v = vec![
        f(8, 8, 1, "backing_file_offset"),
        f(16, 4, 1, "backing_file_size"),
        f(20, 4, 1, "cluster_bits"),
        f(24, 8, 1, "size"),
        f(36, 4, 8, "l1_size"),
        f(40, 8, 1, "l1_table_offset"),
        f(48, 8, 1, "refcount_table_offset"),
        f(56, 4, cs, "refcount_table_clusters"),
        f(60, 4, 40, "nb_snapshots"),
        f(64, 8, 1, "snapshots_offset"),
    ];
    let version = be32(b, 4);
    let mut ext = 72;
    if version >= 3 {
        v.push(f(96, 4, 1, "refcount_order"));
        v.push(f(100, 4, 1, "header_length"));
        ext = be32(b, 100) as usize;
    }
    // header extensions
    let mut pos = ext.next_multiple_of(8);
    while pos + 8 <= (cs as usize).min(b.len()) {
        let kind = be32(b, pos);
        let len = be32(b, pos + 4) as usize;
        if kind == 0 {
            break;
        }
        v.push(f(pos + 4, 4, 1, &format!("extension 0x{kind:08x}.length")));
        if kind == 0x2385_2875 && len >= 24 {
            v.push(f(pos + 8, 4, 1, "bitmaps.nb_bitmaps"));
            v.push(f(pos + 16, 8, 1, "bitmaps.directory_size"));
            v.push(f(pos + 24, 8, 1, "bitmaps.directory_offset"));
            let dir = be64(b, pos + 24) as usize;
            if dir + 24 <= b.len() {
                v.push(f(dir, 8, 1, "bitmap[0].table_offset"));
                v.push(f(dir + 8, 4, 8, "bitmap[0].table_size"));
                v.push(f(dir + 17, 1, 1, "bitmap[0].granularity_bits"));
                v.push(f(dir + 18, 2, 1, "bitmap[0].name_size"));
                v.push(f(dir + 20, 4, 1, "bitmap[0].extra_data_size"));
                let t = be64(b, dir) as usize;
                if t + 8 <= b.len() {
                    v.push(f(t, 8, 1, "bitmap[0].table[0]"));
                }
            }
        }
        pos += 8 + len.next_multiple_of(8);
    }
    // the first snapshot table entry
    let sn = be64(b, 64) as usize;
    if be32(b, 60) > 0 && sn + 40 <= b.len() {
        v.push(f(sn, 8, 1, "snapshot[0].l1_table_offset"));
        v.push(f(sn + 8, 4, 8, "snapshot[0].l1_size"));
        v.push(f(sn + 12, 2, 1, "snapshot[0].id_str_size"));
        v.push(f(sn + 14, 2, 1, "snapshot[0].name_size"));
        v.push(f(sn + 36, 4, 1, "snapshot[0].extra_data_size"));
    }
    // L1[0], the first L2 entries of a kind, the first refcount table entry
    let l1 = be64(b, 40) as usize;
    if l1 + 8 <= b.len() {
        v.push(f(l1, 8, 1, "L1[0]"));
        let l2 = (be64(b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
        let step = if be64(b, 72) & (1 << 4) != 0 && version >= 3 { 16 } else { 8 };
        if l2 != 0 && l2 + cs as usize <= b.len() {
            let entries = (0..cs as usize / step).map(|i| (i, be64(b, l2 + i * step)));
            let mut seen_plain = false;
            let mut seen_compressed = false;
            for (i, e) in entries {
                if e & (1 << 62) != 0 && !seen_compressed {
                    seen_compressed = true;
                    v.push(f(l2 + i * step, 8, 1, &format!("L2[{i}] (compressed)")));
                } else if e & (1 << 62) == 0 && e & 0x00ff_ffff_ffff_fe00 != 0 && !seen_plain {
                    seen_plain = true;
                    v.push(f(l2 + i * step, 8, 1, &format!("L2[{i}]")));
                    if step == 16 {
                        v.push(f(l2 + i * step + 8, 8, 1, &format!("L2[{i}].bitmap")));
                    }
                }
            }
        }
    }
    let rt = be64(b, 48) as usize;
    if rt + 8 <= b.len() {
        v.push(f(rt, 8, 1, "refcount_table[0]"));
    }
    v
}

fn put(b: &mut [u8], off: usize, width: usize, value: u64) {
    let bytes = value.to_be_bytes();
    b[off..off + width].copy_from_slice(&bytes[8 - width..]);
}

fn fix_checksums(b: &mut [u8], fix: Fix, fld: &FieldAt) {
    match fix {
        Fix::None => {}
        Fix::VhdFooter => {
            let end = b.len() - 512;
            // the copy at 0 of a dynamic disk gets the same field
            if &b[0..8] == b"conectix" && end > 0 {
                let rel = fld.off - end;
                let v: Vec<u8> = b[fld.off..fld.off + fld.width].to_vec();
                b[rel..rel + fld.width].copy_from_slice(&v);
                let c = vhd_checksum(&b[0..512], 64);
                b[64..68].copy_from_slice(&c.to_be_bytes());
            }
            let c = vhd_checksum(&b[end..], 64);
            b[end + 64..end + 68].copy_from_slice(&c.to_be_bytes());
        }
        Fix::VhdHeader(h) => {
            let c = vhd_checksum(&b[h..h + 1024], 36);
            b[h + 36..h + 40].copy_from_slice(&c.to_be_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mutations

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mutants(base: &Base, seed: u64) -> Vec<Mutant> {
    let orig = std::fs::read(&base.path).unwrap();
    let len = orig.len() as u64;
    let mut out = Vec::new();
    let fields = if base.vhd { vhd_fields(&orig) } else { qcow2_fields(&orig) };
    for fld in &fields {
        if fld.off + fld.width > orig.len() {
            continue;
        }
        let max = if fld.width == 8 { u64::MAX } else { (1u64 << (8 * fld.width)) - 1 };
        // past the end: a whole MiB beyond it, aligned, in the field's unit
        let past = ((len.next_multiple_of(1 << 20) + (1 << 20)) / fld.unit).min(max);
        for (label, value) in [("0", 0), ("1", 1), ("huge", max), ("past-end", past)] {
            let mut b = orig.clone();
            put(&mut b, fld.off, fld.width, value);
            fix_checksums(&mut b, fld.fix, fld);
            out.push(Mutant { what: format!("{} = {} (0x{:x})", fld.name, label, value), bytes: b });
        }
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0..12 {
        let mut b = orig.clone();
        let n = 1 + rng.below(8);
        let span = if i % 2 == 0 { 4096.min(len) } else { len };
        let mut at = Vec::new();
        for _ in 0..n {
            let bit = rng.below(span * 8);
            b[(bit / 8) as usize] ^= 1 << (bit % 8);
            at.push(bit);
        }
        let region = if i % 2 == 0 { "first 4 KiB" } else { "anywhere" };
        out.push(Mutant { what: format!("{n} bit flips, {region}, at bits {at:?}"), bytes: b });
    }
    for i in 0..8 {
        let cut = if i < 4 { rng.below(len.min(64 << 10)) } else { rng.below(len) };
        out.push(Mutant { what: format!("truncated to {cut} bytes"), bytes: orig[..cut as usize].to_vec() });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Running the binary

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
    /// Peak resident set of the child, KiB.
    maxrss_kib: u64,
    timed_out: bool,
}

fn run_limited(args: &[&str], keep_stdout: bool) -> Run {
    let mut cmd = Command::new(vdiskview_bin());
    cmd.args(args).env("NO_COLOR", "1").stdin(Stdio::null()).stderr(Stdio::piped());
    cmd.stdout(if keep_stdout { Stdio::piped() } else { Stdio::null() });
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: AS_LIMIT, rlim_max: AS_LIMIT };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start vdiskview");
    let out_t = child.stdout.take().map(|mut p| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut p, &mut v);
            v
        })
    });
    let mut err_pipe = child.stderr.take().unwrap();
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut timed_out = false;
    let (raw, maxrss) = loop {
        let mut status = 0;
        // SAFETY: plain wait4 on our own child, with out-pointers to locals.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru.ru_maxrss as u64);
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > TIME_LIMIT && !timed_out {
            timed_out = true;
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    // the child is reaped; keep std from waiting for it again
    std::mem::forget(child);
    Run {
        status: ExitStatus::from_raw(raw),
        stdout: out_t.map(|t| t.join().unwrap()).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
        elapsed,
        maxrss_kib: maxrss,
        timed_out,
    }
}

/// What must hold of one run; the problem, if any.
fn judge(cmd: &str, r: &Run) -> Option<String> {
    if r.timed_out {
        return Some(format!("did not finish within {:?}", TIME_LIMIT));
    }
    if let Some(sig) = r.status.signal() {
        return Some(format!("killed by signal {sig}"));
    }
    let code = r.status.code().unwrap();
    if code == 101 || r.stderr.contains("panicked") {
        return Some(format!("panicked (exit {code})"));
    }
    if r.stderr.contains("memory allocation of") {
        return Some("allocation failure".into());
    }
    if code != 0 {
        let error_line = r.stderr.lines().any(|l| l.starts_with("vdiskview: ") && !l.starts_with("vdiskview: warning: "));
        // check's 2 and 3 are findings (corruptions, leaks) printed as its report
        let check_result = cmd == "check" && (code == 2 || code == 3) && !r.stdout.is_empty();
        if !error_line && !check_result {
            return Some(format!("exit {code} without an error on stderr"));
        }
    }
    if cmd == "map" && code == 0 {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&r.stdout) {
            return Some(format!("map printed invalid JSON: {e}"));
        }
    }
    None
}

const COMMANDS: &[(&str, &[&str])] = &[
    ("info", &["info"]),
    ("map", &["map", "--output=json"]),
    ("read", &["read", "--length", "1M"]),
    ("tables", &["tables"]),
    ("check", &["check"]),
    ("render", &["render", "--size", "100x30", "--format", "text"]),
];

#[test]
fn damaged_images_never_panic_hang_or_run_away() {
    let dir = workspace();
    let t0 = Instant::now();
    let bases = bases(dir.path());
    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let ms = mutants(base, 1000 + i as u64);
        let fields: Vec<String> = ms.iter().filter_map(|m| m.what.strip_suffix(" = 0 (0x0)").map(str::to_string)).collect();
        eprintln!("{}: {} images; fields: {}", base.name, ms.len(), fields.join(", "));
        for (j, m) in ms.into_iter().enumerate() {
            let ext = if base.vhd { "vhd" } else { "qcow2" };
            let p = dir.path().join(format!("m-{}-{:03}.{}", base.name, j, ext));
            std::fs::write(&p, &m.bytes).unwrap();
            jobs.push((p, format!("{}: {}", base.name, m.what)));
        }
    }
    let built = t0.elapsed();
    let images = jobs.len();
    assert!(images >= 300, "only {images} damaged images");

    let work: Vec<(usize, usize)> = (0..images).flat_map(|i| (0..COMMANDS.len()).map(move |c| (i, c))).collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let stats = Mutex::new((Duration::ZERO, String::new(), 0u64, String::new(), [0usize; 3]));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2) * 2;
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, c)) = work.get(k) else { break };
                let (path, what) = &jobs[i];
                let (name, args) = COMMANDS[c];
                let mut a: Vec<&str> = args.to_vec();
                a.insert(1, s(path));
                let r = run_limited(&a, name != "read");
                let desc = format!("vdiskview {} — {}", a.join(" "), what);
                {
                    let mut st = stats.lock().unwrap();
                    if r.elapsed > st.0 {
                        st.0 = r.elapsed;
                        st.1 = desc.clone();
                    }
                    if r.maxrss_kib > st.2 {
                        st.2 = r.maxrss_kib;
                        st.3 = desc.clone();
                    }
                    st.4[match r.status.code() {
                        Some(0) => 0,
                        Some(_) => 1,
                        None => 2,
                    }] += 1;
                }
                if let Some(problem) = judge(name, &r) {
                    let keep = std::env::temp_dir().join("vdiskview-damaged-failures");
                    let _ = std::fs::create_dir_all(&keep);
                    let kept = keep.join(path.file_name().unwrap());
                    let _ = std::fs::copy(path, &kept);
                    let first: Vec<&str> = r.stderr.lines().take(3).collect();
                    failures.lock().unwrap().push(format!(
                        "{problem}: {desc} (kept as {}); stderr: {}",
                        kept.display(),
                        first.join(" | ")
                    ));
                }
            });
        }
    });
    let st = stats.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "damaged: {} bases, {} images ({:?} to build), {} commands in {:?} ({} ok, {} errors, {} signals); \
         slowest {:?}: {}; peak RSS {} MiB: {}",
        bases.len(),
        images,
        built,
        work.len(),
        t0.elapsed(),
        st.4[0],
        st.4[1],
        st.4[2],
        st.0,
        st.1,
        st.2 / 1024,
        st.3
    );
    if !failures.is_empty() {
        panic!("{} of {} runs failed:\n{}", failures.len(), work.len(), failures.join("\n"));
    }
}

//! Shared helpers of the fuzz targets: a guard on allocations, an image file made from the
//! fuzz input (the image model reads host files through paths), and one walk over an opened
//! image that touches every view the CLI and the TUI use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use vdiskview_core::image::{self, Format, Image, OpenOptions};

/// No single allocation may be larger than this: the inputs are at most a few MiB, so anything
/// bigger was sized from an untrusted field instead of the file.
pub const MAX_ALLOC: usize = 256 << 20;
/// Nor may the live total exceed this.
pub const MAX_LIVE: usize = 1 << 30;

struct Guard;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn too_big(size: usize) -> ! {
    // no allocation here: write straight to stderr and abort (libFuzzer keeps the input)
    let msg = b"vdiskview-fuzz: runaway allocation\n";
    // SAFETY: writing a static buffer to fd 2.
    unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
    let _ = size;
    std::process::abort()
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, n: usize) -> isize;
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        check(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        check(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            check(new - l.size());
        } else {
            LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
        }
        if new > MAX_ALLOC {
            too_big(new);
        }
        System.realloc(p, l, new)
    }
}

fn check(size: usize) {
    if size > MAX_ALLOC {
        too_big(size);
    }
    if LIVE.fetch_add(size, Ordering::Relaxed) + size > MAX_LIVE {
        too_big(size);
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

/// Write the input to a file of this process on a tmpfs and return its path.
pub fn image_file(data: &[u8]) -> PathBuf {
    image_file_named("img", data)
}

pub fn image_file_named(name: &str, data: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("vdiskview-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write the fuzz image");
    p
}

/// Open the image at `path` as `format`, alone (backing files are not followed: their names
/// come from the input).
pub fn open(path: &std::path::Path, format: Format) -> image::Result<Image> {
    image::open(path, &OpenOptions { format: Some(format), no_backing: true, ..Default::default() })
}

/// Bytes of guest disk read per image, at most.
const READ_BUDGET: u64 = 4 << 20;
/// Extents walked per image, at most.
const EXTENT_BUDGET: usize = 20_000;

/// Everything a front end does with an opened image: summaries, map, reads, regions and their
/// fields, where/locate in both directions, grid cells, the backing reference, check.
pub fn exercise(img: &Image) {
    let size = img.virtual_size();
    let _ = img.format();
    let _ = img.unit_size();
    let _ = img.unit_count();
    let _ = img.unit_name();
    for l in &img.layers {
        let _ = l.layer.cluster_size();
        let _ = l.layer.backing();
        let _ = l.layer.warnings();
    }
    // the map, bounded in count
    let mut pos = 0u64;
    let mut n = 0;
    let mut extents = Vec::new();
    while pos < size && n < EXTENT_BUDGET {
        match img.resolve(pos, size - pos) {
            Ok(e) => {
                assert!(e.len > 0, "zero-length extent at 0x{:x}", pos);
                assert!(e.len <= size - pos, "extent past the end of the disk");
                let _ = img.host_name(&e);
                let _ = e.kind_name();
                pos += e.len;
                extents.push(e);
            }
            Err(_) => break,
        }
        n += 1;
    }
    // reads: the start, the end, and the first bytes of some extents
    let mut budget = READ_BUDGET;
    let mut read = |virt: u64, len: u64| {
        let len = len.min(size.saturating_sub(virt)).min(budget).min(1 << 20);
        if len == 0 {
            return;
        }
        budget -= len;
        let mut buf = vec![0u8; len as usize];
        let _ = img.read(virt, &mut buf);
    };
    read(0, 64 << 10);
    read(size.saturating_sub(4096), 4096);
    for e in extents.iter().step_by((extents.len() / 64).max(1)) {
        read(e.virt, e.len.min(64 << 10));
        let mut buf = vec![0u8; e.len.min(4096) as usize];
        let _ = img.read_extent(e, &mut buf);
        let _ = img.to_file(e.virt);
        let _ = img.unit_kind(img.unit_of(e.virt));
    }
    let _ = img.next_allocated(0, true);
    let _ = img.next_allocated(size.saturating_sub(1), false);
    let units = img.unit_count();
    for u in [0, 1, units / 2, units.saturating_sub(1)] {
        let _ = img.unit_kind(u);
    }
    // file space: every structure and its fields, and where each lands
    let top = img.top();
    let flen = top.file().len();
    let regions = top.regions();
    for r in regions.iter().take(2000) {
        for f in &r.fields {
            let _ = (&f.name, &f.value);
        }
        if r.start < flen {
            let _ = img.locate_host(0, r.start);
            let _ = img.to_virt(0, r.start);
        }
    }
    for off in [0, flen / 3, flen / 2, flen.saturating_sub(1)] {
        if off < flen {
            let _ = img.locate_host(0, off);
            let mut b = [0u8; 64];
            let _ = img.read_host(0, off, &mut b);
        }
    }
    let _ = top.tables(&mut std::io::sink());
    let _ = top.info("fuzz");
    if let Some(v) = top.downcast_ref::<vdiskview_core::image::vhd::Vhd>() {
        {
            for b in 0..v.block_count().min(4096) {
                let _ = v.bat_line(b);
            }
            let _ = img.vhd_bitmap(0);
            let _ = v.footer.fields();
            if let Some(h) = &v.header {
                let _ = h.fields();
            }
        }
    }
    if let Some(q) = top.downcast_ref::<vdiskview_core::image::qcow2::Qcow2>() {
        {
            let _ = q.header.fields();
            let _ = q.l2_tables();
            if let Ok(t) = q.refcount_table() {
                for (i, &b) in t.iter().enumerate().take(64) {
                    let _ = q.refcount(&t, i as u64);
                    if b != 0 {
                        let _ = q.refcount_block(b);
                    }
                }
            }
            if let Ok(sns) = q.snapshots() {
                for sn in sns.iter().take(16) {
                    let _ = sn.fields();
                    let _ = q.snapshot_l1(sn);
                }
            }
            let dir = q.bitmap_directory();
            for bm in dir.bitmaps.iter().take(16) {
                let _ = bm.fields();
                let _ = q.bitmap_table(bm);
                let _ = q.bitmap_extents(bm, 0, size.min(64 << 20));
            }
        }
    }
    let _ = image::check::check_image(img);
}

/// The first cluster of a qcow2 v3 image with 512-byte clusters and a disk of `size` bytes:
/// its L1 table at 0x200 (the input supplies it), `nb_snapshots` snapshots at
/// `snapshots_offset`, and with `bitmaps = Some((nb, directory size, directory offset))` a
/// consistent bitmaps extension. The caller appends the rest of the file.
pub fn qcow2_template(size: u64, nb_snapshots: u32, snapshots_offset: u64, bitmaps: Option<(u32, u64, u64)>) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let put32 = |h: &mut Vec<u8>, o: usize, v: u32| h[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |h: &mut Vec<u8>, o: usize, v: u64| h[o..o + 8].copy_from_slice(&v.to_be_bytes());
    h[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut h, 4, 3);
    put32(&mut h, 20, 9);
    put64(&mut h, 24, size);
    let l1_size = size.div_ceil(512 * 64) as u32;
    put32(&mut h, 36, l1_size);
    put64(&mut h, 40, 0x200);
    put32(&mut h, 60, nb_snapshots);
    put64(&mut h, 64, snapshots_offset);
    put32(&mut h, 96, 4);
    put32(&mut h, 100, 104);
    if let Some((nb, dir_size, dir_off)) = bitmaps {
        put64(&mut h, 88, 1);
        put32(&mut h, 104, 0x2385_2875);
        put32(&mut h, 108, 24);
        put32(&mut h, 112, nb);
        put64(&mut h, 120, dir_size);
        put64(&mut h, 128, dir_off);
    }
    h
}

/// Open `data` as a raw whole-disk volume of filesystem `kind` and walk it the way `ls`,
/// `cat` and `locate` do (bounded): the shared body of the filesystem fuzz targets.
pub fn exercise_fs(data: &[u8], kind: vdiskview_core::guest::FsKind) {
    use std::rc::Rc;
    use vdiskview_core::guest::fs::GuestFs;
    use vdiskview_core::guest::{FsInfo, Volume};

    let path = image_file(data);
    let Ok(img) = open(&path, vdiskview_core::image::Format::Raw) else { return };
    let len = img.virtual_size();
    let vol = Volume {
        partition: None,
        start: 0,
        len,
        fs: Some(FsInfo { kind, label: None, uuid: None }),
    };
    let Ok(fs) = GuestFs::open(Rc::new(img), &vol) else { return };
    let _ = fs.regions();
    let Ok(entries) = fs.read_dir("/") else { return };
    for e in entries.iter().take(8) {
        let p = format!("/{}", e.name);
        let _ = fs.stat(&p);
        let _ = fs.locate(&p);
        if e.is_dir() {
            if let Ok(sub) = fs.read_dir(&p) {
                for s in sub.iter().take(4) {
                    let _ = fs.locate(&format!("{}/{}", p, s.name));
                }
            }
        } else if e.size < 1 << 20 {
            let _ = fs.read(&p);
        }
        for (s, _) in e.streams.iter().take(2) {
            let _ = fs.read(&format!("{}:{}", p, s));
        }
    }
}

//! `vdiskview read`: raw bytes of the guest disk (through the chain) or of the host file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::zero_scan::ZeroScan;
use super::{offset, open};
use crate::image::OpenOptions;

const CHUNK: u64 = 4 << 20;
/// Chunk size where the output is not a file to leave holes in (a pipe, /dev/null, a
/// terminal): small enough that the buffers stay in the CPU cache between the read that
/// fills them and the write that empties them.
const STREAM_CHUNK: u64 = 128 << 10;
/// Granularity at which holes inside an image's data are kept in the output.
const HOLE_PIECE: u64 = 64 << 10;

/// `to_fd1`: `w` is this process's stdout, so the fast paths (holes, copy_file_range, a
/// reader thread) may write to fd 1 directly; otherwise (the TUI's buffer) the bytes go
/// through `w` in chunks.
pub fn run(path: &Path, opts: &OpenOptions, off: &str, length: Option<&str>, file: bool, w: &mut dyn Write, to_fd1: bool) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let start = offset(off)?;
    let size = if file { img.top().file().len() } else { img.virtual_size() };
    if start > size {
        bail!("offset 0x{:x} is past the end of the {} (0x{:x} bytes)", start, if file { "file" } else { "disk" }, size);
    }
    let len = match length {
        Some(l) => offset(l)?,
        None => size - start,
    };
    if start.checked_add(len).is_none_or(|e| e > size) {
        bail!(
            "0x{:x} bytes at 0x{:x} go past the end of the {} (0x{:x} bytes)",
            len,
            start,
            if file { "file" } else { "disk" },
            size
        );
    }
    if !to_fd1 {
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        let mut pos = start;
        while pos < start + len {
            let n = CHUNK.min(start + len - pos) as usize;
            if file {
                img.read_host(0, pos, &mut buf[..n])?;
            } else {
                img.read(pos, &mut buf[..n])?;
            }
            w.write_all(&buf[..n])?;
            pos += n as u64;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // the kernel-side copies below never decrypt: refuse as the buffered read does
    if !file {
        if let Some(l) = img.layers.iter().find(|l| l.layer.encrypted()) {
            bail!("{} is encrypted; vdiskview does not decrypt guest data (map, info and tables still work)", l.name);
        }
    }
    // the caller's writer holds nothing yet: everything below writes to fd 1 itself
    w.flush()?;
    // Straight to fd 1: Rust's stdout is line-buffered and would scan every chunk for
    // newlines (82% of the time of a sparse read, measured with perf).
    let _lock = std::io::stdout().lock();
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut out = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1) });
    let sparse = SparseSink::probe(&out);
    let can_skip = sparse.is_some();
    if sparse.is_none() && is_pipe(&out) {
        // into a pipe: what lies plainly in a host file is spliced (the kernel moves the
        // page-cache pages, nothing is copied in user space), the rest written from two
        // reused buffers
        copy_to_pipe(&img, 1, start, start + len, file)?;
        return Ok(ExitCode::SUCCESS);
    }
    if sparse.is_none() && is_char_device(&out) {
        // /dev/null, a terminal: one small buffer, reused, on this thread (a writer thread
        // and its channel cost more than the write itself)
        let mut buf = vec![0u8; STREAM_CHUNK as usize];
        let mut pos = start;
        while pos < start + len {
            let n = STREAM_CHUNK.min(start + len - pos) as usize;
            if file {
                img.read_host(0, pos, &mut buf[..n])?;
            } else {
                img.read(pos, &mut buf[..n])?;
            }
            if !write_fd(1, &buf[..n])? {
                break;
            }
            pos += n as u64;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // buffers of one size, reused: the first few are allocated, the rest come back
    let chunk = if can_skip { CHUNK } else { STREAM_CHUNK };
    if let Some(sink) = &sparse {
        // into a regular file: data the image stores as plain bytes is copied by the kernel
        // (copy_file_range), zero runs become holes, the rest goes through a buffer
        if copy_direct(&img, sink, start, start + len, file)? {
            sink.finish()?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    // One thread reads while this one writes: on two cores reading from the image and
    // copying into the output overlap.
    let end = start + len;
    let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Chunk>>(3);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let result = std::thread::scope(|scope| -> Result<ExitCode> {
        let img = &img;
        let sparse = &sparse;
        scope.spawn(move || {
            let mut pos = start;
            while pos < end {
                // With a file to leave holes in, a zero run is skipped whole, and a data chunk
                // stops where the next zero run begins (so scattered clusters do not drag
                // 4 MiB of zeros each into the output).
                let (zero, n) = if !file && can_skip {
                    match run_at(img, pos, end) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                    }
                } else {
                    (false, chunk.min(end - pos))
                };
                let chunk = if zero {
                    Ok(Chunk::Zero(n))
                } else {
                    let n = n as usize;
                    let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; chunk as usize]);
                    let r = if file { img.read_host(0, pos, &mut buf[..n]) } else { img.read(pos, &mut buf[..n]) };
                    r.map(|_| Chunk::Data(buf, n)).map_err(anyhow::Error::from)
                };
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    return;
                }
                pos += n;
            }
        });
        for chunk in rx {
            let r = match chunk? {
                Chunk::Data(buf, n) => {
                    let r = out.write_all(&buf[..n]);
                    let _ = back_tx.send(buf);
                    r
                }
                Chunk::Zero(n) => sparse.as_ref().expect("zero chunks only with a sparse sink").skip(n),
            };
            if let Err(e) = r {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(e.into());
            }
        }
        Ok(ExitCode::SUCCESS)
    });
    drop(back_tx);
    if let Some(s) = &sparse {
        s.finish()?;
    }
    out.flush()?;
    result
}

fn is_char_device(out: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    out.metadata().map(|m| m.file_type().is_char_device()).unwrap_or(false)
}

fn is_pipe(out: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    out.metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

/// Write all of `buf` to `fd`; false when the reader went away (EPIPE: a closed pipe ends
/// the read quietly, as `head` expects).
fn write_fd(fd: i32, buf: &[u8]) -> Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writing our own buffer to our own descriptor.
        let r = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EPIPE) => return Ok(false),
                _ => return Err(err.into()),
            }
        }
        done += r as usize;
    }
    Ok(true)
}

/// Copy `[start, end)` into the pipe `fd`: plain data extents with splice from the host
/// file, zeros from one zero buffer, the rest (compressed clusters, backing reads past a
/// short file) read into one reused buffer.
fn copy_to_pipe(img: &crate::image::Image, fd: i32, start: u64, end: u64, file: bool) -> Result<()> {
    use crate::image::LayerKind;
    let zeros = vec![0u8; STREAM_CHUNK as usize];
    let mut buf = vec![0u8; STREAM_CHUNK as usize];
    let mut can_splice = true;
    let mut pos = start;
    while pos < end {
        let (src, host, n, zero) = if file {
            (Some(img.top().file().raw_fd()), pos, end - pos, false)
        } else {
            let e = img.resolve(pos, end - pos)?;
            if reads_zero(&e) {
                (None, 0, e.len, true)
            } else {
                match e.kind {
                    LayerKind::Data { file: id, host, .. } => {
                        let f = img.layers[e.depth].layer.host(id).expect("the extent's file");
                        if host + e.len <= f.len() {
                            (Some(f.raw_fd()), host, e.len, false)
                        } else {
                            (None, 0, e.len.min(STREAM_CHUNK), false)
                        }
                    }
                    _ => (None, 0, e.len.min(STREAM_CHUNK), false),
                }
            }
        };
        if zero {
            let mut left = n;
            while left > 0 {
                let k = left.min(STREAM_CHUNK) as usize;
                if !write_fd(fd, &zeros[..k])? {
                    return Ok(());
                }
                left -= k as u64;
            }
            pos += n;
            continue;
        }
        let mut done = 0u64;
        if let (Some(src), true) = (src, can_splice) {
            let mut off = host as libc::loff_t;
            while done < n {
                // SAFETY: splice between two descriptors we own; the input offset is ours.
                let r = unsafe { libc::splice(src, &mut off, fd, std::ptr::null_mut(), (n - done).min(1 << 30) as usize, libc::SPLICE_F_MORE) };
                if r < 0 {
                    let err = std::io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EPIPE) => return Ok(()),
                        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                            // this kernel or file cannot splice: buffered from here on
                            can_splice = false;
                            break;
                        }
                        _ => return Err(err.into()),
                    }
                }
                if r == 0 {
                    anyhow::bail!("unexpected end of the image file at 0x{:x}", off);
                }
                done += r as u64;
            }
        }
        while done < n {
            let k = (n - done).min(STREAM_CHUNK) as usize;
            if file {
                img.read_host(0, pos + done, &mut buf[..k])?;
            } else {
                img.read(pos + done, &mut buf[..k])?;
            }
            if !write_fd(fd, &buf[..k])? {
                return Ok(());
            }
            done += k as u64;
        }
        pos += n;
    }
    Ok(())
}

enum Chunk {
    Data(Vec<u8>, usize),
    Zero(u64),
}

/// Copy `[start, end)` into the sink with copy_file_range where the bytes lie plainly in a
/// host file. Returns false when the kernel cannot copy between these files, so the caller
/// takes the buffered path (which writes everything again from the same place).
///
/// Every byte goes to an explicit output offset (the sink's position at the start plus its
/// guest offset); the sink's position is left at the end of the range. (Two threads copying
/// one half each were tried: on a loaded 2-core machine they cost more CPU on dense images,
/// both writing into one tmpfs file, and gained nothing measurable; see BENCHMARKS.md.)
fn copy_direct(img: &crate::image::Image, sink: &SparseSink, start: u64, end: u64, file: bool) -> Result<bool> {
    let base = sink.position()?;
    let ok = ZeroScan::with(|scan| copy_range(img, sink, start, end, base, file, scan))?;
    if ok {
        sink.seek_to(base + (end - start))?;
    }
    Ok(ok)
}

/// [`copy_direct`] of one range, written from output offset `out` on.
fn copy_range<'f>(img: &'f crate::image::Image, sink: &SparseSink, start: u64, end: u64, out: u64, file: bool, scan: &mut ZeroScan<'_, 'f>) -> Result<bool> {
    use crate::image::LayerKind;
    let mut pos = start;
    let mut buf = Vec::new();
    let mut first = true;
    // zeros found right after a data run, skipped once the run is copied
    let mut skip_after = 0u64;
    while pos < end {
        if skip_after > 0 {
            pos += skip_after;
            skip_after = 0;
            continue;
        }
        let (src, host, n) = if file {
            (Some(img.top().file().raw_fd()), pos, end - pos)
        } else {
            let e = img.resolve(pos, end - pos)?;
            if reads_zero(&e) {
                pos += e.len;
                continue;
            }
            match e.kind {
                LayerKind::Data { file: id, host, .. } => {
                    let f = img.layers[e.depth].layer.host(id).expect("the extent's file");
                    if host + e.len <= f.len() {
                        // a hole in the image file (a VHD block qemu wrote only part of)
                        // stays a hole in the output: looked at in 64 KiB pieces with
                        // SEEK_DATA only (SEEK_HOLE would scan a dense file to its end)
                        // (zeros the image stores as data, a VDI block or VMDK grain qemu
                        // filled around a small write, become holes too, as qemu-img convert
                        // makes them)
                        let piece = e.len.min(HOLE_PIECE - host % HOLE_PIECE);
                        let zeros = zero_prefix(f, host, e.len, &mut buf, scan);
                        if zeros > 0 {
                            pos += zeros;
                            continue;
                        }
                        // grow the copy over the following pieces that start with data
                        // (the zeros that stop it are skipped at once, not looked at again)
                        let mut run = piece;
                        while run < e.len {
                            let z = zero_prefix(f, host + run, e.len - run, &mut buf, scan);
                            if z > 0 {
                                skip_after = z;
                                break;
                            }
                            run += (e.len - run).min(HOLE_PIECE);
                        }
                        if skip_after > 0 || run == e.len {
                            // the run's last piece may end in zeros (a small write at the
                            // start of a block or grain qemu filled with zeros); its trailing
                            // zero pages are left out of the copy, as qemu-img convert leaves
                            // them out (looked at once per run, not per piece)
                            let last = if run <= piece { 0 } else { piece + (run - piece - 1) / HOLE_PIECE * HOLE_PIECE };
                            let trim = zero_tail(f, host + last, run - last, &mut buf);
                            run -= trim;
                            skip_after += trim;
                        }
                        (Some(f.raw_fd()), host, run)
                    } else {
                        (None, 0, e.len)
                    }
                }
                _ => (None, 0, e.len.min(CHUNK)),
            }
        };
        match src {
            Some(fd) => {
                let mut off = host as libc::off_t;
                let mut out_off = (out + (pos - start)) as libc::off_t;
                let mut left = n;
                while left > 0 {
                    // SAFETY: copy_file_range between two descriptors we own, at offsets of
                    // ours (the file positions do not move).
                    let r = unsafe { libc::copy_file_range(fd, &mut off, sink.fd, &mut out_off, left.min(1 << 30) as usize, 0) };
                    if r < 0 {
                        let err = std::io::Error::last_os_error();
                        if first && matches!(err.raw_os_error(), Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)) {
                            return Ok(false);
                        }
                        return Err(err.into());
                    }
                    if r == 0 {
                        anyhow::bail!("unexpected end of the image file at 0x{:x}", off);
                    }
                    first = false;
                    left -= r as u64;
                }
            }
            None => {
                buf.resize(n as usize, 0);
                img.read(pos, &mut buf)?;
                let at = out + (pos - start);
                let mut done = 0;
                while done < buf.len() {
                    // SAFETY: writing our own buffer to our own descriptor, at an offset.
                    let r = unsafe { libc::pwrite(sink.fd, buf[done..].as_ptr().cast(), buf.len() - done, (at + done as u64) as libc::off_t) };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error().into());
                    }
                    done += r as usize;
                }
                first = false;
            }
        }
        pos += n;
    }
    Ok(true)
}

/// How many bytes from `off` (at most `max`, in whole 64 KiB pieces, the first ending at a
/// 64 KiB boundary of the file, then the zero 4 KiB pages that start the first piece holding
/// data) are a hole or stored zeros. A SEEK_DATA and a 4 KiB look
/// first (data usually shows at once); when those say zero, the first non-zero byte of up to
/// 1 MiB is looked for ([`ZeroScan`]), so a VDI block or VMDK grain qemu filled with zeros
/// around a small write is read once, not once per piece.
fn zero_prefix<'f>(f: &'f crate::image::io::HostFile, off: u64, max: u64, buf: &mut Vec<u8>, scan: &mut ZeroScan<'_, 'f>) -> u64 {
    const WINDOW: u64 = 1 << 20;
    let first = max.min(HOLE_PIECE - off % HOLE_PIECE);
    let data = f.next_data(off);
    if data >= off + first {
        // a hole: whole pieces up to the data (or `max`)
        let hole = (data - off).min(max);
        return if hole >= max { max } else { first + (hole - first) / HOLE_PIECE * HOLE_PIECE };
    }
    let head = first.min(4096) as usize;
    let n = max.min(WINDOW.max(first));
    if buf.len() < head {
        buf.resize(head, 0);
    }
    if f.read_zero_fill(off, &mut buf[..head]).is_err() || !all_zero(&buf[..head]) {
        return 0;
    }
    // the first non-zero byte of the window (read once, in cache-sized chunks, by two threads)
    let p = match scan.first_nonzero(f, off + head as u64, n - head as u64) {
        Some(p) => head as u64 + p,
        None => return 0,
    };
    if p >= n {
        return n;
    }
    // whole zero pieces, then the zero 4 KiB pages that start the piece holding data (data
    // in the middle of a block qemu filled with zeros)
    let piece = if p < first { 0 } else { first + (p - first) / HOLE_PIECE * HOLE_PIECE };
    piece + (p - piece) / 4096 * 4096
}

/// How many bytes at the end of the `len` bytes stored at `off` are zero, in whole 4 KiB
/// pages counted from `off` (0 when the last page holds data or the read fails).
fn zero_tail(f: &crate::image::io::HostFile, off: u64, len: u64, buf: &mut Vec<u8>) -> u64 {
    const PAGE: usize = 4096;
    let n = len as usize;
    if n == 0 {
        return 0;
    }
    if buf.len() < n {
        buf.resize(n, 0);
    }
    // the last page first: data there (dense data) ends the look at once
    let last = (n - 1) / PAGE * PAGE;
    if f.read_zero_fill(off + last as u64, &mut buf[last..n]).is_err() || !all_zero(&buf[last..n]) {
        return 0;
    }
    if f.read_zero_fill(off, &mut buf[..last]).is_err() {
        return 0;
    }
    let mut keep = n.div_ceil(PAGE) * PAGE;
    while keep > 0 {
        let from = keep - PAGE;
        if !all_zero(&buf[from..n.min(keep)]) {
            break;
        }
        keep = from;
    }
    (n - keep.min(n)) as u64
}

/// A zero test the compiler vectorises (OR over 64-byte blocks, no early exit per byte).
fn all_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    for c in &mut blocks {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| x == 0)
}

/// At `pos`: a zero run (whole, however long) or a data run of at most one chunk that ends
/// where the next zero run starts.
fn run_at(img: &crate::image::Image, pos: u64, end: u64) -> crate::image::Result<(bool, u64)> {
    let first = img.resolve(pos, end - pos)?;
    if reads_zero(&first) {
        return Ok((true, first.len));
    }
    let limit = (pos + CHUNK).min(end);
    let mut at = pos + first.len.min(limit - pos);
    while at < limit {
        let e = img.resolve(at, limit - at)?;
        if reads_zero(&e) {
            break;
        }
        at += e.len;
    }
    Ok((false, at - pos))
}

fn reads_zero(e: &crate::image::Extent) -> bool {
    use crate::image::LayerKind::*;
    matches!(e.kind, Zero { .. } | Unallocated { .. } | ZeroData { .. })
}

/// When stdout is a regular file we own the end of (not appending), zero ranges are
/// skipped with a seek and the file is extended at the end, leaving holes as qemu-img
/// convert does.
struct SparseSink {
    fd: i32,
}

impl SparseSink {
    fn probe(out: &std::fs::File) -> Option<SparseSink> {
        use std::os::fd::AsRawFd;
        let fd = out.as_raw_fd();
        let meta = out.metadata().ok()?;
        // SAFETY: fcntl F_GETFL on our own fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if !meta.file_type().is_file() || flags < 0 || flags & libc::O_APPEND != 0 {
            return None;
        }
        Some(SparseSink { fd })
    }

    fn skip(&self, n: u64) -> std::io::Result<()> {
        // SAFETY: lseek on our own fd.
        let r = unsafe { libc::lseek(self.fd, n as libc::off_t, libc::SEEK_CUR) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The file position (where the next byte written goes).
    fn position(&self) -> std::io::Result<u64> {
        // SAFETY: lseek on our own fd.
        let r = unsafe { libc::lseek(self.fd, 0, libc::SEEK_CUR) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r as u64)
    }

    fn seek_to(&self, at: u64) -> std::io::Result<()> {
        // SAFETY: lseek on our own fd.
        let r = unsafe { libc::lseek(self.fd, at as libc::off_t, libc::SEEK_SET) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Make the file as long as the position (a trailing hole has no bytes written).
    fn finish(&self) -> std::io::Result<()> {
        // SAFETY: lseek/fstat/ftruncate on our own fd.
        unsafe {
            let pos = libc::lseek(self.fd, 0, libc::SEEK_CUR);
            let mut st: libc::stat = std::mem::zeroed();
            if pos >= 0 && libc::fstat(self.fd, &mut st) == 0 && st.st_size < pos && libc::ftruncate(self.fd, pos) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

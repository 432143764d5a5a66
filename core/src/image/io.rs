//! Bounded positioned I/O on one host file. Every offset that comes from an image passes
//! through here, so "past the end of the file" is caught in one place.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Error, Result};

#[derive(Debug)]
pub struct HostFile {
    file: File,
    /// The path as the user (or a parent image) named it; qemu prints this form.
    pub name: String,
    pub path: PathBuf,
    /// Grows as writes append (allocation at the end of the file).
    len: AtomicU64,
    writable: bool,
    /// Written to since the last flush (a flush with nothing to flush is skipped).
    dirty: AtomicBool,
    /// Writes need not be durable on return: the last flush of a write is left to the
    /// caller's [`HostFile::sync`] (an NBD FLUSH or FUA, a close). The ordering flushes
    /// between a write's steps are still made.
    lazy: AtomicBool,
}

impl HostFile {
    pub fn open(path: &Path, name: String) -> Result<HostFile> {
        Self::open_mode(path, name, false)
    }

    /// Open for reading, or for reading and writing when `write` (the top image of a
    /// `--write` session only; backing files never).
    pub fn open_mode(path: &Path, name: String, write: bool) -> Result<HostFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        if meta.is_dir() {
            return Err(Error::io_other(path.display().to_string(), "is a directory"));
        }
        let len = if meta.file_type().is_file() { meta.len() } else { block_device_len(&file) };
        Ok(HostFile { file, name, path: path.to_path_buf(), len: AtomicU64::new(len), writable: write, dirty: AtomicBool::new(false), lazy: AtomicBool::new(false) })
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The descriptor, for kernel-side copies (copy_file_range) by the read command.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// A second handle on the same open file description (so the same locks), for parsing
    /// the file again after its metadata was patched.
    pub fn dup(&self) -> Result<HostFile> {
        let file = self.file.try_clone().map_err(|e| Error::io(format!("{}", self.name), e))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(self.len());
        Ok(HostFile { file, name: self.name.clone(), path: self.path.clone(), len: AtomicU64::new(len), writable: self.writable, dirty: AtomicBool::new(self.dirty.load(Ordering::Acquire)), lazy: AtomicBool::new(self.lazy.load(Ordering::Acquire)) })
    }

    /// (device, inode) of the open file: two names of one file compare equal.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Write `data` at `off`, growing the file if it ends before.
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly(format!("{} is open read-only", self.name)));
        }
        self.file
            .write_all_at(data, off)
            .map_err(|e| Error::io(format!("{}: write at 0x{:x}", self.name, off), e))?;
        self.len.fetch_max(off + data.len() as u64, Ordering::AcqRel);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Make the file at least `len` bytes long (a hole at the end, nothing written).
    pub fn extend_to(&self, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly(format!("{} is open read-only", self.name)));
        }
        if len > self.len() {
            self.file.set_len(len).map_err(|e| Error::io(format!("{}: extend to 0x{:x}", self.name, len), e))?;
            self.len.fetch_max(len, Ordering::AcqRel);
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Make everything written so far durable before what follows is written (an ordering
    /// barrier; skipped when nothing was written since the last one).
    pub fn sync(&self) -> Result<()> {
        if !self.writable || !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            Error::io(format!("{}: flush", self.name), e)
        })
    }

    /// The last flush of a write: made now, unless the file is lazy (then the next
    /// [`HostFile::sync`], ordering barrier or explicit flush, makes it).
    pub fn sync_final(&self) -> Result<()> {
        if self.lazy.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sync()
    }

    /// Whether writes may return before their last flush (see [`HostFile::set_lazy`]).
    pub fn lazy(&self) -> bool {
        self.lazy.load(Ordering::Acquire)
    }

    /// Let writes return before their last flush (NBD without FUA); see [`HostFile::sync_final`].
    pub fn set_lazy(&self, lazy: bool) {
        self.lazy.store(lazy, Ordering::Release);
    }

    /// Take qemu's image locks for a writer; see [`super::lock`].
    pub fn lock_for_write(&self) -> Result<()> {
        super::lock::lock_for_write(&self.file, &self.name)
    }

    /// Bytes the file really occupies on disk (st_blocks * 512), qemu's `actual-size`.
    pub fn allocated_size(&self) -> u64 {
        self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
    }

    /// Read exactly `buf.len()` bytes at `off`; anything past the end of the file is an error
    /// naming `what`, the structure being read.
    pub fn read_exact_at(&self, off: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = off.checked_add(buf.len() as u64);
        let len = self.len();
        match end {
            Some(end) if end <= len => {}
            _ => {
                return Err(Error::corrupt(format!(
                    "{} at 0x{:x}+0x{:x} lies past the end of {} (0x{:x} bytes)",
                    what,
                    off,
                    buf.len(),
                    self.name,
                    len
                )))
            }
        }
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| Error::io(format!("{}: read at 0x{:x}", self.name, off), e))
    }

    /// Read at `off`, filling whatever lies past the end of the file with zeros, as qemu does
    /// for a data cluster beyond EOF.
    pub fn read_zero_fill(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let avail = self.len().saturating_sub(off).min(buf.len() as u64) as usize;
        if avail > 0 {
            self.file
                .read_exact_at(&mut buf[..avail], off)
                .map_err(|e| Error::io(format!("{}: read at 0x{:x}", self.name, off), e))?;
        }
        buf[avail..].fill(0);
        Ok(())
    }

    /// The first data byte at or after `off` (SEEK_DATA alone: cheap when `off` is data, where
    /// SEEK_HOLE would scan to the next hole, possibly the end of a dense file). The file's
    /// length when only a hole follows; `off` when the filesystem cannot tell.
    pub fn next_data(&self, off: u64) -> u64 {
        if off >= self.len() {
            return self.len();
        }
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(self.file.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            return if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) { self.len() } else { off };
        }
        data as u64
    }

    /// Allocation status of host bytes at `off` as SEEK_DATA/SEEK_HOLE see them:
    /// (is_data, run length from `off`, at most `max`). Filesystems without the support
    /// report everything as data, as qemu assumes.
    pub fn data_run(&self, off: u64, max: u64) -> (bool, u64) {
        if off >= self.len() {
            return (false, max);
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                // a trailing hole
                return (false, max);
            }
            return (true, max);
        }
        let data = data as u64;
        if data > off {
            return (false, (data - off).min(max));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return (true, max);
        }
        let hole = (hole as u64).max(off + 1);
        (true, (hole - off).min(max))
    }
}

fn block_device_len(file: &File) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0)).unwrap_or(0)
}

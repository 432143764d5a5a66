//! The write engine's front: guest writes through the top layer (allocating, copy-on-write
//! from the layers below), host writes for repairs by hand, and the failpoints that prove
//! the crash ordering.
//!
//! Every format writes in the order qemu relies on: refcounts (or the file's new end) and
//! data first, then the table entry that points at them, then the release of what it
//! replaced. A write call is done in those groups, each for all its clusters at once, with
//! a flush between groups (not between clusters), so a crash at any step leaves at worst
//! leaked clusters. The last flush of a write is made before it returns, unless the image
//! is lazy ([`Image::set_lazy_flush`], the NBD plugin): then [`Image::flush`] makes it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::chain::{read_below, Image};
use super::{Error, Result};

static STEPS: AtomicU64 = AtomicU64::new(0);

/// Mark a durable step of a write. With the `test-hooks` feature and `VDISKVIEW_FAILPOINT=k`
/// the process aborts right after the k-th step, as a crash would (tests then run
/// `qemu-img check`). Without the feature (release builds) this only counts.
pub fn step(what: &str) {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    #[cfg(feature = "test-hooks")]
    if let Ok(k) = std::env::var("VDISKVIEW_FAILPOINT") {
        if k.trim().parse::<u64>().ok() == Some(n) {
            eprintln!("vdiskview: failpoint: aborting after step {} ({})", n, what);
            std::process::abort();
        }
    }
    let _ = (n, what);
}

/// Test hook (`test-hooks` feature only): with `VDISKVIEW_HOLD_LOCK_MS=N`, keep an image
/// open (and qemu's write lock held) for N ms, so tests can show qemu is locked out
/// meanwhile. The line on stderr tells them the lock is taken.
pub fn hold_lock_hook() {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("VDISKVIEW_HOLD_LOCK_MS").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        eprintln!("vdiskview: holding the write lock for {} ms", ms);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

impl Image {
    fn check_writable(&self) -> Result<()> {
        let top = &self.layers[0];
        if !top.layer.file().writable() {
            return Err(Error::ReadOnly(format!("{} is open read-only (use --write to patch it)", top.name)));
        }
        Ok(())
    }

    /// Write guest bytes at `virt` into the top layer, allocating and copying as needed.
    /// Backing files are never written.
    pub fn write(&mut self, virt: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let size = self.virtual_size();
        if virt.checked_add(data.len() as u64).is_none_or(|e| e > size) {
            return Err(Error::Invalid(format!(
                "write of 0x{:x} bytes at 0x{:x} goes past the end of the disk (0x{:x})",
                data.len(),
                virt,
                size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let (top, below) = self.layers.split_at_mut(1);
        let below = &*below;
        let reader = |v: u64, buf: &mut [u8]| read_below(below, v, buf);
        let r = top[0].layer.write(virt, data, &reader);
        self.invalidate();
        r
    }

    /// Let writes return before their last flush (`true`: NBD writes without FUA), or make
    /// every write durable on return again (`false`, the default). The ordering flushes
    /// inside a write are made either way; [`Image::flush`] makes everything durable.
    pub fn set_lazy_flush(&self, lazy: bool) {
        for f in self.layers[0].layer.host_files() {
            f.set_lazy(lazy);
        }
    }

    /// Make every write so far durable (NBD FLUSH, FUA, close): metadata a lazy layer
    /// holds in memory is written first, in its order.
    pub fn flush(&mut self) -> Result<()> {
        self.layers[0].layer.flush()
    }

    /// Write raw bytes into the top image file (file space), for repairs by hand. Only inside
    /// the file: growing it is the write engine's business.
    pub fn write_host(&mut self, off: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let f = self.layers[0].layer.file();
        if off.checked_add(data.len() as u64).is_none_or(|e| e > f.len()) {
            return Err(Error::Invalid(format!(
                "write of 0x{:x} bytes at file offset 0x{:x} goes past the end of {} (0x{:x})",
                data.len(),
                off,
                self.layers[0].name,
                f.len()
            )));
        }
        f.write_at(off, data)?;
        f.sync()?;
        step("host bytes");
        // metadata may have changed under the model: parse the file again
        self.invalidate();
        match super::chain::reparse(&self.layers[0].layer) {
            Ok(l) => {
                self.layers[0].layer = l;
                Ok(())
            }
            Err(e) => Err(Error::corrupt(format!("the bytes were written, but the image no longer parses: {}", e))),
        }
    }
}

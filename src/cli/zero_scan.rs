//! Finding the first non-zero byte of a stretch of an image file, for `read` into a regular
//! file (stored zeros become holes, as qemu-img convert makes them).
//!
//! Bytes must be read to be known zero (a VDI block qemu filled with zeros around a 4 KiB
//! write is 1 MiB of stored zeros), and that read is the kernel copying page-cache pages into
//! our buffer: the whole cost of such images. So the stretch is read in 128 KiB chunks (a
//! buffer that stays in the CPU's L2 cache between the read and the test), claimed one at a
//! time by this thread and, on a machine with more than one CPU, a helper thread (qemu keeps
//! several such reads in flight in its thread pool too). A chunk past a non-zero byte already
//! found is not read. The helper only reads; every write to the output stays on the caller's
//! thread. When the helper is slow to wake (a loaded machine), this thread claims the chunks
//! it has not started, so a stretch never waits on more than one chunk of the helper's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};

use crate::image::io::HostFile;

/// Bytes read per claim.
const CHUNK: u64 = 128 << 10;
/// Scanner of stored bytes; see the module comment.
pub struct ZeroScan<'s, 'f> {
    /// Where the helper is started, on the first stretch longer than a chunk (a dense image
    /// never needs one).
    scope: Option<&'s std::thread::Scope<'s, 'f>>,
    helper: Option<Sender<Arc<Stretch<'f>>>>,
    buf: Vec<u8>,
}

/// Not started, being read by the helper, finished by it, given up on (this thread read it all).
#[derive(Clone, Copy, PartialEq)]
enum Helper {
    Waiting,
    Reading,
    Done,
    Skip,
}

struct Stretch<'f> {
    file: &'f HostFile,
    off: u64,
    len: u64,
    /// Index of the next chunk to claim.
    next: AtomicU64,
    /// Smallest offset (from `off`) of a non-zero byte found so far; u64::MAX: none yet.
    found: AtomicU64,
    failed: AtomicBool,
    helper: Mutex<Helper>,
    done: Condvar,
}

impl<'s, 'f> ZeroScan<'s, 'f> {
    /// Run `body` with a scanner; the helper thread (if one is started) ends with `body`.
    pub fn with<R>(body: impl for<'x> FnOnce(&mut ZeroScan<'x, 'f>) -> R) -> R {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if cpus < 2 {
            return body(&mut ZeroScan { scope: None, helper: None, buf: Vec::new() });
        }
        // the sender is dropped with the scanner when `body` returns: the helper's loop ends
        std::thread::scope(|scope| body(&mut ZeroScan { scope: Some(scope), helper: None, buf: Vec::new() }))
    }

    fn start_helper(&mut self) {
        let Some(scope) = self.scope.take() else { return };
        let (tx, rx) = channel::<Arc<Stretch<'f>>>();
        let spawned = std::thread::Builder::new().name("zero-scan".into()).spawn_scoped(scope, move || {
            let mut buf = Vec::new();
            for s in rx {
                {
                    let mut h = s.helper.lock().unwrap_or_else(|e| e.into_inner());
                    if *h != Helper::Waiting {
                        continue;
                    }
                    *h = Helper::Reading;
                }
                s.claim_and_scan(&mut buf);
                *s.helper.lock().unwrap_or_else(|e| e.into_inner()) = Helper::Done;
                s.done.notify_all();
            }
        });
        // no thread (out of resources): this thread reads alone
        if spawned.is_ok() {
            self.helper = Some(tx);
        }
    }

    /// The offset (from `off`) of the first non-zero byte of the `len` bytes stored at `off`
    /// (past the end of the file reads as zeros, as qemu reads it); `Some(len)` when all are
    /// zero; None when a read failed (the caller then treats the bytes as data).
    pub fn first_nonzero(&mut self, file: &'f HostFile, off: u64, len: u64) -> Option<u64> {
        let s = Arc::new(Stretch {
            file,
            off,
            len,
            next: AtomicU64::new(0),
            found: AtomicU64::new(u64::MAX),
            failed: AtomicBool::new(false),
            helper: Mutex::new(Helper::Waiting),
            done: Condvar::new(),
        });
        if len > CHUNK && self.helper.is_none() {
            self.start_helper();
        }
        let shared = len > CHUNK && self.helper.as_ref().is_some_and(|tx| tx.send(s.clone()).is_ok());
        s.claim_and_scan(&mut self.buf);
        if shared {
            let mut h = s.helper.lock().unwrap_or_else(|e| e.into_inner());
            if *h == Helper::Waiting {
                *h = Helper::Skip;
            }
            while *h == Helper::Reading {
                h = s.done.wait(h).unwrap_or_else(|e| e.into_inner());
            }
        }
        if s.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(s.found.load(Ordering::Acquire).min(len))
    }
}

impl Stretch<'_> {
    fn claim_and_scan(&self, buf: &mut Vec<u8>) {
        if buf.len() < CHUNK as usize {
            buf.resize(CHUNK as usize, 0);
        }
        loop {
            let at = self.next.fetch_add(1, Ordering::AcqRel).saturating_mul(CHUNK);
            if at >= self.len || self.found.load(Ordering::Acquire) <= at || self.failed.load(Ordering::Acquire) {
                return;
            }
            let k = CHUNK.min(self.len - at) as usize;
            if self.file.read_zero_fill(self.off + at, &mut buf[..k]).is_err() {
                self.failed.store(true, Ordering::Release);
                return;
            }
            if let Some(p) = first_nonzero_byte(&buf[..k]) {
                self.found.fetch_min(at + p as u64, Ordering::AcqRel);
            }
        }
    }
}

/// Index of the first non-zero byte: 256-byte blocks OR-reduced as 64-bit words (plain
/// loads and ORs the compiler turns into vector code), the byte found inside the first block
/// that is not zero.
pub fn first_nonzero_byte(b: &[u8]) -> Option<usize> {
    const BLOCK: usize = 256;
    let mut blocks = b.chunks_exact(BLOCK);
    for (i, c) in (&mut blocks).enumerate() {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        }
        if acc != 0 {
            return c.iter().position(|&x| x != 0).map(|p| i * BLOCK + p);
        }
    }
    let tail = blocks.remainder();
    tail.iter().position(|&x| x != 0).map(|p| b.len() - tail.len() + p)
}

#[cfg(test)]
mod tests {
    use super::first_nonzero_byte;

    #[test]
    fn first_nonzero_byte_finds_the_first() {
        let mut b = vec![0u8; 1000];
        assert_eq!(first_nonzero_byte(&b), None);
        for at in [0, 63, 64, 500, 959, 960, 999] {
            b.fill(0);
            b[at] = 1;
            b[999] = 2;
            assert_eq!(first_nonzero_byte(&b), Some(at), "at {at}");
        }
    }
}

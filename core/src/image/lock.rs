//! qemu's image locks, so vdiskview and qemu never write one image at the same time.
//!
//! qemu (block/file-posix.c) takes open-file-description (OFD) read locks on single bytes:
//! byte 100+i when it holds permission i, byte 200+i when it does not share permission i with
//! others (0 consistent read, 1 write, 2 write unchanged, 3 resize). A writer checks that no
//! one holds 200+i for a permission it takes, and no one holds 100+i for one it won't share.

use std::fs::File;
use std::os::unix::io::AsRawFd;

use super::{Error, Result};

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const READ: i64 = 0;
const WRITE: i64 = 1;
const RESIZE: i64 = 3;

fn names(bit: i64) -> &'static str {
    match bit {
        READ => "consistent read",
        WRITE => "write",
        RESIZE => "resize",
        _ => "write unchanged",
    }
}

fn flock(kind: libc::c_short, start: i64) -> libc::flock {
    // SAFETY: flock is plain old data; zeroed is a valid value before we fill it in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Whether another open file description holds a lock on `byte`.
fn held_by_other(file: &File, byte: i64) -> Result<bool> {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, byte);
    // SAFETY: a valid fd and a valid flock struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r < 0 {
        return Err(Error::io("lock test", std::io::Error::last_os_error()));
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn take(file: &File, byte: i64) -> Result<()> {
    let fl = flock(libc::F_RDLCK as libc::c_short, byte);
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r < 0 {
        return Err(Error::io(format!("lock byte {}", byte), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn release(file: &File, byte: i64) {
    let fl = flock(libc::F_UNLCK as libc::c_short, byte);
    // SAFETY: as above.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
}

const OURS: [i64; 5] = [PERM_BASE + READ, PERM_BASE + WRITE, PERM_BASE + RESIZE, SHARED_BASE + WRITE, SHARED_BASE + RESIZE];

/// Lock `file` as qemu's writer does: permissions read, write, resize; write and resize not
/// shared. Fails, naming the conflict, when another process (qemu, qemu-nbd, another
/// vdiskview) uses the image in a way that excludes writing.
///
/// Like qemu (raw_handle_perm_lock), our bytes are taken first and conflicts checked after:
/// two writers starting at once then see each other (at worst both give up), where checking
/// first and taking after let both through.
pub fn lock_for_write(file: &File, name: &str) -> Result<()> {
    let release_all = || OURS.iter().for_each(|&b| release(file, b));
    for byte in OURS {
        if let Err(e) = take(file, byte) {
            release_all();
            return Err(e);
        }
    }
    // A descriptor we closed a moment ago can live on briefly in a child this process is
    // spawning (between fork and exec), its locks with it: look again before refusing.
    let mut tries = 0;
    loop {
        match check_free(file, name) {
            Err(_) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                release_all();
                return Err(e);
            }
            Ok(()) => return Ok(()),
        }
    }
}

fn check_free(file: &File, name: &str) -> Result<()> {
    for bit in [READ, WRITE, RESIZE] {
        if held_by_other(file, SHARED_BASE + bit)? {
            return Err(Error::Locked {
                by: format!("a process that does not share the \"{}\" permission", names(bit)),
                detail: format!(
                    "{} is in use by another process that does not share the \"{}\" permission (qemu lock byte {}); refusing to write",
                    name,
                    names(bit),
                    SHARED_BASE + bit
                ),
            });
        }
    }
    for bit in [WRITE, RESIZE] {
        if held_by_other(file, PERM_BASE + bit)? {
            return Err(Error::Locked {
                by: format!("a process holding it for {}", names(bit)),
                detail: format!(
                    "{} is in use: another process holds it for {} (qemu lock byte {}); refusing to write",
                    name,
                    names(bit),
                    PERM_BASE + bit
                ),
            });
        }
    }
    Ok(())
}

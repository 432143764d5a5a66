//! Where the subcommands print. Every subcommand writes its output to the `&mut dyn Write` it
//! is given (stdout from `main`, a buffer from the TUI's `:` command line), and a reader that
//! went away (`| head`) ends the command quietly: a BrokenPipe anywhere in an error's chain
//! counts as success. Warnings go through [`warn`] so the TUI can capture them too.

use std::cell::RefCell;
use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Whether `e` is, or was caused by, a write into a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            || c.downcast_ref::<crate::guest::Error>()
                .is_some_and(|g| matches!(g, crate::guest::Error::Write(io) if io.kind() == ErrorKind::BrokenPipe))
    })
}

thread_local! {
    /// Set while a subcommand runs inside the TUI: its warnings would scribble over the
    /// screen on stderr, so they are collected here and shown with the output.
    static CAPTURE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A warning line for the user: stderr, or the capture buffer inside the TUI.
pub fn warn(args: Arguments) {
    let captured = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(buf) => {
            let _ = writeln!(buf, "{}", args);
            true
        }
        None => false,
    });
    if !captured {
        eprintln!("{}", args);
    }
}

/// Run `f` with warnings captured; returns its result and what was warned.
pub fn capture_warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<u8>) {
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let w = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, w)
}

/// `eprintln!` through [`warn`].
#[macro_export]
macro_rules! warnln {
    ($($t:tt)*) => { $crate::cli::out::warn(format_args!($($t)*)) };
}

/// Run `f` writing straight to fd 1 when `to_fd1`, else into `w`. Rust's stdout is
/// line-buffered: a 128 KiB chunk of file data was split at its last newline into two
/// `write`s, and every chunk scanned for newlines (`cat` against `read`, BENCHMARKS.md).
pub fn stream_to_fd1<T>(w: &mut dyn Write, to_fd1: bool, f: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>) -> anyhow::Result<T> {
    if !to_fd1 {
        return f(w);
    }
    // what the caller's writer holds goes first
    w.flush()?;
    let _lock = std::io::stdout().lock();
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut fd1 = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1) });
    f(&mut *fd1)
}

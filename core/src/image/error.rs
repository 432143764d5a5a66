//! The image model's errors: one variant per kind of failure a front end treats differently
//! (the NBD plugin picks its errno by variant; the CLI prints the message on one line).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused: the io error keeps its kind (ENOSPC stays ENOSPC).
    /// Its message is part of this one (every front end prints one line), so it is not also
    /// given as `source()`, which would print it twice in an error chain.
    #[error("{context}: {io}")]
    Io { context: String, io: io::Error },
    /// A write to something opened read-only.
    #[error("{0}")]
    ReadOnly(String),
    /// Another process holds qemu's lock on the image.
    #[error("{detail}")]
    Locked { by: String, detail: String },
    /// What vdiskview does not do (encrypted data, an unknown feature bit, a missing
    /// capability of the format).
    #[error("{0}")]
    Unsupported(String),
    /// The image's metadata is damaged: the structure named, where it is when known.
    #[error("{detail}")]
    Damaged { structure: &'static str, offset: Option<u64>, detail: String },
    /// The backing chain could not be followed (missing file, loop, too deep).
    #[error("{0}")]
    Chain(String),
    /// A request that makes no sense for this image (past the end, no such layer).
    #[error("{0}")]
    Invalid(String),
    /// The caller asked a long walk to stop.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), io: source }
    }

    /// An io error that is not the operating system's (a directory where a file was wanted).
    pub fn io_other(context: impl Into<String>, what: &str) -> Error {
        Error::Io { context: context.into(), io: io::Error::other(what.to_string()) }
    }

    pub fn damaged(structure: &'static str, offset: Option<u64>, detail: impl Into<String>) -> Error {
        Error::Damaged { structure, offset, detail: detail.into() }
    }

    /// Damage whose structure the message itself names.
    pub fn corrupt(detail: impl Into<String>) -> Error {
        Error::Damaged { structure: "metadata", offset: None, detail: detail.into() }
    }

    pub fn unsupported(what: impl Into<String>) -> Error {
        Error::Unsupported(what.into())
    }

    /// The errno an I/O front end (NBD) reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { io, .. } => io.raw_os_error().unwrap_or(libc::EIO),
            Error::ReadOnly(_) => libc::EROFS,
            Error::Locked { .. } => libc::EBUSY,
            Error::Unsupported(_) => libc::EOPNOTSUPP,
            Error::Invalid(_) => libc::EINVAL,
            Error::Damaged { .. } | Error::Chain(_) => libc::EIO,
            Error::Cancelled => libc::ECANCELED,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno_and_message() {
        let e = Error::io("x.qcow2: write at 0x10000", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(e.to_string().starts_with("x.qcow2: write at 0x10000: No space left on device"), "{}", e);
        assert_eq!(Error::ReadOnly("ro".into()).errno(), libc::EROFS);
        assert_eq!(Error::corrupt("bad").to_string(), "bad");
    }
}

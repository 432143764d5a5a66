//! The image model: open a file, probe its format, follow its backing chain, and answer
//! "what is at this guest offset" for every view and command.

pub mod bytes;
pub mod chain;
pub mod check;
pub mod diff;
pub mod driver;
pub mod error;
pub mod expr;
pub mod foreign;
pub mod io;
pub mod lock;
pub mod mapping;
pub mod qcow2;
pub mod raw;
pub mod region;
pub mod summary;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
pub mod watch;
pub mod write;

#[cfg(test)]
mod unit_tests;

use std::path::{Path, PathBuf};

pub use chain::{Image, Layer, LayerInfo};
pub use mapping::{Extent, HostFileId, LayerExtent, LayerKind};

pub use driver::{probe, BackingRef, Format, FormatDriver, FormatLayer};
pub use error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Force the top image's format instead of probing.
    pub format: Option<Format>,
    /// Open only the top image, not its backing files.
    pub no_backing: bool,
    /// Open what can be opened when the backing chain is broken (missing file, loop), and
    /// record the problem in `Image::chain_error` instead of failing: for `info`.
    pub lenient: bool,
    /// Open the top image for writing (taking qemu's write locks); backing files stay
    /// read-only.
    pub write: bool,
    /// Read the top image as it was in this internal snapshot (qcow2; id or name), read-only.
    pub snapshot: Option<String>,
}

/// Open an image and its whole backing chain.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Image> {
    let mut img = chain::open_chain(path, opts)?;
    if let Some(name) = &opts.snapshot {
        img.layers[0]
            .layer
            .select_snapshot(name)
            .map_err(|e| match e {
                Error::Unsupported(m) => Error::Unsupported(format!("{}: {}", path.display(), m)),
                e => e,
            })?;
    }
    Ok(img)
}

/// qemu's path_combine: a relative backing name is taken relative to the folder of the image
/// that names it, as that image's path was spelt.
pub fn combine_path(base_name: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        return rel.to_string();
    }
    match base_name.rfind('/') {
        Some(i) => format!("{}{}", &base_name[..=i], rel),
        None => rel.to_string(),
    }
}

pub fn to_path(name: &str) -> PathBuf {
    PathBuf::from(name)
}

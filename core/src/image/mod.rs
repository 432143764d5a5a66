//! The image model: open a file, probe its format, follow its backing chain, and answer
//! "what is at this guest offset" for every view and command.

pub mod chain;
pub mod check;
pub mod expr;
pub mod io;
pub mod lock;
pub mod mapping;
pub mod qcow2;
pub mod raw;
pub mod region;
pub mod summary;
pub mod vhd;
pub mod write;

#[cfg(test)]
mod unit_tests;

use std::path::{Path, PathBuf};

pub use chain::{Image, Layer, LayerInfo};
pub use mapping::{Extent, HostFileId, LayerExtent, LayerKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Chain(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Vhd,
    Qcow2,
}

impl Format {
    /// The name qemu gives the format (`qemu-img info`'s `format`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vpc",
            Format::Qcow2 => "qcow2",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Some(Format::Raw),
            "vhd" | "vpc" => Some(Format::Vhd),
            "qcow2" => Some(Format::Qcow2),
            _ => None,
        }
    }
}

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

/// Probe a file's format from its bytes: qcow2 magic, a VHD footer at the end (512 or the old
/// 511 bytes) or its copy at offset 0; anything else is raw.
pub fn probe(file: &io::HostFile) -> Result<Format> {
    let mut magic = [0u8; 8];
    if file.len() >= 4 {
        file.read_exact_at(0, &mut magic[..4], "magic")?;
        if &magic[..4] == b"QFI\xfb" {
            return Ok(Format::Qcow2);
        }
    }
    if vhd::footer::find_cookie(file)?.is_some() {
        return Ok(Format::Vhd);
    }
    Ok(Format::Raw)
}

/// Open an image and its whole backing chain.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Image> {
    let mut img = chain::open_chain(path, opts)?;
    if let Some(name) = &opts.snapshot {
        match &mut img.layers[0].layer {
            Layer::Qcow2(q) => q.select_snapshot(name)?,
            l => {
                return Err(Error::Unsupported(format!(
                    "{}: {} images have no internal snapshots",
                    path.display(),
                    l.format().qemu_name()
                )))
            }
        }
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

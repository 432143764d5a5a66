//! `vdiskview tables`: the on-disk structures as text, as each format lists them (for a VHD
//! the listing vhd-shell printed; for a QCOW2 header, extensions, L1/L2, refcounts).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::open;
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, out: &mut dyn Write) -> Result<ExitCode> {
    let img = open(path, &OpenOptions { no_backing: true, ..opts.clone() })?;
    img.top().tables(&mut *out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

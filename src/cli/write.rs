//! `vdiskview write`: patch guest bytes (through the write engine: allocating, copy-on-write,
//! crash-ordered) or, with `--file`, raw bytes of the image file.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::offset;
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, off: &str, pattern: Option<&str>, length: Option<&str>, input: Option<&str>, file: bool) -> Result<ExitCode> {
    let start = offset(off)?;
    let data = match (pattern, input) {
        (Some(p), None) => {
            let byte = u8::try_from(offset(p)?).map_err(|_| anyhow::anyhow!("pattern '{}' is not a byte (0-255)", p))?;
            let len = offset(length.ok_or_else(|| anyhow::anyhow!("--pattern needs --length"))?)?;
            if len > 1 << 30 {
                bail!("--length {} is larger than 1 GiB; write in pieces", len);
            }
            vec![byte; len as usize]
        }
        (None, Some(src)) => {
            let mut buf = Vec::new();
            if src == "-" {
                std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
            } else {
                buf = std::fs::read(src).with_context(|| format!("reading {}", src))?;
            }
            if let Some(l) = length {
                buf.truncate(offset(l)? as usize);
            }
            buf
        }
        _ => bail!("give either --pattern BYTE --length N or --input FILE|-"),
    };
    let opts = OpenOptions { write: true, ..opts.clone() };
    // open warnings (a dirty image, a damaged footer) follow the outcome: after a refusal
    // the one line of the error says what matters
    let mut img = crate::image::open(path, &opts)?;
    crate::image::write::hold_lock_hook();
    let warnings = img.warnings.clone();
    if file {
        img.write_host(start, &data)?;
    } else {
        img.write(start, &data)?;
    }
    for w in warnings {
        crate::warnln!("vdiskview: warning: {}", w);
    }
    Ok(ExitCode::SUCCESS)
}

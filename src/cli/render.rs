//! `vdiskview render`: the TUI drawn without a terminal, as text, ANSI or SVG.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::ValueEnum;

use super::open;
use crate::image::OpenOptions;
use crate::tui::render;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RenderFormat {
    Text,
    Ansi,
    Svg,
}

pub fn parse_size(s: &str) -> Result<(u16, u16)> {
    let (c, r) = s.split_once(['x', 'X']).ok_or_else(|| anyhow!("size '{}' is not COLSxROWS", s))?;
    let c: u16 = c.trim().parse().map_err(|_| anyhow!("bad column count in '{}'", s))?;
    let r: u16 = r.trim().parse().map_err(|_| anyhow!("bad row count in '{}'", s))?;
    if !(20..=1000).contains(&c) || !(8..=500).contains(&r) {
        return Err(anyhow!("size {}x{} is outside 20x8 to 1000x500", c, r));
    }
    Ok((c, r))
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    path: &Path,
    opts: &OpenOptions,
    size: &str,
    keys: &str,
    format: RenderFormat,
    goto: Option<&str>,
    diff: Option<&crate::tui::compare::DiffSpec>,
    out: &mut dyn std::io::Write,
) -> Result<ExitCode> {
    let (cols, rows) = parse_size(size)?;
    let mut img = open(path, opts)?;
    let no_color = format == RenderFormat::Text;
    let buf = render::frame_with(&mut img, cols, rows, keys, goto, no_color, diff)?;
    let text = match format {
        RenderFormat::Text => render::to_text(&buf),
        RenderFormat::Ansi => render::to_ansi(&buf),
        RenderFormat::Svg => render::to_svg(&buf),
    };
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

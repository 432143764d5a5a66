//! `vdiskview diff`: every guest range whose content differs between two disks (two images,
//! a chain and the chain without its top, a snapshot and the active disk), with what each
//! side holds there. Exit status as `qemu-img compare`: 0 equal, 1 different, 2 error.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};

use super::{open, Output};
use crate::image::diff::{diff, DiffReport, Run, Side, SideExtent};
use crate::image::region::human_size;
use crate::image::{Image, OpenOptions};

pub struct DiffArgs<'a> {
    pub a: &'a Path,
    pub b: Option<&'a Path>,
    pub backing: bool,
    pub snapshots: &'a [String],
    pub strict: bool,
    pub output: Output,
}

pub fn run(opts: &OpenOptions, args: &DiffArgs, out: &mut dyn Write) -> Result<ExitCode> {
    match compare(opts, args, out) {
        Ok(code) => Ok(code),
        Err(e) if super::out::is_broken_pipe(&e) => Err(e),
        Err(e) => {
            // qemu-img compare's status for an error is 2, not the usual 1
            crate::warnln!("vdiskview: {}", format!("{:#}", e).replace('\n', " "));
            Ok(ExitCode::from(2))
        }
    }
}

fn compare(opts: &OpenOptions, args: &DiffArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let ro = OpenOptions { write: false, ..opts.clone() };
    // the two sides: images held here, compared as layer slices
    let (img_a, img_b): (Image, Option<Image>);
    let report = match (args.b, args.backing, args.snapshots) {
        (Some(b), false, []) => {
            img_a = open(args.a, &ro)?;
            img_b = Some(open(b, &OpenOptions { format: None, ..ro.clone() })?);
            run_diff(&img_a.layers, &img_b.as_ref().expect("opened").layers, args)?
        }
        (None, true, []) => {
            img_a = open(args.a, &ro)?;
            if img_a.layers.len() < 2 {
                bail!("{}: has no backing file: nothing to compare its top layer with", args.a.display());
            }
            run_diff(&img_a.layers, &img_a.layers[1..], args)?
        }
        (None, false, [s]) => {
            img_a = open(args.a, &OpenOptions { snapshot: Some(s.clone()), ..ro.clone() })?;
            img_b = Some(open(args.a, &ro)?);
            run_diff(&img_a.layers, &img_b.as_ref().expect("opened").layers, args)?
        }
        (None, false, [s, t]) => {
            img_a = open(args.a, &OpenOptions { snapshot: Some(s.clone()), ..ro.clone() })?;
            img_b = Some(open(args.a, &OpenOptions { snapshot: Some(t.clone()), ..ro.clone() })?);
            run_diff(&img_a.layers, &img_b.as_ref().expect("opened").layers, args)?
        }
        _ => bail!("give a second image, or --backing, or --snapshot NAME (once or twice), not several"),
    };
    let Some(report) = report else {
        writeln!(out, "Image size mismatch!")?;
        return Ok(ExitCode::from(1));
    };
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Human => write!(out, "{}", human(&report))?,
    }
    Ok(ExitCode::from(if report.equal { 0 } else { 1 }))
}

/// `None` when `--strict` and the sizes differ.
fn run_diff(a: &[crate::image::LayerInfo], b: &[crate::image::LayerInfo], args: &DiffArgs) -> Result<Option<DiffReport>> {
    let (sa, sb) = (Side::new(a)?, Side::new(b)?);
    if args.strict && sa.size() != sb.size() {
        return Ok(None);
    }
    diff(sa, sb, &mut |_, _| true).map(Some).map_err(|e| anyhow!(e))
}

fn side(s: &SideExtent) -> String {
    let mut t = s.kind.to_string();
    if let (Some(l), Some(f)) = (s.layer, &s.filename) {
        t += &format!(" (layer {} {}", l, f);
        if let Some(h) = s.host_offset {
            t += &format!(", host 0x{:x}", h);
        }
        t += ")";
    }
    t
}

fn human(r: &DiffReport) -> String {
    let mut s = String::new();
    if r.size_a != r.size_b {
        s += &format!("sizes differ: {} and {} bytes (the tail of the shorter reads as zero)\n", r.size_a, r.size_b);
    }
    if r.equal {
        s += "Images are identical.\n";
        return s;
    }
    for Run { start, length, a, b } in &r.runs {
        s += &format!("0x{:x}+0x{:x}: {} | {}\n", start, length, side(a), side(b));
    }
    s += &format!(
        "{} differing bytes ({}) in {} runs; first difference at offset {}\n",
        r.differing_bytes,
        human_size(r.differing_bytes),
        r.runs.len(),
        r.first_difference.unwrap_or(0)
    );
    s
}

//! `vdiskview check`: is the image damaged, and where? For a QCOW2 the findings, counts, JSON
//! keys and exit status of `qemu-img check`; for a VHD what `vhd-util check` covers. Every
//! finding names its structure and its place.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::Output;
use crate::image::check::{check_path, CheckReport, Finding, RepairMode};
use crate::image::{self, OpenOptions};

/// `check --repair`'s modes, qemu-img check -r's names.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Repair {
    Leaks,
    All,
}

/// `check --repair`: open the image for writing (qemu's write lock), repair, then print the
/// check of the repaired image, as `qemu-img check -r` does.
pub fn repair(path: &Path, opts: &OpenOptions, mode: Repair, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let mode = match mode {
        Repair::Leaks => RepairMode::Leaks,
        Repair::All => RepairMode::All,
    };
    let mut img = image::open(path, &OpenOptions { write: true, no_backing: true, ..opts.clone() })?;
    let name = img.layers[0].name.clone();
    let r = img.layers[0].layer.repair(&name, mode)?;
    for l in &r.lines {
        crate::warnln!("{}", l);
    }
    let report = &r.after;
    match output {
        Output::Json => {
            let mut j = report_json(report);
            j.leaks_fixed = r.leaks_fixed;
            j.corruptions_fixed = r.corruptions_fixed;
            writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?
        }
        Output::Human => {
            let mut s = String::new();
            if r.leaks_fixed > 0 || r.corruptions_fixed > 0 {
                s += &format!(
                    "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...\n",
                    r.leaks_fixed, r.corruptions_fixed
                );
            }
            s += &human(report);
            write!(out, "{}", s)?
        }
    }
    Ok(exit(report))
}

pub fn run(path: &Path, opts: &OpenOptions, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let report = check_path(path, opts.format)?;
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report_json(&report))?)?,
        Output::Human => write!(out, "{}", human(&report))?,
    }
    Ok(exit(&report))
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// qemu-img check's JSON (a key is left out when qemu leaves it out: a zero count), with
/// vdiskview's findings under a key of its own.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckJson<'a> {
    #[serde(skip_serializing_if = "is_zero")]
    image_end_offset: u64,
    #[serde(skip_serializing_if = "is_zero")]
    total_clusters: u64,
    /// qemu's key order: corruptions-fixed before check-errors, leaks-fixed after the counts
    #[serde(skip_serializing_if = "is_zero")]
    corruptions_fixed: u64,
    check_errors: u64,
    #[serde(skip_serializing_if = "is_zero")]
    corruptions: u64,
    #[serde(skip_serializing_if = "is_zero")]
    leaks: u64,
    #[serde(skip_serializing_if = "is_zero")]
    leaks_fixed: u64,
    #[serde(skip_serializing_if = "is_zero")]
    allocated_clusters: u64,
    filename: &'a str,
    format: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    fragmented_clusters: u64,
    #[serde(skip_serializing_if = "is_zero")]
    compressed_clusters: u64,
    vdiskview: CheckExtras<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct CheckExtras<'a> {
    findings: Vec<FindingJson<'a>>,
    exit_code: u8,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FindingJson<'a> {
    severity: &'static str,
    structure: &'a str,
    message: &'a str,
    host_offset: Option<u64>,
    host_length: Option<u64>,
    #[serde(rename = "virtual")]
    virt: Option<u64>,
}

pub fn report_json(r: &CheckReport) -> CheckJson<'_> {
    let s = r.qcow2.clone().unwrap_or_default();
    CheckJson {
        image_end_offset: s.image_end_offset,
        total_clusters: s.total_clusters,
        check_errors: r.check_errors,
        corruptions: r.corruptions,
        leaks: r.leaks,
        corruptions_fixed: 0,
        leaks_fixed: 0,
        allocated_clusters: s.allocated_clusters,
        filename: &r.filename,
        format: r.format.qemu_name(),
        fragmented_clusters: s.fragmented_clusters,
        compressed_clusters: s.compressed_clusters,
        vdiskview: CheckExtras {
            findings: r
                .findings
                .iter()
                .map(|f| FindingJson {
                    severity: f.severity.name(),
                    structure: &f.structure,
                    message: &f.message,
                    host_offset: f.host_offset,
                    host_length: f.host_len,
                    virt: f.virt,
                })
                .collect(),
            exit_code: r.exit_code(),
        },
    }
}

fn place(f: &Finding) -> String {
    let mut p = Vec::new();
    if let Some(o) = f.host_offset {
        match f.host_len {
            Some(l) if l > 1 => p.push(format!("file 0x{:x}-0x{:x}", o, o + l - 1)),
            _ => p.push(format!("file 0x{:x}", o)),
        }
    }
    if let Some(v) = f.virt {
        p.push(format!("guest 0x{:x}", v));
    }
    p.push(f.structure.to_string());
    format!("[{}]", p.join(", "))
}

/// One line per finding, then qemu-img check's summary.
pub fn human(r: &CheckReport) -> String {
    let mut s = String::new();
    for f in &r.findings {
        let tag = f.severity.tag();
        // qemu's own messages carry their tag already
        let msg = if f.message.starts_with(tag) { f.message.clone() } else { format!("{} {}", tag, f.message) };
        s += &format!("{} {}\n", msg, place(f));
    }
    if r.is_clean() {
        s += "No errors were found on the image.\n";
    } else {
        if r.corruptions > 0 {
            s += &format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                r.corruptions
            );
        }
        if r.leaks > 0 {
            s += &format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            );
        }
        if r.check_errors > 0 {
            s += &format!("\n{} internal errors have occurred during the check.\n", r.check_errors);
        }
    }
    if let Some(q) = &r.qcow2 {
        if q.total_clusters != 0 && q.allocated_clusters != 0 {
            let a = q.allocated_clusters as f64;
            s += &format!(
                "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
                q.allocated_clusters,
                q.total_clusters,
                a * 100.0 / q.total_clusters as f64,
                q.fragmented_clusters as f64 * 100.0 / a,
                q.compressed_clusters as f64 * 100.0 / a
            );
        }
        if q.image_end_offset != 0 {
            s += &format!("Image end offset: {}\n", q.image_end_offset);
        }
    }
    s
}

/// qemu-img check's exit status; after a check that could not complete, qemu prints the
/// report and then "Check failed".
fn exit(report: &CheckReport) -> ExitCode {
    let code = report.exit_code();
    if code == 1 {
        crate::warnln!(
            "vdiskview: check failed: {} internal error{} occurred during the check",
            report.check_errors,
            if report.check_errors == 1 { "" } else { "s" }
        );
    }
    ExitCode::from(code)
}

//! `vdiskview check`: is the image damaged, and where? For a QCOW2 the findings, counts, JSON
//! keys and exit status of `qemu-img check`; for a VHD what `vhd-util check` covers. Every
//! finding names its structure and its place.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::Output;
use crate::image::check::{check_path, CheckReport, Finding};
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let report = check_path(path, opts.format)?;
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report_json(&report))?)?,
        Output::Human => write!(out, "{}", human(&report))?,
    }
    let code = report.exit_code();
    if code == 1 {
        // qemu-img check: the report is printed, then "Check failed"
        crate::warnln!(
            "vdiskview: check failed: {} internal error{} occurred during the check",
            report.check_errors,
            if report.check_errors == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::from(code))
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "severity": f.severity.name(),
        "structure": f.structure,
        "message": f.message,
        "host-offset": f.host_offset,
        "host-length": f.host_len,
        "virtual": f.virt,
    })
}

/// qemu-img check's JSON (a key is left out when qemu leaves it out: a zero count), with
/// vdiskview's findings under a key of its own.
pub fn report_json(r: &CheckReport) -> Value {
    let mut m = Map::new();
    let opt = |m: &mut Map<String, Value>, k: &str, v: u64| {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    };
    if let Some(s) = &r.qcow2 {
        opt(&mut m, "image-end-offset", s.image_end_offset);
        opt(&mut m, "total-clusters", s.total_clusters);
    }
    m.insert("check-errors".into(), json!(r.check_errors));
    opt(&mut m, "corruptions", r.corruptions);
    opt(&mut m, "leaks", r.leaks);
    if let Some(s) = &r.qcow2 {
        opt(&mut m, "allocated-clusters", s.allocated_clusters);
    }
    m.insert("filename".into(), json!(r.filename));
    m.insert("format".into(), json!(r.format.qemu_name()));
    if let Some(s) = &r.qcow2 {
        opt(&mut m, "fragmented-clusters", s.fragmented_clusters);
        opt(&mut m, "compressed-clusters", s.compressed_clusters);
    }
    let findings: Vec<Value> = r.findings.iter().map(finding_json).collect();
    m.insert("vdiskview".into(), json!({ "findings": findings, "exit-code": r.exit_code() }));
    Value::Object(m)
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

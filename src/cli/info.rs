//! `vdiskview info`: qemu-img info's keys and values, plus what only vdiskview knows (VHD
//! fields, the whole chain, warnings) under a key of its own.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Output;
use crate::image::region::human_size;
use crate::image::{self, combine_path, Image, OpenOptions};

pub fn run(path: &Path, opts: &OpenOptions, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let opts = OpenOptions { lenient: true, ..opts.clone() };
    let img = image::open(path, &opts)?;
    for w in &img.warnings {
        crate::warnln!("vdiskview: warning: {}", w);
    }
    if let Some(e) = &img.chain_error {
        crate::warnln!("vdiskview: warning: {}", e);
    }
    let r = info_report(&img);
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
        Output::Human => write!(out, "{}", human(&img, &r))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// qemu-img info's JSON for one layer, key for key in qemu's order, plus vdiskview's own
/// findings under `vdiskview` (top layer only).
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InfoReport {
    pub children: Vec<ChildInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<Value>,
    pub virtual_size: u64,
    pub filename: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    pub format: &'static str,
    pub actual_size: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    pub dirty_flag: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vdiskview: Option<Extras>,
    /// Lines `info` prints after the header lines (qcow2's snapshot list), and the format's
    /// own section: not part of the JSON.
    #[serde(skip)]
    human_after_header: String,
    #[serde(skip)]
    human_section: Option<(&'static str, Vec<String>)>,
}

/// qemu's protocol layer under each format layer: the host file.
#[derive(Serialize)]
pub struct ChildInfo {
    pub name: &'static str,
    pub info: FileInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileInfo {
    pub children: [(); 0],
    pub virtual_size: u64,
    pub filename: String,
    pub format: &'static str,
    pub actual_size: u64,
    pub format_specific: FileSpecific,
    pub dirty_flag: bool,
}

#[derive(Serialize)]
pub struct FileSpecific {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: Map<String, Value>,
}

#[derive(Serialize)]
pub struct Extras {
    pub layers: Vec<LayerSummary>,
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LayerSummary {
    pub filename: String,
    pub format: &'static str,
    pub virtual_size: u64,
    /// The format's own decoding, under its key (`vhd`).
    #[serde(flatten)]
    pub decoded: Map<String, Value>,
}

/// The report for layer `i` of the chain.
pub fn layer_report(img: &Image, i: usize) -> InfoReport {
    let li = &img.layers[i];
    let l = &li.layer;
    let f = l.file();
    let k = l.info(&li.name);
    let full_backing_filename = k.backing_filename.as_ref().and_then(|b| {
        if k.backing_full_from_chain {
            // the file the chain opened (a VHD's parent is found through its locators)
            img.layers.get(i + 1).map(|next| next.name.clone())
        } else {
            Some(combine_path(&li.name, b))
        }
    });
    InfoReport {
        children: vec![ChildInfo {
            name: "file",
            info: FileInfo {
                children: [],
                // qemu's protocol layer counts whole sectors
                virtual_size: f.len().next_multiple_of(512),
                filename: f.name.clone(),
                format: "file",
                actual_size: f.allocated_size(),
                format_specific: FileSpecific { kind: "file", data: Map::new() },
                dirty_flag: false,
            },
        }],
        snapshots: k.snapshots,
        virtual_size: l.virtual_size(),
        filename: li.name.clone(),
        cluster_size: l.cluster_size(),
        format: l.format().qemu_name(),
        actual_size: k.actual_size.unwrap_or_else(|| f.allocated_size()),
        encrypted: k.encrypted,
        format_specific: k.format_specific,
        full_backing_filename,
        backing_filename: k.backing_filename,
        backing_filename_format: k.backing_format,
        dirty_flag: k.dirty,
        vdiskview: None,
        human_after_header: k.human_after_header,
        human_section: k.extra.map(|(key, _)| (key, k.extra_human)),
    }
}

/// Metadata qemu would refuse (it would not open the image), of every layer.
fn metadata_warnings(img: &Image) -> Vec<String> {
    img.layers.iter().flat_map(|li| li.layer.info(&li.name).problems).collect()
}

/// The whole report: the top layer's keys and the chain with its warnings.
pub fn info_report(img: &Image) -> InfoReport {
    let mut top = layer_report(img, 0);
    let layers = img
        .layers
        .iter()
        .map(|li| {
            let mut decoded = Map::new();
            if let Some((key, v)) = li.layer.info(&li.name).extra {
                decoded.insert(key.into(), v);
            }
            LayerSummary {
                filename: li.name.clone(),
                format: li.layer.format().qemu_name(),
                virtual_size: li.layer.virtual_size(),
                decoded,
            }
        })
        .collect();
    let mut warnings = img.warnings.clone();
    if let Some(e) = &img.chain_error {
        warnings.push(e.clone());
    }
    warnings.extend(metadata_warnings(img));
    top.vdiskview = Some(Extras { layers, warnings });
    top
}

fn human(img: &Image, r: &InfoReport) -> String {
    let mut s = String::new();
    s += &format!("image: {}\n", r.filename);
    s += &format!("file format: {}\n", r.format);
    s += &format!("virtual size: {} ({} bytes)\n", human_size(r.virtual_size), r.virtual_size);
    s += &format!("disk size: {}\n", human_size(r.actual_size));
    if let Some(cs) = r.cluster_size {
        s += &format!("cluster_size: {}\n", cs);
    }
    if let Some(b) = &r.backing_filename {
        match &r.full_backing_filename {
            Some(f) if f != b => s += &format!("backing file: {} (actual path: {})\n", b, f),
            _ => s += &format!("backing file: {}\n", b),
        }
    }
    if let Some(f) = &r.backing_filename_format {
        s += &format!("backing file format: {}\n", f);
    }
    if r.encrypted {
        s += "encrypted: yes\n";
    }
    s += &r.human_after_header;
    // the format's own keys, printed as qemu-img prints its ImageInfoSpecific
    if let Some(d) = r.format_specific.as_ref().and_then(|v| v.get("data")).and_then(|d| d.as_object()) {
        s += "Format specific information:\n";
        for (k, val) in d {
            if k == "bitmaps" {
                s += "    bitmaps:\n";
                for (i, b) in val.as_array().into_iter().flatten().enumerate() {
                    s += &format!("        [{}]:\n            flags:\n", i);
                    for (j, f) in b["flags"].as_array().into_iter().flatten().enumerate() {
                        s += &format!("                [{}]: {}\n", j, f.as_str().unwrap_or(""));
                    }
                    s += &format!("            name: {}\n            granularity: {}\n", b["name"].as_str().unwrap_or(""), b["granularity"]);
                }
                continue;
            }
            if let Some(list) = val.as_array().filter(|l| l.iter().all(Value::is_object)) {
                // a list of objects (VMDK extents) as qemu-img prints one
                s += &format!("    {}:\n", k.replace('-', " "));
                for (i, item) in list.iter().enumerate() {
                    s += &format!("        [{}]:\n", i);
                    for (ik, iv) in item.as_object().into_iter().flatten() {
                        let iv = match iv {
                            Value::String(x) => x.clone(),
                            x => x.to_string(),
                        };
                        s += &format!("            {}: {}\n", ik.replace('-', " "), iv);
                    }
                }
                continue;
            }
            let val = match val {
                Value::String(x) => x.clone(),
                x => x.to_string(),
            };
            s += &format!("    {}: {}\n", k.replace('-', " "), val);
        }
    }
    if let Some((key, lines)) = &r.human_section {
        s += &format!("{}:\n", key.to_uppercase());
        for line in lines {
            s += &format!("    {}\n", line);
        }
    }
    if img.layers.len() > 1 {
        s += "Chain:\n";
        for (i, l) in img.layers.iter().enumerate() {
            s += &format!(
                "    [{}] {} ({}, {})\n",
                i,
                l.name,
                l.layer.format().qemu_name(),
                human_size(l.layer.virtual_size())
            );
        }
    }
    let warnings = r.vdiskview.as_ref().map(|x| x.warnings.as_slice()).unwrap_or_default();
    if !warnings.is_empty() {
        s += "Warnings:\n";
        for w in warnings {
            s += &format!("    {}\n", w);
        }
    }
    s
}

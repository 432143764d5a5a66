//! `vdiskview where`: guest offset → layer, host offset, block/cluster; or, with `--file`,
//! host offset → structure, field and the guest offset it serves.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::{offset, open, Output};
use crate::image::{Image, OpenOptions};

/// Where a guest byte lives.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestWhere {
    #[serde(rename = "virtual")]
    pub virtual_: u64,
    pub layer: usize,
    pub filename: String,
    pub format: &'static str,
    pub kind: &'static str,
    pub host_offset: Option<u64>,
    pub host_file: Option<String>,
    pub block: Option<u64>,
    pub cluster: Option<u64>,
    pub offset_in_unit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_size: Option<u64>,
}

/// What a byte of the image file is.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostWhere {
    pub host_offset: u64,
    pub filename: String,
    pub structure: String,
    pub name: String,
    pub start: u64,
    pub length: u64,
    pub field: Option<String>,
    pub value: Option<String>,
    #[serde(rename = "virtual")]
    pub virtual_: Option<u64>,
}

pub fn run(path: &Path, opts: &OpenOptions, off: &str, file: bool, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let off = offset(off)?;
    if file {
        let w = host_where(&img, off)?;
        match output {
            Output::Json => writeln!(out, "{}", serde_json::to_string(&w)?)?,
            Output::Human => write!(out, "{}", host_human(&w))?,
        }
    } else {
        let w = guest_where(&img, off)?;
        match output {
            Output::Json => writeln!(out, "{}", serde_json::to_string(&w)?)?,
            Output::Human => write!(out, "{}", guest_human(&w))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn guest_where(img: &Image, virt: u64) -> Result<GuestWhere> {
    let e = img.resolve(virt, 1)?;
    let li = &img.layers[e.depth];
    let host = e.host_at(0);
    let unit = li.layer.cluster_size();
    let index = unit.map(|u| virt / u);
    let (block, cluster) = if li.layer.unit_is_block() { (index, None) } else { (None, index) };
    let (compressed_offset, compressed_size) = match e.kind {
        crate::image::LayerKind::Compressed { host, csize, .. } => (Some(host), Some(csize)),
        _ => (None, None),
    };
    Ok(GuestWhere {
        virtual_: virt,
        layer: e.depth,
        filename: li.name.clone(),
        format: li.layer.format().qemu_name(),
        kind: e.kind_name(),
        host_offset: host.map(|(_, h)| h),
        host_file: host.and_then(|(id, _)| li.layer.host(id)).map(|f| f.name.clone()),
        block,
        cluster,
        offset_in_unit: unit.map(|u| virt % u),
        compressed_offset,
        compressed_size,
    })
}

pub fn host_where(img: &Image, off: u64) -> Result<HostWhere> {
    let r = img.locate_host(0, off)?;
    let field = r.field_at(off);
    Ok(HostWhere {
        host_offset: off,
        filename: img.layers[0].name.clone(),
        structure: r.structure.to_string(),
        name: r.name.to_string(),
        start: r.start,
        length: r.len,
        field: field.map(|f| f.name.clone()),
        value: field.map(|f| f.value.clone()),
        virtual_: r.virt.map(|v| v + (off - r.start)),
    })
}

fn host_human(w: &HostWhere) -> String {
    let mut s = String::new();
    s += &format!("file offset 0x{:x} in {}\n", w.host_offset, w.filename);
    s += &format!("  structure: {} ({}, 0x{:x}-0x{:x})\n", w.name, w.structure, w.start, (w.start + w.length).saturating_sub(1));
    if let Some(f) = &w.field {
        s += &format!("  field: {} = {}\n", f, w.value.as_deref().unwrap_or(""));
    }
    if let Some(g) = w.virtual_ {
        s += &format!("  guest offset: 0x{:x}\n", g);
    }
    s
}

fn guest_human(w: &GuestWhere) -> String {
    let mut s = String::new();
    s += &format!("guest offset 0x{:x}\n", w.virtual_);
    s += &format!("  layer {}: {} ({})\n", w.layer, w.filename, w.format);
    s += &format!("  kind: {}\n", w.kind);
    if let Some(h) = w.host_offset {
        s += &format!("  host offset: 0x{:x} in {}\n", h, w.host_file.as_deref().unwrap_or(""));
    }
    if let (Some(h), Some(n)) = (w.compressed_offset, w.compressed_size) {
        s += &format!("  compressed data: 0x{:x} ({} bytes)\n", h, n);
    }
    let within = w.offset_in_unit.map(|x| format!("0x{:x}", x)).unwrap_or_default();
    if let Some(b) = w.block {
        s += &format!("  block: {} (+{})\n", b, within);
    }
    if let Some(c) = w.cluster {
        s += &format!("  cluster: {} (+{})\n", c, within);
    }
    s
}

//! `vdiskview where`: guest offset → layer, host offset, block/cluster; or, with `--file`,
//! host offset → structure, field and the guest offset it serves.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use super::{offset, open, Output};
use crate::image::chain::Layer;
use crate::image::{Image, OpenOptions};

pub fn run(path: &Path, opts: &OpenOptions, off: &str, file: bool, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let off = offset(off)?;
    let v = if file { host_json(&img, off)? } else { guest_json(&img, off)? };
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string(&v)?)?,
        Output::Human => write!(out, "{}", human(&v, file))?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn guest_json(img: &Image, virt: u64) -> Result<Value> {
    let e = img.resolve(virt, 1)?;
    let li = &img.layers[e.depth];
    let host = e.host_at(0);
    let (block, cluster, unit) = match &li.layer {
        Layer::Vhd(v) => (v.block_size().map(|bs| virt / bs), None, v.block_size()),
        Layer::Qcow2(q) => (None, Some(virt / q.cluster_size()), Some(q.cluster_size())),
        Layer::Raw(_) => (None, None, None),
    };
    let host_file = host.and_then(|(id, _)| li.layer.host(id)).map(|f| f.name.clone());
    let mut v = json!({
        "virtual": virt,
        "layer": e.depth,
        "filename": li.name,
        "format": li.layer.format().qemu_name(),
        "kind": e.kind_name(),
        "host-offset": host.map(|(_, h)| h),
        "host-file": host_file,
        "block": block,
        "cluster": cluster,
        "offset-in-unit": unit.map(|u| virt % u),
    });
    if let crate::image::LayerKind::Compressed { host, csize, .. } = e.kind {
        v["compressed-offset"] = json!(host);
        v["compressed-size"] = json!(csize);
    }
    Ok(v)
}

pub fn host_json(img: &Image, off: u64) -> Result<Value> {
    let r = img.locate_host(0, off)?;
    let field = r.field_at(off);
    let virt = r.virt.map(|v| v + (off - r.start));
    Ok(json!({
        "host-offset": off,
        "filename": img.layers[0].name,
        "structure": r.structure,
        "name": r.name,
        "start": r.start,
        "length": r.len,
        "field": field.map(|f| f.name.clone()),
        "value": field.map(|f| f.value.clone()),
        "virtual": virt,
    }))
}

fn human(v: &Value, file: bool) -> String {
    let hex = |k: &str| v[k].as_u64().map(|x| format!("0x{:x}", x));
    let mut s = String::new();
    if file {
        s += &format!("file offset {} in {}\n", hex("host-offset").unwrap_or_default(), v["filename"].as_str().unwrap_or(""));
        s += &format!(
            "  structure: {} ({}, 0x{:x}-0x{:x})\n",
            v["name"].as_str().unwrap_or(""),
            v["structure"].as_str().unwrap_or(""),
            v["start"].as_u64().unwrap_or(0),
            v["start"].as_u64().unwrap_or(0) + v["length"].as_u64().unwrap_or(1) - 1
        );
        if let Some(f) = v["field"].as_str() {
            s += &format!("  field: {} = {}\n", f, v["value"].as_str().unwrap_or(""));
        }
        if let Some(g) = hex("virtual") {
            s += &format!("  guest offset: {}\n", g);
        }
    } else {
        s += &format!("guest offset {}\n", hex("virtual").unwrap_or_default());
        s += &format!(
            "  layer {}: {} ({})\n",
            v["layer"],
            v["filename"].as_str().unwrap_or(""),
            v["format"].as_str().unwrap_or("")
        );
        s += &format!("  kind: {}\n", v["kind"].as_str().unwrap_or(""));
        if let Some(h) = hex("host-offset") {
            s += &format!("  host offset: {} in {}\n", h, v["host-file"].as_str().unwrap_or(""));
        }
        if let Some(h) = hex("compressed-offset") {
            s += &format!("  compressed data: {} ({} bytes)\n", h, v["compressed-size"]);
        }
        let within = hex("offset-in-unit").unwrap_or_default();
        if let Some(b) = v["block"].as_u64() {
            s += &format!("  block: {} (+{})\n", b, within);
        }
        if let Some(c) = v["cluster"].as_u64() {
            s += &format!("  cluster: {} (+{})\n", c, within);
        }
    }
    s
}

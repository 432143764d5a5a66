//! `vdiskview info`: qemu-img info's keys and values, plus what only vdiskview knows (VHD
//! fields, the whole chain, warnings) under a key of its own.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::Output;
use crate::image::region::human_size;
use crate::image::{self, combine_path, Image, OpenOptions};

pub fn run(path: &Path, opts: &OpenOptions, output: Output) -> Result<ExitCode> {
    let opts = OpenOptions { lenient: true, ..opts.clone() };
    let img = image::open(path, &opts)?;
    for w in &img.warnings {
        eprintln!("vdiskview: warning: {}", w);
    }
    if let Some(e) = &img.chain_error {
        eprintln!("vdiskview: warning: {}", e);
    }
    let v = info_json(&img);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Human => print!("{}", human(&img, &v)),
    }
    Ok(ExitCode::SUCCESS)
}

/// qemu-img info's JSON for layer `i` of the chain.
pub fn layer_json(img: &Image, i: usize) -> Map<String, Value> {
    let li = &img.layers[i];
    let l = &li.layer;
    let f = l.file();
    let mut m = Map::new();
    m.insert(
        "children".into(),
        json!([{ "name": "file", "info": {
            "children": [],
            // qemu's protocol layer counts whole sectors
            "virtual-size": f.len().next_multiple_of(512),
            "filename": f.name,
            "format": "file",
            "actual-size": f.allocated_size(),
            "format-specific": { "type": "file", "data": {} },
            "dirty-flag": false,
        }}]),
    );
    let k = l.info(&li.name);
    // qemu prints internal snapshots right after the children
    if let Some(sns) = k.snapshots {
        m.insert("snapshots".into(), sns);
    }
    m.insert("virtual-size".into(), json!(l.virtual_size()));
    m.insert("filename".into(), json!(li.name));
    if let Some(cs) = l.cluster_size() {
        m.insert("cluster-size".into(), json!(cs));
    }
    m.insert("format".into(), json!(l.format().qemu_name()));
    m.insert("actual-size".into(), json!(f.allocated_size()));
    if k.encrypted {
        m.insert("encrypted".into(), json!(true));
    }
    if let Some(fs) = k.format_specific {
        m.insert("format-specific".into(), fs);
    }
    if let Some(b) = &k.backing_filename {
        m.insert("backing-filename".into(), json!(b));
        // the file the chain opened (a VHD's parent is found through its locators)
        let full = if k.backing_full_from_chain {
            img.layers.get(i + 1).map(|next| next.name.clone())
        } else {
            Some(combine_path(&li.name, b))
        };
        if let Some(full) = full {
            m.insert("full-backing-filename".into(), json!(full));
        }
        if let Some(bf) = &k.backing_format {
            m.insert("backing-filename-format".into(), json!(bf));
        }
    }
    let dirty = k.dirty;
    m.insert("dirty-flag".into(), json!(dirty));
    m
}

/// Metadata qemu would refuse (it would not open the image), of every layer.
fn metadata_warnings(img: &Image) -> Vec<String> {
    img.layers.iter().flat_map(|li| li.layer.info(&li.name).problems).collect()
}

pub fn info_json(img: &Image) -> Value {
    let mut top = layer_json(img, 0);
    let layers: Vec<Value> = (0..img.layers.len())
        .map(|i| {
            let li = &img.layers[i];
            let mut m = Map::new();
            m.insert("filename".into(), json!(li.name));
            m.insert("format".into(), json!(li.layer.format().qemu_name()));
            m.insert("virtual-size".into(), json!(li.layer.virtual_size()));
            if let Some((key, v)) = li.layer.info(&li.name).extra {
                m.insert(key.into(), v);
            }
            Value::Object(m)
        })
        .collect();
    let mut extra = Map::new();
    extra.insert("layers".into(), json!(layers));
    let mut warnings = img.warnings.clone();
    if let Some(e) = &img.chain_error {
        warnings.push(e.clone());
    }
    warnings.extend(metadata_warnings(img));
    extra.insert("warnings".into(), json!(warnings));
    top.insert("vdiskview".into(), Value::Object(extra));
    Value::Object(top)
}

fn human(img: &Image, v: &Value) -> String {
    let mut s = String::new();
    let g = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let vs = g("virtual-size").as_u64().unwrap_or(0);
    s += &format!("image: {}\n", img.layers[0].name);
    s += &format!("file format: {}\n", img.format().qemu_name());
    s += &format!("virtual size: {} ({} bytes)\n", human_size(vs), vs);
    s += &format!("disk size: {}\n", human_size(g("actual-size").as_u64().unwrap_or(0)));
    if let Some(cs) = g("cluster-size").as_u64() {
        s += &format!("cluster_size: {}\n", cs);
    }
    if let Some(b) = g("backing-filename").as_str() {
        match g("full-backing-filename").as_str() {
            Some(f) if f != b => s += &format!("backing file: {} (actual path: {})\n", b, f),
            _ => s += &format!("backing file: {}\n", b),
        }
    }
    if let Some(f) = g("backing-filename-format").as_str() {
        s += &format!("backing file format: {}\n", f);
    }
    if g("encrypted").as_bool() == Some(true) {
        s += "encrypted: yes\n";
    }
    let top = img.top().info(&img.layers[0].name);
    s += &top.human_after_header;
    if let Some(d) = v.pointer("/format-specific/data").and_then(|d| d.as_object()) {
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
            let val = match val {
                Value::String(x) => x.clone(),
                x => x.to_string(),
            };
            s += &format!("    {}: {}\n", k.replace('-', " "), val);
        }
    }
    if let Some((key, _)) = &top.extra {
        s += &format!("{}:\n", key.to_uppercase());
        for line in &top.extra_human {
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
    let warnings = v.pointer("/vdiskview/warnings").and_then(|w| w.as_array()).cloned().unwrap_or_default();
    if !warnings.is_empty() {
        s += "Warnings:\n";
        for w in warnings {
            s += &format!("    {}\n", w.as_str().unwrap_or(""));
        }
    }
    s
}

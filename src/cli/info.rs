//! `vdiskview info`: qemu-img info's keys and values, plus what only vdiskview knows (VHD
//! fields, the whole chain, warnings) under a key of its own.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::Output;
use crate::image::chain::Layer;
use crate::image::qcow2::header::{AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
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
    let v = info_json(&img);
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        Output::Human => write!(out, "{}", human(&img, &v))?,
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
    if let Layer::Qcow2(q) = l {
        // qemu prints internal snapshots right after the children
        if let Ok(sns) = q.snapshots() {
            if !sns.is_empty() {
                m.insert("snapshots".into(), Value::Array(sns.iter().map(snapshot_json).collect()));
            }
        }
    }
    m.insert("virtual-size".into(), json!(l.virtual_size()));
    m.insert("filename".into(), json!(li.name));
    if let Some(cs) = l.cluster_size() {
        m.insert("cluster-size".into(), json!(cs));
    }
    m.insert("format".into(), json!(l.format().qemu_name()));
    m.insert("actual-size".into(), json!(f.allocated_size()));
    let mut dirty = false;
    match l {
        Layer::Qcow2(q) => {
            let h = &q.header;
            dirty = h.incompatible & INCOMPAT_DIRTY != 0;
            if q.encrypted() {
                m.insert("encrypted".into(), json!(true));
            }
            let mut d = Map::new();
            if h.version == 2 {
                d.insert("compat".into(), json!("0.10"));
                d.insert("compression-type".into(), json!(h.compression_name()));
                d.insert("refcount-bits".into(), json!(h.refcount_bits()));
            } else {
                d.insert("compat".into(), json!("1.1"));
                d.insert("compression-type".into(), json!(h.compression_name()));
                d.insert("lazy-refcounts".into(), json!(h.compatible & COMPAT_LAZY_REFCOUNTS != 0));
                if let Ok(bms) = q.bitmaps() {
                    if !bms.is_empty() {
                        let list: Vec<Value> = bms
                            .iter()
                            .map(|b| json!({"flags": b.flag_names(), "name": b.name, "granularity": b.granularity()}))
                            .collect();
                        d.insert("bitmaps".into(), json!(list));
                    }
                }
                d.insert("refcount-bits".into(), json!(h.refcount_bits()));
                if let Some(df) = &h.data_file {
                    d.insert("data-file".into(), json!(df));
                    d.insert("data-file-raw".into(), json!(h.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0));
                }
                d.insert("corrupt".into(), json!(h.incompatible & INCOMPAT_CORRUPT != 0));
                d.insert("extended-l2".into(), json!(h.extended_l2()));
            }
            m.insert("format-specific".into(), json!({ "type": "qcow2", "data": d }));
            if let Some(b) = &h.backing_file {
                m.insert("backing-filename".into(), json!(b));
                m.insert("full-backing-filename".into(), json!(combine_path(&li.name, b)));
                if let Some(bf) = &h.backing_format {
                    m.insert("backing-filename-format".into(), json!(bf));
                }
            }
        }
        Layer::Vhd(v) => {
            // qemu does not follow a differencing disk's parent; we do, and say which it is
            if let Some(p) = v.parent_ref() {
                m.insert("backing-filename".into(), json!(p.name));
                if let Some(next) = img.layers.get(i + 1) {
                    m.insert("full-backing-filename".into(), json!(next.name));
                }
                m.insert("backing-filename-format".into(), json!("vpc"));
            }
        }
        Layer::Raw(_) => {}
    }
    m.insert("dirty-flag".into(), json!(dirty));
    m
}

fn vhd_json(v: &crate::image::vhd::Vhd) -> Value {
    let f = &v.footer;
    let mut m = Map::new();
    m.insert("disk-type".into(), json!(f.disk_type_name()));
    m.insert("current-size".into(), json!(f.current_size));
    m.insert("original-size".into(), json!(f.original_size));
    m.insert("geometry".into(), json!({"cylinders": f.cylinders, "heads": f.heads, "sectors": f.sectors}));
    m.insert("creator-application".into(), json!(crate::image::region::ascii(&f.creator_app)));
    m.insert("unique-id".into(), json!(crate::image::vhd::footer::uuid(&f.unique_id)));
    m.insert("footer-checksum-ok".into(), json!(f.checksum_ok()));
    if let Some(h) = &v.header {
        m.insert("block-size".into(), json!(h.block_size));
        m.insert("max-table-entries".into(), json!(h.max_table_entries));
        m.insert("table-offset".into(), json!(h.table_offset));
        m.insert("header-checksum-ok".into(), json!(h.checksum_ok()));
        let allocated = v.bat.iter().take(v.block_count() as usize).filter(|&&e| e != crate::image::vhd::BAT_UNUSED).count();
        m.insert("allocated-blocks".into(), json!(allocated));
        if v.is_differencing() {
            m.insert("parent-name".into(), json!(h.parent_name));
            m.insert("parent-unique-id".into(), json!(crate::image::vhd::footer::uuid(&h.parent_unique_id)));
            let locs: Vec<Value> = h
                .locators
                .iter()
                .map(|l| json!({"platform": crate::image::region::ascii(&l.code), "path": l.path, "offset": l.data_offset, "length": l.data_len}))
                .collect();
            m.insert("parent-locators".into(), json!(locs));
        }
    }
    Value::Object(m)
}

/// One entry of qemu-img info's `snapshots`, with qemu's keys (`icount` only when recorded).
pub fn snapshot_json(sn: &crate::image::qcow2::snapshot::Snapshot) -> Value {
    let mut m = Map::new();
    if let Some(ic) = sn.icount {
        m.insert("icount".into(), json!(ic));
    }
    m.insert("vm-clock-nsec".into(), json!(sn.vm_clock_subsec()));
    m.insert("name".into(), json!(sn.name));
    m.insert("date-sec".into(), json!(sn.date_sec));
    m.insert("date-nsec".into(), json!(sn.date_nsec));
    m.insert("vm-clock-sec".into(), json!(sn.vm_clock_sec()));
    m.insert("id".into(), json!(sn.id));
    m.insert("vm-state-size".into(), json!(sn.vm_state_size));
    Value::Object(m)
}

/// Snapshot and bitmap metadata qemu would refuse (it would not open the image).
fn metadata_warnings(img: &Image) -> Vec<String> {
    let mut w = Vec::new();
    for li in &img.layers {
        if let Layer::Qcow2(q) = &li.layer {
            if let Err(e) = q.snapshot_table() {
                w.push(format!("snapshot table: {}", e));
            }
            if let Err(e) = q.bitmaps() {
                w.push(format!("bitmaps: {}", e));
            }
        }
    }
    w
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
            if let Layer::Vhd(v) = &li.layer {
                m.insert("vhd".into(), vhd_json(v));
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
    if let Layer::Qcow2(q) = img.top() {
        if let Ok(sns) = q.snapshots() {
            if !sns.is_empty() {
                s += "Snapshot list:\n";
                s += &snapshot_table_text(&sns);
            }
        }
    }
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
    if let Layer::Vhd(vh) = img.top() {
        s += "VHD:\n";
        for f in vh.footer.fields() {
            if !f.value.is_empty() {
                s += &format!("    {}: {}\n", f.name, f.value);
            }
        }
        if let Some(h) = &vh.header {
            for f in h.fields() {
                if f.value.is_empty() || f.value == "unused" {
                    continue;
                }
                if !vh.is_differencing() && f.name.starts_with("Parent") {
                    continue;
                }
                s += &format!("    {}: {}\n", f.name, f.value);
            }
            let allocated = vh.bat.iter().take(vh.block_count() as usize).filter(|&&e| e != crate::image::vhd::BAT_UNUSED).count();
            s += &format!("    Allocated blocks: {} of {}\n", allocated, vh.block_count());
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

/// qemu-img's snapshot list (dates in UTC, where qemu uses local time).
pub fn snapshot_table_text(sns: &[crate::image::qcow2::snapshot::Snapshot]) -> String {
    let mut s = format!("{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n", "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT");
    for sn in sns {
        let secs = sn.vm_clock_sec();
        let clock = format!("{:04}:{:02}:{:02}.{:03}", secs / 3600, (secs / 60) % 60, secs % 60, sn.vm_clock_subsec() / 1_000_000);
        s += &format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            sn.id,
            sn.name,
            human_size(sn.vm_state_size),
            crate::image::qcow2::snapshot::utc(sn.date_sec as i64),
            clock,
            sn.icount.map(|i| i.to_string()).unwrap_or_default()
        );
    }
    s
}

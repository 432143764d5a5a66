//! `vdiskview ls`, `cat` and `locate`: files of a filesystem inside the guest disk (any the
//! core's filesystem interface reads: ext2/3/4, FAT, NTFS, btrfs), read through the image model; `locate` says where each byte of a file is, on the guest
//! disk and in the host files of the chain.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::Result;
use serde_json::{json, Value};

use super::{open, Output};
use crate::guest::fs::{absolute, EntryInfo, GuestFs, Located};
use crate::guest;
use crate::image::OpenOptions;

/// Open the image and the filesystem on the chosen partition (`--partition`; 0 = the whole
/// disk) or on the first partition that holds one vdiskview reads.
pub fn open_fs(path: &Path, opts: &OpenOptions, partition: Option<u32>) -> Result<GuestFs> {
    let img = Rc::new(open(path, opts)?);
    Ok(guest::open_fs(img, partition)?)
}

fn warn(fs: &GuestFs) {
    for w in &fs.warnings() {
        crate::warnln!("vdiskview: warning: {}", w);
    }
}

pub fn ls(path: &Path, opts: &OpenOptions, fspath: &str, partition: Option<u32>, long: bool, w: &mut dyn Write) -> Result<ExitCode> {
    let fs = open_fs(path, opts, partition)?;
    let me = fs.stat(fspath)?;
    // a directory (or a symlink to one) is listed; anything else is shown itself, as ls does
    let entries = if me.is_dir() || (me.type_char == 'l' && fs.read_dir(fspath).is_ok()) {
        fs.read_dir(fspath)?
    } else {
        vec![EntryInfo { name: absolute(fspath), ..me }]
    };
    let mut out = String::new();
    if long {
        let size_w = entries.iter().map(|e| e.size.to_string().len()).max().unwrap_or(1);
        let uid_w = entries.iter().map(|e| e.uid.to_string().len()).max().unwrap_or(1);
        let gid_w = entries.iter().map(|e| e.gid.to_string().len()).max().unwrap_or(1);
        for e in &entries {
            out += &format!(
                "{} {:>uw$} {:>gw$} {:>sw$} {} {}",
                e.mode_string(),
                e.uid,
                e.gid,
                e.size,
                format_time(e.mtime),
                e.name,
                uw = uid_w,
                gw = gid_w,
                sw = size_w
            );
            if let Some(t) = &e.link_target {
                out += &format!(" -> {}", t);
            }
            out.push('\n');
            // named data streams (NTFS): one line each, as `cat` names them
            for (sname, ssize) in &e.streams {
                out += &format!(
                    "{} {:>uw$} {:>gw$} {:>sw$} {} {}:{}\n",
                    e.mode_string(),
                    e.uid,
                    e.gid,
                    ssize,
                    format_time(e.mtime),
                    e.name,
                    sname,
                    uw = uid_w,
                    gw = gid_w,
                    sw = size_w
                );
            }
        }
    } else {
        for e in &entries {
            out += &e.name;
            out.push('\n');
        }
    }
    w.write_all(out.as_bytes())?;
    warn(&fs);
    Ok(ExitCode::SUCCESS)
}

pub fn cat(path: &Path, opts: &OpenOptions, fspath: &str, partition: Option<u32>, out: &mut dyn Write) -> Result<ExitCode> {
    let fs = open_fs(path, opts, partition)?;
    // a closed pipe (GuestError::Write) ends the command quietly in the dispatcher
    fs.copy_to(fspath, out)?;
    out.flush()?;
    warn(&fs);
    Ok(ExitCode::SUCCESS)
}

pub fn locate(path: &Path, opts: &OpenOptions, fspath: &str, partition: Option<u32>, output: Output, out: &mut dyn Write) -> Result<ExitCode> {
    let fs = open_fs(path, opts, partition)?;
    let loc = fs.locate(fspath)?;
    let v = locate_json(&fs, &loc);
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&v)? + "\n",
        Output::Human => locate_human(&v),
    };
    out.write_all(text.as_bytes())?;
    warn(&fs);
    Ok(ExitCode::SUCCESS)
}

pub fn locate_json(fs: &GuestFs, loc: &Located) -> Value {
    let img = &fs.image;
    let extents: Vec<Value> = loc
        .extents
        .iter()
        .map(|x| {
            let host = x.host();
            let layer = x.image.map(|e| e.depth);
            json!({
                "logical": x.logical,
                "length": x.len,
                "virtual": x.virt,
                "host-offset": host.map(|(_, _, h)| h),
                "layer": layer,
                "kind": x.kind_name(),
                "filename": layer.map(|d| img.layers[d].name.clone()),
                "host-file": host.and_then(|(d, id, _)| img.layers[d].layer.host(id).map(|f| f.name.clone())),
            })
        })
        .collect();
    json!({
        "path": loc.path,
        "inode": loc.inode,
        "size": loc.size,
        "partition": fs.volume.partition,
        "filesystem": fs.kind().name(),
        "volume-offset": fs.volume.start,
        "inode-kind": loc.inode_kind,
        "block-size": fs.block_size(),
        "inode-virtual": loc.inode_offset.map(|o| fs.volume.start + o),
        "notes": loc.notes,
        "extents": extents,
    })
}

fn locate_human(v: &Value) -> String {
    let hex = |x: &Value| x.as_u64().map(|n| format!("0x{:x}", n)).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{}: {} {}, {} bytes, {} on {} (guest offset 0x{:x}), block size {}\n",
        v["path"].as_str().unwrap_or(""),
        v["inode-kind"].as_str().unwrap_or("inode"),
        v["inode"],
        v["size"],
        v["filesystem"].as_str().unwrap_or(""),
        match v["partition"].as_u64() {
            Some(n) => format!("partition {}", n),
            None => "the whole disk".into(),
        },
        v["volume-offset"].as_u64().unwrap_or(0),
        v["block-size"],
    );
    for n in v["notes"].as_array().into_iter().flatten() {
        s += &format!("{}\n", n.as_str().unwrap_or(""));
    }
    let ext = v["extents"].as_array().cloned().unwrap_or_default();
    if ext.is_empty() {
        s += "no data blocks\n";
        return s;
    }
    let mut rows = vec![["logical", "length", "virtual", "host-offset", "layer", "kind", "file"].map(String::from).to_vec()];
    for e in &ext {
        rows.push(vec![
            hex(&e["logical"]),
            hex(&e["length"]),
            hex(&e["virtual"]),
            hex(&e["host-offset"]),
            e["layer"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            e["kind"].as_str().unwrap_or("").to_string(),
            e["host-file"].as_str().or(e["filename"].as_str()).unwrap_or("").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, cell)| format!("{:<w$}", cell, w = widths[c])).collect();
        s += line.join("  ").trim_end();
        s.push('\n');
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for seconds since 1970.
pub fn format_time(secs: i64) -> String {
    crate::image::region::utc(secs)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(951782400), "2000-02-29 00:00:00");
        assert_eq!(format_time(1700000000), "2023-11-14 22:13:20");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59");
    }
}

//! `vdiskview partitions`: the guest disk's partition table (MBR primary/extended/logical,
//! GPT with its header and entry-array CRC verdicts) and the filesystem found in each.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use super::{open, Output};
use crate::guest::partitions::{GptHeader, PartitionTable};
use crate::guest::{read_table, Partition};
use crate::image::region::human_size;
use crate::image::OpenOptions;

pub fn run(path: &Path, opts: &OpenOptions, output: Output, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let img = open(path, opts)?;
    let t = read_table(&img)?;
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&table_json(&t))?)?,
        Output::Human => {
            write!(out, "{}", human(&t))?;
            for w in &t.warnings {
                crate::warnln!("vdiskview: warning: {}", w);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn header_json(h: &GptHeader, ss: u64) -> Value {
    json!({
        "lba": h.offset / ss,
        "offset": h.offset,
        "revision": format!("{}.{}", h.revision >> 16, h.revision & 0xffff),
        "header-size": h.header_size,
        "header-crc": format!("0x{:08x}", h.header_crc),
        "header-crc-ok": h.header_crc_ok,
        "my-lba": h.my_lba,
        "alternate-lba": h.alternate_lba,
        "first-usable-lba": h.first_usable,
        "last-usable-lba": h.last_usable,
        "disk-guid": h.disk_guid.to_string(),
        "entries-lba": h.entries_lba,
        "entries": h.num_entries,
        "entry-size": h.entry_size,
        "entries-crc": format!("0x{:08x}", h.entries_crc),
        "entries-crc-ok": h.entries_crc_ok,
        "valid": h.valid(),
        "problem": h.problem,
    })
}

pub fn partition_json(p: &Partition) -> Value {
    json!({
        "index": p.index,
        "scheme": p.scheme.name(),
        "kind": p.kind.name(),
        "type": p.type_id.id(),
        "type-name": p.type_id.name(),
        "start": p.start,
        "size": p.size,
        "name": p.name,
        "guid": p.guid.map(|g| g.to_string()),
        "bootable": p.bootable,
        "attributes": p.attributes,
        "filesystem": p.fs.as_ref().map(|f| f.kind.name()),
        "label": p.fs.as_ref().and_then(|f| f.label.clone()),
        "uuid": p.fs.as_ref().and_then(|f| f.uuid.clone()),
        "entry-offset": p.entry_offset,
        "problems": p.problems,
    })
}

pub fn table_json(t: &PartitionTable) -> Value {
    json!({
        "disk-size": t.disk_size,
        "scheme": t.scheme.map(|s| s.name()),
        "mbr": t.mbr.as_ref().map(|m| json!({
            "disk-signature": format!("0x{:08x}", m.disk_signature),
            "protective": m.protective,
        })),
        "gpt": t.gpt.as_ref().map(|g| json!({
            "sector-size": g.sector_size,
            "used": g.used,
            "primary": g.primary.as_ref().map(|h| header_json(h, g.sector_size)),
            "backup": g.backup.as_ref().map(|h| header_json(h, g.sector_size)),
        })),
        "partitions": t.partitions.iter().map(partition_json).collect::<Vec<_>>(),
        "whole-disk-filesystem": t.whole_disk.as_ref().map(|f| json!({
            "filesystem": f.kind.name(),
            "label": f.label,
            "uuid": f.uuid,
        })),
        "warnings": t.warnings,
    })
}

fn verdict(h: &GptHeader, ss: u64) -> String {
    let ok = |b: bool| if b { "ok" } else { "BAD" };
    let mut s = format!(
        "LBA {} (0x{:x}): header CRC {}, entries CRC {}",
        h.offset / ss,
        h.offset,
        ok(h.header_crc_ok),
        match h.entries_crc_ok {
            Some(b) => ok(b),
            None => "unreadable",
        }
    );
    s += &format!(", {} entries of {} bytes at LBA {}", h.num_entries, h.entry_size, h.entries_lba);
    if let Some(p) = &h.problem {
        s += &format!(" — {}", p);
    }
    s
}

fn human(t: &PartitionTable) -> String {
    let mut s = String::new();
    let scheme = match (&t.scheme, &t.mbr) {
        (Some(crate::guest::Scheme::Gpt), _) => "GPT".to_string(),
        (Some(crate::guest::Scheme::Mbr), Some(m)) => format!("MBR, disk signature 0x{:08x}", m.disk_signature),
        (Some(crate::guest::Scheme::Mbr), None) => "MBR".to_string(),
        (None, _) => "no partition table".to_string(),
    };
    s += &format!("Disk: {} bytes ({}), {}\n", t.disk_size, human_size(t.disk_size), scheme);
    if let Some(g) = &t.gpt {
        if let Some(p) = &g.primary {
            s += &format!("GPT disk GUID {}, sector size {}, partitions from the {} header\n", p.disk_guid, g.sector_size, g.used);
            s += &format!("  primary header at {}\n", verdict(p, g.sector_size));
        }
        match &g.backup {
            Some(b) => s += &format!("  backup header at {}\n", verdict(b, g.sector_size)),
            None => s += "  backup header: not found\n",
        }
        if let Some(m) = &t.mbr {
            s += &format!("  protective MBR: {}\n", if m.protective { "yes" } else { "no (type 0xEE missing)" });
        }
    }
    if let Some(f) = &t.whole_disk {
        s += &format!(
            "The whole disk holds a filesystem: {}{}\n",
            f.kind.name(),
            f.label.as_ref().map(|l| format!(" (label {})", l)).unwrap_or_default()
        );
    }
    if t.partitions.is_empty() {
        s += "No partitions.\n";
        return s;
    }
    let header = ["#", "kind", "type", "start", "size", "", "name", "filesystem", "label"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for p in &t.partitions {
        let mut kind = p.kind.name().to_string();
        if p.bootable {
            kind += "*";
        }
        rows.push(vec![
            p.index.to_string(),
            kind,
            format!("{} {}", p.type_id.id(), p.type_id.name()),
            p.start.to_string(),
            p.size.to_string(),
            format!("({})", human_size(p.size)),
            p.name.clone().unwrap_or_default(),
            p.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "-".into()),
            p.fs.as_ref().and_then(|f| f.label.clone()).unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let right = [true, false, false, true, true, false, false, false, false];
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if right[c] {
                line += &" ".repeat(pad);
                line += cell;
            } else {
                line += cell;
                line += &" ".repeat(pad);
            }
            line += "  ";
        }
        s += line.trim_end();
        s += "\n";
    }
    for p in &t.partitions {
        for pr in &p.problems {
            s += &format!("partition {}: {}\n", p.index, pr);
        }
    }
    s
}

//! Internal snapshots: the snapshot table (id, name, sizes, dates, VM clock, icount, extra
//! data) and each snapshot's L1 table, read as qemu's qcow2_read_snapshots reads them.

use crate::image::bytes::{be32, be64};
use super::cluster::L1E_OFFSET_MASK;
use super::Qcow2;
use crate::image::io::HostFile;
use crate::image::region::{Field, Region};
use crate::image::{Error, Result};

/// qemu's limits (QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS_SIZE,
/// QCOW_MAX_L1_SIZE).
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_EXTRA_DATA: u32 = 1024;
pub const MAX_TABLE_SIZE: u64 = 1024 * MAX_SNAPSHOTS as u64;
pub const MAX_L1_BYTES: u64 = 0x0200_0000;
/// The fixed part of a snapshot table entry.
pub const ENTRY_HEADER: u64 = 40;

/// One snapshot table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Position in the table (0-based).
    pub index: usize,
    /// File offset of the entry and its length in bytes (without the padding to 8).
    pub entry_offset: u64,
    pub entry_len: u64,
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    /// The VM state size: the 64-bit extra-data field when present, else the 32-bit one.
    pub vm_state_size: u64,
    /// The guest disk size when the snapshot was taken (extra data bytes 8-15), if recorded.
    pub disk_size: Option<u64>,
    /// The record/replay instruction count; `None` when absent or -1 (disabled).
    pub icount: Option<u64>,
    pub extra_data_size: u32,
    /// The extra data bytes (at most [`MAX_EXTRA_DATA`]).
    pub extra: Vec<u8>,
}

impl Snapshot {
    /// Seconds of VM clock, as qemu-img info's `vm-clock-sec`.
    pub fn vm_clock_sec(&self) -> u64 {
        self.vm_clock_nsec / 1_000_000_000
    }

    pub fn vm_clock_subsec(&self) -> u64 {
        self.vm_clock_nsec % 1_000_000_000
    }

    /// The L1 table's bytes in the file.
    pub fn l1_bytes(&self) -> u64 {
        self.l1_size as u64 * 8
    }

    /// The decoded fields of the entry, at their file offsets.
    pub fn fields(&self) -> Vec<Field> {
        let o = self.entry_offset;
        let p = format!("snapshot[{}].", self.index);
        let f = |off: u64, len: u64, name: &str, value: String| Field { off: o + off, len, name: format!("{}{}", p, name), value };
        let mut v = vec![
            f(0, 8, "l1_table_offset", format!("0x{:x}", self.l1_table_offset)),
            f(8, 4, "l1_size", self.l1_size.to_string()),
            f(12, 2, "id_str_size", self.id.len().to_string()),
            f(14, 2, "name_size", self.name.len().to_string()),
            f(16, 4, "date_sec", format!("{} ({})", self.date_sec, utc(self.date_sec as i64))),
            f(20, 4, "date_nsec", self.date_nsec.to_string()),
            f(24, 8, "vm_clock_nsec", self.vm_clock_nsec.to_string()),
            f(32, 4, "vm_state_size", (self.vm_state_size.min(u32::MAX as u64)).to_string()),
            f(36, 4, "extra_data_size", self.extra_data_size.to_string()),
        ];
        let e = ENTRY_HEADER;
        let x = self.extra.len() as u64;
        if x >= 8 {
            v.push(f(e, 8, "vm_state_size_large", self.vm_state_size.to_string()));
        }
        if x >= 16 {
            v.push(f(e + 8, 8, "disk_size", self.disk_size.unwrap_or(0).to_string()));
        }
        if x >= 24 {
            let ic = self.icount.map(|i| i.to_string()).unwrap_or_else(|| "-1 (disabled)".into());
            v.push(f(e + 16, 8, "icount", ic));
        }
        if x > 24 {
            v.push(f(e + 24, x - 24, "extra data (unknown)", String::new()));
        }
        let ids = e + self.extra_data_size as u64;
        v.push(f(ids, self.id.len() as u64, "id", self.id.clone()));
        v.push(f(ids + self.id.len() as u64, self.name.len() as u64, "name", self.name.clone()));
        v.retain(|f| f.len > 0);
        v
    }
}

/// The snapshot table as read: its entries and the bytes it spans (qemu's snapshots_size,
/// without padding after the last entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotTable {
    pub offset: u64,
    pub size: u64,
    pub snapshots: Vec<Snapshot>,
}


/// Read `nb` snapshot table entries at `offset`. Every entry must lie in the file; the
/// limits are qemu's, so a table qemu refuses is refused here too.
pub fn read_table(file: &HostFile, cluster_size: u64, offset: u64, nb: u32) -> Result<SnapshotTable> {
    if nb == 0 {
        return Ok(SnapshotTable { offset, size: 0, snapshots: Vec::new() });
    }
    let name = &file.name;
    if nb > MAX_SNAPSHOTS {
        return Err(Error::corrupt(format!("{}: snapshot table too large ({} snapshots, at most {})", name, nb, MAX_SNAPSHOTS)));
    }
    if !offset.is_multiple_of(cluster_size) || offset.checked_add(nb as u64 * ENTRY_HEADER).is_none() {
        return Err(Error::corrupt(format!("{}: snapshot table offset 0x{:x} invalid (not cluster aligned)", name, offset)));
    }
    let mut pos = offset;
    let mut snapshots = Vec::new();
    // what lies past the end of the file reads as zero, as qemu's reads do (a table cut
    // short has entries of zeros there; check and the write engine's validation say so)
    for i in 0..nb as usize {
        pos = pos.next_multiple_of(8);
        let entry_offset = pos;
        let mut h = [0u8; ENTRY_HEADER as usize];
        file.read_zero_fill(pos, &mut h)?;
        pos += ENTRY_HEADER;
        let extra_data_size = be32(&h, 36);
        if extra_data_size > MAX_EXTRA_DATA {
            return Err(Error::corrupt(format!(
                "{}: too much extra metadata in snapshot table entry {} ({} bytes, at most {})",
                name, i, extra_data_size, MAX_EXTRA_DATA
            )));
        }
        let mut extra = vec![0u8; extra_data_size as usize];
        file.read_zero_fill(pos, &mut extra)?;
        pos += extra_data_size as u64;
        let id_len = u16::from_be_bytes([h[12], h[13]]) as usize;
        let name_len = u16::from_be_bytes([h[14], h[15]]) as usize;
        let mut strings = vec![0u8; id_len + name_len];
        file.read_zero_fill(pos, &mut strings)?;
        pos += strings.len() as u64;
        let x = extra.len();
        let vm_state_size = if x >= 8 { be64(&extra, 0) } else { be32(&h, 32) as u64 };
        let disk_size = (x >= 16).then(|| be64(&extra, 8));
        let icount = if x >= 24 { Some(be64(&extra, 16)).filter(|&c| c != u64::MAX) } else { None };
        snapshots.push(Snapshot {
            index: i,
            entry_offset,
            entry_len: pos - entry_offset,
            l1_table_offset: be64(&h, 0),
            l1_size: be32(&h, 8),
            id: String::from_utf8_lossy(&strings[..id_len]).into_owned(),
            name: String::from_utf8_lossy(&strings[id_len..]).into_owned(),
            date_sec: be32(&h, 16),
            date_nsec: be32(&h, 20),
            vm_clock_nsec: be64(&h, 24),
            vm_state_size,
            disk_size,
            icount,
            extra_data_size,
            extra,
        });
        if pos - offset > MAX_TABLE_SIZE {
            return Err(Error::corrupt(format!("{}: snapshot table is too big (more than {} bytes)", name, MAX_TABLE_SIZE)));
        }
    }
    Ok(SnapshotTable { offset, size: pos - offset, snapshots })
}

impl Qcow2 {
    /// The snapshot table the header points at.
    pub fn snapshot_table(&self) -> Result<SnapshotTable> {
        read_table(&self.file, self.cluster_size(), self.header.snapshots_offset, self.header.nb_snapshots)
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.snapshot_table()?.snapshots)
    }

    /// The snapshot named `id_or_name`: by id first, then by name, as qemu looks them up.
    pub fn find_snapshot(&self, id_or_name: &str) -> Result<Snapshot> {
        let all = self.snapshots()?;
        all.iter()
            .find(|s| s.id == id_or_name)
            .or_else(|| all.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<String> = all.iter().map(|s| format!("{} ({})", s.id, s.name)).collect();
                Error::Invalid(format!(
                    "{}: no snapshot with id or name '{}'{}",
                    self.file.name,
                    id_or_name,
                    if names.is_empty() { " (the image has no snapshots)".to_string() } else { format!("; there are: {}", names.join(", ")) }
                ))
            })
    }

    /// A snapshot's L1 table, all `l1_size` entries, checked to lie in the file.
    pub fn snapshot_l1(&self, sn: &Snapshot) -> Result<Vec<u64>> {
        let cs = self.cluster_size();
        if !sn.l1_table_offset.is_multiple_of(cs) {
            return Err(Error::corrupt(format!(
                "{}: snapshot {} ({}) L1 table at 0x{:x} is not cluster aligned",
                self.file.name, sn.id, sn.name, sn.l1_table_offset
            )));
        }
        if sn.l1_bytes() > MAX_L1_BYTES || sn.l1_table_offset.checked_add(sn.l1_bytes()).is_none_or(|e| e > self.file.len()) {
            return Err(Error::corrupt(format!(
                "{}: snapshot {} ({}) L1 table at 0x{:x} ({} entries) is too large or lies past the end of the file",
                self.file.name, sn.id, sn.name, sn.l1_table_offset, sn.l1_size
            )));
        }
        let mut raw = vec![0u8; sn.l1_bytes() as usize];
        self.file.read_exact_at(sn.l1_table_offset, &mut raw, "snapshot L1 table")?;
        Ok(raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect())
    }

    /// Make snapshot `id_or_name`'s L1 table the one the image reads through (read-only
    /// views of a snapshot): the guest disk becomes the snapshot's, its size the size the
    /// snapshot recorded.
    pub fn select_snapshot(&mut self, id_or_name: &str) -> Result<()> {
        if self.file.writable() {
            return Err(Error::ReadOnly(format!("{}: a snapshot can only be opened read-only", self.file.name)));
        }
        let sn = self.find_snapshot(id_or_name)?;
        let l1 = self.snapshot_l1(&sn)?;
        let size = sn.disk_size.unwrap_or(self.header.size);
        let l2_cover = self.cluster_size() * self.geo.l2_entries();
        let needed = size.div_ceil(l2_cover) as usize;
        // a shorter L1 table reads as unallocated beyond its end (qemu pads it with zeros);
        // the padding is not stored: the recorded disk size may be anything up to 2^64
        self.l1 = l1.into_iter().take(needed).collect();
        self.snapshot = Some(sn);
        // the reverse map (host cluster -> guest offset) follows the L1 table in use
        self.reverse = std::sync::OnceLock::new();
        Ok(())
    }

    /// Where the L1 table the image reads through lies: (offset, entries).
    pub fn l1_location(&self) -> (u64, u32) {
        match &self.snapshot {
            Some(sn) => (sn.l1_table_offset, sn.l1_size),
            None => (self.header.l1_table_offset, self.header.l1_size),
        }
    }

    /// Regions of the snapshot table, the L1 tables the image does not read through (the
    /// snapshots', or the active one while a snapshot is selected) and the L2 tables only
    /// they point at. `known` holds the starts of regions already listed.
    pub fn snapshot_regions(&self, known: &std::collections::HashSet<u64>) -> Vec<Region> {
        let cs = self.cluster_size();
        let len = self.file.len();
        let mut out = Vec::new();
        let h = &self.header;
        if h.nb_snapshots == 0 {
            return out;
        }
        let table = match self.snapshot_table() {
            Ok(t) => t,
            Err(_) => {
                if h.snapshots_offset < len {
                    out.push(Region::new(h.snapshots_offset, cs.min(len - h.snapshots_offset), "snapshot-table", "snapshot table (damaged)"));
                }
                return out;
            }
        };
        let mut r = Region::new(table.offset, table.size, "snapshot-table", format!("snapshot table ({} snapshots)", table.snapshots.len()));
        r.fields = table.snapshots.iter().flat_map(|s| s.fields()).collect();
        out.push(r);
        let mut seen: std::collections::HashSet<u64> = known.clone();
        let mut l1s: Vec<(u64, u32, String, Option<Vec<u64>>)> = Vec::new();
        if self.snapshot.is_some() && h.l1_size > 0 {
            let mut raw = vec![0u8; (h.l1_size as u64 * 8).min(MAX_L1_BYTES) as usize];
            let entries = self
                .file
                .read_exact_at(h.l1_table_offset, &mut raw, "L1 table")
                .ok()
                .map(|_| raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect());
            l1s.push((h.l1_table_offset, h.l1_size, "active L1 table".into(), entries));
        }
        for sn in &table.snapshots {
            if self.snapshot.as_ref().is_some_and(|s| s.index == sn.index) {
                continue;
            }
            l1s.push((sn.l1_table_offset, sn.l1_size, format!("L1 table of snapshot {} ({})", sn.id, sn.name), self.snapshot_l1(sn).ok()));
        }
        for (off, size, name, entries) in l1s {
            if size == 0 || off >= len || !seen.insert(off) {
                continue;
            }
            let mut r = Region::new(off, (size as u64 * 8).min(len - off), "l1", name.clone());
            if let Some(entries) = &entries {
                r.fields = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, &e)| e != 0)
                    .map(|(i, &e)| Field { off: off + i as u64 * 8, len: 8, name: format!("L1[{}]", i), value: format!("0x{:016x}", e) })
                    .collect();
            }
            out.push(r);
            for (i, &e) in entries.iter().flatten().enumerate() {
                let l2 = e & L1E_OFFSET_MASK;
                if l2 != 0 && l2 < len && seen.insert(l2) {
                    out.push(Region::new(l2, cs.min(len - l2), "l2", format!("L2 table for L1[{}] of the {}", i, name)));
                }
            }
        }
        out
    }
}

pub use crate::image::region::utc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_672_967), "2026-11-26 06:02:47");
    }
}

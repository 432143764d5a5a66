//! What qemu validates when it opens a qcow2 image (qcow2_do_open, qcow2_validate_table,
//! qcow2_read_snapshots): the header fields a damaged image gets wrong. vdiskview still
//! opens such an image read-only (it is a recovery tool), names each problem as a warning in
//! `info`, `map` and `read`, and refuses to write it: the write engine checks these before
//! the first byte (see `write_refusal`), so a refused write leaves the file byte-identical.

use super::header::{AUTOCLEAR_DATA_FILE_RAW, INCOMPAT_DATA_FILE};
use super::snapshot::{self, MAX_L1_BYTES, MAX_SNAPSHOTS};
use super::Qcow2;

/// qemu's QCOW_MAX_REFTABLE_SIZE.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// One header problem: the field it is about and what is wrong, with qemu's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderProblem {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why qemu's qcow2_validate_table refuses a table, if it does: `Err((too_large, why))`.
pub fn validate_table(cs: u64, offset: u64, entries: u64, entry_len: u64, max_bytes: u64) -> Result<(), (bool, String)> {
    if entries > max_bytes / entry_len {
        return Err((true, format!("too large ({} entries of {} bytes, qemu's limit is {} bytes)", entries, entry_len, max_bytes)));
    }
    let size = entries * entry_len;
    if (i64::MAX as u64) - size < offset {
        return Err((false, "invalid (the table would end past 2^63)".into()));
    }
    if !offset.is_multiple_of(cs) {
        return Err((false, "invalid (not cluster aligned)".into()));
    }
    Ok(())
}

/// Header fields whose problems make even `qemu-img check` fail to open the image (the
/// others it opens with BDRV_O_CHECK and reports as it walks).
pub const CHECK_OPEN_FAILS: &[&str] = &["crypt_method", "backing_file_offset", "autoclear_features"];

impl Qcow2 {
    /// The header problems for which qemu refuses to open the image (qemu-io, qemu-img map,
    /// info, convert…; `qemu-img check` opens some of them anyway), in qemu's order.
    pub fn header_problems(&self) -> Vec<HeaderProblem> {
        let h = &self.header;
        let cs = self.cluster_size();
        let mut out = Vec::new();
        // every message starts with the field it names
        let mut p = |field: &'static str, message: String| out.push(HeaderProblem { field, message: format!("{} {}", field, message) });
        if h.crypt_method > 2 {
            p("crypt_method", format!("{}: unsupported encryption method", h.crypt_method));
        }
        if h.backing_file_offset > cs {
            p("backing_file_offset", format!("0x{:x}: invalid backing file offset (past the first cluster)", h.backing_file_offset));
        }
        if h.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 && h.incompatible & INCOMPAT_DATA_FILE == 0 {
            p("autoclear_features", "bit 1 (data-file-raw) is set: data-file-raw requires a data file".into());
        }
        if h.refcount_table_clusters == 0 {
            p("refcount_table_clusters", "is 0: the image does not contain a reference count table".into());
        }
        if let Err((big, why)) = validate_table(cs, h.refcount_table_offset, h.refcount_table_clusters as u64, cs, MAX_REFTABLE_BYTES) {
            if big {
                p("refcount_table_clusters", format!("{}: the refcount table is {}", h.refcount_table_clusters, why));
            } else {
                p("refcount_table_offset", format!("0x{:x}: the refcount table offset is {}", h.refcount_table_offset, why));
            }
        }
        if h.nb_snapshots > MAX_SNAPSHOTS {
            p("nb_snapshots", format!("{}: the snapshot table is too large (at most {} snapshots)", h.nb_snapshots, MAX_SNAPSHOTS));
        } else if let Err((_, why)) =
            validate_table(cs, h.snapshots_offset, h.nb_snapshots as u64, snapshot::ENTRY_HEADER, snapshot::ENTRY_HEADER * MAX_SNAPSHOTS as u64)
        {
            p("snapshots_offset", format!("0x{:x}: the snapshot table offset is {}", h.snapshots_offset, why));
        }
        if let Err((big, why)) = validate_table(cs, h.l1_table_offset, h.l1_size as u64, 8, MAX_L1_BYTES) {
            if big {
                p("l1_size", format!("{}: the active L1 table is {}", h.l1_size, why));
            } else {
                p("l1_table_offset", format!("0x{:x}: the active L1 table offset is {}", h.l1_table_offset, why));
            }
        }
        out
    }

    /// Problems of the refcount and snapshot tables that make qemu refuse the image (an
    /// unreadable snapshot table) or that a write could make worse (a table running past the
    /// end of the file, where new clusters go; snapshot entries whose L1 table is invalid).
    /// vdiskview writes none of these.
    pub fn table_problems(&self) -> Vec<HeaderProblem> {
        let h = &self.header;
        let cs = self.cluster_size();
        let mut out = Vec::new();
        // a refcount table that qemu accepts at open but the end of the file cuts: it reads
        // as zero there, and the clusters a write allocates would land on it
        let rt_bytes = h.refcount_table_clusters as u64 * cs;
        if h.refcount_table_clusters > 0
            && validate_table(cs, h.refcount_table_offset, h.refcount_table_clusters as u64, cs, MAX_REFTABLE_BYTES).is_ok()
            && h.refcount_table_offset + rt_bytes > self.file.len()
        {
            out.push(HeaderProblem {
                field: "refcount_table_offset",
                message: format!(
                    "refcount_table_offset 0x{:x}: the refcount table ({} clusters) runs past the end of the file (0x{:x} bytes); \
                     its missing part reads as zero",
                    h.refcount_table_offset,
                    h.refcount_table_clusters,
                    self.file.len()
                ),
            });
        }
        if h.nb_snapshots == 0 || h.nb_snapshots > MAX_SNAPSHOTS || !h.snapshots_offset.is_multiple_of(cs) {
            return out; // nothing, or already a header problem
        }
        match self.snapshot_table() {
            Err(e) => out.push(HeaderProblem { field: "snapshot table", message: format!("snapshot table: {}", e) }),
            Ok(t) => {
                if t.offset.saturating_add(t.size) > self.file.len() {
                    out.push(HeaderProblem {
                        field: "snapshots_offset",
                        message: format!(
                            "snapshots_offset 0x{:x}: the snapshot table ({} entries, {} bytes) runs past the end of the file (0x{:x} bytes); \
                             its missing part reads as zero",
                            t.offset,
                            t.snapshots.len(),
                            t.size,
                            self.file.len()
                        ),
                    });
                }
                for sn in &t.snapshots {
                    if let Err((_, why)) = validate_table(cs, sn.l1_table_offset, sn.l1_size as u64, 8, MAX_L1_BYTES) {
                        out.push(HeaderProblem {
                            field: "snapshot table",
                            message: format!(
                                "snapshot table entry {} (id {}, '{}'): its L1 table (l1_table_offset 0x{:x}, l1_size {}) is {}",
                                sn.index, sn.id, sn.name, sn.l1_table_offset, sn.l1_size, why
                            ),
                        });
                    }
                }
            }
        }
        out
    }
}

impl Qcow2 {
    /// Damage qemu tolerates at open but `qemu-img check` counts: v3 snapshot table entries
    /// with less extra data than the spec requires ("Version 3 images must include extra
    /// data at least up to byte 55": vm_state_size_large and disk_size).
    pub fn incomplete_snapshots(&self) -> Vec<usize> {
        if self.header.version < 3 {
            return Vec::new();
        }
        let Ok(t) = self.snapshot_table() else { return Vec::new() };
        t.snapshots.iter().filter(|sn| sn.extra_data_size < 16).map(|sn| sn.index).collect()
    }
}

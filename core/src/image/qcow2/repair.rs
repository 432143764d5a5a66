//! `check --repair leaks|all`: the refcount repairs `qemu-img check -r` makes
//! (qcow2_check_refcounts with BDRV_FIX_LEAKS / BDRV_FIX_ERRORS: compare_refcounts and
//! check_oflag_copied), on an image opened for writing under qemu's write lock.
//!
//! Ordered so that a crash between any two steps leaves the image no worse (at most leaked
//! clusters, never a cluster counted less often than it is used, never OFLAG_COPIED on a
//! shared cluster): refcounts that are too low are raised first; OFLAG_COPIED flags on
//! clusters that are not exclusively owned are cleared; then leaked refcounts are lowered;
//! then OFLAG_COPIED is set where the refcount is now 1. Each step is flushed. Guest
//! content is never touched.
//!
//! What qemu repairs beyond this (rebuilding the refcount structure when a used cluster has
//! refcount 0, reserved bits, unaligned entries, refcount blocks outside the image, the
//! snapshot table) is refused with the reason, and nothing is written.

use super::check::walk;
use super::cluster::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use super::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use super::Qcow2;
use crate::image::check::{RepairMode, RepairReport, Severity};
use crate::image::write::step;
use crate::image::{Error, Result};

/// A check finding a refcount repair can fix: a refcount mismatch, or an OFLAG_COPIED flag.
fn repairable(message: &str) -> bool {
    message.starts_with("ERROR cluster ") || message.starts_with("Leaked cluster ") || message.starts_with("ERROR OFLAG_COPIED")
}

impl Qcow2 {
    pub fn repair(&mut self, mode: RepairMode) -> Result<RepairReport> {
        let name = self.file.name.clone();
        let refuse = |why: String| Err(Error::Unsupported(format!("{}: refusing to repair: {}; nothing was written", name, why)));
        if !self.file.writable() {
            return Err(Error::ReadOnly(format!("{} is open read-only", name)));
        }
        if self.snapshot.is_some() {
            return refuse("a snapshot is selected".into());
        }
        if let Some(p) = self.header_problems().into_iter().chain(self.table_problems()).next() {
            return refuse(format!("{} (qemu-img check -r rebuilds the refcount structure here)", p));
        }
        if self.encrypted() && self.header.crypt_method != 2 {
            return refuse("an image encrypted with the old AES method".into());
        }
        let (before, map) = walk(self)?;
        if before.check_errors > 0 {
            return refuse(format!("the check could not complete ({} internal errors)", before.check_errors));
        }
        let cs = self.cluster_size();
        let mut increase = Vec::new();
        let mut decrease = Vec::new();
        for i in 0..map.len() {
            let (r1, r2) = (map.refcounts[i], map.references[i] as u64);
            if r1 == r2 {
                continue;
            }
            if r1 > r2 {
                decrease.push((i as u64, r1, r2));
            } else if r1 == 0 {
                if mode == RepairMode::All {
                    return refuse(format!(
                        "cluster {} is used ({} references) but has refcount 0: qemu rebuilds the whole refcount structure, vdiskview does not",
                        i, r2
                    ));
                }
            } else {
                increase.push((i as u64, r1, r2));
            }
        }
        if mode == RepairMode::All {
            if let Some(f) = before.findings.iter().find(|f| f.severity == Severity::Corruption && !repairable(&f.message)) {
                return refuse(format!("{} (vdiskview repairs refcounts and OFLAG_COPIED flags only; use qemu-img check -r all)", f.message));
            }
        }
        let mut lines = Vec::new();
        let (mut leaks_fixed, mut corruptions_fixed) = (0u64, 0u64);
        // 1. refcounts that are too low (a crash after this leaves leaks at worst)
        if mode == RepairMode::All && !increase.is_empty() {
            for &(c, r1, r2) in &increase {
                lines.push(format!("Repairing cluster {} refcount={} reference={}", c, r1, r2));
                self.add_refcount(c, (r2 - r1) as i64)?;
                corruptions_fixed += 1;
            }
            self.file.sync()?;
            step("qcow2 repair: raise refcounts");
        }
        // 2. OFLAG_COPIED cleared where the cluster is not exclusively owned
        if mode == RepairMode::All {
            corruptions_fixed += self.fix_copied(false, &mut lines)?;
        }
        // 3. leaked refcounts lowered to the references
        if !decrease.is_empty() {
            for &(c, r1, r2) in &decrease {
                lines.push(format!("Repairing cluster {} refcount={} reference={}", c, r1, r2));
                self.add_refcount(c, -((r1 - r2) as i64))?;
                leaks_fixed += 1;
            }
            self.file.sync()?;
            step("qcow2 repair: lower leaked refcounts");
        }
        // 4. OFLAG_COPIED set where the refcount is now 1
        if mode == RepairMode::All {
            corruptions_fixed += self.fix_copied(true, &mut lines)?;
        }
        self.invalidate_caches();
        let _ = cs;
        let (mut after, _) = walk(self)?;
        // qemu marks a repaired image clean and consistent when nothing is left
        let flags = self.header.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
        if after.check_errors == 0 && after.corruptions == 0 && flags != 0 && self.header.version >= 3 {
            let v = self.header.incompatible & !flags;
            self.file.write_at(72, &v.to_be_bytes())?;
            self.file.sync()?;
            step("qcow2 repair: mark clean and consistent");
            self.header.incompatible = v;
            self.warnings.retain(|w| !w.contains("marked corrupt") && !w.contains("is dirty"));
            after = walk(self)?.0;
        }
        Ok(RepairReport { leaks_fixed, corruptions_fixed, lines, after })
    }

    /// Clear (`set` false) or set (`set` true) OFLAG_COPIED on the active L1 and L2 entries
    /// whose flag disagrees with the refcount on disk (qemu's check_oflag_copied).
    fn fix_copied(&mut self, set: bool, lines: &mut Vec<String>) -> Result<u64> {
        let cs = self.cluster_size();
        let table = self.refcount_table()?;
        let esize: u64 = if self.geo.extended { 16 } else { 8 };
        let has_data_file = self.geo.has_data_file;
        let mut fixed = 0;
        let len = self.file.len();
        for i in 0..self.l1.len() {
            let e = self.l1[i];
            let l2 = e & L1E_OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            let rc = self.refcount(&table, l2 / cs)?;
            let want = rc == 1;
            if want != (e & OFLAG_COPIED != 0) && want == set {
                let v = if want { e | OFLAG_COPIED } else { e & !OFLAG_COPIED };
                lines.push(format!("Repairing OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", i, e, rc));
                self.file.write_at(self.header.l1_table_offset + i as u64 * 8, &v.to_be_bytes())?;
                self.l1[i] = v;
                fixed += 1;
            }
            if !l2.is_multiple_of(cs) || l2 >= len {
                continue;
            }
            let mut raw = vec![0u8; cs as usize];
            self.file.read_zero_fill(l2, &mut raw)?;
            for j in 0..(cs / esize) {
                let at = (j * esize) as usize;
                let entry = u64::from_be_bytes(raw[at..at + 8].try_into().unwrap());
                if entry & OFLAG_COMPRESSED != 0 {
                    continue;
                }
                let off = entry & L2E_OFFSET_MASK;
                let zero_plain = !self.geo.extended && entry & OFLAG_ZERO != 0 && off == 0;
                let normal = off != 0 || (has_data_file && entry & OFLAG_COPIED != 0);
                if zero_plain || !normal {
                    continue;
                }
                let rc = if has_data_file { 1 } else { self.refcount(&table, off / cs)? };
                let want = rc == 1;
                if want != (entry & OFLAG_COPIED != 0) && want == set {
                    let v = if want { entry | OFLAG_COPIED } else { entry & !OFLAG_COPIED };
                    if l2 + at as u64 + 8 > len {
                        continue; // never grow the file
                    }
                    lines.push(format!("Repairing OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", entry, rc));
                    self.file.write_at(l2 + at as u64, &v.to_be_bytes())?;
                    fixed += 1;
                }
            }
        }
        if fixed > 0 {
            self.file.sync()?;
            step(if set { "qcow2 repair: set OFLAG_COPIED" } else { "qcow2 repair: clear OFLAG_COPIED" });
        }
        Ok(fixed)
    }
}

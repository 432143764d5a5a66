//! `check` for VMDK: qemu-img check's walk (every grain of every extent; the first grain that
//! cannot be looked up or that points past the end of its file ends the walk, and qemu-img
//! check then fails with exit code 1: a check error here), plus findings qemu does not count, reported as warnings so the exit
//! code stays qemu's: grain directory and its redundant copy disagreeing, grain tables past
//! the end of the file, grains used twice, compressed grains whose marker names another
//! grain or an impossible size or that do not inflate, the unclean-shutdown flag.

use std::collections::HashMap;

use super::sparse::{Grain, SECTOR};
use super::{ExtentKind, Vmdk};
use crate::image::check::{CheckReport, Finding, Severity};

use crate::image::mapping::HostFileId;
use crate::image::Format;

/// Grains remembered for the "used twice" finding (bounded memory on huge disks).
const MAX_TRACKED: usize = 4 << 20;

pub fn check(v: &Vmdk, name: &str) -> CheckReport {
    let mut r = CheckReport::new(name, Format::Vmdk);
    'extents: for e in &v.extents {
        let Some(id) = e.file else { continue };
        let Some(f) = v.host_file(id) else { continue };
        let place = |off: u64, len: u64, fnd: Finding| if id == HostFileId::Image { fnd.at(off, len) } else { fnd };
        match &e.kind {
            ExtentKind::Zero => {}
            ExtentKind::SeSparse(se) => {
                let mut rel = 0;
                while rel < e.size {
                    let (g, n) = match se.lookup(f, rel) {
                        Ok(x) => x,
                        Err(err) => {
                            r.push(lookup_failed(e.start + rel, &err));
                            break 'extents;
                        }
                    };
                    if let Grain::At(at) = g {
                        if at >= f.len() {
                            r.push(Finding::new(
                                Severity::CheckError,
                                "data",
                                format!("cluster offset for sector {} points after EOF (0x{:x} in {})", (e.start + rel) / SECTOR, at, f.name),
                            ).virt(Some(e.start + rel)));
                            break 'extents;
                        }
                    }
                    let n = if matches!(g, Grain::At(_)) { 1 } else { n };
                    rel += n * se.grain - rel % se.grain;
                }
            }
            ExtentKind::Flat { offset } => {
                if *offset >= f.len() {
                    r.push(Finding::new(
                        Severity::CheckError,
                        "data",
                        format!("cluster offset for sector {} points after EOF ({})", e.start / SECTOR, f.name),
                    ).virt(Some(e.start)));
                    break 'extents;
                }
            }
            ExtentKind::Sparse(sp) => {
                if sp.header.unclean {
                    r.push(Finding::new(Severity::Warning, "header", format!("{}: the unclean-shutdown flag is set", f.name)));
                }
                if let Some(rgd) = &sp.rgd {
                    let differ = sp.gd.iter().zip(rgd).filter(|(a, b)| (**a == 0) != (**b == 0)).count();
                    if differ > 0 {
                        r.push(place(sp.gd_offset, sp.gd.len() as u64 * 4, Finding::new(
                            Severity::Warning,
                            "gd",
                            format!("{}: the grain directory and its redundant copy disagree on {} entries", f.name, differ),
                        )));
                    }
                }
                for (i, &g) in sp.gd.iter().enumerate() {
                    let off = g as u64 * SECTOR;
                    if g != 0 && off + sp.gt_bytes() > f.len() {
                        r.push(place(sp.gd_offset + i as u64 * 4, 4, Finding::new(
                            Severity::Warning,
                            "gd",
                            format!(
                                "{}: grain directory entry {} points to a grain table at 0x{:x}, past the end of the file (0x{:x}); its grains read as unallocated",
                                f.name, i, off, f.len()
                            ),
                        )));
                    }
                }
                let mut used: HashMap<u64, u64> = HashMap::new();
                let mut rel = 0;
                while rel < e.size {
                    let (g, n) = match sp.lookup(f, rel) {
                        Ok(x) => x,
                        Err(err) => {
                            r.push(lookup_failed(e.start + rel, &err));
                            break 'extents;
                        }
                    };
                    if let (Grain::At(at), true) = (g, sp.compressed && sp.markers) {
                        // a compressed grain's marker names the grain it holds
                        let guest_sector = (rel - rel % sp.grain) / SECTOR;
                        match sp.marker(f, at) {
                            Ok((lba, size)) if lba != guest_sector || size == 0 || size as u64 > 2 * sp.grain => {
                                r.push(place(at, 12, Finding::new(
                                    Severity::Warning,
                                    "compressed",
                                    format!(
                                        "grain marker at 0x{:x} of {}: LBA 0x{:x} and size {} for the grain at guest sector 0x{:x}",
                                        at, f.name, lba, size, guest_sector
                                    ),
                                )).virt(Some(e.start + rel)));
                            }
                            Ok(_) => {
                                if let Err(err) = sp.inflate(f, at) {
                                    r.push(place(at, 12, Finding::new(Severity::Warning, "compressed", err.to_string())).virt(Some(e.start + rel)));
                                }
                            }
                            Err(_) => {}
                        }
                    }
                    if let Grain::At(at) = g {
                        if at >= f.len() {
                            r.push(place(at, sp.grain, Finding::new(
                                Severity::CheckError,
                                "data",
                                format!("cluster offset for sector {} points after EOF (0x{:x} in {})", (e.start + rel) / SECTOR, at, f.name),
                            )).virt(Some(e.start + rel)));
                            break 'extents;
                        }
                        if used.len() < MAX_TRACKED {
                            if let Some(other) = used.insert(at, e.start + rel) {
                                r.push(place(at, sp.grain, Finding::new(
                                    Severity::Warning,
                                    "data",
                                    format!(
                                        "grain at 0x{:x} of {} serves both guest 0x{:x} and guest 0x{:x}",
                                        at, f.name, other, e.start + rel
                                    ),
                                )).virt(Some(e.start + rel)));
                            }
                        }
                    }
                    // data grains one at a time (each is checked); empty runs whole
                    let n = if matches!(g, Grain::At(_)) { 1 } else { n };
                    rel += n * sp.grain - rel % sp.grain;
                }
            }
        }
    }
    r
}

/// qemu's "could not get cluster_offset" for the guest offset `virt` whose grain table
/// entry could not be read: the check cannot go on (qemu's "Check failed").
fn lookup_failed(virt: u64, err: &crate::image::Error) -> Finding {
    Finding::new(Severity::CheckError, "gt", format!("could not get cluster_offset for sector {}: {}", virt / SECTOR, err)).virt(Some(virt))
}

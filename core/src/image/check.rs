//! `check`: is this image damaged, and where? Findings, each naming its structure and
//! placed in the host file (and the guest disk where it serves guest data), and the counts
//! qemu-img check reports. The formats do the work (`qcow2::check`, `vhd::check`); this
//! module holds the shared vocabulary and the dispatch.

use std::path::Path;

use super::chain::Image;
use super::io::HostFile;
use super::{probe, Format, Result};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Damage: data may be wrong or later writes may destroy data (qemu's "errors").
    Corruption,
    /// Space referenced by nothing but counted as used: waste, no harm (qemu's "leaks").
    Leak,
    /// The check could not read or follow something, so it is incomplete (qemu's
    /// "check-errors").
    CheckError,
    /// Unusual but harmless; not counted.
    Warning,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Corruption => "corruption",
            Severity::Leak => "leak",
            Severity::CheckError => "check-error",
            Severity::Warning => "warning",
        }
    }

    /// The word qemu-img check starts its lines with.
    pub fn tag(self) -> &'static str {
        match self {
            Severity::Corruption => "ERROR",
            Severity::Leak => "Leaked",
            Severity::CheckError => "ERROR",
            Severity::Warning => "Warning",
        }
    }
}

/// One problem, named and placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
    /// The kind of structure that is damaged, in [`super::region::Region::structure`]'s
    /// vocabulary: `l1`, `l2`, `data`, `refcount-block`, `footer`, `dynamic-header`, `bat`…
    pub structure: &'static str,
    /// Where in the checked file (layer 0's image file), when the problem has a place.
    pub host_offset: Option<u64>,
    /// How many bytes from `host_offset` the damaged structure spans.
    pub host_len: Option<u64>,
    /// The guest offset the damaged structure serves, where it serves guest data.
    pub virt: Option<u64>,
}

impl Finding {
    pub fn new(severity: Severity, structure: &'static str, message: impl Into<String>) -> Finding {
        Finding { severity, message: message.into(), structure, host_offset: None, host_len: None, virt: None }
    }

    pub fn at(mut self, off: u64, len: u64) -> Finding {
        self.host_offset = Some(off);
        // offsets and lengths come from the damaged image: keep off + len representable
        self.host_len = Some(len.min(u64::MAX - off));
        self
    }

    pub fn virt(mut self, v: Option<u64>) -> Finding {
        self.virt = v;
        self
    }
}

/// qemu-img check's QCOW2 figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qcow2Stats {
    pub allocated_clusters: u64,
    pub total_clusters: u64,
    pub fragmented_clusters: u64,
    pub compressed_clusters: u64,
    pub image_end_offset: u64,
}

/// Findings a report keeps (the last one says that more were left out).
pub const MAX_FINDINGS: usize = 100_000;

/// The result of checking one image file.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The file as named (qemu's `filename`).
    pub filename: String,
    pub format: Format,
    pub findings: Vec<Finding>,
    pub check_errors: u64,
    pub corruptions: u64,
    pub leaks: u64,
    pub qcow2: Option<Qcow2Stats>,
}

impl CheckReport {
    pub fn new(filename: &str, format: Format) -> CheckReport {
        CheckReport { filename: filename.to_string(), format, findings: Vec::new(), check_errors: 0, corruptions: 0, leaks: 0, qcow2: None }
    }

    /// Add a finding, counting it by its severity. Past [`MAX_FINDINGS`] findings are counted
    /// but no longer kept (a damaged image can make one per reference: a cluster referenced
    /// millions of times overflows its refcount millions of times).
    pub fn push(&mut self, f: Finding) {
        match f.severity {
            Severity::Corruption => self.corruptions += 1,
            Severity::Leak => self.leaks += 1,
            Severity::CheckError => self.check_errors += 1,
            Severity::Warning => {}
        }
        if self.findings.len() + 1 < MAX_FINDINGS {
            self.findings.push(f);
        } else if self.findings.len() + 1 == MAX_FINDINGS {
            self.findings.push(Finding::new(
                Severity::Warning,
                f.structure,
                format!("more than {} findings: the rest are counted but not listed", MAX_FINDINGS - 1),
            ));
        }
    }

    /// qemu-img check's exit status: 0 clean, 1 the check could not complete, 2 corruptions,
    /// 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        if self.check_errors > 0 {
            1
        } else if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

/// What `check --repair` fixes, as `qemu-img check -r`: `Leaks` decreases the refcounts of
/// clusters counted more often than they are referenced; `All` also raises refcounts that
/// are too low and sets or clears the OFLAG_COPIED flags to match the refcounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairMode {
    Leaks,
    All,
}

/// What a repair did, and the check of the repaired image (qemu's "Double checking the
/// fixed image now...").
#[derive(Clone, Debug)]
pub struct RepairReport {
    pub leaks_fixed: u64,
    pub corruptions_fixed: u64,
    /// One line per repair, in qemu's words ("Repairing cluster 6 refcount=1 reference=0").
    pub lines: Vec<String>,
    /// The check after the repair.
    pub after: CheckReport,
}

/// Check an image file alone (not its backing files, as qemu-img check does), probing its
/// format unless `format` is given. A VHD is checked even when it is too damaged to open.
pub fn check_path(path: &Path, format: Option<Format>) -> Result<CheckReport> {
    let name = path.to_string_lossy().into_owned();
    let file = HostFile::open(path, name)?;
    let format = match format {
        Some(f) => f,
        None => probe(&file)?,
    };
    format.driver().check_file(file)
}

/// Check the top layer of an opened image (for front ends that already hold it).
pub fn check_image(img: &Image) -> Result<CheckReport> {
    let li = &img.layers[0];
    li.layer.check(&li.name)
}

/// [`check_image`] with progress and cancel (the TUI's check job).
pub fn check_image_with(img: &Image, progress: super::driver::Progress) -> Result<CheckReport> {
    let li = &img.layers[0];
    li.layer.check_with(&li.name, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_qemu_img_check() {
        let mut r = CheckReport::new("x", Format::Qcow2);
        assert_eq!(r.exit_code(), 0);
        r.push(Finding::new(Severity::Warning, "header", "odd"));
        assert_eq!((r.exit_code(), r.is_clean()), (0, true));
        r.push(Finding::new(Severity::Leak, "leaked", "leak"));
        assert_eq!(r.exit_code(), 3);
        r.push(Finding::new(Severity::Corruption, "l2", "bad").at(0x1000, 8).virt(Some(0)));
        assert_eq!(r.exit_code(), 2);
        r.push(Finding::new(Severity::CheckError, "refcount-table", "unreadable"));
        assert_eq!(r.exit_code(), 1);
        assert_eq!((r.corruptions, r.leaks, r.check_errors), (1, 1, 1));
        assert_eq!(r.findings[2].host_offset, Some(0x1000));
    }
}

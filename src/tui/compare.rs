//! The TUI's comparison and watch modes: `vdiskview A --diff B` (`--diff-backing`,
//! `--diff-snapshot NAME`) marks the guest bytes and grid cells that differ from the other
//! side, `}`/`{` step between differences, and the status line shows the other side's bytes
//! at the cursor; `--watch` (or `W`) re-reads the image while another process writes it and
//! marks newly allocated units for a few seconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::image::chain::read_in;
use crate::image::diff::Side;
use crate::image::{open, Image, OpenOptions};

/// What the image is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffSpec {
    /// Another image file.
    Image(PathBuf),
    /// The same chain without its top layer.
    Backing,
    /// An internal snapshot of the image, against its active disk.
    Snapshot(String),
}

/// The other side, opened read-only: an image, and how many of its top layers to skip.
pub struct Other {
    pub img: Image,
    pub skip: usize,
    pub label: String,
}

impl Other {
    pub fn open(image_path: &str, spec: &DiffSpec) -> crate::image::Result<Other> {
        let ro = OpenOptions::default();
        Ok(match spec {
            DiffSpec::Image(p) => Other { img: open(p, &ro)?, skip: 0, label: format!("diff against {}", p.display()) },
            DiffSpec::Backing => {
                let img = open(std::path::Path::new(image_path), &ro)?;
                if img.layers.len() < 2 {
                    return Err(crate::image::Error::Invalid(format!("{} has no backing file to compare with", image_path)));
                }
                Other { img, skip: 1, label: "diff against the backing chain".into() }
            }
            DiffSpec::Snapshot(s) => Other {
                img: open(std::path::Path::new(image_path), &OpenOptions { snapshot: Some(s.clone()), ..ro })?,
                skip: 0,
                label: format!("diff against snapshot {}", s),
            },
        })
    }

    pub fn side(&self) -> crate::image::Result<Side<'_>> {
        Side::new(&self.img.layers[self.skip..])
    }

    /// The other side's guest bytes at `virt` (zero past its end).
    pub fn read(&self, virt: u64, buf: &mut [u8]) -> crate::image::Result<()> {
        buf.fill(0);
        let layers = &self.img.layers[self.skip..];
        let size = layers[0].layer.virtual_size();
        if virt >= size {
            return Ok(());
        }
        let n = (size - virt).min(buf.len() as u64) as usize;
        read_in(layers, virt, &mut buf[..n])
    }
}

/// The comparison shown on screen.
pub struct DiffState {
    pub other: Arc<Other>,
    /// Differing guest ranges, sorted; empty until the diff job is done.
    pub runs: Vec<(u64, u64)>,
    pub done: bool,
}

impl DiffState {
    pub fn touches(&self, start: u64, len: u64) -> bool {
        let i = self.runs.partition_point(|&(s, l)| s + l <= start);
        self.runs.get(i).is_some_and(|&(s, _)| s < start + len)
    }

    /// The first difference after `from` (forward) or the last one before it.
    pub fn next(&self, from: u64, forward: bool) -> Option<u64> {
        if forward {
            self.runs.iter().map(|&(s, _)| s).find(|&s| s > from)
        } else {
            self.runs.iter().rev().map(|&(s, _)| s).find(|&s| s < from)
        }
    }
}

/// How long a newly allocated unit stays marked.
pub const FRESH_FOR: Duration = Duration::from_secs(3);

/// Watching: what was newly allocated, and since when.
#[derive(Default)]
pub struct WatchState {
    pub on: bool,
    pub fresh: Vec<(u64, u64, Instant)>,
    pub new_ranges: u64,
    pub new_bytes: u64,
}

impl WatchState {
    /// Forget marks older than [`FRESH_FOR`]; true when any went.
    pub fn expire(&mut self, now: Instant) -> bool {
        let n = self.fresh.len();
        self.fresh.retain(|&(_, _, t)| now.duration_since(t) < FRESH_FOR);
        n != self.fresh.len()
    }

    pub fn touches(&self, start: u64, len: u64) -> bool {
        self.fresh.iter().any(|&(s, l, _)| s < start + len && start < s + l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_and_stepped() {
        let other = Arc::new(Other { img: open(std::path::Path::new("assets/demo.vhd"), &OpenOptions::default()).unwrap(), skip: 0, label: String::new() });
        let d = DiffState { other, runs: vec![(100, 10), (4096, 1)], done: true };
        assert!(d.touches(0, 101) && !d.touches(0, 100) && d.touches(109, 1) && !d.touches(110, 3000) && d.touches(4000, 200));
        assert_eq!((d.next(0, true), d.next(100, true), d.next(4096, true)), (Some(100), Some(4096), None));
        assert_eq!((d.next(5000, false), d.next(100, false)), (Some(4096), None));
        let mut w = WatchState::default();
        let t = Instant::now();
        w.fresh.push((0, 10, t));
        assert!(w.touches(5, 1) && !w.touches(10, 5));
        assert!(!w.expire(t) && w.expire(t + FRESH_FOR));
    }
}

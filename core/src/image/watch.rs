//! Watching an image another process writes: open it again (read-only, no lock, so qemu
//! keeps writing) and say which guest ranges the top layer allocated since the last look. A
//! look that lands in the middle of an update (a table half-written, a header being
//! rewritten) fails or looks odd; the caller retries it later instead of reporting damage.

use std::path::{Path, PathBuf};

use super::mapping::Extent;
use super::{open, Image, OpenOptions, Result};

pub struct Watch {
    path: PathBuf,
    opts: OpenOptions,
    /// The top layer's allocated guest ranges at the last successful look, sorted, merged.
    allocated: Vec<(u64, u64)>,
    /// Bytes newly allocated since the watch began, and how many ranges.
    pub new_bytes: u64,
    pub new_ranges: u64,
}

/// The top layer's allocated guest ranges (data, compressed, or allocated zeros), merged.
pub fn allocated_ranges(img: &Image) -> Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in img.extents(0, img.virtual_size())? {
        let st = e.kind.status();
        if e.depth == 0 && st.present && (st.data || st.host_allocated) {
            match out.last_mut() {
                Some(l) if l.0 + l.1 == e.virt => l.1 += e.len,
                _ => out.push((e.virt, e.len)),
            }
        }
    }
    Ok(out)
}

/// The parts of `now` not in `before` (both sorted and merged).
fn added(now: &[(u64, u64)], before: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s0, l) in now {
        let (mut s, e) = (s0, s0 + l);
        while j < before.len() && before[j].0 + before[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while s < e {
            match before.get(k) {
                Some(&(bs, bl)) if bs < e => {
                    if bs > s {
                        out.push((s, bs - s));
                    }
                    s = s.max(bs + bl);
                    k += 1;
                }
                _ => {
                    out.push((s, e - s));
                    s = e;
                }
            }
        }
    }
    out
}

impl Watch {
    /// Start watching: the first look is the baseline.
    pub fn start(path: &Path, opts: &OpenOptions) -> Result<(Watch, Image)> {
        let opts = OpenOptions { write: false, ..opts.clone() };
        let img = open(path, &opts)?;
        let allocated = allocated_ranges(&img)?;
        Ok((Watch { path: path.to_path_buf(), opts, allocated, new_bytes: 0, new_ranges: 0 }, img))
    }

    /// Look again: the image as it is now and the extents of the ranges allocated since the
    /// last look. An error means the file was caught mid-update: try again later (the
    /// baseline is kept).
    pub fn look(&mut self) -> Result<(Image, Vec<Extent>)> {
        let img = open(&self.path, &self.opts)?;
        let now = allocated_ranges(&img)?;
        let mut fresh = Vec::new();
        for (s, l) in added(&now, &self.allocated) {
            fresh.extend(img.extents(s, l)?);
            self.new_bytes += l;
            self.new_ranges += 1;
        }
        self.allocated = now;
        Ok((img, fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::added;

    #[test]
    fn added_ranges() {
        assert_eq!(added(&[(0, 100)], &[(10, 10), (50, 10)]), vec![(0, 10), (20, 30), (60, 40)]);
        assert_eq!(added(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(added(&[(0, 10), (20, 5)], &[]), vec![(0, 10), (20, 5)]);
    }
}

//! Bitmap pane: for a VHD the selected block's sector bitmap as a heatmap plus a whole-disk
//! density overview; for QCOW2 the selected cluster's subclusters (extended L2) and the
//! overview.

use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::image::qcow2::Qcow2;
use crate::image::qcow2::cluster::Sub;
use crate::image::Image;
use crate::tui::state::{AppState, Pane};
use crate::tui::theme;
use crate::tui::view::UnitDetail;

const SHADES: [&str; 5] = [" ", "░", "▒", "▓", "█"];

fn shade(frac: f32) -> &'static str {
    if frac <= 0.0 {
        SHADES[0]
    } else if frac >= 1.0 {
        SHADES[4]
    } else {
        SHADES[1 + ((frac * 3.0) as usize).min(2)]
    }
}

pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    let focused = st.focus == Pane::Bitmap;
    if let Some((name, shares)) = &st.dirty_bitmap {
        let width = r.width.saturating_sub(2).max(1) as usize;
        let mut lines = vec![Line::from(format!(
            "dirty share of the disk, {} cells of {} bytes (d: next bitmap)",
            shares.len(),
            img.virtual_size().div_ceil(shares.len().max(1) as u64)
        ))];
        for chunk in shares.chunks(width) {
            let s: String = chunk.iter().map(|&c| shade(c)).collect();
            lines.push(Line::from(Span::styled(s, theme::fg(st, Color::LightRed))));
        }
        let title = format!(" Bitmap — dirty bitmap '{}' ", name);
        f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
        return;
    }
    let width = r.width.saturating_sub(2).max(1) as usize;
    let height = r.height.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    // the selected unit's bitmap or L2 entry was read into the view model (view.rs); the
    // sector bitmap of a VHD block and the subclusters of an extended-L2 qcow2 cluster are
    // each their format's own picture
    let qcow2 = img.top().downcast_ref::<Qcow2>();
    let (title, cells) = match (qcow2, &st.view.unit) {
        (_, UnitDetail::VhdBitmap(bm)) => {
            let block = st.grid_sel;
            match bm {
                Ok(Some((bm, sectors))) => {
                    let (bm, sectors) = (bm, *sectors);
                    let present = (0..sectors).filter(|&s| Image::vhd_bit(bm, s)).count();
                    lines.push(Line::from(format!("block {}: {}/{} sectors present", block, present, sectors)));
                    // half the rows left for the bitmap when the overview shares the pane
                    let rows_left = height.saturating_sub(3);
                    let rows = if st.density.is_empty() { rows_left } else { rows_left / 2 };
                    let avail = rows.max(1) * width;
                    let per = (sectors as usize).div_ceil(avail).max(1);
                    let cells: Vec<f32> = (0..(sectors as usize).div_ceil(per))
                        .map(|c| {
                            let lo = c * per;
                            let hi = ((c + 1) * per).min(sectors as usize);
                            (lo..hi).filter(|&s| Image::vhd_bit(bm, s as u64)).count() as f32 / (hi - lo) as f32
                        })
                        .collect();
                    lines.push(Line::from(format!("one cell = {} sector(s)", per)));
                    (format!(" Bitmap — block {} sector bitmap ", block), cells)
                }
                Ok(None) => {
                    lines.push(Line::from(format!("block {} is not allocated: no bitmap", block)));
                    (format!(" Bitmap — block {} ", block), Vec::new())
                }
                Err(e) => {
                    lines.push(Line::from(e.to_string()));
                    (" Bitmap ".to_string(), Vec::new())
                }
            }
        }
        (Some(q), UnitDetail::Qcow2L2(entry)) => {
            let mut cells = Vec::new();
            match *entry {
                Ok(Some(e)) if q.geo.extended => {
                    lines.push(Line::from(format!("cluster {} subclusters (D data, Z zero, . unallocated):", st.grid_sel)));
                    let s: String = (0..32)
                        .map(|sc| match q.geo.classify(e, sc) {
                            Sub::Normal(_) => 'D',
                            Sub::ZeroPlain | Sub::ZeroAlloc(_) => 'Z',
                            Sub::Compressed { .. } => 'C',
                            Sub::Invalid => '!',
                            _ => '.',
                        })
                        .collect();
                    lines.push(Line::from(s.clone()));
                    cells = s.chars().map(|c| if c == 'D' { 1.0 } else { 0.0 }).collect();
                }
                Ok(Some(e)) => lines.push(Line::from(format!("cluster {}: L2 entry 0x{:016x}", st.grid_sel, e.entry))),
                Ok(None) => lines.push(Line::from(format!("cluster {}: no L2 table", st.grid_sel))),
                Err(ref err) => lines.push(Line::from(err.clone())),
            }
            (" Bitmap — subclusters and density ".to_string(), cells)
        }
        _ => {
            lines.push(Line::from("no sector bitmaps in this format"));
            (" Bitmap ".to_string(), Vec::new())
        }
    };
    for chunk in cells.chunks(width) {
        if lines.len() + 3 >= height {
            break;
        }
        let s: String = chunk.iter().map(|&c| shade(c)).collect();
        lines.push(Line::from(Span::styled(s, theme::fg(st, Color::Magenta))));
    }
    if !st.density.is_empty() {
        lines.push(Line::from("whole disk, allocated share:"));
        // the overview fills the rows left: each cell a share of the buckets, or a bucket
        // drawn over several cells when there are more cells than buckets
        let rows = height.saturating_sub(lines.len());
        for line in resample(&st.density, width, rows) {
            lines.push(Line::from(Span::styled(line, theme::fg(st, Color::Green))));
        }
    }
    f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
}

/// `values` spread over `rows` lines of `width` cells, each cell the mean of its values.
pub fn resample(values: &[f32], width: usize, rows: usize) -> Vec<String> {
    let n = values.len();
    let cells = width * rows;
    if n == 0 || cells == 0 {
        return Vec::new();
    }
    let line: Vec<&str> = (0..cells)
        .map(|c| {
            let (lo, hi) = (c * n / cells, ((c + 1) * n / cells).max(c * n / cells + 1).min(n));
            // nothing allocated shows as a dot: the overview's area stays visible
            match values[lo..hi].iter().sum::<f32>() / (hi - lo) as f32 {
                f if f <= 0.0 => "·",
                f => shade(f),
            }
        })
        .collect();
    line.chunks(width).map(|c| c.concat()).collect()
}

//! The view model: what the screen shows that has to be read from the image — the hex rows on
//! screen (bytes and colours), the grid cells on screen, the status line — prepared after
//! `update` when what is visible changed, so `draw` reads state only, never the image file.
//! Bounded by what is visible: rows × 16 bytes, rows × columns cells.

use ratatui::style::Color;

use super::layout::{grid_shape, hex_rows};
use super::state::{AppState, Space};
use super::theme;
use crate::image::Image;

/// One row of the hex view as the image holds it (staged edits are laid over at draw).
#[derive(Clone, Debug, PartialEq)]
pub struct HexRow {
    pub off: u64,
    /// Bytes of the row inside the space (16 but at the end).
    pub n: usize,
    pub bytes: [u8; 16],
    /// The read failed: the bytes show as `??`.
    pub unreadable: bool,
    pub colors: [Color; 16],
}

#[derive(Default)]
pub struct ViewModel {
    /// What the rows and cells below were read for; a different key means read again.
    key: Option<Key>,
    pub hex: Vec<HexRow>,
    /// Guest grid: the first unit shown and a glyph pair and colour per visible unit.
    pub grid_first: u64,
    pub grid_cells: Vec<(&'static str, Color)>,
    /// What the selected grid unit holds (or why that could not be read).
    pub grid_sel_kind: String,
    /// The status line's description of the cursor.
    pub status: String,
    /// Staged guest bytes whose save will allocate.
    pub allocating: usize,
    /// The selected unit's detail for the Bitmap pane.
    pub unit: UnitDetail,
    /// The raw bytes (at most 8) of each Header pane field, as the file holds them.
    pub header_raw: Vec<Vec<u8>>,
    /// The status line's parts (long and short forms), for fitting it to the width.
    pub status_parts: Vec<super::panes::hex::Part>,
    /// The data inspector (when shown): the readings of the bytes at the cursor, staged
    /// edits laid over, and where the cursor is (both spaces, the structure and field).
    pub inspector: Vec<super::inspector::Row>,
    pub inspector_at: Vec<String>,
    /// The last search's matches among the bytes on screen: (start, length).
    pub matches: Vec<(u64, u64)>,
}

/// What the Bitmap pane shows of the selected block/cluster, read from the image.
#[derive(Clone, Debug, Default)]
pub enum UnitDetail {
    #[default]
    None,
    /// VHD: the block's sector bitmap and its sector count (None: block not allocated).
    VhdBitmap(Result<Option<(std::sync::Arc<Vec<u8>>, u64)>, String>),
    /// QCOW2: the cluster's L2 entry (None: no L2 table).
    Qcow2L2(Result<Option<crate::image::qcow2::cluster::L2Entry>, String>),
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    space: Space,
    file_layer: usize,
    hex_top: u64,
    cursor: u64,
    size: (u16, u16),
    grid_sel: u64,
    grid_first: u64,
    grid_host: bool,
    highlights: Vec<(u64, u64)>,
    staged: usize,
    saves: u64,
    /// Differences known so far, and the units marked as newly allocated.
    diff_runs: usize,
    fresh: Vec<(u64, u64)>,
    inspector: bool,
    search: Option<super::search::Pattern>,
    selection: Option<(u64, u64)>,
    /// The staged edits change the inspector's bytes: their last change.
    undo: usize,
    redo: usize,
}

impl ViewModel {
    /// Read everything again on the next refresh (the image changed: a save).
    pub fn invalidate(&mut self) {
        self.key = None;
    }
}

/// Bring the view model up to date with the state; a no-op when nothing visible moved.
pub fn refresh(st: &mut AppState, img: &Image) {
    let grid_first = super::panes::grid::first_row(st, img) * grid_shape(st, img).0;
    let key = Key {
        space: st.space,
        file_layer: st.file_layer,
        hex_top: st.hex_top,
        cursor: st.cursor,
        size: st.size,
        grid_sel: st.grid_sel,
        grid_first,
        grid_host: st.grid_host,
        highlights: st.highlights.clone(),
        staged: st.staged_count(),
        saves: st.saves,
        diff_runs: st.diff.as_ref().map_or(0, |d| d.runs.len() + d.done as usize),
        fresh: st.watch.fresh.iter().map(|&(a, b, _)| (a, b)).collect(),
        inspector: st.inspector,
        search: st.search.as_ref().map(|s| s.pattern.clone()),
        selection: st.selection(),
        undo: st.undo.len(),
        redo: st.redo.len(),
    };
    if st.view.key.as_ref() == Some(&key) {
        return;
    }
    let hex = hex(st, img);
    let (cells, sel_kind) = grid(st, img, grid_first);
    let mut status_parts = super::panes::hex::status_parts(st, img);
    if let Some(extra) = compare_status(st, img) {
        // the comparison or watch comes first: it is what the mode is for
        status_parts.insert(0, super::panes::hex::Part::new(extra.clone(), extra, 9));
    }
    let status = status_parts.iter().map(|p| p.long.clone()).collect::<Vec<_>>().join(" │ ");
    let allocating = super::update::allocating(st, img);
    let unit = unit_detail(st, img);
    let header_raw = st
        .header
        .iter()
        .map(|h| {
            let mut raw = vec![0u8; h.field.len.min(8) as usize];
            let _ = img.read_host(0, h.field.off, &mut raw);
            raw
        })
        .collect();
    let matches = matches(st, img, &hex);
    let (inspector, inspector_at) = if st.inspector { inspect(st, img, &status_parts) } else { Default::default() };
    st.view = ViewModel {
        key: Some(key),
        hex,
        grid_first,
        grid_cells: cells,
        grid_sel_kind: sel_kind,
        status,
        allocating,
        unit,
        header_raw,
        status_parts,
        inspector,
        inspector_at,
        matches,
    };
}

/// Where the last search's pattern matches among the bytes on screen (a match may run past
/// the last row: the bytes after it are read too).
fn matches(st: &AppState, img: &Image, rows: &[HexRow]) -> Vec<(u64, u64)> {
    let (Some(s), Some(first)) = (&st.search, rows.first()) else { return Vec::new() };
    let mut hay: Vec<u8> = rows.iter().flat_map(|r| r.bytes[..r.n].iter().copied()).collect();
    let end = first.off + hay.len() as u64;
    let size = super::update::space_size(st, img);
    let mut tail = vec![0u8; (s.pattern.len() as u64 - 1).min(size - end.min(size)) as usize];
    let r = match st.space {
        Space::Virt => img.read(end, &mut tail),
        Space::File => img.read_host(st.file_layer, end, &mut tail),
    };
    if r.is_ok() {
        hay.extend(tail);
    }
    s.pattern.find_all(&hay).take(256).map(|i| (first.off + i as u64, s.pattern.len() as u64)).collect()
}

/// The inspector's readings of the 16 bytes from the cursor (fewer at the end of the space)
/// and where they are.
fn inspect(st: &AppState, img: &Image, parts: &[super::panes::hex::Part]) -> (Vec<super::inspector::Row>, Vec<String>) {
    let size = super::update::space_size(st, img);
    let n = size.saturating_sub(st.cursor).min(16) as usize;
    let mut b = vec![0u8; n];
    let r = match st.space {
        Space::Virt => img.read(st.cursor, &mut b),
        Space::File => img.read_host(st.file_layer, st.cursor, &mut b),
    };
    if let Err(e) = r {
        return (Vec::new(), vec![format!("cannot read 0x{:x}: {}", st.cursor, e)]);
    }
    for (i, x) in b.iter_mut().enumerate() {
        if let Some(v) = st.staged_at(st.cursor + i as u64) {
            *x = v;
        }
    }
    // where: both offsets, then the structure and field (the status line's long forms)
    // where: both offsets on one line, then the structure and field (the status line's forms)
    let parts: Vec<&super::panes::hex::Part> = parts.iter().filter(|p| !p.long.starts_with("sel ")).collect();
    let mut at: Vec<String> = vec![parts.iter().take(2).map(|p| p.short.clone()).collect::<Vec<_>>().join("  ")];
    at.extend(parts.iter().skip(2).filter(|p| p.worth != 5).map(|p| p.long.clone()));
    (super::inspector::rows(&b), at)
}

fn unit_detail(st: &AppState, img: &Image) -> UnitDetail {
    // the VHD sector bitmap and the qcow2 L2 entry are their formats' own pictures
    let top = img.top();
    if let Some(v) = top.downcast_ref::<crate::image::vhd::Vhd>() {
        if v.block_size().is_some() {
            return UnitDetail::VhdBitmap(img.vhd_bitmap(st.grid_sel).map_err(|e| e.to_string()));
        }
    }
    match top.downcast_ref::<crate::image::qcow2::Qcow2>() {
        Some(q) => UnitDetail::Qcow2L2(q.l2_entry(img.unit_start(st.grid_sel)).map_err(|e| e.to_string())),
        None => UnitDetail::None,
    }
}

fn hex(st: &AppState, img: &Image) -> Vec<HexRow> {
    let size = super::update::space_size(st, img);
    let mut out = Vec::new();
    for i in 0..hex_rows(st) {
        let off = st.hex_top + i * 16;
        if off >= size {
            break;
        }
        let n = (size - off).min(16) as usize;
        let mut bytes = [0u8; 16];
        let res = match st.space {
            Space::Virt => img.read(off, &mut bytes[..n]),
            Space::File => img.read_host(st.file_layer, off, &mut bytes[..n]),
        };
        let mut colors = row_colors(st, img, off, n);
        if let (Space::Virt, Some(d)) = (st.space, &st.diff) {
            // bytes that differ from the other side
            for (k, c) in colors.iter_mut().enumerate().take(n) {
                if d.touches(off + k as u64, 1) {
                    *c = Color::LightRed;
                }
            }
        }
        out.push(HexRow { off, n, bytes, unreadable: res.is_err(), colors });
    }
    out
}

/// A colour per byte of the row, from regions (file space) or extents (guest space).
fn row_colors(st: &AppState, img: &Image, row: u64, n: usize) -> [Color; 16] {
    let mut out = [Color::DarkGray; 16];
    match st.space {
        Space::File => {
            let mut j = 0;
            while j < n {
                let off = row + j as u64;
                match img.locate_host(st.file_layer, off) {
                    Ok(r) => {
                        let end = (r.start + r.len).min(row + n as u64).max(off + 1);
                        out[j..(end - row) as usize].fill(theme::structure(r.structure));
                        j = (end - row) as usize;
                    }
                    Err(_) => j += 1,
                }
            }
        }
        Space::Virt => {
            if let Ok(exts) = img.extents(row, n as u64) {
                for e in exts {
                    let (a, b) = ((e.virt - row) as usize, ((e.virt + e.len - row) as usize).min(n));
                    out[a..b].fill(theme::extent(&e.kind, e.depth));
                }
            }
            // partition tables and superblocks lie over the data: name them
            for (k, c) in out.iter_mut().enumerate().take(n) {
                if let Some(r) = st.guest_region(row + k as u64) {
                    *c = theme::structure(r.structure);
                }
            }
        }
    }
    out
}

/// The guest grid's visible cells (the host view draws from the host map in the state).
fn grid(st: &AppState, img: &Image, first: u64) -> (Vec<(&'static str, Color)>, String) {
    let (cols, rows) = grid_shape(st, img);
    let units = img.unit_count();
    let unit_size = img.unit_size();
    let end = first.saturating_add(cols * rows).min(units);
    let cells = (first..end)
        .map(|u| {
            let start = img.unit_start(u);
            if st.highlights.iter().any(|&(v, l)| v < start + unit_size && start < v + l) {
                // a located file's blocks
                return ("◆◆", Color::LightYellow);
            }
            if st.watch.touches(start, unit_size) {
                // allocated by another process a moment ago
                return ("++", Color::LightGreen);
            }
            if st.diff.as_ref().is_some_and(|d| d.touches(start, unit_size)) {
                return ("≠≠", Color::LightRed);
            }
            match img.unit_kind(u) {
                Ok(k) => theme::unit(&k),
                Err(_) => ("!!", Color::LightRed),
            }
        })
        .collect();
    let sel_kind = img.unit_kind(st.grid_sel).map(|k| k.name()).unwrap_or_else(|e| e.to_string());
    (cells, sel_kind)
}

/// The status line's comparison and watch part: the other side's bytes of the cursor's row
/// and where they differ; allocations seen while watching.
fn compare_status(st: &AppState, img: &Image) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(d) = &st.diff {
        let state = if d.done { format!("{} diff(s)", d.runs.len()) } else { "comparing…".into() };
        if let Some(v) = super::update::current_virt(st, img) {
            let row = v / 16 * 16;
            let mut theirs = [0u8; 16];
            let mut ours = [0u8; 16];
            let n = img.virtual_size().saturating_sub(row).min(16) as usize;
            if d.other.read(row, &mut theirs[..n]).is_ok() && img.read(row, &mut ours[..n]).is_ok() {
                let hex: Vec<String> = (0..n)
                    .map(|i| if theirs[i] == ours[i] { format!("{:02x}", theirs[i]) } else { format!("[{:02x}]", theirs[i]) })
                    .collect();
                parts.push(format!("{}: other 0x{:x}: {}", state, row, hex.join(" ")));
            } else {
                parts.push(state);
            }
        } else {
            parts.push(state);
        }
    }
    if st.watch.on {
        parts.push(format!("watching: {} new range(s), {} bytes", st.watch.new_ranges, st.watch.new_bytes));
    }
    (!parts.is_empty()).then(|| parts.join(" │ "))
}

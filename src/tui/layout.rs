//! Where each pane goes for a terminal size. `update` (to keep the cursor visible, to map
//! clicks) and `draw` share it.
//!
//! From 80×24 up every pane is reachable: a place on screen too small for all the panes that
//! belong there holds them as tabs (a one-line tab bar above, Tab moves through them), and `z`
//! zooms the focused pane to the whole screen at any size.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::state::{AppState, Pane};
use crate::image::Image;

pub struct Screen {
    pub panes: Vec<(Pane, Rect)>,
    pub status: Rect,
    /// Tab bars: where, the panes sharing the place below, the one shown.
    pub tabs: Vec<(Rect, Vec<Pane>, Pane)>,
}

/// Width of the hex pane: offset, 16 bytes, ASCII, borders.
pub const HEX_WIDTH: u16 = 8 + 2 + 16 * 3 + 1 + 1 + 16 + 1 + 2;

/// Width of the inspector: borders, the longest label, a space, the longest value (a GUID).
pub const INSPECTOR_WIDTH: u16 = 2 + 16 + 1 + 36;

/// Below this width or height the upper panes share one place as tabs over the hex view.
pub fn is_small(st: &AppState) -> bool {
    st.size.0 < 110 || st.size.1 < 30
}

pub fn screen(st: &AppState) -> Screen {
    let area = Rect::new(0, 0, st.size.0, st.size.1);
    let [main, status] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let mut scr = Screen { panes: Vec::new(), status, tabs: Vec::new() };
    if st.zoom {
        scr.slot(st, st.panes(), main);
        return scr;
    }
    let small = is_small(st);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Min(5)]).areas(main);
    if small {
        // the upper panes as tabs over the hex view
        let upper: Vec<Pane> = st.panes().into_iter().filter(|p| *p != Pane::Hex).collect();
        scr.slot(st, upper, top);
        scr.panes.push((Pane::Hex, bottom));
    } else {
        // the Header pane as wide as its values need (the raw bytes too when there is room),
        // the L1 list as wide as its entries, the grid the rest
        let (need, with_raw) = super::panes::header::widths(st);
        let (need, with_raw, w) = (need as u16 + 2, with_raw as u16 + 2, top.width);
        // (beside the L1 list and the grid at most half: a rare long value wraps instead)
        let max = if st.is_qcow2 { w / 2 } else { w * 65 / 100 };
        let header_w = if with_raw <= w * 55 / 100 && with_raw <= max {
            with_raw
        } else {
            need.clamp(w * 40 / 100, max)
        };
        let l1_w = if st.is_qcow2 { 28.min(w.saturating_sub(header_w) / 2) } else { 0 };
        let top_parts: Vec<Constraint> = if st.is_qcow2 {
            vec![Constraint::Length(header_w), Constraint::Length(l1_w), Constraint::Min(0)]
        } else {
            vec![Constraint::Length(header_w), Constraint::Min(0)]
        };
        let t = Layout::default().direction(Direction::Horizontal).constraints(top_parts).split(top);
        scr.panes.push((Pane::Header, t[0]));
        if st.is_qcow2 {
            scr.panes.push((Pane::L1, t[1]));
            scr.panes.push((Pane::Grid, t[2]));
        } else {
            scr.panes.push((Pane::Grid, t[1]));
        }
        let [hex, right] = Layout::horizontal([Constraint::Length(HEX_WIDTH.min(bottom.width)), Constraint::Min(0)]).areas(bottom);
        scr.panes.push((Pane::Hex, hex));
        if st.inspector && right.width >= INSPECTOR_WIDTH + 24 {
            let [i, b] = Layout::horizontal([Constraint::Length(INSPECTOR_WIDTH), Constraint::Min(0)]).areas(right);
            scr.panes.push((Pane::Inspector, i));
            scr.panes.push((Pane::Bitmap, b));
        } else if st.inspector {
            scr.slot(st, vec![Pane::Inspector, Pane::Bitmap], right);
        } else if right.width >= 10 {
            scr.panes.push((Pane::Bitmap, right));
        }
    }
    scr
}

impl Screen {
    pub fn rect(&self, p: Pane) -> Option<Rect> {
        self.panes.iter().find(|(q, _)| *q == p).map(|(_, r)| *r)
    }

    /// `panes` in one place: alone, or as tabs (a bar line, then the one shown).
    fn slot(&mut self, st: &AppState, panes: Vec<Pane>, r: Rect) {
        if panes.len() == 1 {
            self.panes.push((panes[0], r));
            return;
        }
        let shown = st.shown_of(&panes);
        let [bar, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(r);
        self.tabs.push((bar, panes, shown));
        self.panes.push((shown, rest));
    }
}

/// Hex rows that fit in the hex pane (inside its border).
pub fn hex_rows(st: &AppState) -> u64 {
    screen(st).rect(Pane::Hex).map(|r| r.height.saturating_sub(2).max(1) as u64).unwrap_or(16)
}

/// How the grid lays out its cells: `cols` × `rows` cells of `cw` × `ch` characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridGeom {
    pub cols: u64,
    pub rows: u64,
    pub cw: u16,
    pub ch: u16,
}

/// The grid's cells for `units` units: two characters a cell when there are many; with few
/// units the cells grow (twice as wide as high, as terminal cells are) to fill the pane.
pub fn grid_geom(st: &AppState, units: u64) -> GridGeom {
    let r = screen(st).rect(Pane::Grid).unwrap_or(Rect::new(0, 0, 40, 10));
    // inside the border, less the blank line and the legend
    let w = r.width.saturating_sub(2).max(2);
    let h = r.height.saturating_sub(4).max(1);
    let mut s = h.min(w / 2).max(1);
    while s > 1 {
        let (cols, rows) = ((w / (2 * s)) as u64, (h / s) as u64);
        if cols * rows >= units.max(1) {
            break;
        }
        s -= 1;
    }
    GridGeom { cols: (w / (2 * s)).max(1) as u64, rows: (h / s).max(1) as u64, cw: 2 * s, ch: s }
}

/// Grid cells per row and rows shown.
pub fn grid_shape(st: &AppState, img: &Image) -> (u64, u64) {
    let g = grid_geom(st, st.grid_units(img));
    (g.cols, g.rows)
}

//! Where each pane goes for a terminal size. `update` (to keep the cursor visible, to map
//! clicks) and `draw` share it.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

use super::state::{AppState, Pane};

pub struct Screen {
    pub panes: Vec<(Pane, Rect)>,
    pub status: Rect,
}

/// Width of the hex pane: offset, 16 bytes, ASCII, borders.
pub const HEX_WIDTH: u16 = 8 + 2 + 16 * 3 + 1 + 1 + 16 + 1 + 2;

pub fn screen(st: &AppState) -> Screen {
    let area = Rect::new(0, 0, st.size.0, st.size.1);
    let [main, status] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let small = area.width < 110 || area.height < 30;
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(if small { 40 } else { 45 }), Constraint::Min(5)]).areas(main);
    let mut panes = Vec::new();
    if small {
        // one of the upper panes at a time (the focused one, else the header) over the hex view
        let upper = match st.focus {
            Pane::Hex => Pane::Header,
            p => p,
        };
        panes.push((upper, top));
        panes.push((Pane::Hex, bottom));
    } else {
        let top_parts: Vec<Constraint> = if st.is_qcow2 {
            vec![Constraint::Percentage(40), Constraint::Percentage(20), Constraint::Percentage(40)]
        } else {
            vec![Constraint::Percentage(45), Constraint::Percentage(55)]
        };
        let t = Layout::default().direction(Direction::Horizontal).constraints(top_parts).split(top);
        panes.push((Pane::Header, t[0]));
        if st.is_qcow2 {
            panes.push((Pane::L1, t[1]));
            panes.push((Pane::Grid, t[2]));
        } else {
            panes.push((Pane::Grid, t[1]));
        }
        let [hex, bitmap] = Layout::horizontal([Constraint::Length(HEX_WIDTH.min(bottom.width)), Constraint::Min(0)]).areas(bottom);
        panes.push((Pane::Hex, hex));
        if bitmap.width >= 10 {
            panes.push((Pane::Bitmap, bitmap));
        }
    }
    Screen { panes, status }
}

impl Screen {
    pub fn rect(&self, p: Pane) -> Option<Rect> {
        self.panes.iter().find(|(q, _)| *q == p).map(|(_, r)| *r)
    }
}

/// Hex rows that fit in the hex pane (inside its border).
pub fn hex_rows(st: &AppState) -> u64 {
    screen(st).rect(Pane::Hex).map(|r| r.height.saturating_sub(2).max(1) as u64).unwrap_or(16)
}

/// Grid cells per row and rows shown (inside the border, less the legend line).
pub fn grid_shape(st: &AppState) -> (u64, u64) {
    let r = screen(st).rect(Pane::Grid).unwrap_or(Rect::new(0, 0, 40, 10));
    let cols = (r.width.saturating_sub(2) / 2).max(1) as u64;
    let rows = r.height.saturating_sub(4).max(1) as u64;
    (cols, rows)
}

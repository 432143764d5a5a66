//! One file per pane; each draws from `&AppState` and the image model only.

pub mod grid;
pub mod header;
pub mod heatmap;
pub mod hex;
pub mod inspector;
pub mod l1;

use ratatui::layout::Rect;
use ratatui::widgets::{Block, BorderType, Borders};

use super::state::AppState;
use super::theme;

pub fn block<'a>(st: &AppState, title: String, focused: bool) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(theme::border(st, focused))
        .title(title)
}

/// First row to show so that `sel` stays visible in `rows` rows, centred when it can be.
pub fn scroll_to(sel: usize, rows: usize, total: usize) -> usize {
    if total <= rows || sel < rows / 2 {
        0
    } else {
        (sel - rows / 2).min(total - rows)
    }
}

pub fn inner_rows(r: Rect) -> usize {
    r.height.saturating_sub(2) as usize
}

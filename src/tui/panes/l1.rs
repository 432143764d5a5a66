//! L1 pane (QCOW2): the L1 table as a list, each entry's L2 table offset or "unallocated".

use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{block, inner_rows, scroll_to};
use crate::image::qcow2::cluster::L1E_OFFSET_MASK;
use crate::image::Image;
use crate::tui::state::{AppState, Pane};
use crate::tui::theme;

pub fn first_row(st: &AppState, r: Rect) -> usize {
    scroll_to(st.l1_sel, inner_rows(r), usize::MAX / 2)
}

pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    let Some(q) = img.top().downcast_ref::<crate::image::qcow2::Qcow2>() else { return };
    let focused = st.focus == Pane::L1;
    let rows = inner_rows(r);
    let first = scroll_to(st.l1_sel, rows, q.l1.len());
    let mut lines = Vec::new();
    for (i, &e) in q.l1.iter().enumerate().skip(first).take(rows) {
        let off = e & L1E_OFFSET_MASK;
        let (text, color) = if off == 0 {
            ("unallocated".to_string(), Color::DarkGray)
        } else {
            (format!("L2 @0x{:x}{}", off, if e >> 63 != 0 { " C" } else { "" }), Color::LightCyan)
        };
        let style = if i == st.l1_sel { theme::selected(st) } else { theme::fg(st, color) };
        lines.push(Line::from(vec![Span::raw(format!("[{:>4}] ", i)), Span::styled(text, style)]));
    }
    let title = format!(" L1 — {} entries @0x{:x} ", q.header.l1_size, q.header.l1_table_offset);
    f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
}

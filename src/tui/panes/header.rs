//! Header pane: every decoded field of the VHD footer and dynamic header, or the qcow2
//! header and extensions: offset, name, raw bytes, value (with checksum verdicts).

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{block, inner_rows, scroll_to};
use crate::image::region::hex_bytes;
use crate::image::Image;
use crate::tui::state::{AppState, Pane};
use crate::tui::theme;
use ratatui::style::Color;

pub fn first_row(st: &AppState, r: Rect) -> usize {
    scroll_to(st.header_sel, inner_rows(r), st.header.len())
}

pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    let focused = st.focus == Pane::Header;
    let title = format!(" Header — {} ({}) ", st.image_name, img.format().qemu_name());
    let rows = inner_rows(r);
    let first = first_row(st, r);
    let mut lines = Vec::new();
    if st.header.is_empty() {
        lines.push(Line::from("raw image: no metadata"));
    }
    let mut last_group = None;
    for (i, h) in st.header.iter().enumerate().skip(first).take(rows) {
        // the bytes were read into the view model (view.rs)
        let raw = st.view.header_raw.get(i).map(|r| hex_bytes(r)).unwrap_or_default();
        let raw = raw + if h.field.len > 8 { "…" } else { "" };
        let group_mark = if last_group != Some(&h.group) { "▸" } else { " " };
        last_group = Some(&h.group);
        let verdict_bad = h.field.value.contains("BAD");
        let style = if i == st.header_sel { theme::selected(st) } else { ratatui::style::Style::default() };
        lines.push(
            Line::from(vec![
                Span::styled(format!("{}{:06x} ", group_mark, h.field.off), theme::fg(st, Color::DarkGray)),
                Span::styled(format!("{:<24.24} ", h.field.name), theme::fg(st, Color::Cyan)),
                Span::styled(format!("{:<17.17} ", raw), theme::fg(st, Color::Gray)),
                Span::styled(
                    h.field.value.clone(),
                    theme::fg(st, if verdict_bad { Color::Red } else { Color::White }),
                ),
            ])
            .style(style),
        );
    }
    f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
}

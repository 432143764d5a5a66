//! The data inspector pane (`I`): the bytes at the hex cursor read as integers of each width
//! and byte order, floats, GUIDs, and time stamps, and where the cursor is (structure, field).
//! The readings were made in the view model (view.rs); this draws them.

use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::block;
use crate::tui::state::{AppState, Pane, Space};
use crate::tui::theme;

pub fn draw(f: &mut Frame, st: &AppState, r: Rect) {
    let focused = st.focus == Pane::Inspector;
    let label_w = st.view.inspector.iter().map(|x| x.label.len()).max().unwrap_or(0);
    // where first: the structure and field matter most when the pane is short
    let mut lines: Vec<Line> =
        st.view.inspector_at.iter().map(|at| Line::from(Span::styled(at.clone(), theme::fg(st, Color::DarkGray)))).collect();
    lines.extend(st.view.inspector.iter()
        .map(|x| {
            Line::from(vec![
                Span::styled(format!("{:<w$} ", x.label, w = label_w), theme::fg(st, Color::Cyan)),
                Span::styled(if x.value.is_empty() { "—".to_string() } else { x.value.clone() }, theme::fg(st, Color::White)),
            ])
        }));
    let space = match st.space {
        Space::Virt => "guest",
        Space::File => "file",
    };
    let title = format!(" Inspector — {} 0x{:x} ", space, st.cursor);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(st, title, focused)), r);
}

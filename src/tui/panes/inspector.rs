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
    let inner = r.width.saturating_sub(2) as usize;
    let rows = &st.view.inspector;
    let value = |x: &crate::tui::inspector::Row| if x.value.is_empty() { "—".to_string() } else { x.value.clone() };
    let label = |t: &str| Span::styled(t.to_string(), theme::fg(st, Color::Cyan));
    let val = |t: String| Span::styled(t, theme::fg(st, Color::White));
    let mut i = 0;
    while i < rows.len() {
        let x = &rows[i];
        // wide enough: a little- and big-endian pair (or u8 and i8) on one line
        let pair = rows.get(i + 1).filter(|y| {
            inner >= 52
                && value(x).chars().count() <= 20
                && value(y).chars().count() <= 23
                && ((x.label.ends_with(" LE") && y.label.ends_with(" BE") && x.label[..x.label.len() - 3] == y.label[..y.label.len() - 3])
                    || (x.label == "u8" && y.label == "i8"))
        });
        if let Some(y) = pair {
            let (base, a, b) = if x.label == "u8" { ("u8", "  ", "i8") } else { (&x.label[..x.label.len() - 3], "LE", "BE") };
            lines.push(Line::from(vec![
                label(&format!("{:<3} {} ", base, a)),
                val(format!("{:<21} ", value(x))),
                label(&format!("{} ", b)),
                val(value(y)),
            ]));
            i += 2;
        } else {
            lines.push(Line::from(vec![label(&format!("{:<w$} ", x.label, w = label_w)), val(value(x))]));
            i += 1;
        }
    }
    let space = match st.space {
        Space::Virt => "guest",
        Space::File => "file",
    };
    let title = format!(" Inspector — {} 0x{:x} ", space, st.cursor);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block(st, title, focused)), r);
}

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
    // where first: the structure and field matter most when the pane is short
    let inner = r.width.saturating_sub(2) as usize;
    let narrow = inner < 52;
    // narrow: the offsets are in the title and the status line already
    let mut lines: Vec<Line> =
        st.view.inspector_at.iter().skip(if narrow { 1 } else { 0 }).map(|at| Line::from(Span::styled(at.clone(), theme::fg(st, Color::DarkGray)))).collect();
    let mut rows = merged(&st.view.inspector);
    // what disk metadata holds most after the integers: time stamps and GUIDs, floats last
    rows.sort_by_key(|(l, _)| match l.as_str() {
        l if l.starts_with('f') => 3,
        l if l.starts_with("GUID") => 2,
        l if l.starts_with('u') || l.starts_with('i') => 0,
        _ => 1,
    });
    if narrow {
        for (l, _) in rows.iter_mut() {
            let short = match l.as_str() {
                "Unix time u32 LE" => "unix32",
                "Unix time i64 LE" => "unix64",
                "VHD time stamp" => "VHD time",
                "DOS date-time" => "DOS time",
                "GUID (mixed)" => "GUID ms",
                "GUID (big)" => "GUID be",
                _ => continue,
            };
            *l = short.to_string();
        }
    }
    let label_w = rows.iter().map(|x| x.0.chars().count()).max().unwrap_or(0);
    let label = |t: &str| Span::styled(t.to_string(), theme::fg(st, Color::Cyan));
    let val = |t: &str| Span::styled(t.to_string(), theme::fg(st, Color::White));
    let mut i = 0;
    while i < rows.len() {
        let (xl, xv) = &rows[i];
        // wide enough: a little- and big-endian pair on one line
        let pair = rows.get(i + 1).filter(|(yl, yv)| {
            xv.chars().count() <= 20
                && inner >= 9 + 21 + 3 + yv.chars().count()
                && xl.ends_with(" LE")
                && yl.ends_with(" BE")
                && xl[..xl.len() - 3] == yl[..yl.len() - 3]
        });
        if let Some((_, yv)) = pair {
            let base = &xl[..xl.len() - 3];
            lines.push(Line::from(vec![label(&format!("{:<5} LE ", base)), val(&format!("{:<21}", xv)), label("BE "), val(yv)]));
            i += 2;
        } else {
            lines.push(Line::from(vec![label(&format!("{:<w$} ", xl, w = label_w)), val(xv)]));
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

/// The rows to show: a signed reading equal to its unsigned one is not repeated (its label
/// says `u/i`); an empty reading (too few bytes) shows as a dash.
fn merged(rows: &[crate::tui::inspector::Row]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in rows {
        let v = if r.value.is_empty() { "—".to_string() } else { r.value.clone() };
        if let Some(rest) = r.label.strip_prefix('i') {
            let u = format!("u{}", rest);
            if let Some(o) = out.iter_mut().find(|(l, _)| *l == u) {
                if o.1 == v {
                    o.0 = format!("u/i{}", rest);
                    continue;
                }
            }
        }
        out.push((r.label.to_string(), v));
    }
    out
}

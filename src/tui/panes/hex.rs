//! Hex pane: offset, 16 bytes, ASCII; each byte coloured by the structure (file space) or
//! the layer and kind (guest space) it belongs to, as the image model says.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::image::Image;
use crate::tui::state::{AppState, Pane, Space};
use crate::tui::theme;

/// The rows come from the view model (view.rs); staged bytes, highlights and the cursor are
/// laid over from the state.
pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    let focused = st.focus == Pane::Hex;
    let mut lines = Vec::new();
    for hr in &st.view.hex {
        let (row, n, colors) = (hr.off, hr.n, &hr.colors);
        let mut spans = vec![Span::styled(format!("{:08x}  ", row), theme::fg(st, Color::DarkGray))];
        let mut ascii = Vec::new();
        for (j, b) in hr.bytes.iter().enumerate().take(16) {
            if j == 8 {
                spans.push(Span::raw(" "));
            }
            if j >= n {
                spans.push(Span::raw("   "));
                continue;
            }
            let off = row + j as u64;
            let staged = st.staged_at(off);
            let b = &staged.unwrap_or(*b);
            let mut style = theme::fg(st, colors[j]);
            if st.space == Space::Virt && st.highlighted(off) {
                style = style.add_modifier(Modifier::UNDERLINED | Modifier::BOLD);
                if !st.no_color {
                    style = style.bg(Color::Indexed(22));
                }
            }
            if staged.is_some() {
                style = theme::fg(st, Color::LightRed).add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
            }
            if off == st.cursor {
                style = theme::selected(st).add_modifier(Modifier::BOLD);
            }
            let text = if !hr.unreadable || staged.is_some() { format!("{:02x}", b) } else { "??".into() };
            spans.push(Span::styled(text, style));
            spans.push(Span::raw(" "));
            let ch = if (0x20..0x7f).contains(b) { *b as char } else { '.' };
            ascii.push(Span::styled(ch.to_string(), style));
        }
        spans.push(Span::raw("|"));
        spans.extend(ascii);
        spans.push(Span::raw("|"));
        lines.push(Line::from(spans));
    }
    let space = match st.space {
        Space::Virt => "guest".to_string(),
        Space::File => format!("file {}", img.layers[st.file_layer].name),
    };
    let mode = match st.edit {
        Some(e) if e.ascii => " — EDIT (ascii)",
        Some(_) => " — EDIT (hex)",
        None => "",
    };
    let title = format!(" Hex — {} space{} ", space, mode);
    f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
}

/// The status line's cursor description, from the view model.
pub fn status(st: &AppState) -> Vec<Span<'static>> {
    vec![Span::styled(st.view.status.clone(), Style::default())]
}

/// What the status line says about the cursor: guest and file offsets, the unit, the
/// structure. Reads the image: the view model calls it when the cursor moves.
pub fn status_text(st: &AppState, img: &Image) -> String {
    let mut parts = Vec::new();
    let virt = crate::tui::update::current_virt(st, img);
    let file = match st.space {
        Space::File => Some((st.file_layer, st.cursor)),
        Space::Virt => img.to_file(st.cursor).ok().flatten(),
    };
    parts.push(match virt {
        Some(v) => format!("guest 0x{:x}", v),
        None => "guest —".into(),
    });
    parts.push(match file {
        Some((l, o)) => format!("file 0x{:x} (layer {} {})", o, l, img.layers[l].name),
        None => "file — (zero/unallocated)".into(),
    });
    if let Some(v) = virt {
        if let Ok(e) = img.resolve(v, 1) {
            parts.push(format!("{} {} {} at depth {}", img.unit_name(), img.unit_of(v), e.kind_name(), e.depth));
        }
    }
    if let Some(r) = virt.and_then(|v| st.guest_region(v)) {
        let v = virt.unwrap_or(0);
        let field = r
            .field_at(v)
            .map(|f| if f.value.is_empty() { format!(" / {}", f.name) } else { format!(" / {} = {}", f.name, f.value) })
            .unwrap_or_default();
        parts.push(format!("guest: {}{}", r.name, field));
    }
    if let Some((l, o)) = file {
        if let Ok(r) = img.locate_host(l, o) {
            let field = r.field_at(o).map(|f| format!(" / {}", f.name)).unwrap_or_default();
            parts.push(format!("{}{}", r.name, field));
        }
    }
    parts.join(" │ ")
}

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
            if st.selection().is_some_and(|(a, b)| off >= a && off <= b) {
                style = if st.no_color { style.add_modifier(Modifier::REVERSED) } else { style.bg(Color::Indexed(24)).fg(Color::White) };
            }
            if st.view.matches.iter().any(|&(m, l)| off >= m && off - m < l) {
                style = if st.no_color {
                    style.add_modifier(Modifier::UNDERLINED | Modifier::REVERSED)
                } else {
                    style.bg(Color::Yellow).fg(Color::Black)
                };
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

/// What the status line says about the cursor, in one string.
pub fn status_text(st: &AppState, img: &Image) -> String {
    status_parts(st, img).into_iter().map(|p| p.long).collect::<Vec<_>>().join(" │ ")
}

/// One part of the status line: its full form, a short one for narrow terminals, and how
/// much it is worth its place (higher: kept longer when the line is too long).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub long: String,
    pub short: String,
    pub worth: u8,
    /// When the long form gives way to the short one: lower first.
    pub shorten: u8,
}

impl Part {
    pub fn new(long: String, short: String, worth: u8) -> Part {
        Part { long, short, worth, shorten: worth }
    }
    pub fn shorten_at(mut self, n: u8) -> Part {
        self.shorten = n;
        self
    }
}

/// The selection in both spaces: `sel guest 0x10–0x2f · file 0xa10–0xa2f · 32 bytes`.
fn selection_part(st: &AppState, img: &Image, a: u64, b: u64) -> Part {
    let len = b - a + 1;
    let other = |o: u64| -> Option<u64> {
        match st.space {
            Space::Virt => img.to_file(o).ok().flatten().map(|(_, f)| f),
            Space::File => img.to_virt(st.file_layer, o).ok().flatten(),
        }
    };
    let (here, there) = match st.space {
        Space::Virt => ("guest", "file"),
        Space::File => ("file", "guest"),
    };
    let mut long = format!("sel {} 0x{:x}–0x{:x}", here, a, b);
    match (other(a), other(b)) {
        (Some(x), Some(y)) => long += &format!(" · {} 0x{:x}–0x{:x}", there, x, y),
        (Some(x), None) => long += &format!(" · {} 0x{:x}–?", there, x),
        (None, Some(y)) => long += &format!(" · {} ?–0x{:x}", there, y),
        (None, None) => long += &format!(" · {} —", there),
    }
    long += &format!(" · {} bytes", len);
    Part::new(long, format!("sel 0x{:x}–0x{:x} ({} B)", a, b, len), 10)
}

/// What the status line says about the cursor: guest and file offsets, the unit, the
/// structure. Reads the image: the view model calls it when the cursor moves.
pub fn status_parts(st: &AppState, img: &Image) -> Vec<Part> {
    let mut parts = Vec::new();
    if let Some((a, b)) = st.selection() {
        parts.push(selection_part(st, img, a, b));
    }
    let virt = crate::tui::update::current_virt(st, img);
    let file = match st.space {
        Space::File => Some((st.file_layer, st.cursor)),
        Space::Virt => img.to_file(st.cursor).ok().flatten(),
    };
    let g = match virt {
        Some(v) => format!("guest 0x{:x}", v),
        None => "guest —".into(),
    };
    parts.push(Part::new(g.clone(), g, 9));
    parts.push(match file {
        Some((l, o)) => Part::new(format!("file 0x{:x} (layer {} {})", o, l, img.layers[l].name), format!("file 0x{:x}", o), 8).shorten_at(0),
        None => Part::new("file — (zero/unallocated)".into(), "file —".into(), 8),
    });
    if let Some(v) = virt {
        if let Ok(e) = img.resolve(v, 1) {
            parts.push(Part::new(
                format!("{} {} {} at depth {}", img.unit_name(), img.unit_of(v), e.kind_name(), e.depth),
                format!("{} {} {}", img.unit_name(), img.unit_of(v), e.kind_name()),
                5,
            )
            .shorten_at(0));
        }
    }
    if let Some(r) = virt.and_then(|v| st.guest_region(v)) {
        let v = virt.unwrap_or(0);
        let field = r
            .field_at(v)
            .map(|f| if f.value.is_empty() { format!(" / {}", f.name) } else { format!(" / {} = {}", f.name, f.value) })
            .unwrap_or_default();
        let short = r.field_at(v).map(|f| format!("{} / {}", r.name, f.name)).unwrap_or_else(|| r.name.clone());
        parts.push(Part::new(format!("guest: {}{}", r.name, field), short, 4));
    }
    if let Some((l, o)) = file {
        if let Ok(r) = img.locate_host(l, o) {
            let field = r.field_at(o).map(|f| format!(" / {}", f.name)).unwrap_or_default();
            let s = format!("{}{}", r.name, field);
            parts.push(Part::new(s.clone(), s, 6));
        }
    }
    parts
}

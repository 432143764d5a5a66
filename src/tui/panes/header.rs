//! Header pane: every decoded field of the VHD footer and dynamic header, or the qcow2
//! header and extensions: offset, name, raw bytes, value (with checksum verdicts).
//!
//! A decoded value is never cut: when the pane is narrow the raw-hex column goes first, then
//! the offsets shrink (relative to their structure), then go, and a value still too long
//! wraps onto lines of its own under the value column.

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

/// How the offset column is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offsets {
    /// `200a18`: the file offset.
    Full,
    /// `+018`: from the start of the field's structure.
    Relative,
    None,
}

/// The columns for an inner width: what is shown and how wide the value column is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cols {
    pub offsets: Offsets,
    pub name: usize,
    pub raw: bool,
    pub value: usize,
}

const RAW: usize = 17 + 1;

/// A value longer than this is a long one (a byte dump, a file name): it may wrap rather
/// than take the offsets' room.
const LONG: usize = 48;

/// Inner widths the pane needs to show every value whole with full offsets: without and
/// with the raw-hex column.
pub fn widths(st: &AppState) -> (usize, usize) {
    let name = st.header.iter().map(|h| h.field.name.chars().count()).max().unwrap_or(0).min(24) + 1;
    let want = st.header.iter().map(|h| h.field.value.chars().count()).max().unwrap_or(0).max(1);
    (8 + name + want, 8 + name + want + RAW)
}

pub fn cols(st: &AppState, width: usize) -> Cols {
    let name = st.header.iter().map(|h| h.field.name.chars().count()).max().unwrap_or(0).min(24) + 1;
    let want = st.header.iter().map(|h| h.field.value.chars().count()).max().unwrap_or(0).max(1);
    let off_w = |o: Offsets| match o {
        Offsets::Full => 8,
        Offsets::Relative => 6,
        Offsets::None => 1,
    };
    for (offsets, raw) in [(Offsets::Full, true), (Offsets::Full, false), (Offsets::Relative, false), (Offsets::None, false)] {
        let fixed = off_w(offsets) + name + if raw { RAW } else { 0 };
        if fixed + want <= width {
            return Cols { offsets, name, raw, value: want };
        }
    }
    // some value wraps: only the long ones (a dump of bytes, a path) if the offsets can stay,
    // else fewer columns; never less than 12 for the values
    let usual = st.header.iter().map(|h| h.field.value.chars().count()).filter(|&n| n <= LONG).max().unwrap_or(0).max(1);
    for offsets in [Offsets::Full, Offsets::Relative] {
        let value = width.saturating_sub(off_w(offsets) + name);
        if value >= usual {
            return Cols { offsets, name, raw: false, value };
        }
    }
    let fixed = off_w(Offsets::None) + name;
    Cols { offsets: Offsets::None, name, raw: false, value: width.saturating_sub(fixed).max(12) }
}

/// The screen lines of the pane: (field index, part of its value) for every field.
fn lines_of(st: &AppState, c: Cols) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, h) in st.header.iter().enumerate() {
        let n = h.field.value.chars().count().div_ceil(c.value).max(1);
        out.extend((0..n).map(|p| (i, p)));
    }
    out
}

fn layout(st: &AppState, r: Rect) -> (Cols, Vec<(usize, usize)>, usize) {
    let c = cols(st, r.width.saturating_sub(2) as usize);
    let lines = lines_of(st, c);
    let sel_line = lines.iter().position(|&(i, _)| i == st.header_sel).unwrap_or(0);
    // the whole selected field in view: scroll to its last line, then back to its first
    let sel_end = lines.iter().rposition(|&(i, _)| i == st.header_sel).unwrap_or(0);
    let rows = inner_rows(r);
    let mut first = scroll_to(sel_line, rows, lines.len());
    if sel_end >= first + rows {
        first = (sel_end + 1).saturating_sub(rows).min(sel_line);
    }
    (c, lines, first)
}

/// The field shown on row `row` (inside the border) of the pane at `r`.
pub fn field_at_row(st: &AppState, r: Rect, row: usize) -> Option<usize> {
    let (_, lines, first) = layout(st, r);
    lines.get(first + row).map(|&(i, _)| i)
}

pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    let focused = st.focus == Pane::Header;
    let title = format!(" Header — {} ({}) ", st.image_name, img.format().qemu_name());
    let rows = inner_rows(r);
    let (c, all, first) = layout(st, r);
    let mut lines = Vec::new();
    if st.header.is_empty() {
        lines.push(Line::from("raw image: no metadata"));
    }
    for &(i, part) in all.iter().skip(first).take(rows) {
        let h = &st.header[i];
        let group_start = st.header[..=i].iter().rev().take_while(|g| g.group == h.group).last().map(|g| g.field.off).unwrap_or(0);
        let new_group = i == 0 || st.header[i - 1].group != h.group;
        let group_mark = if new_group && part == 0 { "▸" } else { " " };
        let verdict_bad = h.field.value.contains("BAD");
        let style = if i == st.header_sel { theme::selected(st) } else { ratatui::style::Style::default() };
        let off = match (c.offsets, part) {
            (_, p) if p > 0 => " ".repeat(match c.offsets {
                Offsets::Full => 7,
                Offsets::Relative => 5,
                Offsets::None => 0,
            }),
            (Offsets::Full, _) => format!("{:06x} ", h.field.off),
            (Offsets::Relative, _) => format!("+{:03x} ", h.field.off.saturating_sub(group_start).min(0xfff)),
            (Offsets::None, _) => String::new(),
        };
        let name = if part == 0 { h.field.name.chars().take(c.name - 1).collect::<String>() } else { String::new() };
        let mut spans = vec![
            Span::styled(format!("{}{}", group_mark, off), theme::fg(st, Color::DarkGray)),
            Span::styled(format!("{:<w$}", name, w = c.name), theme::fg(st, Color::Cyan)),
        ];
        if c.raw {
            // the bytes were read into the view model (view.rs)
            let raw = st.view.header_raw.get(i).map(|r| hex_bytes(r)).unwrap_or_default();
            let raw = raw + if h.field.len > 8 { "…" } else { "" };
            spans.push(Span::styled(format!("{:<17.17} ", raw), theme::fg(st, Color::Gray)));
        }
        let value: String = h.field.value.chars().skip(part * c.value).take(c.value).collect();
        spans.push(Span::styled(value, theme::fg(st, if verdict_bad { Color::Red } else { Color::White })));
        lines.push(Line::from(spans).style(style));
    }
    f.render_widget(Paragraph::new(lines).block(block(st, title, focused)), r);
}

//! Colours by meaning, in one place; NO_COLOR turns them all off.

use ratatui::style::{Color, Modifier, Style};

use super::config::Theme;
use super::state::AppState;
use crate::image::summary::UnitKind;
use crate::image::LayerKind;

/// A colour as the theme shows it: the light theme darkens what is meant for a dark
/// background; the high-contrast one brightens the dim greys and plain colours.
pub fn themed(theme: Theme, c: Color) -> Color {
    match (theme, c) {
        (Theme::Default, c) => c,
        (Theme::Light, Color::White) => Color::Black,
        (Theme::Light, Color::Gray) => Color::DarkGray,
        (Theme::Light, Color::DarkGray) => Color::Indexed(244),
        (Theme::Light, Color::LightYellow) => Color::Indexed(136),
        (Theme::Light, Color::Yellow) => Color::Indexed(130),
        (Theme::Light, Color::LightCyan) => Color::Indexed(30),
        (Theme::Light, Color::Cyan) => Color::Indexed(24),
        (Theme::Light, Color::LightGreen) => Color::Green,
        (Theme::Light, Color::LightMagenta) => Color::Magenta,
        (Theme::Light, c) => c,
        (Theme::HighContrast, Color::DarkGray | Color::Gray) => Color::White,
        (Theme::HighContrast, Color::Green) => Color::LightGreen,
        (Theme::HighContrast, Color::Cyan) => Color::LightCyan,
        (Theme::HighContrast, Color::Blue) => Color::LightBlue,
        (Theme::HighContrast, Color::Magenta) => Color::LightMagenta,
        (Theme::HighContrast, Color::Red) => Color::LightRed,
        (Theme::HighContrast, Color::Yellow) => Color::LightYellow,
        (Theme::HighContrast, c) => c,
    }
}

pub fn fg(st: &AppState, c: Color) -> Style {
    if st.no_color {
        Style::default()
    } else {
        Style::default().fg(themed(st.theme, c))
    }
}

pub fn selected(st: &AppState) -> Style {
    if st.no_color {
        Style::default().add_modifier(Modifier::REVERSED)
    } else if st.theme == Theme::HighContrast {
        Style::default().bg(Color::LightYellow).fg(Color::Black).add_modifier(Modifier::BOLD)
    } else {
        Style::default().bg(Color::Blue).fg(Color::White).add_modifier(Modifier::BOLD)
    }
}

pub fn border(st: &AppState, focused: bool) -> Style {
    if focused {
        fg(st, Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        fg(st, Color::Gray)
    }
}

/// Colour of a host-file structure.
pub fn structure(name: &str) -> Color {
    match name {
        "footer" | "footer-copy" => Color::Yellow,
        "dynamic-header" | "header" => Color::LightYellow,
        "header-extension" => Color::LightMagenta,
        "parent-locator" => Color::LightGreen,
        "bat" | "l1" | "gd" | "rgd" | "block-map" => Color::Cyan,
        "l2" | "gt" | "rgt" => Color::LightCyan,
        "descriptor" => Color::LightYellow,
        "marker" => Color::LightRed,
        "bitmap" => Color::Magenta,
        "refcount-table" | "refcount-block" => Color::LightBlue,
        "snapshot-table" | "bitmap-directory" | "crypto-header" => Color::LightRed,
        "data" => Color::Green,
        "mbr" | "gpt-header" => Color::Yellow,
        "gpt-entries" => Color::Cyan,
        "ext-superblock" => Color::LightMagenta,
        "compressed" => Color::Red,
        _ => Color::DarkGray,
    }
}

pub fn depth(d: usize) -> Color {
    [Color::Green, Color::Blue, Color::Magenta, Color::Cyan, Color::LightBlue][d.min(4)]
}

/// Colour of a guest extent.
pub fn extent(kind: &LayerKind, d: usize) -> Color {
    match kind {
        LayerKind::Data { .. } | LayerKind::Opaque => depth(d),
        LayerKind::ZeroData { .. } | LayerKind::Zero { .. } => Color::Gray,
        LayerKind::Unallocated { .. } => Color::DarkGray,
        LayerKind::Compressed { .. } => Color::Red,
    }
}

/// Glyph pair and colour of a grid cell.
pub fn unit(kind: &UnitKind) -> (&'static str, Color) {
    match kind {
        UnitKind::Unallocated => ("··", Color::DarkGray),
        UnitKind::Data { depth: 0 } => ("██", Color::Green),
        UnitKind::Data { depth: d } => (["██", "▒1", "▒2", "▒3", "▒4", "▒+"][(*d).min(5)], depth(*d)),
        UnitKind::Partial => ("▓▓", Color::Yellow),
        UnitKind::Shared => ("SS", Color::LightMagenta),
        UnitKind::Zero { .. } => ("00", Color::Gray),
        UnitKind::Compressed { .. } => ("CC", Color::Red),
        UnitKind::Mixed { depth: d } => ("░░", depth(*d)),
    }
}

/// The grid legend: kind, long name, short name (for narrow panes).
pub fn legend() -> Vec<(UnitKind, &'static str, &'static str)> {
    vec![
        (UnitKind::Data { depth: 0 }, "allocated", "alloc"),
        (UnitKind::Unallocated, "unallocated", "unalloc"),
        (UnitKind::Zero { depth: 0 }, "zero", "zero"),
        (UnitKind::Data { depth: 1 }, "backing depth n", "depth n"),
        (UnitKind::Partial, "partial", "part"),
        (UnitKind::Compressed { depth: 0 }, "compressed", "comp"),
        (UnitKind::Shared, "shared", "shared"),
    ]
}

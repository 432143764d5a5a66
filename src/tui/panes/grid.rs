//! BAT (VHD) / L2 (QCOW2) grid: one cell per block or cluster, coloured by what the chain
//! holds there. Only visible cells are computed.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::image::qcow2::check::{ClusterRole, HostMap};
use crate::image::Image;
use crate::tui::layout::{grid_geom, grid_shape};
use crate::tui::state::{AppState, Pane};
use crate::tui::theme;

pub fn title(img: &Image) -> &'static str {
    img.top().table_name()
}

/// First grid row shown: keeps the selected cell in view.
pub fn first_row(st: &AppState, img: &Image) -> u64 {
    let (cols, rows) = grid_shape(st, img);
    let total_rows = st.grid_units(img).div_ceil(cols);
    let sel_row = st.grid_sel / cols;
    if total_rows <= rows || sel_row < rows / 2 {
        0
    } else {
        (sel_row - rows / 2).min(total_rows - rows)
    }
}

/// Glyph pair and colour of a host cluster by role; a refcount that disagrees with the
/// references found shows as damage.
fn role_cell(m: &HostMap, c: u64) -> (&'static str, Color) {
    if m.mismatch(c) && m.role(c) != ClusterRole::Leaked {
        return ("XX", Color::LightRed);
    }
    match m.role(c) {
        ClusterRole::Free => ("··", Color::DarkGray),
        ClusterRole::Header => ("HH", Color::LightYellow),
        ClusterRole::L1 | ClusterRole::SnapshotL1 => ("L1", Color::Cyan),
        ClusterRole::L2 | ClusterRole::SnapshotL2 => ("L2", Color::LightCyan),
        ClusterRole::RefcountTable | ClusterRole::RefcountBlock => ("RC", Color::LightBlue),
        ClusterRole::SnapshotTable => ("SN", Color::LightRed),
        ClusterRole::BitmapDirectory | ClusterRole::BitmapTable | ClusterRole::BitmapData => ("BM", Color::Magenta),
        ClusterRole::CryptoHeader => ("EN", Color::Yellow),
        ClusterRole::Data => ("██", Color::Green),
        ClusterRole::Compressed => ("CC", Color::Red),
        ClusterRole::Leaked => ("!!", Color::LightRed),
    }
}

/// The visible rows of cells, `cell(unit)` giving each glyph pair and colour; the selected
/// cell drawn as selected. Guest and host views share it. Cells larger than two characters
/// (few units) repeat their glyphs, with a gap column and row between cells.
fn cell_lines(st: &AppState, img: &Image, units: u64, cell: impl Fn(u64) -> (&'static str, Color)) -> Vec<Line<'static>> {
    let g = grid_geom(st, units);
    let first = first_row(st, img);
    let mut lines = Vec::new();
    for row in first..first + g.rows {
        let mut spans = Vec::new();
        for u in (row * g.cols..(row + 1) * g.cols).take_while(|&u| u < units) {
            let (glyph, color) = cell(u);
            let style = if u == st.grid_sel { theme::selected(st).add_modifier(Modifier::BOLD) } else { theme::fg(st, color) };
            if g.cw == 2 {
                spans.push(Span::styled(glyph, style));
            } else {
                // a glyph of one repeated character fills the cell; a label ("L2") stays whole
                let mut ch = glyph.chars();
                let (a, b) = (ch.next().unwrap_or(' '), ch.next().unwrap_or(' '));
                let text: String = if a == b {
                    std::iter::repeat_n(a, g.cw as usize - 1).collect()
                } else {
                    format!("{:<w$}", glyph, w = g.cw as usize - 1)
                };
                spans.push(Span::styled(text, style));
                spans.push(Span::raw(" "));
            }
        }
        let line = Line::from(spans);
        for _ in 0..g.ch.saturating_sub(1).max(1) {
            lines.push(line.clone());
        }
        if g.ch > 1 {
            lines.push(Line::from(""));
        }
    }
    lines
}

/// The legend in the pane's width: long names, else short ones, else the entries least worth
/// their place dropped (kinds not on screen first, then from the end).
pub fn fit_legend(st: &AppState, items: &[(&'static str, &'static str, &'static str, Color)], shown: &[&str], width: usize) -> Line<'static> {
    let len = |v: &[usize], short: bool| -> usize {
        v.iter().map(|&i| items[i].0.chars().count() + 1 + if short { items[i].2 } else { items[i].1 }.chars().count() + 2).sum::<usize>()
    };
    let all: Vec<usize> = (0..items.len()).collect();
    let on_screen: Vec<usize> = all.iter().copied().filter(|&i| shown.contains(&items[i].0)).collect();
    // everything in long form, in short form, what is on screen in long, then in short form;
    // then entries go from the end
    let (mut keep, short) = [(&all, false), (&all, true), (&on_screen, false), (&on_screen, true)]
        .into_iter()
        .find(|(k, s)| !k.is_empty() && len(k, *s) <= width)
        .map(|(k, s)| (k.clone(), s))
        .unwrap_or_else(|| (if on_screen.is_empty() { all.clone() } else { on_screen.clone() }, true));
    while len(&keep, short) > width && keep.len() > 1 {
        keep.pop();
    }
    let mut spans = Vec::new();
    for i in keep {
        let (g, long, sh, c) = items[i];
        spans.push(Span::styled(g, theme::fg(st, c)));
        spans.push(Span::raw(format!(" {}  ", if short { sh } else { long })));
    }
    Line::from(spans)
}

fn draw_host(f: &mut Frame, st: &AppState, img: &Image, m: &HostMap, r: Rect) {
    let focused = st.focus == Pane::Grid;
    let units = m.len() as u64;
    let mut lines = cell_lines(st, img, units, |u| role_cell(m, u));
    lines.push(Line::from(""));
    let legend = [
        ("HH", "header", "hdr", Color::LightYellow),
        ("L1", "L1", "L1", Color::Cyan),
        ("L2", "L2", "L2", Color::LightCyan),
        ("RC", "refcounts", "rc", Color::LightBlue),
        ("SN", "snapshots", "snap", Color::LightRed),
        ("BM", "bitmaps", "bm", Color::Magenta),
        ("██", "data", "data", Color::Green),
        ("CC", "compressed", "comp", Color::Red),
        ("··", "free", "free", Color::DarkGray),
        ("!!", "leaked", "leak", Color::LightRed),
        ("XX", "refcount wrong", "rc bad", Color::LightRed),
    ];
    let shown: Vec<&str> = (0..units).map(|u| role_cell(m, u).0).collect();
    lines.push(fit_legend(st, &legend, &shown, r.width.saturating_sub(2) as usize));
    let c = st.grid_sel;
    let t = format!(
        " L2 — host view: cluster {} of {} ({}, refcount {}, {} reference(s)) — o: guest view ",
        c,
        units,
        m.role(c).name(),
        m.refcounts.get(c as usize).copied().unwrap_or(0),
        m.references.get(c as usize).copied().unwrap_or(0)
    );
    f.render_widget(Paragraph::new(lines).block(block(st, t, focused)), r);
}

pub fn draw(f: &mut Frame, st: &AppState, img: &Image, r: Rect) {
    if let (true, Some(m)) = (st.grid_host, &st.host_map) {
        return draw_host(f, st, img, m, r);
    }
    let focused = st.focus == Pane::Grid;
    let units = img.unit_count();
    // the visible cells were read into the view model (view.rs); a cell outside it (a frame
    // drawn before the model caught up) shows blank
    let (first, cells) = (st.view.grid_first, &st.view.grid_cells);
    let mut lines = cell_lines(st, img, units, |u| u.checked_sub(first).and_then(|i| cells.get(i as usize).copied()).unwrap_or(("  ", Color::Reset)));
    lines.push(Line::from(""));
    let legend: Vec<_> = theme::legend()
        .into_iter()
        .map(|(k, long, short)| {
            let (g, c) = theme::unit(&k);
            (g, long, short, c)
        })
        .collect();
    let shown: Vec<&str> = cells.iter().map(|c| c.0).collect();
    lines.push(fit_legend(st, &legend, &shown, r.width.saturating_sub(2) as usize));
    let sel_kind = &st.view.grid_sel_kind;
    let t = format!(
        " {} — {} {} of {} ({} bytes each): {} ",
        title(img),
        img.unit_name(),
        st.grid_sel,
        units,
        img.unit_size(),
        sel_kind
    );
    f.render_widget(Paragraph::new(lines).block(block(st, t, focused)), r);
}

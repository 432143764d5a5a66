//! `draw(frame, &state, &image)`: the whole screen from state; nothing here changes anything.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::layout::screen;
use super::panes;
use super::state::{AppState, Dialog, Pane};
use super::theme;
use crate::image::Image;

pub fn draw(f: &mut Frame, st: &AppState, img: &Image) {
    let scr = screen(st);
    for (pane, r) in &scr.panes {
        match pane {
            Pane::Header => panes::header::draw(f, st, img, *r),
            Pane::L1 => panes::l1::draw(f, st, img, *r),
            Pane::Grid => panes::grid::draw(f, st, img, *r),
            Pane::Hex => panes::hex::draw(f, st, img, *r),
            Pane::Bitmap => panes::heatmap::draw(f, st, img, *r),
            Pane::Inspector => panes::inspector::draw(f, st, *r),
        }
    }
    for (r, tabs, shown) in &scr.tabs {
        tab_bar(f, st, img, *r, tabs, *shown);
    }
    f.render_widget(Paragraph::new(status_line(st, scr.status.width as usize)), scr.status);
    if let Some(d) = st.dialog {
        dialog(f, st, d);
    }
    if let Some(p) = &st.picker {
        picker(f, st, p);
    }
    if let Some(p) = &st.popup {
        popup(f, st, p);
    }
    if st.confirm_quit {
        let r = centered(f.area(), 70, 3);
        f.render_widget(Clear, r);
        let text = format!("{} staged byte(s) not saved: y quit without saving · s save and quit · other key: stay", st.staged_count());
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Unsaved edits ").border_style(theme::border(st, true))),
            r,
        );
    }
}

/// A pane's name on a tab.
pub fn pane_name(img: &Image, p: Pane) -> &'static str {
    match p {
        Pane::Header => "Header",
        Pane::L1 => "L1",
        Pane::Grid => panes::grid::title(img),
        Pane::Hex => "Hex",
        Pane::Bitmap => "Bitmap",
        Pane::Inspector => "Inspector",
    }
}

/// The panes sharing a place: the one shown highlighted, and how to reach the others.
fn tab_bar(f: &mut Frame, st: &AppState, img: &Image, r: Rect, tabs: &[Pane], shown: Pane) {
    let mut spans = Vec::new();
    let mut used = 0;
    for p in tabs {
        let text = format!(" {} ", pane_name(img, *p));
        used += text.chars().count() + 1;
        let style = if *p == shown { theme::selected(st) } else { theme::fg(st, Color::Gray) };
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
    }
    use super::action::Action;
    let key = |a: Action| super::keymap::key_of(&st.keymap, &a);
    let zoom = format!("{}: {}", key(Action::Zoom), if st.zoom { "unzoom" } else { "zoom" });
    let tab = key(Action::NextPane);
    for hint in [format!("{}: next pane · {}", tab, zoom), format!("{} · {}", tab, zoom), tab.clone()] {
        if used + 2 + hint.chars().count() <= r.width as usize {
            spans.push(Span::styled(format!("  {}", hint), theme::fg(st, Color::DarkGray)));
            break;
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

/// The status line in `width` columns: the message, the running job, staged edits and the
/// cursor's description, each in its long form while everything fits, then in its short
/// form, then the parts least worth their place are left out. Nothing is cut at the edge.
pub fn status_line(st: &AppState, width: usize) -> Line<'static> {
    use panes::hex::Part;
    // (part, colour)
    let mut parts: Vec<(Part, Color)> = Vec::new();
    if let Some(m) = &st.message {
        parts.push((Part::new(m.clone(), m.clone(), 12), Color::LightRed));
    }
    if let Some(j) = st.jobs.last() {
        let long = job_status(j);
        let short = long.replace(" (Esc cancels)", "");
        parts.push((Part::new(long, short, 11), Color::LightYellow));
    }
    let (mode, short) = if st.writable { ("WRITE", "RW") } else { ("READ-ONLY", "RO") };
    parts.push((Part::new(mode.into(), short.into(), 8).shorten_at(6), if st.writable { Color::LightRed } else { Color::DarkGray }));
    if st.staged_count() > 0 {
        let alloc = st.view.allocating;
        let note = if alloc > 0 { format!(", {} will allocate", alloc) } else { String::new() };
        parts.push((
            Part::new(format!("staged {} byte(s){}", st.staged_count(), note), format!("staged {}", st.staged_count()), 10),
            Color::LightRed,
        ));
    }
    for p in &st.view.status_parts {
        parts.push((p.clone(), Color::Reset));
    }
    // the keys as bound (a config may move them)
    use super::action::Action;
    let key = |a: Action| super::keymap::key_of(&st.keymap, &a);
    let hint_long = format!("{} help  {} jump  {} command  {} quit", key(Action::Help), key(Action::OpenJump), key(Action::OpenCommand), key(Action::Quit));
    let hint_short = format!("{} help", key(Action::Help));
    // the keys hint last, after a wider gap
    parts.push((Part::new(hint_long.clone(), hint_short, 7).shorten_at(0), Color::DarkGray));
    let sep = |p: &Part| if p.long == hint_long { "   " } else { " │ " };
    let total = |ps: &[(Part, Color)], short: &[bool]| -> usize {
        ps.iter()
            .zip(short)
            .enumerate()
            .map(|(k, ((p, _), &s))| if s { &p.short } else { &p.long }.chars().count() + if k > 0 { sep(p).chars().count() } else { 0 })
            .sum()
    };
    // steps in order until the line fits: shorten a part (its `shorten` rank) or leave one out
    // (its `worth`); a hint goes before a name is shortened, a name before the cursor's offsets
    let mut short = vec![false; parts.len()];
    let mut steps: Vec<(u16, bool, String)> = Vec::new();
    for (p, _) in &parts {
        steps.push((p.shorten as u16 * 2, false, p.long.clone()));
        steps.push((p.worth as u16 * 2 + 1, true, p.long.clone()));
    }
    steps.sort_by_key(|s| s.0);
    for (_, drop, id) in steps {
        if total(&parts, &short) <= width || parts.len() <= 1 {
            break;
        }
        let Some(i) = parts.iter().position(|(p, _)| p.long == id) else { continue };
        if drop {
            parts.remove(i);
            short.remove(i);
        } else {
            short[i] = true;
        }
    }
    let mut spans = Vec::new();
    for (k, ((p, c), s)) in parts.iter().zip(&short).enumerate() {
        if k > 0 {
            spans.push(Span::raw(sep(p)));
        }
        let mut text = if *s { p.short.clone() } else { p.long.clone() };
        if text.chars().count() > width {
            // one part alone wider than the line (a long message): say that it goes on
            text = text.chars().take(width.saturating_sub(1)).collect::<String>() + "…";
        }
        spans.push(Span::styled(text, theme::fg(st, *c)));
    }
    Line::from(spans)
}

/// `checking… 1.2 s` (no measure) or `searching [#####-----] 42%` and `Esc cancels`.
pub fn job_status(j: &super::state::JobStatus) -> String {
    let what = j.job.label();
    if j.total > 0 {
        let pct = (j.done.min(j.total) as f64 / j.total as f64 * 100.0) as u64;
        let filled = (pct / 10) as usize;
        format!("{} [{}{}] {}% (Esc cancels)", what, "#".repeat(filled), "-".repeat(10 - filled), pct)
    } else {
        format!("{}… {:.1} s (Esc cancels)", what, j.started.elapsed().as_secs_f64())
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))]).flex(Flex::Center).areas(area);
    let [r] = Layout::vertical([Constraint::Length(h.min(area.height))]).flex(Flex::Center).areas(r);
    r
}

fn dialog(f: &mut Frame, st: &AppState, d: Dialog) {
    let area = f.area();
    let r = centered(area, 76, 5);
    let search_title = format!(
        " Search {} (hex 'de ?? be ef', or text; {}, C-t toggles) ",
        if st.search_back { "backward" } else { "forward" },
        if st.search_icase { "any case" } else { "exact case" }
    );
    let title = match d {
        Dialog::Jump => " Jump to (0x200000, 4M+512*3, v: f: s: b: c:) ",
        Dialog::Command => " Command (info, map, tables, where 0x1000, dump, …) ",
        Dialog::Search => search_title.as_str(),
    };
    f.render_widget(Clear, r);
    let block = Block::default().borders(Borders::ALL).title(title).border_style(theme::border(st, true));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [input, err] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
    let prefix = match d {
        Dialog::Command => ":",
        Dialog::Search if st.search_back => "?",
        Dialog::Search => "/",
        Dialog::Jump => ">",
    };
    let [p, field] = Layout::horizontal([Constraint::Length(2), Constraint::Min(1)]).areas(input);
    f.render_widget(Paragraph::new(prefix), p);
    f.render_widget(&st.input, field);
    if let Some(e) = &st.dialog_error {
        f.render_widget(Paragraph::new(Span::styled(e.clone(), theme::fg(st, Color::LightRed))), err);
    }
}

fn picker(f: &mut Frame, st: &AppState, p: &super::state::Picker) {
    let area = f.area();
    let r = centered(area, area.width.saturating_sub(10).clamp(20, 110), area.height.saturating_sub(6).max(6));
    f.render_widget(Clear, r);
    let rows = r.height.saturating_sub(2) as usize;
    let first = super::panes::scroll_to(p.sel, rows, p.rows.len());
    let lines: Vec<Line> = p
        .rows
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, l)| {
            let style = if i == p.sel { theme::selected(st) } else { ratatui::style::Style::default() };
            Line::from(Span::styled(l.clone(), style))
        })
        .collect();
    let title = format!(" {} (Enter opens, Esc closes) ", p.title);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title).border_style(theme::border(st, true))),
        r,
    );
}

fn popup(f: &mut Frame, st: &AppState, p: &super::state::Popup) {
    let area = f.area();
    let r = centered(area, area.width.saturating_sub(8).max(20), area.height.saturating_sub(4).max(5));
    f.render_widget(Clear, r);
    let rows = r.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = p.lines.iter().skip(p.scroll).take(rows).map(|l| Line::from(l.clone())).collect();
    let title = format!(" {} — {}/{} (Esc closes) ", p.title, (p.scroll + 1).min(p.lines.len()), p.lines.len());
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title).border_style(theme::border(st, true))),
        r,
    );
}

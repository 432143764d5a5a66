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
        }
    }
    let mut status = panes::hex::status(st);
    let mode = if st.writable { "WRITE" } else { "READ-ONLY" };
    status.insert(0, Span::styled(format!("{} │ ", mode), theme::fg(st, if st.writable { Color::LightRed } else { Color::DarkGray })));
    if st.staged_count() > 0 {
        let alloc = st.view.allocating;
        let note = if alloc > 0 { format!(", {} will allocate", alloc) } else { String::new() };
        status.insert(1, Span::styled(format!("staged {} byte(s){} │ ", st.staged_count(), note), theme::fg(st, Color::LightRed)));
    }
    if let Some(j) = st.jobs.last() {
        status.insert(0, Span::styled(format!("{} │ ", job_status(j)), theme::fg(st, Color::LightYellow)));
    }
    if let Some(m) = &st.message {
        status.insert(0, Span::styled(format!("{} │ ", m), theme::fg(st, Color::LightRed)));
    }
    status.push(Span::styled("   ? help  g jump  : command  q quit", theme::fg(st, Color::DarkGray)));
    f.render_widget(Paragraph::new(Line::from(status)), scr.status);
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
    let r = centered(area, 64, 5);
    let title = match d {
        Dialog::Jump => " Jump to (0x200000, 4M+512*3, v: f: s: b: c:) ",
        Dialog::Command => " Command (info, map, tables, where 0x1000, dump, …) ",
        Dialog::Search => " Search (hex 'de ad' / 0xdead, or text) ",
    };
    f.render_widget(Clear, r);
    let block = Block::default().borders(Borders::ALL).title(title).border_style(theme::border(st, true));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [input, err] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
    let prefix = match d {
        Dialog::Command => ":",
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

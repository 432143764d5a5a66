//! The terminal UI: state → `Action` → `update` → pure `draw` (ratatui's Elm architecture).
//! The image model is the only source of truth; panes do no offset arithmetic of their own.

pub mod action;
pub mod draw;
pub mod inspector;
pub mod keymap;
pub mod layout;
pub mod panes;
pub mod picker;
pub mod render;
pub mod search;
pub mod state;
pub mod theme;
pub mod update;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event, MouseButton, MouseEventKind};
use crossterm::execute;

use action::Action;
use state::{AppState, Pane};
use update::{handle_key, parse_jump, set_cursor, update};

use crate::image::Image;

/// Apply `--goto EXPR` as the jump dialog would.
pub fn goto(st: &mut AppState, img: &Image, expr: &str) -> anyhow::Result<()> {
    let (space, off) = parse_jump(st, img, expr).map_err(|e| anyhow::anyhow!("--goto {}: {}", expr, e))?;
    st.focus = Pane::Hex;
    set_cursor(st, img, space, 0, off);
    st.hex_top = st.cursor / 16 * 16;
    Ok(())
}

/// Run the TUI until `q`. The terminal is restored on every exit path: ratatui's init
/// installs a panic hook that restores it before the panic message prints.
pub fn run(img: &mut Image, goto_expr: Option<&str>) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    let result = (|| -> anyhow::Result<()> {
        let size = terminal.size()?;
        let mut st = AppState::new(img, (size.width, size.height));
        let img: &mut Image = img;
        update(&mut st, img, Action::Resize(size.width, size.height));
        if let Some(g) = goto_expr {
            goto(&mut st, img, g)?;
        }
        while !st.quit {
            terminal.draw(|f| draw::draw(f, &st, img))?;
            if !event::poll(Duration::from_millis(250))? {
                continue;
            }
            match event::read()? {
                Event::Key(k) if k.kind == event::KeyEventKind::Press => {
                    handle_key(&mut st, img, k);
                    update::apply_save(&mut st, img);
                }
                Event::Resize(w, h) => update(&mut st, img, Action::Resize(w, h)),
                Event::Mouse(m) => match m.kind {
                    MouseEventKind::Down(MouseButton::Left) => update(&mut st, img, Action::Click(m.column, m.row)),
                    MouseEventKind::ScrollDown => update(&mut st, img, Action::Scroll(3)),
                    MouseEventKind::ScrollUp => update(&mut st, img, Action::Scroll(-3)),
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(())
    })();
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

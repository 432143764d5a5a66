//! The terminal UI: state → `Action` → `update` → pure `draw` (ratatui's Elm architecture).
//! The image model is the only source of truth; panes do no offset arithmetic of their own.

pub mod action;
pub mod compare;
pub mod config;
pub mod draw;
pub mod inspector;
pub mod jobs;
pub mod keymap;
pub mod layout;
pub mod marks;
pub mod panes;
pub mod picker;
pub mod render;
pub mod search;
pub mod state;
pub mod theme;
pub mod update;
pub mod view;
pub mod watching;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};
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

/// What the TUI compares or watches, from the command line.
#[derive(Clone, Debug, Default)]
pub struct Modes {
    pub diff: Option<compare::DiffSpec>,
    pub watch: bool,
}

/// Open the other side of `--diff` and start comparing: the marks appear when the job ends.
pub fn begin_diff(st: &mut AppState, image_path: &str, spec: &compare::DiffSpec) -> anyhow::Result<Vec<jobs::Effect>> {
    let other = compare::Other::open(image_path, spec)?;
    st.message = Some(other.label.clone());
    st.diff = Some(compare::DiffState { other: std::sync::Arc::new(other), runs: Vec::new(), done: false });
    Ok(update::start(st, jobs::Job::Diff(spec.clone())))
}

/// Run the TUI until `q`. The terminal is restored on every exit path: ratatui's init
/// installs a panic hook that restores it before the panic message prints.
///
/// The image is shared with the job threads (read) and written by this loop on save; a save
/// waits (without blocking the screen) until no job reads the image.
pub fn run(img: Image, goto_expr: Option<&str>, modes: Modes) -> anyhow::Result<()> {
    run_with(img, goto_expr, &config::Config::default(), modes)
}

/// [`run`] with the user's config (keys, theme, panes at start).
pub fn run_with(img: Image, goto_expr: Option<&str>, cfg: &config::Config, modes: Modes) -> anyhow::Result<()> {
    let image_path = img.layers[0].name.clone();
    let shared = Arc::new(RwLock::new(img));
    let mut jobs = jobs::Threads::new(shared.clone(), image_path);
    let mut terminal = ratatui::init();
    jobs::quiet_worker_panics();
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    let result = (|| -> anyhow::Result<()> {
        let size = terminal.size()?;
        let mut st = {
            let img = shared.read().unwrap_or_else(|e| e.into_inner());
            let mut st = AppState::new(&img, (size.width, size.height));
            marks::attach_env(&mut st);
            st.configure(cfg);
            update(&mut st, &img, Action::Resize(size.width, size.height));
            if let Some(g) = goto_expr {
                goto(&mut st, &img, g)?;
            }
            st
        };
        jobs.run(update::start_up(&mut st));
        if let Some(spec) = &modes.diff {
            let path = shared.read().unwrap_or_else(|e| e.into_inner()).layers[0].name.clone();
            let effects = begin_diff(&mut st, &path, spec)?;
            jobs.run(effects);
        }
        let mut watcher = watching::Watcher::default();
        st.watch_toggle = modes.watch;
        while !st.quit {
            if std::mem::take(&mut st.watch_toggle) {
                let path = shared.read().unwrap_or_else(|e| e.into_inner()).layers[0].name.clone();
                watcher.toggle(&mut st, &path);
            }
            watcher.tick(&mut st, &shared);
            {
                let img = shared.read().unwrap_or_else(|e| e.into_inner());
                view::refresh(&mut st, &img);
                terminal.draw(|f| draw::draw(f, &st, &img))?;
            }
            // while a job runs, wake up often enough to show its progress and result; while
            // watching, often enough to show a write within the second
            let wait = if !st.jobs.is_empty() {
                Duration::from_millis(20)
            } else if st.watch.on {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(250)
            };
            let mut actions = Vec::new();
            if event::poll(wait)? {
                match event::read()? {
                    Event::Key(k) if k.kind == event::KeyEventKind::Press => {
                        let img = shared.read().unwrap_or_else(|e| e.into_inner());
                        let effects = handle_key(&mut st, &img, k);
                        drop(img);
                        jobs.run(effects);
                    }
                    Event::Resize(w, h) => actions.push(Action::Resize(w, h)),
                    Event::Mouse(m) => match m.kind {
                        MouseEventKind::Down(MouseButton::Left) => actions.push(Action::Click(m.column, m.row)),
                        MouseEventKind::ScrollDown => actions.push(Action::Scroll(3)),
                        MouseEventKind::ScrollUp => actions.push(Action::Scroll(-3)),
                        _ => {}
                    },
                    _ => {}
                }
            }
            actions.extend(jobs.rx.try_iter());
            for a in actions {
                if let Action::JobDone(id, _) = &a {
                    jobs.finished(*id);
                }
                let img = shared.read().unwrap_or_else(|e| e.into_inner());
                let effects = update(&mut st, &img, a);
                drop(img);
                jobs.run(effects);
            }
            if st.save_requested {
                // a job still reading holds the image: save once it is done
                match shared.try_write() {
                    Ok(mut img) => update::apply_save(&mut st, &mut img),
                    Err(_) => st.message = Some("saving once the running job ends (Esc cancels it)".into()),
                }
            }
        }
        Ok(())
    })();
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

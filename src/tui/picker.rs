//! The Files view and the findings list: what choosing a row does. Listing a folder and
//! locating a file are jobs (jobs.rs); their results open or refill the list.

use super::action::Action;
use super::jobs::{Effect, Job};
use super::state::{AppState, Pane, PickerKind, Space, Target};
use super::update::{set_cursor, start};
use crate::image::Image;

pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{}{}", dir, name)
    } else {
        format!("{}/{}", dir, name)
    }
}

pub fn parent(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => t[..i].to_string(),
    }
}

/// A key while a picker is open.
pub fn update(st: &mut AppState, img: &Image, action: Action) -> Vec<Effect> {
    let page = st.size.1.saturating_sub(8).max(1) as usize;
    let Some(p) = &mut st.picker else { return Vec::new() };
    let n = p.rows.len().max(1);
    match action {
        Action::Cancel | Action::Quit => st.picker = None,
        Action::Up => p.sel = p.sel.saturating_sub(1),
        Action::Down => p.sel = (p.sel + 1).min(n - 1),
        Action::PageUp => p.sel = p.sel.saturating_sub(page),
        Action::PageDown => p.sel = (p.sel + page).min(n - 1),
        Action::Home => p.sel = 0,
        Action::End => p.sel = n - 1,
        Action::Parent if p.kind == PickerKind::Files => return start(st, Job::ListDir(parent(&st.cwd))),
        Action::Select => {
            let target = p.targets.get(p.sel).cloned().unwrap_or(Target::Nothing);
            return choose(st, img, target);
        }
        Action::Resize(w, h) => st.size = (w, h),
        _ => {}
    }
    Vec::new()
}

fn choose(st: &mut AppState, img: &Image, target: Target) -> Vec<Effect> {
    match target {
        Target::Dir(d) => return start(st, Job::ListDir(d)),
        Target::File(path) => return start(st, Job::Locate(path)),
        Target::Place { host, virt } => {
            st.picker = None;
            super::marks::push_jump(st);
            st.focus = Pane::Hex;
            match (host, virt) {
                (Some(h), _) if h < img.layers[0].layer.file().len() => set_cursor(st, img, Space::File, 0, h),
                (_, Some(v)) if v < img.virtual_size() => set_cursor(st, img, Space::Virt, 0, v),
                _ => st.message = Some("this finding has no place in the image".into()),
            }
        }
        Target::Nothing => {}
    }
    Vec::new()
}

//! The Files view and the findings list: what they list and what choosing a row does.

use std::rc::Rc;

use super::action::Action;
use super::state::{AppState, Pane, Picker, PickerKind, Space, Target};
use super::update::set_cursor;
use crate::guest;
use crate::image::{self, Image, OpenOptions};

/// Open the Files view at the filesystem's current folder, opening the filesystem first.
pub fn open_files(st: &mut AppState, img: &Image) {
    if st.fs.is_none() {
        // the filesystem reader owns its image: a read-only view of the same file
        let opts = OpenOptions { format: Some(img.format()), ..Default::default() };
        let fs = image::open(std::path::Path::new(&st.image_name), &opts)
            .map_err(|e| e.to_string())
            .and_then(|i| guest::open_fs(Rc::new(i), None).map_err(|e| e.to_string()));
        match fs {
            Ok(fs) => st.fs = Some(fs),
            Err(e) => {
                st.message = Some(format!("Files: {}", e));
                return;
            }
        }
    }
    list(st);
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{}{}", dir, name)
    } else {
        format!("{}/{}", dir, name)
    }
}

fn list(st: &mut AppState) {
    let Some(fs) = &st.fs else { return };
    match fs.read_dir(&st.cwd) {
        Ok(mut entries) => {
            entries.retain(|e| e.name != "." && e.name != "..");
            entries.sort_by(|a, b| b.is_dir().cmp(&a.is_dir()).then(a.name.cmp(&b.name)));
            let mut rows = vec!["../".to_string()];
            let mut targets = vec![Target::Dir(parent(&st.cwd))];
            for e in entries.iter().take(100_000) {
                let path = join(&st.cwd, &e.name);
                if e.is_dir() {
                    rows.push(format!("{}/", e.name));
                    targets.push(Target::Dir(path));
                } else {
                    rows.push(format!("{:<40} {:>12}  {}", e.name, e.size, e.mode_string()));
                    targets.push(if e.type_char == '-' { Target::File(path) } else { Target::Nothing });
                }
            }
            st.picker = Some(Picker { kind: PickerKind::Files, title: format!("Files — {}", st.cwd), rows, targets, sel: 0 });
        }
        Err(e) => st.message = Some(format!("Files: {}: {}", st.cwd, e)),
    }
}

fn parent(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => t[..i].to_string(),
    }
}

/// Run the image check and list its findings.
pub fn open_findings(st: &mut AppState, img: &Image) {
    match image::check::check_image(img) {
        Ok(rep) => {
            let mut rows = Vec::new();
            let mut targets = Vec::new();

            for f in &rep.findings {
                let place = match (f.host_offset, f.virt) {
                    (Some(h), _) => format!(" @file 0x{:x}", h),
                    (None, Some(v)) => format!(" @guest 0x{:x}", v),
                    _ => String::new(),
                };
                rows.push(format!("[{}] {}: {}{}", f.severity.name(), f.structure, f.message, place));
                targets.push(Target::Place { host: f.host_offset, virt: f.virt });
            }
            // then what opening the chain found: a broken backing chain, fallbacks, mismatches
            for w in img.chain_error.iter().chain(img.warnings.iter()) {
                rows.push(format!("[warning] open: {}", w));
                targets.push(Target::Nothing);
            }
            if rows.is_empty() {
                rows.push("no findings: the image is clean".into());
                targets.push(Target::Nothing);
            }
            let title = format!(
                "Findings — {} corruption(s), {} leak(s), {} check error(s)",
                rep.corruptions, rep.leaks, rep.check_errors
            );
            st.picker = Some(Picker { kind: PickerKind::Findings, title, rows, targets, sel: 0 });
        }
        Err(e) => st.message = Some(format!("check: {}", e)),
    }
}

/// A key while a picker is open.
pub fn update(st: &mut AppState, img: &Image, action: Action) {
    let page = st.size.1.saturating_sub(8).max(1) as usize;
    let Some(p) = &mut st.picker else { return };
    let n = p.rows.len().max(1);
    match action {
        Action::Cancel | Action::Quit => st.picker = None,
        Action::Up => p.sel = p.sel.saturating_sub(1),
        Action::Down => p.sel = (p.sel + 1).min(n - 1),
        Action::PageUp => p.sel = p.sel.saturating_sub(page),
        Action::PageDown => p.sel = (p.sel + page).min(n - 1),
        Action::Home => p.sel = 0,
        Action::End => p.sel = n - 1,
        Action::Parent if p.kind == PickerKind::Files => {
            st.cwd = parent(&st.cwd);
            list(st);
        }
        Action::Select => {
            let target = p.targets.get(p.sel).cloned().unwrap_or(Target::Nothing);
            choose(st, img, target);
        }
        Action::Resize(w, h) => st.size = (w, h),
        _ => {}
    }
}

fn choose(st: &mut AppState, img: &Image, target: Target) {
    match target {
        Target::Dir(d) => {
            st.cwd = d;
            list(st);
        }
        Target::File(path) => {
            let Some(fs) = &st.fs else { return };
            match fs.locate(&path) {
                Ok(loc) => {
                    st.highlights = loc.extents.iter().filter_map(|e| e.virt.map(|v| (v, e.len))).collect();
                    st.picker = None;
                    st.focus = Pane::Hex;
                    match st.highlights.first() {
                        Some(&(v, _)) => {
                            set_cursor(st, img, Space::Virt, 0, v);
                            st.message = Some(format!("{}: {} bytes in {} extent(s), highlighted", path, loc.size, loc.extents.len()));
                        }
                        None => st.message = Some(format!("{}: {} bytes, no data blocks (empty or sparse)", path, loc.size)),
                    }
                }
                Err(e) => st.message = Some(format!("{}: {}", path, e)),
            }
        }
        Target::Place { host, virt } => {
            st.picker = None;
            st.focus = Pane::Hex;
            match (host, virt) {
                (Some(h), _) if h < img.layers[0].layer.file().len() => set_cursor(st, img, Space::File, 0, h),
                (_, Some(v)) if v < img.virtual_size() => set_cursor(st, img, Space::Virt, 0, v),
                _ => st.message = Some("this finding has no place in the image".into()),
            }
        }
        Target::Nothing => {}
    }
}

//! `update(state, image, action) -> effects`: every change of the screen's state, no
//! terminal here. Slow work (search, check, host map, Files, `:` commands) is not done here:
//! `update` returns an [`Effect`] asking for a job, and the job's result comes back as an
//! action (see jobs.rs).

use crossterm::event::{KeyCode, KeyEvent};

use super::action::Action;
use super::jobs::{Effect, Job, JobResult};
use super::keymap::{self, Mode};
use super::layout::{grid_shape, hex_rows, screen};
use super::state::{AppState, Dialog, JobStatus, Pane, Picker, PickerKind, Popup, Space};
use crate::image::qcow2::Qcow2;
use crate::image::{expr, Image};

/// Route a key: to the quit confirmation, the open dialog's text field, edit mode, else
/// through the keymap.
pub fn handle_key(st: &mut AppState, img: &Image, key: KeyEvent) -> Vec<Effect> {
    if st.confirm_quit {
        st.confirm_quit = false;
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => st.quit = true,
            KeyCode::Char('s') | KeyCode::Char('S') => {
                st.save_requested = true;
                st.quit_after_save = true;
            }
            _ => st.message = Some("not quitting; the staged edits are kept".into()),
        }
        return Vec::new();
    }
    if st.dialog == Some(Dialog::Search) && key.code == KeyCode::Char('t') && key.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) {
        return update(st, img, Action::ToggleCase);
    }
    if st.dialog.is_some() {
        return match key.code {
            KeyCode::Esc => update(st, img, Action::Cancel),
            KeyCode::Enter => {
                let text = st.input.lines().join("");
                update(st, img, Action::Submit(text))
            }
            _ => {
                st.input.input(key);
                Vec::new()
            }
        };
    }
    if st.picker.is_some() && st.popup.is_none() {
        return match keymap::lookup_in(&st.keymap.clone(), Mode::Picker, &key) {
            Some(a) => super::picker::update(st, img, a),
            None => Vec::new(),
        };
    }
    if st.edit.is_some() && st.popup.is_none() {
        // Esc typed just before another key reaches us as Alt+key (the terminal sends
        // ESC-prefixed bytes): leave edit mode, then take the key as typed
        if key.modifiers.contains(crossterm::event::KeyModifiers::ALT) {
            st.edit = None;
            let mut plain = key;
            plain.modifiers.remove(crossterm::event::KeyModifiers::ALT);
            return handle_key(st, img, plain);
        }
        if let Some(a) = keymap::lookup_in(&st.keymap.clone(), Mode::Edit, &key) {
            return update(st, img, a);
        } else if let KeyCode::Char(c) = key.code {
            if !key.modifiers.intersects(crossterm::event::KeyModifiers::CONTROL | crossterm::event::KeyModifiers::ALT) {
                return update(st, img, Action::Type(c));
            }
        }
        return Vec::new();
    }
    if let Some(p) = st.pending.take() {
        return match key.code {
            KeyCode::Char(c) if c.is_ascii_lowercase() => update(st, img, if p == 'm' { Action::SetMark(c) } else { Action::JumpMark(c) }),
            KeyCode::Esc => Vec::new(),
            _ => {
                st.message = Some(format!("marks are named a-z ({} cancelled)", p));
                Vec::new()
            }
        };
    }
    let mode = if st.popup.is_some() { Mode::Popup } else { Mode::Normal };
    match keymap::lookup_in(&st.keymap.clone(), mode, &key) {
        // the arrow of the key gives the direction (a config may bind other keys: right)
        Some(Action::Extend) => update(
            st,
            img,
            match key.code {
                KeyCode::Up => Action::ExtendUp,
                KeyCode::Down => Action::ExtendDown,
                KeyCode::Left => Action::ExtendLeft,
                _ => Action::ExtendRight,
            },
        ),
        Some(a) => update(st, img, a),
        None => Vec::new(),
    }
}

/// Ask for a job: it shows in the status line until its result comes back. A job of the
/// same kind still running is cancelled first (pressing `c` twice checks once).
pub fn start(st: &mut AppState, job: Job) -> Vec<Effect> {
    let mut effects = Vec::new();
    let same = std::mem::discriminant(&job);
    st.jobs.retain(|j| {
        let keep = std::mem::discriminant(&j.job) != same;
        if !keep {
            effects.push(Effect::Cancel(j.id));
        }
        keep
    });
    let id = st.next_job;
    st.next_job += 1;
    st.jobs.push(JobStatus { id, job: job.clone(), done: 0, total: 0, started: std::time::Instant::now() });
    effects.push(Effect::Start(id, job));
    effects
}

/// What the program asks for at start-up: the density overview.
pub fn start_up(st: &mut AppState) -> Vec<Effect> {
    start(st, Job::Density { buckets: 256 })
}

/// Progress, results and cancelling of jobs, whatever is open on screen.
fn job_action(st: &mut AppState, img: &Image, action: Action) -> Vec<Effect> {
    match action {
        Action::JobProgress { id, done, total } => {
            if let Some(j) = st.jobs.iter_mut().find(|j| j.id == id) {
                j.done = done;
                j.total = total;
            }
        }
        Action::CancelJob => {
            if st.jobs.is_empty() && st.sel_anchor.take().is_some() {
                st.message = Some("selection ended".into());
                return Vec::new();
            }
            if let Some(j) = st.jobs.pop() {
                st.message = Some(format!("cancelled: {}", j.job.label()));
                return vec![Effect::Cancel(j.id)];
            }
        }
        Action::JobDone(id, outcome) => {
            // a cancelled job's late result is dropped
            let Some(i) = st.jobs.iter().position(|j| j.id == id) else { return Vec::new() };
            let job = st.jobs.remove(i).job;
            if let Some(r) = outcome.take() {
                return job_done(st, img, job, r);
            }
        }
        _ => {}
    }
    Vec::new()
}

fn job_done(st: &mut AppState, img: &Image, job: Job, r: JobResult) -> Vec<Effect> {
    match r {
        JobResult::Found(Some(off)) | JobResult::Wrapped(off) => {
            if let Job::Search { space, layer, backward, .. } = job {
                let wrapped = matches!(r, JobResult::Wrapped(_));
                super::marks::push_jump(st);
                st.focus = Pane::Hex;
                set_cursor(st, img, space, layer, off);
                keep_visible(st);
                st.message = Some(if wrapped {
                    format!("found at 0x{:x} (wrapped round the {})", off, if backward { "start" } else { "end" })
                } else {
                    format!("found at 0x{:x}", off)
                });
            }
        }
        JobResult::Found(None) => {
            let what = st.search.as_ref().map(|s| format!(": {}", s.text)).unwrap_or_default();
            st.message = Some(format!("not found{}", what));
        }
        JobResult::Findings(p) => st.picker = Some(p),
        JobResult::HostMap(m) => {
            st.host_map = Some(m);
            st.grid_host = true;
            st.grid_sel = 0;
            st.focus = Pane::Grid;
        }
        JobResult::Density(d) => st.density = d,
        JobResult::Diff { runs, bytes } => {
            st.message = Some(if runs.is_empty() {
                "no differences".into()
            } else {
                format!("{} differing range(s), {} bytes; }} and {{ step through them", runs.len(), bytes)
            });
            if let Some(d) = st.diff.as_mut() {
                d.runs = runs;
                d.done = true;
            }
        }
        JobResult::Output { title, lines } => st.popup = Some(Popup { title, lines, scroll: 0 }),
        JobResult::Dir { cwd, rows, targets } => {
            st.picker = Some(Picker { kind: PickerKind::Files, title: format!("Files — {}", cwd), rows, targets, sel: 0 });
            st.cwd = cwd;
        }
        JobResult::Located { path, size, extents, count } => {
            st.highlights = extents;
            st.picker = None;
            super::marks::push_jump(st);
            st.focus = Pane::Hex;
            match st.highlights.first() {
                Some(&(v, _)) => {
                    set_cursor(st, img, Space::Virt, 0, v);
                    st.message = Some(format!("{}: {} bytes in {} extent(s), highlighted", path, size, count));
                }
                None => st.message = Some(format!("{}: {} bytes, no data blocks (empty or sparse)", path, size)),
            }
        }
        JobResult::Copied { hex, len } => {
            st.message = Some(format!("copied {} byte(s) as hex to the clipboard (OSC 52)", len));
            st.last_copied = Some(hex.clone());
            return vec![Effect::Clipboard(hex)];
        }
        JobResult::Exported { path, len } => st.message = Some(format!("exported {} byte(s) to {}", len, path)),
        JobResult::Cancelled => {}
        JobResult::Failed(e) => st.message = Some(e),
    }
    Vec::new()
}

/// The byte the hex view shows at `off` of the current space: staged, else on disk.
pub fn shown_byte(st: &AppState, img: &Image, off: u64) -> Option<u8> {
    if let Some(b) = st.staged_at(off) {
        return Some(b);
    }
    let mut b = [0u8];
    let r = match st.space {
        Space::Virt => img.read(off, &mut b),
        Space::File => img.read_host(st.file_layer, off, &mut b),
    };
    r.ok().map(|_| b[0])
}

fn stage(st: &mut AppState, img: &Image, off: u64, new: u8) {
    let Some(old) = shown_byte(st, img, off) else {
        st.message = Some(format!("0x{:x} cannot be read, so it cannot be edited", off));
        return;
    };
    let was_staged = st.staged_at(off).is_some();
    st.undo.push(super::state::Change { space: st.space, off, old, new, was_staged });
    st.redo.clear();
    staged_map(st, st.space).insert(off, new);
}

fn staged_map(st: &mut AppState, space: Space) -> &mut std::collections::BTreeMap<u64, u8> {
    match space {
        Space::Virt => &mut st.staged_virt,
        Space::File => &mut st.staged_file,
    }
}

fn edit_action(st: &mut AppState, img: &Image, action: &Action) -> bool {
    match action {
        Action::Edit => {
            if !st.writable {
                st.message = Some("read-only: start vdiskview with --write to patch this image (nothing was changed)".into());
            } else if st.space == Space::File && st.file_layer != 0 {
                st.message = Some("this is a backing file: only the top image is written".into());
            } else {
                st.focus = Pane::Hex;
                st.edit = Some(super::state::Edit { ascii: false, low_nibble: false });
            }
        }
        Action::LeaveEdit => st.edit = None,
        Action::ToggleAscii => {
            if let Some(e) = &mut st.edit {
                e.ascii = !e.ascii;
                e.low_nibble = false;
            }
        }
        Action::Type(c) => {
            let Some(e) = st.edit else { return true };
            let off = st.cursor;
            if e.ascii {
                if !c.is_ascii() || c.is_ascii_control() {
                    st.message = Some("only ASCII characters can be typed here".into());
                    return true;
                }
                stage(st, img, off, *c as u8);
                advance(st, img);
            } else {
                let Some(d) = c.to_digit(16) else {
                    st.message = Some(format!("'{}' is not a hex digit (Tab switches to the ASCII column)", c));
                    return true;
                };
                let cur = shown_byte(st, img, off).unwrap_or(0);
                let new = if e.low_nibble { (cur & 0xf0) | d as u8 } else { ((d as u8) << 4) | (cur & 0x0f) };
                match st.undo.last_mut() {
                    // the second nibble completes the same byte: one change to undo
                    Some(c) if e.low_nibble && c.space == st.space && c.off == off => {
                        c.new = new;
                        staged_map(st, st.space).insert(off, new);
                    }
                    _ => stage(st, img, off, new),
                }
                if e.low_nibble {
                    advance(st, img);
                } else if let Some(e) = &mut st.edit {
                    e.low_nibble = true;
                }
            }
        }
        Action::Undo | Action::Redo => {
            let undo = *action == Action::Undo;
            let Some(c) = (if undo { st.undo.pop() } else { st.redo.pop() }) else {
                st.message = Some(format!("nothing to {}", if undo { "undo" } else { "redo" }));
                return true;
            };
            let map = staged_map(st, c.space);
            if undo {
                if c.was_staged {
                    map.insert(c.off, c.old);
                } else {
                    map.remove(&c.off);
                }
                st.redo.push(c);
            } else {
                map.insert(c.off, c.new);
                st.undo.push(c);
            }
            let layer = if c.space == Space::File { 0 } else { st.file_layer };
            set_cursor(st, img, c.space, layer, c.off);
        }
        Action::Save => {
            if st.staged_count() == 0 {
                st.message = Some("nothing to save".into());
            } else {
                st.save_requested = true;
            }
        }
        _ => return false,
    }
    true
}

fn advance(st: &mut AppState, img: &Image) {
    let size = space_size(st, img);
    if st.cursor + 1 < size {
        set_cursor(st, img, st.space, st.file_layer, st.cursor + 1);
        keep_visible(st);
    }
    if let Some(e) = &mut st.edit {
        e.low_nibble = false;
    }
}

/// Write the staged edits through the image model (the owner of the image calls this after
/// `update` asked for it). Contiguous runs are written together.
pub fn apply_save(st: &mut AppState, img: &mut Image) {
    if !std::mem::take(&mut st.save_requested) {
        return;
    }
    let mut written = 0usize;
    let mut result = Ok(());
    // whatever gets written, the bytes on screen are read again
    st.saves += 1;
    for space in [Space::File, Space::Virt] {
        let runs = runs(match space {
            Space::Virt => &st.staged_virt,
            Space::File => &st.staged_file,
        });
        for (start, bytes) in runs {
            let r = match space {
                Space::Virt => img.write(start, &bytes),
                Space::File => img.write_host(start, &bytes),
            };
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            written += bytes.len();
            let map = staged_map(st, space);
            for i in 0..bytes.len() as u64 {
                map.remove(&(start + i));
            }
        }
        if result.is_err() {
            break;
        }
    }
    match result {
        Ok(()) => {
            st.undo.clear();
            st.redo.clear();
            st.message = Some(format!("saved {} byte(s)", written));
            if st.quit_after_save {
                st.quit = true;
            }
        }
        Err(e) => {
            st.quit_after_save = false;
            st.message = Some(format!("save failed after {} byte(s): {}", written, e));
        }
    }
}

fn runs(map: &std::collections::BTreeMap<u64, u8>) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for (&off, &b) in map {
        match out.last_mut() {
            Some((start, bytes)) if *start + bytes.len() as u64 == off => bytes.push(b),
            _ => out.push((off, vec![b])),
        }
    }
    out
}

/// How many staged guest bytes fall where the top layer does not own the data yet, so that
/// saving them allocates (a block, a cluster, a copy-on-write).
pub fn allocating(st: &AppState, img: &Image) -> usize {
    st.staged_virt
        .keys()
        .take(4096)
        .filter(|&&v| {
            img.resolve(v, 1).map(|e| !(e.depth == 0 && matches!(e.kind, crate::image::LayerKind::Data { .. }))).unwrap_or(false)
        })
        .count()
}

pub fn space_size(st: &AppState, img: &Image) -> u64 {
    match st.space {
        Space::Virt => img.virtual_size(),
        Space::File => img.layers[st.file_layer].layer.file().len(),
    }
}

pub fn update(st: &mut AppState, img: &Image, action: Action) -> Vec<Effect> {
    let effects = update_inner(st, img, action);
    st.note_focus();
    effects
}

fn update_inner(st: &mut AppState, img: &Image, action: Action) -> Vec<Effect> {
    if matches!(action, Action::JobProgress { .. } | Action::JobDone(..)) {
        return job_action(st, img, action);
    }
    // a message stays until the next intent (a resize, a job's progress is none)
    if !matches!(action, Action::Resize(..)) {
        st.message = None;
    }
    if action == Action::CancelJob {
        return job_action(st, img, action);
    }
    if let Some(p) = &mut st.popup {
        let page = st.size.1.saturating_sub(6).max(1) as usize;
        match action {
            Action::Cancel | Action::Quit => st.popup = None,
            Action::Up => p.scroll = p.scroll.saturating_sub(1),
            Action::Down => p.scroll = (p.scroll + 1).min(p.lines.len().saturating_sub(1)),
            Action::PageUp => p.scroll = p.scroll.saturating_sub(page),
            Action::PageDown => p.scroll = (p.scroll + page).min(p.lines.len().saturating_sub(1)),
            Action::Resize(w, h) => st.size = (w, h),
            _ => {}
        }
        return Vec::new();
    }
    if st.picker.is_some() {
        return super::picker::update(st, img, action);
    }
    if edit_action(st, img, &action) {
        return Vec::new();
    }
    match action {
        Action::OpenFiles => return start(st, Job::ListDir(st.cwd.clone())),
        Action::OpenFindings => return start(st, Job::Check),
        Action::ToggleHostGrid if st.is_qcow2 && st.host_map.is_none() => return start(st, Job::HostMap),
        Action::Submit(text) => return submit(st, img, &text),
        _ => {}
    }
    match action {
        Action::Quit => {
            if st.staged_count() > 0 {
                st.confirm_quit = true;
            } else {
                st.quit = true;
            }
        }
        Action::Resize(w, h) => {
            st.size = (w, h);
            keep_visible(st);
        }
        Action::NextPane | Action::PrevPane => {
            let panes = st.panes();
            let i = panes.iter().position(|p| *p == st.focus).unwrap_or(0);
            let n = panes.len();
            st.focus = panes[if action == Action::NextPane { (i + 1) % n } else { (i + n - 1) % n }];
        }
        Action::NextDirtyBitmap => next_dirty_bitmap(st, img),
        Action::MarkPending => st.pending = Some('m'),
        Action::JumpPending => st.pending = Some('\''),
        Action::SetMark(c) => {
            st.marks.insert(c, super::marks::here(st));
            st.message = Some(format!("mark {} at {} 0x{:x}", c, if st.space == Space::Virt { "guest" } else { "file" }, st.cursor));
            if let Some(p) = &st.marks_file {
                return vec![Effect::WriteFile(p.clone(), super::marks::text(st))];
            }
        }
        Action::JumpMark(c) => match st.marks.get(&c).copied() {
            Some(pos) => {
                super::marks::push_jump(st);
                go_to(st, img, pos);
            }
            None => st.message = Some(format!("no mark {} (m{} sets it)", c, c)),
        },
        Action::JumpBack | Action::JumpForward => {
            let back = action == Action::JumpBack;
            let next = if back { st.back.pop() } else { st.fwd.pop() };
            match next {
                Some(pos) => {
                    let here = super::marks::here(st);
                    if back { st.fwd.push(here) } else { st.back.push(here) }
                    go_to(st, img, pos);
                }
                None => st.message = Some(format!("no {} in the jump history", if back { "earlier place" } else { "later place" })),
            }
        }
        Action::Zoom => {
            st.zoom = !st.zoom;
            keep_visible(st);
        }
        Action::VisualSelect => {
            if st.sel_anchor.take().is_none() {
                st.sel_anchor = Some((st.space, st.file_layer, st.cursor));
                st.focus = Pane::Hex;
            }
        }
        Action::ExtendUp | Action::ExtendDown | Action::ExtendLeft | Action::ExtendRight => {
            if st.selection().is_none() {
                st.sel_anchor = Some((st.space, st.file_layer, st.cursor));
            }
            st.focus = Pane::Hex;
            let mv = match action {
                Action::ExtendUp => Action::Up,
                Action::ExtendDown => Action::Down,
                Action::ExtendLeft => Action::Left,
                _ => Action::Right,
            };
            move_in_pane(st, img, mv);
        }
        Action::Yank => match st.selection() {
            // the clipboard takes hex text; a terminal passes on some 100 KB of OSC 52
            Some((a, b)) if b - a + 1 > 32 << 10 => {
                st.message = Some(format!("{} bytes is too many for the clipboard (32 KiB at most): use :export FILE", b - a + 1))
            }
            Some((a, b)) => return start(st, Job::Copy { space: st.space, layer: st.file_layer, start: a, len: b - a + 1 }),
            None => st.message = Some("nothing selected: V starts a selection in the hex view".into()),
        },
        Action::ToggleInspector => {
            st.inspector = !st.inspector;
            if st.inspector {
                st.focus = Pane::Inspector;
            } else if st.focus == Pane::Inspector {
                st.focus = Pane::Hex;
            }
        }
        Action::ToggleHostGrid => {
            if st.host_map.is_some() {
                st.grid_host = !st.grid_host;
                st.grid_sel = 0;
                st.focus = Pane::Grid;
            } else {
                st.message = Some("the host-cluster view needs a qcow2 image (refcounts)".into());
            }
        }
        Action::Help => {
            let lines = keymap::help_lines_in(&st.keymap).into_iter().map(|(k, d)| format!("{:<10} {}", k, d)).collect();
            st.popup = Some(Popup { title: "Help".into(), lines, scroll: 0 });
        }
        Action::SearchNext | Action::SearchPrev => {
            let Some(last) = st.search.clone() else {
                st.message = Some("no search yet: / searches forward, ? backward".into());
                return Vec::new();
            };
            let backward = last.backward != (action == Action::SearchPrev);
            return start_search(st, last.pattern, backward);
        }
        Action::ToggleCase => {
            st.search_icase = !st.search_icase;
        }
        Action::OpenJump | Action::OpenCommand | Action::OpenSearch | Action::OpenSearchBack => {
            st.search_back = action == Action::OpenSearchBack;
            st.dialog = Some(match action {
                Action::OpenJump => Dialog::Jump,
                Action::OpenCommand => Dialog::Command,
                _ => Dialog::Search,
            });
            st.input = ratatui_textarea::TextArea::default();
            st.dialog_error = None;
        }
        Action::Cancel => {
            st.dialog = None;
            st.dialog_error = None;
        }
        Action::ToggleSpace => toggle_space(st, img),
        Action::NextDiff | Action::PrevDiff => match &st.diff {
            None => st.message = Some("no comparison: start with --diff IMAGE, --diff-backing or --diff-snapshot NAME".into()),
            Some(d) if !d.done => st.message = Some("still comparing…".into()),
            Some(d) => {
                let from = current_virt(st, img).unwrap_or(0);
                match d.next(from, action == Action::NextDiff) {
                    Some(v) => set_cursor(st, img, Space::Virt, 0, v),
                    None => st.message = Some("no more differences".into()),
                }
            }
        },
        Action::ToggleWatch => st.watch_toggle = true,
        Action::NextAllocated | Action::PrevAllocated => {
            let from = current_virt(st, img).unwrap_or(0);
            match img.next_allocated(from, action == Action::NextAllocated) {
                Ok(Some(v)) => set_cursor(st, img, Space::Virt, 0, v),
                Ok(None) => st.message = Some("no more allocated blocks".into()),
                Err(e) => st.message = Some(e.to_string()),
            }
        }
        Action::Scroll(d) => {
            let size = space_size(st, img);
            let v = if d < 0 { st.cursor.saturating_sub(16 * d.unsigned_abs() as u64) } else { st.cursor + 16 * d as u64 };
            set_cursor(st, img, st.space, st.file_layer, v.min(size.saturating_sub(1)));
        }
        Action::Click(x, y) => click(st, img, x, y),
        Action::Select => {
            super::marks::push_jump(st);
            select(st, img);
        }
        mv => move_in_pane(st, img, mv),
    }
    Vec::new()
}

fn move_in_pane(st: &mut AppState, img: &Image, mv: Action) {
    match st.focus {
        Pane::Header => {
            let n = st.header.len();
            if n == 0 {
                return;
            }
            let page = 10;
            st.header_sel = match mv {
                Action::Up | Action::Left => st.header_sel.saturating_sub(1),
                Action::Down | Action::Right => (st.header_sel + 1).min(n - 1),
                Action::PageUp => st.header_sel.saturating_sub(page),
                Action::PageDown => (st.header_sel + page).min(n - 1),
                Action::Home => 0,
                Action::End => n - 1,
                _ => st.header_sel,
            };
            select(st, img);
        }
        Pane::Grid | Pane::Bitmap => {
            let units = st.grid_units(img);
            if units == 0 {
                return;
            }
            let (cols, rows) = grid_shape(st, img);
            let s = st.grid_sel;
            st.grid_sel = match mv {
                Action::Left => s.saturating_sub(1),
                Action::Right => (s + 1).min(units - 1),
                Action::Up => s.saturating_sub(cols),
                Action::Down => (s + cols).min(units - 1),
                Action::PageUp => s.saturating_sub(cols * rows),
                Action::PageDown => (s + cols * rows).min(units - 1),
                Action::Home => 0,
                Action::End => units - 1,
                _ => s,
            };
            select(st, img);
        }
        Pane::L1 => {
            let n = l1_len(img);
            if n == 0 {
                return;
            }
            st.l1_sel = match mv {
                Action::Up | Action::Left => st.l1_sel.saturating_sub(1),
                Action::Down | Action::Right => (st.l1_sel + 1).min(n - 1),
                Action::PageUp => st.l1_sel.saturating_sub(10),
                Action::PageDown => (st.l1_sel + 10).min(n - 1),
                Action::Home => 0,
                Action::End => n - 1,
                _ => st.l1_sel,
            };
            select(st, img);
        }
        Pane::Hex | Pane::Inspector => {
            let size = space_size(st, img);
            if size == 0 {
                return;
            }
            if let Some(e) = &mut st.edit {
                e.low_nibble = false;
            }
            let rows = hex_rows(st);
            let c = st.cursor;
            let v = match mv {
                Action::Left => c.saturating_sub(1),
                Action::Right => c + 1,
                Action::Up => c.saturating_sub(16),
                Action::Down => c + 16,
                Action::PageUp => c.saturating_sub(16 * rows),
                Action::PageDown => c + 16 * rows,
                Action::Home => 0,
                Action::End => size - 1,
                _ => c,
            };
            set_cursor(st, img, st.space, st.file_layer, v.min(size - 1));
        }
    }
}

pub fn l1_len(img: &Image) -> usize {
    img.top().downcast_ref::<Qcow2>().map_or(0, |q| q.l1.len())
}

/// Enter (and every selection move): show what the focused pane selects in the hex view.
fn select(st: &mut AppState, img: &Image) {
    match st.focus {
        Pane::Header => {
            if let Some(h) = st.header.get(st.header_sel) {
                let off = h.field.off;
                set_cursor_only(st, img, Space::File, 0, off);
            }
        }
        Pane::Grid if st.grid_host => {
            let cs = img.top().cluster_size().unwrap_or(512);
            set_cursor_only(st, img, Space::File, 0, st.grid_sel.saturating_mul(cs));
        }
        Pane::Grid | Pane::Bitmap => {
            let v = img.unit_start(st.grid_sel);
            set_cursor_only(st, img, Space::Virt, 0, v);
            st.l1_sel = l1_index_of(img, v);
        }
        Pane::L1 => {
            if let Some(q) = img.top().downcast_ref::<Qcow2>() {
                let v = (st.l1_sel as u64).saturating_mul(q.l1_span());
                if v < img.virtual_size() {
                    st.grid_sel = img.unit_of(v);
                    set_cursor_only(st, img, Space::Virt, 0, v);
                }
            }
        }
        Pane::Hex | Pane::Inspector => {}
    }
}

fn l1_index_of(img: &Image, virt: u64) -> usize {
    img.top().downcast_ref::<Qcow2>().map_or(0, |q| (virt / q.l1_span()) as usize)
}

/// The guest offset under the cursor, when it has one.
pub fn current_virt(st: &AppState, img: &Image) -> Option<u64> {
    match st.space {
        Space::Virt => Some(st.cursor),
        Space::File => img.to_virt(st.file_layer, st.cursor).ok().flatten(),
    }
}

fn set_cursor_only(st: &mut AppState, img: &Image, space: Space, layer: usize, off: u64) {
    st.space = space;
    st.file_layer = layer;
    st.cursor = off.min(space_size(st, img).saturating_sub(1));
    // what a selection shows starts on the first row, as in a hexdump
    st.hex_top = st.cursor / 16 * 16;
}

/// Move the hex cursor and let the other panes follow it (owning cell and field).
pub fn set_cursor(st: &mut AppState, img: &Image, space: Space, layer: usize, off: u64) {
    set_cursor_only(st, img, space, layer, off);
    if st.grid_host {
        if st.space == Space::File && st.file_layer == 0 {
            st.grid_sel = st.cursor / img.top().cluster_size().unwrap_or(512);
        }
    } else if let Some(v) = current_virt(st, img) {
        st.grid_sel = img.unit_of(v);
        st.l1_sel = l1_index_of(img, v);
    }
    if st.space == Space::File && st.file_layer == 0 {
        if let Some(i) = st.header.iter().position(|h| st.cursor >= h.field.off && st.cursor - h.field.off < h.field.len) {
            st.header_sel = i;
        }
    }
}

/// Put the hex cursor on a remembered place (a mark, the history), in view.
fn go_to(st: &mut AppState, img: &Image, (space, layer, off): super::marks::Pos) {
    let layer = layer.min(img.layers.len().saturating_sub(1));
    st.focus = Pane::Hex;
    set_cursor(st, img, space, layer, off);
}

fn keep_visible(st: &mut AppState) {
    let rows = hex_rows(st);
    let row = st.cursor / 16 * 16;
    if row < st.hex_top {
        st.hex_top = row;
    } else if row >= st.hex_top + rows * 16 {
        st.hex_top = row - (rows - 1) * 16;
    }
}

fn toggle_space(st: &mut AppState, img: &Image) {
    match st.space {
        Space::Virt => match img.to_file(st.cursor) {
            Ok(Some((layer, off))) => set_cursor(st, img, Space::File, layer, off),
            Ok(None) => {
                st.message = Some(format!("guest 0x{:x} has no bytes in any file (zero or unallocated)", st.cursor));
                set_cursor(st, img, Space::File, 0, 0);
            }
            Err(e) => st.message = Some(e.to_string()),
        },
        Space::File => match img.to_virt(st.file_layer, st.cursor) {
            Ok(Some(v)) if v < img.virtual_size() => set_cursor(st, img, Space::Virt, 0, v),
            Ok(_) => {
                st.message = Some(format!("file 0x{:x} is metadata, no guest counterpart", st.cursor));
                set_cursor(st, img, Space::Virt, 0, 0);
            }
            Err(e) => st.message = Some(e.to_string()),
        },
    }
}

/// Parse a jump expression with an optional prefix: `v:`/`f:` space, `s:` sector,
/// `b:`/`c:` block or cluster (guest space).
pub fn parse_jump(st: &AppState, img: &Image, text: &str) -> Result<(Space, u64), String> {
    let t = text.trim();
    let (prefix, rest) = match t.split_once(':') {
        Some((p, r)) if p.len() == 1 => (Some(p.to_ascii_lowercase()), r),
        _ => (None, t),
    };
    let n = expr::parse(rest)?;
    let (space, off) = match prefix.as_deref() {
        None => (st.space, n),
        Some("v") => (Space::Virt, n),
        Some("f") => (Space::File, n),
        Some("s") => (st.space, n.checked_mul(512).ok_or("sector number too large")?),
        Some("b") | Some("c") => (Space::Virt, n.checked_mul(img.unit_size()).ok_or("block number too large")?),
        Some(p) => return Err(format!("unknown prefix '{}:' (use v: f: s: b: c:)", p)),
    };
    let size_of = |sp: Space| match sp {
        Space::Virt => img.virtual_size(),
        Space::File => img.layers[if st.space == Space::File { st.file_layer } else { 0 }].layer.file().len(),
    };
    if off < size_of(space) {
        return Ok((space, off));
    }
    // no prefix: an offset past the end of this space may still be one of the other
    let other = if space == Space::Virt { Space::File } else { Space::Virt };
    if prefix.is_none() && off < size_of(other) {
        return Ok((other, off));
    }
    Err(format!("0x{:x} is past the end (0x{:x})", off, size_of(space)))
}

fn submit(st: &mut AppState, img: &Image, text: &str) -> Vec<Effect> {
    match st.dialog {
        Some(Dialog::Jump) => match parse_jump(st, img, text) {
            Ok((space, off)) => {
                super::marks::push_jump(st);
                let layer = if space == Space::File && st.space == Space::File { st.file_layer } else { 0 };
                st.dialog = None;
                st.focus = Pane::Hex;
                set_cursor(st, img, space, layer, off);
                // a jump shows its target on the first row, as a hexdump would
                st.hex_top = st.cursor / 16 * 16;
            }
            Err(e) => st.dialog_error = Some(e),
        },
        Some(Dialog::Command) if matches!(text.trim(), "w" | "wq" | "x") => {
            st.dialog = None;
            update(st, img, Action::Save);
            if text.trim() != "w" && st.save_requested {
                st.quit_after_save = true;
            }
        }
        Some(Dialog::Command) if text.trim() == "ls" || text.trim().starts_with("ls ") => {
            st.dialog = None;
            let dir = text.trim().strip_prefix("ls ").map(|d| d.trim().to_string()).unwrap_or_else(|| st.cwd.clone());
            return start(st, Job::ListDir(dir));
        }
        Some(Dialog::Command) if text.trim() == "export" || text.trim().starts_with("export ") => {
            st.dialog = None;
            let path = text.trim().strip_prefix("export").unwrap_or("").trim().to_string();
            match st.selection() {
                _ if path.is_empty() => st.message = Some(":export FILE writes the selected bytes to FILE".into()),
                Some((a, b)) => return start(st, Job::Export { space: st.space, layer: st.file_layer, start: a, len: b - a + 1, path }),
                None => st.message = Some("nothing selected: V starts a selection in the hex view".into()),
            }
        }
        Some(Dialog::Command) if text.trim() == "check" => {
            st.dialog = None;
            return start(st, Job::Check);
        }
        Some(Dialog::Command) => {
            st.dialog = None;
            match command_words(&st.image_name, text) {
                Ok(words) => {
                    st.popup = None;
                    return start(st, Job::Command { title: format!(":{}", text.trim()), words });
                }
                Err(e) => st.popup = Some(Popup { title: format!(":{}", text.trim()), lines: vec![e], scroll: 0 }),
            }
        }
        Some(Dialog::Search) => match super::search::parse(text, st.search_icase) {
            Ok(pattern) => {
                st.dialog = None;
                st.search = Some(super::state::LastSearch { text: text.to_string(), pattern: pattern.clone(), backward: st.search_back });
                return start_search(st, pattern, st.search_back);
            }
            Err(e) => st.dialog_error = Some(e),
        },
        None => {}
    }
    Vec::new()
}

/// Search from the cursor: forward from the byte after it, backward from the bytes before.
fn start_search(st: &mut AppState, pattern: super::search::Pattern, backward: bool) -> Vec<Effect> {
    let from = if backward { st.cursor } else { st.cursor + 1 };
    let job = Job::Search { space: st.space, layer: st.file_layer, from, pattern, backward };
    start(st, job)
}

/// The words of a `:` subcommand on this image (`map` -> `map IMAGE`), or why not.
fn command_words(image: &str, text: &str) -> Result<Vec<String>, String> {
    let mut words = text.split_whitespace();
    let Some(sub) = words.next() else { return Err("type a subcommand: info, map, tables, where OFFSET, dump …".into()) };
    let sub = sub.trim_start_matches(':');
    let allowed = super::jobs::COMMANDS;
    if !allowed.contains(&sub) {
        return Err(format!("unknown command '{}': try {}", sub, allowed.join(", ")));
    }
    let mut args = vec![sub.to_string(), image.to_string()];
    args.extend(words.map(str::to_string));
    if sub == "read" && !args.iter().any(|a| a == "--length") {
        args.extend(["--length".into(), "4K".into()]);
    }
    Ok(args)
}

fn click(st: &mut AppState, img: &Image, x: u16, y: u16) {
    let scr = screen(st);
    let Some((pane, r)) = scr.panes.iter().find(|(_, r)| x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height).copied() else {
        return;
    };
    st.focus = pane;
    let (ix, iy) = (x.saturating_sub(r.x + 1) as u64, y.saturating_sub(r.y + 1) as u64);
    match pane {
        Pane::Header => {
            if let Some(i) = super::panes::header::field_at_row(st, r, iy as usize) {
                st.header_sel = i;
                select(st, img);
            }
        }
        Pane::Grid => {
            let g = super::layout::grid_geom(st, st.grid_units(img));
            let cols = g.cols;
            let (cx, cy) = (ix / g.cw as u64, iy / g.ch as u64);
            let first = super::panes::grid::first_row(st, img) * cols;
            let u = first + cy * cols + cx;
            if u < st.grid_units(img) && cx < cols {
                st.grid_sel = u;
                select(st, img);
            }
        }
        Pane::Hex => {
            let col = ix.saturating_sub(10);
            let byte = if col < 16 * 3 + 1 { (if col >= 25 { col - 1 } else { col }) / 3 } else { return };
            let off = st.hex_top + iy * 16 + byte.min(15);
            if off < space_size(st, img) {
                set_cursor(st, img, st.space, st.file_layer, off);
            }
        }
        Pane::L1 => {
            let i = super::panes::l1::first_row(st, r) + iy as usize;
            if i < l1_len(img) {
                st.l1_sel = i;
                select(st, img);
            }
        }
        Pane::Bitmap | Pane::Inspector => {}
    }
}

/// Show the next persistent dirty bitmap in the Bitmap pane (after the last one: none).
fn next_dirty_bitmap(st: &mut AppState, img: &Image) {
    let Some(q) = img.top().downcast_ref::<Qcow2>() else {
        st.message = Some("dirty bitmaps are a qcow2 feature".into());
        return;
    };
    let bitmaps = match q.bitmaps() {
        Ok(b) => b,
        Err(e) => {
            st.message = Some(format!("bitmaps: {}", e));
            return;
        }
    };
    if bitmaps.is_empty() {
        st.message = Some("this image has no persistent dirty bitmaps".into());
        return;
    }
    let next = match &st.dirty_bitmap {
        None => Some(0),
        Some((name, _)) => bitmaps.iter().position(|b| &b.name == name).map(|i| i + 1).filter(|&i| i < bitmaps.len()),
    };
    let Some(i) = next else {
        st.dirty_bitmap = None;
        return;
    };
    let bm = &bitmaps[i];
    let size = img.virtual_size();
    let buckets = 512u64.min(size.div_ceil(bm.granularity()).max(1));
    let per = size.div_ceil(buckets).max(1);
    let mut shares = Vec::with_capacity(buckets as usize);
    for b in 0..buckets {
        let start = b * per;
        if start >= size {
            break;
        }
        let len = per.min(size - start);
        match q.bitmap_dirty_bytes(bm, start, len) {
            Ok(d) => shares.push(d as f32 / len as f32),
            Err(e) => {
                st.message = Some(format!("bitmap {}: {}", bm.name, e));
                return;
            }
        }
    }
    st.dirty_bitmap = Some((bm.name.clone(), shares));
    st.focus = Pane::Bitmap;
}

//! Keys as data: one table maps (mode, key) to an action with a description, and the help
//! screen is drawn from the same table, so it cannot lie.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::Action;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Editing bytes in the hex pane.
    Edit,
    /// A popup (help, command output) is open.
    Popup,
    /// A list to choose from (Files view, findings) is open.
    Picker,
}

pub struct Binding {
    pub mode: Mode,
    pub keys: Vec<(KeyCode, KeyModifiers)>,
    /// How the help screen spells the keys.
    pub label: String,
    pub action: Action,
    pub desc: &'static str,
}

const N: KeyModifiers = KeyModifiers::NONE;
const S: KeyModifiers = KeyModifiers::SHIFT;
const C: KeyModifiers = KeyModifiers::CONTROL;

pub fn bindings() -> Vec<Binding> {
    use Action::*;
    use KeyCode::*;
    use Mode::*;
    let b = |mode, keys: &'static [(KeyCode, KeyModifiers)], label: &str, action, desc| Binding { mode, keys: keys.to_vec(), label: label.to_string(), action, desc };
    vec![
        b(Normal, &[(Char('q'), N), (Char('c'), C)], "q", Quit, "quit"),
        b(Normal, &[(KeyCode::Up, N), (Char('k'), N)], "↑ k", Action::Up, "move up"),
        b(Normal, &[(KeyCode::Down, N), (Char('j'), N)], "↓ j", Action::Down, "move down"),
        b(Normal, &[(KeyCode::Left, N), (Char('h'), N)], "← h", Action::Left, "move left"),
        b(Normal, &[(KeyCode::Right, N), (Char('l'), N)], "→ l", Action::Right, "move right"),
        b(Normal, &[(KeyCode::PageUp, N)], "PgUp", Action::PageUp, "page up"),
        b(Normal, &[(KeyCode::PageDown, N)], "PgDn", Action::PageDown, "page down"),
        b(Normal, &[(KeyCode::Home, N)], "Home", Action::Home, "go to the start"),
        b(Normal, &[(KeyCode::End, N)], "End", Action::End, "go to the end"),
        b(Normal, &[(Tab, N)], "Tab", NextPane, "next pane (on a small screen: the next tab)"),
        b(Normal, &[(BackTab, S), (BackTab, N)], "S-Tab", PrevPane, "previous pane"),
        b(Normal, &[(Enter, N)], "Enter", Select, "show the selected field/block in the hex view"),
        b(Normal, &[(Char('g'), N)], "g", OpenJump, "jump: 0x200000, 4M+512*3, v:/f: space, s: sector, b: block, c: cluster"),
        b(Normal, &[(Char('v'), N)], "v", ToggleSpace, "hex view: toggle guest (virtual) / host (file) space"),
        b(Normal, &[(Char(']'), N)], "]", NextAllocated, "next allocated block/cluster"),
        b(Normal, &[(Char('['), N)], "[", PrevAllocated, "previous allocated block/cluster"),
        b(Normal, &[(Char('/'), N)], "/", OpenSearch, "search forward: hex 'de ?? be ef' (?? any byte) or text, in the current space"),
        b(Normal, &[(Char('?'), N), (Char('?'), S)], "?", OpenSearchBack, "search backward"),
        b(Normal, &[(Char('n'), N)], "n", SearchNext, "next match of the last search (wraps round the end)"),
        b(Normal, &[(Char('N'), S), (Char('N'), N)], "N", SearchPrev, "previous match of the last search"),
        b(Normal, &[(Char(':'), N), (Char(':'), S)], ":", OpenCommand, "command line: :info :map :tables :where 0x1000 …"),
        b(Normal, &[(F(1), N), (Char('H'), S), (Char('H'), N)], "F1 H", Help, "this help"),
        b(Normal, &[(Char('V'), S), (Char('V'), N)], "V", VisualSelect, "select bytes in the hex view from the cursor (moves extend it; V or Esc ends it)"),
        b(Normal, &[(KeyCode::Up, S), (KeyCode::Down, S), (KeyCode::Left, S), (KeyCode::Right, S)], "S-arrows", Extend, "extend the selection (starts one at the cursor)"),
        b(Normal, &[(Char('y'), N)], "y", Yank, "copy the selection as hex to the clipboard (OSC 52); :export FILE writes its bytes"),
        b(Normal, &[(Char('m'), N)], "m{a-z}", MarkPending, "set a mark at the cursor (kept per image between runs)"),
        b(Normal, &[(Char('\''), N)], "'{a-z}", JumpPending, "jump to a mark"),
        b(Normal, &[(Char('o'), C)], "C-o", JumpBack, "back in the jump history (g, Enter, search hits, marks, findings)"),
        b(Normal, &[(Char('i'), C), (Char('n'), C)], "C-i C-n", JumpForward, "forward in the jump history (C-n where the terminal sends C-i as Tab)"),
        b(Normal, &[(Char('z'), N)], "z", Zoom, "zoom: the focused pane fills the screen (again: back)"),
        b(Normal, &[(Char('I'), S), (Char('I'), N)], "I", ToggleInspector, "data inspector: the bytes at the cursor as integers, floats, GUIDs, time stamps"),
        b(Normal, &[(Char('f'), N)], "f", OpenFiles, "Files view: browse the guest's ext filesystem (also :ls)"),
        b(Normal, &[(Char('o'), N)], "o", ToggleHostGrid, "grid: guest clusters / the file's host clusters by role (qcow2 refcounts)"),
        b(Normal, &[(Char('d'), N)], "d", NextDirtyBitmap, "Bitmap pane: show the next persistent dirty bitmap over the disk (qcow2)"),
        b(Normal, &[(Char('c'), N)], "c", OpenFindings, "check the image: findings, Enter jumps to one (also :check)"),
        b(Normal, &[(Char('}'), N), (Char('}'), S)], "}", NextDiff, "with --diff: next differing range"),
        b(Normal, &[(Char('{'), N), (Char('{'), S)], "{", PrevDiff, "with --diff: previous differing range"),
        b(Normal, &[(Char('W'), S), (Char('W'), N)], "W", ToggleWatch, "watch the image while another process writes it (new allocations marked)"),
        b(Normal, &[(Esc, N)], "Esc", CancelJob, "cancel the running job (search, check, host map, :command…); keys work while it runs"),
        b(Mode::Picker, &[(Enter, N)], "Enter", Select, "open the directory, show the file's bytes, go to the finding"),
        b(Mode::Picker, &[(Backspace, N), (KeyCode::Left, N), (Char('h'), N)], "← Bksp", Parent, "up one directory"),
        b(Mode::Picker, &[(Esc, N), (Char('q'), N)], "Esc", Cancel, "close the list"),
        b(Mode::Picker, &[(KeyCode::Up, N), (Char('k'), N)], "↑ k", Action::Up, "previous entry"),
        b(Mode::Picker, &[(KeyCode::Down, N), (Char('j'), N)], "↓ j", Action::Down, "next entry"),
        b(Mode::Picker, &[(KeyCode::PageUp, N)], "PgUp", Action::PageUp, "page up"),
        b(Mode::Picker, &[(KeyCode::PageDown, N)], "PgDn", Action::PageDown, "page down"),
        b(Mode::Picker, &[(KeyCode::Home, N)], "Home", Action::Home, "first entry"),
        b(Mode::Picker, &[(KeyCode::End, N)], "End", Action::End, "last entry"),
        b(Normal, &[(Char('i'), N)], "i", Action::Edit, "edit bytes at the hex cursor (needs --write)"),
        b(Normal, &[(Char('u'), N)], "u", Undo, "undo one staged byte"),
        b(Normal, &[(Char('r'), C)], "C-r", Redo, "redo one staged byte"),
        b(Normal, &[(Char('s'), C)], "C-s", Save, "save staged edits (also :w)"),
        b(Mode::Edit, &[], "0-9 a-f", Type('0'), "overwrite the nibble at the cursor (ASCII column: any character)"),
        b(Mode::Edit, &[(Tab, N)], "Tab", ToggleAscii, "switch between hex digits and the ASCII column"),
        b(Mode::Edit, &[(Esc, N)], "Esc", LeaveEdit, "leave edit mode"),
        b(Mode::Edit, &[(KeyCode::Up, N)], "↑", Action::Up, "move up"),
        b(Mode::Edit, &[(KeyCode::Down, N)], "↓", Action::Down, "move down"),
        b(Mode::Edit, &[(KeyCode::Left, N)], "←", Action::Left, "move left"),
        b(Mode::Edit, &[(KeyCode::Right, N)], "→", Action::Right, "move right"),
        b(Mode::Edit, &[(Char('s'), C)], "C-s", Save, "save staged edits"),
        b(Mode::Edit, &[(Char('r'), C)], "C-r", Redo, "redo one staged byte"),
        b(Popup, &[(Esc, N), (Char('q'), N), (Enter, N), (Char('?'), N), (Char('?'), S)], "Esc q", Cancel, "close the popup"),
        b(Popup, &[(KeyCode::Up, N), (Char('k'), N)], "↑ k", Action::Up, "scroll up"),
        b(Popup, &[(KeyCode::Down, N), (Char('j'), N)], "↓ j", Action::Down, "scroll down"),
        b(Popup, &[(KeyCode::PageUp, N)], "PgUp", Action::PageUp, "page up"),
        b(Popup, &[(KeyCode::PageDown, N)], "PgDn", Action::PageDown, "page down"),
    ]
}

/// The action bound to `key` in `mode`, if any. Shift is part of a character already
/// ('N', '?'), so it is ignored for characters and for BackTab.
pub fn lookup(mode: Mode, key: &KeyEvent) -> Option<Action> {
    lookup_in(&bindings(), mode, key)
}

/// The action bound to `key` in `mode` in `table` (the defaults with the user's config).
pub fn lookup_in(table: &[Binding], mode: Mode, key: &KeyEvent) -> Option<Action> {
    let norm = |code: &KeyCode, m: KeyModifiers| match code {
        KeyCode::Char(_) | KeyCode::BackTab => m - S,
        _ => m,
    };
    let want = norm(&key.code, key.modifiers);
    table.iter().find_map(|b| {
        let hit = b.mode == mode && b.keys.iter().any(|(code, m)| *code == key.code && norm(code, *m) == want);
        hit.then(|| b.action.clone())
    })
}

/// The first key of `action` in normal mode as the help spells it (for hints on screen).
pub fn key_of(table: &[Binding], action: &Action) -> String {
    table
        .iter()
        .find(|b| b.mode == Mode::Normal && b.action == *action)
        .and_then(|b| b.label.split(' ').next().map(str::to_string))
        .unwrap_or_else(|| "(unbound)".into())
}

/// Lines of the help screen, from the table.
pub fn help_lines() -> Vec<(String, String)> {
    help_lines_in(&bindings())
}

/// Lines of the help screen from `table` (the user's config applied).
pub fn help_lines_in(table: &[Binding]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (mode, title) in [(Mode::Normal, "Keys"), (Mode::Edit, "Edit mode (i, with --write)"), (Mode::Picker, "In the Files view and the findings"), (Mode::Popup, "In a popup")] {
        out.push((format!("{}:", title), String::new()));
        for b in table.iter().filter(|b| b.mode == mode) {
            out.push((b.label.clone(), b.desc.to_string()));
        }
        out.push((String::new(), String::new()));
    }
    out.push(("Dialogs:".into(), String::new()));
    out.push(("Enter".into(), "run / jump / search".into()));
    out.push(("C-t".into(), "search dialog: text matches either case / exact case".into()));
    out.push(("Esc".into(), "cancel".into()));
    out.push(("mouse".into(), "click selects a pane, a cell or a byte; the wheel scrolls".into()));
    out
}

/// Parse `--keys` tokens: `Enter Esc Tab BackTab Up Down Left Right PgUp PgDn Home End`,
/// `C-x` for Ctrl, `F1`, `Space`; anything else is typed character by character.
pub fn parse_keys(s: &str) -> Vec<KeyEvent> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        let code = match tok {
            "Enter" => Some(KeyCode::Enter),
            "Esc" => Some(KeyCode::Esc),
            "Tab" => Some(KeyCode::Tab),
            "BackTab" => Some(KeyCode::BackTab),
            "Up" => Some(KeyCode::Up),
            "Down" => Some(KeyCode::Down),
            "Left" => Some(KeyCode::Left),
            "Right" => Some(KeyCode::Right),
            "PgUp" => Some(KeyCode::PageUp),
            "PgDn" => Some(KeyCode::PageDown),
            "Home" => Some(KeyCode::Home),
            "End" => Some(KeyCode::End),
            "Backspace" => Some(KeyCode::Backspace),
            "Space" => Some(KeyCode::Char(' ')),
            "F1" => Some(KeyCode::F(1)),
            _ => None,
        };
        if let Some(code) = code {
            let m = if code == KeyCode::BackTab { S } else { N };
            out.push(KeyEvent::new(code, m));
            continue;
        }
        if let Some(c) = tok.strip_prefix("C-").filter(|r| r.chars().count() == 1) {
            out.push(KeyEvent::new(KeyCode::Char(c.chars().next().unwrap()), C));
            continue;
        }
        for c in tok.chars() {
            let m = if c.is_ascii_uppercase() { S } else { N };
            out.push(KeyEvent::new(KeyCode::Char(c), m));
        }
    }
    out
}

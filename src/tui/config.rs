//! `~/.config/vdiskview/config.toml` ($XDG_CONFIG_HOME, or `--config FILE`): key bindings,
//! the theme, the panes shown at start. A bad file is one line naming the file and the line,
//! never a panic.
//!
//! ```toml
//! theme = "light"            # default, light, high-contrast (NO_COLOR still turns colour off)
//! inspector = true           # show the data inspector at start
//! [keys]                     # action = key or [keys]; the help screen shows what is bound
//! search = "F3"
//! quit = ["Q", "C-q"]
//! ```

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyModifiers};

use super::keymap::{self, Binding, Mode};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Theme {
    #[default]
    Default,
    Light,
    HighContrast,
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub theme: Theme,
    pub inspector: bool,
    /// (action name, keys) from `[keys]`, in file order.
    pub keys: Vec<(String, Vec<(KeyCode, KeyModifiers)>)>,
}

/// The default config file: $XDG_CONFIG_HOME/vdiskview/config.toml, else ~/.config/….
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("vdiskview").join("config.toml"))
}

/// Read the config: `--config FILE` (must exist), else the default file if there is one.
pub fn load(explicit: Option<&Path>) -> Result<Config, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(Config::default()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config {}: {}", path.display(), e))?;
    parse(&text).map_err(|(line, msg)| format!("config {}:{}: {}", path.display(), line, msg))
}

/// The 1-based line of byte `off` in `text`.
fn line_of(text: &str, off: usize) -> usize {
    text[..off.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` is set (for errors found after parsing), else 1.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key).or_else(|| l.strip_prefix(&format!("\"{}\"", key))).is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// Parse a config's text; an error is (line, message).
pub fn parse(text: &str) -> Result<Config, (usize, String)> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        (line, e.message().trim().replace('\n', " "))
    })?;
    let mut cfg = Config::default();
    let at = |k: &str| line_of_key(text, k);
    for (k, v) in &table {
        match (k.as_str(), v) {
            ("theme", toml::Value::String(s)) => {
                cfg.theme = match s.as_str() {
                    "default" => Theme::Default,
                    "light" => Theme::Light,
                    "high-contrast" => Theme::HighContrast,
                    other => return Err((at(k), format!("unknown theme '{}' (default, light, high-contrast)", other))),
                }
            }
            ("inspector", toml::Value::Boolean(b)) => cfg.inspector = *b,
            ("keys", toml::Value::Table(t)) => {
                let names = action_names();
                for (action, keys) in t {
                    if !names.contains(action) {
                        return Err((at(action), format!("unknown action '{}' in [keys] (one of: {})", action, names.join(", "))));
                    }
                    let list: Vec<&toml::Value> = match keys {
                        toml::Value::Array(a) => a.iter().collect(),
                        v => vec![v],
                    };
                    let mut parsed = Vec::new();
                    for v in list {
                        let Some(s) = v.as_str() else {
                            return Err((at(action), format!("keys of '{}' are strings like \"x\", \"C-x\", \"F3\"", action)));
                        };
                        parsed.push(parse_key(s).ok_or_else(|| (at(action), format!("'{}' is not a key (x, X, C-x, F1-F12, Enter, Esc, Tab, Up, PgDn, …)", s)))?);
                    }
                    cfg.keys.push((action.clone(), parsed));
                }
            }
            ("theme" | "inspector" | "keys", _) => return Err((at(k), format!("'{}' has the wrong type", k))),
            (other, _) => return Err((at(other), format!("unknown setting '{}' (theme, inspector, [keys])", other))),
        }
    }
    Ok(cfg)
}

/// `x`, `X`, `C-x`, `F3`, `Enter`, `Esc`, `Tab`, `Up`, `PgDn`, …
pub fn parse_key(s: &str) -> Option<(KeyCode, KeyModifiers)> {
    let ev = keymap::parse_keys(s);
    match (&ev[..], s.chars().count()) {
        ([k], _) => Some((k.code, k.modifiers)),
        _ if s.len() >= 2 && s.starts_with('F') => s[1..].parse::<u8>().ok().filter(|n| (1..=12).contains(n)).map(|n| (KeyCode::F(n), KeyModifiers::NONE)),
        _ => None,
    }
}

/// How the help spells a key.
pub fn key_label((code, m): (KeyCode, KeyModifiers)) -> String {
    let base = match code {
        KeyCode::Char(' ') => "Space".to_string(),
        KeyCode::Char(c) => c.to_string(),
        KeyCode::F(n) => format!("F{}", n),
        KeyCode::Up => "↑".into(),
        KeyCode::Down => "↓".into(),
        KeyCode::Left => "←".into(),
        KeyCode::Right => "→".into(),
        KeyCode::PageUp => "PgUp".into(),
        KeyCode::PageDown => "PgDn".into(),
        KeyCode::BackTab => "S-Tab".into(),
        other => format!("{:?}", other),
    };
    let base = if m.contains(KeyModifiers::SHIFT) && !matches!(code, KeyCode::Char(_) | KeyCode::BackTab) { format!("S-{}", base) } else { base };
    if m.contains(KeyModifiers::CONTROL) {
        format!("C-{}", base)
    } else {
        base
    }
}

/// A binding's name in the config: its action in kebab case (`OpenSearch` -> `open-search`).
pub fn action_name(b: &Binding) -> String {
    let dbg = format!("{:?}", b.action);
    let mut out = String::new();
    for (i, c) in dbg.chars().take_while(|c| c.is_alphanumeric()).enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The names `[keys]` takes: the normal-mode actions.
pub fn action_names() -> Vec<String> {
    let mut v: Vec<String> = keymap::bindings().iter().filter(|b| b.mode == Mode::Normal).map(action_name).collect();
    v.dedup();
    v
}

/// The binding table with the config's keys: a rebound action takes its new keys (and its
/// help label from them); a key taken from another action is no longer that action's.
pub fn apply(mut table: Vec<Binding>, cfg: &Config) -> Vec<Binding> {
    for (name, keys) in &cfg.keys {
        for b in table.iter_mut().filter(|b| b.mode == Mode::Normal) {
            if action_name(b) == *name {
                b.keys = keys.clone();
                b.label = keys.iter().map(|k| key_label(*k)).collect::<Vec<_>>().join(" ");
            } else if b.keys.iter().any(|k| keys.contains(k)) {
                b.keys.retain(|k| !keys.contains(k));
                b.label = if b.keys.is_empty() { "(unbound)".into() } else { b.keys.iter().map(|k| key_label(*k)).collect::<Vec<_>>().join(" ") };
            }
        }
    }
    table
}

//! Marks (`m{a-z}` sets, `'{a-z}` jumps) and the jump history (`C-o` back, `C-i` forward).
//! Marks persist per image in the state directory ($XDG_STATE_HOME/vdiskview, else
//! ~/.local/state/vdiskview): one small text file per image, named by a hash of its path.

use std::path::{Path, PathBuf};

use super::state::{AppState, Space};

/// A place: space, file layer (file space), offset.
pub type Pos = (Space, usize, u64);

/// How many jumps the history keeps.
const HISTORY: usize = 100;

/// The state directory: $XDG_STATE_HOME/vdiskview, else ~/.local/state/vdiskview.
pub fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("vdiskview"))
}

/// FNV-1a: a stable name for an image's marks file (std's hasher may change between releases).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The marks file of the image at `image` under `dir`.
pub fn file_for(dir: &Path, image: &str) -> PathBuf {
    let abs = std::fs::canonicalize(image).map(|p| p.display().to_string()).unwrap_or_else(|_| image.to_string());
    dir.join("marks").join(format!("{:016x}.txt", fnv(&abs)))
}

/// Give the state its marks file under `dir` and read the marks saved there, if any. A file
/// that cannot be read or parsed is left alone (a line that does not parse is skipped).
pub fn attach(st: &mut AppState, dir: &Path) {
    let path = file_for(dir, &st.image_name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [name, space, layer, off] = w[..] else { continue };
            let (Some(c), Ok(layer), Ok(off)) = (name.chars().next(), layer.parse::<usize>(), u64::from_str_radix(off.trim_start_matches("0x"), 16)) else {
                continue;
            };
            let space = match space {
                "guest" => Space::Virt,
                "file" => Space::File,
                _ => continue,
            };
            st.marks.insert(c, (space, layer, off));
        }
    }
    st.marks_file = Some(path);
}

/// Attach to the state directory of the environment (the terminal and `render`).
pub fn attach_env(st: &mut AppState) {
    if let Some(d) = state_dir() {
        attach(st, &d);
    }
}

/// The marks file's text.
pub fn text(st: &AppState) -> String {
    let mut out = format!("# vdiskview marks for {}\n", st.image_name);
    for (c, (space, layer, off)) in &st.marks {
        let s = match space {
            Space::Virt => "guest",
            Space::File => "file",
        };
        out += &format!("{} {} {} 0x{:x}\n", c, s, layer, off);
    }
    out
}

pub fn here(st: &AppState) -> Pos {
    (st.space, st.file_layer, st.cursor)
}

/// Before a jump: remember where the cursor was (C-o comes back here).
pub fn push_jump(st: &mut AppState) {
    let p = here(st);
    if st.back.last() != Some(&p) {
        st.back.push(p);
        if st.back.len() > HISTORY {
            st.back.remove(0);
        }
    }
    st.fwd.clear();
}

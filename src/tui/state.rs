//! Everything the screen shows, in one place. `update` changes it; `draw` only reads it.

use ratatui_textarea::TextArea;

use crate::image::qcow2::Qcow2;
use crate::image::region::Field;
use crate::image::Image;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Virt,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Header,
    /// QCOW2 only: the L1 table as a list.
    L1,
    /// The BAT (VHD) or L2 (QCOW2) grid of blocks/clusters.
    Grid,
    Hex,
    Bitmap,
    /// The data inspector: the bytes at the cursor read as integers, GUIDs, time stamps (`I`).
    Inspector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialog {
    Jump,
    Command,
    Search,
}

/// Edit mode of the hex pane: typing overwrites bytes at the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Typing characters into the ASCII column instead of hex digits.
    pub ascii: bool,
    /// The next hex digit is the low nibble of the byte at the cursor.
    pub low_nibble: bool,
}

/// One staged byte change, for undo and redo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub space: Space,
    pub off: u64,
    /// What the byte showed before this change (staged or on disk).
    pub old: u8,
    pub new: u8,
    /// Whether a staged value existed before (undo restores "not staged" otherwise).
    pub was_staged: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickerKind {
    Files,
    Findings,
}

/// What choosing a picker row does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Dir(String),
    File(String),
    /// A finding's place: host offset in the top file, and/or a guest offset.
    Place { host: Option<u64>, virt: Option<u64> },
    Nothing,
}

/// A selectable list over the screen: the Files view or the check findings.
#[derive(Debug)]
pub struct Picker {
    pub kind: PickerKind,
    pub title: String,
    pub rows: Vec<String>,
    pub targets: Vec<Target>,
    pub sel: usize,
}

pub struct Popup {
    pub title: String,
    pub lines: Vec<String>,
    pub scroll: usize,
}

/// One row of the Header pane: a field of a named structure.
#[derive(Clone, Debug)]
pub struct HeaderRow {
    pub group: String,
    pub field: Field,
}

pub struct AppState {
    pub image_name: String,
    pub is_qcow2: bool,
    pub space: Space,
    /// Hex cursor, an offset in `space` (the top file for File space).
    pub cursor: u64,
    /// Which file of the chain File space shows (0 = the top image).
    pub file_layer: usize,
    /// First byte of the first hex row shown.
    pub hex_top: u64,
    pub focus: Pane,
    pub header: Vec<HeaderRow>,
    pub header_sel: usize,
    /// Selected grid cell (block/cluster index).
    pub grid_sel: u64,
    pub l1_sel: usize,
    pub dialog: Option<Dialog>,
    pub input: TextArea<'static>,
    /// Error shown in the open dialog.
    pub dialog_error: Option<String>,
    pub popup: Option<Popup>,
    pub message: Option<String>,
    pub size: (u16, u16),
    pub no_color: bool,
    pub quit: bool,
    /// Opened with --write: edits can be saved.
    pub writable: bool,
    pub edit: Option<Edit>,
    /// Staged edits, guest space and the top file's space, not yet written.
    pub staged_virt: std::collections::BTreeMap<u64, u8>,
    pub staged_file: std::collections::BTreeMap<u64, u8>,
    pub undo: Vec<Change>,
    pub redo: Vec<Change>,
    /// `q` with unsaved edits: waiting for y (discard and quit) or anything else (stay).
    pub confirm_quit: bool,
    /// Set by `update`; the loop that owns the image saves (it needs it mutable).
    pub save_requested: bool,
    /// Quit once the requested save succeeds (`s` at the quit prompt, `:wq`).
    pub quit_after_save: bool,
    pub picker: Option<Picker>,
    /// The grid shows the top file's host clusters by role (qcow2) instead of guest clusters.
    pub grid_host: bool,
    /// The persistent dirty bitmap shown in the Bitmap pane: name, dirty share per bucket.
    pub dirty_bitmap: Option<(String, Vec<f32>)>,
    pub host_map: Option<crate::image::qcow2::check::HostMap>,
    /// The folder the Files view shows (the filesystem itself lives with the job runner).
    pub cwd: String,
    /// Guest ranges to highlight in the hex view and the grid (a located file's extents).
    pub highlights: Vec<(u64, u64)>,
    /// Partition tables and superblocks in guest space, named like file-space structures.
    pub guest_regions: Vec<crate::image::region::Region>,
    /// Whole-disk allocation density, one value (0..=1) per bucket; a job fills it in.
    pub density: Vec<f32>,
    /// Jobs running on the worker, oldest first; the status line shows the newest.
    pub jobs: Vec<JobStatus>,
    pub next_job: u64,
    /// What draw shows from the image, read after update (view.rs).
    pub view: super::view::ViewModel,
    /// Saves so far: the image's bytes changed, so the view model reads them again.
    pub saves: u64,
    /// `--diff`: the other side and the differing ranges.
    pub diff: Option<super::compare::DiffState>,
    /// `--watch` / `W`: newly allocated units and counts.
    pub watch: super::compare::WatchState,
    /// Set by `update` (W); the loop that owns the image starts or stops watching.
    pub watch_toggle: bool,
    /// `z`: the focused pane fills the screen.
    pub zoom: bool,
    /// Panes by when they last had the focus, most recent first: a place on screen that holds
    /// several panes (tabs on a small terminal) shows the one used last.
    pub recent: Vec<Pane>,
    /// `I`: the data inspector is shown.
    pub inspector: bool,
    /// The last search (`n`/`N` repeat it; its matches are highlighted) and its direction.
    pub search: Option<LastSearch>,
    /// Text searches ignore case (Ctrl-t in the search dialog toggles it).
    pub search_icase: bool,
    /// The open search dialog searches backward (`?`).
    pub search_back: bool,
    /// `V`: where the visual selection started (space, file layer, offset); the cursor is its
    /// other end.
    pub sel_anchor: Option<(Space, usize, u64)>,
    /// The hex text last put on the clipboard (`y`).
    pub last_copied: Option<String>,
    /// `m`/`'` typed: the next key names the mark.
    pub pending: Option<char>,
    /// Marks a-z, and the file they persist in (none: not kept between runs).
    pub marks: std::collections::BTreeMap<char, super::marks::Pos>,
    pub marks_file: Option<std::path::PathBuf>,
    /// The jump history: where C-o goes back to, and C-i forward again.
    pub back: Vec<super::marks::Pos>,
    pub fwd: Vec<super::marks::Pos>,
    /// The key table (defaults with the user's config): keys and the help screen.
    pub keymap: std::sync::Arc<Vec<super::keymap::Binding>>,
    pub theme: super::config::Theme,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSearch {
    pub text: String,
    pub pattern: super::search::Pattern,
    pub backward: bool,
}

/// A running job as the status line shows it.
#[derive(Clone, Debug)]
pub struct JobStatus {
    pub id: u64,
    pub job: super::jobs::Job,
    pub done: u64,
    pub total: u64,
    pub started: std::time::Instant,
}

impl AppState {
    pub fn new(img: &Image, size: (u16, u16)) -> AppState {
        let top = img.top();
        let mut header = Vec::new();
        for r in top.regions() {
            let keep = matches!(r.structure, "footer" | "dynamic-header" | "header" | "header-extension" | "descriptor");
            if !keep {
                continue;
            }
            for f in r.fields {
                if f.name == "Reserved" && f.value.is_empty() {
                    continue;
                }
                header.push(HeaderRow { group: r.name.clone(), field: f });
            }
        }
        // the footer first: it is what identifies a VHD
        header.sort_by_key(|h| if h.group == "footer" { 0 } else { 1 });
        let is_qcow2 = top.downcast_ref::<Qcow2>().is_some();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let mut st = AppState {
            image_name: img.layers[0].name.clone(),
            is_qcow2,
            // guest space: what the disk holds; header fields switch to the file's bytes
            space: Space::Virt,
            cursor: 0,
            file_layer: 0,
            hex_top: 0,
            focus: Pane::Header,
            header,
            header_sel: 0,
            grid_sel: 0,
            l1_sel: 0,
            dialog: None,
            input: TextArea::default(),
            dialog_error: None,
            popup: None,
            message: None,
            size,
            no_color,
            quit: false,
            density: Vec::new(),
            writable: img.layers[0].layer.file().writable(),
            edit: None,
            staged_virt: Default::default(),
            staged_file: Default::default(),
            undo: Vec::new(),
            redo: Vec::new(),
            confirm_quit: false,
            save_requested: false,
            quit_after_save: false,
            picker: None,
            grid_host: false,
            dirty_bitmap: None,
            host_map: None,
            cwd: "/".into(),
            highlights: Vec::new(),
            guest_regions: crate::guest::regions::guest_regions(img),
            jobs: Vec::new(),
            next_job: 1,
            view: Default::default(),
            saves: 0,
            diff: None,
            watch: Default::default(),
            watch_toggle: false,
            zoom: false,
            recent: vec![Pane::Header],
            inspector: false,
            search: None,
            search_icase: true,
            search_back: false,
            sel_anchor: None,
            last_copied: None,
            pending: None,
            marks: Default::default(),
            marks_file: None,
            back: Vec::new(),
            fwd: Vec::new(),
            keymap: std::sync::Arc::new(super::keymap::bindings()),
            theme: Default::default(),
        };
        let damage = img.warnings.len() + img.chain_error.iter().count();
        if damage > 0 {
            st.message = Some(format!(
                "{} problem(s) found while opening: {} — c lists them",
                damage,
                img.chain_error.as_ref().or(img.warnings.first()).cloned().unwrap_or_default()
            ));
        }
        st
    }

    /// The selected bytes, first and last (inclusive), in the current space; none when the
    /// selection was made in another space or file.
    pub fn selection(&self) -> Option<(u64, u64)> {
        let (space, layer, a) = self.sel_anchor?;
        (space == self.space && (space == Space::Virt || layer == self.file_layer)).then(|| (a.min(self.cursor), a.max(self.cursor)))
    }

    /// Take the user's config: key bindings, theme, panes at start.
    pub fn configure(&mut self, cfg: &super::config::Config) {
        self.keymap = std::sync::Arc::new(super::config::apply(super::keymap::bindings(), cfg));
        self.theme = cfg.theme;
        self.inspector = cfg.inspector;
    }

    pub fn staged_count(&self) -> usize {
        self.staged_virt.len() + self.staged_file.len()
    }

    /// The staged value of a byte of the hex view's current space, if any.
    pub fn staged_at(&self, off: u64) -> Option<u8> {
        match self.space {
            Space::Virt => self.staged_virt.get(&off).copied(),
            Space::File if self.file_layer == 0 => self.staged_file.get(&off).copied(),
            Space::File => None,
        }
    }

    /// The guest-space structure (partition table, superblock) holding guest byte `off`.
    pub fn guest_region(&self, off: u64) -> Option<&crate::image::region::Region> {
        let i = self.guest_regions.partition_point(|r| r.start <= off);
        self.guest_regions[..i].iter().rev().take(4).find(|r| r.contains(off))
    }

    /// Cells of the grid: guest blocks/clusters, or host clusters in the host view.
    pub fn grid_units(&self, img: &Image) -> u64 {
        match (&self.host_map, self.grid_host) {
            (Some(m), true) => m.len() as u64,
            _ => img.unit_count(),
        }
    }

    pub fn highlighted(&self, off: u64) -> bool {
        self.highlights.iter().any(|&(v, l)| off >= v && off - v < l)
    }

    pub fn panes(&self) -> Vec<Pane> {
        let mut v = if self.is_qcow2 {
            vec![Pane::Header, Pane::L1, Pane::Grid, Pane::Hex, Pane::Bitmap]
        } else {
            vec![Pane::Header, Pane::Grid, Pane::Hex, Pane::Bitmap]
        };
        if self.inspector {
            // beside the hex view, in Tab order too
            v.insert(v.len() - 1, Pane::Inspector);
        }
        v
    }

    /// Of `panes`, the one to show: the focused one, else the one used last, else the first.
    pub fn shown_of(&self, panes: &[Pane]) -> Pane {
        if panes.contains(&self.focus) {
            return self.focus;
        }
        self.recent.iter().copied().find(|p| panes.contains(p)).unwrap_or(panes[0])
    }

    /// Remember the focused pane as the most recent (after every update).
    pub fn note_focus(&mut self) {
        if self.recent.first() != Some(&self.focus) {
            let f = self.focus;
            self.recent.retain(|p| *p != f);
            self.recent.insert(0, f);
        }
    }
}

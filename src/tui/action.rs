//! Intents: what a key, a click or a script asks for. `update` turns them into state.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    NextPane,
    PrevPane,
    Select,
    OpenJump,
    OpenCommand,
    OpenSearch,
    /// `?`: the search dialog, searching backward.
    OpenSearchBack,
    /// `n`: the last search again, in its direction; `N`: the other way.
    SearchNext,
    SearchPrev,
    /// In the search dialog: text matches either case, or not.
    ToggleCase,
    ToggleSpace,
    NextAllocated,
    PrevAllocated,
    Help,
    /// Close a dialog or popup.
    Cancel,
    /// Submit a dialog's text (jump expression, command line, search).
    Submit(String),
    /// Enter edit mode in the hex pane (or explain why not).
    Edit,
    /// Leave edit mode.
    LeaveEdit,
    /// Edit mode: switch between the hex digits and the ASCII column.
    ToggleAscii,
    /// Edit mode: a typed character (hex digit, or any character in the ASCII column).
    Type(char),
    Undo,
    Redo,
    Save,
    /// The Files view: browse the guest's ext filesystem (also `:ls`).
    OpenFiles,
    /// The check findings (also `:check`).
    OpenFindings,
    /// Grid: guest clusters, or the image file's host clusters coloured by role (qcow2).
    ToggleHostGrid,
    /// Bitmap pane: the next persistent dirty bitmap over the disk (qcow2), then none.
    NextDirtyBitmap,
    /// Files view: up one directory.
    Parent,
    /// `--diff`: the cursor to the next / previous differing range.
    NextDiff,
    PrevDiff,
    /// Start or stop watching the image for writes by another process.
    ToggleWatch,
    /// Stop the running job (Esc when no dialog, list or popup is open).
    CancelJob,
    /// A job's progress: `done` of `total` (0 total: no measure, only time).
    JobProgress { id: u64, done: u64, total: u64 },
    /// A job ended; its result (found offset, findings, listing, output…) is inside.
    JobDone(u64, super::jobs::Outcome),
    /// `V`: start (or end) a visual selection in the hex view; moves extend it.
    VisualSelect,
    /// Shift+arrows: extend the selection (starting one at the cursor if there is none); the
    /// key's arrow gives the direction (one binding, one help line).
    Extend,
    ExtendUp,
    ExtendDown,
    ExtendLeft,
    ExtendRight,
    /// `y`: copy the selection as hex to the clipboard (OSC 52).
    Yank,
    /// `m`: the next key (a-z) names a mark to set here; `'`: a mark to jump to.
    MarkPending,
    JumpPending,
    SetMark(char),
    JumpMark(char),
    /// `C-o` / `C-i`: back and forward in the jump history.
    JumpBack,
    JumpForward,
    /// `z`: the focused pane fills the screen, or not.
    Zoom,
    /// `I`: show or hide the data inspector.
    ToggleInspector,
    Resize(u16, u16),
    Click(u16, u16),
    Scroll(i32),
}

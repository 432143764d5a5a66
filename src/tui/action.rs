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
    ToggleSpace,
    NextAllocated,
    PrevAllocated,
    Help,
    /// Close a dialog or popup.
    Cancel,
    /// Submit a dialog's text (jump expression, command line, search).
    Submit(String),
    Resize(u16, u16),
    Click(u16, u16),
    Scroll(i32),
}

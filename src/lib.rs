//! vdiskview: see virtual disk images as they really are.
//!
//! The image model lives in the `vdiskview-core` crate (no UI dependency); this crate is the
//! command line ([`cli`]) and the terminal UI ([`tui`]) on top of it. `image` and `guest` are
//! re-exported so front-end code and tests name them as before.

pub use vdiskview_core::{guest, image};

pub mod cli;
pub mod tui;

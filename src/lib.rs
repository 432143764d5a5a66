//! vdiskview: see virtual disk images (VHD, QCOW2, raw) as they really are.
//!
//! The image model ([`image`]) knows nothing of the user interface; the command line
//! ([`cli`]) and every later front end stand on it.

pub mod cli;
pub mod guest;
pub mod image;
pub mod tui;

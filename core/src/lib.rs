//! vdiskview-core: the image model of vdiskview, with no user interface.
//!
//! [`image`] opens a file, probes its format through the registered drivers, follows its
//! backing chain and answers "what is at this guest offset" for every front end (the CLI and
//! TUI in the `vdiskview` crate, the nbdkit plugin, the fuzz targets). [`guest`] reads what is
//! inside the guest disk: partition tables and filesystems.

pub mod guest;
pub mod image;

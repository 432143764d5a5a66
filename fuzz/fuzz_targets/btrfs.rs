//! The btrfs reader on a whole-disk volume: open, list the root and one level
//! below, stat, map and read each entry (bounded): the input is the guest disk, read as a raw
//! image.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::guest::FsKind;

fuzz_target!(|data: &[u8]| vdiskview_fuzz::exercise_fs(data, FsKind::Btrfs));

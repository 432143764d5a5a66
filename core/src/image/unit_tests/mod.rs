//! Pure unit tests of the image model: images built in memory per the specifications, no qemu.
//! `cargo test -p vdiskview-core --lib` runs them in seconds.

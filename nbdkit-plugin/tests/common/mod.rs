//! What the plugin's tests share with the main test suite: the differencing-VHD builder
//! (tests/support/vhd.rs) and the few helpers it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../tests/support/vhd.rs"]
pub mod vhd;

pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

pub fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {}", args[0], e));
    assert!(out.status.success(), "{:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn qemu_convert_raw(path: &Path, fmt: &str) -> Vec<u8> {
    let out = path.with_extension("oracle.raw");
    run(&["qemu-img", "convert", "-f", fmt, "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

/// The plugin cargo built for this test: `cargo test` leaves the cdylib beside the test
/// binary in target/<profile>/deps (only `cargo build` copies it up to target/<profile>).
pub fn plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [deps.join("libvdiskview_nbdkit.so"), deps.parent().unwrap().join("libvdiskview_nbdkit.so")];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| panic!("plugin not built: looked for {:?}", candidates))
}

/// Run `nbdkit -U - PLUGIN file=IMG ARGS --run CMD`: nbdkit owns the socket in its own temp
/// folder and stops when CMD ends. `$uri` in CMD is the NBD URI.
pub fn with_nbdkit(img: &Path, args: &[&str], cmd: &str) -> std::process::Output {
    let file = format!("file={}", img.display());
    let plugin = plugin();
    let mut c = Command::new("timeout");
    c.args(["60", "nbdkit", "-U", "-", "--exit-with-parent"]).arg(&plugin).arg(&file).args(args).args(["--run", cmd]);
    c.output().expect("nbdkit is installed (.ci/run installs it)")
}

/// The `--run` command of [`with_nbdkit`] that runs qemu-io (with `flags`, e.g. "-t
/// writeback") and its commands on the export.
#[allow(dead_code)] // not every test file writes through the plugin
pub fn qemu_io_over_nbd(flags: &str, cmds: &[&str]) -> String {
    let mut script = format!("qemu-io {flags} -f raw");
    for c in cmds {
        script += &format!(" -c '{}'", c);
    }
    script + " \"$uri\""
}

/// Run `qemu-io -f FMT -c CMD … IMG` and insist nothing failed.
#[allow(dead_code)] // not every test file writes with qemu-io
pub fn io(fmt: &str, img: &Path, cmds: &[&str]) {
    let mut args = vec!["qemu-io", "-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let img = img.to_str().expect("UTF-8 temp path");
    args.push(img);
    let out = run(&args);
    assert!(!out.contains("failed"), "{}", out);
}

//! What an NBD client flushed survives a `kill -9` of nbdkit: the plugin keeps writes (for
//! qcow2 their L2/L1 entries) in memory until the client's FLUSH, so that FLUSH must put
//! them in the file. qemu-io writes through the socket, flushes, writes more without a flush,
//! and nbdkit is killed while qemu-io is still connected (a clean close would flush too):
//! qemu-io's last command is a long `sleep`, and its output (line-buffered by `stdbuf`)
//! says when the writes before it are done.
//! Then qemu's own tools look at the image: `qemu-img check` finds nothing worse than leaks,
//! the flushed bytes read back, and every unit of the unflushed write is all old or all new.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{io, plugin, qemu_convert_raw, run};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Kills the child (SIGKILL) however the test ends.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MIB: usize = 1 << 20;

/// One format: create an 8 MiB image with old data, write A (flushed) and B (not) through
/// the plugin, kill nbdkit, then ask qemu. `unit`: the bytes a crash leaves all old or all
/// new (qcow2 cluster; a VHD/VHDX sector, whose data is written in place or a whole new
/// block at once).
fn flushed_writes_survive(fmt: &str, opts: &str, unit: usize) {
    let d = tempfile::Builder::new().prefix("vdvw-nbd-kill-").tempdir().unwrap();
    let img = d.path().join(format!("disk.{}", fmt));
    let sock = d.path().join("nbd.sock");
    run(&["qemu-img", "create", "-q", "-f", fmt, "-o", opts, s(&img), "8M"]);
    io(fmt, &img, &["write -P 0x11 0 3M"]);
    let old = qemu_convert_raw(&img, fmt);

    // A: into old data (in place) and into unallocated space (new clusters / blocks)
    let a: [(usize, usize); 3] = [(100_000, 300_000), (3 * MIB + 4096, 200_000), (6 * MIB, 65536)];
    // B: overlaps nothing of A; in place and new
    let b: [(usize, usize); 2] = [(1_000_000, 150_000), (5 * MIB + 512, 400_000)];
    let mut cmds = Vec::new();
    for (o, l) in a {
        cmds.push(format!("write -P 0x41 {} {}", o, l));
    }
    cmds.push("flush".into());
    for (o, l) in a {
        cmds.push(format!("read -P 0x41 {} {}", o, l));
    }
    for (o, l) in b {
        cmds.push(format!("write -P 0x42 {} {}", o, l));
    }
    // read back B last: once its line is out, every write has completed
    cmds.push(format!("read -P 0x42 {} {}", b[1].0, b[1].1));
    let reads = a.len() + 1;
    // connected, doing nothing, until killed
    cmds.push("sleep 60000".into());

    let nbdkit = Command::new("nbdkit")
        .args(["-f", "--exit-with-parent", "-U"])
        .arg(&sock)
        .arg(plugin())
        .arg(format!("file={}", img.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nbdkit is installed (.ci/run installs it)");
    let mut nbdkit = Killed(nbdkit);
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "nbdkit made no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    // writeback: qemu-io's default (writethrough) would flush after every write
    let mut c = Command::new("stdbuf");
    c.args(["-oL", "qemu-io", "-t", "writeback", "-f", "raw"]);
    for cmd in &cmds {
        c.args(["-c", cmd]);
    }
    let qio = c
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut qio = Killed(qio);
    let out = BufReader::new(qio.0.stdout.take().unwrap());
    let mut seen = 0;
    let mut log = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        log += &line;
        log.push('\n');
        assert!(!line.contains("failed"), "{}: qemu-io through the plugin: {}", fmt, log);
        if line.contains("read ") && line.contains(" bytes at offset ") {
            seen += 1;
            if seen == reads {
                break;
            }
        }
    }
    assert_eq!(seen, reads, "{}: qemu-io stopped early: {}", fmt, log);
    // SIGKILL while the connection is open: nothing runs after it in the plugin
    nbdkit.0.kill().unwrap();
    let st = nbdkit.0.wait().unwrap();
    assert!(!st.success(), "{}: nbdkit had already ended", fmt);
    drop(qio);

    if fmt != "vpc" {
        // qemu-img check: 0 clean, 3 leaked clusters only
        let c = Command::new("qemu-img").args(["check", "-f", fmt, s(&img)]).output().unwrap();
        let code = c.status.code();
        assert!(code == Some(0) || code == Some(3), "{}: qemu-img check exit {:?}: {}", fmt, code, String::from_utf8_lossy(&c.stdout));
    }
    // the flushed bytes are there, as qemu reads them
    let got = qemu_convert_raw(&img, fmt);
    assert_eq!(got.len(), old.len(), "{}: guest size", fmt);
    let mut flushed = old.clone();
    for (o, l) in a {
        flushed[o..o + l].fill(0x41);
    }
    let mut all_new = flushed.clone();
    for (o, l) in b {
        all_new[o..o + l].fill(0x42);
    }
    for (o, l) in a {
        assert!(got[o..o + l].iter().all(|&x| x == 0x41), "{}: flushed write at {} lost after kill -9", fmt, o);
    }
    let mut newer = 0;
    for u in (0..got.len()).step_by(unit) {
        let r = u..(u + unit).min(got.len());
        if got[r.clone()] == all_new[r.clone()] {
            if all_new[r.clone()] != flushed[r.clone()] {
                newer += 1;
            }
        } else {
            assert!(got[r.clone()] == flushed[r.clone()], "{}: bytes {:?} are neither the flushed nor the new content", fmt, r);
        }
    }
    eprintln!("{}: {} units of the unflushed write survived the kill", fmt, newer);
}

#[test]
fn flushed_qcow2_writes_survive_kill_9() {
    flushed_writes_survive("qcow2", "cluster_size=65536", 65536);
}

#[test]
fn flushed_vhd_writes_survive_kill_9() {
    flushed_writes_survive("vpc", "subformat=dynamic", 512);
}

#[test]
fn flushed_vhdx_writes_survive_kill_9() {
    flushed_writes_survive("vhdx", "block_size=1M", 512);
}

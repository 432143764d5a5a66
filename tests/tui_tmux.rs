//! The real binary in a real terminal: tmux at 160x48 on a fresh qemu-made dynamic VHD and a
//! qcow2 chain; keys typed with send-keys, the screen read with capture-pane.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Tmux {
        let session = format!("vdvw-{}-{}", std::process::id(), rand_suffix());
        let mut cmd = Command::new("tmux");
        cmd.args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "48"]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{}={}", k, v)]);
        }
        cmd.arg(env!("CARGO_BIN_EXE_vdiskview"));
        cmd.args(args);
        let st = cmd.env_remove("TMUX").status().expect("tmux is installed (.ci/run installs it)");
        assert!(st.success());
        Tmux { session }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let mut cmd = Command::new("tmux");
        cmd.args(["send-keys", "-t", &self.session]).args(keys);
        assert!(cmd.status().unwrap().success());
    }

    /// Wait until the screen contains `what` (the app redraws asynchronously).
    fn wait_for(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.capture();
            if s.contains(what) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("screen never showed {:?}:\n{}", what, s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.session]).output().map(|o| o.status.success()).unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).output();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    h.finish()
}

fn qemu(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
}

fn wait_exit(t: &Tmux) {
    let start = Instant::now();
    while t.alive() {
        assert!(start.elapsed() < Duration::from_secs(10), "vdiskview did not quit:\n{}", t.capture());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn vhd_in_tmux() {
    let dir = support::workspace();
    let img = dir.path().join("d.vhd");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", p, "16M"]);
    qemu(&["qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 4M 4k", p]);
    let t = Tmux::start(&[p], &[]);
    let s = t.wait_for("Bitmap");
    for title in ["Header", "BAT", "Hex", "Bitmap"] {
        assert!(s.contains(&format!(" {} ", title)), "no {} pane:\n{}", title, s);
    }
    assert!(s.contains("conectix"), "{}", s);
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["0x200000", "Enter"]);
    let s = t.wait_for("00200000  ");
    assert!(!s.contains("Jump to"));
    t.send(&["?"]);
    t.wait_for("Help");
    t.send(&["Escape"]);
    t.send(&["q"]);
    wait_exit(&t);
}

#[test]
fn qcow2_chain_in_tmux_and_no_argument_opens_the_demo() {
    let dir = support::workspace();
    let base = dir.path().join("b.qcow2");
    let top = dir.path().join("t.qcow2");
    let (b, tp) = (base.to_str().unwrap(), top.to_str().unwrap());
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", b, "8M"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", b]);
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", tp, "8M"]);
    let t = Tmux::start(&[tp], &[("NO_COLOR", "1")]);
    let s = t.wait_for(" L2 ");
    for title in ["Header", "L1", "L2", "Hex"] {
        assert!(s.contains(&format!(" {} ", title)), "no {} pane:\n{}", title, s);
    }
    assert!(s.contains("backing depth"), "{}", s);
    t.send(&["q"]);
    wait_exit(&t);

    // no argument: the bundled demo image
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.vhd");
    assert!(demo.exists());
    let t = Tmux::start(&[], &[]);
    let s = t.wait_for("demo.vhd");
    assert!(s.contains("conectix"), "{}", s);
    t.send(&["q"]);
    wait_exit(&t);
}

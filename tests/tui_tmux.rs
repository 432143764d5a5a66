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
        // a server of its own per test (-L): parallel tests starting one server race
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &session, "new-session", "-d", "-s", &session, "-x", "160", "-y", "48"]);
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
        let out = Command::new("tmux").args(["-L", &self.session, "capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Send keys: key names (Enter, Escape, C-s) as keys, anything else typed literally
    /// (tmux would read "0x100000" as a key code).
    fn send(&self, keys: &[&str]) {
        for k in keys {
            let named = ["Enter", "Escape", "Tab", "BTab", "Up", "Down", "Left", "Right", "PageUp", "PageDown", "Home", "End"]
                .contains(k)
                || k.starts_with("C-");
            let mut cmd = Command::new("tmux");
            cmd.args(["-L", &self.session, "send-keys", "-t", &self.session]);
            if !named {
                cmd.arg("-l");
            }
            assert!(cmd.arg(k).status().unwrap().success());
        }
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

    /// Wait until the screen no longer contains `what`.
    fn wait_gone(&self, what: &str) {
        let start = Instant::now();
        while self.capture().contains(what) {
            if start.elapsed() > Duration::from_secs(15) {
                panic!("screen kept showing {:?}:\n{}", what, self.capture());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["-L", &self.session, "has-session", "-t", &self.session]).output().map(|o| o.status.success()).unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.session, "kill-server"]).output();
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
    // the jump focuses the hex pane (thick border) with the row on top
    let s = t.wait_for("┃00200000  ");
    assert!(!s.contains("Jump to"));
    t.send(&["?"]);
    t.wait_for("Help");
    t.send(&["Escape"]);
    t.wait_gone("Help");
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

#[test]
fn write_mode_saves_while_qemu_is_locked_out() {
    let dir = support::workspace();
    let img = dir.path().join("w.qcow2");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", p, "8M"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", p]);
    let t = Tmux::start(&["--write", p], &[]);
    t.wait_for("WRITE");
    // qemu cannot open the image for writing while we hold it
    let out = Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 1 0 512", p]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("lock"), "qemu was not locked out: {}", err);
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["0x100000", "Enter"]);
    t.wait_for("┃00100000  ");
    t.send(&["i"]);
    t.wait_for("EDIT (hex)");
    t.send(&["deadbeef"]);
    t.wait_for("staged 4 byte(s)");
    t.send(&["Escape"]);
    t.wait_gone("EDIT (hex)");
    t.send(&["C-s"]);
    t.wait_for("saved 4 byte(s)");
    t.send(&["q"]);
    wait_exit(&t);
    let out = Command::new("qemu-io").args(["-f", "qcow2", "-c", "read -P 0xde 0x100000 1", "-c", "read -P 0xad 0x100001 1", "-c", "read -P 0xef 0x100003 1", "-c", "read -P 0x11 0x100004 1", p]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed"), "{}", text);
    let check = Command::new("qemu-img").args(["check", "-q", p]).status().unwrap();
    assert!(check.success());
}

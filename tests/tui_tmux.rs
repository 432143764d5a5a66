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
            let named = ["Enter", "Escape", "F1", "Tab", "BTab", "Up", "Down", "Left", "Right", "PageUp", "PageDown", "Home", "End"]
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
    t.send(&["F1"]);
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
    // every pane, not just the first one drawn (a capture can land mid-frame on a loaded machine)
    let titles = ["Header", "L1", "L2", "Hex"];
    let s = poll(&t, "every pane", Duration::from_secs(15), |s| titles.iter().all(|x| s.contains(&format!(" {} ", x))) && s.contains("backing depth"));
    for title in titles {
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

/// The same for a VHDX: the edit lands in a block never written, so the save allocates it
/// and updates the BAT through the log; qemu reads the bytes and qemu-img check is clean.
#[test]
fn write_mode_saves_a_vhdx_block_through_the_log() {
    let dir = support::workspace();
    let img = dir.path().join("w.vhdx");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "8M"]);
    qemu(&["qemu-io", "-f", "vhdx", "-c", "write -P 0x11 0 2M", p]);
    let t = Tmux::start(&["--write", p], &[]);
    t.wait_for("WRITE");
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["0x300000", "Enter"]);
    t.wait_for("┃00300000  ");
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
    let out = Command::new("qemu-io")
        .args(["-f", "vhdx", "-c", "read -P 0xde 0x300000 1", "-c", "read -P 0xef 0x300003 1", "-c", "read -P 0 0x300004 4092", "-c", "read -P 0x11 0 2M", p])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("Pattern verification failed"), "{}", text);
    let check = Command::new("qemu-img").args(["check", "-q", "-f", "vhdx", p]).status().unwrap();
    assert!(check.success());
}

/// A 1 TiB qcow2 (4 KiB clusters) with `n` data clusters 10 MiB apart, each under an L2 table
/// of its own, written directly: qemu-io takes ~1.7 ms per scattered cluster (100,000: minutes),
/// this takes well under a second (the file is sparse: data clusters are holes, read as zeros).
/// qemu-img check confirms it is a clean image.
fn scattered_qcow2(path: &Path, n: u64) {
    use std::os::unix::fs::FileExt;
    const CS: u64 = 4096;
    let size: u64 = 1 << 40;
    let l1_entries = size / (CS * CS / 8);
    let l1_clusters = l1_entries * 8 / CS;
    let (l1_off, l2_first) = (CS, CS + l1_clusters * CS);
    let data_first = l2_first + n * CS;
    let meta_first = (data_first + n * CS) / CS;
    // refcount blocks (16-bit entries) and the table that points at them, covering themselves
    let (mut rb, mut rt) = (1u64, 1u64);
    loop {
        let total = meta_first + rb + rt;
        let (rb2, rt2) = (total.div_ceil(CS / 2), total.div_ceil(CS / 2).div_ceil(CS / 8));
        if (rb2, rt2) == (rb, rt) {
            break;
        }
        (rb, rt) = (rb2, rt2);
    }
    let (rb_off, rt_off) = (meta_first * CS, (meta_first + rb) * CS);
    let total = meta_first + rb + rt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(total * CS).unwrap();
    let mut h = Vec::new();
    h.extend_from_slice(b"QFI\xfb");
    h.extend_from_slice(&3u32.to_be_bytes()); // version
    h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
    h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
    h.extend_from_slice(&12u32.to_be_bytes()); // cluster bits
    h.extend_from_slice(&size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&(l1_entries as u32).to_be_bytes());
    h.extend_from_slice(&l1_off.to_be_bytes());
    h.extend_from_slice(&rt_off.to_be_bytes());
    h.extend_from_slice(&(rt as u32).to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    h.extend_from_slice(&0u64.to_be_bytes());
    for _ in 0..3 {
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible, compatible, autoclear features
    }
    h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16 bits
    h.extend_from_slice(&104u32.to_be_bytes()); // header length
    h.extend_from_slice(&[0u8; 8]); // end of header extensions
    f.write_all_at(&h, 0).unwrap();
    let copied = 1u64 << 63;
    let mut l1 = vec![0u8; (l1_clusters * CS) as usize];
    for i in 0..n {
        let virt = i * 10 * (1 << 20);
        let (l1_i, l2_i) = (virt / (CS * CS / 8), virt / CS % (CS / 8));
        let l2 = l2_first + i * CS;
        l1[(l1_i * 8) as usize..(l1_i * 8 + 8) as usize].copy_from_slice(&(l2 | copied).to_be_bytes());
        f.write_all_at(&((data_first + i * CS) | copied).to_be_bytes(), l2 + l2_i * 8).unwrap();
    }
    f.write_all_at(&l1, l1_off).unwrap();
    let mut refcounts = vec![0u8; (rb * CS) as usize];
    for c in 0..total {
        refcounts[(c * 2) as usize..(c * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
    }
    f.write_all_at(&refcounts, rb_off).unwrap();
    let table: Vec<u8> = (0..rb).flat_map(|b| (rb_off + b * CS).to_be_bytes()).collect();
    f.write_all_at(&table, rt_off).unwrap();
    qemu(&["qemu-img", "check", "-q", path.to_str().unwrap()]);
}

/// Poll the screen every 20 ms (a job's frames come and go fast) until `ok` holds.
fn poll(t: &Tmux, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let s = t.capture();
        if ok(&s) {
            return s;
        }
        if start.elapsed() > limit {
            panic!("screen never showed {}:\n{}", what, s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status line's guest offset of the cursor (`guest 0x200000`, or `guest —`).
fn guest(s: &str) -> String {
    let l = status_line(s);
    l.split(" │ ").find(|p| p.starts_with("guest ")).unwrap_or("").to_string()
}

fn status_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_string()
}

/// With the L1 pane focused (j/k move its selected entry and the hex cursor with it): start a
/// job with `start`, see its progress (`busy` in the status line), move with j/k while
/// it runs and see the selection follow, then cancel it with Esc and see it gone.
fn job_keeps_the_screen_live(t: &Tmux, start: &[&str], busy: &str, cancelled: &str) {
    let before = t.capture();
    let t0 = Instant::now();
    t.send(start);
    let s = poll(t, &format!("{:?} in the status line", busy), Duration::from_secs(10), |s| status_line(s).contains(busy));
    eprintln!("{:?}: first progress frame after {:?}: {}", start, t0.elapsed(), status_line(&s));
    t.send(&["j"]);
    let moved = poll(t, "the cursor moved by j", Duration::from_secs(5), |s| guest(s) != guest(&before));
    assert!(status_line(&moved).contains(busy), "the job still runs while j moved:\n{}", moved);
    t.send(&["k"]);
    let back = poll(t, "the cursor moved back by k", Duration::from_secs(5), |s| guest(s) != guest(&moved));
    assert!(status_line(&back).contains(busy), "the job still runs while k moved:\n{}", back);
    t.send(&["Escape"]);
    let s = poll(t, "the job cancelled", Duration::from_secs(5), |s| !status_line(s).contains(busy));
    assert!(status_line(&s).contains(cancelled), "{}", status_line(&s));
    // the UI is free: keys still work after the cancel
    t.send(&["F1"]);
    t.wait_for("Help");
    t.send(&["Escape"]);
    t.wait_gone("Help");
    t.send(&["q"]);
    wait_exit(t);
}

#[test]
fn check_runs_as_a_job_with_progress_and_esc_cancels_it() {
    let dir = support::workspace();
    let img = dir.path().join("huge.qcow2");
    let t0 = Instant::now();
    scattered_qcow2(&img, 100_000);
    eprintln!("1 TiB qcow2 with 100000 clusters made in {:?}", t0.elapsed());
    let t = Tmux::start(&[img.to_str().unwrap()], &[]);
    t.wait_for("Bitmap");
    t.send(&["Tab"]);
    t.wait_for("┏ L1");
    job_keeps_the_screen_live(&t, &["c"], "(Esc cancels)", "cancelled: checking");
}

#[test]
fn search_runs_as_a_job_with_progress_and_esc_cancels_it() {
    let dir = support::workspace();
    let img = dir.path().join("dense.qcow2");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", p, "1G"]);
    qemu(&["qemu-io", "-t", "unsafe", "-f", "qcow2", "-c", "write -q -P 0x11 0 1G", p]);
    let t = Tmux::start(&[p], &[]);
    t.wait_for("Bitmap");
    t.send(&["Tab"]);
    t.wait_for("┏ L1");
    t.send(&["/"]);
    t.wait_for("Search");
    t.send(&["absent string"]);
    job_keeps_the_screen_live(&t, &["Enter"], "searching [", "cancelled: searching");
}

/// `--watch` while qemu-io writes the image from another process: the new cluster shows
/// marked (++) on the grid and counted in the status line, within a second of the write
/// (polled up to a few seconds: CI is loaded); `W` stops watching.
#[test]
fn watch_marks_what_another_process_allocates() {
    let dir = support::workspace();
    let img = dir.path().join("live.qcow2");
    support::qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "64M"]);
    let t = Tmux::start(&[img.to_str().unwrap(), "--watch"], &[]);
    t.wait_for("watching: 0 new range(s)");
    let t0 = Instant::now();
    support::qemu_io("qcow2", &img, &["write -P 0x5a 0 64k"]);
    let s = poll(&t, "the write marked", Duration::from_secs(5), |s| s.contains("watching: 1 new range(s), 65536 bytes") && s.contains("++"));
    eprintln!("write seen after {:?}", t0.elapsed());
    assert!(s.contains("++"), "{}", s);
    // a second write, elsewhere, while the first is still marked
    support::qemu_io("qcow2", &img, &["write -P 0x5b 8M 64k"]);
    poll(&t, "the second write counted", Duration::from_secs(5), |s| s.contains("watching: 2 new range(s)"));
    t.send(&["W"]);
    t.wait_for("stopped watching");
    t.send(&["q"]);
    wait_exit(&t);
}

/// Zoom, a visual selection and `:export` (the file holds exactly what `read` prints for the
/// same range), then a search walked with n and N.
#[test]
fn zoom_selection_export_and_search_in_tmux() {
    let dir = support::workspace();
    let img = dir.path().join("d.vhd");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", p, "16M"]);
    qemu(&["qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 4M 4k", p]);
    let t = Tmux::start(&[p], &[]);
    t.wait_for("Bitmap");
    // z: the focused Header pane fills the screen, the others are tabs
    t.send(&["z"]);
    t.wait_for("z: unzoom");
    t.wait_gone("┌ Hex");
    t.send(&["z"]);
    t.wait_for("┌ Hex");
    // select 0xfff0..=0x1000f (across the end of the written data) and export it
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["v:0xfff0", "Enter"]);
    t.wait_for("guest 0xfff0");
    t.send(&["V", "Down", "Down"]);
    let s = t.wait_for("sel guest 0xfff0–0x10010");
    assert!(status_line(&s).contains("33 bytes"), "{}", status_line(&s));
    let out = dir.path().join("sel.bin");
    t.send(&[":"]);
    t.wait_for("Command");
    t.send(&[&format!("export {}", out.display()), "Enter"]);
    t.wait_for("exported 33 byte(s)");
    let read = Command::new(env!("CARGO_BIN_EXE_vdiskview")).args(["read", p, "--offset", "0xfff0", "--length", "33"]).output().unwrap();
    assert!(read.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), read.stdout);
    assert_eq!(read.stdout.len(), 33);
    t.send(&["Escape"]);
    t.wait_for("selection ended");
    // search the 0xcd run: n walks on, N back
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["0", "Enter"]);
    t.send(&["/"]);
    t.wait_for("Search forward");
    t.send(&["cd cd", "Enter"]);
    t.wait_for("found at 0x400000");
    t.send(&["n"]);
    t.wait_for("found at 0x400001");
    // one at a time: a search started while one runs replaces it
    t.send(&["N"]);
    t.wait_for("found at 0x400000 ");
    t.send(&["N"]);
    let s = t.wait_for("wrapped");
    assert!(guest(&s).contains("0x400ffe"), "{}", status_line(&s));
    t.send(&["q"]);
    wait_exit(&t);
}

/// A mark set in one run is there in the next (state under $XDG_STATE_HOME).
#[test]
fn marks_survive_a_restart_in_tmux() {
    let dir = support::workspace();
    let state = dir.path().join("state");
    let img = dir.path().join("d.vhd");
    let p = img.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", p, "16M"]);
    let env = [("XDG_STATE_HOME", state.to_str().unwrap())];
    let t = Tmux::start(&[p], &env);
    t.wait_for("Bitmap");
    t.send(&["g"]);
    t.wait_for("Jump to");
    t.send(&["v:0x3000", "Enter"]);
    t.wait_for("guest 0x3000");
    t.send(&["m", "q"]);
    t.wait_for("mark q at guest 0x3000");
    t.send(&["q"]);
    wait_exit(&t);
    drop(t);
    let t = Tmux::start(&[p], &env);
    t.wait_for("Bitmap");
    t.send(&["'", "q"]);
    let s = t.wait_for("guest 0x3000");
    assert!(s.contains("┃00003000  "), "{}", s);
    t.send(&["q"]);
    wait_exit(&t);
}

/// A config file that rebinds a key (and one with a mistake: one line naming it, no panic).
#[test]
fn config_file_rebinds_a_key_in_tmux() {
    let dir = support::workspace();
    let cfg = dir.path().join("vdiskview").join("config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "theme = \"light\"\n[keys]\nzoom = \"Z\"\n").unwrap();
    // found through XDG_CONFIG_HOME
    let t = Tmux::start(&[], &[("XDG_CONFIG_HOME", dir.path().to_str().unwrap())]);
    t.wait_for("Bitmap");
    t.send(&["z"]);
    t.send(&["F1"]);
    t.wait_for("Help");
    // the help shows the key as bound (the screen may be caught mid-frame: wait for it)
    t.wait_for("Z          zoom");
    t.send(&["Escape"]);
    t.wait_gone("Help");
    assert!(!t.capture().contains("z: unzoom"), "z is not bound any more");
    t.send(&["Z"]);
    t.wait_for("Z: unzoom");
    t.send(&["q"]);
    wait_exit(&t);
    // a mistake on line 3: one line, exit status 2-ish, no panic
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "theme = \"light\"\n[keys]\nzoom = \"Ctrl+Z\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vdiskview")).args(["--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{}", err);
    assert!(err.contains(&format!("{}:3:", bad.display())) && !err.contains("panicked"), "{}", err);
}

//! Snapshots of every pane and of whole screens (ratatui's TestBackend), the keymap ↔ help
//! consistency, the jump parser and the space toggle. Images: the bundled demo VHD (made by
//! scripts/make-demo-image.sh, byte for byte reproducible) and a qcow2 chain made by qemu-img.

use std::path::Path;
use std::process::Command;

use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

use super::action::Action;
use super::keymap::{self, bindings, Mode};
use super::render::{frame, to_svg, to_text};
use super::state::{AppState, Pane, Space};
use super::update::{handle_key, parse_jump, update};
use crate::image::{self, Image, OpenOptions};

fn demo() -> Image {
    // relative to the package root, where cargo runs unit tests, so snapshots name it the same
    image::open(Path::new("assets/demo.vhd"), &OpenOptions::default()).expect("demo image")
}

fn qemu(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("qemu tools installed");
    assert!(out.status.success(), "{:?}: {}", args, String::from_utf8_lossy(&out.stderr));
}

/// A two-layer qcow2 chain with data in both layers, a zero cluster and a compressed one.
fn qcow2_chain(dir: &Path) -> Image {
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", b, "8M"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 256k", "-c", "write -P 0x22 1M 64k", b]);
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", "-b", b, "-F", "qcow2", t, "8M"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 64k 64k", "-c", "write -z 128k 64k", "-c", "write -c -P 0x44 2M 64k", t]);
    image::open(&top, &OpenOptions::default()).unwrap()
}

fn screen(img: &mut Image, cols: u16, rows: u16, keys: &str) -> String {
    to_text(&frame(img, cols, rows, keys, None, true).unwrap())
}

fn pane(img: &Image, st: &AppState, p: Pane, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| {
        let r = Rect::new(0, 0, w, h);
        match p {
            Pane::Header => super::panes::header::draw(f, st, img, r),
            Pane::L1 => super::panes::l1::draw(f, st, img, r),
            Pane::Grid => super::panes::grid::draw(f, st, img, r),
            Pane::Hex => super::panes::hex::draw(f, st, img, r),
            Pane::Bitmap => super::panes::heatmap::draw(f, st, img, r),
            Pane::Inspector => super::panes::inspector::draw(f, st, r),
        }
    })
    .unwrap();
    to_text(term.backend().buffer())
}

fn state(img: &Image, cols: u16, rows: u16) -> AppState {
    let mut st = AppState::new(img, (cols, rows));
    st.no_color = true;
    update(&mut st, img, Action::Resize(cols, rows));
    // the density overview is a job: run it here as the terminal would in the background
    let effects = super::update::start_up(&mut st);
    super::render::settle(&mut st, img, &img.layers[0].name.clone(), &mut super::jobs::Inline::new(), effects);
    super::view::refresh(&mut st, img);
    st
}

#[test]
fn demo_screen_160x48() {
    let mut img = demo();
    let s = screen(&mut img, 160, 48, "");
    for title in ["Header", "BAT", "Hex", "Bitmap"] {
        assert!(s.contains(&format!("┏ {} ", title)) || s.contains(&format!("┌ {} ", title)), "pane {} missing:\n{}", title, s);
    }
    assert!(s.contains("conectix"));
    insta::assert_snapshot!(s);
}

#[test]
fn demo_screen_80x24_stacks_panes() {
    let mut img = demo();
    let s = screen(&mut img, 80, 24, "");
    assert_eq!(s.lines().count(), 24);
    assert!(s.lines().all(|l| l.chars().count() == 80));
    insta::assert_snapshot!(s);
}

#[test]
fn jump_shows_the_row() {
    let mut img = demo();
    let s = screen(&mut img, 160, 48, "g 0x200000 Enter");
    assert!(s.lines().any(|l| l.starts_with("┃00200000  ")), "{}", s);
    let s = screen(&mut img, 160, 48, "g v:0x1000 Enter");
    assert!(s.contains("guest 0x1000 │ file 0x1a00"), "{}", s);
    insta::assert_snapshot!(s);
}

#[test]
fn jump_errors_stay_in_the_dialog() {
    let mut img = demo();
    let s = screen(&mut img, 120, 40, "g 0x9999999999 Enter");
    assert!(s.contains("past the end"), "{}", s);
    let s = screen(&mut img, 120, 40, "g zz Enter");
    assert!(s.contains("unexpected"), "{}", s);
}

#[test]
fn help_popup_lists_every_binding() {
    let mut img = demo();
    // F1 (and H): ? searches backward, as in a pager
    let s = screen(&mut img, 160, 48, "F1");
    assert!(s.contains("Help"));
    // the list is longer than a screen: its pages together name every binding
    let pages: String = (0..4).map(|n| screen(&mut img, 160, 48, &format!("F1{}", " PgDn".repeat(n)))).collect();
    for b in bindings().iter().filter(|b| b.mode == Mode::Normal) {
        assert!(pages.contains(b.desc), "help lacks '{}':\n{}", b.desc, pages);
    }
    insta::assert_snapshot!(s);
}

#[test]
fn keymap_has_no_conflicts_and_help_covers_it() {
    let all = bindings();
    let help = keymap::help_lines();
    for (i, a) in all.iter().enumerate() {
        assert!(help.iter().any(|(k, d)| *k == a.label && d == a.desc), "{} not in help", a.label);
        for b in &all[i + 1..] {
            if a.mode == b.mode {
                for k in &a.keys {
                    assert!(!b.keys.contains(k), "{:?} bound twice ({} / {})", k, a.label, b.label);
                }
            }
        }
    }
    // every key a binding names resolves to that binding's action
    for a in &all {
        for (code, m) in &a.keys {
            let ev = crossterm::event::KeyEvent::new(*code, *m);
            assert_eq!(keymap::lookup(a.mode, &ev), Some(a.action.clone()), "{:?}", code);
        }
    }
}

#[test]
fn quit_key_quits() {
    let img = demo();
    let mut st = state(&img, 100, 30);
    for k in keymap::parse_keys("q") {
        handle_key(&mut st, &img, k);
    }
    assert!(st.quit);
}

#[test]
fn jump_parser() {
    let img = demo();
    let st = state(&img, 160, 48);
    // the TUI opens in guest space; plain offsets stay in the current space
    assert_eq!(parse_jump(&st, &img, "0x200").unwrap(), (Space::Virt, 0x200));
    assert_eq!(parse_jump(&st, &img, "v:4M+512*3").unwrap(), (Space::Virt, (4 << 20) + 1536));
    assert_eq!(parse_jump(&st, &img, "f:0x600").unwrap(), (Space::File, 0x600));
    assert_eq!(parse_jump(&st, &img, "s:8").unwrap(), (Space::Virt, 4096));
    assert_eq!(parse_jump(&st, &img, "b:2").unwrap(), (Space::Virt, 2 << 21));
    assert_eq!(parse_jump(&st, &img, "c:1").unwrap(), (Space::Virt, 1 << 21));
    assert_eq!(parse_jump(&st, &img, "0x500000").unwrap(), (Space::Virt, 0x500000));
    assert!(parse_jump(&st, &img, "f:0x500000").is_err());
    // in file space, an offset past the end of the file but inside the disk is a guest one
    let mut st = st;
    st.space = Space::File;
    assert_eq!(parse_jump(&st, &img, "0x200").unwrap(), (Space::File, 0x200));
    assert_eq!(parse_jump(&st, &img, "0x500000").unwrap(), (Space::Virt, 0x500000));
    assert!(parse_jump(&st, &img, "x:1").is_err());
    assert!(parse_jump(&st, &img, "").is_err());
}

#[test]
fn space_toggle_keeps_the_byte() {
    let img = demo();
    let mut st = state(&img, 160, 48);
    for k in keymap::parse_keys("g v:0x1000 Enter") {
        handle_key(&mut st, &img, k);
    }
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x1000));
    update(&mut st, &img, Action::ToggleSpace);
    assert_eq!((st.space, st.cursor), (Space::File, 0x1a00));
    update(&mut st, &img, Action::ToggleSpace);
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x1000));
    // a metadata byte has no guest counterpart: say so
    for k in keymap::parse_keys("g f:0x600 Enter") {
        handle_key(&mut st, &img, k);
    }
    update(&mut st, &img, Action::ToggleSpace);
    assert!(st.message.as_deref().unwrap_or("").contains("no guest counterpart"));
}

#[test]
fn grid_selection_moves_the_hex_view() {
    let img = demo();
    let mut st = state(&img, 160, 48);
    st.focus = Pane::Grid;
    update(&mut st, &img, Action::Right);
    assert_eq!(st.grid_sel, 1);
    assert_eq!((st.space, st.cursor), (Space::Virt, 2 << 20));
    st.focus = Pane::Header;
    update(&mut st, &img, Action::Down);
    assert_eq!(st.space, Space::File);
    assert_eq!(st.cursor, st.header[1].field.off);
}

#[test]
fn pane_snapshots_vhd() {
    let img = demo();
    let st = state(&img, 160, 48);
    insta::assert_snapshot!("header_vhd", pane(&img, &st, Pane::Header, 80, 20));
    insta::assert_snapshot!("grid_vhd", pane(&img, &st, Pane::Grid, 60, 10));
    insta::assert_snapshot!("hex_vhd", pane(&img, &st, Pane::Hex, 80, 12));
    insta::assert_snapshot!("bitmap_vhd", pane(&img, &st, Pane::Bitmap, 60, 14));
}

#[test]
fn pane_snapshots_qcow2_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = qcow2_chain(dir.path());
    let st = state(&img, 160, 48);
    let name = dir.path().to_str().unwrap().to_string();
    let clean = |s: String| s.replace(&name, "DIR");
    let grid = pane(&img, &st, Pane::Grid, 70, 10);
    // clusters 0 and 3 from the base (depth 1), 1 top data, 2 zero, 16 base, 32 compressed
    assert!(grid.contains("▒1██00▒1"), "{}", grid);
    assert!(grid.contains("CC"), "{}", grid);
    let s = to_text(&frame(&mut img, 160, 48, "", None, true).unwrap());
    for title in ["Header", "L1", "L2", "Hex"] {
        assert!(s.contains(&format!(" {} ", title)), "pane {} missing:\n{}", title, s);
    }
    insta::assert_snapshot!("header_qcow2", clean(pane(&img, &st, Pane::Header, 90, 16)));
    insta::assert_snapshot!("l1_qcow2", clean(pane(&img, &st, Pane::L1, 40, 6)));
    insta::assert_snapshot!("grid_qcow2", clean(grid));
    insta::assert_snapshot!("hex_qcow2", clean(pane(&img, &st, Pane::Hex, 80, 10)));
    insta::assert_snapshot!("bitmap_qcow2", clean(pane(&img, &st, Pane::Bitmap, 60, 8)));
}

#[test]
fn svg_is_well_formed() {
    let mut img = demo();
    let svg = to_svg(&frame(&mut img, 100, 30, "", None, false).unwrap());
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    // every & < > inside text is escaped
    for t in svg.split("<text").skip(1) {
        let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
        assert!(!body.contains('<') && !body.contains('>'), "{}", body);
    }
}

#[test]
fn render_text_has_exactly_the_asked_size() {
    let mut img = demo();
    for (c, r) in [(80u16, 24u16), (160, 48), (123, 37)] {
        let s = screen(&mut img, c, r, "Tab Tab Down");
        assert_eq!(s.lines().count(), r as usize);
        assert!(s.lines().all(|l| l.chars().count() == c as usize));
    }
}

fn copy_of_demo(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("demo.vhd");
    std::fs::copy("assets/demo.vhd", &p).unwrap();
    p
}

#[test]
fn edit_is_refused_without_write_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_of_demo(dir.path());
    let before = std::fs::read(&p).unwrap();
    let mut img = image::open(&p, &OpenOptions::default()).unwrap();
    let s = screen(&mut img, 160, 48, "g 0x100000 Enter i");
    assert!(s.contains("read-only: start vdiskview with --write"), "{}", s);
    assert!(s.contains("READ-ONLY"), "{}", s);
    screen(&mut img, 160, 48, "g 0x100000 Enter i deadbeef Esc C-s : w Enter q");
    assert!(std::fs::read(&p).unwrap() == before);
}

#[test]
fn edit_save_undo_redo_and_quit_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_of_demo(dir.path());
    let before = std::fs::read(&p).unwrap();
    let open = || image::open(&p, &OpenOptions { write: true, ..Default::default() }).unwrap();
    // staged edits are shown, not written, until saved
    {
        let mut img = open();
        let s = screen(&mut img, 160, 48, "g 0x100000 Enter i deadbeef Esc");
        assert!(s.contains("staged 4 byte(s)"), "{}", s);
        assert!(s.contains("00100000  de ad be ef"), "{}", s);
        assert!(s.contains("WRITE"), "{}", s);
    }
    assert!(std::fs::read(&p).unwrap() == before, "staged edits must not reach the file");
    // typing then undoing every byte leaves nothing staged; q quits at once
    {
        let mut img = open();
        let mut st = state(&img, 160, 48);
        for k in keymap::parse_keys("g 0x100000 Enter i deadbeef Esc u u u u q") {
            handle_key(&mut st, &img, k);
            super::update::apply_save(&mut st, &mut img);
        }
        assert_eq!(st.staged_count(), 0);
        assert!(st.quit && !st.confirm_quit);
        // redo brings one byte back, undo takes it away again
        let mut st = state(&img, 160, 48);
        for k in keymap::parse_keys("g 0x100000 Enter i ab Esc u C-r") {
            handle_key(&mut st, &img, k);
        }
        assert_eq!(st.staged_virt.get(&0x100000), Some(&0xab));
        // q with staged edits asks; n stays, y quits without saving
        handle_key(&mut st, &img, crossterm::event::KeyEvent::new(crossterm::event::KeyCode::Char('q'), crossterm::event::KeyModifiers::NONE));
        assert!(st.confirm_quit && !st.quit);
        super::view::refresh(&mut st, &img);
        let s = {
            let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
            term.draw(|f| super::draw::draw(f, &st, &img)).unwrap();
            to_text(term.backend().buffer())
        };
        assert!(s.contains("Unsaved edits"), "{}", s);
        handle_key(&mut st, &img, crossterm::event::KeyEvent::new(crossterm::event::KeyCode::Char('y'), crossterm::event::KeyModifiers::NONE));
        assert!(st.quit);
    }
    assert!(std::fs::read(&p).unwrap() == before);
    // C-s saves through the write engine: the guest bytes change, in place in block 0
    {
        let mut img = open();
        screen(&mut img, 160, 48, "g 0x100000 Enter i deadbeef Tab XY Esc C-s q");
    }
    let img = image::open(&p, &OpenOptions::default()).unwrap();
    let mut b = [0u8; 6];
    img.read(0x100000, &mut b).unwrap();
    assert_eq!(b, [0xde, 0xad, 0xbe, 0xef, b'X', b'Y']);
    // and :w saves as well, in file space here
    drop(img);
    {
        let mut img = open();
        screen(&mut img, 160, 48, "g f:0x1a00 Enter i 77 Esc : w Enter q");
    }
    let mut b = [0u8; 1];
    image::open(&p, &OpenOptions::default()).unwrap().read(0x1000, &mut b).unwrap();
    assert_eq!(b[0], 0x77);
}

#[test]
fn files_view_browses_and_shows_a_file() {
    let mut img = demo();
    let s = screen(&mut img, 160, 48, "f");
    assert!(s.contains("Files — /") && s.contains("test1.txt") && s.contains("docs/"), "{}", s);
    let s = screen(&mut img, 160, 48, ": ls Enter");
    assert!(s.contains("Files — /"), "{}", s);
    // into docs/ and back out
    let s = screen(&mut img, 160, 48, "f Down Enter");
    assert!(s.contains("Files — /docs") && s.contains("random.bin"), "{}", s);
    let s = screen(&mut img, 160, 48, "f Down Enter Backspace");
    assert!(s.contains("Files — / ") && s.contains("test1.txt"), "{}", s);
    // Enter on test1.txt (dirs first: ../ docs/ lost+found/ README.txt test1.txt)
    let s = screen(&mut img, 160, 48, "f End Enter");
    assert!(s.contains("/test1.txt: 15 bytes in 1 extent(s)"), "{}", s);
    assert!(s.contains("48 65 6c 6c 6f 2c 20 53"), "hex shows Hello, S…:\n{}", s);
    assert!(s.contains("|Hello, Sailor!"), "{}", s);
    assert!(s.contains("◆◆"), "grid marks the file's block:\n{}", s);
    insta::assert_snapshot!(s);
}

#[test]
fn guest_overlays_name_partition_table_and_superblock() {
    let mut img = demo();
    let s = screen(&mut img, 160, 48, "g v:0x1be Enter");
    assert!(s.contains("guest: MBR / partition entry 1 = type 0x83, start LBA 2048"), "{}", s);
    let s = screen(&mut img, 160, 48, "g v:0x100438 Enter");
    assert!(s.contains("ext superblock of partition 1 / s_magic = 0xef53"), "{}", s);
}

#[test]
fn findings_list_jumps_to_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_of_demo(dir.path());
    let mut img = image::open(&p, &OpenOptions::default()).unwrap();
    let s = screen(&mut img, 160, 48, "c");
    assert!(s.contains("no findings: the image is clean"), "{}", s);
    // break the dynamic header's checksum
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0x200 + 36] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let mut img = image::open(&p, &OpenOptions::default()).unwrap();
    let s = screen(&mut img, 160, 48, ": check Enter");
    assert!(s.to_lowercase().contains("checksum"), "{}", s);
    let s = screen(&mut img, 160, 48, "c Enter");
    assert!(s.contains("┃00000200  ") || s.contains("┃00000220  "), "the hex view went to the header:\n{}", s);
}

#[test]
fn host_view_colours_clusters_by_role_and_shared_clusters_show() {
    let dir = tempfile::tempdir().unwrap();
    let img_path = dir.path().join("s.qcow2");
    let p = img_path.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", p, "4M"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", p]);
    qemu(&["qemu-img", "snapshot", "-c", "s1", p]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 2 64k 64k", p]);
    let mut img = image::open(&img_path, &OpenOptions::default()).unwrap();
    // cluster 0 still shared with the snapshot, cluster 1 rewritten (copied) since
    let s = screen(&mut img, 160, 48, "");
    // few clusters: the cells grow (three characters and a gap at this size)
    assert!(s.contains("SSS ███"), "{}", s);
    let s = screen(&mut img, 160, 48, "o");
    assert!(s.contains("host view") && s.contains("HHH RC ") && s.contains("SN"), "{}", s);
    // a leaked cluster: raise the refcount of the last cluster (a data cluster) by hand
    drop(img);
    let len = std::fs::metadata(&img_path).unwrap().len();
    let extra = dir.path().join("extra");
    std::fs::write(&extra, vec![7u8; 65536]).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&img_path).unwrap();
    std::io::Write::write_all(&mut f, &std::fs::read(&extra).unwrap()).unwrap();
    drop(f);
    let rt = u64::from_be_bytes(std::fs::read(&img_path).unwrap()[48..56].try_into().unwrap());
    let rb = u64::from_be_bytes(std::fs::read(&img_path).unwrap()[rt as usize..rt as usize + 8].try_into().unwrap());
    let cluster = len / 65536;
    let mut bytes = std::fs::read(&img_path).unwrap();
    bytes[(rb + cluster * 2 + 1) as usize] = 1;
    std::fs::write(&img_path, &bytes).unwrap();
    let mut img = image::open(&img_path, &OpenOptions::default()).unwrap();
    let s = screen(&mut img, 160, 48, "o");
    assert!(s.contains("!!"), "the leaked cluster shows:\n{}", s);
}

#[test]
fn dirty_bitmap_heatmap_shows_the_dirty_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let img_path = dir.path().join("bm.qcow2");
    let p = img_path.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", p, "64M"]);
    qemu(&["qemu-img", "bitmap", "--add", p, "b0"]);
    qemu(&["qemu-io", "-f", "qcow2", "-c", "write -P 1 32M 32M", p]);
    let mut img = image::open(&img_path, &OpenOptions::default()).unwrap();
    let s = screen(&mut img, 160, 48, "d");
    assert!(s.contains("dirty bitmap 'b0'"), "{}", s);
    // the second half of the disk is dirty: the row starts clean, ends dirty
    let lines: Vec<&str> = s.lines().collect();
    let at = lines.iter().position(|l| l.contains("dirty share of the disk")).expect("heatmap caption");
    let cells: String = lines[at + 1..]
        .iter()
        .map_while(|l| l.split('┃').nth(1).filter(|c| !c.starts_with('━')))
        .collect();
    let cells = cells.trim_end();
    assert!(cells.starts_with(' ') && cells.ends_with('█'), "clean then dirty: {:?}", cells);
    assert_eq!(cells.chars().filter(|&c| c == '█').count(), 256, "half of 512 cells are dirty");
    let s = screen(&mut img, 160, 48, "d d");
    assert!(!s.contains("dirty bitmap 'b0'"), "d cycles back to the sector view");
    let mut demo = demo();
    let s = screen(&mut demo, 160, 48, "d");
    assert!(s.contains("dirty bitmaps are a qcow2 feature"), "{}", s);
}

#[test]
fn a_broken_chain_opens_with_the_damage_listed() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top.qcow2");
    let p = top.to_str().unwrap();
    qemu(&["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "missing.qcow2", "-F", "qcow2", p, "4M"]);
    let mut img = image::open(&top, &OpenOptions { lenient: true, ..Default::default() }).unwrap();
    let s = screen(&mut img, 160, 48, "");
    assert!(s.contains("problem(s) found while opening") && s.contains("missing.qcow2"), "{}", s);
    assert!(s.contains(" L1 ") && s.contains("magic"), "what parsed is shown:\n{}", s);
    let s = screen(&mut img, 160, 48, "c");
    assert!(s.contains("[warning] open:") && s.contains("not found"), "{}", s);
}

/// Keys through `handle_key`, collecting the effects instead of running them.
fn keys_effects(st: &mut AppState, img: &Image, keys: &str) -> Vec<super::jobs::Effect> {
    keymap::parse_keys(keys).into_iter().flat_map(|k| handle_key(st, img, k)).collect()
}

fn started(effects: &[super::jobs::Effect]) -> Vec<super::jobs::Job> {
    effects
        .iter()
        .filter_map(|e| match e {
            super::jobs::Effect::Start(_, j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn slow_keys_ask_for_jobs_instead_of_doing_the_work() {
    use super::jobs::Job;
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_chain(dir.path());
    let mut st = state(&img, 160, 48);
    let e = keys_effects(&mut st, &img, "/ 0x3333 Enter");
    assert_eq!(started(&e), vec![Job::Search { space: Space::Virt, layer: 0, from: 1, pattern: super::search::Pattern::exact(&[0x33, 0x33]), backward: false }]);
    // nothing was searched yet: the cursor stays, the job shows
    assert_eq!(st.cursor, 0);
    assert_eq!(st.jobs.len(), 1);
    assert!(matches!(started(&keys_effects(&mut st, &img, "c"))[..], [Job::Check]));
    assert!(st.picker.is_none(), "the findings come with the job's result");
    assert!(matches!(started(&keys_effects(&mut st, &img, "o"))[..], [Job::HostMap]));
    assert!(st.host_map.is_none() && !st.grid_host);
    assert!(matches!(&started(&keys_effects(&mut st, &img, "f"))[..], [Job::ListDir(d)] if d == "/"));
    let e = keys_effects(&mut st, &img, ": map Enter");
    assert!(matches!(&started(&e)[..], [Job::Command { title, words }] if title == ":map" && words[0] == "map"));
    assert!(st.popup.is_none(), "the output comes with the job's result");
    // a bad command or pattern is answered at once, without a job
    assert!(started(&keys_effects(&mut st, &img, ": frobnicate Enter")).is_empty());
    assert!(st.popup.as_ref().is_some_and(|p| p.lines[0].contains("unknown command")));
}

#[test]
fn job_progress_and_result_update_the_state() {
    use super::jobs::{Effect, JobResult, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_chain(dir.path());
    let mut st = state(&img, 160, 48);
    let e = keys_effects(&mut st, &img, "/ 0x3333 Enter");
    let Some(Effect::Start(id, _)) = e.first().cloned() else { panic!("{:?}", e) };
    assert!(update(&mut st, &img, Action::JobProgress { id, done: 5, total: 10 }).is_empty());
    assert_eq!((st.jobs[0].done, st.jobs[0].total), (5, 10));
    super::view::refresh(&mut st, &img);
    let s = to_text(&{
        let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
        term.draw(|f| super::draw::draw(f, &st, &img)).unwrap();
        term.backend().buffer().clone()
    });
    assert!(s.contains("searching [#####-----] 50% (Esc cancels)"), "{}", s);
    update(&mut st, &img, Action::JobDone(id, Outcome::new(JobResult::Found(Some(0x10000)))));
    assert!(st.jobs.is_empty());
    assert_eq!((st.cursor, st.space), (0x10000, Space::Virt));
    assert_eq!(st.message.as_deref(), Some("found at 0x10000"));
    // the job run for real (in place) finds the same place
    let mut real = state(&img, 160, 48);
    let e = keys_effects(&mut real, &img, "/ 0x3333 Enter");
    super::render::settle(&mut real, &img, &img.layers[0].name.clone(), &mut super::jobs::Inline::new(), e);
    assert_eq!(real.cursor, 0x10000);
}

#[test]
fn esc_cancels_the_job_and_its_late_result_is_dropped() {
    use super::jobs::{Effect, JobResult, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_chain(dir.path());
    let mut st = state(&img, 160, 48);
    let e = keys_effects(&mut st, &img, "c");
    let Some(Effect::Start(id, _)) = e.first().cloned() else { panic!("{:?}", e) };
    assert_eq!(keys_effects(&mut st, &img, "Esc"), vec![Effect::Cancel(id)]);
    assert!(st.jobs.is_empty());
    assert_eq!(st.message.as_deref(), Some("cancelled: checking"));
    // the check (core's walk, not cancellable) ends later: what it found is not shown
    let late = JobResult::Findings(super::state::Picker {
        kind: super::state::PickerKind::Findings,
        title: "late".into(),
        rows: vec![],
        targets: vec![],
        sel: 0,
    });
    update(&mut st, &img, Action::JobDone(id, Outcome::new(late)));
    assert!(st.picker.is_none());
    // Esc with nothing running does nothing
    assert!(keys_effects(&mut st, &img, "Esc").is_empty());
    // a real worker stops a search at its next chunk when the flag is set
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let ctx = super::jobs::Ctx { cancel: &cancel, progress: &|_, _| {} };
    let job = super::jobs::Job::Search { space: Space::Virt, layer: 0, from: 0, pattern: super::search::Pattern::exact(b"absent"), backward: false };
    assert!(matches!(super::jobs::work(&job, &img, "", &mut None, &ctx), JobResult::Cancelled));
}

/// The whole screen drawn from `st`.
fn whole(img: &Image, st: &mut AppState) -> String {
    super::view::refresh(st, img);
    let (w, h) = st.size;
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| super::draw::draw(f, st, img)).unwrap();
    to_text(term.backend().buffer())
}

/// Every field the Header pane shows has its decoded value on screen whole.
fn assert_header_values_whole(st: &AppState, s: &str) {
    let scr = super::layout::screen(st);
    let Some(r) = scr.rect(Pane::Header) else { return };
    let mut seen = 0;
    for row in 0..r.height.saturating_sub(2) as usize {
        if let Some(i) = super::panes::header::field_at_row(st, r, row) {
            let v = &st.header[i].field.value;
            // a value too long for its column wraps: every part of it is on screen
            let c = super::panes::header::cols(st, r.width as usize - 2);
            let chars: Vec<char> = v.chars().collect();
            let whole = chars.chunks(c.value).all(|p| s.contains(&p.iter().collect::<String>()));
            assert!(whole, "{}x{}: value {:?} of {} not whole on screen:\n{}", st.size.0, st.size.1, v, st.header[i].field.name, s);
            seen += 1;
        }
    }
    assert!(seen > 0, "no header field on screen:\n{}", s);
}

const SIZES: [(u16, u16); 5] = [(80, 24), (100, 30), (120, 36), (160, 48), (240, 64)];

/// Whole screens at every size people use, the demo VHD and a qcow2 chain: every pane on
/// screen or on a tab, the Header's values whole, nothing past the right edge.
#[test]
fn screens_at_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let qcow2 = qcow2_chain(dir.path());
    let name = dir.path().to_str().unwrap().to_string();
    let demo = demo();
    for (label, img) in [("demo", &demo), ("qcow2", &qcow2)] {
        for (w, h) in SIZES {
            let mut st = state(img, w, h);
            let s = whole(img, &mut st);
            assert_eq!(s.lines().count(), h as usize);
            assert!(s.lines().all(|l| l.chars().count() == w as usize));
            assert_header_values_whole(&st, &s);
            // every pane is on screen or named on a tab bar
            for p in st.panes() {
                let title = super::draw::pane_name(img, p);
                assert!(s.contains(&format!(" {} ", title)), "{}x{}: {:?} not reachable:\n{}", w, h, p, s);
            }
            // the status line ends inside the screen: its last part is whole
            let status = s.lines().last().unwrap();
            assert!(!status.trim_end().ends_with('…') || st.message.is_some(), "{}", status);
            insta::assert_snapshot!(format!("screen_{}_{}x{}", label, w, h), s.replace(&name, "DIR"));
        }
    }
}

/// At every size, each pane can be zoomed to the whole screen, and Tab reaches every pane.
#[test]
fn zoom_and_tabs_reach_every_pane() {
    let img = demo();
    for (w, h) in SIZES {
        let mut st = state(&img, w, h);
        update(&mut st, &img, Action::ToggleInspector);
        for _ in 0..st.panes().len() {
            update(&mut st, &img, Action::NextPane);
            let s = whole(&img, &mut st);
            let scr = super::layout::screen(&st);
            assert!(scr.rect(st.focus).is_some(), "{}x{}: focused {:?} not on screen:\n{}", w, h, st.focus, s);
            update(&mut st, &img, Action::Zoom);
            let scr = super::layout::screen(&st);
            let r = scr.rect(st.focus).unwrap();
            assert_eq!((r.width, r.height), (w, h - 2), "{}x{} zoom of {:?}", w, h, st.focus);
            update(&mut st, &img, Action::Zoom);
        }
    }
    let mut st = state(&img, 80, 24);
    st.focus = Pane::Grid;
    update(&mut st, &img, Action::Zoom);
    insta::assert_snapshot!("zoomed_grid_80x24", whole(&img, &mut st));
}

fn inspector_value(st: &AppState, label: &str) -> String {
    st.view.inspector.iter().find(|r| r.label == label).map(|r| r.value.clone()).unwrap_or_else(|| panic!("no row {label}"))
}

/// The inspector reads the bytes at the cursor: the VHD footer's time stamp and unique ID
/// at their known offsets in the demo, and a guest byte after the cursor moves.
#[test]
fn inspector_follows_the_cursor_in_both_spaces() {
    let img = demo();
    let mut st = state(&img, 160, 48);
    for k in keymap::parse_keys("I g f:0x200a18 Enter") {
        handle_key(&mut st, &img, k);
    }
    super::view::refresh(&mut st, &img);
    // the footer's Time stamp: 2d 24 bd 00, big-endian seconds since 2000
    let mut b = [0u8; 4];
    img.read_host(0, 0x200a18, &mut b).unwrap();
    assert_eq!(b, [0x2d, 0x24, 0xbd, 0x00]);
    assert_eq!(inspector_value(&st, "u32 BE"), "757382400");
    assert_eq!(inspector_value(&st, "u32 LE"), u32::from_le_bytes(b).to_string());
    assert_eq!(inspector_value(&st, "VHD time stamp"), "2024-01-01 00:00:00 UTC");
    assert!(st.view.inspector_at.iter().any(|l| l.contains("footer") && l.contains("Time stamp")), "{:?}", st.view.inspector_at);
    let s = whole(&img, &mut st);
    assert!(s.contains("Inspector — file 0x200a18"), "{}", s);
    insta::assert_snapshot!("inspector_160x48", s);
    // the Unique ID: the GUID as the Header pane decodes it (big-endian in a VHD)
    for k in keymap::parse_keys("g f:0x200a44 Enter") {
        handle_key(&mut st, &img, k);
    }
    super::view::refresh(&mut st, &img);
    assert_eq!(inspector_value(&st, "GUID (big)"), "76647677-0d0e-4d6f-8000-000000000001");
    // guest space: the MBR's first partition entry's start LBA (u32 LE at 0x1c6)
    for k in keymap::parse_keys("g v:0x1c6 Enter") {
        handle_key(&mut st, &img, k);
    }
    super::view::refresh(&mut st, &img);
    let mut b = [0u8; 4];
    img.read(0x1c6, &mut b).unwrap();
    assert_eq!(inspector_value(&st, "u32 LE"), u32::from_le_bytes(b).to_string());
    assert_eq!(inspector_value(&st, "u32 LE"), "2048");
    // at 120x36 the inspector shares its place with the Bitmap pane as tabs
    let mut st = state(&img, 120, 36);
    update(&mut st, &img, Action::ToggleInspector);
    let s = whole(&img, &mut st);
    assert!(s.contains(" Inspector ") && s.contains(" Bitmap "), "{}", s);
}

fn run_keys(st: &mut AppState, img: &Image, keys: &str) {
    let path = img.layers[0].name.clone();
    for k in keymap::parse_keys(keys) {
        let e = handle_key(st, img, k);
        super::render::settle(st, img, &path, &mut super::jobs::Inline::new(), e);
    }
    super::view::refresh(st, img);
}

/// `/` then `n`/`N` walk the matches like a pager, wrapping with a word in the status line;
/// `?` searches backward; a miss says so in the status line, not in a dialog; hex takes `??`.
#[test]
fn search_like_a_pager() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_chain(dir.path());
    let mut st = state(&img, 160, 48);
    // 0x33 fills guest 64k..128k; 0x44 (compressed) 2M..2M+64k
    run_keys(&mut st, &img, "/ 33 Space ?? Space 33 Enter");
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x10000));
    assert_eq!(st.message.as_deref(), Some("found at 0x10000"));
    // the matches on screen are highlighted
    assert!(st.view.matches.iter().any(|&(o, l)| o == 0x10000 && l == 3), "{:?}", &st.view.matches[..3.min(st.view.matches.len())]);
    run_keys(&mut st, &img, "n");
    assert_eq!(st.cursor, 0x10001);
    run_keys(&mut st, &img, "N N");
    assert_eq!(st.cursor, 0x1fffd, "N from the first match wraps round to the last");
    assert!(st.message.as_deref().unwrap_or("").contains("wrapped"), "{:?}", st.message);
    // backward from 2M+16: the nearest match starting before the cursor
    run_keys(&mut st, &img, "g v:0x200010 Enter ? 0x4444 Enter");
    assert_eq!(st.cursor, 0x20000f);
    run_keys(&mut st, &img, "n");
    assert_eq!(st.cursor, 0x20000e, "n repeats the backward search backward");
    run_keys(&mut st, &img, "g 0 Enter / nowhere-in-this-disk Enter");
    assert!(st.dialog.is_none());
    assert_eq!(st.message.as_deref(), Some("not found: nowhere-in-this-disk"));
    let s = whole(&img, &mut st);
    assert!(status_line_of(&s).contains("not found: nowhere-in-this-disk"), "{}", s);
}

fn status_line_of(s: &str) -> String {
    s.lines().last().unwrap_or("").to_string()
}

#[test]
fn text_search_ignores_case_unless_toggled() {
    let img = demo();
    let mut st = state(&img, 160, 48);
    // the footer's cookie is "conectix"
    run_keys(&mut st, &img, "g f:0 Enter / CONECTIX Enter");
    assert_eq!((st.space, st.cursor), (Space::File, 0x200a00), "the footer");
    assert_eq!(st.message.as_deref(), Some("found at 0x200a00"));
    run_keys(&mut st, &img, "n");
    assert_eq!(st.cursor, 0, "the footer copy at the start of the file, round the end");
    assert!(st.message.as_deref().unwrap_or("").contains("wrapped"), "{:?}", st.message);
    // C-t in the dialog: exact case; CONECTIX is then nowhere
    run_keys(&mut st, &img, "/ C-t CONECTIX Enter");
    assert!(st.message.as_deref().unwrap_or("").starts_with("not found"), "{:?}", st.message);
    assert!(!st.search_icase);
    let p = super::search::parse("de ?? be ef", true).unwrap();
    assert!(p.matches(&[0xde, 0x00, 0xbe, 0xef]) && !p.matches(&[0xde, 0x00, 0xbe, 0xee]));
}

/// V selects, moves extend the selection, y copies it as hex, :export writes exactly its
/// bytes; the status line gives start, end and length in both spaces.
#[test]
fn selection_copy_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let img = demo();
    let mut st = state(&img, 160, 48);
    run_keys(&mut st, &img, "g v:0x1be Enter V Down Right");
    assert_eq!(st.selection(), Some((0x1be, 0x1cf)));
    let s = whole(&img, &mut st);
    let status = status_line_of(&s);
    assert!(status.contains("sel guest 0x1be–0x1cf") && status.contains("18 bytes"), "{}", status);
    // the guest bytes of the MBR's partition entries live in the file's block 0
    let (_, f) = img.to_file(0x1be).unwrap().unwrap();
    assert!(status.contains(&format!("file 0x{:x}–0x{:x}", f, f + 17)), "{}", status);
    run_keys(&mut st, &img, "y");
    let mut want = vec![0u8; 18];
    img.read(0x1be, &mut want).unwrap();
    let hex: String = want.iter().map(|b| format!("{:02x}", b)).collect();
    assert_eq!(st.last_copied.as_deref(), Some(hex.as_str()));
    assert!(super::jobs::osc52("hi").starts_with("\x1b]52;c;aGk="));
    let out = dir.path().join("sel.bin");
    run_keys(&mut st, &img, &format!(": export Space {} Enter", out.display()));
    assert_eq!(std::fs::read(&out).unwrap(), want, "{:?}", st.message);
    assert_eq!(st.message.as_deref(), Some(format!("exported 18 byte(s) to {}", out.display()).as_str()));
    // shift+arrows start and extend a selection too
    run_keys(&mut st, &img, "Esc g v:0x1be Enter");
    for k in [crossterm::event::KeyCode::Right, crossterm::event::KeyCode::Down] {
        handle_key(&mut st, &img, crossterm::event::KeyEvent::new(k, crossterm::event::KeyModifiers::SHIFT));
    }
    assert_eq!(st.selection(), Some((0x1be, 0x1cf)));
    // Esc ends the selection; y then says how to start one
    run_keys(&mut st, &img, "Esc y");
    assert!(st.selection().is_none());
    assert!(st.message.as_deref().unwrap_or("").contains("V starts a selection"));
}

/// m{a-z} sets a mark that a later run of the same image finds again; C-o / C-i walk the
/// jump history.
#[test]
fn marks_persist_and_the_jump_history_walks() {
    let dir = tempfile::tempdir().unwrap();
    let img = demo();
    let mut st = state(&img, 160, 48);
    super::marks::attach(&mut st, dir.path());
    run_keys(&mut st, &img, "g v:0x1000 Enter m a g f:0x200a18 Enter m b");
    assert_eq!(st.message.as_deref(), Some("mark b at file 0x200a18"));
    let file = super::marks::file_for(dir.path(), "assets/demo.vhd");
    assert!(std::fs::read_to_string(&file).unwrap().contains("a guest 0 0x1000"));
    // a new run of the same image
    let mut st = state(&img, 160, 48);
    super::marks::attach(&mut st, dir.path());
    run_keys(&mut st, &img, "' a");
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x1000));
    run_keys(&mut st, &img, "' b");
    assert_eq!((st.space, st.cursor), (Space::File, 0x200a18));
    run_keys(&mut st, &img, "' z");
    assert_eq!(st.message.as_deref(), Some("no mark z (mz sets it)"));
    // history: 0 -> 0x1000 -> 0x200a18 (marks) -> 0x100 (g)
    run_keys(&mut st, &img, "g v:0x100 Enter C-o");
    assert_eq!((st.space, st.cursor), (Space::File, 0x200a18));
    run_keys(&mut st, &img, "C-o C-o");
    assert_eq!((st.space, st.cursor), (Space::Virt, 0));
    run_keys(&mut st, &img, "C-i");
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x1000));
    run_keys(&mut st, &img, "C-n C-n");
    assert_eq!((st.space, st.cursor), (Space::Virt, 0x100));
    run_keys(&mut st, &img, "C-n");
    assert!(st.message.as_deref().unwrap_or("").contains("no later place"));
}

/// The config: a rebound key works and the help shows it; a theme; every mistake is one
/// line naming its line.
#[test]
fn config_rebinds_keys_sets_a_theme_and_names_the_bad_line() {
    use super::config::{parse, Theme};
    let cfg = parse("theme = \"high-contrast\"\ninspector = true\n[keys]\nzoom = \"Z\"\nopen-search = [\"F3\", \"C-f\"]\n").unwrap();
    assert_eq!(cfg.theme, Theme::HighContrast);
    let img = demo();
    let mut st = state(&img, 160, 48);
    st.configure(&cfg);
    assert!(st.inspector);
    run_keys(&mut st, &img, "Z");
    assert!(st.zoom, "Z zooms");
    run_keys(&mut st, &img, "z");
    assert!(st.zoom, "z is no longer bound");
    let help = keymap::help_lines_in(&st.keymap);
    assert!(help.iter().any(|(k, d)| k == "Z" && d.starts_with("zoom")), "{:?}", help);
    assert!(help.iter().any(|(k, d)| k == "F3 C-f" && d.starts_with("search forward")));
    run_keys(&mut st, &img, "C-f");
    assert_eq!(st.dialog, Some(super::state::Dialog::Search));
    assert_eq!(super::theme::themed(Theme::Light, ratatui::style::Color::White), ratatui::style::Color::Black);
    // mistakes: (line, message)
    let bad = [
        ("theme = \"light\"\n\n[keys\nzoom = \"Z\"\n", 3),
        ("theme = \"sepia\"\n", 1),
        ("# keys\n[keys]\nzoom = \"Z\"\nzoooom = \"x\"\n", 4),
        ("[keys]\nquit = \"Ctrl+Q\"\n", 2),
        ("inspector = \"yes\"\n", 1),
        ("colour = 1\n", 1),
    ];
    for (text, line) in bad {
        let (l, msg) = parse(text).err().unwrap_or_else(|| panic!("{:?} parsed", text));
        assert_eq!(l, line, "{:?}: {}", text, msg);
        assert!(!msg.contains('\n') && !msg.is_empty());
    }
}

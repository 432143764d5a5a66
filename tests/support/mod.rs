//! Shared helpers for the integration tests (used as `mod support;` from each
//! `tests/*.rs` file). Every test gets its own temporary directory, so the
//! tests are safe to run in parallel.
#![allow(dead_code)]

pub mod guest;
pub mod images;
pub mod vhd;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Default limit for one vdiskview run; error-case tests use a tighter one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh, private temporary directory (removed when dropped).
pub fn workspace() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vdvw-test-")
        .tempdir()
        .expect("create temp dir")
}

/// `&Path` -> `&str` (all our temp paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("non-UTF-8 path")
}

/// Run a command with a time limit, collecting stdout and stderr. Panics if
/// the command cannot be started or does not finish in time (it is killed).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status: ExitStatus = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break st,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err_t.join().unwrap_or_default();
                panic!(
                    "timed out after {:?}: {desc}\nstderr: {}",
                    timeout,
                    String::from_utf8_lossy(&stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn checked(prog: &str, args: &[&str]) -> Output {
    let out = run_with_timeout(Command::new(prog).args(args), Duration::from_secs(120));
    if !out.status.success() {
        panic!(
            "{prog} {} failed ({}):\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out
}

/// Run `qemu-img ARGS`, panic (with its stderr) on failure, return stdout.
pub fn qemu_img(args: &[&str]) -> String {
    String::from_utf8(checked("qemu-img", args).stdout).expect("qemu-img output is UTF-8")
}

/// Run `qemu-img ARGS` in directory DIR (relative names in options such as
/// `data_file=` are created relative to the working directory).
pub fn qemu_img_in(dir: &Path, args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new("qemu-img").args(args).current_dir(dir),
        Duration::from_secs(120),
    );
    if !out.status.success() {
        panic!(
            "qemu-img {} (in {}) failed ({}):\nstderr: {}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// Run `qemu-img ARGS` and return the raw Output whether it failed or not.
pub fn qemu_img_output(args: &[&str]) -> Output {
    run_with_timeout(Command::new("qemu-img").args(args), Duration::from_secs(120))
}

/// Run `qemu-io -f FMT PATH -c CMD ...`, e.g. `write -P 0xab 64k 64k`,
/// `write -z 0 4k`, `write -c -P 1 0 64k`, `discard 0 64k`,
/// `write -s PATTERNFILE 100 3000`. Panics when qemu-io reports a failure.
pub fn qemu_io(fmt: &str, path: &Path, cmds: &[&str]) {
    qemu_io_opts(&["-f", fmt], path, cmds)
}

/// Like `qemu_io`, with arbitrary leading options (e.g. `--image-opts`).
pub fn qemu_io_opts(opts: &[&str], path: &Path, cmds: &[&str]) {
    if cmds.is_empty() {
        return;
    }
    let mut args: Vec<&str> = opts.to_vec();
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(path));
    let out = checked("qemu-io", &args);
    // qemu-io exits 0 even when a command fails; it prints the error instead.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["failed", "error", "Error", "not aligned", "Invalid"] {
        assert!(
            !text.contains(bad),
            "qemu-io {} reported a failure:\n{text}",
            args.join(" ")
        );
    }
}

/// Path of the vdiskview binary under test.
pub fn vdiskview_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vdiskview")
}

/// Run `vdiskview ARGS` (60 s limit).
pub fn vdiskview(args: &[&str]) -> Output {
    vdiskview_timeout(args, DEFAULT_TIMEOUT)
}

pub fn vdiskview_timeout(args: &[&str], timeout: Duration) -> Output {
    run_with_timeout(
        Command::new(vdiskview_bin()).args(args).env("NO_COLOR", "1"),
        timeout,
    )
}

/// Run `vdiskview ARGS`, assert exit 0, return stdout.
pub fn vdiskview_ok(args: &[&str]) -> Vec<u8> {
    let out = vdiskview(args);
    assert!(
        out.status.success(),
        "vdiskview {} failed ({}):\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run `vdiskview ARGS`, assert exit 0, return stdout as text.
pub fn vdiskview_text(args: &[&str]) -> String {
    String::from_utf8(vdiskview_ok(args)).expect("vdiskview output is UTF-8")
}

/// Run `vdiskview ARGS`, assert exit 0, parse stdout as JSON.
pub fn vdiskview_json(args: &[&str]) -> Value {
    let text = vdiskview_text(args);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("vdiskview {} printed invalid JSON ({e}):\n{text}", args.join(" "))
    })
}

fn fmt_args<'a>(fmt: Option<&'a str>) -> Vec<&'a str> {
    match fmt {
        Some(f) => vec!["-f", f],
        None => vec![],
    }
}

/// `qemu-img map --output=json -f FMT PATH`, parsed.
pub fn qemu_map_json(path: &Path, fmt: &str) -> Value {
    let text = qemu_img(&["map", "--output=json", "-f", fmt, s(path)]);
    serde_json::from_str(&text).expect("qemu-img map json")
}

/// `qemu-img map -f FMT PATH` (human output) as an Output: it fails for
/// images with compressed clusters.
pub fn qemu_map_human(path: &Path, fmt: &str) -> Output {
    qemu_img_output(&["map", "-f", fmt, s(path)])
}

/// `qemu-img info --output=json -f FMT PATH`, parsed.
pub fn qemu_info_json(path: &Path, fmt: &str) -> Value {
    let text = qemu_img(&["info", "--output=json", "-f", fmt, s(path)]);
    serde_json::from_str(&text).expect("qemu-img info json")
}

/// `qemu-img info --backing-chain --output=json -f FMT PATH`, parsed (array).
pub fn qemu_info_chain_json(path: &Path, fmt: &str) -> Value {
    let text = qemu_img(&["info", "--backing-chain", "--output=json", "-f", fmt, s(path)]);
    serde_json::from_str(&text).expect("qemu-img info --backing-chain json")
}

/// The guest disk as qemu sees it (`qemu-img convert -f FMT -O raw`).
pub fn qemu_convert_raw(path: &Path, fmt: &str) -> Vec<u8> {
    let dir = workspace();
    let out = dir.path().join("converted.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", s(path), s(&out)]);
    std::fs::read(&out).expect("read converted image")
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Write a pattern file usable with `qemu-io -c "write -s FILE off len"`.
pub fn pattern_file(dir: &Path, seed: u64, len: usize) -> PathBuf {
    let p = dir.join(format!("pattern-{seed}.bin"));
    std::fs::write(&p, pattern_bytes(seed, len)).unwrap();
    p
}

/// Compare two byte strings; on mismatch, report lengths and the first
/// differing offset instead of dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let show = |v: &[u8]| {
        let end = (first + 16).min(v.len());
        v.get(first..end).map(|x| format!("{x:02x?}")).unwrap_or_default()
    };
    panic!(
        "{what}: bytes differ: actual len {} ({:#x}), expected len {} ({:#x}); first difference at {first} ({first:#x}): actual {} expected {}",
        actual.len(),
        actual.len(),
        expected.len(),
        expected.len(),
        show(actual),
        show(expected)
    );
}

/// Run every read-only command (`info`, `map`, `read`, `check`, `tables`) on the damaged
/// image `f`: each may succeed or fail, but never panic, hang (30 s) or die by a signal.
#[track_caller]
pub fn assert_commands_survive(f: &Path, what: &str) {
    for cmd in [&["info", "--output", "json"][..], &["map", "--output", "json"], &["read"], &["check"], &["tables"]] {
        let mut args = cmd.to_vec();
        args.push(s(f));
        let out = vdiskview_timeout(&args, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{what}: {args:?} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{what}: {args:?} killed by a signal");
    }
}

/// Assert the run is a clean CLI error: exit code 1 (not 101 = panic, not a
/// signal), stderr exactly one line starting `vdiskview: `, no "panicked".
#[track_caller]
pub fn assert_clean_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: expected failure, got success; stderr: {stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "{what}: exit 101 (panic); stderr: {stderr}");
    assert!(
        out.status.code().is_some(),
        "{what}: killed by a signal ({}); stderr: {stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{what}: exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr must be exactly one line, got {}:\n{stderr}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("vdiskview: "),
        "{what}: stderr must start with 'vdiskview: ': {stderr}"
    );
}

/// `info` on an image whose chain loops may either fail cleanly or succeed
/// (like `qemu-img info` without `--backing-chain`, which does not open the
/// backing file) — but it must say "loop" (stderr, or the JSON warnings),
/// and must not panic or hang.
#[track_caller]
pub fn assert_info_reports_loop(path: &Path, timeout: Duration) {
    let out = vdiskview_timeout(&["info", "--output", "json", s(path)], timeout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        assert_clean_error(&out, &format!("info on a looping chain {}", path.display()));
        assert!(stderr.to_lowercase().contains("loop"), "message should mention the loop: {stderr}");
        return;
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("info json ({e}): {stdout}"));
    let warnings = v.pointer("/vdiskview/warnings").map(|w| w.to_string()).unwrap_or_default();
    assert!(
        format!("{stderr}{warnings}").to_lowercase().contains("loop"),
        "info succeeded on a looping chain without reporting the loop (stderr: {stderr}; warnings: {warnings})"
    );
}

/// Pretty-print a JSON value (for assertion messages).
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// Assert two JSON values are equal; on failure show a per-element diff for
/// arrays (qemu-img map output) and both values in full.
#[track_caller]
pub fn assert_json_eq(actual: &Value, expected: &Value, what: &str) {
    if actual == expected {
        return;
    }
    let mut detail = String::new();
    if let (Some(a), Some(e)) = (actual.as_array(), expected.as_array()) {
        for i in 0..a.len().max(e.len()) {
            let (x, y) = (a.get(i), e.get(i));
            if x != y {
                detail = format!(
                    "first differing element #{i}:\n  actual:   {}\n  expected: {}\n",
                    x.map(|v| v.to_string()).unwrap_or("<none>".into()),
                    y.map(|v| v.to_string()).unwrap_or("<none>".into())
                );
                break;
            }
        }
    }
    panic!(
        "{what}: JSON differs\n{detail}actual:\n{}\nexpected:\n{}",
        compact_lines(actual),
        compact_lines(expected)
    );
}

fn compact_lines(v: &Value) -> String {
    match v.as_array() {
        Some(a) => a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"),
        None => pretty(v),
    }
}

/// Parse every `0x...` hexadecimal number appearing in a text.
pub fn hex_numbers(text: &str) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 2 <= b.len() {
        if b[i] == b'0' && (b[i + 1] == b'x' || b[i + 1] == b'X') {
            let start = i + 2;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j > start {
                if let Ok(v) = u64::from_str_radix(&text[start..j], 16) {
                    set.insert(v);
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    set
}

pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

/// Overwrite bytes of a file in place.
pub fn patch_file(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Path of the committed demo image.
pub fn demo_vhd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.vhd")
}

/// True when both paths name the same existing file (or are equal strings).
pub fn same_file(a: &str, b: &Path) -> bool {
    if Path::new(a) == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// `where --file` at the start, middle and last byte of every data run `qemu-img map` gives
/// says "data" at the guest offset qemu maps it to, and offset 0 is the header.
pub fn assert_where_file_finds_data_and_header(p: &Path, fmt: &str) {
    let map = qemu_map_json(p, fmt);
    let mut n = 0;
    for e in map.as_array().unwrap() {
        let Some(off) = e["offset"].as_u64() else { continue };
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        for delta in [0, len / 2, len - 1] {
            let w = vdiskview_json(&["where", s(p), &format!("{:#x}", off + delta), "--file", "--output", "json"]);
            assert_eq!(w["structure"], "data", "{w}");
            assert_eq!(w["virtual"], start + delta, "host 0x{:x}: {w}", off + delta);
            n += 1;
        }
    }
    assert!(n >= 12, "too few data runs checked: {n}");
    let w = vdiskview_json(&["where", s(p), "0", "--file", "--output", "json"]);
    assert_eq!(w["structure"], "header", "{w}");
}

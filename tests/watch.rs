//! `map --watch` while qemu-io writes the image from another process: every cluster qemu
//! allocates is printed, nothing is reported as damage, and the watcher never takes a lock
//! that would stop qemu.
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// Allocated guest units of the top layer, per qemu-img map (JSON), at `unit` granularity.
fn qemu_allocated(path: &std::path::Path, fmt: &str, unit: u64) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for e in qemu_map_json(path, fmt).as_array().unwrap() {
        if e["depth"].as_u64() == Some(0) && e["present"].as_bool() == Some(true) && e["data"].as_bool() == Some(true) {
            let (s, l) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            out.extend((s / unit)..(s + l).div_ceil(unit));
        }
    }
    out
}

fn watch_while_writing(fmt: &str, create: &[&str], unit: u64, writes: usize) {
    let dir = workspace();
    let img = dir.path().join(format!("w.{fmt}"));
    qemu_img(&[&["create", "-q", "-f", fmt], create, &[s(&img), "256M"]].concat());
    let mut child = Command::new(vdiskview_bin())
        .args(["map", s(&img), "--watch", "--watch-seconds", "120", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the watcher's lines, as they come
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // many small writes in a few qemu-io runs, scattered over the disk, while the watcher looks
    let cmds: Vec<String> = (0..writes).map(|i| format!("write -P {} {} 4k", i % 250 + 1, (i as u64 * 7919 % 4000) * 65536)).collect();
    for chunk in cmds.chunks(writes / 4) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        qemu_io(fmt, &img, &refs);
    }
    let expected = qemu_allocated(&img, fmt, unit);
    let seen = |lines: &[String]| {
        let mut seen = BTreeSet::new();
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            let (st, l) = (v["start"].as_u64().unwrap(), v["length"].as_u64().unwrap());
            assert_eq!(v["depth"].as_u64(), Some(0));
            seen.extend((st / unit)..(st + l).div_ceil(unit));
        }
        seen
    };
    // the last writes show within a poll or two; CI may be slow, so wait up to 30 s
    let start = Instant::now();
    while seen(&lines.lock().unwrap()) != expected && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_none(), "the watcher stopped early");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "the watcher reported: {}", stderr);
    assert_eq!(seen(&lines.lock().unwrap()), expected, "every allocation printed, nothing else");
}

#[test]
fn qcow2_writes_appear() {
    watch_while_writing("qcow2", &[], 65536, 1000);
}

#[test]
fn vhd_writes_appear() {
    watch_while_writing("vpc", &[], 2 << 20, 400);
}

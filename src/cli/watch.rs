//! `vdiskview map IMAGE --watch`: print each guest range the image's top layer allocates, as
//! it appears, while another process (qemu-io, qemu-nbd, a VM) writes the image. The file is
//! watched through inotify (the `notify` crate), with a slow poll as a fallback; every look
//! re-reads the metadata read-only and takes no lock.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use notify::Watcher as _;

use super::map::MapEntry;
use super::Output;
use crate::image::watch::Watch;
use crate::image::OpenOptions;

/// A look that fails (the file caught mid-update) is retried this often before the error
/// is shown; between events, a look every POLL catches what inotify might not report.
const RETRIES: u32 = 20;
const POLL: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_millis(30);

pub fn run(path: &Path, opts: &OpenOptions, output: Output, seconds: Option<u64>, out: &mut dyn Write) -> Result<ExitCode> {
    let (mut watch, _) = Watch::start(path, opts)?;
    let (tx, rx) = mpsc::channel();
    // inotify where it works; without it the poll alone still finds every change
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })
    .ok();
    if let Some(w) = watcher.as_mut() {
        let _ = w.watch(path, notify::RecursiveMode::NonRecursive);
    }
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut failures = 0u32;
    loop {
        let wait = deadline.map_or(POLL, |d| d.saturating_duration_since(Instant::now()).min(POLL));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ExitCode::SUCCESS);
        }
        if rx.recv_timeout(wait).is_ok() {
            // a burst of events for one write: let it settle, then look once
            std::thread::sleep(SETTLE);
            while rx.try_recv().is_ok() {}
        }
        match watch.look() {
            Ok((img, fresh)) => {
                failures = 0;
                for e in &fresh {
                    let m = MapEntry::from_extent(&img, e);
                    let line = match output {
                        Output::Json => format!(
                            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}{} }}",
                            m.start,
                            m.length,
                            m.depth,
                            m.present,
                            m.zero,
                            m.data,
                            m.offset.map(|o| format!(", \"offset\": {}", o)).unwrap_or_default()
                        ),
                        Output::Human => format!(
                            "{:<16}{:<16}{:<16}{}",
                            format!("{:#x}", m.start),
                            format!("{:#x}", m.length),
                            m.offset.map(|o| format!("{:#x}", o)).unwrap_or_else(|| "-".into()),
                            m.filename.unwrap_or("")
                        ),
                    };
                    match writeln!(out, "{}", line).and_then(|_| out.flush()) {
                        // the reader went away: end quietly, as Unix tools do
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                        r => r?,
                    }
                }
            }
            Err(e) => {
                // caught mid-update: look again soon; only a lasting failure is reported
                failures += 1;
                if failures > RETRIES {
                    return Err(e.into());
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
}

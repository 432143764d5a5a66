//! The event loop's side of watching (`--watch`, `W`): inotify events (the `notify` crate) or
//! a slow poll make the loop look at the file again through the core's `image::watch`; a new
//! parse of the image replaces the shown one (read-only, no lock, so the writer goes on), and
//! the newly allocated ranges are marked for a few seconds. A look that fails — the file caught
//! mid-update — is simply tried again at the next tick: never shown as damage.

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use notify::Watcher as _;

use super::state::AppState;
use crate::image::watch::Watch;
use crate::image::{Image, OpenOptions};

/// Looks happen on an event, or at least this often.
const POLL: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Watcher {
    watch: Option<Watch>,
    events: Option<(notify::RecommendedWatcher, Receiver<()>)>,
    last_look: Option<Instant>,
    /// A look failed or a new image could not be swapped in: look again next tick.
    pending: bool,
}

impl Watcher {
    /// Start (or stop) watching the image at `path`.
    pub fn toggle(&mut self, st: &mut AppState, path: &str) {
        if st.watch.on {
            *self = Watcher::default();
            st.watch.on = false;
            st.watch.fresh.clear();
            st.message = Some("stopped watching".into());
            return;
        }
        match Watch::start(std::path::Path::new(path), &OpenOptions::default()) {
            Ok((w, _)) => {
                let (tx, rx) = channel();
                let events = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
                    if e.is_ok() {
                        let _ = tx.send(());
                    }
                })
                .ok()
                .and_then(|mut n| n.watch(std::path::Path::new(path), notify::RecursiveMode::NonRecursive).ok().map(|_| (n, rx)));
                self.watch = Some(w);
                self.events = events;
                self.last_look = Some(Instant::now());
                st.watch = Default::default();
                st.watch.on = true;
                st.message = Some("watching the image: new allocations are marked ++ (W stops)".into());
            }
            Err(e) => st.message = Some(format!("cannot watch: {}", e)),
        }
    }

    /// Called every loop turn: expire marks, and look at the file when it changed.
    pub fn tick(&mut self, st: &mut AppState, shared: &Arc<RwLock<Image>>) {
        let now = Instant::now();
        if st.watch.expire(now) {
            st.view.invalidate();
        }
        let Some(w) = self.watch.as_mut() else { return };
        let event = self.events.as_ref().is_some_and(|(_, rx)| rx.try_iter().count() > 0);
        let due = self.last_look.is_none_or(|t| now.duration_since(t) >= POLL);
        if !(event || due || self.pending) {
            return;
        }
        self.last_look = Some(now);
        // a job still reading holds the image: try again next turn
        let Ok(mut img) = shared.try_write() else {
            self.pending = true;
            return;
        };
        match w.look() {
            Ok((fresh_img, fresh)) => {
                self.pending = false;
                *img = fresh_img;
                for e in &fresh {
                    st.watch.fresh.push((e.virt, e.len, now));
                }
                st.watch.new_ranges = w.new_ranges;
                st.watch.new_bytes = w.new_bytes;
                st.view.invalidate();
            }
            Err(_) => self.pending = true,
        }
    }
}

//! Work that may take longer than a frame: `/` search, the check findings, the host-cluster
//! map, the density overview, the guest filesystem (Files view) and the `:` subcommands.
//! `update` only asks for them ([`Effect`]); a runner does them — on worker threads in the
//! terminal ([`Threads`]), or in place for `render` and the snapshot tests ([`Inline`]), so a
//! headless frame shows the finished result. Progress and results come back as
//! [`Action::JobProgress`] / [`Action::JobDone`]; `Esc` cancels ([`Action::CancelJob`]).

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::action::Action;
use super::state::{Picker, PickerKind, Space, Target};
use crate::guest::ext::ExtFs;
use crate::image::qcow2::check::HostMap;
use crate::image::{self, Image, OpenOptions};

/// What `update` asks the runner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Start(u64, Job),
    /// Stop job `id`: its flag is set, and whatever it still sends is dropped by `update`.
    Cancel(u64),
    /// Put text on the system clipboard: OSC 52 to the terminal (tmux and most terminals
    /// pass it on).
    Clipboard(String),
    /// Write a small file (marks): the state directory is created first.
    WriteFile(std::path::PathBuf, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// From `from` in `space` (`layer` for file space) for `pattern`, forward or backward,
    /// wrapping round once.
    Search { space: Space, layer: usize, from: u64, pattern: super::search::Pattern, backward: bool },
    Check,
    HostMap,
    /// Allocation share of the top layer in `buckets` buckets, for the overview heatmap.
    Density { buckets: u64 },
    /// A subcommand's words (`map IMAGE …`), run in this process into a buffer; the popup's
    /// title.
    Command { title: String, words: Vec<String> },
    /// List a directory of the guest filesystem (opening it first).
    ListDir(String),
    /// Where a guest file's bytes are.
    Locate(String),
    /// Every guest range that differs from the other side.
    Diff(super::compare::DiffSpec),
    /// The selected bytes as hex for the clipboard (`y`).
    Copy { space: Space, layer: usize, start: u64, len: u64 },
    /// The selected bytes into a file (`:export FILE`).
    Export { space: Space, layer: usize, start: u64, len: u64, path: String },
}

impl Job {
    /// What the status line says the job is doing.
    pub fn label(&self) -> String {
        match self {
            Job::Search { .. } => "searching".into(),
            Job::Check => "checking".into(),
            Job::HostMap => "mapping host clusters".into(),
            Job::Density { .. } => "scanning allocation".into(),
            Job::Command { title, .. } => title.clone(),
            Job::ListDir(d) => format!("listing {}", d),
            Job::Locate(p) => format!("locating {}", p),
            Job::Diff(_) => "comparing".into(),
            Job::Copy { .. } => "copying".into(),
            Job::Export { path, .. } => format!("exporting to {}", path),
        }
    }
}

/// What a job found.
#[derive(Debug)]
pub enum JobResult {
    Found(Option<u64>),
    /// Found after wrapping round the end (or the start, searching backward).
    Wrapped(u64),
    Findings(Picker),
    HostMap(HostMap),
    Density(Vec<f32>),
    Output { title: String, lines: Vec<String> },
    Dir { cwd: String, rows: Vec<String>, targets: Vec<Target> },
    Located { path: String, size: u64, extents: Vec<(u64, u64)>, count: usize },
    /// Differing guest ranges and their byte total.
    Diff { runs: Vec<(u64, u64)>, bytes: u64 },
    /// The selection as hex, for the clipboard.
    Copied { hex: String, len: u64 },
    Exported { path: String, len: u64 },
    Cancelled,
    Failed(String),
}

/// A result inside an [`Action`]: actions are cloned and compared, results are moved once,
/// so the result sits behind a shared slot that `update` takes it from.
#[derive(Clone)]
pub struct Outcome(Arc<Mutex<Option<JobResult>>>);

impl Outcome {
    pub fn new(r: JobResult) -> Outcome {
        Outcome(Arc::new(Mutex::new(Some(r))))
    }
    pub fn take(&self) -> Option<JobResult> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl PartialEq for Outcome {
    fn eq(&self, o: &Outcome) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}
impl Eq for Outcome {}
impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outcome")
    }
}

/// What a running job sees: its cancel flag, and where its progress goes.
pub struct Ctx<'a> {
    pub cancel: &'a AtomicBool,
    pub progress: &'a dyn Fn(u64, u64),
}

impl Ctx<'_> {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A job's work, the same in both runners. `fs` is the guest filesystem, opened on first use
/// and kept by the caller (it holds an `Rc`, so it cannot cross threads).
pub fn work(job: &Job, img: &Image, image_path: &str, fs: &mut Option<ExtFs>, ctx: &Ctx) -> JobResult {
    let r = match job {
        Job::Search { space, layer, from, pattern, backward } => super::search::search(img, *space, *layer, *from, pattern, *backward, ctx).map(|r| match r {
            Some((o, true)) => JobResult::Wrapped(o),
            r => JobResult::Found(r.map(|(o, _)| o)),
        }),
        Job::Check => findings(img, ctx),
        Job::HostMap => host_map(img, ctx),
        Job::Density { buckets } => Ok(JobResult::Density(density(img, *buckets, ctx))),
        Job::Command { title, words } => Ok(command(title, words)),
        Job::ListDir(dir) => open_fs(img, image_path, fs).and_then(|fs| list(fs, dir)),
        Job::Locate(path) => open_fs(img, image_path, fs).and_then(|fs| locate(fs, path)),
        Job::Diff(spec) => diff(img, image_path, spec, ctx),
        Job::Copy { space, layer, start, len } => {
            let mut hex = String::with_capacity(*len as usize * 2);
            copy_range(img, *space, *layer, *start, *len, ctx, |b| {
                for x in b {
                    hex.push_str(&format!("{:02x}", x));
                }
                Ok(())
            })
            .map(|_| JobResult::Copied { hex, len: *len })
        }
        Job::Export { space, layer, start, len, path } => export(img, *space, *layer, *start, *len, path, ctx),
    };
    if ctx.cancelled() {
        return JobResult::Cancelled;
    }
    r.unwrap_or_else(JobResult::Failed)
}

/// Read `[start, start+len)` of a space in 1 MiB pieces, handing each to `out`.
fn copy_range(img: &Image, space: Space, layer: usize, start: u64, len: u64, ctx: &Ctx, mut out: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut buf = vec![0u8; (1u64 << 20).min(len) as usize];
    let mut done = 0;
    while done < len {
        if ctx.cancelled() {
            return Err("cancelled".into());
        }
        (ctx.progress)(done, len);
        let n = (len - done).min(buf.len() as u64) as usize;
        match space {
            Space::Virt => img.read(start + done, &mut buf[..n]),
            Space::File => img.read_host(layer, start + done, &mut buf[..n]),
        }
        .map_err(|e| e.to_string())?;
        out(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

fn export(img: &Image, space: Space, layer: usize, start: u64, len: u64, path: &str, ctx: &Ctx) -> Result<JobResult, String> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| format!("{}: {}", path, e))?);
    copy_range(img, space, layer, start, len, ctx, |b| f.write_all(b).map_err(|e| format!("{}: {}", path, e)))?;
    f.flush().map_err(|e| format!("{}: {}", path, e))?;
    Ok(JobResult::Exported { path: path.to_string(), len })
}

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len() * 4 / 3 + 12);
    out.push_str("\x1b]52;c;");
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { B64[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out.push('\x07');
    out
}

/// Write a small file, its folder first.
pub fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text)
}

/// The diff of the image against the other side, opened here (read-only) for the worker.
fn diff(img: &Image, image_path: &str, spec: &super::compare::DiffSpec, ctx: &Ctx) -> Result<JobResult, String> {
    let other = super::compare::Other::open(image_path, spec).map_err(|e| format!("diff: {}", e))?;
    let a = image::diff::Side::new(&img.layers).map_err(|e| e.to_string())?;
    let b = other.side().map_err(|e| e.to_string())?;
    let progress = walk_progress(ctx);
    let r = image::diff::diff(a, b, &mut |d, t| progress(d, t)).map_err(|e| format!("diff: {}", e))?;
    Ok(JobResult::Diff { runs: r.runs.iter().map(|r| (r.start, r.length)).collect(), bytes: r.differing_bytes })
}

/// Progress for the core's walks: reported to the job, and the cancel flag stops them.
fn walk_progress<'a>(ctx: &'a Ctx<'a>) -> impl Fn(u64, u64) -> bool + 'a {
    move |done, total| {
        (ctx.progress)(done, total);
        !ctx.cancelled()
    }
}

fn findings(img: &Image, ctx: &Ctx) -> Result<JobResult, String> {
    let progress = walk_progress(ctx);
    let rep = image::check::check_image_with(img, &progress).map_err(|e| format!("check: {}", e))?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for f in &rep.findings {
        let place = match (f.host_offset, f.virt) {
            (Some(h), _) => format!(" @file 0x{:x}", h),
            (None, Some(v)) => format!(" @guest 0x{:x}", v),
            _ => String::new(),
        };
        rows.push(format!("[{}] {}: {}{}", f.severity.name(), f.structure, f.message, place));
        targets.push(Target::Place { host: f.host_offset, virt: f.virt });
    }
    // then what opening the chain found: a broken backing chain, fallbacks, mismatches
    for w in img.chain_error.iter().chain(img.warnings.iter()) {
        rows.push(format!("[warning] open: {}", w));
        targets.push(Target::Nothing);
    }
    if rows.is_empty() {
        rows.push("no findings: the image is clean".into());
        targets.push(Target::Nothing);
    }
    let title = format!("Findings — {} corruption(s), {} leak(s), {} check error(s)", rep.corruptions, rep.leaks, rep.check_errors);
    Ok(JobResult::Findings(Picker { kind: PickerKind::Findings, title, rows, targets, sel: 0 }))
}

fn host_map(img: &Image, ctx: &Ctx) -> Result<JobResult, String> {
    let progress = walk_progress(ctx);
    match img.top().downcast_ref::<crate::image::qcow2::Qcow2>() {
        Some(q) => q.host_map_with(&progress).map(JobResult::HostMap).map_err(|e| format!("host view: {}", e)),
        None => Err("the host-cluster view needs a qcow2 image (refcounts)".into()),
    }
}

/// Share of the top layer's allocated units per bucket, for the overview heatmap; empty for
/// images with more units than are worth scanning unit by unit.
pub fn density(img: &Image, buckets: u64, ctx: &Ctx) -> Vec<f32> {
    use crate::image::summary::UnitKind;
    let units = img.unit_count();
    if units == 0 || units > 1 << 16 {
        return Vec::new();
    }
    let buckets = buckets.min(units);
    let per = units.div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets as usize);
    for b in 0..buckets {
        if ctx.cancelled() {
            return Vec::new();
        }
        (ctx.progress)(b, buckets);
        let (lo, hi) = (b * per, ((b + 1) * per).min(units));
        let n = (lo..hi)
            .filter(|&u| {
                matches!(
                    img.unit_kind(u),
                    Ok(UnitKind::Data { depth: 0 } | UnitKind::Partial | UnitKind::Shared | UnitKind::Compressed { depth: 0 })
                )
            })
            .count();
        out.push(if hi > lo { n as f32 / (hi - lo) as f32 } else { 0.0 });
    }
    out
}

/// The subcommands the `:` line runs.
pub const COMMANDS: [&str; 11] = ["info", "map", "tables", "where", "dump", "read", "partitions", "ls", "cat", "locate", "check"];

/// Run a subcommand in this process into a buffer; its warnings are captured with it.
fn command(title: &str, words: &[String]) -> JobResult {
    let mut buf: Vec<u8> = Vec::new();
    let (r, warned) = crate::cli::out::capture_warnings(|| crate::cli::run_words(words, &mut buf));
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    text += &String::from_utf8_lossy(&warned);
    if let Err(e) = r {
        text += &format!("vdiskview: {:#}\n", e);
    }
    let mut lines: Vec<String> = text.lines().map(|l| l.replace('\t', "    ")).take(100_000).collect();
    if lines.is_empty() {
        lines.push("(no output)".into());
    }
    JobResult::Output { title: title.to_string(), lines }
}

fn open_fs<'a>(img: &Image, path: &str, fs: &'a mut Option<ExtFs>) -> Result<&'a ExtFs, String> {
    if fs.is_none() {
        // the filesystem reader owns its image: a read-only view of the same file
        let opts = OpenOptions { format: Some(img.format()), ..Default::default() };
        let opened = image::open(std::path::Path::new(path), &opts)
            .map_err(|e| e.to_string())
            .and_then(|i| crate::guest::open_fs(Rc::new(i), None).map_err(|e| e.to_string()))
            .map_err(|e| format!("Files: {}", e))?;
        *fs = Some(opened);
    }
    Ok(fs.as_ref().expect("opened above"))
}

fn list(fs: &ExtFs, cwd: &str) -> Result<JobResult, String> {
    let mut entries = fs.read_dir(cwd).map_err(|e| format!("Files: {}: {}", cwd, e))?;
    entries.retain(|e| e.name != "." && e.name != "..");
    entries.sort_by(|a, b| b.is_dir().cmp(&a.is_dir()).then(a.name.cmp(&b.name)));
    let mut rows = vec!["../".to_string()];
    let mut targets = vec![Target::Dir(super::picker::parent(cwd))];
    for e in entries.iter().take(100_000) {
        let path = super::picker::join(cwd, &e.name);
        if e.is_dir() {
            rows.push(format!("{}/", e.name));
            targets.push(Target::Dir(path));
        } else {
            rows.push(format!("{:<40} {:>12}  {}", e.name, e.size, e.mode_string()));
            targets.push(if e.type_char == '-' { Target::File(path) } else { Target::Nothing });
        }
    }
    Ok(JobResult::Dir { cwd: cwd.to_string(), rows, targets })
}

fn locate(fs: &ExtFs, path: &str) -> Result<JobResult, String> {
    let loc = fs.locate(path).map_err(|e| format!("{}: {}", path, e))?;
    let extents = loc.extents.iter().filter_map(|e| e.virt.map(|v| (v, e.len))).collect();
    Ok(JobResult::Located { path: path.to_string(), size: loc.size, extents, count: loc.extents.len() })
}

/// The runner for `render` and the tests: each job runs to its end before the next key.
pub struct Inline {
    fs: Option<ExtFs>,
    pending: Vec<Action>,
}

impl Default for Inline {
    fn default() -> Self {
        Self::new()
    }
}

impl Inline {
    pub fn new() -> Inline {
        Inline { fs: None, pending: Vec::new() }
    }

    pub fn run(&mut self, img: &Image, image_path: &str, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Start(id, job) => {
                    let never = AtomicBool::new(false);
                    let r = work(&job, img, image_path, &mut self.fs, &Ctx { cancel: &never, progress: &|_, _| {} });
                    self.pending.push(Action::JobDone(id, Outcome::new(r)));
                }
                // no terminal here: what was copied stays in the state (last_copied)
                Effect::Clipboard(_) | Effect::Cancel(_) => {}
                Effect::WriteFile(p, text) => {
                    let _ = write_file(&p, &text);
                }
            }
        }
    }

    /// The results to feed back to `update`.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.pending)
    }
}

/// The terminal's runner: one thread per job over the shared image; the guest filesystem on a
/// thread of its own that keeps it open between requests.
pub struct Threads {
    img: Arc<RwLock<Image>>,
    image_path: String,
    tx: Sender<Action>,
    pub rx: Receiver<Action>,
    cancels: Vec<(u64, Arc<AtomicBool>)>,
    fs: Option<Sender<(u64, Job, Arc<AtomicBool>)>>,
}

/// How often a job reports progress at most: enough for a smooth bar, few wake-ups.
const PROGRESS_EVERY: Duration = Duration::from_millis(40);

impl Threads {
    pub fn new(img: Arc<RwLock<Image>>, image_path: String) -> Threads {
        let (tx, rx) = std::sync::mpsc::channel();
        Threads { img, image_path, tx, rx, cancels: Vec::new(), fs: None }
    }

    pub fn run(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Cancel(id) => {
                    if let Some((_, c)) = self.cancels.iter().find(|(i, _)| *i == id) {
                        c.store(true, Ordering::Relaxed);
                    }
                    self.cancels.retain(|(i, _)| *i != id);
                }
                Effect::Clipboard(text) => {
                    use std::io::Write;
                    let mut out = std::io::stdout();
                    let _ = out.write_all(osc52(&text).as_bytes()).and_then(|_| out.flush());
                }
                Effect::WriteFile(p, text) => {
                    if let Err(e) = write_file(&p, &text) {
                        let r = JobResult::Failed(format!("{}: {}", p.display(), e));
                        let _ = self.tx.send(Action::JobDone(0, Outcome::new(r)));
                    }
                }
                Effect::Start(id, job) => {
                    let cancel = Arc::new(AtomicBool::new(false));
                    self.cancels.push((id, cancel.clone()));
                    if matches!(job, Job::ListDir(_) | Job::Locate(_)) {
                        if self.fs_thread().send((id, job, cancel)).is_err() {
                            let r = JobResult::Failed("Files: the filesystem thread is gone".into());
                            let _ = self.tx.send(Action::JobDone(id, Outcome::new(r)));
                        }
                    } else {
                        self.spawn(id, job, cancel);
                    }
                }
            }
        }
    }

    /// A job is done (its result came back): forget its flag.
    pub fn finished(&mut self, id: u64) {
        self.cancels.retain(|(i, _)| *i != id);
    }

    fn spawn(&self, id: u64, job: Job, cancel: Arc<AtomicBool>) {
        let (img, path, tx) = (self.img.clone(), self.image_path.clone(), self.tx.clone());
        let name = format!("{}-{}", WORKER, id);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let img = img.read().unwrap_or_else(|e| e.into_inner());
            let r = guarded(&job, &img, &path, &mut None, &cancel, &tx, id);
            let _ = tx.send(Action::JobDone(id, Outcome::new(r)));
        });
        if let Err(e) = spawned {
            let _ = self.tx.send(Action::JobDone(id, Outcome::new(JobResult::Failed(format!("cannot start a job: {}", e)))));
        }
    }

    fn fs_thread(&mut self) -> &Sender<(u64, Job, Arc<AtomicBool>)> {
        if self.fs.is_none() {
            let (req_tx, req_rx) = std::sync::mpsc::channel::<(u64, Job, Arc<AtomicBool>)>();
            let (img, path, tx) = (self.img.clone(), self.image_path.clone(), self.tx.clone());
            let spawned = std::thread::Builder::new().name(format!("{}-fs", WORKER)).spawn(move || {
                let mut fs = None;
                for (id, job, cancel) in req_rx {
                    let img = img.read().unwrap_or_else(|e| e.into_inner());
                    let r = guarded(&job, &img, &path, &mut fs, &cancel, &tx, id);
                    let _ = tx.send(Action::JobDone(id, Outcome::new(r)));
                }
            });
            // a thread that did not start drops the receiver: requests fail to send, see `run`
            drop(spawned);
            self.fs = Some(req_tx);
        }
        self.fs.as_ref().expect("started above")
    }
}

/// Keep a worker's panic off the screen: the panic hook ratatui installs restores the terminal
/// (leaves the alternate screen) on any thread's panic, but a job's panic is caught and shown
/// as a failed job while the UI goes on. Other threads' panics reach the previous hook.
pub fn quiet_worker_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !std::thread::current().name().is_some_and(|n| n.starts_with(WORKER)) {
            previous(info);
        }
    }));
}

/// Worker threads' names start with this.
const WORKER: &str = "vdiskview-job";

/// `work` with throttled progress, and a panic turned into a failed job (the UI lives on).
fn guarded(job: &Job, img: &Image, path: &str, fs: &mut Option<ExtFs>, cancel: &AtomicBool, tx: &Sender<Action>, id: u64) -> JobResult {
    let last = std::cell::Cell::new(Instant::now() - PROGRESS_EVERY);
    let progress = |done: u64, total: u64| {
        if last.get().elapsed() >= PROGRESS_EVERY {
            last.set(Instant::now());
            let _ = tx.send(Action::JobProgress { id, done, total });
        }
    };
    let ctx = Ctx { cancel, progress: &progress };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job, img, path, fs, &ctx))).unwrap_or_else(|p| {
        let why = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
        JobResult::Failed(format!("{}: internal error (a bug): {}", job.label(), why))
    })
}

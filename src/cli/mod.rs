//! The command line: one file per subcommand, all over the image model.

mod bitmaps;
mod check;
mod diff;
mod dump;
mod fs;
mod info;
mod map;
pub mod out;
mod partitions;
mod read;
mod render;
mod tables;
mod watch;
mod where_;
mod write;
mod zero_scan;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::image::{self, Format, Image, OpenOptions};

#[derive(Parser)]
#[command(
    name = "vdiskview",
    version,
    about = "See virtual disk images (VHD, VHDX, QCOW2, VMDK, VDI, raw) as they really are",
    long_about = "See virtual disk images (VHD, VHDX, QCOW2, VMDK, VDI, raw; differencing and backing chains) as they really are: \
decoded headers, allocation tables, guest and host offsets, backing chains.\n\n\
`vdiskview IMAGE` opens the TUI (read-only unless --write; F1 shows its keys). With no IMAGE it \
opens the bundled demo image (assets/demo.vhd). Without a terminal it prints `info` instead.\n\
Offsets accept expressions: 4096, 0x1000, 4K, 1M, 0x200+512*3.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Image to open in the TUI (the bundled demo image when omitted)
    pub image: Option<PathBuf>,
    /// Open the TUI at this offset (jump syntax: 0x200000, v:/f: space, s: sector, b: block)
    #[arg(long)]
    pub goto: Option<String>,
    /// Allow patching in the TUI (takes qemu's write lock); read-only otherwise
    #[arg(long)]
    pub write: bool,
    /// TUI config file (keys, theme) instead of $XDG_CONFIG_HOME/vdiskview/config.toml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub modes: TuiModeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the TUI compares or watches.
#[derive(Args, Clone, Default)]
pub struct TuiModeArgs {
    /// Compare with another image: differing bytes and grid cells are marked; } and { step
    /// through the differences
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["diff_backing", "diff_snapshot"])]
    pub diff: Option<PathBuf>,
    /// Compare the chain with the chain without its top layer
    #[arg(long, conflicts_with = "diff_snapshot")]
    pub diff_backing: bool,
    /// Compare an internal snapshot with the active disk
    #[arg(long, value_name = "NAME")]
    pub diff_snapshot: Option<String>,
    /// Watch the image while another process writes it (new allocations marked; W toggles)
    #[arg(long)]
    pub watch: bool,
}

impl TuiModeArgs {
    pub fn diff_spec(&self) -> Option<crate::tui::compare::DiffSpec> {
        use crate::tui::compare::DiffSpec;
        match (&self.diff, self.diff_backing, &self.diff_snapshot) {
            (Some(p), _, _) => Some(DiffSpec::Image(p.clone())),
            (_, true, _) => Some(DiffSpec::Backing),
            (_, _, Some(s)) => Some(DiffSpec::Snapshot(s.clone())),
            _ => None,
        }
    }
}

#[derive(Args, Clone, Default)]
pub struct OpenArgs {
    /// Image format (probed when not given)
    #[arg(long, short = 'f', value_parser = format_parser())]
    pub format: Option<FormatArg>,
}

/// `--format`: `auto` (probe) or any name of a registered format.
#[derive(Clone, Copy)]
pub struct FormatArg(Option<Format>);

/// The names `--format` takes, from the format registry: a new format needs no change here.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = FormatArg> {
    let mut names: Vec<&'static str> = vec!["auto"];
    for f in Format::all() {
        let d = f.driver();
        for n in std::iter::once(d.name()).chain(std::iter::once(d.qemu_name())).chain(d.aliases().iter().copied()) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).map(|s: String| FormatArg(Format::parse(&s)))
}

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Summary of an image and its chain (qemu-img info's JSON keys with --output json)
    Info {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Guest ranges and where they live, exactly as `qemu-img map` prints them
    Map {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        /// Keep watching: print each range the top layer allocates as it appears (one line,
        /// or one JSON object per line), while another process writes the image
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many seconds
        #[arg(long, value_name = "SECONDS", requires = "watch")]
        watch_seconds: Option<u64>,
    },
    /// The on-disk structures as text: VHD footer, header and BAT; QCOW2 header, L1/L2, refcounts
    Tables {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// Raw bytes to stdout: the guest disk, or the host file with --file
    Read {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Start offset (expression)
        #[arg(long, default_value = "0")]
        offset: String,
        /// Bytes to read (default: to the end)
        #[arg(long)]
        length: Option<String>,
        /// Read the host file instead of the guest disk
        #[arg(long)]
        file: bool,
        /// Read the guest disk as this internal snapshot (qcow2; id or name) holds it
        #[arg(long, conflicts_with = "file")]
        snapshot: Option<String>,
    },
    /// Hexdump whose rows name the structure they lie in
    Dump {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, default_value = "0")]
        offset: String,
        #[arg(long, default_value = "512")]
        length: String,
        /// Dump the host file instead of the guest disk
        #[arg(long)]
        file: bool,
    },
    /// Patch the image: guest bytes through the write engine (allocating as qemu would), or
    /// raw bytes of the image file with --file. Takes qemu's write lock.
    Write {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Where to write (expression)
        #[arg(long)]
        offset: String,
        /// Fill with this byte (needs --length)
        #[arg(long)]
        pattern: Option<String>,
        /// Bytes to write
        #[arg(long)]
        length: Option<String>,
        /// Bytes to write from a file, or - for stdin
        #[arg(long)]
        input: Option<String>,
        /// Write into the image file (host offsets) instead of the guest disk
        #[arg(long)]
        file: bool,
    },
    /// Draw the TUI without a terminal after feeding KEYS (for scripts, tests, screenshots)
    Render {
        image: Option<PathBuf>,
        /// Screen size COLSxROWS
        #[arg(long, default_value = "160x48")]
        size: String,
        /// Keys to feed, space separated: Enter Esc Tab BackTab Up Down Left Right PgUp PgDn
        /// Home End, C-x for Ctrl; anything else is typed character by character
        #[arg(long, default_value = "")]
        keys: String,
        #[arg(long, value_enum, default_value_t = render::RenderFormat::Text)]
        format: render::RenderFormat,
        #[arg(long)]
        goto: Option<String>,
        /// Open for writing, so that saves in KEYS (C-s, :w) patch the image
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        modes: TuiModeArgs,
    },
    /// Where a guest offset lives (layer, host offset, block/cluster), or with --file what a host
    /// offset belongs to
    Where {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Offset expression
        offset: String,
        /// OFFSET is a host (file) offset in the top image
        #[arg(long)]
        file: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// The guest disk's partition table (MBR, GPT with CRC verdicts) and each partition's filesystem
    Partitions {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List a directory of a filesystem (ext2/3/4, FAT12/16/32, NTFS, btrfs) inside the guest disk
    Ls {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Directory (or file) in the guest filesystem
        #[arg(default_value = "/")]
        path: String,
        /// Partition number as `partitions` shows it (0 = the whole disk); default: the first
        /// partition that holds a filesystem
        #[arg(long)]
        partition: Option<u32>,
        /// Long listing: type, mode, owner, size, mtime
        #[arg(short = 'l')]
        long: bool,
    },
    /// A file of a filesystem (ext2/3/4, FAT12/16/32, NTFS, btrfs) inside the guest disk, to stdout
    Cat {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        path: String,
        /// Partition number (0 = the whole disk); default: the first with a filesystem
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Where a guest file's bytes are: its extents with guest offset, layer and host offset
    Locate {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        path: String,
        /// Partition number (0 = the whole disk); default: the first with a filesystem
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Is the image damaged, and where? QCOW2: qemu-img check's findings, counts and exit status
    /// (0 clean, 2 corruptions, 3 leaks only, 1 the check could not complete); VHD: footers,
    /// header, BAT, block overlaps, parent (0 clean, 2 damaged)
    Check {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        /// Repair as qemu-img check -r does (qcow2): leaked clusters, or all (also refcounts
        /// that are too low and OFLAG_COPIED flags); a VHDX's pending log is replayed; takes
        /// qemu's write lock
        #[arg(long, short = 'r', value_enum)]
        repair: Option<check::Repair>,
    },
    /// What differs between two disks: every differing guest range with what each side holds
    /// there (exit 0 equal, 1 different, 2 error, as qemu-img compare)
    Diff {
        /// The first image (with --backing or --snapshot, the only one)
        a: PathBuf,
        /// The second image
        b: Option<PathBuf>,
        /// Compare the chain with the chain without its top layer
        #[arg(long)]
        backing: bool,
        /// Compare an internal snapshot with the active disk (twice: two snapshots)
        #[arg(long, value_name = "NAME")]
        snapshot: Vec<String>,
        /// Fail when the sizes differ (as qemu-img compare -s)
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        open: OpenArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// A shell completion script on stdout (bash, zsh, fish, elvish, powershell)
    Completions {
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout: `vdiskview man | man -l -`
    Man,
    /// The persistent dirty bitmaps of a qcow2 image; with NAME, the dirty and clean runs of the
    /// disk as qemu-nbd -B NAME exports them
    Bitmaps {
        image: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// A bitmap's name
        name: Option<String>,
        /// Check bitmap NAME against the disk as it was when the bitmap was created or
        /// cleared (a snapshot's name or an image file): exit 1 when a change is missed
        #[arg(long, value_name = "OLD")]
        verify_against: Option<String>,
        /// Show an in-use (inconsistent) bitmap's extents anyway (qemu-nbd refuses it)
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

impl OpenArgs {
    pub fn options(&self) -> OpenOptions {
        let format = self.format.and_then(|f| f.0);
        OpenOptions { format, ..Default::default() }
    }
}

pub fn open(path: &Path, opts: &OpenOptions) -> Result<Image> {
    let img = image::open(path, opts).map_err(anyhow::Error::from)?;
    for w in &img.warnings {
        crate::warnln!("vdiskview: warning: {}", w);
    }
    Ok(img)
}

pub fn offset(expr: &str) -> Result<u64> {
    image::expr::parse(expr).map_err(|e| anyhow::anyhow!("{}", e)).with_context(|| format!("bad offset '{}'", expr))
}

/// The image asked for, or the demo image when none was.
fn image_or_demo(image: Option<PathBuf>) -> Result<PathBuf> {
    match image {
        Some(p) => Ok(p),
        None => demo_image(),
    }
}

/// The demo image shipped in assets/.
pub fn demo_image() -> Result<PathBuf> {
    let mut candidates = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.vhd")];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("assets/demo.vhd"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("the demo image assets/demo.vhd was not found; run scripts/make-demo-image.sh"))
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    if cli.command.is_none() {
        return tui_or_info(cli);
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let r = dispatch(cli, &mut w, true).and_then(|code| {
        w.flush()?;
        Ok(code)
    });
    quiet_on_broken_pipe(r)
}

/// A reader that closed the pipe early (`| head`) got what it wanted: exit 0, no message.
pub fn quiet_on_broken_pipe(r: Result<ExitCode>) -> Result<ExitCode> {
    match r {
        Err(e) if out::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        r => r,
    }
}

/// Run a subcommand given as words (without the program name) into `w`, in this process:
/// the TUI's `:` command line. Usage errors come back as errors, never an exit.
pub fn run_words(words: &[String], w: &mut dyn std::io::Write) -> Result<ExitCode> {
    let cli = Cli::try_parse_from(std::iter::once("vdiskview".to_string()).chain(words.iter().cloned()))
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    if cli.command.is_none() {
        anyhow::bail!("no subcommand");
    }
    dispatch(cli, w, false)
}

fn tui_or_info(cli: Cli) -> Result<ExitCode> {
    let opts = cli.open.options();
    let image = image_or_demo(cli.image)?;
    // a bad config is one line naming the line, before the screen is taken (an explicit
    // --config is checked with or without a terminal)
    let config = crate::tui::config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!(e));
    if cli.config.is_some() {
        config.as_ref().map_err(|e| anyhow::anyhow!("{}", e))?;
    }
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        // no terminal to draw on (a pipe, CI): print the summary instead
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        let r = info::run(&image, &opts, Output::Human, &mut w).and_then(|code| {
            w.flush()?;
            Ok(code)
        });
        return quiet_on_broken_pipe(r);
    }
    let config = config?;
    // a damaged chain still opens: what parsed is shown, the damage listed (c)
    let opts = OpenOptions { write: cli.write, lenient: true, ..opts };
    let img = open(&image, &opts)?;
    let modes = crate::tui::Modes { diff: cli.modes.diff_spec(), watch: cli.modes.watch };
    crate::tui::run_with(img, cli.goto.as_deref(), &config, modes)?;
    Ok(ExitCode::SUCCESS)
}

/// One subcommand, its output into `w` (`to_stdout`: `w` is this process's stdout, which lets
/// `read` write to fd 1 directly).
fn dispatch(cli: Cli, w: &mut dyn std::io::Write, to_stdout: bool) -> Result<ExitCode> {
    let opts = cli.open.options();
    let Some(command) = cli.command else { anyhow::bail!("no subcommand") };
    match command {
        Command::Render { image, size, keys, format, goto, write, modes } => {
            let opts = OpenOptions { write, lenient: true, ..opts };
            let image = image_or_demo(image)?;
            render::run(&image, &opts, &size, &keys, format, goto.as_deref(), modes.diff_spec().as_ref(), w)
        }
        Command::Write { image, open, offset, pattern, length, input, file } => {
            write::run(&image, &open.options(), &offset, pattern.as_deref(), length.as_deref(), input.as_deref(), file)
        }
        Command::Info { image, output, open } => info::run(&image, &open.options(), output, w),
        Command::Map { image, output, open, watch: true, watch_seconds } => watch::run(&image, &open.options(), output, watch_seconds, w),
        Command::Map { image, output, open, .. } => map::run(&image, &open.options(), output, w),
        Command::Tables { image, open } => tables::run(&image, &open.options(), w),
        Command::Read { image, offset, length, file, open, snapshot } => {
            read::run(&image, &OpenOptions { snapshot, ..open.options() }, &offset, length.as_deref(), file, w, to_stdout)
        }
        Command::Check { image, output, open, repair } => match repair {
            None => check::run(&image, &open.options(), output, w),
            Some(mode) => check::repair(&image, &open.options(), mode, output, w),
        },
        Command::Bitmaps { image, name, force, verify_against, output, open } => {
            bitmaps::run(&image, &open.options(), name.as_deref(), force, verify_against.as_deref(), output, w)
        }
        Command::Diff { a, b, backing, snapshot, strict, open, output } => diff::run(
            &open.options(),
            &diff::DiffArgs { a: &a, b: b.as_deref(), backing, snapshots: &snapshot, strict, output },
            w,
        ),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "vdiskview", w);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(w)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { image, offset, length, file, open } => dump::run(&image, &open.options(), &offset, &length, file, w),
        Command::Where { image, offset, file, output, open } => where_::run(&image, &open.options(), &offset, file, output, w),
        Command::Partitions { image, output, open } => partitions::run(&image, &open.options(), output, w),
        Command::Ls { image, path, partition, long, open } => fs::ls(&image, &open.options(), &path, partition, long, w),
        Command::Cat { image, path, partition, open } => {
            out::stream_to_fd1(w, to_stdout, |w| fs::cat(&image, &open.options(), &path, partition, w))
        }
        Command::Locate { image, path, partition, output, open } => fs::locate(&image, &open.options(), &path, partition, output, w),
    }
}

//! The format-driver boundary. A format is one module that implements [`FormatDriver`]
//! (probe and open a file) and [`FormatLayer`] (one opened file of a chain), plus one line in
//! [`DRIVERS`]. The chain, map, read, write, check, the CLI, the TUI and the NBD plugin go
//! through these traits; nothing outside a format's module names its concrete types (the
//! qcow2-only views — L1 list, host-cluster roles, dirty bitmaps, internal snapshots — ask
//! for the qcow2 layer by downcasting, and simply do not appear for other formats).
//!
//! The shape follows qemu's `BlockDriver` table (each format fills in callbacks, `block.c`
//! never names qcow2 types) and imago's `FormatDriverInstance` (a layer answers for its own
//! guest ranges only; the chain does the rest).

use std::any::Any;
use std::io::Write;

use serde_json::Value;

use super::check::CheckReport;
use super::io::HostFile;
use super::mapping::{HostFileId, LayerExtent};
use super::region::Region;
use super::{foreign, qcow2, raw, vdi, vhd, vhdx, vmdk, Error, Result};

/// Every format vdiskview reads, in probing order: the first driver whose probe answers
/// takes the file (raw last: it takes anything). Adding a format = one line here.
pub static DRIVERS: &[&dyn FormatDriver] = &[
    &qcow2::DRIVER,
    &vhdx::DRIVER,
    &vhd::DRIVER,
    &vmdk::DRIVER,
    &vdi::DRIVER,
    // recognised by magic, not read: opening one is an error naming the format
    &foreign::QED,
    &foreign::PARALLELS,
    &foreign::DMG,
    &foreign::BOCHS,
    &foreign::CLOOP,
    &foreign::LUKS,
    &raw::DRIVER,
];

/// A format: how to recognise its files and open one.
pub trait FormatDriver: Sync {
    /// The name vdiskview uses (`--format NAME`, reports).
    fn name(&self) -> &'static str;
    /// The name qemu gives the format (`qemu-img info`'s `format`).
    fn qemu_name(&self) -> &'static str;
    /// Other names `--format` accepts.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the file is of this format, from its bytes.
    fn probe(&self, file: &HostFile) -> Result<bool>;
    /// Parse the file's metadata (lazily where it is large).
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>>;
    /// Check a file of this format that may be too damaged to open (`check` of a path).
    /// By default: open it, then check the opened layer.
    fn check_file(&self, file: HostFile) -> Result<CheckReport> {
        let name = file.name.clone();
        self.open(file)?.check(&name)
    }
}

/// What a layer says about the file beneath it.
#[derive(Clone, Debug)]
pub struct BackingRef {
    /// The name as stored in the image (qemu's `backing-filename`).
    pub name: String,
    /// Paths to try, in order; the first that exists is the parent.
    pub candidates: Vec<String>,
    pub format: Option<Format>,
}

/// The keys of `qemu-img info` a format decides for one layer.
#[derive(Default)]
pub struct LayerInfoKeys {
    /// qemu's `snapshots` list, when the layer has internal snapshots.
    pub snapshots: Option<Value>,
    pub encrypted: bool,
    /// qemu's `format-specific` object (`{"type": …, "data": {…}}`).
    pub format_specific: Option<Value>,
    /// `backing-filename`.
    pub backing_filename: Option<String>,
    /// `full-backing-filename` is the file the chain opened (a VHD's parent, found through
    /// its locators), not the name combined with the image's folder as qemu does.
    pub backing_full_from_chain: bool,
    pub backing_format: Option<String>,
    pub dirty: bool,
    /// qemu's `actual-size` where it is more than the image file's (a VMDK's extent files
    /// count too); `None`: the image file's allocated size.
    pub actual_size: Option<u64>,
    /// vdiskview's own decoding of the layer (under `vdiskview.layers[i].<key>`), and the
    /// lines `info` prints for the top layer, headed by `key` in upper case.
    pub extra: Option<(&'static str, Value)>,
    pub extra_human: Vec<String>,
    /// Text after the header lines of `info` (qcow2's snapshot list).
    pub human_after_header: String,
    /// Metadata qemu would refuse (it would not open the image): `info` lists them.
    pub problems: Vec<String>,
}

/// One opened file of a chain, in its own format: what the rest of vdiskview may ask.
pub trait FormatLayer: Send + Sync + Any {
    fn format(&self) -> Format;
    fn virtual_size(&self) -> u64;
    /// What this layer alone holds at `virt`, for a run of at most `max` bytes (> 0).
    fn status(&self, virt: u64, max: u64) -> Result<LayerExtent>;
    /// The host files of this layer.
    fn host(&self, id: HostFileId) -> Option<&HostFile>;
    /// Every host file this layer writes to (the image, a qcow2 external data file).
    fn host_files(&self) -> Vec<&HostFile> {
        self.host(HostFileId::Image).into_iter().chain(self.host(HostFileId::DataFile)).collect()
    }
    /// The allocation unit (qcow2 cluster, dynamic VHD block) where the format has one.
    fn cluster_size(&self) -> Option<u64> {
        None
    }
    /// What the grid calls a unit ("block", "cluster"); "MiB" where there is no unit.
    fn unit_name(&self) -> &'static str {
        "MiB"
    }
    /// What the grid's table is called ("BAT", "L2").
    fn table_name(&self) -> &'static str {
        "Map"
    }
    /// Whether `where` reports the unit as a `block` (VHD) or a `cluster` (qcow2).
    fn unit_is_block(&self) -> bool {
        false
    }
    fn backing(&self) -> Option<BackingRef> {
        None
    }
    /// The structures of this layer's image file, in file order.
    fn regions(&self) -> Vec<Region>;
    /// The data region holding host offset `off`, for formats whose data is not among the
    /// regions (qcow2 data clusters are found on demand).
    fn data_region_at(&self, _off: u64) -> Result<Option<Region>> {
        Ok(None)
    }
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Guest data that cannot be read without a key.
    fn encrypted(&self) -> bool {
        false
    }
    /// Decompress the cluster at `host` (`csize` bytes) holding guest `cluster_virt` and copy
    /// from `delta` into `buf`.
    fn read_compressed(&self, _host: u64, _csize: u64, _cluster_virt: u64, _delta: u64, _buf: &mut [u8]) -> Result<()> {
        Err(Error::damaged("data", None, "compressed data in a format without compression"))
    }
    /// Top-layer data at `virt` shared with a snapshot (a write copies it first).
    fn shared_with_snapshot(&self, _virt: u64) -> Result<bool> {
        Ok(false)
    }
    /// Whether a missing unit is reported `zero` by qemu although nothing is allocated (a
    /// dynamic VHD's unused BAT entry): the grid shows it unallocated.
    fn zero_means_unallocated(&self) -> bool {
        false
    }
    /// A warning when `parent` does not look like this layer's parent (ids, time stamps).
    fn check_parent(&self, _parent: &dyn FormatLayer) -> Option<String> {
        None
    }
    /// Read the layer as it was in an internal snapshot (read-only views).
    fn select_snapshot(&mut self, _name: &str) -> Result<()> {
        Err(Error::unsupported(format!("{} images have no internal snapshots", self.format().qemu_name())))
    }
    /// `qemu-img info`'s keys for this layer. `name`: the layer's file name as printed.
    fn info(&self, name: &str) -> LayerInfoKeys;
    /// `vdiskview tables`: the on-disk structures as text.
    fn tables(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// Check the layer's metadata (qemu-img check's walk for this format).
    fn check(&self, name: &str) -> Result<CheckReport> {
        Err(Error::unsupported(format!("{}: a {} image has no metadata to check", name, self.format().qemu_name())))
    }
    /// `check --repair`: the repairs `qemu-img check -r` makes, on a layer opened for writing.
    fn repair(&mut self, name: &str, _mode: super::check::RepairMode) -> Result<super::check::RepairReport> {
        Err(Error::unsupported(format!("{}: vdiskview does not repair {} images", name, self.format().qemu_name())))
    }
    /// [`FormatLayer::check`] reporting progress, cancelled when `progress` answers false.
    /// Formats whose check is quick need not override it.
    fn check_with(&self, name: &str, _progress: Progress) -> Result<CheckReport> {
        self.check(name)
    }
    /// Write guest bytes into this layer; `below` reads what the layers below hold (zero
    /// past their end), for copy-on-write.
    fn write(&mut self, virt: u64, data: &[u8], below: &dyn Fn(u64, &mut [u8]) -> Result<()>) -> Result<()>;
    /// Make every write so far durable: what a lazy layer holds in memory written in its
    /// order, then flushed (NBD FLUSH, FUA, close).
    fn flush(&mut self) -> Result<()> {
        for f in self.host_files() {
            f.sync()?;
        }
        Ok(())
    }
    fn as_any(&self) -> &dyn Any;
}

impl dyn FormatLayer {
    /// The concrete layer, for views that belong to one format only.
    pub fn downcast_ref<T: FormatLayer>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }

    pub fn file(&self) -> &HostFile {
        self.host(HostFileId::Image).expect("every layer has its image file")
    }
}

/// Progress of a long walk (done, total); answering false cancels it
/// ([`super::Error::Cancelled`]).
pub type Progress<'a> = &'a dyn Fn(u64, u64) -> bool;

/// A registered format.
#[derive(Clone, Copy)]
pub struct Format(&'static dyn FormatDriver);

#[allow(non_upper_case_globals)]
impl Format {
    /// The built-in formats by name, for code and tests that pick one.
    pub const Raw: Format = Format(&raw::DRIVER);
    pub const Vhd: Format = Format(&vhd::DRIVER);
    pub const Qcow2: Format = Format(&qcow2::DRIVER);
    pub const Vmdk: Format = Format(&vmdk::DRIVER);
    pub const Vdi: Format = Format(&vdi::DRIVER);

    pub fn driver(self) -> &'static dyn FormatDriver {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The name qemu gives the format (`qemu-img info`'s `format`).
    pub fn qemu_name(self) -> &'static str {
        self.0.qemu_name()
    }

    /// A format by vdiskview's name, qemu's name or an alias (any case).
    pub fn parse(s: &str) -> Option<Format> {
        let s = s.to_ascii_lowercase();
        DRIVERS
            .iter()
            .find(|d| d.name() == s || d.qemu_name() == s || d.aliases().contains(&s.as_str()))
            .map(|d| Format(*d))
    }

    /// Every registered format, in probing order.
    pub fn all() -> impl Iterator<Item = Format> {
        DRIVERS.iter().map(|d| Format(*d))
    }
}

impl PartialEq for Format {
    fn eq(&self, other: &Format) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Format {}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Probe a file's format from its bytes, asking every registered driver in order.
pub fn probe(file: &HostFile) -> Result<Format> {
    for d in DRIVERS {
        if d.probe(file)? {
            return Ok(Format(*d));
        }
    }
    Ok(Format::Raw)
}

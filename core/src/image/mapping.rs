//! What a guest range is. One vocabulary for map, read, write, the NBD plugin and the grid.
//!
//! A format layer answers for itself alone with a [`LayerExtent`]; the chain
//! ([`super::Image::resolve`]) turns those into [`Extent`]s that say which layer holds the
//! bytes. Nothing outside the image model computes host offsets.

/// Which host file of a layer holds bytes: the image file itself, a qcow2 external data file,
/// or one of the extent files a VMDK descriptor names (numbered in descriptor order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostFileId {
    Image,
    DataFile,
    Extent(u32),
}

/// What one layer says of a guest range, ignoring the layers below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Guest bytes stored at `host` in `file`. `passthrough` marks a raw mapping (raw image,
    /// fixed VHD) whose status qemu takes from the host file's own holes.
    Data { file: HostFileId, host: u64, passthrough: bool },
    /// Data-flagged bytes stored at `host` that read as zero because the host file has a hole
    /// there (a fixed VHD's sparse file; qemu reports these `data` and `zero` at once).
    ZeroData { file: HostFileId, host: u64 },
    /// Data that cannot be located by offset: encrypted clusters (qemu reports no offset).
    Opaque,
    /// Reads as zero in this layer; `host` when space is allocated for it.
    Zero { host: Option<(HostFileId, u64)> },
    /// Not in this layer: the layer below answers (zero at the bottom). `host` when space is
    /// allocated for it (a qcow2 subcluster of an allocated cluster).
    Unallocated { host: Option<(HostFileId, u64)> },
    /// A compressed cluster: `host` and `csize` bytes hold the whole compressed cluster that
    /// starts at guest offset `cluster_virt`.
    Compressed { host: u64, csize: u64, cluster_virt: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerExtent {
    pub len: u64,
    pub kind: LayerKind,
}

/// The chain's answer for a guest range starting at `virt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub virt: u64,
    pub len: u64,
    /// Index of the layer that answered (0 = top). For ranges no layer holds, the bottom
    /// layer's index, or the layer whose backing file ends before this range, as qemu counts.
    pub depth: usize,
    /// `kind` as the answering layer said it; `Unallocated` means no layer has it (reads zero).
    pub kind: LayerKind,
}

impl Extent {
    /// The host byte holding guest byte `virt + delta`, where there is one.
    pub fn host_at(&self, delta: u64) -> Option<(HostFileId, u64)> {
        match self.kind {
            LayerKind::Data { file, host, .. } | LayerKind::ZeroData { file, host } => Some((file, host + delta)),
            LayerKind::Zero { host: Some((f, h)) } | LayerKind::Unallocated { host: Some((f, h)) } => {
                Some((f, h + delta))
            }
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            LayerKind::Data { .. } | LayerKind::ZeroData { .. } | LayerKind::Opaque => "data",
            LayerKind::Zero { .. } => "zero",
            LayerKind::Unallocated { .. } => "unallocated",
            LayerKind::Compressed { .. } => "compressed",
        }
    }
}

/// What an extent is, as every consumer asks it: qemu's block-status flags, decided once
/// here from the kind (map prints them, the NBD plugin turns them into extent types, the grid
/// and `n`/`N` use them). `present` is qemu's "allocated in some layer" (BDRV_BLOCK_ALLOCATED
/// over the chain), `data` its BDRV_BLOCK_DATA, `zero` BDRV_BLOCK_ZERO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub present: bool,
    pub data: bool,
    pub zero: bool,
    pub compressed: bool,
    /// Host space is allocated for the range (data, allocated zeros, a qcow2 subcluster).
    pub host_allocated: bool,
}

impl LayerKind {
    pub fn status(&self) -> Status {
        let (present, data, zero, compressed) = match self {
            LayerKind::Data { .. } | LayerKind::Opaque => (true, true, false, false),
            LayerKind::ZeroData { .. } => (true, true, true, false),
            LayerKind::Zero { .. } => (true, false, true, false),
            LayerKind::Unallocated { .. } => (false, false, true, false),
            LayerKind::Compressed { .. } => (true, true, false, true),
        };
        let host_allocated = match self {
            LayerKind::Data { .. } | LayerKind::ZeroData { .. } | LayerKind::Opaque | LayerKind::Compressed { .. } => true,
            LayerKind::Zero { host } | LayerKind::Unallocated { host } => host.is_some(),
        };
        Status { present, data, zero, compressed, host_allocated }
    }

    /// Guest bytes stored in this layer (what the grid shows as allocated, partial, shared or
    /// compressed; what `n`/`N` step between).
    pub fn holds_data(&self) -> bool {
        self.status().data
    }

    /// Reads as zero without reading the host file.
    pub fn reads_zero(&self) -> bool {
        self.status().zero
    }
}

/// Advance a layer extent by `delta` bytes (host offsets move with it).
pub fn skip(ext: LayerExtent, delta: u64) -> LayerExtent {
    let kind = match ext.kind {
        LayerKind::Data { file, host, passthrough } => LayerKind::Data { file, host: host + delta, passthrough },
        LayerKind::ZeroData { file, host } => LayerKind::ZeroData { file, host: host + delta },
        LayerKind::Zero { host } => LayerKind::Zero { host: host.map(|(f, h)| (f, h + delta)) },
        LayerKind::Unallocated { host } => LayerKind::Unallocated { host: host.map(|(f, h)| (f, h + delta)) },
        k => k,
    };
    LayerExtent { len: ext.len - delta, kind }
}

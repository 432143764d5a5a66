//! Guest cluster → L2 entry → what the cluster (or subcluster) is, as qemu's
//! qcow2_get_subcluster_type classifies it.

pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// Data at this host cluster offset.
    Normal(u64),
    ZeroPlain,
    ZeroAlloc(u64),
    UnallocPlain,
    UnallocAlloc(u64),
    Compressed { host: u64, csize: u64 },
    Invalid,
}

/// One L2 entry with its subcluster bitmap (0 without extended L2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Entry {
    pub entry: u64,
    pub bitmap: u64,
}

pub struct Geometry {
    pub cluster_bits: u32,
    pub extended: bool,
    pub has_data_file: bool,
}

impl Geometry {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn subcluster_size(&self) -> u64 {
        if self.extended {
            self.cluster_size() / 32
        } else {
            self.cluster_size()
        }
    }

    /// Entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended { 16 } else { 8 }
    }

    /// Host offset and size of a compressed cluster's data.
    pub fn compressed(&self, entry: u64) -> (u64, u64) {
        let shift = 62 - (self.cluster_bits - 8);
        let mask = (1u64 << (self.cluster_bits - 8)) - 1;
        let off = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & mask) + 1;
        (off, sectors * 512 - (off & 511))
    }

    /// What subcluster `sc` of the cluster described by `e` is.
    pub fn classify(&self, e: L2Entry, sc: u32) -> Sub {
        let entry = e.entry;
        if entry & OFLAG_COMPRESSED != 0 {
            let (host, csize) = self.compressed(entry);
            return Sub::Compressed { host, csize };
        }
        let off = entry & L2E_OFFSET_MASK;
        if !self.extended {
            if entry & OFLAG_ZERO != 0 {
                return if off != 0 { Sub::ZeroAlloc(off) } else { Sub::ZeroPlain };
            }
            return if off != 0 || (self.has_data_file && entry & OFLAG_COPIED != 0) {
                Sub::Normal(off)
            } else {
                Sub::UnallocPlain
            };
        }
        let alloc = e.bitmap & 0xffff_ffff;
        let zero = e.bitmap >> 32;
        let allocated = off != 0 || (self.has_data_file && entry & OFLAG_COPIED != 0);
        if allocated {
            if alloc & zero != 0 {
                Sub::Invalid
            } else if zero & (1 << sc) != 0 {
                Sub::ZeroAlloc(off)
            } else if alloc & (1 << sc) != 0 {
                Sub::Normal(off)
            } else {
                Sub::UnallocAlloc(off)
            }
        } else if alloc != 0 {
            Sub::Invalid
        } else if zero & (1 << sc) != 0 {
            Sub::ZeroPlain
        } else {
            Sub::UnallocPlain
        }
    }
}

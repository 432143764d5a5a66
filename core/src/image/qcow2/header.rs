//! The qcow2 header (v2 and v3) and its extensions.

use crate::image::io::HostFile;
use crate::image::region::{ascii, hex_bytes, Field, FieldReader, Region};
use crate::image::{Error, Result};

pub const MAGIC: &[u8; 4] = b"QFI\xfb";
pub const V2_HEADER_LEN: u32 = 72;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
pub const INCOMPAT_KNOWN: u64 = 0x1f;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

#[derive(Clone, Debug)]
pub struct Extension {
    pub offset: u64,
    pub kind: u32,
    pub data: Vec<u8>,
}

impl Extension {
    pub fn name(&self) -> &'static str {
        match self.kind {
            EXT_BACKING_FORMAT => "backing file format",
            EXT_FEATURE_TABLE => "feature name table",
            EXT_BITMAPS => "bitmaps",
            EXT_CRYPTO => "full disk encryption header pointer",
            EXT_DATA_FILE => "external data file name",
            _ => "unknown",
        }
    }

    fn string(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Clone, Debug)]
pub struct Header {
    pub bytes: Vec<u8>,
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    pub extensions: Vec<Extension>,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// (type, bit, name) from the feature name table.
    pub feature_names: Vec<(u8, u8, String)>,
}

impl Header {
    pub fn read(file: &HostFile) -> Result<Header> {
        let name = &file.name;
        if file.len() < V2_HEADER_LEN as u64 {
            return Err(Error::corrupt(format!(
                "{}: qcow2 header truncated: the file has {} bytes, the header needs {}",
                name,
                file.len(),
                V2_HEADER_LEN
            )));
        }
        let mut fixed = vec![0u8; V2_HEADER_LEN as usize];
        file.read_exact_at(0, &mut fixed, "qcow2 header")?;
        let r = FieldReader::new(0, &fixed);
        // a format forced with --format qcow2 must still be qcow2 (qemu: "Image is not in
        // qcow2 format")
        if &fixed[..4] != MAGIC {
            return Err(Error::corrupt(format!("{}: image is not in qcow2 format (no QFI\\xfb magic)", name)));
        }
        let version = r.u32(4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!("{}: qcow2 version {} is not supported", name, version)));
        }
        let cluster_bits = r.u32(20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(Error::corrupt(format!(
                "{}: cluster size 2^{} is out of the range 512 B to 2 MiB",
                name, cluster_bits
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let (mut incompatible, mut compatible, mut autoclear, mut refcount_order, mut header_length, mut ct) =
            (0, 0, 0, 4, V2_HEADER_LEN, 0u8);
        let mut bytes = fixed.clone();
        if version == 3 {
            let mut v3 = [0u8; 32];
            file.read_exact_at(72, &mut v3, "qcow2 v3 header")?;
            bytes.extend_from_slice(&v3);
            let r3 = FieldReader::new(72, &v3);
            incompatible = r3.u64(0);
            compatible = r3.u64(8);
            autoclear = r3.u64(16);
            refcount_order = r3.u32(24);
            header_length = r3.u32(28);
            if header_length < 104 || header_length as u64 > cluster_size {
                return Err(Error::corrupt(format!("{}: invalid header_length {}", name, header_length)));
            }
            if header_length > 104 {
                let extra = (header_length - 104) as usize;
                let mut more = vec![0u8; extra];
                file.read_exact_at(104, &mut more, "qcow2 header")?;
                ct = more[0];
                bytes.extend_from_slice(&more);
            }
        }
        if refcount_order > 6 {
            return Err(Error::corrupt(format!("{}: refcount_order {} is larger than 6", name, refcount_order)));
        }
        let mut h = Header {
            bytes,
            version,
            backing_file_offset: r.u64(8),
            backing_file_size: r.u32(16),
            cluster_bits,
            size: r.u64(24),
            crypt_method: r.u32(32),
            l1_size: r.u32(36),
            l1_table_offset: r.u64(40),
            refcount_table_offset: r.u64(48),
            refcount_table_clusters: r.u32(56),
            nb_snapshots: r.u32(60),
            snapshots_offset: r.u64(64),
            incompatible,
            compatible,
            autoclear,
            refcount_order,
            header_length,
            compression_type: ct,
            extensions: Vec::new(),
            backing_file: None,
            backing_format: None,
            data_file: None,
            feature_names: Vec::new(),
        };
        h.read_extensions(file)?;
        if h.backing_file_offset != 0 {
            if h.backing_file_size > 1023 {
                return Err(Error::corrupt(format!(
                    "{}: backing file name is {} bytes long; at most 1023 are allowed",
                    name, h.backing_file_size
                )));
            }
            let mut b = vec![0u8; h.backing_file_size as usize];
            file.read_exact_at(h.backing_file_offset, &mut b, "backing file name")?;
            h.backing_file = Some(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(h)
    }

    fn read_extensions(&mut self, file: &HostFile) -> Result<()> {
        let cluster_size = self.cluster_size();
        let end = cluster_size.min(file.len());
        let mut off = (self.header_length as u64).next_multiple_of(8);
        while off + 8 <= end {
            let mut hdr = [0u8; 8];
            file.read_exact_at(off, &mut hdr, "header extension")?;
            let kind = u32::from_be_bytes(hdr[0..4].try_into().unwrap());
            let len = u32::from_be_bytes(hdr[4..8].try_into().unwrap()) as u64;
            if kind == EXT_END {
                break;
            }
            if off + 8 + len > end {
                return Err(Error::corrupt(format!(
                    "{}: header extension 0x{:08x} at 0x{:x}: its length {} runs past the first cluster (header extension too large)",
                    file.name, kind, off, len
                )));
            }
            let mut data = vec![0u8; len as usize];
            file.read_exact_at(off + 8, &mut data, "header extension")?;
            let ext = Extension { offset: off, kind, data };
            match kind {
                EXT_BACKING_FORMAT => self.backing_format = Some(ext.string()),
                EXT_DATA_FILE => self.data_file = Some(ext.string()),
                EXT_FEATURE_TABLE => {
                    for e in ext.data.chunks_exact(48) {
                        let name = &e[2..];
                        let n = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                        self.feature_names.push((e[0], e[1], String::from_utf8_lossy(&name[..n]).into_owned()));
                    }
                }
                _ => {}
            }
            self.extensions.push(ext);
            off += 8 + len.next_multiple_of(8);
        }
        Ok(())
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    pub fn compression_name(&self) -> &'static str {
        match self.compression_type {
            0 => "zlib",
            1 => "zstd",
            _ => "unknown",
        }
    }

    pub fn feature_name(&self, kind: u8, bit: u8) -> String {
        self.feature_names
            .iter()
            .find(|(k, b, _)| *k == kind && *b == bit)
            .map(|(_, _, n)| n.clone())
            .unwrap_or_else(|| format!("bit {}", bit))
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut r = FieldReader::new(0, &self.bytes);
        r.push(0, 4, "magic", ascii(&self.bytes[..4]));
        r.push(4, 4, "version", self.version.to_string());
        r.push(8, 8, "backing_file_offset", format!("0x{:x}", self.backing_file_offset));
        r.push(16, 4, "backing_file_size", self.backing_file_size.to_string());
        r.push(20, 4, "cluster_bits", format!("{} ({} bytes)", self.cluster_bits, self.cluster_size()));
        r.push(24, 8, "size", self.size.to_string());
        let crypt = match self.crypt_method {
            0 => "none",
            1 => "AES",
            2 => "LUKS",
            _ => "unknown",
        };
        r.push(32, 4, "crypt_method", format!("{} ({})", self.crypt_method, crypt));
        r.push(36, 4, "l1_size", self.l1_size.to_string());
        r.push(40, 8, "l1_table_offset", format!("0x{:x}", self.l1_table_offset));
        r.push(48, 8, "refcount_table_offset", format!("0x{:x}", self.refcount_table_offset));
        r.push(56, 4, "refcount_table_clusters", self.refcount_table_clusters.to_string());
        r.push(60, 4, "nb_snapshots", self.nb_snapshots.to_string());
        r.push(64, 8, "snapshots_offset", format!("0x{:x}", self.snapshots_offset));
        if self.version >= 3 {
            r.push(72, 8, "incompatible_features", self.feature_list(0, self.incompatible));
            r.push(80, 8, "compatible_features", self.feature_list(1, self.compatible));
            r.push(88, 8, "autoclear_features", self.feature_list(2, self.autoclear));
            r.push(96, 4, "refcount_order", format!("{} ({} bits)", self.refcount_order, self.refcount_bits()));
            r.push(100, 4, "header_length", self.header_length.to_string());
            if self.header_length > 104 {
                r.push(104, 1, "compression_type", format!("{} ({})", self.compression_type, self.compression_name()));
                let pad = self.header_length as usize - 105;
                if pad > 0 {
                    r.push(105, pad, "padding", String::new());
                }
            }
        }
        r.fields
    }

    fn feature_list(&self, kind: u8, bits: u64) -> String {
        let names: Vec<String> = (0..64).filter(|b| bits & (1 << b) != 0).map(|b| self.feature_name(kind, b)).collect();
        if names.is_empty() {
            "0x0".into()
        } else {
            format!("0x{:x} ({})", bits, names.join(", "))
        }
    }

    /// Regions of the first cluster: header, extensions, backing file name.
    pub fn regions(&self) -> Vec<Region> {
        let mut out = Vec::new();
        let mut h = Region::new(0, self.header_length as u64, "header", "qcow2 header");
        h.fields = self.fields();
        out.push(h);
        for e in &self.extensions {
            let mut r = Region::new(
                e.offset,
                8 + (e.data.len() as u64).next_multiple_of(8),
                "header-extension",
                format!("header extension 0x{:08x} ({})", e.kind, e.name()),
            );
            let value = match e.kind {
                EXT_BACKING_FORMAT | EXT_DATA_FILE => e.string(),
                _ => hex_bytes(&e.data[..e.data.len().min(32)]),
            };
            r.fields.push(Field { off: e.offset, len: 4, name: "type".into(), value: format!("0x{:08x}", e.kind) });
            r.fields.push(Field { off: e.offset + 4, len: 4, name: "length".into(), value: e.data.len().to_string() });
            r.fields.push(Field { off: e.offset + 8, len: e.data.len() as u64, name: "data".into(), value });
            out.push(r);
        }
        if let Some(b) = &self.backing_file {
            let mut r = Region::new(self.backing_file_offset, self.backing_file_size as u64, "header", "backing file name");
            r.fields.push(Field {
                off: self.backing_file_offset,
                len: self.backing_file_size as u64,
                name: "backing file name".into(),
                value: b.clone(),
            });
            out.push(r);
        }
        out
    }
}

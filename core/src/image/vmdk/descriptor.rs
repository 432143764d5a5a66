//! The VMDK descriptor: the text (a file of its own, or embedded in a sparse extent) that
//! names the disk's extents, its content ids and its parent.
//!
//! ```text
//! version=1
//! CID=fffffffe
//! parentCID=ffffffff
//! createType="twoGbMaxExtentSparse"
//! RW 4192256 SPARSE "disk-s001.vmdk"
//! RW 2048 FLAT "disk-flat.vmdk" 0
//! ddb.geometry.cylinders = "16383"
//! ```

use crate::image::{Error, Result};

/// The most descriptor text read (qemu reads at most 1 MiB too).
pub const MAX_DESCRIPTOR: u64 = (1 << 20) - 1;
/// The most extent lines accepted (each opens a file).
pub const MAX_EXTENTS: usize = 4096;
/// CID value meaning "no parent".
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS`, `VMFSSPARSE`, `SESPARSE`, …
    pub kind: String,
    /// The extent file, relative to the descriptor's folder (none for ZERO).
    pub file: Option<String>,
    /// Where the extent starts in its file, in sectors (FLAT).
    pub offset: u64,
}

/// A parsed descriptor: the fields every tool reads, and every other `key = value` in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub version: Option<u32>,
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// The disk database (`ddb.*`), values unquoted.
    pub ddb: Vec<(String, String)>,
    /// Other header keys (`encoding`, `isNativeSnapshot`, …).
    pub other: Vec<(String, String)>,
}

const ACCESS: [&str; 3] = ["RW", "RDONLY", "NOACCESS"];

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v)
}

fn parse_hex32(v: &str) -> Option<u32> {
    u32::from_str_radix(unquote(v).trim_start_matches("0x"), 16).ok()
}

/// Split the text of an extent line into its fields, honouring the quoted file name.
fn parse_extent(line: &str) -> Result<ExtentLine> {
    let bad = || Error::corrupt(format!("invalid VMDK extent line: {}", line.chars().take(200).collect::<String>()));
    let mut rest = line.trim();
    let mut word = || {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let (w, tail) = r.split_at(end);
        rest = tail;
        w
    };
    let access = word().to_string();
    let sectors: u64 = word().parse().map_err(|_| bad())?;
    let kind = word().to_string();
    if kind.is_empty() {
        return Err(bad());
    }
    let r = rest.trim_start();
    let (file, tail) = if let Some(q) = r.strip_prefix('"') {
        let end = q.find('"').ok_or_else(bad)?;
        (Some(q[..end].to_string()), &q[end + 1..])
    } else if r.is_empty() {
        (None, "")
    } else {
        return Err(bad());
    };
    let tail = tail.trim();
    let offset = if tail.is_empty() {
        0
    } else {
        tail.split_whitespace().next().unwrap_or("0").parse().map_err(|_| bad())?
    };
    if file.is_none() && kind != "ZERO" {
        return Err(bad());
    }
    Ok(ExtentLine { access, sectors, kind, file, offset })
}

impl Descriptor {
    /// Parse descriptor text (it ends at the first NUL: an embedded descriptor is padded).
    pub fn parse(text: &str) -> Result<Descriptor> {
        let text = text.split('\0').next().unwrap_or("");
        let mut d = Descriptor::default();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if ACCESS.contains(&first) {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::corrupt(format!("VMDK descriptor names more than {} extents", MAX_EXTENTS)));
                }
                d.extents.push(parse_extent(line)?);
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "version" => d.version = unquote(v).parse().ok(),
                "CID" => d.cid = parse_hex32(v),
                "parentCID" => d.parent_cid = parse_hex32(v),
                "createType" => d.create_type = Some(unquote(v).to_string()),
                "parentFileNameHint" => d.parent_hint = Some(unquote(v).to_string()),
                _ if k.starts_with("ddb.") => d.ddb.push((k.to_string(), unquote(v).to_string())),
                _ => d.other.push((k.to_string(), unquote(v).to_string())),
            }
        }
        Ok(d)
    }

    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The disk's size as the extent lines add it up, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.extents.iter().fold(0u64, |a, e| a.saturating_add(e.sectors.saturating_mul(512)))
    }
}

/// qemu's probe for descriptor text: blank and comment lines, then `version=1|2|3`.
pub fn looks_like_descriptor(buf: &[u8]) -> bool {
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'#' => {
                while p < buf.len() && buf[p] != b'\n' {
                    p += 1;
                }
                p += 1;
            }
            b' ' | b'\r' | b'\n' | b'\t' => {
                while p < buf.len() && matches!(buf[p], b' ' | b'\t') {
                    p += 1;
                }
                if p < buf.len() && buf[p] == b'\r' {
                    p += 1;
                }
                if p >= buf.len() || buf[p] != b'\n' {
                    return false;
                }
                p += 1;
            }
            _ => {
                let r = &buf[p..];
                return [b"version=1", b"version=2", b"version=3"].iter().any(|v| {
                    r.starts_with(*v) && (r[v.len()..].starts_with(b"\n") || r[v.len()..].starts_with(b"\r\n"))
                });
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_GB: &str = "# Disk DescriptorFile\nversion=1\nCID=9fde3df2\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\nRW 4192256 SPARSE \"disk-s001.vmdk\"\n\
RW 2048 FLAT \"my disk-f002.vmdk\" 128\nRDONLY 100 ZERO\n\n# The Disk Data Base\n#DDB\n\n\
ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"130\"\nddb.adapterType = \"ide\"\n\0\0\0garbage";

    #[test]
    fn parses_header_extents_and_ddb() {
        let d = Descriptor::parse(TWO_GB).unwrap();
        assert_eq!(d.version, Some(1));
        assert_eq!(d.cid, Some(0x9fde3df2));
        assert_eq!(d.parent_cid, Some(NO_PARENT_CID));
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0], ExtentLine { access: "RW".into(), sectors: 4192256, kind: "SPARSE".into(), file: Some("disk-s001.vmdk".into()), offset: 0 });
        assert_eq!(d.extents[1].file.as_deref(), Some("my disk-f002.vmdk"));
        assert_eq!(d.extents[1].offset, 128);
        assert_eq!(d.extents[2].kind, "ZERO");
        assert_eq!(d.extents[2].file, None);
        assert_eq!(d.ddb("ddb.adapterType"), Some("ide"));
        assert_eq!(d.ddb.len(), 3);
        assert_eq!(d.total_bytes(), (4192256 + 2048 + 100) * 512);
    }

    #[test]
    fn parent_hint_and_crlf() {
        let d = Descriptor::parse("version=1\r\nCID=1\r\nparentCID=2a\r\nparentFileNameHint=\"base.vmdk\"\r\n").unwrap();
        assert_eq!((d.cid, d.parent_cid), (Some(1), Some(0x2a)));
        assert_eq!(d.parent_hint.as_deref(), Some("base.vmdk"));
    }

    #[test]
    fn bad_extent_lines_are_errors_not_panics() {
        for bad in ["RW x SPARSE \"a\"", "RW 10 SPARSE \"unterminated", "RW 10 FLAT \"a\" zz", "RW 10 SPARSE", "RW", "RW 99999999999999999999999 FLAT \"a\" 0"] {
            assert!(Descriptor::parse(bad).is_err(), "{bad}");
        }
        // random bytes never panic
        let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let _ = Descriptor::parse(&String::from_utf8_lossy(&junk));
    }

    #[test]
    fn probe_like_qemu() {
        assert!(looks_like_descriptor(b"# Disk DescriptorFile\nversion=1\nCID=1\n"));
        assert!(looks_like_descriptor(b"\n  \nversion=3\r\n"));
        assert!(!looks_like_descriptor(b"version=4\n"));
        assert!(!looks_like_descriptor(b"hello"));
        assert!(!looks_like_descriptor(b"   x\nversion=1\n"));
    }
}

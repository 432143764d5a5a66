//! Formats vdiskview recognises but does not read: each is a driver whose probe knows its
//! magic (as qemu-img probes it) and whose open fails with one line naming the format, so no
//! such file is ever shown as a raw disk. `--format raw` still forces a raw view.

use super::driver::{FormatDriver, FormatLayer, DRIVERS};
use super::io::HostFile;
use super::{Error, Result};

/// Bytes read from each end of the file for probing.
const PROBE: u64 = 512;

pub struct Foreign {
    name: &'static str,
    qemu_name: &'static str,
    /// How the error message calls the format.
    title: &'static str,
    /// Whether `head` (the file's first bytes) and `tail` (its last bytes) are this format's.
    probe: fn(head: &[u8], tail: &[u8]) -> bool,
}

fn qed(h: &[u8], _: &[u8]) -> bool {
    h.starts_with(b"QED\0")
}

/// Parallels: either magic, and header version 2.
fn parallels(h: &[u8], _: &[u8]) -> bool {
    h.len() >= 20
        && (h.starts_with(b"WithoutFreeSpace") || h.starts_with(b"WithouFreSpacExt"))
        && u32::from_le_bytes([h[16], h[17], h[18], h[19]]) == 2
}

/// Apple disk image: the `koly` trailer in the last 512 bytes.
fn dmg(_: &[u8], t: &[u8]) -> bool {
    t.len() == PROBE as usize && t.starts_with(b"koly")
}

/// bochs: the magic string and the redolog type.
fn bochs(h: &[u8], _: &[u8]) -> bool {
    h.starts_with(b"Bochs Virtual HD Image\0") && h.len() >= 48 && h[32..].starts_with(b"Redolog\0")
}

/// cloop: the V2.0 shell-script preamble.
fn cloop(h: &[u8], _: &[u8]) -> bool {
    h.starts_with(b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
}

/// LUKS: the magic and version 1 or 2.
fn luks(h: &[u8], _: &[u8]) -> bool {
    h.len() >= 8 && h.starts_with(b"LUKS\xba\xbe") && matches!(u16::from_be_bytes([h[6], h[7]]), 1 | 2)
}

pub static QED: Foreign = Foreign { name: "qed", qemu_name: "qed", title: "QED", probe: qed };
pub static PARALLELS: Foreign = Foreign { name: "parallels", qemu_name: "parallels", title: "Parallels", probe: parallels };
pub static DMG: Foreign = Foreign { name: "dmg", qemu_name: "dmg", title: "DMG (Apple disk image)", probe: dmg };
pub static BOCHS: Foreign = Foreign { name: "bochs", qemu_name: "bochs", title: "bochs", probe: bochs };
pub static CLOOP: Foreign = Foreign { name: "cloop", qemu_name: "cloop", title: "cloop", probe: cloop };
pub static LUKS: Foreign = Foreign { name: "luks", qemu_name: "luks", title: "LUKS", probe: luks };

/// The recognisers, for the registry.
pub static ALL: [&Foreign; 6] = [&QED, &PARALLELS, &DMG, &BOCHS, &CLOOP, &LUKS];

fn is_foreign(name: &str) -> bool {
    ALL.iter().any(|f| f.name == name)
}

/// "VHD, QCOW2, VMDK, VDI and raw": the formats vdiskview reads, from the registry.
pub fn readable_formats() -> String {
    let mut names: Vec<String> = DRIVERS
        .iter()
        .filter(|d| !is_foreign(d.name()))
        .map(|d| if d.name() == "raw" { "raw".to_string() } else { d.name().to_ascii_uppercase() })
        .collect();
    // raw last, as the sentence reads
    if let Some(i) = names.iter().position(|n| n == "raw") {
        let raw = names.remove(i);
        names.push(raw);
    }
    match names.len() {
        0 => String::new(),
        1 => names.remove(0),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

impl FormatDriver for Foreign {
    fn name(&self) -> &'static str {
        self.name
    }
    fn qemu_name(&self) -> &'static str {
        self.qemu_name
    }
    fn probe(&self, file: &HostFile) -> Result<bool> {
        let len = file.len();
        let mut head = vec![0u8; len.min(PROBE) as usize];
        file.read_exact_at(0, &mut head, "probe")?;
        let mut tail = vec![0u8; len.min(PROBE) as usize];
        file.read_exact_at(len - tail.len() as u64, &mut tail, "probe")?;
        Ok((self.probe)(&head, &tail))
    }
    fn open(&self, file: HostFile) -> Result<Box<dyn FormatLayer>> {
        if !self.probe(&file)? {
            // forced with --format on a file that is not one
            return Err(Error::unsupported(format!(
                "{}: not a {} image, and vdiskview does not read {} images; it reads {} images",
                file.name,
                self.title,
                self.title,
                readable_formats()
            )));
        }
        Err(Error::unsupported(format!(
            "{}: this is a {} image; vdiskview reads {} images",
            file.name,
            self.title,
            readable_formats()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        let mut p = b"WithoutFreeSpace".to_vec();
        p.extend_from_slice(&2u32.to_le_bytes());
        assert!(parallels(&p, b""));
        p[16] = 1;
        assert!(!parallels(&p, b""), "version 1 is not probed by qemu either");
        assert!(qed(b"QED\0rest", b""));
        assert!(luks(b"LUKS\xba\xbe\0\x02", b""));
        assert!(!luks(b"LUKS\xba\xbe\0\x07", b""));
        let mut tail = vec![0u8; 512];
        tail[..4].copy_from_slice(b"koly");
        assert!(dmg(b"", &tail));
        assert!(!dmg(b"", b"koly"), "the trailer is a whole 512-byte block");
        let mut h = vec![0u8; 64];
        h[..23].copy_from_slice(b"Bochs Virtual HD Image\0");
        h[32..40].copy_from_slice(b"Redolog\0");
        assert!(bochs(&h, b""));
        assert!(!bochs(b"Bochs", b""));
        assert!(cloop(b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n...", b""));
    }

    #[test]
    fn the_message_lists_what_is_read() {
        let s = readable_formats();
        assert!(s.contains("VMDK") && s.contains("VDI") && s.ends_with("and raw"), "{s}");
        assert!(!s.contains("PARALLELS") && !s.contains("QED"), "{s}");
    }
}

//! Named host-file structures and their fields: what `tables`, `where --file`, `dump` and the
//! TUI's overlays show. Formats describe themselves here; nobody else parses their bytes.

/// One decoded field of an on-disk structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Absolute offset in the host file.
    pub off: u64,
    pub len: u64,
    pub name: String,
    /// Decoded value as a person reads it.
    pub value: String,
}

/// A structure in a host file: a header, a table, a bitmap, a data block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    /// Kind of structure: `footer`, `dynamic-header`, `bat`, `bitmap`, `data`, `header`, `l1`, …
    pub structure: &'static str,
    /// Human name, e.g. `L2 table #3` or `block 7 data`.
    pub name: String,
    /// Guest offset of the first byte, for data regions.
    pub virt: Option<u64>,
    pub fields: Vec<Field>,
}

impl Region {
    pub fn new(start: u64, len: u64, structure: &'static str, name: impl Into<String>) -> Region {
        Region { start, len, structure, name: name.into(), virt: None, fields: Vec::new() }
    }

    pub fn contains(&self, off: u64) -> bool {
        off >= self.start && off - self.start < self.len
    }

    pub fn field_at(&self, off: u64) -> Option<&Field> {
        self.fields.iter().find(|f| off >= f.off && off - f.off < f.len)
    }
}

/// One field of a fixed-layout structure: where it is and what it is called. A structure's
/// table of these drives its parsing, its field list (Header pane, hex overlays, `tables`)
/// and where `check` places a finding, so an offset is written once.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub off: usize,
    pub len: usize,
    pub name: &'static str,
}

impl FieldDef {
    pub const fn new(off: usize, len: usize, name: &'static str) -> FieldDef {
        FieldDef { off, len, name }
    }

    /// The field's (offset, length) in a file where the structure starts at `base`.
    pub fn at(&self, base: u64) -> (u64, u64) {
        (base + self.off as u64, self.len as u64)
    }
}

/// Builds the fields of a fixed-layout big-endian structure from its bytes.
pub struct FieldReader<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
    pub fields: Vec<Field>,
}

impl<'a> FieldReader<'a> {
    pub fn new(base: u64, bytes: &'a [u8]) -> Self {
        FieldReader { base, bytes, fields: Vec::new() }
    }

    pub fn raw(&self, off: usize, len: usize) -> &'a [u8] {
        &self.bytes[off..off + len]
    }

    pub fn u8(&self, off: usize) -> u8 {
        self.bytes[off]
    }
    pub fn u16(&self, off: usize) -> u16 {
        super::bytes::be16(self.bytes, off)
    }
    pub fn u32(&self, off: usize) -> u32 {
        super::bytes::be32(self.bytes, off)
    }
    pub fn u64(&self, off: usize) -> u64 {
        super::bytes::be64(self.bytes, off)
    }

    /// The field `d` with its decoded value.
    pub fn field(&mut self, d: FieldDef, value: String) {
        self.push(d.off, d.len, d.name, value);
    }

    pub fn push(&mut self, off: usize, len: usize, name: &str, value: String) {
        self.fields.push(Field { off: self.base + off as u64, len: len as u64, name: name.into(), value });
    }
}

pub fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

/// Printable ASCII of a fixed-width tag, with escapes for the rest.
pub fn ascii(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if (0x20..0x7f).contains(&c) { (c as char).to_string() } else { format!("\\x{:02x}", c) })
        .collect()
}

/// Format a byte count as qemu-img info does ("10 MiB", "1.5 GiB", "512 B").
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{} B", n);
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    // qemu prints three significant digits
    let s = if v >= 100.0 {
        format!("{:.0}", v)
    } else if v >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{} {}", s, UNITS[i])
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time (Howard Hinnant's days-to-civil algorithm).
pub fn utc(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// Fields as `name : value` lines (`tables`), skipping those without a value.
pub fn write_fields(out: &mut dyn std::io::Write, fs: &[Field]) -> std::io::Result<()> {
    for f in fs.iter().filter(|f| !f.value.is_empty()) {
        writeln!(out, "{} : {}", f.name, f.value)?;
    }
    Ok(())
}


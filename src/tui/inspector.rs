//! The data inspector: the bytes at the cursor read as every type people look for in disk
//! metadata — integers of each width in both byte orders, floats, GUIDs in both layouts
//! (VHD, VHDX and GPT store the first three fields little-endian), and the time stamps of
//! the formats vdiskview reads. Pure: bytes in, rows out; the pane draws the rows.

use crate::image::region::utc;

/// One inspector row: what the bytes are read as, and the value (empty when there are not
/// enough bytes before the end of the disk or file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub label: &'static str,
    pub value: String,
}

fn take<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N).map(|s| s.try_into().expect("length checked"))
}

/// Seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01.
const FILETIME_UNIX_DIFF: i64 = 11_644_473_600;
/// VHD time stamps count seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: i64 = 946_684_800;

/// A GUID from 16 bytes; `mixed`: the first three fields little-endian (Microsoft's layout).
pub fn guid(b: &[u8; 16], mixed: bool) -> String {
    let (d1, d2, d3) = if mixed {
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u16::from_le_bytes([b[4], b[5]]), u16::from_le_bytes([b[6], b[7]]))
    } else {
        (u32::from_be_bytes([b[0], b[1], b[2], b[3]]), u16::from_be_bytes([b[4], b[5]]), u16::from_be_bytes([b[6], b[7]]))
    };
    let tail: String = b[10..].iter().map(|x| format!("{:02x}", x)).collect();
    format!("{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}", d1, d2, d3, b[8], b[9], tail)
}

/// FILETIME: 100-nanosecond ticks since 1601-01-01 UTC.
pub fn filetime(t: u64) -> String {
    let secs = (t / 10_000_000) as i64 - FILETIME_UNIX_DIFF;
    format!("{}.{:07} UTC", utc(secs), t % 10_000_000)
}

/// A DOS date-time as FAT stores it: time in the low 16 bits, date in the high 16 bits
/// (little-endian each); seconds in 2 s steps, years from 1980.
pub fn dos_datetime(v: u32) -> String {
    let (time, date) = (v & 0xffff, v >> 16);
    let (h, m, s) = (time >> 11, (time >> 5) & 63, (time & 31) * 2);
    let (y, mo, d) = (1980 + (date >> 9), (date >> 5) & 15, date & 31);
    let valid = h < 24 && m < 60 && s < 60 && (1..=12).contains(&mo) && (1..=31).contains(&d);
    let text = format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", y, mo, d, h, m, s);
    if valid {
        text
    } else {
        format!("{} (invalid)", text)
    }
}

/// Every reading of `b` (the bytes from the cursor on, at most 16 needed).
pub fn rows(b: &[u8]) -> Vec<Row> {
    let mut out = Vec::new();
    let mut row = |label: &'static str, value: Option<String>| out.push(Row { label, value: value.unwrap_or_default() });
    row("u8", take::<1>(b).map(|x| x[0].to_string()));
    row("i8", take::<1>(b).map(|x| (x[0] as i8).to_string()));
    row("u16 LE", take(b).map(|x| u16::from_le_bytes(x).to_string()));
    row("u16 BE", take(b).map(|x| u16::from_be_bytes(x).to_string()));
    row("i16 LE", take(b).map(|x| i16::from_le_bytes(x).to_string()));
    row("i16 BE", take(b).map(|x| i16::from_be_bytes(x).to_string()));
    row("u32 LE", take(b).map(|x| u32::from_le_bytes(x).to_string()));
    row("u32 BE", take(b).map(|x| u32::from_be_bytes(x).to_string()));
    row("i32 LE", take(b).map(|x| i32::from_le_bytes(x).to_string()));
    row("i32 BE", take(b).map(|x| i32::from_be_bytes(x).to_string()));
    row("u64 LE", take(b).map(|x| u64::from_le_bytes(x).to_string()));
    row("u64 BE", take(b).map(|x| u64::from_be_bytes(x).to_string()));
    row("i64 LE", take(b).map(|x| i64::from_le_bytes(x).to_string()));
    row("i64 BE", take(b).map(|x| i64::from_be_bytes(x).to_string()));
    row("f32 LE", take(b).map(|x| format!("{:e}", f32::from_le_bytes(x))));
    row("f32 BE", take(b).map(|x| format!("{:e}", f32::from_be_bytes(x))));
    row("f64 LE", take(b).map(|x| format!("{:e}", f64::from_le_bytes(x))));
    row("f64 BE", take(b).map(|x| format!("{:e}", f64::from_be_bytes(x))));
    row("GUID (mixed)", take(b).map(|x| guid(&x, true)));
    row("GUID (big)", take(b).map(|x| guid(&x, false)));
    row("Unix time u32 LE", take(b).map(|x| format!("{} UTC", utc(u32::from_le_bytes(x) as i64))));
    row("Unix time i64 LE", take(b).map(|x| i64::from_le_bytes(x)).filter(|t| t.unsigned_abs() < 1 << 40).map(|t| format!("{} UTC", utc(t))));
    row("FILETIME", take(b).map(|x| filetime(u64::from_le_bytes(x))));
    row("DOS date-time", take(b).map(|x| dos_datetime(u32::from_le_bytes(x))));
    row("VHD time stamp", take(b).map(|x| format!("{} UTC", utc(VHD_EPOCH + u32::from_be_bytes(x) as i64))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(rows: &[Row], label: &str) -> String {
        rows.iter().find(|r| r.label == label).map(|r| r.value.clone()).unwrap_or_else(|| panic!("no row {label}"))
    }

    /// Random bytes against Python's `struct` (the oracle the issue names), when python3 is
    /// there; the fixed cases below do not need it.
    #[test]
    fn integers_and_floats_equal_python_struct() {
        let Ok(out) = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import struct,random\n\
                 random.seed(12)\n\
                 for _ in range(200):\n\
                 \x20   b=bytes(random.randrange(256) for _ in range(16))\n\
                 \x20   v=[struct.unpack(f,b[:struct.calcsize(f)])[0] for f in ['<H','>H','<h','>h','<I','>I','<i','>i','<Q','>Q','<q','>q']]\n\
                 \x20   print(b.hex(),' '.join(map(str,v)))",
            )
            .output()
        else {
            return;
        };
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().count() == 200, "python3 ran: {}", String::from_utf8_lossy(&out.stderr));
        let labels =
            ["u16 LE", "u16 BE", "i16 LE", "i16 BE", "u32 LE", "u32 BE", "i32 LE", "i32 BE", "u64 LE", "u64 BE", "i64 LE", "i64 BE"];
        for line in text.lines() {
            let mut it = line.split(' ');
            let hex = it.next().unwrap();
            let bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
            let r = rows(&bytes);
            for (label, want) in labels.iter().zip(it) {
                assert_eq!(value(&r, label), want, "{label} of {hex}");
            }
        }
    }

    #[test]
    fn guids_and_time_stamps() {
        // the VHDX BAT region GUID as stored on disk (mixed-endian)
        let b: [u8; 16] = [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08];
        let r = rows(&b);
        assert_eq!(value(&r, "GUID (mixed)"), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(value(&r, "GUID (big)"), "6677c22d-23f6-0042-9d64-115e9bfd4a08");
        // 2024-01-01 00:00:00 UTC as FILETIME: (1704067200 + 11644473600) * 10^7
        let ft = ((1_704_067_200u64 + 11_644_473_600) * 10_000_000).to_le_bytes();
        assert_eq!(value(&rows(&ft), "FILETIME"), "2024-01-01 00:00:00.0000000 UTC");
        // VHD: seconds since 2000-01-01, big-endian
        assert_eq!(value(&rows(&757_382_400u32.to_be_bytes()), "VHD time stamp"), "2024-01-01 00:00:00 UTC");
        // DOS: 2023-06-15 13:45:30 -> date (43<<9)|(6<<5)|15, time (13<<11)|(45<<5)|15
        let dos = ((((43u32 << 9) | (6 << 5) | 15) << 16) | ((13 << 11) | (45 << 5) | 15)).to_le_bytes();
        assert_eq!(value(&rows(&dos), "DOS date-time"), "2023-06-15 13:45:30");
        // too few bytes before the end: the wide readings are empty, never a panic
        let r = rows(&[1, 2]);
        assert_eq!((value(&r, "u16 LE").as_str(), value(&r, "u32 LE").as_str()), ("513", ""));
    }
}

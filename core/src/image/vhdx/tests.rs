//! Pure unit tests: checksums, GUIDs, BAT index math, log replay overlay.

use super::bat::{BatEntry, Geometry};
use super::log::Overlay;
use super::region::{BAT_GUID, METADATA_GUID};
use super::*;

#[test]
fn crc32c_known_values() {
    // RFC 3720 B.4 test vectors
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    let mut b = b"head\x01\x02\x03\x04rest".to_vec();
    let want = crc32c_without(&b, 4);
    b[4..8].fill(0);
    assert_eq!(crc32c(&b), want);
}

#[test]
fn guid_parse_and_print_round_trip() {
    assert_eq!(BAT_GUID[..4], [0x66, 0x77, 0xC2, 0x2D]);
    assert_eq!(BAT_GUID[4..8], [0x23, 0xF6, 0x00, 0x42]);
    assert_eq!(BAT_GUID[8..], [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
    assert_eq!(guid_str(&BAT_GUID), "2DC27766-F623-4200-9D64-115E9BFD4A08");
    assert_eq!(guid_str(&METADATA_GUID), "8B7CA206-4790-4B9A-B8FE-575F050F886E");
    assert_eq!(guid_str(&[0; 16]), "00000000-0000-0000-0000-000000000000");
}

#[test]
fn chunk_ratio_follows_the_spec() {
    let g = |bs: u64, lss: u64| Geometry::from_parts(64 * MIB, bs, lss, false).unwrap().chunk_ratio;
    assert_eq!(g(MIB, 512), 4096);
    assert_eq!(g(32 * MIB, 512), 128);
    assert_eq!(g(256 * MIB, 512), 16);
    assert_eq!(g(32 * MIB, 4096), 1024);
    assert!(Geometry::from_parts(64 * MIB, 3 * MIB, 512, false).is_err());
    assert!(Geometry::from_parts(64 * MIB, MIB, 1024, false).is_err());
    assert!(Geometry::from_parts(0, MIB, 512, false).is_err());
    assert!(Geometry::from_parts(1000, MIB, 512, false).is_err());
}

#[test]
fn bat_index_math() {
    // 256 MiB block, 512-byte sectors: chunk ratio 16
    let g = Geometry::from_parts(40 * 256 * MIB, 256 * MIB, 512, false).unwrap();
    assert_eq!(g.chunk_ratio, 16);
    assert_eq!(g.data_blocks, 40);
    assert_eq!(g.payload_index(0), 0);
    assert_eq!(g.payload_index(15), 15);
    assert_eq!(g.payload_index(16), 17);
    assert_eq!(g.payload_index(39), 41);
    assert_eq!(g.bitmap_index(0), 16);
    assert_eq!(g.bitmap_index(1), 33);
    assert_eq!(g.total_entries(), 42);
    for b in 0..40 {
        assert_eq!(g.classify(g.payload_index(b)), Ok(b));
    }
    assert_eq!(g.classify(16), Err(0));
    assert_eq!(g.classify(33), Err(1));
    let d = Geometry::from_parts(40 * 256 * MIB, 256 * MIB, 512, true).unwrap();
    assert_eq!(d.total_entries(), 3 * 17);
    // a 64 MiB disk of 1 MiB blocks: 64 entries, no bitmap slot inside
    let small = Geometry::from_parts(64 * MIB, MIB, 512, false).unwrap();
    assert_eq!(small.total_entries(), 64);
}

#[test]
fn bat_entry_fields() {
    let e = BatEntry((5 << 20) | 6);
    assert_eq!((e.state(), e.offset(), e.reserved()), (6, 5 * MIB, 0));
    assert_eq!(BatEntry(0x8).reserved(), 1);
}

#[test]
fn bitmap_bits_are_lsb_first() {
    let bm = [0b0000_0101u8, 0x80];
    assert!(lsb_bit(&bm, 0) && !lsb_bit(&bm, 1) && lsb_bit(&bm, 2) && lsb_bit(&bm, 15) && !lsb_bit(&bm, 16));
}

#[test]
fn utf16_stops_at_nul() {
    let b: Vec<u8> = "qemu\0xx".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    assert_eq!(utf16(&b), "qemu");
}

#[test]
fn overlay_applies_the_newest_write() {
    let mut o = Overlay::default();
    o.sectors.insert(4096, vec![7u8; 4096].into_boxed_slice());
    o.zero(0, 8192); // newer: zeroes the sector above
    o.sectors.insert(8192, vec![9u8; 4096].into_boxed_slice());
    let mut buf = vec![1u8; 3 * 4096];
    o.patch(2048, &mut buf);
    assert!(buf[..6144].iter().all(|&b| b == 0));
    assert!(buf[6144..6144 + 4096].iter().all(|&b| b == 9));
    assert!(buf[6144 + 4096..].iter().all(|&b| b == 1));
}

fn entry(offset: u64, sequence: u64, tail: u64) -> log::LogEntry {
    log::LogEntry {
        offset,
        sequence,
        length: 4096,
        tail,
        log_guid: [1; 16],
        flushed_file_offset: 0,
        last_file_offset: 0,
        descriptors: Vec::new(),
    }
}

#[test]
fn active_sequence_is_the_newest_run_from_its_tail() {
    let seqs = |v: Option<Vec<&log::LogEntry>>| v.map(|v| v.iter().map(|e| e.sequence).collect::<Vec<_>>());
    // a stale entry (2) and a run 5, 6, 7 whose head names 6 as its tail
    let es = vec![entry(0, 5, 0), entry(4096, 6, 0), entry(8192, 7, 4096), entry(12288, 2, 12288)];
    assert_eq!(seqs(log::active_sequence(&es, 16384)), Some(vec![6, 7]));
    // a run that wraps around the end of the circular log
    let es = vec![entry(0, 11, 12288), entry(12288, 10, 12288), entry(4096, 3, 4096)];
    assert_eq!(seqs(log::active_sequence(&es, 16384)), Some(vec![10, 11]));
    // a head whose tail is not in its run: nothing to replay
    let es = vec![entry(0, 5, 8192), entry(4096, 6, 8192)];
    assert_eq!(seqs(log::active_sequence(&es, 16384)), None);
    assert_eq!(seqs(log::active_sequence(&[], 16384)), None);
}

#[test]
fn new_guids_are_random_version_4() {
    let a = super::write::new_guid().unwrap();
    let b = super::write::new_guid().unwrap();
    assert_ne!(a, b);
    assert_eq!(a[7] >> 4, 4, "{}", guid_str(&a));
    assert_eq!(a[8] >> 6, 2, "{}", guid_str(&a));
    assert_eq!(&guid_str(&a)[14..15], "4");
}

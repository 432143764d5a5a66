//! Integers at byte offsets of an on-disk structure, the one set of byte-order helpers every
//! parser uses (big-endian: VHD, QCOW2; little-endian: VHDX, MBR/GPT, ext, NTFS, FAT).
//! Callers slice-check first: a structure is read whole before its fields are taken.

use byteorder::{BigEndian, ByteOrder, LittleEndian};

pub fn be16(b: &[u8], o: usize) -> u16 {
    BigEndian::read_u16(&b[o..])
}
pub fn be32(b: &[u8], o: usize) -> u32 {
    BigEndian::read_u32(&b[o..])
}
pub fn be64(b: &[u8], o: usize) -> u64 {
    BigEndian::read_u64(&b[o..])
}
pub fn le16(b: &[u8], o: usize) -> u16 {
    LittleEndian::read_u16(&b[o..])
}
pub fn le32(b: &[u8], o: usize) -> u32 {
    LittleEndian::read_u32(&b[o..])
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    LittleEndian::read_u64(&b[o..])
}

//! NTFS directories: the `$I30` index, its root in $INDEX_ROOT and its blocks (INDX records
//! with fixups) in $INDEX_ALLOCATION, walked from the root through every entry's sub-node so
//! only live blocks are read (a block no longer in the tree may hold deleted names).

use std::collections::HashSet;

use super::mft::{apply_fixups, damaged, map_range, utf16, Attribute, Mft, AT_INDEX_ALLOCATION, AT_INDEX_ROOT, REF_MASK};
use crate::guest::Result;
use crate::image::bytes::{le16, le32, le64};

/// Most entries one directory may list (a damaged index could be made to repeat).
pub const MAX_ENTRIES: usize = 1_000_000;

/// One name in a directory: the $FILE_NAME key of an index entry.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub record: u64,
    pub name: String,
    /// 0 POSIX, 1 Win32, 2 DOS (8.3), 3 Win32 and DOS.
    pub namespace: u8,
}

/// The entries of one index node (`b` from the index header on): its names and sub-nodes.
fn node_entries(b: &[u8], what: &str, out: &mut Vec<DirEntry>, subnodes: &mut Vec<u64>) -> Result<()> {
    if b.len() < 16 {
        return Err(damaged(format!("{}: an index header past its block", what)));
    }
    let first = le32(b, 0) as usize;
    let end = (le32(b, 4) as usize).min(b.len());
    let mut off = first;
    while off + 16 <= end {
        let len = le16(b, off + 8) as usize;
        let key_len = le16(b, off + 10) as usize;
        let flags = le16(b, off + 12);
        if len < 16 || off + len > end {
            return Err(damaged(format!("{}: an index entry of {} bytes at 0x{:x}", what, len, off)));
        }
        if flags & 1 != 0 {
            if len < 24 {
                return Err(damaged(format!("{}: an index entry too short for its sub-node", what)));
            }
            subnodes.push(le64(b, off + len - 8));
        }
        if flags & 2 != 0 {
            break;
        }
        if key_len < 66 || 16 + key_len > len {
            return Err(damaged(format!("{}: an index key of {} bytes", what, key_len)));
        }
        let k = &b[off + 16..off + 16 + key_len];
        let name_len = k[64] as usize;
        if 66 + 2 * name_len > key_len {
            return Err(damaged(format!("{}: a file name past its key", what)));
        }
        out.push(DirEntry { record: le64(b, off) & REF_MASK, name: utf16(&k[66..66 + 2 * name_len]), namespace: k[65] });
        if out.len() > MAX_ENTRIES {
            return Err(damaged(format!("{}: more than {} directory entries", what, MAX_ENTRIES)));
        }
        off += len;
    }
    Ok(())
}

/// Every name in the directory whose attributes are `attrs` (record `rec`), in index order.
pub fn entries(mft: &Mft, rec: u64, attrs: &[Attribute]) -> Result<Vec<DirEntry>> {
    let what = format!("the index of directory record {}", rec);
    let root = attrs
        .iter()
        .find(|a| a.ty == AT_INDEX_ROOT && a.name == "$I30")
        .and_then(|a| a.resident.as_ref())
        .ok_or_else(|| damaged(format!("directory record {} has no $INDEX_ROOT", rec)))?;
    let v = &root.0;
    if v.len() < 32 {
        return Err(damaged(format!("{}: an $INDEX_ROOT of {} bytes", what, v.len())));
    }
    let block = le32(v, 8) as u64;
    let mut out = Vec::new();
    let mut pending = Vec::new();
    node_entries(&v[16..], &what, &mut out, &mut pending)?;
    if pending.is_empty() {
        return Ok(out);
    }
    let alloc = attrs
        .iter()
        .find(|a| a.ty == AT_INDEX_ALLOCATION && a.name == "$I30")
        .and_then(|a| a.non_resident.as_ref())
        .ok_or_else(|| damaged(format!("{}: sub-nodes without an $INDEX_ALLOCATION", what)))?;
    if !block.is_power_of_two() || !(512..=65536).contains(&block) {
        return Err(damaged(format!("{}: index blocks of {} bytes", what, block)));
    }
    let cs = mft.geo.cluster_size;
    // a VCN counts clusters, or 512-byte units when a block is smaller than a cluster
    let unit = if block >= cs { cs } else { 512 };
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; block as usize];
    while let Some(vcn) = pending.pop() {
        if !seen.insert(vcn) {
            return Err(damaged(format!("{}: index block at VCN {} is reached twice", what, vcn)));
        }
        let off = vcn.checked_mul(unit).filter(|o| o.checked_add(block).is_some_and(|e| e <= alloc.allocated_size.max(alloc.data_size)));
        let Some(off) = off else {
            return Err(damaged(format!("{}: index block VCN {} past the index", what, vcn)));
        };
        let mut at = 0usize;
        for (vo, n) in map_range(&alloc.runs, cs, off, block)? {
            let vo = vo.ok_or_else(|| damaged(format!("{}: index block VCN {} in a hole", what, vcn)))?;
            mft.meta.read(vo, &mut buf[at..at + n as usize])?;
            at += n as usize;
        }
        let bwhat = format!("{} block VCN {}", what, vcn);
        apply_fixups(&mut buf, b"INDX", &bwhat)?;
        node_entries(&buf[0x18..], &bwhat, &mut out, &mut pending)?;
    }
    Ok(out)
}

//! VDI built by hand (VirtualBox's layout): header, block map with allocated, unallocated
//! (0xffffffff) and discarded (0xfffffffe) entries, blocks stored out of order.

use super::build::write_file;
use super::{assert_bytes, map, open, open_err, read_all};
use crate::image::check::check_image;
use crate::image::{Error, HostFileId, LayerKind, OpenOptions};

const BS: u64 = 1 << 20;

fn vdi(kind: u32, bmap: &[u32], blocks: &[(u32, u8)]) -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
    b[64..68].copy_from_slice(&0xbeda107fu32.to_le_bytes());
    b[68..72].copy_from_slice(&0x00010001u32.to_le_bytes());
    b[72..76].copy_from_slice(&400u32.to_le_bytes());
    b[76..80].copy_from_slice(&kind.to_le_bytes());
    b[340..344].copy_from_slice(&0x200u32.to_le_bytes());
    b[344..348].copy_from_slice(&0x1000u32.to_le_bytes());
    b[360..364].copy_from_slice(&512u32.to_le_bytes());
    b[368..376].copy_from_slice(&(bmap.len() as u64 * BS).to_le_bytes());
    b[376..380].copy_from_slice(&(BS as u32).to_le_bytes());
    b[384..388].copy_from_slice(&(bmap.len() as u32).to_le_bytes());
    b[388..392].copy_from_slice(&(blocks.len() as u32).to_le_bytes());
    b[392..396].copy_from_slice(b"uuid");
    b.resize(0x1000, 0);
    for (i, e) in bmap.iter().enumerate() {
        b[0x200 + i * 4..0x204 + i * 4].copy_from_slice(&e.to_le_bytes());
    }
    for &(n, fill) in blocks {
        let at = 0x1000 + n as usize * BS as usize;
        b.resize(b.len().max(at + BS as usize), 0);
        b[at..at + BS as usize].fill(fill);
    }
    b
}

#[test]
fn dynamic_block_map() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = vdi(1, &[1, 0xffff_ffff, 0, 0xffff_fffe], &[(0, 0xaa), (1, 0xbb)]);
    let p = write_file(dir.path(), "d.vdi", &bytes);
    let img = open(&p);
    assert_eq!(img.format().name(), "vdi");
    let data = |host| LayerKind::Data { file: HostFileId::Image, host, passthrough: false };
    assert_eq!(
        map(&img),
        vec![
            (0, BS, 0, data(0x1000 + BS)),
            (BS, BS, 0, LayerKind::Zero { host: None }),
            (2 * BS, BS, 0, data(0x1000)),
            (3 * BS, BS, 0, LayerKind::Zero { host: None }),
        ]
    );
    let mut want = vec![0xbbu8; BS as usize];
    want.extend(vec![0u8; BS as usize]);
    want.extend(vec![0xaau8; BS as usize]);
    want.extend(vec![0u8; BS as usize]);
    assert_bytes(&read_all(&img), &want, "read");
    assert!(check_image(&img).unwrap().is_clean());
}

#[test]
fn check_counts_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    // block 0 used twice, an index too large, and the header's count off
    let bytes = vdi(1, &[0, 0, 9, 0xffff_ffff], &[(0, 1)]);
    let p = write_file(dir.path(), "c.vdi", &bytes);
    let r = check_image(&open(&p)).unwrap();
    let msgs: Vec<&str> = r.findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(r.corruptions, 3, "{msgs:?}");
    assert!(msgs.contains(&"block index 0 also used by 0"), "{msgs:?}");
    assert!(msgs.contains(&"block index 2 too large, is 9"), "{msgs:?}");
    assert!(msgs.contains(&"allocated blocks mismatch, is 2, should be 1"), "{msgs:?}");
}

#[test]
fn what_qemu_refuses_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vdi(1, &[0xffff_ffff], &[]);
    bytes[424] = 1; // link UUID
    let p = write_file(dir.path(), "l.vdi", &bytes);
    assert!(matches!(open_err(&p, &OpenOptions::default()), Error::Unsupported(_)));
    let mut bytes = vdi(1, &[0xffff_ffff], &[]);
    bytes[384..388].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let p = write_file(dir.path(), "b.vdi", &bytes);
    let e = open_err(&p, &OpenOptions::default());
    assert!(!e.to_string().is_empty());
}

/// Random byte changes in the header and block map: answers or errors, never a panic.
#[test]
fn mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = vdi(1, &[1, 0xffff_ffff, 0, 0xffff_fffe], &[(0, 0xaa), (1, 0xbb)]);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut b = base.clone();
        for _ in 0..1 + rnd() % 4 {
            let i = (rnd() % 0x220) as usize;
            b[i] = if rnd() % 2 == 0 { rnd() as u8 } else { 0xff };
        }
        if rnd() % 8 == 0 {
            let n = (rnd() % b.len() as u64) as usize;
            b.truncate(n);
        }
        let p = write_file(dir.path(), "m.vdi", &b);
        let Ok(img) = crate::image::open(&p, &Default::default()) else { continue };
        let size = img.virtual_size().min(64 << 20);
        if let Ok(ext) = img.extents(0, size) {
            for e in ext.iter().take(64) {
                let mut buf = vec![0u8; e.len.min(1 << 12) as usize];
                let _ = img.read_extent(e, &mut buf);
            }
        }
        let _ = img.top().regions();
        let _ = img.top().tables(&mut std::io::sink());
        let _ = check_image(&img);
    }
}

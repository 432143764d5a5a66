//! The dynamic disk header, its BAT and its parent locators, behind a valid footer: the input
//! is [disk type selector][current size, 8 bytes][header, 1024 bytes][the rest of the file],
//! laid out as footer copy | header | rest | footer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdiskview_core::image::vhd::footer::checksum;
use vdiskview_core::image::Format;

fn footer(disk_type: u32, size: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&512u64.to_be_bytes());
    f[28..32].copy_from_slice(b"qem2");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[56..60].copy_from_slice(&[0xff, 0xff, 0x10, 0xff]);
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    let c = checksum(&f, 64);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let disk_type = if data[0] & 1 == 0 { 3 } else { 4 };
    let size = u64::from_be_bytes(data[1..9].try_into().unwrap());
    let rest = &data[9..];
    let mut hdr = [0u8; 1024];
    let n = rest.len().min(1024);
    hdr[..n].copy_from_slice(&rest[..n]);
    hdr[..8].copy_from_slice(b"cxsparse");
    let f = footer(disk_type, size);
    let mut file = Vec::with_capacity(rest.len() + 2048);
    file.extend_from_slice(&f);
    file.extend_from_slice(&hdr);
    file.extend_from_slice(&rest[n..]);
    file.extend_from_slice(&f);
    let path = vdiskview_fuzz::image_file(&file);
    if let Ok(img) = vdiskview_fuzz::open(&path, Format::Vhd) {
        vdiskview_fuzz::exercise(&img);
    }
    let _ = vdiskview_core::image::check::check_path(&path, Some(Format::Vhd));
});

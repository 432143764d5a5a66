//! `read` into a regular file leaves holes where the guest reads zero, and the bytes are
//! still exactly qemu-img convert's.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use support::{qemu_convert_raw, qemu_img, qemu_io, s, vdiskview_bin, workspace};

#[test]
fn read_to_a_file_is_exact_and_sparse() {
    let dir = workspace();
    let img = dir.path().join("sparse.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "256M"]);
    qemu_io("qcow2", &img, &["write -P 3 5M 1M", "write -P 4 100M 64k", "write -z 101M 64k", "write -P 5 255M 1M"]);
    for (name, args) in [("whole", vec![]), ("window", vec!["--offset", "4M+512*3", "--length", "98M"])] {
        let out = dir.path().join(format!("{}.raw", name));
        let f = std::fs::File::create(&out).unwrap();
        let mut cmd = Command::new(vdiskview_bin());
        cmd.arg("read").arg(&img).args(&args).stdout(Stdio::from(f));
        assert!(cmd.status().unwrap().success());
        let got = std::fs::read(&out).unwrap();
        let full = qemu_convert_raw(&img, "qcow2");
        let want = if args.is_empty() { full } else { full[(4 << 20) + 1536..(4 << 20) + 1536 + (98 << 20)].to_vec() };
        assert!(got == want, "{}: bytes differ from qemu-img convert", name);
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(allocated < 8 << 20, "{}: {} bytes allocated: the zero ranges were written", name, allocated);
    }
    // into a pipe the zeros are written out
    let out = Command::new(vdiskview_bin()).arg("read").arg(&img).output().unwrap();
    assert_eq!(out.stdout.len(), 256 << 20);
}

/// A VDI whose blocks qemu filled with zeros around small writes (and a VMDK grain likewise):
/// `read` into a file leaves the stored zeros as holes down to 4 KiB pages, as qemu-img
/// convert does, in a disk long enough to be copied by two threads; the bytes equal qemu's.
#[test]
fn stored_zeros_become_holes_like_qemu() {
    let dir = workspace();
    for (fmt, name) in [("vdi", "z.vdi"), ("vmdk", "z.vmdk")] {
        let img = dir.path().join(name);
        qemu_img(&["create", "-q", "-f", fmt, s(&img), "160M"]);
        // block starts, a block's middle, an unaligned run over a block boundary, the last block
        let writes = ["write -P 1 0 4k", "write -P 2 3M 512", "write -P 3 70M 4k", "write -P 4 94679040 8k", "write -P 5 104854600 6000", "write -P 6 159M 4k"];
        qemu_io(fmt, &img, &writes);
        let out = dir.path().join(format!("{fmt}.raw"));
        let f = std::fs::File::create(&out).unwrap();
        assert!(Command::new(vdiskview_bin()).arg("read").arg(&img).stdout(Stdio::from(f)).status().unwrap().success());
        let qout = dir.path().join(format!("{fmt}.q.raw"));
        qemu_img(&["convert", "-f", fmt, "-O", "raw", s(&img), s(&qout)]);
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&qout).unwrap(), "{fmt}: bytes differ from qemu-img convert");
        let ours = std::fs::metadata(&out).unwrap().blocks() * 512;
        let theirs = std::fs::metadata(&qout).unwrap().blocks() * 512;
        assert!(ours <= theirs + (32 << 10), "{fmt}: {ours} bytes allocated, qemu-img convert {theirs}");
    }
}

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

//! The plugin under a real nbdkit, read by nbdcopy/nbdinfo/qemu-io, compared with qemu-img.

mod common;

use std::path::Path;

use common::{io, qemu_convert_raw, qemu_io_over_nbd, run, vhd::DiffVhd, with_nbdkit};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("vdvw-nbd-").tempdir().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// nbdcopy of the export to a file.
fn nbdcopy(img: &Path, out: &Path) -> Vec<u8> {
    let o = with_nbdkit(img, &["readonly=true"], &format!("nbdcopy \"$uri\" {}", s(out)));
    assert!(o.status.success(), "nbdcopy failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn nbdcopy_equals_qemu_for_vhd_and_qcow2_kinds() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    // dynamic and fixed VHD
    run(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&p("dyn.vhd")), "12M"]);
    io("vpc", &p("dyn.vhd"), &["write -P 0x11 0 100k", "write -P 0x22 5M 3000"]);
    run(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", s(&p("fix.vhd")), "6M"]);
    io("vpc", &p("fix.vhd"), &["write -P 0x33 1M 64k"]);
    // 3-deep qcow2 chain
    run(&["qemu-img", "create", "-q", "-f", "qcow2", s(&p("b.qcow2")), "8M"]);
    io("qcow2", &p("b.qcow2"), &["write -P 1 0 2M"]);
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", s(&p("m.qcow2")), "8M"]);
    io("qcow2", &p("m.qcow2"), &["write -P 2 1M 2M"]);
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-b", "m.qcow2", "-F", "qcow2", s(&p("t.qcow2")), "8M"]);
    io("qcow2", &p("t.qcow2"), &["write -P 3 1536k 100k", "write -z 0 64k"]);
    // zstd compressed, extended L2
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", s(&p("z.qcow2")), "4M"]);
    io("qcow2", &p("z.qcow2"), &["write -c -P 7 0 64k", "write -c -P 8 192k 64k", "write -P 9 1M 10k"]);
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", s(&p("x.qcow2")), "4M"]);
    io("qcow2", &p("x.qcow2"), &["write -P 4 0 2k", "write -P 5 6k 4k", "write -z 64k 4k"]);
    for (name, fmt) in [("dyn.vhd", "vpc"), ("fix.vhd", "vpc"), ("t.qcow2", "qcow2"), ("z.qcow2", "qcow2"), ("x.qcow2", "qcow2")] {
        let got = nbdcopy(&p(name), &p(&format!("{}.out", name)));
        let want = qemu_convert_raw(&p(name), fmt);
        assert!(got == want, "{}: nbdcopy differs from qemu-img convert", name);
    }
}

#[test]
fn differencing_vhd_is_served_exactly() {
    let d = tmp();
    let parent = d.path().join("parent.vhd");
    run(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&parent), "8M"]);
    io("vpc", &parent, &["write -P 0x5a 0 4M"]);
    let mut child = DiffVhd::new(&parent, 2 << 20);
    child.write_sectors(3, &[0xc1; 512 * 5]).write_sectors(4100, &[0xc2; 512 * 3]);
    let cpath = d.path().join("child.vhd");
    child.write(&cpath);
    let got = nbdcopy(&cpath, &d.path().join("child.out"));
    assert!(got == child.expected_bytes(), "differencing VHD served wrongly");
}

#[test]
fn map_shows_holes_and_data_on_a_sparse_vhd() {
    let d = tmp();
    let img = d.path().join("sparse.vhd");
    run(&["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", s(&img), "16M"]);
    io("vpc", &img, &["write -P 1 4M 4k"]);
    let o = with_nbdkit(&img, &["readonly=true"], "nbdinfo --map \"$uri\"");
    let map = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<Vec<&str>> = map.lines().map(|l| l.split_whitespace().collect()).collect();
    // 0-4M hole, 4M-6M data (a whole block), then hole
    assert_eq!(lines[0][..3], ["0", "4194304", "3"], "{}", map);
    assert_eq!(lines[1][..3], ["4194304", "2097152", "0"], "{}", map);
    // the rest, to the CHS-rounded end of the disk
    assert_eq!((lines[2][0], lines[2][2]), ("6291456", "3"), "{}", map);
    assert_eq!(lines.len(), 3, "{}", map);
    assert!(map.contains("hole,zero") && map.contains("data"), "{}", map);
}

#[test]
fn writes_through_the_plugin_equal_direct_qemu_io_writes() {
    let d = tmp();
    let cmds = ["write -P 0x42 1000 70000", "write -P 0x43 6M 3000", "write -z 0 512", "write -P 0x44 8388000 192"];
    for (fmt, opts) in
        [("vpc", "subformat=dynamic"), ("qcow2", "cluster_size=65536"), ("qcow2", "extended_l2=on"), ("vhdx", "block_size=1M"), ("vhdx", "subformat=fixed")]
    {
        let a = d.path().join(format!("a-{}.img", opts.replace('=', "-")));
        let b = d.path().join(format!("b-{}.img", opts.replace('=', "-")));
        run(&["qemu-img", "create", "-q", "-f", fmt, "-o", opts, s(&a), "8M"]);
        io(fmt, &a, &["write -P 1 0 1M", "write -c -P 2 4M 64k"].iter().filter(|c| fmt == "qcow2" || !c.contains("-c")).copied().collect::<Vec<_>>());
        std::fs::copy(&a, &b).unwrap();
        let o = with_nbdkit(&a, &[], &qemu_io_over_nbd("", &cmds));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        io(fmt, &b, &cmds);
        run(&["qemu-img", "compare", "-f", fmt, "-F", fmt, s(&a), s(&b)]);
        if fmt == "qcow2" || fmt == "vhdx" {
            run(&["qemu-img", "check", "-q", "-f", fmt, s(&a)]);
        } else {
            // the footer copies stay equal
            let bytes = std::fs::read(&a).unwrap();
            assert_eq!(bytes[..512], bytes[bytes.len() - 512..]);
        }
    }
}

#[test]
fn readonly_exports_refuse_writes_and_stay_untouched() {
    let d = tmp();
    let img = d.path().join("ro.qcow2");
    run(&["qemu-img", "create", "-q", "-f", "qcow2", s(&img), "4M"]);
    io("qcow2", &img, &["write -P 1 0 64k"]);
    let before = std::fs::read(&img).unwrap();
    for args in [&["readonly=true"][..], &["-r"][..]] {
        // the export says it is read-only, and a writer is refused
        let o = with_nbdkit(&img, args, "nbdinfo --json \"$uri\"; qemu-io -f raw -c 'write -P 9 0 512' \"$uri\" || echo WRITE-REFUSED");
        let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(out.contains("\"is_read_only\": true"), "{:?}: {}", args, out);
        assert!(out.contains("WRITE-REFUSED") && out.contains("Permission denied"), "{:?}: {}", args, out);
    }
    assert!(std::fs::read(&img).unwrap() == before, "a read-only export changed the image");
}

#[test]
fn errors_reach_the_client_without_crashing_the_server() {
    let d = tmp();
    let img = d.path().join("enc.qcow2");
    run(&[
        "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=abc",
        "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", s(&img), "1M",
    ]);
    // a read fails with an error, then the same connection still answers the size
    let o = with_nbdkit(
        &img,
        &["readonly=true"],
        "qemu-io -r -f raw -c 'read 0 512' \"$uri\"; echo SIZE $(nbdinfo --size \"$uri\")",
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("read failed"), "{}", out);
    assert!(out.contains("SIZE 1048576"), "the server died after the error: {}", out);
    assert!(out.contains("encrypted"), "nbdkit's log names the cause: {}", out);
}

/// Lazy qcow2 writes keep their L2/L1 entries and releases in memory until a flush: several
/// writes into the same tables over one connection (a table shared with a snapshot copied
/// once, compressed clusters replaced and released, copy-on-write from a backing file),
/// each read back before any flush, must leave the image qemu-io's writes leave, and
/// `qemu-img check` clean (releases made, nothing leaked) once the connection closes.
#[test]
fn lazy_writes_over_snapshots_compressed_and_backing_equal_qemu_io() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    run(&["qemu-img", "create", "-q", "-f", "qcow2", s(&p("base.qcow2")), "8M"]);
    io("qcow2", &p("base.qcow2"), &["write -P 0x61 0 8M"]);
    // (top image, its backing file if any)
    let mut cases = Vec::new();
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&p("snap.qcow2")), "8M"]);
    io("qcow2", &p("snap.qcow2"), &["write -P 0x11 0 3M", "write -c -P 0x12 5M 64k"]);
    run(&["qemu-img", "snapshot", "-c", "s1", s(&p("snap.qcow2"))]);
    cases.push("snap.qcow2");
    run(&["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&p("top.qcow2")), "8M"]);
    io("qcow2", &p("top.qcow2"), &["write -P 0x21 1M 100k"]);
    cases.push("top.qcow2");
    let cmds = [
        "write -P 0x41 1000 5000",
        "read -P 0x41 1000 5000",
        "write -P 0x42 2000 70000",
        "read -P 0x42 2000 70000",
        "write -P 0x43 5M 3000",
        "read -P 0x43 5M 3000",
        "write -P 0x44 1048000 200000",
        "write -P 0x45 7M 1M",
        "read -P 0x44 1048000 200000",
        "write -P 0x46 4000 1000",
        "read -P 0x42 5000 67000",
    ];
    for name in cases {
        let a = p(name);
        let b = p(&format!("qemu-{}", name));
        std::fs::copy(&a, &b).unwrap();
        let o = with_nbdkit(&a, &[], &qemu_io_over_nbd("-t writeback", &cmds));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && !out.contains("fail"), "{}: {}{}", name, out, String::from_utf8_lossy(&o.stderr));
        io("qcow2", &b, &cmds);
        run(&["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", s(&a), s(&b)]);
        run(&["qemu-img", "check", "-q", "-f", "qcow2", s(&a)]);
    }
    // the snapshot still reads what it held
    run(&["qemu-img", "snapshot", "-a", "s1", s(&p("snap.qcow2"))]);
    let got = qemu_convert_raw(&p("snap.qcow2"), "qcow2");
    assert!(got[..3 << 20].iter().all(|&x| x == 0x11) && got[5 << 20..(5 << 20) + 65536].iter().all(|&x| x == 0x12), "snapshot s1 changed");
}

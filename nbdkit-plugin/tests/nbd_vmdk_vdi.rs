//! VMDK and VDI through the plugin under a real nbdkit: what nbdcopy reads equals qemu-img
//! convert; writes through the plugin equal qemu-io's.

mod common;

use std::path::Path;

use common::{io, qemu_convert_raw, qemu_io_over_nbd, run, with_nbdkit};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn nbdcopy_equals_qemu_for_vmdk_and_vdi() {
    let d = tempfile::Builder::new().prefix("vdvw-nbd-").tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    run(&["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", s(&p("two.vmdk")), "12M"]);
    io("vmdk", &p("two.vmdk"), &["write -P 0x11 0 100k", "write -P 0x22 5M 3000"]);
    run(&["qemu-img", "create", "-q", "-f", "vmdk", "-b", "two.vmdk", "-F", "vmdk", s(&p("delta.vmdk"))]);
    io("vmdk", &p("delta.vmdk"), &["write -P 0x33 64k 64k"]);
    run(&["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", s(&p("two.vmdk")), s(&p("so.vmdk"))]);
    run(&["qemu-img", "create", "-q", "-f", "vdi", s(&p("d.vdi")), "6M"]);
    io("vdi", &p("d.vdi"), &["write -P 0x44 1M 5000"]);
    for (name, fmt) in [("two.vmdk", "vmdk"), ("delta.vmdk", "vmdk"), ("so.vmdk", "vmdk"), ("d.vdi", "vdi")] {
        let out = p(&format!("{}.out", name));
        let o = with_nbdkit(&p(name), &["readonly=true"], &format!("nbdcopy \"$uri\" {}", s(&out)));
        assert!(o.status.success(), "{}: nbdcopy failed: {}", name, String::from_utf8_lossy(&o.stderr));
        let got = std::fs::read(&out).unwrap();
        assert!(got == qemu_convert_raw(&p(name), fmt), "{}: nbdcopy differs from qemu-img convert", name);
    }
}

#[test]
fn writes_through_the_plugin_equal_qemu_io() {
    let d = tempfile::Builder::new().prefix("vdvw-nbd-").tempdir().unwrap();
    let cmds = ["write -P 0x42 1000 70000", "write -P 0x43 6M 3000", "write -P 0x44 8388000 192"];
    for (fmt, opts) in [("vmdk", "subformat=monolithicSparse"), ("vmdk", "subformat=twoGbMaxExtentFlat"), ("vdi", "static=off")] {
        let a = d.path().join(format!("a-{}.{}", opts.replace('=', "-"), fmt));
        let b = d.path().join(format!("b-{}.{}", opts.replace('=', "-"), fmt));
        run(&["qemu-img", "create", "-q", "-f", fmt, "-o", opts, s(&a), "8M"]);
        run(&["qemu-img", "create", "-q", "-f", fmt, "-o", opts, s(&b), "8M"]);
        let o = with_nbdkit(&a, &[], &qemu_io_over_nbd("", &cmds));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        io(fmt, &b, &cmds);
        run(&["qemu-img", "compare", "-f", fmt, "-F", fmt, s(&a), s(&b)]);
        run(&["qemu-img", "check", "-q", "-f", fmt, s(&a)]);
    }
}

/// streamOptimized through the plugin: whole-grain writes land compressed as qemu-io's do
/// (`qemu-img compare` equal, `qemu-img check` clean); a partial grain and a grain written
/// before fail as an NBD error (qemu-io on the raw export reports "write failed"), as qemu
/// refuses them too.
#[test]
fn stream_optimized_writes_through_the_plugin() {
    let d = tempfile::Builder::new().prefix("vdvw-nbd-").tempdir().unwrap();
    let (a, b) = (d.path().join("a.vmdk"), d.path().join("b.vmdk"));
    for p in [&a, &b] {
        run(&["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", s(p), "8M"]);
    }
    let cmds = ["write -P 0x51 64k 64k", "write -P 0x52 2M 256k", "write -P 0x53 8128k 64k"];
    let o = with_nbdkit(&a, &[], &qemu_io_over_nbd("", &cmds));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("failed"), "{}", String::from_utf8_lossy(&o.stdout));
    io("vmdk", &b, &cmds);
    run(&["qemu-img", "compare", "-f", "vmdk", "-F", "vmdk", s(&a), s(&b)]);
    run(&["qemu-img", "check", "-q", "-f", "vmdk", s(&a)]);
    let before = std::fs::read(&a).unwrap();
    for bad in ["write -P 1 64k 64k", "write -P 1 4M 512"] {
        let o = with_nbdkit(&a, &[], &format!("qemu-io -f raw -c '{}' \"$uri\"", bad));
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(text.contains("failed"), "{bad}: expected a refused write: {text}");
        assert!(std::fs::read(&a).unwrap() == before, "{bad}: the refused write changed the file");
    }
}

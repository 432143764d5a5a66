//! A reader that closes the pipe early (`| head -c 10`) ends a subcommand quietly: exit 0,
//! nothing on stderr — on the demo VHD and on a qcow2 qemu-img makes here.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{qemu_img, qemu_io, s, workspace};

/// Run `vdiskview ARGS`, read `n` bytes of its stdout (0: none), close the pipe, and return the
/// exit status and stderr. With n = 0 the pipe closes while the child is still starting, so
/// even a small output meets a closed pipe; larger outputs (over the 64 KiB a pipe buffers)
/// meet it after the first bytes.
fn head(args: &[&str], n: usize) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vdiskview"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vdiskview");
    let mut first = vec![0u8; n];
    child.stdout.take().unwrap().read_exact(&mut first).expect("the first bytes of the output");
    // stdout is dropped (closed) here, with most of the output still to come
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

/// Through a shell pipeline, as a user types it: the pipeline's status is vdiskview's.
fn sh_head(args: &[&str]) -> (std::process::ExitStatus, String) {
    let cmd = format!(
        "set -o pipefail; '{}' {} | head -c 10 >/dev/null",
        env!("CARGO_BIN_EXE_vdiskview"),
        args.iter().map(|a| format!("'{}'", a)).collect::<Vec<_>>().join(" ")
    );
    let out = Command::new("bash").args(["-c", &cmd]).stdin(Stdio::null()).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn demo() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.vhd").to_str().unwrap().to_string()
}

fn commands(image: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        v(&["render", image, "--format", "svg"]),
        v(&["tables", image]),
        v(&["map", image]),
        // dump's default 512 bytes fit in a pipe buffer: ask for more so the pipe closes first
        v(&["dump", image, "--length", "4M"]),
    ]
}

fn all_quiet(image: &str) {
    for args in commands(image) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for (how, (status, err)) in [("closed at once", head(&args, 0)), ("read 10 bytes", head(&args, 10)), ("| head -c 10", sh_head(&args))] {
            assert!(status.success(), "{:?} ({}): {} stderr: {}", args, how, status, err);
            assert!(err.is_empty(), "{:?} ({}): stderr: {}", args, how, err);
        }
    }
}

#[test]
fn closed_pipe_is_quiet_on_the_demo_vhd() {
    all_quiet(&demo());
}

#[test]
fn closed_pipe_is_quiet_on_a_qcow2() {
    let dir = workspace();
    let img = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", s(&img), "64M"]);
    // scattered clusters: map and tables print more than a pipe buffers
    let cmds: Vec<String> = (0..2000).map(|i| format!("write -P {} {} 4k", i % 250 + 1, i * 32 * 1024)).collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("qcow2", &img, &cmds);
    all_quiet(s(&img));
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = workspace();
    let missing = dir.path().join("missing.vhd");
    let (status, err) = sh_head(&["map", s(&missing)]);
    assert_eq!(status.code(), Some(1), "{}", err);
    assert!(err.starts_with("vdiskview: ") && !err.contains("panicked"), "{}", err);
}

/// The TUI's `:` line runs a subcommand in-process into a buffer: the same bytes as the binary
/// prints, and a usage error comes back as an error instead of exiting the process.
#[test]
fn in_process_subcommands_print_the_same_bytes() {
    let image = demo();
    for args in [vec!["map", &image], vec!["info", &image], vec!["tables", &image], vec!["dump", &image, "--length", "4K"]] {
        let words: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut buf = Vec::new();
        vdiskview::cli::run_words(&words, &mut buf).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vdiskview")).args(&args).output().unwrap();
        assert!(out.status.success());
        assert_eq!(buf, out.stdout, "{:?}", args);
    }
    let bad = vdiskview::cli::run_words(&["dump".into(), image.clone(), "--bogus".into()], &mut Vec::new());
    assert!(bad.is_err_and(|e| e.to_string().contains("--bogus")));
}

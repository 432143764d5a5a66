//! `vdiskview completions SHELL` and `vdiskview man`: scripts the shells accept, a man page
//! that renders and names every subcommand.
mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

#[test]
fn bash_accepts_the_completion_script() {
    let script = vdiskview_text(&["completions", "bash"]);
    assert!(script.contains("vdiskview") && script.contains("diff"), "{}", &script[..200.min(script.len())]);
    let dir = workspace();
    let p = dir.path().join("c.bash");
    std::fs::write(&p, &script).unwrap();
    let out = Command::new("bash").arg("-n").arg(&p).output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(!vdiskview_text(&["completions", shell]).is_empty(), "{shell}");
    }
    assert_eq!(vdiskview(&["completions", "tcsh"]).status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_page_renders_and_names_every_subcommand() {
    let roff = vdiskview_text(&["man"]);
    assert!(roff.contains(".TH vdiskview 1"), "{}", &roff[..200.min(roff.len())]);
    for sub in ["info", "map", "tables", "read", "where", "check", "diff", "bitmaps", "completions"] {
        assert!(roff.contains(sub), "the man page names {sub}");
    }
    // render it where man is installed (man -l - reads roff from stdin)
    if let Ok(mut child) = Command::new("man").args(["-l", "-"]).env("MANPAGER", "cat").env("MANWIDTH", "80")
        .stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
    {
        child.stdin.take().unwrap().write_all(roff.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "man -l -: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("NAME"));
    }
}

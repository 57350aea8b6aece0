//! Running the `lanelog` binary from the CLI tests (`cli_commands`,
//! `cli_verify`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// What one run of the binary printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the binary with `args`.
pub fn lanelog(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_lanelog"))
        .args(args)
        .output()
        .expect("run lanelog");
    Run {
        code: out.status.code().expect("exit status"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// Run a read-only command on a directory this process no longer holds.
/// Another test's child process may still hold a copy of the lock for a
/// moment (a `fork` copies open files until `exec` closes them), so a
/// "locked" answer is asked again.
pub fn unlocked(args: &[&str]) -> Run {
    for _ in 0..50 {
        let r = lanelog(args);
        if !r.stderr.contains("open in another process") {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{args:?}: still locked");
}

/// A path as a command-line argument.
pub fn p(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

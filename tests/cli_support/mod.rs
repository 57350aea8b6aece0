//! Running the `lanelog` binary from the CLI tests (`cli_commands`,
//! `cli_verify`, `cli_infer`, `cli_worker`).
#![allow(dead_code)]

#[cfg(feature = "infer-cli")]
pub mod digits;

use std::collections::BTreeMap;
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

/// Every file of `dir` by name, with its bytes (to show a command changed
/// nothing).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().expect("name");
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

/// A path as a command-line argument.
pub fn p(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

//! `rbee` as a user runs it: the real binary, real files.
#![allow(clippy::unwrap_used)]

mod gguf_inspect;
mod hive;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn rbee(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbee"))
        .args(args)
        .output()
        .expect("run rbee")
}

pub fn gguf_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures")
}

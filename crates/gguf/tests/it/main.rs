//! The reader against fixtures written by llama.cpp's own `gguf` Python package, and
//! against hostile and truncated files. `tests/fixtures/make_fixtures.py` made the
//! fixtures; `tests/fixtures/reference.py` recorded what `gguf.GGUFReader` saw in them.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod hostile;
mod reference;
mod summary;

use std::path::{Path, PathBuf};

use gguf::{Gguf, ReadOptions};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    fs_err::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn good_fixtures() -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    names
}

pub fn parse(name: &str, options: &ReadOptions) -> Gguf {
    let bytes = fixture_bytes(name);
    let g = gguf::read_bytes(&bytes, options).unwrap_or_else(|e| panic!("{name}: {e}"));
    g.check_file_size(bytes.len() as u64)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    g
}

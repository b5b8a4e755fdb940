//! The model catalog on both backends, with real GGUF files.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use model_catalog::{ArtifactStatus, Backend, CatalogError, ModelCatalog, ModelEntry, sha256_file};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Filesystem];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/llama-q4_0.gguf")
}

/// Puts a copy of the fixture in the model's folder and registers it, available.
fn install(c: &ModelCatalog, id: &str, reference: &str) -> ModelEntry {
    let dir = c.model_dir(id).unwrap();
    fs_err::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    fs_err::copy(fixture(), &path).unwrap();
    let summary = gguf::read(
        fs_err::File::open(&path).unwrap(),
        &gguf::ReadOptions::default(),
    )
    .unwrap()
    .summary();
    let mut e = ModelEntry::new(id, "huggingface", reference, &path).with_summary(summary);
    e.size = fs_err::metadata(&path).unwrap().len();
    e.sha256 = Some(sha256_file(&path).unwrap());
    e.status = ArtifactStatus::Available;
    c.register(e.clone()).unwrap();
    e
}

#[test]
fn register_find_list_remove() {
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let c = ModelCatalog::open(home.path(), backend).unwrap();
        let a = install(&c, "hf:org/a/model.gguf", "hf:org/a");
        install(&c, "hf:org/b/model.gguf", "hf:org/b:Q4_0");
        assert_eq!(a.name, "Tiny Llama Test", "the name comes from the GGUF");
        assert_eq!(
            a.gguf.as_ref().unwrap().quantization.as_deref(),
            Some("Q4_0")
        );

        let found = c.find("hf:org/b:Q4_0", "huggingface").unwrap().unwrap();
        assert_eq!(found.artifact.id, "hf:org/b/model.gguf");
        assert!(c.find("hf:org/b:Q4_0", "http").unwrap().is_none());
        assert_eq!(c.list().unwrap().len(), 2);
        assert_eq!(c.total_size().unwrap(), 2 * a.size);

        // the same reference twice is refused
        let err = c.register(ModelEntry::new(
            "hf:org/a/other.gguf",
            "huggingface",
            "hf:org/a",
            &a.path,
        ));
        assert!(
            matches!(err, Err(CatalogError::SourceExists { .. })),
            "{err:?}"
        );

        // downloading models do not count in the total size
        let mut d = ModelEntry::new(
            "https://h/x.gguf",
            "http",
            "https://h/x.gguf",
            Path::new("/x"),
        );
        d.size = 1 << 30;
        c.register(d).unwrap();
        assert_eq!(c.total_size().unwrap(), 2 * a.size);

        assert!(c.remove("hf:org/a/model.gguf").unwrap());
        assert!(!c.remove("hf:org/a/model.gguf").unwrap());
        assert!(
            a.path.exists(),
            "removing the entry leaves the file to its owner"
        );

        // reopened: everything, the GGUF summary included
        let before = c.list().unwrap();
        drop(c);
        let c = ModelCatalog::open(home.path(), backend).unwrap();
        assert_eq!(c.list().unwrap(), before);
    }
}

#[test]
fn model_folders_stay_inside_models() {
    let home = tempfile::tempdir().unwrap();
    let c = ModelCatalog::open(home.path(), Backend::Sqlite).unwrap();
    for id in ["../../etc", "hf:../../x", "/abs", "..", "a/../../b"] {
        let dir = c.model_dir(id).unwrap();
        assert_eq!(dir.parent().unwrap(), c.models_dir(), "{id}");
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            !name.contains('/') && name != ".." && name != ".",
            "{id} -> {name}"
        );
    }
    assert!(c.model_dir("a\0b").is_err());
}

#[test]
fn verify_marks_broken_models_failed_and_keeps_files() {
    for backend in BACKENDS {
        let home = tempfile::tempdir().unwrap();
        let c = ModelCatalog::open(home.path(), backend).unwrap();
        let ok = install(&c, "hf:o/ok/m.gguf", "hf:o/ok");
        let gone = install(&c, "hf:o/gone/m.gguf", "hf:o/gone");
        let short = install(&c, "hf:o/short/m.gguf", "hf:o/short");
        let flipped = install(&c, "hf:o/flipped/m.gguf", "hf:o/flipped");
        let unhashed = install(&c, "hf:o/unhashed/m.gguf", "hf:o/unhashed");
        c.modify(&unhashed.id, &mut |e| e.artifact.sha256 = None)
            .unwrap();

        fs_err::remove_file(&gone.path).unwrap();
        let f = fs_err::OpenOptions::new()
            .write(true)
            .open(&short.path)
            .unwrap();
        f.set_len(short.size - 10).unwrap();
        let mut bytes = fs_err::read(&flipped.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        fs_err::write(&flipped.path, &bytes).unwrap();

        // without rehash: only what size and existence show
        let report = c.verify(false).unwrap();
        assert_eq!(report.checked, 5);
        let ids: Vec<_> = report.problems.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [gone.id.as_str(), short.id.as_str()],
            "{}",
            backend as u8
        );
        let status = |id: &str| c.get(id).unwrap().unwrap().artifact.status;
        match status(&gone.id) {
            ArtifactStatus::Failed { error } => assert!(error.contains("missing"), "{error}"),
            other => panic!("{other:?}"),
        }
        match status(&short.id) {
            ArtifactStatus::Failed { error } => assert!(error.contains("bytes"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(status(&flipped.id), ArtifactStatus::Available);

        // with rehash: the flipped byte too; the unhashed one gets its sha256
        let report = c.verify(true).unwrap();
        assert_eq!(report.checked, 3);
        assert_eq!(report.hashed, 3);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].id, flipped.id);
        assert!(
            report.problems[0].reason.contains("bad sha256"),
            "{}",
            report.problems[0].reason
        );
        assert_eq!(status(&ok.id), ArtifactStatus::Available);
        let recorded = c.get(&unhashed.id).unwrap().unwrap().artifact.sha256;
        assert_eq!(recorded, ok.sha256, "same bytes, same hash");

        // nothing was deleted
        assert!(short.path.exists() && flipped.path.exists() && ok.path.exists());
    }
}

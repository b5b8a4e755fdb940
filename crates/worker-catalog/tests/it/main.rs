//! The worker catalog on both backends.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use semver::Version;
use worker_catalog::{ArtifactStatus, Backend, Platform, WorkerBinary, WorkerCatalog, WorkerType};

fn binary(t: WorkerType, p: Platform, v: &str) -> WorkerBinary {
    WorkerBinary::new(t, p, Version::parse(v).unwrap(), Path::new("/w/bin"), 100)
}

#[test]
fn highest_available_version_wins() {
    for backend in [Backend::Sqlite, Backend::Filesystem] {
        let home = tempfile::tempdir().unwrap();
        let c = WorkerCatalog::open(home.path(), backend).unwrap();
        let (cpu, cuda, linux, mac) = (
            WorkerType::CpuLlm,
            WorkerType::CudaLlm,
            Platform::Linux,
            Platform::Macos,
        );
        assert_eq!(c.find_by_type_and_platform(cpu, linux).unwrap(), None);
        for b in [
            binary(cpu, linux, "0.9.0"),
            binary(cpu, linux, "0.10.0"),
            binary(cpu, linux, "0.10.0-rc.1"),
            binary(cpu, mac, "2.0.0"),
            binary(cuda, linux, "1.0.0"),
        ] {
            c.add(b).unwrap();
        }
        let mut broken = binary(cpu, linux, "0.11.0");
        broken.status = ArtifactStatus::Failed {
            error: "build failed".into(),
        };
        c.add(broken).unwrap();

        let best = c.find_by_type_and_platform(cpu, linux).unwrap().unwrap();
        assert_eq!(
            best.version,
            Version::new(0, 10, 0),
            "semver order, available only"
        );
        assert_eq!(best.id, "llm-worker-rbee-cpu-v0.10.0-linux");
        assert_eq!(
            c.find_by_type_and_platform(cpu, mac)
                .unwrap()
                .unwrap()
                .version,
            Version::new(2, 0, 0)
        );
        assert_eq!(
            c.find_by_type_and_platform(WorkerType::MetalLlm, mac)
                .unwrap(),
            None
        );

        // the same id twice is refused
        assert!(c.add(binary(cuda, linux, "1.0.0")).is_err());
        assert!(c.binary_dir(&best.id).unwrap().starts_with(c.workers_dir()));

        // reopened, all still there
        drop(c);
        let c = WorkerCatalog::open(home.path(), backend).unwrap();
        assert_eq!(c.len().unwrap(), 6);
    }
}

#[test]
fn a_changed_executable_is_noticed_by_size_or_modification_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-server");
    fs_err::write(&path, b"#!/bin/sh\n").unwrap();
    let meta = fs_err::metadata(&path).unwrap();
    let mut b = WorkerBinary::new(
        WorkerType::CpuLlm,
        Platform::Linux,
        Version::new(1, 0, 0),
        &path,
        meta.len(),
    );
    assert_eq!(
        b.file_changed(),
        None,
        "without a recorded time, the size decides"
    );
    b.modified = Some(meta.modified().unwrap());
    assert_eq!(b.file_changed(), None);
    // the same size, written again later
    let later = meta.modified().unwrap() + std::time::Duration::from_secs(60);
    fs_err::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(b.file_changed().unwrap().contains("modified"));
    fs_err::write(&path, b"#!/bin/sh\nexit 1\n").unwrap();
    assert!(b.file_changed().unwrap().contains("bytes"));
    fs_err::remove_file(&path).unwrap();
    assert!(b.file_changed().unwrap().contains("gone"));
}

/// A `catalog.db` as the release before engines wrote it (schema 1, a worker row
/// without `engine` or `modified`, a model row beside it) opens with every row kept:
/// the worker is our own, and the model row is not touched.
#[test]
fn a_catalog_from_before_engines_migrates_and_loses_nothing() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("catalog.db");
    let old_worker = r#"{"id":"llm-worker-rbee-cpu-v0.1.0-linux","worker_type":"cpu_llm","platform":"linux","version":"0.1.0","path":"/w/llm-worker-rbee-cpu","size":1234,"status":{"state":"available"},"sha256":"ab","source":"local-build:/src"}"#;
    let model = r#"{"id":"m","anything":"kept as it was"}"#;
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE artifacts (
                kind TEXT NOT NULL, id TEXT NOT NULL, provider TEXT, reference TEXT,
                status TEXT NOT NULL, size INTEGER NOT NULL, path TEXT NOT NULL,
                data TEXT NOT NULL, added_at TEXT NOT NULL, last_accessed TEXT,
                PRIMARY KEY (kind, id)
            ) WITHOUT ROWID;
            CREATE UNIQUE INDEX artifacts_source ON artifacts (kind, provider, reference)
                WHERE provider IS NOT NULL;
            PRAGMA user_version = 1;",
        )
        .unwrap();
        for (kind, id, data) in [
            ("worker", "llm-worker-rbee-cpu-v0.1.0-linux", old_worker),
            ("model", "m", model),
        ] {
            conn.execute(
                "INSERT INTO artifacts (kind, id, status, size, path, data, added_at, last_accessed)
                 VALUES (?1, ?2, 'available', 1234, '/w', ?3, '2026-01-02T03:04:05.000000Z', '2026-01-03T00:00:00.000000Z')",
                (kind, id, data),
            )
            .unwrap();
        }
    }
    let c = WorkerCatalog::open(home.path(), Backend::Sqlite).unwrap();
    let all = c.list().unwrap();
    assert_eq!(all.len(), 1);
    let record = &all[0];
    let b = &record.artifact;
    assert_eq!(b.id, "llm-worker-rbee-cpu-v0.1.0-linux");
    assert_eq!(b.engine, worker_catalog::Engine::Rbee);
    assert_eq!(b.size, 1234);
    assert_eq!(b.sha256.as_deref(), Some("ab"));
    assert_eq!(b.source.as_deref(), Some("local-build:/src"));
    assert_eq!(b.path, Path::new("/w/llm-worker-rbee-cpu"));
    assert_eq!(record.added_at.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    assert!(record.last_accessed.is_some());
    drop(c);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        version, 3,
        "every migration applied (3: the quarantine table)"
    );
    let data: String = conn
        .query_row(
            "SELECT data FROM artifacts WHERE kind = 'worker'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["engine"], "rbee");
    assert_eq!(data["sha256"], "ab");
    let kept: String = conn
        .query_row("SELECT data FROM artifacts WHERE kind = 'model'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(kept, model);
}

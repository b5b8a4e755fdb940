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

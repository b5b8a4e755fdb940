//! llama.cpp's vendors: its release archives (`.zip` made by the `zip` crate,
//! `.tar.gz` by `tar`) served on loopback, holding a real `llama-server` where this
//! machine has one; a cmake build from a source tree; and every bad input of both.
//!
//! The real `llama-server` comes from `scripts/fetch-llama-server.sh`, or
//! `RBEE_LLAMA_SERVER`; without one those tests say so and skip, unless
//! `RBEE_REQUIRE_LLAMA_TESTS=1` (as CI sets) makes that a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artifact_catalog::ArtifactStatus;
use provisioning::{
    ArtifactProvisioner as _, ProvisionContext, ProvisionError, ProvisionReporter, ProvisionRequest,
};
use worker_catalog::{Engine, WorkerType};

use super::{install, provisioner, serve, sha, walk};

/// How llama.cpp's release names this machine's CPU.
fn arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x64"
    }
}

/// This machine's llama.cpp release name for build 6123.
fn release_name(ext: &str) -> String {
    let os = if cfg!(target_os = "macos") {
        "macos"
    } else {
        "ubuntu"
    };
    format!("llama-b6123-bin-{os}-{}.{ext}", arch())
}

/// A stand-in `llama-server` that answers `--version` as llama.cpp does.
fn fake_server(version_line: &str, code: i32) -> Vec<u8> {
    format!(
        "#!/bin/sh\necho 'load_backend: loaded CPU backend' >&2\necho '{version_line}' >&2\necho 'built with cc for x86_64-linux-gnu' >&2\nexit {code}\n"
    )
    .into_bytes()
}

enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
}

fn zip_of(items: &[Item<'_>]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for item in items {
        match item {
            Item::File(name, data, mode) => {
                let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
                zip.start_file(*name, options).unwrap();
                zip.write_all(data).unwrap();
            }
            Item::Link(name, target) => {
                zip.add_symlink(*name, *target, zip::write::SimpleFileOptions::default())
                    .unwrap();
            }
        }
    }
    zip.finish().unwrap().into_inner()
}

fn tar_gz_of(items: &[Item<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for item in items {
        let mut header = tar::Header::new_gnu();
        match item {
            Item::File(name, data, mode) => {
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, name, *data).unwrap();
            }
            Item::Link(name, target) => {
                header.set_size(0);
                header.set_mode(0o777);
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The files under `home/workers`, relative to it.
fn installed(home: &Path) -> Vec<String> {
    let workers = home.join("workers");
    if !workers.exists() {
        return Vec::new();
    }
    let mut out: Vec<String> = walk(&workers)
        .into_iter()
        .map(|p| p.strip_prefix(&workers).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_llama_cpp_zip_installs_the_server_and_its_libraries_and_nothing_else() {
    let server = fake_server("version: 6123 (1a2b3c4d)", 0);
    let zip = zip_of(&[
        Item::File("build/bin/llama-server", &server, 0o755),
        Item::File("build/bin/libggml-base.so", b"\x7fELF library", 0o644),
        Item::File("build/bin/llama-cli", &server, 0o755),
        Item::File("build/bin/LICENSE", b"MIT", 0o644),
        Item::File("../../escape.so", b"kept by its name only", 0o644),
    ]);
    let path = format!("/download/b6123/{}", release_name("zip"));
    let base = serve(vec![(
        Box::leak(path.clone().into_boxed_str()),
        zip.clone(),
    )])
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let b = install(&p, &format!("{base}{path}"), Some(sha(&zip)))
        .await
        .unwrap();
    let platform = worker_catalog::Platform::current();
    assert_eq!(b.id, format!("llama-server-cpu-b6123-{platform}"));
    assert_eq!(b.engine, Engine::LlamaCpp);
    assert_eq!(b.version.major, 6123);
    assert_eq!(b.status, ArtifactStatus::Available);
    assert_eq!(b.sha256.as_deref(), Some(sha(&server).as_str()));
    let dir = format!("llama-server-cpu-b6123-{platform}");
    assert_eq!(
        installed(home.path()),
        [
            format!("{dir}/escape.so"),
            format!("{dir}/libggml-base.so"),
            format!("{dir}/llama-server"),
        ]
    );
    assert!(!home.path().join("../escape.so").exists());
    assert!(
        !home
            .path()
            .join("downloads")
            .join(format!("{dir}.zip"))
            .exists()
    );
}

#[tokio::test]
async fn a_llama_cpp_tarball_keeps_its_library_links_inside_the_folder() {
    let server = fake_server("version: 6123 (1a2b3c4d)", 0);
    let tgz = tar_gz_of(&[
        Item::File("llama-b6123/llama-server", &server, 0o755),
        Item::File("llama-b6123/libllama.so.0.0.6123", b"\x7fELF", 0o644),
        Item::Link("llama-b6123/libllama.so.0", "libllama.so.0.0.6123"),
        Item::Link("llama-b6123/libllama.so", "libllama.so.0"),
        Item::Link("llama-b6123/libevil.so", "../../../etc/passwd"),
        Item::File("llama-b6123/convert_hf_to_gguf.py", b"print()", 0o755),
    ]);
    let path = format!("/r/{}", release_name("tar.gz"));
    let base = serve(vec![(
        Box::leak(path.clone().into_boxed_str()),
        tgz.clone(),
    )])
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let b = install(&p, &format!("{base}{path}"), Some(sha(&tgz)))
        .await
        .unwrap();
    let dir = b.path.parent().unwrap();
    assert_eq!(
        fs_err::read_link(dir.join("libllama.so")).unwrap(),
        Path::new("libllama.so.0")
    );
    assert_eq!(fs_err::read(dir.join("libllama.so")).unwrap(), b"\x7fELF");
    assert!(!dir.join("libevil.so").exists());
    assert!(!dir.join("convert_hf_to_gguf.py").exists());
}

#[tokio::test]
async fn bad_llama_cpp_archives_install_nothing() {
    let good = fake_server("version: 6123 (1a2b3c4d)", 0);
    let failing = fake_server("error: while loading shared libraries: libcuda.so.1", 127);
    let other_build = fake_server("version: 7000 (9f8e7d6c)", 0);
    let name = release_name("zip");
    let no_server = zip_of(&[Item::File("build/bin/llama-cli", &good, 0o755)]);
    let broken = zip_of(&[Item::File("llama-server", &failing, 0o755)]);
    let mislabelled = zip_of(&[Item::File("llama-server", &other_build, 0o755)]);
    let good_zip = zip_of(&[Item::File("llama-server", &good, 0o755)]);
    let other_os = if cfg!(target_os = "macos") {
        "ubuntu"
    } else {
        "macos"
    };
    let other_arch = if arch() == "x64" { "arm64" } else { "x64" };
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("/no-server/NAME", no_server.clone()),
        ("/broken/NAME", broken.clone()),
        ("/mislabelled/NAME", mislabelled.clone()),
        ("/good/NAME", good_zip.clone()),
        ("/not-a-zip/NAME", b"<html>rate limited</html>".to_vec()),
    ]
    .into_iter()
    .map(|(p, d)| (&*Box::leak(p.replace("NAME", &name).into_boxed_str()), d))
    .collect();
    let base = serve(files).await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let url = |dir: &str| format!("{base}/{dir}/{name}");

    let e = install(&p, &url("no-server"), Some(sha(&no_server)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_artifact");
    assert!(e.to_string().contains("no llama-server"), "{e}");

    let e = install(&p, &url("broken"), Some(sha(&broken)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--version failed"), "{e}");
    assert!(e.to_string().contains("libcuda.so.1"), "{e}");

    let e = install(&p, &url("mislabelled"), Some(sha(&mislabelled)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("b6123"), "{e}");
    assert!(e.to_string().contains("b7000"), "{e}");

    let e = install(&p, &url("good"), Some(sha(b"another archive")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");

    let e = install(&p, &url("good"), None).await.unwrap_err();
    assert_eq!(e.code(), "invalid_reference");

    let bytes = b"<html>rate limited</html>";
    let e = install(&p, &url("not-a-zip"), Some(sha(bytes)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a .zip archive"), "{e}");

    for wrong in [
        format!("{base}/good/llama-b6123-bin-{other_os}-{}.zip", arch()),
        format!("{base}/good/llama-b6123-bin-ubuntu-{other_arch}.zip"),
    ] {
        let e = install(&p, &wrong, Some(sha(&good_zip))).await.unwrap_err();
        assert!(e.to_string().contains("this machine is"), "{wrong}: {e}");
    }
    let e = install(
        &p,
        &format!("{base}/good/llama-b6123-bin-ubuntu-sycl-{}.zip", arch()),
        Some(sha(&good_zip)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    assert!(e.to_string().contains("sycl"), "{e}");

    assert_eq!(installed(home.path()), Vec::<String>::new());
    let downloads = home.path().join("downloads");
    assert!(!downloads.exists() || walk(&downloads).is_empty());
}

/// A built `llama-server`, from `RBEE_LLAMA_SERVER` or the test cache.
fn llama_server() -> Option<PathBuf> {
    let found = std::env::var_os("RBEE_LLAMA_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("RBEE_TEST_MODEL_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/rbee-test"))
                })?;
            Some(cache.join("llama.cpp-0.3.36/src/build-rbee-cpu/bin/llama-server"))
        })
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("RBEE_REQUIRE_LLAMA_TESTS").is_none(),
            "llama-server is missing: scripts/fetch-llama-server.sh builds one"
        );
        eprintln!("skipped: no llama-server (scripts/fetch-llama-server.sh builds one)");
    }
    found
}

#[tokio::test]
async fn a_real_llama_server_runs_from_its_release_folder_with_its_own_libraries() {
    let Some(server) = llama_server() else { return };
    let real = fs_err::read(&server).unwrap();
    // a library it loads, shipped beside it as release archives ship theirs
    let gomp = [
        "/lib/x86_64-linux-gnu/libgomp.so.1",
        "/usr/lib/x86_64-linux-gnu/libgomp.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file());
    let gomp_bytes = gomp.map(|p| fs_err::read(p).unwrap()).unwrap_or_default();
    let mut items = vec![Item::File("build/bin/llama-server", &real, 0o755)];
    if gomp.is_some() {
        items.push(Item::File("build/bin/libgomp.so.1", &gomp_bytes, 0o644));
    }
    let zip = zip_of(&items);
    let path = format!("/b/{}", release_name("zip"));
    let base = serve(vec![(
        Box::leak(path.clone().into_boxed_str()),
        zip.clone(),
    )])
    .await;
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let b = install(&p, &format!("{base}{path}"), Some(sha(&zip)))
        .await
        .unwrap();
    assert_eq!(
        b.version.major, 6123,
        "the name's build, as the tree says build 0"
    );
    let dir = b.library_dir().unwrap();
    assert_eq!(gomp.is_some(), dir.join("libgomp.so.1").is_file());
    let out = std::process::Command::new(&b.path)
        .arg("--version")
        .env(worker_catalog::LIBRARY_PATH_VAR, dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("version: "));
}

/// Narrations and steps, as a job would show them.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl ProvisionReporter for Seen {
    fn narrate(&self, action: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{action}: {message}"));
    }
    fn progress(&self, _: u64, _: Option<u64>, _: f64, _: Option<f64>) {}
    fn step(&self, done: u64, total: Option<u64>, unit: &str, current: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("step {done}/{total:?} {unit} {current}"));
    }
}

fn has_cmake() -> bool {
    let found = std::process::Command::new("cmake")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("RBEE_REQUIRE_LLAMA_TESTS").is_none(),
            "cmake is missing (apt-get install cmake)"
        );
        eprintln!("skipped: no cmake");
    }
    found
}

/// A cmake project that calls itself llama.cpp and whose `llama-server` target runs
/// `script` (sh, in the build folder).
fn pretend_tree(script: &str) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    fs_err::write(tree.path().join("target.sh"), script).unwrap();
    fs_err::write(
        tree.path().join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.14)\nproject(\"llama.cpp\" NONE)\nadd_custom_target(llama-server COMMAND sh ${CMAKE_SOURCE_DIR}/target.sh VERBATIM)\n",
    )
    .unwrap();
    tree
}

fn build_request(tree: &Path) -> ProvisionRequest {
    ProvisionRequest::new(format!("llama.cpp:cpu@{}", tree.display()))
}

#[tokio::test]
async fn a_llama_cpp_build_needs_a_llama_cpp_tree() {
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let empty = tempfile::tempdir().unwrap();
    let e = p.resolve(&build_request(empty.path())).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert!(e.to_string().contains("no CMakeLists.txt"), "{e}");
    let other = tempfile::tempdir().unwrap();
    fs_err::write(other.path().join("CMakeLists.txt"), "project(zlib C)\n").unwrap();
    let e = p.resolve(&build_request(other.path())).await.unwrap_err();
    assert!(e.to_string().contains("not llama.cpp"), "{e}");
    let file = empty.path().join("llama-server");
    fs_err::write(&file, "#!/bin/sh\n").unwrap();
    let e = p.resolve(&build_request(&file)).await.unwrap_err();
    assert!(e.to_string().contains("worker-binaries add"), "{e}");
    let e = p
        .resolve(&ProvisionRequest::new("llama.cpp:cpu@/no/such/tree"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
    for bad in [
        "llama.cpp:cpu",
        "llama.cpp:cpu@relative/tree",
        "llama.cpp:tpu@/src",
    ] {
        let e = p.resolve(&ProvisionRequest::new(bad)).await.unwrap_err();
        assert_eq!(e.code(), "invalid_reference", "{bad}: {e}");
    }
    let e = p
        .resolve(&ProvisionRequest {
            build_args: vec!["; rm -rf /".into()],
            ..build_request(other.path())
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_reference");
    assert_eq!(installed(home.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_failing_llama_cpp_build_says_why_and_installs_nothing() {
    if !has_cmake() {
        return;
    }
    let tree =
        pretend_tree("echo 'fatal error: cuda_runtime.h: No such file or directory' >&2; exit 1");
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let resolved = p.resolve(&build_request(tree.path())).await.unwrap();
    assert_eq!(resolved.plan.engine, Engine::LlamaCpp);
    let e = p
        .fetch(resolved, &ProvisionContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "build_failed");
    assert!(e.to_string().contains("cuda_runtime.h"), "{e}");
    assert_eq!(installed(home.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_cancelled_llama_cpp_build_leaves_no_process_behind() {
    if !has_cmake() {
        return;
    }
    let tree = pretend_tree("echo $$ > pid.txt; exec sleep 300");
    let home = tempfile::tempdir().unwrap();
    let p = Arc::new(provisioner(home.path()));
    let resolved = p.resolve(&build_request(tree.path())).await.unwrap();
    let seen = Arc::new(Seen::default());
    let ctx = ProvisionContext {
        reporter: Arc::clone(&seen) as Arc<dyn ProvisionReporter>,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let cancel = ctx.cancel.clone();
    let build = tokio::spawn({
        let p = Arc::clone(&p);
        async move { p.fetch(resolved, &ctx).await }
    });
    // the build dir is the tree's build-rbee-cpu; the target writes its pid there
    let pid_file = tree.path().join("build-rbee-cpu/pid.txt");
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid = loop {
        if let Ok(text) = fs_err::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the build never started: {:?}",
            seen.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cancel.cancel();
    let e = build.await.unwrap().unwrap_err();
    assert!(matches!(e, ProvisionError::Cancelled), "{e}");
    let proc = PathBuf::from(format!("/proc/{pid}/stat"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // gone, or a zombie waiting for a parent that reaps nothing
        match fs_err::read_to_string(&proc) {
            Err(_) => break,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                break;
            }
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the build's sleep {pid} outlived its cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = seen.0.lock().unwrap().join("\n");
    assert!(said.contains("configure: cmake -S"), "{said}");
    assert!(said.contains("build: building llama-server"), "{said}");
    assert_eq!(installed(home.path()), Vec::<String>::new());
}

/// The cmake args the cached build was made with, as the fetch script wrote them.
fn cached_build() -> Option<(PathBuf, Vec<String>)> {
    let server = llama_server()?;
    let build_dir = server.parent()?.parent()?;
    let tree = build_dir.parent()?.to_path_buf();
    let args = fs_err::read_to_string(build_dir.join("rbee-cmake-args")).ok()?;
    Some((tree, args.lines().map(str::to_owned).collect()))
}

#[tokio::test]
async fn llama_server_builds_from_its_source_tree_and_installs() {
    if !has_cmake() {
        return;
    }
    let Some((tree, args)) = cached_build() else {
        assert!(
            std::env::var_os("RBEE_REQUIRE_LLAMA_TESTS").is_none(),
            "no llama.cpp tree built by scripts/fetch-llama-server.sh"
        );
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let p = provisioner(home.path());
    let resolved = p
        .resolve(&ProvisionRequest {
            build_args: args,
            ..build_request(&tree)
        })
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    let ctx = ProvisionContext {
        reporter: Arc::clone(&seen) as Arc<dyn ProvisionReporter>,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let b = p.fetch(resolved, &ctx).await.unwrap();
    assert_eq!(b.engine, Engine::LlamaCpp);
    assert_eq!(b.worker_type, WorkerType::CpuLlm);
    assert!(b.id.starts_with("llama-server-cpu-"), "{}", b.id);
    assert!(b.path.starts_with(home.path().join("workers")));
    assert!(!b.build_args.is_empty());
    let out = std::process::Command::new(&b.path)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = seen.0.lock().unwrap().join("\n");
    assert!(said.contains("step "), "{said}");
    assert!(
        said.contains("install: installed llama-server-cpu-"),
        "{said}"
    );
}

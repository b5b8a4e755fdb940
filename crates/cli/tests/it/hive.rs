//! `rbee models ...` and `rbee hive status` against a real daemon.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use hf_test_server::{HfServer, Repo, RepoFile};
use serde_json::Value;

use crate::gguf_fixtures;

struct Daemon(Child, String);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rbee-hive`, built beside `rbee` by `cargo nextest run --workspace`.
fn hive_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_rbee")).with_file_name("rbee-hive");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p hive`",
        p.display()
    );
    p
}

fn start(home: &std::path::Path, hf: &str) -> Daemon {
    start_with(home, hf, &[])
}

fn start_with(home: &std::path::Path, hf: &str, extra: &[&str]) -> Daemon {
    let mut child = Command::new(hive_bin())
        .args(["--port", "0"])
        .args(extra)
        .env("RBEE_HOME", home)
        .env("RBEE_HF_ENDPOINT", hf)
        // Ollama's library is a closed port here: no test reaches off the machine
        .env("RBEE_OLLAMA_REGISTRY", "127.0.0.1:9")
        .env("RUST_LOG", "warn")
        .env("RBEE_NO_FIND_ENGINES", "1")
        .env_remove("RBEE_API_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("rbee-hive listening on ")
        .unwrap()
        .to_owned();
    Daemon(child, url)
}

fn rbee(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rbee"))
        .args(args)
        .env("RBEE_HIVE_URL", &d.1)
        .env_remove("RBEE_API_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_show_import_remove() {
    let data = fs_err::read(gguf_fixtures().join("qwen2-q4_k_m.gguf")).unwrap();
    let hf = HfServer::start(
        vec![Repo::new(
            "org/Tiny-GGUF",
            vec![RepoFile::lfs("Tiny-Q4_K_M.gguf", data)],
        )],
        None,
        true,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let d = start(home.path(), &hf.url());
    let id = "hf:org/Tiny-GGUF/Tiny-Q4_K_M.gguf";

    let (ok, out, err) = rbee(&d, &["models", "pull", "hf:org/Tiny-GGUF"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(id) && out.contains("available") && out.contains("Q4_K_M"),
        "{out}"
    );

    let (ok, out, _) = rbee(&d, &["models", "ls"]);
    assert!(ok && out.contains(id) && out.contains("qwen2"), "{out}");
    let (ok, out, _) = rbee(&d, &["models", "ls", "--json"]);
    assert!(ok);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["object"], "list", "{list}");
    let list = &list["data"];
    assert_eq!(list[0]["id"], id);

    let (ok, out, _) = rbee(&d, &["models", "show", id]);
    assert!(
        ok && out.contains("Tiny Qwen2 Test") && out.contains("32768"),
        "{out}"
    );
    // formatted as `gguf inspect` formats them, with what `verified` means
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {out}"))
            .to_owned()
    };
    assert!(row("parameters").contains("K ("), "{out}");
    assert!(row("memory").contains("at 32768 tokens (weights"), "{out}");
    assert!(
        row("verified").contains("matched the sha256 the source published"),
        "{out}"
    );
    assert!(
        !row("last hashed").contains("never"),
        "hashed at download: {out}"
    );
    let (ok, out, _) = rbee(&d, &["models", "show", id, "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["verified"],
        true
    );

    let local = gguf_fixtures().join("llama-q4_0.gguf");
    let (ok, out, err) = rbee(&d, &["models", "import", local.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("llama-q4_0.gguf"), "{out}");

    let (ok, out, _) = rbee(&d, &["hive", "status"]);
    assert!(ok && out.contains("models      2 (2 available)"), "{out}");
    assert!(
        out.contains("workers     0 live") && out.contains("binaries    0"),
        "{out}"
    );
    let (ok, out, _) = rbee(&d, &["hive", "status", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["health"]["status"],
        "ok"
    );

    let (ok, out, _) = rbee(&d, &["models", "rm", id]);
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, out, _) = rbee(&d, &["models", "ls", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Piped, as under `| tee`: progress comes as plain lines while the pull runs, not
/// all at the end; Ctrl-C (SIGINT) cancels, and the hive says what it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_shows_progress_as_it_happens() {
    let mut data = fs_err::read(gguf_fixtures().join("llama-q4_0.gguf")).unwrap();
    data.extend_from_slice(&hf_test_server::test_bytes(24 << 20, 3));
    let hf = HfServer::start(
        vec![Repo::new(
            "org/Slow-GGUF",
            vec![RepoFile::lfs("Slow-Q4_0.gguf", data)],
        )],
        None,
        false,
    )
    .await;
    // about 2 MiB/s over the daemon's connections
    hf.faults()
        .throttle_bytes_per_sec
        .store(512 << 10, std::sync::atomic::Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let d = start(home.path(), &hf.url());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rbee"))
        .args(["models", "pull", "hf:org/Slow-GGUF"])
        .env("RBEE_HIVE_URL", &d.1)
        .env_remove("RBEE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let progress = loop {
        let line = lines.next().expect("a line before the end").unwrap();
        seen.push(line.clone());
        if line.starts_with("downloading ") {
            break line;
        }
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the line came while the pull ran: {seen:?}"
    );
    assert!(
        progress.contains("% (") && progress.contains("/s"),
        "{progress}"
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let last = rest.last().cloned().unwrap_or_default();
    assert!(
        last.contains("cancelled") && last.contains("kept: pull again to resume"),
        "{rest:?}"
    );
    let (ok, out, _) = rbee(&d, &["models", "ls"]);
    assert!(
        ok && out.contains("paused at") && out.contains(" of "),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_and_nonzero() {
    let hf = HfServer::start(vec![], None, false).await;
    let home = tempfile::tempdir().unwrap();
    let d = start(home.path(), &hf.url());
    for (args, words) in [
        (
            vec!["models", "pull", "hf:nobody/nothing"],
            "nobody/nothing",
        ),
        (
            vec!["models", "show", "hf:a/b/c.gguf"],
            "not in the catalog",
        ),
        (vec!["models", "rm", "hf:a/b/c.gguf"], "not in the catalog"),
        (vec!["models", "import", "/no/such.gguf"], "no such file"),
        (
            vec!["models", "pull", "hf:o/r", "--sha256", "xyz"],
            "64 hex",
        ),
    ] {
        let (ok, _, err) = rbee(&d, &args);
        assert!(!ok, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains(words),
            "{args:?}: {err}"
        );
        // with --json, the error is the one JSON document on stdout
        let mut json_args = vec!["--json"];
        json_args.extend(&args);
        let (ok, out, _) = rbee(&d, &json_args);
        assert!(!ok, "{args:?}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert!(v["error"]["code"].is_string(), "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(words),
            "{args:?}: {v}"
        );
    }
    // the hive's own code comes through
    let (_, out, _) = rbee(
        &d,
        &["--json", "models", "pull", "hf:o/r", "--sha256", "xyz"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["status"], 400, "{v}");
    assert_ne!(v["error"]["code"], "error", "{v}");
    // no hive at all
    let out = Command::new(env!("CARGO_BIN_EXE_rbee"))
        .args(["models", "ls", "--hive-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the hive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_binaries_and_workers_from_the_command_line() {
    let Some(model) = hf_test_server::test_model() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    // a cargo build through the hive, of a tiny crate shaped as the worker's (seconds,
    // not the minutes of the real one); then the worker this run built is added
    let source = hf_test_server::tiny_worker_source(home.path());
    let d = start_with(
        home.path(),
        "http://127.0.0.1:9",
        &[
            "--worker-build-profile",
            "dev",
            "--worker-source-dir",
            source.to_str().unwrap(),
        ],
    );
    let (ok, out, _) = rbee(&d, &["worker-binaries", "ls"]);
    assert!(ok && out.contains("no worker binaries"), "{out}");
    let (ok, out, err) = rbee(&d, &["worker-binaries", "install", "cpu"]);
    assert!(ok, "{err}");
    // piped: a build shows crates, never a byte bar
    assert!(err.contains(" crates"), "{err}");
    assert!(
        !err.contains("0 B/0 B") && !err.contains("partial download"),
        "{err}"
    );
    assert!(
        out.contains("llm-worker-rbee-cpu-v0.1.0-linux is installed"),
        "{out}"
    );
    let (ok, out, _) = rbee(&d, &["worker-binaries", "ls"]);
    assert!(ok && out.contains("available"), "{out}");
    let (ok, _, err) = rbee(
        &d,
        &["worker-binaries", "rm", "llm-worker-rbee-cpu-v0.1.0-linux"],
    );
    assert!(ok, "{err}");
    let built = PathBuf::from(env!("CARGO_BIN_EXE_rbee")).with_file_name("llm-worker-rbee");
    let (ok, out, err) = rbee(&d, &["worker-binaries", "add", built.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("llm-worker-rbee-cpu-v0.1.0-linux"), "{out}");

    let (ok, _, err) = rbee(&d, &["models", "import", model.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (_, out, _) = rbee(&d, &["--json", "models", "ls"]);
    let models: Value = serde_json::from_str::<Value>(&out).unwrap()["data"].clone();
    let id = models[0]["id"].as_str().unwrap().to_owned();

    let (ok, out, err) = rbee(&d, &["workers", "spawn", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("is ready at http://127.0.0.1:"), "{out}");
    let worker = out
        .split_whitespace()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    let (_, out, _) = rbee(&d, &["--json", "workers", "ls"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    // every ls --json has one shape
    assert_eq!(list["object"], "list", "{list}");
    let wid = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(!worker.is_empty());
    // `rbee run`, as `ollama run`: a prompt answered once, streamed to stdout, its
    // speed on stderr; piped input is the prompt too
    let (ok, out, err) = rbee(
        &d,
        &[
            "run",
            &id,
            "--parameter",
            "num_predict=12",
            "The",
            "capital",
            "of",
            "France",
            "is",
        ],
    );
    assert!(ok, "{err}");
    assert!(!out.trim().is_empty(), "no answer: {err}");
    assert!(
        err.contains("tokens in") && err.contains("tokens/s"),
        "{err}"
    );
    let mut piped = Command::new(env!("CARGO_BIN_EXE_rbee"))
        .args(["run", &id, "--parameter", "num_predict=12"])
        .env("RBEE_HIVE_URL", &d.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = piped.stdin.take().unwrap();
        stdin.write_all(b"Name a colour.\n").unwrap();
    }
    let out = piped.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // flags after the prompt are flags, as `ollama run` reads them
    let (ok, _, err) = rbee(
        &d,
        &[
            "run",
            &id,
            "Count to fifty.",
            "--parameter",
            "num_predict=3",
        ],
    );
    assert!(ok && err.contains("(3 tokens in"), "{err}");
    let (ok, _, err) = rbee(&d, &["run", "no-such-model", "hi"]);
    assert!(!ok && err.contains("no-such-model"), "{err}");
    let (ok, _, err) = rbee(&d, &["run", &id, "--parameter", "warmth=3", "hi"]);
    assert!(!ok && err.contains("temperature"), "{err}");
    let (ok, out, _) = rbee(&d, &["workers", "ls"]);
    assert!(ok && out.contains(&wid) && out.contains("ready"), "{out}");
    let (ok, out, _) = rbee(&d, &["hive", "status"]);
    assert!(
        ok && out.contains("workers     1 live")
            && out.contains(&wid)
            && out.contains("llm-worker-rbee-cpu-v0.1.0-linux (available"),
        "{out}"
    );
    let memory = out
        .lines()
        .find(|l| l.starts_with("ram"))
        .unwrap_or_default();
    assert!(
        memory.contains("1 workers use") && !memory.ends_with(" 0 B"),
        "{out}"
    );
    let (ok, out, _) = rbee(&d, &["workers", "logs", &wid, "--tail", "20"]);
    assert!(ok && out.contains("listening on"), "{out}");

    // In use: neither the model nor the binary can go.
    let (ok, _, err) = rbee(&d, &["models", "rm", &id]);
    assert!(!ok && err.contains("stop them first"), "{err}");
    let (ok, _, err) = rbee(
        &d,
        &["worker-binaries", "rm", "llm-worker-rbee-cpu-v0.1.0-linux"],
    );
    assert!(!ok && err.contains("stop them first"), "{err}");

    let (ok, out, _) = rbee(&d, &["workers", "stop", &wid]);
    assert!(ok && out.contains("stopped"), "{out}");
    let (ok, _, err) = rbee(&d, &["workers", "stop", &wid]);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("no worker"),
        "{err}"
    );
    // load starts a worker, unload stops it.
    let (ok, out, err) = rbee(&d, &["models", "load", &id]);
    assert!(
        ok && out.contains("serves it at http://127.0.0.1:"),
        "{out} {err}"
    );
    // `ps` and `stop`, as Ollama's users type them: what is loaded, and stop it
    let (ok, out, _) = rbee(&d, &["ps"]);
    assert!(ok && out.contains("ready") && out.contains(&id), "{out}");
    let (ok, out, _) = rbee(&d, &["stop", &id]);
    assert!(ok && out.contains("stopped worker-"), "{out}");
    let (ok, out, _) = rbee(&d, &["models", "unload", &id]);
    assert!(ok && out.contains("no worker served"), "{out}");
    let (ok, out, _) = rbee(&d, &["models", "verify"]);
    assert!(
        ok && out.contains("1 checked") && out.contains("no problems"),
        "{out}"
    );
    let (ok, out, _) = rbee(&d, &["hive", "audit"]);
    assert!(
        ok && out.contains("worker_spawn") && out.contains("model_unload"),
        "{out}"
    );
    let (ok, out, _) = rbee(
        &d,
        &["worker-binaries", "rm", "llm-worker-rbee-cpu-v0.1.0-linux"],
    );
    assert!(ok && out.contains("removed"), "{out}");
    let (ok, _, err) = rbee(&d, &["workers", "spawn", &id]);
    assert!(!ok && err.contains("worker-binaries install cpu"), "{err}");
}

/// Every command takes what people type: an id, an alias, a unique prefix. An
/// ambiguous prefix lists the candidates, a typo says what is near, and nothing is
/// changed by either.
#[test]
fn models_by_id_alias_prefix_and_typo() {
    let home = tempfile::tempdir().unwrap();
    let d = start(home.path(), "http://127.0.0.1:9");
    for (file, name) in [
        ("llama-q4_0.gguf", "tinyllama-a.gguf"),
        ("gemma-q8_0-align64.gguf", "tinyllama-b.gguf"),
    ] {
        let local = home.path().join(name);
        fs_err::copy(gguf_fixtures().join(file), &local).unwrap();
        let (ok, _, err) = rbee(&d, &["models", "import", local.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let (_, out, _) = rbee(&d, &["--json", "models", "ls"]);
    let models: Value = serde_json::from_str::<Value>(&out).unwrap()["data"].clone();
    let (id, alias) = (
        models[0]["id"].as_str().unwrap().to_owned(),
        models[0]["alias"].as_str().unwrap().to_owned(),
    );
    // by id, by alias in any case, by the start of the alias
    for word in [
        id.as_str(),
        alias.as_str(),
        &alias.to_uppercase(),
        &alias[..alias.len() - 2],
    ] {
        let (ok, out, err) = rbee(&d, &["--json", "models", "show", word]);
        assert!(ok, "{word}: {err}");
        let m: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(m["id"], id.as_str(), "{word}");
    }
    // a prefix both share: the candidates, and nothing removed
    let (ok, _, err) = rbee(&d, &["models", "rm", "tinyllama"]);
    assert!(!ok);
    assert!(err.contains("names 2 models"), "{err}");
    // a typo: what is near
    let mut typo = alias.clone();
    typo.pop();
    typo.push('x');
    let (ok, _, err) = rbee(&d, &["models", "show", &format!("{typo}zz")]);
    assert!(!ok);
    assert!(err.contains("did you mean"), "{err}");
    let (_, out, _) = rbee(&d, &["--json", "models", "ls"]);
    let after: Value = serde_json::from_str::<Value>(&out).unwrap()["data"].clone();
    assert_eq!(after.as_array().unwrap().len(), 2, "nothing was removed");
    // and one that is unique goes
    let (ok, _, err) = rbee(&d, &["models", "rm", &alias]);
    assert!(ok, "{err}");
}

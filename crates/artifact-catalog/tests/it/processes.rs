//! Several processes on one catalog, and processes killed in the middle of a write.
//!
//! The children are this test binary itself, run with `--ignored --exact
//! processes::child` and told what to do through the environment.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artifact_catalog::ArtifactCatalog;

use crate::{Backend, Thing};

const ROLE: &str = "CATALOG_TEST_CHILD_ROLE";
const BACKEND: &str = "CATALOG_TEST_CHILD_BACKEND";
const DIR: &str = "CATALOG_TEST_CHILD_DIR";

fn spawn_child(backend: Backend, dir: &std::path::Path, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "processes::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(BACKEND, backend.name())
        .env(DIR, dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn bump(c: &dyn ArtifactCatalog<Thing>, id: &str) {
    c.modify(id, &mut |e| {
        let n: u64 = e
            .artifact
            .payload
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // A large, self-checking payload: a torn write would not parse back.
        e.artifact.payload = format!("{}:{}:{}", n + 1, "x".repeat(8192), n + 1);
    })
    .unwrap();
}

fn counter(c: &dyn ArtifactCatalog<Thing>, id: &str) -> u64 {
    let payload = c.get(id).unwrap().unwrap().artifact.payload;
    let parts: Vec<&str> = payload.split(':').collect();
    assert_eq!(parts.len(), 3, "torn payload");
    assert_eq!(parts[0], parts[2], "torn payload");
    parts[0].parse().unwrap()
}

/// The child's side: not a test of its own (it does nothing without its environment).
#[test]
#[ignore = "run by the tests in this module as a child process"]
fn child() {
    let (Ok(role), Ok(backend), Ok(dir)) = (
        std::env::var(ROLE),
        std::env::var(BACKEND),
        std::env::var(DIR),
    ) else {
        return;
    };
    let c = Backend::from_name(&backend).open(dir.as_ref());
    match role.split(':').collect::<Vec<_>>()[..] {
        ["writer", tag, n] => {
            for i in 0..n.parse::<u32>().unwrap() {
                c.add(Thing::new(&format!("{tag}-{i}"))).unwrap();
                bump(c.as_ref(), "counter");
            }
        }
        ["looper"] => loop {
            bump(c.as_ref(), "victim");
        },
        _ => panic!("unknown role {role}"),
    }
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_processes_write_at_once() {
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let c = backend.open(dir.path());
        let mut seed = Thing::new("counter");
        seed.payload = "0::0".into();
        c.add(seed).unwrap();
        let children: Vec<Child> = ["p1", "p2"]
            .iter()
            .map(|tag| spawn_child(backend, dir.path(), &format!("writer:{tag}:40")))
            .collect();
        for mut child in children {
            assert!(
                child.wait().unwrap().success(),
                "{}: a writer failed",
                backend.name()
            );
        }
        assert_eq!(c.len().unwrap(), 81, "{}", backend.name());
        assert_eq!(
            counter(c.as_ref(), "counter"),
            80,
            "{}: lost an update",
            backend.name()
        );
    }
}

#[test]
fn kill_9_mid_write_never_loses_the_entry() {
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let c = backend.open(dir.path());
        let mut victim = Thing::new("victim");
        victim.payload = "0::0".into();
        c.add(victim).unwrap();
        let mut last = 0;
        for round in 0..6u64 {
            let mut child = spawn_child(backend, dir.path(), "looper");
            let target = last + 1 + round * 3;
            wait_for(
                || counter(c.as_ref(), "victim") >= target,
                "the looper to write",
            );
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // a fresh open, as after a crash: the entry is whole, and not older than seen
            let reopened = backend.open(dir.path());
            let now = counter(reopened.as_ref(), "victim");
            assert!(
                now >= target,
                "{}: went back from {target} to {now}",
                backend.name()
            );
            last = now;
            // and the catalog still takes writes
            reopened.add(Thing::new(&format!("after-{round}"))).unwrap();
        }
        assert_eq!(c.len().unwrap(), 7, "{}", backend.name());
    }
}

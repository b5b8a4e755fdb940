//! Behaviour every backend must share.

use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::sync::Arc;

use artifact_catalog::{ArtifactCatalog, ArtifactStatus, CatalogError};

use crate::{Backend, Thing};

fn each_backend(test: impl Fn(Backend, &Path)) {
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        test(backend, dir.path());
    }
}

#[test]
fn add_get_list_remove() {
    each_backend(|b, dir| {
        let c = b.open(dir);
        assert!(c.is_empty().unwrap());
        assert_eq!(c.get("a").unwrap(), None);
        let added = c.add(Thing::new("b")).unwrap();
        c.add(Thing::new("a")).unwrap();
        assert_eq!(added.last_accessed, None);
        assert_eq!(c.len().unwrap(), 2);
        assert!(c.contains("a").unwrap());
        assert!(!c.contains("c").unwrap());
        let got = c.get("b").unwrap().unwrap();
        assert_eq!(got.artifact, Thing::new("b"), "{}", b.name());
        assert_eq!(got.added_at, added.added_at, "{}", b.name());
        let ids: Vec<_> = c
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.artifact.id)
            .collect();
        assert_eq!(ids, ["a", "b"], "{}: ordered by id", b.name());
        assert!(c.remove("a").unwrap());
        assert!(!c.remove("a").unwrap());
        assert_eq!(c.len().unwrap(), 1);
        assert_eq!(c.get("a").unwrap(), None);
    });
}

#[test]
fn updates() {
    each_backend(|b, dir| {
        let c = b.open(dir);
        let added = c.add(Thing::new("x")).unwrap();
        let failed = ArtifactStatus::Failed {
            error: "sha256 mismatch".into(),
        };
        c.set_status("x", failed.clone()).unwrap();
        assert_eq!(c.get("x").unwrap().unwrap().artifact.status, failed);
        let touched = c.touch("x").unwrap();
        assert!(touched.last_accessed.is_some());
        let mut changed = Thing::new("x");
        changed.payload = "new".into();
        changed.size = 42;
        c.update(changed.clone()).unwrap();
        let got = c.get("x").unwrap().unwrap();
        assert_eq!(got.artifact, changed);
        assert_eq!(
            got.added_at,
            added.added_at,
            "{}: update keeps dates",
            b.name()
        );
        assert_eq!(got.last_accessed, touched.last_accessed);
        // absent entries
        assert!(matches!(
            c.set_status("nope", ArtifactStatus::Available),
            Err(CatalogError::NotFound { .. })
        ));
        assert!(matches!(
            c.update(Thing::new("nope")),
            Err(CatalogError::NotFound { .. })
        ));
        assert!(
            !c.contains("nope").unwrap(),
            "{}: update must not create",
            b.name()
        );
        // the id is fixed
        let err = c
            .modify("x", &mut |e| e.artifact.id = "y".into())
            .unwrap_err();
        assert!(matches!(err, CatalogError::InvalidId { .. }), "{err}");
        assert!(c.contains("x").unwrap() && !c.contains("y").unwrap());
    });
}

#[test]
fn duplicates_are_refused_and_change_nothing() {
    each_backend(|b, dir| {
        let c = b.open(dir);
        let mut first = Thing::new("dup").with_source("hf", "org/repo");
        first.payload = "first".into();
        c.add(first.clone()).unwrap();
        let mut second = Thing::new("dup");
        second.payload = "second".into();
        let err = c.add(second).unwrap_err();
        assert!(
            matches!(err, CatalogError::AlreadyExists { .. }),
            "{}: {err}",
            b.name()
        );
        assert!(err.to_string().contains("already in the catalog"));
        // the same source under another id
        let err = c
            .add(Thing::new("other").with_source("hf", "org/repo"))
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::SourceExists { .. }),
            "{}: {err}",
            b.name()
        );
        assert_eq!(c.len().unwrap(), 1);
        assert_eq!(c.get("dup").unwrap().unwrap().artifact, first);
        let found = c.find_by_source("hf", "org/repo").unwrap().unwrap();
        assert_eq!(found.artifact.id, "dup");
        assert_eq!(c.find_by_source("hf", "org/other").unwrap(), None);
        // a source moved onto another entry's source
        c.add(Thing::new("third").with_source("hf", "org/third"))
            .unwrap();
        let err = c
            .modify("third", &mut |e| {
                e.artifact.source = Some(("hf".into(), "org/repo".into()))
            })
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::SourceExists { .. }),
            "{}: {err}",
            b.name()
        );
        assert_eq!(
            c.find_by_source("hf", "org/third")
                .unwrap()
                .unwrap()
                .artifact
                .id,
            "third"
        );
    });
}

#[test]
fn reopening_keeps_everything() {
    each_backend(|b, dir| {
        let before = {
            let c = b.open(dir);
            for i in 0..20 {
                c.add(Thing::new(&format!("m{i:02}")).with_source("p", &format!("r{i}")))
                    .unwrap();
            }
            c.set_status("m03", ArtifactStatus::Available).unwrap();
            c.touch("m04").unwrap();
            c.remove("m05").unwrap();
            c.list().unwrap()
        };
        let c = b.open(dir);
        assert_eq!(c.list().unwrap(), before, "{}", b.name());
        assert_eq!(c.len().unwrap(), 19);
    });
}

#[test]
fn concurrent_threads() {
    each_backend(|b, dir| {
        let c: Arc<dyn ArtifactCatalog<Thing>> = Arc::from(b.open(dir));
        c.add(Thing::new("counter")).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let c = Arc::clone(&c);
                s.spawn(move || {
                    for i in 0..25 {
                        c.add(Thing::new(&format!("t{t}-{i}"))).unwrap();
                        c.modify("counter", &mut |e| {
                            let n: u64 = e.artifact.payload.parse().unwrap_or(0);
                            e.artifact.payload = (n + 1).to_string();
                        })
                        .unwrap();
                        let _ = c.list().unwrap();
                    }
                });
            }
        });
        assert_eq!(c.len().unwrap(), 101, "{}", b.name());
        let counter = c.get("counter").unwrap().unwrap();
        assert_eq!(
            counter.artifact.payload,
            "100",
            "{}: lost an update",
            b.name()
        );
    });
}

/// Every file below `dir`, relative to it.
fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn hostile_ids_are_stored_safely_or_refused() {
    let long = "x".repeat(10_000);
    let near_limit = "y".repeat(1024);
    let hostile = [
        "../x",
        "../../etc/passwd",
        "/abs/path",
        "a/b",
        "a/b-c",
        "a-b/c",
        ".",
        "..",
        ".hidden",
        "a\0b",
        "tab\there",
        "new\nline",
        &long,
        &near_limit,
        "模型/🦙",
        "e\u{301}",
        "%2F",
        "a%2Fb",
        "C:\\windows",
        " ",
        "hf:org/repo/file.gguf",
        "trailing/",
    ];
    each_backend(|b, dir| {
        let c = b.open(dir);
        let mut stored = BTreeSet::new();
        for id in hostile {
            let before = c.len().unwrap();
            match c.add(Thing::new(id)) {
                Ok(_) => {
                    assert!(stored.insert(id.to_owned()));
                    let got = c.get(id).unwrap().unwrap();
                    assert_eq!(got.artifact.id, id, "{}", b.name());
                }
                Err(CatalogError::InvalidId { reason, .. }) => {
                    assert!(!reason.is_empty());
                    assert_eq!(
                        c.len().unwrap(),
                        before,
                        "{}: {id:?} refused but changed",
                        b.name()
                    );
                    assert_eq!(c.get(id).unwrap(), None);
                }
                Err(e) => panic!("{}: {id:?}: {e}", b.name()),
            }
        }
        // every id that was stored reads back exactly, and nothing else is there
        let listed: BTreeSet<_> = c
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.artifact.id)
            .collect();
        assert_eq!(listed, stored, "{}", b.name());
        // the injective encoding: these pairs must not share an entry
        assert!(
            stored.contains("a/b-c") && stored.contains("a-b/c"),
            "{}",
            b.name()
        );
        assert!(
            stored.contains("a/b") && stored.contains("a%2Fb"),
            "{}",
            b.name()
        );
        // NUL, control characters and 10 kB ids are refused
        for refused in ["a\0b", "new\nline", long.as_str()] {
            assert!(!stored.contains(refused), "{}: {refused:?}", b.name());
        }
        // nothing was written outside the catalog's own location
        let top: BTreeSet<_> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !n.starts_with(&format!(
                    "{}",
                    b.location(dir).file_name().unwrap().to_string_lossy()
                ))
            })
            .collect();
        assert!(
            top.is_empty(),
            "{}: files outside the catalog: {top:?}",
            b.name()
        );
        if b == Backend::Filesystem {
            let root = b.location(dir);
            for f in files_below(&root) {
                let p = Path::new(&f);
                assert!(
                    p.components().all(|c| matches!(c, Component::Normal(_))),
                    "{f}"
                );
                assert!(
                    root.join(p)
                        .canonicalize()
                        .unwrap()
                        .starts_with(root.canonicalize().unwrap())
                );
                // each top-level folder is the encoding of a stored id
                let top = p.components().next().unwrap().as_os_str().to_str().unwrap();
                if top != ".catalog.lock" {
                    let id = artifact_catalog::decode_dir_name(top).unwrap();
                    assert!(stored.contains(&id), "{top}");
                }
            }
        }
        // and removal works for each
        for id in &stored {
            assert!(c.remove(id).unwrap(), "{}: {id:?}", b.name());
        }
        assert!(c.is_empty().unwrap());
    });
}

#[test]
fn filesystem_leftovers_of_a_crashed_writer_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let c = Backend::Filesystem.open(dir.path());
    let mut t = Thing::new("hf:org/repo/m.gguf");
    t.payload = "old".into();
    c.add(t.clone()).unwrap();
    let entry_dir = Backend::Filesystem
        .location(dir.path())
        .join(artifact_catalog::encode_dir_name("hf:org/repo/m.gguf").unwrap());
    // a writer died after writing half of its temporary file
    fs_err::write(
        entry_dir.join(".metadata.json.999.0.tmp"),
        b"{\"kind\": \"thi",
    )
    .unwrap();
    assert_eq!(c.get(&t.id).unwrap().unwrap().artifact.payload, "old");
    t.payload = "new".into();
    c.update(t.clone()).unwrap();
    assert_eq!(c.get(&t.id).unwrap().unwrap().artifact.payload, "new");
    let names: Vec<_> = fs_err::read_dir(&entry_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["metadata.json"],
        "the stale temporary file is cleaned up"
    );
}

#[test]
fn filesystem_one_corrupt_entry_hides_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let c = Backend::Filesystem.open(dir.path());
    c.add(Thing::new("good")).unwrap();
    c.add(Thing::new("bad")).unwrap();
    let bad = Backend::Filesystem
        .location(dir.path())
        .join("bad/metadata.json");
    fs_err::write(&bad, b"not json").unwrap();
    let ids: Vec<_> = c
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.artifact.id)
        .collect();
    assert_eq!(ids, ["good"]);
    let err = c.get("bad").unwrap_err();
    assert!(matches!(err, CatalogError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("bad/metadata.json"), "{err}");
    // a folder that is not an entry (no metadata.json, or a foreign name) is ignored
    fs_err::create_dir_all(Backend::Filesystem.location(dir.path()).join("%zz")).unwrap();
    assert_eq!(c.len().unwrap(), 1);
}

#[test]
fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = Backend::Sqlite.location(dir.path());
    drop(Backend::Sqlite.open(dir.path()));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = artifact_catalog::SqliteCatalog::<Thing>::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn kinds_sharing_a_database_stay_apart() {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Other(Thing);
    impl artifact_catalog::Artifact for Other {
        const KIND: &'static str = "other";
        fn id(&self) -> &str {
            &self.0.id
        }
        fn status(&self) -> &ArtifactStatus {
            &self.0.status
        }
        fn set_status(&mut self, s: ArtifactStatus) {
            self.0.status = s;
        }
        fn path(&self) -> &Path {
            &self.0.path
        }
        fn size(&self) -> u64 {
            self.0.size
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = Backend::Sqlite.location(dir.path());
    let things = artifact_catalog::SqliteCatalog::<Thing>::open(&path).unwrap();
    let others = artifact_catalog::SqliteCatalog::<Other>::open(&path).unwrap();
    things.add(Thing::new("same-id")).unwrap();
    others.add(Other(Thing::new("same-id"))).unwrap();
    others.add(Other(Thing::new("only-other"))).unwrap();
    assert_eq!(things.len().unwrap(), 1);
    assert_eq!(others.len().unwrap(), 2);
    assert!(things.remove("same-id").unwrap());
    assert!(others.contains("same-id").unwrap());
}

#[test]
fn a_generational_catalog_moves_at_every_write_and_only_then() {
    each_backend(|b, dir| {
        let c = artifact_catalog::Generational::new(b.open(dir));
        let mut last = c.generation();
        let mut moved = |c: &artifact_catalog::Generational<Thing>, what: &str| {
            let now = c.generation();
            assert!(now > last, "{}: {what} moved nothing", b.name());
            last = now;
        };
        c.add(Thing::new("a")).unwrap();
        moved(&c, "add");
        c.set_status("a", ArtifactStatus::Available).unwrap();
        moved(&c, "set_status");
        c.touch("a").unwrap();
        moved(&c, "touch");
        c.update(Thing::new("a")).unwrap();
        moved(&c, "update");
        c.modify("a", &mut |e| e.artifact.size = 7).unwrap();
        moved(&c, "modify");
        let before = c.generation();
        c.get("a").unwrap();
        c.list().unwrap();
        c.len().unwrap();
        c.contains("a").unwrap();
        c.find_by_source("p", "r").unwrap();
        assert_eq!(c.generation(), before, "{}: reads move nothing", b.name());
        c.remove("a").unwrap();
        assert!(c.generation() > before, "{}: remove", b.name());
    });
}

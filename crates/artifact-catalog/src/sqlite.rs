//! The SQLite backend: one table shared by every kind, in WAL mode.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::error::{CatalogError, shown_id};
use crate::id::validate_id;
use crate::{Artifact, ArtifactCatalog, ArtifactMetadata, Result};

/// Numbered schema migrations, applied in order at open. Never edit one that was
/// released: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the artifacts table
    "CREATE TABLE artifacts (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        provider TEXT,
        reference TEXT,
        status TEXT NOT NULL,
        size INTEGER NOT NULL,
        path TEXT NOT NULL,
        data TEXT NOT NULL,
        added_at TEXT NOT NULL,
        last_accessed TEXT,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX artifacts_source ON artifacts (kind, provider, reference)
        WHERE provider IS NOT NULL;",
    // 2: worker binaries name their engine; every one recorded before engines
    // existed is our own worker
    "UPDATE artifacts SET data = json_set(data, '$.engine', 'rbee')
        WHERE kind = 'worker' AND json_type(data, '$.engine') IS NULL;",
    // 3: rows that could not be read, kept aside rather than fatal
    "CREATE TABLE quarantine (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        data TEXT NOT NULL,
        reason TEXT NOT NULL,
        quarantined_at TEXT NOT NULL
    );",
];

/// How long a writer waits for another process's write before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The default catalog backend: an embedded SQLite database.
///
/// WAL mode lets readers run beside a writer; a busy timeout makes writers from
/// several processes take turns; every change is one transaction, so a crash at
/// any instant leaves the previous state or the new one.
#[derive(Debug)]
pub struct SqliteCatalog<T> {
    path: PathBuf,
    conn: Mutex<Connection>,
    _kind: PhantomData<fn() -> T>,
}

impl<T: Artifact> SqliteCatalog<T> {
    /// Opens (or creates) the database at `path` and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent)?;
        }
        let err = |error| CatalogError::Sqlite {
            path: path.clone(),
            error,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            _kind: PhantomData,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: every
        // change is a transaction, rolled back when dropped.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sql(&self, error: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    /// Runs `f` in a write transaction, taken at once so that two processes never
    /// both read and then both write.
    fn write<R>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R>) -> Result<R> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql(e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(out)
    }

    fn row_to_entry(&self, row: &Row<'_>) -> Result<ArtifactMetadata<T>> {
        let id: String = row.get(0).map_err(|e| self.sql(e))?;
        let data: String = row.get(1).map_err(|e| self.sql(e))?;
        let added: String = row.get(2).map_err(|e| self.sql(e))?;
        let accessed: Option<String> = row.get(3).map_err(|e| self.sql(e))?;
        let corrupt = |reason: String| CatalogError::Corrupt {
            path: self.path.clone(),
            reason: format!("{} {}: {reason}", T::KIND, shown_id(&id)),
        };
        let artifact: T = serde_json::from_str(&data).map_err(|e| corrupt(e.to_string()))?;
        let time = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| corrupt(format!("bad time {s:?}: {e}")))
        };
        Ok(ArtifactMetadata {
            artifact,
            added_at: time(&added)?,
            last_accessed: accessed.as_deref().map(time).transpose()?,
        })
    }

    fn select(&self, conn: &Connection, id: &str) -> Result<Option<ArtifactMetadata<T>>> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, data, added_at, last_accessed FROM artifacts WHERE kind = ?1 AND id = ?2",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt.query(params![T::KIND, id]).map_err(|e| self.sql(e))?;
        match rows.next().map_err(|e| self.sql(e))? {
            Some(row) => self.row_to_entry(row).map(Some),
            None => Ok(None),
        }
    }

    fn store(&self, tx: &Transaction<'_>, entry: &ArtifactMetadata<T>, insert: bool) -> Result<()> {
        let a = &entry.artifact;
        let data = serde_json::to_string(a).map_err(|e| CatalogError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode {} {}: {e}", T::KIND, shown_id(a.id())),
        })?;
        let (provider, reference) = a.source().unzip();
        let sql = if insert {
            "INSERT INTO artifacts (kind, id, provider, reference, status, size, path, data, added_at, last_accessed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        } else {
            "UPDATE artifacts SET provider = ?3, reference = ?4, status = ?5, size = ?6, path = ?7,
             data = ?8, added_at = ?9, last_accessed = ?10 WHERE kind = ?1 AND id = ?2"
        };
        let result = tx.execute(
            sql,
            params![
                T::KIND,
                a.id(),
                provider,
                reference,
                a.status().name(),
                i64::try_from(a.size()).unwrap_or(i64::MAX),
                a.path().to_string_lossy(),
                data,
                rfc3339(entry.added_at),
                entry.last_accessed.map(rfc3339),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(self.conflict(tx, a))
            }
            Err(e) => Err(self.sql(e)),
        }
    }

    /// The error for an insert that broke a uniqueness rule: which one.
    fn conflict(&self, tx: &Transaction<'_>, a: &T) -> CatalogError {
        if let Some((provider, reference)) = a.source() {
            let holder: Option<String> = tx
                .query_row(
                    "SELECT id FROM artifacts WHERE kind = ?1 AND provider = ?2 AND reference = ?3",
                    params![T::KIND, provider, reference],
                    |r| r.get(0),
                )
                .optional()
                .unwrap_or(None);
            if let Some(id) = holder.filter(|h| h != a.id()) {
                return CatalogError::SourceExists {
                    kind: T::KIND,
                    provider: provider.to_owned(),
                    reference: reference.to_owned(),
                    id,
                };
            }
        }
        CatalogError::AlreadyExists {
            kind: T::KIND,
            id: shown_id(a.id()),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |error| CatalogError::Sqlite {
        path: path.to_path_buf(),
        error,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(CatalogError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

impl<T: Artifact> ArtifactCatalog<T> for SqliteCatalog<T> {
    fn add(&self, artifact: T) -> Result<ArtifactMetadata<T>> {
        validate_id(artifact.id())?;
        let entry = ArtifactMetadata {
            artifact,
            added_at: crate::now(),
            last_accessed: None,
        };
        self.write(|tx| self.store(tx, &entry, true))?;
        Ok(entry)
    }

    fn get(&self, id: &str) -> Result<Option<ArtifactMetadata<T>>> {
        let conn = self.conn();
        self.select(&conn, id)
    }

    fn quarantine(&self) -> Result<Vec<crate::Quarantined>> {
        self.write(|tx| {
            let mut bad = Vec::new();
            {
                let mut stmt = tx
                    .prepare("SELECT id, data, added_at, last_accessed FROM artifacts WHERE kind = ?1")
                    .map_err(|e| self.sql(e))?;
                let mut rows = stmt.query(params![T::KIND]).map_err(|e| self.sql(e))?;
                while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
                    if let Err(e) = self.row_to_entry(row) {
                        let id: String = row.get(0).map_err(|e| self.sql(e))?;
                        let data: String = row.get(1).unwrap_or_default();
                        bad.push((id, data, e.to_string()));
                    }
                }
            }
            for (id, data, reason) in &bad {
                tx.execute(
                    "INSERT INTO quarantine (kind, id, data, reason, quarantined_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![T::KIND, id, data, reason, rfc3339(Utc::now())],
                )
                .map_err(|e| self.sql(e))?;
                tx.execute(
                    "DELETE FROM artifacts WHERE kind = ?1 AND id = ?2",
                    params![T::KIND, id],
                )
                .map_err(|e| self.sql(e))?;
            }
            let mut stmt = tx
                .prepare("SELECT id, reason, quarantined_at FROM quarantine WHERE kind = ?1 ORDER BY quarantined_at")
                .map_err(|e| self.sql(e))?;
            let all = stmt
                .query_map(params![T::KIND], |r| {
                    Ok(crate::Quarantined {
                        kind: T::KIND,
                        id: r.get(0)?,
                        reason: r.get(1)?,
                        at: r.get(2)?,
                    })
                })
                .map_err(|e| self.sql(e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| self.sql(e))?;
            Ok(all)
        })
    }

    fn list(&self) -> Result<Vec<ArtifactMetadata<T>>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, data, added_at, last_accessed FROM artifacts WHERE kind = ?1 ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt.query(params![T::KIND]).map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            out.push(self.row_to_entry(row)?);
        }
        Ok(out)
    }

    fn remove(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM artifacts WHERE kind = ?1 AND id = ?2",
                params![T::KIND, id],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sql(e))
        })
    }

    fn len(&self) -> Result<usize> {
        let conn = self.conn();
        conn.query_row(
            "SELECT COUNT(*) FROM artifacts WHERE kind = ?1",
            params![T::KIND],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| usize::try_from(n).unwrap_or(0))
        .map_err(|e| self.sql(e))
    }

    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut ArtifactMetadata<T>),
    ) -> Result<ArtifactMetadata<T>> {
        self.write(|tx| {
            let mut entry = self.select(tx, id)?.ok_or_else(|| CatalogError::NotFound {
                kind: T::KIND,
                id: shown_id(id),
            })?;
            change(&mut entry);
            if entry.artifact.id() != id {
                return Err(CatalogError::InvalidId {
                    id: shown_id(entry.artifact.id()),
                    reason: format!("an entry's id cannot change (it was {})", shown_id(id)),
                });
            }
            self.store(tx, &entry, false)?;
            Ok(entry)
        })
    }

    fn find_by_source(
        &self,
        provider: &str,
        reference: &str,
    ) -> Result<Option<ArtifactMetadata<T>>> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "SELECT id FROM artifacts WHERE kind = ?1 AND provider = ?2 AND reference = ?3",
                params![T::KIND, provider, reference],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        match id {
            Some(id) => self.select(&conn, &id),
            None => Ok(None),
        }
    }
}

use std::path::PathBuf;

/// What can go wrong in a catalog.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum CatalogError {
    #[error("{kind} {id:?} is already in the catalog")]
    AlreadyExists { kind: &'static str, id: String },

    #[error("{kind} {provider}:{reference} is already in the catalog as {id:?}")]
    SourceExists {
        kind: &'static str,
        provider: String,
        reference: String,
        id: String,
    },

    #[error("{kind} {id:?} is not in the catalog")]
    NotFound { kind: &'static str, id: String },

    #[error("invalid id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },

    #[error(
        "catalog folder {path} already holds {existing:?}, which is not {id:?} (a case-insensitive filesystem?)"
    )]
    FolderCollision {
        path: PathBuf,
        id: String,
        existing: String,
    },

    // the cause is in the message, not a source: shown once, not twice
    #[error("catalog database {path}: {error}")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },

    #[error(
        "catalog database {path} has schema version {found}, newer than this build knows ({known}): upgrade rbee"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("corrupt catalog entry in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CatalogError {
    /// Whether the database file itself is damaged (not a database, or malformed):
    /// moving it aside and re-adopting the models is the way forward.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            Self::Sqlite {
                error: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if matches!(
                e.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            )
        )
    }
}

/// Ids can be long and hostile: errors show at most this many characters of one.
const SHOWN_ID_CHARS: usize = 120;

pub(crate) fn shown_id(id: &str) -> String {
    if id.chars().count() <= SHOWN_ID_CHARS {
        id.to_owned()
    } else {
        let head: String = id.chars().take(SHOWN_ID_CHARS).collect();
        format!("{head}… ({} bytes)", id.len())
    }
}

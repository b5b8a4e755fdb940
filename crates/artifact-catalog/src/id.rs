//! Ids and the folder names derived from them.

use crate::error::{CatalogError, shown_id};

/// The longest id, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// The longest folder name most filesystems allow.
const MAX_DIR_NAME: usize = 255;

/// Checks an id: not empty, at most [`MAX_ID_LEN`] bytes, no control characters
/// (NUL, newlines). Both backends refuse the same ids.
pub fn validate_id(id: &str) -> Result<(), CatalogError> {
    let reason = if id.is_empty() {
        "it is empty".to_owned()
    } else if id.len() > MAX_ID_LEN {
        format!("it is {} bytes long, at most {MAX_ID_LEN}", id.len())
    } else if let Some(c) = id.chars().find(|c| c.is_control()) {
        format!("it contains the control character {c:?}")
    } else {
        return Ok(());
    };
    Err(CatalogError::InvalidId {
        id: shown_id(id),
        reason,
    })
}

/// The bytes a folder name writes `%XX`: all but letters, digits, `-`, `_` and `.`.
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// The folder name of an id: letters, digits, `-`, `_` and `.` (not first) are
/// kept, every other byte is written `%XX`. The encoding is injective and
/// reversible ([`decode_dir_name`]), and its result is never empty, `.`, `..`,
/// hidden, or holds a `/` or NUL: it cannot leave its parent folder.
pub fn encode_dir_name(id: &str) -> Result<String, CatalogError> {
    validate_id(id)?;
    let mut out = percent_encoding::utf8_percent_encode(id, ENCODED).to_string();
    // a leading `.` would make the folder hidden, or `.`/`..`
    if let Some(rest) = out.strip_prefix('.') {
        out = format!("%2E{rest}");
    }
    if out.len() > MAX_DIR_NAME {
        return Err(CatalogError::InvalidId {
            id: shown_id(id),
            reason: format!(
                "its folder name would be {} bytes, at most {MAX_DIR_NAME}",
                out.len()
            ),
        });
    }
    Ok(out)
}

/// The id of a folder name made by [`encode_dir_name`]; `None` for any other name.
pub fn decode_dir_name(name: &str) -> Option<String> {
    let id = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?
        .into_owned();
    // Only the canonical spelling decodes, so no two names give one id.
    (encode_dir_name(&id).ok()? == name).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let check = |id: &str, dir: &str| {
            assert_eq!(encode_dir_name(id).unwrap(), dir, "{id}");
            assert_eq!(decode_dir_name(dir).as_deref(), Some(id), "{dir}");
        };
        check("hf:org/repo/model.gguf", "hf%3Aorg%2Frepo%2Fmodel.gguf");
        check("a/b-c", "a%2Fb-c");
        check("a-b/c", "a-b%2Fc");
        check("..", "%2E.");
        check(".hidden", "%2Ehidden");
        check("100%", "100%25");
        check("ü", "%C3%BC");
    }

    #[test]
    fn refuses() {
        for id in [
            "",
            "a\0b",
            "line\nbreak",
            &"x".repeat(MAX_ID_LEN + 1),
            &"/".repeat(100),
        ] {
            assert!(encode_dir_name(id).is_err(), "{id:?}");
        }
        for name in ["a%2fb", "%2", "%ZZ", "a/b", ".", "..", "%2e.", "%FF", "%00"] {
            assert_eq!(decode_dir_name(name), None, "{name}");
        }
    }
}

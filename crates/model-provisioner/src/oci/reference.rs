//! `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`, parsed by the distribution spec's
//! grammar: repository components of lowercase letters and digits joined by `.`,
//! `_`, `__` or dashes; tags of at most 128 word characters, dots and dashes, not
//! starting with either.

use crate::ProvisionError;

/// A model on a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// `org/model`.
    pub repository: String,
    /// The tag, `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// `sha256:HEX`, when given.
    pub digest: Option<String>,
}

fn invalid(reference: &str, reason: impl Into<String>) -> ProvisionError {
    ProvisionError::InvalidReference {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // separators: '.', '_', '__' or any run of '-', each between alphanumerics
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    name_ok && port_ok
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub(crate) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
    })
}

impl OciReference {
    /// Parses a reference that starts with `oci://`.
    pub fn parse(reference: &str) -> Result<Self, ProvisionError> {
        let rest = reference
            .trim()
            .strip_prefix("oci://")
            .ok_or_else(|| invalid(reference, "it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid(reference, "expected oci://HOST[:PORT]/REPO:TAG"))?;
        if !valid_host(registry) {
            return Err(invalid(
                reference,
                format!("bad registry host {registry:?}"),
            ));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                if !valid_digest(d) {
                    return Err(invalid(
                        reference,
                        format!("bad digest {d:?}: expected sha256: and 64 hex digits"),
                    ));
                }
                (p, Some(d.to_owned()))
            }
            None => (path, None),
        };
        // a tag's ':' comes after the last '/'
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t)),
            _ => (path, None),
        };
        if repository.is_empty() || repository.len() > 255 {
            return Err(invalid(reference, "expected a repository after the host"));
        }
        if let Some(bad) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(invalid(
                reference,
                format!(
                    "bad repository component {bad:?}: lowercase letters and digits, joined by '.', '_', '__' or '-'"
                ),
            ));
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(invalid(reference, format!("bad tag {t:?}")));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// What the manifest is asked for by: the digest when given, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for OciReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = OciReference::parse("oci://127.0.0.1:5000/models/smollm2:135m-q4_1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "models/smollm2");
        assert_eq!(r.tag.as_deref(), Some("135m-q4_1"));
        assert_eq!(
            r.to_string(),
            "oci://127.0.0.1:5000/models/smollm2:135m-q4_1"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciReference::parse(&format!("oci://ghcr.io/o/m@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        let r = OciReference::parse("oci://reg.lan/m").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        for bad in [
            "oci://",
            "oci://host",
            "oci://host/",
            "oci://ho st/m",
            "oci://host:99999/m",
            "oci://host/Model",
            "oci://host/m:",
            "oci://host/m:.x",
            "oci://host/m@sha256:abc",
            "oci://host/m@md5:aaaa",
            "oci://host/a//b",
            "oci://host/-m",
            "oci://host/m..n",
            "oci://host/m:tag/x",
            "host/m:tag",
        ] {
            assert!(OciReference::parse(bad).is_err(), "{bad}");
        }
    }
}

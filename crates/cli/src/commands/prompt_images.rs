//! Image files named in a prompt, as `ollama run` takes them: a word of the prompt
//! that is the path of an image file (`.png`, `.jpg`, `.jpeg`, `.webp`, `.gif`,
//! `.bmp`; quoted, with `~/` for the home folder, or ending a sentence) is read, sent with the message
//! as base64, and taken out of the text. Only for a model that sees; for others the
//! prompt goes as typed.

use std::path::{Path, PathBuf};

use anyhow::bail;
use base64::Engine as _;

/// The largest image file sent (the hive takes 16 MiB of request, and base64 adds a
/// third).
pub const IMAGE_MAX_BYTES: u64 = 10 << 20;

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp"];

/// A word as a path: without the punctuation after it and the quotes around it,
/// `~/` as the home folder.
fn as_path(word: &str) -> PathBuf {
    let word = word.trim_end_matches(['?', '!', ',', ';', ':', '.']);
    let word = word
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .or_else(|| word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')))
        .unwrap_or(word);
    match (word.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(word),
    }
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The prompt without the image files it names, and those files' bytes as base64,
/// in the order named. A named file that cannot be read, or is too big, is an error.
pub fn take(text: &str) -> anyhow::Result<(String, Vec<(PathBuf, String)>)> {
    let mut rest = text.to_owned();
    let mut images = Vec::new();
    for word in text.split_whitespace() {
        let path = as_path(word);
        if !is_image_name(&path) || !path.is_file() {
            continue;
        }
        let size = fs_err::metadata(&path)?.len();
        if size > IMAGE_MAX_BYTES {
            bail!(
                "{} is {} MiB: an image is at most {} MiB",
                path.display(),
                size >> 20,
                IMAGE_MAX_BYTES >> 20
            );
        }
        let bytes = fs_err::read(&path)?;
        images.push((
            path,
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ));
        if let Some(at) = rest.find(word) {
            rest.replace_range(at..at + word.len(), "");
        }
    }
    let rest = if images.is_empty() {
        rest
    } else {
        rest.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    Ok((rest, images))
}

#[cfg(test)]
mod tests {
    use super::take;

    #[test]
    fn image_files_named_in_a_prompt_are_taken_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("cat.PNG");
        fs_err::write(&png, b"\x89PNG\r\n\x1a\n").unwrap();
        let spaced = dir.path().join("my dog.jpg");
        fs_err::write(&spaced, b"\xff\xd8\xff").unwrap();
        let text = format!(
            "What is in {} ? and \"{}\"",
            png.display(),
            dir.path().join("none.png").display()
        );
        let (rest, images) = take(&text).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].0, png);
        assert_eq!(images[0].1, "iVBORw0KGgo=");
        // a missing file stays a word of the prompt
        assert!(rest.starts_with("What is in ? and \""), "{rest}");
        assert!(rest.contains("none.png"), "{rest}");
        // no image: the prompt as typed, lines and all
        let (rest, images) = take("line one\n  line two.png").unwrap();
        assert_eq!(
            (rest.as_str(), images.len()),
            ("line one\n  line two.png", 0)
        );
        // quoted, or ending a question
        let (rest, images) = take(&format!("'{}' describe", png.display())).unwrap();
        assert_eq!((rest.as_str(), images.len()), ("describe", 1));
        let (rest, images) = take(&format!("What is in {}?", png.display())).unwrap();
        assert_eq!((rest.as_str(), images.len()), ("What is in", 1));
        // a path with a space needs its own quoting, as a shell's: not taken here
        assert_eq!(take(&spaced.display().to_string()).unwrap().1.len(), 0);
    }

    #[test]
    fn an_image_too_big_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.png");
        let f = fs_err::File::create(&big).unwrap();
        f.set_len(super::IMAGE_MAX_BYTES + 1).unwrap();
        let e = take(&format!("see {}", big.display())).unwrap_err();
        assert!(e.to_string().contains("at most 10 MiB"), "{e}");
    }
}

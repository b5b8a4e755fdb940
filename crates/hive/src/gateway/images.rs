//! Images in requests, in each family's shape: OpenAI's `image_url` content parts,
//! Anthropic's `image` blocks, Ollama's `images` (base64). Each must be an image
//! carried in the request itself (a `data:` URL or base64 with an image's own
//! bytes), or, with `--allow-remote-images`, an `http(s)` URL the hive fetches
//! ([`super::image_fetch`]) once the model is known to see. A request with one goes
//! only to a model paired with a projector that sees.

use axum::http::StatusCode;
use base64::Engine as _;
use model_catalog::ModelEntry;
use serde_json::{Value, json};

use super::GatewayError;

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::new(StatusCode::BAD_REQUEST, "invalid_image", message)
}

/// The media type of an image's bytes, from their first bytes; `None` for what is
/// not an image llama.cpp reads.
pub(super) fn sniff(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some("image/webp"),
        [b'B', b'M', ..] => Some("image/bmp"),
        _ => None,
    }
}

/// Base64 that holds an image: its media type.
fn image_of(base64_text: &str, what: &str) -> Result<&'static str, GatewayError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text.trim())
        .map_err(|e| bad(format!("{what} is not base64: {e}")))?;
    sniff(&bytes).ok_or_else(|| {
        bad(format!(
            "{what} is not an image (PNG, JPEG, GIF, WebP or BMP)"
        ))
    })
}

/// Whether a URL is one the hive fetches when `--allow-remote-images` is set.
fn is_remote(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// A `data:` URL of an image, checked, or an `http(s)` URL where `remote` allows
/// it (fetched and checked later); anything else is refused.
fn data_url(url: &str, remote: bool) -> Result<(), GatewayError> {
    if remote && is_remote(url) {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(bad(
            "image_url must be a data: URL (data:image/png;base64,...): the hive fetches no image on a request's behalf unless started with --allow-remote-images",
        ));
    };
    let Some((_, payload)) = rest.split_once(";base64,") else {
        return Err(bad(
            "an image's data: URL must be base64 (data:image/png;base64,...)",
        ));
    };
    image_of(payload, "the image_url's data")?;
    Ok(())
}

/// Checks the images of an OpenAI-shaped body (chat messages' `image_url` parts,
/// the Responses API's `input_image`); how many there are. `remote`: whether
/// `http(s)` URLs are taken.
pub fn in_openai(body: &Value, remote: bool) -> Result<usize, GatewayError> {
    let mut n = 0;
    let lists = [body.get("messages"), body.get("input")];
    for list in lists.into_iter().flatten().filter_map(Value::as_array) {
        for message in list {
            let Some(parts) = message.get("content").and_then(Value::as_array) else {
                continue;
            };
            for part in parts {
                match part["type"].as_str() {
                    Some("image_url") => {
                        let url = part["image_url"]["url"]
                            .as_str()
                            .or_else(|| part["image_url"].as_str())
                            .ok_or_else(|| bad("an image_url part needs image_url.url"))?;
                        data_url(url, remote)?;
                        n += 1;
                    }
                    Some("input_image") => {
                        let url = part["image_url"]
                            .as_str()
                            .ok_or_else(|| bad("an input_image part needs image_url"))?;
                        data_url(url, remote)?;
                        n += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(n)
}

/// Checks the images of an Anthropic Messages body (`image` blocks with a base64
/// source, or a `url` one where `remote` allows); how many there are.
pub fn in_anthropic(body: &Value, remote: bool) -> Result<usize, GatewayError> {
    let mut n = 0;
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] != "image" {
                continue;
            }
            let source = &block["source"];
            if remote && source["type"] == "url" && source["url"].as_str().is_some_and(is_remote) {
                n += 1;
                continue;
            }
            if source["type"] != "base64" {
                return Err(bad(
                    "an image block's source must be base64: the hive fetches no image on a request's behalf unless started with --allow-remote-images",
                ));
            }
            let data = source["data"]
                .as_str()
                .ok_or_else(|| bad("an image block needs source.data"))?;
            image_of(data, "the image block's data")?;
            n += 1;
        }
    }
    Ok(n)
}

/// Ollama's `images` field, when it holds any (not absent, `null` or `[]`).
pub fn given(images: Option<&Value>) -> Option<&Value> {
    images.filter(|i| !i.is_null() && i.as_array().is_none_or(|a| !a.is_empty()))
}

/// Ollama's `images` (base64 strings) as OpenAI content parts after `text`.
pub fn ollama_parts(text: &str, images: &Value) -> Result<Value, GatewayError> {
    let Some(list) = images.as_array() else {
        return Err(bad(format!(
            "images must be a list of base64 strings, got {images}"
        )));
    };
    let mut parts = vec![json!({"type": "text", "text": text})];
    for (i, image) in list.iter().enumerate() {
        let data = image
            .as_str()
            .ok_or_else(|| bad(format!("images[{i}] must be a base64 string")))?;
        let kind = image_of(data, &format!("images[{i}]"))?;
        parts.push(json!({"type": "image_url", "image_url": {"url": format!("data:{kind};base64,{}", data.trim())}}));
    }
    Ok(Value::Array(parts))
}

/// Whether the model sees images: its capabilities say `vision`.
pub fn sees(model: &ModelEntry) -> bool {
    crate::engines::capabilities(model).contains(&"vision")
}

/// A request with `count` images may go to `model`: a 400 when it cannot see.
pub fn check(model: &ModelEntry, count: usize) -> Result<(), GatewayError> {
    if count == 0 || sees(model) {
        return Ok(());
    }
    if model.projector.is_some()
        && model.preset.engine.as_deref() == Some(worker_catalog::Engine::Rbee.as_str())
    {
        return Err(bad(format!(
            "{} runs on llm-worker-rbee, which has no vision; llama.cpp's server does (rbee models set {} --engine llama.cpp)",
            model.alias(),
            model.alias()
        )));
    }
    if model.preset.no_mmproj && model.projector.is_some() {
        return Err(bad(format!(
            "{} runs without its projector (its preset sets no_mmproj), so it cannot read images: rbee models set {} --clear no_mmproj",
            model.alias(),
            model.alias()
        )));
    }
    Err(bad(format!(
        "{} has no vision projector, so it cannot read images: pair one (rbee models import MODEL --mmproj FILE, or POST /v1/models/mmproj)",
        model.alias()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn only_images_carried_in_the_request_pass() {
        let ok = format!("data:image/png;base64,{}", b64(PNG));
        let chat = |url: &str| json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}]});
        assert_eq!(in_openai(&chat(&ok), false).map_err(|e| e.message), Ok(1));
        for (url, words) in [
            ("https://example.com/cat.png", "fetches no image"),
            ("data:image/png,raw", "must be base64"),
            ("data:image/png;base64,%%%", "not base64"),
            (
                &format!("data:image/png;base64,{}", b64(b"hello")),
                "not an image",
            ),
        ] {
            let e = in_openai(&chat(url), false).unwrap_err();
            assert!(e.message.contains(words), "{url}: {}", e.message);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        assert_eq!(
            in_openai(
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
                false
            )
            .map_err(|e| e.message),
            Ok(0)
        );
        let message = |source: Value| json!({"messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]});
        assert_eq!(
            in_anthropic(
                &message(json!({"type": "base64", "media_type": "image/png", "data": b64(PNG)})),
                false
            )
            .map_err(|e| e.message),
            Ok(1)
        );
        let url = message(json!({"type": "url", "url": "https://x"}));
        assert!(in_anthropic(&url, false).is_err());
        // with --allow-remote-images, a URL counts, to be fetched once the model sees
        assert_eq!(in_anthropic(&url, true).map_err(|e| e.message), Ok(1));
        assert_eq!(
            in_openai(&chat("https://example.com/cat.png"), true).map_err(|e| e.message),
            Ok(1)
        );
        assert!(in_openai(&chat("ftp://example.com/cat.png"), true).is_err());
        let parts = ollama_parts("what?", &json!([b64(PNG)])).unwrap_or_default();
        assert_eq!(
            parts[1]["image_url"]["url"],
            json!(format!("data:image/png;base64,{}", b64(PNG)))
        );
        assert!(ollama_parts("what?", &json!([b64(b"GIF")])).is_err());
        assert!(ollama_parts("what?", &json!("x")).is_err());
    }
}

//! Ollama's `/api/create` and `/api/copy`: a new name over a model already here,
//! with a system prompt and sampling parameters, and no copy of the weights
//! ([`crate::ops::derived`]). `/api/create` takes Ollama's fields (`from`, `system`,
//! `parameters`) or a Modelfile's text (`modelfile`: `FROM`, `SYSTEM`, `PARAMETER`).
//! What the hive cannot honour (a Go `TEMPLATE`, an `ADAPTER`, `MESSAGE`s, uploaded
//! `files`, `quantize`) is a 400 that says why, and nothing is made.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::ollama::{Answer, OllamaError, bad, model_name, ndjson, ndjson_response, parse};
use super::{GatewayError, SharedGateway, names};
use crate::ops::derived::Derive;

/// The routes.
pub fn router() -> axum::Router<SharedGateway> {
    axum::Router::new()
        .route("/api/create", axum::routing::post(create))
        .route("/api/copy", axum::routing::post(copy))
}

/// What a Modelfile says, of what the hive takes.
#[derive(Debug, Default, PartialEq)]
pub struct Modelfile {
    /// `FROM`: the model it is made over.
    pub from: Option<String>,
    /// `SYSTEM`.
    pub system: Option<String>,
    /// `PARAMETER`s, `stop` gathered into a list.
    pub parameters: BTreeMap<String, Value>,
}

/// Why a field or instruction is refused.
fn not_served(what: &str) -> String {
    match what {
        "template" => "TEMPLATE: a Go template is not applied here; the model's own chat template (in its GGUF) is".to_owned(),
        "adapter" | "adapters" => "ADAPTER: LoRA adapters are not served".to_owned(),
        "message" | "messages" => "MESSAGE: a conversation kept with the model is not served; send it with each request".to_owned(),
        "files" => "files: a model is made over one already here; pull or import its GGUF first (rbee models import FILE), then create FROM it".to_owned(),
        "quantize" => "quantize: models are not quantized here; pull the quantization you want".to_owned(),
        other => format!("{other} is not served"),
    }
}

/// A Modelfile's text, read: one instruction per line (`#` starts a comment), a
/// value in `"""` quotes may span lines.
pub fn read(text: &str) -> Result<Modelfile, String> {
    let mut out = Modelfile::default();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let mut value = rest.trim().to_owned();
        if let Some(open) = value.strip_prefix("\"\"\"") {
            let mut whole = open.to_owned();
            while !whole.ends_with("\"\"\"") {
                let Some(next) = lines.next() else {
                    return Err(format!("{word}: a \"\"\" is never closed"));
                };
                whole.push('\n');
                whole.push_str(next);
            }
            value = whole.trim_end_matches("\"\"\"").to_owned();
        } else if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value = value[1..value.len() - 1].to_owned();
        }
        match word.to_ascii_uppercase().as_str() {
            "FROM" => out.from = Some(value),
            "SYSTEM" => out.system = Some(value),
            "PARAMETER" => {
                let (name, raw) = rest
                    .trim()
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("PARAMETER {rest:?}: expected PARAMETER NAME VALUE"))?;
                let v = crate::sampling::from_text(name, raw)
                    .map_err(|e| if name == "num_ctx" { num_ctx() } else { e })?;
                if name == "stop" {
                    let list = out
                        .parameters
                        .entry("stop".to_owned())
                        .or_insert_with(|| json!([]));
                    if let Some(l) = list.as_array_mut() {
                        l.push(v);
                    }
                } else {
                    out.parameters.insert(name.to_owned(), v);
                }
            }
            // informational: kept nowhere, changes nothing
            "LICENSE" | "REQUIRES" => {}
            other => return Err(not_served(&other.to_ascii_lowercase())),
        }
    }
    Ok(out)
}

fn num_ctx() -> String {
    "num_ctx: the context belongs to the model it is made from (rbee models set MODEL --context N)"
        .to_owned()
}

/// `/api/create`: a model made over one here. Streams Ollama's status lines unless
/// `stream` is false.
#[utoipa::path(post, operation_id = "ollama_create", path = "/api/create", tag = "ollama", request_body = Object, responses((status = 200, description = "The model is made: its status, whole or as NDJSON", content((Object = "application/json"), (Object = "application/x-ndjson"))), (status = 400, description = "What cannot be honoured here", body = crate::error::OllamaErrorBody), (status = 404, description = "No model to make it from", body = crate::error::OllamaErrorBody), (status = 409, description = "The name is a model of its own", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn create(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let name = model_name(&body)?;
    let stream = super::ollama::stream_flag(&body)?;
    for field in ["template", "adapters", "messages", "files", "quantize"] {
        if body
            .get(field)
            .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]) && v != &json!({}))
        {
            return Err(bad(not_served(field)));
        }
    }
    let text = match body.get("modelfile") {
        None | Some(Value::Null) => Modelfile::default(),
        Some(Value::String(t)) => read(t).map_err(bad)?,
        Some(other) => return Err(bad(format!("modelfile must be a string, got {other}"))),
    };
    let from = match body.get("from") {
        None | Some(Value::Null) => text.from.clone(),
        Some(Value::String(f)) => Some(f.clone()),
        Some(other) => return Err(bad(format!("from must be a model's name, got {other}"))),
    }
    .ok_or_else(|| {
        bad("from is required: the model this one is made over (FROM in a Modelfile)")
    })?;
    let system = match body.get("system") {
        None | Some(Value::Null) => text.system.clone(),
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(bad(format!("system must be a string, got {other}"))),
    };
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => (!text.parameters.is_empty()).then(|| text.parameters.clone()),
        Some(Value::Object(m)) => {
            if m.contains_key("num_ctx") {
                return Err(bad(num_ctx()));
            }
            Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        Some(other) => return Err(bad(format!("parameters must be an object, got {other}"))),
    };
    let base = available(&state, &from).await?;
    let made = crate::ops::derived::derive(
        &state.hive,
        base,
        Derive {
            name,
            system,
            parameters,
        },
    )
    .await
    .map_err(GatewayError::from)?;
    let lines = [
        json!({"status": format!("using the weights of {from}")}),
        json!({"status": format!("writing {}", made.id)}),
        json!({"status": "success"}),
    ];
    if !stream {
        return Ok(axum::Json(json!({"status": "success"})).into_response());
    }
    let out: Vec<Result<Bytes, std::io::Error>> = lines.iter().map(|l| Ok(ndjson(l))).collect();
    ndjson_response(Body::from_stream(futures_util::stream::iter(out)))
}

/// `/api/copy`: `destination` becomes another name for `source`, with its system
/// prompt and parameters. An empty 200, as Ollama answers.
#[utoipa::path(post, operation_id = "ollama_copy", path = "/api/copy", tag = "ollama", request_body = Object, responses((status = 200, description = "Copied"), (status = 404, description = "No such model", body = crate::error::OllamaErrorBody), (status = 409, description = "The destination is a model of its own", body = crate::error::OllamaErrorBody)))]
pub(crate) async fn copy(
    State(state): State<SharedGateway>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = parse(bytes)?;
    let field = |k: &str| match body.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad(format!("{k} is required"))),
        Some(other) => Err(bad(format!("{k} must be a model's name, got {other}"))),
    };
    let (source, destination) = (field("source")?, field("destination")?);
    let base = available(&state, &source).await?;
    crate::ops::derived::derive(
        &state.hive,
        base,
        Derive {
            name: destination,
            system: None,
            parameters: None,
        },
    )
    .await
    .map_err(GatewayError::from)?;
    Ok(StatusCode::OK.into_response())
}

/// The available model `name` names here (nothing is pulled), or a 404.
async fn available(
    state: &SharedGateway,
    name: &str,
) -> Result<model_catalog::ModelEntry, OllamaError> {
    match names::find(state, name).await? {
        Some(m) if m.status == artifact_catalog::ArtifactStatus::Available => Ok(m),
        Some(m) => Err(OllamaError(GatewayError::new(
            StatusCode::CONFLICT,
            "model_not_ready",
            format!("model {:?} is not available yet", m.id),
        ))),
        None => Err(OllamaError(GatewayError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("model {name:?} not found: pull it first"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modelfile_is_read_and_what_is_not_served_is_refused() {
        let m = read(
            "# a comment\nFROM smollm2:q4_1\nSYSTEM \"\"\"You are Mario.\nAlways.\"\"\"\nPARAMETER temperature 0.3\nPARAMETER stop \"<|im_end|>\"\nPARAMETER stop <end>\nLICENSE MIT\n",
        )
        .unwrap_or_default();
        assert_eq!(m.from.as_deref(), Some("smollm2:q4_1"));
        assert_eq!(m.system.as_deref(), Some("You are Mario.\nAlways."));
        assert_eq!(m.parameters["temperature"], json!(0.3));
        assert_eq!(m.parameters["stop"], json!(["<|im_end|>", "<end>"]));
        for (text, words) in [
            ("FROM x\nTEMPLATE {{ .Prompt }}", "Go template"),
            ("FROM x\nADAPTER ./lora.gguf", "LoRA"),
            ("FROM x\nMESSAGE user hi", "MESSAGE"),
            ("FROM x\nPARAMETER mirostat 1", "unknown parameter"),
            ("FROM x\nPARAMETER num_ctx 8192", "--context"),
            ("FROM x\nPARAMETER temperature hot", "a number"),
            ("FROM x\nSYSTEM \"\"\"never closed", "never closed"),
            ("FROM x\nBOGUS 1", "bogus"),
        ] {
            let e = read(text).unwrap_err();
            assert!(e.contains(words), "{text:?} → {e}");
        }
    }
}

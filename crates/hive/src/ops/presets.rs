//! A model's preset (`PATCH /v1/models/{id}`, `rbee models set`): how every spawn,
//! load and request through the one endpoint runs it. A patch names the fields it
//! changes; `null` clears one. Each value is checked before anything is stored, and a
//! bad one changes nothing.

use std::sync::Arc;

use axum::http::StatusCode;
use model_catalog::Preset;
use serde_json::{Map, Value, json};
use worker_catalog::{ArtifactStatus, Engine};

use crate::error::ApiError;
use crate::ops::blocking;
use crate::state::SharedState;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_preset", message)
}

/// The preset after `patch`, checked against everything but the catalog.
fn apply(mut preset: Preset, patch: &Map<String, Value>) -> Result<Preset, ApiError> {
    for (key, value) in patch {
        let null = value.is_null();
        match key.as_str() {
            "context" => {
                preset.context = if null {
                    None
                } else {
                    Some(
                        value
                            .as_u64()
                            .filter(|c| (128..=1 << 20).contains(c))
                            .ok_or_else(|| {
                                bad(format!(
                                    "context must be 128 to 1048576 tokens, got {value}"
                                ))
                            })?,
                    )
                };
            }
            "slots" => {
                preset.slots = if null {
                    None
                } else {
                    Some(
                        value
                            .as_u64()
                            .filter(|s| (1..=64).contains(s))
                            .and_then(|s| u32::try_from(s).ok())
                            .ok_or_else(|| bad(format!("slots must be 1 to 64, got {value}")))?,
                    )
                };
            }
            "engine" => {
                preset.engine = match value {
                    Value::Null => None,
                    Value::String(s) => Some(
                        s.parse::<Engine>()
                            .map_err(|e| ApiError::bad_request("invalid_engine", e))?
                            .as_str()
                            .to_owned(),
                    ),
                    other => return Err(bad(format!("engine must be a string, got {other}"))),
                };
            }
            "worker" => {
                preset.worker = match value {
                    Value::Null => None,
                    Value::String(s) => Some(
                        s.parse::<worker_catalog::WorkerType>()
                            .map_err(|e| ApiError::bad_request("invalid_worker_type", e))?
                            .backend()
                            .to_owned(),
                    ),
                    other => return Err(bad(format!("worker must be a string, got {other}"))),
                };
            }
            "device" => {
                preset.device = if null {
                    None
                } else {
                    Some(
                        value
                            .as_u64()
                            .and_then(|d| u32::try_from(d).ok())
                            .ok_or_else(|| bad(format!("device must be an index, got {value}")))?,
                    )
                };
            }
            "engine_args" => {
                preset.engine_args = match value {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("engine_args must be a list of strings"))?,
                    other => return Err(bad(format!("engine_args must be a list, got {other}"))),
                };
            }
            "alias" => {
                preset.alias = match value {
                    Value::Null => None,
                    Value::String(s) => Some(alias(s)?),
                    other => return Err(bad(format!("alias must be a string, got {other}"))),
                };
            }
            "keep_alive_secs" => {
                preset.keep_alive_secs = if null {
                    None
                } else {
                    Some(value.as_u64().ok_or_else(|| {
                        bad(format!(
                            "keep_alive_secs must be seconds (0: never stop), got {value}"
                        ))
                    })?)
                };
            }
            "pinned" => {
                preset.pinned = match value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    other => return Err(bad(format!("pinned must be true or false, got {other}"))),
                };
            }
            "no_mmproj" => {
                preset.no_mmproj = match value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    other => {
                        return Err(bad(format!("no_mmproj must be true or false, got {other}")));
                    }
                };
            }
            "draft" => {
                preset.draft = match value {
                    Value::Null => None,
                    Value::String(s) if s.trim().is_empty() => None,
                    Value::String(s) => Some(s.trim().to_owned()),
                    other => {
                        return Err(bad(format!(
                            "draft must be a catalog model's id or alias, got {other}"
                        )));
                    }
                };
                // what it needs is measured again once it is checked
                preset.draft_bytes = None;
            }
            "draft_max" | "draft_min" => {
                let floor = u64::from(key == "draft_max");
                let n = if null {
                    None
                } else {
                    Some(
                        value
                            .as_u64()
                            .filter(|n| (floor..=64).contains(n))
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| {
                                bad(format!("{key} must be {floor} to 64 tokens, got {value}"))
                            })?,
                    )
                };
                if key == "draft_max" {
                    preset.draft_max = n;
                } else {
                    preset.draft_min = n;
                }
            }
            "system" => {
                preset.system = match value {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) if s.len() <= SYSTEM_MAX => Some(s.clone()),
                    Value::String(s) => {
                        return Err(bad(format!(
                            "system is {} bytes; at most {SYSTEM_MAX}",
                            s.len()
                        )));
                    }
                    other => return Err(bad(format!("system must be a string, got {other}"))),
                };
            }
            "parameters" => {
                preset.parameters = parameters(value)?;
            }
            other => {
                return Err(bad(format!(
                    "unknown preset field {other:?}: context, slots, engine, worker, device, engine_args, alias, keep_alive_secs, pinned, no_mmproj, draft, draft_max, draft_min, system, parameters"
                )));
            }
        }
    }
    let engine = preset
        .engine
        .as_deref()
        .and_then(|e| e.parse().ok())
        .unwrap_or(Engine::LlamaCpp);
    crate::engines::check_args(engine, &preset.engine_args)
        .map_err(|message| ApiError::bad_request("invalid_engine_args", message))?;
    // the draft's cache is sized by the model's context: measured again
    if patch.contains_key("context") {
        preset.draft_bytes = None;
    }
    if let (Some(min), Some(max)) = (preset.draft_min, preset.draft_max)
        && min > max
    {
        return Err(bad(format!(
            "draft_min ({min}) must not be more than draft_max ({max})"
        )));
    }
    if preset.draft.is_some() && engine != Engine::LlamaCpp {
        return Err(bad(
            "a draft model needs llama.cpp's engine (llm-worker-rbee has no speculative decoding)",
        ));
    }
    Ok(preset)
}

/// The longest system prompt a preset keeps.
pub(crate) const SYSTEM_MAX: usize = 64 << 10;

/// A preset's sampling parameters, each checked by its Ollama name; `null` for none.
pub(crate) fn parameters(
    value: &Value,
) -> Result<std::collections::BTreeMap<String, Value>, ApiError> {
    match value {
        Value::Null => Ok(std::collections::BTreeMap::new()),
        Value::Object(m) => {
            let all = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            check_parameters(&all)?;
            Ok(all)
        }
        other => Err(bad(format!(
            "parameters must be an object of {}, got {other}",
            crate::sampling::names()
        ))),
    }
}

/// Checks each parameter by its Ollama name and type.
pub(crate) fn check_parameters(
    parameters: &std::collections::BTreeMap<String, Value>,
) -> Result<(), ApiError> {
    for (name, v) in parameters {
        crate::sampling::check(name, v).map_err(|why| bad(format!("parameters: {why}")))?;
    }
    Ok(())
}

/// An alias as the one endpoint matches it: lowercase `name:tag` (`:latest` when no
/// tag is given), of letters, digits and `.-_/`.
pub(crate) fn alias(s: &str) -> Result<String, ApiError> {
    let s = s.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
        && s.matches(':').count() <= 1
        && !s.starts_with(':')
        && !s.ends_with(':');
    if !ok {
        return Err(bad(format!(
            "alias {s:?} must be name:tag of letters, digits and . - _ /"
        )));
    }
    Ok(if s.contains(':') {
        s
    } else {
        format!("{s}:latest")
    })
}

/// Changes a model's preset; answers with the model.
pub async fn patch(state: &SharedState, id: &str, body: Value) -> Result<Value, ApiError> {
    let Value::Object(patch) = body else {
        return Err(bad("the body must be a JSON object of preset fields"));
    };
    let catalog = Arc::clone(&state.catalog);
    let id = id.to_owned();
    let current = {
        let (catalog, wanted) = (Arc::clone(&catalog), id.clone());
        blocking(move || Ok(catalog.get(&wanted)?))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("model {id:?} is not in the catalog")))?
    };
    // a model made over another runs as its base, with its own system prompt and
    // parameters: how it runs is set on the base
    if let Some(base) = current.artifact.derived_from()
        && let Some(other) = patch
            .keys()
            .find(|k| !matches!(k.as_str(), "system" | "parameters"))
    {
        return Err(bad(format!(
            "{} is made over {base}: it takes a system prompt and parameters of its own, and {other} is set on {base}",
            current.artifact.id
        )));
    }
    let mut preset = apply(current.artifact.preset.clone(), &patch)?;
    if preset.draft.is_some() && preset.draft_bytes.is_none() {
        let target = current.artifact.clone();
        let mut with_target = target.clone();
        with_target.preset = preset.clone();
        let (draft_id, bytes) = crate::ops::draft::check(state, &with_target).await?;
        preset.draft = Some(draft_id);
        preset.draft_bytes = Some(bytes);
    }
    if let Some(engine) = preset
        .engine
        .as_deref()
        .and_then(|e| e.parse::<Engine>().ok())
    {
        let workers = Arc::clone(&state.worker_catalog);
        let installed = blocking(move || {
            Ok(workers.list()?.iter().any(|b| {
                b.artifact.engine == engine && b.artifact.status == ArtifactStatus::Available
            }))
        })
        .await?;
        if !installed {
            return Err(ApiError::bad_request(
                "engine_not_installed",
                format!("no {engine} binary is installed: install or add one first"),
            ));
        }
    }
    let alias = preset.alias.clone();
    let record = blocking(move || {
        if let Some(alias) = &alias {
            let taken = catalog
                .list()?
                .into_iter()
                .find(|r| r.artifact.id != id && r.artifact.alias() == *alias);
            if let Some(other) = taken {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "alias_taken",
                    format!("alias {alias:?} already names {}", other.artifact.id),
                ));
            }
        }
        let mut entry = current.artifact;
        entry.preset = preset;
        Ok(catalog.update(entry)?)
    })
    .await?;
    // a saved KV cache was of the preset as it was
    crate::workers::kv_cache::forget(&state.home, &record.artifact.id);
    Ok(json!(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(v: Value) -> Result<Preset, String> {
        let Value::Object(m) = v else { unreachable!() };
        apply(Preset::default(), &m).map_err(|e| e.parts().1)
    }

    #[test]
    fn patches_are_checked() {
        let p = patch(json!({"context": 8192, "slots": 2, "engine": "llama-server", "alias": "Smol", "pinned": true, "keep_alive_secs": 0, "system": "Be brief.", "parameters": {"temperature": 0.2, "stop": ["<end>"]}})).unwrap_or_default();
        assert_eq!(p.system.as_deref(), Some("Be brief."));
        assert_eq!(p.parameters.get("temperature"), Some(&json!(0.2)));
        assert_eq!(p.context, Some(8192));
        assert_eq!(p.engine.as_deref(), Some("llama.cpp"));
        assert_eq!(p.alias.as_deref(), Some("smol:latest"));
        assert!(p.pinned);
        assert_eq!(p.keep_alive_secs, Some(0));
        for (bad, words) in [
            (json!({"context": 5}), "context"),
            (json!({"slots": 0}), "slots"),
            (json!({"engine": "vllm"}), "unknown engine"),
            (
                json!({"engine_args": ["--port", "9"]}),
                "--port is not allowed",
            ),
            (
                json!({"engine_args": ["--log-file", "/tmp/x"]}),
                "--log-file is not allowed",
            ),
            (json!({"engine_args": "--temp 1"}), "must be a list"),
            (json!({"alias": "a b"}), "alias"),
            (json!({"alias": "a:b:c"}), "alias"),
            (json!({"pinned": "yes"}), "pinned"),
            (json!({"keep_alive_secs": -1}), "keep_alive_secs"),
            (json!({"ctx": 1}), "unknown preset field"),
            (json!({"system": 3}), "system must be a string"),
            (json!({"parameters": {"mirostat": 1}}), "unknown parameter"),
            (json!({"parameters": {"temperature": "hot"}}), "a number"),
            (json!({"parameters": [1]}), "must be an object"),
        ] {
            let e = patch(bad.clone()).unwrap_err();
            assert!(e.contains(words), "{bad} → {e}");
        }
        let cleared = {
            let Value::Object(m) = json!({"context": null, "pinned": null}) else {
                unreachable!()
            };
            let set = Preset {
                context: Some(1024),
                pinned: true,
                ..Preset::default()
            };
            apply(set, &m).unwrap_or_default()
        };
        assert!(cleared.is_empty());
    }
}

//! What a model's preset gives a request that does not say: its system prompt
//! (Ollama's `SYSTEM`) and its sampling parameters (`PARAMETER`s), filled into the
//! body the worker gets, in the shape of the worker route it goes to. What the
//! request says always wins.

use model_catalog::Preset;
use serde_json::{Value, json};

/// Fills `body`, bound for the worker's `path`, with the preset's defaults.
pub fn apply(preset: &Preset, path: &str, body: &mut Value) {
    let anthropic = path.starts_with("/v1/messages");
    let generates = matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/responses" | "/v1/messages"
    );
    let Some(fields) = body.as_object_mut() else {
        return;
    };
    if generates {
        for (name, value) in &preset.parameters {
            let Some(field) = crate::sampling::field(name) else {
                continue;
            };
            let Ok(Some(value)) = crate::sampling::check(name, value) else {
                continue;
            };
            let field = match (path, field) {
                // Anthropic's clients always send max_tokens; its stop is another name
                ("/v1/messages", "max_tokens") => continue,
                ("/v1/messages", "stop") => "stop_sequences",
                ("/v1/responses", "max_tokens") => "max_output_tokens",
                _ => field,
            };
            let value = match (field, value) {
                ("stop_sequences", Value::String(s)) => json!([s]),
                (_, v) => v,
            };
            fields.entry(field).or_insert(value);
        }
    }
    let Some(system) = preset.system.as_deref().filter(|s| !s.is_empty()) else {
        return;
    };
    if anthropic {
        fields
            .entry("system")
            .or_insert_with(|| Value::String(system.to_owned()));
        return;
    }
    match path {
        "/v1/chat/completions" => {
            if let Some(Value::Array(messages)) = fields.get_mut("messages")
                && !messages
                    .iter()
                    .any(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
            {
                messages.insert(0, json!({"role": "system", "content": system}));
            }
        }
        "/v1/responses" => {
            fields
                .entry("instructions")
                .or_insert_with(|| Value::String(system.to_owned()));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn preset() -> Preset {
        Preset {
            system: Some("You are Mario.".to_owned()),
            parameters: BTreeMap::from([
                ("temperature".to_owned(), json!(0.1)),
                ("stop".to_owned(), json!("<end>")),
                ("num_predict".to_owned(), json!(32)),
                ("mirostat".to_owned(), json!(1)),
            ]),
            ..Preset::default()
        }
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out_in_each_routes_shape() {
        let mut chat = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.9});
        apply(&preset(), "/v1/chat/completions", &mut chat);
        assert_eq!(chat["temperature"], 0.9, "the request's own wins");
        assert_eq!(chat["stop"], "<end>");
        assert_eq!(chat["max_tokens"], 32);
        assert!(chat.get("mirostat").is_none());
        assert_eq!(chat["messages"][0]["content"], "You are Mario.");
        assert_eq!(chat["messages"].as_array().map(Vec::len), Some(2));

        let mut own = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
        apply(&preset(), "/v1/chat/completions", &mut own);
        assert_eq!(own["messages"][0]["content"], "Be brief.");
        assert_eq!(own["messages"].as_array().map(Vec::len), Some(2));

        let mut message = json!({"max_tokens": 8, "messages": []});
        apply(&preset(), "/v1/messages", &mut message);
        assert_eq!(message["system"], "You are Mario.");
        assert_eq!(message["stop_sequences"], json!(["<end>"]));
        assert_eq!(message["max_tokens"], 8);

        let mut embed = json!({"input": "x"});
        apply(&preset(), "/v1/embeddings", &mut embed);
        assert_eq!(embed, json!({"input": "x"}));

        let mut raw = json!({"prompt": "x"});
        apply(&preset(), "/v1/completions", &mut raw);
        assert_eq!(raw["temperature"], 0.1);
        assert!(raw.get("messages").is_none());
    }
}

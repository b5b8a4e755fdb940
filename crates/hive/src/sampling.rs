//! Sampling parameters by Ollama's names, and the fields llama.cpp's server (and
//! ours) read them as: one table for a request's `options`, a preset's `parameters`
//! and a Modelfile's `PARAMETER` lines.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parameter's Ollama name, the request field it becomes, and whether it is the
/// stop list (strings) rather than a number.
const PARAMETERS: &[(&str, &str, bool)] = &[
    ("temperature", "temperature", false),
    ("top_p", "top_p", false),
    ("top_k", "top_k", false),
    ("min_p", "min_p", false),
    ("seed", "seed", false),
    ("num_predict", "max_tokens", false),
    ("repeat_penalty", "repeat_penalty", false),
    ("repeat_last_n", "repeat_last_n", false),
    ("presence_penalty", "presence_penalty", false),
    ("frequency_penalty", "frequency_penalty", false),
    ("stop", "stop", true),
];

/// The names a preset's parameters may have, for messages.
pub fn names() -> String {
    PARAMETERS
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request field `name` becomes, when it is one of the parameters.
pub fn field(name: &str) -> Option<&'static str> {
    PARAMETERS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, f, _)| *f)
}

/// `value` checked as parameter `name`'s: a number, or for `stop` a string or a list
/// of strings. `None` for what means "no value" (`num_predict` below 0: until the
/// end). An unknown name is an error that lists the known ones.
pub fn check(name: &str, value: &Value) -> Result<Option<Value>, String> {
    let Some((_, _, stop)) = PARAMETERS.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!("unknown parameter {name:?}: {}", names()));
    };
    let ok = if *stop {
        value.is_string()
            || value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
    } else {
        value.is_number()
    };
    if !ok {
        let wanted = if *stop {
            "a string or a list of strings"
        } else {
            "a number"
        };
        return Err(format!("{name} must be {wanted}, got {value}"));
    }
    if name == "num_predict" && value.as_i64().is_some_and(|n| n < 0) {
        return Ok(None);
    }
    Ok(Some(value.clone()))
}

/// A Modelfile's `PARAMETER name value` text as the value it stands for: a
/// number, or a stop string (its quotes taken off).
pub fn from_text(name: &str, text: &str) -> Result<Value, String> {
    let text = text.trim();
    let value = if name == "stop" {
        let unquoted = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        Value::String(unquoted.to_owned())
    } else {
        serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .map_err(|_| format!("PARAMETER {name} must be a number, got {text:?}"))?
    };
    check(name, &value)?;
    Ok(value)
}

/// Parameters as Ollama's `/api/show` writes them: a line per value, `stop`
/// quoted and once per string.
pub fn to_text(parameters: &BTreeMap<String, Value>) -> String {
    let mut lines = Vec::new();
    for (name, value) in parameters {
        match value {
            Value::Array(stops) => {
                for s in stops {
                    lines.push(format!("{name:<30} {s}"));
                }
            }
            Value::String(s) => lines.push(format!("{name:<30} {}", Value::String(s.clone()))),
            other => lines.push(format!("{name:<30} {other}")),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_checked_by_name_and_type() {
        assert_eq!(field("num_predict"), Some("max_tokens"));
        assert_eq!(field("num_ctx"), None);
        assert_eq!(check("temperature", &json!(0.2)), Ok(Some(json!(0.2))));
        assert_eq!(check("num_predict", &json!(-1)), Ok(None));
        assert_eq!(
            check("stop", &json!(["a", "b"])),
            Ok(Some(json!(["a", "b"])))
        );
        assert!(check("stop", &json!([1])).unwrap_err().contains("strings"));
        assert!(
            check("top_k", &json!("40"))
                .unwrap_err()
                .contains("a number")
        );
        assert!(
            check("mirostat", &json!(1))
                .unwrap_err()
                .contains("temperature")
        );
        assert_eq!(from_text("stop", "\"<|im_end|>\""), Ok(json!("<|im_end|>")));
        assert_eq!(from_text("top_k", "40"), Ok(json!(40)));
        assert!(from_text("top_k", "forty").is_err());
        let shown = to_text(&BTreeMap::from([
            ("stop".to_owned(), json!(["<a>", "<b>"])),
            ("temperature".to_owned(), json!(0.7)),
        ]));
        assert_eq!(shown.lines().count(), 3);
        assert!(
            shown.contains("\"<b>\"") && shown.contains("0.7"),
            "{shown}"
        );
    }
}

//! OpenAI's request and response shapes for `/v1/completions` and
//! `/v1/chat/completions`, and their checks.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::template::Message;

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Ignored: a worker serves one model.
    pub model: Option<String>,
    /// The most tokens to generate.
    pub max_tokens: Option<i64>,
    /// The newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<i64>,
    /// 0 to 2; 0 is greedy.
    pub temperature: Option<f64>,
    /// (0, 1].
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens (0: all), as llama.cpp's server takes it.
    pub top_k: Option<i64>,
    /// [0, 1]: drop tokens less likely than this fraction of the most likely one.
    pub min_p: Option<f64>,
    /// Above 0; 1 is off.
    pub repeat_penalty: Option<f64>,
    /// The recent tokens the penalty looks at (0: none).
    pub repeat_last_n: Option<i64>,
    /// A seed makes sampling repeatable.
    pub seed: Option<u64>,
    /// Up to 4 texts that end the generation.
    pub stop: Option<OneOrMany>,
    /// Send the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Go on past end-of-generation tokens, to `max_tokens`, as llama.cpp's server
    /// takes it.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Only 1 is supported.
    pub n: Option<i64>,
    /// `include_usage`.
    pub stream_options: Option<StreamOptions>,
    /// Tools the model may call: this worker calls none, so a list of them is
    /// refused, never ignored.
    pub tools: Option<Value>,
    /// Which tool to call; only `none` (or nothing) is served.
    pub tool_choice: Option<Value>,
    /// The answer's format; only `text` is served (no grammar here).
    pub response_format: Option<Value>,
}

/// What the engine that can serve what this worker cannot.
const USE_LLAMA: &str = "llama.cpp's server can: rbee models set MODEL --engine llama.cpp";

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The text to continue.
    pub prompt: OneOrMany,
    /// The shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A chat message's content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": ...}]`.
    Parts(Vec<Part>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// `text` is the only kind this worker reads.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A message as a client sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The content; `null` for an assistant message with only tool calls.
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The shared fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A request that cannot be served as sent: a 400 naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The field at fault, when there is one.
    pub param: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            message: message.into(),
        }
    }
}

/// The checked sampling fields.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `max_tokens`, when given.
    pub max_tokens: Option<usize>,
    /// `temperature`; the model's default when not given.
    pub temperature: Option<f64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `top_k`.
    pub top_k: Option<usize>,
    /// `min_p`.
    pub min_p: Option<f64>,
    /// `repeat_penalty`.
    pub repeat_penalty: Option<f32>,
    /// `repeat_last_n`.
    pub repeat_last_n: Option<usize>,
    /// `seed`.
    pub seed: Option<u64>,
    /// `stop`.
    pub stop: Vec<String>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `ignore_eos`.
    pub ignore_eos: bool,
}

impl Sampling {
    /// Checks every field against OpenAI's ranges.
    pub fn check(&self) -> Result<Checked, Invalid> {
        if self
            .tools
            .as_ref()
            .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(Invalid::new(
                "tools",
                format!("llm-worker-rbee cannot call tools; {USE_LLAMA}"),
            ));
        }
        if let Some(choice) = &self.tool_choice
            && !choice.is_null()
            && choice != "none"
        {
            return Err(Invalid::new(
                "tool_choice",
                format!("llm-worker-rbee cannot call tools (tool_choice {choice}); {USE_LLAMA}"),
            ));
        }
        if let Some(format) = &self.response_format
            && !format.is_null()
            && format["type"] != "text"
        {
            return Err(Invalid::new(
                "response_format",
                format!(
                    "llm-worker-rbee answers in text only, not {}; {USE_LLAMA}",
                    format["type"]
                ),
            ));
        }
        if let Some(n) = self.n
            && n != 1
        {
            return Err(Invalid::new("n", format!("n must be 1, got {n}")));
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) | (None, Some(v)) => {
                if v < 1 {
                    return Err(Invalid::new(
                        "max_tokens",
                        format!("max_tokens must be at least 1, got {v}"),
                    ));
                }
                Some(usize::try_from(v).unwrap_or(usize::MAX))
            }
            (None, None) => None,
        };
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Invalid::new(
                "temperature",
                format!("temperature must be between 0 and 2, got {t}"),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Invalid::new(
                "top_p",
                format!("top_p must be in (0, 1], got {p}"),
            ));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(Invalid::new(
                "min_p",
                format!("min_p must be in [0, 1], got {p}"),
            ));
        }
        let count = |v: Option<i64>, param: &'static str| match v {
            Some(n) if n < 0 => Err(Invalid::new(
                param,
                format!("{param} must be 0 or more, got {n}"),
            )),
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            None => Ok(None),
        };
        let top_k = count(self.top_k, "top_k")?;
        let repeat_last_n = count(self.repeat_last_n, "repeat_last_n")?;
        let repeat_penalty = match self.repeat_penalty {
            Some(p) if !(p > 0.0 && p <= 10.0) => {
                return Err(Invalid::new(
                    "repeat_penalty",
                    format!("repeat_penalty must be in (0, 10], got {p}"),
                ));
            }
            #[allow(clippy::cast_possible_truncation)]
            Some(p) => Some(p as f32),
            None => None,
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err(Invalid::new(
                "stop",
                format!("at most 4 stop sequences, got {}", stop.len()),
            ));
        }
        Ok(Checked {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            min_p: self.min_p,
            repeat_penalty,
            repeat_last_n,
            seed: self.seed,
            stop,
            stream: self.stream,
            ignore_eos: self.ignore_eos,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }
}

impl CompletionRequest {
    /// The prompt text: one string (a list must hold exactly one).
    pub fn prompt(&self) -> Result<&str, Invalid> {
        match &self.prompt {
            OneOrMany::One(p) => Ok(p),
            OneOrMany::Many(v) if v.len() == 1 => Ok(&v[0]),
            OneOrMany::Many(v) => Err(Invalid::new(
                "prompt",
                format!("one prompt per request, got {}", v.len()),
            )),
        }
    }
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

impl ChatRequest {
    /// The messages as the chat template takes them.
    pub fn messages(&self) -> Result<Vec<Message>, Invalid> {
        if self.messages.is_empty() {
            return Err(Invalid::new("messages", "messages must not be empty"));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !ROLES.contains(&m.role.as_str()) {
                    return Err(Invalid::new(
                        "messages",
                        format!(
                            "messages[{i}].role is {:?}; expected one of {}",
                            m.role,
                            ROLES.join(", ")
                        ),
                    ));
                }
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for part in parts {
                            match (part.kind.as_str(), &part.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(Invalid::new(
                                        "messages",
                                        format!(
                                            "messages[{i}] has a {kind:?} part; this worker reads text only"
                                        ),
                                    ));
                                }
                            }
                        }
                        text
                    }
                };
                // `developer` is OpenAI's newer name for `system`.
                let role = if m.role == "developer" { "system" } else { &m.role };
                Ok(Message {
                    role: role.to_string(),
                    content,
                })
            })
            .collect()
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

impl Usage {
    /// Counts for a prompt and a completion.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The error body: OpenAI's fields plus the hive's `code`.
pub fn error_body(code: &str, kind: &str, message: &str, param: Option<&str>) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "type": kind,
            "param": param,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(v: Value) -> Result<Checked, Invalid> {
        serde_json::from_value::<Sampling>(v)
            .expect("parses")
            .check()
    }

    #[test]
    fn ranges_are_checked() {
        assert!(sampling(json!({"temperature": 2.5})).is_err());
        assert!(sampling(json!({"temperature": -0.1})).is_err());
        assert!(sampling(json!({"top_p": 0})).is_err());
        assert!(sampling(json!({"top_p": 1.5})).is_err());
        assert!(sampling(json!({"max_tokens": 0})).is_err());
        assert!(sampling(json!({"n": 2})).is_err());
        // what this worker cannot do is refused, never ignored
        let tool = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        assert_eq!(
            sampling(json!({"tools": tool})).err().and_then(|e| e.param),
            Some("tools")
        );
        assert!(sampling(json!({"tool_choice": "required"})).is_err());
        assert!(sampling(json!({"response_format": {"type": "json_object"}})).is_err());
        assert!(
            sampling(json!({"response_format": {"type": "json_schema", "json_schema": {}}}))
                .is_err()
        );
        // what asks for nothing more is served
        assert!(
            sampling(
                json!({"tools": [], "tool_choice": "none", "response_format": {"type": "text"}})
            )
            .is_ok()
        );
        assert!(sampling(json!({"stop": ["a", "b", "c", "d", "e"]})).is_err());
        assert!(sampling(json!({"top_k": -1})).is_err());
        assert!(sampling(json!({"min_p": 1.5})).is_err());
        assert!(sampling(json!({"repeat_penalty": 0})).is_err());
        assert!(sampling(json!({"repeat_last_n": -2})).is_err());
        let llama = sampling(json!({"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.2}))
            .expect("llama.cpp's own fields");
        assert_eq!(
            (
                llama.top_k,
                llama.min_p,
                llama.repeat_penalty,
                llama.temperature
            ),
            (Some(20), Some(0.1), Some(1.2), None)
        );
        let ok = sampling(json!({"max_tokens": 5, "temperature": 0, "stop": "x", "seed": 3}))
            .expect("valid");
        assert_eq!(ok.max_tokens, Some(5));
        assert_eq!(ok.stop, vec!["x".to_string()]);
    }

    #[test]
    fn chat_content_parts_and_roles() {
        let req: ChatRequest = serde_json::from_value(json!({
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ]
        }))
        .expect("parses");
        let m = req.messages().expect("valid");
        assert_eq!(m[0].role, "system");
        assert_eq!(m[1].content, "ab");
        let bad: ChatRequest =
            serde_json::from_value(json!({"messages": [{"role": "wizard", "content": "x"}]}))
                .expect("parses");
        assert!(
            bad.messages()
                .expect_err("bad role")
                .message
                .contains("wizard")
        );
        let image: ChatRequest = serde_json::from_value(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        )
        .expect("parses");
        assert!(image.messages().is_err());
    }
}

//! `rbee run MODEL [PROMPT]`, as `ollama run`: pull the model if the catalog lacks it,
//! then chat with it through the one endpoint's `/api/chat` (Ollama's own, so that
//! parameters are Ollama's `options`, read where the gateway reads them), which loads
//! it. Given a prompt (or a piped stdin) it answers once; else it reads turns from the
//! terminal, with `/set system`, `/set parameter`, `/show`, `/clear` and `/bye`, and
//! `"""` around several lines. Each answer streams as it comes; its tokens per second
//! go to stderr. For a model that sees, image files named in a prompt go with it
//! ([`crate::commands::prompt_images`]).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::bail;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::commands::client::{Client, HiveArgs};
use crate::commands::job::follow_job;
use crate::commands::names;

/// The `options` `/set parameter` takes, by Ollama's names.
const PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "num_predict",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "stop",
];

/// One line typed at the prompt.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Say(String),
    Bye,
    Help,
    Show,
    Clear,
    System(String),
    Parameter(&'static str, Value),
    /// A command that is not one: what to say.
    Wrong(String),
    /// The start of several lines (`"""`), with what follows it on the line.
    Open(String),
}

fn parse_line(line: &str) -> Line {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("\"\"\"") {
        return match rest.strip_suffix("\"\"\"") {
            Some(whole) => Line::Say(whole.to_owned()),
            None => Line::Open(rest.to_owned()),
        };
    }
    if !trimmed.starts_with('/') {
        return Line::Say(line.to_owned());
    }
    let mut words = trimmed.splitn(3, char::is_whitespace);
    match (words.next(), words.next(), words.next()) {
        (Some("/bye" | "/exit" | "/quit"), _, _) => Line::Bye,
        (Some("/?" | "/help"), _, _) => Line::Help,
        (Some("/show"), _, _) => Line::Show,
        (Some("/clear"), _, _) => Line::Clear,
        (Some("/set"), Some("system"), text) => Line::System(text.unwrap_or("").trim().to_owned()),
        (Some("/set"), Some("parameter"), Some(rest)) => {
            let (name, value) = rest
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((rest, ""));
            let Some(field) = PARAMETERS.iter().find(|n| **n == name) else {
                return Line::Wrong(format!(
                    "unknown parameter {name:?}: one of {}",
                    PARAMETERS.join(", ")
                ));
            };
            let value = value.trim();
            if value.is_empty() {
                return Line::Wrong(format!("/set parameter {name} needs a value"));
            }
            // a number where it reads as one (a whole one as an integer), else the
            // words (a stop sequence)
            let value = if let Ok(n) = value.parse::<i64>() {
                json!(n)
            } else {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .map_or_else(|| json!(value), |n| json!(n))
            };
            Line::Parameter(field, value)
        }
        _ => Line::Wrong(format!("unknown command {trimmed:?}: /? lists them")),
    }
}

const HELP: &str = "/set system TEXT     the system prompt
/set parameter NAME VALUE   temperature, top_p, top_k, min_p, seed, num_predict, repeat_penalty, stop, ...
/show                the model, the system prompt and the parameters
/clear               forget the conversation
/bye                 leave
\"\"\"                  begin (and end) a message of several lines";

/// A conversation with one model.
struct Chat {
    client: Client,
    model: String,
    system: Option<String>,
    parameters: Map<String, Value>,
    history: Vec<Value>,
    /// Whether the model reads images (its capabilities say `vision`).
    sees: bool,
}

impl Chat {
    fn messages(&self) -> Vec<Value> {
        let mut all = Vec::with_capacity(self.history.len() + 1);
        if let Some(s) = self.system.as_ref().filter(|s| !s.is_empty()) {
            all.push(json!({"role": "system", "content": s}));
        }
        all.extend(self.history.iter().cloned());
        all
    }

    /// Sends the conversation and `text`; streams the answer to stdout; keeps both.
    async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let mut message = json!({"role": "user", "content": text});
        if self.sees {
            let (rest, images) = crate::commands::prompt_images::take(text)?;
            if !images.is_empty() {
                for (path, _) in &images {
                    eprintln!("Added image '{}'", path.display());
                }
                message = json!({"role": "user", "content": rest,
                    "images": images.into_iter().map(|(_, b64)| b64).collect::<Vec<_>>()});
            }
        }
        self.history.push(message);
        let body = json!({
            "model": self.model,
            "messages": self.messages(),
            "stream": true,
            "options": self.parameters,
        });
        let answer = match stream_answer(&self.client, &body).await {
            Ok(a) => a,
            Err(e) => {
                self.history.pop();
                return Err(e);
            }
        };
        self.history
            .push(json!({"role": "assistant", "content": answer}));
        Ok(())
    }

    async fn show(&self) -> anyhow::Result<()> {
        let v = self
            .client
            .call(
                Method::POST,
                "/api/show",
                Some(json!({"model": self.model})),
            )
            .await?;
        let d = &v["details"];
        println!("  model         {}", self.model);
        for (label, key) in [
            ("architecture", "family"),
            ("parameters", "parameter_size"),
            ("quantization", "quantization_level"),
        ] {
            if let Some(s) = d[key].as_str().filter(|s| !s.is_empty()) {
                println!("  {label:<13} {s}");
            }
        }
        if let Some(s) = &self.system {
            println!("  system        {s}");
        }
        for (k, v) in &self.parameters {
            println!("  {k:<13} {v}");
        }
        Ok(())
    }
}

/// Streams one chat answer (Ollama's NDJSON lines) to stdout; its text. Tokens per
/// second go to stderr.
async fn stream_answer(client: &Client, body: &Value) -> anyhow::Result<String> {
    let started = Instant::now();
    let response = client.post_streaming("/api/chat", body).await?;
    let mut bytes = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut text = String::new();
    let mut last = Value::Null;
    let mut out = std::io::stdout();
    loop {
        // one whole line at a time: a chunk may end anywhere, inside a character too
        let line = match pending.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line: Vec<u8> = pending.drain(..=i).collect();
                line
            }
            None => match bytes.next().await {
                Some(chunk) => {
                    let chunk =
                        chunk.map_err(|e| anyhow::anyhow!("the answer's stream broke: {e}"))?;
                    pending.extend_from_slice(&chunk);
                    continue;
                }
                None if pending.is_empty() => break,
                None => std::mem::take(&mut pending),
            },
        };
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if let Some(message) = v["error"].as_str() {
            writeln!(out)?;
            bail!("{message}");
        }
        if let Some(piece) = v["message"]["content"].as_str() {
            text.push_str(piece);
            write!(out, "{piece}")?;
            out.flush()?;
        }
        if v["done"] == true {
            last = v;
            break;
        }
    }
    writeln!(out)?;
    let tokens = last["eval_count"].as_u64().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let generating = last["eval_duration"].as_u64().unwrap_or(0) as f64 / 1e9;
    let rate = if generating > 0.0 && tokens > 0 {
        #[allow(clippy::cast_precision_loss)]
        let r = tokens as f64 / generating;
        format!(", {r:.1} tokens/s")
    } else {
        String::new()
    };
    eprintln!(
        "({tokens} tokens in {:.1}s{rate})",
        started.elapsed().as_secs_f64()
    );
    Ok(text)
}

/// Sets one of Ollama's `options`; `stop` adds a stop sequence.
fn set_parameter(parameters: &mut Map<String, Value>, field: &str, value: Value) {
    if field == "stop" {
        let stops = parameters.entry("stop").or_insert_with(|| json!([]));
        if let Some(list) = stops.as_array_mut() {
            list.push(value);
        }
    } else {
        parameters.insert(field.to_owned(), value);
    }
}

/// `rbee run MODEL [PROMPT...]`.
pub async fn run(
    model: &str,
    given: &[String],
    prompt: &[String],
    args: &HiveArgs,
) -> anyhow::Result<()> {
    let mut parameters = Map::new();
    for p in given {
        let Some((name, value)) = p.split_once('=') else {
            bail!("--parameter takes NAME=VALUE, got {p:?}");
        };
        match parse_line(&format!("/set parameter {name} {value}")) {
            Line::Parameter(field, value) => set_parameter(&mut parameters, field, value),
            Line::Wrong(message) => bail!("{message}"),
            _ => bail!("--parameter takes NAME=VALUE, got {p:?}"),
        }
    }
    let client = Client::new(args)?;
    let named = names::named(&client, model).await?;
    if let names::Named::Reference(name) = &named {
        // not in the catalog yet: pulled here, with its progress, as `ollama run` does
        let started = client
            .call(
                Method::POST,
                "/v1/models/download",
                Some(json!({"model_ref": name})),
            )
            .await?;
        follow_job(&client, &started, false, |r| {
            format!("{} is available", r["id"].as_str().unwrap_or("the model"))
        })
        .await?;
    }
    let model_name = named.into_string();
    // whether image files in a prompt are the model's to see
    let sees = client
        .call(
            Method::POST,
            "/api/show",
            Some(json!({"model": model_name})),
        )
        .await
        .ok()
        .and_then(|v| v["capabilities"].as_array().cloned())
        .is_some_and(|c| c.iter().any(|c| c == "vision"));
    let mut chat = Chat {
        client,
        model: model_name,
        system: None,
        parameters,
        history: Vec::new(),
        sees,
    };
    let stdin = std::io::stdin();
    if !prompt.is_empty() || !stdin.is_terminal() {
        let mut text = prompt.join(" ");
        if !stdin.is_terminal() {
            let mut piped = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut piped)?;
            if !piped.trim().is_empty() {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(piped.trim_end());
            }
        }
        if text.trim().is_empty() {
            bail!("nothing to ask: give a prompt, or pipe one in");
        }
        return chat.say(&text).await;
    }
    eprintln!("loading {model} (/? for help, /bye to leave)");
    // the model loads now, not at the first question
    chat.client
        .call(
            Method::POST,
            "/api/generate",
            Some(json!({"model": chat.model, "stream": false})),
        )
        .await?;
    let mut lines = stdin.lock().lines();
    loop {
        eprint!(">>> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        match parse_line(&line) {
            Line::Say(text) if text.trim().is_empty() => {}
            Line::Say(text) => {
                if let Err(e) = chat.say(&text).await {
                    eprintln!("error: {e:#}");
                }
            }
            Line::Open(first) => {
                let mut text = first;
                loop {
                    eprint!("... ");
                    let Some(next) = lines.next() else { break };
                    let next = next?;
                    if let Some(last) = next.trim_end().strip_suffix("\"\"\"") {
                        text.push('\n');
                        text.push_str(last);
                        break;
                    }
                    text.push('\n');
                    text.push_str(&next);
                }
                if let Err(e) = chat.say(text.trim()).await {
                    eprintln!("error: {e:#}");
                }
            }
            Line::Bye => break,
            Line::Help => eprintln!("{HELP}"),
            Line::Show => {
                if let Err(e) = chat.show().await {
                    eprintln!("error: {e:#}");
                }
            }
            Line::Clear => {
                chat.history.clear();
                eprintln!("the conversation is forgotten");
            }
            Line::System(text) => {
                chat.system = (!text.is_empty()).then_some(text);
                eprintln!("system prompt set");
            }
            Line::Parameter(field, value) => {
                eprintln!("{field} = {value}");
                set_parameter(&mut chat.parameters, field, value);
            }
            Line::Wrong(message) => eprintln!("{message}"),
        }
    }
    eprintln!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Line, parse_line};
    use serde_json::json;

    #[test]
    fn lines_read_as_ollama_reads_them() {
        assert_eq!(parse_line("hello"), Line::Say("hello".into()));
        assert_eq!(parse_line("/bye"), Line::Bye);
        assert_eq!(parse_line("  /show "), Line::Show);
        assert_eq!(
            parse_line("/set system You are terse."),
            Line::System("You are terse.".into())
        );
        assert_eq!(
            parse_line("/set parameter temperature 0.2"),
            Line::Parameter("temperature", json!(0.2))
        );
        assert_eq!(
            parse_line("/set parameter num_predict 64"),
            Line::Parameter("num_predict", json!(64))
        );
        assert_eq!(
            parse_line("/set parameter stop <|im_end|>"),
            Line::Parameter("stop", json!("<|im_end|>"))
        );
        assert_eq!(
            parse_line("/set parameter temperature NaN"),
            Line::Parameter("temperature", json!("NaN"))
        );
        assert!(
            matches!(parse_line("/set parameter warmth 3"), Line::Wrong(m) if m.contains("temperature"))
        );
        assert!(matches!(parse_line("/set parameter seed"), Line::Wrong(_)));
        assert!(matches!(parse_line("/dance"), Line::Wrong(m) if m.contains("/?")));
        assert_eq!(
            parse_line("\"\"\"one line\"\"\""),
            Line::Say("one line".into())
        );
        assert_eq!(parse_line("\"\"\"begin"), Line::Open("begin".into()));
    }
}

//! `rbee run MODEL [PROMPT]`, as `ollama run`: pull the model if the catalog lacks it,
//! then chat with it through the one endpoint, which loads it. Given a prompt (or a
//! piped stdin) it answers once; else it reads turns from the terminal, with
//! `/set system`, `/set parameter`, `/show`, `/clear` and `/bye`, and `"""` around
//! several lines. Each answer streams as it comes; its tokens per second go to stderr.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Instant;

use anyhow::bail;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::commands::client::{Client, HiveArgs, encode_id};
use crate::commands::job::follow_job;
use crate::commands::names;

/// Ollama's parameter names, and the chat request's field each sets.
const PARAMETERS: &[(&str, &str)] = &[
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("num_predict", "max_tokens"),
    ("repeat_penalty", "repeat_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("stop", "stop"),
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
            let Some((_, field)) = PARAMETERS.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = PARAMETERS.iter().map(|(n, _)| *n).collect();
                return Line::Wrong(format!(
                    "unknown parameter {name:?}: one of {}",
                    known.join(", ")
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
        self.history.push(json!({"role": "user", "content": text}));
        let mut body = json!({
            "model": self.model,
            "messages": self.messages(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        for (k, v) in &self.parameters {
            body[k] = v.clone();
        }
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

/// Streams one chat answer to stdout; its text. Tokens per second go to stderr.
async fn stream_answer(client: &Client, body: &Value) -> anyhow::Result<String> {
    let started = Instant::now();
    let response = client.post_streaming("/v1/chat/completions", body).await?;
    let mut events = response.bytes_stream().eventsource();
    let mut text = String::new();
    let mut first: Option<Instant> = None;
    let mut tokens: Option<u64> = None;
    let mut pieces = 0u64;
    let mut out = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow::anyhow!("the answer's stream broke: {e}"))?;
        if event.data.trim() == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        if let Some(message) = v["error"]["message"].as_str() {
            writeln!(out)?;
            bail!("{message}");
        }
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str()
            && !piece.is_empty()
        {
            first.get_or_insert_with(Instant::now);
            pieces += 1;
            text.push_str(piece);
            write!(out, "{piece}")?;
            out.flush()?;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n);
        }
    }
    writeln!(out)?;
    let tokens = tokens.unwrap_or(pieces);
    let generating = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let rate = if generating > 0.0 && tokens > 1 {
        // the first token came with the prompt's processing
        format!(", {:.1} tokens/s", (tokens - 1) as f64 / generating)
    } else {
        String::new()
    };
    eprintln!(
        "({tokens} tokens in {:.1}s{rate})",
        started.elapsed().as_secs_f64()
    );
    Ok(text)
}

/// `rbee run MODEL [PROMPT...]`.
pub async fn run(model: &str, prompt: &[String], args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let name = names::model_id(&client, model).await?;
    let in_catalog = client
        .call(
            Method::GET,
            &format!("/v1/models/{}", encode_id(&name)),
            None,
        )
        .await
        .is_ok();
    if !in_catalog && names::is_reference(&name) {
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
    let mut chat = Chat {
        client,
        model: name,
        system: None,
        parameters: Map::new(),
        history: Vec::new(),
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
                if field == "stop" {
                    let stops = chat.parameters.entry("stop").or_insert_with(|| json!([]));
                    if let Some(list) = stops.as_array_mut() {
                        list.push(value);
                    }
                } else {
                    chat.parameters.insert(field.to_owned(), value);
                }
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
            Line::Parameter("max_tokens", json!(64))
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

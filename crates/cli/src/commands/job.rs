//! Following a job to its end: its events on stderr, its answer on stdout. Ctrl-C
//! cancels the job and waits for the hive to say what it kept.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

use crate::commands::client::Client;
use crate::commands::progress::JobDisplay;

/// How long the hive has to end a cancelled job before the CLI stops waiting.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// Prints a value as pretty JSON.
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a listing as every `ls --json` does, in OpenAI's list shape:
/// `{"object": "list", "data": [...]}`.
pub fn print_list(items: &Value) -> anyhow::Result<()> {
    let data = if items.is_array() {
        items.clone()
    } else {
        Value::Array(Vec::new())
    };
    print_json(&serde_json::json!({"object": "list", "data": data}))
}

/// Follows a started job (`{"job_id": ...}`) with its progress and narration. On
/// success prints `summary(result)` (or the result as JSON with `json_out`); a
/// failed or cancelled job is an error carrying the hive's message.
pub async fn follow_job(
    client: &Client,
    started: &Value,
    json_out: bool,
    summary: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    let job_id = started["job_id"]
        .as_str()
        .context("the hive gave no job id")?
        .to_owned();
    let mut display = JobDisplay::new(json_out);
    let mut result = Value::Null;
    let mut error = Value::Null;
    let done = {
        let follow = client.follow(&job_id, |kind, data| match kind {
            "progress" => display.progress(data),
            "step" => display.step(data),
            "narration" => display.narration(data),
            "result" => result = data.clone(),
            "error" => error = data.clone(),
            _ => {}
        });
        let mut follow = std::pin::pin!(follow);
        tokio::select! {
            d = &mut follow => d?,
            _ = tokio::signal::ctrl_c() => {
                let path = format!("/v1/jobs/{job_id}");
                if let Err(e) = client.call(Method::DELETE, &path, None).await {
                    anyhow::bail!("cannot cancel job {job_id}: {e}");
                }
                match tokio::time::timeout(CANCEL_WAIT, &mut follow).await {
                    Ok(d) => d?,
                    Err(_) => anyhow::bail!("cancelled job {job_id}; the hive has not said how it ended"),
                }
            }
        }
    };
    display.finish();
    match done["state"].as_str() {
        Some("completed") => {
            if json_out {
                print_json(&result)
            } else {
                println!("{}", summary(&result));
                Ok(())
            }
        }
        Some(state) => anyhow::bail!(
            "{}",
            error["message"]
                .as_str()
                .map_or_else(|| format!("the job ended {state}"), str::to_owned)
        ),
        None => anyhow::bail!("the job ended without saying how"),
    }
}

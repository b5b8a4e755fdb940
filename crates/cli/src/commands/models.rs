//! `rbee models ...` and `rbee hive status`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::client::{Client, HiveArgs, encode_id};
use crate::commands::gguf::human_bytes;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download a model: hf:ORG/REPO, hf:ORG/REPO:QUANT, hf:ORG/REPO/file.gguf, an https URL, file:/path
    Pull {
        /// The model reference
        reference: String,
        /// The sha256 the file must have
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List the models in the catalog
    Ls,
    /// Show one model
    Show {
        /// The model's id
        id: String,
    },
    /// Remove a model and its files
    Rm {
        /// The model's id
        id: String,
    },
    /// Make sure a worker serves the model (spawns one, pulling the model if needed)
    Load {
        /// The model's id, or a reference to pull
        id: String,
        /// cpu, cuda or metal
        #[arg(long, default_value = "cpu")]
        worker: String,
        /// The device index
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// Stop the worker after this many seconds without a request (0: never)
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Stop the workers serving the model
    Unload {
        /// The model's id
        id: String,
    },
    /// Check that every model's files are there, whole; failures mark the model failed
    Verify {
        /// Also hash every file again (reads every byte)
        #[arg(long)]
        rehash: bool,
    },
    /// Register a local GGUF file
    Import {
        /// The file
        path: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum HiveCommand {
    /// Is the hive up, and what does this machine have
    Status,
    /// The audit log: who changed what, when
    Audit {
        /// Entries at or after this time (RFC 3339, such as 2026-01-31T00:00:00Z)
        #[arg(long)]
        since: Option<String>,
        /// At most this many, the latest
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cmd: ModelsCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        ModelsCommand::Load {
            id,
            worker,
            device,
            ttl,
        } => {
            let mut body = json!({"id": id, "worker": worker, "device": device});
            if let Some(ttl) = ttl {
                body["idle_ttl_secs"] = json!(ttl);
            }
            let started = client
                .call(Method::POST, "/v1/models/load", Some(body))
                .await?;
            follow_job(&client, &started, args.json, "cancelled", |w| {
                format!(
                    "{} serves it at {}",
                    w["id"].as_str().unwrap_or("?"),
                    w["url"].as_str().unwrap_or("?")
                )
            })
            .await
        }
        ModelsCommand::Unload { id } => {
            let v = client
                .call(Method::POST, "/v1/models/unload", Some(json!({"id": id})))
                .await?;
            if args.json {
                return print_json(&v);
            }
            let stopped = v["stopped"].as_array().cloned().unwrap_or_default();
            if stopped.is_empty() {
                println!("no worker served {id}");
            }
            for w in stopped {
                println!("stopped {}", w.as_str().unwrap_or("?"));
            }
            Ok(())
        }
        ModelsCommand::Verify { rehash } => {
            let started = client
                .call(
                    Method::POST,
                    "/v1/models/verify",
                    Some(json!({"rehash": rehash})),
                )
                .await?;
            follow_job(&client, &started, args.json, "cancelled", |r| {
                let mut text = format!("{} checked, {} hashed", r["checked"], r["hashed"]);
                let problems = r["problems"].as_array().cloned().unwrap_or_default();
                if problems.is_empty() {
                    text.push_str(", no problems");
                }
                for p in problems {
                    text.push_str(&format!(
                        "\nfailed: {}: {}",
                        p["id"].as_str().unwrap_or("?"),
                        p["reason"].as_str().unwrap_or("?")
                    ));
                }
                text
            })
            .await
        }
        ModelsCommand::Pull { reference, sha256 } => {
            let mut body = json!({"model_ref": reference});
            if let Some(s) = sha256 {
                body["sha256"] = json!(s);
            }
            let started = client
                .call(Method::POST, "/v1/models/download", Some(body))
                .await?;
            follow_pull(&client, &started, args.json).await
        }
        ModelsCommand::Import { path } => {
            let path = std::path::absolute(&path).context("bad path")?;
            let started = client
                .call(
                    Method::POST,
                    "/v1/models/import",
                    Some(json!({"path": path})),
                )
                .await?;
            follow_pull(&client, &started, args.json).await
        }
        ModelsCommand::Ls => {
            let models = all_models(&client).await?;
            if args.json {
                return print_json(&models);
            }
            let rows = models.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no models; pull one with `rbee models pull hf:ORG/REPO`");
                return Ok(());
            }
            println!(
                "{:<60} {:>10} {:<8} {:<12} STATUS",
                "ID", "SIZE", "QUANT", "ARCH"
            );
            for m in rows {
                println!(
                    "{:<60} {:>10} {:<8} {:<12} {}",
                    m["id"].as_str().unwrap_or("?"),
                    human_bytes(m["size"].as_u64().unwrap_or(0)),
                    m["gguf"]["quantization"].as_str().unwrap_or("-"),
                    m["gguf"]["architecture"].as_str().unwrap_or("-"),
                    status_text(&m),
                );
            }
            Ok(())
        }
        ModelsCommand::Show { id } => {
            let m = client
                .call(Method::GET, &format!("/v1/models/{}", encode_id(&id)), None)
                .await?;
            if args.json {
                return print_json(&m);
            }
            let g = &m["gguf"];
            for (k, v) in [
                ("id", m["id"].clone()),
                ("name", m["name"].clone()),
                ("status", json!(status_text(&m))),
                ("path", m["path"].clone()),
                ("size", json!(human_bytes(m["size"].as_u64().unwrap_or(0)))),
                ("sha256", m["sha256"].clone()),
                ("verified", m["verified"].clone()),
                ("revision", m["revision"].clone()),
                ("architecture", g["architecture"].clone()),
                ("quantization", g["quantization"].clone()),
                ("parameters", g["parameter_count"].clone()),
                ("context length", g["context_length"].clone()),
                ("added", m["added_at"].clone()),
            ] {
                let shown = match v {
                    Value::String(s) => s,
                    Value::Null => "-".into(),
                    other => other.to_string(),
                };
                println!("{k:<15} {shown}");
            }
            Ok(())
        }
        ModelsCommand::Rm { id } => {
            let r = client
                .call(
                    Method::DELETE,
                    &format!("/v1/models/{}", encode_id(&id)),
                    None,
                )
                .await?;
            if args.json {
                return print_json(&r);
            }
            println!(
                "removed {id} ({} freed)",
                human_bytes(r["bytes_freed"].as_u64().unwrap_or(0))
            );
            Ok(())
        }
    }
}

/// Every model, page by page.
async fn all_models(client: &Client) -> anyhow::Result<Value> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    loop {
        let page = client
            .call(
                Method::GET,
                &format!("/v1/models?offset={}&limit={PAGE}", all.len()),
                None,
            )
            .await?;
        let items = page.as_array().cloned().unwrap_or_default();
        let n = items.len();
        all.extend(items);
        if n < PAGE {
            return Ok(Value::Array(all));
        }
    }
}

fn status_text(m: &Value) -> String {
    match m["status"]["state"].as_str() {
        Some("downloading") => match (
            m["progress"]["bytes_done"].as_u64(),
            m["progress"]["bytes_total"].as_u64(),
        ) {
            (Some(d), Some(t)) if t > 0 => format!("downloading {}%", d * 100 / t),
            _ => "downloading".into(),
        },
        Some("failed") => format!("failed: {}", m["status"]["error"].as_str().unwrap_or("")),
        Some(s) => s.to_owned(),
        None => "?".into(),
    }
}

/// Follows a model download or import; Ctrl-C cancels it and says the partial is kept.
async fn follow_pull(client: &Client, started: &Value, json_out: bool) -> anyhow::Result<()> {
    follow_job(
        client,
        started,
        json_out,
        "cancelled; the partial download is kept: pull again to resume",
        |result| {
            format!(
                "{} is available ({}, {})",
                result["id"].as_str().unwrap_or("the model"),
                human_bytes(result["size"].as_u64().unwrap_or(0)),
                result["gguf"]["quantization"].as_str().unwrap_or("?")
            )
        },
    )
    .await
}

/// Follows a job with a progress bar and its narration; Ctrl-C cancels it. On success
/// prints `summary(result)` (or the result as JSON).
pub async fn follow_job(
    client: &Client,
    started: &Value,
    json_out: bool,
    cancelled: &str,
    summary: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    let job_id = started["job_id"]
        .as_str()
        .context("the hive gave no job id")?
        .to_owned();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if json_out {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut result = Value::Null;
    let mut error = Value::Null;
    let follow = client.follow(&job_id, |kind, data| match kind {
        "progress" => {
            if let Some(t) = data["bytes_total"].as_u64() {
                bar.set_length(t);
            }
            bar.set_position(data["bytes_done"].as_u64().unwrap_or(0));
        }
        "narration" => bar.println(data["message"].as_str().unwrap_or("")),
        "result" => result = data.clone(),
        "error" => error = data.clone(),
        _ => {}
    });
    let done = tokio::select! {
        d = follow => d?,
        _ = tokio::signal::ctrl_c() => {
            bar.abandon();
            let _ = client.call(Method::DELETE, &format!("/v1/jobs/{job_id}"), None).await;
            anyhow::bail!("{cancelled}");
        }
    };
    bar.finish_and_clear();
    match done["state"].as_str() {
        Some("completed") => {
            if json_out {
                print_json(&result)
            } else {
                println!("{}", summary(&result));
                Ok(())
            }
        }
        _ => anyhow::bail!("{}", error["message"].as_str().unwrap_or("the job failed")),
    }
}

pub async fn hive(cmd: HiveCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        HiveCommand::Audit { since, limit } => {
            let mut path = format!("/v1/audit?limit={limit}");
            if let Some(since) = since {
                let t = chrono::DateTime::parse_from_rfc3339(&since)
                    .with_context(|| format!("--since {since:?} is not an RFC 3339 time"))?;
                path.push_str(&format!(
                    "&since={}",
                    url::form_urlencoded::byte_serialize(t.to_rfc3339().as_bytes())
                        .collect::<String>()
                ));
            }
            let v = client.call(Method::GET, &path, None).await?;
            if args.json {
                return print_json(&v);
            }
            for e in v.as_array().into_iter().flatten() {
                let text = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
                println!(
                    "{}  {:<18} {:<22} {:<16} {:<10} {}",
                    text("time"),
                    text("caller"),
                    text("client"),
                    text("operation"),
                    text("outcome"),
                    text("target")
                );
            }
            Ok(())
        }
        HiveCommand::Status => {
            let health = client.call(Method::GET, "/health", None).await?;
            let caps = client.call(Method::GET, "/v1/capabilities", None).await?;
            let count = all_models(&client).await?.as_array().map_or(0, Vec::len);
            if args.json {
                return print_json(
                    &json!({"health": health, "capabilities": caps, "models": count}),
                );
            }
            println!(
                "hive        {} (version {})",
                args.hive_url,
                health["version"].as_str().unwrap_or("?")
            );
            println!(
                "cpu         {} ({} cores)",
                caps["cpu"]["model"].as_str().unwrap_or("?"),
                caps["cpu"]["logical_cores"]
            );
            println!(
                "ram         {} free of {}",
                human_bytes(caps["ram"]["available_bytes"].as_u64().unwrap_or(0)),
                human_bytes(caps["ram"]["total_bytes"].as_u64().unwrap_or(0))
            );
            println!(
                "disk        {} free",
                human_bytes(caps["disk"]["free_bytes"].as_u64().unwrap_or(0))
            );
            for gpu in caps["gpus"].as_array().into_iter().flatten() {
                println!(
                    "gpu {}       {} ({} free of {})",
                    gpu["index"],
                    gpu["name"].as_str().unwrap_or("?"),
                    human_bytes(gpu["memory_free_bytes"].as_u64().unwrap_or(0)),
                    human_bytes(gpu["memory_total_bytes"].as_u64().unwrap_or(0))
                );
            }
            println!("models      {count}");
            Ok(())
        }
    }
}

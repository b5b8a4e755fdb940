//! `rbee models ...` and `rbee hive status`.

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::client::{Client, HiveArgs, encode_id};
use crate::commands::gguf::{human_bytes, human_count};
use crate::commands::job::{follow_job, print_json, print_list};
use crate::commands::names::{all_models, model_id};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download a model: hf:ORG/REPO, hf:ORG/REPO:QUANT, hf:ORG/REPO/file.gguf, an https URL, file:/path, oci://HOST/REPO:TAG
    Pull {
        /// The model reference
        reference: String,
        /// The sha256 the file must have
        #[arg(long)]
        sha256: Option<String>,
        /// Download nothing: read the remote GGUF header and say whether the model
        /// fits on disk (and which models a pull would evict), in memory, and which
        /// engine runs it
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: a context (tokens) to work the memory out at (repeatable)
        #[arg(long = "context", requires = "dry_run")]
        contexts: Vec<u64>,
        /// Leave out the multimodal projector a repo (or Ollama's library) has for
        /// the model, as llama-server's --no-mmproj
        #[arg(long)]
        no_mmproj: bool,
    },
    /// Push an available model to an OCI registry: oci://HOST/REPO:TAG (HOST may be HOST:PORT)
    Push {
        /// The model: its id, its alias, or the start of either
        id: String,
        /// Where: oci://HOST/REPO:TAG, or oci://HOST:PORT/REPO:TAG
        target: String,
    },
    /// Adopt the models the Hugging Face and llama.cpp caches, Ollama and LM Studio
    /// keep, and those in DIRS, where they lie (never moved, copied or deleted)
    Scan {
        /// More folders to look in
        dirs: Vec<std::path::PathBuf>,
    },
    /// List the models in the catalog
    Ls,
    /// Where the bytes are: each model, the hive's own and external, partial
    /// downloads, logs, and the space free
    Du,
    /// Show one model
    Show {
        /// The model: its id, its alias, or the start of either
        id: String,
    },
    /// Remove a model and its files
    Rm {
        /// The model: its id, its alias, or the start of either
        id: String,
    },
    /// Make sure a worker serves the model (spawns one, pulling the model if needed)
    Load {
        /// The model: its id, its alias, the start of either, or a reference to pull
        id: String,
        /// cpu, cuda, metal, vulkan or rocm (default: the model's preset's, else cpu)
        #[arg(long)]
        worker: Option<String>,
        /// rbee or llama.cpp (default: llama.cpp when one is installed)
        #[arg(long)]
        engine: Option<String>,
        /// The device index
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// Stop the worker after this many seconds without a request (0: never)
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Stop the workers serving the model
    Unload {
        /// The model: its id, its alias, or the start of either
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
        /// Its multimodal projector (mmproj-*.gguf), paired with it: the model then
        /// reads images on llama.cpp's engine
        #[arg(long)]
        mmproj: Option<std::path::PathBuf>,
    },
    /// Set how the model is run (its preset), for every spawn, load and request
    /// through the one endpoint
    Set {
        /// The model: its id, its alias, or the start of either
        id: String,
        /// The name the one endpoint knows it by, name:tag
        #[arg(long)]
        alias: Option<String>,
        /// The context to allocate, in tokens
        #[arg(long)]
        context: Option<u64>,
        /// Requests served at once
        #[arg(long)]
        slots: Option<u32>,
        /// rbee or llama.cpp
        #[arg(long)]
        engine: Option<String>,
        /// The backend its worker runs on: cpu, cuda, metal, vulkan or rocm
        #[arg(long)]
        worker: Option<String>,
        /// The device index on that backend
        #[arg(long)]
        device: Option<u32>,
        /// An extra llama.cpp argument (repeatable): --engine-arg=--temp --engine-arg=0.7
        #[arg(long = "engine-arg", allow_hyphen_values = true)]
        engine_args: Vec<String>,
        /// Seconds its worker stays idle before it is stopped (0: never)
        #[arg(long)]
        keep_alive: Option<u64>,
        /// Never evict it to make room for another model
        #[arg(long, conflicts_with = "unpin")]
        pin: bool,
        /// Let it be evicted again
        #[arg(long)]
        unpin: bool,
        /// Run it without its multimodal projector: text only, and less memory
        /// (--clear no_mmproj runs it with the projector again)
        #[arg(long)]
        no_mmproj: bool,
        /// A catalog model (id or alias) that drafts tokens for this one, speculative
        /// decoding on llama.cpp; it must share the vocabulary ('' for none)
        #[arg(long)]
        draft: Option<String>,
        /// The most tokens the draft proposes at a time
        #[arg(long)]
        draft_max: Option<u32>,
        /// The fewest tokens a draft is used with
        #[arg(long)]
        draft_min: Option<u32>,
        /// A system prompt for conversations through the one endpoint that bring
        /// none, as Ollama's SYSTEM
        #[arg(long)]
        system: Option<String>,
        /// A default sampling parameter by Ollama's name (repeatable; replaces the
        /// set): --parameter temperature=0.7 --parameter stop='<|im_end|>'
        #[arg(long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        /// Fields to clear (repeatable): alias, context, slots, engine, worker, device,
        /// engine_args, keep_alive_secs, no_mmproj, draft, draft_max, draft_min, system,
        /// parameters
        #[arg(long)]
        clear: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HiveCommand {
    /// Is the hive up, and what does this machine have
    Status,
    /// Clean up: partial downloads no model can resume, left-overs of installs that
    /// died, the oldest logs of stopped workers (it also runs at every start)
    Gc {
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Repair a damaged catalog: set aside entries that cannot be read and re-adopt
    /// the hive's own model folders from their files (it also runs at every start)
    Repair,
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

pub async fn run(cmd: ModelsCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        ModelsCommand::Load {
            id,
            worker,
            engine,
            device,
            ttl,
        } => {
            let id = model_id(&client, &id).await?;
            // an option not given goes as null, which the hive reads as not given
            let body = json!({"id": id, "worker": worker, "device": device, "engine": engine, "idle_ttl_secs": ttl});
            let started = client
                .call(Method::POST, "/v1/models/load", Some(body))
                .await?;
            follow_job(&client, &started, args.json, |w| {
                format!(
                    "{} serves it at {}",
                    w["id"].as_str().unwrap_or("?"),
                    w["url"].as_str().unwrap_or("?")
                )
            })
            .await
        }
        ModelsCommand::Unload { id } => {
            let id = model_id(&client, &id).await?;
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
            follow_job(&client, &started, args.json, |r| {
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
        ModelsCommand::Pull {
            reference,
            dry_run: true,
            contexts,
            ..
        } => crate::commands::storage::plan(&client, &reference, &contexts, args.json).await,
        ModelsCommand::Du => crate::commands::storage::du(&client, args.json).await,
        ModelsCommand::Pull {
            reference,
            sha256,
            no_mmproj,
            ..
        } => {
            let mut body = json!({"model_ref": reference});
            if no_mmproj {
                body["no_mmproj"] = json!(true);
            }
            if let Some(s) = sha256 {
                body["sha256"] = json!(s);
            }
            let started = client
                .call(Method::POST, "/v1/models/download", Some(body))
                .await?;
            follow_pull(&client, &started, args.json).await
        }
        ModelsCommand::Scan { dirs } => {
            let dirs: Vec<String> = dirs
                .iter()
                .map(|d| std::path::absolute(d).map(|p| p.display().to_string()))
                .collect::<Result<_, _>>()
                .context("bad path")?;
            let started = client
                .call(Method::POST, "/v1/models/scan", Some(json!({"dirs": dirs})))
                .await?;
            follow_job(&client, &started, args.json, |r| {
                let n = |k: &str| r[k].as_array().map_or(0, Vec::len);
                let mut text = format!(
                    "{} added, {} updated, {} already known, {} gone, {} hashed",
                    n("added"),
                    n("updated"),
                    r["unchanged"],
                    n("gone"),
                    r["hashed"]
                );
                for id in r["added"].as_array().cloned().unwrap_or_default() {
                    text.push_str(&format!("\nadded: {}", id.as_str().unwrap_or("?")));
                }
                for p in r["problems"].as_array().cloned().unwrap_or_default() {
                    text.push_str(&format!(
                        "\nskipped: {}: {}",
                        p["path"].as_str().unwrap_or("?"),
                        p["reason"].as_str().unwrap_or("?")
                    ));
                }
                text
            })
            .await
        }
        ModelsCommand::Push { id, target } => {
            let id = model_id(&client, &id).await?;
            let started = client
                .call(
                    Method::POST,
                    "/v1/models/push",
                    Some(json!({"id": id, "target": target})),
                )
                .await?;
            follow_job(&client, &started, args.json, |r| {
                format!(
                    "pushed {}: {} blob(s) sent ({}), {} already there",
                    r["reference"].as_str().unwrap_or("?"),
                    r["blobs_uploaded"],
                    human_bytes(r["bytes_uploaded"].as_u64().unwrap_or(0)),
                    r["blobs_skipped"]
                )
            })
            .await
        }
        ModelsCommand::Import { path, mmproj } => {
            let path = std::path::absolute(&path).context("bad path")?;
            let mmproj = mmproj
                .map(|p| std::path::absolute(&p).context("bad --mmproj path"))
                .transpose()?;
            if let Some(p) = &mmproj
                && !p.is_file()
            {
                anyhow::bail!("--mmproj {}: no such file", p.display());
            }
            let started = client
                .call(
                    Method::POST,
                    "/v1/models/import",
                    Some(json!({"path": path})),
                )
                .await?;
            follow_pull(&client, &started, args.json && mmproj.is_none()).await?;
            let Some(projector) = mmproj else {
                return Ok(());
            };
            let job = started["job_id"].as_str().unwrap_or_default();
            let done = client
                .call(Method::GET, &format!("/v1/jobs/{job}"), None)
                .await?;
            let id = done["result"]["id"]
                .as_str()
                .context("the import's job named no model")?;
            let m = client
                .call(
                    Method::POST,
                    "/v1/models/mmproj",
                    Some(json!({"id": id, "path": projector})),
                )
                .await?;
            if args.json {
                return print_json(&m);
            }
            println!(
                "{id} is paired with its projector {} ({})",
                m["projector"]["path"].as_str().unwrap_or("?"),
                m["projector"]["summary"]["projector_type"]
                    .as_str()
                    .unwrap_or("?")
            );
            Ok(())
        }
        ModelsCommand::Ls => {
            let models = all_models(&client).await?;
            if args.json {
                // the API's own list shape, every page in one
                return print_list(&models);
            }
            let rows = models.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no models; pull one with `rbee models pull hf:ORG/REPO`");
                return Ok(());
            }
            // the name people type first (every command takes it), the id last, whole
            let rows = rows
                .iter()
                .map(|m| {
                    vec![
                        m["alias"].as_str().unwrap_or("-").to_owned(),
                        size_text(m),
                        m["gguf"]["quantization"].as_str().unwrap_or("-").to_owned(),
                        m["gguf"]["architecture"].as_str().unwrap_or("-").to_owned(),
                        status_text(m),
                        m["id"].as_str().unwrap_or("?").to_owned(),
                    ]
                })
                .collect();
            print!(
                "{}",
                super::table::render(
                    &["NAME", "SIZE", "QUANT", "ARCH", "STATUS", "ID"],
                    &["SIZE"],
                    rows
                )
            );
            Ok(())
        }
        ModelsCommand::Show { id } => {
            let id = model_id(&client, &id).await?;
            let m = client
                .call(Method::GET, &format!("/v1/models/{}", encode_id(&id)), None)
                .await?;
            if args.json {
                return print_json(&m);
            }
            for (k, v) in show_rows(&m) {
                println!("{k:<15} {v}");
            }
            Ok(())
        }
        ModelsCommand::Set {
            id,
            alias,
            context,
            slots,
            engine,
            worker,
            device,
            engine_args,
            keep_alive,
            pin,
            unpin,
            no_mmproj,
            draft,
            draft_max,
            draft_min,
            system,
            parameters,
            clear,
        } => {
            let mut body = serde_json::Map::new();
            let mut put = |k: &str, v: Value| {
                body.insert(k.to_owned(), v);
            };
            if let Some(a) = alias {
                put("alias", json!(a));
            }
            if let Some(c) = context {
                put("context", json!(c));
            }
            if let Some(s) = slots {
                put("slots", json!(s));
            }
            if let Some(e) = engine {
                put("engine", json!(e));
            }
            if let Some(w) = worker {
                put("worker", json!(w));
            }
            if let Some(d) = device {
                put("device", json!(d));
            }
            if !engine_args.is_empty() {
                put("engine_args", json!(engine_args));
            }
            if let Some(k) = keep_alive {
                put("keep_alive_secs", json!(k));
            }
            if pin || unpin {
                put("pinned", json!(pin));
            }
            if no_mmproj {
                put("no_mmproj", json!(true));
            }
            if let Some(d) = draft {
                put("draft", json!(d));
            }
            if let Some(n) = draft_max {
                put("draft_max", json!(n));
            }
            if let Some(n) = draft_min {
                put("draft_min", json!(n));
            }
            if let Some(text) = system {
                put("system", json!(text));
            }
            if !parameters.is_empty() {
                put("parameters", parameters_of(&parameters)?);
            }
            for field in clear {
                put(&field, Value::Null);
            }
            if body.is_empty() {
                anyhow::bail!("nothing to set: see rbee models set --help");
            }
            let id = model_id(&client, &id).await?;
            let m = client
                .call(
                    Method::PATCH,
                    &format!("/v1/models/{}", encode_id(&id)),
                    Some(Value::Object(body)),
                )
                .await?;
            if args.json {
                return print_json(&m);
            }
            println!("{id}: {}", preset_text(&m["preset"]));
            Ok(())
        }
        ModelsCommand::Rm { id } => {
            let id = model_id(&client, &id).await?;
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

fn status_text(m: &Value) -> String {
    let done = m["progress"]["bytes_done"].as_u64();
    let total = m["progress"]["bytes_total"].as_u64();
    let amount = match (done, total) {
        (Some(d), Some(t)) if t > 0 => format!(
            "{}% ({} of {})",
            d.saturating_mul(100) / t,
            human_bytes(d),
            human_bytes(t)
        ),
        (Some(d), _) => human_bytes(d),
        (None, _) => String::new(),
    };
    match m["status"]["state"].as_str() {
        Some("downloading") if amount.is_empty() => "downloading".into(),
        Some("downloading") => format!("downloading {amount}"),
        Some("paused") => format!("paused at {amount}: pull again to resume"),
        Some("failed") => format!("failed: {}", m["status"]["error"].as_str().unwrap_or("")),
        Some(s) => s.to_owned(),
        None => "?".into(),
    }
}

/// `models show`: every field a person asks about, formatted as `gguf inspect` does.
fn show_rows(m: &Value) -> Vec<(&'static str, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let g = &m["gguf"];
    let parameters = g["parameter_count"]
        .as_u64()
        .map_or_else(|| "-".to_owned(), |n| format!("{} ({n})", human_count(n)));
    let verified = if m["verified"].as_bool() == Some(true) {
        "yes: the bytes matched the sha256 the source published"
    } else if m["sha256"].is_string() {
        "no: the source published no sha256; the one shown is our own hash of the file"
    } else {
        "no: no sha256 is known"
    };
    let hashed = m["hashed_at"].as_str().map_or_else(
        || "never (rbee models verify --rehash)".to_owned(),
        |t| format!("{t}, matched"),
    );
    let mut rows = vec![
        ("id", text(&m["id"])),
        ("name", text(&m["name"])),
        ("status", status_text(m)),
        ("path", text(&m["path"])),
        ("size", size_text(m)),
        ("sha256", text(&m["sha256"])),
        ("verified", verified.to_owned()),
        ("last hashed", hashed),
        ("revision", text(&m["revision"])),
        ("architecture", text(&g["architecture"])),
        ("quantization", text(&g["quantization"])),
        ("parameters", parameters),
        ("context length", text(&g["context_length"])),
    ];
    if let Ok(summary) = serde_json::from_value::<gguf::Summary>(g.clone()) {
        let ctx = summary.context_length.unwrap_or(4096);
        let est = summary.memory_estimate(ctx);
        rows.push((
            "memory",
            format!(
                "{} at {ctx} tokens (weights {}, KV cache {})",
                human_bytes(est.total_bytes),
                human_bytes(est.weights_bytes),
                est.kv_cache_bytes
                    .map_or_else(|| "unknown".to_owned(), human_bytes)
            ),
        ));
    }
    rows.push(("added", text(&m["added_at"])));
    rows.push(("last used", text(&m["last_accessed"])));
    if m["alias"].is_string() {
        rows.push(("alias", text(&m["alias"])));
    }
    rows.push(("preset", preset_text(&m["preset"])));
    rows
}

/// A preset in one line: `context 8192, engine llama.cpp, pinned`, or `none`.
fn preset_text(p: &Value) -> String {
    let Some(p) = p.as_object().filter(|p| !p.is_empty()) else {
        return "none (the hive's defaults)".to_owned();
    };
    p.iter()
        .map(|(k, v)| match v {
            Value::Bool(true) => k.clone(),
            Value::String(s) => format!("{k} {s}"),
            v => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The size column: the file's, else what a download has on disk.
fn size_text(m: &Value) -> String {
    match m["size"].as_u64() {
        Some(n) if n > 0 => human_bytes(n),
        _ => m["progress"]["bytes_total"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), human_bytes),
    }
}

/// Follows a model download or import; Ctrl-C cancels it, and the hive says what
/// it kept.
async fn follow_pull(client: &Client, started: &Value, json_out: bool) -> anyhow::Result<()> {
    follow_job(client, started, json_out, |result| {
        format!(
            "{} is available ({}, {})",
            result["id"].as_str().unwrap_or("the model"),
            human_bytes(result["size"].as_u64().unwrap_or(0)),
            result["gguf"]["quantization"].as_str().unwrap_or("?")
        )
    })
    .await
}

pub async fn hive(cmd: HiveCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        HiveCommand::Gc { dry_run } => {
            crate::commands::storage::gc(&client, dry_run, args.json).await
        }
        HiveCommand::Repair => {
            let v = client.call(Method::POST, "/v1/hive/repair", None).await?;
            if args.json {
                return print_json(&v);
            }
            let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
            for id in list("readopted") {
                println!("re-adopted  {}", id.as_str().unwrap_or("?"));
            }
            for q in list("quarantined") {
                println!(
                    "set aside   {} {}: {}",
                    q["kind"].as_str().unwrap_or("?"),
                    q["id"].as_str().unwrap_or("?"),
                    q["reason"].as_str().unwrap_or("?")
                );
            }
            for u in list("unreadable") {
                println!(
                    "unreadable  {}: {}",
                    u["path"].as_str().unwrap_or("?"),
                    u["reason"].as_str().unwrap_or("?")
                );
            }
            if list("readopted").is_empty()
                && list("quarantined").is_empty()
                && list("unreadable").is_empty()
            {
                println!("the catalog names every model folder, and every entry reads");
            }
            Ok(())
        }
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
            let models = all_models(&client).await?;
            let workers = client.call(Method::GET, "/v1/workers", None).await?;
            let binaries = client
                .call(Method::GET, "/v1/worker-binaries", None)
                .await?;
            // a hive in a fleet: its link to etcd and its peers
            let fleet = if health.get("fleet").is_some() {
                client.call(Method::GET, "/v1/fleet", None).await?
            } else {
                Value::Null
            };
            if args.json {
                return print_json(&json!({
                    "health": health,
                    "capabilities": caps,
                    "models": models,
                    "workers": workers["workers"],
                    "worker_binaries": binaries,
                    "fleet": fleet,
                }));
            }
            let mut screen =
                status_screen(&args.hive_url, &health, &caps, &models, &workers, &binaries);
            if !fleet.is_null() {
                screen.push_str(&fleet_line(&fleet));
            }
            print!("{screen}");
            Ok(())
        }
    }
}

/// `hive status`'s line for the fleet: its name, this hive's link to etcd (and why,
/// when it is not joined), and how many peers it sees.
fn fleet_line(fleet: &Value) -> String {
    let link = &fleet["link"];
    let peers = fleet["data"]
        .as_array()
        .map_or(0, |d| d.iter().filter(|h| h["self"] != true).count());
    let reason = link["reason"]
        .as_str()
        .map(|r| format!(" ({r}); serving this hive's models alone"))
        .unwrap_or_default();
    format!(
        "fleet       {} as {}: {}{reason}, {peers} peer(s)\n",
        fleet["fleet"].as_str().unwrap_or("?"),
        fleet["hive_id"].as_str().unwrap_or("?"),
        link["state"].as_str().unwrap_or("?"),
    )
}

/// `hive status`: the machine, the models, the worker binaries and the workers on
/// one screen.
fn status_screen(
    url: &str,
    health: &Value,
    caps: &Value,
    models: &Value,
    workers: &Value,
    binaries: &Value,
) -> String {
    use std::fmt::Write as _;
    let bytes = |v: &Value| human_bytes(v.as_u64().unwrap_or(0));
    let models = models.as_array().cloned().unwrap_or_default();
    let workers = workers["workers"].as_array().cloned().unwrap_or_default();
    let binaries = binaries.as_array().cloned().unwrap_or_default();
    let live: Vec<&Value> = workers
        .iter()
        .filter(|w| !matches!(w["state"].as_str(), Some("stopped" | "failed")))
        .collect();
    let worker_rss: u64 = live.iter().filter_map(|w| w["rss_bytes"].as_u64()).sum();
    let model_bytes: u64 = models
        .iter()
        .filter(|m| m["status"]["state"] == "available")
        .filter_map(|m| m["size"].as_u64())
        .sum();
    let mut by_state = std::collections::BTreeMap::<String, usize>::new();
    for m in &models {
        *by_state
            .entry(m["status"]["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let states = by_state
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hive        {url} (version {})",
        health["version"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "cpu         {} ({} cores)",
        caps["cpu"]["model"].as_str().unwrap_or("?"),
        caps["cpu"]["logical_cores"]
    );
    let _ = writeln!(
        out,
        "ram         {} free of {}; {} workers use {}",
        bytes(&caps["ram"]["available_bytes"]),
        bytes(&caps["ram"]["total_bytes"]),
        live.len(),
        human_bytes(worker_rss)
    );
    for gpu in caps["gpus"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "gpu {:<7} {} ({} free of {})",
            gpu["index"],
            gpu["name"].as_str().unwrap_or("?"),
            bytes(&gpu["memory_free_bytes"]),
            bytes(&gpu["memory_total_bytes"])
        );
    }
    let _ = writeln!(
        out,
        "disk        {} free; models use {}",
        bytes(&caps["disk"]["free_bytes"]),
        human_bytes(model_bytes)
    );
    let _ = writeln!(
        out,
        "models      {}{}",
        models.len(),
        if states.is_empty() {
            String::new()
        } else {
            format!(" ({states})")
        }
    );
    for m in models.iter().filter(|m| {
        matches!(
            m["status"]["state"].as_str(),
            Some("downloading" | "paused")
        )
    }) {
        let _ = writeln!(
            out,
            "  {} {}",
            m["id"].as_str().unwrap_or("?"),
            status_text(m)
        );
    }
    let health = &caps["catalog"]["health"];
    if caps["catalog"]["ok"] == false {
        if let Some(aside) = health["damaged_moved_to"].as_str() {
            let _ = writeln!(out, "catalog     DAMAGED: moved to {aside}, a new one made");
        }
        for q in health["quarantined"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "catalog     set aside {} {}: {}",
                q["kind"].as_str().unwrap_or("?"),
                q["id"].as_str().unwrap_or("?"),
                q["reason"].as_str().unwrap_or("?")
            );
        }
        let readopted = health["readopted"].as_array().map_or(0, Vec::len);
        if readopted > 0 {
            let _ = writeln!(
                out,
                "catalog     {readopted} model(s) re-adopted from their folders"
            );
        }
    }
    let _ = writeln!(out, "binaries    {}", binaries.len());
    for b in &binaries {
        let _ = writeln!(
            out,
            "  {} ({}, {})",
            b["id"].as_str().unwrap_or("?"),
            b["status"]["state"].as_str().unwrap_or("?"),
            bytes(&b["size"])
        );
    }
    let _ = writeln!(out, "workers     {} live", live.len());
    if !workers.is_empty() {
        out.push_str(&crate::commands::workers::workers_table(&workers));
    }
    out
}

/// `NAME=VALUE` pairs as a preset's parameters: numbers as numbers, `stop` as a
/// list of every one given.
fn parameters_of(pairs: &[String]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            anyhow::bail!("--parameter {pair:?}: expected NAME=VALUE, such as temperature=0.7");
        };
        let name = name.trim();
        if name == "stop" {
            let stops = out.entry("stop").or_insert_with(|| json!([]));
            if let Some(list) = stops.as_array_mut() {
                list.push(json!(value));
            }
            continue;
        }
        let number: Value = serde_json::from_str::<serde_json::Number>(value.trim())
            .map(Value::Number)
            .unwrap_or_else(|_| json!(value));
        out.insert(name.to_owned(), number);
    }
    Ok(Value::Object(out))
}

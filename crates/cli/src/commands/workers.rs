//! `rbee workers ...` and `rbee worker-binaries ...`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::client::{Client, HiveArgs, encode_id};
use crate::commands::gguf::human_bytes;
use crate::commands::job::{follow_job, print_json, print_list};

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List the worker processes
    Ls,
    /// Start a worker for a model in the catalog; waits until it is ready
    Spawn {
        /// The model: its id, its alias, or the start of either (see `rbee models ls`)
        model: String,
        /// cpu, cuda, metal, vulkan or rocm (default: the model's preset's, else cpu)
        #[arg(long)]
        worker: Option<String>,
        /// rbee or llama.cpp (default: llama.cpp when one is installed)
        #[arg(long)]
        engine: Option<String>,
        /// The device index
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// CPU threads (default: one per physical core)
        #[arg(short, long)]
        threads: Option<u32>,
        /// Start even when the model looks too big for the free memory
        #[arg(long)]
        force: bool,
    },
    /// Stop a worker
    Stop {
        /// The worker's id
        id: String,
    },
    /// Print a worker's log
    Logs {
        /// The worker's id
        id: String,
        /// Keep printing what it writes
        #[arg(short, long)]
        follow: bool,
        /// Only the last lines
        #[arg(long)]
        tail: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerBinariesCommand {
    /// List the installed worker binaries
    Ls,
    /// Build a worker from source or download a release archive:
    /// `install cpu` builds our worker from this workspace;
    /// `install llama.cpp:cpu --source /path/to/llama.cpp` builds llama-server with cmake;
    /// `install llama.cpp:cpu --source https://.../llama-b6123-bin-ubuntu-x64.zip --sha256 ...`
    /// downloads a llama.cpp release
    Install {
        /// The backend (cpu, cuda, metal, vulkan, rocm), optionally after its engine:
        /// llama.cpp:cuda
        worker: String,
        /// `local` (our worker, from this workspace), a llama.cpp source tree, or a
        /// release archive's URL
        #[arg(long, default_value = "local")]
        source: String,
        /// The archive's sha256 (required with a URL)
        #[arg(long)]
        sha256: Option<String>,
        /// A cmake setting for a llama.cpp build, after the defaults (repeatable):
        /// --cmake-arg=-DGGML_NATIVE=OFF
        #[arg(long = "cmake-arg", allow_hyphen_values = true)]
        cmake_args: Vec<String>,
    },
    /// Register a worker binary already on this machine, where it lies:
    /// llama.cpp's llama-server, or an llm-worker-rbee you built
    Add {
        /// The executable
        path: std::path::PathBuf,
        /// cpu, cuda, metal, vulkan or rocm (llama-server's own device list decides
        /// when it names a GPU)
        #[arg(long, default_value = "cpu")]
        worker: String,
    },
    /// Remove a worker binary (one that was added is only forgotten)
    Rm {
        /// The binary's id
        id: String,
    },
}

fn column(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The workers as a table, as `ollama ps` shows them: where each serves, its memory,
/// its slots (`1 of 1 free`), and when it stops for idling.
pub fn workers_table(workers: &[Value]) -> String {
    let rows = workers
        .iter()
        .map(|w| {
            let slots = match (w["slots_available"].as_u64(), w["slots_total"].as_u64()) {
                (Some(a), Some(t)) => format!("{a} of {t} free"),
                _ => "-".into(),
            };
            let memory = w["rss_bytes"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), human_bytes);
            vec![
                column(&w["id"]),
                column(&w["state"]),
                format!("{} {}", column(&w["engine"]), column(&w["engine_version"])),
                column(&w["pid"]),
                column(&w["url"]),
                memory,
                slots,
                idle_stop(w),
                column(&w["restart_count"]),
                column(&w["model_ref"]),
            ]
        })
        .collect();
    super::table::render(
        &[
            "ID",
            "STATE",
            "ENGINE",
            "PID",
            "URL",
            "MEMORY",
            "SLOTS",
            "IDLE STOP",
            "RESTARTS",
            "MODEL",
        ],
        &["MEMORY", "RESTARTS"],
        rows,
    )
}

/// When an idle worker stops: `in 4m05s` (its idle TTL less its idle time), or
/// `never`.
fn idle_stop(w: &Value) -> String {
    let Some(ttl) = w["idle_ttl_secs"].as_i64().filter(|&t| t > 0) else {
        return "never".into();
    };
    let idle = w["last_activity"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| {
            (chrono::Utc::now() - t.to_utc()).num_seconds().max(0)
        });
    let left = (ttl - idle).max(0);
    format!("in {}m{:02}s idle", left / 60, left % 60)
}

pub async fn workers(cmd: WorkersCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        WorkersCommand::Ls => {
            let v = client.call(Method::GET, "/v1/workers", None).await?;
            if args.json {
                return print_list(&v["workers"]);
            }
            let workers = v["workers"].as_array().cloned().unwrap_or_default();
            if workers.is_empty() {
                println!("no workers: start one with `rbee workers spawn MODEL_ID`");
                return Ok(());
            }
            print!("{}", workers_table(&workers));
            Ok(())
        }
        WorkersCommand::Spawn {
            model,
            worker,
            engine,
            device,
            threads,
            force,
        } => {
            let model = crate::commands::names::model_id(&client, &model).await?;
            // an option not given goes as null, which the hive reads as not given
            let body = json!({"model": model, "worker": worker, "device": device, "force": force, "engine": engine, "threads": threads});
            let started = client
                .call(Method::POST, "/v1/workers/spawn", Some(body))
                .await?;
            follow_job(&client, &started, args.json, |w| {
                format!(
                    "{} is ready at {} (pid {})",
                    column(&w["id"]),
                    column(&w["url"]),
                    column(&w["pid"])
                )
            })
            .await
        }
        WorkersCommand::Stop { id } => {
            let v = client
                .call(
                    Method::DELETE,
                    &format!("/v1/workers/{}", encode_id(&id)),
                    None,
                )
                .await?;
            if args.json {
                return print_json(&v);
            }
            println!("stopped {id}");
            Ok(())
        }
        WorkersCommand::Logs { id, follow, tail } => {
            let path = format!("/v1/workers/{}/logs", encode_id(&id));
            let first = match tail {
                Some(n) => format!("{path}?tail={n}"),
                None => path.clone(),
            };
            let (text, mut offset) = client.get_text(&first).await?;
            print!("{text}");
            if !follow {
                return Ok(());
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                let (text, next) = client.get_text(&format!("{path}?offset={offset}")).await?;
                print!("{text}");
                offset = next;
            }
        }
    }
}

pub async fn binaries(cmd: WorkerBinariesCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match cmd {
        WorkerBinariesCommand::Ls => {
            let v = client
                .call(Method::GET, "/v1/worker-binaries", None)
                .await?;
            if args.json {
                return print_list(&v);
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no worker binaries: install one with `rbee worker-binaries install cpu`");
                return Ok(());
            }
            let rows = list
                .iter()
                .map(|b| {
                    vec![
                        column(&b["id"]),
                        column(&b["engine"]),
                        column(&b["engine_version"]),
                        column(&b["worker_type"])
                            .trim_end_matches("_llm")
                            .to_owned(),
                        column(&b["status"]["state"]),
                        human_bytes(b["size"].as_u64().unwrap_or(0)),
                        column(&b["source"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                super::table::render(
                    &[
                        "ID", "ENGINE", "VERSION", "BACKEND", "STATE", "SIZE", "SOURCE"
                    ],
                    &["SIZE"],
                    rows
                )
            );
            for b in &list {
                if let Some(e) = b["status"]["error"].as_str() {
                    println!("{}: {e}", column(&b["id"]));
                }
            }
            Ok(())
        }
        WorkerBinariesCommand::Install {
            worker,
            source,
            sha256,
            cmake_args,
        } => {
            // a source tree is named as the hive will see it: absolute
            let path = std::path::Path::new(&source);
            let source = if source != "local" && !source.contains("://") && path.exists() {
                std::path::absolute(path)
                    .context("bad path")?
                    .display()
                    .to_string()
            } else {
                source
            };
            let mut body = json!({"worker": worker, "source": source, "cmake_args": cmake_args});
            if let Some(s) = sha256 {
                body["sha256"] = json!(s);
            }
            let started = client
                .call(Method::POST, "/v1/worker-binaries/install", Some(body))
                .await?;
            follow_job(&client, &started, args.json, |b| {
                format!(
                    "{} is installed ({})",
                    column(&b["id"]),
                    human_bytes(b["size"].as_u64().unwrap_or(0))
                )
            })
            .await
        }
        WorkerBinariesCommand::Add { path, worker } => {
            let path = std::path::absolute(&path).context("bad path")?;
            let body = json!({"worker": worker, "source": format!("file:{}", path.display())});
            let started = client
                .call(Method::POST, "/v1/worker-binaries/install", Some(body))
                .await?;
            follow_job(&client, &started, args.json, |b| {
                format!(
                    "{} is added ({} {}, {}); it stays at {}",
                    column(&b["id"]),
                    column(&b["engine"]),
                    column(&b["engine_version"]),
                    human_bytes(b["size"].as_u64().unwrap_or(0)),
                    column(&b["path"])
                )
            })
            .await
        }
        WorkerBinariesCommand::Rm { id } => {
            let v = client
                .call(
                    Method::DELETE,
                    &format!("/v1/worker-binaries/{}", encode_id(&id)),
                    None,
                )
                .await
                .with_context(|| format!("cannot remove {id}"))?;
            if args.json {
                return print_json(&v);
            }
            println!("removed {id}");
            Ok(())
        }
    }
}

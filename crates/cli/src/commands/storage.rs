//! Disk: `rbee models du` (where the bytes are), `rbee hive gc` (cleanup) and
//! `rbee models pull --dry-run` (the fit check before a download).

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::client::Client;
use crate::commands::gguf::{human_bytes, human_count};
use crate::commands::job::print_json;

fn bytes(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), human_bytes)
}

/// `rbee models du`.
pub async fn du(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let v = client.call(Method::GET, "/v1/storage", None).await?;
    if json_out {
        return print_json(&v);
    }
    print!("{}", du_text(&v));
    Ok(())
}

fn du_text(v: &Value) -> String {
    let mut out = String::new();
    let mut models = v["models"].as_array().cloned().unwrap_or_default();
    models.sort_by_key(|m| std::cmp::Reverse(m["bytes"].as_u64().unwrap_or(0)));
    for m in &models {
        let mut flags = Vec::new();
        if m["external"].as_bool() == Some(true) {
            flags.push("external");
        }
        if m["pinned"].as_bool() == Some(true) {
            flags.push("pinned");
        }
        let partial = m["partial_bytes"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>10}  {:<11} {}{}{}",
            bytes(&m["bytes"]),
            m["status"].as_str().unwrap_or("?"),
            m["id"].as_str().unwrap_or("?"),
            if flags.is_empty() {
                String::new()
            } else {
                format!("  ({})", flags.join(", "))
            },
            if partial > 0 {
                format!("  + {} partial", human_bytes(partial))
            } else {
                String::new()
            },
        );
    }
    let t = &v["totals"];
    let _ = writeln!(out, "\nown models       {:>10}", bytes(&t["own_bytes"]));
    let _ = writeln!(
        out,
        "external models  {:>10}  (not the hive's: never deleted)",
        bytes(&t["external_bytes"])
    );
    let _ = writeln!(
        out,
        "partials         {:>10}  ({} no model can resume)",
        bytes(&t["partial_bytes"]),
        bytes(&t["orphan_partial_bytes"])
    );
    let _ = writeln!(
        out,
        "push sessions    {:>10}",
        bytes(&t["upload_session_bytes"])
    );
    let _ = writeln!(
        out,
        "worker logs      {:>10}",
        bytes(&t["worker_log_bytes"])
    );
    let _ = writeln!(
        out,
        "worker binaries  {:>10}",
        bytes(&t["worker_binary_bytes"])
    );
    let _ = writeln!(out, "free             {:>10}", bytes(&v["free_bytes"]));
    if let Some(q) = v["quota_bytes"].as_u64() {
        let _ = writeln!(
            out,
            "quota            {:>10}  (--models-max-bytes)",
            human_bytes(q)
        );
    }
    if let Some(m) = v["min_free_bytes"].as_u64() {
        let _ = writeln!(
            out,
            "kept free        {:>10}  (--min-free-disk)",
            human_bytes(m)
        );
    }
    out
}

/// `rbee hive gc [--dry-run]`.
pub async fn gc(client: &Client, dry_run: bool, json_out: bool) -> anyhow::Result<()> {
    let v = client
        .call(
            Method::POST,
            "/v1/hive/gc",
            Some(json!({"dry_run": dry_run})),
        )
        .await?;
    if json_out {
        return print_json(&v);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    let removed = v["removed"].as_array().cloned().unwrap_or_default();
    for r in &removed {
        println!(
            "{verb} {} ({}): {}",
            r["path"].as_str().unwrap_or("?"),
            bytes(&r["bytes"]),
            r["why"].as_str().unwrap_or("")
        );
    }
    for f in v["failed"].as_array().into_iter().flatten() {
        println!(
            "could not remove {}: {}",
            f["path"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        );
    }
    let freed = bytes(&v["bytes_freed"]);
    if removed.is_empty() {
        println!("nothing to clean up");
    } else if dry_run {
        println!("{freed} would be freed");
    } else {
        println!("{freed} freed");
    }
    Ok(())
}

/// `rbee models pull REF --dry-run`.
pub async fn plan(
    client: &Client,
    reference: &str,
    contexts: &[u64],
    json_out: bool,
) -> anyhow::Result<()> {
    let v = client
        .call(
            Method::POST,
            "/v1/models/plan",
            Some(json!({"model_ref": reference, "contexts": contexts})),
        )
        .await?;
    if json_out {
        return print_json(&v);
    }
    print!("{}", plan_text(&v));
    Ok(())
}

fn plan_text(v: &Value) -> String {
    let mut out = String::new();
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let _ = writeln!(out, "{}", text(&v["id"]));
    let _ = writeln!(
        out,
        "  {} {}, {} parameters, {}, context {}",
        text(&v["architecture"]),
        v["name"]
            .as_str()
            .map(|n| format!("({n})"))
            .unwrap_or_default(),
        human_count(v["parameter_count"].as_u64().unwrap_or(0)),
        text(&v["quantization"]),
        v["context_length"]
            .as_u64()
            .map_or_else(|| "?".into(), |c| c.to_string()),
    );
    let _ = writeln!(
        out,
        "  size {} in {} file(s); header read: {} in {} request(s)",
        bytes(&v["size_bytes"]),
        v["files"],
        bytes(&v["header"]["bytes_read"]),
        v["header"]["requests"]
    );
    let d = &v["disk"];
    if d["already_here"].as_bool() == Some(true) {
        let _ = writeln!(out, "  disk: already in the catalog");
    } else {
        let _ = writeln!(
            out,
            "  disk: needs {}, {} free{}{}",
            bytes(&d["needed_bytes"]),
            bytes(&d["free_bytes"]),
            d["quota_bytes"]
                .as_u64()
                .map_or_else(String::new, |q| format!(
                    "; quota {} with {} used",
                    human_bytes(q),
                    bytes(&d["used_bytes"])
                )),
            d["min_free_bytes"]
                .as_u64()
                .map_or_else(String::new, |m| format!("; {} kept free", human_bytes(m))),
        );
        for e in d["evict"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    would evict {} ({}, last used {})",
                text(&e["id"]),
                bytes(&e["bytes"]),
                text(&e["last_used"])
            );
        }
        if d["fits"].as_bool() == Some(false) {
            let _ = writeln!(out, "    does not fit: {}", text(&d["reason"]));
        }
    }
    let m = &v["memory"];
    let _ = writeln!(out, "  memory (RAM {}):", bytes(&m["ram_total_bytes"]));
    for c in m["by_context"].as_array().into_iter().flatten() {
        let gpus: Vec<String> = c["fits_gpus"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                format!(
                    "GPU {} {}",
                    g["index"],
                    match g["fits"].as_bool() {
                        Some(true) => "fits",
                        Some(false) => "too small",
                        None => "?",
                    }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    context {:>7}: {:>10}  RAM {}{}",
            c["context"],
            bytes(&c["total_bytes"]),
            if c["fits_ram"].as_bool() == Some(true) {
                "fits"
            } else {
                "too small"
            },
            if gpus.is_empty() {
                String::new()
            } else {
                format!(", {}", gpus.join(", "))
            }
        );
    }
    let engines = v["engines"].as_array().cloned().unwrap_or_default();
    if engines.is_empty() {
        let _ = writeln!(
            out,
            "  engines: none installed (rbee worker-binaries install cpu)"
        );
    }
    for e in engines {
        let _ = writeln!(
            out,
            "  engine {} ({} {}): {}",
            text(&e["id"]),
            text(&e["engine"]),
            text(&e["backend"]),
            if e["runs_it"].as_bool() == Some(true) {
                "runs it".to_owned()
            } else {
                text(&e["why_not"])
            }
        );
    }
    out
}

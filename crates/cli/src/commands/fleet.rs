//! `rbee fleet ls` (the lab's hives: devices, room, loaded models) and
//! `rbee fleet models` (which model is on which hive), from `GET /v1/fleet`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::commands::client::{Client, HiveArgs};
use crate::commands::gguf::human_bytes;
use crate::commands::job::print_list;
use crate::commands::table;

/// `rbee fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The fleet's hives: URL, free memory of each device, loaded models
    Ls,
    /// Which model is on which hive, and where it is loaded
    Models,
}

/// Runs a fleet command.
pub async fn run(cmd: FleetCommand, args: &HiveArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let v = client.call(Method::GET, "/v1/fleet", None).await?;
    let hives = v["data"].as_array().cloned().unwrap_or_default();
    match cmd {
        FleetCommand::Ls if args.json => print_list(&Value::Array(hives)),
        FleetCommand::Ls => {
            print!("{}", hives_table(&v, &hives));
            Ok(())
        }
        FleetCommand::Models => {
            let rows = models(&hives);
            if args.json {
                return print_list(&Value::Array(rows));
            }
            print!("{}", models_table(&rows));
            Ok(())
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

fn hives_table(fleet: &Value, hives: &[Value]) -> String {
    let rows = hives
        .iter()
        .map(|h| {
            let devices: Vec<String> = h["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} {} free of {}",
                        text(&d["name"]),
                        human_bytes(d["free_bytes"].as_u64().unwrap_or(0)),
                        human_bytes(d["budget_bytes"].as_u64().unwrap_or(0))
                    )
                })
                .collect();
            let loaded: Vec<String> = h["loaded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    format!(
                        "{} ({} slot(s) free, {} queued)",
                        text(&l["model"]),
                        l["slots_free"].as_u64().unwrap_or(0),
                        l["queue"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            let mark = if h["self"] == true {
                " (this hive)"
            } else {
                ""
            };
            vec![
                format!("{}{mark}", text(&h["id"])),
                text(&h["url"]),
                h["models"].as_array().map_or(0, Vec::len).to_string(),
                devices.join(", "),
                if loaded.is_empty() {
                    "-".to_owned()
                } else {
                    loaded.join(", ")
                },
            ]
        })
        .collect();
    let mut out = table::render(
        &["HIVE", "URL", "MODELS", "MEMORY", "LOADED"],
        &["MODELS"],
        rows,
    );
    let link = &fleet["link"];
    if link["state"] != "joined" {
        out.push_str(&format!(
            "fleet {}: {}{}\n",
            text(&fleet["fleet"]),
            text(&link["state"]),
            link["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    out
}

/// One row per model and hive: alias, id, size, hive, whether loaded there.
fn models(hives: &[Value]) -> Vec<Value> {
    let mut rows = Vec::new();
    for h in hives {
        let loaded: Vec<&str> = h["loaded"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["model"].as_str())
            .collect();
        for m in h["models"].as_array().into_iter().flatten() {
            let id = m["id"].as_str().unwrap_or_default();
            rows.push(serde_json::json!({
                "alias": m["alias"],
                "id": id,
                "size": m["size"],
                "kind": m["kind"],
                "hive": h["id"],
                "loaded": loaded.contains(&id),
            }));
        }
    }
    rows.sort_by(|a, b| text(&a["alias"]).cmp(&text(&b["alias"])));
    rows
}

fn models_table(rows: &[Value]) -> String {
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                text(&r["alias"]),
                human_bytes(r["size"].as_u64().unwrap_or(0)),
                text(&r["hive"]),
                if r["loaded"] == true { "loaded" } else { "-" }.to_owned(),
                text(&r["id"]),
            ]
        })
        .collect();
    table::render(&["NAME", "SIZE", "HIVE", "LOADED", "ID"], &["SIZE"], rows)
}

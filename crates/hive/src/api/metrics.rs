//! `GET /metrics` and the middleware that counts every request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::LiveWorker;
use crate::state::SharedState;

/// Counts every request and its latency, by the route's template (not the raw path).
pub async fn track(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.request_done(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The content type of the Prometheus text format, what `/metrics` serves by default.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics, served when the scraper asks for it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when `Accept` names it.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "system", responses((status = 200, description = "The Prometheus text format (version 0.0.4), or OpenMetrics 1.0 when `Accept` asks for `application/openmetrics-text`", content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn render(
    State(state): State<SharedState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let catalog = Arc::clone(&state.catalog);
    let records = tokio::task::spawn_blocking(move || catalog.list())
        .await
        .map_err(ApiError::internal)??;
    let m = &state.metrics;
    m.set_gauges(
        &records,
        state
            .jobs
            .count_by_state()
            .into_iter()
            .map(|(s, n)| (s.name(), n)),
        state.workers.count_by_state(),
    );
    let workers = state.workers.list();
    m.set_live_workers(workers.iter().filter(|w| w.state.is_live()).map(|w| {
        LiveWorker {
            id: &w.id,
            engine: w.engine.as_str(),
            model: &w.model_ref,
            slots_busy: w
                .slots_total
                .zip(w.slots_available)
                .map(|(total, free)| total.saturating_sub(free)),
            tokens_per_second: w.tokens_per_second,
            draft_acceptance: w.draft_acceptance,
        }
    }));
    let text = m.encode().map_err(ApiError::internal)?;
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
            .into_response()
    })
}

/// OpenMetrics text as the Prometheus text format (0.0.4) has it: a counter's
/// `# HELP` and `# TYPE` name its `_total` samples, `unknown` is `untyped`, and there
/// are no `# UNIT` or `# EOF` lines. Samples are the same in both.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                let text = if prefix == "# TYPE " && text == "unknown" {
                    "untyped"
                } else {
                    text
                };
                out.push_str(&format!("{prefix}{name} {text}\n"));
            }
            None if line.starts_with("# UNIT ") || line == "# EOF" => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn counters_are_named_by_their_samples() {
        let om = "# HELP rbee_downloads Finished downloads.\n# TYPE rbee_downloads counter\nrbee_downloads_total{result=\"failed\"} 0\n# HELP rbee_jobs Jobs.\n# TYPE rbee_jobs gauge\nrbee_jobs 2\n# TYPE rbee_x unknown\nrbee_x 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP rbee_downloads_total Finished downloads.\n# TYPE rbee_downloads_total counter\nrbee_downloads_total{result=\"failed\"} 0\n# HELP rbee_jobs Jobs.\n# TYPE rbee_jobs gauge\nrbee_jobs 2\n# TYPE rbee_x untyped\nrbee_x 1\n"
        );
    }
}

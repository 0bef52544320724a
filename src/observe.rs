//! Liveness, readiness and metrics endpoints: `/healthz`, `/readyz`, `/metrics`.
//!
//! None of them takes a token: probes and Prometheus scrapers on the LAN call them, and they
//! reveal no secret (target and source names, counts, actor paths). Put relayarr behind a
//! proxy that hides them if its port is reachable from outside the LAN.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use relayarr_actors::store::{now_ms, PendingSummary};
use serde_json::json;

use crate::http::AppState;
use crate::serve::{BodyBudget, Connections};

/// How long `/readyz` waits for its test write. Probes usually time out after 1-5 s; a store
/// that needs longer than this to commit one row is not ready to take webhooks either.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "observe",
    summary = "Liveness: the process is serving HTTP",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value))
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store commits a write and the supervision tree (the root and
/// every supervisor) is running; otherwise 503, naming the check that failed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "observe",
    summary = "Readiness: the store commits a write and the supervision tree is running",
    responses(
        (status = 200, description = "Ready: `{status: \"ready\", checks}`", body = serde_json::Value),
        (status = 503, description = "Not ready, naming the failed check: `{status: \"not_ready\", checks}`", body = serde_json::Value),
    )
)]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let store = match st.store().ping(PING_TIMEOUT).await {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "ok": false, "error": error.to_string() }),
    };
    let root_running = ractor::registry::where_is(st.names().root())
        .is_some_and(|c| c.get_status() == ractor::ActorStatus::Running);
    let down: Vec<serde_json::Value> = st
        .metrics()
        .supervision
        .supervisors_not_running()
        .into_iter()
        .map(|(actor, status)| json!({ "actor": actor, "status": status }))
        .collect();
    let tree_ok = root_running && down.is_empty();
    let tree = if tree_ok {
        json!({ "ok": true })
    } else if !root_running {
        json!({ "ok": false, "error": "the root supervisor is not running", "not_running": down })
    } else {
        json!({ "ok": false, "error": "supervisors are not running", "not_running": down })
    };
    let ready = store["ok"] == true && tree_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "store": store, "tree": tree },
    });
    if ready {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        tracing::warn!(checks = %body["checks"], "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// `GET /metrics`: every family in the Prometheus text format. The queue gauges are read
/// from the store now; if it cannot answer, they are left out and the rest is served.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observe",
    summary = "Every metric family in the Prometheus text format",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(
    State(st): State<AppState>,
    connections: Option<Extension<Connections>>,
) -> Response {
    let mut queues: Vec<PendingSummary> = st
        .target_names()
        .into_iter()
        .map(|t| PendingSummary {
            target: t,
            ..PendingSummary::default()
        })
        .collect();
    match st.store().pending_summary().await {
        Ok(rows) => {
            for row in rows {
                // A target removed from the config may still have rows: show them too.
                match queues.iter_mut().find(|q| q.target == row.target) {
                    Some(q) => *q = row,
                    None => queues.push(row),
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: cannot read the queues from the store");
            queues.clear();
        }
    }
    let mut text = st.metrics().render(&queues, now_ms());
    render_http_gauges(&mut text, connections.map(|c| c.0), st.body_budget());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The server's own gauges: connections open against `server.max_connections`, and request
/// bodies held in memory against `server.max_inflight_body_bytes`.
fn render_http_gauges(out: &mut String, connections: Option<Connections>, budget: &BodyBudget) {
    use relayarr_actors::metrics::render_gauge;
    if let Some(c) = connections {
        render_gauge(
            out,
            "relayarr_http_connections_open",
            "HTTP connections accepted and not yet closed.",
            c.open(),
        );
        render_gauge(
            out,
            "relayarr_http_connections_max",
            "server.max_connections: more connections wait in the accept queue.",
            c.max(),
        );
    }
    render_gauge(
        out,
        "relayarr_http_body_bytes_in_flight",
        "Bytes of request bodies being read or processed, over all requests.",
        budget.used(),
    );
    render_gauge(
        out,
        "relayarr_http_body_bytes_max",
        "server.max_inflight_body_bytes: past it, requests get 503 before their body is read.",
        budget.limit(),
    );
}

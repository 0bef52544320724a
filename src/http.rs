//! HTTP ingress and the admin API. Handlers are thin: they find the source, check a
//! credential sent in the headers or the URL, read the body under its size limit, the global
//! body budget and the body read timeout, and hand the request to the source's actor, which
//! answers only after the commit.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use relayarr_actors::debounce::actor::DebouncerMsg;
use relayarr_actors::delivery::worker::WorkerMsg;
use relayarr_actors::delivery::TargetStats;
use relayarr_actors::hooks::retry::Rate;
use relayarr_actors::metrics::Metrics;
use relayarr_actors::plex::executor::PlexExecutor;
use relayarr_actors::pollers::actor::PollerMsg;
use relayarr_actors::sources::actor::{
    record_rejection, InboundRequest, IngestError, IngestOutcome, Rejected, SourceMsg,
};
use relayarr_actors::sources::auth::{
    authenticate_head, ct_eq, AuthConfig, HeadAuth, HeadVerified, Secret,
};
use relayarr_actors::store::ReplayScope;
use relayarr_actors::store::{now_ms, rfc3339_ms, DeliveryState, EventFilter, Store};
use relayarr_actors::supervisor::SupervisorMsg;
use relayarr_actors::system::Names;
use relayarr_actors::system::{worker_spec, TargetRegistry, TargetSpec};
use serde_json::json;

use crate::config::{Config, ALIASES};
use crate::dashboard;
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::serve::{BodyBudget, Reservation};

const ALLOW_INGEST: &str = "POST, PUT";

/// Shared, read-only state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    names: Names,
    /// Source names, lower-cased → configured name.
    sources: HashMap<String, String>,
    /// Alias path → source name.
    aliases: HashMap<String, String>,
    max_body: usize,
    /// Each source's auth, by configured name: checked here, before the body is read.
    auth: HashMap<String, AuthConfig>,
    /// Bytes of bodies being read or processed, over all requests.
    body_budget: Arc<BodyBudget>,
    body_read_timeout: Duration,
    ingest_timeout: Duration,
    admin_token: Option<Secret>,
    store: Arc<dyn Store>,
    /// Every delivery target, current: hooks are created and deleted at runtime.
    targets: Arc<TargetRegistry>,
    /// Hooks of the config file: the admin API cannot replace or delete them.
    config_hooks: std::collections::HashSet<String>,
    /// Names of the Plex servers and sources: a new hook may not take them.
    outbound: relayarr_actors::hooks::config::OutboundConfig,
    /// Serialises hook creation, replacement and deletion.
    hook_admin: tokio::sync::Mutex<()>,
    drain_grace: Duration,
    /// The Plex servers, for the path-mapping dry run.
    plex: Vec<Arc<PlexExecutor>>,
    /// Configured source names, for the dry run's check.
    source_names: Vec<String>,
    metrics: Arc<Metrics>,
    /// Replay jobs started through the admin API (bounded, in memory).
    jobs: Jobs,
    /// `[[arr]]` poller names, in config order.
    pollers: Vec<String>,
}

impl AppState {
    /// The HTTP layer's view of a started relay: the config's HTTP settings and the handles
    /// to the store, the targets, the Plex servers and the metrics.
    pub fn new(
        cfg: &Config,
        names: Names,
        store: Arc<dyn Store>,
        targets: Arc<TargetRegistry>,
        plex: Vec<Arc<PlexExecutor>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sources = cfg
            .sources
            .iter()
            .map(|s| (s.name.to_ascii_lowercase(), s.name.clone()))
            .collect();
        let mut aliases = HashMap::new();
        for a in ALIASES {
            if let Some(s) = cfg.resolve_alias(a.path) {
                aliases.insert(a.path.to_string(), s.name.clone());
            }
        }
        AppState {
            inner: Arc::new(Inner {
                names,
                sources,
                aliases,
                max_body: cfg.server.max_body_bytes,
                auth: cfg
                    .sources
                    .iter()
                    .filter_map(|s| Some((s.name.clone(), s.auth.clone()?)))
                    .collect(),
                body_budget: BodyBudget::new(cfg.server.max_inflight_body_bytes),
                body_read_timeout: cfg.server.body_read_timeout,
                ingest_timeout: cfg.server.ingest_timeout,
                admin_token: cfg.server.admin_token.clone(),
                store,
                targets,
                config_hooks: cfg.hooks.iter().map(|h| h.name.clone()).collect(),
                outbound: cfg.outbound.clone(),
                hook_admin: tokio::sync::Mutex::new(()),
                drain_grace: cfg.server.shutdown_grace,
                plex,
                source_names: cfg.sources.iter().map(|s| s.name.clone()).collect(),
                metrics,
                jobs: Jobs::default(),
                pollers: cfg.arr.iter().map(|a| a.name.clone()).collect(),
            }),
        }
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub(crate) fn body_budget(&self) -> &BodyBudget {
        &self.inner.body_budget
    }

    /// Stored names of every delivery target, in config order.
    pub(crate) fn target_names(&self) -> Vec<String> {
        self.inner
            .targets
            .all()
            .into_iter()
            .map(|t| t.route.name)
            .collect()
    }
}

/// Holds the config for `/triggers/{name}`, which resolves at request time.
#[derive(Clone)]
struct TriggerMap(Arc<HashMap<String, String>>);

/// The full router: ingress, drop-in aliases, admin API.
pub fn router(state: AppState, cfg: &Config) -> Router {
    let mut triggers = HashMap::new();
    for name in cfg
        .sources
        .iter()
        .map(|s| s.name.to_ascii_lowercase())
        .chain(
            relayarr_actors::model::SourceKind::ALL
                .iter()
                .map(|k| k.as_str().to_string()),
        )
    {
        if let Some(s) = cfg.resolve_alias(&format!("/triggers/{name}")) {
            triggers.insert(name, s.name.clone());
        }
    }
    for (path, target) in &cfg.aliases {
        if let Some(name) = path.strip_prefix("/triggers/") {
            triggers.insert(name.to_ascii_lowercase(), target.clone());
        }
    }
    let triggers = TriggerMap(Arc::new(triggers));

    let mut r = Router::new()
        .route("/api/v1/webhooks/{name}", ingest_route(ingest_named))
        .route(
            "/triggers/{name}",
            ingest_route(
                move |State(st): State<AppState>, Path(name): Path<String>, req: Request| {
                    let triggers = triggers.clone();
                    async move {
                        match triggers.0.get(&name.to_ascii_lowercase()) {
                            Some(source) => ingest(st, source.clone(), BTreeMap::new(), req).await,
                            None => Err(ApiError::NotFound(format!(
                                "no source for trigger `{name}`: add a [[source]] named `{name}` or map it in [aliases]"
                            ))),
                        }
                    }
                },
            ),
        )
        .route("/api/v1/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/healthz", get(crate::observe::healthz))
        .route("/readyz", get(crate::observe::readyz))
        .route("/metrics", get(crate::observe::metrics))
        .route("/api/v1/admin/events/{id}", get(admin_event))
        .route("/api/v1/admin/events/{id}/attempts", get(admin_event_attempts))
        .route("/api/v1/admin/events/{id}/replay", post(admin_replay_event))
        .route("/api/v1/admin/hooks", get(admin_hooks).post(admin_create_hook))
        .route(
            "/api/v1/admin/hooks/{name}",
            get(admin_hook)
                .patch(admin_patch_hook)
                .put(admin_replace_hook)
                .delete(admin_delete_hook),
        )
        .route("/api/v1/admin/hooks/{name}/replay", post(admin_replay_hook))
        .route("/api/v1/admin/hooks/{name}/test", post(admin_test_hook))
        .route("/", get(dashboard::index))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/api/v1/admin/targets", get(admin_targets))
        .route("/api/v1/admin/map-path", get(admin_map_path))
        .route("/api/v1/admin/debouncer", get(admin_debouncer))
        .route(
            "/api/v1/admin/targets/{name}",
            get(admin_hook)
                .patch(admin_patch_hook)
                .put(admin_replace_hook)
                .delete(admin_delete_hook),
        )
        .route("/api/v1/admin/targets/{name}/replay", post(admin_replay_hook))
        .route("/api/v1/admin/rejections", get(admin_rejections))
        .route("/api/v1/actors", get(admin_actors))
        .route("/api/v1/admin/events", get(admin_events))
        .route("/api/v1/admin/events/{id}/explain", get(admin_explain))
        .route("/api/v1/admin/jobs/{id}", get(admin_job));
    r = r.route("/api/v1/admin/pollers", get(admin_pollers));
    r = r.route("/api/v1/openapi.json", get(crate::openapi::openapi_json));
    for alias in ALIASES {
        let path = alias.path;
        r = r.route(
            path,
            ingest_route(move |State(st): State<AppState>, req: Request| async move {
                match st.inner.aliases.get(path).cloned() {
                    Some(source) => ingest(st, source, BTreeMap::new(), req).await,
                    None => Err(ApiError::NotFound(format!(
                        "no source for {path}: configure a [[source]] of the matching kind or map it in [aliases]"
                    ))),
                }
            }),
        );
    }
    r.fallback(|uri: Uri| async move {
        tracing::warn!(path = %uri.path(), "no such route");
        ApiError::NotFound(format!("no route for {}", uri.path()))
    })
    // Before any handler runs, so before any admin body is read.
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        admin_gate,
    ))
    .with_state(state)
}

/// Every admin route, current and future, is under these paths.
fn is_admin_path(path: &str) -> bool {
    path.starts_with("/api/v1/admin/") || path == "/api/v1/admin" || path == "/api/v1/actors"
}

/// The admin token is checked here, on the request head, for every admin path: a client
/// without it is answered before a byte of its body is read (the handlers' extractors, which
/// buffer bodies, never run).
async fn admin_gate(
    State(st): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if !is_admin_path(req.uri().path()) {
        return next.run(req).await;
    }
    if let Err(e) = check_admin(&st, req.headers()) {
        return e.into_response();
    }
    // The body, if any, is read here under the same limits as a webhook's (size, time, the
    // in-flight budget), so that a slow admin client cannot hold a handler for ever.
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match read_body(&st, None, &parts.headers, body, now_ms()).await {
        Ok((bytes, _held)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// POST and PUT (the *arr `Method` setting) go to `handler`; any other method gets a JSON 405.
fn ingest_route<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    axum::routing::post(handler.clone()).put(handler).fallback(
        |method: Method, uri: Uri| async move {
            tracing::warn!(%method, path = %uri.path(), "method not allowed");
            ApiError::MethodNotAllowed {
                method: method.to_string(),
                allow: ALLOW_INGEST,
            }
        },
    )
}

#[utoipa::path(
    method(post, put),
    path = "/api/v1/webhooks/{name}",
    tag = "ingest",
    summary = "Receive a webhook for the configured source `name`",
    description = "The sender's payload (JSON, or multipart with a `payload` part for Plex) is authenticated per the source's `auth`, parsed and committed before the answer. Other methods get a JSON 405 with `Allow: POST, PUT`.",
    params(("name" = String, Path, description = "Configured source name (case-insensitive)")),
    request_body(content = serde_json::Value, description = "The sender's webhook payload"),
    responses(
        (status = 202, description = "Stored: `{id, duplicate: false}`", body = serde_json::Value),
        (status = 200, description = "A duplicate (`duplicate: true`) or filtered out (`filtered: true`)", body = serde_json::Value),
        (status = 400, description = "Empty, malformed or unreadable body", body = crate::openapi::ErrorBody),
        (status = 401, description = "The source's credentials are missing or wrong", body = crate::openapi::ErrorBody),
        (status = 404, description = "No source with this name", body = crate::openapi::ErrorBody),
        (status = 405, description = "Method other than POST or PUT", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout`; the connection is closed", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported media type", body = crate::openapi::ErrorBody),
        (status = 422, description = "No event type, or a required field missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "Not committed (store failure, timeout, restarting source), or too many bodies in flight (`server.max_inflight_body_bytes`); retry after `Retry-After`", body = crate::openapi::ErrorBody),
    )
)]
async fn ingest_named(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(source) = st.inner.sources.get(&name.to_ascii_lowercase()).cloned() else {
        tracing::warn!(source = %name, "webhook for an unknown source");
        return Err(ApiError::NotFound(format!(
            "no source named `{name}` is configured"
        )));
    };
    ingest(st, source, BTreeMap::new(), req).await
}

/// The shared ingest path of every webhook route.
async fn ingest(
    st: AppState,
    source: String,
    route_params: BTreeMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let received_at_ms = now_ms();
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    let head_verified = check_head(&st, &source, &parts.headers, &query, received_at_ms)?;
    // Held until the answer: the body's bytes count against the budget while the source
    // parses and commits it.
    let (body, _held) = read_body(&st, Some(&source), &parts.headers, body, received_at_ms).await?;
    let Some(actor) = ActorRef::<SourceMsg>::where_is(st.inner.names.source(&source)) else {
        tracing::warn!(source = %source, "source actor is restarting");
        return Err(ApiError::Unavailable(format!(
            "source `{source}` is restarting; retry shortly"
        )));
    };
    let inbound = InboundRequest {
        headers: parts.headers,
        query,
        route_params,
        body,
        received_at_ms,
        head_verified,
    };
    let res = actor
        .call(
            |reply| SourceMsg::Ingest(Box::new(inbound), reply),
            Some(st.inner.ingest_timeout),
        )
        .await;
    match res {
        Ok(CallResult::Success(Ok(outcome))) => Ok(outcome_response(outcome)),
        Ok(CallResult::Success(Err(e))) => Err(match e {
            IngestError::Unauthorized { error, challenge } => ApiError::Unauthorized {
                message: error.to_string(),
                challenge,
            },
            IngestError::Parse(p) => ApiError::BadInput(p),
            IngestError::Store(s) => ApiError::Unavailable(format!("event not stored: {s}")),
        }),
        Ok(CallResult::Timeout) => {
            tracing::error!(source = %source, "ingest timed out before commit");
            Err(ApiError::Unavailable(
                "timed out before the event was committed".into(),
            ))
        }
        Ok(CallResult::SenderError) | Err(_) => {
            tracing::error!(source = %source, "source actor stopped while handling the request");
            Err(ApiError::Unavailable(format!(
                "source `{source}` failed while handling the request; it is being restarted, retry shortly"
            )))
        }
    }
}

fn outcome_response(outcome: IngestOutcome) -> Response {
    match outcome {
        IngestOutcome::Stored(a) if a.duplicate => (
            StatusCode::OK,
            Json(json!({ "id": a.id, "duplicate": true })),
        )
            .into_response(),
        IngestOutcome::Stored(a) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": a.id, "duplicate": false })),
        )
            .into_response(),
        IngestOutcome::Filtered { event_type } => (
            StatusCode::OK,
            Json(json!({ "id": null, "filtered": true, "event": event_type })),
        )
            .into_response(),
    }
}

/// Checks a credential sent in the headers or the URL before anything of the body is read:
/// a wrong one is refused (401) at once, so unauthenticated clients cannot make the relay
/// buffer their bodies. HMAC-signed sources need the body; their signature is checked by
/// the source after reading.
fn check_head(
    st: &AppState,
    source: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    received_at_ms: i64,
) -> Result<Option<HeadVerified>, ApiError> {
    let Some(auth) = st.inner.auth.get(source) else {
        return Ok(None);
    };
    let token = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    match authenticate_head(auth, headers, token) {
        Ok(HeadAuth::Verified(v)) => Ok(Some(v)),
        Ok(HeadAuth::NeedsBody) => Ok(None),
        Err(error) => {
            let message = error.to_string();
            reject(st, source, received_at_ms, 401, "unauthorized", &message);
            Err(ApiError::Unauthorized {
                message,
                challenge: auth.challenge(),
            })
        }
    }
}

fn reject(
    st: &AppState,
    source: &str,
    at_ms: i64,
    status: u16,
    reason: &'static str,
    message: &str,
) {
    record_rejection(
        &st.inner.metrics,
        &st.inner.names,
        Rejected {
            source,
            at_ms,
            status,
            reason,
            message,
        },
    );
}

/// Why reading a body stopped.
enum ReadError {
    TooLarge,
    OverBudget,
    Body(String),
}

/// Reads the body under the size limit, the global body budget and the read timeout:
/// 413 from `Content-Length` before reading anything, and again if a chunked body grows
/// past the limit; 503 when the budget cannot hold it (from `Content-Length` before
/// reading, or as a chunked body grows); 408 when it does not arrive in time.
async fn read_body(
    st: &AppState,
    source: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    received_at_ms: i64,
) -> Result<(Bytes, Reservation), ApiError> {
    let max = st.inner.max_body;
    // A source's refusals go to its rejection history; the admin API's are only logged.
    let refused = |status: u16, reason: &'static str, message: &str| match source {
        Some(source) => reject(st, source, received_at_ms, status, reason, message),
        None => tracing::warn!(status, reason, %message, "admin request refused"),
    };
    let source = source.unwrap_or("admin API");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        tracing::warn!(source = %source, declared, limit = max, "body too large (Content-Length)");
        return Err(ApiError::PayloadTooLarge { limit: max });
    }
    let declared = declared.map_or(0, |n| n as usize);
    let budget = &st.inner.body_budget;
    let over_budget = || {
        let message = format!(
            "too many request bodies are being read at once (server.max_inflight_body_bytes = {}); retry shortly",
            budget.limit()
        );
        refused(503, "body_budget", &message);
        ApiError::Unavailable(message)
    };
    let Some(mut held) = budget.reserve(declared) else {
        return Err(over_budget());
    };
    let read = {
        let mut reading = pin!(collect_body(body, max, declared, &mut held));
        // Most bodies are already in the connection's buffer with their headers: the first
        // poll finishes them without arming a timer.
        match poll_once(&mut reading.as_mut()).await {
            Poll::Ready(r) => r,
            Poll::Pending => {
                let limit = st.inner.body_read_timeout;
                match tokio::time::timeout(limit, reading).await {
                    Ok(r) => r,
                    Err(_) => {
                        let message = format!(
                            "the request body did not arrive within {} (server.body_read_timeout)",
                            humantime::format_duration(limit)
                        );
                        refused(408, "body_timeout", &message);
                        return Err(ApiError::BodyTimeout(message));
                    }
                }
            }
        }
    };
    match read {
        Ok(bytes) => Ok((bytes, held)),
        Err(ReadError::TooLarge) => {
            tracing::warn!(source = %source, limit = max, "body too large (while reading)");
            Err(ApiError::PayloadTooLarge { limit: max })
        }
        Err(ReadError::OverBudget) => Err(over_budget()),
        Err(ReadError::Body(e)) => {
            tracing::warn!(source = %source, error = %e, "could not read body");
            Err(ApiError::BodyRead(e))
        }
    }
}

/// Polls `f` once.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// Collects the body's frames, growing `held` as bytes arrive beyond what it holds. A body
/// in one frame (the usual case) is returned without a copy.
async fn collect_body(
    mut body: Body,
    max: usize,
    declared: usize,
    held: &mut Reservation,
) -> Result<Bytes, ReadError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Body(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > max {
            return Err(ReadError::TooLarge);
        }
        if len > held.bytes() && !held.grow(len - held.bytes()) {
            return Err(ReadError::OverBudget);
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(_), Some(all)) => all.extend_from_slice(&data),
            (Some(one), None) => {
                let mut all = BytesMut::with_capacity(declared.max(len));
                all.extend_from_slice(one);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

/// Query pairs, decoded as `application/x-www-form-urlencoded` (`+` is a space).
fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Admin endpoints need `Authorization: Bearer <admin_token>`; without a configured token
/// they do not exist (404), so an unconfigured admin API cannot be probed.
fn check_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.inner.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if ct_eq(t.as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => {
            tracing::warn!("admin request with missing or wrong bearer token");
            Err(ApiError::Unauthorized {
                message: "admin API needs Authorization: Bearer <server.admin_token>".into(),
                challenge: r#"Bearer realm="relayarr-admin""#.into(),
            })
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/events/{id}",
    tag = "admin",
    summary = "One stored event",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such event, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_event(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match st.inner.store.get_event(&id).await {
        Ok(Some(ev)) => Ok(Json(ev).into_response()),
        Ok(None) => Err(ApiError::NotFound(format!("no event with id `{id}`"))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/rejections",
    tag = "admin",
    summary = "The last 100 rejected requests",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_rejections(State(st): State<AppState>) -> Result<Response, ApiError> {
    match st.inner.store.recent_rejections(100).await {
        Ok(rows) => Ok(Json(json!({ "rejections": rows })).into_response()),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/actors",
    tag = "admin",
    summary = "The supervision tree",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The actor tree is not running", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_actors(State(st): State<AppState>) -> Result<Response, ApiError> {
    match ractor::registry::where_is(st.inner.names.root())
        .and_then(|_| st.inner.metrics.supervision.tree())
    {
        Some(tree) => Ok(Json(tree).into_response()),
        None => Err(ApiError::Unavailable(
            "the actor tree is not running".into(),
        )),
    }
}

const ADMIN_CALL: Duration = Duration::from_secs(5);

fn worker(st: &AppState, name: &str) -> Result<ActorRef<WorkerMsg>, ApiError> {
    let actor = st
        .inner
        .targets
        .actor_of(name)
        .ok_or_else(|| ApiError::NotFound(format!("no target named `{name}`")))?;
    ActorRef::<WorkerMsg>::where_is(actor)
        .ok_or_else(|| ApiError::Unavailable(format!("`{name}` is restarting; retry shortly")))
}

async fn call_worker<T, F>(st: &AppState, name: &str, msg: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<T>) -> WorkerMsg,
{
    let actor = worker(st, name)?;
    match actor.call(msg, Some(ADMIN_CALL)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(ApiError::Unavailable(format!(
            "`{name}` did not answer; retry shortly"
        ))),
    }
}

async fn target_view(st: &AppState, name: &str) -> Result<serde_json::Value, ApiError> {
    let stats: TargetStats = call_worker(st, name, WorkerMsg::Stats).await?;
    let counts = st.inner.store.delivery_counts(name).await?;
    let config = st
        .inner
        .targets
        .get(name)
        .map(|t| t.config)
        .unwrap_or_default();
    Ok(json!({ "stats": stats, "deliveries": counts, "config": config }))
}

async fn list_targets(
    st: &AppState,
    kind: Option<&str>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    for t in st.inner.targets.all() {
        if kind.is_none_or(|want| want == t.kind) {
            out.push(target_view(st, &t.route.name).await?);
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/hooks",
    tag = "admin",
    summary = "Every hook: stats, delivery counts, masked config",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The actor did not answer or is restarting; retry", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_hooks(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "hooks": list_targets(&st, Some("hook")).await? })).into_response())
}

/// Every target: hooks and Plex servers.
#[utoipa::path(
    get,
    path = "/api/v1/admin/targets",
    tag = "admin",
    summary = "Every target (hooks and Plex servers): stats, delivery counts, masked config",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The actor did not answer or is restarting; retry", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_targets(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "targets": list_targets(&st, None).await? })).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/hooks/{name}",
    tag = "admin",
    summary = "One target: stats, delivery counts, masked config (also at `/api/v1/admin/targets/{name}`)",
    params(("name" = String, Path, description = "Target name (a hook, or `plex:<server>`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such target, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The actor did not answer or is restarting; retry", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(target_view(&st, &name).await?).into_response())
}

/// The body of `PATCH /api/v1/admin/hooks/{name}`: every field optional, nothing else
/// allowed.
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsPatch {
    #[schema(value_type = Option<u32>, minimum = 1)]
    max_in_flight: Option<std::num::NonZeroU32>,
    /// `"5/s"`; `null` removes the limit (hence the double option: absent, null, a rate).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "5/s")]
    rate: Option<Option<Rate>>,
    #[schema(value_type = Option<u32>, minimum = 1)]
    burst: Option<std::num::NonZeroU32>,
    enabled: Option<bool>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Parses a JSON body into `T`: malformed JSON is a 400; a value of the wrong type or out
/// of range is a 422 naming its field, and so is a field `T` does not know.
fn parse_json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    fields: &str,
) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadInput(relayarr_actors::sources::ParseError::Malformed(msg))
        } else if msg.starts_with("unknown field") {
            ApiError::UnknownField {
                field: path,
                message: format!("use {fields}"),
            }
        } else if path == "." {
            ApiError::BadInput(relayarr_actors::sources::ParseError::NotAnObject(
                "another type",
            ))
        } else {
            // serde_json appends " at line 1 column 12"; the field name says more.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            ApiError::invalid(path, msg)
        }
    })
}

/// `PATCH /api/v1/admin/hooks/{name}` with any of `max_in_flight`, `rate` (`"5/s"`, or
/// `null` to remove the limit), `burst`, `enabled`. Takes effect for the next request, and
/// is persisted.
#[utoipa::path(
    patch,
    path = "/api/v1/admin/hooks/{name}",
    tag = "admin",
    summary = "Change a target's limits or enable/disable it (persisted; also at `/api/v1/admin/targets/{name}`)",
    params(("name" = String, Path, description = "Target name (a hook, or `plex:<server>`)")),
    request_body(content = LimitsPatch, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The target's stats after the change: `{stats}`", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such target, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 400, description = "Malformed JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "A bad value or an unknown field (named in `field`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The actor did not answer or is restarting; retry", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_patch_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = worker(&st, &name)?;
    let LimitsPatch {
        max_in_flight,
        rate,
        burst,
        enabled,
    } = parse_json_body(&body, "max_in_flight, rate, burst, enabled")?;
    let change = crate::relay::ValidTuning {
        max_in_flight,
        rate,
        burst,
        enabled,
    };
    let stats = change
        .apply(&actor, ADMIN_CALL)
        .await
        .ok_or_else(|| ApiError::Unavailable(format!("`{name}` did not answer; retry shortly")))?;
    Ok(Json(json!({ "stats": stats })).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/events/{id}/attempts",
    tag = "admin",
    summary = "Every delivery attempt of an event",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_event_attempts(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let attempts = st.inner.store.attempts_for_event(&id).await?;
    Ok(Json(json!({ "event_id": id, "attempts": attempts })).into_response())
}

/// Asks a target's worker to replay deliveries: the worker is the only writer of its rows,
/// so a delivery in flight is sent again after it finishes instead of being overwritten.
async fn replay(st: &AppState, target: &str, scope: ReplayScope) -> Result<usize, ApiError> {
    let actor = worker(st, target)?;
    match actor
        .call(|r| WorkerMsg::Replay(scope, r), Some(ADMIN_CALL * 6))
        .await
    {
        Ok(CallResult::Success(Ok(n))) => Ok(n),
        Ok(CallResult::Success(Err(e))) => Err(ApiError::Unavailable(format!(
            "`{target}` could not replay: {e}"
        ))),
        _ => Err(ApiError::Unavailable(format!(
            "`{target}` did not answer; retry shortly"
        ))),
    }
}

/// Starts a replay job over `targets` and answers 202 with it. The job's task asks each
/// target's worker in turn and records the answers in the registry.
fn start_replay_job(
    st: &AppState,
    kind: &'static str,
    subject: &str,
    since: Option<&str>,
    targets: Vec<String>,
    scope: ReplayScope,
) -> Response {
    let job = st.inner.jobs.start(kind, subject, since, targets.len());
    let id = job.job.clone();
    let task_st = st.clone();
    tokio::spawn(async move {
        for t in targets {
            let answer = replay(&task_st, &t, scope.clone())
                .await
                .map_err(|e| e.to_string());
            tracing::info!(job = %id, target_name = %t, answer = ?answer, "replay job: target answered");
            task_st.inner.jobs.record(&id, &t, answer);
        }
    });
    (StatusCode::ACCEPTED, Json(job)).into_response()
}

/// `POST /api/v1/admin/events/{id}/replay`: a job that re-queues the event at every target
/// that had it (debounced groups that include it too).
#[utoipa::path(
    post,
    path = "/api/v1/admin/events/{id}/replay",
    tag = "admin",
    summary = "Start a job that re-queues the event at every target that had it",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The replay job", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such event, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_replay_event(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if st.inner.store.get_event(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no event with id `{id}`")));
    }
    let targets = st.inner.store.delivery_targets(&id).await?;
    tracing::info!(event_id = %id, targets = ?targets, "event replay requested");
    Ok(start_replay_job(
        &st,
        "event",
        &id,
        None,
        targets,
        ReplayScope::Event(id.clone()),
    ))
}

/// `POST /api/v1/admin/hooks/{name}/replay?since=<RFC 3339 time | duration ago, e.g. 2h>`:
/// a job that re-queues the target's deliveries created since then.
#[utoipa::path(
    post,
    path = "/api/v1/admin/hooks/{name}/replay",
    tag = "admin",
    summary = "Start a job that re-queues the target's deliveries since a time (also at `/api/v1/admin/targets/{name}/replay`)",
    params(("name" = String, Path, description = "Target name (a hook, or `plex:<server>`)"),
        ("since" = String, Query, description = "An RFC 3339 time, or a duration before now such as `2h`")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The replay job", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such target, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`since` missing or not a time or duration", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_replay_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    if st.inner.targets.get(&name).is_none() {
        return Err(ApiError::NotFound(format!("no target named `{name}`")));
    }
    let query = parse_query(uri.query());
    let since = query
        .iter()
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| ApiError::MissingField {
            field: "since".into(),
            message: "an RFC 3339 time or a duration such as 2h".into(),
        })?;
    let since_ms = parse_since(&since).ok_or_else(|| {
        ApiError::invalid(
            "since",
            format!("`{since}` is neither an RFC 3339 time nor a duration such as 2h"),
        )
    })?;
    tracing::info!(target_name = %name, since = %since, "target replay requested");
    Ok(start_replay_job(
        &st,
        "target",
        &name,
        Some(&since),
        vec![name.clone()],
        ReplayScope::Since(since_ms),
    ))
}

/// `GET /api/v1/admin/jobs/{id}`: a replay job's progress.
#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs/{id}",
    tag = "admin",
    summary = "A replay job's progress",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such job (the last jobs are kept), or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_job(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match st.inner.jobs.get(&id) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no job `{id}` (the last {} jobs are kept)",
            crate::jobs::MAX_JOBS
        ))),
    }
}

/// Default and largest page of `GET /api/v1/admin/events`.
const EVENTS_DEFAULT_LIMIT: usize = 50;
const EVENTS_MAX_LIMIT: usize = 500;

/// The opaque page cursor: the `seq` of the last row served, so the next page is a keyset
/// query (`seq <` it), stable while new events arrive.
fn encode_cursor(seq: i64) -> String {
    format!("s{seq:x}")
}

fn decode_cursor(c: &str) -> Option<i64> {
    c.strip_prefix('s')
        .and_then(|h| i64::from_str_radix(h, 16).ok())
        .filter(|s| *s > 0)
}

/// The query of `GET /api/v1/admin/events`, validated: every bad value is a 422 naming
/// its parameter. Asks for one row more than the page, to know whether another follows.
fn events_filter(query: &[(String, String)]) -> Result<EventFilter, ApiError> {
    let mut f = EventFilter {
        limit: EVENTS_DEFAULT_LIMIT,
        ..EventFilter::default()
    };
    let time = |k: &str, v: &str| {
        parse_since(v).ok_or_else(|| {
            ApiError::invalid(
                k,
                format!("`{v}` is neither an RFC 3339 time nor a duration such as 2h"),
            )
        })
    };
    for (k, v) in query {
        match k.as_str() {
            "source" => f.source = Some(v.clone()),
            "kind" => f.kind = Some(v.clone()),
            "since" => f.since_ms = Some(time(k, v)?),
            "until" => f.until_ms = Some(time(k, v)?),
            "status" => {
                f.status = Some(
                    v.parse::<DeliveryState>()
                        .map_err(|e| ApiError::invalid(k, e))?,
                )
            }
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=EVENTS_MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            k,
                            format!("`{v}` is not a number from 1 to {EVENTS_MAX_LIMIT}"),
                        )
                    })?
            }
            "cursor" => {
                f.before_seq = Some(decode_cursor(v).ok_or_else(|| {
                    ApiError::invalid(k, "not a cursor from a previous page's `next_cursor`")
                })?)
            }
            other => {
                return Err(ApiError::UnknownField {
                    field: other.to_owned(),
                    message: "use source, kind, since, until, status, limit, cursor".into(),
                })
            }
        }
    }
    f.limit += 1;
    Ok(f)
}

/// `GET /api/v1/admin/events?source=&kind=&since=&until=&status=&limit=&cursor=`: newest
/// first, with each event's delivery counts per target, and `next_cursor` while more follow.
#[utoipa::path(
    get,
    path = "/api/v1/admin/events",
    tag = "admin",
    summary = "Stored events, newest first, with delivery counts per target",
    params(("source" = Option<String>, Query, description = "Only events from this source"),
        ("kind" = Option<String>, Query, description = "Only events of this source kind (sonarr, radarr, plex, …)"),
        ("since" = Option<String>, Query, description = "Received at or after: RFC 3339 time or a duration ago such as `2h`"),
        ("until" = Option<String>, Query, description = "Received before: RFC 3339 time or a duration ago"),
        ("status" = Option<String>, Query, description = "Only events with a delivery in this state (pending, succeeded, failed)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 500 (default 50)", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{events, next_cursor}`", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "A bad or unknown query parameter (named in `field`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_events(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let filter = events_filter(&parse_query(uri.query()))?;
    let page = filter.limit - 1;
    let mut rows = st.inner.store.list_events(filter).await?;
    let next = (rows.len() > page).then(|| {
        rows.truncate(page);
        rows.last().map(|r| encode_cursor(r.seq))
    });
    Ok(Json(json!({ "events": rows, "next_cursor": next.flatten() })).into_response())
}

/// `GET /api/v1/admin/events/{id}/explain`: the event, every delivery that carries it (its
/// own, and debounced groups that include it), and every attempt with its excerpts.
#[utoipa::path(
    get,
    path = "/api/v1/admin/events/{id}/explain",
    tag = "admin",
    summary = "An event, every delivery that carries it, and every attempt",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such event, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_explain(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(ev) = st.inner.store.get_event(&id).await? else {
        return Err(ApiError::NotFound(format!("no event with id `{id}`")));
    };
    let found = st
        .inner
        .store
        .event_deliveries(&id)
        .await?
        .unwrap_or_else(|| relayarr_actors::store::EventDeliveries {
            deliveries: Vec::new(),
            attempts: Vec::new(),
        });
    let deliveries: Vec<serde_json::Value> = found
        .deliveries
        .iter()
        .map(|d| {
            let mut v = json!(d);
            v["next_attempt_at"] = json!(d.next_attempt_at_ms.map(rfc3339_ms));
            v["updated_at"] = json!(rfc3339_ms(d.updated_at_ms));
            v
        })
        .collect();
    let attempts: Vec<serde_json::Value> = found
        .attempts
        .iter()
        .map(|a| {
            let mut v = json!(a);
            v["started_at"] = json!(rfc3339_ms(a.started_at_ms));
            v
        })
        .collect();
    Ok(Json(json!({
        "event": {
            "id": ev.id,
            "source": ev.source,
            "kind": ev.kind,
            "event_type": ev.event_type,
            "received_at": ev.received_at,
            "status": ev.status,
            "summary": ev.normalized.summary(),
            "normalized": ev.normalized,
        },
        "deliveries": deliveries,
        "attempts": attempts,
    }))
    .into_response())
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| ApiError::invalid("body", format!("not UTF-8: {e}")))
}

/// Starts a compiled hook: its worker under `hooks`, then the router sees it.
async fn start_hook(
    st: &AppState,
    hook: relayarr_actors::hooks::delivery::CompiledHook,
) -> Result<(), ApiError> {
    let inner = &st.inner;
    let spec = TargetSpec::hook(
        &inner.names,
        Arc::new(hook),
        &inner.store,
        &inner.outbound,
        inner.drain_grace,
    )
    .map_err(ApiError::Unavailable)?;
    let name = spec.route.name.clone();
    let child = worker_spec(&spec, &inner.store, &inner.names, &inner.metrics);
    let hooks = ActorRef::<SupervisorMsg>::where_is(inner.names.hooks())
        .ok_or_else(|| ApiError::Unavailable("the hooks supervisor is restarting".into()))?;
    match hooks
        .call(|r| SupervisorMsg::Add(child, r), Some(ADMIN_CALL * 2))
        .await
    {
        Ok(CallResult::Success(Ok(()))) => {}
        Ok(CallResult::Success(Err(e))) => return Err(ApiError::Conflict(e)),
        _ => {
            return Err(ApiError::Unavailable(
                "the hooks supervisor did not answer".into(),
            ))
        }
    }
    inner.targets.add(spec);
    tracing::info!(hook = %name, "hook started through the admin API");
    Ok(())
}

/// Stops a hook's worker (it drains what is in flight) and takes it out of routing. Its
/// pending deliveries stay in the store: a hook created again under the same name sends
/// them.
async fn stop_hook(st: &AppState, name: &str) -> Result<(), ApiError> {
    let inner = &st.inner;
    let actor = inner
        .targets
        .actor_of(name)
        .ok_or_else(|| ApiError::NotFound(format!("no hook named `{name}`")))?;
    inner.targets.remove(name);
    let hooks = ActorRef::<SupervisorMsg>::where_is(inner.names.hooks())
        .ok_or_else(|| ApiError::Unavailable("the hooks supervisor is restarting".into()))?;
    let grace = inner.drain_grace + Duration::from_secs(5);
    match hooks
        .call(|r| SupervisorMsg::Remove(actor, r), Some(grace))
        .await
    {
        Ok(CallResult::Success(Ok(()))) => Ok(()),
        Ok(CallResult::Success(Err(e))) => Err(ApiError::Conflict(e)),
        _ => Err(ApiError::Unavailable(
            "the hooks supervisor did not answer".into(),
        )),
    }
}

/// Hooks of the config file are managed there.
fn runtime_only(st: &AppState, name: &str) -> Result<(), ApiError> {
    if st.inner.config_hooks.contains(name) {
        return Err(ApiError::Conflict(format!(
            "hook `{name}` is defined in the config file; change it there (its limits and \
             enabled state can be changed with PATCH)"
        )));
    }
    match st.inner.targets.get(name) {
        Some(t) if t.kind == "hook" => Ok(()),
        Some(_) => Err(ApiError::Conflict(format!("`{name}` is not a hook"))),
        None => Err(ApiError::NotFound(format!("no hook named `{name}`"))),
    }
}

/// `POST /api/v1/admin/hooks` with a hook's config as JSON (the keys of a `[[hook]]`
/// table): validated like the config file, saved, and started at once. 201 with its view.
#[utoipa::path(
    post,
    path = "/api/v1/admin/hooks",
    tag = "admin",
    summary = "Create a hook at runtime (validated like the config file, saved, started)",
    request_body(content = serde_json::Value, description = "The hook's config: the keys of a `[[hook]]` table, as JSON", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created: the hook's view", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such hook, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The name is taken", body = crate::openapi::ErrorBody),
        (status = 422, description = "A bad value, naming the key", body = crate::openapi::ErrorBody),
        (status = 503, description = "The hooks supervisor is restarting", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_create_hook(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let _one_at_a_time = st.inner.hook_admin.lock().await;
    let json = body_text(&body)?;
    let hook = crate::hook_admin::compile(json, &st.inner.outbound)?;
    let name = hook.cfg.name.clone();
    if st.inner.targets.get(&name).is_some() {
        return Err(ApiError::Conflict(format!("the name `{name}` is taken")));
    }
    st.inner
        .store
        .save_runtime_hook(name.clone(), Some(json.to_owned()))
        .await?;
    if let Err(e) = start_hook(&st, hook).await {
        let _ = st.inner.store.save_runtime_hook(name.clone(), None).await;
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(target_view(&st, &name).await?)).into_response())
}

/// `PUT /api/v1/admin/hooks/{name}`: replaces a hook created through the API. The old
/// worker drains first; pending deliveries go to the new one.
#[utoipa::path(
    put,
    path = "/api/v1/admin/hooks/{name}",
    tag = "admin",
    summary = "Replace a hook created at runtime (the old worker drains first)",
    params(("name" = String, Path, description = "Hook name")),
    request_body(content = serde_json::Value, description = "The hook's config: the keys of a `[[hook]]` table, as JSON", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The hook's new view", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such hook, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "A hook of the config file, or not a hook", body = crate::openapi::ErrorBody),
        (status = 422, description = "A bad value, naming the key", body = crate::openapi::ErrorBody),
        (status = 503, description = "The hooks supervisor is restarting", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_replace_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _one_at_a_time = st.inner.hook_admin.lock().await;
    runtime_only(&st, &name)?;
    let json = body_text(&body)?;
    let hook = crate::hook_admin::compile(json, &st.inner.outbound)?;
    if hook.cfg.name != name {
        return Err(ApiError::invalid(
            "name",
            format!("must be `{name}`, the hook being replaced"),
        ));
    }
    stop_hook(&st, &name).await?;
    st.inner
        .store
        .save_runtime_hook(name.clone(), Some(json.to_owned()))
        .await?;
    start_hook(&st, hook).await?;
    Ok(Json(target_view(&st, &name).await?).into_response())
}

/// `DELETE /api/v1/admin/hooks/{name}`: stops and forgets a hook created through the API.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/hooks/{name}",
    tag = "admin",
    summary = "Delete a hook created at runtime",
    params(("name" = String, Path, description = "Hook name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such hook, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "A hook of the config file, or not a hook", body = crate::openapi::ErrorBody),
        (status = 503, description = "The hooks supervisor is restarting", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_delete_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = st.inner.hook_admin.lock().await;
    runtime_only(&st, &name)?;
    stop_hook(&st, &name).await?;
    st.inner.store.save_runtime_hook(name.clone(), None).await?;
    tracing::info!(hook = %name, "hook deleted through the admin API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/admin/hooks/{name}/test`: sends the sample event to the hook through the
/// same rendering, signing and sending code as a delivery (not queued, not recorded), and
/// answers with what came back.
#[utoipa::path(
    post,
    path = "/api/v1/admin/hooks/{name}/test",
    tag = "admin",
    summary = "Send the sample event to a hook (not queued, not recorded) and answer with the result",
    params(("name" = String, Path, description = "Hook name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such hook, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The test could not be sent", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_test_hook(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let hook = st
        .inner
        .targets
        .get(&name)
        .and_then(|t| t.hook)
        .ok_or_else(|| ApiError::NotFound(format!("no hook named `{name}`")))?;
    let report = crate::test_hook::fire_sample(&hook, st.inner.outbound.strict)
        .await
        .map_err(ApiError::Unavailable)?;
    let r = &report.result;
    tracing::info!(hook = %name, status = ?r.status, "test fire");
    Ok(Json(json!({
        "hook": name,
        "ok": report.ok(),
        "status": r.status,
        "error": r.error,
        "latency_ms": u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
        "request_excerpt": r.request_excerpt,
        "response_excerpt": r.response_excerpt,
    }))
    .into_response())
}

/// `GET /api/v1/admin/map-path?source=sonarr&path=/tv/Show/Season%2001/x.mkv[&library=TV]`:
/// for each Plex server, the path as Plex sees it, the section chosen, and why.
#[utoipa::path(
    get,
    path = "/api/v1/admin/map-path",
    tag = "admin",
    summary = "Dry run: the path as each Plex server sees it, the section chosen, and why",
    params(("source" = String, Query, description = "Configured source name"),
        ("path" = String, Query, description = "The file path as the source reports it"),
        ("library" = Option<String>, Query, description = "Prefer this Plex library section")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such source, or the admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`source` or `path` missing", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_map_path(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q = parse_query(uri.query());
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let missing =
        |f: &str| ApiError::BadInput(relayarr_actors::sources::ParseError::MissingField(f.into()));
    let source = get("source").ok_or_else(|| missing("source"))?;
    let path = get("path").ok_or_else(|| missing("path"))?;
    if !st.inner.source_names.iter().any(|s| s == &source) {
        return Err(ApiError::NotFound(format!("no source named `{source}`")));
    }
    let library = get("library");
    let mut out = Vec::new();
    for p in &st.inner.plex {
        out.push(p.view().explain(&source, &path, library.as_deref()).await);
    }
    Ok(Json(json!({ "source": source, "path": path, "plex": out })).into_response())
}

/// `GET /api/v1/admin/debouncer`: open groups and counters.
#[utoipa::path(
    get,
    path = "/api/v1/admin/debouncer",
    tag = "admin",
    summary = "The debouncer's open groups and counters",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The debouncer is restarting or did not answer", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_debouncer(State(st): State<AppState>) -> Result<Response, ApiError> {
    let d = ActorRef::<DebouncerMsg>::where_is(st.inner.names.debouncer())
        .ok_or_else(|| ApiError::Unavailable("the debouncer is restarting".into()))?;
    match d.call(DebouncerMsg::Stats, Some(ADMIN_CALL)).await {
        Ok(CallResult::Success(stats)) => Ok(Json(stats).into_response()),
        _ => Err(ApiError::Unavailable("the debouncer did not answer".into())),
    }
}

/// `GET /api/v1/admin/pollers`: each `[[arr]]` poller's last read, last error, cursor and
/// recovered count, asked of the poller itself.
#[utoipa::path(
    get,
    path = "/api/v1/admin/pollers",
    tag = "admin",
    summary = "Each `[[arr]]` poller: last read, last error, cursor, recovered count",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 401, description = "Missing or wrong bearer token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The admin API is disabled (no `server.admin_token`)", body = crate::openapi::ErrorBody),
    )
)]
async fn admin_pollers(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for name in &st.inner.pollers {
        let answer = match ActorRef::<PollerMsg>::where_is(st.inner.names.poller(name)) {
            Some(p) => p.call(PollerMsg::Status, Some(ADMIN_CALL)).await.ok(),
            None => None,
        };
        out.push(match answer {
            Some(CallResult::Success(status)) => json!(status),
            _ => {
                json!({ "name": name, "last_error": "the poller is restarting or did not answer" })
            }
        });
    }
    Ok(Json(json!({ "pollers": out })).into_response())
}

/// An RFC 3339 time, or a duration before now (`90s`, `2h`, `7d`), as unix milliseconds.
pub fn parse_since(s: &str) -> Option<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let d = humantime::parse_duration(s).ok()?;
    Some(now_ms() - i64::try_from(d.as_millis()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_filter_validates_each_parameter() {
        let q = |s: &str| parse_query(Some(s));
        let f = events_filter(&q("source=sonarr&status=failed&limit=10")).expect("valid");
        assert_eq!(f.source.as_deref(), Some("sonarr"));
        assert_eq!(f.status, Some(DeliveryState::Failed));
        assert_eq!(
            f.limit, 11,
            "one more than the page, to see if another follows"
        );
        assert_eq!(
            events_filter(&[]).expect("empty").limit,
            EVENTS_DEFAULT_LIMIT + 1
        );
        let c = encode_cursor(1234);
        assert_eq!(
            events_filter(&q(&format!("cursor={c}")))
                .expect("cursor")
                .before_seq,
            Some(1234)
        );
        for (bad, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("status=dead", "status"),
            ("since=yesterday", "since"),
            ("cursor=42", "cursor"),
            ("sort=asc", "sort"),
        ] {
            let e = events_filter(&q(bad)).expect_err(bad);
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(e.to_string().contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_patch_names_the_bad_field() {
        let ok: LimitsPatch =
            parse_json_body(br#"{"rate": null, "enabled": false}"#, "").expect("valid");
        assert_eq!(ok.rate, Some(None));
        assert_eq!(ok.enabled, Some(false));
        let ok: LimitsPatch = parse_json_body(br#"{"rate": "5/s"}"#, "").expect("valid");
        assert!(matches!(ok.rate, Some(Some(_))));
        assert_eq!(
            parse_json_body::<LimitsPatch>(b"{}", "")
                .expect("empty")
                .rate,
            None
        );
        for (body, code, field) in [
            (r#"{"rate": "fast"}"#, "invalid_field", Some("rate")),
            (r#"{"rate": 5}"#, "invalid_field", Some("rate")),
            (
                r#"{"max_in_flight": 0}"#,
                "invalid_field",
                Some("max_in_flight"),
            ),
            (r#"{"enabled": "yes"}"#, "invalid_field", Some("enabled")),
            (r#"{"cap": 2}"#, "unknown_field", Some("cap")),
            (r#"{"rate": "#, "malformed_json", None),
        ] {
            let e = parse_json_body::<LimitsPatch>(body.as_bytes(), "").expect_err(body);
            assert_eq!(e.code(), code, "{body}: {e}");
            if let Some(field) = field {
                assert!(e.to_string().contains(field), "{body}: {e}");
            }
        }
    }

    #[test]
    fn query_decoding_handles_escapes_and_plus() {
        let q = parse_query(Some(
            "library=TV+Shows&trigger_on=library.new%2Cmedia.scrobble&x=%zz%C3&flag",
        ));
        assert_eq!(q[0], ("library".into(), "TV Shows".into()));
        assert_eq!(
            q[1],
            ("trigger_on".into(), "library.new,media.scrobble".into())
        );
        assert_eq!(q[3], ("flag".into(), String::new()));
        assert!(parse_query(None).is_empty());
    }
}

//! The per-source actor. It owns one source's configuration, and hands each request to a
//! task of its own that authenticates, decodes and normalises it (pure functions) and
//! commits it. The actor is not a serialisation point: requests to one source are parsed
//! on every core at once, and the mailbox never waits on parsing or on the disk. Only after
//! the store has committed does the request get its answer and the event go on to the
//! router.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sha2::{Digest, Sha256};

use super::auth::{authenticate, AuthConfig, AuthError, HeadVerified};
use super::config::SourceConfig;
use super::decode::decode_body;
use super::{normalise, ParseError, ParserOptions};
use crate::history::HistoryMsg;
use crate::metrics::Metrics;
use crate::model::NormalizedEvent;
use crate::router::RouterMsg;
use crate::store::{Appended, CommittedEvent, NewEvent, Rejection, Store, StoreError};
use crate::system::Names;

/// One HTTP request, as the ingress hands it over.
#[derive(Debug)]
pub struct InboundRequest {
    /// The request's headers.
    pub headers: http::HeaderMap,
    /// Query parameters in order (the `token` one included: it is removed before storing).
    pub query: Vec<(String, String)>,
    /// Parameters implied by the route (e.g. an alias's fixed `trigger_on`).
    pub route_params: BTreeMap<String, String>,
    /// The body as read (already bounded by the ingress).
    pub body: Bytes,
    /// When the request arrived, unix milliseconds.
    pub received_at_ms: i64,
    /// Set when the ingress already checked the credential in the headers or query (before
    /// reading the body); the task then does not check it again.
    pub head_verified: Option<HeadVerified>,
}

/// A successful ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed (or recognised as a duplicate of a committed event).
    Stored(Appended),
    /// Valid, but not in the source's `trigger_on` list: acknowledged and dropped.
    Filtered {
        /// The sender's event type, as sent.
        event_type: String,
    },
}

/// Why an ingest failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The credential is missing or wrong: 401.
    #[error("{error}")]
    Unauthorized {
        /// What was wrong with it (never the secret).
        error: AuthError,
        /// The `WWW-Authenticate` value to send back.
        challenge: String,
    },
    /// The body cannot be read as this source's payload: 400, 415 or 422 ([`ParseError::status`]).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The event could not be made durable: 503.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

/// What a source answers an ingest with.
pub type IngestResult = Result<IngestOutcome, IngestError>;

/// Messages to a source actor.
pub enum SourceMsg {
    /// Authenticate, parse and commit one request; answered once the event is durable (or refused).
    Ingest(Box<InboundRequest>, RpcReplyPort<IngestResult>),
    /// Fault injection: makes the actor panic, for supervision tests and chaos drills.
    InjectPanic,
}

/// What a source actor starts with.
#[derive(Clone)]
pub struct SourceArgs {
    /// The `[[source]]` table.
    pub cfg: Arc<SourceConfig>,
    /// Where events are committed.
    pub store: Arc<dyn Store>,
    /// Registry names, to hand committed events to the router.
    pub names: Names,
    /// Ingest and rejection counters.
    pub metrics: Arc<Metrics>,
}

/// A source's state: its compiled auth and parser options, shared with its ingest tasks.
pub struct SourceState {
    ctx: Arc<SourceCtx>,
}

/// What an ingest task needs: the source's settings and where its results go.
struct SourceCtx {
    cfg: Arc<SourceConfig>,
    auth: AuthConfig,
    opts: ParserOptions,
    store: Arc<dyn Store>,
    names: Names,
    metrics: Arc<Metrics>,
}

/// The source actor (`source:NAME` under `sources` in the tree).
#[derive(Clone, Debug, Default)]
pub struct SourceActor;

impl Actor for SourceActor {
    type Msg = SourceMsg;
    type State = SourceState;
    type Arguments = SourceArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<SourceMsg>,
        args: SourceArgs,
    ) -> Result<SourceState, ActorProcessingErr> {
        let auth = args
            .cfg
            .auth
            .clone()
            .ok_or_else(|| format!("source {} has no auth configured", args.cfg.name))?;
        Ok(SourceState {
            ctx: Arc::new(SourceCtx {
                opts: ParserOptions {
                    tautulli: args.cfg.tautulli.clone(),
                    jellyfin: args.cfg.jellyfin.clone(),
                    custom: args.cfg.custom.clone(),
                },
                auth,
                cfg: args.cfg,
                store: args.store,
                names: args.names,
                metrics: args.metrics,
            }),
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<SourceMsg>,
        msg: SourceMsg,
        st: &mut SourceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SourceMsg::InjectPanic => panic!("injected panic in source {}", st.ctx.cfg.name),
            SourceMsg::Ingest(req, reply) => {
                tokio::spawn(ingest(Arc::clone(&st.ctx), req, reply));
            }
        }
        Ok(())
    }
}

/// One request, start to answer. A panic here (a parser bug) drops `reply`, which the
/// ingress answers with 503: the request is not acknowledged, and nothing is stored.
async fn ingest(ctx: Arc<SourceCtx>, req: Box<InboundRequest>, reply: RpcReplyPort<IngestResult>) {
    match prepare(&ctx, &req).await {
        Err(err) => {
            reject(&ctx, &req, &err);
            let _ = reply.send(Err(err));
        }
        Ok(Prepared::Filtered(event_type)) => {
            tracing::debug!(source = %ctx.cfg.name, %event_type, "event filtered by trigger_on");
            let _ = reply.send(Ok(IngestOutcome::Filtered { event_type }));
        }
        Ok(Prepared::Commit(new)) => commit(&ctx, *new, reply).await,
    }
}

enum Prepared {
    Commit(Box<NewEvent>),
    Filtered(String),
}

/// Authenticate, decode, normalise: everything before the store.
async fn prepare(st: &SourceCtx, req: &InboundRequest) -> Result<Prepared, IngestError> {
    if req.head_verified.is_none() {
        let token = req
            .query
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str());
        authenticate(&st.auth, &req.headers, token, &req.body).map_err(|error| {
            IngestError::Unauthorized {
                error,
                challenge: st.auth.challenge(),
            }
        })?;
    }
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let decoded = decode_body(content_type, &req.body).await?;
    let mut event = normalise(st.cfg.kind, &st.cfg.name, &st.opts, &decoded.json)?;

    let mut params = req.route_params.clone();
    for (k, v) in &req.query {
        // The token is a secret: never stored.
        if k != "token" {
            params.insert(k.clone(), v.clone());
        }
    }
    if !passes_trigger_on(&st.cfg.trigger_on, params.get("trigger_on"), &event) {
        return Ok(Prepared::Filtered(event.event_type));
    }
    event.params = params;
    if event.kind == crate::model::EventKind::Other {
        tracing::info!(source = %st.cfg.name, event_type = %event.event_type, "unknown event type; stored as `other`");
    }

    let normalized_json = serde_json::to_string(&event)
        .map_err(|e| ParseError::Malformed(format!("cannot serialise normalised event: {e}")))?;
    // Hash the decoded payload, not the whole body: Plex's multipart boundary is random per
    // request, and Plex re-sends `library.new` after metadata refreshes.
    let mut h = Sha256::new();
    h.update(st.cfg.name.as_bytes());
    h.update([0u8]);
    h.update(&decoded.raw);
    Ok(Prepared::Commit(Box::new(NewEvent {
        event: Arc::new(event),
        normalized_json,
        raw: decoded.raw,
        content_type: content_type.map(str::to_owned),
        dedup_key: h.finalize().into(),
        received_at_ms: req.received_at_ms,
    })))
}

/// `trigger_on` from the request (comma-separated) wins over the configured list.
fn passes_trigger_on(
    configured: &[String],
    from_query: Option<&String>,
    event: &NormalizedEvent,
) -> bool {
    let matches = |name: &str| name.trim().eq_ignore_ascii_case(&event.event_type);
    match from_query.filter(|q| !q.trim().is_empty()) {
        Some(q) => q.split(',').any(matches),
        None => configured.is_empty() || configured.iter().any(|c| matches(c)),
    }
}

/// Commits, answers the request, and only then passes the event on.
async fn commit(ctx: &SourceCtx, new: NewEvent, reply: RpcReplyPort<IngestResult>) {
    let (store, names, metrics) = (&ctx.store, &ctx.names, &ctx.metrics);
    let received_at_ms = new.received_at_ms;
    let source = new.event.instance.clone();
    let kind = new.event.kind.as_str();
    let event = Arc::clone(&new.event);
    match store.append(new).await {
        Ok((appended, seq)) => {
            metrics
                .yield_gate
                .ingested(crate::store::now_ms() - received_at_ms);
            if let (false, Some(seq)) = (appended.duplicate, seq) {
                metrics.events_received.inc(&[&source, kind]);
                let committed = CommittedEvent {
                    seq,
                    id: appended.id.clone(),
                    received_at_ms,
                    event,
                };
                metrics.committed.publish(&committed);
                match ActorRef::<RouterMsg>::where_is(names.router()) {
                    Some(r) => {
                        let _ = r.cast(RouterMsg::Route(committed));
                    }
                    None => tracing::warn!(
                        event_id = %appended.id,
                        "router unavailable; its recovery sweep will route this event"
                    ),
                }
            } else {
                tracing::info!(source = %source, event_id = %appended.id, "duplicate event; not routed again");
            }
            let _ = reply.send(Ok(IngestOutcome::Stored(appended)));
        }
        Err(error) => {
            tracing::error!(source = %source, %error, "event not committed");
            let _ = reply.send(Err(IngestError::Store(error)));
        }
    }
}

fn reject(st: &SourceCtx, req: &InboundRequest, err: &IngestError) {
    let status = match err {
        IngestError::Unauthorized { .. } => 401,
        IngestError::Parse(p) => p.status(),
        IngestError::Store(_) => 503,
    };
    record_rejection(
        &st.metrics,
        &st.names,
        Rejected {
            source: &st.cfg.name,
            at_ms: req.received_at_ms,
            status,
            reason: rejection_reason(err),
            message: &err.to_string(),
        },
    );
}

/// One refused request, as [`record_rejection`] records it.
#[derive(Debug)]
pub struct Rejected<'a> {
    /// The source's configured name.
    pub source: &'a str,
    /// When the request arrived, unix milliseconds.
    pub at_ms: i64,
    /// The HTTP status answered.
    pub status: u16,
    /// Short and stable: a label of the rejections metric.
    pub reason: &'static str,
    /// The full message, for the log and the rejections history.
    pub message: &'a str,
}

/// Logs a refused request, counts it in `relayarr_rejections_total` and sends it to the
/// history recorder, whoever refused it: this task, or the ingress before reading the body.
pub fn record_rejection(metrics: &Metrics, names: &Names, r: Rejected<'_>) {
    tracing::warn!(source = %r.source, status = r.status, reason = r.reason, error = %r.message, "request rejected");
    metrics
        .rejections
        .inc(&[r.source, &r.status.to_string(), r.reason]);
    if let Some(h) = ActorRef::<HistoryMsg>::where_is(names.history()) {
        let _ = h.cast(HistoryMsg::Rejected(Rejection {
            at_ms: r.at_ms,
            source: r.source.to_owned(),
            status: r.status,
            reason: r.message.to_owned(),
        }));
    }
}

/// A short, stable reason for the rejections metric (the error text itself would make a
/// series per distinct message).
pub fn rejection_reason(err: &IngestError) -> &'static str {
    match err {
        IngestError::Unauthorized { .. } => "unauthorized",
        IngestError::Store(_) => "store_unavailable",
        IngestError::Parse(p) => match p {
            ParseError::Empty => "empty_body",
            ParseError::InvalidUtf8(_) => "invalid_utf8",
            ParseError::Truncated(_) => "truncated_json",
            ParseError::Malformed(_) => "malformed_json",
            ParseError::TooDeep(_) => "json_too_deep",
            ParseError::NoPayloadPart => "no_payload_part",
            ParseError::BadMultipart(_) => "bad_multipart",
            ParseError::PayloadNotJson(_) => "payload_not_json",
            ParseError::UnsupportedMediaType(_) => "unsupported_media_type",
            ParseError::MissingEventType(_) => "missing_event_type",
            ParseError::MissingField(_) => "missing_field",
            ParseError::NotAnObject(_) => "not_an_object",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, SourceKind};

    fn ev(event_type: &str) -> NormalizedEvent {
        NormalizedEvent::new(SourceKind::Plex, "plex", EventKind::LibraryNew, event_type)
    }

    #[test]
    fn trigger_on_query_overrides_config_and_matches_exactly() {
        let cfg = vec!["library.new".to_string()];
        assert!(passes_trigger_on(&cfg, None, &ev("library.new")));
        assert!(passes_trigger_on(&cfg, None, &ev("LIBRARY.NEW")));
        assert!(!passes_trigger_on(&cfg, None, &ev("media.play")));
        let q = "media.play, media.scrobble".to_string();
        assert!(passes_trigger_on(&cfg, Some(&q), &ev("media.scrobble")));
        assert!(!passes_trigger_on(&cfg, Some(&q), &ev("library.new")));
        // Not a substring test (TitleCardMaker's bug): "media" does not match "media.play".
        let q = "media".to_string();
        assert!(!passes_trigger_on(&[], Some(&q), &ev("media.play")));
        assert!(passes_trigger_on(&[], None, &ev("anything")));
    }
}

//! The poller actor: one per `[[arr]]`. Every `every` it starts one read of the app's
//! history in a task of its own (so `Status` is answered while a slow app is read), and
//! takes the new cursor from that task's report. The task commits every recovered event
//! (`Store::append`), hands it to the router, and only then saves the cursor, so a crash
//! between the two repeats a read, and the dedup recognises what that read already
//! committed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::client::ArrClient;
use super::config::ArrConfig;
use super::cursor::{format_date, Cursor};
use super::record::{is_known, key_of, parse_records, plan_read, Recovered};
use super::PollError;
use crate::metrics::Metrics;
use crate::router::RouterMsg;
use crate::store::{now_ms, rfc3339_ms, CommittedEvent, NewEvent, Store};
use crate::system::Names;

/// How far before a record's date relayarr looks for the webhook that may have brought it:
/// the two clocks (the app's and relayarr's) can disagree. Imports are matched by download
/// id, so this only bounds how many events each read looks at.
const CLOCK_SKEW_S: i64 = 60 * 60;

/// Messages to a poller, the only writer of its cursor.
pub enum PollerMsg {
    /// Timer: start a read unless one is running.
    Tick,
    /// A read finished.
    Done(Box<PollReport>),
    /// The poller's state, for `GET /api/v1/admin/pollers`.
    Status(RpcReplyPort<PollerStatus>),
}

/// What a poller starts with.
#[derive(Clone)]
pub struct PollerArgs {
    /// The `[[arr]]` table it reads for.
    pub cfg: Arc<ArrConfig>,
    /// Where the cursor is kept and recovered events are committed.
    pub store: Arc<dyn Store>,
    /// Registry names, to hand recovered events to the router.
    pub names: Names,
    /// For the committed-event feed: a recovered event is published like a received one.
    pub metrics: Arc<Metrics>,
}

/// What one read found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PollStats {
    /// Records returned.
    pub records: usize,
    /// Events committed and routed.
    pub recovered: usize,
    /// Events relayarr already had (by webhook, or recovered before).
    pub duplicates: usize,
    /// Records an earlier read handled (recognised by the cursor).
    pub seen: usize,
    /// Records younger than `settle`, left for the next read.
    pub deferred: usize,
    /// Records without a usable id or date.
    pub malformed: usize,
}

/// The outcome of one read, sent back to the actor.
#[derive(Debug)]
pub struct PollReport {
    /// When the read started, unix milliseconds.
    pub started_ms: i64,
    /// What it found and the cursor to store, or why it failed.
    pub result: Result<(PollStats, Cursor), PollError>,
}

/// A poller as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PollerStatus {
    /// The poller's name.
    pub name: String,
    /// `sonarr` or `radarr`.
    pub kind: String,
    /// The `[[source]]` it reconciles.
    pub source: String,
    /// The base URL (never a key).
    pub url: String,
    /// The interval between reads (`5m`).
    pub every: String,
    /// Whether a read is running now.
    pub polling: bool,
    /// Reads started since this actor started.
    pub polls: u64,
    /// When the last read started (RFC 3339).
    pub last_poll_at: Option<String>,
    /// When the last read succeeded (RFC 3339).
    pub last_success_at: Option<String>,
    /// The last read's error; cleared by a successful read.
    pub last_error: Option<String>,
    /// The cursor (the app's clock): the next read starts `overlap` before it.
    pub cursor: Option<String>,
    /// Record ids the cursor remembers.
    pub seen: usize,
    /// Events recovered over the poller's life.
    pub recovered: u64,
    /// What the last successful read found.
    pub last: Option<PollStats>,
}

/// A poller's state: its client, its cursor, the read in progress and what the last ones found.
pub struct PollerState {
    cfg: Arc<ArrConfig>,
    client: ArrClient,
    store: Arc<dyn Store>,
    names: Names,
    metrics: Arc<Metrics>,
    cursor: Cursor,
    task: Option<JoinHandle<()>>,
    polls: u64,
    last_poll_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_error: Option<String>,
    last: Option<PollStats>,
}

/// The poller actor (`poller:NAME` under `pollers` in the tree).
#[derive(Clone, Debug, Default)]
pub struct PollerActor;

impl Actor for PollerActor {
    type Msg = PollerMsg;
    type State = PollerState;
    type Arguments = PollerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<PollerMsg>,
        args: PollerArgs,
    ) -> Result<PollerState, ActorProcessingErr> {
        let client = ArrClient::new(&args.cfg)?;
        let cursor = match args.store.poller_cursor(&args.cfg.name).await? {
            // Starting afresh is safe: the first read covers `overlap`, and the dedup
            // recognises what relayarr already has.
            Some(json) => serde_json::from_str(&json).unwrap_or_else(|error| {
                tracing::warn!(poller = %args.cfg.name, %error, "stored cursor unreadable; starting afresh");
                Cursor::default()
            }),
            None => Cursor::default(),
        };
        tracing::info!(
            poller = %args.cfg.name,
            kind = %args.cfg.kind,
            url = %client.base(),
            source = %args.cfg.source,
            cursor = %cursor.at.map(format_date).unwrap_or_else(|| "none".into()),
            "poller started"
        );
        Ok(PollerState {
            cfg: args.cfg,
            client,
            store: args.store,
            names: args.names,
            metrics: args.metrics,
            cursor,
            task: None,
            polls: 0,
            last_poll_ms: None,
            last_success_ms: None,
            last_error: None,
            last: None,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<PollerMsg>,
        st: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = me.cast(PollerMsg::Tick);
        me.send_interval(st.cfg.every, || PollerMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<PollerMsg>,
        msg: PollerMsg,
        st: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PollerMsg::Tick if st.task.is_some() => {
                tracing::debug!(poller = %st.cfg.name, "previous read still running; tick skipped");
            }
            PollerMsg::Tick => {
                let started_ms = now_ms();
                st.polls += 1;
                st.last_poll_ms = Some(started_ms);
                let read = Read {
                    cfg: Arc::clone(&st.cfg),
                    client: st.client.clone(),
                    store: Arc::clone(&st.store),
                    names: st.names.clone(),
                    metrics: Arc::clone(&st.metrics),
                };
                let cursor = st.cursor.clone();
                st.task = Some(tokio::spawn(async move {
                    let result = read.run(cursor).await;
                    let _ = me.cast(PollerMsg::Done(Box::new(PollReport { started_ms, result })));
                }));
            }
            PollerMsg::Done(report) => {
                st.task = None;
                match report.result {
                    Ok((stats, cursor)) => {
                        st.cursor = cursor;
                        st.last_success_ms = Some(report.started_ms);
                        st.last_error = None;
                        st.last = Some(stats);
                    }
                    Err(error) => {
                        match &error {
                            PollError::Unauthorized { .. } => {
                                tracing::error!(poller = %st.cfg.name, %error, "history read refused; fix api_key, polling goes on")
                            }
                            _ => {
                                tracing::warn!(poller = %st.cfg.name, %error, "history read failed; retried at the next tick")
                            }
                        }
                        st.last_error = Some(error.to_string());
                    }
                }
            }
            PollerMsg::Status(reply) => {
                let _ = reply.send(status(st));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<PollerMsg>,
        st: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        // A read cut short saved no cursor; the next start reads it again.
        if let Some(t) = st.task.take() {
            t.abort();
        }
        Ok(())
    }
}

fn status(st: &PollerState) -> PollerStatus {
    PollerStatus {
        name: st.cfg.name.clone(),
        kind: st.cfg.kind.to_string(),
        source: st.cfg.source.clone(),
        url: st.client.base().to_owned(),
        every: humantime_serde::re::humantime::format_duration(st.cfg.every).to_string(),
        polling: st.task.is_some(),
        polls: st.polls,
        last_poll_at: st.last_poll_ms.map(rfc3339_ms),
        last_success_at: st.last_success_ms.map(rfc3339_ms),
        last_error: st.last_error.clone(),
        cursor: st.cursor.at.map(format_date),
        seen: st.cursor.seen.len(),
        recovered: st.cursor.recovered,
        last: st.last.clone(),
    }
}

/// One read: everything the task needs, owned.
struct Read {
    cfg: Arc<ArrConfig>,
    client: ArrClient,
    store: Arc<dyn Store>,
    names: Names,
    metrics: Arc<Metrics>,
}

impl Read {
    #[tracing::instrument(skip_all, fields(poller = %self.cfg.name))]
    async fn run(self, cursor: Cursor) -> Result<(PollStats, Cursor), PollError> {
        let cfg = &self.cfg;
        let now_s = now_ms() / 1000;
        let body = self
            .client
            .history_since(cursor.read_from(cfg.overlap, now_s))
            .await?;
        let (records, malformed) = parse_records(&body);
        let settled_before = now_s.saturating_sub(secs(cfg.settle));
        let plan = plan_read(cfg.kind, &cfg.source, &records, &cursor, settled_before);
        let mut stats = PollStats {
            records: records.len(),
            malformed,
            deferred: plan.deferred,
            seen: plan.seen,
            ..PollStats::default()
        };
        let mut known = match plan.oldest_new {
            Some(oldest) if !plan.recover.is_empty() => {
                let since_ms = oldest.saturating_sub(CLOCK_SKEW_S).saturating_mul(1000);
                self.store.event_file_keys(&cfg.source, since_ms).await?
            }
            _ => Vec::new(),
        };
        for r in plan.recover {
            if is_known(&r, &known) {
                stats.duplicates += 1;
                continue;
            }
            known.push(key_of(&r));
            if self.commit(r).await? {
                stats.recovered += 1;
            } else {
                stats.duplicates += 1;
            }
        }
        let next = cursor.advanced(plan.handled, stats.recovered as u64, cfg.overlap, now_s);
        if next != cursor {
            let json = serde_json::to_string(&next).map_err(|e| PollError::Serialise {
                what: "the cursor",
                reason: e.to_string(),
            })?;
            self.store
                .save_poller_cursor(cfg.name.clone(), json)
                .await?;
        }
        tracing::info!(
            records = stats.records,
            recovered = stats.recovered,
            duplicates = stats.duplicates,
            seen = stats.seen,
            deferred = stats.deferred,
            malformed = stats.malformed,
            cursor = %next.at.map(format_date).unwrap_or_default(),
            "history read"
        );
        Ok((stats, next))
    }

    /// Commits one recovered event and hands it to the router. False when the store already
    /// had the same body (a read repeated after a crash).
    async fn commit(&self, r: Recovered) -> Result<bool, PollError> {
        let normalized_json =
            serde_json::to_string(&r.event).map_err(|e| PollError::Serialise {
                what: "a recovered event",
                reason: e.to_string(),
            })?;
        let mut h = Sha256::new();
        h.update(self.cfg.source.as_bytes());
        h.update([0u8]);
        h.update(&r.raw);
        let received_at_ms = now_ms();
        let event = Arc::new(r.event);
        let (appended, seq) = self
            .store
            .append(NewEvent {
                event: Arc::clone(&event),
                normalized_json,
                raw: Bytes::from(r.raw),
                content_type: Some("application/json".into()),
                dedup_key: h.finalize().into(),
                received_at_ms,
            })
            .await?;
        let Some(seq) = seq.filter(|_| !appended.duplicate) else {
            return Ok(false);
        };
        tracing::info!(
            event_id = %appended.id,
            kind = %event.kind,
            records = ?r.records,
            path = %r.path,
            "event recovered from history"
        );
        let committed = CommittedEvent {
            seq,
            id: appended.id.clone(),
            received_at_ms,
            event,
        };
        self.metrics.committed.publish(&committed);
        match ActorRef::<RouterMsg>::where_is(self.names.router()) {
            Some(router) => {
                let _ = router.cast(RouterMsg::Route(committed));
            }
            None => tracing::warn!(
                event_id = %appended.id,
                "router unavailable; its recovery sweep will route this event"
            ),
        }
        Ok(true)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

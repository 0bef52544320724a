//! The durable store: one interface ([`Store`]) that the actors and the HTTP layer use, with
//! an embedded SQLite backend ([`sqlite::SqliteStore`]) and a PostgreSQL one
//! ([`postgres::PostgresStore`]); [`open`] picks one from `[store] url`.
//!
//! Invariant: [`EventLog::append`] resolves only after the event is committed (fsynced to the
//! WAL). Concurrent appends are group-committed: one transaction and one fsync per batch.

mod codec;
pub mod lease;
pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{EventKind, NormalizedEvent};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Storage settings (`[store]` in the config file).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which database: unset (or `sqlite`) for the embedded SQLite file under
    /// `server.data_dir`; a `postgres://…` or `postgresql://…` URL for PostgreSQL. Holds the
    /// password for PostgreSQL, so it is never logged (see `RELAYARR_STORE__URL_FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PostgreSQL only: pooled connections for reads and delivery writes. Ingest uses one
    /// more connection of its own, so a slow admin query never delays a webhook's 2xx.
    pub pool_size: usize,
    /// Most events committed in one transaction. Larger batches mean fewer fsyncs under load.
    pub max_batch: usize,
    /// Under concurrent load (the previous commit held more than one event), wait this long
    /// for more events before committing, so one fsync covers more of them. Helps on disks
    /// with slow fsync (SD cards, HDDs); on SSDs commit cost follows bytes written, so the
    /// default is `0s` (off).
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// Raw bodies longer than this are stored truncated (the normalised event is always whole).
    pub raw_body_max: usize,
    /// The same body from the same source within this window is a duplicate: answered 200
    /// with the first event's id, and not routed again.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Rejected requests kept for troubleshooting (oldest dropped first).
    pub rejections_max: u64,
    /// Instances sharing one database (PostgreSQL): how long a silent instance's claims on
    /// deliveries and debounce groups hold before another instance takes them over. Each
    /// instance writes its heartbeat three times per lease. Unused with SQLite.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Most bodies remembered for dedup. At sustained rates above this many per
    /// `dedup_window`, the effective window shrinks to the most recent bodies.
    pub dedup_max_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            pool_size: 8,
            max_batch: 512,
            commit_delay: Duration::ZERO,
            raw_body_max: 1024 * 1024,
            dedup_window: Duration::from_secs(600),
            rejections_max: 10_000,
            dedup_max_entries: 200_000,
            lease: Duration::from_secs(30),
        }
    }
}

// By hand: the URL may hold a password, and configs end up in logs.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(crate::redact::mask_url))
            .field("pool_size", &self.pool_size)
            .field("max_batch", &self.max_batch)
            .field("commit_delay", &self.commit_delay)
            .field("raw_body_max", &self.raw_body_max)
            .field("dedup_window", &self.dedup_window)
            .field("rejections_max", &self.rejections_max)
            .field("dedup_max_entries", &self.dedup_max_entries)
            .finish()
    }
}

impl StoreConfig {
    /// True when `url` names PostgreSQL (`postgres://` or `postgresql://`).
    pub fn is_postgres(&self) -> bool {
        self.url
            .as_deref()
            .map(str::trim)
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }
}

/// Opens the backend that `cfg.url` names: SQLite at `sqlite_path` when it names none (or
/// `sqlite`), PostgreSQL for a `postgres://` or `postgresql://` URL.
pub async fn open(cfg: &StoreConfig, sqlite_path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match cfg.url.as_deref().map(str::trim) {
        None | Some("" | "sqlite") => Ok(SqliteStore::open(sqlite_path, cfg.clone())?),
        Some(url) if cfg.is_postgres() => Ok(PostgresStore::open(url, cfg.clone()).await?),
        Some(other) => Err(StoreError::Open {
            path: "[store] url".into(),
            reason: format!(
                "`{}` is not a store relayarr knows; use postgres://user:password@host/db \
                 for PostgreSQL, or leave url unset for SQLite",
                crate::redact::mask_url(other)
            ),
        }),
    }
}

/// An event ready to be committed: normalised, with its raw body and dedup key.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The normalised event, shared with whoever routes it once committed: the store keeps
    /// a weak reference, so a later read of it while it is still held shares this copy.
    pub event: Arc<NormalizedEvent>,
    /// `serde_json::to_string(&event)`, computed by the caller off the writer thread.
    pub normalized_json: String,
    /// The body as received (stored truncated beyond `raw_body_max`).
    pub raw: Bytes,
    /// The request's `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// SHA-256 over the source name and the raw body.
    pub dedup_key: [u8; 32],
    /// Unix milliseconds at which the request was received.
    pub received_at_ms: i64,
}

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's id (a ULID): the new one, or the first event's for a duplicate.
    pub id: String,
    /// True when an identical body from the same source was committed within the dedup
    /// window; `id` is then the first event's id and nothing new was stored.
    pub duplicate: bool,
}

/// An event as read back from the store.
#[derive(Clone, Debug, Serialize)]
pub struct StoredEvent {
    /// The event's id (a ULID).
    pub id: String,
    /// The configured source name.
    pub source: String,
    /// The normalised kind (`import`, `grab`, …).
    pub kind: String,
    /// The sender's own event name.
    pub event_type: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// When it was received, unix milliseconds.
    pub received_at_ms: i64,
    /// `routed` once the router has handled it, else `received`.
    pub status: String,
    /// The request's `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// True when the raw body was longer than `raw_body_max` and was cut.
    pub raw_truncated: bool,
    /// The normalised event.
    pub normalized: NormalizedEvent,
    /// The raw body, lossily decoded as UTF-8 (bodies are validated UTF-8 before storing).
    pub raw: String,
}

/// An event that was committed and must be routed.
#[derive(Clone, Debug)]
pub struct CommittedEvent {
    /// The store's sequence number: commit order.
    pub seq: i64,
    /// The event's id (a ULID).
    pub id: String,
    /// When it was received, unix milliseconds.
    pub received_at_ms: i64,
    /// The normalised event, shared with the router and the workers.
    pub event: Arc<NormalizedEvent>,
}

/// A request refused at ingress, kept (bounded) so users can see why a sender is not getting
/// through.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    /// When it was refused, unix milliseconds.
    pub at_ms: i64,
    /// The configured source name.
    pub source: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Why, in words (the error message sent back).
    pub reason: String,
}

/// A group of events that the debouncer coalesced into one delivery: its key (a folder, an
/// item, a download id) and the events, in commit order. Stored as the delivery's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The coalescing key.
    pub key: String,
    /// Sequence numbers of the events, in commit order.
    pub seqs: Vec<i64>,
}

/// A delivery to create: one per (event, matching target), or one per debounced group.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// The event (for a group: its first event).
    pub event_seq: i64,
    /// The target's name as stored: a hook's name, or `plex:NAME`.
    pub hook: String,
    /// Stable per (event, target), or per (group, target): the same on every retry and after
    /// restarts. Unique per target, which makes creating a delivery idempotent.
    pub webhook_id: String,
    /// Set for a debounced group.
    pub group: Option<Group>,
}

/// A pending delivery, as a worker holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery row's id.
    pub id: i64,
    /// Sequence number of its event (for a group: the first event).
    pub event_seq: i64,
    /// Id of its event.
    pub event_id: String,
    /// When its event was received, unix milliseconds.
    pub event_received_at_ms: i64,
    /// The stored target name (a hook's name, or `plex:NAME`).
    pub hook: String,
    /// Stable per (event, target) or (group, target): the `webhook-id` receivers dedupe by.
    pub webhook_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Set for a debounced group: every event it covers.
    pub group: Option<Group>,
}

/// The outcome of an attempt, as written to the delivery row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryUpdate {
    /// Delivered; the row is final.
    Succeeded {
        /// The delivery row's id.
        id: i64,
        /// Attempts made, this one included.
        attempts: u32,
        /// The HTTP status of the successful attempt.
        status: u16,
    },
    /// Still pending; tried again at `next_attempt_at_ms`.
    Retry {
        /// The delivery row's id.
        id: i64,
        /// Attempts made, this one included.
        attempts: u32,
        /// When it is due again, unix milliseconds.
        next_attempt_at_ms: i64,
        /// The last HTTP status, if the attempt got one.
        status: Option<u16>,
        /// The last error, if any.
        error: Option<String>,
    },
    /// Given up: a 4xx, 410, or retries exhausted.
    Failed {
        /// The delivery row's id.
        id: i64,
        /// Attempts made, this one included.
        attempts: u32,
        /// The last HTTP status, if the attempt got one.
        status: Option<u16>,
        /// The last error, if any.
        error: Option<String>,
    },
}

impl DeliveryUpdate {
    /// The delivery row this update is for.
    pub fn id(&self) -> i64 {
        match self {
            DeliveryUpdate::Succeeded { id, .. }
            | DeliveryUpdate::Retry { id, .. }
            | DeliveryUpdate::Failed { id, .. } => *id,
        }
    }

    /// The row as both backends write it: `(id, state, attempts, next_attempt_at,
    /// last_status, last_error)`. A finished delivery's `next_attempt_at` is `now`.
    pub fn columns(&self, now: i64) -> UpdateColumns<'_> {
        match self {
            DeliveryUpdate::Succeeded {
                id,
                attempts,
                status,
            } => (*id, "succeeded", *attempts, now, Some(*status), None),
            DeliveryUpdate::Retry {
                id,
                attempts,
                next_attempt_at_ms,
                status,
                error,
            } => (
                *id,
                "pending",
                *attempts,
                *next_attempt_at_ms,
                *status,
                error.as_deref(),
            ),
            DeliveryUpdate::Failed {
                id,
                attempts,
                status,
                error,
            } => (*id, "failed", *attempts, now, *status, error.as_deref()),
        }
    }
}

/// See [`DeliveryUpdate::columns`].
pub type UpdateColumns<'a> = (i64, &'static str, u32, i64, Option<u16>, Option<&'a str>);

/// One delivery attempt, for the history.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// The delivery row attempted.
    pub delivery_id: i64,
    /// The stored target name.
    pub hook: String,
    /// Id of the delivery's event.
    pub event_id: String,
    /// The delivery's `webhook-id`.
    pub webhook_id: String,
    /// 1-based.
    pub attempt: u32,
    /// When it started, unix milliseconds.
    pub started_at_ms: i64,
    /// How long it took, milliseconds.
    pub latency_ms: u64,
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// The transport error or failure, if any.
    pub error: Option<String>,
    /// First 1 KiB of the request body, secrets redacted.
    pub request_excerpt: String,
    /// First 1 KiB of the response body.
    pub response_excerpt: String,
}

/// Runtime state of a hook that survives restarts (limits tuned through the admin API,
/// disabled flag).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOverrides {
    /// The stored target name.
    pub hook: String,
    /// Enabled or disabled at runtime; unset keeps the config's value.
    pub enabled: Option<bool>,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The cap on requests in flight, when changed at runtime.
    pub max_in_flight: Option<u32>,
    /// `Some("")` means "no rate limit" was set explicitly.
    pub rate: Option<String>,
    /// The rate's burst, when changed at runtime.
    pub burst: Option<u32>,
}

/// Which deliveries a replay makes pending again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayScope {
    /// Every delivery of this event (by event id), groups that include it too.
    Event(String),
    /// Deliveries created at or after this time (unix ms).
    Since(i64),
    /// These delivery ids.
    Ids(Vec<i64>),
}

/// One event waiting in a debounce group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebounceItem {
    /// The stored target name.
    pub target: String,
    /// The coalescing key.
    pub key: String,
    /// Sequence number of the event.
    pub event_seq: i64,
    /// When the event was received, unix milliseconds.
    pub received_at_ms: i64,
    /// The quiet period and max wait that applied when the event arrived.
    pub quiet_ms: i64,
    /// The max wait that applied when the event arrived, milliseconds.
    pub max_wait_ms: i64,
}

/// What came of firing a debounce group.
#[derive(Clone, Debug)]
pub enum Fired {
    /// Fired: its delivery, or `None` if that existed already.
    Fired(Option<Delivery>),
    /// Items that other instances added have not been quiet long enough: due at this time
    /// (unix ms).
    NotYet(i64),
    /// Another live instance holds this key and fires it.
    NotMine,
}

/// A debounce group that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FireGroup {
    /// The stored target name.
    pub target: String,
    /// The group delivery's stable `webhook-id`.
    pub webhook_id: String,
    /// The group's key and events.
    pub group: Group,
}

/// A title card applied to a Plex item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedCard {
    /// The stored target name of the Plex server (`plex:NAME`).
    pub target: String,
    /// The Plex item's `ratingKey` when the card was applied.
    pub rating_key: String,
    /// Hex SHA-256 of the card's bytes.
    pub card_sha: String,
    /// What the card is for, for people: `Show (2020) S01E05`.
    pub item: String,
}

/// Delivery counts of one hook.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Deliveries still pending.
    pub pending: u64,
    /// Deliveries that succeeded.
    pub succeeded: u64,
    /// Deliveries that failed for good.
    pub failed: u64,
}

impl DeliveryCounts {
    /// Adds `n` rows in `state` (a stored state name); every non-final, non-success state
    /// other than `pending` counts as failed.
    pub fn add(&mut self, state: &str, n: u64) {
        match state {
            "pending" => self.pending += n,
            "succeeded" => self.succeeded += n,
            _ => self.failed += n,
        }
    }
}

/// The pending deliveries of one target, for the queue gauges of `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PendingSummary {
    /// The stored target name.
    pub target: String,
    /// Deliveries pending now.
    pub pending: u64,
    /// `created_at` (unix ms) of the oldest pending delivery.
    pub oldest_created_at_ms: Option<i64>,
}

/// A delivery's state as the admin API filters by it. `failed` covers every state that is
/// neither pending nor succeeded (failed, dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for an attempt, now or later.
    Pending,
    /// Delivered.
    Succeeded,
    /// Given up (failed or dead).
    Failed,
}

impl DeliveryState {
    /// The lowercase name, as the admin API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "succeeded" => Ok(DeliveryState::Succeeded),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(format!(
                "`{other}` is not a delivery state; use pending, succeeded or failed"
            )),
        }
    }
}

/// Which events [`EventLog::list_events`] returns. Every field narrows the result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The configured source name (`sonarr-4k`).
    pub source: Option<String>,
    /// The normalised kind (`import`, `grab`, …).
    pub kind: Option<String>,
    /// Received at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Received before this time (unix ms).
    pub until_ms: Option<i64>,
    /// At least one of the event's deliveries (its own, or a group's that includes it) is
    /// in this state.
    pub status: Option<DeliveryState>,
    /// Keyset pagination: only events with `seq` below this (the last row of the previous
    /// page).
    pub before_seq: Option<i64>,
    /// The most events returned.
    pub limit: usize,
}

/// Delivery counts of one event at one target.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TargetCounts {
    /// The stored target name.
    pub target: String,
    /// How many of those deliveries are in each state.
    #[serde(flatten)]
    pub counts: DeliveryCounts,
}

/// One row of the events list.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EventSummary {
    /// The store's sequence number: the pagination key (not served: the API's cursor is
    /// opaque).
    #[serde(skip)]
    pub seq: i64,
    /// The event's id (a ULID).
    pub id: String,
    /// The configured source name.
    pub source: String,
    /// The normalised kind.
    pub kind: String,
    /// The sender's own event name.
    pub event_type: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// When it was received, unix milliseconds.
    pub received_at_ms: i64,
    /// Title and `SxxEyy`, for people.
    pub summary: String,
    /// Per target, the states of the deliveries that carry this event.
    pub deliveries: Vec<TargetCounts>,
}

/// A delivery row as the explain view shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The delivery row's id.
    pub id: i64,
    /// The stored target name.
    pub target: String,
    /// Its stable `webhook-id`.
    pub webhook_id: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// For a pending delivery: when it is tried next (unix ms).
    pub next_attempt_at_ms: Option<i64>,
    /// When it was created, unix milliseconds.
    pub created_at_ms: i64,
    /// When it was last written, unix milliseconds.
    pub updated_at_ms: i64,
    /// The last attempt's HTTP status, if it got one.
    pub last_status: Option<u16>,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
    /// Set when this is a debounced group's delivery that includes the event.
    pub group: Option<Group>,
}

/// Everything the store knows about how one event was delivered.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EventDeliveries {
    /// The deliveries that carry the event, its own and its groups'.
    pub deliveries: Vec<DeliveryInfo>,
    /// Every attempt of those deliveries, oldest first.
    pub attempts: Vec<Attempt>,
}

/// One file of a stored import, upgrade, rename or delete event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFileKey {
    /// The event's kind.
    pub kind: EventKind,
    /// The event's download id, when it has one.
    pub download_id: Option<String>,
    /// The file's path on the sender's filesystem.
    pub path: String,
    /// True when the event removed this file.
    pub deleted: bool,
}

impl EventFileKey {
    /// The keys of one event: one per file, for the kinds that name files.
    pub fn of(ev: &NormalizedEvent) -> Vec<EventFileKey> {
        if !matches!(
            ev.kind,
            EventKind::Import | EventKind::Upgrade | EventKind::Rename | EventKind::Delete
        ) {
            return Vec::new();
        }
        ev.files
            .iter()
            .map(|f| EventFileKey {
                kind: ev.kind.clone(),
                download_id: ev.download_id.clone(),
                path: f.path.clone(),
                deleted: f.deleted,
            })
            .collect()
    }
}

/// Why a store operation failed, whichever the backend.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database refused or failed an operation (the backend's own message).
    #[error("database: {0}")]
    Backend(String),
    /// The store was shut down (its writer is gone).
    #[error("store is closed")]
    Closed,
    /// A stored event cannot be decoded (its compressed body or its JSON).
    #[error("stored event {id} is corrupt: {reason}")]
    Corrupt {
        /// The event's id.
        id: String,
        /// What failed to decode.
        reason: String,
    },
    /// The database cannot be opened or set up, or `[store] url` names no known backend.
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// What was being opened: the SQLite file, the PostgreSQL server (no password), or the
        /// config key.
        path: String,
        /// What went wrong, and how to fix it.
        reason: String,
    },
    /// The transaction (or the WAL fsync) holding this write failed; nothing of it is stored.
    #[error("commit failed: {0}")]
    Commit(String),
}

/// The storage interface, in five parts. Every part is object-safe, and [`Store`] is all of
/// them plus the lifecycle, so the relay holds one `Arc<dyn Store>` for whichever backend
/// the config chose. Every error is a [`StoreError`], whatever the backend.
///
/// Callers bring the parts into scope with `use relayarr_actors::store::prelude::*`.
/// The event log: what was received, durably, and how far routing got. Append-only apart
/// from routing progress (owned by the router) and rejections (bounded).
pub trait EventLog: Send + Sync + 'static {
    /// Commits one event (group-committed with concurrent callers). Resolves after the
    /// commit, with the row's sequence number (`None` for a duplicate).
    fn append(&self, ev: NewEvent) -> BoxFuture<'_, Result<(Appended, Option<i64>), StoreError>>;
    /// Reads one event by id.
    fn get_event<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredEvent>, StoreError>>;
    /// `(seq, received_at_ms)` of committed events not yet routed, lowest `seq` first.
    /// Correct whatever order commits landed in: progress is kept per event.
    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>>;
    /// Marks events routed: their deliveries and debounce items are stored.
    fn mark_routed(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Loads events by sequence number (missing ones are skipped), in order.
    fn events_by_seq(
        &self,
        seqs: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<CommittedEvent>, StoreError>>;
    /// The stored raw body of an event (decompressed), for `raw`-format hooks.
    fn raw_body(&self, seq: i64) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
    /// Number of stored events (all statuses).
    fn count_events(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Events matching `filter`, newest first (by `seq`), at most `filter.limit`.
    fn list_events(
        &self,
        filter: EventFilter,
    ) -> BoxFuture<'_, Result<Vec<EventSummary>, StoreError>>;
    /// The files of `source`'s import, upgrade, rename and delete events received at or
    /// after `since_ms`: what the reconciliation pollers dedup against.
    fn event_file_keys<'a>(
        &'a self,
        source: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<EventFileKey>, StoreError>>;
    /// Records rejected requests (bounded by `rejections_max`).
    fn record_rejections(&self, rows: Vec<Rejection>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The newest rejections, newest first.
    fn recent_rejections(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Rejection>, StoreError>>;
}

/// The delivery queue: one row per (event, target), owned by that target's worker, and the
/// debounce groups, owned by the debouncer.
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Creates deliveries, ignoring (event, hook) pairs that already exist, and marks the
    /// events `routed` routed in the same transaction. Returns the deliveries created.
    fn create_deliveries(
        &self,
        rows: Vec<NewDelivery>,
        routed: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>>;
    /// Pending deliveries of `hook` due at `now_ms`, oldest first.
    fn due_deliveries<'a>(
        &'a self,
        hook: &'a str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, StoreError>>;
    /// Applies attempt outcomes to delivery rows.
    fn update_deliveries(
        &self,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Makes a target's deliveries in `scope` pending again, due now. Returns their ids.
    /// Only the target's worker calls this, in order with its outcome writes.
    fn requeue_deliveries<'a>(
        &'a self,
        target: &'a str,
        scope: ReplayScope,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>>;
    /// The targets that have a delivery of this event (a group's included).
    fn delivery_targets<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Delivery counts of one hook.
    fn delivery_counts<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<DeliveryCounts, StoreError>>;
    /// Pending deliveries per target that has any: count and oldest `created_at`.
    fn pending_summary(&self) -> BoxFuture<'_, Result<Vec<PendingSummary>, StoreError>>;
    /// Adds events to debounce groups. Items that already exist (fired or not) are ignored,
    /// so routing an event twice never makes a second group. Returns the items added.
    fn add_debounce_items(
        &self,
        items: Vec<DebounceItem>,
    ) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>>;
    /// Items not yet fired that this instance holds, to rebuild the debouncer's groups after
    /// a restart.
    fn pending_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>>;
    /// Items this instance has just taken over: the groups of instances whose lease lapsed.
    /// Always empty for a single-instance store.
    fn adopt_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>>;
    /// Fires a group in one transaction: creates its delivery and marks its items fired.
    /// On a shared database only the instance that holds the key fires it, with every
    /// unfired item of the key (other instances' included), once the last one is quiet.
    fn fire_group(&self, fire: FireGroup) -> BoxFuture<'_, Result<Fired, StoreError>>;
    /// Gives this instance's claims on `target`'s pending rows back, so other instances
    /// take them (its share of the target's cap is 0). A no-op for a single-instance store.
    fn release_claims<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Forgets fired items of routed events.
    fn prune_debounce(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// The history of attempts, owned by the history recorder, and what it explains.
pub trait History: Send + Sync + 'static {
    /// Appends attempts to the history.
    fn record_attempts(&self, attempts: Vec<Attempt>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// One batch of attempt retention: deletes at most `rule.batch` attempts older than
    /// `rule.older_than_ms`, at most `rule.batch` of the oldest beyond `rule.keep_max`, and
    /// at most `rule.batch` finished deliveries last updated before `rule.older_than_ms`
    /// (pending ones never). A caller repeats while [`PrunedAttempts::more`] says so.
    fn prune_attempts(
        &self,
        rule: AttemptRetention,
    ) -> BoxFuture<'_, Result<PrunedAttempts, StoreError>>;
    /// One batch of event retention: deletes at most `rule.batch` events that are older
    /// than `rule.older_than_ms` or beyond the newest `rule.keep_max`, oldest first, with
    /// their deliveries, attempts and debounce items. An event with pending work is never
    /// deleted: unrouted, a pending delivery (its own, or a debounced group's that includes
    /// it), or a debounce item not yet fired. Only events after `rule.after_seq` are looked
    /// at, so that a run passes each event with pending work once, not once per batch.
    fn prune_events(&self, rule: EventRetention) -> BoxFuture<'_, Result<PrunedBatch, StoreError>>;
    /// Gives space freed by pruning back to the file system, at most `max_pages` pages per
    /// call (SQLite: `PRAGMA incremental_vacuum`, then a WAL truncation once nothing is left
    /// to free). PostgreSQL reuses deleted tuples through autovacuum: nothing to do here.
    fn compact(&self, max_pages: u64) -> BoxFuture<'_, Result<Compacted, StoreError>>;
    /// Attempts of one event, oldest first.
    fn attempts_for_event<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, StoreError>>;
    /// The deliveries that carry this event (debounced groups that include it too) and
    /// their attempts; `None` for an unknown event.
    fn event_deliveries<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EventDeliveries>, StoreError>>;
}

/// Small runtime state that must survive restarts: limits changed at runtime, hooks created
/// through the admin API, applied title cards, poller cursors.
pub trait RuntimeState: Send + Sync + 'static {
    /// Saved runtime state of a hook.
    fn hook_overrides<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<Option<HookOverrides>, StoreError>>;
    /// Saves the runtime state of a hook.
    fn save_hook_overrides(&self, state: HookOverrides) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Hooks created through the admin API: `(name, config JSON)`.
    fn runtime_hooks(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>>;
    /// Saves (`Some(config JSON)`) or deletes (`None`) a hook created through the admin API.
    fn save_runtime_hook(
        &self,
        name: String,
        config: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The card last applied to a Plex item (its SHA-256), if any.
    fn applied_card<'a>(
        &'a self,
        target: &'a str,
        rating_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// Remembers that a card was applied to a Plex item.
    fn record_card(&self, card: AppliedCard) -> BoxFuture<'_, Result<(), StoreError>>;
    /// A poller's saved cursor (JSON, owned by `pollers::cursor`).
    fn poller_cursor<'a>(
        &'a self,
        poller: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// Saves a poller's cursor.
    fn save_poller_cursor(
        &self,
        poller: String,
        cursor: String,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Instances sharing one database. Each delivery row and debounce item a worker holds is
/// claimed by its instance; a claim holds while its instance's heartbeat is younger than the
/// lease, and then other instances take the work over. SQLite has one instance.
pub trait Membership: Send + Sync + 'static {
    /// This process's instance id (unique per start).
    fn instance_id(&self) -> &str;
    /// Records that this instance is alive, and returns the ids of the live instances
    /// (this one included), sorted.
    fn heartbeat(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// Leaves: this instance's claims are released, so the others take them at once.
    fn leave(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// While this instance holds its claims, the epoch of its lease; `None` once they may
    /// have lapsed in the other instances' view (its heartbeat is late, or it left). Work
    /// claimed under an epoch may start only while that same epoch holds (see
    /// [`lease::LeaseClock`]). SQLite has one instance, whose lease always holds.
    fn lease(&self) -> Option<u64>;
}

/// What one batch of attempt retention may delete (see [`History::prune_attempts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptRetention {
    /// Attempts started, and finished deliveries last updated, before this (unix ms) go.
    pub older_than_ms: i64,
    /// Beyond this many stored attempts, the oldest go.
    pub keep_max: u64,
    /// Most rows of each kind deleted in one call (one short transaction).
    pub batch: usize,
}

/// The outcome of one [`History::prune_attempts`] batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunedAttempts {
    /// Attempts and finished deliveries deleted.
    pub rows: u64,
    /// One of the limits took a full batch: more may follow.
    pub more: bool,
}

/// What one batch of event retention may delete (see [`History::prune_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRetention {
    /// Events received before this (unix ms) go.
    pub older_than_ms: i64,
    /// Beyond this many stored events, the oldest go.
    pub keep_max: u64,
    /// Most events deleted in one call (one short transaction).
    pub batch: usize,
    /// Only events with a larger sequence number are considered: 0 for a run's first batch,
    /// then the previous batch's [`PrunedBatch::last_seq`].
    pub after_seq: i64,
}

/// The outcome of one [`History::prune_events`] batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunedBatch {
    /// Events deleted.
    pub events: u64,
    /// The largest sequence number looked at (the batch's `after_seq` when none was):
    /// where the run's next batch starts looking.
    pub last_seq: i64,
    /// The batch found as many candidates as it could take: more may follow.
    pub more: bool,
}

/// The outcome of one [`History::compact`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Pages given back to the file system by this call.
    pub pages_freed: u64,
    /// Free pages still inside the file (0: done).
    pub pages_left: u64,
    /// The database file's size after this call, in bytes (0 where unknown).
    pub file_bytes: u64,
}

/// A complete backend: the five parts, plus its lifecycle.
pub trait Store: EventLog + DeliveryQueue + History + RuntimeState + Membership {
    /// Flushes pending writes and stops accepting new ones. Idempotent.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Proves the store accepts a write: a tiny write committed (and synced) like any
    /// other, within `timeout`. For `/readyz`.
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records attempts, then the outcomes they led to. The default makes two writes
    /// (attempts first: a crash in between resends a delivery, which then shows one more
    /// attempt, never an outcome without its attempt); a backend may make it one.
    fn record_outcomes(
        &self,
        updates: Vec<DeliveryUpdate>,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        record_outcomes_in_two_writes(self, updates, attempts).boxed()
    }
}

/// [`Store::record_outcomes`] as two writes, attempts first (a crash in between resends a
/// delivery, which then shows one more attempt, never an outcome without its attempt).
pub(crate) async fn record_outcomes_in_two_writes<S: DeliveryQueue + History + ?Sized>(
    store: &S,
    updates: Vec<DeliveryUpdate>,
    attempts: Vec<Attempt>,
) -> Result<(), StoreError> {
    if !attempts.is_empty() {
        store.record_attempts(attempts).await?;
    }
    store.update_deliveries(updates).await
}

/// The storage traits, for callers of an `Arc<dyn Store>`.
pub mod prelude {
    pub use super::{DeliveryQueue, EventLog, History, Membership, RuntimeState, Store};
}

/// The SQL test for a delivery state, on a `deliveries d` row (`failed` covers every state
/// that is neither pending nor succeeded). Both backends' SQL reads the same here.
pub(crate) fn state_sql(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "d.state = 'pending'",
        DeliveryState::Succeeded => "d.state = 'succeeded'",
        DeliveryState::Failed => "d.state NOT IN ('pending', 'succeeded')",
    }
}

/// Adds `n` deliveries in `state` to the per-target counts.
pub(crate) fn count_into(counts: &mut Vec<TargetCounts>, target: &str, state: &str, n: u64) {
    let i = match counts.iter().position(|c| c.target == target) {
        Some(i) => i,
        None => {
            counts.push(TargetCounts {
                target: target.to_owned(),
                ..TargetCounts::default()
            });
            counts.len() - 1
        }
    };
    counts[i].counts.add(state, n);
}

/// Formats unix milliseconds as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

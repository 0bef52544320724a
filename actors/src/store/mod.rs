//! The durable store: one interface ([`Store`]) that the actors and the HTTP layer use, with
//! an embedded SQLite backend ([`sqlite::SqliteStore`]). A PostgreSQL backend plugs in behind
//! the same trait without touching the actors.
//!
//! Invariant: [`Store::append`] resolves only after the event is committed (fsynced to the
//! WAL). Concurrent appends are group-committed: one transaction and one fsync per batch.

pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::NormalizedEvent;

pub use sqlite::SqliteStore;

/// Storage settings (`[store]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
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
    /// Most bodies remembered for dedup. At sustained rates above this many per
    /// `dedup_window`, the effective window shrinks to the most recent bodies.
    pub dedup_max_entries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 512,
            commit_delay: Duration::ZERO,
            raw_body_max: 1024 * 1024,
            dedup_window: Duration::from_secs(600),
            rejections_max: 10_000,
            dedup_max_entries: 200_000,
        }
    }
}

/// An event ready to be committed: normalised, with its raw body and dedup key.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event: NormalizedEvent,
    /// `serde_json::to_string(&event)`, computed by the caller off the writer thread.
    pub normalized_json: String,
    pub raw: Bytes,
    pub content_type: Option<String>,
    /// SHA-256 over the source name and the raw body.
    pub dedup_key: [u8; 32],
    /// Unix milliseconds at which the request was received.
    pub received_at_ms: i64,
}

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub id: String,
    /// True when an identical body from the same source was committed within the dedup
    /// window; `id` is then the first event's id and nothing new was stored.
    pub duplicate: bool,
}

/// An event as read back from the store.
#[derive(Clone, Debug, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub source: String,
    pub kind: String,
    pub event_type: String,
    pub received_at: String,
    pub received_at_ms: i64,
    /// `routed` once the router has handled it, else `received`.
    pub status: String,
    pub content_type: Option<String>,
    pub raw_truncated: bool,
    pub normalized: NormalizedEvent,
    /// The raw body, lossily decoded as UTF-8 (bodies are validated UTF-8 before storing).
    pub raw: String,
}

/// An event that was committed and must be routed.
#[derive(Clone, Debug)]
pub struct CommittedEvent {
    /// The store's sequence number: commit order.
    pub seq: i64,
    pub id: String,
    pub received_at_ms: i64,
    pub event: Arc<NormalizedEvent>,
}

/// A request refused at ingress, kept (bounded) so users can see why a sender is not getting
/// through.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    pub at_ms: i64,
    pub source: String,
    pub status: u16,
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store is closed")]
    Closed,
    #[error("stored event {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// The storage interface. Object-safe so the relay can hold an `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// Commits one event (group-committed with concurrent callers). Resolves after the
    /// commit, with the row's sequence number (`None` for a duplicate).
    fn append(&self, ev: NewEvent) -> BoxFuture<'_, Result<(Appended, Option<i64>), StoreError>>;
    /// Reads one event by id.
    fn get_event<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredEvent>, StoreError>>;
    /// The routing watermark: every stored event with `seq <= watermark` has been routed.
    fn routed_watermark(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// Persists a new routing watermark.
    fn set_routed_watermark(&self, seq: i64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// `(seq, received_at_ms)` of stored events with `seq > after`, in order.
    fn seqs_after(
        &self,
        after: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>>;
    /// Loads events by sequence number (missing ones are skipped), in order.
    fn events_by_seq(
        &self,
        seqs: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<CommittedEvent>, StoreError>>;
    /// Records rejected requests (bounded by `rejections_max`).
    fn record_rejections(&self, rows: Vec<Rejection>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The newest rejections, newest first.
    fn recent_rejections(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Rejection>, StoreError>>;
    /// Number of stored events (all statuses).
    fn count_events(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Flushes pending writes and stops accepting new ones. Idempotent.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
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

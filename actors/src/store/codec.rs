//! What every backend stores the same way: the on-disk encoding of an event's bodies (LZ4),
//! the in-memory dedup window, and decoding a stored normalised event. Kept apart from the
//! backends so SQLite and PostgreSQL rows are byte-for-byte alike and dedup behaves the same.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{CommittedEvent, NewEvent, StoreConfig, StoreError};
use crate::model::NormalizedEvent;

/// `codec` values: how `raw` and `normalized` are stored. LZ4 (block format, size
/// prepended): about 2.5x on indented *arr JSON. zstd level 1 compressed better (4x) but
/// was 15% of ingest CPU, and ingest is CPU-bound, not I/O-bound (measured).
pub(crate) const CODEC_LZ4: i64 = 2;

/// An event ready for the writer: compressed off the writer thread, by the caller's task.
pub(crate) struct Encoded {
    pub(crate) instance: String,
    pub(crate) source_kind: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) event_type: String,
    pub(crate) received_at_ms: i64,
    pub(crate) dedup_key: [u8; 32],
    pub(crate) content_type: Option<String>,
    pub(crate) raw_truncated: bool,
    pub(crate) raw: Vec<u8>,
    pub(crate) normalized: Vec<u8>,
}

impl Encoded {
    pub(crate) fn new(ev: NewEvent, raw_body_max: usize) -> Self {
        let raw_truncated = ev.raw.len() > raw_body_max;
        let raw = &ev.raw[..ev.raw.len().min(raw_body_max)];
        Encoded {
            source_kind: ev.event.source.as_str(),
            kind: ev.event.kind.as_str(),
            raw: lz4_flex::compress_prepend_size(raw),
            normalized: lz4_flex::compress_prepend_size(ev.normalized_json.as_bytes()),
            instance: ev.event.instance,
            event_type: ev.event.event_type,
            received_at_ms: ev.received_at_ms,
            dedup_key: ev.dedup_key,
            content_type: ev.content_type,
            raw_truncated,
        }
    }
}

/// Decodes a stored body (`codec` as stored in the row).
pub(crate) fn decode(codec: i64, data: Vec<u8>, id: &str) -> Result<Vec<u8>, StoreError> {
    match codec {
        0 => Ok(data),
        CODEC_LZ4 => lz4_flex::decompress_size_prepended(&data).map_err(|e| StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("lz4: {e}"),
        }),
        other => Err(StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("unknown codec {other}"),
        }),
    }
}

/// Parses a decoded normalised body.
pub(crate) fn parse_normalized(json: &[u8], id: &str) -> Result<NormalizedEvent, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn row_to_committed(
    seq: i64,
    id: String,
    at: i64,
    json: &[u8],
) -> Result<CommittedEvent, StoreError> {
    let event = parse_normalized(json, &id)?;
    Ok(CommittedEvent {
        seq,
        id,
        received_at_ms: at,
        event: Arc::new(event),
    })
}

/// The dedup window, in memory: 64-bit prefix of each recent `dedup_key` → (seq, received
/// at). A hit is confirmed against the full key in the row, so a prefix collision can never
/// turn a new event into a "duplicate". Bounded by `dedup_max_entries`, oldest evicted first.
pub(crate) struct DedupCache {
    window_ms: i64,
    max: usize,
    map: HashMap<u64, (i64, i64)>,
    order: VecDeque<(u64, i64, i64)>,
}

impl DedupCache {
    pub(crate) fn new(cfg: &StoreConfig) -> Self {
        DedupCache {
            window_ms: i64::try_from(cfg.dedup_window.as_millis()).unwrap_or(i64::MAX),
            max: cfg.dedup_max_entries,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The oldest `received_at` (unix ms) still inside the window at `now`: what a backend
    /// reads back to rebuild the cache at start.
    pub(crate) fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.window_ms)
    }

    /// Whether an event received at `at` is still remembered at `now`: the window is on
    /// (`dedup_max_entries` > 0) and `at` is inside it.
    pub(crate) fn within(&self, at: i64, now: i64) -> bool {
        self.max > 0 && at >= self.cutoff(now)
    }

    pub(crate) fn insert(&mut self, key: u64, seq: i64, at: i64) {
        if self.max == 0 {
            return;
        }
        self.map.insert(key, (seq, at));
        self.order.push_back((key, seq, at));
        while self.order.len() > self.max {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, seq, _)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(s, _)| *s == seq) {
                self.map.remove(&key);
            }
        }
    }

    /// The seq of a stored event whose key starts like `key`, received at or after `now -
    /// window`.
    pub(crate) fn candidate(&mut self, key: u64, now: i64) -> Option<i64> {
        let cutoff = self.cutoff(now);
        while self.order.front().is_some_and(|(_, _, at)| *at < cutoff) {
            self.pop_oldest();
        }
        self.map
            .get(&key)
            .filter(|(_, at)| *at >= cutoff)
            .map(|(seq, _)| *seq)
    }
}

/// The first 8 bytes of a dedup key: the in-memory window's map key.
pub(crate) fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(key) {
        *d = *s;
    }
    u64::from_le_bytes(b)
}

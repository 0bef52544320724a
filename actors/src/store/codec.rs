//! What every backend stores the same way: the on-disk encoding of an event's bodies (LZ4),
//! the in-memory dedup window, and decoding a stored normalised event. Kept apart from the
//! backends so SQLite and PostgreSQL rows are byte-for-byte alike and dedup behaves the same.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Appended, CommittedEvent, NewEvent, StoreConfig, StoreError};
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
            instance: ev.event.instance.clone(),
            event_type: ev.event.event_type.clone(),
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

/// Decoded events that something still holds (a job in a worker's window, an attempt under
/// way), by sequence number, so that a read of an event already in memory shares it instead
/// of decoding another copy. Every target's worker loads its own page of deliveries, and
/// with 8 targets behind on the same events each event was read, decoded and held 8 times.
/// Entries are weak: an event stays in memory only as long as a job holds it, and the map
/// drops dead entries once `LIVE_SWEEP_EVERY` were added since the last sweep (a dead
/// entry still holds its `Arc`'s block until then).
/// Events are never changed after their commit, so a shared copy is the row as stored.
pub(crate) struct LiveEvents {
    map: dashmap::DashMap<i64, LiveEvent>,
    /// Sweep when the map holds this many entries.
    sweep_at: std::sync::atomic::AtomicUsize,
}

struct LiveEvent {
    id: String,
    received_at_ms: i64,
    event: std::sync::Weak<NormalizedEvent>,
}

/// Entries added between two sweeps of the dead ones.
const LIVE_SWEEP_EVERY: usize = 1024;

impl Default for LiveEvents {
    fn default() -> Self {
        LiveEvents {
            map: dashmap::DashMap::new(),
            sweep_at: std::sync::atomic::AtomicUsize::new(LIVE_SWEEP_EVERY),
        }
    }
}

impl LiveEvents {
    /// The events of `seqs` in that order (missing ones left out, as the store does): those
    /// still held come from memory, and `read` reads the others, which are then remembered.
    pub(crate) async fn events<F, Fut>(
        &self,
        seqs: Vec<i64>,
        read: F,
    ) -> Result<Vec<CommittedEvent>, StoreError>
    where
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<CommittedEvent>, StoreError>>,
    {
        let mut found: HashMap<i64, CommittedEvent> = HashMap::with_capacity(seqs.len());
        let mut missing = Vec::new();
        for &seq in &seqs {
            match self.get(seq) {
                Some(ev) => {
                    found.insert(seq, ev);
                }
                None => missing.push(seq),
            }
        }
        if !missing.is_empty() {
            for ev in read(missing).await? {
                self.remember(&ev);
                found.insert(ev.seq, ev);
            }
        }
        Ok(seqs.iter().filter_map(|s| found.remove(s)).collect())
    }

    /// Encodes `ev` (off the writer), appends it through `send`, and remembers it once
    /// committed: its source routes this very copy.
    pub(crate) async fn append<F, Fut>(
        &self,
        ev: NewEvent,
        raw_body_max: usize,
        send: F,
    ) -> Result<(Appended, Option<i64>), StoreError>
    where
        F: FnOnce(Encoded) -> Fut,
        Fut: std::future::Future<Output = Result<(Appended, Option<i64>), StoreError>>,
    {
        let (event, received_at_ms) = (Arc::clone(&ev.event), ev.received_at_ms);
        let res = send(Encoded::new(ev, raw_body_max)).await;
        if let Ok((appended, Some(seq))) = &res {
            self.remember_new(*seq, &appended.id, received_at_ms, &event);
        }
        res
    }

    fn get(&self, seq: i64) -> Option<CommittedEvent> {
        let live = self.map.get(&seq)?;
        Some(CommittedEvent {
            seq,
            id: live.id.clone(),
            received_at_ms: live.received_at_ms,
            event: live.event.upgrade()?,
        })
    }

    fn remember(&self, ev: &CommittedEvent) {
        self.remember_new(ev.seq, &ev.id, ev.received_at_ms, &ev.event);
    }

    /// Remembers an event: one just appended (its source is about to route that copy), or
    /// one just read (through [`LiveEvents::remember`]). Sweeps the dead entries when due.
    fn remember_new(&self, seq: i64, id: &str, received_at_ms: i64, event: &Arc<NormalizedEvent>) {
        use std::sync::atomic::Ordering;
        self.map.insert(
            seq,
            LiveEvent {
                id: id.to_owned(),
                received_at_ms,
                event: Arc::downgrade(event),
            },
        );
        if self.map.len() >= self.sweep_at.load(Ordering::Relaxed) {
            self.map.retain(|_, e| e.event.strong_count() > 0);
            self.sweep_at
                .store(self.map.len() + LIVE_SWEEP_EVERY, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;
    use crate::model::{EventKind, SourceKind};

    fn committed(seq: i64) -> CommittedEvent {
        CommittedEvent {
            seq,
            id: format!("id-{seq}"),
            received_at_ms: seq,
            event: Arc::new(NormalizedEvent::new(
                SourceKind::Sonarr,
                "sonarr",
                EventKind::Import,
                "Download",
            )),
        }
    }

    #[tokio::test]
    async fn held_events_are_shared_and_dropped_ones_read_again() {
        let live = LiveEvents::default();
        let first = live
            .events(vec![1, 2], |s| async move {
                Ok(s.into_iter().map(committed).collect())
            })
            .await
            .expect("events");
        // Held: the second read shares the same copies and reads nothing.
        let again = live
            .events(vec![2, 1, 3], |s| async move {
                assert_eq!(s, vec![3], "only the event not held is read");
                Ok(Vec::new())
            })
            .await
            .expect("events");
        assert_eq!(again.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);
        assert!(Arc::ptr_eq(&again[1].event, &first[0].event));
        assert_eq!(again[0].id, "id-2");
        // Dropped everywhere: read again.
        drop((first, again));
        let read = live
            .events(vec![1], |s| async move {
                assert_eq!(s, vec![1]);
                Ok(s.into_iter().map(committed).collect())
            })
            .await
            .expect("events");
        assert_eq!(read.len(), 1);
    }

    #[test]
    fn dead_entries_are_swept_as_the_map_grows() {
        let live = LiveEvents::default();
        let kept: Vec<_> = (0..10).map(committed).collect();
        for ev in &kept {
            live.remember(ev);
        }
        for seq in 10..(LIVE_SWEEP_EVERY as i64 * 3) {
            live.remember(&committed(seq));
        }
        assert!(
            live.map.len() <= 10 + LIVE_SWEEP_EVERY,
            "dead entries were swept: {} left",
            live.map.len()
        );
        assert!((0..10).all(|s| live.get(s).is_some()), "held ones stay");
    }
}

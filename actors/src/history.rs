//! The history recorder: batches writes of rejected requests (bounded in the store), and
//! owns retention: of delivery attempts, and of events (with their deliveries and attempts)
//! once they have no pending work, in small batches that give the single SQLite writer back
//! to ingest between them, followed by giving the freed space back to the file system.
//! The attempts themselves (hook, event, attempt number, time, status or error, latency,
//! and 1 KiB excerpts of request and response bodies, secrets redacted by the hook) are
//! written by each target's ordered writer, together with the outcomes they led to
//! (`delivery::shared::WriteOp::Outcomes`): none is dropped, and the memory they take waits
//! within the target's window.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::store::{now_ms, AttemptRetention, EventRetention, Rejection, Store};

/// `[history]`: how long attempts and events are kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Attempts (and finished deliveries) older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most this many attempts are kept; the oldest go first.
    pub max_attempts: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub prune_every: Duration,
    /// Events (raw body, normalised form, deliveries and their attempts) received longer
    /// ago than this are deleted once they have no pending work. At least 1h: the
    /// reconciliation pollers compare against the last hour of events.
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// At most this many events are kept; beyond it the oldest without pending work go.
    pub events_max_count: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_attempts: 1_000_000,
            prune_every: Duration::from_secs(600),
            events_max_age: Duration::from_secs(30 * 24 * 3600),
            events_max_count: 100_000,
        }
    }
}

/// Messages to the history recorder, the only writer of rejections and of attempt retention.
pub enum HistoryMsg {
    /// A refused request to record (buffered, written in batches).
    Rejected(Rejection),
    /// Timer: write what is buffered.
    Flush,
    /// Timer: apply retention (attempts first, then events).
    Prune,
    /// The next batch of attempt retention (sent to itself, like event retention's).
    PruneAttempts(AttemptRun),
    /// The next batch of event retention (sent to itself, so rejections and flushes are
    /// handled between batches).
    PruneEvents(PruneRun),
    /// The next step of giving freed pages back to the file system.
    Compact(PruneRun),
}

/// Progress of one run of attempt retention, carried from batch to batch.
#[derive(Clone, Copy, Debug)]
pub struct AttemptRun {
    rule: AttemptRetention,
    started: std::time::Instant,
    rows: u64,
    batches: u64,
}

/// Progress of one retention run, carried from batch to batch for its log lines.
#[derive(Clone, Copy, Debug)]
pub struct PruneRun {
    rule: EventRetention,
    started: std::time::Instant,
    events: u64,
    batches: u64,
    pages: u64,
}

/// What the history recorder starts with.
#[derive(Clone)]
pub struct HistoryArgs {
    /// Where rejections are written and retention is applied.
    pub store: Arc<dyn Store>,
    /// Retention limits and how often they run.
    pub cfg: HistoryConfig,
    /// Where pruned events are counted (`relayarr_events_pruned_total`).
    pub metrics: Arc<Metrics>,
}

/// The recorder's state: rejections buffered for the next write, and how many a flood dropped.
pub struct HistoryState {
    store: Arc<dyn Store>,
    cfg: HistoryConfig,
    metrics: Arc<Metrics>,
    /// A retention run is under way: a timer tick does not start another.
    pruning: bool,
    rejections: Vec<Rejection>,
    dropped: u64,
}

const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A flood must not grow memory: beyond this many buffered rows, new ones are counted only.
const BUFFER_MAX: usize = 20_000;
/// Events deleted per transaction. With SQLite one writer serves ingest too, and a batch
/// of small events deletes in a few milliseconds, so a webhook waits at most that long.
const PRUNE_BATCH: usize = 200;
/// Attempts (and finished deliveries) deleted per transaction. An attempt carries two
/// 1 KiB excerpts; deleting 250,000 at once held the writer for over a second.
const ATTEMPT_PRUNE_BATCH: usize = 2_000;
/// Pages (4 KiB) given back per compaction step: 2 MiB. Moving pages rewrites them and
/// their parents: in the soak an 8 MiB step held the writer for 50-90 ms.
const COMPACT_PAGES: u64 = 512;
/// The writer is left to ingest for at least this long between two batches...
const PRUNE_PAUSE: Duration = Duration::from_millis(20);
/// ...and for this many times as long as the last batch took, so that retention takes at
/// most a fifth of the writer's time however slow a batch gets.
const PRUNE_PAUSE_FACTOR: u32 = 4;

/// The pause after a batch that took `took`.
fn prune_pause(took: Duration) -> Duration {
    PRUNE_PAUSE.max(took.saturating_mul(PRUNE_PAUSE_FACTOR))
}

/// The cutoff of a retention run started at `now_ms`: `max_age` before it.
pub fn cutoff_ms(now_ms: i64, max_age: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX))
}

/// The history recorder actor (`history` in the tree).
#[derive(Clone, Debug, Default)]
pub struct HistoryActor;

impl HistoryActor {
    async fn flush(st: &mut HistoryState) {
        if st.dropped > 0 {
            tracing::warn!(
                dropped = st.dropped,
                "history buffer was full; rows not recorded"
            );
            st.dropped = 0;
        }
        if !st.rejections.is_empty() {
            let rows = std::mem::take(&mut st.rejections);
            let n = rows.len();
            if let Err(error) = st.store.record_rejections(rows.clone()).await {
                // A full disk or a locked store: keep them for the next flush (the buffer
                // stays bounded: what arrived meanwhile is dropped first, and counted).
                tracing::warn!(%error, rejections = n, "could not record rejections; retrying at the next flush");
                let mut kept = rows;
                kept.append(&mut st.rejections);
                if kept.len() > BUFFER_MAX {
                    st.dropped += (kept.len() - BUFFER_MAX) as u64;
                    kept.truncate(BUFFER_MAX);
                }
                st.rejections = kept;
            }
        }
    }

    fn buffered(st: &HistoryState) -> usize {
        st.rejections.len()
    }
}

impl Actor for HistoryActor {
    type Msg = HistoryMsg;
    type State = HistoryState;
    type Arguments = HistoryArgs;

    async fn pre_start(
        &self,
        me: ActorRef<HistoryMsg>,
        args: HistoryArgs,
    ) -> Result<HistoryState, ActorProcessingErr> {
        me.send_interval(FLUSH_EVERY, || HistoryMsg::Flush);
        me.send_interval(args.cfg.prune_every, || HistoryMsg::Prune);
        Ok(HistoryState {
            store: args.store,
            cfg: args.cfg,
            metrics: args.metrics,
            pruning: false,
            rejections: Vec::new(),
            dropped: 0,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<HistoryMsg>,
        msg: HistoryMsg,
        st: &mut HistoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HistoryMsg::Rejected(r) if Self::buffered(st) < BUFFER_MAX => st.rejections.push(r),
            HistoryMsg::Rejected(_) => st.dropped += 1,
            HistoryMsg::Flush => Self::flush(st).await,
            HistoryMsg::Prune if st.pruning => {}
            HistoryMsg::Prune => {
                st.pruning = true;
                let run = AttemptRun {
                    rule: AttemptRetention {
                        older_than_ms: cutoff_ms(now_ms(), st.cfg.retention),
                        keep_max: st.cfg.max_attempts,
                        batch: ATTEMPT_PRUNE_BATCH,
                    },
                    started: std::time::Instant::now(),
                    rows: 0,
                    batches: 0,
                };
                let _ = me.cast(HistoryMsg::PruneAttempts(run));
            }
            HistoryMsg::PruneAttempts(mut run) => {
                let began = std::time::Instant::now();
                let result = st.store.prune_attempts(run.rule).await;
                let pause = prune_pause(began.elapsed());
                match result {
                    Ok(pruned) => {
                        run.rows += pruned.rows;
                        run.batches += 1;
                        if pruned.more {
                            if run.batches.is_multiple_of(50) {
                                tracing::info!(
                                    deleted = run.rows,
                                    batches = run.batches,
                                    "history retention in progress"
                                );
                            }
                            me.send_after(pause, move || HistoryMsg::PruneAttempts(run));
                            return Ok(());
                        }
                        if run.rows > 0 {
                            tracing::info!(
                                deleted = run.rows,
                                batches = run.batches,
                                took_ms = u64::try_from(run.started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX),
                                "history retention applied"
                            );
                        }
                    }
                    // Event retention still runs: it does not depend on this one.
                    Err(error) => {
                        tracing::error!(%error, deleted = run.rows, "history retention failed; retried at the next run")
                    }
                }
                let run = PruneRun {
                    rule: EventRetention {
                        older_than_ms: cutoff_ms(now_ms(), st.cfg.events_max_age),
                        keep_max: st.cfg.events_max_count,
                        batch: PRUNE_BATCH,
                        after_seq: 0,
                    },
                    started: std::time::Instant::now(),
                    events: 0,
                    batches: 0,
                    pages: 0,
                };
                let _ = me.cast(HistoryMsg::PruneEvents(run));
            }
            HistoryMsg::PruneEvents(mut run) => {
                let began = std::time::Instant::now();
                let result = st.store.prune_events(run.rule).await;
                let pause = prune_pause(began.elapsed());
                match result {
                    Ok(pruned) => {
                        let n = pruned.events;
                        // The next batch starts after this one: events passed over because
                        // they still had work are not scanned again in this run.
                        run.rule.after_seq = pruned.last_seq;
                        run.events += n;
                        run.batches += 1;
                        st.metrics.events_pruned.add(&[], n);
                        if pruned.more {
                            if run.batches.is_multiple_of(50) {
                                tracing::info!(
                                    pruned = run.events,
                                    batches = run.batches,
                                    "event retention in progress"
                                );
                            }
                            me.send_after(pause, move || HistoryMsg::PruneEvents(run));
                        } else if run.events > 0 {
                            let _ = me.cast(HistoryMsg::Compact(run));
                        } else {
                            st.pruning = false;
                        }
                    }
                    Err(error) => {
                        st.pruning = false;
                        tracing::error!(%error, pruned = run.events, "event retention failed; retried at the next run");
                    }
                }
            }
            HistoryMsg::Compact(mut run) => {
                let began = std::time::Instant::now();
                match st.store.compact(COMPACT_PAGES).await {
                    Ok(c) if c.pages_left > 0 && c.pages_freed > 0 => {
                        run.pages += c.pages_freed;
                        // Moving pages is write-heavy: the same share of the writer as pruning.
                        let pause = prune_pause(began.elapsed());
                        me.send_after(pause, move || HistoryMsg::Compact(run));
                        return Ok(());
                    }
                    Ok(c) => {
                        run.pages += c.pages_freed;
                        tracing::info!(
                            pruned = run.events,
                            batches = run.batches,
                            pages_freed = run.pages,
                            file_bytes = c.file_bytes,
                            took_ms = u64::try_from(run.started.elapsed().as_millis())
                                .unwrap_or(u64::MAX),
                            "event retention applied"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, pruned = run.events, "could not give freed space back; retried after the next run")
                    }
                }
                st.pruning = false;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<HistoryMsg>,
        st: &mut HistoryState,
    ) -> Result<(), ActorProcessingErr> {
        Self::flush(st).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_prune_batch_is_followed_by_a_longer_pause() {
        // Quick batches: the floor.
        assert_eq!(prune_pause(Duration::from_millis(1)), PRUNE_PAUSE);
        // A 250 ms batch (a scan past much pending work) leaves the writer 1 s: retention
        // takes at most a fifth of it.
        assert_eq!(
            prune_pause(Duration::from_millis(250)),
            Duration::from_secs(1)
        );
    }
}

//! The history recorder: batches writes of rejected requests (bounded in the store), and
//! owns the retention of delivery attempts. The attempts themselves (hook, event, attempt
//! number, time, status or error, latency, and 1 KiB excerpts of request and response
//! bodies, secrets redacted by the hook) are written by each target's ordered writer,
//! together with the outcomes they led to (`delivery::shared::WriteOp::Outcomes`): none is
//! dropped, and the memory they take waits within the target's window.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::store::{now_ms, Rejection, Store};

/// `[history]`: how long attempts are kept.
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
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(30 * 24 * 3600),
            max_attempts: 1_000_000,
            prune_every: Duration::from_secs(600),
        }
    }
}

/// Messages to the history recorder, the only writer of rejections and of attempt retention.
pub enum HistoryMsg {
    /// A refused request to record (buffered, written in batches).
    Rejected(Rejection),
    /// Timer: write what is buffered.
    Flush,
    /// Timer: apply retention.
    Prune,
}

/// What the history recorder starts with.
#[derive(Clone)]
pub struct HistoryArgs {
    /// Where rejections are written and retention is applied.
    pub store: Arc<dyn Store>,
    /// Retention limits and how often they run.
    pub cfg: HistoryConfig,
}

/// The recorder's state: rejections buffered for the next write, and how many a flood dropped.
pub struct HistoryState {
    store: Arc<dyn Store>,
    cfg: HistoryConfig,
    rejections: Vec<Rejection>,
    dropped: u64,
}

const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A flood must not grow memory: beyond this many buffered rows, new ones are counted only.
const BUFFER_MAX: usize = 20_000;

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
            if let Err(error) = st.store.record_rejections(rows).await {
                tracing::error!(%error, "could not record rejections");
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
            rejections: Vec::new(),
            dropped: 0,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<HistoryMsg>,
        msg: HistoryMsg,
        st: &mut HistoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HistoryMsg::Rejected(r) if Self::buffered(st) < BUFFER_MAX => st.rejections.push(r),
            HistoryMsg::Rejected(_) => st.dropped += 1,
            HistoryMsg::Flush => Self::flush(st).await,
            HistoryMsg::Prune => {
                let cutoff =
                    now_ms() - i64::try_from(st.cfg.retention.as_millis()).unwrap_or(i64::MAX / 2);
                match st.store.prune_attempts(cutoff, st.cfg.max_attempts).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "history retention applied"),
                    Err(error) => tracing::error!(%error, "history retention failed"),
                }
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

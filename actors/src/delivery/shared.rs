//! What a target keeps across restarts of its worker, and its ordered writer.
//!
//! A worker that panics is replaced by a new incarnation, but the requests the old one
//! started keep running. They are counted here (`in_flight`), so the new incarnation never
//! exceeds the cap and never reloads a row that is still being sent; their results arrive
//! on a channel that lives here too, so the new incarnation records them. The rate limiter
//! and the limits live here as well: a restart admits no fresh burst and loses no runtime
//! change that is still on its way to the store.
//!
//! The writer is one task per target that performs the target's store work in order:
//! outcomes (retried until they are written, never dropped), replays, saved limits, and
//! loads of pending rows. A load therefore runs after every outcome queued before it, so it
//! never returns a row whose outcome is still being written as if it were pending.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, RateLimiter};
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::share::Share;
use super::worker::WorkerMsg;
use super::{AttemptClass, AttemptResult, Job, Rate};
use crate::store::{
    now_ms, Attempt, Delivery, DeliveryUpdate, HookOverrides, ReplayScope, Store, StoreError,
};

/// A finished attempt, waiting for the worker to record it.
pub struct Finished {
    /// The delivery that was attempted.
    pub job: Job,
    /// Deliveries of the same debounce group that this attempt covered.
    pub riders: Vec<crate::store::Delivery>,
    /// How the executor classified the attempt.
    pub class: AttemptClass,
    /// What the attempt did, for the history.
    pub result: AttemptResult,
}

/// A bounded set of ids, forgetting the oldest first.
#[derive(Debug)]
pub struct RecentIds {
    order: VecDeque<i64>,
    set: HashSet<i64>,
    cap: usize,
}

impl Default for RecentIds {
    fn default() -> Self {
        // Far more than can finish between a row's commit and the router's hint about it.
        RecentIds::new(8192)
    }
}

impl RecentIds {
    /// An empty set that keeps at most `cap` ids (at least one).
    pub fn new(cap: usize) -> Self {
        RecentIds {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// Adds an id, forgetting the oldest when over the cap.
    pub fn insert(&mut self, id: i64) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// True when the id was inserted and not forgotten since.
    pub fn contains(&self, id: i64) -> bool {
        self.set.contains(&id)
    }
}

/// Runtime limits of a target (tunable through the admin API, persisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The cap on requests in flight, across all instances.
    pub max_in_flight: NonZeroU32,
    /// Requests per period, none when unlimited.
    pub rate: Option<Rate>,
    /// Requests the rate admits at once.
    pub burst: NonZeroU32,
    /// Whether the target starts deliveries.
    pub enabled: bool,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
}

/// Counters shown in the admin API; they survive restarts of the worker.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Deliveries that succeeded.
    pub succeeded: u64,
    /// Deliveries that failed for good.
    pub failed: u64,
    /// Attempts scheduled for a retry.
    pub retried: u64,
    /// Attempts made.
    pub attempts: u64,
    /// Failed attempts in a row, counted toward auto-disable.
    pub consecutive_failures: u32,
    /// Why work is blocked (a configuration problem), while it is.
    pub blocked: Option<String>,
}

/// A target's mutable state shared by its worker incarnations and its writer, behind
/// [`Shared::lock`].
#[derive(Default)]
pub struct SharedState {
    /// Deliveries with a request running, whichever incarnation started it.
    pub in_flight: HashSet<i64>,
    /// Deliveries riding along with one in flight (same debounce group).
    pub riding: HashSet<i64>,
    /// Deliveries whose outcome is decided but not yet written.
    pub unwritten: HashSet<i64>,
    /// Written outcomes the worker has not yet seen (it may have been restarting), each
    /// with the number of the write that stored it.
    pub flushed: Vec<(u64, i64)>,
    /// How many outcome writes have completed. A load records it before its query, so the
    /// worker knows which written outcomes that load already reflects.
    pub writes_done: u64,
    /// Deliveries whose outcome was written recently (bounded, oldest dropped first). A
    /// `Deliver` from the router is only a hint that a row exists: a tick's load may have
    /// found the row, sent it and recorded it before the hint arrived, and such a late hint
    /// must not send it again.
    pub recently_done: RecentIds,
    /// The limits in force, once the worker has loaded its saved overrides.
    pub limits: Option<Limits>,
    /// This instance's share of the limits (instances sharing one database split them).
    pub share: Share,
    /// The rate limiter for this instance's share of the rate; none when unlimited.
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Counters for the admin API.
    pub counters: Counters,
}

impl SharedState {
    /// Whether the delivery is in flight, riding along, or waiting for its outcome to be written.
    pub fn busy(&self, id: i64) -> bool {
        self.in_flight.contains(&id) || self.riding.contains(&id) || self.unwritten.contains(&id)
    }

    /// Outcomes written by writes numbered up to `upto` are no longer busy: those rows may
    /// be loaded again (as retries). A row whose outcome was written after a load's query
    /// may still be in that load's page as pending, and must stay busy for it.
    pub fn forget_flushed(&mut self, upto: u64) {
        let flushed = std::mem::take(&mut self.flushed);
        let (done, later): (Vec<_>, Vec<_>) = flushed.into_iter().partition(|(n, _)| *n <= upto);
        self.flushed = later;
        for (_, id) in done {
            self.unwritten.remove(&id);
            self.recently_done.insert(id);
        }
    }

    /// Busy, or finished a moment ago: what a new delivery handed over by the router or the
    /// debouncer is checked against.
    pub fn busy_or_done(&self, id: i64) -> bool {
        self.busy(id) || self.recently_done.contains(id)
    }

    /// How many requests this instance may have in flight: its share of the cap, or 0 when
    /// its share of the rate is nothing (the other instances have it all).
    pub fn effective_cap(&self) -> u32 {
        let Some(l) = &self.limits else { return 0 };
        if l.rate.is_some_and(|r| self.share.rate(r).is_none()) {
            return 0;
        }
        self.share.split(l.max_in_flight.get())
    }

    /// Rebuilds the limiter for the current limits. A swapped-in limiter is pre-drained
    /// (`drain`): a fresh governor limiter admits a full burst at once, which would let a
    /// runtime change exceed the new rate.
    pub fn rebuild_limiter(&mut self, drain: bool) {
        let Some(l) = &self.limits else { return };
        let share = self.share;
        let burst = NonZeroU32::new(share.split(l.burst.get())).unwrap_or(NonZeroU32::MIN);
        self.limiter = l.rate.and_then(|r| share.rate(r)).map(|r| {
            let limiter = RateLimiter::direct(r.quota(Some(burst)));
            if drain {
                let _ = limiter.check_n(burst);
            }
            Arc::new(limiter)
        });
    }
}

/// One store operation of a target, performed in order by its writer.
pub enum WriteOp {
    /// Outcomes, and the attempts that led to them (recorded first). Carried here rather
    /// than through a separate recorder, every attempt is written (never dropped when a
    /// buffer is full), and the window's count of unwritten rows holds them back: the memory
    /// they take is bounded by the window, however slow the store is.
    Outcomes(Vec<DeliveryUpdate>, Vec<Attempt>),
    /// Save runtime limits and the enabled state.
    Overrides(HookOverrides),
    /// Make deliveries pending again; the ids go back to the worker as `Replayed`.
    Requeue(ReplayScope, Option<RpcReplyPort<Result<usize, String>>>),
    /// Load up to this many due rows; they go back to the worker as `Loaded`.
    Load(usize),
    /// Hand this instance's claims on the target's pending rows back (its share is 0).
    Release,
    /// Answered once every operation before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// State of one target that outlives its worker's incarnations. Held in the worker's
/// arguments, which the supervisor keeps for restarts.
pub struct Shared {
    /// The stored target name.
    pub target: String,
    /// The worker's registered actor name (looked up on every use: it changes on restart).
    pub actor: String,
    state: Mutex<SharedState>,
    results_tx: mpsc::UnboundedSender<Finished>,
    results_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished>>,
    writer: OnceLock<mpsc::UnboundedSender<WriteOp>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("target", &self.target)
            .finish()
    }
}

impl Shared {
    /// The shared state of a target, with its results channel; its writer task starts with the
    /// first write.
    pub fn new(target: impl Into<String>, actor: impl Into<String>) -> Arc<Self> {
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Arc::new(Shared {
            target: target.into(),
            actor: actor.into(),
            state: Mutex::new(SharedState::default()),
            results_tx,
            results_rx: tokio::sync::Mutex::new(results_rx),
            writer: OnceLock::new(),
        })
    }

    /// Locks the state, recovering it from a poisoned lock.
    pub fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many requests are in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Where finished attempts go; any incarnation may send.
    pub fn results(&self) -> mpsc::UnboundedSender<Finished> {
        self.results_tx.clone()
    }

    /// Where the worker reads finished attempts (one reader at a time).
    pub fn results_rx(&self) -> &tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished>> {
        &self.results_rx
    }

    /// Tells the current incarnation, whichever it is.
    pub fn notify(&self, msg: WorkerMsg) {
        if let Some(w) = ActorRef::<WorkerMsg>::where_is(self.actor.clone()) {
            let _ = w.cast(msg);
        }
    }

    /// Queues a store operation. The writer task starts with the first one.
    pub fn write(self: &Arc<Self>, store: &Arc<dyn Store>, op: WriteOp) {
        let tx = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_writer(Arc::downgrade(self), Arc::clone(store), rx));
            tx
        });
        if tx.send(op).is_err() {
            tracing::error!(target_name = %self.target, "delivery writer is gone; the operation is dropped");
        }
    }
}

/// First delay after a failed write; doubles up to [`WRITE_RETRY_MAX`].
const WRITE_RETRY_BASE: Duration = Duration::from_millis(50);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Retries a write until it succeeds or the store is closed (shutdown: the rows stay pending,
/// and are delivered again after the next start, with the same id). Dropping an outcome
/// would resend a delivery that already succeeded.
async fn until_written<T, F, Fut>(target: &str, what: &str, mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = WRITE_RETRY_BASE;
    let mut failures = 0u32;
    loop {
        match f().await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(target_name = %target, what, failures, "store write succeeded after retries");
                }
                return Ok(v);
            }
            Err(StoreError::Closed) => return Err(StoreError::Closed),
            Err(error) => {
                failures += 1;
                tracing::warn!(target_name = %target, what, %error, failures, retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
}

async fn run_writer(
    shared: Weak<Shared>,
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
) {
    let mut next: Option<WriteOp> = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        let Some(sh) = shared.upgrade() else { return };
        let target = sh.target.clone();
        match op {
            WriteOp::Outcomes(mut updates, mut attempts) => {
                // Consecutive outcome batches become one write.
                while let Ok(op) = rx.try_recv() {
                    match op {
                        WriteOp::Outcomes(more, more_attempts) => {
                            updates.extend(more);
                            attempts.extend(more_attempts);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let ids: Vec<i64> = updates.iter().map(DeliveryUpdate::id).collect();
                // Never an outcome without the attempt behind it (see `record_outcomes`).
                let res = until_written(&target, "delivery outcomes", || {
                    store.record_outcomes(updates.clone(), attempts.clone())
                })
                .await;
                if let Err(error) = res {
                    tracing::warn!(target_name = %target, %error, outcomes = ids.len(), "outcomes not recorded; those deliveries will be sent again after a restart");
                    continue;
                }
                {
                    let mut st = sh.lock();
                    st.writes_done += 1;
                    let n = st.writes_done;
                    st.flushed.extend(ids.into_iter().map(|id| (n, id)));
                }
                sh.notify(WorkerMsg::Flushed);
            }
            WriteOp::Overrides(state) => {
                let res = until_written(&target, "target limits", || {
                    store.save_hook_overrides(state.clone())
                })
                .await;
                if let Err(error) = res {
                    tracing::error!(target_name = %target, %error, "could not persist the target's limits");
                }
            }
            WriteOp::Requeue(scope, reply) => {
                let res = store.requeue_deliveries(&target, scope).await;
                match res {
                    Ok(ids) => {
                        if let Some(r) = reply {
                            let _ = r.send(Ok(ids.len()));
                        }
                        sh.notify(WorkerMsg::Replayed(ids));
                    }
                    Err(error) => {
                        tracing::error!(target_name = %target, %error, "replay failed");
                        if let Some(r) = reply {
                            let _ = r.send(Err(error.to_string()));
                        }
                    }
                }
            }
            WriteOp::Load(limit) => {
                let seen = sh.lock().writes_done;
                let jobs = match store.due_deliveries(&target, now_ms(), limit).await {
                    Ok(rows) => with_events(&store, &target, rows).await,
                    Err(error) => {
                        tracing::error!(target_name = %target, %error, "could not load pending deliveries");
                        Vec::new()
                    }
                };
                sh.notify(WorkerMsg::Loaded(jobs, limit, seen));
            }
            WriteOp::Release => {
                if let Err(error) = store.release_claims(&target).await {
                    tracing::warn!(target_name = %target, %error, "could not release this instance's claims; they lapse with its lease");
                }
            }
            WriteOp::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// A loaded page as jobs, with the events of its deliveries read in one query. Without
/// them every attempt of a delivery that went through the store (its window was full, or
/// it is a retry) read its own event first: one blocking read per delivery, which held a
/// backlog's drain to a third of what the same deliveries reach straight from the router.
/// A grouped delivery merges its events when its attempt starts; if this read fails, each
/// attempt reads its own event and reports what went wrong.
async fn with_events(store: &Arc<dyn Store>, target: &str, rows: Vec<Delivery>) -> Vec<Job> {
    let seqs: Vec<i64> = rows
        .iter()
        .filter(|d| d.group.is_none())
        .map(|d| d.event_seq)
        .collect();
    let mut events = HashMap::with_capacity(seqs.len());
    if !seqs.is_empty() {
        match store.events_by_seq(seqs).await {
            Ok(found) => events.extend(found.into_iter().map(|e| (e.seq, e.event))),
            Err(error) => {
                tracing::warn!(target_name = %target, %error, "could not read the events of loaded deliveries; each attempt reads its own")
            }
        }
    }
    rows.into_iter()
        .map(|delivery| Job {
            event: match delivery.group {
                None => events.get(&delivery.event_seq).cloned(),
                Some(_) => None,
            },
            delivery,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest_first() {
        let mut r = RecentIds::new(3);
        for id in [1, 2, 3, 2, 4] {
            r.insert(id);
        }
        assert!(!r.contains(1), "the oldest of four went first");
        assert!([2, 3, 4].iter().all(|id| r.contains(*id)));
    }

    /// The race behind a duplicate send: a tick's load finds a row the router just committed,
    /// the worker sends it and its outcome is written and forgotten, and only then does the
    /// router's hint for that row arrive. A load may return the row again (a retry), the hint
    /// must not.
    #[test]
    fn a_late_hint_for_a_finished_row_is_refused() {
        let mut sh = SharedState::default();
        sh.in_flight.insert(7);
        sh.in_flight.remove(&7);
        sh.unwritten.insert(7);
        sh.flushed.push((1, 7));
        sh.forget_flushed(0);
        assert!(sh.busy(7), "written after the load's query: still busy");
        sh.forget_flushed(1);
        assert!(!sh.busy(7), "a later load may return it as a retry");
        assert!(sh.busy_or_done(7), "a hint from the router may not");
        assert!(!sh.busy_or_done(8));
    }
}

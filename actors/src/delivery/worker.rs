//! The delivery worker: one supervised actor per target. It holds a bounded window of the
//! target's pending deliveries, starts at most `max_in_flight` requests (never faster than
//! `rate`), and never awaits a request in `handle`: each attempt runs in a spawned task that
//! reports through the target's [`Shared`] results channel, so the mailbox keeps answering
//! limit changes and stats while requests hang. Everything not in the window stays in the
//! store; a restarted worker rebuilds its window from there.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::outcome::{decide, Context, Tally};
use super::share::Share;
use super::shared::{Finished, Limits, Shared, WriteOp};
use super::window::{may_start, Window, WINDOW};
use super::{Executor, Job, Rate, TargetPolicy, TargetStats};
use crate::store::{now_ms, Attempt, Delivery, HookOverrides, ReplayScope, Store};
use crate::system::Names;

/// How often the worker looks in the store for due retries and overflow.
const TICK: Duration = Duration::from_millis(500);

/// Messages to a delivery worker, the only writer of its target's delivery rows.
pub enum WorkerMsg {
    /// New deliveries from the router or the debouncer (already committed, claimed by this
    /// instance), and the lease epoch read before they were claimed (see
    /// [`crate::store::Membership::lease`]).
    Deliver(Vec<Job>, Option<u64>),
    /// Look in the store for due deliveries.
    Wake,
    /// Start what the limits allow.
    Pump,
    /// Attempts finished: their results wait in the shared channel.
    Reap,
    /// Outcomes reached the store.
    Flushed,
    /// Deliveries loaded from the store, how many were asked for, and how many outcome
    /// writes had completed before the query (the load reflects those, and no later one).
    Loaded(Vec<Job>, usize, u64),
    /// A replay made these deliveries pending again.
    Replayed(Vec<i64>),
    /// Replay this target's deliveries in scope; answers how many were re-queued.
    Replay(ReplayScope, RpcReplyPort<Result<usize, String>>),
    /// Change limits at runtime (persisted). `rate: Some(None)` removes the rate limit.
    SetLimits {
        /// The new cap, if it changes.
        max_in_flight: Option<NonZeroU32>,
        /// The new rate, if it changes.
        rate: Option<Option<Rate>>,
        /// The new burst, if it changes.
        burst: Option<NonZeroU32>,
        /// Answered with the stats after the change.
        reply: RpcReplyPort<TargetStats>,
    },
    /// Enable or disable the target (persisted); answered with the stats.
    SetEnabled(bool, RpcReplyPort<TargetStats>),
    /// Answered with the target's stats.
    Stats(RpcReplyPort<TargetStats>),
    /// Shutdown: start nothing new; answered once nothing is in flight.
    Drain(RpcReplyPort<()>),
    /// The live instances changed: this instance's share of the limits.
    SetShare(Share),
    /// Fault injection for supervision tests and chaos drills.
    InjectPanic,
}

/// What a delivery worker starts with (kept by its supervisor for restarts).
#[derive(Clone)]
pub struct WorkerArgs {
    /// The target's configured policy.
    pub policy: Arc<TargetPolicy>,
    /// `hook` or `plex`, for the admin API and logs.
    pub kind: &'static str,
    /// Performs attempts for this kind of target.
    pub executor: Arc<dyn Executor>,
    /// Where delivery rows, attempts and overrides are read and written.
    pub store: Arc<dyn Store>,
    /// Registry names.
    pub names: Names,
    /// State that outlives this worker's incarnations.
    pub shared: Arc<Shared>,
    /// Delivery counters and attempt latencies.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A worker's state: its window, its timers and its drain.
pub struct WorkerState {
    args: WorkerArgs,
    window: Window,
    /// A load is on its way: the lease epoch it was asked under (a load is asked for only
    /// while the lease holds).
    loading: Option<u64>,
    pump_scheduled: bool,
    /// The earliest pending retry timer: one timer per target, not one per delivery.
    next_wake: Option<tokio::time::Instant>,
    /// Stopping: finish what is in flight, start nothing new.
    draining: bool,
    drain_waiters: Vec<RpcReplyPort<()>>,
    /// In-flight deliveries that a replay asked for again.
    replay_after: HashSet<i64>,
    /// The lease epoch the window's rows were claimed under; `None` while the lease may
    /// have lapsed (the window is empty then).
    held: Option<u64>,
}

/// The delivery worker actor (`hook:NAME` or `plex:NAME` in the tree).
#[derive(Clone, Debug, Default)]
pub struct DeliveryWorker;

impl WorkerState {
    fn name(&self) -> &str {
        &self.args.policy.name
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.args.shared
    }

    fn write(&self, op: WriteOp) {
        self.args.shared.write(&self.args.store, op);
    }

    fn limits(&self) -> Limits {
        self.shared()
            .lock()
            .limits
            .clone()
            .unwrap_or_else(|| defaults(&self.args.policy))
    }

    fn stats(&self) -> TargetStats {
        let sh = self.shared().lock();
        let l = sh
            .limits
            .clone()
            .unwrap_or_else(|| defaults(&self.args.policy));
        TargetStats {
            name: self.name().to_owned(),
            kind: self.args.kind,
            enabled: l.enabled,
            disabled_reason: l.disabled_reason.clone(),
            max_in_flight: l.max_in_flight.get(),
            rate: l.rate.map(|r| r.to_string()),
            burst: l.burst.get(),
            // 0 while this instance is fenced (its heartbeat lapsed).
            instances: if sh.share == Share::fenced() {
                0
            } else {
                sh.share.of
            },
            max_in_flight_here: sh.effective_cap(),
            in_flight: sh.in_flight.len(),
            queued: self.window.len(),
            succeeded: sh.counters.succeeded,
            failed: sh.counters.failed,
            retried: sh.counters.retried,
            attempts: sh.counters.attempts,
            consecutive_failures: sh.counters.consecutive_failures,
            blocked: sh.counters.blocked.clone(),
            draining: self.draining,
        }
    }

    /// Persists the limits through the ordered writer, so the last change always wins.
    fn save_limits(&self) {
        let l = self.limits();
        self.write(WriteOp::Overrides(HookOverrides {
            hook: self.name().to_owned(),
            enabled: Some(l.enabled),
            disabled_reason: l.disabled_reason,
            max_in_flight: Some(l.max_in_flight.get()),
            rate: Some(l.rate.map(|r| r.to_string()).unwrap_or_default()),
            burst: Some(l.burst.get()),
        }));
    }

    /// Wakes the worker after `delay` (to load a retry when it is due), unless an earlier
    /// wake-up is already scheduled. The periodic tick covers anything later.
    fn wake_at(&mut self, me: &ActorRef<WorkerMsg>, delay: Duration) {
        let now = tokio::time::Instant::now();
        let at = now + delay;
        if self.next_wake.is_some_and(|w| w > now && w <= at) {
            return;
        }
        self.next_wake = Some(at);
        me.send_after(delay, || WorkerMsg::Wake);
    }

    /// Pumps again after `wait` (a rate or the yield gate said not yet), unless a pump is
    /// already scheduled.
    fn pump_after(&mut self, me: &ActorRef<WorkerMsg>, wait: Duration) {
        if !self.pump_scheduled {
            self.pump_scheduled = true;
            me.send_after(wait, || WorkerMsg::Pump);
        }
    }

    fn disable(&mut self, reason: String) {
        {
            let mut sh = self.shared().lock();
            let mut l = sh
                .limits
                .clone()
                .unwrap_or_else(|| defaults(&self.args.policy));
            if !l.enabled {
                return;
            }
            l.enabled = false;
            l.disabled_reason = Some(reason.clone());
            sh.limits = Some(l);
        }
        tracing::error!(target_name = %self.name(), %reason, "target disabled; its deliveries stay pending until it is enabled again");
        self.save_limits();
    }

    fn answer_drain(&mut self) {
        if self.draining && self.shared().in_flight() == 0 {
            for w in self.drain_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

fn defaults(p: &TargetPolicy) -> Limits {
    Limits {
        max_in_flight: p.max_in_flight,
        rate: p.rate,
        burst: p.burst.unwrap_or(NonZeroU32::MIN),
        enabled: p.enabled,
        disabled_reason: None,
    }
}

impl DeliveryWorker {
    /// Reads this instance's lease. Once it may have lapsed, or a heartbeat landed after it
    /// did (a new epoch), the rows in the window may belong to another instance: they are
    /// dropped, and loaded again under the new epoch (the store returns only rows still
    /// claimed by this instance, or free). Returns the epoch, `None` while lapsed.
    fn check_lease(st: &mut WorkerState) -> Option<u64> {
        let now = st.args.store.lease();
        if now != st.held {
            let dropped = st.window.len();
            if st.held.is_some() || dropped > 0 {
                match now {
                    None => {
                        tracing::warn!(target_name = %st.name(), dropped, "this instance's lease may have lapsed: starting nothing, and dropping the queued deliveries (other instances may take them over)")
                    }
                    Some(_) => {
                        tracing::warn!(target_name = %st.name(), dropped, "this instance's lease lapsed and was renewed: loading its deliveries again")
                    }
                }
            }
            st.window = Window::new(WINDOW);
            st.held = now;
        }
        now
    }

    /// Whether rows claimed under lease epoch `epoch` may be queued: it is the epoch that
    /// holds now. If not, the lease lapsed since they were claimed; they are not queued
    /// (they stay in the store, for this instance's next load if still its own), and that
    /// load is asked for.
    fn still_held(st: &mut WorkerState, epoch: Option<u64>) -> bool {
        if epoch.is_some() && epoch == Self::check_lease(st) {
            return true;
        }
        st.window.mark_overflow();
        Self::load(st);
        false
    }

    fn pump(me: &ActorRef<WorkerMsg>, st: &mut WorkerState) {
        if Self::check_lease(st).is_none() {
            return;
        }
        while !st.window.is_empty() {
            let (limiter, cap, enabled, in_flight, unwritten) = {
                let sh = st.shared().lock();
                let enabled = sh.limits.as_ref().is_none_or(|l| l.enabled);
                (
                    sh.limiter.clone(),
                    sh.effective_cap(),
                    enabled,
                    sh.in_flight.len(),
                    sh.unwritten.len(),
                )
            };
            // Backpressure from the store: finished attempts wait in memory until their
            // outcomes are written, so a target whose writes lag a whole window behind starts
            // nothing more until they catch up (`Flushed` pumps again).
            if !may_start(in_flight, cap, enabled, st.draining) || unwritten >= WINDOW {
                break;
            }
            if let Err(wait) = st.args.metrics.yield_gate.admit() {
                st.pump_after(me, wait);
                break;
            }
            if let Some(l) = limiter {
                if let Err(not_until) = l.check() {
                    st.pump_after(me, not_until.wait_time_from(DefaultClock::default().now()));
                    break;
                }
            }
            let Some(mut job) = st.window.pop() else {
                break;
            };
            let riders = Self::riders(st, &mut job);
            {
                let mut sh = st.shared().lock();
                sh.in_flight.insert(job.delivery.id);
                sh.riding.extend(riders.iter().map(|d| d.id));
                sh.counters.attempts += 1;
            }
            let executor = Arc::clone(&st.args.executor);
            let shared = Arc::clone(st.shared());
            tokio::spawn(async move {
                let (class, result) = executor.attempt(&job).await;
                // The results channel belongs to the target, not to this incarnation: after a
                // restart the new worker records this outcome.
                let _ = shared.results().send(Finished {
                    job,
                    riders,
                    class,
                    result,
                });
                shared.notify(WorkerMsg::Reap);
            });
        }
        if st.window.overflow() && st.window.wants_load() {
            Self::load(st);
        }
    }

    /// Queued deliveries of the same debounce group ride along with `job`: its attempt covers
    /// their events too, and its outcome is theirs.
    fn riders(st: &mut WorkerState, job: &mut Job) -> Vec<Delivery> {
        let Some(group) = job.delivery.group.as_mut() else {
            return Vec::new();
        };
        let riders: Vec<Delivery> = st
            .window
            .take_same_group(&group.key)
            .into_iter()
            .map(|j| j.delivery)
            .collect();
        for r in &riders {
            for seq in r.group.iter().flat_map(|g| g.seqs.iter()) {
                if !group.seqs.contains(seq) {
                    group.seqs.push(*seq);
                }
            }
        }
        group.seqs.sort_unstable();
        riders
    }

    fn load(st: &mut WorkerState) {
        if Self::check_lease(st).is_none()
            || st.loading.is_some()
            || st.draining
            || !st.limits().enabled
            || !st.window.wants_load()
            || st.shared().lock().effective_cap() == 0
        {
            return;
        }
        st.loading = st.held;
        let busy = {
            let sh = st.shared().lock();
            sh.in_flight.len() + sh.unwritten.len()
        };
        st.write(WriteOp::Load(st.window.load_limit(busy)));
    }

    /// Records finished attempts: decide, count, tell the history, queue the writes.
    fn reap(me: &ActorRef<WorkerMsg>, st: &mut WorkerState, finished: Vec<Finished>) {
        if finished.is_empty() {
            return;
        }
        let mut updates = Vec::with_capacity(finished.len());
        let mut attempts = Vec::with_capacity(finished.len());
        for f in finished {
            let riders = f.riders.iter().map(|d| (d, false));
            for (d, primary) in std::iter::once((&f.job.delivery, true)).chain(riders) {
                let shared = Arc::clone(st.shared());
                let decision = {
                    let mut sh = shared.lock();
                    if primary {
                        sh.in_flight.remove(&d.id);
                    } else {
                        sh.riding.remove(&d.id);
                    }
                    sh.unwritten.insert(d.id);
                    let cx = Context {
                        consecutive_failures: sh.counters.consecutive_failures,
                        now_ms: now_ms(),
                        jitter: rand::random(),
                        replay_requested: st.replay_after.remove(&d.id),
                    };
                    let decision = decide(d, f.class, &f.result, &st.args.policy, cx);
                    let c = &mut sh.counters;
                    if primary {
                        // Riders shared the primary's one request: one failure, not several.
                        c.consecutive_failures = decision.consecutive_failures;
                    }
                    match decision.tally {
                        Tally::Succeeded => {
                            c.succeeded += 1;
                            c.blocked = None;
                        }
                        Tally::Retried => c.retried += 1,
                        Tally::Failed => c.failed += 1,
                        Tally::Blocked => c.blocked = f.result.error.clone(),
                    }
                    decision
                };
                let r = &f.result;
                let outcome = match decision.tally {
                    Tally::Succeeded => "succeeded",
                    Tally::Retried => "retried",
                    Tally::Failed => "failed",
                    Tally::Blocked => "blocked",
                };
                let metrics = &st.args.metrics;
                metrics.deliveries.inc(&[st.name(), outcome]);
                if primary {
                    // Riders rode on the primary's request: one latency, not several.
                    metrics
                        .attempt_seconds
                        .observe(&[st.name()], r.latency.as_secs_f64());
                }
                if decision.tally == Tally::Blocked {
                    tracing::error!(target_name = %st.name(), event_id = %d.event_id, error = ?r.error, "target refused our configuration; the work stays pending");
                }
                tracing::debug!(
                    target_name = %st.name(),
                    event_id = %d.event_id,
                    webhook_id = %d.webhook_id,
                    attempt = d.attempts + 1,
                    status = ?r.status,
                    error = ?r.error,
                    latency_ms = r.latency.as_millis() as u64,
                    "delivery attempt"
                );
                attempts.push(Attempt {
                    delivery_id: d.id,
                    hook: st.name().to_owned(),
                    event_id: d.event_id.clone(),
                    webhook_id: d.webhook_id.clone(),
                    attempt: d.attempts + 1,
                    started_at_ms: r.started_at_ms,
                    latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
                    status: r.status,
                    error: r.error.clone(),
                    request_excerpt: f.result.request_excerpt.clone(),
                    response_excerpt: f.result.response_excerpt.clone(),
                });
                if let Some(delay) = decision.wake_in {
                    st.wake_at(me, delay);
                }
                if let Some(reason) = decision.disable.filter(|_| primary) {
                    st.disable(reason);
                }
                updates.push(decision.update);
            }
        }
        st.write(WriteOp::Outcomes(updates, attempts));
    }

    /// See [`SharedState::forget_flushed`](super::shared::SharedState::forget_flushed).
    fn forget_flushed(st: &mut WorkerState, upto: u64) {
        st.shared().lock().forget_flushed(upto);
    }
}

impl Actor for DeliveryWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let first_start = args.shared.lock().limits.is_none();
        if first_start {
            // Saved runtime changes win over the config file's values.
            let p = &args.policy;
            let saved = args
                .store
                .hook_overrides(&p.name)
                .await?
                .unwrap_or_default();
            let rate = match saved.rate.as_deref() {
                None => p.rate,
                Some("") => None,
                Some(r) => Some(
                    r.parse::<Rate>()
                        .map_err(|e| format!("saved rate {r:?}: {e}"))?,
                ),
            };
            let limits = Limits {
                max_in_flight: saved
                    .max_in_flight
                    .and_then(NonZeroU32::new)
                    .unwrap_or(p.max_in_flight),
                rate,
                burst: saved
                    .burst
                    .and_then(NonZeroU32::new)
                    .or(p.burst)
                    .unwrap_or(NonZeroU32::MIN),
                enabled: saved.enabled.unwrap_or(p.enabled),
                disabled_reason: saved.disabled_reason,
            };
            let mut sh = args.shared.lock();
            sh.limits = Some(limits);
            sh.rebuild_limiter(false);
        }
        Ok(WorkerState {
            args,
            window: Window::new(WINDOW),
            loading: None,
            pump_scheduled: false,
            next_wake: None,
            draining: false,
            drain_waiters: Vec::new(),
            replay_after: HashSet::new(),
            held: None,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<WorkerMsg>,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let l = st.limits();
        tracing::info!(
            target_name = %st.name(),
            kind = st.args.kind,
            enabled = l.enabled,
            max_in_flight = l.max_in_flight.get(),
            rate = ?l.rate.map(|r| r.to_string()),
            in_flight_from_earlier = st.shared().in_flight(),
            "delivery worker started; loading pending deliveries"
        );
        me.send_interval(TICK, || WorkerMsg::Wake);
        // Results that arrived while no incarnation was running.
        let _ = me.cast(WorkerMsg::Reap);
        Self::load(st);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Deliver(jobs, _) if st.shared().lock().effective_cap() == 0 => {
                // Rows created here are claimed by this instance: hand them to the others.
                drop(jobs);
                st.write(WriteOp::Release);
            }
            WorkerMsg::Deliver(jobs, epoch) => {
                if !Self::still_held(st, epoch) {
                    return Ok(());
                }
                let sh = Arc::clone(st.shared());
                for job in jobs {
                    st.window.offer(job, |id| sh.lock().busy_or_done(id));
                }
                Self::pump(&me, st);
            }
            WorkerMsg::Wake => Self::load(st),
            WorkerMsg::Loaded(jobs, asked, seen) => {
                let asked_under = st.loading.take();
                Self::forget_flushed(st, seen);
                if !Self::still_held(st, asked_under) {
                    return Ok(());
                }
                let sh = Arc::clone(st.shared());
                st.window.loaded(jobs, asked, |id| sh.lock().busy(id));
                Self::pump(&me, st);
            }
            WorkerMsg::Pump => {
                st.pump_scheduled = false;
                Self::pump(&me, st);
            }
            WorkerMsg::Reap => {
                let finished: Vec<Finished> = {
                    let mut rx = st.shared().results_rx().lock().await;
                    std::iter::from_fn(|| rx.try_recv().ok()).collect()
                };
                Self::reap(&me, st, finished);
                st.answer_drain();
                Self::pump(&me, st);
            }
            WorkerMsg::Flushed => {
                // A load still on its way may predate these writes.
                if st.loading.is_none() {
                    Self::forget_flushed(st, u64::MAX);
                }
                Self::pump(&me, st);
            }
            WorkerMsg::Replay(scope, reply) => {
                tracing::info!(target_name = %st.name(), scope = ?scope, "replay requested");
                st.write(WriteOp::Requeue(scope, Some(reply)));
            }
            WorkerMsg::Replayed(ids) => {
                if st.loading.is_none() {
                    Self::forget_flushed(st, u64::MAX);
                }
                let mut again = Vec::new();
                {
                    let shared = Arc::clone(st.shared());
                    let sh = shared.lock();
                    for id in ids {
                        if sh.in_flight.contains(&id) {
                            // Its outcome would overwrite the replay: it is turned into
                            // "pending, due now" when it arrives.
                            st.replay_after.insert(id);
                        } else if sh.unwritten.contains(&id) {
                            // Its outcome is queued behind the replay: replay it once more,
                            // after that write.
                            again.push(id);
                        }
                    }
                }
                if !again.is_empty() {
                    st.write(WriteOp::Requeue(ReplayScope::Ids(again), None));
                }
                st.window.mark_overflow();
                Self::load(st);
            }
            WorkerMsg::SetLimits {
                max_in_flight,
                rate,
                burst,
                reply,
            } => {
                {
                    let mut sh = st.shared().lock();
                    let mut l = sh
                        .limits
                        .clone()
                        .unwrap_or_else(|| defaults(&st.args.policy));
                    if let Some(m) = max_in_flight {
                        l.max_in_flight = m;
                    }
                    if let Some(b) = burst {
                        l.burst = b;
                    }
                    if let Some(r) = rate {
                        l.rate = r;
                    }
                    sh.limits = Some(l.clone());
                    if rate.is_some() || burst.is_some() {
                        sh.rebuild_limiter(true);
                    }
                    tracing::info!(
                        target_name = %st.name(),
                        max_in_flight = l.max_in_flight.get(),
                        rate = ?l.rate.map(|r| r.to_string()),
                        burst = l.burst.get(),
                        "target limits changed"
                    );
                }
                st.save_limits();
                let _ = reply.send(st.stats());
                Self::pump(&me, st);
            }
            WorkerMsg::SetEnabled(enabled, reply) => {
                if enabled {
                    {
                        let mut sh = st.shared().lock();
                        let mut l = sh
                            .limits
                            .clone()
                            .unwrap_or_else(|| defaults(&st.args.policy));
                        l.enabled = true;
                        l.disabled_reason = None;
                        sh.limits = Some(l);
                        sh.counters.consecutive_failures = 0;
                    }
                    tracing::info!(target_name = %st.name(), "target enabled");
                    st.save_limits();
                    st.window.mark_overflow();
                    Self::load(st);
                    Self::pump(&me, st);
                } else {
                    st.disable("disabled through the admin API".into());
                }
                let _ = reply.send(st.stats());
            }
            WorkerMsg::Stats(reply) => {
                let _ = reply.send(st.stats());
            }
            WorkerMsg::Drain(reply) => {
                if !st.draining {
                    tracing::info!(target_name = %st.name(), in_flight = st.shared().in_flight(), queued = st.window.len(), "draining: no new requests");
                }
                st.draining = true;
                st.drain_waiters.push(reply);
                st.answer_drain();
            }
            WorkerMsg::SetShare(share) => {
                let (changed, cap) = {
                    let mut sh = st.shared().lock();
                    let changed = sh.share != share;
                    if changed {
                        sh.share = share;
                        sh.rebuild_limiter(true);
                    }
                    (changed, sh.effective_cap())
                };
                if changed {
                    tracing::info!(target_name = %st.name(), instance = share.index, instances = share.of, max_in_flight_here = cap, "this instance's share of the target's limits changed");
                }
                if cap == 0 {
                    // The rows in the window are claimed by this instance: give them back.
                    st.window = Window::new(WINDOW);
                    st.write(WriteOp::Release);
                } else if changed {
                    st.window.mark_overflow();
                    Self::load(st);
                    Self::pump(&me, st);
                }
            }
            WorkerMsg::InjectPanic => panic!("injected panic in target {}", st.name()),
        }
        Ok(())
    }

    /// Graceful stop: start nothing new, wait (bounded) for requests in flight, record their
    /// outcomes, and wait until the writer has stored everything queued. Whatever is still
    /// unrecorded is retried after the next start (at-least-once), with the same id.
    async fn post_stop(
        &self,
        me: ActorRef<WorkerMsg>,
        st: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        st.draining = true;
        let deadline = tokio::time::Instant::now() + st.args.policy.drain_grace;
        while st.shared().in_flight() > 0 {
            let next = {
                let mut rx = st.shared().results_rx().lock().await;
                tokio::time::timeout_at(deadline, rx.recv()).await
            };
            match next {
                Ok(Some(f)) => Self::reap(&me, st, vec![f]),
                _ => break,
            }
        }
        let left = st.shared().in_flight();
        if left > 0 {
            tracing::warn!(target_name = %st.name(), in_flight = left, "stopped with requests in flight; they will be retried");
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        st.write(WriteOp::Barrier(done));
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), wait)
            .await
            .is_err()
        {
            tracing::warn!(target_name = %st.name(), "the last outcomes were not written in time; they will be retried");
        }
        tracing::info!(target_name = %st.name(), in_flight = left, queued = st.window.len(), "delivery worker stopped");
        Ok(())
    }
}

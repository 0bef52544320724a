//! The per-hook actor. It owns a bounded window of the hook's pending deliveries, starts at
//! most `max_in_flight` requests (never faster than `rate`), and never awaits a request in
//! `handle`: each attempt runs in a spawned task that casts `Done` back, so the mailbox keeps
//! answering limit changes and stats while requests are in flight. Everything not in the
//! window stays in the store; a restarted actor rebuilds its window from there.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use super::config::{HookFormat, OutboundConfig};
use super::delivery::{send_once, AttemptResult, CompiledHook};
use super::format::EventEnvelope;
use super::net;
use super::retry::{clamp_retry_after, classify, AttemptClass, Rate};
use crate::history::HistoryMsg;
use crate::model::NormalizedEvent;
use crate::store::{now_ms, Attempt, Delivery, DeliveryUpdate, HookOverrides, Store};
use crate::system::Names;

/// Deliveries held in memory per hook; the rest wait in the store.
pub const WINDOW: usize = 1024;
/// How long a stopping hook waits for requests in flight (the supervisor's stop timeout,
/// `server.shutdown_grace`, must be longer; its default is 10 s).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How often the actor looks in the store for due retries and overflow.
const TICK: Duration = Duration::from_millis(500);

/// A delivery in the window, with its event when the router already had it in memory.
#[derive(Clone, Debug)]
pub struct Queued {
    pub delivery: Delivery,
    pub event: Option<Arc<NormalizedEvent>>,
}

pub enum HookMsg {
    /// New deliveries from the router (already committed).
    Deliver(Vec<Queued>),
    /// Look in the store for due deliveries.
    Wake,
    /// Start what the limits allow.
    Pump,
    /// Deliveries loaded from the store, and how many were asked for.
    Loaded(Vec<Delivery>, usize),
    /// One or more attempts finished: their results wait in the actor's channel.
    Reap,
    /// Delivery updates reached the store.
    Flushed(Vec<i64>, bool),
    /// Change limits at runtime (persisted). `rate: Some(None)` removes the rate limit.
    SetLimits {
        max_in_flight: Option<NonZeroU32>,
        rate: Option<Option<Rate>>,
        burst: Option<NonZeroU32>,
        reply: RpcReplyPort<HookStats>,
    },
    SetEnabled(bool, RpcReplyPort<HookStats>),
    Stats(RpcReplyPort<HookStats>),
    /// Fault injection for supervision tests and chaos drills.
    InjectPanic,
}

/// What the admin API shows about a hook.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HookStats {
    pub name: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub max_in_flight: u32,
    pub rate: Option<String>,
    pub burst: u32,
    pub in_flight: usize,
    pub queued: usize,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub attempts: u64,
    pub consecutive_failures: u32,
}

#[derive(Clone)]
pub struct HookArgs {
    pub hook: Arc<CompiledHook>,
    pub store: Arc<dyn Store>,
    pub names: Names,
    pub outbound: OutboundConfig,
}

pub struct HookState {
    args: HookArgs,
    client: reqwest::Client,
    queue: VecDeque<Queued>,
    /// Delivery ids in the window, in flight, or finished but not yet written back.
    known: HashSet<i64>,
    /// Ids whose outcome was written while a store load was running: that load may have
    /// read them as still pending, so they are dropped from its rows.
    flushed_during_load: HashSet<i64>,
    in_flight: usize,
    max_in_flight: NonZeroU32,
    rate: Option<Rate>,
    burst: NonZeroU32,
    limiter: Option<DefaultDirectRateLimiter>,
    enabled: bool,
    disabled_reason: Option<String>,
    consecutive_failures: u32,
    /// Rows may be waiting in the store beyond the window.
    overflow: bool,
    loading: bool,
    pump_scheduled: bool,
    /// The earliest pending retry timer: one timer per hook, not one per failed delivery.
    next_wake: Option<tokio::time::Instant>,
    updates: Vec<DeliveryUpdate>,
    flushing: bool,
    /// Stopping: finish what is in flight, start nothing new.
    draining: bool,
    results_tx: tokio::sync::mpsc::UnboundedSender<(Queued, AttemptResult)>,
    results_rx: tokio::sync::mpsc::UnboundedReceiver<(Queued, AttemptResult)>,
    succeeded: u64,
    failed: u64,
    retried: u64,
    attempts: u64,
}

#[derive(Clone, Debug, Default)]
pub struct HookActor;

impl HookState {
    fn name(&self) -> &str {
        &self.args.hook.cfg.name
    }

    fn stats(&self) -> HookStats {
        HookStats {
            name: self.name().to_owned(),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason.clone(),
            max_in_flight: self.max_in_flight.get(),
            rate: self.rate.map(|r| r.to_string()),
            burst: self.burst.get(),
            in_flight: self.in_flight,
            queued: self.queue.len(),
            succeeded: self.succeeded,
            failed: self.failed,
            retried: self.retried,
            attempts: self.attempts,
            consecutive_failures: self.consecutive_failures,
        }
    }

    fn persisted(&self) -> HookOverrides {
        HookOverrides {
            hook: self.name().to_owned(),
            enabled: Some(self.enabled),
            disabled_reason: self.disabled_reason.clone(),
            max_in_flight: Some(self.max_in_flight.get()),
            rate: Some(self.rate.map(|r| r.to_string()).unwrap_or_default()),
            burst: Some(self.burst.get()),
        }
    }

    /// Builds the limiter. A swapped-in limiter is pre-drained: a fresh governor limiter
    /// admits a full burst at once, which would let a runtime change exceed the new rate.
    fn rebuild_limiter(&mut self, drain: bool) {
        self.limiter = self.rate.map(|r| {
            let l = RateLimiter::direct(r.quota(Some(self.burst)));
            if drain {
                let _ = l.check_n(self.burst);
            }
            l
        });
    }

    fn enqueue(&mut self, q: Queued) {
        if self.known.contains(&q.delivery.id) {
            return;
        }
        if self.queue.len() >= WINDOW {
            self.overflow = true;
            return;
        }
        self.known.insert(q.delivery.id);
        self.queue.push_back(q);
    }

    fn save_state(&self) {
        let store = Arc::clone(&self.args.store);
        let state = self.persisted();
        tokio::spawn(async move {
            if let Err(error) = store.save_hook_overrides(state).await {
                tracing::error!(%error, "could not persist hook state");
            }
        });
    }

    /// Wakes the actor after `delay` (to load a retry when it is due), unless an earlier
    /// wake-up is already scheduled. The periodic tick covers anything later.
    fn wake_at(&mut self, me: &ActorRef<HookMsg>, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        if self
            .next_wake
            .is_some_and(|w| w > tokio::time::Instant::now() && w <= at)
        {
            return;
        }
        self.next_wake = Some(at);
        me.send_after(delay, || HookMsg::Wake);
    }

    fn disable(&mut self, reason: String) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        tracing::error!(hook = %self.name(), %reason, "hook disabled; its deliveries stay pending until it is enabled again");
        self.disabled_reason = Some(reason);
        self.save_state();
    }
}

impl HookActor {
    fn pump(me: &ActorRef<HookMsg>, st: &mut HookState) {
        while st.enabled && st.in_flight < st.max_in_flight.get() as usize && !st.queue.is_empty() {
            if let Some(l) = &st.limiter {
                if let Err(not_until) = l.check() {
                    if !st.pump_scheduled {
                        st.pump_scheduled = true;
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        me.send_after(wait, || HookMsg::Pump);
                    }
                    break;
                }
            }
            let Some(q) = st.queue.pop_front() else { break };
            st.in_flight += 1;
            st.attempts += 1;
            let hook = Arc::clone(&st.args.hook);
            let client = st.client.clone();
            let store = Arc::clone(&st.args.store);
            let results = st.results_tx.clone();
            let me = me.clone();
            tokio::spawn(async move {
                let result = attempt(&hook, &client, store.as_ref(), &q).await;
                // Results go through a channel the state owns, so a stopping actor can still
                // collect them in post_stop. After a restart both ends are gone and the
                // delivery stays pending in the store (at-least-once).
                if results.send((q, result)).is_ok() {
                    let _ = me.cast(HookMsg::Reap);
                }
            });
        }
        if st.overflow && st.queue.len() < WINDOW / 2 {
            let _ = me.cast(HookMsg::Wake);
        }
    }

    fn load(me: &ActorRef<HookMsg>, st: &mut HookState) {
        if st.loading || !st.enabled || st.queue.len() >= WINDOW {
            return;
        }
        st.loading = true;
        let store = Arc::clone(&st.args.store);
        let hook = st.name().to_owned();
        let room = WINDOW - st.queue.len();
        // Ask for more than the room: some rows may already be in the window or in flight.
        let limit = room + st.known.len().min(WINDOW);
        let me = me.clone();
        tokio::spawn(async move {
            match store.due_deliveries(&hook, now_ms(), limit).await {
                Ok(rows) => {
                    let _ = me.cast(HookMsg::Loaded(rows, limit));
                }
                Err(error) => {
                    tracing::error!(hook = %hook, %error, "could not load pending deliveries");
                    let _ = me.cast(HookMsg::Loaded(Vec::new(), limit));
                }
            }
        });
    }

    fn flush(me: &ActorRef<HookMsg>, st: &mut HookState) {
        if st.flushing || st.updates.is_empty() {
            return;
        }
        st.flushing = true;
        let updates = std::mem::take(&mut st.updates);
        let store = Arc::clone(&st.args.store);
        let me = me.clone();
        let hook = st.name().to_owned();
        tokio::spawn(async move {
            let ids: Vec<i64> = updates.iter().map(DeliveryUpdate::id).collect();
            let ok = match store.update_deliveries(updates).await {
                Ok(()) => true,
                Err(error) => {
                    // The rows stay pending in the store: delivered again later (at-least-once).
                    tracing::error!(hook = %hook, %error, "could not record delivery outcomes");
                    false
                }
            };
            let _ = me.cast(HookMsg::Flushed(ids, ok));
        });
    }

    fn done(me: &ActorRef<HookMsg>, st: &mut HookState, q: Queued, r: AttemptResult) {
        st.in_flight = st.in_flight.saturating_sub(1);
        let d = &q.delivery;
        let attempt_no = d.attempts + 1;
        let hook = Arc::clone(&st.args.hook);
        let cfg = &hook.cfg;
        let class = classify(r.status);
        let update = match class {
            AttemptClass::Success => {
                st.consecutive_failures = 0;
                st.succeeded += 1;
                DeliveryUpdate::Succeeded {
                    id: d.id,
                    attempts: attempt_no,
                    status: r.status.unwrap_or(200),
                }
            }
            AttemptClass::Retryable => {
                st.consecutive_failures += 1;
                let jitter: f64 = rand::random();
                match cfg
                    .retry
                    .delay(attempt_no, cfg.retry_base, cfg.retry_cap, jitter)
                {
                    Some(delay) => {
                        let delay = clamp_retry_after(delay, r.retry_after);
                        st.retried += 1;
                        st.wake_at(me, delay);
                        DeliveryUpdate::Retry {
                            id: d.id,
                            attempts: attempt_no,
                            next_attempt_at_ms: now_ms()
                                + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                            status: r.status,
                            error: r.error.clone(),
                        }
                    }
                    None => {
                        st.failed += 1;
                        DeliveryUpdate::Failed {
                            id: d.id,
                            attempts: attempt_no,
                            status: r.status,
                            error: Some(
                                r.error
                                    .clone()
                                    .unwrap_or_else(|| "retries exhausted".into()),
                            ),
                        }
                    }
                }
            }
            AttemptClass::Fatal | AttemptClass::Gone => {
                st.consecutive_failures += 1;
                st.failed += 1;
                DeliveryUpdate::Failed {
                    id: d.id,
                    attempts: attempt_no,
                    status: r.status,
                    error: r.error.clone(),
                }
            }
        };
        tracing::debug!(
            hook = %st.name(),
            event_id = %d.event_id,
            webhook_id = %d.webhook_id,
            attempt = attempt_no,
            status = ?r.status,
            error = ?r.error,
            latency_ms = r.latency.as_millis() as u64,
            "delivery attempt"
        );
        if let Some(h) = ActorRef::<HistoryMsg>::where_is(st.args.names.history()) {
            let _ = h.cast(HistoryMsg::Attempt(Attempt {
                delivery_id: d.id,
                hook: st.name().to_owned(),
                event_id: d.event_id.clone(),
                webhook_id: d.webhook_id.clone(),
                attempt: attempt_no,
                started_at_ms: r.started_at_ms,
                latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
                status: r.status,
                error: r.error.clone(),
                request_excerpt: r.request_excerpt,
                response_excerpt: r.response_excerpt,
            }));
        }
        st.updates.push(update);
        if class == AttemptClass::Gone {
            st.disable(format!(
                "the endpoint answered 410 Gone for event {}",
                d.event_id
            ));
        } else if cfg.disable_after > 0 && st.consecutive_failures >= cfg.disable_after {
            let n = st.consecutive_failures;
            st.disable(format!("{n} consecutive failed attempts"));
        }
        Self::flush(me, st);
        Self::pump(me, st);
    }
}

/// Loads what the attempt needs (event, raw body) and makes the request.
async fn attempt(
    hook: &CompiledHook,
    client: &reqwest::Client,
    store: &dyn Store,
    q: &Queued,
) -> AttemptResult {
    let d = &q.delivery;
    let event = match &q.event {
        Some(ev) => Arc::clone(ev),
        None => match store.events_by_seq(vec![d.event_seq]).await {
            Ok(mut evs) if !evs.is_empty() => evs.swap_remove(0).event,
            Ok(_) => return load_failure(format!("event {} is no longer stored", d.event_id)),
            Err(e) => return load_failure(format!("cannot load event {}: {e}", d.event_id)),
        },
    };
    let raw = if hook.cfg.format == HookFormat::Raw {
        match store.raw_body(d.event_seq).await {
            Ok(raw) => raw,
            Err(e) => return load_failure(format!("cannot load the raw body: {e}")),
        }
    } else {
        None
    };
    let envelope = EventEnvelope {
        id: &d.event_id,
        received_at_ms: d.event_received_at_ms,
        event: &event,
    };
    send_once(hook, client, &envelope, raw.as_deref(), &d.webhook_id).await
}

fn load_failure(error: String) -> AttemptResult {
    AttemptResult {
        status: None,
        error: Some(error),
        started_at_ms: now_ms(),
        latency: Duration::ZERO,
        retry_after: None,
        request_excerpt: String::new(),
        response_excerpt: String::new(),
    }
}

impl Actor for HookActor {
    type Msg = HookMsg;
    type State = HookState;
    type Arguments = HookArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<HookMsg>,
        args: HookArgs,
    ) -> Result<HookState, ActorProcessingErr> {
        let cfg = &args.hook.cfg;
        let client = net::client(cfg.timeout, args.outbound.strict)?;
        let saved = args
            .store
            .hook_overrides(&cfg.name)
            .await?
            .unwrap_or_default();
        let rate = match saved.rate.as_deref() {
            None => cfg.rate,
            Some("") => None,
            Some(r) => Some(
                r.parse::<Rate>()
                    .map_err(|e| format!("saved rate {r:?}: {e}"))?,
            ),
        };
        let (results_tx, results_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut st = HookState {
            draining: false,
            results_tx,
            results_rx,
            client,
            queue: VecDeque::new(),
            known: HashSet::new(),
            flushed_during_load: HashSet::new(),
            in_flight: 0,
            max_in_flight: saved
                .max_in_flight
                .and_then(NonZeroU32::new)
                .unwrap_or(cfg.max_in_flight),
            rate,
            burst: saved
                .burst
                .and_then(NonZeroU32::new)
                .or(cfg.burst)
                .unwrap_or(NonZeroU32::MIN),
            limiter: None,
            enabled: saved.enabled.unwrap_or(cfg.enabled),
            disabled_reason: saved.disabled_reason,
            consecutive_failures: 0,
            overflow: true,
            loading: false,
            pump_scheduled: false,
            next_wake: None,
            updates: Vec::new(),
            flushing: false,
            succeeded: 0,
            failed: 0,
            retried: 0,
            attempts: 0,
            args,
        };
        st.rebuild_limiter(false);
        Ok(st)
    }

    async fn post_start(
        &self,
        me: ActorRef<HookMsg>,
        st: &mut HookState,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(
            hook = %st.name(),
            enabled = st.enabled,
            max_in_flight = st.max_in_flight.get(),
            rate = ?st.rate.map(|r| r.to_string()),
            "hook actor started; loading pending deliveries"
        );
        me.send_interval(TICK, || HookMsg::Wake);
        Self::load(&me, st);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<HookMsg>,
        msg: HookMsg,
        st: &mut HookState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HookMsg::Deliver(rows) => {
                for q in rows {
                    st.enqueue(q);
                }
                Self::pump(&me, st);
            }
            HookMsg::Wake => {
                if st.overflow || st.queue.len() < WINDOW / 2 {
                    Self::load(&me, st);
                }
            }
            HookMsg::Loaded(rows, asked) => {
                st.loading = false;
                // A full page means more may be waiting in the store.
                st.overflow = rows.len() >= asked;
                let stale = std::mem::take(&mut st.flushed_during_load);
                for d in rows {
                    if stale.contains(&d.id) {
                        continue;
                    }
                    st.enqueue(Queued {
                        delivery: d,
                        event: None,
                    });
                }
                Self::pump(&me, st);
            }
            HookMsg::Pump => {
                st.pump_scheduled = false;
                Self::pump(&me, st);
            }
            HookMsg::Reap => {
                while let Ok((q, r)) = st.results_rx.try_recv() {
                    Self::done(&me, st, q, r);
                }
            }
            HookMsg::Flushed(ids, _ok) => {
                st.flushing = false;
                // Only now may a store load return these rows again (as retries); a load
                // already running may still have read them as pending.
                for id in ids {
                    st.known.remove(&id);
                    if st.loading {
                        st.flushed_during_load.insert(id);
                    }
                }
                Self::flush(&me, st);
            }
            HookMsg::SetLimits {
                max_in_flight,
                rate,
                burst,
                reply,
            } => {
                if let Some(m) = max_in_flight {
                    st.max_in_flight = m;
                }
                if let Some(b) = burst {
                    st.burst = b;
                }
                if let Some(r) = rate {
                    st.rate = r;
                }
                if rate.is_some() || burst.is_some() {
                    st.rebuild_limiter(true);
                }
                tracing::info!(
                    hook = %st.name(),
                    max_in_flight = st.max_in_flight.get(),
                    rate = ?st.rate.map(|r| r.to_string()),
                    burst = st.burst.get(),
                    "hook limits changed"
                );
                st.save_state();
                let _ = reply.send(st.stats());
                Self::pump(&me, st);
            }
            HookMsg::SetEnabled(enabled, reply) => {
                if enabled {
                    st.enabled = true;
                    st.disabled_reason = None;
                    st.consecutive_failures = 0;
                    tracing::info!(hook = %st.name(), "hook enabled");
                    st.save_state();
                    Self::load(&me, st);
                    Self::pump(&me, st);
                } else {
                    st.disable("disabled through the admin API".into());
                }
                let _ = reply.send(st.stats());
            }
            HookMsg::Stats(reply) => {
                let _ = reply.send(st.stats());
            }
            HookMsg::InjectPanic => panic!("injected panic in hook {}", st.name()),
        }
        Ok(())
    }

    /// Graceful stop: wait (bounded) for requests in flight, record their outcomes, then
    /// write back what is buffered. Whatever is still unrecorded is retried after the next
    /// start (at-least-once), with the same webhook-id.
    async fn post_stop(
        &self,
        me: ActorRef<HookMsg>,
        st: &mut HookState,
    ) -> Result<(), ActorProcessingErr> {
        st.draining = true; // start nothing new
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        while st.in_flight > 0 {
            match tokio::time::timeout_at(deadline, st.results_rx.recv()).await {
                Ok(Some((q, r))) => Self::done(&me, st, q, r),
                _ => break,
            }
        }
        if st.in_flight > 0 {
            tracing::warn!(hook = %st.name(), in_flight = st.in_flight, "stopped with requests in flight; they will be retried");
        }
        if !st.updates.is_empty() {
            let updates = std::mem::take(&mut st.updates);
            if let Err(error) = st.args.store.update_deliveries(updates).await {
                tracing::warn!(hook = %st.name(), %error, "could not record the last outcomes");
            }
        }
        tracing::info!(hook = %st.name(), in_flight = st.in_flight, queued = st.queue.len(), "hook actor stopped");
        Ok(())
    }
}

//! The debouncer actor: owns the open groups and their store rows. The router adds events
//! (and waits for them to be stored); a timer fires the groups that are due, each as one
//! delivery handed to its target's worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use super::coalesce::{Coalescer, Due};
use super::group_delivery_id;
use crate::delivery::worker::WorkerMsg;
use crate::delivery::Job;
use crate::store::{now_ms, DebounceItem, FireGroup, Fired, Group, Store};

/// How long a group whose fire failed waits before it is tried again.
const FIRE_RETRY: Duration = Duration::from_secs(1);
/// A safety tick; the real timer is set for the next group due.
const TICK: Duration = Duration::from_secs(1);
/// How often fired rows of routed events are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Messages to the debouncer, the only writer of the debounce group rows.
pub enum DebouncerMsg {
    /// Events for debounced targets, already committed. Answered once their group rows are
    /// stored, with how many were new.
    Add(Vec<DebounceItem>, RpcReplyPort<Result<usize, String>>),
    /// Fire the groups that are due.
    Tick,
    /// The counters and open groups, for the admin API.
    Stats(RpcReplyPort<DebounceStats>),
}

/// What the admin API shows about the debouncer.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DebounceStats {
    /// Groups open now.
    pub open_groups: usize,
    /// Events added since start.
    pub debounced: u64,
    /// Events that joined a group that was already open.
    pub coalesced: u64,
    /// Groups fired (handed over as deliveries) since start.
    pub fired: u64,
    /// The open groups, ordered by target then key.
    pub groups: Vec<OpenGroup>,
}

/// One open group, as the admin API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OpenGroup {
    /// The stored target name the group is bound for.
    pub target: String,
    /// The coalescing key (a folder, a Plex item, a `downloadId`).
    pub key: String,
    /// How many events the group holds.
    pub events: usize,
    /// Arrival time of its first event, unix milliseconds.
    pub first_at_ms: i64,
    /// When it fires, unix milliseconds.
    pub due_at_ms: i64,
}

/// What the debouncer starts with.
#[derive(Clone)]
pub struct DebouncerArgs {
    /// Where group rows and fired deliveries are written.
    pub store: Arc<dyn Store>,
    /// Stored target name → the worker's registered actor name.
    pub targets: Arc<crate::system::TargetRegistry>,
    /// Counters for debounced, coalesced and fired groups.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The debouncer's state: the open groups (mirroring their store rows), its clock and its counters.
pub struct DebouncerState {
    args: DebouncerArgs,
    groups: Coalescer,
    /// Wall clock at start plus monotonic time since: immune to clock jumps, and it follows
    /// tokio's paused time in tests.
    wall0: i64,
    inst0: tokio::time::Instant,
    next_tick: Option<i64>,
    last_prune: i64,
    stats: DebounceStats,
}

impl DebouncerState {
    fn now(&self) -> i64 {
        self.wall0 + i64::try_from(self.inst0.elapsed().as_millis()).unwrap_or(i64::MAX / 4)
    }
}

/// The debouncer actor (`debouncer` in the tree).
#[derive(Clone, Debug, Default)]
pub struct DebouncerActor;

impl DebouncerActor {
    /// Sets a timer for the next group due, unless an earlier one is set.
    fn schedule(me: &ActorRef<DebouncerMsg>, st: &mut DebouncerState) {
        let Some(due) = st.groups.next_due() else {
            return;
        };
        if st.next_tick.is_some_and(|t| t <= due) {
            return;
        }
        st.next_tick = Some(due);
        let delay = Duration::from_millis(u64::try_from(due - st.now()).unwrap_or(0));
        me.send_after(delay, || DebouncerMsg::Tick);
    }

    async fn fire(st: &mut DebouncerState, due: Due) {
        let Some(first) = due.seqs.first().copied() else {
            return;
        };
        let fire = FireGroup {
            target: due.target.clone(),
            webhook_id: group_delivery_id(&due.target, &due.key, first),
            group: Group {
                key: due.key.clone(),
                seqs: due.seqs.clone(),
            },
        };
        // Read before the group's delivery is claimed: the worker starts it only under it.
        let lease = st.args.store.lease();
        match st.args.store.fire_group(fire).await {
            Ok(Fired::NotMine) => {
                tracing::debug!(target_name = %due.target, key = %due.key, "debounce key held by another instance; it fires the group");
            }
            Ok(Fired::NotYet(at)) => {
                tracing::debug!(target_name = %due.target, key = %due.key, due_in_ms = at - now_ms(), "events from other instances joined the group; firing later");
                let local_at = st.now() + (at - now_ms()).max(0);
                st.groups.restore(due, local_at);
            }
            Ok(Fired::Fired(None)) => {
                tracing::debug!(target_name = %due.target, key = %due.key, "debounce group fired already (elsewhere, or before a retry); nothing left to fire");
            }
            Ok(Fired::Fired(Some(delivery))) => {
                st.stats.fired += 1;
                st.args.metrics.groups_fired.inc(&[&due.target]);
                tracing::info!(
                    target_name = %due.target,
                    key = %due.key,
                    events = due.seqs.len(),
                    waited_ms = st.now() - due.first_at,
                    "debounce group fired"
                );
                let actor = st.args.targets.actor_of(&due.target);
                // A worker that is restarting loads the row from the store itself.
                if let Some(w) = actor.and_then(ActorRef::<WorkerMsg>::where_is) {
                    let _ = w.cast(WorkerMsg::Deliver(
                        vec![Job {
                            delivery,
                            event: None,
                        }],
                        lease,
                    ));
                }
            }
            Err(error) => {
                tracing::error!(target_name = %due.target, key = %due.key, %error, "could not fire a debounce group; retrying");
                let retry_at = st.now() + FIRE_RETRY.as_millis() as i64;
                st.groups.restore(due, retry_at);
            }
        }
    }
}

impl Actor for DebouncerActor {
    type Msg = DebouncerMsg;
    type State = DebouncerState;
    type Arguments = DebouncerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<DebouncerMsg>,
        args: DebouncerArgs,
    ) -> Result<DebouncerState, ActorProcessingErr> {
        let pending = args.store.pending_debounce_items().await?;
        let mut groups = Coalescer::default();
        for it in &pending {
            groups.add(it);
        }
        if !pending.is_empty() {
            tracing::info!(
                events = pending.len(),
                groups = groups.len(),
                "debouncer: restored open groups from the store"
            );
        }
        let wall0 = now_ms();
        Ok(DebouncerState {
            args,
            groups,
            wall0,
            inst0: tokio::time::Instant::now(),
            next_tick: None,
            last_prune: wall0,
            stats: DebounceStats::default(),
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<DebouncerMsg>,
        st: &mut DebouncerState,
    ) -> Result<(), ActorProcessingErr> {
        me.send_interval(TICK, || DebouncerMsg::Tick);
        let _ = me.cast(DebouncerMsg::Tick);
        Self::schedule(&me, st);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<DebouncerMsg>,
        msg: DebouncerMsg,
        st: &mut DebouncerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DebouncerMsg::Add(items, reply) => {
                match st.args.store.add_debounce_items(items.clone()).await {
                    Ok(added) => {
                        for it in &added {
                            st.stats.debounced += 1;
                            st.args.metrics.debounced.inc(&[&it.target]);
                            if st.groups.add(it) {
                                st.stats.coalesced += 1;
                                st.args.metrics.coalesced.inc(&[&it.target]);
                            }
                        }
                        // Items stored already (the event was routed twice) open their
                        // group too, uncounted, if it is not open here: adding them may have
                        // claimed their key for this instance (its holder's lease lapsed), and
                        // only the holder fires a key, from its own groups. They open it as
                        // if they arrived now, so an old event routed again does not fire
                        // its key early; a fire reads the key's unfired items from the store.
                        let new: HashSet<(&str, &str, i64)> = added
                            .iter()
                            .map(|i| (i.target.as_str(), i.key.as_str(), i.event_seq))
                            .collect();
                        let now = st.now();
                        for it in &items {
                            let stored = (it.target.as_str(), it.key.as_str(), it.event_seq);
                            if !new.contains(&stored) && !st.groups.contains(&it.target, &it.key) {
                                st.groups.add(&DebounceItem {
                                    received_at_ms: it.received_at_ms.max(now),
                                    ..it.clone()
                                });
                            }
                        }
                        let _ = reply.send(Ok(added.len()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                Self::schedule(&me, st);
            }
            DebouncerMsg::Tick => {
                let now = st.now();
                if st.next_tick.is_some_and(|t| t <= now) {
                    st.next_tick = None;
                }
                match st.args.store.adopt_debounce_items().await {
                    Ok(adopted) if !adopted.is_empty() => {
                        tracing::info!(
                            events = adopted.len(),
                            "debouncer: took over the groups of an instance whose lease lapsed"
                        );
                        for it in &adopted {
                            st.groups.add(it);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "could not look for groups to take over"),
                }
                for due in st.groups.take_due(now) {
                    Self::fire(st, due).await;
                }
                if now - st.last_prune >= PRUNE_EVERY.as_millis() as i64 {
                    st.last_prune = now;
                    let store = Arc::clone(&st.args.store);
                    if let Err(error) = store.prune_debounce().await {
                        tracing::warn!(%error, "could not prune fired debounce rows");
                    }
                }
                Self::schedule(&me, st);
            }
            DebouncerMsg::Stats(reply) => {
                let mut stats = st.stats.clone();
                stats.open_groups = st.groups.len();
                stats.groups = st
                    .groups
                    .groups()
                    .map(|((target, key), g)| OpenGroup {
                        target: target.clone(),
                        key: key.clone(),
                        events: g.seqs.len(),
                        first_at_ms: g.first_at,
                        due_at_ms: g.due_at,
                    })
                    .collect();
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }
}

//! The router receives each committed event and decides where it goes. For every matching
//! target (hooks and Plex servers alike): an immediate target gets one delivery row per
//! event, committed (in batches) and handed to its worker; a debounced target (the Plex
//! sync, a hook with `debounce`) gets the event added to a debounce group instead, stored by
//! the debouncer. Only when both are stored does the event count as routed.
//!
//! Recovery goes through the same path, so a recovered event joins its debounce group with
//! its original arrival time and keeps its quiet period.
//!
//! Progress is kept per event: an event is `unrouted` from its commit (same transaction)
//! until its deliveries and debounce items are stored, and the mark is cleared in the
//! transaction that creates its deliveries (or right after the debouncer stored its items).
//! That stays correct when commits land out of `seq` order, as they can on PostgreSQL,
//! where a watermark would skip the late one for good. Unrouted events older than
//! `sweep_age` (a crash between commit and routing, or a restart of the debouncer or router
//! that lost mailbox messages) are loaded and routed by the sweep; at start, every unrouted
//! event is. Routing is therefore at-least-once, and idempotent: a delivery or debounce item
//! that exists already is not made twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::debounce::actor::DebouncerMsg;
use crate::debounce::{DebounceConfig, DebounceKey};
use crate::delivery::worker::WorkerMsg;
use crate::delivery::Job;
use crate::hooks::filter::CompiledFilter;
use crate::hooks::signing::webhook_id;
use crate::plex::view::PlexView;
use crate::store::prelude::*;
use crate::store::{now_ms, CommittedEvent, DebounceItem, NewDelivery};
use crate::system::Names;

/// How the router reaches one target.
#[derive(Clone, Debug)]
pub struct RouteTarget {
    /// The stored target name (a hook's name, or `plex:NAME`).
    pub name: String,
    /// The worker's registered actor name.
    pub actor: String,
    /// Which events the target wants.
    pub filter: Arc<CompiledFilter>,
    /// Set for a debounced target: what it coalesces by, and its own quiet period.
    pub debounce: Option<(DebounceKey, Option<Duration>)>,
    /// TitleCardMaker's `interface_id`: events that carry one go only to the target with
    /// the same id.
    pub interface_id: Option<String>,
    /// A Plex target: folder keys are the folders as Plex sees them, so a Linux and a
    /// Windows Sonarr importing into the same folder share one group (and one scan).
    pub plex: Option<Arc<PlexView>>,
}

impl RouteTarget {
    fn accepts(&self, ev: &crate::model::NormalizedEvent) -> bool {
        if let (Some(want), Some(mine)) = (ev.params.get("interface_id"), &self.interface_id) {
            if want != mine {
                return false;
            }
        }
        self.filter.matches(ev)
    }
}

/// How long the router waits for the debouncer to store a batch's groups.
const DEBOUNCE_CALL: Duration = Duration::from_secs(30);

/// Messages to the router, which creates the delivery rows (or debounce items) of new events.
pub enum RouterMsg {
    /// An event just committed (by a source or a poller): plan its deliveries.
    Route(CommittedEvent),
    /// Self-cast: create the deliveries of everything routed since the last flush.
    FlushRoutes,
    /// Timer: route events the normal path missed.
    Sweep,
    /// Route the unrouted events older than this now (another instance went away).
    Recover(Duration),
}

/// What the router starts with.
#[derive(Clone)]
pub struct RouterArgs {
    /// Where deliveries are created and unrouted events are read.
    pub store: Arc<dyn Store>,
    /// Registry names, to reach the debouncer.
    pub names: Names,
    /// The current targets (hooks may come and go at runtime).
    pub targets: Arc<crate::system::TargetRegistry>,
    /// Quiet periods and max waits for debounced targets.
    pub debounce: Arc<DebounceConfig>,
    /// How often unrouted events are swept, and how old they must be.
    pub sweep_every: Duration,
    /// Events still unrouted this long after their commit are swept.
    pub sweep_age: Duration,
}

/// The router's state: events awaiting their deliveries, batched per flush.
pub struct RouterState {
    args: RouterArgs,
    routed_total: u64,
    /// Events received but whose deliveries are not yet created.
    pending: Vec<CommittedEvent>,
    flush_scheduled: bool,
}

/// Unrouted events read per step of a sweep.
const PAGE: usize = 2000;

/// The router actor (`router` in the tree).
#[derive(Clone, Debug, Default)]
pub struct RouterActor;

impl RouterActor {
    /// Creates the deliveries of a batch of events in one commit and has the debouncer store
    /// the debounced ones, hands the deliveries to the workers, and only then counts the
    /// events as routed.
    async fn route_batch(
        st: &mut RouterState,
        events: Vec<CommittedEvent>,
    ) -> Result<(), ActorProcessingErr> {
        if events.is_empty() {
            return Ok(());
        }
        let targets = st.args.targets.routes();
        let mut rows = Vec::new();
        let mut items = Vec::new();
        for ev in &events {
            let mut now = Vec::new();
            let mut later = Vec::new();
            for t in targets.iter().filter(|t| t.accepts(&ev.event)) {
                match t.debounce {
                    None => {
                        rows.push(NewDelivery {
                            event_seq: ev.seq,
                            hook: t.name.clone(),
                            webhook_id: webhook_id(&ev.id, &t.name),
                            group: None,
                        });
                        now.push(t.name.as_str());
                    }
                    Some((key, quiet)) => {
                        let (quiet, max_wait) = st.args.debounce.resolve(quiet, &ev.event);
                        for k in key.keys(&ev.id, &ev.event) {
                            let k = match (&t.plex, k.strip_prefix("folder:")) {
                                (Some(view), Some(dir)) => {
                                    format!("folder:{}", view.map_path(&ev.event.instance, dir).0)
                                }
                                _ => k,
                            };
                            items.push(DebounceItem {
                                target: t.name.clone(),
                                key: k,
                                event_seq: ev.seq,
                                received_at_ms: ev.received_at_ms,
                                quiet_ms: i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX),
                                max_wait_ms: i64::try_from(max_wait.as_millis())
                                    .unwrap_or(i64::MAX),
                            });
                        }
                        later.push(t.name.as_str());
                    }
                }
            }
            tracing::info!(
                event_id = %ev.id,
                source = %ev.event.instance,
                kind = %ev.event.kind,
                event_type = %ev.event.event_type,
                targets = ?now,
                debounced = ?later,
                "event routed"
            );
        }
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        // Without debounce items, the events are routed in the deliveries' own transaction.
        let routed_now = if items.is_empty() {
            seqs.clone()
        } else {
            Vec::new()
        };
        // Read before the rows are claimed: the worker starts them only under this epoch.
        let lease = st.args.store.lease();
        let created = st.args.store.create_deliveries(rows, routed_now).await?;
        // The workers get their rows before the debouncer call: a worker's own load may find a
        // committed row first, and the later this hint comes, the more often it is stale.
        let by_seq: HashMap<i64, &Arc<_>> = events.iter().map(|e| (e.seq, &e.event)).collect();
        let mut by_target: HashMap<String, Vec<Job>> = HashMap::new();
        for d in created {
            let event = by_seq.get(&d.event_seq).map(|e| Arc::clone(e));
            by_target
                .entry(d.hook.clone())
                .or_default()
                .push(Job { delivery: d, event });
        }
        let actors: HashMap<&str, &str> = targets
            .iter()
            .map(|t| (t.name.as_str(), t.actor.as_str()))
            .collect();
        for (target, jobs) in by_target {
            // A worker that is restarting loads these rows from the store itself.
            if let Some(actor) = actors
                .get(target.as_str())
                .and_then(|a| ActorRef::<WorkerMsg>::where_is(*a))
            {
                let _ = actor.cast(WorkerMsg::Deliver(jobs, lease));
            }
        }
        if !items.is_empty() {
            let debouncer = ActorRef::<DebouncerMsg>::where_is(st.args.names.debouncer())
                .ok_or("the debouncer is not running")?;
            debouncer
                .call(|r| DebouncerMsg::Add(items, r), Some(DEBOUNCE_CALL))
                .await?
                .success_or("the debouncer did not answer")?
                .map_err(|e| format!("the debouncer could not store the groups: {e}"))?;
            st.args.store.mark_routed(seqs).await?;
        }
        st.routed_total += events.len() as u64;
        Ok(())
    }

    /// Routes unrouted events received before `older_than` ago, page by page. Younger ones
    /// are still on their way through the normal path.
    async fn recover(
        st: &mut RouterState,
        older_than: Duration,
    ) -> Result<u64, ActorProcessingErr> {
        let cutoff =
            now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        let mut recovered = 0u64;
        loop {
            let page = st.args.store.unrouted(PAGE).await?;
            let full = page.len() == PAGE;
            let old: Vec<i64> = page
                .iter()
                .filter(|(_, at)| *at <= cutoff)
                .map(|(seq, _)| *seq)
                .collect();
            if old.is_empty() {
                break;
            }
            let events = st.args.store.events_by_seq(old.clone()).await?;
            let found: HashSet<i64> = events.iter().map(|e| e.seq).collect();
            let gone: Vec<i64> = old.into_iter().filter(|s| !found.contains(s)).collect();
            if !gone.is_empty() {
                // Nothing to route (the event is gone); without this the sweep would stop here.
                st.args.store.mark_routed(gone).await?;
            }
            recovered += events.len() as u64;
            Self::route_batch(st, events).await?;
            tracing::info!(recovered, "recovery: routing events that were never routed");
            if !full {
                break;
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, "recovery done");
        }
        Ok(recovered)
    }

    /// A failed sweep is retried at the next tick: the store may be briefly unavailable,
    /// and restarting the router would not help.
    async fn sweep(st: &mut RouterState) {
        let age = st.args.sweep_age;
        if let Err(error) = Self::recover(st, age).await {
            tracing::error!(%error, "could not route the events the normal path missed; the next sweep retries");
        }
    }
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        Ok(RouterState {
            args,
            routed_total: 0,
            pending: Vec::new(),
            flush_scheduled: false,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        // Everything committed before this start and not yet routed is routed now.
        Self::recover(st, Duration::ZERO).await?;
        me.send_interval(st.args.sweep_every, || RouterMsg::Sweep);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route(ev) => {
                st.pending.push(ev);
                // Everything already in the mailbox is routed with this one: the flush message
                // queues behind it.
                if !st.flush_scheduled {
                    st.flush_scheduled = true;
                    let _ = me.cast(RouterMsg::FlushRoutes);
                }
            }
            RouterMsg::FlushRoutes => {
                st.flush_scheduled = false;
                let batch = std::mem::take(&mut st.pending);
                if let Err(error) = Self::route_batch(st, batch).await {
                    // They stay unrouted; the sweep retries.
                    tracing::error!(%error, "could not create deliveries; the sweep will retry");
                }
            }
            RouterMsg::Sweep => Self::sweep(st).await,
            RouterMsg::Recover(older_than) => match Self::recover(st, older_than).await {
                Ok(n) => tracing::info!(
                    recovered = n,
                    older_than_ms = older_than.as_millis() as u64,
                    "routed the events a departed instance left unrouted"
                ),
                Err(error) => {
                    tracing::error!(%error, "could not route a departed instance's events; the next sweep retries")
                }
            },
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let batch = std::mem::take(&mut st.pending);
        Self::route_batch(st, batch).await?;
        tracing::info!(routed = st.routed_total, "router stopped");
        Ok(())
    }
}

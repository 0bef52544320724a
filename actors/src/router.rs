//! The router receives each committed event and decides where it goes. For every matching
//! target (hooks and Plex servers alike): an immediate target gets one delivery row per
//! event, committed (in batches) and handed to its worker; a debounced target (the Plex
//! sync, a hook with `debounce`) gets the event added to a debounce group instead, stored by
//! the debouncer. Only when both are stored does the event count as routed.
//!
//! Recovery goes through the same path, so a recovered event joins its debounce group with
//! its original arrival time and keeps its quiet period.
//!
//! Progress is one persisted watermark: every stored event with `seq <= watermark` has been
//! routed. The router keeps the set of routed events above it, and on each flush walks the
//! stored sequence numbers above the watermark to advance it (gaps in `seq` are skipped,
//! since only stored rows are walked). Events above the watermark that are older than
//! `sweep_age` and were never routed (a crash between commit and routing, or a restart of
//! the debouncer or router that lost mailbox messages) are loaded and routed by the sweep;
//! at start, everything above the watermark is. Routing is therefore at-least-once.

use std::collections::{BTreeSet, HashMap};
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
use crate::store::{now_ms, CommittedEvent, DebounceItem, NewDelivery, Store};
use crate::system::Names;

/// How the router reaches one target.
#[derive(Clone, Debug)]
pub struct RouteTarget {
    /// The stored target name (a hook's name, or `plex:NAME`).
    pub name: String,
    /// The worker's registered actor name.
    pub actor: String,
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

pub enum RouterMsg {
    Route(CommittedEvent),
    /// Self-cast: create the deliveries of everything routed since the last flush.
    FlushRoutes,
    /// Timer: advance and persist the watermark.
    Flush,
    /// Timer: also route events the normal path missed.
    Sweep,
}

#[derive(Clone)]
pub struct RouterArgs {
    pub store: Arc<dyn Store>,
    pub names: Names,
    /// The current targets (hooks may come and go at runtime).
    pub targets: Arc<crate::system::TargetRegistry>,
    pub debounce: Arc<DebounceConfig>,
    /// How often unrouted events are swept, and how old they must be.
    pub sweep_every: Duration,
    pub sweep_age: Duration,
}

pub struct RouterState {
    args: RouterArgs,
    /// Persisted: every event with `seq <= upto` is routed.
    upto: i64,
    /// Routed events above `upto`.
    routed: BTreeSet<i64>,
    routed_total: u64,
    /// Events received but whose deliveries are not yet created.
    pending: Vec<CommittedEvent>,
    flush_scheduled: bool,
}

/// How often the watermark is advanced.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Sequence numbers read per step of a walk.
const PAGE: usize = 2000;

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
        let events: Vec<CommittedEvent> = events
            .into_iter()
            .filter(|ev| ev.seq > st.upto && !st.routed.contains(&ev.seq))
            .collect();
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
        let created = if rows.is_empty() {
            Vec::new()
        } else {
            st.args.store.create_deliveries(rows).await?
        };
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
                let _ = actor.cast(WorkerMsg::Deliver(jobs));
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
        }
        for ev in &events {
            st.routed.insert(ev.seq);
            st.routed_total += 1;
        }
        Ok(())
    }

    /// Walks stored events above the watermark: routed ones advance it; unrouted ones older
    /// than `recover_older_than` are routed now; the first younger unrouted one stops the walk
    /// (it is still on its way through the normal path).
    async fn advance(
        st: &mut RouterState,
        recover_older_than: Option<Duration>,
    ) -> Result<(), ActorProcessingErr> {
        let start = st.upto;
        let cutoff = recover_older_than
            .map(|age| now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let mut recovered = 0u64;
        loop {
            let page = st.args.store.seqs_after(st.upto, PAGE).await?;
            let full = page.len() == PAGE;
            let mut upto = st.upto;
            let mut missed = Vec::new();
            let mut blocked = false;
            for (seq, at) in page {
                if st.routed.remove(&seq) {
                    upto = seq;
                } else if cutoff.is_some_and(|c| at <= c) {
                    missed.push(seq);
                    upto = seq;
                } else {
                    blocked = true;
                    break;
                }
            }
            if !missed.is_empty() {
                let events = st.args.store.events_by_seq(missed).await?;
                let n = events.len() as u64;
                let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
                Self::route_batch(st, events).await?;
                for seq in seqs {
                    st.routed.remove(&seq);
                }
                recovered += n;
                tracing::info!(
                    recovered,
                    upto,
                    "recovery: routing events that were never routed"
                );
            }
            st.upto = upto;
            if blocked || !full {
                break;
            }
        }
        if st.upto != start {
            st.args.store.set_routed_watermark(st.upto).await?;
        }
        if recovered > 0 {
            tracing::info!(recovered, watermark = st.upto, "recovery done");
        }
        Ok(())
    }
}

impl RouterActor {
    /// A failed walk is retried at the next tick: the store may be briefly unavailable, and
    /// restarting the router would not help.
    async fn advance_logged(st: &mut RouterState, recover_older_than: Option<Duration>) {
        if let Err(error) = Self::advance(st, recover_older_than).await {
            tracing::error!(%error, watermark = st.upto, "could not advance the routing watermark");
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
        let upto = args.store.routed_watermark().await?;
        Ok(RouterState {
            args,
            upto,
            routed: BTreeSet::new(),
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
        Self::advance(st, Some(Duration::ZERO)).await?;
        me.send_interval(FLUSH_EVERY, || RouterMsg::Flush);
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
                    // Not routed, so the watermark stops before them; the sweep retries.
                    tracing::error!(%error, "could not create deliveries; the sweep will retry");
                }
            }
            RouterMsg::Flush if st.routed.is_empty() => {}
            RouterMsg::Flush => Self::advance_logged(st, None).await,
            RouterMsg::Sweep => {
                let age = st.args.sweep_age;
                Self::advance_logged(st, Some(age)).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        Self::advance(st, None).await?;
        tracing::info!(
            routed = st.routed_total,
            watermark = st.upto,
            "router stopped"
        );
        Ok(())
    }
}

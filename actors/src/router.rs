//! The router receives each committed event and decides where it goes. Hooks and the Plex
//! sync attach here in later issues; for now it logs each event (id, source, kind).
//!
//! Progress is one persisted watermark: every stored event with `seq <= watermark` has been
//! routed. The router keeps the set of routed events above it, and on each flush walks the
//! stored sequence numbers above the watermark to advance it (gaps in `seq` are skipped,
//! since only stored rows are walked). Events above the watermark that are older than
//! `sweep_age` and were never routed (a crash between commit and routing, or a restart of
//! the debouncer or router that lost mailbox messages) are loaded and routed by the sweep;
//! at start, everything above the watermark is. Routing is therefore at-least-once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::store::{now_ms, CommittedEvent, Store};

pub enum RouterMsg {
    Route(CommittedEvent),
    /// Timer: advance and persist the watermark.
    Flush,
    /// Timer: also route events the normal path missed.
    Sweep,
}

#[derive(Clone)]
pub struct RouterArgs {
    pub store: Arc<dyn Store>,
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
}

/// How often the watermark is advanced.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Sequence numbers read per step of a walk.
const PAGE: usize = 2000;

#[derive(Clone, Debug, Default)]
pub struct RouterActor;

impl RouterActor {
    fn route(st: &mut RouterState, ev: &CommittedEvent) {
        if ev.seq <= st.upto || !st.routed.insert(ev.seq) {
            return; // already routed (by a sweep, or before a restart)
        }
        tracing::info!(
            event_id = %ev.id,
            source = %ev.event.instance,
            kind = %ev.event.kind,
            event_type = %ev.event.event_type,
            "event routed"
        );
        st.routed_total += 1;
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
                for ev in &events {
                    Self::route(st, ev);
                    st.routed.remove(&ev.seq);
                }
                recovered += events.len() as u64;
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
        _me: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route(ev) => Self::route(st, &ev),
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

//! The router receives each committed event and decides where it goes. Hooks and the Plex
//! sync attach here in later issues; for now it logs each event (id, source, kind) and marks
//! it routed in the store, in batches.
//!
//! Recovery: an event that was committed but never marked routed (a crash between the
//! commit and the routing, or a restart of the debouncer or router) is picked up by the
//! sweep at start and by a periodic sweep of events older than `sweep_age`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::store::{now_ms, CommittedEvent, Store};

pub enum RouterMsg {
    Route(CommittedEvent),
    /// Timer: write buffered "routed" marks.
    Flush,
    /// Timer: route events the normal path missed.
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
    pending_marks: Vec<i64>,
    /// Events the sweep routed whose normal-path message may still arrive: routed once only.
    swept: HashSet<i64>,
    routed_total: u64,
}

/// Marks are flushed at least this often, and at once when this many are buffered.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_AT: usize = 1024;
/// Events loaded per recovery page.
const SWEEP_PAGE: usize = 1000;
/// Bound on remembered swept events (beyond it, a late duplicate is only logged twice).
const SWEPT_MAX: usize = 100_000;

#[derive(Clone, Debug, Default)]
pub struct RouterActor;

impl RouterActor {
    fn route(st: &mut RouterState, ev: &CommittedEvent) {
        tracing::info!(
            event_id = %ev.id,
            source = %ev.event.instance,
            kind = %ev.event.kind,
            event_type = %ev.event.event_type,
            "event routed"
        );
        st.pending_marks.push(ev.seq);
        st.routed_total += 1;
    }

    async fn flush(st: &mut RouterState) {
        if st.pending_marks.is_empty() {
            return;
        }
        let marks = std::mem::take(&mut st.pending_marks);
        if let Err(error) = st.args.store.mark_routed(marks).await {
            // Not fatal: the events stay `received` and the next sweep routes them again.
            tracing::error!(%error, "could not mark events routed");
        }
    }

    /// Routes committed-but-unrouted events, page by page, logging progress.
    async fn sweep(st: &mut RouterState, min_age: Duration) -> Result<(), ActorProcessingErr> {
        let cutoff = now_ms() - i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
        let mut recovered = 0u64;
        loop {
            Self::flush(st).await;
            let page = st.args.store.unrouted(SWEEP_PAGE).await?;
            let fresh: Vec<_> = page.iter().filter(|e| e.received_at_ms <= cutoff).collect();
            if fresh.is_empty() {
                break;
            }
            for ev in &fresh {
                Self::route(st, ev);
                if st.swept.len() < SWEPT_MAX {
                    st.swept.insert(ev.seq);
                }
            }
            recovered += fresh.len() as u64;
            tracing::info!(recovered, "recovery sweep: routing unrouted events");
            if page.len() < SWEEP_PAGE || fresh.len() < page.len() {
                Self::flush(st).await;
                break;
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, "recovery sweep done");
        }
        Ok(())
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
            pending_marks: Vec::new(),
            swept: HashSet::new(),
            routed_total: 0,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        Self::sweep(st, Duration::ZERO).await?;
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
            RouterMsg::Route(ev) => {
                // A sweep may already have routed it (the event waited in a mailbox).
                if !st.swept.remove(&ev.seq) {
                    Self::route(st, &ev);
                }
                if st.pending_marks.len() >= FLUSH_AT {
                    Self::flush(st).await;
                }
            }
            RouterMsg::Flush => Self::flush(st).await,
            RouterMsg::Sweep => {
                let age = st.args.sweep_age;
                Self::sweep(st, age).await?;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        Self::flush(st).await;
        tracing::info!(routed = st.routed_total, "router stopped");
        Ok(())
    }
}

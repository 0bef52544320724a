//! The membership actor: keeps this instance's heartbeat in the store, and tells every
//! delivery worker its share of the targets' limits (see [`crate::delivery::share`]).
//!
//! Instances sharing one PostgreSQL database hold claims on the rows they work on; a claim
//! holds while its instance's heartbeat is younger than the lease. An instance whose
//! heartbeat has not landed within the lease (failed, or only slow) fences itself: it starts
//! nothing more until a heartbeat lands again, because by then the others may have taken its
//! rows over (see [`crate::store::lease`]). With SQLite there is one instance, and the share
//! is always the whole limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::delivery::share::Share;
use crate::delivery::worker::WorkerMsg;
use crate::router::RouterMsg;
use crate::store::Store;
use crate::system::{Names, TargetRegistry};

/// What the membership actor starts with (built by the system at start-up).
#[derive(Clone)]
pub struct ClusterArgs {
    /// Where the heartbeats are written and the live instances read.
    pub store: Arc<dyn Store>,
    /// The targets whose workers get told their share of each limit.
    pub targets: Arc<TargetRegistry>,
    /// How long a silent instance's claims hold; heartbeats go out three times per lease.
    pub lease: Duration,
    /// Registry names, to find the workers and the router by name.
    pub names: Names,
}

/// Messages to the membership actor.
pub enum ClusterMsg {
    /// Timer: write the heartbeat, read the live instances, tell the workers.
    Beat,
}

/// The membership actor's state: the live instances last seen, this instance's share, and
/// whether it has fenced itself.
pub struct ClusterState {
    args: ClusterArgs,
    live: Vec<String>,
    share: Share,
    last_beat: Instant,
    fenced: bool,
}

/// The membership actor (`cluster` in the tree): heartbeats, fencing, and limit shares.
#[derive(Clone, Debug, Default)]
pub struct ClusterActor;

impl ClusterActor {
    async fn beat(st: &mut ClusterState) {
        let me = st.args.store.instance_id().to_owned();
        match st.args.store.heartbeat().await {
            Ok(live) => {
                st.last_beat = Instant::now();
                if live != st.live {
                    let gone: Vec<&String> = st.live.iter().filter(|i| !live.contains(i)).collect();
                    tracing::info!(instance = %me, live = ?live, gone = ?gone, "live instances changed");
                    if !gone.is_empty() {
                        Self::adopt_unrouted(st);
                    }
                    st.live = live;
                }
                st.share = Share::among(&st.live, &me);
            }
            Err(error) => {
                let silent = st.last_beat.elapsed();
                tracing::warn!(instance = %me, %error, silent_ms = silent.as_millis() as u64, "could not write this instance's heartbeat");
            }
        }
        // The store reckons the lease from the heartbeats' timestamps; a heartbeat that lands
        // late counts as lapsed too (the workers check it themselves before each start).
        let holds = st.args.store.lease().is_some();
        if !holds && !st.fenced {
            st.fenced = true;
            tracing::error!(instance = %me, lease_ms = st.args.lease.as_millis() as u64, silent_ms = st.last_beat.elapsed().as_millis() as u64, "no heartbeat within the lease: other instances may take this one's work over, so it starts nothing until a heartbeat lands");
        } else if holds && st.fenced {
            st.fenced = false;
            tracing::warn!(instance = %me, "heartbeat written again; this instance delivers again");
        }
        let share = if st.fenced { Share::fenced() } else { st.share };
        for t in st.args.targets.all() {
            if let Some(w) = ActorRef::<WorkerMsg>::where_is(t.route.actor.clone()) {
                let _ = w.cast(WorkerMsg::SetShare(share));
            }
        }
    }
}

impl ClusterActor {
    /// An instance left or lapsed: the events it committed but had not routed yet are routed
    /// here now, not at the next periodic sweep. Its last heartbeat is at least two thirds of
    /// a lease old by the time it drops out of the live list, and so is everything it
    /// committed; events younger than half a lease are on their way through some live
    /// instance's own path and are left to it. Routing an event twice creates nothing twice.
    fn adopt_unrouted(st: &ClusterState) {
        match ActorRef::<RouterMsg>::where_is(st.args.names.router()) {
            Some(router) => {
                let _ = router.cast(RouterMsg::Recover(st.args.lease / 2));
            }
            None => tracing::warn!(
                "router unavailable; its periodic sweep will route a departed instance's events"
            ),
        }
    }
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        Ok(ClusterState {
            args,
            live: Vec::new(),
            share: Share::default(),
            last_beat: Instant::now(),
            fenced: false,
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<ClusterMsg>,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(instance = %st.args.store.instance_id(), lease_ms = st.args.lease.as_millis() as u64, "instance joined");
        Self::beat(st).await;
        me.send_interval(st.args.lease / 3, || ClusterMsg::Beat);
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Beat => Self::beat(st).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ClusterMsg>,
        st: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped last, after the workers drained: nothing this instance claimed is running.
        match st.args.store.leave().await {
            Ok(()) => {
                tracing::info!(instance = %st.args.store.instance_id(), "instance left; its claims are released")
            }
            Err(error) => {
                tracing::warn!(instance = %st.args.store.instance_id(), %error, "could not release this instance's claims; they lapse with its lease")
            }
        }
        Ok(())
    }
}

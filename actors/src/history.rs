//! The history recorder: batches writes of what happened to requests and deliveries, and
//! owns retention. Today it records rejected requests (bounded in the store); delivery
//! attempts join it with the outbound hooks.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::store::{Rejection, Store};

pub enum HistoryMsg {
    Rejected(Rejection),
    /// Timer: write what is buffered.
    Flush,
}

#[derive(Clone)]
pub struct HistoryArgs {
    pub store: Arc<dyn Store>,
}

pub struct HistoryState {
    store: Arc<dyn Store>,
    buffer: Vec<Rejection>,
    dropped: u64,
}

const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// A flood of bad requests must not grow memory: beyond this, rejections are counted only.
const BUFFER_MAX: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct HistoryActor;

impl HistoryActor {
    async fn flush(st: &mut HistoryState) {
        if st.dropped > 0 {
            tracing::warn!(
                dropped = st.dropped,
                "history buffer was full; rejections not recorded"
            );
            st.dropped = 0;
        }
        if st.buffer.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut st.buffer);
        if let Err(error) = st.store.record_rejections(rows).await {
            tracing::error!(%error, "could not record rejections");
        }
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
        Ok(HistoryState {
            store: args.store,
            buffer: Vec::new(),
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
            HistoryMsg::Rejected(r) => {
                if st.buffer.len() < BUFFER_MAX {
                    st.buffer.push(r);
                } else {
                    st.dropped += 1;
                }
            }
            HistoryMsg::Flush => Self::flush(st).await,
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

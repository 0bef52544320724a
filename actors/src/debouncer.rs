//! The debouncer sits between the store and the router. Coalescing per key (quiet period
//! plus max wait) arrives with its own issue; for now it passes each committed event
//! straight on, so the message flow and the supervision tree already have their final shape.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::router::RouterMsg;
use crate::store::CommittedEvent;
use crate::system::Names;

pub enum DebouncerMsg {
    Committed(CommittedEvent),
}

#[derive(Clone, Debug, Default)]
pub struct DebouncerActor;

impl Actor for DebouncerActor {
    type Msg = DebouncerMsg;
    type State = Names;
    type Arguments = Names;

    async fn pre_start(
        &self,
        _me: ActorRef<DebouncerMsg>,
        names: Names,
    ) -> Result<Names, ActorProcessingErr> {
        Ok(names)
    }

    async fn handle(
        &self,
        _me: ActorRef<DebouncerMsg>,
        msg: DebouncerMsg,
        names: &mut Names,
    ) -> Result<(), ActorProcessingErr> {
        let DebouncerMsg::Committed(ev) = msg;
        match ActorRef::<RouterMsg>::where_is(names.router()) {
            Some(router) => {
                let _ = router.cast(RouterMsg::Route(ev));
            }
            None => tracing::warn!(
                event_id = %ev.id,
                "router unavailable; its recovery sweep will route this event"
            ),
        }
        Ok(())
    }
}

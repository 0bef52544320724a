//! The committed-event feed: every event the store has committed (from a webhook or a
//! poller), published once, after the commit, to whoever subscribed. It is what
//! `relayarr::RelayHandle::subscribe` hands out to programs that embed the relay.
//!
//! A `tokio::sync::broadcast` channel: publishing never waits for subscribers, so a slow
//! subscriber cannot delay ingestion (a subscriber that falls more than [`FEED_CAPACITY`]
//! events behind gets `RecvError::Lagged(n)` and goes on from the oldest event still held;
//! what it missed is in the store). With no subscriber, publishing is one lock and a count.

use std::sync::{Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::store::CommittedEvent;

/// Events a subscriber may fall behind before it lags.
pub const FEED_CAPACITY: usize = 1024;

/// The feed of committed events of one relay (held in [`crate::metrics::Metrics`]).
#[derive(Debug)]
pub struct CommittedFeed {
    /// `None` once the relay has stopped: subscribers then see `RecvError::Closed`.
    tx: Mutex<Option<broadcast::Sender<CommittedEvent>>>,
}

impl Default for CommittedFeed {
    fn default() -> Self {
        CommittedFeed {
            tx: Mutex::new(Some(broadcast::channel(FEED_CAPACITY).0)),
        }
    }
}

impl CommittedFeed {
    /// Publishes an event. Call it only after the store committed the event (durable
    /// before visible), and not for a duplicate the store recognised.
    pub fn publish(&self, event: &CommittedEvent) {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tx.as_ref().filter(|tx| tx.receiver_count() > 0) {
            // An error means the last subscriber left meanwhile: nobody to tell.
            let _ = tx.send(event.clone());
        }
    }

    /// A receiver of the events committed from now on. After [`CommittedFeed::close`], a
    /// receiver that is closed already.
    pub fn subscribe(&self) -> broadcast::Receiver<CommittedEvent> {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        match tx.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Ends the feed: subscribers receive what is queued, then `RecvError::Closed`.
    pub fn close(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{EventKind, NormalizedEvent, SourceKind};

    fn event(seq: i64) -> CommittedEvent {
        CommittedEvent {
            seq,
            id: format!("e{seq}"),
            received_at_ms: 0,
            event: Arc::new(NormalizedEvent::new(
                SourceKind::Sonarr,
                "sonarr",
                EventKind::Test,
                "Test",
            )),
        }
    }

    /// `try_recv` throughout: a send is visible at once, and a broken feed fails here
    /// instead of hanging.
    #[test]
    fn feed_delivers_in_order_lags_and_closes() {
        let feed = CommittedFeed::default();
        feed.publish(&event(0)); // nobody listens: dropped
        let mut rx = feed.subscribe();
        feed.publish(&event(1));
        feed.publish(&event(2));
        assert_eq!(rx.try_recv().map(|e| e.seq).ok(), Some(1));
        assert_eq!(rx.try_recv().map(|e| e.seq).ok(), Some(2));

        let mut slow = feed.subscribe();
        for seq in 0..(FEED_CAPACITY as i64 + 5) {
            feed.publish(&event(seq));
        }
        assert_eq!(
            slow.try_recv().err(),
            Some(broadcast::error::TryRecvError::Lagged(5))
        );
        assert_eq!(slow.try_recv().map(|e| e.seq).ok(), Some(5));

        feed.close();
        let mut late = feed.subscribe();
        assert_eq!(
            late.try_recv().err(),
            Some(broadcast::error::TryRecvError::Closed)
        );
    }
}

//! relayarr's actor system: the normalised event model, inbound sources, the durable store,
//! the debouncer, the router, the history recorder and the supervisors that keep them running.
//!
//! Who owns what (each piece of state changes only through messages to its owner):
//! - [`sources::actor::SourceActor`] (`source:NAME`): commits inbound events.
//! - [`router::RouterActor`]: creates the delivery rows of new events.
//! - [`debounce::actor::DebouncerActor`]: the debounce groups and their rows.
//! - [`delivery::worker::DeliveryWorker`] (`hook:NAME`, `plex:NAME`): a target's delivery
//!   rows, attempts, limits and enabled state.
//! - [`history::HistoryActor`]: rejected requests, and the retention of attempts.
//! - [`pollers::actor::PollerActor`] (`poller:NAME`): its cursor in an app's history.
//! - [`cluster::ClusterActor`]: this instance's heartbeat and its share of the limits.
//! - [`supervisor::Supervisor`]: its children, their restarts and the supervision board.
//!
//! [`system`] builds the tree; [`store`] is the durable interface they all write through.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod debounce;
pub mod delivery;
pub mod feed;
pub mod history;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod pathmap;
pub mod plex;
pub mod pollers;
pub mod redact;
pub mod router;
pub mod sources;
pub mod store;
pub mod supervisor;
pub mod system;

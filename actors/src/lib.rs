//! relayarr's actor system: the normalised event model, inbound sources, the durable store,
//! the debouncer, the router, the history recorder and the supervisors that keep them running.
#![forbid(unsafe_code)]

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

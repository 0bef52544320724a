//! relayarr's actor system: the normalised event model, inbound sources, the durable store,
//! the router, the history recorder and the supervisors that keep them running.
#![forbid(unsafe_code)]

pub mod model;
pub mod sources;
pub mod store;

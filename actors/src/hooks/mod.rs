//! Outbound hooks: config, pure delivery logic (filter, format, signing, retry, address
//! safety), and the per-hook actor.

pub mod config;
pub mod delivery;
pub mod executor;
pub mod filter;
pub mod format;
pub mod net;
pub mod retry;
pub mod signing;

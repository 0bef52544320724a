//! Outbound HTTP hooks: their config, the pure pieces of one request (filter, format,
//! signing, retry classification, egress guard), and the [`executor::HookExecutor`] that
//! performs one attempt. A hook has no actor of its own: its worker is a
//! [`crate::delivery::worker::DeliveryWorker`] (`hook:NAME`), the only writer of its
//! delivery rows, its limits and its enabled state.

pub mod config;
pub mod delivery;
pub mod executor;
pub mod filter;
pub mod format;
pub mod net;
pub mod retry;
pub mod signing;

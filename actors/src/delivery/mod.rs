//! One delivery engine for every target kind (an HTTP hook, a Plex server).
//!
//! A target is a supervised [`worker::DeliveryWorker`]: a durable queue of delivery rows, a
//! bounded [`window::Window`] in memory, a cap and a rate, a retry policy, and attempts in
//! the history. What differs between kinds is an [`Executor`], which performs one attempt
//! and classifies its result. The decision about an outcome is the pure
//! [`outcome::decide`].
//!
//! The worker is the only writer of its rows: outcomes, replays and saved limits all go
//! through its ordered writer ([`shared::Shared`]), which also outlives a crashed
//! incarnation, so requests that a previous incarnation left running still count against
//! the cap and the rate, and their outcomes are still recorded.

pub mod outcome;
pub mod share;
pub mod shared;
pub mod window;
pub mod worker;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

pub use crate::hooks::delivery::AttemptResult;
pub use crate::hooks::retry::{AttemptClass, Rate, RetryPolicy};
use crate::model::NormalizedEvent;
use crate::store::Delivery;

/// A delivery in a worker's window, with its event when the router already had it in memory.
#[derive(Clone, Debug)]
pub struct Job {
    pub delivery: Delivery,
    pub event: Option<Arc<NormalizedEvent>>,
}

/// Performs one attempt of one delivery for one kind of target, and classifies the result.
/// Runs in a task of its own: it may take as long as the target's timeout allows.
pub trait Executor: Send + Sync + 'static {
    fn attempt<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, (AttemptClass, AttemptResult)>;
}

/// The engine's view of a target's configuration.
#[derive(Clone, Debug)]
pub struct TargetPolicy {
    /// The target's name as stored in delivery rows and the history: a hook's name, or
    /// `plex:NAME`.
    pub name: String,
    pub max_in_flight: NonZeroU32,
    pub rate: Option<Rate>,
    pub burst: Option<NonZeroU32>,
    pub retry: RetryPolicy,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Consecutive failed attempts that disable the target; 0 never.
    pub disable_after: u32,
    pub enabled: bool,
    /// How long a stopping worker waits for its requests in flight.
    pub drain_grace: Duration,
}

/// What the admin API shows about a target.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TargetStats {
    pub name: String,
    /// `hook` or `plex`.
    pub kind: &'static str,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub max_in_flight: u32,
    pub rate: Option<String>,
    pub burst: u32,
    /// Live instances sharing this target's limits (1 unless several share one database).
    pub instances: usize,
    /// This instance's share of `max_in_flight` (all of it when alone).
    pub max_in_flight_here: u32,
    /// Requests running now, those an earlier incarnation started included.
    pub in_flight: usize,
    pub queued: usize,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub attempts: u64,
    pub consecutive_failures: u32,
    /// The last configuration problem (a refused Plex token): work stays pending meanwhile.
    pub blocked: Option<String>,
    pub draining: bool,
}

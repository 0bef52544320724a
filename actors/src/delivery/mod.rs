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
pub mod yield_gate;

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
    /// The delivery row, as loaded or as just committed.
    pub delivery: Delivery,
    /// The normalised event, when the router still had it; the executor loads it from the store
    /// otherwise.
    pub event: Option<Arc<NormalizedEvent>>,
}

/// Performs one attempt of one delivery for one kind of target, and classifies the result.
/// Runs in a task of its own: it may take as long as the target's timeout allows.
pub trait Executor: Send + Sync + 'static {
    /// Makes one attempt at `job` and classifies it: the worker decides from the class what
    /// happens to the delivery, and records the result as an attempt.
    fn attempt<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, (AttemptClass, AttemptResult)>;
}

/// The engine's view of a target's configuration.
#[derive(Clone, Debug)]
pub struct TargetPolicy {
    /// The target's name as stored in delivery rows and the history: a hook's name, or
    /// `plex:NAME`.
    pub name: String,
    /// The most requests in flight at once, across every instance sharing the database.
    pub max_in_flight: NonZeroU32,
    /// Requests per period, none when unlimited.
    pub rate: Option<Rate>,
    /// Requests the rate admits at once; one when unset.
    pub burst: Option<NonZeroU32>,
    /// When and how often a failed attempt is retried.
    pub retry: RetryPolicy,
    /// The first retry delay (the step of linear and exponential policies).
    pub retry_base: Duration,
    /// No retry delay is longer than this.
    pub retry_cap: Duration,
    /// Consecutive failed attempts that disable the target; 0 never.
    pub disable_after: u32,
    /// The configured state; a state saved at runtime wins. Disabled, its deliveries stay pending.
    pub enabled: bool,
    /// How long a stopping worker waits for its requests in flight.
    pub drain_grace: Duration,
}

/// What the admin API shows about a target.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TargetStats {
    /// The stored target name.
    pub name: String,
    /// `hook` or `plex`.
    pub kind: &'static str,
    /// Whether the target starts deliveries.
    pub enabled: bool,
    /// Why it was disabled (410 Gone, consecutive failures, or an operator), when it is.
    pub disabled_reason: Option<String>,
    /// The configured cap on requests in flight, across all instances.
    pub max_in_flight: u32,
    /// The rate limit as written in config (`5/s`, `30/m`), none when unlimited.
    pub rate: Option<String>,
    /// Requests the rate admits at once.
    pub burst: u32,
    /// Live instances sharing this target's limits (1 unless several share one database).
    pub instances: usize,
    /// This instance's share of `max_in_flight` (all of it when alone).
    pub max_in_flight_here: u32,
    /// Requests running now, those an earlier incarnation started included.
    pub in_flight: usize,
    /// Deliveries in the worker's window in memory (more may wait in the store).
    pub queued: usize,
    /// Deliveries that succeeded since start.
    pub succeeded: u64,
    /// Deliveries that failed for good (no retry left) since start.
    pub failed: u64,
    /// Attempts that failed and were scheduled for a retry, since start.
    pub retried: u64,
    /// Attempts made since start.
    pub attempts: u64,
    /// Failed attempts in a row, counted toward auto-disable.
    pub consecutive_failures: u32,
    /// The last configuration problem (a refused Plex token): work stays pending meanwhile.
    pub blocked: Option<String>,
    /// The worker is stopping: it starts nothing new and waits for what is in flight.
    pub draining: bool,
}

//! Reconciliation pollers: Sonarr and Radarr drop webhooks while a connection is marked
//! failing, and never retry them. One poller per `[[arr]]` reads the app's history every few
//! minutes and turns imports, upgrades, renames and deletes that relayarr never received
//! into events tagged `recovered`, which then route like any other.
//!
//! - [`config`]: the `[[arr]]` table.
//! - [`client`]: `GET /api/v3/history/since` with `X-Api-Key`.
//! - [`cursor`]: where a poller has read up to (pure, stored as JSON).
//! - [`record`]: history records → events, and the dedup rule (pure).
//! - [`actor`]: the supervised actor that sequences one read at a time.

pub mod actor;
pub mod client;
pub mod config;
pub mod cursor;
pub mod record;

use thiserror::Error;

use self::config::ArrKind;
use crate::store::StoreError;

/// Why a read of an app's history failed. None of them carries the API key.
#[derive(Debug, Error)]
pub enum PollError {
    /// The poller's config cannot work (a bad URL, a missing key).
    #[error("poller `{poller}`: {problem}")]
    Invalid {
        /// The poller's name.
        poller: String,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// The app answered 401 to the API key.
    #[error("api key rejected by {kind} at {url}")]
    Unauthorized {
        /// Which app.
        kind: ArrKind,
        /// The base URL (no key).
        url: String,
    },
    /// No HTTP answer: connection refused, DNS, timeout.
    #[error("cannot reach {kind} at {url}: {reason}")]
    Connect {
        /// Which app.
        kind: ArrKind,
        /// The base URL (no key).
        url: String,
        /// The transport error in words.
        reason: String,
    },
    /// Any other non-2xx answer.
    #[error("{kind} at {url} answered HTTP {status}")]
    Status {
        /// Which app.
        kind: ArrKind,
        /// The base URL (no key).
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body is not the history array we expect.
    #[error("{kind} at {url} sent history that is not a JSON array: {reason}")]
    Decode {
        /// Which app.
        kind: ArrKind,
        /// The base URL (no key).
        url: String,
        /// serde_json's complaint.
        reason: String,
    },
    /// Reading or writing the cursor or the recovered events failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A cursor or an event could not be turned into JSON.
    #[error("cannot serialise {what}: {reason}")]
    Serialise {
        /// What was being serialised (the cursor, a recovered event).
        what: &'static str,
        /// serde_json's complaint.
        reason: String,
    },
}

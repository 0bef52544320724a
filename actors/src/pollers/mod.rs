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
    #[error("poller `{poller}`: {problem}")]
    Invalid { poller: String, problem: String },
    #[error("api key rejected by {kind} at {url}")]
    Unauthorized { kind: ArrKind, url: String },
    #[error("cannot reach {kind} at {url}: {reason}")]
    Connect {
        kind: ArrKind,
        url: String,
        reason: String,
    },
    #[error("{kind} at {url} answered HTTP {status}")]
    Status {
        kind: ArrKind,
        url: String,
        status: u16,
    },
    #[error("{kind} at {url} sent history that is not a JSON array: {reason}")]
    Decode {
        kind: ArrKind,
        url: String,
        reason: String,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot serialise {what}: {reason}")]
    Serialise { what: &'static str, reason: String },
}

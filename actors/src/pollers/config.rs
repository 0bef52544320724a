//! `[[arr]]`: one Sonarr or Radarr whose history relayarr reads to catch up on webhooks it
//! never received.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::SourceKind;
use crate::sources::auth::Secret;

/// Which *arr app a poller reads. Decides the history query and the record shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrKind {
    /// Sonarr: episode history, with series and episode included.
    Sonarr,
    /// Radarr: movie history.
    Radarr,
}

impl ArrKind {
    /// The lowercase name, as in config.
    pub fn as_str(self) -> &'static str {
        match self {
            ArrKind::Sonarr => "sonarr",
            ArrKind::Radarr => "radarr",
        }
    }

    /// The source kind of the webhooks this app sends.
    pub fn source_kind(self) -> SourceKind {
        match self {
            ArrKind::Sonarr => SourceKind::Sonarr,
            ArrKind::Radarr => SourceKind::Radarr,
        }
    }
}

impl std::fmt::Display for ArrKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reconciliation poller.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrConfig {
    /// Unique name (letters, digits, `-`, `_`); the actor is `poller:{name}`, and the cursor
    /// is stored under it.
    pub name: String,
    /// `sonarr` or `radarr`.
    pub kind: ArrKind,
    /// The app's base URL including its URL base, e.g. `http://sonarr:8989`. No query: the
    /// key goes in `api_key`, and is sent as the `X-Api-Key` header, never in a URL.
    pub url: String,
    /// The app's API key (Settings → General). Keep it out of the file with
    /// `RELAYARR_ARR__{NAME}__API_KEY_FILE=/run/secrets/sonarr_api_key`.
    #[serde(default, skip_serializing)]
    pub api_key: Option<Secret>,
    /// The `[[source]]` whose webhooks this reconciles: recovered events carry its name as
    /// `instance`, and records it already received are not recovered again.
    pub source: String,
    /// How often the history is read.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// How far before the cursor each read starts again. History rows are not always
    /// committed in date order, and dates have whole seconds, so a read re-covers this much;
    /// records already handled are recognised by their id.
    #[serde(default = "default_overlap", with = "humantime_serde")]
    pub overlap: Duration,
    /// Records younger than this are left for the next read, so a webhook that is on its way
    /// (the app writes history and sends webhooks side by side) is not recovered as well.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Per-request timeout, connect included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_every() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_overlap() -> Duration {
    Duration::from_secs(60 * 60)
}
fn default_settle() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

//! `[[plex]]`: one Plex Media Server that relayarr keeps in sync.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cards::TitleCards;
use crate::hooks::filter::EventFilter;
use crate::hooks::retry::Rate;
use crate::pathmap::PathRewrite;
use crate::sources::auth::Secret;

/// One Plex server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexConfig {
    /// Unique name (letters, digits, `-`, `_`); the worker is `plex:{name}`.
    pub name: String,
    /// The server's base URL, e.g. `http://plex:32400`.
    pub url: String,
    /// The `X-Plex-Token`. Keep it out of the file with `RELAYARR_PLEX__{NAME}__TOKEN` or
    /// `RELAYARR_PLEX__{NAME}__TOKEN_FILE=/run/secrets/plex_token`.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// `json` (default: `Accept: application/json`) or `xml` (Plex's own default).
    #[serde(default)]
    pub format: PlexFormat,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Which events produce scans and card checks (the hooks' filter). Default: imports,
    /// upgrades, renames, deletes and Plex/Tautulli "recently added".
    #[serde(default = "default_events")]
    pub events: EventFilter,
    /// This server's own quiet period (else `[debounce] quiet`).
    #[serde(default, with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// Most Plex requests in flight at once (scans, lookups and uploads of all groups).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: NonZeroU32,
    /// Most sync actions started per interval, e.g. `"2/s"`. None: unlimited.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// First wait before a failed or not-yet-ready action is tried again (doubling).
    #[serde(default = "default_retry_base", with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest wait between tries.
    #[serde(default = "default_retry_cap", with = "humantime_serde")]
    pub retry_cap: Duration,
    /// How long to keep waiting for Plex to list an imported file before giving up on its
    /// title card. A partial scan is nudged before each new look.
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// Within one try, how long to poll for the files after the scan (Plex does not say
    /// when a scan is done) before backing off.
    #[serde(default = "default_ready_poll", with = "humantime_serde")]
    pub ready_poll: Duration,
    /// How often the library sections (and their folders) are read again.
    #[serde(default = "default_sections_every", with = "humantime_serde")]
    pub sections_every: Duration,
    /// TitleCardMaker's `interface_id`: events sent with `?interface_id=N` go only to the
    /// server with that id.
    #[serde(default)]
    pub interface_id: Option<String>,
    /// Rewrites from the senders' view of a path to this server's, in order (the first
    /// match applies): `{ from = "/tv", to = "/data/tv" }` or
    /// `{ regex = "^/mnt/(?P<d>\\w+)/", to = "/data/$d/" }`.
    #[serde(default)]
    pub path_rules: Vec<PathRewrite>,
    /// Try Plex's undocumented `?file=` filter first (always verified against
    /// `Part@file`); switched off by itself when the server ignores it.
    #[serde(default = "default_true")]
    pub file_filter: bool,
    /// Put custom title cards back after imports and upgrades.
    #[serde(default)]
    pub cards: Option<TitleCards>,
    /// Start disabled with `enabled = false`.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Which representation relayarr asks Plex for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlexFormat {
    /// `Accept: application/json` (the default).
    #[default]
    Json,
    /// Plex's own XML.
    Xml,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_events() -> EventFilter {
    EventFilter {
        kinds: ["import", "upgrade", "rename", "delete", "library_new"]
            .map(String::from)
            .to_vec(),
        ..EventFilter::default()
    }
}
fn default_max_in_flight() -> NonZeroU32 {
    NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_cap() -> Duration {
    Duration::from_secs(120)
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_ready_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_sections_every() -> Duration {
    Duration::from_secs(300)
}
fn default_true() -> bool {
    true
}

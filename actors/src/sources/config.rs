//! `[[source]]` configuration: one entry per sender instance (`sonarr`, `sonarr-4k`, `plex`, …).

use serde::{Deserialize, Serialize};

use super::auth::AuthConfig;
use super::{CustomMapping, JellyfinMapping, TautulliMapping};
use crate::model::SourceKind;

/// One configured inbound source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name; the source's URL is `/api/v1/webhooks/{name}`. Letters, digits, `-`, `_`.
    pub name: String,
    /// Which sender this is; decides the parser.
    pub kind: SourceKind,
    /// How the sender authenticates. Required: write `auth = "none"` to accept anyone.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Only these sender event names are stored and routed (case-insensitive, exact match),
    /// e.g. `["library.new", "media.scrobble"]` for Plex. Empty means all. A `?trigger_on=`
    /// query parameter (comma-separated, TitleCardMaker style) overrides this per request.
    #[serde(default)]
    pub trigger_on: Vec<String>,
    /// Tautulli only: which keys of your webhook JSON template hold which values.
    #[serde(default)]
    pub tautulli: TautulliMapping,
    /// Jellyfin only: which keys of your webhook plugin template hold which values. The
    /// defaults cover the plugin's own names and their snake_case/camelCase spellings.
    #[serde(default)]
    pub jellyfin: JellyfinMapping,
    /// Custom only: which keys of the sender's JSON hold which values.
    #[serde(default)]
    pub custom: CustomMapping,
    /// Rewrites from this sender's view of a path (a Windows Sonarr's `D:\TV`, another
    /// container's mount) to the common one that `[[plex]] path_rules` start from, in
    /// order: the first match applies.
    #[serde(default)]
    pub path_rules: Vec<crate::pathmap::PathRewrite>,
}

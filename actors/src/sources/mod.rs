//! Inbound sources: decoding request bodies, authenticating, and normalising each sender's
//! payload into a [`NormalizedEvent`]. Parsing is pure (one file per sender family); the
//! [`actor`] module wraps it in a supervised actor per configured source.

pub mod actor;
pub mod arr;
pub mod auth;
pub mod config;
pub mod custom;
pub mod decode;
pub mod error;
pub mod jellyfin;
pub(crate) mod keys;
pub(crate) mod lenient;
pub mod plex;
pub mod tautulli;

#[cfg(test)]
mod corpus_tests;

use serde_json::Value;

pub use custom::CustomMapping;
pub use error::ParseError;
pub use jellyfin::JellyfinMapping;
pub use tautulli::TautulliMapping;

use crate::model::{NormalizedEvent, SourceKind};

/// Per-source parser settings that come from config.
#[derive(Clone, Debug, Default)]
pub struct ParserOptions {
    /// Keys of the user's Tautulli template.
    pub tautulli: TautulliMapping,
    /// Keys of the user's Jellyfin webhook template.
    pub jellyfin: JellyfinMapping,
    /// Keys of a custom sender's JSON.
    pub custom: CustomMapping,
}

/// Normalises decoded JSON from a source of the given kind.
pub fn normalise(
    kind: SourceKind,
    instance: &str,
    opts: &ParserOptions,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    if !v.is_object() {
        return Err(ParseError::NotAnObject(json_type_name(v)));
    }
    match kind {
        SourceKind::Sonarr
        | SourceKind::Radarr
        | SourceKind::Lidarr
        | SourceKind::Readarr
        | SourceKind::Whisparr => arr::normalise_arr(kind, instance, v),
        SourceKind::Plex => plex::normalise_plex(instance, v),
        SourceKind::Tautulli => tautulli::normalise_tautulli(instance, &opts.tautulli, v),
        SourceKind::Jellyfin => jellyfin::normalise_jellyfin(instance, &opts.jellyfin, v),
        SourceKind::Custom => custom::normalise_custom(instance, &opts.custom, v),
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

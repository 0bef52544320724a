//! Sonarr, Radarr, Lidarr, Readarr and Whisparr payloads (the shared NzbDrone webhook framework).

use serde_json::Value;

use super::ParseError;
use crate::model::{NormalizedEvent, SourceKind};

/// Normalises one *arr webhook body (already decoded JSON).
pub fn normalise_arr(
    kind: SourceKind,
    instance: &str,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let _ = (kind, instance, v);
    Err(ParseError::MissingEventType("eventType".into()))
}

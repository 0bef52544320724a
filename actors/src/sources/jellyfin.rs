//! Jellyfin webhook plugin (Generic destination) bodies.

use serde_json::Value;

use super::ParseError;
use crate::model::NormalizedEvent;

/// Normalises one Jellyfin webhook plugin body.
pub fn normalise_jellyfin(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let _ = (instance, v);
    Err(ParseError::MissingEventType("NotificationType".into()))
}

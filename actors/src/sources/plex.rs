//! Plex Media Server webhooks: the JSON of the multipart `payload` part.

use serde_json::Value;

use super::ParseError;
use crate::model::NormalizedEvent;

/// Normalises the decoded `payload` JSON of one Plex webhook.
pub fn normalise_plex(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let _ = (instance, v);
    Err(ParseError::MissingEventType("event".into()))
}

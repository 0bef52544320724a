//! Custom JSON from any sender: `event` and `file_path` are required.

use serde_json::Value;

use super::ParseError;
use crate::model::NormalizedEvent;

/// Normalises one custom JSON body.
pub fn normalise_custom(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let _ = (instance, v);
    Err(ParseError::MissingEventType("event".into()))
}

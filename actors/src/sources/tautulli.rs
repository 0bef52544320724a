//! Tautulli webhook agent bodies: user-templated JSON, fields mapped by config.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ParseError;
use crate::model::NormalizedEvent;

/// Which JSON fields of the user's Tautulli template hold what.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TautulliMapping {}

/// Normalises one Tautulli webhook body using the configured field mapping.
pub fn normalise_tautulli(
    instance: &str,
    mapping: &TautulliMapping,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let _ = (instance, mapping, v);
    Err(ParseError::MissingEventType("action".into()))
}

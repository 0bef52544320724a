//! Why a request body could not become a [`crate::model::NormalizedEvent`]. Each variant maps
//! to one 4xx status in the HTTP layer (see `status()`), and carries the offending detail.

use thiserror::Error;

/// Why a body was refused; the detail never includes a secret.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing was sent.
    #[error("request body is empty")]
    Empty,
    /// The bytes are not UTF-8 (offset of the first bad byte).
    #[error("request body is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    /// The JSON ends early (serde_json's message).
    #[error("request body is truncated JSON: {0}")]
    Truncated(String),
    /// The JSON is invalid (serde_json's message).
    #[error("request body is malformed JSON: {0}")]
    Malformed(String),
    /// Nesting deeper than the limit (the limit).
    #[error("request body is JSON nested too deep (limit {0} levels)")]
    TooDeep(usize),
    /// A multipart body (Plex) without the `payload` part.
    #[error("multipart body has no `payload` part")]
    NoPayloadPart,
    /// The multipart framing is broken (multer's message).
    #[error("multipart body is malformed or unterminated: {0}")]
    BadMultipart(String),
    /// The `payload` part holds no JSON (serde_json's message).
    #[error("multipart `payload` part is not JSON: {0}")]
    PayloadNotJson(String),
    /// A content type we do not read (the type as sent).
    #[error("unsupported content type `{0}`: send application/json, text/plain JSON or multipart/form-data")]
    UnsupportedMediaType(String),
    /// No event type where the source puts it (the field expected).
    #[error("JSON has no event type: expected field `{0}`")]
    MissingEventType(String),
    /// A field the source's format requires is absent (its name).
    #[error("JSON is missing required field `{0}`")]
    MissingField(String),
    /// The body is JSON but not an object (the JSON type it is).
    #[error("JSON body must be an object, got {0}")]
    NotAnObject(&'static str),
}

impl ParseError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::UnsupportedMediaType(_) => 415,
            ParseError::MissingEventType(_) | ParseError::MissingField(_) => 422,
            _ => 400,
        }
    }
}

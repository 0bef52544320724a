//! Why a request body could not become a [`crate::model::NormalizedEvent`]. Each variant maps
//! to one 4xx status in the HTTP layer (see `status()`), and carries the offending detail.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("request body is empty")]
    Empty,
    #[error("request body is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("request body is truncated JSON: {0}")]
    Truncated(String),
    #[error("request body is malformed JSON: {0}")]
    Malformed(String),
    #[error("request body is JSON nested too deep (limit {0} levels)")]
    TooDeep(usize),
    #[error("multipart body has no `payload` part")]
    NoPayloadPart,
    #[error("multipart body is malformed or unterminated: {0}")]
    BadMultipart(String),
    #[error("multipart `payload` part is not JSON: {0}")]
    PayloadNotJson(String),
    #[error("unsupported content type `{0}`: send application/json, text/plain JSON or multipart/form-data")]
    UnsupportedMediaType(String),
    #[error("JSON has no event type: expected field `{0}`")]
    MissingEventType(String),
    #[error("JSON is missing required field `{0}`")]
    MissingField(String),
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

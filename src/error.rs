//! `ApiError`: every error the HTTP layer answers with. Each carries a stable machine `code`
//! (`unauthorized`, `invalid_field`, …) beside its message; 4xx carry a precise message,
//! 5xx are opaque to the client and logged in full.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use relayarr_actors::sources::ParseError;
use serde_json::json;

/// Every error an HTTP handler answers with: a typed 4xx with a JSON body naming the
/// problem, or an opaque, logged 5xx.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be decoded or normalised: 400, 415 or 422 (the parser's status).
    #[error("{0}")]
    BadInput(#[from] ParseError),
    /// Missing or wrong credentials: 401 with a `WWW-Authenticate` challenge.
    #[error("{message}")]
    Unauthorized {
        /// What was wrong (no secret is echoed).
        message: String,
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// No such route, source, event or target: 404.
    #[error("{0}")]
    NotFound(String),
    /// The admin API is off because no `server.admin_token` is set (404, so it cannot be
    /// probed).
    #[error("the admin API is disabled: set server.admin_token")]
    AdminDisabled,
    /// A value the client sent is well-formed JSON or query syntax but not acceptable:
    /// 422 naming the field.
    #[error("`{field}`: {message}")]
    InvalidField {
        /// The field, as a path (`hook.max_in_flight`).
        field: String,
        /// What is allowed.
        message: String,
    },
    /// A field the client must send is missing: 422 naming it.
    #[error("`{field}` is required: {message}")]
    MissingField {
        /// The field.
        field: String,
        /// What to send.
        message: String,
    },
    /// A field the endpoint does not know: 422 naming it.
    #[error("unknown field `{field}`; {message}")]
    UnknownField {
        /// The field.
        field: String,
        /// The fields allowed.
        message: String,
    },
    /// The route exists, but not for this method: 405 with `Allow`.
    #[error("method {method} not allowed; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods allowed, for the `Allow` header.
        allow: &'static str,
    },
    /// The body is over `server.max_body_bytes`: 413.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away, a bad chunk): 400.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive within `server.body_read_timeout`: 408, and the connection
    /// is closed.
    #[error("{0}")]
    BodyTimeout(String),
    /// An actor is restarting or did not answer, or the store is unavailable: 503 with
    /// `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicts with what exists (a hook of that name, one from the config
    /// file): 409.
    #[error("{0}")]
    Conflict(String),
    /// A bug or an unexpected failure: 500 with an opaque body; the detail is logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadInput(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::AdminDisabled => StatusCode::NOT_FOUND,
            ApiError::InvalidField { .. }
            | ApiError::MissingField { .. }
            | ApiError::UnknownField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code, for clients that branch on the kind of error. Never
    /// renamed once released; new kinds get new codes.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadInput(e) => match e {
                ParseError::Empty => "empty_body",
                ParseError::InvalidUtf8(_) => "invalid_utf8",
                ParseError::Truncated(_)
                | ParseError::Malformed(_)
                | ParseError::TooDeep(_)
                | ParseError::NotAnObject(_) => "malformed_json",
                ParseError::NoPayloadPart
                | ParseError::BadMultipart(_)
                | ParseError::PayloadNotJson(_) => "bad_multipart",
                ParseError::UnsupportedMediaType(_) => "unsupported_media_type",
                ParseError::MissingEventType(_) => "missing_event_type",
                ParseError::MissingField(_) => "missing_field",
            },
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::MissingField { .. } => "missing_field",
            ApiError::UnknownField { .. } => "unknown_field",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyRead(_) => "body_read_failed",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A 422 for a bad value of `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field an error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. }
            | ApiError::MissingField { field, .. }
            | ApiError::UnknownField { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A store failure behind an admin call is opaque to the client (logged in full).
impl From<relayarr_actors::store::StoreError> for ApiError {
    fn from(e: relayarr_actors::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({ "error": message, "code": self.code(), "status": status.as_u16() });
        if let Some(field) = self.field() {
            body["field"] = json!(field);
        }
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self {
            ApiError::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::BodyTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_code_and_field() {
        let resp = ApiError::invalid("rate", "`x` is not a rate").into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::invalid("rate", "x").code(), "invalid_field");
        assert_eq!(ApiError::invalid("rate", "x").field(), Some("rate"));
        assert_eq!(
            ApiError::PayloadTooLarge { limit: 1 }.code(),
            "payload_too_large"
        );
        assert_eq!(
            ApiError::BadInput(ParseError::UnsupportedMediaType("x".into())).code(),
            "unsupported_media_type"
        );
    }
}

//! The dashboard: one static page over the admin API, compiled into the binary (no build
//! step, no external assets). It asks for the admin token and keeps it in the tab's
//! session storage; every call it makes is an ordinary admin API call.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Only our own scripts and styles; the favicon is an inline `data:` URL.
const CSP: &str = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    summary = "The dashboard page",
    responses((status = 200, description = "HTML", body = String, content_type = "text/html"))
)]
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`.
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    summary = "A dashboard asset",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The script or style sheet", body = String),
        (status = 404, description = "No such dashboard file", body = crate::openapi::ErrorBody),
    )
)]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(page("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(page("text/css; charset=utf-8", APP_CSS)),
        _ => Err(ApiError::NotFound(format!("no dashboard file `{file}`"))),
    }
}

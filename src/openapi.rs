//! The OpenAPI document, served at `GET /api/v1/openapi.json`.
//!
//! It is generated from the `#[utoipa::path]` attributes on the handlers (in `http.rs`,
//! `observe.rs`, `dashboard.rs`), so a handler's documentation sits on the handler. Routes
//! whose handler is a closure in `http::router` (`/api/v1/health`, `/triggers/{name}`) are
//! documented by the attribute-only functions below; routes that share a handler (the
//! `/api/v1/admin/targets/{name}` forms of the hook routes, the drop-in aliases of
//! [`ALIASES`](crate::config::ALIASES)) are filled in by `Fill` from that handler's entry.
//! `tests/openapi.rs` checks the document against the router, both ways.

use std::collections::HashSet;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The JSON body of every error answer (see [`ApiError`](crate::error::ApiError)).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// Stable machine code: `not_found`, `unauthorized`, `invalid_field`, …
    pub code: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// The field or query parameter the error is about, when there is one.
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relayarr",
        description = "Webhook router for Sonarr, Radarr, Plex and friends. Admin routes need \
                       `Authorization: Bearer <server.admin_token>`; without a configured token \
                       they answer 404."
    ),
    paths(
        crate::http::ingest_named,
        ingest_trigger,
        api_health,
        openapi_json,
        crate::observe::healthz,
        crate::observe::readyz,
        crate::observe::metrics,
        crate::dashboard::index,
        crate::dashboard::asset,
        crate::http::admin_events,
        crate::http::admin_event,
        crate::http::admin_event_attempts,
        crate::http::admin_explain,
        crate::http::admin_replay_event,
        crate::http::admin_hooks,
        crate::http::admin_hook,
        crate::http::admin_patch_hook,
        crate::http::admin_create_hook,
        crate::http::admin_replace_hook,
        crate::http::admin_delete_hook,
        crate::http::admin_replay_hook,
        crate::http::admin_test_hook,
        crate::http::admin_targets,
        crate::http::admin_map_path,
        crate::http::admin_debouncer,
        crate::http::admin_rejections,
        crate::http::admin_actors,
        crate::http::admin_job,
        crate::http::admin_pollers,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Fill),
    tags(
        (name = "ingest", description = "Webhooks from the senders; each source's own auth"),
        (name = "admin", description = "Admin API (bearer token)"),
        (name = "observe", description = "Probes and metrics (no token)"),
        (name = "dashboard", description = "The static dashboard page"),
    )
)]
/// The OpenAPI document's definition; [`document`] renders it.
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!(r#"{{"error":"cannot render the OpenAPI document: {e}"}}"#))
    })
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "observe",
    summary = "This OpenAPI document (no token: it holds no secrets)",
    responses((status = 200, description = "OpenAPI 3.1 JSON", body = serde_json::Value))
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// Documents the closure `router()` registers for `/api/v1/health`.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "observe",
    summary = "Liveness (the older form of `/healthz`)",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value))
)]
#[allow(dead_code)]
fn api_health() {}

/// Documents the closure `router()` registers for `/triggers/{name}`; the drop-in aliases
/// are copied from it by [`Fill`].
#[utoipa::path(
    method(post, put),
    path = "/triggers/{name}",
    tag = "ingest",
    summary = "Drop-in trigger route: a webhook for the source `name`, or the one mapped in `[aliases]`",
    description = "Answers like `/api/v1/webhooks/{name}`.",
    params(("name" = String, Path, description = "Source name or kind (case-insensitive)")),
    request_body(content = serde_json::Value, description = "The sender's webhook payload"),
    responses(
        (status = 202, description = "Stored: `{id, duplicate: false}`", body = serde_json::Value),
        (status = 200, description = "A duplicate (`duplicate: true`) or filtered out (`filtered: true`)", body = serde_json::Value),
        (status = 400, description = "Empty, malformed or unreadable body", body = ErrorBody),
        (status = 401, description = "The source's credentials are missing or wrong", body = ErrorBody),
        (status = 404, description = "No source for this trigger", body = ErrorBody),
        (status = 405, description = "Method other than POST or PUT", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Unsupported media type", body = ErrorBody),
        (status = 422, description = "No event type, or a required field missing", body = ErrorBody),
        (status = 503, description = "Not committed (store failure, timeout, restarting source); retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn ingest_trigger() {}

/// Fills in what the attributes cannot say: the bearer scheme, routes that share a handler,
/// and unique operation ids.
struct Fill;

impl Modify for Fill {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`server.admin_token`"))
                    .build(),
            ),
        );

        let paths = &mut doc.paths.paths;
        // `router()` serves these hook handlers under /targets/ too.
        for (from, to) in [
            ("/api/v1/admin/hooks/{name}", "/api/v1/admin/targets/{name}"),
            (
                "/api/v1/admin/hooks/{name}/replay",
                "/api/v1/admin/targets/{name}/replay",
            ),
        ] {
            if let Some(mut item) = paths.get(from).cloned() {
                for op in operations(&mut item).into_iter().flatten() {
                    op.operation_id = op
                        .operation_id
                        .as_ref()
                        .map(|id| id.replace("hook", "target"));
                }
                paths.insert(to.to_owned(), item);
            }
        }
        // The drop-in aliases: fixed paths, answered like /triggers/{name} without the name.
        if let Some(trigger) = paths.get("/triggers/{name}").cloned() {
            for alias in crate::config::ALIASES {
                let mut item = trigger.clone();
                for op in operations(&mut item).into_iter().flatten() {
                    op.summary = Some(format!(
                        "Drop-in alias for {}: a webhook for the first {} source, or the one mapped in `[aliases]`",
                        alias.tool,
                        alias.kind.as_str()
                    ));
                    op.operation_id = Some(format!("alias{}", slug(alias.path)));
                    if let Some(ps) = &mut op.parameters {
                        ps.retain(|p| !(p.name == "name" && p.parameter_in == ParameterIn::Path));
                    }
                }
                paths.insert(alias.path.to_owned(), item);
            }
        }

        // One handler on several methods of a path: `ingest_named_post`, `ingest_named_put`.
        // Anything still repeated gets its path too (operation ids must be unique).
        let mut seen = HashSet::new();
        for (path, item) in paths.iter_mut() {
            let ids: Vec<Option<String>> = operations(item)
                .into_iter()
                .map(|op| op.and_then(|op| op.operation_id.clone()))
                .collect();
            for ((method, op), id) in METHODS.into_iter().zip(operations(item)).zip(&ids) {
                let Some(op) = op else { continue };
                let base = id.clone().unwrap_or_default();
                let mut id = if ids.iter().filter(|i| i.as_deref() == Some(&base)).count() > 1 {
                    format!("{base}_{method}")
                } else {
                    base
                };
                if !seen.insert(id.clone()) {
                    id = format!("{id}_{method}{}", slug(path));
                    seen.insert(id.clone());
                }
                op.operation_id = Some(id);
            }
        }
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `/api/sonarr/webhook` → `_api_sonarr_webhook`.
fn slug(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Every method slot of a path item, in the order of [`METHODS`].
fn operations(item: &mut PathItem) -> [Option<&mut Operation>; 8] {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_describes_the_patch_body_and_admin_security() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        let patch = &doc["paths"]["/api/v1/admin/hooks/{name}"]["patch"];
        let schema = &patch["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/LimitsPatch");
        let props = &doc["components"]["schemas"]["LimitsPatch"]["properties"];
        for field in ["max_in_flight", "rate", "burst", "enabled"] {
            assert!(props[field].is_object(), "{field}: {props}");
        }
        assert_eq!(
            doc["paths"]["/api/v1/admin/targets/{name}"]["patch"]["requestBody"],
            patch["requestBody"]
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["type"],
            "http"
        );
    }
}

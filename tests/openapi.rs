//! `GET /api/v1/openapi.json` against the router, both ways:
//!
//! - every (path, method) the document lists is answered by a real route: probed with
//!   placeholder parameters, it gets something other than the fallback's "no route" 404 or
//!   a 405;
//! - every route `router()` registers is in the document: [`ROUTES`] lists them (and is
//!   itself checked against the `.route("…"` lines of `src/http.rs`), and on each documented
//!   path every method the document leaves out must answer 405.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use reqwest::Method;

/// The routes `http::router()` registers (the drop-in aliases of `config::ALIASES` are
/// added below). Adding a route to the router without documenting it (`#[utoipa::path]` on
/// its handler, listed in `openapi::ApiDoc`) makes this test fail: add it here and document
/// it.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/webhooks/{name}", &["post", "put"]),
    ("/triggers/{name}", &["post", "put"]),
    ("/api/v1/health", &["get"]),
    ("/api/v1/openapi.json", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/", &["get"]),
    ("/dashboard/{file}", &["get"]),
    ("/api/v1/admin/events", &["get"]),
    ("/api/v1/admin/events/{id}", &["get"]),
    ("/api/v1/admin/events/{id}/attempts", &["get"]),
    ("/api/v1/admin/events/{id}/explain", &["get"]),
    ("/api/v1/admin/events/{id}/replay", &["post"]),
    ("/api/v1/admin/hooks", &["get", "post"]),
    (
        "/api/v1/admin/hooks/{name}",
        &["get", "patch", "put", "delete"],
    ),
    ("/api/v1/admin/hooks/{name}/replay", &["post"]),
    ("/api/v1/admin/hooks/{name}/test", &["post"]),
    ("/api/v1/admin/targets", &["get"]),
    (
        "/api/v1/admin/targets/{name}",
        &["get", "patch", "put", "delete"],
    ),
    ("/api/v1/admin/targets/{name}/replay", &["post"]),
    ("/api/v1/admin/map-path", &["get"]),
    ("/api/v1/admin/debouncer", &["get"]),
    ("/api/v1/admin/rejections", &["get"]),
    ("/api/v1/admin/pollers", &["get"]),
    ("/api/v1/admin/jobs/{id}", &["get"]),
    ("/api/v1/actors", &["get"]),
];

/// Methods the probes try on every documented path (HEAD and OPTIONS are axum's own).
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

fn expected_routes() -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (path, methods) in ROUTES {
        for m in *methods {
            set.insert((path.to_string(), m.to_string()));
        }
    }
    for alias in relayarr::config::ALIASES {
        for m in ["post", "put"] {
            set.insert((alias.path.to_string(), m.to_string()));
        }
    }
    set
}

/// `{param}` → a placeholder no source, hook, event or job is named.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str("openapi-probe");
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

async fn probe(relay: &TestRelay, path: &str, method: &str) -> (u16, serde_json::Value) {
    let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
    let resp = reqwest::Client::new()
        .request(m, relay.url(&concrete(path)))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("probe");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The router's fallback: a JSON 404 `not_found` whose error is "no route for <path>"
/// (a missing hook or event is also `not_found`, but names the hook or event).
fn is_no_route(status: u16, body: &serde_json::Value) -> bool {
    status == 404
        && body["code"] == "not_found"
        && body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no route for "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_router() {
    let relay = start_relay("").await;

    // Served without a token.
    let resp = reqwest::get(relay.url("/api/v1/openapi.json"))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json")));
    let doc: serde_json::Value = resp.json().await.expect("json");
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let mut documented = BTreeSet::new();
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut op_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            documented.insert((path.clone(), method.clone()));
            by_path
                .entry(path.clone())
                .or_default()
                .insert(method.clone());
            let id = op["operationId"].as_str().expect("operationId");
            assert!(op_ids.insert(id.to_owned()), "operationId {id} repeated");
            // Admin routes say they need the bearer token; no other route does.
            let secured = op["security"][0]["bearer"].is_array();
            assert_eq!(
                secured,
                path.starts_with("/api/v1/admin/") || path == "/api/v1/actors",
                "{method} {path}: security"
            );
            // Every `{param}` of the path is described.
            for param in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == param && p["in"] == "path"),
                    "{method} {path}: path parameter `{param}` undocumented"
                );
            }
        }
    }

    // Reverse direction: the router's routes are all documented.
    let expected = expected_routes();
    let undocumented: Vec<_> = expected.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without OpenAPI documentation: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&expected).collect();
    assert!(
        unknown.is_empty(),
        "documented routes missing from ROUTES (add them there if the router has them): {unknown:?}"
    );

    // Every documented (path, method) is a real route.
    for (path, method) in &documented {
        let (status, body) = probe(&relay, path, method).await;
        assert!(
            !is_no_route(status, &body) && status != 405,
            "documented {method} {path} is not routed: {status} {body}"
        );
    }
    // On each documented path, a method the document leaves out is not routed either.
    for (path, methods) in &by_path {
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let (status, body) = probe(&relay, path, method).await;
            assert_eq!(
                status, 405,
                "{method} {path} answers but is not documented: {body}"
            );
        }
    }
    // Sanity of the "no route" test itself.
    let (status, body) = probe(&relay, "/api/v1/admin/no-such-route", "get").await;
    assert!(is_no_route(status, &body), "{status} {body}");
    let (status, body) = probe(&relay, "/api/v1/admin/hooks/{name}", "get").await;
    assert!(
        !is_no_route(status, &body) && status == 404,
        "{status} {body}"
    );

    relay.stop().await;
}

/// `ROUTES` cannot go stale: every `.route("…"` literal in `src/http.rs` is in it.
#[test]
fn routes_list_covers_every_route_line_of_the_router() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http.rs"))
        .expect("src/http.rs");
    let listed: BTreeSet<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
    let mut found = 0;
    for chunk in src.split("route(").skip(1) {
        let chunk = chunk.trim_start();
        let Some(lit) = chunk.strip_prefix('"') else {
            continue; // `route(path, …)`: the ALIASES loop, covered by config::ALIASES.
        };
        let path = lit.split('"').next().expect("literal");
        found += 1;
        assert!(
            listed.contains(path),
            "router() registers {path}, which ROUTES (and so the OpenAPI check) does not list"
        );
    }
    assert!(found >= ROUTES.len(), "found only {found} route lines");
}

//! Hooks created, replaced and deleted at runtime through the admin API: validated like the
//! config file (422 naming the key), saved, started at once, routed to, alive after a
//! restart, and gone after a delete. Hooks of the config file are managed there (409).

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;

async fn send(
    relay: &TestRelay,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, relay.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hooks_created_at_runtime_route_survive_a_restart_and_can_be_deleted() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let configured = Receiver::start().await;
    let relay = start_relay(&hook_toml("from-config", &configured.hook_url(), "")).await;
    let client = reqwest::Client::new();

    // Validated like the config file.
    let (status, err) = send(
        &relay,
        reqwest::Method::POST,
        "/api/v1/admin/hooks",
        Some(serde_json::json!({"name": "made-live", "url": first.hook_url(), "rate": "fast"})),
    )
    .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (422, Some("rate")),
        "{err}"
    );
    let (status, err) = send(
        &relay,
        reqwest::Method::POST,
        "/api/v1/admin/hooks",
        Some(serde_json::json!({"name": "from-config", "url": first.hook_url()})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("conflict")),
        "{err}"
    );

    // Created: routed to at once.
    let (status, view) = send(
        &relay,
        reqwest::Method::POST,
        "/api/v1/admin/hooks",
        Some(serde_json::json!({
            "name": "made-live",
            "url": first.hook_url(),
            "max_in_flight": 2,
            "events": {"kinds": ["import"]}
        })),
    )
    .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["stats"]["max_in_flight"], 2, "{view}");
    let a = post_new(&client, &relay, sonarr_download("runtime", 1)).await;
    first.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first.event_ids(), vec![a.clone()]);

    // It survives a restart (saved in the store).
    let dir = relay.stop().await;
    let relay = start_relay_in(dir, &hook_toml("from-config", &configured.hook_url(), "")).await;
    let (status, view) = send(
        &relay,
        reqwest::Method::GET,
        "/api/v1/admin/hooks/made-live",
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let b = post_new(&client, &relay, sonarr_download("runtime", 2)).await;
    first.wait_for(2, Duration::from_secs(10)).await;

    // Replaced: the next events go to the new URL.
    let (status, view) = send(
        &relay,
        reqwest::Method::PUT,
        "/api/v1/admin/hooks/made-live",
        Some(serde_json::json!({"name": "made-live", "url": second.hook_url()})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let c = post_new(&client, &relay, sonarr_download("runtime", 3)).await;
    second.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(second.event_ids(), vec![c]);
    assert_eq!(first.event_ids(), vec![a, b]);

    // Config-file hooks are managed in the file.
    let (status, err) = send(
        &relay,
        reqwest::Method::DELETE,
        "/api/v1/admin/hooks/from-config",
        None,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("conflict")),
        "{err}"
    );

    // Deleted: no longer routed to, listed, or started again after a restart.
    let (status, _) = send(
        &relay,
        reqwest::Method::DELETE,
        "/api/v1/admin/hooks/made-live",
        None,
    )
    .await;
    assert_eq!(status, 204);
    post_new(&client, &relay, sonarr_download("runtime", 4)).await;
    configured.wait_for(4, Duration::from_secs(10)).await;
    second.assert_stays_at(1, Duration::from_millis(500)).await;
    let (status, _) = send(
        &relay,
        reqwest::Method::GET,
        "/api/v1/admin/hooks/made-live",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let dir = relay.stop().await;
    let relay = start_relay_in(dir, &hook_toml("from-config", &configured.hook_url(), "")).await;
    let (status, _) = send(
        &relay,
        reqwest::Method::GET,
        "/api/v1/admin/hooks/made-live",
        None,
    )
    .await;
    assert_eq!(status, 404, "a deleted hook is not started again");
    let tree: serde_json::Value = relay
        .admin_get("/api/v1/actors")
        .await
        .json()
        .await
        .expect("json");
    assert!(!tree.to_string().contains("made-live"), "{tree}");
    relay.stop().await;
}

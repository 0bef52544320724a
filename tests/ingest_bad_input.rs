//! Bad input gets a precise 4xx with a JSON error body, is never stored, and never takes the
//! process down.

mod common;

use common::*;

const SONARR_AUTH: &str = "Basic c29uYXJyOlBhNTV3MHJkIQ==";

fn request(path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {SONARR_AUTH}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn expect_error(relay: &TestRelay, raw: &[u8], status: u16, needle: &str) -> RawResponse {
    let resp = send_raw(relay.addr, raw).await;
    assert_eq!(
        resp.status,
        status,
        "expected {status} for {needle:?}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let body = resp.json();
    let msg = body["error"].as_str().expect("JSON error body");
    assert!(
        msg.to_lowercase().contains(needle),
        "error {msg:?} should mention {needle:?}"
    );
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rejects_each_kind_of_bad_body_precisely() {
    let relay = start_relay("").await;
    let json = Some("application/json");
    let sonarr = "/api/v1/webhooks/sonarr";

    expect_error(&relay, &request(sonarr, json, b""), 400, "empty").await;
    expect_error(
        &relay,
        &request(sonarr, json, b"{\"eventType\": \"Gra"),
        400,
        "truncated",
    )
    .await;
    expect_error(
        &relay,
        &request(sonarr, json, b"{\"eventType\": Grab}"),
        400,
        "malformed",
    )
    .await;
    expect_error(
        &relay,
        &request(sonarr, json, b"{\"eventType\":\"\xff\"}"),
        400,
        "utf-8",
    )
    .await;
    let deep = format!("{}{}", "{\"a\":".repeat(300), "}".repeat(300));
    expect_error(
        &relay,
        &request(sonarr, json, deep.as_bytes()),
        400,
        "too deep",
    )
    .await;
    expect_error(&relay, &request(sonarr, json, b"[1,2]"), 400, "object").await;
    expect_error(
        &relay,
        &request(sonarr, json, b"{\"series\":{}}"),
        422,
        "eventtype",
    )
    .await;
    expect_error(
        &relay,
        &request(
            sonarr,
            Some("application/x-www-form-urlencoded"),
            b"eventType=Grab",
        ),
        415,
        "content type",
    )
    .await;

    // Multipart (Plex): unterminated, payload not JSON, no boundary.
    let plex = "/api/v1/webhooks/plex?token=plex-token";
    let b = "XyZb0undary";
    let ct = format!("multipart/form-data; boundary={b}");
    let unterminated = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\n{{\"event\":\"library.new\"}}\r\n"
    );
    expect_error(
        &relay,
        &request(plex, Some(&ct), unterminated.as_bytes()),
        400,
        "multipart",
    )
    .await;
    let not_json = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\nhello\r\n--{b}--\r\n"
    );
    expect_error(
        &relay,
        &request(plex, Some(&ct), not_json.as_bytes()),
        400,
        "not json",
    )
    .await;
    expect_error(
        &relay,
        &request(plex, Some("multipart/form-data"), b"x"),
        400,
        "boundary",
    )
    .await;

    assert_eq!(relay.count_events().await, 0, "no bad request was stored");
    let health = reqwest::get(relay.url("/api/v1/health"))
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "process still up");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_text_plain_json_is_accepted() {
    let relay = start_relay("").await;
    let resp = send_raw(
        relay.addr,
        &request(
            "/api/v1/webhooks/sonarr",
            Some("text/plain; charset=utf-8"),
            br#"{"eventType":"Test","series":{"title":"Test Title"}}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(relay.count_events().await, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_auth_wrong_method_unknown_source_and_size_limits() {
    let relay = start_relay("").await;
    let client = reqwest::Client::new();

    // Wrong credentials: 401 with a challenge.
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("nope"))
        .header("content-type", "application/json")
        .body(r#"{"eventType":"Test"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .starts_with("Basic"));
    let resp = client
        .post(relay.url("/api/v1/webhooks/plex?token=wrong"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp = client
        .post(relay.url("/api/v1/webhooks/radarr"))
        .body(r#"{"eventType":"Test"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401, "missing header secret");

    // Wrong method: 405 with Allow and a JSON body.
    let resp = client
        .get(relay.url("/api/v1/webhooks/sonarr"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST, PUT");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert!(v["error"].as_str().expect("error").contains("GET"));

    // PUT is accepted (the *arr `Method` setting).
    let resp = client
        .put(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(r#"{"eventType":"Test","put":true}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);

    // Unknown source and unknown route: JSON 404.
    let resp = client
        .post(relay.url("/api/v1/webhooks/nope"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<serde_json::Value>().await.expect("json")["error"].is_string());

    // 413 from Content-Length alone, answered before any body byte is sent.
    let head = format!(
        "POST /api/v1/webhooks/sonarr HTTP/1.1\r\nHost: x\r\nAuthorization: {SONARR_AUTH}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let resp = send_raw(relay.addr, head.as_bytes()).await;
    assert_eq!(resp.status, 413);
    assert!(resp.json()["error"]
        .as_str()
        .expect("error")
        .contains("1048576"));

    // 413 for a chunked body that grows past the limit.
    let chunk = vec![b' '; 64 * 1024];
    let mut raw = format!(
        "POST /api/v1/webhooks/sonarr HTTP/1.1\r\nHost: x\r\nAuthorization: {SONARR_AUTH}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = send_raw(relay.addr, &raw).await;
    assert_eq!(resp.status, 413);

    assert_eq!(relay.count_events().await, 1, "only the PUT was stored");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_limits_are_configurable() {
    let relay = start_relay("max_body_bytes = 100").await;
    let body = format!(r#"{{"eventType":"Test","pad":"{}"}}"#, "x".repeat(200));
    let resp = send_raw(
        relay.addr,
        &request(
            "/api/v1/webhooks/sonarr",
            Some("application/json"),
            body.as_bytes(),
        ),
    )
    .await;
    assert_eq!(resp.status, 413);
    assert!(resp.json()["error"]
        .as_str()
        .expect("error")
        .contains("100 bytes"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_bearer_token() {
    let relay = start_relay("").await;
    let resp = reqwest::get(relay.url("/api/v1/admin/events/x"))
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .get(relay.url("/api/v1/admin/events/x"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let resp = relay.admin_get("/api/v1/admin/events/01NOPE").await;
    assert_eq!(resp.status(), 404);
    relay.stop().await;
}

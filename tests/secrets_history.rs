//! Secrets never reach the attempt history: a receiver that echoes what it got (headers,
//! signature, body) back in its response, and bodies where a secret straddles the 1 KiB cut,
//! read back through `GET /api/v1/admin/events/{id}/attempts`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Query;
use axum::http::HeaderMap;
use common::receiver::post_new;
use common::*;

/// The secret: characters that JSON escapes (`"`, `\`), one some encoders escape (`/`), and
/// `<` `>`, which HTML-safe encoders write as `\u003c` `\u003e`.
const SECRET: &str = r#"Sx"q\w/<7>e-TOKEN"#;
/// A header value shorter than six characters.
const SHORT: &str = "k9";
const BEARER: &str = "bearer-token-value";

/// A receiver answering 200 with `pad` bytes of `y` and then `{"body": <request body as a
/// JSON string>, "headers": {...}}`, like httpbin's echo.
async fn echo_receiver() -> std::net::SocketAddr {
    async fn echo(
        Query(q): Query<BTreeMap<String, usize>>,
        headers: HeaderMap,
        body: String,
    ) -> String {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let echoed = serde_json::json!({ "body": body, "headers": headers });
        format!("{}{echoed}", "y".repeat(q.get("pad").copied().unwrap_or(0)))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo receiver");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A `[[hook]]` signing with [`SECRET`]; `extra` lines appended.
fn hook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[hook]]\nname = \"{name}\"\nurl = \"{url}\"\nsigning = {{ hmac = {{ secret = '{SECRET}' }} }}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_history_excerpts_hide_echoed_escaped_and_straddling_secrets() {
    let echo = echo_receiver().await;
    // `req-cut`: the body puts the secret at offset 1020, across the 1 KiB cut.
    let pad = "x".repeat(1005);
    let req_cut = hook(
        "req-cut",
        &format!("http://{echo}/echo"),
        &format!("format = \"template\"\ntemplate = '{{\"pad\":\"{pad}\",\"t\":\"{{{{ data.media.title }}}}\"}}'"),
    );
    // `resp-cut`: the body is the secret; the echo puts it (JSON-escaped) at offset 1020 of
    // the response, across the cut.
    let resp_cut = hook(
        "resp-cut",
        &format!("http://{echo}/echo?pad=1011"),
        "format = \"template\"\ntemplate = '{{ data.media.title }}'",
    );
    // `headers`: the relayarr envelope (the secret JSON-escaped in it), credentials in
    // headers; the echo sends back the headers and the body (escaped twice).
    let headers = hook(
        "headers",
        &format!("http://{echo}/echo"),
        &format!(
            "headers = {{ \"X-Api-Key\" = \"{SHORT}\", \"Authorization\" = \"Bearer {BEARER}\" }}"
        ),
    );
    let relay = start_relay(&format!("{req_cut}{resp_cut}{headers}")).await;

    let body = serde_json::json!({
        "series": {"id": 1, "title": SECRET, "path": "/tv/Secret", "tvdbId": 1},
        "episodes": [{"seasonNumber": 1, "episodeNumber": 1, "title": "Pilot"}],
        "episodeFile": {"relativePath": "Season 01/S01E01.mkv", "path": "/tv/Secret/Season 01/S01E01.mkv"},
        "isUpgrade": false,
        "eventType": "Download",
        "instanceName": "Sonarr"
    });
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, body.to_string()).await;

    let attempts = eventually_some(Duration::from_secs(15), || async {
        let resp = relay
            .admin_get(&format!("/api/v1/admin/events/{id}/attempts"))
            .await;
        let v: serde_json::Value = resp.json().await.ok()?;
        let list = v["attempts"].as_array()?.clone();
        (list.len() == 3 && list.iter().all(|a| a["status"] == 200)).then_some(list)
    })
    .await;

    let by_hook: BTreeMap<&str, &serde_json::Value> = attempts
        .iter()
        .map(|a| (a["hook"].as_str().expect("hook"), a))
        .collect();
    // What must never appear, in any encoding: the start of the secret (raw, escaped once,
    // escaped twice), the short header value, the bearer token.
    let leaks = ["Sx", SHORT, BEARER, "sha256="];
    for (hook, a) in &by_hook {
        for field in ["request_excerpt", "response_excerpt"] {
            let text = a[field].as_str().expect("excerpt");
            assert!(text.len() <= 1024, "{hook} {field} is {} bytes", text.len());
            for leak in leaks {
                assert!(
                    !text.contains(leak),
                    "{hook} {field} leaks {leak:?}: {text}"
                );
            }
        }
    }

    // The cut fell inside the secret, and what is left of it is the marker, not the secret.
    let req = by_hook["req-cut"]["request_excerpt"]
        .as_str()
        .expect("excerpt");
    assert!(req.ends_with(&format!("{pad}\",\"t\":\"<red")), "{req}");
    let resp = by_hook["resp-cut"]["response_excerpt"]
        .as_str()
        .expect("excerpt");
    assert!(resp.ends_with("y{\"body\":\"<red"), "{resp}");
    // The echo of the headers and the twice-escaped body reached history, redacted.
    let echoed = by_hook["headers"]["response_excerpt"]
        .as_str()
        .expect("excerpt");
    for shown in [
        "\"x-api-key\":\"<redacted>\"",
        "\"authorization\":\"<redacted>\"",
        "\"x-relayarr-signature\":\"<redacted>\"",
        "\\\"title\\\":\\\"<redacted>\\\"",
    ] {
        assert!(echoed.contains(shown), "missing {shown} in {echoed}");
    }
    let sent = by_hook["headers"]["request_excerpt"]
        .as_str()
        .expect("excerpt");
    assert!(sent.contains("\"title\":\"<redacted>\""), "{sent}");
}

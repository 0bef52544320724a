//! Outbound hooks, the happy path: a committed event reaches each matching hook in the
//! relayarr envelope, with `webhook-id`/`webhook-timestamp`, and the attempt is recorded in
//! the history with redacted excerpts; `events = …` filters decide which hooks get it.

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;

/// Configured as a header value; also placed in the event so it would reach the excerpt.
const HEADER_SECRET: &str = "tok-9f3c1a7e5b";

/// A Sonarr `Download` whose envelope is well over the 1 KiB excerpt, with `HEADER_SECRET`
/// in its first episode's title, so it lands inside the excerpt whatever the key order.
fn big_download() -> String {
    let episodes: Vec<String> = (1..=40)
        .map(|e| {
            let title = if e == 1 {
                format!("Leaky {HEADER_SECRET} pilot")
            } else {
                format!("A rather long episode title number {e}")
            };
            format!(r#"{{"seasonNumber":2,"episodeNumber":{e},"title":"{title}"}}"#)
        })
        .collect();
    format!(
        r#"{{"series":{{"id":4242,"title":"Leaky Show","path":"/tv/Leaky Show","tvdbId":4242}},"episodes":[{}],"episodeFile":{{"relativePath":"Season 02/S02E01.mkv","path":"/tv/Leaky Show/Season 02/S02E01.mkv"}},"isUpgrade":false,"eventType":"Download","instanceName":"Sonarr"}}"#,
        episodes.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_delivery_sends_the_envelope_and_records_the_attempt() {
    let rx = Receiver::start().await;
    let extra = hook_toml(
        "a",
        &rx.hook_url(),
        &format!("headers = {{ \"X-Token\" = \"{HEADER_SECRET}\" }}\nevents = \"*\""),
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let id = post_new(&client, &relay, big_download()).await;

    rx.wait_for(1, Duration::from_secs(10)).await;
    let req = rx.requests().remove(0);
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("x-token"), Some(HEADER_SECRET));
    assert!(
        req.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    let webhook_id = req.webhook_id().expect("webhook-id header").to_owned();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    let ts: i64 = req
        .header("webhook-timestamp")
        .expect("webhook-timestamp header")
        .parse()
        .expect("unix seconds");
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (before - 1..=after + 1).contains(&ts),
        "timestamp {ts} not in [{before}, {after}]"
    );

    // The envelope.
    let body = req.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["event"], "import");
    assert_eq!(body["source"], "sonarr");
    assert_eq!(body["instance_id"], "sonarr");
    let stamp = body["timestamp"].as_str().expect("timestamp string");
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {stamp:?} is not RFC 3339: {e}"));
    assert_eq!(body["data"]["kind"], "import");
    assert_eq!(body["data"]["event_type"], "Download");
    assert_eq!(body["data"]["media"]["path"], "/tv/Leaky Show");
    assert_eq!(
        body["data"]["episodes"].as_array().map(Vec::len),
        Some(40),
        "{body}"
    );
    assert!(
        req.body.len() > 1024,
        "the envelope should exceed the excerpt"
    );

    // The attempt, in the history (written in batches).
    let attempts = wait_attempts(&relay, &id, 1).await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let a = &attempts[0];
    assert_eq!(a["hook"], "a");
    assert_eq!(a["event_id"], id.as_str());
    assert_eq!(a["webhook_id"], webhook_id.as_str());
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["status"], 200);
    assert!(a["error"].is_null(), "{a}");
    let excerpt = a["request_excerpt"].as_str().expect("request excerpt");
    assert!(!excerpt.is_empty());
    assert!(excerpt.len() <= 1024, "excerpt is {} bytes", excerpt.len());
    assert!(
        !excerpt.contains(HEADER_SECRET),
        "a configured header value leaked into the history: {excerpt}"
    );
    // The secret is in the sent body's first KiB, and redacted in the excerpt.
    let sent_head = String::from_utf8_lossy(&req.body[..1024]).into_owned();
    assert!(sent_head.contains(HEADER_SECRET), "{sent_head}");
    assert!(excerpt.contains("<redacted>"), "{excerpt}");
    assert!(
        a["response_excerpt"]
            .as_str()
            .is_some_and(|r| r.contains("fake receiver: 200")),
        "{a}"
    );

    // The hook's counters.
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "a").await;
        v["deliveries"]["succeeded"] == 1 && v["deliveries"]["pending"] == 0
    })
    .await;
    let v = hook_view(&relay, "a").await;
    assert_eq!(v["stats"]["name"], "a");
    assert_eq!(v["stats"]["enabled"], true);
    assert_eq!(v["stats"]["succeeded"], 1);
    assert_eq!(v["stats"]["attempts"], 1);
    assert_eq!(v["stats"]["failed"], 0);

    // The admin list shows it too, and the secret header value nowhere.
    let list = relay.admin_get("/api/v1/admin/hooks").await;
    assert_eq!(list.status(), 200);
    let text = list.text().await.expect("body");
    assert!(text.contains(r#""name":"a""#), "{text}");
    assert!(!text.contains(HEADER_SECRET), "{text}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_delivery_filters_by_kind_and_path() {
    let all = Receiver::start().await;
    let grabs = Receiver::start().await;
    let tv = Receiver::start().await;
    let movies = Receiver::start().await;
    let extra = [
        hook_toml("all", &all.hook_url(), ""),
        hook_toml(
            "grabs",
            &grabs.hook_url(),
            r#"events = { kinds = ["grab"] }"#,
        ),
        hook_toml(
            "tv",
            &tv.hook_url(),
            "method = \"PUT\"\nevents = { paths = [\"/tv/**\"] }",
        ),
        hook_toml(
            "movies",
            &movies.hook_url(),
            r#"events = { paths = ["/movies/**"] }"#,
        ),
    ]
    .concat();
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();

    let download = post_new(&client, &relay, sonarr_download("filter", 1)).await;
    all.wait_for(1, Duration::from_secs(10)).await;
    tv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(tv.requests()[0].method, "PUT");
    assert_eq!(tv.event_ids(), vec![download.clone()]);
    // The router creates every matching hook's delivery in one commit before handing any
    // out, so once `all` has it, a hook without a delivery row will never get it.
    for hook in ["grabs", "movies"] {
        let v = hook_view(&relay, hook).await;
        assert_eq!(
            v["deliveries"],
            serde_json::json!({"pending": 0, "succeeded": 0, "failed": 0}),
            "hook {hook}"
        );
    }
    assert_eq!(grabs.count(), 0);
    assert_eq!(movies.count(), 0);

    // A Grab (of a series under /tv) goes to `grabs`, `all` and `tv`, still not `movies`.
    let grab_body =
        std::fs::read_to_string(corpus().join("sonarr/Grab.json")).expect("Grab fixture");
    let grab = post_new(&client, &relay, grab_body).await;
    grabs.wait_for(1, Duration::from_secs(10)).await;
    all.wait_for(2, Duration::from_secs(10)).await;
    tv.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(grabs.event_ids(), vec![grab.clone()]);
    assert_eq!(grabs.requests()[0].json()["event"], "grab");
    let mut got = all.event_ids();
    got.sort();
    let mut want = vec![download, grab];
    want.sort();
    assert_eq!(got, want);
    let v = hook_view(&relay, "movies").await;
    assert_eq!(v["deliveries"]["pending"], 0);
    assert_eq!(v["deliveries"]["succeeded"], 0);
    assert_eq!(movies.count(), 0);
    relay.stop().await;
}

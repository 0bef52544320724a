//! Disabled hooks: a 410 or `disable_after` consecutive failures disable a hook; its later
//! deliveries stay pending (nothing is sent) until it is enabled through the admin API, then
//! they go out. Replays re-send delivered events with their original `webhook-id`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::receiver::*;
use common::*;
use serde_json::json;

/// Waits until `GET /api/v1/admin/hooks/{hook}` satisfies `cond`; returns that view.
async fn wait_view<F>(relay: &TestRelay, hook: &str, what: &str, cond: F) -> serde_json::Value
where
    F: Fn(&serde_json::Value) -> bool,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = hook_view(relay, hook).await;
        if cond(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hook {hook}: never {what}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts `sonarr_download(tag, i)` for every `i` in `range` while hook `a` is disabled,
/// waits until its view counts exactly those as pending, and checks that none of them was
/// sent: the receiver stays at `sent`. Returns their event ids, in `range` order.
async fn post_held(
    client: &reqwest::Client,
    relay: &TestRelay,
    rx: &Receiver,
    tag: &str,
    range: std::ops::Range<usize>,
    sent: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in range {
        ids.push(post_new(client, relay, sonarr_download(tag, i)).await);
    }
    let held = ids.len();
    wait_view(relay, "a", &format!("holding {held} pending"), |v| {
        v["deliveries"]["pending"] == held
    })
    .await;
    rx.assert_stays_at(sent, QUIET).await;
    ids
}

/// How long to watch for requests that must not come. A disabled hook has no timer that
/// could fire later than this: its actor sends nothing until it is enabled.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_disable_on_410_keeps_later_events_pending_until_enabled() {
    let rx = Receiver::start_with(Reply::status(410)).await;
    let extra = hook_toml("a", &rx.hook_url(), "");
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let gone = post_new(&client, &relay, sonarr_download("410", 0)).await;

    // The worker disables the hook as it decides the outcome; the failed row is written
    // by its writer a moment later.
    let v = wait_view(&relay, "a", "disabled, its delivery failed", |v| {
        v["stats"]["enabled"] == false && v["deliveries"]["failed"] == 1
    })
    .await;
    let reason = v["stats"]["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "disabled_reason {reason:?}");
    assert_eq!(v["deliveries"]["pending"], 0, "{v:#}");
    assert_eq!(rx.count(), 1);

    // Later events are kept, not sent.
    rx.set_status(200);
    let later = post_held(&client, &relay, &rx, "410", 1..3, 1).await;

    // Enabled again: the pending ones go out; the 410'd one stays failed.
    let v = patch_hook(&relay, "a", json!({"enabled": true})).await;
    assert_eq!(v["stats"]["enabled"], true, "{v:#}");
    assert!(v["stats"]["disabled_reason"].is_null(), "{v:#}");
    rx.wait_for(3, Duration::from_secs(10)).await;
    let sent: HashSet<String> = rx.event_ids()[1..].iter().cloned().collect();
    assert_eq!(sent, later.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(rx.event_ids()[0], gone);
    wait_view(&relay, "a", "done", |v| {
        v["deliveries"] == json!({"pending": 0, "succeeded": 2, "failed": 1})
    })
    .await;
    relay.stop().await;
}

/// Deliveries that waited in the store (here across a restart, so none is in the worker's
/// memory) are loaded a page at a time, with their events read in the same query: each
/// body must still carry its own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_disable_rows_loaded_from_the_store_carry_their_own_events() {
    let rx = Receiver::start_with(Reply::status(200)).await;
    let relay = start_relay(&hook_toml("a", &rx.hook_url(), "enabled = false")).await;
    let client = reqwest::Client::new();
    let ids = post_held(&client, &relay, &rx, "page", 0..12, 0).await;

    let dir = relay.stop().await;
    let relay = start_relay_in(dir, &hook_toml("a", &rx.hook_url(), "")).await;
    rx.wait_for(12, Duration::from_secs(10)).await;
    let sent = rx.by_event_id();
    for (i, id) in ids.iter().enumerate() {
        let bodies: Vec<serde_json::Value> = sent[id].iter().map(|r| r.json()).collect();
        assert_eq!(bodies.len(), 1, "event {i} sent {} times", bodies.len());
        assert_eq!(
            bodies[0]["data"]["media"]["path"],
            format!("/tv/Hook page {i}"),
            "event {i} ({id}) went out with another event's body: {:#}",
            bodies[0]
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_disable_after_consecutive_failures_then_enable_and_replay() {
    let rx = Receiver::start_with(Reply::status(500)).await;
    let extra = hook_toml(
        "a",
        &rx.hook_url(),
        "disable_after = 3\nretry = \"none\"\nmax_in_flight = 1",
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post_new(&client, &relay, sonarr_download("auto", i)).await);
    }
    let v = wait_view(&relay, "a", "disabled", |v| v["stats"]["enabled"] == false).await;
    let reason = v["stats"]["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains('3'), "disabled_reason {reason:?}");
    assert_eq!(v["stats"]["consecutive_failures"], 3, "{v:#}");
    wait_view(&relay, "a", "3 failed", |v| v["deliveries"]["failed"] == 3).await;
    assert_eq!(rx.count(), 3);

    // While disabled, new deliveries pile up as pending and nothing is sent.
    ids.extend(post_held(&client, &relay, &rx, "auto", 3..6, 3).await);

    // Receiver fixed, hook enabled: the pending ones arrive.
    rx.set_status(200);
    let v = patch_hook(&relay, "a", json!({"enabled": true})).await;
    assert_eq!(v["stats"]["enabled"], true, "{v:#}");
    rx.wait_for(6, Duration::from_secs(10)).await;
    let sent: HashSet<String> = rx.event_ids()[3..].iter().cloned().collect();
    assert_eq!(sent, ids[3..].iter().cloned().collect::<HashSet<_>>());
    wait_view(&relay, "a", "3 succeeded", |v| {
        v["deliveries"] == json!({"pending": 0, "succeeded": 3, "failed": 3})
    })
    .await;

    // Replay one delivered event: sent again with the same webhook-id.
    let replayed = &ids[4];
    let first_id = rx
        .requests()
        .iter()
        .find(|r| r.event_id.as_ref() == Some(replayed))
        .and_then(|r| r.webhook_id().map(str::to_owned))
        .expect("delivered once");
    let v = replay_job(&relay, &format!("/api/v1/admin/events/{replayed}/replay")).await;
    assert_eq!(v["subject"], replayed.as_str());
    assert_eq!(v["targets"], json!([{"target": "a", "requeued": 1}]));
    rx.wait_for(7, Duration::from_secs(10)).await;
    let again = &rx.requests()[6];
    assert_eq!(again.event_id.as_ref(), Some(replayed));
    assert_eq!(again.webhook_id(), Some(first_id.as_str()));

    // Replay everything of the last hour: all six go out again, failed ones included.
    let v = replay_job(&relay, "/api/v1/admin/hooks/a/replay?since=1h").await;
    assert_eq!(v["subject"], "a");
    assert_eq!(v["requeued"], 6, "{v}");
    rx.wait_for(13, Duration::from_secs(10)).await;
    let resent: HashSet<String> = rx.event_ids()[7..].iter().cloned().collect();
    assert_eq!(resent, ids.iter().cloned().collect::<HashSet<_>>());
    // One webhook-id per event across every send.
    let mut by_event: HashMap<String, HashSet<String>> = HashMap::new();
    for r in rx.requests() {
        by_event
            .entry(r.event_id.clone().expect("envelope id"))
            .or_default()
            .insert(r.webhook_id().expect("webhook-id").to_owned());
    }
    assert!(by_event.values().all(|w| w.len() == 1), "{by_event:#?}");
    wait_view(&relay, "a", "all succeeded", |v| {
        v["deliveries"] == json!({"pending": 0, "succeeded": 6, "failed": 0})
    })
    .await;

    // An unknown event is a 404, not an empty replay.
    let resp = reqwest::Client::new()
        .post(relay.url("/api/v1/admin/events/01J0000000000000000000000/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 404);
    relay.stop().await;
}

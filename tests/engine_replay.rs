//! Replays go through the target's worker, the only writer of its rows (issue 6 §1,
//! "Replays bypass the worker").
//!
//! Proves, at the receiver: a replay of a delivery that is in flight is delivered once the
//! original attempt has finished (the original's outcome does not overwrite the replay, as
//! it did when the admin API rewrote the row behind the worker's back), with the same
//! `webhook-id`, and the row ends `succeeded` with nothing pending; and a replay of a hook's
//! deliveries since a time sends every delivered event again and reports how many.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::receiver::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_replay_of_in_flight_delivery_is_delivered() {
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(1500))).await;
    let relay = start_relay(&hook_toml("replay", &rx.hook_url(), "timeout = \"10s\"")).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("replay-in-flight", 1)).await;

    // The original attempt is being answered (1.5 s) when the replay arrives.
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 1 }).await;
    let v = replay_job(&relay, &format!("/api/v1/admin/events/{id}/replay")).await;
    assert_eq!(
        (rx.count(), rx.in_flight()),
        (1, 1),
        "the replay must be requested while the original is in flight"
    );
    assert_eq!(v["state"], "done", "{v:#}");
    assert_eq!(
        v["targets"],
        serde_json::json!([{"target": "replay", "requeued": 1}]),
        "{v:#}"
    );

    // The original, then the replay.
    rx.wait_for(2, Duration::from_secs(15)).await;
    let reqs = rx.requests();
    assert_eq!(reqs[0].event_id.as_deref(), Some(id.as_str()));
    assert_eq!(reqs[1].event_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        reqs[0].webhook_id(),
        reqs[1].webhook_id(),
        "a replay is the same delivery, with the same webhook-id"
    );
    assert!(
        reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(1400),
        "the replay was sent after the original finished, not beside it"
    );
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "replay").await;
        v["deliveries"]["succeeded"] == 1 && v["deliveries"]["pending"] == 0
    })
    .await;
    // The replay is sent once, not again and again.
    rx.assert_stays_at(2, Duration::from_millis(1500)).await;
    let v = hook_view(&relay, "replay").await;
    assert_eq!(v["deliveries"]["succeeded"], 1, "{v:#}");
    assert_eq!(v["deliveries"]["pending"], 0, "{v:#}");
    assert_eq!(v["deliveries"]["failed"], 0, "{v:#}");
    let attempts = wait_attempts(&relay, &id, 2).await;
    assert!(attempts.iter().all(|a| a["status"] == 200), "{attempts:#?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_replay_since_requeues_delivered_events() {
    let rx = Receiver::start().await;
    let relay = start_relay(&hook_toml("since", &rx.hook_url(), "")).await;
    let ids: HashSet<String> = post_many(&relay, "replay-since", 0..5)
        .await
        .into_iter()
        .collect();
    rx.wait_for(5, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "since").await;
        v["deliveries"]["succeeded"] == 5 && v["deliveries"]["pending"] == 0
    })
    .await;
    let first: Vec<String> = rx.webhook_ids();

    let v = replay_job(&relay, "/api/v1/admin/hooks/since/replay?since=1h").await;
    assert_eq!(v["requeued"], 5, "{v:#}");
    assert_eq!(v["subject"], "since", "{v:#}");
    assert_eq!(v["state"], "done", "{v:#}");

    rx.wait_for(10, Duration::from_secs(10)).await;
    rx.assert_stays_at(10, Duration::from_millis(1000)).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for w in rx.webhook_ids() {
        *per_id.entry(w).or_default() += 1;
    }
    assert_eq!(per_id.len(), 5, "{per_id:?}");
    assert!(
        per_id.values().all(|n| *n == 2),
        "every delivery sent once, then once again: {per_id:?}"
    );
    assert_eq!(
        first.iter().cloned().collect::<HashSet<_>>(),
        per_id.keys().cloned().collect::<HashSet<_>>(),
        "the replays carry the original webhook-ids"
    );
    assert_eq!(
        rx.event_ids()[5..].iter().cloned().collect::<HashSet<_>>(),
        ids,
        "all 5 events arrived again"
    );
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "since").await;
        v["deliveries"]["succeeded"] == 5 && v["deliveries"]["pending"] == 0
    })
    .await;
    relay.stop().await;
}

//! Event retention over HTTP, against the real relay: with `[history] events_max_count`,
//! the oldest finished events go (their deliveries and attempts with them), events whose
//! delivery is still pending stay whatever their age, and `/metrics` counts what went.

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_retention_prunes_finished_events_and_keeps_pending_ones() {
    let rx = Receiver::start().await;
    let extra = format!(
        "[history]\nevents_max_count = 3\nprune_every = \"300ms\"\n{}",
        hook_toml(
            "a",
            &rx.hook_url(),
            "events = \"*\"\nretry = \"exponential:10\"\nretry_base = \"1h\"",
        )
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();

    // First two events that the receiver refuses (pending, retried in an hour): the
    // oldest. Then six that it accepts (finished).
    rx.set_status(503);
    let mut pending = Vec::new();
    for i in 0..2 {
        pending.push(post_new(&client, &relay, sonarr_download("retention", i)).await);
    }
    rx.wait_for(2, Duration::from_secs(10)).await;
    rx.set_status(200);
    let mut done = Vec::new();
    for i in 2..8 {
        done.push(post_new(&client, &relay, sonarr_download("retention", i)).await);
    }
    // Retention runs meanwhile: a finished event may go as soon as it is delivered.
    rx.wait_for(8, Duration::from_secs(10)).await;

    // Over the cap of 3: the five oldest finished events go; the newest finished one and
    // the two pending ones, older than all, stay (pending work is never dropped).
    let status = |id: String| {
        let relay = &relay;
        async move {
            relay
                .admin_get(&format!("/api/v1/admin/events/{id}"))
                .await
                .status()
                .as_u16()
        }
    };
    eventually(Duration::from_secs(15), || async {
        let mut gone = 0;
        for id in &done[..5] {
            if status(id.clone()).await == 404 {
                gone += 1;
            }
        }
        gone == 5
    })
    .await;
    // Give retention a few more runs: nothing else may go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in done[5..].iter().chain(&pending) {
        assert_eq!(status(id.clone()).await, 200, "event {id} must stay");
    }
    for id in &pending {
        let d = relay.delivery(id, "a").await.expect("its delivery stays");
        assert_eq!(d.state, "pending");
    }
    // Their attempts went with them; the kept ones' attempts are still there.
    let attempts = |id: String| {
        let relay = &relay;
        async move {
            let resp = relay
                .admin_get(&format!("/api/v1/admin/events/{id}/attempts"))
                .await;
            let v: serde_json::Value = resp.json().await.expect("json");
            v["attempts"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(attempts(done[0].clone()).await, 0);
    assert_eq!(attempts(done[5].clone()).await, 1);
    assert_eq!(attempts(pending[0].clone()).await, 1);
    let list: serde_json::Value = relay
        .admin_get("/api/v1/admin/events?limit=100")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        list["events"].as_array().expect("events").len(),
        3,
        "{list}"
    );

    let metrics = relay
        .admin_get("/metrics")
        .await
        .text()
        .await
        .expect("text");
    let pruned = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relayarr_events_pruned_total "))
        .unwrap_or_else(|| panic!("no relayarr_events_pruned_total in\n{metrics}"));
    assert_eq!(pruned.trim(), "5");
    relay.stop().await;
}

//! Concurrent ingest: every 2xx is stored exactly once; duplicates within the window are
//! answered 200 with the first id and not stored again.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

fn sonarr_body(i: usize) -> String {
    format!(
        r#"{{"series":{{"id":{i},"title":"Show {i}","path":"/tv/Show {i}","tvdbId":{i}}},"episodes":[{{"seasonNumber":1,"episodeNumber":{i},"title":"Ep {i}"}}],"episodeFile":{{"relativePath":"Season 01/Show {i} - S01E{i:02}.mkv","path":"/tv/Show {i}/Season 01/Show {i} - S01E{i:02}.mkv"}},"isUpgrade":false,"eventType":"Download","instanceName":"Sonarr"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_200_concurrent_requests_are_all_stored_exactly_once() {
    let relay = start_relay("").await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = client.clone();
        let url = relay.url("/api/v1/webhooks/sonarr");
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .basic_auth("sonarr", Some("Pa55w0rd!"))
                .header("content-type", "application/json")
                .body(sonarr_body(i))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.expect("json");
            (status, v["id"].as_str().map(str::to_owned))
        });
    }
    let mut ids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, id) = r.expect("task");
        assert_eq!(status, 202);
        assert!(ids.insert(id.expect("id")), "ids are unique");
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(relay.count_events().await, 200, "stored exactly once each");

    // Every stored row is one of the acknowledged ids.
    let stored: HashSet<String> = stored_ids(&relay.store).await.into_iter().collect();
    assert_eq!(stored, ids);

    // And the router gets every one of them.
    eventually(Duration::from_secs(10), || async {
        relay.all_routed().await
    })
    .await;
    let ev = relay.stored_event(ids.iter().next().expect("an id")).await;
    assert_eq!(ev["status"], "routed");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_duplicate_body_within_window_returns_first_id() {
    let relay = start_relay("[store]\ndedup_window = \"300ms\"\n").await;
    let client = reqwest::Client::new();
    let (s1, v1) = post_sonarr(&client, &relay, sonarr_body(1)).await;
    assert_eq!((s1, v1["duplicate"].as_bool()), (202, Some(false)));
    let (s2, v2) = post_sonarr(&client, &relay, sonarr_body(1)).await;
    assert_eq!((s2, v2["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(v1["id"], v2["id"]);
    // Another source with the same body is not a duplicate.
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr-open"))
        .header("content-type", "application/json")
        .body(sonarr_body(1))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    assert_eq!(relay.count_events().await, 2);

    // After the window, the same body is a new event.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s3, v3) = post_sonarr(&client, &relay, sonarr_body(1)).await;
    assert_eq!(s3, 202);
    assert_ne!(v3["id"], v1["id"]);
    assert_eq!(relay.count_events().await, 3);
    relay.stop().await;
}

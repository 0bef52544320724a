//! Per-hook limits, observed at the receiver: `max_in_flight` caps concurrent requests and
//! `rate`/`burst` space them out; both can be changed at runtime through the admin API, take
//! effect for the next request, and survive a restart.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;
use serde_json::json;

/// Asserts that the arrival times obey `rate` per second with `burst`: any `k` consecutive
/// arrivals span at least `(k - burst) / rate` seconds (the GCRA bound, one interval of slack
/// for network jitter), checked over every pair.
fn assert_rate(label: &str, arrivals: &[Instant], rate: f64, burst: usize) {
    let mut a = arrivals.to_vec();
    a.sort();
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let span = a[j].duration_since(a[i]).as_secs_f64();
            let min = (j - i).saturating_sub(burst) as f64 / rate;
            assert!(
                span + 0.002 >= min,
                "{label}: arrivals {i}..={j} span {:.0} ms, a rate of {rate}/s with burst {burst} \
                 needs at least {:.0} ms",
                span * 1000.0,
                min * 1000.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_limits_max_in_flight_caps_concurrency_and_can_be_lowered_at_runtime() {
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(200))).await;
    let extra = hook_toml("a", &rx.hook_url(), "max_in_flight = 3");
    let relay = start_relay(&extra).await;

    post_many(&relay, "cap", 0..30).await;
    rx.wait_for(30, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 0 }).await;
    assert_eq!(
        rx.peak(),
        3,
        "30 queued deliveries of 200 ms with max_in_flight = 3 should run exactly 3 at once"
    );

    // Lower the cap while a backlog is queued.
    rx.set_delay(Duration::from_millis(100));
    post_many(&relay, "cap", 30..50).await;
    rx.wait_for(33, Duration::from_secs(10)).await;
    let v = patch_hook(&relay, "a", json!({"max_in_flight": 1})).await;
    assert_eq!(v["stats"]["max_in_flight"], 1, "{v}");
    // Requests started before the change finish as they are; after that, one at a time.
    eventually(Duration::from_secs(10), || async { rx.in_flight() <= 1 }).await;
    rx.reset_peak();
    post_many(&relay, "cap", 50..60).await;
    rx.wait_for(60, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 0 }).await;
    assert_eq!(rx.peak(), 1, "max_in_flight = 1 after the PATCH");
    let ids: HashSet<String> = rx.event_ids().into_iter().collect();
    assert_eq!(ids.len(), 60, "every event delivered once");

    // The change is persisted.
    let dir = relay.stop().await;
    let relay = start_relay_in(dir, &extra).await;
    let v = hook_view(&relay, "a").await;
    assert_eq!(v["stats"]["max_in_flight"], 1, "{v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_limits_rate_spaces_requests_and_can_be_changed_at_runtime() {
    let rx = Receiver::start().await;
    let extra = hook_toml("a", &rx.hook_url(), "max_in_flight = 8\nrate = \"20/s\"");
    let relay = start_relay(&extra).await;
    let v = hook_view(&relay, "a").await;
    assert_eq!(v["stats"]["rate"], "20/s", "{v}");
    assert_eq!(v["stats"]["burst"], 1, "{v}");

    post_many(&relay, "rate", 0..60).await;
    rx.wait_for(60, Duration::from_secs(30)).await;
    let arrivals: Vec<Instant> = rx.requests().iter().map(|r| r.at).collect();
    assert_rate("20/s", &arrivals, 20.0, 1);

    // Slower at runtime: the next requests follow the new rate.
    let v = patch_hook(&relay, "a", json!({"rate": "5/s"})).await;
    assert_eq!(v["stats"]["rate"], "5/s", "{v}");
    let slow: HashSet<String> = post_many(&relay, "rate", 60..70)
        .await
        .into_iter()
        .collect();
    rx.wait_for(70, Duration::from_secs(30)).await;
    let arrivals: Vec<Instant> = rx
        .requests()
        .iter()
        .filter(|r| r.event_id.as_ref().is_some_and(|id| slow.contains(id)))
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 10);
    assert_rate("5/s after PATCH", &arrivals, 5.0, 1);

    // A larger burst is allowed at once, then the rate holds again.
    let v = patch_hook(&relay, "a", json!({"rate": "10/s", "burst": 4})).await;
    assert_eq!(
        (v["stats"]["rate"].as_str(), v["stats"]["burst"].as_u64()),
        (Some("10/s"), Some(4))
    );
    let burst: HashSet<String> = post_many(&relay, "rate", 70..90)
        .await
        .into_iter()
        .collect();
    rx.wait_for(90, Duration::from_secs(30)).await;
    let arrivals: Vec<Instant> = rx
        .requests()
        .iter()
        .filter(|r| r.event_id.as_ref().is_some_and(|id| burst.contains(id)))
        .map(|r| r.at)
        .collect();
    assert_rate("10/s burst 4 after PATCH", &arrivals, 10.0, 4);

    // `null` removes the limit.
    let v = patch_hook(&relay, "a", json!({"rate": null})).await;
    assert!(v["stats"]["rate"].is_null(), "{v}");
    post_many(&relay, "rate", 90..120).await;
    rx.wait_for(120, Duration::from_secs(30)).await;
    relay.stop().await;
}

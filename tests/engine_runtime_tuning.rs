//! Runtime tuning of a hook's limits through the admin API, without a restart (issue 7, "How
//! it is checked"): while 2,000 events flow to a slow receiver, lowering `max_in_flight`
//! from 8 to 2 brings the in-flight count observed at the receiver down to 2 or fewer within
//! one request's latency, and it stays there; then a low `rate` holds the arrival rate at
//! the receiver under it, and raising the rate makes the observed rate rise. The admin view
//! shows the new limits, a bad value is refused with 422 naming its field and changes
//! nothing, and the last limits survive a restart (they win over the config file's values).

mod common;

use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;
use serde_json::json;

const EVENTS: usize = 2_000;
/// One request's latency at the receiver while the cap is tuned.
const SLOW: Duration = Duration::from_millis(300);
/// Scheduling and loopback slack on top of one request's latency.
const MARGIN: Duration = Duration::from_millis(150);
/// How long each rate is measured for.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Posts `sonarr_download(tag, i)` for `i in 0..n` from 8 background tasks, so the test
/// can tune the hook while ingest is still going on.
fn post_in_background(relay: &TestRelay, tag: &str, n: usize) -> tokio::task::JoinSet<usize> {
    let client = reqwest::Client::new();
    let url = relay.url("/api/v1/webhooks/sonarr");
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..8 {
        let (client, url, tag) = (client.clone(), url.clone(), tag.to_owned());
        tasks.spawn(async move {
            let mut accepted = 0;
            for i in (part..n).step_by(8) {
                let resp = client
                    .post(&url)
                    .basic_auth("sonarr", Some("Pa55w0rd!"))
                    .header("content-type", "application/json")
                    .body(sonarr_download(&tag, i))
                    .send()
                    .await
                    .expect("send to relay");
                assert_eq!(resp.status(), 202, "event {tag} {i} not accepted");
                accepted += 1;
            }
            accepted
        });
    }
    tasks
}

/// Requests per second that arrived at the receiver in `[from, from + len)`.
fn observed_rate(rx: &Receiver, from: Instant, len: Duration) -> (usize, f64) {
    let to = from + len;
    let n = rx
        .requests()
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .count();
    (n, n as f64 / len.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_runtime_tuning_cap_and_rate_apply_without_a_restart() {
    let started = Instant::now();
    let rx = Receiver::start_with(Reply::status(200).delay(SLOW)).await;
    let relay = start_relay(&hook_toml("slow", &rx.hook_url(), "max_in_flight = 8")).await;
    let v = hook_view(&relay, "slow").await;
    assert_eq!(v["stats"]["max_in_flight"], 8, "{v}");
    assert!(v["stats"]["rate"].is_null(), "{v}");

    let mut posters = post_in_background(&relay, "tuning", EVENTS);

    // 1. The configured cap is reached: 8 requests of 300 ms at once.
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 8 }).await;

    // 2. Lower the cap to 2 while 8 are in flight and the backlog is large.
    let patched = Instant::now();
    let v = patch_hook(&relay, "slow", json!({"max_in_flight": 2})).await;
    let applied = Instant::now();
    let answered = applied.duration_since(patched);
    assert_eq!(v["stats"]["max_in_flight"], 2, "{v}");
    // The change is in force once answered. The requests started before it finish as they
    // are (within one latency); no new one starts until fewer than 2 are in flight.
    let dropped = loop {
        if rx.in_flight() <= 2 {
            break applied.elapsed();
        }
        assert!(
            applied.elapsed() <= SLOW + MARGIN,
            "{} requests still in flight {:?} after lowering the cap to 2 (one request takes \
             {SLOW:?})",
            rx.in_flight(),
            applied.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep((applied + SLOW + MARGIN).saturating_duration_since(Instant::now())).await;
    rx.reset_peak();
    let before = rx.count();
    let mut max_sampled = 0;
    let mut samples = 0;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(1_500) {
        let now = rx.in_flight();
        max_sampled = max_sampled.max(now);
        samples += 1;
        assert!(
            now <= 2,
            "{now} requests in flight {:?} after lowering the cap to 2",
            applied.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak = rx.peak();
    let delivered_at_cap_2 = rx.count() - before;
    assert!(peak <= 2, "peak {peak} in flight with max_in_flight = 2");
    // The flow goes on at the new cap (2 × 1.5 s / 300 ms ≈ 10 requests), not stalled.
    assert!(
        peak == 2 && delivered_at_cap_2 >= 4,
        "the backlog should keep flowing 2 at a time: peak {peak}, {delivered_at_cap_2} \
         requests in 1.5 s"
    );
    eprintln!(
        "cap 8 -> 2: PATCH answered in {answered:?}; receiver at <= 2 in flight \
         {dropped:?} after the answer; then {samples} samples every 20 ms, max {max_sampled}, peak {peak}, \
         {delivered_at_cap_2} requests in 1.5 s"
    );

    // A bad value is refused, names its field, and changes nothing.
    let resp = reqwest::Client::new()
        .patch(relay.url("/api/v1/admin/hooks/slow"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"max_in_flight": 0}))
        .send()
        .await
        .expect("admin PATCH");
    assert_eq!(resp.status(), 422);
    let err: serde_json::Value = resp.json().await.expect("JSON error");
    assert_eq!(err["code"], "invalid_field", "{err}");
    assert_eq!(err["field"], "max_in_flight", "{err}");
    let v = hook_view(&relay, "slow").await;
    assert_eq!(v["stats"]["max_in_flight"], 2, "{v}");

    // 3. A low rate, the cap back at 8, and a quicker receiver, so the rate is what binds
    // (8 / 50 ms = 160/s is far above either rate).
    rx.set_delay(Duration::from_millis(50));
    let v = patch_hook(&relay, "slow", json!({"max_in_flight": 8, "rate": "5/s"})).await;
    let slow_from = Instant::now();
    assert_eq!(v["stats"]["max_in_flight"], 8, "{v}");
    assert_eq!(v["stats"]["rate"], "5/s", "{v}");
    // Skip the requests still in flight from cap 2 (each started before the change).
    let settle = SLOW + MARGIN;
    tokio::time::sleep(settle + RATE_WINDOW).await;
    let (n_slow, rate_slow) = observed_rate(&rx, slow_from + settle, RATE_WINDOW);

    let v = patch_hook(&relay, "slow", json!({"rate": "40/s"})).await;
    let fast_from = Instant::now();
    assert_eq!(v["stats"]["rate"], "40/s", "{v}");
    assert_eq!(v["stats"]["max_in_flight"], 8, "{v}");
    let settle = Duration::from_millis(250);
    tokio::time::sleep(settle + RATE_WINDOW).await;
    let (n_fast, rate_fast) = observed_rate(&rx, fast_from + settle, RATE_WINDOW);
    eprintln!(
        "rate 5/s: {n_slow} requests in {RATE_WINDOW:?} = {rate_slow:.1}/s; rate 40/s: {n_fast} \
         requests in {RATE_WINDOW:?} = {rate_fast:.1}/s"
    );
    // A burst of 1 and one request of slack for timer rounding at the window's edges.
    assert!(
        n_slow as f64 <= 5.0 * RATE_WINDOW.as_secs_f64() + 2.0,
        "rate 5/s: {n_slow} requests in {RATE_WINDOW:?}"
    );
    assert!(
        n_slow >= 1,
        "rate 5/s: nothing delivered in {RATE_WINDOW:?}"
    );
    assert!(
        rate_fast >= 3.0 * rate_slow,
        "raising the rate from 5/s to 40/s: observed {rate_slow:.1}/s then {rate_fast:.1}/s"
    );
    assert!(
        n_fast as f64 <= 40.0 * RATE_WINDOW.as_secs_f64() + 2.0,
        "rate 40/s: {n_fast} requests in {RATE_WINDOW:?}"
    );

    // 4. Every event was accepted; the admin view shows the limits now in force.
    let mut accepted = 0;
    while let Some(r) = posters.join_next().await {
        accepted += r.expect("poster task");
    }
    assert_eq!(accepted, EVENTS);
    let v = hook_view(&relay, "slow").await;
    let s = &v["stats"];
    assert_eq!(
        (s["max_in_flight"].as_u64(), s["rate"].as_str()),
        (Some(8), Some("40/s")),
        "{v}"
    );
    assert!(
        s["in_flight"].as_u64().is_some_and(|n| n <= 8),
        "in_flight over the cap: {v}"
    );

    // The limits are persisted and win over the config file's values after a restart.
    let dir = relay.stop().await;
    let relay = start_relay_in(dir, &hook_toml("slow", &rx.hook_url(), "max_in_flight = 4")).await;
    let v = hook_view(&relay, "slow").await;
    assert_eq!(
        (
            v["stats"]["max_in_flight"].as_u64(),
            v["stats"]["rate"].as_str()
        ),
        (Some(8), Some("40/s")),
        "limits after a restart: {v}"
    );
    relay.stop().await;
    eprintln!("test took {:?}", started.elapsed());
}

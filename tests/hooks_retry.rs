//! Retries as the receiver sees them: the schedule, one `webhook-id` for every attempt of a
//! delivery, `Retry-After` honoured within [1×, 2×] the scheduled delay, exhaustion, and
//! other 4xx answers and redirects failing at once (redirects are not followed).

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;

fn statuses(attempts: &[serde_json::Value]) -> Vec<Option<u64>> {
    attempts.iter().map(|a| a["status"].as_u64()).collect()
}

/// Waits until the hook's deliveries reach these counts.
async fn wait_counts(relay: &TestRelay, hook: &str, pending: u64, succeeded: u64, failed: u64) {
    let want = serde_json::json!({"pending": pending, "succeeded": succeeded, "failed": failed});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = hook_view(relay, hook).await;
        if v["deliveries"] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hook {hook}: deliveries {} never became {want}",
            v["deliveries"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_retry_follows_the_schedule_with_one_webhook_id() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500), Reply::status(500)]);
    let extra = hook_toml("a", &rx.hook_url(), r#"retry = ["200ms", "400ms"]"#);
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("retry", 1)).await;

    rx.wait_for(3, Duration::from_secs(20)).await;
    wait_counts(&relay, "a", 0, 1, 0).await;
    // Succeeded is final: nothing more is sent.
    assert_eq!(rx.count(), 3);
    let reqs = rx.requests();
    let first = reqs[0].webhook_id().expect("webhook-id");
    assert!(
        reqs.iter().all(|r| r.webhook_id() == Some(first)),
        "every attempt carries the same webhook-id: {:?}",
        rx.webhook_ids()
    );
    assert!(reqs
        .iter()
        .all(|r| r.event_id.as_deref() == Some(id.as_str())));
    let gap1 = reqs[1].at.duration_since(reqs[0].at);
    let gap2 = reqs[2].at.duration_since(reqs[1].at);
    assert!(
        gap1 >= Duration::from_millis(180),
        "first retry after {gap1:?}, scheduled 200 ms"
    );
    assert!(
        gap2 >= Duration::from_millis(360),
        "second retry after {gap2:?}, scheduled 400 ms"
    );

    let attempts = wait_attempts(&relay, &id, 3).await;
    assert_eq!(
        statuses(&attempts),
        [Some(500), Some(500), Some(200)],
        "{attempts:#?}"
    );
    let numbers: Vec<u64> = attempts
        .iter()
        .filter_map(|a| a["attempt"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(attempts.iter().all(|a| a["webhook_id"] == first));
    let v = hook_view(&relay, "a").await;
    let s = &v["stats"];
    assert_eq!(
        (
            s["attempts"].as_u64(),
            s["retried"].as_u64(),
            s["succeeded"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(s["consecutive_failures"], 0, "{v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_retry_after_is_clamped_to_twice_the_schedule() {
    let rx = Receiver::start().await;
    // Asks for 1 s; the schedule says 300 ms, so the relay waits 600 ms (2×).
    rx.script([Reply::status(503).retry_after("1")]);
    let extra = hook_toml("a", &rx.hook_url(), r#"retry = ["300ms"]"#);
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("retry-after", 1)).await;

    // The scheduled time of the retry, read from the delivery row while it waits.
    let next_attempt_at = eventually_some(Duration::from_secs(10), || async {
        relay
            .delivery(&id, "a")
            .await
            .filter(|d| d.attempts == 1 && d.state == "pending")
            .and_then(|d| d.next_attempt_at_ms)
    })
    .await;

    rx.wait_for(2, Duration::from_secs(10)).await;
    wait_counts(&relay, "a", 0, 1, 0).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].webhook_id(), reqs[1].webhook_id());
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(580),
        "retried after {gap:?}: Retry-After 1 s should stretch the 300 ms schedule to 600 ms"
    );

    let attempts = wait_attempts(&relay, &id, 2).await;
    assert_eq!(statuses(&attempts), [Some(503), Some(200)], "{attempts:#?}");
    let first_end = attempts[0]["started_at_ms"]
        .as_i64()
        .expect("started_at_ms")
        + attempts[0]["latency_ms"].as_i64().expect("latency_ms");
    let scheduled = next_attempt_at - first_end;
    assert!(
        (595..1000).contains(&scheduled),
        "retry scheduled {scheduled} ms after the 503: expected 600 ms (Retry-After 1 s \
         clamped to 2 × 300 ms), not 300 ms or 1000 ms"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_retry_exhaustion_fails_the_delivery() {
    let rx = Receiver::start_with(Reply::status(500)).await;
    let extra = hook_toml("a", &rx.hook_url(), r#"retry = ["100ms"]"#);
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("exhaust", 1)).await;

    wait_counts(&relay, "a", 0, 0, 1).await;
    assert_eq!(rx.count(), 2, "one attempt and one retry");
    let attempts = wait_attempts(&relay, &id, 2).await;
    assert_eq!(statuses(&attempts), [Some(500), Some(500)], "{attempts:#?}");
    let v = hook_view(&relay, "a").await;
    assert_eq!(v["stats"]["failed"], 1, "{v}");
    assert_eq!(v["stats"]["succeeded"], 0, "{v}");
    assert_eq!(v["stats"]["enabled"], true, "below disable_after: {v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_retry_4xx_fails_at_once() {
    let rx = Receiver::start_with(Reply::status(400)).await;
    let extra = hook_toml("a", &rx.hook_url(), r#"retry = ["100ms", "100ms"]"#);
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("4xx", 1)).await;

    wait_counts(&relay, "a", 0, 0, 1).await;
    assert_eq!(rx.count(), 1, "a 400 is not retried");
    let attempts = wait_attempts(&relay, &id, 1).await;
    assert_eq!(statuses(&attempts), [Some(400)], "{attempts:#?}");
    let v = hook_view(&relay, "a").await;
    assert_eq!(v["stats"]["retried"], 0, "{v}");
    assert_eq!(v["stats"]["enabled"], true, "{v}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_retry_redirect_is_not_followed() {
    let target = Receiver::start().await;
    let rx = Receiver::start_with(Reply::status(307).header("location", &target.hook_url())).await;
    let extra = hook_toml("a", &rx.hook_url(), r#"retry = ["100ms"]"#);
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("redirect", 1)).await;

    wait_counts(&relay, "a", 0, 0, 1).await;
    assert_eq!(rx.count(), 1, "a redirect is a failed attempt, not retried");
    assert_eq!(target.count(), 0, "the redirect was followed");
    let attempts = wait_attempts(&relay, &id, 1).await;
    assert_eq!(statuses(&attempts), [Some(307)], "{attempts:#?}");
    relay.stop().await;
}

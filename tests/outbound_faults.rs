//! Outbound faults: hook endpoints that reset connections, answer one byte at a time, or
//! send a 100 MB body. Each test runs the real relay with one misbehaving hook (a
//! [`BadReceiver`]) and one healthy hook next to it, and checks three things where they
//! show: on the wire (how much of a bad answer the relay read, when it hung up), in the
//! history through the admin API (every attempt recorded, with a status and error that say
//! what happened), and at the healthy receiver (every event, promptly).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::bad_receiver::*;
use common::receiver::*;
use common::*;

/// Bytes in the huge answer.
const HUGE: u64 = 100 * 1024 * 1024;
/// The most of it the relay may cause to be written: its socket buffers plus one read.
/// Reading to the end would write all of `HUGE`.
const HUGE_WRITTEN_MAX: u64 = 16 * 1024 * 1024;
/// The healthy hook's worst lag from "202 to the sender" to "arrived at the receiver". It
/// answers at once, so it needs milliseconds; the bound is generous for 2 shared cores, and
/// well below what waiting behind the bad hook would cost (each test keeps it busy longer).
const HEALTHY_LAG_MAX: Duration = Duration::from_secs(2);

/// A relay with hook `bad` (at `bad_url`, with `bad_extra` keys) and hook `good` (at a
/// healthy receiver), both taking every event.
async fn relay_with(bad_url: &str, bad_extra: &str) -> (TestRelay, Receiver) {
    let good = Receiver::start().await;
    let extra = format!(
        "shutdown_grace = \"1s\"\n{}{}",
        hook_toml("bad", bad_url, bad_extra),
        hook_toml("good", &good.hook_url(), "")
    );
    (start_relay(&extra).await, good)
}

/// Posts `n` new events one after another; returns each event id with when the relay
/// accepted it (answered 202).
async fn post_events(relay: &TestRelay, tag: &str, n: usize) -> Vec<(String, Instant)> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..n {
        let id = post_new(&client, relay, sonarr_download(tag, i)).await;
        out.push((id, Instant::now()));
    }
    out
}

/// Asserts that the healthy hook got every event once, and that its worst lag (at this
/// size the p99 is the maximum) stays under [`HEALTHY_LAG_MAX`].
async fn assert_healthy(good: &Receiver, events: &[(String, Instant)]) {
    good.wait_for(events.len(), Duration::from_secs(10)).await;
    let arrived: HashMap<String, Instant> = good
        .requests()
        .into_iter()
        .filter_map(|r| Some((r.event_id?, r.at)))
        .collect();
    assert_eq!(
        good.count(),
        events.len(),
        "the healthy hook got duplicates"
    );
    let mut lags: Vec<Duration> = events
        .iter()
        .map(|(id, accepted)| {
            let at = arrived
                .get(id)
                .unwrap_or_else(|| panic!("event {id} never reached the healthy hook"));
            at.saturating_duration_since(*accepted)
        })
        .collect();
    lags.sort();
    let p99 = lags[(lags.len() * 99).div_ceil(100) - 1];
    assert!(
        p99 < HEALTHY_LAG_MAX,
        "healthy hook p99 lag {p99:?} next to a bad hook (all: {lags:?})"
    );
}

/// Waits until every one of the bad hook's `n` deliveries is finished (none pending).
async fn wait_bad_done(relay: &TestRelay, n: u64, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = hook_view(relay, "bad").await;
        let d = &v["deliveries"];
        let done = d["succeeded"].as_u64().unwrap_or(0) + d["failed"].as_u64().unwrap_or(0);
        if done >= n && d["pending"].as_u64() == Some(0) {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "bad hook not done within {timeout:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bad hook's recorded attempts of each event, checked against the requests the bad
/// receiver read for it: one attempt in history for every request on the wire.
async fn bad_attempts(
    relay: &TestRelay,
    bad: &BadReceiver,
    events: &[(String, Instant)],
) -> Vec<serde_json::Value> {
    let mut on_wire: HashMap<String, usize> = HashMap::new();
    for r in bad.requests() {
        *on_wire
            .entry(r.event_id.expect("the bad hook got an envelope"))
            .or_default() += 1;
    }
    let mut all = Vec::new();
    for (id, _) in events {
        let sent = on_wire.get(id).copied().unwrap_or(0);
        assert!(sent > 0, "event {id} never reached the bad hook");
        let recorded: Vec<serde_json::Value> = wait_attempts(relay, id, sent + 1)
            .await
            .into_iter()
            .filter(|a| a["hook"] == "bad")
            .collect();
        assert_eq!(
            recorded.len(),
            sent,
            "event {id}: {sent} requests reached the bad hook, history holds {recorded:#?}"
        );
        all.extend(recorded);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_connection_reset_is_a_recorded_transport_error() {
    let bad = BadReceiver::start(Misbehaviour::ResetAfterRequest).await;
    let (relay, good) = relay_with(
        &bad.hook_url(),
        "retry = \"linear:2\"\nretry_base = \"200ms\"\ndisable_after = 0",
    )
    .await;
    let events = post_events(&relay, "reset", 12).await;

    assert_healthy(&good, &events).await;
    let counts = wait_bad_done(&relay, 12, Duration::from_secs(15)).await;
    assert_eq!(counts["failed"], 12, "{counts}");
    // Three tries of each event (linear:2), each on a connection of its own, each reset.
    let conns = bad.wait_ended(36, Duration::from_secs(5)).await;
    assert_eq!(conns.len(), 36, "{:#?}", summary(&conns));
    for c in &conns {
        assert_eq!(c.requests.len(), 1, "{:#?}", summary(&conns));
        assert_eq!(c.ended.as_ref().map(|e| &e.1), Some(&Ending::ResetByUs));
    }
    let attempts = bad_attempts(&relay, &bad, &events).await;
    assert_eq!(attempts.len(), 36);
    for a in &attempts {
        assert!(a["status"].is_null(), "a reset has no status: {a:#}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(error.contains("reset"), "a reset is reported as one: {a:#}");
        assert_eq!(a["response_excerpt"], "", "{a:#}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_reset_mid_body_keeps_the_status_and_says_so() {
    let bad = BadReceiver::start(Misbehaviour::reset_mid_body(100)).await;
    let (relay, good) = relay_with(&bad.hook_url(), "retry = \"none\"").await;
    let events = post_events(&relay, "midbody", 6).await;

    assert_healthy(&good, &events).await;
    // The receiver answered 200: the delivery is done, and is not sent again.
    let counts = wait_bad_done(&relay, 6, Duration::from_secs(10)).await;
    assert_eq!(counts["succeeded"], 6, "{counts}");
    bad.wait_ended(6, Duration::from_secs(5)).await;
    let attempts = bad_attempts(&relay, &bad, &events).await;
    for a in &attempts {
        assert_eq!(a["status"], 200, "{a:#}");
        assert_eq!(a["response_excerpt"], "b".repeat(100), "{a:#}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("cut short") && error.contains("reset"),
            "history says the body broke off: {a:#}"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_trickled_answer_times_out_at_the_hook_timeout() {
    // Status line, headers and body one byte per 150 ms: about 11 s in all, and never more
    // than 150 ms between two bytes, so only a deadline for the whole attempt stops it.
    let how = Misbehaviour::trickle_all("slow but steady", Duration::from_millis(150));
    let full = match &how {
        Misbehaviour::Trickle { response, .. } => response.len() as u64,
        _ => unreachable!(),
    };
    let bad = BadReceiver::start(how).await;
    // Two at a time, one second each: ten events keep the bad hook busy for 5 s or more.
    let (relay, good) = relay_with(
        &bad.hook_url(),
        "timeout = \"1s\"\nmax_in_flight = 2\nretry = \"none\"",
    )
    .await;
    let events = post_events(&relay, "trickle", 10).await;

    assert_healthy(&good, &events).await;
    let counts = wait_bad_done(&relay, 10, Duration::from_secs(15)).await;
    assert_eq!(counts["failed"], 10, "{counts}");
    let conns = bad.wait_ended(10, Duration::from_secs(5)).await;
    for c in &conns {
        let took = c.duration().unwrap_or_default();
        assert!(
            // From the receiver's accept, which lags the relay's start of the attempt.
            (Duration::from_millis(500)..Duration::from_secs(3)).contains(&took),
            "the relay hung up after {took:?}, not at its 1 s timeout: {:#?}",
            summary(&conns)
        );
        assert!(c.bytes_written < full, "{:#?}", summary(&conns));
        assert_eq!(c.requests.len(), 1);
    }
    for a in bad_attempts(&relay, &bad, &events).await {
        assert!(
            a["status"].is_null(),
            "no status line arrived in time: {a:#}"
        );
        let error = a["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("timed out"), "{a:#}");
        let ms = a["latency_ms"].as_u64().unwrap_or_default();
        assert!((950..3000).contains(&ms), "latency {ms} ms: {a:#}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_trickled_body_is_cut_at_the_hook_timeout() {
    // The head comes at once, then 200 body bytes at one per 100 ms (20 s): a per-read
    // timeout never fires; the hook's timeout bounds the attempt as a whole.
    let body = "z".repeat(200);
    let how = Misbehaviour::trickle_body(&body, Duration::from_millis(100));
    let bad = BadReceiver::start(how).await;
    let (relay, good) = relay_with(
        &bad.hook_url(),
        "timeout = \"1s\"\nmax_in_flight = 2\nretry = \"none\"",
    )
    .await;
    let events = post_events(&relay, "slowbody", 6).await;

    assert_healthy(&good, &events).await;
    // The status was 200: delivered, even though its body never finished.
    let counts = wait_bad_done(&relay, 6, Duration::from_secs(15)).await;
    assert_eq!(counts["succeeded"], 6, "{counts}");
    let conns = bad.wait_ended(6, Duration::from_secs(5)).await;
    for c in &conns {
        let took = c.duration().unwrap_or_default();
        assert!(
            // From the receiver's accept, which lags the relay's start of the attempt.
            (Duration::from_millis(500)..Duration::from_secs(3)).contains(&took),
            "the relay hung up after {took:?}, not at its 1 s timeout: {:#?}",
            summary(&conns)
        );
    }
    for a in bad_attempts(&relay, &bad, &events).await {
        assert_eq!(a["status"], 200, "{a:#}");
        let excerpt = a["response_excerpt"].as_str().unwrap_or_default();
        assert!(
            !excerpt.is_empty() && excerpt.len() < 200 && excerpt.bytes().all(|b| b == b'z'),
            "the part of the body that came in time: {a:#}"
        );
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("cut short") && error.contains("timed out"),
            "history says the body timed out: {a:#}"
        );
        let ms = a["latency_ms"].as_u64().unwrap_or_default();
        assert!((950..3000).contains(&ms), "latency {ms} ms: {a:#}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_slow_answer_within_the_timeout_succeeds() {
    // About 60 bytes at one per 50 ms: 3 s, inside a 10 s timeout.
    let bad = BadReceiver::start(Misbehaviour::trickle_all("ok", Duration::from_millis(50))).await;
    let (relay, good) = relay_with(&bad.hook_url(), "timeout = \"10s\"\nretry = \"none\"").await;
    let events = post_events(&relay, "slowok", 3).await;

    assert_healthy(&good, &events).await;
    let counts = wait_bad_done(&relay, 3, Duration::from_secs(15)).await;
    assert_eq!(counts["succeeded"], 3, "{counts}");
    let conns = bad.wait_ended(3, Duration::from_secs(5)).await;
    for c in &conns {
        assert_eq!(c.ended.as_ref().map(|e| &e.1), Some(&Ending::Completed));
    }
    for a in bad_attempts(&relay, &bad, &events).await {
        assert_eq!(a["status"], 200, "{a:#}");
        assert!(a["error"].is_null(), "{a:#}");
        assert_eq!(a["response_excerpt"], "ok", "{a:#}");
        let ms = a["latency_ms"].as_u64().unwrap_or_default();
        assert!(ms >= 2500, "the relay waited for the slow answer: {a:#}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_faults_huge_body_is_not_read_past_the_excerpt() {
    let bad = BadReceiver::start(Misbehaviour::HugeBody { len: HUGE }).await;
    let (relay, good) = relay_with(&bad.hook_url(), "timeout = \"20s\"\nretry = \"none\"").await;
    let events = post_events(&relay, "huge", 5).await;

    assert_healthy(&good, &events).await;
    let counts = wait_bad_done(&relay, 5, Duration::from_secs(15)).await;
    assert_eq!(counts["succeeded"], 5, "{counts}");
    // The relay hung up long before the end: the receiver's writes failed after a few MiB
    // (what the sockets buffer), within a few seconds. Each attempt had a connection of its
    // own: one with an unread body is closed, never handed back to the pool.
    let conns = bad.wait_ended(5, Duration::from_secs(10)).await;
    for c in &conns {
        assert!(
            matches!(c.ended, Some((_, Ending::WriteFailed(_)))),
            "{:#?}",
            summary(&conns)
        );
        assert!(
            c.bytes_written <= HUGE_WRITTEN_MAX,
            "{:#?}",
            summary(&conns)
        );
        assert!(
            c.duration().unwrap_or_default() < Duration::from_secs(5),
            "{:#?}",
            summary(&conns)
        );
        assert_eq!(c.requests.len(), 1, "{:#?}", summary(&conns));
    }
    for a in bad_attempts(&relay, &bad, &events).await {
        assert_eq!(a["status"], 200, "{a:#}");
        assert!(
            a["error"].is_null(),
            "stopping at the excerpt is no error: {a:#}"
        );
        assert_eq!(a["response_excerpt"], "x".repeat(1024), "{a:#}");
        let ms = a["latency_ms"].as_u64().unwrap_or_default();
        assert!(ms < 5000, "latency {ms} ms: {a:#}");
    }
    relay.stop().await;
}

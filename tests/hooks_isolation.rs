//! Hooks are isolated from each other and from ingest: a hanging or dead endpoint only
//! delays its own hook, and a hook worker that panics is restarted by the `hooks` supervisor
//! and picks its pending deliveries up from the store, without ever exceeding its cap: the
//! requests its previous incarnation left running still count, and are recorded.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;
use ractor::ActorRef;
use relayarr::actors::delivery::worker::WorkerMsg;
use relayarr::actors::supervisor::{ChildInfo, SupervisorMsg};

/// Posts `n` events one after another, asserting each is answered 202 within `max`: ingest
/// never waits on a hook.
async fn post_timed(relay: &TestRelay, tag: &str, n: usize, max: Duration) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        ids.push(post_new(&client, relay, sonarr_download(tag, i)).await);
        let took = t.elapsed();
        assert!(
            took < max,
            "ingest of event {i} took {took:?} while a hook is stuck"
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_isolation_slow_hook_does_not_delay_others() {
    // `slow` hangs every request for 10 s; the hook gives up after 2 s, two at a time, and
    // retries: 50 events keep it busy for 50 s or more.
    let slow = Receiver::start_with(Reply::status(200).delay(Duration::from_secs(10))).await;
    let fast = Receiver::start().await;
    let extra = format!(
        "shutdown_grace = \"2s\"\n{}{}",
        hook_toml(
            "slow",
            &slow.hook_url(),
            "timeout = \"2s\"\nmax_in_flight = 2\nretry = \"linear:3\"\nretry_base = \"1s\""
        ),
        hook_toml("fast", &fast.hook_url(), "")
    );
    let relay = start_relay(&extra).await;
    let started = Instant::now();
    let ids = post_timed(&relay, "isolation", 50, Duration::from_secs(1)).await;

    fast.wait_for(50, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let got: HashSet<String> = fast.event_ids().into_iter().collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
    // The slow hook is still working through its queue: its requests were not in the way.
    let v = hook_view(&relay, "slow").await;
    let pending = v["deliveries"]["pending"].as_u64().unwrap_or_default();
    assert!(
        pending >= 40,
        "after {elapsed:?} the slow hook should still hold most of its 50 deliveries: {v:#}"
    );
    assert!(
        slow.peak() <= 2,
        "slow hook exceeded max_in_flight: {}",
        slow.peak()
    );
    let v = hook_view(&relay, "fast").await;
    assert_eq!(v["deliveries"]["succeeded"], 50, "{v:#}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_isolation_dead_endpoint_does_not_delay_others() {
    // A port nobody listens on: every attempt is refused at once and retried.
    let dead_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let fast = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml(
            "dead",
            &format!("http://{dead_addr}/hook"),
            "retry = \"exponential:5\"\nretry_base = \"200ms\"\ndisable_after = 0"
        ),
        hook_toml("fast", &fast.hook_url(), "")
    );
    let relay = start_relay(&extra).await;
    let ids = post_timed(&relay, "dead", 50, Duration::from_secs(1)).await;
    fast.wait_for(50, Duration::from_secs(5)).await;
    let got: HashSet<String> = fast.event_ids().into_iter().collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
    let v = hook_view(&relay, "dead").await;
    assert_eq!(v["deliveries"]["succeeded"], 0, "{v:#}");
    assert_eq!(
        v["stats"]["enabled"], true,
        "disable_after = 0 never disables: {v:#}"
    );
    // Connection failures are recorded as attempts without a status.
    let attempts = wait_attempts(&relay, &ids[0], 1).await;
    let dead = attempts
        .iter()
        .find(|a| a["hook"] == "dead")
        .expect("an attempt of the dead hook");
    assert!(dead["status"].is_null(), "{dead}");
    assert!(dead["error"].is_string(), "{dead}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_supervision_panicked_hook_restarts_and_delivers_pending() {
    // A slow receiver keeps two requests in flight when the worker panics.
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(400))).await;
    let extra = format!(
        "{}[supervision]\nrestart_base = \"50ms\"\n",
        hook_toml("a", &rx.hook_url(), "max_in_flight = 2")
    );
    let relay = start_relay(&extra).await;
    let ids: HashSet<String> = post_many(&relay, "panic", 0..30)
        .await
        .into_iter()
        .collect();
    rx.wait_for(2, Duration::from_secs(10)).await;

    let name = format!("{}hook:a", relay.namespace);
    let before = ActorRef::<WorkerMsg>::where_is(name.clone()).expect("hook worker running");
    let old_id = before.get_id();
    before.cast(WorkerMsg::InjectPanic).expect("cast");
    eventually(Duration::from_secs(10), || {
        let name = name.clone();
        async move { ActorRef::<WorkerMsg>::where_is(name).is_some_and(|a| a.get_id() != old_id) }
    })
    .await;

    eventually(Duration::from_secs(30), || async {
        rx.event_ids().into_iter().collect::<HashSet<_>>() == ids
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "a").await;
        v["deliveries"]["succeeded"] == 30 && v["deliveries"]["pending"] == 0
    })
    .await;
    // The cap held across the restart, as the receiver saw it.
    assert!(
        rx.peak() <= 2,
        "peak in flight {} with max_in_flight = 2",
        rx.peak()
    );
    // The requests in flight at the panic finished and were recorded by the new
    // incarnation: nothing was sent twice.
    assert_eq!(
        rx.count(),
        30,
        "{} requests for 30 events after one restart",
        rx.count()
    );

    let hooks = ActorRef::<SupervisorMsg>::where_is(format!("{}hooks", relay.namespace))
        .expect("hooks supervisor");
    let children: Vec<ChildInfo> = hooks
        .call(SupervisorMsg::Children, Some(Duration::from_secs(5)))
        .await
        .expect("call")
        .unwrap();
    let child = children
        .iter()
        .find(|c| c.name == name)
        .expect("hook child listed");
    assert_eq!(child.restarts, 1);
    assert!(child.running);

    // The tree shows the hook under `hooks`.
    let tree: serde_json::Value = relay
        .admin_get("/api/v1/actors")
        .await
        .json()
        .await
        .expect("json");
    let text = tree.to_string();
    assert!(text.contains(&name) && text.contains("hooks"), "{text}");
    relay.stop().await;
}

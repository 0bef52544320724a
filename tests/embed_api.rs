//! The embedding API (issue 9 §8): `Relay::builder(config).start(listener, shutdown)`
//! returns a `RelayHandle`. Real HTTP on 127.0.0.1 against the real relay and store: the
//! subscription carries exactly the committed events (after the store has them, duplicates
//! not again); `tune` goes to the hook's worker, so the cap changes at a real receiver and
//! in the admin API; the actor tree is the admin API's; `shutdown` + `wait` stop cleanly.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;
use relayarr::{Config, Relay, TargetError, TreeNode, Tuning};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

const EVENTS: usize = 20;
/// One request's latency at the receiver while the cap is tuned.
const SLOW: Duration = Duration::from_millis(300);
/// Scheduling and loopback slack on top of one request's latency.
const MARGIN: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_subscription_sees_exactly_the_committed_events() {
    let relay = start_relay("").await;
    let mut feed = relay.handle().subscribe();
    let client = reqwest::Client::new();

    let mut posted = BTreeSet::new();
    for i in 0..EVENTS {
        let (status, v) = post_sonarr(&client, &relay, sonarr_download("embed-feed", i)).await;
        assert_eq!(status, 202, "{v}");
        posted.insert(v["id"].as_str().expect("event id").to_owned());
    }
    // The same body again: the store recognises it (200, duplicate), and it is not
    // published again.
    let (status, v) = post_sonarr(&client, &relay, sonarr_download("embed-feed", 0)).await;
    assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)), "{v}");

    let mut seen = BTreeSet::new();
    let mut last_seq = i64::MIN;
    while seen.len() < EVENTS {
        let e = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {EVENTS} events on the feed", seen.len()))
            .expect("feed open, not lagging");
        assert!(
            e.seq > last_seq,
            "commit order: seq {} after {last_seq}",
            e.seq
        );
        last_seq = e.seq;
        // Durable before visible: the store has it (through the admin API).
        let stored = relay
            .admin_get(&format!("/api/v1/admin/events/{}", e.id))
            .await;
        assert_eq!(stored.status(), 200, "event {} not in the store", e.id);
        assert!(seen.insert(e.id.clone()), "{} published twice", e.id);
    }
    assert_eq!(
        seen, posted,
        "the feed must carry exactly the accepted events"
    );
    // Nothing more: the duplicate was not published.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match feed.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("nothing more expected on the feed, got {other:?}"),
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_tune_changes_the_cap_at_the_receiver_and_in_the_admin_api() {
    let rx = Receiver::start_with(Reply::status(200).delay(SLOW)).await;
    let relay = start_relay(&hook_toml("slow", &rx.hook_url(), "max_in_flight = 8")).await;
    let handle = relay.handle();
    let client = reqwest::Client::new();
    for i in 0..40 {
        let (status, v) = post_sonarr(&client, &relay, sonarr_download("embed-tune", i)).await;
        assert_eq!(status, 202, "{v}");
    }
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 8 }).await;

    let stats = handle
        .tune("slow", Tuning::new().max_in_flight(2))
        .await
        .expect("tune");
    let applied = Instant::now();
    assert_eq!((stats.name.as_str(), stats.max_in_flight), ("slow", 2));

    // The requests started before the change finish within one latency; after that, never
    // more than 2 at once, and the backlog keeps flowing at 2.
    tokio::time::sleep((applied + SLOW + MARGIN).saturating_duration_since(Instant::now())).await;
    rx.reset_peak();
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(1_200) {
        assert!(rx.in_flight() <= 2, "{} in flight at cap 2", rx.in_flight());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx.peak(), 2, "peak in flight after tuning the cap to 2");

    // The admin API sees the limit the worker now holds.
    let v = hook_view(&relay, "slow").await;
    assert_eq!(v["stats"]["max_in_flight"], 2, "{v}");

    // Typed errors; an invalid tuning changes nothing, the rate included.
    let bad = handle
        .tune("slow", Tuning::new().rate("5/s").max_in_flight(0))
        .await;
    assert!(
        matches!(
            &bad,
            Err(TargetError::Invalid {
                field: "max_in_flight",
                ..
            })
        ),
        "{bad:?}"
    );
    let bad = handle.tune("slow", Tuning::new().rate("fast")).await;
    assert!(
        matches!(&bad, Err(TargetError::Invalid { field: "rate", .. })),
        "{bad:?}"
    );
    assert_eq!(
        handle.tune("nope", Tuning::new().max_in_flight(3)).await,
        Err(TargetError::UnknownTarget("nope".into()))
    );
    let listed = handle.targets().await.expect("targets");
    let slow = listed
        .iter()
        .find(|t| t.name == "slow")
        .expect("slow listed");
    assert_eq!((slow.max_in_flight, slow.rate.as_deref()), (2, None));

    // A rate through the handle shows in the admin API too.
    let stats = handle
        .tune("slow", Tuning::new().rate("30/m"))
        .await
        .expect("tune rate");
    assert_eq!(stats.rate.as_deref(), Some("30/m"));
    let v = hook_view(&relay, "slow").await;
    assert_eq!(v["stats"]["rate"], "30/m", "{v}");
    relay.stop().await;
}

/// Every actor path in a tree.
fn paths(node: &TreeNode, out: &mut BTreeSet<String>) {
    out.insert(node.path.clone());
    for c in &node.children {
        paths(c, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_actor_tree_and_graceful_stop_through_the_handle() {
    // Built here as an embedder would: config from TOML, the builder, the handle.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = test_config_text(
        dir.path(),
        &hook_toml("notify", "http://127.0.0.1:9/hook", ""),
    );
    let cfg = Config::from_toml_str("embed test", &text, std::iter::empty()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ns = format!("embed-{}/", std::process::id());
    let relay = Relay::builder(cfg)
        .namespace(ns.clone())
        .start(listener, std::future::pending())
        .await
        .expect("start");

    let tree = relay
        .actor_tree()
        .expect("the tree is up once start returned");
    let mut got = BTreeSet::new();
    paths(&tree, &mut got);
    for want in [
        "relayarr",
        "relayarr/history",
        "relayarr/sources",
        "relayarr/sources/source:sonarr",
        "relayarr/debouncer",
        "relayarr/router",
        "relayarr/hooks",
        "relayarr/hooks/hook:notify",
    ] {
        assert!(got.contains(want), "{want} missing from the tree: {got:?}");
    }
    // The same tree as the admin API's.
    let admin: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/actors", relay.local_addr()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET actors")
        .json()
        .await
        .expect("json");
    assert_eq!(
        serde_json::to_value(&tree).expect("serialise"),
        admin,
        "the handle's tree and GET /api/v1/actors"
    );

    let mut feed = relay.subscribe();
    let addr = relay.local_addr();
    relay.shutdown();
    relay.shutdown(); // a second call changes nothing
    tokio::time::timeout(Duration::from_secs(30), relay.wait())
        .await
        .expect("stopped within the grace periods")
        .expect("graceful stop");
    let end = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("the feed ends when the relay has stopped");
    assert_eq!(end.err(), Some(RecvError::Closed));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "ingress closed"
    );
    assert!(
        ractor::registry::where_is(format!("{ns}relayarr")).is_none(),
        "the root actor is gone"
    );
}

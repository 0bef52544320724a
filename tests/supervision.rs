//! Supervision: a source actor that panics is restarted with backoff by its supervisor, and
//! ingestion through it works again without restarting the process.

mod common;

use std::time::Duration;

use common::*;
use ractor::ActorRef;
use relayarr::actors::sources::actor::SourceMsg;
use relayarr::actors::supervisor::{ChildInfo, SupervisorMsg};

async fn post_test(relay: &TestRelay, n: usize) -> u16 {
    reqwest::Client::new()
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"eventType":"Test","n":{n}}}"#))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervision_restarts_a_panicked_source_and_ingest_resumes() {
    let relay = start_relay("").await;
    assert_eq!(post_test(&relay, 0).await, 202);

    let name = format!("{}source:sonarr", relay.namespace);
    let before = ActorRef::<SourceMsg>::where_is(name.clone()).expect("source actor running");
    let old_id = before.get_id();
    before.cast(SourceMsg::InjectPanic).expect("cast");

    // The supervisor restarts it under the same name, as a new actor.
    eventually(Duration::from_secs(10), || {
        let name = name.clone();
        async move { ActorRef::<SourceMsg>::where_is(name).is_some_and(|a| a.get_id() != old_id) }
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        post_test(&relay, 1).await == 202
    })
    .await;
    assert_eq!(relay.count_events().await, 2);

    let sources = ActorRef::<SupervisorMsg>::where_is(format!("{}sources", relay.namespace))
        .expect("sources supervisor");
    let children: Vec<ChildInfo> = sources
        .call(SupervisorMsg::Children, Some(Duration::from_secs(5)))
        .await
        .expect("call")
        .unwrap();
    let sonarr = children
        .iter()
        .find(|c| c.name == name)
        .expect("sonarr child listed");
    assert_eq!(sonarr.restarts, 1);
    assert!(sonarr.running);

    // The other sources were not touched.
    assert!(children
        .iter()
        .filter(|c| c.name != name)
        .all(|c| c.restarts == 0));

    // The tree is visible through the admin API.
    let tree: serde_json::Value = relay
        .admin_get("/api/v1/actors")
        .await
        .json()
        .await
        .expect("json");
    let text = tree.to_string();
    assert!(
        text.contains(&name) && text.contains("router") && text.contains("history"),
        "{text}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervision_escalates_after_too_many_restarts_and_the_parent_rebuilds() {
    // One restart allowed per window: the second panic escalates to `sources`, which fails
    // and is restarted by the root with fresh children.
    let relay = start_relay(
        "[supervision]\nrestart_base = \"10ms\"\nmax_restarts = 1\nrestart_window = \"1m\"\n",
    )
    .await;
    let name = format!("{}source:sonarr", relay.namespace);
    let sources_name = format!("{}sources", relay.namespace);
    let sources_id = ActorRef::<SupervisorMsg>::where_is(sources_name.clone())
        .expect("sources")
        .get_id();
    for round in 0..2 {
        let actor = ActorRef::<SourceMsg>::where_is(name.clone()).expect("source running");
        let id = actor.get_id();
        actor.cast(SourceMsg::InjectPanic).expect("cast");
        eventually(Duration::from_secs(10), || {
            let name = name.clone();
            async move { ActorRef::<SourceMsg>::where_is(name).is_some_and(|a| a.get_id() != id) }
        })
        .await;
        let _ = round;
    }
    let new_sources = ActorRef::<SupervisorMsg>::where_is(sources_name).expect("sources back");
    assert_ne!(
        new_sources.get_id(),
        sources_id,
        "sources supervisor was restarted by the root"
    );
    eventually(Duration::from_secs(10), || async {
        post_test(&relay, 9).await == 202
    })
    .await;
    relay.stop().await;
}

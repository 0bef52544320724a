//! A graceful stop drains the hooks: a request in flight when shutdown begins is allowed to
//! finish (within the grace period) and its outcome is recorded, so it is not sent again on
//! the next start.

mod common;

use std::time::Duration;

use common::receiver::{hook_toml, post_new, sonarr_download, Receiver};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_shutdown_drains_requests_in_flight_and_records_them() {
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(800));
    let relay = start_relay(&hook_toml(
        "slowish",
        &receiver.url("/h"),
        "timeout = \"5s\"",
    ))
    .await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("drain", 1)).await;

    // Stop while the request is still being answered.
    eventually(Duration::from_secs(5), || async {
        receiver.requests().len() == 1
    })
    .await;
    let dir = relay.stop().await;

    let store = open_store(dir.path()).await;
    let d = delivery_of(&store, &id, "slowish")
        .await
        .expect("delivery row");
    store.close().await.expect("close");
    assert_eq!((d.state.as_str(), d.attempts), ("succeeded", 1));

    // Started again, nothing is re-sent.
    let relay = start_relay_in(
        dir,
        &hook_toml("slowish", &receiver.url("/h"), "timeout = \"5s\""),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "the drained delivery was not sent twice"
    );
    relay.stop().await;
}

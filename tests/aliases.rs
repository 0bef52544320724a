//! Drop-in URLs: users leaving Aura, CuePlex, TitleCardMaker and autoscan/autopulse only
//! change host and port. Query parameters (`library`, `trigger_on`) are kept on the event.

mod common;

use common::*;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(shared_fixtures().join(path)).expect("fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_route_to_the_matching_source_and_keep_query_params() {
    let relay = start_relay("").await;
    let sonarr_download = fixture("sonarr/Download.http");
    let sonarr_upgrade = fixture("sonarr/Download-upgrade.http");
    let sonarr_test = fixture("sonarr/Test.http");
    let radarr = fixture("radarr/Download.http");
    let plex = fixture("plex/library.new-episode.http");

    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "/api/sonarr/webhook?library=TV%20Shows",
            &sonarr_download,
            "sonarr",
        ),
        ("/webhooks/sonarr", &sonarr_upgrade, "sonarr"),
        ("/webhooks/radarr", &radarr, "radarr"),
        (
            "/api/webhooks/plex?token=plex-token&trigger_on=library.new",
            &plex,
            "plex",
        ),
        ("/api/webhooks/sonarr/cards", &sonarr_test, "sonarr"),
    ];
    let mut ids = Vec::new();
    for (path, raw, source) in &cases {
        let resp = send_raw(relay.addr, &retarget(raw, path)).await;
        assert_eq!(
            resp.status,
            202,
            "{path}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let id = resp.json()["id"].as_str().expect("id").to_string();
        let ev = relay.stored_event(&id).await;
        assert_eq!(ev["source"], *source, "{path}");
        ids.push(id);
    }
    let aura = relay.stored_event(&ids[0]).await;
    assert_eq!(aura["normalized"]["params"]["library"], "TV Shows");
    let tcm = relay.stored_event(&ids[3]).await;
    assert_eq!(tcm["normalized"]["params"]["trigger_on"], "library.new");
    assert!(
        tcm["normalized"]["params"].get("token").is_none(),
        "token not stored"
    );

    // autoscan/autopulse: /triggers/{name} goes to the source of that name or kind.
    let radarr_test = fixture("radarr/Test.http");
    let resp = send_raw(relay.addr, &retarget(&radarr_test, "/triggers/radarr")).await;
    assert_eq!(resp.status, 202);
    let resp = send_raw(relay.addr, &retarget(&sonarr_test, "/triggers/nosuch")).await;
    assert_eq!(resp.status, 404);
    assert!(resp.json()["error"]
        .as_str()
        .expect("error")
        .contains("nosuch"));

    assert_eq!(relay.count_events().await, 6);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_plex_trigger_on_filters_events_without_storing_them() {
    let relay = start_relay("").await;
    let scrobble = fixture("plex/media.scrobble-episode.http");
    let resp = send_raw(
        relay.addr,
        &retarget(
            &scrobble,
            "/api/webhooks/plex?token=plex-token&trigger_on=library.new",
        ),
    )
    .await;
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["filtered"], true);
    assert_eq!(v["event"], "media.scrobble");
    assert_eq!(relay.count_events().await, 0);

    // Case-insensitive: the same event passes when listed in any case.
    let resp = send_raw(
        relay.addr,
        &retarget(
            &scrobble,
            "/api/webhooks/plex?token=plex-token&trigger_on=LIBRARY.NEW,Media.Scrobble",
        ),
    )
    .await;
    assert_eq!(resp.status, 202);
    assert_eq!(relay.count_events().await, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_can_be_remapped_in_config() {
    let relay = start_relay("[aliases]\n\"/api/sonarr/webhook\" = \"sonarr-open\"\n").await;
    let mut raw = fixture("sonarr/Test.http");
    // sonarr-open has auth = "none": the credentials are simply not needed.
    raw = retarget(&raw, "/api/sonarr/webhook");
    let resp = send_raw(relay.addr, &raw).await;
    assert_eq!(resp.status, 202);
    let ev = relay
        .stored_event(resp.json()["id"].as_str().expect("id"))
        .await;
    assert_eq!(ev["source"], "sonarr-open");
    relay.stop().await;
}

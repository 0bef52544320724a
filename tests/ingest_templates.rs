//! User-written templates (Jellyfin webhook plugin Handlebars, custom scripts) over real
//! HTTP: the common key spellings store the same normalised event without config, and a
//! `[source.jellyfin]` / `[source.custom]` key mapping reads the user's own keys.

mod common;

use common::*;
use serde_json::{json, Value};

/// A Jellyfin source with its own key mapping, and a custom source with one, both without
/// auth so the requests stay short.
const MAPPED: &str = r#"
[[source]]
name = "jellyfin-mapped"
kind = "jellyfin"
auth = "none"
[source.jellyfin]
event = "trigger"
name = ["episode_title", "Name"]
series_name = "show.title"
season = "show.season"
episode = "show.episode"
tvdb = "ids.tvdb"

[[source]]
name = "script"
kind = "custom"
auth = "none"
[source.custom]
event = ["action", "event"]
file_path = "item.path"
title = "item.name"
"#;

/// Posts `body` as the Jellyfin plugin does (JSON as `text/plain; charset=utf-8`).
async fn post(relay: &TestRelay, source: &str, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(relay.url(&format!("/api/v1/webhooks/{source}")))
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(body.to_owned());
    if source == "jellyfin" {
        req = req.header("X-Webhook-Secret", "jf-0b7d2f9c1e4a4c58");
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// Posts and returns the stored normalised event.
async fn stored(relay: &TestRelay, source: &str, body: &str) -> Value {
    let (status, answer) = post(relay, source, body).await;
    assert_eq!(status, 202, "{source}: {answer}");
    let id = answer["id"].as_str().expect("id");
    let ev = relay.stored_event(id).await;
    assert_eq!(ev["source"], source, "{ev}");
    ev["normalized"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_jellyfin_spellings_store_the_same_event() {
    let relay = start_relay("").await;
    // The same episode, as three users might template it: the plugin's own names, snake_case
    // and camelCase with the padded numbers and an unquoted `{{Year}}`.
    let bodies = [
        r#"{"NotificationType": "ItemAdded", "ItemType": "Episode", "Name": "Triple Point", "SeriesName": "The Expanse", "SeasonNumber": "3", "EpisodeNumber": "5", "Year": "2015", "Provider_tvdb": "6560810", "ServerName": "tycho"}"#,
        r#"{"notification_type": "ItemAdded", "item_type": "Episode", "name": "Triple Point", "series_name": "The Expanse", "season_number": "3", "episode_number": "5", "year": "2015", "provider_tvdb": "6560810", "server_name": "tycho"}"#,
        r#"{"event": "itemAdded", "itemType": "episode", "itemName": "Triple Point", "seriesName": "The Expanse", "seasonNumber00": "03", "episodeNumber00": "05", "year": 2015, "tvdbId": "6560810", "serverName": "tycho"}"#,
    ];
    let mut seen = Vec::new();
    for body in bodies {
        let ev = stored(&relay, "jellyfin", body).await;
        assert_eq!(ev["kind"], "library_new", "{ev}");
        assert_eq!(ev["media"]["type"], "episode", "{ev}");
        assert_eq!(ev["media"]["title"], "The Expanse", "{ev}");
        assert_eq!(ev["media"]["year"], 2015, "{ev}");
        assert_eq!(
            ev["episodes"],
            json!([{"season": 3, "episode": 5, "title": "Triple Point", "tvdb": 6560810}]),
            "{ev}"
        );
        assert_eq!(ev["sender_instance"], "tycho", "{ev}");
        seen.push((ev["media"].clone(), ev["episodes"].clone()));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    assert_eq!(relay.count_events().await, 3);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_jellyfin_configured_mapping_reads_the_users_keys() {
    let relay = start_relay(MAPPED).await;
    let ev = stored(
        &relay,
        "jellyfin-mapped",
        r#"{"trigger": "PlaybackStop", "PlayedToCompletion": "True", "ItemType": "Episode", "episode_title": "Triple Point", "show": {"title": "The Expanse", "season": "03", "episode": 5}, "ids": {"tvdb": "6560810"}}"#,
    )
    .await;
    assert_eq!(ev["kind"], "played", "{ev}");
    assert_eq!(ev["event_type"], "PlaybackStop", "{ev}");
    assert_eq!(ev["media"]["title"], "The Expanse", "{ev}");
    assert_eq!(
        ev["episodes"],
        json!([{"season": 3, "episode": 5, "title": "Triple Point", "tvdb": 6560810}]),
        "{ev}"
    );

    // The mapping replaced the event key: a body without it is a clear 422, not stored.
    let (status, answer) = post(
        &relay,
        "jellyfin-mapped",
        r#"{"NotificationType": "ItemAdded", "Name": "x"}"#,
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let msg = answer["error"].as_str().expect("JSON error body");
    assert!(msg.contains("`trigger`"), "{msg}");
    assert_eq!(relay.count_events().await, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_custom_configured_mapping_reads_nested_keys() {
    let relay = start_relay(MAPPED).await;
    let ev = stored(
        &relay,
        "script",
        r#"{"action": "Upgrade", "item": {"path": "/movies/Dune (2021)/Dune.mkv", "name": "Dune"}, "TmdbId": 438631}"#,
    )
    .await;
    assert_eq!(ev["kind"], "upgrade", "{ev}");
    assert_eq!(
        ev["files"][0]["path"], "/movies/Dune (2021)/Dune.mkv",
        "{ev}"
    );
    assert_eq!(ev["media"]["title"], "Dune", "{ev}");
    assert_eq!(
        ev["media"]["ids"]["tmdb"], 438631,
        "loose default key: {ev}"
    );

    let (status, answer) = post(&relay, "script", r#"{"action": "import"}"#).await;
    assert_eq!(status, 422, "{answer}");
    let msg = answer["error"].as_str().expect("JSON error body");
    assert!(msg.contains("`item.path`"), "{msg}");
    assert_eq!(relay.count_events().await, 1);
    relay.stop().await;
}

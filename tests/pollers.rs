//! Reconciliation pollers against a fake Sonarr and a fake Radarr: records written to the
//! app's history while relayarr was down are recovered after it starts, routed to hooks and
//! tagged `recovered`; what a webhook already brought is not recovered again; the cursor
//! survives a restart; a wrong API key shows in `GET /api/v1/admin/pollers`.

mod common;

use std::time::Duration;

use common::fake_arr::*;
use common::receiver::*;
use common::*;
use serde_json::Value;

const SONARR_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const RADARR_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const WAIT: Duration = Duration::from_secs(15);

/// An `[[arr]]` table polling `fake` every 200 ms, with no settle time.
fn arr_toml(name: &str, kind: &str, fake: &FakeArr, key: &str, source: &str) -> String {
    format!(
        "\n[[arr]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{}\"\napi_key = \"{key}\"\nsource = \"{source}\"\nevery = \"200ms\"\nsettle = \"0s\"\ntimeout = \"5s\"\n",
        fake.url()
    )
}

/// The status of poller `name` from `GET /api/v1/admin/pollers`.
async fn poller(relay: &TestRelay, name: &str) -> Value {
    let resp = relay.admin_get("/api/v1/admin/pollers").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["pollers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no poller {name} in {v}"))
}

/// Waits until poller `name` satisfies `cond`, and returns its status.
async fn wait_poller(relay: &TestRelay, name: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = poller(relay, name).await;
        if cond(&p) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "poller {name} never got there: {p:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_read(p: &Value) -> bool {
    !p["last"].is_null()
}

fn tags(body: &Value) -> Vec<String> {
    body["data"]["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const SEASON3: &str = "/tv/The Expanse/Season 03";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_catch_up_on_history_written_while_relayarr_was_stopped() {
    let fake = FakeArr::sonarr(SONARR_KEY).await;
    let rx = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml("all", &rx.hook_url(), "events = \"*\""),
        arr_toml("sonarr", "sonarr", &fake, SONARR_KEY, "sonarr")
    );
    let relay = start_relay(&extra).await;
    wait_poller(&relay, "sonarr", has_read).await;
    let dir = relay.stop().await;

    // While relayarr is down, Sonarr imports, upgrades, renames and deletes.
    fake.push(sonarr_grab(3, 5, "DL-A"));
    let e5 = format!("{SEASON3}/The Expanse - S03E05.mkv");
    let first = fake.push(sonarr_import(3, 5, "DL-A", &e5));
    // One file, two episodes: two records.
    let e67 = format!("{SEASON3}/The Expanse - S03E06-E07.mkv");
    fake.push(sonarr_import(3, 6, "DL-B", &e67));
    fake.push(sonarr_import(3, 7, "DL-B", &e67));
    let old8 = format!("{SEASON3}/The Expanse - S03E08 [HDTV-720p].mkv");
    fake.push(sonarr_delete(3, 8, "Upgrade", &old8));
    let e8 = format!("{SEASON3}/The Expanse - S03E08 [WEBDL-1080p].mkv");
    fake.push(sonarr_import(3, 8, "DL-C", &e8));
    let e9 = format!("{SEASON3}/The Expanse - S03E09 - Renamed.mkv");
    fake.push(sonarr_rename(3, 9, &format!("{SEASON3}/e9.mkv"), &e9));
    let e10 = format!("{SEASON3}/The Expanse - S03E10.mkv");
    fake.push(sonarr_delete(3, 10, "MissingFromDisk", &e10));

    let relay = start_relay_in(dir, &extra).await;
    rx.wait_for(5, WAIT).await;
    // Later reads cover the same records again, and add nothing.
    wait_poller(&relay, "sonarr", |p| p["polls"].as_u64() >= Some(4)).await;
    rx.assert_stays_at(5, Duration::from_millis(500)).await;

    let bodies: Vec<Value> = rx.requests().iter().map(|r| r.json()).collect();
    let by_path = |path: &str| {
        bodies
            .iter()
            .find(|b| b["data"]["files"][0]["path"] == path)
            .unwrap_or_else(|| panic!("no event for {path} in {bodies:#?}"))
            .clone()
    };
    for b in &bodies {
        assert_eq!(b["source"], "sonarr");
        assert_eq!(b["instance_id"], "sonarr");
        assert!(tags(b).contains(&"recovered".to_owned()), "{b:#}");
        let from = b["data"]["details"]["recovered_from"]
            .as_str()
            .expect("recovered_from");
        assert!(from.starts_with("history:"), "{from}");
        assert_eq!(b["data"]["media"]["title"], "The Expanse");
        assert_eq!(b["data"]["media"]["ids"]["tvdb"], 280619);
    }
    let import = by_path(&e5);
    assert_eq!(import["event"], "import");
    assert_eq!(import["data"]["download_id"], "DL-A");
    assert_eq!(
        import["data"]["details"]["recovered_from"],
        format!("history:{first}")
    );
    assert_eq!(import["data"]["episodes"][0]["episode"], 5);
    let multi = by_path(&e67);
    assert_eq!(multi["event"], "import");
    assert_eq!(multi["data"]["episodes"].as_array().map(Vec::len), Some(2));
    let upgrade = by_path(&e8);
    assert_eq!(upgrade["event"], "upgrade");
    assert_eq!(upgrade["data"]["is_upgrade"], true);
    assert_eq!(upgrade["data"]["files"][1]["path"], old8.as_str());
    assert_eq!(upgrade["data"]["files"][1]["deleted"], true);
    let rename = by_path(&e9);
    assert_eq!(rename["event"], "rename");
    assert_eq!(
        rename["data"]["files"][0]["previous_path"],
        format!("{SEASON3}/e9.mkv")
    );
    let delete = by_path(&e10);
    assert_eq!(delete["event"], "delete");
    assert_eq!(
        delete["data"]["details"]["delete_reason"],
        "missingFromDisk"
    );

    // Stored durably, with the history records as the raw body.
    let stored = relay
        .stored_event(import["id"].as_str().expect("event id"))
        .await;
    assert_eq!(stored["content_type"], "application/json");
    let raw: Value = serde_json::from_str(stored["raw"].as_str().expect("raw")).expect("raw JSON");
    assert_eq!(raw[0]["id"], first);
    assert_eq!(raw[0]["eventType"], "downloadFolderImported");

    let p = poller(&relay, "sonarr").await;
    assert_eq!(p["recovered"], 5, "{p:#}");
    assert!(p["last_error"].is_null(), "{p:#}");

    // The key went as a header, never in a URL; dates went as UTC with a Z.
    let reqs = fake.requests();
    assert!(reqs.len() >= 4);
    for r in &reqs {
        assert_eq!(r.api_key_header.as_deref(), Some(SONARR_KEY));
        assert!(!r.query.contains(SONARR_KEY), "{}", r.query);
        assert!(
            r.query.contains("includeSeries=true&includeEpisode=true"),
            "{}",
            r.query
        );
        assert!(
            r.query.starts_with("date=") && r.query.contains("Z&"),
            "{}",
            r.query
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_do_not_recover_what_a_webhook_already_brought() {
    let fake = FakeArr::sonarr(SONARR_KEY).await;
    let rx = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml("all", &rx.hook_url(), "events = \"*\""),
        arr_toml("sonarr", "sonarr", &fake, SONARR_KEY, "sonarr")
    );
    let relay = start_relay(&extra).await;

    // Sonarr's webhook for an import arrives...
    let webhook = r#"{"series":{"id":12,"title":"The Expanse","year":2015,"path":"/tv/The Expanse","tvdbId":280619},
        "episodes":[{"id":4805,"episodeNumber":5,"seasonNumber":3,"title":"Triple Point"}],
        "episodeFile":{"id":9876,"relativePath":"Season 03/web.mkv","path":"/tv/The Expanse/Season 03/web.mkv","quality":"WEBDL-1080p"},
        "isUpgrade":false,"downloadClient":"SABnzbd","downloadId":"DL-WEB","eventType":"Download","instanceName":"Sonarr"}"#;
    let client = reqwest::Client::new();
    let (status, _) = post_sonarr(&client, &relay, webhook.to_owned()).await;
    assert_eq!(status, 202);
    rx.wait_for(1, WAIT).await;
    // ...and its history record; a second import's webhook was lost.
    fake.push(sonarr_import(3, 5, "DL-WEB", &format!("{SEASON3}/web.mkv")));
    let missed = format!("{SEASON3}/missed.mkv");
    fake.push(sonarr_import(3, 6, "DL-MISSED", &missed));

    rx.wait_for(2, WAIT).await;
    let p = wait_poller(&relay, "sonarr", |p| p["polls"].as_u64() >= Some(4)).await;
    rx.assert_stays_at(2, Duration::from_millis(500)).await;
    let recovered = rx.requests()[1].json();
    assert_eq!(recovered["data"]["files"][0]["path"], missed.as_str());
    assert!(tags(&recovered).contains(&"recovered".to_owned()));
    assert_eq!(p["recovered"], 1, "{p:#}");
    assert_eq!(relay.count_events().await, 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_cursor_survives_a_restart() {
    let fake = FakeArr::sonarr(SONARR_KEY).await;
    let rx = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml("all", &rx.hook_url(), "events = \"*\""),
        arr_toml("sonarr", "sonarr", &fake, SONARR_KEY, "sonarr")
    );
    let relay = start_relay(&extra).await;
    wait_poller(&relay, "sonarr", has_read).await;
    // Dated after the first read pinned the cursor, so the cursor moves to it (once it is
    // no longer in the future).
    let date = now_s() + 2;
    fake.push_at(
        date,
        sonarr_import(3, 5, "DL-A", &format!("{SEASON3}/a.mkv")),
    );
    rx.wait_for(1, WAIT).await;
    let before = wait_poller(&relay, "sonarr", |p| p["cursor"] == arr_date(date)).await;
    assert!(before["seen"].as_u64() >= Some(1), "{before:#}");
    let dir = relay.stop().await;

    let relay = start_relay_in(dir, &extra).await;
    let after = wait_poller(&relay, "sonarr", has_read).await;
    // The read after the restart starts from the saved cursor, and knows the record by its
    // id: it is neither recovered again nor even looked up.
    assert_eq!(after["cursor"], arr_date(date), "{after:#}");
    assert_eq!(after["recovered"], 1, "{after:#}");
    assert_eq!(after["last"]["seen"], 1, "{after:#}");
    assert_eq!(after["last"]["duplicates"], 0, "{after:#}");
    assert_eq!(after["last"]["recovered"], 0, "{after:#}");
    rx.assert_stays_at(1, Duration::from_millis(500)).await;
    // The read started overlap (1h) before the cursor.
    let last = fake.requests().pop().expect("a request");
    let from = arr_date(date - 3600).replace(':', "%3A");
    assert!(
        last.query.starts_with(&format!("date={from}&")),
        "{} vs {from}",
        last.query
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_wrong_api_key_shows_as_last_error_and_polling_goes_on() {
    let fake = FakeArr::sonarr(SONARR_KEY).await;
    let wrong = "wrong-key-5f4e3d2c1b";
    let extra = arr_toml("sonarr", "sonarr", &fake, wrong, "sonarr");
    let relay = start_relay(&extra).await;
    let want = format!("api key rejected by sonarr at {}", fake.url());
    let p = wait_poller(&relay, "sonarr", |p| {
        p["last_error"] == want.as_str() && p["polls"].as_u64() >= Some(3)
    })
    .await;
    assert!(p["last_success_at"].is_null(), "{p:#}");
    assert!(p["cursor"].is_null(), "{p:#}");
    assert!(!p["last_poll_at"].is_null(), "{p:#}");
    let text = relay
        .admin_get("/api/v1/admin/pollers")
        .await
        .text()
        .await
        .expect("body");
    assert!(!text.contains(wrong), "the key leaked: {text}");
    for r in fake.requests() {
        assert_eq!(r.status, 401);
        assert_eq!(r.api_key_header.as_deref(), Some(wrong));
        assert!(!r.query.contains("apikey"), "{}", r.query);
    }
    // The admin API needs its token.
    let resp = reqwest::get(relay.url("/api/v1/admin/pollers"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_radarr_history_is_recovered_too() {
    let fake = FakeArr::radarr(RADARR_KEY).await;
    let rx = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml("all", &rx.hook_url(), "events = \"*\""),
        arr_toml("radarr", "radarr", &fake, RADARR_KEY, "radarr")
    );
    let relay = start_relay(&extra).await;
    let folder = "/movies/Dune Part Two (2024)";
    let old = format!("{folder}/Dune Part Two (2024) [WEBDL-1080p].mkv");
    let new = format!("{folder}/Dune Part Two (2024) [Bluray-1080p].mkv");
    let renamed = format!("{folder}/Dune Part Two (2024) {{Bluray-1080p}}.mkv");
    fake.push(radarr_delete("Upgrade", &old));
    fake.push(radarr_import("DL-RADARR", &new));
    fake.push(radarr_rename(&new, &renamed));
    fake.push(radarr_delete("Manual", &renamed));

    rx.wait_for(3, WAIT).await;
    wait_poller(&relay, "radarr", |p| p["polls"].as_u64() >= Some(4)).await;
    rx.assert_stays_at(3, Duration::from_millis(500)).await;
    let bodies: Vec<Value> = rx.requests().iter().map(|r| r.json()).collect();
    // Deliveries run concurrently (the hook's cap is 4): arrival order is not the order
    // of the records.
    let mut kinds: Vec<&str> = bodies.iter().filter_map(|b| b["event"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["delete", "rename", "upgrade"]);
    for b in &bodies {
        assert_eq!(b["source"], "radarr");
        assert_eq!(b["instance_id"], "radarr");
        assert!(tags(b).contains(&"recovered".to_owned()));
        let media = &b["data"]["media"];
        assert_eq!(media["type"], "movie");
        assert_eq!(media["title"], "Dune: Part Two");
        assert_eq!(media["year"], 2024);
        assert_eq!(media["ids"]["tmdb"], 693134);
        assert_eq!(media["path"], folder);
    }
    let of = |kind: &str| {
        bodies
            .iter()
            .find(|b| b["event"] == kind)
            .map(|b| b["data"].clone())
            .unwrap_or_else(|| panic!("no {kind} event in {bodies:#?}"))
    };
    let up = &of("upgrade");
    assert_eq!(up["files"][0]["path"], new.as_str());
    assert_eq!(
        up["files"][0]["relative_path"],
        "Dune Part Two (2024) [Bluray-1080p].mkv"
    );
    assert_eq!(up["files"][0]["quality"], "Bluray-1080p");
    assert_eq!(up["files"][1]["path"], old.as_str());
    assert_eq!(up["download_id"], "DL-RADARR");
    assert_eq!(of("rename")["files"][0]["path"], renamed.as_str());
    let delete = of("delete");
    assert_eq!(delete["event_type"], "MovieFileDelete");
    assert_eq!(delete["details"]["delete_reason"], "manual");
    for r in fake.requests() {
        assert!(r.query.ends_with("&includeMovie=true"), "{}", r.query);
    }
    relay.stop().await;
}

/// An embedding application's subscription sees a recovered event like a received one:
/// once, after the store has it, tagged `recovered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_recovered_events_reach_the_embedding_feed() {
    let fake = FakeArr::sonarr(SONARR_KEY).await;
    let relay = start_relay(&arr_toml("sonarr", "sonarr", &fake, SONARR_KEY, "sonarr")).await;
    let mut feed = relay.handle().subscribe();
    let path = format!("{SEASON3}/feed.mkv");
    fake.push(sonarr_import(3, 7, "DL-FEED", &path));

    let e = tokio::time::timeout(WAIT, feed.recv())
        .await
        .expect("the recovered event never reached the feed")
        .expect("feed open, not lagging");
    assert!(
        e.event.tags.iter().any(|t| t == "recovered"),
        "{:?}",
        e.event.tags
    );
    let files: Vec<&str> = e.event.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, [path.as_str()]);
    // Durable before visible: the store has it.
    let stored = relay
        .admin_get(&format!("/api/v1/admin/events/{}", e.id))
        .await;
    assert_eq!(stored.status(), 200, "event {} not in the store", e.id);
    // Later reads see the record again and recognise it: nothing more is published.
    wait_poller(&relay, "sonarr", |p| p["polls"].as_u64() >= Some(4)).await;
    match feed.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {}
        other => panic!("one event expected on the feed, got {other:?} as well"),
    }
    relay.stop().await;
}

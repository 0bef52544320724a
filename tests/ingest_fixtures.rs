//! Replays every file of `shared/fixtures` byte for byte over a raw TCP socket against the
//! real server, and checks statuses, the stored normalised fields, and the stored row count.

mod common;

use std::collections::BTreeMap;

use common::*;

/// The route each fixture directory is sent to.
fn route_for(dir: &str) -> String {
    match dir {
        "plex" => "/api/v1/webhooks/plex?token=plex-token".into(),
        other => format!("/api/v1/webhooks/{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_shared_fixtures_are_accepted_and_normalised() {
    let relay = start_relay("").await;
    let root = shared_fixtures();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && e.file_name() != "bad")
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    for dir in dirs {
        let dname = dir.file_name().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "http"))
            .collect();
        files.sort();
        for f in files {
            let raw = std::fs::read(&f).expect("read fixture");
            let resp = send_raw(relay.addr, &retarget(&raw, &route_for(&dname))).await;
            let key = format!("{dname}/{}", f.file_stem().expect("stem").to_string_lossy());
            assert_eq!(
                resp.status,
                202,
                "{key}: {}",
                String::from_utf8_lossy(&resp.body)
            );
            let body = resp.json();
            assert_eq!(body["duplicate"], false, "{key}");
            ids.insert(key, body["id"].as_str().expect("id").to_string());
        }
    }
    assert_eq!(ids.len(), 10, "every valid fixture was replayed: {ids:?}");
    assert_eq!(relay.count_events().await, 10);

    let get = |k: &str| {
        ids.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no id for {k}"))
    };

    let ev = relay.stored_event(&get("sonarr/Download")).await;
    let n = &ev["normalized"];
    assert_eq!(ev["source"], "sonarr");
    assert_eq!(n["kind"], "import");
    assert_eq!(n["event_type"], "Download");
    assert_eq!(n["is_upgrade"], false);
    assert_eq!(n["media"]["title"], "The Expanse");
    assert_eq!(n["media"]["year"], 2015);
    assert_eq!(n["media"]["ids"]["tvdb"], 280619);
    assert_eq!(n["episodes"][0]["season"], 3);
    assert_eq!(n["episodes"][0]["episode"], 5);
    assert_eq!(
        n["files"][0]["path"],
        "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv"
    );
    assert_eq!(n["download_id"], "3F5A9C0E1B7D42A68E0C9B1D2F3A4E5B6C7D8E9F");
    assert!(ev["raw"]
        .as_str()
        .expect("raw")
        .contains("\"eventType\": \"Download\""));

    let n = &relay.stored_event(&get("sonarr/Download-upgrade")).await["normalized"];
    assert_eq!(n["kind"], "upgrade");
    assert_eq!(n["is_upgrade"], true);
    let files = n["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"]
        == "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [WEBDL-2160p]-FLUX.mkv"
        && f["deleted"] == false));
    assert!(files.iter().any(|f| f["path"]
        == "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv"
        && f["deleted"] == true));

    let n = &relay.stored_event(&get("sonarr/SeriesDelete")).await["normalized"];
    assert_eq!(n["kind"], "series_delete");
    assert_eq!(n["media"]["title"], "The Expanse");

    for k in ["sonarr/Test", "radarr/Test"] {
        assert_eq!(
            relay.stored_event(&get(k)).await["normalized"]["kind"],
            "test",
            "{k}"
        );
    }

    let n = &relay.stored_event(&get("radarr/Download")).await["normalized"];
    assert_eq!(n["kind"], "import");
    assert_eq!(n["media"]["title"], "Dune: Part Two");
    assert_eq!(n["media"]["ids"]["tmdb"], 693134);
    assert_eq!(
        n["files"][0]["path"],
        "/movies/Dune Part Two (2024)/Dune Part Two (2024) [Bluray-1080p].mkv"
    );

    let ev = relay.stored_event(&get("plex/library.new-episode")).await;
    let n = &ev["normalized"];
    assert_eq!(n["kind"], "library_new");
    assert_eq!(n["event_type"], "library.new");
    assert_eq!(n["media"]["ids"]["plex_rating_key"], "48213");
    assert_eq!(n["media"]["title"], "The Expanse");
    // Only the JSON payload part is kept as the raw body; the JPEG thumb is dropped.
    assert!(ev["raw"]
        .as_str()
        .expect("raw")
        .starts_with("{\"event\":\"library.new\""));
    // The secret token is never stored with the event.
    assert!(n["params"].get("token").is_none());

    let n = &relay
        .stored_event(&get("plex/media.scrobble-episode"))
        .await["normalized"];
    assert_eq!(n["kind"], "played");

    let n = &relay
        .stored_event(&get("tautulli/created-recently-added"))
        .await["normalized"];
    assert_eq!(n["kind"], "library_new");
    assert_eq!(n["episodes"][0]["season"], 3);
    assert_eq!(n["episodes"][0]["episode"], 5);
    assert_eq!(n["media"]["ids"]["plex_rating_key"], "48213");

    let n = &relay.stored_event(&get("jellyfin/ItemAdded")).await["normalized"];
    assert_eq!(n["kind"], "library_new");
    assert_eq!(n["event_type"], "ItemAdded");

    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_bad_shared_fixtures_are_rejected_and_not_stored() {
    let relay = start_relay("").await;
    let bad = shared_fixtures().join("bad");

    let raw = std::fs::read(bad.join("truncated-json.http")).expect("read");
    let resp = send_raw(relay.addr, &retarget(&raw, "/api/v1/webhooks/sonarr-open")).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"]
        .as_str()
        .expect("error")
        .contains("truncated"));

    let raw = std::fs::read(bad.join("wrong-basic-auth.http")).expect("read");
    let resp = send_raw(relay.addr, &retarget(&raw, "/api/v1/webhooks/sonarr")).await;
    assert_eq!(resp.status, 401);
    assert!(resp
        .header("www-authenticate")
        .expect("WWW-Authenticate")
        .starts_with("Basic"));
    assert!(resp.json()["error"].is_string());

    let raw = std::fs::read(bad.join("multipart-without-payload.http")).expect("read");
    let resp = send_raw(
        relay.addr,
        &retarget(&raw, "/api/v1/webhooks/plex?token=plex-token"),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"]
        .as_str()
        .expect("error")
        .contains("payload"));

    assert_eq!(relay.count_events().await, 0, "nothing stored");
    // Rejections are recorded for troubleshooting (not as events).
    eventually(std::time::Duration::from_secs(5), || async {
        let v: serde_json::Value = relay
            .admin_get("/api/v1/admin/rejections")
            .await
            .json()
            .await
            .expect("json");
        v["rejections"].as_array().is_some_and(|r| r.len() == 3)
    })
    .await;
    relay.stop().await;
}

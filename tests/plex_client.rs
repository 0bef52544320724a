//! Drives `PlexClient` against `FakePlex` in both wire formats.

mod common;

use std::time::Duration;

use common::fake_plex::{FakeFormat, FakePlex};
use relayarr::actors::plex::client::{
    EpisodeWant, PlexClient, PlexError, WireFormat, TYPE_EPISODE, TYPE_MOVIE,
};
use sha2::{Digest, Sha256};

const TOKEN: &str = "tok-123-secret";
const SHOW: &str = "/data/tv/Alice in Borderland (2020)";
const S02: &str = "/data/tv/Alice in Borderland (2020)/Season 02";

fn ep(n: i32) -> String {
    format!("{S02}/Alice in Borderland (2020) - S02E{n:02} - Episode {n} WEBDL-1080p.mkv")
}

async fn setup(format: WireFormat) -> (FakePlex, PlexClient) {
    let fake = FakePlex::start(TOKEN).await;
    fake.add_section("1", "movie", "Movies", &["/data/movies"]);
    fake.add_section("2", "show", "TV Shows", &["/data/tv", "/data/tv2"]);
    fake.add_show("2", "100", "Alice in Borderland", SHOW);
    fake.add_show("2", "200", "Severance", "/data/tv/Severance");
    let client = client_for(&fake, TOKEN, format, Duration::from_secs(5));
    (fake, client)
}

fn client_for(fake: &FakePlex, token: &str, format: WireFormat, timeout: Duration) -> PlexClient {
    PlexClient::new(&fake.url(), token.to_string(), timeout, format).expect("client")
}

const FORMATS: [WireFormat; 2] = [WireFormat::Json, WireFormat::Xml];

#[tokio::test]
async fn sections_in_both_formats() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let sections = client.sections().await.expect("sections");
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[1].key, "2");
        assert_eq!(sections[1].kind, "show");
        assert_eq!(sections[1].locations, vec!["/data/tv", "/data/tv2"]);
        assert!(!sections[1].refreshing);
        let calls = fake.calls();
        assert_eq!(calls[0].path, "/library/sections");
        assert_eq!(
            calls[0].accept.as_deref() == Some("application/json"),
            format == WireFormat::Json
        );
        assert!(calls.iter().all(|c| !c.token_in_query));
    }
}

#[tokio::test]
async fn scan_then_find_after_delay() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let key = fake.add_file_on_disk("2", Some("100"), &ep(1), Some(2), Some(1), "Episode 1");
        fake.set_scan_delay(Duration::from_millis(500));
        let file = ep(1);
        let find = || client.find_episode("2", Some(SHOW), &file, None, None);
        assert!(
            find().await.expect("find").is_none(),
            "not in Plex before a scan"
        );

        client.scan("2", S02).await.expect("scan");
        assert_eq!(fake.scans(), vec![("2".to_string(), S02.to_string())]);
        let scan_call = fake
            .calls()
            .into_iter()
            .find(|c| c.path.ends_with("/refresh"))
            .expect("scan call");
        assert_eq!(scan_call.method, "GET");
        assert_eq!(scan_call.query, vec![("path".to_string(), S02.to_string())]);

        assert!(
            find().await.expect("find").is_none(),
            "not listed during the delay"
        );
        assert!(client.sections().await.expect("sections")[1].refreshing);

        tokio::time::sleep(Duration::from_millis(700)).await;
        let item = find().await.expect("find").expect("found after the delay");
        assert_eq!(item.rating_key, key);
        assert_eq!(item.kind, "episode");
        assert_eq!(item.show_title.as_deref(), Some("Alice in Borderland"));
        assert_eq!((item.season, item.episode), (Some(2), Some(1)));
        assert!(item.has_file(&ep(1)));
        assert!(!client.sections().await.expect("sections")[1].refreshing);
    }
}

#[tokio::test]
async fn scanning_a_file_path_or_a_sibling_folder_finds_nothing() {
    let (fake, client) = setup(WireFormat::Json).await;
    fake.add_file_on_disk("2", Some("100"), &ep(1), Some(2), Some(1), "Episode 1");
    client.scan("2", &ep(1)).await.expect("scan");
    // "/data/tv/Alice in Borderland" is a prefix of the show folder but not at a component boundary.
    client
        .scan("2", "/data/tv/Alice in Borderland")
        .await
        .expect("scan");
    let found = client
        .with_file_filter(false)
        .find_episode("2", Some(SHOW), &ep(1), None, None)
        .await
        .expect("find");
    assert!(found.is_none());
}

#[tokio::test]
async fn find_episodes_batch_does_one_show_lookup_and_one_all_leaves() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let client = client.with_file_filter(false);
        let keys: Vec<String> = (1..=3)
            .map(|n| fake.add_indexed_file("2", Some("100"), &ep(n), Some(2), Some(n), "Ep"))
            .collect();
        fake.add_indexed_file(
            "2",
            Some("200"),
            "/data/tv/Severance/Season 01/S01E01.mkv",
            Some(1),
            Some(1),
            "Good News",
        );
        fake.clear_calls();

        let wants: Vec<EpisodeWant> = (1..=3)
            .map(|n| EpisodeWant {
                file: ep(n),
                season: Some(2),
                episode: Some(n),
            })
            .collect();
        let found = client
            .find_episodes("2", Some(SHOW), &wants)
            .await
            .expect("find");
        let got: Vec<String> = found
            .iter()
            .map(|f| f.as_ref().expect("found").rating_key.clone())
            .collect();
        assert_eq!(got, keys);

        let calls = fake.calls();
        let shows = calls
            .iter()
            .filter(|c| c.query.iter().any(|(k, v)| k == "type" && v == "2"))
            .count();
        let leaves = calls
            .iter()
            .filter(|c| c.path.ends_with("/allLeaves"))
            .count();
        assert_eq!((shows, leaves, calls.len()), (1, 1, 2), "{calls:#?}");
        // Paging travels as request headers.
        assert_eq!(calls[0].container, (Some("0".into()), Some("200".into())));
        assert!(calls[0]
            .query
            .iter()
            .any(|(k, v)| k == "includeGuids" && v == "1"));
    }
}

#[tokio::test]
async fn number_fallback_and_recently_added_fallback() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let client = client.with_file_filter(false);
        let old = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
        // A file whose show folder we do not know: only the recently-added listing can find it.
        let orphan = fake.add_indexed_file(
            "2",
            None,
            "/data/tv2/Odd/S01E01.mkv",
            Some(1),
            Some(1),
            "Odd",
        );

        let upgraded =
            format!("{S02}/Alice in Borderland (2020) - S02E01 - Episode 1 Bluray-2160p.mkv");
        let wants = vec![
            EpisodeWant {
                file: upgraded.clone(),
                season: Some(2),
                episode: Some(1),
            },
            EpisodeWant {
                file: "/data/tv2/Odd/S01E01.mkv".into(),
                season: None,
                episode: None,
            },
            EpisodeWant {
                file: "/data/tv/nowhere.mkv".into(),
                season: Some(9),
                episode: Some(9),
            },
        ];
        let found = client
            .find_episodes("2", Some(SHOW), &wants)
            .await
            .expect("find");
        let by_number = found[0].as_ref().expect("number match");
        assert_eq!(by_number.rating_key, old);
        assert!(
            !by_number.has_file(&upgraded),
            "number match does not carry the new file yet"
        );
        assert_eq!(found[1].as_ref().expect("recent").rating_key, orphan);
        assert!(found[2].is_none());

        let recent = fake
            .calls()
            .into_iter()
            .find(|c| {
                c.query
                    .iter()
                    .any(|(k, v)| k == "sort" && v == "addedAt:desc")
            })
            .expect("recently added listing");
        assert_eq!(recent.container, (Some("0".into()), Some("50".into())));
    }
}

#[tokio::test]
async fn file_filter_fast_path_is_verified_and_switches_itself_off() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let key = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
        fake.add_indexed_file("2", Some("100"), &ep(2), Some(2), Some(2), "Ep 2");
        fake.clear_calls();
        // The fake ignores file= and returns everything; the match is still verified by Part@file.
        let item = client
            .find_episode("2", None, &ep(1), None, None)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(item.rating_key, key);
        assert_eq!(fake.calls().len(), 1);
        let fast = &fake.calls()[0];
        assert!(fast
            .query
            .iter()
            .any(|(k, v)| k == "file" && *v == ep(1).rsplit('/').next().unwrap_or_default()));

        // A file not in Plex: the "filtered" answer lists unrelated items, so the filter is
        // recognised as ignored and switched off.
        assert!(client
            .find_episode("2", None, &ep(7), None, None)
            .await
            .expect("find")
            .is_none());
        assert!(!client.file_filter_enabled());
    }
}

#[tokio::test]
async fn show_lookup_reads_metadata_when_listings_lack_locations() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        fake.set_show_locations_in_listing(false);
        let show = client
            .find_show_by_folder("2", &format!("{SHOW}/"))
            .await
            .expect("find")
            .expect("show");
        assert_eq!(show.rating_key, "100");
        assert_eq!(show.locations, vec![SHOW.to_string()]);
        let calls = fake.calls();
        // The title-matching candidate is fetched first, so one metadata call suffices.
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.path.starts_with("/library/metadata/"))
                .count(),
            1
        );
        assert!(client
            .find_show_by_folder("2", "/data/tv/Unknown (1999)")
            .await
            .expect("find")
            .is_none());
    }
}

#[tokio::test]
async fn movie_find() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let heat = "/data/movies/Heat (1995)/Heat (1995) Bluray-1080p.mkv";
        fake.add_indexed_file(
            "1",
            None,
            "/data/movies/Alien (1979)/Alien (1979).mkv",
            None,
            None,
            "Alien",
        );
        let key = fake.add_file_on_disk("1", None, heat, None, None, "Heat");
        assert!(client.find_movie("1", heat).await.expect("find").is_none());
        client
            .scan("1", "/data/movies/Heat (1995)")
            .await
            .expect("scan");
        let movie = client
            .find_movie("1", heat)
            .await
            .expect("find")
            .expect("movie");
        assert_eq!(movie.rating_key, key);
        assert_eq!(movie.kind, "movie");
        assert_eq!(movie.section_id.as_deref(), Some("1"));
        let metadata = client
            .metadata(&key)
            .await
            .expect("metadata")
            .expect("item");
        assert!(metadata.has_file(heat));
        assert!(client.metadata("999999").await.expect("metadata").is_none());
    }
}

#[tokio::test]
async fn upload_lock_and_remove_label() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let key = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
        fake.add_label(&key, "Overlay");
        fake.add_label(&key, "My Label");
        fake.add_label(&key, "Keep");
        let before = client
            .metadata(&key)
            .await
            .expect("metadata")
            .expect("item");
        assert_eq!(before.labels, vec!["Overlay", "My Label", "Keep"]);
        assert!(!before.thumb_locked);

        let image = b"\x89PNG\r\n\x1a\nfake image bytes".to_vec();
        client
            .upload_poster(&key, image.clone(), Some("image/png"))
            .await
            .expect("upload");
        assert_eq!(
            fake.uploads(),
            vec![(key.clone(), hex::encode(Sha256::digest(&image)))]
        );
        let post = fake
            .calls()
            .into_iter()
            .find(|c| c.method == "POST")
            .expect("post");
        assert_eq!(post.path, format!("/library/metadata/{key}/posters"));
        assert_eq!(post.body_len, image.len());

        client
            .lock_thumb("2", &key, TYPE_EPISODE)
            .await
            .expect("lock");
        client
            .remove_label("2", &key, TYPE_EPISODE, "Overlay")
            .await
            .expect("remove");
        client
            .remove_label("2", &key, TYPE_EPISODE, "My Label")
            .await
            .expect("remove");

        let after = client
            .metadata(&key)
            .await
            .expect("metadata")
            .expect("item");
        assert!(after.thumb_locked);
        assert_eq!(after.labels, vec!["Keep"]);
        let view = fake.item(&key).expect("item");
        assert!(view
            .poster
            .expect("poster")
            .starts_with("upload://posters/"));
        let edits = fake.edits();
        assert_eq!(edits.len(), 3);
        assert!(edits
            .iter()
            .all(|e| e.id.as_deref() == Some(key.as_str()) && e.status == 200));
        assert_eq!(fake.dangerous_edits(), 0);

        // Wrong type is refused by the (strict) fake: the client must send the item's type.
        let err = client
            .lock_thumb("2", &key, TYPE_MOVIE)
            .await
            .expect_err("wrong type");
        assert!(matches!(err, PlexError::Status { status: 400, .. }));
    }
}

#[tokio::test]
async fn refused_requests_send_nothing() {
    let (fake, client) = setup(WireFormat::Json).await;
    assert!(matches!(
        client.scan("2", "").await,
        Err(PlexError::Invalid(_))
    ));
    assert!(matches!(
        client.lock_thumb("2", "", TYPE_EPISODE).await,
        Err(PlexError::Invalid(_))
    ));
    assert!(matches!(
        client.remove_label("2", " ", TYPE_EPISODE, "Overlay").await,
        Err(PlexError::Invalid(_))
    ));
    assert!(matches!(
        client.upload_poster("1", Vec::new(), None).await,
        Err(PlexError::Invalid(_))
    ));
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    for format in FORMATS {
        let (fake, _) = setup(format).await;
        let client = client_for(&fake, "wrong-token-xyz", format, Duration::from_secs(5));
        let err = client.sections().await.expect_err("401");
        assert!(err.is_unauthorized());
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("[[plex]] token"), "{text}");
        assert!(!text.contains("wrong-token-xyz"));
        assert_eq!(fake.calls()[0].status, 401);
    }
}

#[tokio::test]
async fn down_and_unreachable_are_retryable() {
    let (fake, client) = setup(WireFormat::Json).await;
    fake.set_down(true);
    let err = client.sections().await.expect_err("503");
    assert!(matches!(err, PlexError::Status { status: 503, .. }));
    assert!(err.is_retryable());
    fake.set_down(false);
    assert!(client.sections().await.is_ok());

    // A port nobody listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = PlexClient::new(
        &format!("http://{addr}"),
        TOKEN.into(),
        Duration::from_secs(2),
        WireFormat::Xml,
    )
    .expect("client");
    let err = client.sections().await.expect_err("refused");
    assert!(matches!(err, PlexError::Transport(_)));
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn slow_plex_times_out_as_transport_error() {
    let (fake, _) = setup(WireFormat::Json).await;
    fake.set_latency(Duration::from_millis(600));
    let client = client_for(&fake, TOKEN, WireFormat::Json, Duration::from_millis(150));
    let err = client.sections().await.expect_err("timeout");
    assert!(matches!(err, PlexError::Transport(_)));
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn one_connection_is_reused_across_sequential_calls() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let key = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
        for _ in 0..10 {
            client.sections().await.expect("sections");
            client.metadata(&key).await.expect("metadata");
            client.metadata("424242").await.expect("404 as None");
        }
        client
            .upload_poster(&key, vec![1, 2, 3], None)
            .await
            .expect("upload");
        client
            .lock_thumb("2", &key, TYPE_EPISODE)
            .await
            .expect("lock");
        assert_eq!(fake.calls().len(), 32);
        assert_eq!(fake.connections_opened(), 1);
    }
}

#[tokio::test]
async fn peak_in_flight_counts_concurrent_requests() {
    let (fake, client) = setup(WireFormat::Json).await;
    fake.set_latency(Duration::from_millis(300));
    let (a, b, c) = tokio::join!(client.sections(), client.sections(), client.sections());
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert_eq!(fake.peak_in_flight(), 3);
}

#[tokio::test]
async fn client_parses_xml_even_when_it_asked_for_json() {
    let (fake, client) = setup(WireFormat::Json).await;
    fake.set_forced_format(Some(FakeFormat::Xml));
    let key = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
    assert_eq!(client.sections().await.expect("sections").len(), 2);
    let item = client
        .metadata(&key)
        .await
        .expect("metadata")
        .expect("item");
    assert_eq!(item.episode, Some(1));
    fake.set_forced_format(Some(FakeFormat::Json));
    let xml_client = client_for(&fake, TOKEN, WireFormat::Xml, Duration::from_secs(5));
    assert_eq!(xml_client.sections().await.expect("sections").len(), 2);
}

#[tokio::test]
async fn upgrade_replaces_file_then_rating_key_changes() {
    for format in FORMATS {
        let (fake, client) = setup(format).await;
        let client = client.with_file_filter(false);
        let key = fake.add_indexed_file("2", Some("100"), &ep(1), Some(2), Some(1), "Ep 1");
        let new_file =
            format!("{S02}/Alice in Borderland (2020) - S02E01 - Episode 1 Bluray-2160p.mkv");
        assert!(fake.set_file_path(&ep(1), &new_file));
        assert!(client
            .find_episode("2", Some(SHOW), &new_file, None, None)
            .await
            .expect("find")
            .is_none());
        client.scan("2", S02).await.expect("scan");
        let item = client
            .find_episode("2", Some(SHOW), &new_file, None, None)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(item.rating_key, key, "same item, new file");
        assert!(!item.has_file(&ep(1)));

        let new_key = fake.change_rating_key(&new_file).expect("recreated");
        assert_ne!(new_key, key);
        assert!(client.metadata(&key).await.expect("metadata").is_none());
        let item = client
            .find_episode("2", Some(SHOW), &new_file, None, None)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(item.rating_key, new_key);

        assert!(fake.remove_file(&new_file));
        client.scan("2", SHOW).await.expect("scan");
        assert!(client.metadata(&new_key).await.expect("metadata").is_none());
    }
}

/// The fake's own contract for things the client never does.
#[tokio::test]
async fn fake_rejects_put_refresh_and_unscoped_edits() {
    let (fake, _) = setup(WireFormat::Json).await;
    let http = reqwest::Client::new();
    let url = fake.url();

    let put = http
        .put(format!(
            "{url}/library/sections/2/refresh?path=%2Fdata%2Ftv"
        ))
        .header("X-Plex-Token", TOKEN)
        .send()
        .await
        .expect("put");
    assert_eq!(
        put.status().as_u16(),
        404,
        "PUT refresh is 404 since PMS 1.32.7"
    );

    let unscoped = http
        .put(format!(
            "{url}/library/sections/2/all?type=4&thumb.locked=1"
        ))
        .header("X-Plex-Token", TOKEN)
        .send()
        .await
        .expect("put");
    assert_eq!(unscoped.status().as_u16(), 400);
    assert_eq!(fake.dangerous_edits(), 1);

    let anonymous = http
        .get(format!("{url}/library/sections"))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: serde_json::Value = anonymous.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], 1001);

    // Query-form token is accepted (PMSSPEC) but recorded, so tests can assert relayarr never uses it.
    let query_token = http
        .get(format!("{url}/library/sections?X-Plex-Token={TOKEN}"))
        .send()
        .await
        .expect("get");
    assert_eq!(query_token.status().as_u16(), 200);
    assert!(fake.calls().last().expect("call").token_in_query);
    // XML by default, JSON on request.
    let xml = query_token.text().await.expect("text");
    assert!(xml.contains("<MediaContainer") && xml.contains("refreshing=\"0\""));
}

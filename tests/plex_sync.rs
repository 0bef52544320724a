//! The Plex sync, end to end, asserted where it shows: at a fake Plex Media Server that
//! speaks Plex's wire format and records every call (`tests/common/fake_plex.rs`).
//!
//! The real relay runs in-process with a real SQLite store; Sonarr and Plex webhooks are
//! posted over HTTP, derived from the corpus fixtures (shapes from the senders' source, see
//! `tests/fixtures/corpus/README.md`). This file proves that:
//! - a season pack (10 `Download` events and "import complete") gives exactly one partial
//!   scan (a GET of the season folder) and one card upload per episode, to the right item,
//!   with the right bytes, the poster locked, Kometa's `Overlay` label removed, never a
//!   section-wide edit, over a few keep-alive connections;
//! - an upgrade re-uploads the card to the item's new ratingKey, an unchanged card on an
//!   unchanged item is never uploaded again, and a changed card file is;
//! - a delete then an import of the same path inside the quiet period gives one scan, after
//!   both, and none in between;
//! - paths from two Sonarr containers (Linux `/tv`, Windows `D:\TV`) are mapped to Plex's
//!   view and scanned in the section with the longest matching `Location`; the dry-run
//!   endpoint explains the mapping;
//! - Plex down for 2 minutes: the work completes once it is back, with retries shown and
//!   nothing lost or failed;
//! - a Plex `library.new` triggers a card check of that item, once;
//! - a refused token blocks the target with a clear message and keeps the work pending,
//!   and the work completes once the token is fixed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_plex::FakePlex;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The token the fake Plex accepts.
const PLEX_TOKEN: &str = "plex-server-token-7f3a9c";
/// The stored name of the Plex target.
const TARGET: &str = "plex:home";
/// Basic auth of the `sonarr` source in `common::SOURCES` (and of the extra sources below).
const SONARR_USER: (&str, &str) = ("sonarr", "Pa55w0rd!");

// ------------------------------------------------------------------------------- fixtures

/// A series as Sonarr describes it.
#[derive(Clone, Debug)]
struct Series {
    id: i64,
    title: &'static str,
    year: i64,
    tvdb: i64,
    /// The series folder, as the sending Sonarr sees it.
    path: String,
    /// The path separator of the sending Sonarr (`\` on Windows).
    sep: char,
}

impl Series {
    fn full_name(&self) -> String {
        format!("{} ({})", self.title, self.year)
    }

    fn season_folder(&self, season: i32) -> String {
        format!("{}{}Season {season:02}", self.path, self.sep)
    }

    /// Sonarr's standard episode file name inside the season folder.
    fn episode_file(&self, season: i32, episode: i32) -> String {
        format!(
            "{}{}{}",
            self.season_folder(season),
            self.sep,
            self.file_name(season, episode)
        )
    }

    fn file_name(&self, season: i32, episode: i32) -> String {
        format!(
            "{} - S{season:02}E{episode:02} - Episode {episode} [WEBDL-1080p]-NTb.mkv",
            self.full_name()
        )
    }
}

fn severance(root: &str) -> Series {
    Series {
        id: 31,
        title: "Severance",
        year: 2022,
        tvdb: 371980,
        path: format!("{root}/Severance (2022)"),
        sep: '/',
    }
}

/// The series of the corpus fixtures, unchanged.
fn the_expanse() -> Series {
    Series {
        id: 12,
        title: "The Expanse",
        year: 2015,
        tvdb: 280619,
        path: "/tv/The Expanse".into(),
        sep: '/',
    }
}

fn sonarr_fixture(name: &str) -> Value {
    let path = corpus().join("sonarr").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn fixture_text(rel: &str) -> String {
    let path = corpus().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn set_series(body: &mut Value, s: &Series) {
    let series = &mut body["series"];
    series["id"] = json!(s.id);
    series["title"] = json!(s.title);
    series["titleSlug"] = json!(s.title.to_ascii_lowercase().replace(' ', "-"));
    series["path"] = json!(s.path);
    series["tvdbId"] = json!(s.tvdb);
    series["year"] = json!(s.year);
    if let Some(o) = series.as_object_mut() {
        // The fixture's other ids belong to The Expanse.
        for k in ["tvMazeId", "tmdbId", "imdbId"] {
            o.remove(k);
        }
    }
}

/// One episode object, from the fixture's first one.
fn episode_json(template: &Value, s: &Series, season: i32, episode: i32) -> Value {
    let mut e = template.clone();
    e["id"] = json!(s.id * 1000 + i64::from(season) * 100 + i64::from(episode));
    e["seasonNumber"] = json!(season);
    e["episodeNumber"] = json!(episode);
    e["title"] = json!(format!("Episode {episode}"));
    e["seriesId"] = json!(s.id);
    e["tvdbId"] = json!(s.tvdb * 100 + i64::from(episode));
    e
}

/// One episode file object, from the fixture's.
fn episode_file_json(template: &Value, s: &Series, season: i32, episode: i32) -> Value {
    let mut f = template.clone();
    let name = s.file_name(season, episode);
    f["id"] = json!(s.id * 10_000 + i64::from(season) * 100 + i64::from(episode));
    f["relativePath"] = json!(format!("Season {season:02}{}{name}", s.sep));
    f["path"] = json!(s.episode_file(season, episode));
    f["sceneName"] = json!(format!(
        "{}.S{season:02}E{episode:02}.1080p.WEB-DL-NTb",
        s.title
    ));
    if f.get("sourcePath").is_some() {
        f["sourcePath"] = json!(format!(
            "/downloads/complete/tv/{}.S{season:02}.1080p.WEB-DL-NTb/{name}",
            s.title
        ));
    }
    f
}

/// A Sonarr v4 `Download` (On Import) for one episode file.
/// Derived from `tests/fixtures/corpus/sonarr/Download.json` (Sonarr/Sonarr@develop
/// `src/NzbDrone.Core/Notifications/Webhook/WebhookImportPayload.cs`, `WebhookEpisodeFile.cs`,
/// `WebhookBase.cs` BuildOnDownloadPayload).
fn download(s: &Series, season: i32, episode: i32, download_id: &str) -> String {
    let mut b = sonarr_fixture("Download.json");
    set_series(&mut b, s);
    b["episodes"] = json!([episode_json(&b["episodes"][0], s, season, episode)]);
    b["episodeFile"] = episode_file_json(&b["episodeFile"], s, season, episode);
    b["downloadId"] = json!(download_id);
    b["release"]["releaseTitle"] = json!(format!("{}.S{season:02}.1080p.WEB-DL-NTb", s.title));
    b["release"]["releaseType"] = json!("seasonPack");
    b.to_string()
}

/// A Sonarr v4 "On Import Complete" (`eventType` `Download` with `episodeFiles`) for a pack.
/// Derived from `tests/fixtures/corpus/sonarr/Download-import-complete.json`
/// (Sonarr/Sonarr@develop `src/NzbDrone.Core/Notifications/Webhook/
/// WebhookImportCompletePayload.cs`, `WebhookBase.cs` BuildOnImportCompletePayload).
fn import_complete(s: &Series, season: i32, episodes: &[i32], download_id: &str) -> String {
    let mut b = sonarr_fixture("Download-import-complete.json");
    set_series(&mut b, s);
    let ep_t = b["episodes"][0].clone();
    let file_t = b["episodeFiles"][0].clone();
    b["episodes"] = Value::Array(
        episodes
            .iter()
            .map(|&e| episode_json(&ep_t, s, season, e))
            .collect(),
    );
    b["episodeFiles"] = Value::Array(
        episodes
            .iter()
            .map(|&e| episode_file_json(&file_t, s, season, e))
            .collect(),
    );
    b["downloadId"] = json!(download_id);
    b["fileCount"] = json!(episodes.len());
    b["sourcePath"] = json!(format!(
        "/downloads/complete/tv/{}.S{season:02}.1080p.WEB-DL-NTb",
        s.title
    ));
    b["destinationPath"] = json!(s.path);
    b["release"]["releaseTitle"] = json!(format!("{}.S{season:02}.1080p.WEB-DL-NTb", s.title));
    b["release"]["releaseType"] = json!("seasonPack");
    b.to_string()
}

/// The SHA-256 of `bytes`, as the fake records uploads.
fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a title card where TitleCardMaker's default layout puts it
/// (`{card dir}/Show (2020)/Season 1/Show (2020) - S01E05.jpg`); returns its SHA-256.
fn write_card(dir: &Path, full_name: &str, season: i32, episode: i32, tag: &str) -> String {
    let folder = dir.join(full_name).join(format!("Season {season}"));
    std::fs::create_dir_all(&folder).expect("card folder");
    let path = folder.join(format!("{full_name} - S{season:02}E{episode:02}.jpg"));
    // A JPEG start marker, a comment naming the card, the end marker.
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xFE];
    bytes.extend_from_slice(format!("{full_name} S{season:02}E{episode:02} {tag}").as_bytes());
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(&path, &bytes).expect("write card");
    sha(&bytes)
}

// ------------------------------------------------------------------------------- the relay

/// The `[debounce]` and `[[plex]]` config for a relay syncing `fake`. `plex_extra` holds
/// more `[[plex]]` keys (before `[plex.cards]`).
fn plex_toml(url: &str, token: &str, cards: &Path, quiet: &str, plex_extra: &str) -> String {
    format!(
        r#"
[debounce]
quiet = "{quiet}"

[[plex]]
name = "home"
url = "{url}"
token = "{token}"
ready_poll = "3s"
retry_base = "200ms"
retry_cap = "1s"
{plex_extra}

[plex.cards]
dir = "{cards}"
remove_overlay_label = true
"#,
        cards = cards.display()
    )
}

/// Posts a JSON body to a Sonarr source with basic auth; asserts it was accepted as new.
async fn post_json(
    client: &reqwest::Client,
    relay: &TestRelay,
    source: &str,
    body: String,
) -> String {
    let resp = client
        .post(relay.url(&format!("/api/v1/webhooks/{source}")))
        .basic_auth(SONARR_USER.0, Some(SONARR_USER.1))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send to relay");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("relay answers JSON");
    assert_eq!(status, 202, "{source}: {v}");
    assert_eq!(
        v["duplicate"],
        json!(false),
        "{source}: not a new event: {v}"
    );
    v["id"].as_str().expect("event id").to_owned()
}

/// Posts a Plex webhook the way PMS does: multipart with a `payload` JSON part and a
/// `thumb` image part (framing as in `tests/ingest_corpus.rs`).
async fn post_plex(client: &reqwest::Client, relay: &TestRelay, payload: &str) -> String {
    let b = "------------------------Zq8wXr2mPb7Kd4Hs9Tn1Vc";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n{payload}"
    )
    .into_bytes();
    body.extend_from_slice(
        format!("\r\n--{b}\r\nContent-Disposition: form-data; name=\"thumb\"; filename=\"thumb.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\xff\xd9");
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let resp = client
        .post(relay.url("/api/v1/webhooks/plex?token=plex-token"))
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(body)
        .send()
        .await
        .expect("send to relay");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("relay answers JSON");
    assert_eq!(status, 202, "plex: {v}");
    assert_eq!(v["duplicate"], json!(false), "plex: not a new event: {v}");
    v["id"].as_str().expect("event id").to_owned()
}

/// The Plex target as `GET /api/v1/admin/targets` shows it: `{stats, deliveries}`.
async fn plex_view(relay: &TestRelay) -> Value {
    let resp = relay.admin_get("/api/v1/admin/targets").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["stats"]["name"] == TARGET).cloned())
        .unwrap_or_else(|| panic!("no target {TARGET} in {v}"))
}

fn count(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_default()
}

/// Waits until the Plex target has `n` succeeded deliveries and none pending.
async fn wait_succeeded(relay: &TestRelay, n: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = plex_view(relay).await;
        if count(&v, &["deliveries", "succeeded"]) >= n
            && count(&v, &["deliveries", "pending"]) == 0
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "plex target did not reach {n} succeeded deliveries within {timeout:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn debouncer(relay: &TestRelay) -> Value {
    let resp = relay.admin_get("/api/v1/admin/debouncer").await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// A fake Plex with a Movies section and a TV section at `tv_root`.
async fn fake_plex(tv_root: &str) -> FakePlex {
    let fake = FakePlex::start(PLEX_TOKEN).await;
    fake.add_section("1", "movie", "Movies", &["/movies"]);
    fake.add_section("2", "show", "TV Shows", &[tv_root]);
    fake
}

// ---------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_season_pack_one_scan_and_ten_cards() {
    let fake = fake_plex("/tv").await;
    fake.set_scan_delay(Duration::from_millis(300));
    let show = severance("/tv");
    fake.add_show("2", "500", "Severance", &show.path);
    let cards = tempfile::tempdir().expect("tempdir");
    // rating key → (episode, sha of its card)
    let mut want: BTreeMap<String, (i32, String)> = BTreeMap::new();
    for e in 1..=10 {
        let key = fake.add_file_on_disk(
            "2",
            Some("500"),
            &show.episode_file(1, e),
            Some(1),
            Some(e),
            &format!("Episode {e}"),
        );
        if e % 2 == 0 {
            fake.add_label(&key, "Overlay");
        }
        let card = write_card(cards.path(), &show.full_name(), 1, e, "v1");
        want.insert(key, (e, card));
    }
    // Episode 11 is in the same folder and has a card, but is not part of the pack: the card
    // pass covers exactly the episodes involved.
    let other = fake.add_file_on_disk(
        "2",
        Some("500"),
        &show.episode_file(1, 11),
        Some(1),
        Some(11),
        "Episode 11",
    );
    write_card(cards.path(), &show.full_name(), 1, 11, "v1");

    let relay = start_relay(&plex_toml(
        &fake.url(),
        PLEX_TOKEN,
        cards.path(),
        "500ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    for e in 1..=10 {
        post_json(
            &client,
            &relay,
            "sonarr",
            download(&show, 1, e, "SABnzbd_nzo_sev_s01"),
        )
        .await;
    }
    post_json(
        &client,
        &relay,
        "sonarr",
        import_complete(
            &show,
            1,
            &(1..=10).collect::<Vec<_>>(),
            "SABnzbd_nzo_sev_s01",
        ),
    )
    .await;
    let posted = started.elapsed();

    wait_succeeded(&relay, 1, Duration::from_secs(20)).await;
    // Anything late (a second group, a nudge) would show within another quiet period.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let scans = fake.scans();
    assert_eq!(
        scans,
        vec![("2".to_string(), show.season_folder(1))],
        "one partial scan of the season folder"
    );
    let scan_calls: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/refresh"))
        .collect();
    assert_eq!(scan_calls.len(), 1, "{scan_calls:?}");
    assert_eq!(scan_calls[0].method, "GET");
    assert!(scan_calls.iter().all(|c| !c.token_in_query));

    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 10, "one upload per episode: {uploads:?}");
    let got: BTreeMap<String, String> = uploads.into_iter().collect();
    let expected: BTreeMap<String, String> = want
        .iter()
        .map(|(k, (_, sha))| (k.clone(), sha.clone()))
        .collect();
    assert_eq!(
        got, expected,
        "each card on its own item, with its own bytes"
    );
    assert!(fake.item(&other).and_then(|i| i.poster).is_none());

    for (key, (e, card)) in &want {
        let item = fake.item(key).expect("item");
        assert_eq!(
            item.listed_file.as_deref(),
            Some(show.episode_file(1, *e).as_str())
        );
        assert!(item.thumb_locked, "E{e}: poster not locked");
        assert!(
            !item.labels.iter().any(|l| l == "Overlay"),
            "E{e}: Overlay label not removed: {:?}",
            item.labels
        );
        assert_eq!(item.poster, Some(format!("upload://posters/{card}")));
    }
    let edits = fake.edits();
    assert_eq!(fake.dangerous_edits(), 0, "{edits:?}");
    assert!(
        edits.iter().all(|e| e.id.is_some() && e.status == 200),
        "{edits:?}"
    );
    // One lock per episode and one label removal per labelled episode.
    assert_eq!(edits.len(), 15, "{edits:?}");

    // Keep-alive: a handful of connections, not one per call.
    let v = plex_view(&relay).await;
    let cap = usize::try_from(count(&v, &["stats", "max_in_flight"])).unwrap_or(0);
    assert_eq!(cap, 2, "default max_in_flight");
    let conns = fake.connections_opened();
    assert!(
        conns <= cap + 1,
        "{conns} connections for {} calls",
        fake.calls().len()
    );
    assert!(fake.peak_in_flight() <= cap);
    assert_eq!(count(&v, &["deliveries", "failed"]), 0, "{v}");

    let d = debouncer(&relay).await;
    assert_eq!(d["fired"], json!(1), "{d}");
    assert_eq!(d["coalesced"], json!(10), "{d}");
    eprintln!(
        "season pack: 11 events posted in {posted:?}, {} Plex calls over {conns} connection(s)",
        fake.calls().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_upgrade_reuploads_only_for_a_new_rating_key() {
    let fake = fake_plex("/tv").await;
    fake.set_scan_delay(Duration::from_millis(300));
    let show = the_expanse();
    fake.add_show("2", "300", "The Expanse", &show.path);
    // The paths of the corpus fixtures, unchanged.
    let download_v = sonarr_fixture("Download.json");
    let upgrade_v = sonarr_fixture("Download-upgrade.json");
    let old_file = download_v["episodeFile"]["path"]
        .as_str()
        .expect("path")
        .to_owned();
    let new_file = upgrade_v["episodeFile"]["path"]
        .as_str()
        .expect("path")
        .to_owned();
    assert_eq!(
        upgrade_v["deletedFiles"][0]["path"].as_str(),
        Some(old_file.as_str())
    );
    let k1 = fake.add_file_on_disk(
        "2",
        Some("300"),
        &old_file,
        Some(3),
        Some(5),
        "Triple Point",
    );
    let cards = tempfile::tempdir().expect("tempdir");
    let card1 = write_card(cards.path(), &show.full_name(), 3, 5, "v1");

    let relay = start_relay(&plex_toml(
        &fake.url(),
        PLEX_TOKEN,
        cards.path(),
        "300ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();

    // 1. The import: the card goes onto the new item.
    // Body: tests/fixtures/corpus/sonarr/Download.json as is.
    post_json(
        &client,
        &relay,
        "sonarr",
        fixture_text("sonarr/Download.json"),
    )
    .await;
    wait_succeeded(&relay, 1, Duration::from_secs(15)).await;
    assert_eq!(fake.uploads(), vec![(k1.clone(), card1.clone())]);
    assert!(fake.item(&k1).expect("item").thumb_locked);

    // 2. The upgrade: Sonarr replaced the file; Plex gives the item a new ratingKey.
    assert!(fake.set_file_path(&old_file, &new_file));
    let k2 = fake.change_rating_key(&new_file).expect("new rating key");
    assert_ne!(k1, k2);
    // Body: tests/fixtures/corpus/sonarr/Download-upgrade.json as is (deletedFiles + new file).
    post_json(
        &client,
        &relay,
        "sonarr",
        fixture_text("sonarr/Download-upgrade.json"),
    )
    .await;
    wait_succeeded(&relay, 2, Duration::from_secs(15)).await;
    assert_eq!(
        fake.uploads(),
        vec![(k1.clone(), card1.clone()), (k2.clone(), card1.clone())],
        "the same card again, to the new ratingKey"
    );
    let item = fake.item(&k2).expect("upgraded item");
    assert_eq!(item.listed_file.as_deref(), Some(new_file.as_str()));
    assert!(item.thumb_locked);

    // 3. The same import again (re-sent, so a new event, not a duplicate) for the unchanged
    // item and the unchanged card: a scan, and no upload.
    let mut again = upgrade_v.clone();
    again["downloadId"] = json!("9B2E7D4C1A0F48E3B6D5C4A39281706F5E4D3C2B-resent");
    post_json(&client, &relay, "sonarr", again.to_string()).await;
    wait_succeeded(&relay, 3, Duration::from_secs(15)).await;
    assert_eq!(fake.scans().len(), 3, "{:?}", fake.scans());
    assert_eq!(
        fake.uploads().len(),
        2,
        "unchanged card on an unchanged item: {:?}",
        fake.uploads()
    );

    // 4. A changed card file: uploaded again, to the same item.
    let card2 = write_card(cards.path(), &show.full_name(), 3, 5, "v2");
    assert_ne!(card1, card2);
    again["downloadId"] = json!("9B2E7D4C1A0F48E3B6D5C4A39281706F5E4D3C2B-resent-2");
    post_json(&client, &relay, "sonarr", again.to_string()).await;
    wait_succeeded(&relay, 4, Duration::from_secs(15)).await;
    assert_eq!(
        fake.uploads(),
        vec![
            (k1, card1.clone()),
            (k2.clone(), card1),
            (k2.clone(), card2.clone())
        ]
    );
    assert_eq!(
        fake.item(&k2).expect("item").poster,
        Some(format!("upload://posters/{card2}"))
    );
    assert_eq!(fake.dangerous_edits(), 0);
    let v = plex_view(&relay).await;
    assert_eq!(count(&v, &["deliveries", "failed"]), 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_delete_then_import_same_path_no_scan_between() {
    let fake = fake_plex("/tv").await;
    fake.set_scan_delay(Duration::from_millis(300));
    let show = the_expanse();
    fake.add_show("2", "300", "The Expanse", &show.path);
    // EpisodeFileDelete.json and Download.json name the same file.
    let path = sonarr_fixture("EpisodeFileDelete.json")["episodeFile"]["path"]
        .as_str()
        .expect("path")
        .to_owned();
    assert_eq!(
        sonarr_fixture("Download.json")["episodeFile"]["path"].as_str(),
        Some(path.as_str())
    );
    let folder = path.rsplit_once('/').expect("folder").0.to_owned();
    // Already in Plex, with metadata a scan at the wrong moment would lose.
    let key = fake.add_indexed_file("2", Some("300"), &path, Some(3), Some(5), "Triple Point");
    fake.add_label(&key, "Favourite");
    let cards = tempfile::tempdir().expect("tempdir");
    let card = write_card(cards.path(), &show.full_name(), 3, 5, "v1");

    let relay = start_relay(&plex_toml(
        &fake.url(),
        PLEX_TOKEN,
        cards.path(),
        "1500ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    let watch = fake.watch_scans();

    // Sonarr deletes the file…
    assert!(fake.remove_file(&path));
    // Body: tests/fixtures/corpus/sonarr/EpisodeFileDelete.json as is.
    post_json(
        &client,
        &relay,
        "sonarr",
        fixture_text("sonarr/EpisodeFileDelete.json"),
    )
    .await;
    // …and imports a new one at the same path, inside the quiet period.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        watch.scans().is_empty(),
        "scanned between the delete and the import"
    );
    assert!(fake.restore_file(&key, &path));
    let import_posted = Instant::now();
    // Body: tests/fixtures/corpus/sonarr/Download.json as is.
    post_json(
        &client,
        &relay,
        "sonarr",
        fixture_text("sonarr/Download.json"),
    )
    .await;

    wait_succeeded(&relay, 1, Duration::from_secs(15)).await;
    // Another quiet period: no late second scan.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let scans = watch.scans();
    assert_eq!(scans.len(), 1, "exactly one scan: {scans:?}");
    assert_eq!(
        (scans[0].section.as_str(), scans[0].path.as_str()),
        ("2", folder.as_str())
    );
    assert!(
        scans[0].seen_at > import_posted,
        "the scan came {:?} before the import was posted",
        import_posted.duration_since(scans[0].seen_at)
    );
    // Plex kept the item and its metadata, and the card went onto it.
    let item = fake.item(&key).expect("the item survived");
    assert_eq!(item.listed_file.as_deref(), Some(path.as_str()));
    assert!(
        item.labels.iter().any(|l| l == "Favourite"),
        "{:?}",
        item.labels
    );
    assert_eq!(fake.uploads(), vec![(key, card)]);
    let d = debouncer(&relay).await;
    assert_eq!(
        (d["fired"].clone(), d["coalesced"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_path_mapping_across_two_containers() {
    let fake = FakePlex::start(PLEX_TOKEN).await;
    fake.set_scan_delay(Duration::from_millis(200));
    fake.add_section("1", "movie", "Movies", &["/data/movies"]);
    fake.add_section("2", "show", "TV Shows", &["/data/tv"]);
    // A nested library: the longest Location wins.
    fake.add_section("3", "show", "Anime", &["/data/tv/Anime"]);
    // Container A (Linux Sonarr) sees the TV folder as /tv.
    let a = severance("/tv");
    // Container B (Windows Sonarr) sees it as D:\TV.
    let b = Series {
        id: 44,
        title: "Frieren",
        year: 2023,
        tvdb: 424536,
        path: r"D:\TV\Anime\Frieren (2023)".into(),
        sep: '\\',
    };
    let plex_a = severance("/data/tv");
    let plex_b = Series {
        path: "/data/tv/Anime/Frieren (2023)".into(),
        sep: '/',
        ..b.clone()
    };
    fake.add_show("2", "500", "Severance", &plex_a.path);
    fake.add_show("3", "600", "Frieren", &plex_b.path);
    let ka = fake.add_file_on_disk(
        "2",
        Some("500"),
        &plex_a.episode_file(1, 3),
        Some(1),
        Some(3),
        "E3",
    );
    let kb = fake.add_file_on_disk(
        "3",
        Some("600"),
        &plex_b.episode_file(1, 7),
        Some(1),
        Some(7),
        "E7",
    );
    let cards = tempfile::tempdir().expect("tempdir");
    let card_a = write_card(cards.path(), &a.full_name(), 1, 3, "a");
    let card_b = write_card(cards.path(), &b.full_name(), 1, 7, "b");

    let extra = format!(
        r#"{plex}
[[source]]
name = "sonarr-linux"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}

[[source]]
name = "sonarr-win"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
path_rules = [{{ from = 'D:\TV', to = "/tv" }}]
"#,
        plex = plex_toml(
            &fake.url(),
            PLEX_TOKEN,
            cards.path(),
            "300ms",
            r#"path_rules = [{ from = "/tv", to = "/data/tv" }]"#
        )
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();

    // The dry run first: the Windows path, as Plex sees it, in the Anime section.
    let win_file = b.episode_file(1, 7);
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("source", "sonarr-win")
        .append_pair("path", &win_file)
        .finish();
    let resp = relay
        .admin_get(&format!("/api/v1/admin/map-path?{q}"))
        .await;
    assert_eq!(resp.status(), 200);
    let m: Value = resp.json().await.expect("json");
    let p = &m["plex"][0];
    assert_eq!(
        p["mapped"].as_str(),
        Some(plex_b.episode_file(1, 7).as_str()),
        "{m:#}"
    );
    assert_eq!(
        p["scan_folder"].as_str(),
        Some(plex_b.season_folder(1).as_str()),
        "{m:#}"
    );
    assert_eq!(p["section"].as_str(), Some("Anime (key 3)"), "{m:#}");
    let explain: Vec<&str> = p["explain"]
        .as_array()
        .expect("explain")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let text = explain.join("\n");
    assert!(
        text.contains("sonarr-win") && text.contains("D:"),
        "source rule not explained:\n{text}"
    );
    assert!(
        text.contains("/data/tv"),
        "plex rule not explained:\n{text}"
    );
    assert!(
        text.contains("/data/tv/Anime"),
        "section choice not explained:\n{text}"
    );
    // The Linux container's path needs only the Plex rule.
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("source", "sonarr-linux")
        .append_pair("path", &a.episode_file(1, 3))
        .finish();
    let m: Value = relay
        .admin_get(&format!("/api/v1/admin/map-path?{q}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        m["plex"][0]["mapped"].as_str(),
        Some(plex_a.episode_file(1, 3).as_str()),
        "{m:#}"
    );
    assert_eq!(
        m["plex"][0]["section"].as_str(),
        Some("TV Shows (key 2)"),
        "{m:#}"
    );

    // Then the real thing: one import from each container.
    post_json(
        &client,
        &relay,
        "sonarr-linux",
        download(&a, 1, 3, "qb_linux_1"),
    )
    .await;
    post_json(
        &client,
        &relay,
        "sonarr-win",
        download(&b, 1, 7, "qb_win_1"),
    )
    .await;
    wait_succeeded(&relay, 2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let scans: BTreeSet<(String, String)> = fake.scans().into_iter().collect();
    let expected: BTreeSet<(String, String)> = [
        ("2".to_string(), plex_a.season_folder(1)),
        ("3".to_string(), plex_b.season_folder(1)),
    ]
    .into();
    assert_eq!(scans, expected, "scans in Plex's paths and sections");
    assert_eq!(fake.scans().len(), 2);
    let uploads: BTreeSet<(String, String)> = fake.uploads().into_iter().collect();
    assert_eq!(uploads, [(ka, card_a), (kb, card_b)].into());
}

/// A Linux and a Windows Sonarr import into the same Plex folder within one window: their
/// groups are keyed by the folder as Plex sees it, so Plex gets one scan, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_two_senders_same_plex_folder_share_one_scan() {
    let fake = fake_plex("/data/tv").await;
    let linux = severance("/tv");
    let windows = Series {
        path: r"D:\TV\Severance (2022)".into(),
        sep: '\\',
        ..severance("")
    };
    let plex = severance("/data/tv");
    fake.add_show("2", "500", "Severance", &plex.path);
    let k1 = fake.add_file_on_disk(
        "2",
        Some("500"),
        &plex.episode_file(1, 1),
        Some(1),
        Some(1),
        "E1",
    );
    let k2 = fake.add_file_on_disk(
        "2",
        Some("500"),
        &plex.episode_file(1, 2),
        Some(1),
        Some(2),
        "E2",
    );
    let cards = tempfile::tempdir().expect("tempdir");
    let c1 = write_card(cards.path(), &plex.full_name(), 1, 1, "one");
    let c2 = write_card(cards.path(), &plex.full_name(), 1, 2, "two");
    let extra = format!(
        r#"{plex}
[[source]]
name = "sonarr-linux"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}

[[source]]
name = "sonarr-win"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
path_rules = [{{ from = 'D:\TV', to = "/tv" }}]
"#,
        plex = plex_toml(
            &fake.url(),
            PLEX_TOKEN,
            cards.path(),
            "1s",
            r#"path_rules = [{ from = "/tv", to = "/data/tv" }]"#
        )
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    post_json(
        &client,
        &relay,
        "sonarr-linux",
        download(&linux, 1, 1, "qb_l"),
    )
    .await;
    post_json(
        &client,
        &relay,
        "sonarr-win",
        download(&windows, 1, 2, "qb_w"),
    )
    .await;
    wait_succeeded(&relay, 1, Duration::from_secs(15)).await;
    eventually(Duration::from_secs(10), || async {
        fake.uploads().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.scans(),
        vec![("2".to_string(), plex.season_folder(1))],
        "one scan for both senders"
    );
    let uploads: BTreeSet<(String, String)> = fake.uploads().into_iter().collect();
    assert_eq!(uploads, [(k1, c1), (k2, c2)].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_down_then_back_completes() {
    const DOWN_FOR: Duration = Duration::from_secs(120);
    let fake = fake_plex("/tv").await;
    fake.set_scan_delay(Duration::from_millis(300));
    let s1 = severance("/tv");
    let s2 = the_expanse();
    fake.add_show("2", "500", "Severance", &s1.path);
    fake.add_show("2", "300", "The Expanse", &s2.path);
    let cards = tempfile::tempdir().expect("tempdir");
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    for e in 1..=3 {
        let k = fake.add_file_on_disk(
            "2",
            Some("500"),
            &s1.episode_file(1, e),
            Some(1),
            Some(e),
            "E",
        );
        want.insert((k, write_card(cards.path(), &s1.full_name(), 1, e, "down")));
    }
    let k = fake.add_file_on_disk(
        "2",
        Some("300"),
        &s2.episode_file(3, 9),
        Some(3),
        Some(9),
        "E9",
    );
    want.insert((k, write_card(cards.path(), &s2.full_name(), 3, 9, "down")));

    let relay = start_relay(&plex_toml(
        &fake.url(),
        PLEX_TOKEN,
        cards.path(),
        "300ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    let down_at = Instant::now();
    fake.set_down(true);
    for e in 1..=3 {
        post_json(&client, &relay, "sonarr", download(&s1, 1, e, "qb_down_1")).await;
    }
    // Failing attempts are retried, and the work stays pending.
    eventually(Duration::from_secs(15), || async {
        count(&plex_view(&relay).await, &["stats", "retried"]) >= 3
    })
    .await;
    // More work arrives halfway through the outage.
    tokio::time::sleep(DOWN_FOR / 2).await;
    post_json(&client, &relay, "sonarr", download(&s2, 3, 9, "qb_down_2")).await;
    tokio::time::sleep(DOWN_FOR.saturating_sub(down_at.elapsed())).await;
    let v = plex_view(&relay).await;
    assert_eq!(count(&v, &["deliveries", "pending"]), 2, "{v}");
    assert_eq!(count(&v, &["deliveries", "failed"]), 0, "{v}");
    assert!(fake.scans().is_empty() && fake.uploads().is_empty());
    let refused = fake.calls().iter().filter(|c| c.status == 503).count();
    assert!(refused > 0);

    fake.set_down(false);
    let up_at = Instant::now();
    let v = wait_succeeded(&relay, 2, Duration::from_secs(20)).await;
    let recovered_in = up_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let scans: BTreeSet<(String, String)> = fake.scans().into_iter().collect();
    assert_eq!(
        scans,
        [
            ("2".to_string(), s1.season_folder(1)),
            ("2".to_string(), s2.season_folder(3))
        ]
        .into()
    );
    assert_eq!(
        fake.scans().len(),
        2,
        "one scan per folder once Plex is back"
    );
    assert_eq!(fake.uploads().into_iter().collect::<BTreeSet<_>>(), want);
    assert_eq!(fake.uploads().len(), 4);
    assert!(count(&v, &["stats", "retried"]) >= 10, "{v}");
    assert_eq!(count(&v, &["stats", "failed"]), 0, "{v}");
    assert_eq!(count(&v, &["deliveries", "failed"]), 0, "{v}");
    assert!(v["stats"]["blocked"].is_null(), "{v}");
    eprintln!(
        "plex down {DOWN_FOR:?}: {refused} refused calls, {} retries; done {recovered_in:?} after it came back",
        count(&v, &["stats", "retried"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_library_new_triggers_card_check() {
    let fake = fake_plex("/tv").await;
    let show = the_expanse();
    fake.add_show("2", "300", "The Expanse", &show.path);
    // The show's year comes from Plex: the webhook's `year` is the episode's air year.
    fake.set_year("300", 2015);
    let file = sonarr_fixture("Download.json")["episodeFile"]["path"]
        .as_str()
        .expect("path")
        .to_owned();
    // Plex already has the item (it says so with library.new).
    let key = fake.add_indexed_file("2", Some("300"), &file, Some(3), Some(5), "Triple Point");
    let cards = tempfile::tempdir().expect("tempdir");
    // Where TitleCardMaker's default layout puts the card.
    let card = write_card(cards.path(), &show.full_name(), 3, 5, "v1");

    let relay = start_relay(&plex_toml(
        &fake.url(),
        PLEX_TOKEN,
        cards.path(),
        "300ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    // Body: tests/fixtures/corpus/plex/library.new-episode.json (the multipart `payload` of
    // PMS's webhook), pointing at the fake's item.
    let mut payload: Value =
        serde_json::from_str(&fixture_text("plex/library.new-episode.json")).expect("json");
    payload["Metadata"]["ratingKey"] = json!(key);
    payload["Metadata"]["key"] = json!(format!("/library/metadata/{key}"));
    payload["Metadata"]["grandparentRatingKey"] = json!("300");
    payload["Metadata"]["grandparentKey"] = json!("/library/metadata/300");
    let id = post_plex(&client, &relay, &payload.to_string()).await;
    wait_succeeded(&relay, 1, Duration::from_secs(15)).await;
    let attempts: Value = relay
        .admin_get(&format!("/api/v1/admin/events/{id}/attempts"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        fake.uploads(),
        vec![(key.clone(), card.clone())],
        "library.new did not put the card on item {key}; attempts: {attempts:#}; stored event: {:#}",
        relay.stored_event(&id).await["normalized"]
    );
    assert!(
        fake.scans().is_empty(),
        "no scan needed for an item Plex has"
    );
    assert!(fake.item(&key).expect("item").thumb_locked);

    // Plex re-sends library.new after a metadata refresh: a new event, the same item and card.
    payload["Metadata"]["updatedAt"] = json!(1718399999);
    post_plex(&client, &relay, &payload.to_string()).await;
    wait_succeeded(&relay, 2, Duration::from_secs(15)).await;
    assert_eq!(fake.uploads(), vec![(key, card)], "uploaded twice");
    assert_eq!(fake.dangerous_edits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_wrong_token_keeps_work_pending() {
    let fake = fake_plex("/tv").await;
    let show = severance("/tv");
    fake.add_show("2", "500", "Severance", &show.path);
    let key = fake.add_file_on_disk(
        "2",
        Some("500"),
        &show.episode_file(1, 4),
        Some(1),
        Some(4),
        "E4",
    );
    let cards = tempfile::tempdir().expect("tempdir");
    let card = write_card(cards.path(), &show.full_name(), 1, 4, "v1");

    let relay = start_relay(&plex_toml(
        &fake.url(),
        "not-the-token",
        cards.path(),
        "300ms",
        "",
    ))
    .await;
    let client = reqwest::Client::new();
    let id = post_json(&client, &relay, "sonarr", download(&show, 1, 4, "qb_tok_1")).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let v = loop {
        let v = plex_view(&relay).await;
        if !v["stats"]["blocked"].is_null() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "target never showed blocked: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let blocked = v["stats"]["blocked"].as_str().expect("blocked message");
    assert!(
        blocked.contains("401") || blocked.to_ascii_lowercase().contains("token"),
        "not a clear message: {blocked:?}"
    );
    assert!(fake.calls().iter().any(|c| c.status == 401));
    // Still pending, nothing failed, a while later too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = plex_view(&relay).await;
    assert_eq!(count(&v, &["deliveries", "pending"]), 1, "{v}");
    assert_eq!(count(&v, &["deliveries", "failed"]), 0, "{v}");
    assert_eq!(count(&v, &["deliveries", "succeeded"]), 0, "{v}");
    assert_eq!(count(&v, &["stats", "failed"]), 0, "{v}");
    assert!(!v["stats"]["blocked"].is_null(), "{v}");
    assert!(fake.scans().is_empty() && fake.uploads().is_empty());
    eprintln!("blocked: {blocked}");

    // The user fixes the token and restarts; a replay sends the kept work at once.
    let dir = relay.stop().await;
    let relay = start_relay_in(
        dir,
        &plex_toml(&fake.url(), PLEX_TOKEN, cards.path(), "300ms", ""),
    )
    .await;
    let resp = reqwest::Client::new()
        .post(relay.url(&format!("/api/v1/admin/events/{id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 202, "a replay is a job");
    wait_succeeded(&relay, 1, Duration::from_secs(15)).await;
    assert_eq!(fake.scans(), vec![("2".to_string(), show.season_folder(1))]);
    assert_eq!(fake.uploads(), vec![(key, card)]);
}

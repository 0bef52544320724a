//! Pending debounced Plex work is durable: the real binary, SIGKILLed in the middle of a
//! debounce window, loses none of it after a restart on the same data dir, and does not do
//! it twice. Asserted at a fake Plex (`tests/common/fake_plex.rs`) that outlives both
//! processes: exactly one partial scan of the folder, and every title card once.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_plex::FakePlex;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PLEX_TOKEN: &str = "plex-server-token-7f3a9c";
const SHOW: &str = "/tv/Severance (2022)";
const SEASON: &str = "/tv/Severance (2022)/Season 01";

fn episode_file(e: i32) -> String {
    format!("{SEASON}/Severance (2022) - S01E{e:02} - Episode {e} [WEBDL-1080p]-NTb.mkv")
}

/// A Sonarr v4 `Download` (On Import) for one episode of the pack.
/// Derived from `tests/fixtures/corpus/sonarr/Download.json` (Sonarr/Sonarr@develop
/// `src/NzbDrone.Core/Notifications/Webhook/WebhookImportPayload.cs`, `WebhookEpisodeFile.cs`,
/// `WebhookBase.cs` BuildOnDownloadPayload): series, episode, file and downloadId changed.
fn download(e: i32) -> String {
    let path = corpus().join("sonarr/Download.json");
    let text = std::fs::read_to_string(&path).expect("read fixture");
    let mut b: Value = serde_json::from_str(&text).expect("fixture JSON");
    let series = &mut b["series"];
    series["id"] = json!(31);
    series["title"] = json!("Severance");
    series["titleSlug"] = json!("severance");
    series["path"] = json!(SHOW);
    series["tvdbId"] = json!(371980);
    series["year"] = json!(2022);
    if let Some(o) = series.as_object_mut() {
        for k in ["tvMazeId", "tmdbId", "imdbId"] {
            o.remove(k);
        }
    }
    let ep = &mut b["episodes"][0];
    ep["id"] = json!(31_100 + e);
    ep["seasonNumber"] = json!(1);
    ep["episodeNumber"] = json!(e);
    ep["title"] = json!(format!("Episode {e}"));
    ep["seriesId"] = json!(31);
    let file = episode_file(e);
    let name = file.rsplit('/').next().expect("name").to_owned();
    let f = &mut b["episodeFile"];
    f["id"] = json!(310_100 + e);
    f["path"] = json!(file);
    f["relativePath"] = json!(format!("Season 01/{name}"));
    f["sourcePath"] = json!(format!("/downloads/complete/tv/Severance.S01/{name}"));
    b["downloadId"] = json!("SABnzbd_nzo_crash_s01");
    b.to_string()
}

/// Writes the card where TitleCardMaker's default layout puts it; returns its SHA-256.
fn write_card(dir: &Path, e: i32) -> String {
    let folder = dir.join("Severance (2022)").join("Season 1");
    std::fs::create_dir_all(&folder).expect("card folder");
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xFE];
    bytes.extend_from_slice(format!("Severance (2022) S01E{e:02}").as_bytes());
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(
        folder.join(format!("Severance (2022) - S01E{e:02}.jpg")),
        &bytes,
    )
    .expect("write card");
    hex::encode(Sha256::digest(&bytes))
}

async fn admin_json(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
    let resp = client
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plex_crash_mid_debounce_window_no_loss_no_duplicate_scan() {
    // The fake Plex lives in the test process, so it outlives both relay processes.
    let fake = FakePlex::start(PLEX_TOKEN).await;
    fake.add_section("2", "show", "TV Shows", &["/tv"]);
    fake.add_show("2", "500", "Severance", SHOW);
    fake.set_scan_delay(Duration::from_millis(300));
    let cards = tempfile::tempdir().expect("tempdir");
    let mut want = BTreeSet::new();
    for e in 1..=3 {
        let key = fake.add_file_on_disk("2", Some("500"), &episode_file(e), Some(1), Some(e), "E");
        want.insert((key, write_card(cards.path(), e)));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        r#"
[debounce]
quiet = "3s"

[[plex]]
name = "home"
url = "{url}"
token = "{PLEX_TOKEN}"
ready_poll = "3s"
retry_base = "200ms"
retry_cap = "1s"

[plex.cards]
dir = "{cards}"
"#,
        url = fake.url(),
        cards = cards.path().display()
    );
    let config = dir.path().join("relayarr.toml");
    std::fs::write(&config, test_config_text(dir.path(), &extra)).expect("write config");
    let (mut child, addr) = spawn_binary(&config).await;
    let client = reqwest::Client::new();

    let started = Instant::now();
    for e in 1..=3 {
        let resp = client
            .post(format!("http://{addr}/api/v1/webhooks/sonarr"))
            .basic_auth("sonarr", Some("Pa55w0rd!"))
            .header("content-type", "application/json")
            .body(download(e))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 202);
    }
    // Mid-window: the group is open, with all three events, and Plex has heard nothing.
    eventually(Duration::from_secs(2), || async {
        let d = admin_json(&client, addr, "/api/v1/admin/debouncer").await;
        d["groups"][0]["events"] == json!(3)
    })
    .await;
    let d = admin_json(&client, addr, "/api/v1/admin/debouncer").await;
    assert_eq!(d["open_groups"], json!(1), "{d}");
    assert_eq!(
        d["groups"][0]["key"],
        json!(format!("folder:{SEASON}")),
        "{d}"
    );
    // Well inside the window, every event committed and grouped: kill.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    let in_window = started.elapsed();
    assert!(
        in_window < Duration::from_millis(2500),
        "too slow to kill inside the window: {in_window:?}"
    );
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    assert!(
        fake.scans().is_empty(),
        "scanned before the window closed: {:?}",
        fake.scans()
    );

    // Restart on the same data dir: the open group is rebuilt and fires once.
    let (mut child, addr) = spawn_binary(&config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.uploads().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "work lost across the crash: 30 s after the restart Plex got scans {:?} and uploads {:?}",
            fake.scans(),
            fake.uploads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done_after = started.elapsed();
    // Longer than a quiet period: anything duplicated would show by now.
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(
        fake.scans(),
        vec![("2".to_string(), SEASON.to_string())],
        "exactly one scan of the folder across the crash"
    );
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 3, "every card once: {uploads:?}");
    assert_eq!(uploads.into_iter().collect::<BTreeSet<_>>(), want);
    let targets = admin_json(&client, addr, "/api/v1/admin/targets").await;
    let plex = targets["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["stats"]["name"] == "plex:home"))
        .unwrap_or_else(|| panic!("no plex target: {targets}"));
    assert_eq!(plex["deliveries"]["succeeded"], json!(1), "{plex}");
    assert_eq!(plex["deliveries"]["pending"], json!(0), "{plex}");
    assert_eq!(plex["deliveries"]["failed"], json!(0), "{plex}");
    let d = admin_json(&client, addr, "/api/v1/admin/debouncer").await;
    assert_eq!(d["open_groups"], json!(0), "{d}");
    eprintln!("killed {in_window:?} into the 3 s window; scan and cards done {done_after:?} after the first event");

    // A second SIGKILL, after the group fired and its work is done: a restart redoes nothing.
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    let (mut child, addr) = spawn_binary(&config).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(fake.scans().len(), 1, "{:?}", fake.scans());
    assert_eq!(fake.uploads().len(), 3, "{:?}", fake.uploads());
    let d = admin_json(&client, addr, "/api/v1/admin/debouncer").await;
    assert_eq!(
        (d["open_groups"].clone(), d["fired"].clone()),
        (json!(0), json!(0)),
        "{d}"
    );
    child.start_kill().expect("kill");
    child.wait().await.expect("wait");
}

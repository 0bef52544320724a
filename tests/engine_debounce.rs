//! A debounced hook posts one message per season pack (issue 6 §2, "Hooks opt in with
//! `debounce = "15s"` and a key").
//!
//! Proves, at the receivers: ten Sonarr `Download` events of one grab (one `downloadId`),
//! sent over a burst longer than the quiet period, plus one event of another grab, reach a
//! hook with `debounce = "1s"` and `debounce_key = "download_id"` as exactly two messages;
//! the pack's message lists all ten episodes; neither is sent before the quiet period has
//! passed since the last event of its group; and a hook without `debounce` on the same relay
//! gets all eleven events at once (each before its group's debounced message), one message
//! each.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;

const PACK_ID: &str = "3F5A9C0E1B7D42A68E0C9B1D2F3A4E5B6C7D8E9F";
const OTHER_ID: &str = "SABnzbd_nzo_other_grab_0001";
const QUIET: Duration = Duration::from_secs(1);
/// Between two events of the pack: the whole burst (1.35 s) is longer than the quiet
/// period, so a debouncer that counted from the first event would split the pack.
const SPACING: Duration = Duration::from_millis(150);

/// A Sonarr `Download` body for episode `episode` of season 3, grabbed as `download_id`.
/// Derived from `tests/fixtures/corpus/sonarr/Download.json` (Sonarr's On Import payload,
/// The Expanse S03E05): only the episode, its file and the download id change.
fn download(episode: u32, download_id: &str) -> String {
    let path = corpus().join("sonarr/Download.json");
    let text = std::fs::read_to_string(&path).expect("read the Download fixture");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let ep = &mut v["episodes"][0];
    ep["episodeNumber"] = episode.into();
    ep["id"] = (1000 + episode).into();
    ep["title"] = format!("Episode {episode}").into();
    let rel = format!("Season 03/The Expanse - S03E{episode:02} [WEBDL-1080p]-NTb.mkv");
    v["episodeFile"]["id"] = (5500 + episode).into();
    v["episodeFile"]["path"] = format!("/tv/The Expanse/{rel}").into();
    v["episodeFile"]["relativePath"] = rel.into();
    v["downloadId"] = download_id.into();
    v["release"]["releaseType"] = if download_id == PACK_ID {
        "seasonPack"
    } else {
        "singleEpisode"
    }
    .into();
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_debounced_hook_one_message_per_season_pack() {
    let pack = Receiver::start().await;
    let each = Receiver::start().await;
    let extra = format!(
        "{}{}",
        hook_toml(
            "pack",
            &pack.hook_url(),
            &format!(
                "debounce = \"{}s\"\ndebounce_key = \"download_id\"",
                QUIET.as_secs()
            )
        ),
        hook_toml("each", &each.hook_url(), "")
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();

    // (event id, download id, sent at)
    let mut sent: Vec<(String, &str, Instant)> = Vec::new();
    for episode in 1..=10 {
        let at = Instant::now();
        let id = post_new(&client, &relay, download(episode, PACK_ID)).await;
        sent.push((id, PACK_ID, at));
        tokio::time::sleep(SPACING).await;
    }
    let at = Instant::now();
    let id = post_new(&client, &relay, download(11, OTHER_ID)).await;
    sent.push((id, OTHER_ID, at));

    // The hook without debounce: every event, one message each.
    each.wait_for(11, Duration::from_secs(5)).await;
    let arrivals: HashMap<String, Vec<Recorded>> = each.by_event_id();
    for (id, _, _) in &sent {
        let got = arrivals
            .get(id)
            .unwrap_or_else(|| panic!("event {id} missing at the undebounced hook"));
        assert_eq!(got.len(), 1, "event {id} sent {} times", got.len());
    }

    // The debounced hook: one message per grab.
    pack.wait_for(2, Duration::from_secs(10)).await;
    pack.assert_stays_at(2, Duration::from_millis(2000)).await;
    each.assert_stays_at(11, Duration::ZERO).await;
    let msgs = pack.requests();
    let by_grab: HashMap<String, &Recorded> = msgs
        .iter()
        .map(|r| {
            let v = r.json();
            let d = v["data"]["download_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no data.download_id: {v:#}"))
                .to_owned();
            (d, r)
        })
        .collect();
    assert_eq!(by_grab.len(), 2, "two messages, one per grab: {msgs:#?}");

    // ...at once: not held back with its group. Each event reached the undebounced hook
    // before its grab's debounced message left (an order, not a time limit: a loaded
    // machine may be slow, but a debounce applied to the wrong hook shows here).
    for (id, grab, _) in &sent {
        let got = &arrivals[id][0];
        assert!(
            got.at < by_grab[*grab].at,
            "the undebounced hook got event {id} {:?} after the debounced message of its grab",
            got.at.duration_since(by_grab[*grab].at)
        );
    }

    // The pack's message lists the ten episodes, each once.
    let msg = by_grab.get(PACK_ID).expect("the season pack's message");
    let v = msg.json();
    let mut episodes: Vec<(u64, u64)> = v["data"]["episodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no data.episodes: {v:#}"))
        .iter()
        .map(|e| {
            (
                e["season"].as_u64().expect("season"),
                e["episode"].as_u64().expect("episode"),
            )
        })
        .collect();
    episodes.sort_unstable();
    let want: Vec<(u64, u64)> = (1..=10).map(|e| (3, e)).collect();
    assert_eq!(episodes, want, "{v:#}");
    assert_eq!(
        v["data"]["files"].as_array().map(Vec::len),
        Some(10),
        "{v:#}"
    );
    let other = by_grab
        .get(OTHER_ID)
        .expect("the other grab's message")
        .json();
    assert_eq!(other["data"]["episodes"][0]["episode"], 11, "{other:#}");
    assert_eq!(
        other["data"]["episodes"].as_array().map(Vec::len),
        Some(1),
        "{other:#}"
    );

    // Neither message went out before its group was quiet for the quiet period (the
    // relay stamps an event after we start sending it; 50 ms of slack for ms rounding).
    for (grab, msg) in &by_grab {
        let last = sent
            .iter()
            .filter(|(_, d, _)| d == grab)
            .map(|(_, _, at)| *at)
            .max()
            .expect("sent");
        let waited = msg.at.duration_since(last);
        eprintln!("{grab}: sent {waited:?} after its last event");
        assert!(
            waited + Duration::from_millis(50) >= QUIET,
            "{grab}: sent {waited:?} after its last event, before the quiet period ({QUIET:?})"
        );
    }
    assert_ne!(
        by_grab[PACK_ID].webhook_id(),
        by_grab[OTHER_ID].webhook_id(),
        "one delivery per group"
    );
    eventually(Duration::from_secs(5), || async {
        let v = hook_view(&relay, "pack").await;
        v["deliveries"]["succeeded"] == 2 && v["deliveries"]["pending"] == 0
    })
    .await;
    relay.stop().await;
}

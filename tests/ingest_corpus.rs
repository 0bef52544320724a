//! Replays the whole fixture corpus (every event type of every source, derived from the
//! senders' code; see `tests/fixtures/corpus/README.md`) over real HTTP, each body framed
//! and authenticated the way its sender does it, and checks the stored normalised event
//! against the `.expect.json` beside it.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::expect::check_subset;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Builds the request a sender of `source` would make with `body`.
fn request(source: &str, body: &[u8]) -> Vec<u8> {
    let mut headers = vec![("Host", "relayarr.local:8088".to_string())];
    let mut target = format!("/api/v1/webhooks/{source}");
    let mut payload = body.to_vec();
    match source {
        "sonarr" => {
            headers.push(("Authorization", "Basic c29uYXJyOlBhNTV3MHJkIQ==".into()));
            headers.push(("Content-Type", "application/json".into()));
        }
        "radarr" => {
            headers.push(("X-Api-Key", "6f1c1b0d2a9e4c7fb3d8e5a4c2b1f0e9".into()));
            headers.push(("Content-Type", "application/json".into()));
        }
        "lidarr" => {
            headers.push(("Authorization", "Bearer lidarr-token".into()));
            headers.push(("Content-Type", "application/json".into()));
        }
        "readarr" | "whisparr" => headers.push(("Content-Type", "application/json".into())),
        "tautulli" => {
            headers.push(("X-Webhook-Secret", "tt-4e1f0a9c7b2d48e6".into()));
            headers.push(("Content-Type", "application/json".into()));
        }
        "jellyfin" => {
            // The plugin's default: JSON sent as text/plain.
            headers.push(("X-Webhook-Secret", "jf-0b7d2f9c1e4a4c58".into()));
            headers.push(("Content-Type", "text/plain; charset=utf-8".into()));
        }
        "plex" => {
            target.push_str("?token=plex-token");
            let b = "------------------------Zq8wXr2mPb7Kd4Hs9Tn1Vc";
            let mut mp = format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n"
            )
            .into_bytes();
            mp.extend_from_slice(body);
            mp.extend_from_slice(
                format!("\r\n--{b}\r\nContent-Disposition: form-data; name=\"thumb\"; filename=\"thumb.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes(),
            );
            mp.extend_from_slice(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\xff\xd9");
            mp.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
            payload = mp;
            headers.push(("Content-Type", format!("multipart/form-data; boundary={b}")));
        }
        "custom" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"custom-secret").expect("key");
            mac.update(body);
            let sig = hex::encode(mac.finalize().into_bytes());
            headers.push(("X-Signature", format!("sha256={sig}")));
            headers.push(("Content-Type", "application/json".into()));
        }
        other => panic!("no request recipe for corpus source {other}"),
    }
    let mut out = format!("POST {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", payload.len()).as_bytes());
    out.extend_from_slice(&payload);
    out
}

fn corpus_files(root: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root)
        .expect("corpus dir")
        .filter_map(Result::ok)
    {
        if !dir.path().is_dir() {
            continue;
        }
        let source = dir.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
        {
            let p = f.path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.ends_with(".expect.json") {
                out.push((source.clone(), p));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_corpus_every_event_of_every_source_over_http() {
    let relay = start_relay("").await;
    let files = corpus_files(&corpus());
    assert!(files.len() >= 60, "corpus too small: {}", files.len());
    let mut errs = Vec::new();
    let mut stored = 0u64;
    let mut kinds_seen: HashMap<String, usize> = HashMap::new();
    for (source, path) in &files {
        let body = std::fs::read(path).expect("read body");
        let resp = send_raw(relay.addr, &request(source, &body)).await;
        let label = format!(
            "{source}/{}",
            path.file_name().expect("name").to_string_lossy()
        );
        let v = resp.json();
        let id = match (resp.status, v["duplicate"].as_bool()) {
            (202, Some(false)) => {
                stored += 1;
                v["id"].as_str().expect("id").to_owned()
            }
            // Two corpus bodies may be byte-identical (e.g. Test events): first id returned.
            (200, Some(true)) => v["id"].as_str().expect("id").to_owned(),
            (status, _) => {
                errs.push(format!("{label}: HTTP {status}: {v}"));
                continue;
            }
        };
        let name = path.file_name().expect("name").to_string_lossy();
        let expect_path = path.with_file_name(name.replace(".json", ".expect.json"));
        let expect: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&expect_path)
                .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display())),
        )
        .expect("expect json");
        let ev = relay.stored_event(&id).await;
        assert_eq!(ev["source"], source.as_str(), "{label}");
        check_subset(&expect, Some(&ev["normalized"]), &label, &mut errs);
        *kinds_seen
            .entry(ev["normalized"]["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert!(
        errs.is_empty(),
        "{} mismatches:\n{}",
        errs.len(),
        errs.join("\n")
    );
    assert_eq!(relay.count_events().await, stored);
    // Breadth: the corpus exercises the whole kind vocabulary, not just a few kinds.
    assert!(kinds_seen.len() >= 25, "kinds covered: {kinds_seen:?}");
    relay.stop().await;
}

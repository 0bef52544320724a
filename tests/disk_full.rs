//! A full disk under the relay's data dir: a tmpfs of a few MiB made for each test, filled
//! with a filler file. While it is full, ingest answers 503 with `Retry-After` and a JSON
//! error (never a 2xx it could not keep), delivery outcomes and attempts wait in each
//! target's ordered writer, and rejections wait in the history recorder. Once the filler
//! is deleted everything recovers by itself, with no restart: every acknowledged event is
//! there, every delivery ends delivered with its attempts recorded, sent once.
//!
//! Mounting needs root (CI runs as root). Elsewhere the tests say they skipped, unless
//! `RELAYARR_REQUIRE_TMPFS=1` is set: then they fail. SQLite only (a PostgreSQL run keeps
//! its data on the server, not in the data dir).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::receiver::*;
use common::*;
use sha2::{Digest, Sha256};

/// A tmpfs mounted on a fresh directory, unmounted (lazily: the relay may still hold its
/// files) when dropped, pass or fail.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) where mounting is not permitted.
    fn mount(size: &str) -> Option<Tmpfs> {
        let require = std::env::var("RELAYARR_REQUIRE_TMPFS").is_ok_and(|v| v == "1");
        if backend::on_postgres() {
            println!("skipped: the store is PostgreSQL, so a full data dir does not reach it");
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !require,
                    "RELAYARR_REQUIRE_TMPFS=1 but a tmpfs could not be mounted: {why}"
                );
                println!("skipped: cannot mount a tmpfs here (needs root): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system refuses (ENOSPC).
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0x5au8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A Sonarr import with `pad` bytes of incompressible text (LZ4 cannot shrink it), so a
/// few of them need more room than a full disk has.
fn padded(tag: &str, i: usize, pad: usize) -> String {
    let mut text = String::with_capacity(pad + 64);
    let mut h: [u8; 32] = Sha256::digest(format!("{tag}{i}")).into();
    while text.len() < pad {
        text.push_str(&hex::encode(h));
        h = Sha256::digest(h).into();
    }
    text.truncate(pad);
    let body = sonarr_download(tag, i);
    format!("{},\"padding\":\"{text}\"}}", &body[..body.len() - 1])
}

/// SQLite reuses its WAL file from the start once a checkpoint caught up, so small writes
/// could still land in the file's old frames on a full disk, and a test would prove
/// nothing. Two steps make every commit need new space: a commit of our own larger than the
/// WAL file (a 512 KiB row of its own in `meta`), so the WAL's end is the file's end; and a
/// reader whose snapshot needs those frames (started at once, before the checkpointer
/// copies them out), which keeps the WAL from being reused until it ends (`COMMIT`).
fn pin_wal(db: &Path) -> rusqlite::Connection {
    let pin = rusqlite::Connection::open(db).expect("open a connection");
    pin.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    pin.execute_batch(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('disk_full_test', zeroblob(524288)); \
         BEGIN; SELECT COUNT(*) FROM meta;",
    )
    .expect("pin a snapshot in the WAL");
    pin
}

/// The disk made full under a running relay, so that every commit needs space there is
/// none of; [`Full::release`] gives the space back.
struct Full {
    pin: rusqlite::Connection,
    filler: PathBuf,
}

impl Full {
    fn start(fs: &Tmpfs, relay: &TestRelay) -> Full {
        let pin = pin_wal(&relay.db_path());
        Full {
            pin,
            filler: fs.fill(),
        }
    }

    /// The filler goes, and the reader's snapshot ends so that the WAL may be reused again.
    fn release(self) {
        std::fs::remove_file(&self.filler).expect("remove filler");
        self.pin
            .execute_batch("COMMIT")
            .expect("end the reader's snapshot");
    }
}

/// A relay (with `extra` config) whose data dir is on a fresh 4 MiB tmpfs; `None` where the
/// test skips (see [`Tmpfs::mount`]).
async fn relay_on_tmpfs(extra: &str) -> Option<(Tmpfs, TestRelay)> {
    let fs = Tmpfs::mount("4m")?;
    let data = tempfile::tempdir_in(fs.path()).expect("data dir on the tmpfs");
    let relay = start_relay_in(data, extra).await;
    Some((fs, relay))
}

async fn rejected_401(relay: &TestRelay) -> bool {
    let v: serde_json::Value = relay
        .admin_get("/api/v1/admin/rejections")
        .await
        .json()
        .await
        .expect("json");
    v["rejections"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["status"] == 401))
}

async fn post(client: &reqwest::Client, relay: &TestRelay, body: String) -> reqwest::Response {
    client
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send to relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_ingest_answers_503_keeps_acknowledged_events_and_recovers() {
    let Some((fs, relay)) = relay_on_tmpfs("").await else {
        return;
    };
    let client = reqwest::Client::new();

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(post_new(&client, &relay, sonarr_download("full-before", i)).await);
    }
    let full = Full::start(&fs, &relay);

    // Full: bodies that need new pages are refused with 503, Retry-After and a JSON error.
    // Any that still fit in space SQLite already holds are acknowledged, and must be kept.
    let mut refused = 0;
    for i in 0..40 {
        let resp = post(&client, &relay, padded("full-during", i, 200_000)).await;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let v: serde_json::Value = resp.json().await.expect("a JSON answer, even when full");
        match status {
            202 => acknowledged.push(v["id"].as_str().expect("id").to_owned()),
            503 => {
                assert!(retry_after.is_some(), "503 without Retry-After: {v}");
                assert!(v["error"].is_string(), "503 without a JSON error: {v}");
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}: {v}"),
        }
    }
    assert!(refused >= 3, "a full disk never refused an event");
    // Readiness says so too, and rejected requests wait in the history recorder.
    let bad = client
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("wrong"))
        .header("content-type", "application/json")
        .body(sonarr_download("full-rejected", 0))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 401);
    // The recorder flushes every 200 ms: its write met the full disk.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !rejected_401(&relay).await,
        "a rejection was written onto a full disk"
    );

    // Space returns: ingest recovers by itself, no restart.
    full.release();
    let mut i = 0;
    let id = eventually_some(Duration::from_secs(20), || {
        i += 1;
        let body = padded("full-after", i, 20_000);
        let client = client.clone();
        let relay = &relay;
        async move {
            let resp = post(&client, relay, body).await;
            if resp.status() != 202 {
                return None;
            }
            let v: serde_json::Value = resp.json().await.ok()?;
            v["id"].as_str().map(str::to_owned)
        }
    })
    .await;
    acknowledged.push(id);
    for id in &acknowledged {
        let v = relay.stored_event(id).await;
        assert_eq!(v["id"], id.as_str());
    }
    // The rejection made while full was kept and written once space returned.
    eventually(Duration::from_secs(10), || rejected_401(&relay)).await;
    println!(
        "{} events acknowledged, {refused} refused with 503 while full",
        acknowledged.len()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_delivery_outcomes_wait_and_every_delivery_ends_delivered_once() {
    // The receiver holds each request 2 s, so the disk fills while they are in flight, and
    // their attempts and outcomes must be written onto a full disk.
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_secs(2))).await;
    let extra = hook_toml(
        "a",
        &rx.hook_url(),
        "events = \"*\"\nmax_in_flight = 8\nretry = \"linear:50\"\nretry_base = \"200ms\"",
    );
    let Some((fs, relay)) = relay_on_tmpfs(&extra).await else {
        return;
    };
    let client = reqwest::Client::new();

    const N: usize = 6;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(post_new(&client, &relay, sonarr_download("full-delivery", i)).await);
    }
    rx.wait_for(N, Duration::from_secs(10)).await;
    let full = Full::start(&fs, &relay);
    // Every request is answered 200 while the disk is full; the writes wait.
    eventually(Duration::from_secs(10), || async { rx.in_flight() == 0 }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Proof the writes met the full disk: no outcome is stored yet.
    for id in &ids {
        let d = relay.delivery(id, "a").await.expect("the delivery row");
        assert_eq!(
            d.state, "pending",
            "{id}: an outcome was written onto a full disk"
        );
    }
    full.release();

    // Every delivery ends delivered, with its attempts recorded.
    for id in &ids {
        let d = eventually_some(Duration::from_secs(20), || async {
            relay
                .delivery(id, "a")
                .await
                .filter(|d| d.state == "succeeded")
        })
        .await;
        let attempts: serde_json::Value = relay
            .admin_get(&format!("/api/v1/admin/events/{id}/attempts"))
            .await
            .json()
            .await
            .expect("json");
        let list = attempts["attempts"].as_array().expect("attempts list");
        assert_eq!(
            list.len() as u32,
            d.attempts,
            "every attempt of {id} is recorded: {attempts}"
        );
        assert_eq!(list.last().expect("one")["status"], 200, "{attempts}");
    }
    // Sent once each: an outcome that waited for space did not make the event go again.
    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in rx.requests() {
        *sent
            .entry(r.webhook_id().expect("webhook-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(sent.len(), N, "{sent:?}");
    assert!(
        sent.values().all(|&n| n == 1),
        "a delivered event was sent again: {sent:?}"
    );
    relay.stop().await;
}

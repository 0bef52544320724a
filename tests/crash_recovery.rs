//! Durable before acknowledged: events answered 2xx survive a SIGKILL of the real binary,
//! and the router routes them after the restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn body(i: usize) -> String {
    format!(
        r#"{{"series":{{"id":7,"title":"Crash Test","path":"/tv/Crash Test"}},"episodes":[{{"seasonNumber":1,"episodeNumber":{i}}}],"episodeFile":{{"path":"/tv/Crash Test/S01E{i:03}.mkv"}},"isUpgrade":false,"eventType":"Download"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    std::fs::write(&config, test_config_text(dir.path(), "")).expect("write config");
    let (mut child, addr) = spawn_binary(&config).await;

    // Load from 8 connections; SIGKILL while requests are still in flight.
    let client = reqwest::Client::new();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, acked) = (client.clone(), acked.clone());
        tasks.spawn(async move {
            for i in 0..10_000 {
                let r = client
                    .post(format!("http://{addr}/api/v1/webhooks/sonarr"))
                    .basic_auth("sonarr", Some("Pa55w0rd!"))
                    .header("content-type", "application/json")
                    .body(body(w * 10_000 + i))
                    .send()
                    .await;
                let Ok(resp) = r else { return };
                if resp.status() == 202 {
                    if let Ok(v) = resp.json::<serde_json::Value>().await {
                        if let Some(id) = v["id"].as_str() {
                            acked.lock().expect("lock").push(id.to_owned());
                        }
                    }
                }
            }
        });
    }
    eventually(Duration::from_secs(30), || async {
        acked.lock().expect("lock").len() >= 300
    })
    .await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    while tasks.join_next().await.is_some() {}
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 300);

    // Restart on the same data dir: every acknowledged id is there and gets routed.
    let (mut child, addr) = spawn_binary(&config).await;
    let store = open_store(dir.path()).await;
    for id in &acked {
        let found = store.get_event(id).await.expect("read event");
        assert!(
            found.is_some(),
            "acknowledged event {id} lost after SIGKILL"
        );
    }
    // The restarted router routes everything that was committed but not yet routed.
    eventually(Duration::from_secs(20), || async {
        all_routed(&store).await
    })
    .await;
    // Still serving after the restart.
    let resp = client
        .get(format!("http://{addr}/api/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), 200);
    child.start_kill().expect("kill");
    child.wait().await.expect("wait");
}

/// Runs `relayarr check-config FILE`.
async fn check_config(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relayarr"))
        .arg("check-config")
        .arg(file)
        .output()
        .await
        .expect("run relayarr check-config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_check_config_exits_64_on_a_bad_file_and_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[source]]\nname = \"sonarr\"\nkind = \"sonarr\"\n").expect("write");
    let out = check_config(&bad).await;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source[0]") && err.contains("auth"), "{err}");

    std::fs::write(&bad, "[server]\nlisen = \"x\"\n").expect("write");
    let out = check_config(&bad).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/relayarr.example.toml");
    let out = check_config(&example).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    std::fs::write(&config, test_config_text(dir.path(), "")).expect("write config");
    let (mut child, addr) = spawn_binary(&config).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(body(1))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    let pid = i32::try_from(child.id().expect("pid")).expect("pid fits");
    let rc = send_sigterm(pid);
    assert_eq!(rc, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped in time")
        .expect("wait");
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    assert_eq!(count_events_in(dir.path()).await, 1);
}

/// Sends SIGTERM with the `kill` command: tokio can only send SIGKILL, and the workspace
/// forbids `unsafe` (which `libc::kill` would need).
fn send_sigterm(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}

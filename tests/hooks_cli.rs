//! `relayarr test-hook NAME`: sends a sample event through the same rendering, signing and
//! delivery code as the hook actor, prints status, latency and response, and exits non-zero
//! when the endpoint does not answer 2xx.

mod common;

use common::receiver::{hook_toml, Receiver};
use common::test_config_text;
use tokio::process::Command;

async fn test_hook(config: &std::path::Path, name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relayarr"))
        .args(["test-hook", name, "--config"])
        .arg(config)
        .output()
        .await
        .expect("run relayarr test-hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_cli_test_hook_sends_a_signed_sample_and_reports() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    let hook = hook_toml(
        "cards",
        &receiver.url("/cards"),
        "signing = { standard = { secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" } }",
    );
    std::fs::write(&config, test_config_text(dir.path(), &hook)).expect("write config");

    let out = test_hook(&config, "cards").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status:   200"), "{stdout}");
    assert!(stdout.contains("latency:"), "{stdout}");

    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert!(req
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,")));
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(body["event"], "upgrade");
    assert_eq!(body["data"]["media"]["title"], "The Expanse");

    // A failing endpoint: the status is reported and the exit code says so.
    receiver.set_status(503);
    let out = test_hook(&config, "cards").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status:   503"));

    // An unknown hook is a usage error.
    let out = test_hook(&config, "nope").await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hook named `nope`"));
}

//! Secrets in the real binary: `relayarr test-hook` prints the hook's URL masked (a
//! Discord-style token in the path, user info, `?token=`), and a hook's signing secret can
//! come from a `RELAYARR_HOOK__<NAME>__…_FILE` variable, even one that looks like a number.

mod common;

use common::receiver::{hook_toml, Receiver};
use common::test_config_text;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::process::Command;

async fn test_hook(
    config: &std::path::Path,
    name: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayarr"));
    cmd.args(["test-hook", name, "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run relayarr test-hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_cli_test_hook_masks_the_url() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    let url = format!(
        "http://hookuser:hunter2pass@{}/api/webhooks/123456/DiscordTokenAbcdefghijkl?wait=true&token=qtoken9",
        receiver.addr
    );
    std::fs::write(
        &config,
        test_config_text(dir.path(), &hook_toml("discord", &url, "")),
    )
    .expect("write config");

    let out = test_hook(&config, "discord", &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // It was sent to the real URL, token and all.
    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].path,
        "/api/webhooks/123456/DiscordTokenAbcdefghijkl"
    );
    // What the terminal shows.
    for secret in ["hunter2pass", "DiscordToken", "qtoken9"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}{stderr}"
        );
    }
    let shown = format!("url:      http://hookuser:***@{}/api/…?…\n", receiver.addr);
    assert!(stdout.contains(&shown), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_cli_hook_secret_from_env_file_signs_the_request() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    // The file has no signing at all: the scheme and the secret come from the environment.
    std::fs::write(
        &config,
        test_config_text(dir.path(), &hook_toml("my-cms", &receiver.url("/cms"), "")),
    )
    .expect("write config");
    let secret_file = dir.path().join("cms_secret");
    // Digits only: it must be read as a string, not a number.
    std::fs::write(&secret_file, "4242424242\n").expect("write secret");

    let out = test_hook(
        &config,
        "my-cms",
        &[(
            "RELAYARR_HOOK__MY_CMS__SIGNING__HMAC__SECRET_FILE",
            secret_file.to_str().expect("utf8"),
        )],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 1);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"4242424242").expect("key");
    mac.update(&reqs[0].body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(reqs[0].header("x-relayarr-signature"), Some(want.as_str()));

    // An override for a hook that does not exist is a config error naming the variable.
    let out = test_hook(
        &config,
        "my-cms",
        &[(
            "RELAYARR_HOOK__NOPE__SECRET_FILE",
            secret_file.to_str().expect("utf8"),
        )],
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RELAYARR_HOOK__NOPE__SECRET_FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("no [[hook]] named `nope`"), "{stderr}");
    assert_eq!(receiver.count(), 1);
}

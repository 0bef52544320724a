//! The operator CLI (issue 7 §5): the real binary against a relay running in this process,
//! checking what each command prints and its exit code.

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;
use tokio::process::Command;

/// Runs `relayarr ARGS --url <relay>` with the admin token in the environment; returns
/// (exit code, stdout, stderr).
async fn cli(relay: &TestRelay, args: &[&str]) -> (i32, String, String) {
    cli_at(&format!("http://{}", relay.addr), Some(ADMIN_TOKEN), args).await
}

async fn cli_at(url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayarr"));
    cmd.args(args)
        .args(["--url", url])
        .env_remove("RELAYARR_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("RELAYARR_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finished")
        .expect("run relayarr");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_admin_commands_print_what_the_api_says() {
    let (extra, good, bad) = good_and_bad_hooks().await;
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(post_new(&client, &relay, sonarr_download("cli", i)).await);
    }
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr-open"))
        .header("content-type", "application/json")
        .body(sonarr_download("open", 9))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    let failed_id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    good.wait_for(3, Duration::from_secs(10)).await;
    bad.wait_for(1, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), || async {
        attempts(&relay, &failed_id).await.len() == 1
            && hook_view(&relay, "good").await["deliveries"]["succeeded"] == 3
    })
    .await;

    // events: a table, newest first, with the delivery states.
    let (code, out, err) = cli(&relay, &["events", "--source", "sonarr"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("RECEIVED") && lines[0].contains("DELIVERIES"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].contains(&ids[2]) && lines[1].contains("Hook cli 3 S01E03"),
        "{out}"
    );
    assert!(lines[1].ends_with("good:succeeded"), "{out}");
    assert!(lines[3].contains(&ids[0]), "{out}");
    let (_, out, _) = cli(&relay, &["events", "--limit", "1"]).await;
    assert!(
        out.contains(&failed_id) && out.contains("bad:failed"),
        "{out}"
    );
    assert!(out.contains("(more"), "{out}");

    // explain: the failed delivery, its attempt and the receiver's answer.
    let (code, out, err) = cli(&relay, &["explain", &failed_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("event {failed_id}\n  Hook open 9 S01E09")),
        "{out}"
    );
    assert!(
        out.contains("→ bad: failed, 1 attempt(s), last status 400"),
        "{out}"
    );
    assert!(out.contains("attempt 1 at "), "{out}");
    assert!(out.contains("status 400 in "), "{out}");
    assert!(out.contains("response: fake receiver: 400"), "{out}");

    // replay: progress lines (stdout is a pipe here), then the result.
    let (code, out, err) = cli(&relay, &["replay", &ids[0]]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replay event "), "{out}");
    assert!(
        out.contains(": done, 1 deliveries requeued (good 1)"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("1/1 targets asked")),
        "{out}"
    );
    good.wait_for(4, Duration::from_secs(10)).await;
    let (code, out, err) = cli(&relay, &["replay", "--target", "good", "--since", "1h"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replay target good: done, 3 deliveries requeued"),
        "{out}"
    );

    // tree: indented, the hooks under their supervisor.
    let (code, out, err) = cli(&relay, &["tree"]).await;
    assert_eq!(code, 0, "{err}");
    let hook_line = out
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("{}hook:good", relay.namespace))
        })
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        hook_line.starts_with("    ") && hook_line.contains("running"),
        "{out}"
    );
    assert!(!out.starts_with(' '), "{out}");

    // hooks: list, then each change, seen in the list and through the API.
    let (code, out, err) = cli(&relay, &["hooks"]).await;
    assert_eq!(code, 0, "{err}");
    let good_line = out
        .lines()
        .find(|l| l.starts_with("good "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(good_line.contains("enabled"), "{out}");
    let (code, out, _) = cli(&relay, &["hooks", "set-cap", "good", "2"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "good: enabled, max_in_flight 2, rate unlimited")
    );
    let (code, out, _) = cli(&relay, &["hooks", "set-rate", "good", "5/s"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "good: enabled, max_in_flight 2, rate 5/s")
    );
    let (code, out, _) = cli(&relay, &["hooks", "disable", "good"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "good: disabled, max_in_flight 2, rate 5/s")
    );
    let (_, out, _) = cli(&relay, &["hooks"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("good ") && l.contains("disabled")),
        "{out}"
    );
    let (code, out, _) = cli(&relay, &["hooks", "enable", "good"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "good: enabled, max_in_flight 2, rate 5/s")
    );
    let v = hook_view(&relay, "good").await;
    assert_eq!(v["stats"]["max_in_flight"], 2, "{v:#}");

    // Server errors: the message and the code on stderr, exit 1.
    let (code, out, err) = cli(&relay, &["hooks", "set-rate", "good", "fast"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("422 (invalid_field)") && err.contains("`rate`"),
        "{err}"
    );
    let (code, _, err) = cli(&relay, &["explain", "01J0000000000000000000000"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("404 (not_found)") && err.contains("no event"),
        "{err}"
    );
    let url = format!("http://{}", relay.addr);
    let (code, _, err) = cli_at(&url, None, &["tree"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("401 (unauthorized)") && err.contains("RELAYARR_ADMIN_TOKEN"),
        "{err}"
    );
    relay.stop().await;

    // An instance that is not there: says so, with the URL.
    let (code, _, err) = cli_at(&url, Some(ADMIN_TOKEN), &["events"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot reach relayarr at {url}")),
        "{err}"
    );
}

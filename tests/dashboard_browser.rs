//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! from `tests/browser/dashboard.mjs`). Against the real relay, it checks that the page loads
//! with no console errors, that a cap changed through the UI is what the API then reports,
//! that an event sent to the server appears in the events table, and that a failed
//! delivery shows its response excerpt; and that the page fits a phone screen.
//! Screenshots are written to `target/screenshots/dashboard/`.
//!
//! Needs `chromium`, `node` and `npm ci --prefix tests/browser`; `.ci/run` installs them and
//! sets `RELAYARR_REQUIRE_BROWSER=1`. Without them the test says it skipped, and why.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use common::receiver::*;
use common::*;
use tokio::process::Command;

const FAILED_EXCERPT: &str = "upstream exploded: disk full";

fn chromium() -> Option<PathBuf> {
    let from_env = std::env::var_os("RELAYARR_CHROMIUM").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Why the browser test cannot run here, if it cannot.
fn missing_prerequisite(root: &Path) -> Option<String> {
    if chromium().is_none() {
        return Some("no Chromium (apt-get install chromium, or set RELAYARR_CHROMIUM)".into());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("no node on PATH".into());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser)".into());
    }
    None
}

/// A hook endpoint that always fails with a body the history keeps.
async fn failing_endpoint() -> String {
    let app = axum::Router::new().route(
        "/hook",
        post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, FAILED_EXCERPT) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Some(why) = missing_prerequisite(&root) {
        assert!(
            std::env::var_os("RELAYARR_REQUIRE_BROWSER").is_none(),
            "RELAYARR_REQUIRE_BROWSER is set but {why}"
        );
        eprintln!("dashboard_in_a_real_browser: skipped: {why}");
        return;
    }
    let ok = Receiver::start().await;
    let failing = failing_endpoint().await;
    let extra = format!(
        "{}{}",
        hook_toml("tv-ok", &ok.hook_url(), "max_in_flight = 8"),
        hook_toml("tv-broken", &failing, "retry = \"none\"")
    );
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("dashboard", 1)).await;
    ok.wait_for(1, Duration::from_secs(10)).await;
    // The failed attempt is recorded before the page looks for it.
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "tv-broken").await;
        v["deliveries"]["failed"] == 1
    })
    .await;
    wait_attempts(&relay, &id, 2).await;

    let screenshots = root.join("target/screenshots/dashboard");
    let args = serde_json::json!({
        "url": relay.url("/"),
        "token": ADMIN_TOKEN,
        "eventId": id,
        "okHook": "tv-ok",
        "failedHook": "tv-broken",
        "failedExcerpt": FAILED_EXCERPT,
        "newCap": 3,
        "screenshots": screenshots,
        "chromium": chromium(),
    });
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg(root.join("tests/browser/dashboard.mjs"))
            .arg(args.to_string())
            .output(),
    )
    .await
    .expect("the browser run finished within 2 minutes")
    .expect("run node");
    assert!(
        out.status.success(),
        "dashboard checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The cap changed through the UI is what the API reports.
    let v = hook_view(&relay, "tv-ok").await;
    assert_eq!(v["stats"]["max_in_flight"], 3, "{v:#}");
    for shot in ["02-targets", "03-event", "06-phone-targets"] {
        assert!(
            screenshots.join(format!("{shot}.png")).is_file(),
            "{shot}.png"
        );
    }
    relay.stop().await;
}

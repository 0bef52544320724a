//! The admin API's view of targets: every hook and Plex server with its config (secrets
//! masked) and live counters, and a hook's test fire.

mod common;

use common::fake_plex::FakePlex;
use common::receiver::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_targets_show_masked_config_and_test_fire_a_hook() {
    let rx = Receiver::start().await;
    let plex = FakePlex::start("plex-token-admin-view").await;
    let url = rx.url("/api/webhooks/1234/SECRET-PATH-TOKEN");
    let extra = format!(
        "{}[[plex]]\nname = \"home\"\nurl = \"{}\"\ntoken = \"plex-token-admin-view\"\n",
        hook_toml(
            "discord",
            &url,
            "headers = { \"X-Api-Key\" = \"header-secret-value\" }\nsigning = { hmac = { secret = \"signing-secret-value\" } }"
        ),
        plex.url()
    );
    let relay = start_relay(&extra).await;

    let resp = relay.admin_get("/api/v1/admin/targets").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    for secret in [
        "SECRET-PATH-TOKEN",
        "header-secret-value",
        "signing-secret-value",
        "plex-token-admin-view",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let names: Vec<&str> = v["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["stats"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["discord", "plex:home"]);
    let discord = &v["targets"][0];
    assert_eq!(discord["config"]["headers"]["X-Api-Key"], "<redacted>");
    assert!(discord["config"]["url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/api/…")));
    assert_eq!(v["targets"][1]["stats"]["kind"], "plex");
    assert_eq!(v["targets"][1]["stats"]["max_in_flight"], 2);

    // Test fire: sent through the real send path, not queued.
    let client = reqwest::Client::new();
    let fire = |name: &str| {
        client
            .post(relay.url(&format!("/api/v1/admin/hooks/{name}/test")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let r = fire("discord").await.expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["ok"], true, "{body:#}");
    assert_eq!(body["status"], 200);
    assert_eq!(rx.count(), 1);
    assert!(rx.requests()[0].header("x-relayarr-signature").is_some());
    let v = hook_view(&relay, "discord").await;
    assert_eq!(
        v["deliveries"]["succeeded"], 0,
        "a test fire is not a delivery"
    );

    assert_eq!(fire("nope").await.expect("send").status(), 404);
    let r = client
        .post(relay.url("/api/v1/admin/hooks/discord/test"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    relay.stop().await;
}

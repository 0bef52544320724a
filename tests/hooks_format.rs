//! What a hook sends: signatures recomputed here from the specs (Standard Webhooks and
//! plain body HMAC), and the body shapes of `discord`, `slack` and `raw`.

mod common;

use std::time::Duration;

use base64::Engine;
use common::receiver::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The Standard Webhooks spec's example secret.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HMAC_SECRET: &str = "relayarr-hmac-secret-4c1d";

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// The base64 crate, independent of relayarr's signing code (which the test checks).
fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_signing_standard_and_hmac_signatures_verify() {
    let standard = Receiver::start().await;
    let plain = Receiver::start().await;
    let extra = [
        hook_toml(
            "standard",
            &standard.hook_url(),
            &format!("signing = {{ standard = {{ secret = \"{STANDARD_SECRET}\" }} }}"),
        ),
        hook_toml(
            "plain",
            &plain.hook_url(),
            &format!("signing = {{ hmac = {{ secret = \"{HMAC_SECRET}\" }} }}"),
        ),
    ]
    .concat();
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("signing", 1)).await;
    standard.wait_for(1, Duration::from_secs(10)).await;
    plain.wait_for(1, Duration::from_secs(10)).await;

    // Standard Webhooks: v1,base64(HMAC-SHA256(base64-decoded secret, "id.ts.body")).
    let req = standard.requests().remove(0);
    assert_eq!(req.event_id.as_deref(), Some(id.as_str()));
    let msg_id = req.webhook_id().expect("webhook-id");
    let ts = req.header("webhook-timestamp").expect("webhook-timestamp");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - ts.parse::<i64>().expect("unix seconds")).abs() < 300,
        "timestamp {ts} is not current"
    );
    let key = b64_decode(STANDARD_SECRET.trim_start_matches("whsec_"));
    let mut signed = format!("{msg_id}.{ts}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let want = format!("v1,{}", b64_encode(&hmac_sha256(&key, &signed)));
    let header = req.header("webhook-signature").expect("webhook-signature");
    // The header may carry several space-separated signatures (key rotation).
    assert!(
        header.split(' ').any(|s| s == want),
        "webhook-signature {header:?}, expected {want:?}"
    );
    assert!(req.header("x-relayarr-signature").is_none());

    // Plain HMAC: sha256=hex(HMAC-SHA256(secret bytes, body)).
    let req = plain.requests().remove(0);
    assert_eq!(req.event_id.as_deref(), Some(id.as_str()));
    let want = format!(
        "sha256={}",
        hex::encode(hmac_sha256(HMAC_SECRET.as_bytes(), &req.body))
    );
    assert_eq!(req.header("x-relayarr-signature"), Some(want.as_str()));
    assert!(req.header("webhook-signature").is_none());
    // Both modes send an id receivers can deduplicate by, different per hook.
    let plain_id = req.webhook_id().expect("webhook-id");
    assert!(plain_id.starts_with("msg_"));
    assert_ne!(plain_id, msg_id);

    // Neither secret reaches the history.
    let attempts = wait_attempts(&relay, &id, 2).await;
    let text = serde_json::to_string(&attempts).expect("json");
    assert!(!text.contains(HMAC_SECRET) && !text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_format_discord_slack_and_raw_bodies() {
    let discord = Receiver::start().await;
    let slack = Receiver::start().await;
    let raw = Receiver::start().await;
    let extra = [
        hook_toml("discord", &discord.hook_url(), "format = \"discord\""),
        hook_toml("slack", &slack.hook_url(), "format = \"slack\""),
        hook_toml("raw", &raw.hook_url(), "format = \"raw\""),
    ]
    .concat();
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let body = sonarr_download("format", 7);
    let id = post_new(&client, &relay, body.clone()).await;
    for r in [&discord, &slack, &raw] {
        r.wait_for(1, Duration::from_secs(10)).await;
    }

    // Discord: an execute-webhook body with one embed.
    let d = discord.requests().remove(0).json();
    assert_eq!(d["username"], "relayarr", "{d:#}");
    let embed = &d["embeds"][0];
    assert!(
        embed["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{d:#}"
    );
    assert!(embed["description"].is_string(), "{d:#}");
    assert!(embed["color"].is_u64(), "{d:#}");
    let stamp = embed["timestamp"].as_str().expect("embed timestamp");
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("embed timestamp {stamp:?} is not RFC 3339: {e}"));
    assert!(embed["fields"].is_array(), "{d:#}");
    assert!(embed["footer"].is_object(), "{d:#}");
    assert!(
        d.to_string().contains("Hook format 7"),
        "the series title should be in the message: {d:#}"
    );

    // Slack: incoming-webhook text plus Block Kit blocks.
    let s = slack.requests().remove(0).json();
    assert!(s["text"].as_str().is_some_and(|t| !t.is_empty()), "{s:#}");
    let blocks = s["blocks"].as_array().expect("blocks array");
    assert!(!blocks.is_empty(), "{s:#}");
    assert!(blocks.iter().all(|b| b["type"].is_string()), "{s:#}");

    // Raw: the sender's bytes, unchanged.
    let r = raw.requests().remove(0);
    assert_eq!(r.body.as_ref(), body.as_bytes());
    assert!(r.webhook_id().is_some());

    let attempts = wait_attempts(&relay, &id, 3).await;
    assert!(attempts.iter().all(|a| a["status"] == 200), "{attempts:#?}");
    relay.stop().await;
}

//! `relayarr test-hook NAME`: sends a sample event to one hook, through the same rendering,
//! signing and delivery code the hook actor uses, and reports what came back.

use std::time::Duration;

use relayarr_actors::hooks::delivery::{send_once, AttemptResult, CompiledHook};
use relayarr_actors::hooks::format::{sample_event, EventEnvelope};
use relayarr_actors::hooks::net;
use relayarr_actors::hooks::signing::webhook_id;
use relayarr_actors::redact::mask_url;
use relayarr_actors::store::now_ms;

use crate::config::Config;

/// What a test fire observed.
#[derive(Debug)]
pub struct TestHookReport {
    /// The hook's name.
    pub hook: String,
    /// The hook's URL, masked (tokens in its path, query or user info are not shown).
    pub url: String,
    /// The attempt's outcome: the status and excerpts, or the error.
    pub result: AttemptResult,
}

impl TestHookReport {
    /// True for a 2xx answer.
    pub fn ok(&self) -> bool {
        self.result.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Human-readable lines for the terminal.
    pub fn render(&self) -> String {
        let status = match (self.result.status, &self.result.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => format!("no response ({e})"),
            (None, None) => "no response".into(),
        };
        format!(
            "hook:     {}\nurl:      {}\nstatus:   {}\nlatency:  {} ms\nrequest:  {}\nresponse: {}\n",
            self.hook,
            self.url,
            status,
            self.result.latency.as_millis(),
            self.result.request_excerpt,
            self.result.response_excerpt,
        )
    }
}

/// Sends the sample event (a Sonarr upgrade of The Expanse S03E05) to hook `name`.
pub async fn test_hook(cfg: &Config, name: &str) -> Result<TestHookReport, String> {
    let hooks = cfg.compiled_hooks()?;
    let hook = hooks
        .into_iter()
        .find(|h| h.cfg.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = cfg.hooks.iter().map(|h| h.name.as_str()).collect();
            format!("no hook named `{name}` (configured: {})", known.join(", "))
        })?;
    fire_sample(&hook, cfg.outbound.strict).await
}

/// Sends the sample event to a compiled hook (the CLI's `test-hook` and the admin API's
/// test fire share this).
pub async fn fire_sample(hook: &CompiledHook, strict: bool) -> Result<TestHookReport, String> {
    let name = hook.cfg.name.as_str();
    let client = net::client(hook.cfg.timeout.max(Duration::from_secs(1)), strict, 1)
        .map_err(|e| e.to_string())?;
    let event = sample_event();
    let raw = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let id = "01TESTFIRE0000000000000000";
    let envelope = EventEnvelope {
        id,
        received_at_ms: now_ms(),
        event: &event,
    };
    let wid = webhook_id(id, name);
    let result = send_once(hook, &client, &envelope, Some(&raw), &wid).await;
    Ok(TestHookReport {
        hook: name.to_owned(),
        url: mask_url(hook.url.as_str()),
        result,
    })
}

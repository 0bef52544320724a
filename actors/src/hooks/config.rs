//! `[[hook]]` configuration: one outbound HTTP endpoint with its own filter, body format,
//! limits, retry policy and signing. Parsing of the small string languages (`"5/s"`,
//! `"exponential:5"`) lives with the code that uses them (`retry.rs`), so each has one home.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::filter::EventFilter;
use super::retry::{Rate, RetryPolicy};
use crate::redact::mask_url;
use crate::sources::auth::Secret;

/// One outbound hook. `Debug` masks the URL and header values (see [`HookConfig::masked`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Unique name (letters, digits, `-`, `_`); the actor is `hook:{name}`.
    pub name: String,
    /// Where to send. http or https.
    pub url: String,
    /// POST (default) or PUT.
    #[serde(default)]
    pub method: HookMethod,
    /// Extra request headers (values are redacted in history excerpts and the admin API).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout, connect included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Which events go to this hook. Omitted or `"*"`: all.
    #[serde(default)]
    pub events: EventFilter,
    /// Body format.
    #[serde(default)]
    pub format: HookFormat,
    /// For `format = "template"`: a minijinja template over the event (see README).
    #[serde(default)]
    pub template: Option<String>,
    /// Content-Type of the body; defaults per format (`application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Most requests in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: NonZeroU32,
    /// Most requests started per interval, e.g. `"5/s"`, `"30/m"`, `"100/h"`. None: unlimited.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Requests allowed at once above `rate` after an idle period (default 1).
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
    /// `"none"`, `"exponential:N"`, `"linear:N"`, or a schedule such as `["5s", "5m", "30m"]`.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// First delay of `exponential:N` (doubling), and the interval of `linear:N`.
    #[serde(default = "default_retry_base", with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest delay between attempts.
    #[serde(default = "default_retry_cap", with = "humantime_serde")]
    pub retry_cap: Duration,
    /// Request signing; none by default.
    #[serde(default)]
    pub signing: Option<Signing>,
    /// After this many consecutive failed attempts the hook is disabled (its deliveries stay
    /// pending until it is enabled again). 0 never disables.
    #[serde(default = "default_disable_after")]
    pub disable_after: u32,
    /// Start disabled with `enabled = false`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Coalesce events into one message per burst: wait until no matching event arrived for
    /// this long (e.g. `"15s"`; `[debounce]` per-source and per-kind overrides apply on
    /// top, and `[debounce] max_wait` caps the wait). Unset: one message per event, at once.
    #[serde(default, with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// What a debounced hook coalesces by: `download_id` (default: one message per grab,
    /// such as a season pack), `folder`, or `series`.
    #[serde(default)]
    pub debounce_key: crate::debounce::DebounceKey,
}

// By hand: the URL may hold a token and header values are credentials, and configs end up
// in logs (the signing secret is a `Secret`, which masks itself).
impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), crate::redact::REDACTED))
            .collect();
        f.debug_struct("HookConfig")
            .field("name", &self.name)
            .field("url", &mask_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("template", &self.template)
            .field("content_type", &self.content_type)
            .field("max_in_flight", &self.max_in_flight)
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("retry", &self.retry)
            .field("retry_base", &self.retry_base)
            .field("retry_cap", &self.retry_cap)
            .field("signing", &self.signing)
            .field("disable_after", &self.disable_after)
            .field("enabled", &self.enabled)
            .field("debounce", &self.debounce)
            .field("debounce_key", &self.debounce_key)
            .finish()
    }
}

impl HookConfig {
    /// The config as the admin API shows it: header values and the signing secret are
    /// redacted, and the URL keeps only its scheme, host, port and first path segment
    /// (Discord and Slack put their token in the path).
    pub fn masked(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(h) = v.get_mut("headers").and_then(|h| h.as_object_mut()) {
            for value in h.values_mut() {
                *value = crate::redact::REDACTED.into();
            }
        }
        if let Some(url) = v.get_mut("url") {
            *url = mask_url(&self.url).into();
        }
        v
    }
}

/// The HTTP method a hook sends with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HookMethod {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT`.
    Put,
}

/// The body a hook sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// `{"id", "event", "timestamp", "source", "instance_id", "data"}`.
    #[default]
    Relayarr,
    /// The sender's original body, unchanged.
    Raw,
    /// A Discord webhook message with an embed.
    Discord,
    /// A Slack incoming-webhook message.
    Slack,
    /// `template`, rendered with minijinja.
    Template,
}

/// How requests are signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Signing {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
    /// (HMAC-SHA256 of `id.timestamp.body`). The secret is `whsec_` + base64.
    Standard {
        /// `whsec_` followed by the base64 key.
        secret: Secret,
    },
    /// `X-Relayarr-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    Hmac {
        /// The HMAC key, as written.
        secret: Secret,
    },
}

/// `[outbound]`: where hooks may send, and how deliveries give way to ingest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Cloud-metadata and link-local addresses are always blocked. `strict = true` also blocks
    /// private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) and loopback; the default allows
    /// them, because a home lab's hooks usually live on the LAN.
    pub strict: bool,
    /// Deliveries yield to ingest: while more than 1% of ingest answers take longer than
    /// this (from a request's arrival to its commit) and ingest is queueing, attempts over
    /// all targets are limited until ingest is fast again. `0s` turns it off. Unset:
    /// [`YIELD_TO_INGEST_SQLITE`] with the embedded SQLite store, off with PostgreSQL.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub yield_to_ingest: Option<Duration>,
}

/// `yield_to_ingest` when it is unset and the store is the embedded SQLite. There, ingest and
/// deliveries share the machine's CPUs and one writer, and deliveries can starve ingest.
/// With PostgreSQL, ingest waits mostly on the database's commits, which holding deliveries
/// back does not make faster, so the gate is off unless it is set.
pub const YIELD_TO_INGEST_SQLITE: Duration = Duration::from_millis(10);

impl OutboundConfig {
    /// The ingest latency target of the yield gate for this store; zero when it is off.
    pub fn yield_target(&self, postgres: bool) -> Duration {
        self.yield_to_ingest.unwrap_or(if postgres {
            Duration::ZERO
        } else {
            YIELD_TO_INGEST_SQLITE
        })
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_in_flight() -> NonZeroU32 {
    NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_cap() -> Duration {
    Duration::from_secs(3600)
}
fn default_disable_after() -> u32 {
    20
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_config_masked_hides_tokens_headers_and_secrets() {
        let cfg: HookConfig = toml::from_str(
            r#"
name = "discord"
url = "https://discord.com/api/webhooks/123/SECRETTOKEN?wait=true"
headers = { "X-Api-Key" = "abc" }
signing = { hmac = { secret = "s3cr3t-value" } }
"#,
        )
        .expect("hook config");
        let text = format!("{} {cfg:?}", cfg.masked());
        for secret in ["SECRETTOKEN", "abc", "s3cr3t-value", "123", "wait"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("https://discord.com/api/…"), "{text}");
        assert_eq!(
            mask_url("http://10.0.0.2:8080/hook"),
            "http://10.0.0.2:8080/hook"
        );
    }
}

//! One HTTP attempt of one delivery: render the body, sign it, send it (no redirects, the
//! hook's timeout, resolved addresses checked), and capture what history needs. Shared by
//! the hook actor and `relayarr test-hook`.

use std::time::{Duration, Instant};

use super::config::{HookConfig, HookFormat, HookMethod, OutboundConfig, Signing};
use super::filter::CompiledFilter;
use super::format::{compile_template, render, CompiledTemplate, EventEnvelope};
use super::net::check_url;
use super::retry::parse_retry_after;
use super::signing::{sign_headers, RELAYARR_SIGNATURE, WEBHOOK_SIGNATURE};
use crate::redact::{mask_url, url_secrets, Redactor};

/// Bytes of request and response bodies kept in history.
pub const EXCERPT_BYTES: usize = 1024;

/// Headers whose values describe the request and never carry a credential; every other
/// configured header's value is treated as a secret.
const PLAIN_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-language",
    "content-type",
    "user-agent",
];

/// A hook's config, validated and with its filter and template compiled once. `Debug` masks
/// the URL and shows no secret.
pub struct CompiledHook {
    /// The hook's config as given.
    pub cfg: HookConfig,
    /// The parsed URL, checked against the egress policy.
    pub url: reqwest::Url,
    /// The compiled event filter.
    pub filter: CompiledFilter,
    /// The compiled template, for `format = "template"`.
    pub template: Option<CompiledTemplate>,
    /// Secret values (header values, signing secret, URL tokens) never written to history.
    redactor: Redactor,
}

impl std::fmt::Debug for CompiledHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledHook")
            .field("cfg", &self.cfg)
            .field("url", &mask_url(self.url.as_str()))
            .field("template", &self.template.is_some())
            .field("redactor", &self.redactor)
            .finish_non_exhaustive()
    }
}

/// Why a hook's config is unusable; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum HookConfigError {
    /// A key holds a value the hook cannot work with.
    #[error("hook `{hook}`: `{key}`: {problem}")]
    Invalid {
        /// The hook's name.
        hook: String,
        /// The offending key (`url`, `events`, `template`, `headers`, `signing`).
        key: &'static str,
        /// What is wrong with it, and how to fix it.
        problem: String,
    },
}

impl CompiledHook {
    /// Validates a hook's config (URL and egress policy, filter, template, headers, signing)
    /// and compiles what it sends with.
    pub fn compile(cfg: HookConfig, outbound: &OutboundConfig) -> Result<Self, HookConfigError> {
        let invalid = |key: &'static str, problem: String| HookConfigError::Invalid {
            hook: cfg.name.clone(),
            key,
            problem,
        };
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| invalid("url", format!("the value is not a URL ({e})")))?;
        check_url(&url, outbound.strict).map_err(|e| invalid("url", e.to_string()))?;
        let filter = cfg
            .events
            .compile()
            .map_err(|e| invalid("events", e.to_string()))?;
        let template = match (cfg.format, cfg.template.as_deref()) {
            (HookFormat::Template, Some(src)) => {
                Some(compile_template(src).map_err(|e| invalid("template", e.to_string()))?)
            }
            (HookFormat::Template, None) => {
                return Err(invalid(
                    "template",
                    "format = \"template\" needs a `template`".into(),
                ))
            }
            _ => None,
        };
        for (name, value) in &cfg.headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("headers", format!("`{name}` is not a header name")))?;
            http::HeaderValue::from_str(value)
                .map_err(|_| invalid("headers", format!("the value of `{name}` is not valid")))?;
        }
        if let Some(Signing::Standard { secret }) = &cfg.signing {
            super::signing::standard_signature(secret.expose(), "msg_check", 0, b"")
                .map_err(|e| invalid("signing", e.to_string()))?;
        }
        let redactor = Redactor::new(hook_secrets(&cfg, &url));
        Ok(CompiledHook {
            cfg,
            url,
            filter,
            template,
            redactor,
        })
    }

    /// Replaces every secret in `text` with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }
}

/// Every value of a hook's config that must never reach history: the values of its headers
/// (all but [`PLAIN_HEADERS`], whatever their length, and for `Authorization` also the
/// credentials after the scheme), the signing secret (also without `whsec_`), and the
/// token-like parts of its URL.
fn hook_secrets(cfg: &HookConfig, url: &reqwest::Url) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in &cfg.headers {
        let lower = name.to_ascii_lowercase();
        if PLAIN_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        let value = value.trim();
        out.push(value.to_owned());
        if lower.ends_with("authorization") {
            if let Some((scheme, credentials)) = value.split_once(' ') {
                let credentials = credentials.trim();
                out.push(credentials.to_owned());
                if scheme.eq_ignore_ascii_case("basic") {
                    let decoded = base64::Engine::decode(
                        &base64::engine::general_purpose::STANDARD,
                        credentials,
                    );
                    if let Ok(plain) = decoded.map(String::from_utf8) {
                        let plain = plain.unwrap_or_default();
                        if let Some((_, password)) = plain.split_once(':') {
                            out.push(password.to_owned());
                        }
                        out.push(plain);
                    }
                }
            }
        }
    }
    if let Some(Signing::Standard { secret } | Signing::Hmac { secret }) = &cfg.signing {
        let secret = secret.expose();
        out.push(secret.to_owned());
        if let Some(bare) = secret.trim().strip_prefix("whsec_") {
            out.push(bare.to_owned());
        }
    }
    out.extend(url_secrets(url));
    out.retain(|s| !s.is_empty());
    out
}

/// The values of signature headers, whole and without their `v1,` or `sha256=` prefix: a
/// receiver that echoes its request must not put them in history either.
fn signature_values(headers: &[(&'static str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if *name == WEBHOOK_SIGNATURE || *name == RELAYARR_SIGNATURE {
            out.push(value.clone());
            if let Some((_, sig)) = value.split_once([',', '=']) {
                out.push(sig.to_owned());
            }
        }
    }
    out
}

/// What one attempt produced.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    /// HTTP status, or None for a transport error or timeout.
    pub status: Option<u16>,
    /// What went wrong: a transport error or timeout, or a failure reading the response body
    /// (secrets redacted).
    pub error: Option<String>,
    /// When the request started, unix milliseconds.
    pub started_at_ms: i64,
    /// From the start of the attempt to the end of reading the response excerpt.
    pub latency: Duration,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The start of the request body, secrets redacted (at most `EXCERPT_BYTES`).
    pub request_excerpt: String,
    /// The start of the response body, secrets redacted (at most `EXCERPT_BYTES`).
    pub response_excerpt: String,
}

/// Renders, signs and sends one request.
pub async fn send_once(
    hook: &CompiledHook,
    client: &reqwest::Client,
    envelope: &EventEnvelope<'_>,
    raw: Option<&[u8]>,
    webhook_id: &str,
) -> AttemptResult {
    let started_at_ms = crate::store::now_ms();
    let started = Instant::now();
    let fail = |error: String, request_excerpt: String| AttemptResult {
        status: None,
        error: Some(hook.redact(&error)),
        started_at_ms,
        latency: started.elapsed(),
        retry_after: None,
        request_excerpt,
        response_excerpt: String::new(),
    };
    let rendered = match render(
        hook.cfg.format,
        hook.template.as_ref(),
        envelope,
        raw,
        hook.cfg.content_type.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot render the body: {e}"), String::new()),
    };
    let timestamp = started_at_ms / 1000;
    let signed = match &hook.cfg.signing {
        Some(signing) => match sign_headers(signing, webhook_id, timestamp, &rendered.body) {
            Ok(headers) => Some(headers),
            Err(e) => {
                let request_excerpt = excerpt(&hook.redactor, &rendered.body, true);
                return fail(format!("cannot sign: {e}"), request_excerpt);
            }
        },
        None => None,
    };
    // Redacted before it is cut, so a cut never keeps the start of a secret; the signature
    // of this very request is a secret too.
    let mut redactor = hook.redactor.clone();
    if let Some(headers) = &signed {
        redactor.extend(signature_values(headers));
    }
    let request_excerpt = excerpt(&redactor, &rendered.body, true);
    let mut req = match hook.cfg.method {
        HookMethod::Post => client.post(hook.url.clone()),
        HookMethod::Put => client.put(hook.url.clone()),
    }
    .timeout(hook.cfg.timeout)
    .header(http::header::CONTENT_TYPE, rendered.content_type.as_str());
    for (k, v) in &hook.cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match signed {
        Some(headers) => {
            for (k, v) in headers {
                req = req.header(k, v);
            }
        }
        None => {
            // Receivers can still deduplicate retries without signing.
            req = req
                .header("webhook-id", webhook_id)
                .header("webhook-timestamp", timestamp.to_string());
        }
    }
    let resp = match req.body(rendered.body).send().await {
        Ok(r) => r,
        Err(e) => return fail(describe(&e), request_excerpt),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let (response_excerpt, body_error) = read_excerpt(resp, &redactor).await;
    AttemptResult {
        status: Some(status),
        error: body_error,
        started_at_ms,
        latency: started.elapsed(),
        retry_after,
        request_excerpt,
        response_excerpt,
    }
}

/// A transport error in words (the full chain: "connection refused", "timed out", …).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Reads the start of the response, enough to redact its first `EXCERPT_BYTES` (a secret
/// starting there may run on for `redactor.lookahead()` bytes), then drops the response.
/// Dropping it unfinished makes hyper close the connection rather than drain it, so a 100 MB
/// answer is never read to its end, and a connection with unread body never goes back to the
/// pool. The hook's timeout bounds the body too (reqwest's request timeout runs until the body
/// is done), so a body trickling one byte at a time is cut at the deadline of the whole attempt.
///
/// A body that breaks off early (reset, timeout) leaves the status as it is, the receiver
/// has answered, and returns a note for the attempt's `error`.
async fn read_excerpt(
    mut resp: reqwest::Response,
    redactor: &Redactor,
) -> (String, Option<String>) {
    let limit = EXCERPT_BYTES + redactor.lookahead();
    let mut buf = Vec::with_capacity(limit.min(64 * 1024));
    let mut complete = false;
    while buf.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => {
                complete = true;
                break;
            }
            Err(e) => {
                let cause = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    root_cause(&e)
                };
                let note = format!("response body cut short after {} bytes: {cause}", buf.len());
                return (excerpt(redactor, &buf, false), Some(redactor.redact(&note)));
            }
        }
    }
    (excerpt(redactor, &buf, complete), None)
}

/// The innermost error of a chain ("Connection reset by peer (os error 104)"), without the
/// wrappers that name reqwest's and hyper's layers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// The first `EXCERPT_BYTES` of `bytes` as text, with every secret redacted *before* the
/// cut (at a character boundary), so no part of a secret is kept. `complete` says whether
/// `bytes` is the whole body or only its start.
pub fn excerpt(redactor: &Redactor, bytes: &[u8], complete: bool) -> String {
    let mut end = bytes.len();
    let text = loop {
        match std::str::from_utf8(&bytes[..end]) {
            Ok(t) => break std::borrow::Cow::Borrowed(t),
            Err(e) if e.error_len().is_none() && end > 0 => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&bytes[..end]),
        }
    };
    redactor.excerpt(&text, complete, EXCERPT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(extra: &str) -> CompiledHook {
        let cfg: HookConfig = toml::from_str(&format!(
            "name = \"h\"\nurl = \"https://discord.com/api/webhooks/123/AbCdEfGhIjKlMnOpQrStUv?wait=true\"\n{extra}"
        ))
        .expect("hook config");
        CompiledHook::compile(cfg, &OutboundConfig::default()).expect("compiles")
    }

    const SECRETS: &str = r#"
headers = { "X-Key" = "k1", "Authorization" = "Bearer tok-123", "Content-Type" = "application/json" }
signing = { hmac = { secret = "s3cr\"et/\\x" } }
"#;

    #[test]
    fn excerpt_cuts_at_char_boundary_and_limit() {
        let none = Redactor::default();
        let s = "é".repeat(600); // 1200 bytes
        let e = excerpt(&none, s.as_bytes(), true);
        assert!(e.len() <= EXCERPT_BYTES);
        assert!(e.chars().all(|c| c == 'é'));
        assert_eq!(excerpt(&none, b"short", true), "short");
    }

    #[test]
    fn delivery_redacts_every_header_value_signing_secret_and_url_token() {
        let h = hook(SECRETS);
        let text =
            r#"k1 Bearer tok-123 tok-123 s3cr"et/\x AbCdEfGhIjKlMnOpQrStUv application/json"#;
        let out = h.redact(text);
        for leaked in ["k1", "tok-123", "s3cr", "AbCdEf"] {
            assert!(!out.contains(leaked), "{leaked} left in {out}");
        }
        // Values of headers that never carry credentials are kept, so excerpts stay readable.
        assert!(out.contains("application/json"), "{out}");
    }

    #[test]
    fn delivery_redacts_json_escaped_secrets() {
        let h = hook(SECRETS);
        let secret = "s3cr\"et/\\x";
        let body = serde_json::to_vec(&serde_json::json!({ "echo": secret })).expect("json");
        let out = excerpt(&h.redactor, &body, true);
        assert_eq!(out, r#"{"echo":"<redacted>"}"#);
        let escaped = br#"{"echo":"s3cr\u0022et\/\u005cx"}"#;
        assert_eq!(
            excerpt(&h.redactor, escaped, true),
            r#"{"echo":"<redacted>"}"#
        );
    }

    #[test]
    fn delivery_redacts_before_cutting_so_no_prefix_survives() {
        let h = hook(SECRETS);
        for at in EXCERPT_BYTES - 12..EXCERPT_BYTES {
            let body = format!("{}tok-123 and more", "x".repeat(at));
            let out = excerpt(&h.redactor, body.as_bytes(), true);
            assert!(out.len() <= EXCERPT_BYTES);
            assert!(
                !out.contains("tok"),
                "prefix kept when the secret starts at {at}"
            );
        }
    }

    #[tokio::test]
    async fn delivery_response_excerpt_is_redacted_even_past_the_read_limit() {
        let h = hook(SECRETS);
        let respond = |body: String| reqwest::Response::from(http::Response::new(body));
        let echoed = format!(
            "you sent Bearer tok-123 and k1 and {}",
            "s3cr\\\"et\\/\\\\x"
        );
        let (out, _) = read_excerpt(respond(echoed), &h.redactor).await;
        for leaked in ["tok-123", "k1", "s3cr"] {
            assert!(!out.contains(leaked), "{leaked} left in {out}");
        }
        // A secret straddling the cut, in a body longer than is read.
        let long = format!(
            "{}tok-123{}",
            "x".repeat(EXCERPT_BYTES - 3),
            "y".repeat(10_000)
        );
        let (out, _) = read_excerpt(respond(long), &h.redactor).await;
        assert!(!out.contains("tok"), "{out}");
        assert!(out.len() <= EXCERPT_BYTES);
    }

    #[test]
    fn delivery_signature_values_are_secrets() {
        let headers = vec![
            ("webhook-id", "msg_1".to_owned()),
            (WEBHOOK_SIGNATURE, "v1,AAAA".to_owned()),
            (RELAYARR_SIGNATURE, "sha256=abcd".to_owned()),
        ];
        let v = signature_values(&headers);
        for want in ["v1,AAAA", "AAAA", "sha256=abcd", "abcd"] {
            assert!(v.iter().any(|x| x == want), "{want} missing from {v:?}");
        }
        assert!(!v.iter().any(|x| x == "msg_1"));
    }

    #[test]
    fn compiled_hook_debug_masks_secrets() {
        let h = hook(SECRETS);
        let dbg = format!("{h:?}");
        for leaked in ["k1", "tok-123", "s3cr", "AbCdEf", "wait"] {
            assert!(!dbg.contains(leaked), "{leaked} in {dbg}");
        }
        assert!(dbg.contains("https://discord.com/api/…"), "{dbg}");
    }
}

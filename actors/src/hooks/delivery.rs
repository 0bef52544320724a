//! One HTTP attempt of one delivery: render the body, sign it, send it (no redirects, the
//! hook's timeout, resolved addresses checked), and capture what history needs. Shared by
//! the hook actor and `relayarr test-hook`.

use std::time::{Duration, Instant};

use super::config::{HookConfig, HookFormat, HookMethod, OutboundConfig, Signing};
use super::filter::CompiledFilter;
use super::format::{compile_template, render, CompiledTemplate, EventEnvelope};
use super::net::check_url;
use super::retry::parse_retry_after;
use super::signing::sign_headers;

/// Bytes of request and response bodies kept in history.
pub const EXCERPT_BYTES: usize = 1024;

/// A hook's config, validated and with its filter and template compiled once.
#[derive(Debug)]
pub struct CompiledHook {
    pub cfg: HookConfig,
    pub url: reqwest::Url,
    pub filter: CompiledFilter,
    pub template: Option<CompiledTemplate>,
    /// Secret values (header values, signing secret) never written to history.
    secrets: Vec<String>,
}

/// Why a hook's config is unusable; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum HookConfigError {
    #[error("hook `{hook}`: `{key}`: {problem}")]
    Invalid {
        hook: String,
        key: &'static str,
        problem: String,
    },
}

impl CompiledHook {
    pub fn compile(cfg: HookConfig, outbound: &OutboundConfig) -> Result<Self, HookConfigError> {
        let invalid = |key: &'static str, problem: String| HookConfigError::Invalid {
            hook: cfg.name.clone(),
            key,
            problem,
        };
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| invalid("url", format!("`{}` is not a URL ({e})", cfg.url)))?;
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
        let mut secrets: Vec<String> = cfg
            .headers
            .values()
            .filter(|v| v.len() >= 6)
            .cloned()
            .collect();
        match &cfg.signing {
            Some(Signing::Standard { secret }) | Some(Signing::Hmac { secret }) => {
                secrets.push(secret.expose().to_owned())
            }
            None => {}
        }
        Ok(CompiledHook {
            cfg,
            url,
            filter,
            template,
            secrets,
        })
    }

    /// Replaces every secret in `text` with `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }
}

/// What one attempt produced.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    /// HTTP status, or None for a transport error or timeout.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub started_at_ms: i64,
    pub latency: Duration,
    pub retry_after: Option<Duration>,
    pub request_excerpt: String,
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
        error: Some(error),
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
    let request_excerpt = hook.redact(&excerpt(&rendered.body));
    let timestamp = started_at_ms / 1000;
    let mut req = match hook.cfg.method {
        HookMethod::Post => client.post(hook.url.clone()),
        HookMethod::Put => client.put(hook.url.clone()),
    }
    .timeout(hook.cfg.timeout)
    .header(http::header::CONTENT_TYPE, rendered.content_type.as_str());
    for (k, v) in &hook.cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match &hook.cfg.signing {
        Some(signing) => match sign_headers(signing, webhook_id, timestamp, &rendered.body) {
            Ok(headers) => {
                for (k, v) in headers {
                    req = req.header(k, v);
                }
            }
            Err(e) => return fail(format!("cannot sign: {e}"), request_excerpt),
        },
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
    let (response_excerpt, body_error) = read_excerpt(resp).await;
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

/// Reads at most `EXCERPT_BYTES` of the response body, then drops the response. Dropping
/// it unfinished makes hyper close the connection rather than drain it, so a 100 MB answer
/// is never read to its end, and a connection with unread body never goes back to the pool.
/// The hook's timeout bounds the body too (reqwest's request timeout runs until the body is
/// done), so a body trickling one byte at a time is cut at the deadline of the whole attempt.
///
/// A body that breaks off before the excerpt is full (reset, timeout) leaves the status as
/// it is, the receiver has answered, and returns a note for the attempt's `error`.
async fn read_excerpt(mut resp: reqwest::Response) -> (String, Option<String>) {
    let mut buf = Vec::with_capacity(EXCERPT_BYTES);
    while buf.len() < EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(EXCERPT_BYTES - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(e) => {
                let cause = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    root_cause(&e)
                };
                let note = format!("response body cut short after {} bytes: {cause}", buf.len());
                return (excerpt(&buf), Some(note));
            }
        }
    }
    (excerpt(&buf), None)
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

/// The first `EXCERPT_BYTES` bytes as text, cut at a character boundary.
pub fn excerpt(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(EXCERPT_BYTES);
    let text = loop {
        match std::str::from_utf8(&bytes[..end]) {
            Ok(t) => break t.to_owned(),
            Err(e) if e.error_len().is_none() && end > 0 => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&bytes[..end]).into_owned(),
        }
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_at_char_boundary_and_limit() {
        let s = "é".repeat(600); // 1200 bytes
        let e = excerpt(s.as_bytes());
        assert!(e.len() <= EXCERPT_BYTES);
        assert!(e.chars().all(|c| c == 'é'));
        assert_eq!(excerpt(b"short"), "short");
    }
}

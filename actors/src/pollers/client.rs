//! The HTTP side of a poller: `GET {url}/api/v3/history/since` with the `X-Api-Key` header.
//! The key never goes into a URL, and errors name the base URL only.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde_json::Value;

use super::config::{ArrConfig, ArrKind};
use super::cursor::format_date;
use super::PollError;

/// A client for one app's history API.
#[derive(Clone, Debug)]
pub struct ArrClient {
    http: reqwest::Client,
    kind: ArrKind,
    /// The base URL, without a trailing `/`. Safe to log: validation refuses a query.
    base: Url,
}

impl ArrClient {
    /// A client for one app; refuses a URL that is not plain http(s) or carries a query, and a
    /// missing key.
    pub fn new(cfg: &ArrConfig) -> Result<Self, PollError> {
        let invalid = |problem: String| PollError::Invalid {
            poller: cfg.name.clone(),
            problem,
        };
        let base = check_url(&cfg.url).map_err(invalid)?;
        let key = cfg
            .api_key
            .as_ref()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("api_key is missing".into()))?;
        let mut value = HeaderValue::from_str(key)
            .map_err(|_| invalid("api_key has characters not allowed in a header".into()))?;
        // Keeps hyper/reqwest from printing it in debug output.
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(ArrClient {
            http,
            kind: cfg.kind,
            base,
        })
    }

    /// The base URL, for logs and errors.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The `history/since` URL for records dated at or after `from_s` (unix seconds).
    pub fn since_url(&self, from_s: i64) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/api/v3/history/since", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("date", &format_date(from_s));
            match self.kind {
                ArrKind::Sonarr => {
                    q.append_pair("includeSeries", "true");
                    q.append_pair("includeEpisode", "true");
                }
                ArrKind::Radarr => {
                    q.append_pair("includeMovie", "true");
                }
            }
        }
        url
    }

    /// Every record dated at or after `from_s`, oldest first (the app's order).
    pub async fn history_since(&self, from_s: i64) -> Result<Vec<Value>, PollError> {
        let url = self.since_url(from_s);
        let (kind, base) = (self.kind, self.base().to_owned());
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| PollError::Connect {
                kind,
                url: base.clone(),
                reason: e.without_url().to_string(),
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(PollError::Unauthorized { kind, url: base });
        }
        if !status.is_success() {
            return Err(PollError::Status {
                kind,
                url: base,
                status: status.as_u16(),
            });
        }
        let body = resp.bytes().await.map_err(|e| PollError::Connect {
            kind,
            url: base.clone(),
            reason: e.without_url().to_string(),
        })?;
        serde_json::from_slice::<Vec<Value>>(&body).map_err(|e| PollError::Decode {
            kind,
            url: base,
            reason: e.to_string(),
        })
    }
}

/// An *arr base URL: http(s), a host, no query or fragment (a key there would be logged).
pub fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("is not a valid URL ({e})"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err("must start with http:// or https://".into());
    }
    if parsed.host_str().is_none() {
        return Err("has no host".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment; put the key in api_key".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::auth::Secret;

    fn cfg(kind: ArrKind, url: &str) -> ArrConfig {
        ArrConfig {
            name: "s".into(),
            kind,
            url: url.into(),
            api_key: Some(Secret::new("k3y")),
            source: "sonarr".into(),
            every: Duration::from_secs(300),
            overlap: Duration::from_secs(3600),
            settle: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn client_since_url_has_the_date_in_utc_and_no_key() {
        let c = ArrClient::new(&cfg(ArrKind::Sonarr, "http://sonarr:8989/base/")).expect("client");
        let url = c.since_url(1_741_630_961).to_string();
        assert_eq!(
            url,
            "http://sonarr:8989/base/api/v3/history/since?date=2025-03-10T18%3A22%3A41Z&includeSeries=true&includeEpisode=true"
        );
        assert!(!url.contains("k3y"));
        assert_eq!(c.base(), "http://sonarr:8989/base");
        let r = ArrClient::new(&cfg(ArrKind::Radarr, "http://radarr:7878")).expect("client");
        assert!(r
            .since_url(0)
            .to_string()
            .ends_with("/api/v3/history/since?date=1970-01-01T00%3A00%3A00Z&includeMovie=true"));
    }

    #[test]
    fn client_refuses_urls_that_would_leak_the_key() {
        assert!(check_url("http://sonarr:8989/?apikey=x")
            .expect_err("query")
            .contains("api_key"));
        assert!(check_url("ftp://sonarr").is_err());
        assert!(check_url("sonarr:8989").is_err());
        let mut c = cfg(ArrKind::Sonarr, "http://sonarr:8989");
        c.api_key = None;
        assert!(ArrClient::new(&c).is_err());
    }
}

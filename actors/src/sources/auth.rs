//! Inbound authentication: one scheme per source, checked as a pure function over the
//! request's headers, query and body. Every secret comparison is constant-time.
//!
//! Credentials in the headers or the query are checked before the body is read
//! ([`authenticate_head`]); only HMAC needs the body.
//!
//! Plex cannot send headers and Sonarr only gained custom headers in v4.0.10.2656, so Basic
//! and `?token=` matter as much as header secrets and HMAC.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// A secret string: never printed by `Debug`, never serialised back out in full.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from config or the environment.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: only for comparing, signing or sending, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// How a source proves who it is (`auth = …` on a `[[source]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication. Must be written explicitly as `auth = "none"`.
    None,
    /// HTTP Basic, as Sonarr/Radarr send from their Username/Password fields.
    Basic {
        /// Omit to accept any username (Aura's convention: only the password is checked).
        #[serde(default)]
        username: Option<String>,
        /// Compared in constant time.
        password: Secret,
    },
    /// A fixed header, e.g. `X-Api-Key` (Sonarr ≥ v4.0.10, Radarr ≥ v5.16, Tautulli, Jellyfin).
    Header {
        /// The header's name (case-insensitive).
        name: String,
        /// The value it must carry, compared in constant time.
        value: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `?token=<token>` in the URL: the only option for Plex.
    Token(Secret),
    /// HMAC-SHA256 of the raw body, hex-encoded in `header`, optionally after `prefix`.
    Hmac {
        /// The header carrying the hex digest.
        header: String,
        /// The HMAC key.
        secret: Secret,
        /// Text before the hex digest (e.g. `sha256=`), if the sender adds one.
        #[serde(default)]
        prefix: Option<String>,
    },
}

impl AuthConfig {
    /// The `WWW-Authenticate` challenge sent with a 401.
    pub fn challenge(&self) -> String {
        match self {
            AuthConfig::None => "None".into(),
            AuthConfig::Basic { .. } => r#"Basic realm="relayarr", charset="UTF-8""#.into(),
            AuthConfig::Bearer(_) => r#"Bearer realm="relayarr""#.into(),
            AuthConfig::Token(_) => r#"Token realm="relayarr", param="token""#.into(),
            AuthConfig::Header { name, .. } => {
                format!(r#"ApiKey realm="relayarr", header="{name}""#)
            }
            AuthConfig::Hmac { header, .. } => {
                format!(r#"HMAC realm="relayarr", header="{header}""#)
            }
        }
    }

    /// Short scheme name for logs and the admin API.
    pub fn scheme(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::Header { .. } => "header",
            AuthConfig::Bearer(_) => "bearer",
            AuthConfig::Token(_) => "token",
            AuthConfig::Hmac { .. } => "hmac",
        }
    }
}

/// Why a request's credential was refused. Never carries the secret or what was sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential where the scheme expects one (where it was expected).
    #[error("missing credentials: expected {0}")]
    Missing(String),
    /// A credential was sent but does not match (which check failed).
    #[error("invalid credentials ({0})")]
    Invalid(&'static str),
}

/// Compares two secrets in constant time, including when their lengths differ (both sides
/// are hashed first, so the length of the expected secret does not leak either).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.as_slice().ct_eq(hb.as_slice()).into()
}

/// Sonarr's .NET client encodes Basic credentials as ISO-8859-1: characters above U+00FF
/// become `?`. Encode the configured secret the same way so non-ASCII passwords match.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Proof that the credential in a request's headers or query was checked and is right:
/// only [`authenticate_head`] makes one. The ingress checks these credentials before it reads
/// the body, and passes the proof on, so the body of a request with a wrong credential is
/// never read and the check is not repeated.
#[derive(Debug)]
pub struct HeadVerified(());

/// What the headers and query alone settle.
#[derive(Debug)]
pub enum HeadAuth {
    /// The credential is right: the body need not be looked at for authentication.
    Verified(HeadVerified),
    /// The scheme signs the body (HMAC): the signature header is present and well-formed,
    /// and [`authenticate`] must check it against the body.
    NeedsBody,
}

/// Checks everything that does not need the body: the whole credential for Basic, header,
/// bearer and `?token=`; for HMAC, that the signature header is present and well-formed.
pub fn authenticate_head(
    auth: &AuthConfig,
    headers: &http::HeaderMap,
    query_token: Option<&str>,
) -> Result<HeadAuth, AuthError> {
    let ok = || Ok(HeadAuth::Verified(HeadVerified(())));
    match auth {
        AuthConfig::None => ok(),
        AuthConfig::Basic { username, password } => {
            let value = header_str(headers, "authorization")
                .ok_or_else(|| AuthError::Missing("Authorization: Basic".into()))?;
            let b64 = strip_scheme(value, "basic")
                .ok_or_else(|| AuthError::Missing("Authorization: Basic".into()))?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| AuthError::Invalid("malformed Basic credentials"))?;
            let colon = decoded
                .iter()
                .position(|&b| b == b':')
                .ok_or(AuthError::Invalid("malformed Basic credentials"))?;
            let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
            // Evaluate both comparisons before deciding, so timing does not reveal which failed.
            let user_ok = username
                .as_deref()
                .map(|u| ct_eq(user, &latin1(u)) || ct_eq(user, u.as_bytes()))
                .unwrap_or(true);
            let pass_ok =
                ct_eq(pass, &latin1(password.expose())) | ct_eq(pass, password.expose().as_bytes());
            if user_ok & pass_ok {
                ok()
            } else {
                Err(AuthError::Invalid("wrong username or password"))
            }
        }
        AuthConfig::Header { name, value } => {
            let got = headers
                .get(name.as_str())
                .ok_or_else(|| AuthError::Missing(format!("header {name}")))?;
            if ct_eq(got.as_bytes(), value.expose().as_bytes()) {
                ok()
            } else {
                Err(AuthError::Invalid("wrong header secret"))
            }
        }
        AuthConfig::Bearer(token) => {
            let value = header_str(headers, "authorization")
                .ok_or_else(|| AuthError::Missing("Authorization: Bearer".into()))?;
            let got = strip_scheme(value, "bearer")
                .ok_or_else(|| AuthError::Missing("Authorization: Bearer".into()))?;
            if ct_eq(got.trim().as_bytes(), token.expose().as_bytes()) {
                ok()
            } else {
                Err(AuthError::Invalid("wrong bearer token"))
            }
        }
        AuthConfig::Token(token) => {
            let got = query_token.ok_or_else(|| AuthError::Missing("?token= in the URL".into()))?;
            if ct_eq(got.as_bytes(), token.expose().as_bytes()) {
                ok()
            } else {
                Err(AuthError::Invalid("wrong token"))
            }
        }
        AuthConfig::Hmac { header, prefix, .. } => {
            hmac_signature(headers, header, prefix.as_deref())?;
            Ok(HeadAuth::NeedsBody)
        }
    }
}

/// Checks one request against the source's auth scheme, body included.
pub fn authenticate(
    auth: &AuthConfig,
    headers: &http::HeaderMap,
    query_token: Option<&str>,
    body: &[u8],
) -> Result<(), AuthError> {
    match (authenticate_head(auth, headers, query_token)?, auth) {
        (HeadAuth::Verified(_), _) => Ok(()),
        (
            HeadAuth::NeedsBody,
            AuthConfig::Hmac {
                header,
                secret,
                prefix,
            },
        ) => {
            let sig = hmac_signature(headers, header, prefix.as_deref())?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|_| AuthError::Invalid("unusable HMAC key"))?;
            mac.update(body);
            mac.verify_slice(&sig)
                .map_err(|_| AuthError::Invalid("signature does not match the body"))
        }
        (HeadAuth::NeedsBody, _) => Err(AuthError::Invalid("no body check for this scheme")),
    }
}

/// The signature bytes of an HMAC-signed request: the header, after `prefix`, hex-decoded.
fn hmac_signature(
    headers: &http::HeaderMap,
    header: &str,
    prefix: Option<&str>,
) -> Result<Vec<u8>, AuthError> {
    let got = header_str(headers, header)
        .ok_or_else(|| AuthError::Missing(format!("header {header}")))?;
    let hex_sig = match prefix {
        Some(p) => got
            .strip_prefix(p)
            .ok_or(AuthError::Invalid("signature lacks the configured prefix"))?,
        None => got,
    };
    hex::decode(hex_sig.trim()).map_err(|_| AuthError::Invalid("signature is not hex"))
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Strips an auth scheme (case-insensitive, as RFC 9110 says) and the following space.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim_start().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn basic(user: Option<&str>, pass: &str) -> AuthConfig {
        AuthConfig::Basic {
            username: user.map(str::to_owned),
            password: Secret::new(pass),
        }
    }

    #[test]
    fn auth_basic_accepts_right_and_rejects_wrong() {
        let cfg = basic(Some("sonarr"), "Pa55w0rd!");
        // base64("sonarr:Pa55w0rd!")
        let ok = headers(&[("authorization", "Basic c29uYXJyOlBhNTV3MHJkIQ==")]);
        assert_eq!(authenticate(&cfg, &ok, None, b""), Ok(()));
        let lower = headers(&[("authorization", "basic c29uYXJyOlBhNTV3MHJkIQ==")]);
        assert_eq!(authenticate(&cfg, &lower, None, b""), Ok(()));
        // base64("sonarr:wrong")
        let bad = headers(&[("authorization", "Basic c29uYXJyOndyb25n")]);
        assert!(matches!(
            authenticate(&cfg, &bad, None, b""),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            authenticate(&cfg, &HeaderMap::new(), None, b""),
            Err(AuthError::Missing(_))
        ));
        let garbage = headers(&[("authorization", "Basic %%%")]);
        assert!(authenticate(&cfg, &garbage, None, b"").is_err());
    }

    #[test]
    fn auth_basic_without_username_checks_only_password() {
        let cfg = basic(None, "Pa55w0rd!");
        // base64("anyone:Pa55w0rd!")
        let ok = headers(&[("authorization", "Basic YW55b25lOlBhNTV3MHJkIQ==")]);
        assert_eq!(authenticate(&cfg, &ok, None, b""), Ok(()));
    }

    #[test]
    fn auth_basic_matches_latin1_encoded_password() {
        // Sonarr sends "pässwörd" as ISO-8859-1 bytes.
        let cfg = basic(Some("u"), "pässwörd");
        let mut raw = b"u:".to_vec();
        raw.extend(latin1("pässwörd"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let h = headers(&[("authorization", &format!("Basic {b64}"))]);
        assert_eq!(authenticate(&cfg, &h, None, b""), Ok(()));
    }

    #[test]
    fn auth_header_bearer_and_token() {
        let cfg = AuthConfig::Header {
            name: "X-Api-Key".into(),
            value: Secret::new("k1"),
        };
        assert!(authenticate(&cfg, &headers(&[("x-api-key", "k1")]), None, b"").is_ok());
        assert!(authenticate(&cfg, &headers(&[("x-api-key", "k2")]), None, b"").is_err());

        let cfg = AuthConfig::Bearer(Secret::new("t0k"));
        let h = headers(&[("authorization", "Bearer t0k")]);
        assert!(authenticate(&cfg, &h, None, b"").is_ok());
        let h = headers(&[("authorization", "Bearer t0kk")]);
        assert!(authenticate(&cfg, &h, None, b"").is_err());

        let cfg = AuthConfig::Token(Secret::new("plex-secret"));
        assert!(authenticate(&cfg, &HeaderMap::new(), Some("plex-secret"), b"").is_ok());
        assert!(authenticate(&cfg, &HeaderMap::new(), Some("nope"), b"").is_err());
        assert!(matches!(
            authenticate(&cfg, &HeaderMap::new(), None, b""),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn auth_hmac_verifies_body_signature() {
        let cfg = AuthConfig::Hmac {
            header: "X-Signature".into(),
            secret: Secret::new("s3cret"),
            prefix: Some("sha256=".into()),
        };
        let body = br#"{"event":"x"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let h = headers(&[("x-signature", &format!("sha256={sig}"))]);
        assert!(authenticate(&cfg, &h, None, body).is_ok());
        assert!(authenticate(&cfg, &h, None, b"{\"event\":\"y\"}").is_err());
        let h = headers(&[("x-signature", &sig)]);
        assert!(
            authenticate(&cfg, &h, None, body).is_err(),
            "prefix required"
        );
    }

    #[test]
    fn auth_head_settles_header_schemes_and_defers_hmac_to_the_body() {
        let cfg = basic(Some("sonarr"), "Pa55w0rd!");
        let ok = headers(&[("authorization", "Basic c29uYXJyOlBhNTV3MHJkIQ==")]);
        assert!(matches!(
            authenticate_head(&cfg, &ok, None),
            Ok(HeadAuth::Verified(_))
        ));
        let bad = headers(&[("authorization", "Basic c29uYXJyOndyb25n")]);
        assert!(authenticate_head(&cfg, &bad, None).is_err());
        let cfg = AuthConfig::Token(Secret::new("t"));
        assert!(authenticate_head(&cfg, &HeaderMap::new(), Some("x")).is_err());

        let cfg = AuthConfig::Hmac {
            header: "X-Signature".into(),
            secret: Secret::new("s3cret"),
            prefix: Some("sha256=".into()),
        };
        let h = headers(&[("x-signature", "sha256=00ff")]);
        assert!(matches!(
            authenticate_head(&cfg, &h, None),
            Ok(HeadAuth::NeedsBody)
        ));
        // Missing or malformed signatures are refused without the body.
        assert!(matches!(
            authenticate_head(&cfg, &HeaderMap::new(), None),
            Err(AuthError::Missing(_))
        ));
        let h = headers(&[("x-signature", "sha256=not-hex")]);
        assert!(authenticate_head(&cfg, &h, None).is_err());
        let h = headers(&[("x-signature", "00ff")]);
        assert!(
            authenticate_head(&cfg, &h, None).is_err(),
            "prefix required"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_serialisation() {
        let cfg = AuthConfig::Bearer(Secret::new("hunter2"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&cfg)
            .expect("json")
            .contains("hunter2"));
    }
}

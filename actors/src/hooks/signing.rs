//! Request signing for outbound hooks (pure): Standard Webhooks and plain body HMAC, plus the
//! stable `webhook-id` receivers deduplicate by.
//!
//! Standard Webhooks (<https://www.standardwebhooks.com/>): `webhook-signature: v1,<base64>`
//! of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64
//! secret after its `whsec_` prefix. Receivers reject timestamps more than about five minutes
//! from their clock, so the timestamp is the *send* time of each attempt, while the id stays
//! the same across attempts.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::config::Signing;

/// `webhook-id`: the same for every attempt of one delivery.
pub const WEBHOOK_ID: &str = "webhook-id";
/// `webhook-timestamp`: Unix seconds of this attempt.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature`: `v1,<base64>` (Standard Webhooks).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// `X-Relayarr-Signature: sha256=<hex>`, lower-cased as HTTP/2 sends it (names are
/// case-insensitive, and `http::HeaderName::from_static` rejects upper case).
pub const RELAYARR_SIGNATURE: &str = "x-relayarr-signature";

/// The secret's prefix in the Standard Webhooks serialisation.
const SECRET_PREFIX: &str = "whsec_";

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret is not base64 after `whsec_`. The secret itself is never included.
    #[error(
        "the Standard Webhooks secret is not valid base64 after \"whsec_\" ({error}); \
         generate one with e.g. `echo whsec_$(openssl rand -base64 32)`"
    )]
    BadSecret {
        /// The base64 decoder's complaint.
        error: String,
    },
    /// The secret decodes to nothing.
    #[error("the Standard Webhooks secret is empty")]
    EmptySecret,
}

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>`, or the bare base64.
fn standard_key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
    let key = BASE64
        .decode(encoded)
        .map_err(|e| SigningError::BadSecret {
            error: e.to_string(),
        })?;
    if key.is_empty() {
        return Err(SigningError::EmptySecret);
    }
    Ok(key)
}

/// Checks that a Standard Webhooks secret is usable (for config validation).
pub fn validate_standard_secret(secret: &str) -> Result<(), SigningError> {
    standard_key(secret).map(|_| ())
}

/// HMAC-SHA256 of the concatenated `parts`.
///
/// The key is pre-processed as RFC 2104 does (hashed when longer than a block, zero-padded),
/// which makes the fixed-size, infallible `KeyInit::new` usable for keys of any length.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
    if key.len() > block.len() {
        let hashed = Sha256::digest(key);
        block[..hashed.len()].copy_from_slice(&hashed);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Standard Webhooks signature, `v1,<base64>`, of `body` sent as message `msg_id` at
/// `timestamp` (Unix seconds).
pub fn standard_signature(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let key = standard_key(secret)?;
    let ts = timestamp.to_string();
    let mac = hmac_sha256(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    Ok(format!("v1,{}", BASE64.encode(mac)))
}

/// `sha256=<lowercase hex>` HMAC-SHA256 of `body`, keyed with the secret's UTF-8 bytes as
/// written (no base64 decoding: the receiver's side is usually a one-liner that does none).
pub fn hmac_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// The signing headers for one attempt. Both schemes send `webhook-id` and
/// `webhook-timestamp`, so receivers can deduplicate either way; `timestamp` is the send
/// time (Unix seconds) of this attempt.
pub fn sign_headers(
    signing: &Signing,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, SigningError> {
    let signature = match signing {
        Signing::Standard { secret } => (
            WEBHOOK_SIGNATURE,
            standard_signature(secret.expose(), msg_id, timestamp, body)?,
        ),
        Signing::Hmac { secret } => (RELAYARR_SIGNATURE, hmac_signature(secret.expose(), body)),
    };
    Ok(vec![
        (WEBHOOK_ID, msg_id.to_owned()),
        (WEBHOOK_TIMESTAMP, timestamp.to_string()),
        signature,
    ])
}

/// A stable message id for the delivery of `event_id` to `hook`: `msg_` and 24 hex digits
/// of SHA-256(`event_id` NUL `hook`). The same on every retry and after restarts, and
/// different per hook, so a receiver behind two hooks sees two messages.
pub fn webhook_id(event_id: &str, hook: &str) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0u8]);
    h.update(hook.as_bytes());
    let digest = hex::encode(h.finalize());
    format!("msg_{}", &digest[..24])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::auth::Secret;

    #[test]
    fn signing_reproduces_the_standard_webhooks_vector() {
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let bare = standard_signature(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(bare, sig);
    }

    #[test]
    fn signing_rejects_bad_secrets_without_echoing_them() {
        let err = standard_signature("whsec_not*base64!", "m", 1, b"").expect_err("bad");
        assert!(matches!(err, SigningError::BadSecret { .. }));
        assert!(!err.to_string().contains("not*base64"), "{err}");
        assert_eq!(
            standard_signature("whsec_", "m", 1, b""),
            Err(SigningError::EmptySecret)
        );
        assert!(validate_standard_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
    }

    #[test]
    fn signing_hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 ("Jefe"), then case 6: a 131-byte key, hashed first.
        assert_eq!(
            hmac_signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &long_key,
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signing_hmac_agrees_with_the_hmac_crate() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(b"{\"a\":1}");
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(hmac_signature("s3cret", b"{\"a\":1}"), want);
    }

    #[test]
    fn signing_headers_per_scheme() {
        let standard = Signing::Standard {
            secret: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        };
        let h = sign_headers(
            &standard,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(
            h,
            vec![
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                (
                    "webhook-signature",
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()
                ),
            ]
        );
        let hmac = Signing::Hmac {
            secret: Secret::new("Jefe"),
        };
        let h = sign_headers(&hmac, "msg_1", 7, b"what do ya want for nothing?").expect("sign");
        assert_eq!(h[0], ("webhook-id", "msg_1".to_owned()));
        assert_eq!(h[1], ("webhook-timestamp", "7".to_owned()));
        assert_eq!(h[2].0, "x-relayarr-signature");
        assert!(h[2].1.starts_with("sha256=5bdcc146"));
        for (name, _) in h {
            assert!(http::HeaderName::from_static(name).as_str() == name);
        }
        let bad = Signing::Standard {
            secret: Secret::new("whsec_%%%"),
        };
        assert!(sign_headers(&bad, "m", 1, b"").is_err());
    }

    #[test]
    fn signing_webhook_id_is_stable_and_per_hook() {
        let a = webhook_id("01HZX4Q3K9", "discord");
        assert_eq!(a, webhook_id("01HZX4Q3K9", "discord"));
        assert_ne!(a, webhook_id("01HZX4Q3K9", "cms"));
        assert_ne!(a, webhook_id("01HZX4Q3K", "9discord"));
        assert!(a.starts_with("msg_"));
        assert_eq!(a.len(), 4 + 24);
        assert!(a[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // Pinned: a change here would make receivers see every redelivery as new.
        assert_eq!(webhook_id("e", "h"), "msg_32e0f64520df27c75cae8788");
    }
}

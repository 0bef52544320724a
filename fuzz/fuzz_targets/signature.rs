//! Inbound authentication: HMAC-SHA256 signatures (with and without a prefix), Basic
//! credentials, bearer tokens and header secrets, against arbitrary header values and
//! bodies. The first line is the header value, the rest is the body.
#![no_main]

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use relayarr_actors::sources::auth::{authenticate, AuthConfig, Secret};
use sha2::Sha256;

fn schemes() -> &'static [(AuthConfig, &'static str)] {
    static SCHEMES: OnceLock<Vec<(AuthConfig, &'static str)>> = OnceLock::new();
    SCHEMES.get_or_init(|| {
        vec![
            (
                AuthConfig::Hmac {
                    header: "X-Signature".into(),
                    secret: Secret::new("custom-secret"),
                    prefix: Some("sha256=".into()),
                },
                "x-signature",
            ),
            (
                AuthConfig::Hmac {
                    header: "X-Hub-Signature".into(),
                    secret: Secret::new("s\u{e9}cr\u{e8}t"),
                    prefix: None,
                },
                "x-hub-signature",
            ),
            (
                AuthConfig::Basic {
                    username: Some("s\u{f6}narr".into()),
                    password: Secret::new("Pa55w0rd!\u{263a}"),
                },
                "authorization",
            ),
            (
                AuthConfig::Bearer(Secret::new("lidarr-token")),
                "authorization",
            ),
            (
                AuthConfig::Header {
                    name: "X-Api-Key".into(),
                    value: Secret::new("6f1c1b0d2a9e4c7f"),
                },
                "x-api-key",
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(value) = HeaderValue::from_bytes(head) else {
        return;
    };
    let token = std::str::from_utf8(head).ok();
    for (auth, header) in schemes() {
        let mut headers = HeaderMap::new();
        headers.insert(*header, value.clone());
        let _ = authenticate(auth, &headers, token, body);
    }

    // The oracle: the right signature of this body is accepted, in either hex case, and a
    // signature of any other body is refused.
    let (auth, header) = &schemes()[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"custom-secret").expect("any key length");
    mac.update(body);
    let good = hex::encode(mac.finalize().into_bytes());
    for sig in [good.clone(), good.to_ascii_uppercase()] {
        let mut headers = HeaderMap::new();
        headers.insert(
            *header,
            HeaderValue::from_str(&format!("sha256={sig}")).expect("ascii"),
        );
        assert!(
            authenticate(auth, &headers, None, body).is_ok(),
            "right signature refused"
        );
        let mut other = body.to_vec();
        other.push(b'x');
        assert!(
            authenticate(auth, &headers, None, &other).is_err(),
            "wrong body accepted"
        );
    }
});

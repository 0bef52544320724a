//! Turns a request body into JSON, whatever the sender wrapped it in: plain JSON, JSON sent
//! as `text/plain` (the Jellyfin webhook plugin), or Plex's `multipart/form-data` with a
//! `payload` part (the `thumb` JPEG part is ignored). Errors say exactly what was wrong.

use bytes::Bytes;
use serde_json::Value;

use super::ParseError;

/// serde_json refuses nesting deeper than this; we report it as such.
pub const MAX_JSON_DEPTH: usize = 128;

/// A decoded body: the JSON value, and the bytes worth storing as the "raw" body (for
/// multipart, the `payload` part only: the thumbnail is dropped).
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The body as JSON.
    pub json: Value,
    /// The bytes to store as the raw body.
    pub raw: Bytes,
}

/// How the body is framed, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    Json,
    Multipart(String),
}

fn framing(content_type: Option<&str>) -> Result<Framing, ParseError> {
    let Some(ct) = content_type.map(str::trim).filter(|s| !s.is_empty()) else {
        // Some custom senders omit Content-Type; JSON is the only thing we could accept.
        return Ok(Framing::Json);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/json" | "text/plain" => Ok(Framing::Json),
        e if e.ends_with("+json") => Ok(Framing::Json),
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(ct)
                .map_err(|_| ParseError::BadMultipart("missing boundary parameter".into()))?;
            Ok(Framing::Multipart(boundary))
        }
        _ => Err(ParseError::UnsupportedMediaType(essence)),
    }
}

/// Parses JSON bytes, classifying failures for a precise 400.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::InvalidUtf8(e.valid_up_to()))?;
    // from_str, not from_slice: the UTF-8 check above is the only one needed.
    serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains("recursion limit exceeded") {
            ParseError::TooDeep(MAX_JSON_DEPTH)
        } else if e.classify() == serde_json::error::Category::Eof {
            ParseError::Truncated(e.to_string())
        } else {
            ParseError::Malformed(e.to_string())
        }
    })
}

/// Decodes a body according to its content type.
pub async fn decode_body(content_type: Option<&str>, body: &Bytes) -> Result<Decoded, ParseError> {
    if body.is_empty() {
        return Err(ParseError::Empty);
    }
    match framing(content_type)? {
        Framing::Json => Ok(Decoded {
            json: parse_json(body)?,
            raw: body.clone(),
        }),
        Framing::Multipart(boundary) => {
            let payload = multipart_payload(body.clone(), boundary).await?;
            let json = parse_json(&payload).map_err(|e| match e {
                ParseError::Empty => ParseError::PayloadNotJson("the part is empty".into()),
                other => ParseError::PayloadNotJson(other.to_string()),
            })?;
            Ok(Decoded { json, raw: payload })
        }
    }
}

/// Finds the `payload` part. The whole body is read, so an unterminated body is an error
/// even when the payload part itself was complete.
async fn multipart_payload(body: Bytes, boundary: String) -> Result<Bytes, ParseError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut payload = None;
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(|e| ParseError::BadMultipart(e.to_string()))?;
        let Some(field) = field else { break };
        let is_payload = field.name() == Some("payload");
        let data = field
            .bytes()
            .await
            .map_err(|e| ParseError::BadMultipart(e.to_string()))?;
        if is_payload && payload.is_none() {
            payload = Some(data);
        }
    }
    payload.ok_or(ParseError::NoPayloadPart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(parts: &[(&str, &[u8])], terminated: bool) -> (String, Bytes) {
        let b = "------------------------abcdefghijklmnopqrstuv";
        let mut out = Vec::new();
        for (name, data) in parts {
            out.extend_from_slice(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        if terminated {
            out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        }
        (
            format!("multipart/form-data; boundary={b}"),
            Bytes::from(out),
        )
    }

    #[tokio::test]
    async fn decode_json_and_text_plain() {
        let body = Bytes::from_static(br#"{"eventType":"Test"}"#);
        for ct in [
            None,
            Some("application/json"),
            Some("text/plain; charset=utf-8"),
            Some("application/vnd.x+json"),
        ] {
            let d = decode_body(ct, &body).await.expect("decodes");
            assert_eq!(d.json["eventType"], "Test");
        }
    }

    #[tokio::test]
    async fn decode_rejects_bad_bodies_with_precise_errors() {
        type Check = fn(&ParseError) -> bool;
        let cases: Vec<(&[u8], Check)> = vec![
            (b"", |e| *e == ParseError::Empty),
            (b"  \r\n", |e| *e == ParseError::Empty),
            (b"{\"eventType\": \"Dow", |e| {
                matches!(e, ParseError::Truncated(_))
            }),
            (b"{\"eventType\": nope}", |e| {
                matches!(e, ParseError::Malformed(_))
            }),
            (b"{\"a\":\"\xff\xfe\"}", |e| {
                matches!(e, ParseError::InvalidUtf8(6))
            }),
        ];
        for (body, check) in cases {
            let err = decode_body(Some("application/json"), &Bytes::copy_from_slice(body))
                .await
                .expect_err("must fail");
            assert!(check(&err), "{body:?} gave {err:?}");
            assert_eq!(err.status(), 400);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = decode_body(None, &Bytes::from(deep))
            .await
            .expect_err("too deep");
        assert_eq!(err, ParseError::TooDeep(MAX_JSON_DEPTH));
    }

    #[tokio::test]
    async fn decode_rejects_unsupported_media_type_with_415() {
        let body = Bytes::from_static(b"a=b");
        let err = decode_body(Some("application/x-www-form-urlencoded"), &body)
            .await
            .expect_err("415");
        assert_eq!(err.status(), 415);
    }

    #[tokio::test]
    async fn decode_multipart_takes_payload_and_ignores_thumb() {
        let (ct, body) = mp(
            &[
                ("payload", br#"{"event":"library.new"}"#),
                ("thumb", b"\xff\xd8\xff\xe0"),
            ],
            true,
        );
        let d = decode_body(Some(&ct), &body).await.expect("decodes");
        assert_eq!(d.json["event"], "library.new");
        assert_eq!(&d.raw[..], br#"{"event":"library.new"}"#);
    }

    #[tokio::test]
    async fn decode_multipart_errors() {
        let (ct, body) = mp(&[("thumb", b"jpeg")], true);
        assert_eq!(
            decode_body(Some(&ct), &body).await.expect_err("no payload"),
            ParseError::NoPayloadPart
        );

        let (ct, body) = mp(&[("payload", br#"{"event":"x"}"#)], false);
        assert!(matches!(
            decode_body(Some(&ct), &body).await,
            Err(ParseError::BadMultipart(_))
        ));

        let (ct, body) = mp(&[("payload", b"not json")], true);
        assert!(matches!(
            decode_body(Some(&ct), &body).await,
            Err(ParseError::PayloadNotJson(_))
        ));

        let err = decode_body(Some("multipart/form-data"), &Bytes::from_static(b"x"))
            .await
            .expect_err("no boundary");
        assert!(matches!(err, ParseError::BadMultipart(_)));
    }
}

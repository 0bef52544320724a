//! The body decoder on its own: the first line is the Content-Type header value (so the
//! fuzzer also varies boundaries and media types), the rest is the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relayarr_actors::sources::decode::decode_body;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let Ok(content_type) = std::str::from_utf8(head) else {
        return;
    };
    let ct = (!content_type.is_empty()).then_some(content_type);
    let body = Bytes::copy_from_slice(body);
    if let Ok(decoded) = futures_executor::block_on(decode_body(ct, &body)) {
        // What is stored as the raw body is part of what was sent.
        assert!(decoded.raw.len() <= body.len());
    }
});

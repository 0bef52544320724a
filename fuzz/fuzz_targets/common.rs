//! What every source target checks: the body decodes or is refused with an error, never a
//! panic, and a normalised event survives the store's JSON round trip unchanged.

#![allow(dead_code)]

use bytes::Bytes;
use relayarr_actors::model::{NormalizedEvent, SourceKind};
use relayarr_actors::sources::decode::decode_body;
use relayarr_actors::sources::{normalise, ParserOptions};

/// Decodes `data` framed as `content_type` (the way the HTTP layer does), normalises it as
/// `kind`, and checks the result.
pub fn ingest(kind: SourceKind, content_type: Option<&str>, data: &[u8], opts: &ParserOptions) {
    let body = Bytes::copy_from_slice(data);
    let Ok(decoded) = futures_executor::block_on(decode_body(content_type, &body)) else {
        return;
    };
    if let Ok(ev) = normalise(kind, "fuzz", opts, &decoded.json) {
        round_trip(&ev);
    }
}

/// The store keeps the event as JSON and reads it back for routing and hooks.
pub fn round_trip(ev: &NormalizedEvent) {
    let text = serde_json::to_string(ev).expect("a normalised event serialises");
    let back: NormalizedEvent = serde_json::from_str(&text).expect("a stored event deserialises");
    assert_eq!(&back, ev, "the store's JSON round trip changed the event");
}

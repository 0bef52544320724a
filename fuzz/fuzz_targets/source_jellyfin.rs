//! Jellyfin webhook plugin bodies (JSON sent as text/plain), through the default key
//! mapping and through one with dotted (nested) keys.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relayarr_actors::model::SourceKind;
use relayarr_actors::sources::{JellyfinMapping, ParserOptions};

fn nested() -> &'static ParserOptions {
    static OPTS: OnceLock<ParserOptions> = OnceLock::new();
    OPTS.get_or_init(|| {
        let jellyfin: JellyfinMapping = serde_json::from_value(serde_json::json!({
            "event": ["event.type", "NotificationType"],
            "name": "item.name",
            "series_name": ["item.series.name", "SeriesName"],
            "season": "item.season",
            "episode": "item.episode",
            "tvdb": "item.ids.tvdb",
        }))
        .expect("valid mapping");
        ParserOptions {
            jellyfin,
            ..ParserOptions::default()
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let ct = Some("text/plain; charset=utf-8");
    common::ingest(SourceKind::Jellyfin, ct, data, &ParserOptions::default());
    common::ingest(SourceKind::Jellyfin, ct, data, nested());
});

//! Custom JSON bodies, through the default key mapping and a nested one.
#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relayarr_actors::model::SourceKind;
use relayarr_actors::sources::{CustomMapping, ParserOptions};

fn nested() -> &'static ParserOptions {
    static OPTS: OnceLock<ParserOptions> = OnceLock::new();
    OPTS.get_or_init(|| {
        let custom: CustomMapping = serde_json::from_value(serde_json::json!({
            "event": ["action", "event"],
            "file_path": ["item.path", "file_path"],
            "title": "item.name",
            "tags": "item.tags",
        }))
        .expect("valid mapping");
        ParserOptions {
            custom,
            ..ParserOptions::default()
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let ct = Some("application/json");
    common::ingest(SourceKind::Custom, ct, data, &ParserOptions::default());
    common::ingest(SourceKind::Custom, ct, data, nested());
});

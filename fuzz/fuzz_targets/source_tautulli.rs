//! Tautulli template bodies, with the default key mapping.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use relayarr_actors::model::SourceKind;
use relayarr_actors::sources::ParserOptions;

fuzz_target!(|data: &[u8]| {
    common::ingest(
        SourceKind::Tautulli,
        Some("application/json"),
        data,
        &ParserOptions::default(),
    );
});

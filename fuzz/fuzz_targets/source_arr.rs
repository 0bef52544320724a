//! Sonarr/Radarr/Lidarr/Readarr/Whisparr bodies: the first byte picks the app.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use relayarr_actors::model::SourceKind;
use relayarr_actors::sources::ParserOptions;

const ARR: [SourceKind; 5] = [
    SourceKind::Sonarr,
    SourceKind::Radarr,
    SourceKind::Lidarr,
    SourceKind::Readarr,
    SourceKind::Whisparr,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = ARR[usize::from(pick) % ARR.len()];
    common::ingest(
        kind,
        Some("application/json"),
        body,
        &ParserOptions::default(),
    );
});

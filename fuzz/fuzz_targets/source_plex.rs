//! Plex webhooks: a whole multipart/form-data body (payload part, optional thumb), with the
//! boundary Plex uses in the seeds.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use relayarr_actors::model::SourceKind;
use relayarr_actors::sources::ParserOptions;

/// The boundary `run.sh` wraps the Plex fixtures in.
const CONTENT_TYPE: &str =
    "multipart/form-data; boundary=------------------------Zq8wXr2mPb7Kd4Hs9Tn1Vc";

fuzz_target!(|data: &[u8]| {
    common::ingest(
        SourceKind::Plex,
        Some(CONTENT_TYPE),
        data,
        &ParserOptions::default(),
    );
});

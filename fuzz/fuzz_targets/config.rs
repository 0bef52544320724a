//! The config loader: TOML text to a validated config, or a list of errors (never a panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayarr::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str("fuzz", text, std::iter::empty()) {
        Ok(cfg) => {
            // A valid config also compiles its hooks (templates, filters) without panicking.
            let _ = cfg.compiled_hooks();
        }
        Err(errors) => assert!(!errors.is_empty(), "an error list is never empty"),
    }
});

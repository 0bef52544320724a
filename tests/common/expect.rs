//! Expected-subset comparison of normalised events against `.expect.json` files. Shared
//! (via `#[path]`) by the pure corpus test in `relayarr-actors` and the HTTP corpus test.

use serde_json::Value;

/// Checks that `actual` contains `expect`: objects key by key, arrays element-wise with
/// equal length, scalars by equality; an expected `null` means "absent".
pub fn check_subset(expect: &Value, actual: Option<&Value>, at: &str, errs: &mut Vec<String>) {
    match (expect, actual) {
        (Value::Null, None | Some(Value::Null)) => {}
        (Value::Null, Some(a)) => errs.push(format!("{at}: expected absent, got {a}")),
        (Value::Object(want), Some(Value::Object(got))) => {
            for (k, w) in want {
                check_subset(w, got.get(k), &format!("{at}.{k}"), errs);
            }
        }
        (Value::Array(want), Some(Value::Array(got))) => {
            if want.len() != got.len() {
                errs.push(format!(
                    "{at}: expected {} elements, got {}: {}",
                    want.len(),
                    got.len(),
                    Value::Array(got.clone())
                ));
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                check_subset(w, Some(g), &format!("{at}[{i}]"), errs);
            }
        }
        (w, Some(g)) if w == g => {}
        (w, g) => {
            let got = g.map_or_else(|| "nothing".to_owned(), Value::to_string);
            errs.push(format!("{at}: expected {w}, got {got}"));
        }
    }
}
